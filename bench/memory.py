"""Peak extra memory of one call on the memory workload (shape C), per pass.

Each measurement runs in a fresh interpreter (``python bench/memory.py PEER PASS
THREADS``), which first makes one small call of the same pass (so lazy imports and
thread pools are not counted), then creates the inputs, resets the kernel's
peak-RSS counter (``/proc/self/clear_refs``), makes one call and reads ``VmHWM``.
The figure includes the returned output arrays, which are also reported.
"""

import gc
import json
import os
import subprocess
import sys

import numpy as np
from workloads import BY_NAME, CONV_PASSES, MEMORY_WORKLOAD, make_inputs

MIB = 2**20


def _status_bytes():
    """Return ``{"VmRSS": bytes, "VmHWM": bytes}`` of this process."""
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) * 1024
    return values


def _reset_peak():
    """Reset VmHWM to the current RSS; return False if the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _child(peer_name, pass_, threads):
    """Measure one call in this (fresh) process and print a JSON record."""
    import peers

    classes = {c.name: c for c in (peers.ConvkernPeer, peers.NumpyPeer, peers.TorchPeer)}
    peer = classes[peer_name]()
    peer.set_threads(threads)
    workload = BY_NAME[MEMORY_WORKLOAD]
    small = workload.scaled_down()
    peer.bind(small, pass_, make_inputs(small))()
    inputs = make_inputs(workload)
    gc.collect()
    exact = _reset_peak()
    before = _status_bytes()
    out = peer.bind(workload, pass_, inputs)()
    peak = _status_bytes()["VmHWM"]
    out_bytes = sum(np.asarray(o).nbytes for o in out)
    del out
    gc.collect()
    base = before["VmRSS"] if exact else before["VmHWM"]
    record = {
        "peer": peer_name,
        "pass": pass_,
        "peak_extra_mib": (peak - base) / MIB,
        "output_mib": out_bytes / MIB,
        "retained_mib": (_status_bytes()["VmRSS"] - before["VmRSS"]) / MIB,
        "exact": exact,
    }
    print(json.dumps(record))


def measure_memory(peer_names, threads):
    """Run one fresh-process measurement per peer and pass.

    Parameters
    ----------
    peer_names : sequence of str
    threads : int
        Thread count used by the measured call.

    Returns
    -------
    list of dict
        ``peer``, ``pass``, ``peak_extra_mib`` (incl. the output), ``output_mib``,
        ``retained_mib`` (RSS still held after the output is freed) and ``exact``
        (False: the peak counter could not be reset, so the peak is a lower bound).
    """
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads))
    records = []
    for name in peer_names:
        for pass_ in CONV_PASSES:
            proc = subprocess.run(
                [sys.executable, __file__, name, pass_, str(threads)],
                capture_output=True, text=True, env=env, check=False,
            )
            if proc.returncode:
                raise RuntimeError(f"memory child {name} {pass_} failed:\n{proc.stderr}")
            records.append(json.loads(proc.stdout.splitlines()[-1]))
    return records


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], int(sys.argv[3]))
