"""Measure every peer on every workload pass at one thread count.

For each pass the peers are bound to the same inputs, each peer's first output is
checked against convkern's, each is warmed up, and then all are timed round-robin
(see :func:`timing.interleave`) so that drift of the shared machine hits every
peer alike. Results are plain dicts, ready for JSON.
"""

import time
from statistics import median

import numpy as np
import timing
from machine import cpu_snapshot, foreign_load
from workloads import ConvWorkload, make_inputs

RTOL = 1e-3
ATOL_SCALE = 1e-4
SGEMM_REPEATS = 5


class MismatchError(RuntimeError):
    """A peer's output disagrees with convkern's."""


def verify(label, ref, got):
    """Check a peer's outputs against convkern's.

    Float outputs must satisfy ``np.allclose(got, ref, rtol=RTOL,
    atol=ATOL_SCALE * max|ref|)`` (float32 sums over thousands of terms differ
    in their last bits between libraries); integer outputs must be equal.

    Raises
    ------
    MismatchError
        On any difference in count, shape, dtype kind or value.
    """
    if len(ref) != len(got):
        raise MismatchError(f"{label}: {len(got)} outputs, convkern gives {len(ref)}")
    for i, (r, g) in enumerate(zip(ref, got)):
        r, g = np.asarray(r), np.asarray(g)
        where = f"{label} output {i}"
        if r.shape != g.shape or r.dtype.kind != g.dtype.kind:
            raise MismatchError(
                f"{where}: {g.dtype} {g.shape}, convkern gives {r.dtype} {r.shape}"
            )
        if r.dtype.kind in "iu":
            bad = np.count_nonzero(r != g)
            if bad:
                raise MismatchError(f"{where}: {bad} of {r.size} indices differ")
            continue
        scale = float(np.max(np.abs(r), initial=0.0))
        if not np.allclose(g, r, rtol=RTOL, atol=ATOL_SCALE * scale):
            diff = float(np.max(np.abs(g.astype(np.float64) - r)))
            raise MismatchError(
                f"{where}: max |diff| {diff:.3g} with max |convkern| {scale:.3g} "
                f"(rtol {RTOL}, atol {ATOL_SCALE} * max)"
            )


def measure_pass(peers, workload, pass_, inputs, repeats, pause,
                 batch_seconds=timing.BATCH_SECONDS):
    """Verify, warm up and time all peers on one pass.

    Parameters
    ----------
    peers : list
        convkern first: its output is the reference.
    workload : ConvWorkload or PoolWorkload
    pass_ : str
        One of ``workload.passes``.
    inputs : dict of str to ndarray
        From :func:`workloads.make_inputs`.
    repeats : int or callable
        Timed batches per peer, or a function of the slowest peer's seconds per
        call that returns it (fewer repeats for slow calls).
    pause : float
        Seconds to pause before each switch of library.
    batch_seconds : float
        Target length of one timed batch of calls.

    Returns
    -------
    dict of str to dict
        Per peer: ``median_ms``, ``times_ms`` and ``calls`` per batch.
    """
    jobs = {}
    ref = None
    slowest = 0.0
    for peer in peers:
        fn = peer.bind(workload, pass_, inputs)
        time.sleep(pause)
        out = fn()
        if ref is None:
            ref = out
        else:
            verify(f"{peer.name} {workload.name} {pass_}", ref, out)
        del out
        calls, single = timing.batch_size(fn, batch_seconds)
        slowest = max(slowest, single)
        jobs[peer.name] = (fn, calls)
    if callable(repeats):
        repeats = repeats(slowest)
    times = timing.interleave(jobs, repeats, pause)
    return {
        name: {
            "median_ms": 1e3 * median(secs),
            "times_ms": [1e3 * s for s in secs],
            "calls": jobs[name][1],
        }
        for name, secs in times.items()
    }


def measure_block(peers, workloads, threads, repeats, pause, peak=None,
                  batch_seconds=timing.BATCH_SECONDS):
    """Measure all workloads at one thread count.

    Parameters
    ----------
    peers : list
        convkern first; it is the reference for verification and speed-ups.
    workloads : sequence of ConvWorkload or PoolWorkload
    threads : int
    repeats : int or callable
        Timed batches per peer and pass (the median is reported); see
        :func:`measure_pass`.
    pause : float
        Seconds to pause before each switch of library.
    peak : (str, callable), optional
        Name and zero-argument function returning the GFLOP/s behind the "% peak"
        figures, measured at the start and end of the block. Default: ``"sgemm"``,
        a float32 NumPy matmul (:func:`timing.sgemm_gflops`).
    batch_seconds : float
        Target length of one timed batch of calls.

    Returns
    -------
    dict
        ``threads``, the peak's name (GFLOP/s at the start and end of the block and
        their maximum ``peak``), ``foreign_load`` (cores used by other processes
        meanwhile, see :func:`machine.foreign_load`) and ``entries`` (one dict per
        workload pass).
    """
    peak_name, peak_fn = peak or ("sgemm", lambda: timing.sgemm_gflops(SGEMM_REPEATS, pause))
    for peer in peers:
        peer.set_threads(threads)
    cpu_start = cpu_snapshot()
    peak_start = peak_fn()
    entries = []
    for workload in workloads:
        inputs = make_inputs(workload)
        for pass_ in workload.passes:
            stats = measure_pass(peers, workload, pass_, inputs, repeats, pause,
                                 batch_seconds)
            entries.append(
                {
                    "workload": workload.name,
                    "pass": pass_,
                    "shape": workload.describe(),
                    "unit": workload.unit,
                    "work": workload.work,
                    "peers": stats,
                }
            )
            line = "  ".join(f"{n} {s['median_ms']:.3g} ms" for n, s in stats.items())
            print(f"  [{threads}T] {workload.name:4} {pass_:10} {line}", flush=True)
    peak_end = peak_fn()
    other = foreign_load(cpu_start, cpu_snapshot())
    best = max(peak_start, peak_end)
    for entry in entries:
        add_rates(entry, best, conv=entry["unit"] == ConvWorkload.unit)
    return {
        "threads": threads,
        peak_name: {"start": peak_start, "end": peak_end, "peak": best},
        "foreign_load": other,
        "entries": entries,
    }


def add_rates(entry, peak, conv):
    """Add ``rate`` (GFLOP/s or GB/s), ``pct_peak`` (of `peak` GFLOP/s, convolutions
    only) and convkern's ``speedup`` over each other peer to a measured entry."""
    stats = entry["peers"]
    for s in stats.values():
        s["rate"] = entry["work"] / s["median_ms"] / 1e6
        s["pct_peak"] = 100 * s["rate"] / peak if conv else None
    ck = stats["convkern"]["median_ms"]
    entry["speedup"] = {
        name: s["median_ms"] / ck for name, s in stats.items() if name != "convkern"
    }
