"""Leak check: repeated calls of every public function keep resident memory flat.

The test makes CONVKERN_LEAK_CALLS calls (default 1,000) of each function, on its normal
path, with ``out=``, and on refused paths, and requires the resident set to grow by less
than 4 MiB.  Every kernel allocates scratch per call (packed weights, per-thread tiles,
weight-gradient partials: hundreds of KiB here), so a scratch buffer that is not freed
shows up at once.  The full check of the issue, 10,000 calls of each, is::

    python tests/test_leaks.py            # or CONVKERN_LEAK_CALLS=10000 pytest tests/test_leaks.py

Resident memory is read from /proc/self/statm (Linux), after glibc's malloc_trim so that
free heap pages left by earlier tests cannot absorb a leak.  Skipped under
AddressSanitizer, whose quarantine of freed memory grows the resident set by design.
"""

import gc
import os
import sys

import numpy as np
import pytest

if __name__ == "__main__":  # run as a script from a checkout: import its convkern
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import convkern as ck  # noqa: E402

CALLS = int(os.environ.get("CONVKERN_LEAK_CALLS", "1000"))
LIMIT_MIB = 4.0
UNDER_ASAN = "asan" in os.environ.get("LD_PRELOAD", "")

pytestmark = [
    pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm"),
    pytest.mark.skipif(UNDER_ASAN, reason="ASan's quarantine keeps freed memory resident"),
]


def _malloc_trim():
    """Give free heap memory back to the OS (glibc), so that the resident set measures
    live memory and a leak cannot hide in memory freed by earlier tests."""
    try:
        import ctypes
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def rss_mib():
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _refused(fn):
    def call():
        try:
            fn()
        except (TypeError, ValueError):
            return
        raise AssertionError("expected a refusal")
    return call


def cases():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 6, 20, 18)).astype(np.float32)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    kw = dict(stride=(1, 2), padding=1, groups=2)
    y = ck.conv_forward(x, w, b, **kw)
    gy = rng.standard_normal(y.shape).astype(np.float32)
    x1 = rng.standard_normal((3, 4, 40))
    w1 = rng.standard_normal((5, 4, 5))
    y1 = ck.conv_forward(x1, w1, padding="same")
    xs = x[:, :, ::2, ::-1]  # non-contiguous: a copy per call
    p, i = ck.maxpool_forward(x, 3, stride=2, padding=1)
    gp = rng.standard_normal(p.shape).astype(np.float32)
    bad_i = i.copy()
    bad_i[0, 0, 0, 0] = 10**6
    out_y = np.empty_like(y)
    out_gx = np.empty_like(x)
    return [
        ("conv_forward", lambda: ck.conv_forward(x, w, b, **kw)),
        ("conv_forward-out", lambda: ck.conv_forward(x, w, b, **kw, out=out_y)),
        ("conv_forward-1d-f64", lambda: ck.conv_forward(x1, w1, padding="same")),
        ("conv_forward-noncontiguous", lambda: ck.conv_forward(xs, w, **kw)),
        ("conv_backward_input", lambda: ck.conv_backward_input(gy, w, x.shape, **kw)),
        ("conv_backward_input-out",
         lambda: ck.conv_backward_input(gy, w, x.shape, **kw, out=out_gx)),
        ("conv_backward_weight", lambda: ck.conv_backward_weight(x, gy, w.shape, **kw)),
        ("conv_backward_weight-1d-f64",
         lambda: ck.conv_backward_weight(x1, y1, w1.shape, padding="same")),
        ("conv_backward_bias", lambda: ck.conv_backward_bias(gy)),
        ("conv_backward_bias-untied", lambda: ck.conv_backward_bias(gy, untied=True)),
        ("conv_transpose", lambda: ck.conv_transpose(gy, w, b[:6], output_padding=(0, 1), **kw)),
        ("conv_transpose-refused",
         _refused(lambda: ck.conv_transpose(gy, w, stride=2, output_padding=2))),
        ("maxpool_forward", lambda: ck.maxpool_forward(x, 3, stride=2, padding=1)),
        ("maxpool_forward-pairs", lambda: ck.maxpool_forward(x, 3, stride=2, padding=((2, 0), (0, 2)))),
        ("maxpool_backward", lambda: ck.maxpool_backward(gp, i, x.shape)),
        # refused calls, including one refused after its kernel ran (forged index)
        ("maxpool_backward-forged", _refused(lambda: ck.maxpool_backward(gp, bad_i, x.shape))),
        ("conv_forward-refused", _refused(lambda: ck.conv_forward(x, w, stride=0))),
        ("conv_backward_weight-refused",
         _refused(lambda: ck.conv_backward_weight(x, gy[:1], w.shape, **kw))),
        ("set_get_num_threads", lambda: (ck.set_num_threads(2), ck.get_num_threads(),
                                         ck.set_num_threads(None))),
    ]


CASES = cases()


def growth_mib(fn, calls):
    for _ in range(max(100, calls // 10)):  # warm-up: allocator arenas, thread pools
        fn()
    gc.collect()
    _malloc_trim()
    before = rss_mib()
    for _ in range(calls):
        fn()
    gc.collect()
    _malloc_trim()
    return rss_mib() - before


@pytest.mark.parametrize("name, fn", CASES, ids=[c[0] for c in CASES])
def test_repeated_calls_do_not_grow_memory(name, fn):
    grown = growth_mib(fn, CALLS)
    assert grown < LIMIT_MIB, f"{name}: resident memory grew {grown:.1f} MiB in {CALLS} calls"


def test_the_check_sees_a_leak():
    """A deliberate leak of 64 KiB per call must fail the same check."""
    hoard = []

    def leaky():
        hoard.append(np.ones(8192))  # 64 KiB, touched
    assert growth_mib(leaky, 200) > LIMIT_MIB


if __name__ == "__main__":
    calls = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    worst = 0.0
    for name, fn in CASES:
        g = growth_mib(fn, calls)
        worst = max(worst, g)
        print(f"{name:32s} {calls} calls: {g:+6.2f} MiB")
    print(f"worst growth {worst:.2f} MiB (limit {LIMIT_MIB} MiB):",
          "ok" if worst < LIMIT_MIB else "LEAK")
    sys.exit(0 if worst < LIMIT_MIB else 1)


def test_the_scratch_cache_reuses_large_blocks_and_gives_them_back():
    """A call's large scratch blocks are kept for the next call (src/scratch_cache.h):
    after a call some are cached, within the cache's 256 MiB bound; the same call again
    reuses them (the cache does not grow); releasing the cache frees them all."""
    from convkern import _conv
    _conv.release_scratch_cache()
    assert _conv.scratch_cache_bytes() == 0
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 256, 16, 16)).astype(np.float32)
    plan = ck.conv_plan(x.shape, (256, 256, 3, 3), padding=1)
    gy = rng.standard_normal(plan.y_shape).astype(np.float32)
    for _ in range(2):   # (a block freed within the first call may serve a smaller one)
        plan.backward_weight_bias(x, gy)
    cached = _conv.scratch_cache_bytes()
    assert 256 << 10 <= cached <= 256 << 20
    for _ in range(3):
        plan.backward_weight_bias(x, gy)
    assert _conv.scratch_cache_bytes() == cached
    _conv.release_scratch_cache()
    assert _conv.scratch_cache_bytes() == 0
