"""NaN and Inf propagation, and sizes that overflow or cannot be allocated.

NaN/Inf: every function is compared with PyTorch when torch is importable (the conv
contract is ``torch.nn.functional.conv{d}d`` of the *explicitly* zero-padded input, so
``0 * inf`` in the padding gives NaN: PyTorch's own float32 ``padding=`` path skips padded
taps and differs there) and always with the float64 reference.  NaN must appear at
exactly the same positions, infinities with the same sign; finite values within
conftest's tolerance.  Max pooling: a NaN always wins (the last NaN of a window, as
PyTorch), indices equal.

Sizes: shapes whose element counts overflow int64 or that need terabytes fail with
ValueError or MemoryError *before any kernel runs*: each case runs in a child process
whose kernel entry points are replaced by a function that exits with status 99, under an
address-space limit (so a representable but absurd allocation is a MemoryError even where
the kernel would overcommit).
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import reference as ref
from conftest import assert_close

import convkern as ck

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # the reference comparisons still run
    torch = None

UNDER_ASAN = "asan" in os.environ.get("LD_PRELOAD", "")

D_SHAPES = {1: ((2, 3, 11), (4, 3, 3)), 2: ((2, 3, 9, 8), (4, 3, 3, 2)),
            3: ((2, 3, 6, 5, 7), (4, 3, 2, 3, 2))}


def _poison(a, rng, nan=2, posinf=2, neginf=2, zero=0):
    """Put NaN, +Inf, -Inf (and exact zeros) at random positions of a copy of a."""
    a = a.copy()
    flat = a.reshape(-1)
    for value, count in ((np.nan, nan), (np.inf, posinf), (-np.inf, neginf), (0.0, zero)):
        flat[rng.choice(flat.size, count, replace=False)] = value
    return a


def _same_nonfinite(actual, expected, dtype, what):
    actual = np.asarray(actual)
    expected = np.asarray(expected, dtype=np.float64)
    assert np.isnan(actual).any() or np.isinf(actual).any(), f"{what}: nothing propagated"
    assert_close(actual, expected, dtype, err_msg=what)  # NaN and Inf positions exact


def _torch_conv(d):
    return {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[d]


def _torch_pad(t, pairs):
    flat = []
    for lo, hi in reversed(pairs):
        flat += [lo, hi]
    return F.pad(t, flat)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("where", ["x", "weight", "both"])
def test_nan_inf_propagate_through_conv(d, dtype, where):
    rng = np.random.default_rng(d * 10 + (dtype == np.float64))
    xs, ws = D_SHAPES[d]
    x = rng.standard_normal(xs).astype(dtype)
    w = rng.standard_normal(ws).astype(dtype)
    if where in ("x", "both"):
        x = _poison(x, rng, zero=3)
    if where in ("weight", "both"):
        w = _poison(w, rng, nan=1, posinf=1, neginf=1, zero=2)
    kw = dict(stride=2 if d == 1 else 1, padding=1, dilation=1)
    pairs = ((1, 1),) * d
    y = ck.conv_forward(x, w, **kw)
    gy = _poison(rng.standard_normal(y.shape).astype(dtype), rng, nan=1, posinf=1, neginf=1)
    gx = ck.conv_backward_input(gy, w, x.shape, **kw)
    gw = ck.conv_backward_weight(x, gy, w.shape, **kw)
    gb = ck.conv_backward_bias(gy)

    _same_nonfinite(y, ref.conv_forward(x, w, **kw), dtype, "forward vs reference")
    _same_nonfinite(gx, ref.conv_backward_input(gy, w, x.shape, **kw), dtype, "input grad vs reference")
    _same_nonfinite(gw, ref.conv_backward_weight(x, gy, w.shape, **kw), dtype, "weight grad vs reference")
    _same_nonfinite(gb, ref.conv_backward_bias(gy), dtype, "bias grad vs reference")

    if torch is None:
        return
    xt = torch.from_numpy(x).requires_grad_(True)
    wt = torch.from_numpy(w).requires_grad_(True)
    bt = torch.zeros(w.shape[0], dtype=xt.dtype, requires_grad=True)
    yt = _torch_conv(d)(_torch_pad(xt, pairs), wt, bt, stride=kw["stride"])
    yt.backward(torch.from_numpy(gy))
    _same_nonfinite(y, yt.detach().numpy(), dtype, "forward vs torch")
    _same_nonfinite(gx, xt.grad.numpy(), dtype, "input grad vs torch")
    _same_nonfinite(gw, wt.grad.numpy(), dtype, "weight grad vs torch")
    _same_nonfinite(gb, bt.grad.numpy(), dtype, "bias grad vs torch")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("channels", [1, 40])
@pytest.mark.parametrize("d", [1, 2, 3])
def test_inf_in_last_input_column_weight_grad(d, channels, stride, dtype):
    """The direct weight gradient computes halo columns past each output row (of each
    stride phase) and drops them; an infinity that only a halo column reads must not
    leak a NaN into taps whose true sum never meets it (the few-channel dot path and
    the GEMM path)."""
    rng = np.random.default_rng(d + channels + 100 * stride)
    size = 5 + stride  # the last column is read by the last output
    x = rng.standard_normal((2, channels) + (size,) * d).astype(dtype)
    x[..., -1] = np.inf
    out = (size - 3) // stride + 1
    gy = rng.standard_normal((2, 3) + (out,) * d).astype(dtype)
    gw = ck.conv_backward_weight(x, gy, (3, channels) + (3,) * d, stride=stride)
    expected = ref.conv_backward_weight(x, gy, (3, channels) + (3,) * d, stride=stride)
    assert np.isfinite(expected[..., 0]).all()
    _same_nonfinite(gw, expected, dtype, "weight grad vs reference")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inf_times_zero_padding_is_nan(dtype):
    """An infinite weight meets the zero padding: 0 * inf = NaN, as in the zero-padded
    input of the contract (a kernel that skipped padded taps would give a finite value)."""
    x = np.ones((1, 1, 3), dtype)
    w = np.array([[[np.inf, 1.0, 1.0]]], dtype)
    y = ck.conv_forward(x, w, padding=1)
    assert np.isnan(y[0, 0, 0])           # tap 0 reads the padding
    assert y[0, 0, 1] == np.inf and y[0, 0, 2] == np.inf


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("d", [1, 2, 3])
def test_nan_inf_through_maxpool(d, dtype):
    rng = np.random.default_rng(100 + d)
    shape = {1: (2, 3, 13), 2: (2, 3, 9, 8), 3: (2, 2, 5, 6, 5)}[d]
    x = rng.integers(-2, 3, shape).astype(dtype)      # ties everywhere
    x = _poison(x, rng, nan=4, posinf=3, neginf=6)
    plane = x[0, 0].reshape(-1)
    plane[:4] = np.nan                                # a window with several NaN
    x[1, 1] = -np.inf                                 # a plane of -inf only
    kw = dict(stride=1, padding=1, dilation=1, ceil_mode=False)
    ks = (3,) * d
    y, idx = ck.maxpool_forward(x, ks, **kw)
    ey, ei = ref.maxpool_forward(x, ks, **kw)
    np.testing.assert_array_equal(idx, ei)
    np.testing.assert_array_equal(y.astype(np.float64), ey)   # NaN == NaN here
    assert np.isnan(y).any() and np.isposinf(y).any() and np.isneginf(y).any()
    gy = _poison(rng.standard_normal(y.shape).astype(dtype), rng, nan=1, posinf=1, neginf=1)
    gx = ck.maxpool_backward(gy, idx, x.shape)
    _same_nonfinite(gx, ref.maxpool_backward(gy, idx, x.shape, d), dtype, "pool grad vs reference")
    if torch is None:
        return
    pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[d]
    xt = torch.from_numpy(x).requires_grad_(True)
    yt, it = pool(xt, ks, return_indices=True, **kw)
    yt.backward(torch.from_numpy(gy))
    np.testing.assert_array_equal(idx, it.numpy())
    np.testing.assert_array_equal(y, yt.detach().numpy())
    _same_nonfinite(gx, xt.grad.numpy(), dtype, "pool grad vs torch")


# --------------------------------------------------------------------------------------
# Sizes that overflow or cannot be allocated
# --------------------------------------------------------------------------------------

HUGE_PRELUDE = textwrap.dedent("""
    import os, sys
    if not {asan}:
        import resource
        lim = 4 << 30
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))
    import numpy as np
    import convkern as ck
    from convkern import _conv, _pool

    def _ran(*args, **kwargs):
        print("a kernel ran", flush=True)
        os._exit(99)

    for mod in (_conv, _pool):
        for name in dir(mod):
            if name.startswith(("conv_", "maxpool_")):
                setattr(mod, name, _ran)
""")

# (id, statement); every statement must raise ValueError or MemoryError.
HUGE = [
    # element counts whose products overflow int64
    ("conv-output-overflow-3d",
     "ck.conv_forward(np.ones((1, 1, 2, 2, 2)), np.ones((1, 1, 1, 1, 1)), padding=2**21)"),
    ("conv-output-overflow-1d-channels",
     "ck.conv_forward(np.ones((1, 1, 2)), np.ones((3, 1, 1)), padding=2**61)"),
    ("input-grad-x_shape-overflow",
     "ck.conv_backward_input(np.ones((1, 1, 1, 1)), np.ones((1, 1, 1, 1)), "
     "(2**31, 1, 2**31, 2**31), stride=2**40)"),
    ("weight-grad-zero-batch-huge-weight",
     "ck.conv_backward_weight(np.empty((0, 2**31, 1)), np.empty((0, 2**31, 1)), "
     "(2**31, 2**31, 1))"),
    ("bias-grad-untied-zero-batch-huge",
     "ck.conv_backward_bias(np.empty((0, 2**31, 2**31)), untied=True)"),
    ("pool-grad-x_shape-overflow",
     "ck.maxpool_backward(np.ones((1, 1, 1, 1)), np.zeros((1, 1, 1, 1), np.int64), "
     "(1, 1, 2**40, 2**40))"),
    # representable, but terabytes
    ("conv-output-terabytes",
     "ck.conv_forward(np.ones((1, 1, 8)), np.ones((1, 1, 1)), padding=2**40)"),
    ("conv-output-terabytes-2d",
     "ck.conv_forward(np.ones((1, 1, 4, 4), np.float32), np.ones((1, 1, 1, 1), np.float32), "
     "padding=2**20)"),
    ("conv-full-padding-huge-dilation",
     "ck.conv_forward(np.ones((1, 1, 3)), np.ones((1, 1, 3)), padding='full', dilation=2**40)"),
    ("input-grad-terabytes",
     "ck.conv_backward_input(np.ones((1, 1, 1)), np.ones((1, 1, 1)), (1, 1, 2**40), "
     "stride=2**40)"),
    ("weight-grad-terabytes",
     "ck.conv_backward_weight(np.ones((1, 1, 1)), np.ones((1, 1, 2)), (1, 1, 2**40), "
     "padding=((2**40, 0),))"),
    ("pool-grad-terabytes",
     "ck.maxpool_backward(np.ones((1, 1, 1)), np.zeros((1, 1, 1), np.int64), (1, 1, 2**40))"),
    ("conv-padding-pairs-2**62",
     "ck.conv_forward(np.ones((1, 1, 1)), np.ones((1, 1, 1)), padding=((2**62, 2**62),))"),
]
if not UNDER_ASAN:
    # representable and 16 GiB: fails only because of the child's 4 GiB limit
    HUGE.append(("conv-output-16GiB",
                 "ck.conv_forward(np.ones((1, 1, 8), np.float32), np.ones((1, 1, 1), np.float32), "
                 "padding=2**31)"))


@pytest.mark.parametrize("case, stmt", HUGE, ids=[h[0] for h in HUGE])
def test_absurd_sizes_fail_before_any_kernel_runs(case, stmt):
    code = HUGE_PRELUDE.format(asan=UNDER_ASAN) + textwrap.dedent(f"""
        try:
            {stmt}
        except (ValueError, MemoryError) as e:
            print("refused:", type(e).__name__, e)
            sys.exit(0)
        print("accepted")
        sys.exit(1)
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(ck.__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, f"{case}: {proc.returncode}\n{proc.stdout}{proc.stderr}"


def test_zero_batch_with_huge_spatial_extent_returns_empty():
    """A batch of 0 is valid and needs no memory, however large the other axes."""
    x = np.empty((0, 2, 2**40))
    y = ck.conv_forward(x, np.ones((3, 2, 2)))
    assert y.shape == (0, 3, 2**40 - 1) and y.size == 0
    p, i = ck.maxpool_forward(x, 2)
    assert p.shape == (0, 2, 2**39) and i.size == 0
    p, i = ck.maxpool_forward(x, 2, stride=1, dilation=3)  # the dilated-window check is O(1) too
    assert p.shape == (0, 2, 2**40 - 3) and i.size == 0


# Legal max-pool calls with astronomically large windows (padding <= kernel // 2, the
# window fits the padded input): the answer, or a ValueError/MemoryError, never a crash.
# The product of the kernel sizes overflows int64 in the first two.
HUGE_WINDOWS = [
    ("2d-window-2**71-taps", (1, 1, 5, 1), (2**31, 2**40),
     dict(stride=(2**40, 2), padding=(2**30 - 2, 2**39))),
    ("3d-window-2**133-taps", (1, 1, 2, 5, 1), (2**62, 2**31, 2**40),
     dict(stride=(2**61, 2**40, 2), padding=(2**61 - 1, 2**30 - 2, 2**39))),
    ("1d-window-2**40-taps", (1, 1, 5), (2**40,), dict(stride=2, padding=2**39)),
]


@pytest.mark.parametrize("case, shape, kernel, kw", HUGE_WINDOWS, ids=[h[0] for h in HUGE_WINDOWS])
def test_huge_pool_windows_are_computed_or_refused(case, shape, kernel, kw):
    code = textwrap.dedent(f"""
        import numpy as np, convkern as ck
        x = np.arange(np.prod({shape!r}), dtype=np.float32).reshape({shape!r})
        try:
            y, i = ck.maxpool_forward(x, {kernel!r}, **{kw!r})
        except (ValueError, MemoryError) as e:
            print("refused:", e)
            raise SystemExit(0)
        # every window that touches the input sees all of it (the windows are huge)
        plane = int(np.prod({shape!r}[2:]))
        assert ((i >= 0) & (i < plane)).all(), i
        assert (y == x.reshape(x.shape[:2] + (-1,)).max(axis=-1)[(...,) + (None,) * (y.ndim - 2)]).all(), y
        print("computed", y.shape)
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(ck.__file__)))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYTHONPATH=root))
    assert proc.returncode == 0, f"{case}: {proc.returncode}\n{proc.stdout}{proc.stderr[-2000:]}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("where", ["weight", "grad_y"])
@pytest.mark.parametrize("xs, ws", [((2, 6, 5, 5), (40, 6, 3, 3)),   # weight larger than grad_x
                                    ((2, 6, 9, 9), (4, 6, 3, 3))],   # and smaller
                         ids=["weight-larger", "weight-smaller"])
def test_nonfinite_on_every_input_gradient_path(xs, ws, where, dtype):
    """Every input-gradient path gives the true gradient's NaN and infinities, whether
    the check for non-finite weights reads the weight (before) or grad_x (after): an
    infinite weight at the first tap meets grad_y's zero padding on the flipped paths,
    which must not turn into NaN."""
    rng = np.random.default_rng(len(where) + ws[0])
    w = rng.standard_normal(ws).astype(dtype)
    plan = ck.conv_plan(xs, ws, dtype=dtype, padding=1)
    gy = rng.standard_normal(plan.y_shape).astype(dtype)
    if where == "weight":
        w[:, :, 0, 0] = np.inf
        w[3, 2, 1, 1] = np.nan
    else:
        gy = _poison(gy, rng, nan=1, posinf=1, neginf=1)
    want = ref.conv_backward_input(gy, w, xs, padding=1)
    if where == "weight":
        assert np.isfinite(want).any()  # the padding's 0 * inf is no term of the gradient
    for path in plan.valid_paths("backward_input"):
        got = plan.force(backward_input=path).backward_input(gy, w)
        _same_nonfinite(got, want, dtype, path)
