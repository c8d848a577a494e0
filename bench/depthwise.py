"""Depthwise convolutions: convkern's depthwise path against PyTorch, per layer and pass.

```
python bench/depthwise.py                       # MobileNetV2 (batch 1 and 16), CIFAR MobileNet (32)
python bench/depthwise.py --repeats 9 --threads 1,2 --only cifar
```

Each layer is a 3x3 depthwise convolution (groups = channels, padding 1, float32, NCHW)
of MobileNetV2 at 224x224 (batch 1 and a training batch of 16) or of a MobileNet for
32x32 images (batch 32).  For each pass (forward, input gradient, weight gradient) the
table gives, at every thread count, the median over ``--repeats`` of the wall-clock
time of PyTorch and of convkern and their ratio (PyTorch / convkern: above 1 means
convkern is faster), the two libraries interleaved in the same run.  At 1 thread it also
gives the ratio of the medians of ``time.thread_time`` (CPU time of the calling thread,
which a shared machine's load barely moves) and that ratio for convkern's generic path
(the one the planner would choose without the depthwise rows), so the depthwise path can
be checked never to be slower than it.  PyTorch runs ``F.conv2d`` and
``torch.nn.grad.conv2d_input`` / ``conv2d_weight`` (``aten.convolution_backward``).
"""

import argparse
import functools
import os
import statistics
import sys
import time

import numpy as np

try:
    import convkern as ck
except ImportError:  # the checkout, built in place
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    import convkern as ck
import torch
import torch.nn.functional as F
from torch.nn.grad import conv2d_input, conv2d_weight

from convkern import _paths

# (channels, size, stride) of the 3x3 depthwise layers
MOBILENETV2 = [(32, 112, 1), (96, 112, 2), (144, 56, 1), (144, 56, 2), (192, 28, 1),
               (192, 28, 2), (384, 14, 1), (576, 14, 1), (576, 14, 2), (960, 7, 1)]
CIFAR = [(32, 32, 1), (64, 32, 1), (64, 32, 2), (128, 16, 1), (256, 8, 1)]
SUITES = {
    "mobilenetv2-b1": (1, MOBILENETV2),
    "mobilenetv2-b16": (16, MOBILENETV2),
    "cifar": (32, CIFAR),
}
PASSES = ("forward", "backward_input", "backward_weight")
# The depthwise rows of the table: the plane rows, and the weight gradient's
# channels-last planes for one filter per channel.
DEPTHWISE_PATHS = ("depthwise", "depthwise_channels_last")


def _generic(plan, pass_name):
    """The path the planner takes for this pass without the depthwise rows."""
    for row in _paths.TABLE[pass_name]:
        if row.name not in DEPTHWISE_PATHS and row.valid(plan._facts) and row.preferred(plan._facts):
            return row.name
    raise RuntimeError("no generic path")


def _timed(fn, clock, min_seconds=0.02):
    """Seconds per call of fn on clock: calls repeated for at least min_seconds."""
    fn()
    t0 = clock()
    k = 0
    while True:
        fn()
        k += 1
        elapsed = clock() - t0
        if elapsed >= min_seconds:
            return elapsed / k


def _plan(n, c, size, stride):
    """The float32 plan of a layer: n images, c channels of size x size, stride."""
    return ck.conv_plan((n, c, size, size), (c, 1, 3, 3), stride=stride, padding=1, groups=c)


def _layer_calls(n, c, size, stride):
    rng = np.random.default_rng(0)
    plan = _plan(n, c, size, stride)
    x = rng.standard_normal(plan.x_shape).astype(np.float32)
    w = rng.standard_normal(plan.weight_shape).astype(np.float32)
    gy = rng.standard_normal(plan.y_shape).astype(np.float32)
    tx, tw, tgy = (torch.from_numpy(a) for a in (x, w, gy))
    ck_calls = {"forward": lambda p: p.forward(x, w),
                "backward_input": lambda p: p.backward_input(gy, w),
                "backward_weight": lambda p: p.backward_weight(x, gy)}
    torch_calls = {
        "forward": lambda: F.conv2d(tx, tw, None, stride, 1, 1, c),
        "backward_input": lambda: conv2d_input(tx.shape, tw, tgy, stride, 1, 1, c),
        "backward_weight": lambda: conv2d_weight(tx, tw.shape, tgy, stride, 1, 1, c),
    }
    return plan, ck_calls, torch_calls


def run(suites, threads, repeats):
    rows = []
    for suite in suites:
        n, layers = SUITES[suite]
        for c, size, stride in layers:
            plan, ck_calls, torch_calls = _layer_calls(n, c, size, stride)
            assert all(plan.paths[p] in DEPTHWISE_PATHS for p in PASSES), plan.paths
            for p in PASSES:
                row = {"suite": suite, "layer": f"{c}x{size}x{size} s{stride}", "pass": p}
                for nt in threads:
                    ck.set_num_threads(nt)
                    torch.set_num_threads(nt)
                    walls = {"torch": [], "ck": []}
                    ck_call = functools.partial(ck_calls[p], plan)
                    for _ in range(repeats):
                        walls["torch"].append(_timed(torch_calls[p], time.perf_counter))
                        walls["ck"].append(_timed(ck_call, time.perf_counter))
                    t, k = (statistics.median(walls[lib]) for lib in ("torch", "ck"))
                    row[nt] = (t, k)
                ck.set_num_threads(1)
                torch.set_num_threads(1)
                ck_call = functools.partial(ck_calls[p], plan)
                generic_call = functools.partial(ck_calls[p], plan.force(**{p: _generic(plan, p)}))
                cpu = {"torch": [], "ck": [], "generic": []}
                for _ in range(repeats):
                    cpu["torch"].append(_timed(torch_calls[p], time.thread_time))
                    cpu["ck"].append(_timed(ck_call, time.thread_time))
                    cpu["generic"].append(_timed(generic_call, time.thread_time))
                t, k, gen = (statistics.median(cpu[lib]) for lib in ("torch", "ck", "generic"))
                row["cpu"] = (t / k, t / gen, _generic(plan, p))
                rows.append(row)
                print(_format(row, threads), flush=True)
    return rows


def _format(row, threads):
    cells = [f"{row['suite']:15s} {row['layer']:16s} {row['pass']:15s}"]
    for nt in threads:
        t, k = row[nt]
        cells.append(f"{nt}T torch {t * 1e3:7.3f} ms ck {k * 1e3:7.3f} ms {t / k:5.2f}x")
    ratio, gen_ratio, gen = row["cpu"]
    cells.append(f"1T cpu {ratio:5.2f}x (generic {gen}: {gen_ratio:4.2f}x)")
    return " | ".join(cells)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", default=",".join(SUITES), help=f"of {', '.join(SUITES)}")
    args = ap.parse_args()
    threads = [int(t) for t in args.threads.split(",")]
    print(f"convkern {ck.__version__} ({ck._conv.kernel_info()['isa']}), torch {torch.__version__}; "
          f"ratios are PyTorch time / convkern time (above 1: convkern faster)")
    run(args.only.split(","), threads, args.repeats)


if __name__ == "__main__":
    main()
