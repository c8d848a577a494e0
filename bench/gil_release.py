"""Do the kernels release the GIL?  Two Python threads running convolutions at once
against the same work done one after the other.

    python bench/gil_release.py [--repeats 20] [--threads-per-kernel 1]

Each kernel runs on one OpenMP thread (``set_num_threads(1)``) so that the only possible
parallelism is between the two Python threads.  If the kernels hold the GIL the ratio
serial / concurrent is about 1.0; if they release it, it approaches 2.0 on a machine
with two free cores (two independent calls also compete for cache and memory bandwidth,
so expect less than the 2x an OpenMP-split call gets).  A control (hashlib.sha256, which
releases the GIL) shows what the machine can give at the moment.  The last table is the
direct measure: how fast a pure-Python thread runs while the kernel loops on the main
thread (1.0 = the GIL is released for the whole kernel).  A benchmark, not a test.
"""

import argparse
import os
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import convkern as ck  # noqa: E402


def functions(x, w, gy):
    """(name, call) for each public function on the benchmark's arrays."""
    p, i = ck.maxpool_forward(x, 2)
    return [
        ("conv_forward", lambda: ck.conv_forward(x, w, padding=1)),
        ("conv_backward_input", lambda: ck.conv_backward_input(gy, w, x.shape, padding=1)),
        ("conv_backward_weight", lambda: ck.conv_backward_weight(x, gy, w.shape, padding=1)),
        ("conv_backward_bias", lambda: ck.conv_backward_bias(gy)),
        ("maxpool_forward", lambda: ck.maxpool_forward(x, 2)),
        ("maxpool_backward", lambda: ck.maxpool_backward(p, i, x.shape)),
    ]


def work(calls, repeats):
    for _ in range(repeats):
        for call in calls:
            call()


def ratio(calls, repeats, rounds):
    """Best-of-rounds (serial seconds, concurrent seconds) for 2 x repeats of calls."""
    serial, concurrent = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        work(calls, repeats)
        work(calls, repeats)
        serial.append(time.perf_counter() - t0)
        threads = [threading.Thread(target=work, args=(calls, repeats)) for _ in range(2)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        concurrent.append(time.perf_counter() - t0)
    return min(serial), min(concurrent)


def _count(stop, out):
    n = 0
    while not stop[0]:
        n += 1
    out.append(n)


def gil_free_fraction(call, seconds=0.5):
    """Speed of a pure-Python counting thread while ``call`` runs in a loop on the main
    thread, relative to its speed while the main thread sleeps: about 1.0 when the kernel
    releases the GIL, about 0.5 or less when it holds it."""
    def rate(busy):
        stop, out = [False], []
        t = threading.Thread(target=_count, args=(stop, out))
        t.start()
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            busy()
        stop[0] = True
        t.join()
        return out[0] / (time.perf_counter() - t0)
    idle = rate(lambda: time.sleep(seconds))
    return rate(call) / idle


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads-per-kernel", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3, help="best of this many rounds")
    args = ap.parse_args()
    ck.set_num_threads(args.threads_per_kernel)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 32, 32, 32)).astype(np.float32)
    w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((8, 32, 32, 32)).astype(np.float32)
    fns = functions(x, w, gy)
    work([f for _, f in fns], 2)  # warm-up
    print(f"convkern {ck.__version__}, {os.cpu_count()} CPUs, "
          f"{args.threads_per_kernel} OpenMP thread(s) per kernel, x {x.shape} float32; "
          f"best of {args.rounds} rounds")
    print("ratio serial / concurrent: 1.0 = the GIL is held, 2.0 = ideal on 2 free cores")
    # Control: hashlib releases the GIL for large buffers; its ratio is what this machine
    # can show right now (below 2.0 when other processes use the cores).
    import hashlib
    data = os.urandom(1 << 22)
    def sha():
        h = hashlib.sha256()
        h.update(data)  # update() releases the GIL for large buffers
    s, c = ratio([sha], args.repeats, args.rounds)
    print(f"{'control: hashlib.sha256':30s} serial {s:7.3f} s  two threads {c:7.3f} s  "
          f"ratio {s / c:.2f}")
    s, c = ratio([f for _, f in fns[:3]], args.repeats, args.rounds)
    print(f"{'convolutions (fwd + 2 grads)':30s} serial {s:7.3f} s  two threads {c:7.3f} s  "
          f"ratio {s / c:.2f}")
    for name, f in fns:
        s, c = ratio([f], args.repeats, args.rounds)
        print(f"{name:30s} serial {s:7.3f} s  two threads {c:7.3f} s  ratio {s / c:.2f}")
    print("speed of a Python counting thread while the kernel runs, relative to an idle "
          "main thread (1.0 = the GIL is free during the kernel):")
    for name, f in fns:
        print(f"{name:30s} {gil_free_fraction(f):.2f}")


if __name__ == "__main__":
    main()
