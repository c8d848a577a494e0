"""Timing primitives: calibrated batches, interleaved repeats, SGEMM peak.

OpenBLAS and OpenMP worker threads keep spinning for about 0.2 s after a call and
slow the next library's threads on this 2-core machine, so every switch of
library is preceded by a pause.  The pause idles the cores, and the first call after
it runs cold: on Zen 2 (2 threads) a 1.4 ms weight gradient took 2.6 ms right after a
10 ms sleep and 1.7 ms on the next call, PyTorch's 1.3 ms one 1.7 ms, a 9 MB
``np.ones`` 0.5 ms instead of 0.25.  So each batch follows one untimed call of the
same function, as a network's layer follows busy cores, not an idle machine.
"""

import time
from math import ceil
from statistics import median

import numpy as np

BATCH_SECONDS = 0.05
MAX_BATCH = 1000


def batch_size(fn, seconds=BATCH_SECONDS):
    """Return ``(calls, single)``: calls of `fn` that make a batch of about `seconds`,
    and the seconds of one call.

    Times one (already warmed-up) call.
    """
    t0 = time.perf_counter()
    fn()
    single = time.perf_counter() - t0
    return max(1, min(MAX_BATCH, ceil(seconds / max(single, 1e-9)))), single


def time_batch(fn, calls):
    """Return the mean seconds per call over `calls` back-to-back calls."""
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def interleave(jobs, repeats, pause):
    """Time several callables round-robin.

    Parameters
    ----------
    jobs : dict of str to (callable, int)
        Label to ``(fn, calls per batch)``.
    repeats : int
        Batches per label.
    pause : float
        Seconds to sleep before each batch (each one switches library); one untimed
        call follows the pause.

    Returns
    -------
    dict of str to list of float
        Seconds per call of each batch, per label.
    """
    times = {label: [] for label in jobs}
    for _ in range(repeats):
        for label, (fn, calls) in jobs.items():
            time.sleep(pause)
            fn()
            times[label].append(time_batch(fn, calls))
    return times


def sgemm_gflops(repeats, pause, size=2048):
    """Median GFLOP/s of a float32 ``size x size`` NumPy matmul (after one warm-up)."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    out = np.empty_like(a)
    time.sleep(pause)
    np.matmul(a, b, out=out)
    secs = [time_batch(lambda: np.matmul(a, b, out=out), 1) for _ in range(repeats)]
    return 2 * size**3 / median(secs) / 1e9
