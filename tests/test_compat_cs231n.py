"""convkern.compat.cs231n against naive float64 loops in cs231n's style, numeric gradients
(the assignment's ``eval_numerical_gradient_array`` and ``rel_error``, written out here)
and PyTorch.

The naive loops below are written the way the assignment's ``layers.py`` is: one output
element (or window) at a time, in float64.  The numeric gradient check differentiates
the float64 forward with central differences (h = 1e-5) as the assignment does; the
functions are linear (conv) or piecewise linear with well-separated values (ReLU, max
pool on random normal data), so the only error is rounding, about
eps * |out| / h ~ 1e-11 of the largest gradient, which is up to about 2e-8 of a small
element: ``check_numeric`` asks for cs231n's rel_error below 1e-7 (the notebooks expect
"around 1e-8 or less"; a wrong tap gives errors near 1) and for the suite's own
FD_TOLERANCE relative to the largest element.
"""

import numpy as np
import pytest
from conftest import DTYPES, FD_TOLERANCE, assert_close

import convkern.compat.cs231n as cs

# ---------------------------------------------------------------------------
# The assignment's helpers and naive layers, written out in float64.


def rel_error(x, y):
    """cs231n's relative error: max |x - y| / max(1e-8, |x| + |y|)."""
    return np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y)))


def eval_numerical_gradient_array(f, x, df, h=1e-5):
    """cs231n's central-difference gradient of sum(f(x) * df) with respect to x."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
    while not it.finished:
        ix = it.multi_index
        old = x[ix]
        x[ix] = old + h
        pos = f(x).copy()
        x[ix] = old - h
        neg = f(x).copy()
        x[ix] = old
        grad[ix] = np.sum((pos - neg) * df) / (2 * h)
        it.iternext()
    return grad


def check_numeric(analytic, numeric):
    """The assignment's check, and the suite's finite-difference tolerance."""
    assert rel_error(analytic, numeric) < 1e-7
    assert_close(analytic, numeric, np.float64, tol=FD_TOLERANCE)


def conv_forward_naive(x, w, b, conv_param):
    stride, pad = conv_param["stride"], conv_param["pad"]
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    Ho, Wo = (H + 2 * pad - HH) // stride + 1, (W + 2 * pad - WW) // stride + 1
    out = np.zeros((N, F, Ho, Wo))
    for n in range(N):
        for f in range(F):
            for i in range(Ho):
                for j in range(Wo):
                    window = xp[n, :, i * stride:i * stride + HH, j * stride:j * stride + WW]
                    out[n, f, i, j] = np.sum(window * w[f]) + b[f]
    return out


def conv_backward_naive(dout, x, w, conv_param):
    stride, pad = conv_param["stride"], conv_param["pad"]
    N, C, H, W = x.shape
    F, _, HH, WW = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxp, dw = np.zeros_like(xp), np.zeros(w.shape)
    db = dout.sum(axis=(0, 2, 3))
    for n in range(N):
        for f in range(F):
            for i in range(dout.shape[2]):
                for j in range(dout.shape[3]):
                    sl = (n, slice(None), slice(i * stride, i * stride + HH),
                          slice(j * stride, j * stride + WW))
                    dw[f] += xp[sl] * dout[n, f, i, j]
                    dxp[sl] += w[f] * dout[n, f, i, j]
    return dxp[:, :, pad:pad + H, pad:pad + W], dw, db


def max_pool_forward_naive(x, pool_param):
    ph, pw, stride = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    N, C, H, W = x.shape
    out = np.zeros((N, C, (H - ph) // stride + 1, (W - pw) // stride + 1))
    for i in range(out.shape[2]):
        for j in range(out.shape[3]):
            out[:, :, i, j] = x[:, :, i * stride:i * stride + ph, j * stride:j * stride + pw].max(axis=(2, 3))
    return out


def max_pool_backward_naive(dout, x, pool_param):
    """The gradient goes to the first maximum of each window (np.argmax's choice)."""
    ph, pw, stride = pool_param["pool_height"], pool_param["pool_width"], pool_param["stride"]
    dx = np.zeros(x.shape)
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            for i in range(dout.shape[2]):
                for j in range(dout.shape[3]):
                    window = x[n, c, i * stride:i * stride + ph, j * stride:j * stride + pw]
                    a, b = np.unravel_index(np.argmax(window), window.shape)
                    dx[n, c, i * stride + a, j * stride + b] += dout[n, c, i, j]
    return dx


# ---------------------------------------------------------------------------

CONV_CASES = [
    # x shape, w shape, conv_param
    ((2, 3, 8, 8), (4, 3, 3, 3), {"stride": 1, "pad": 1}),
    ((2, 3, 4, 4), (3, 3, 4, 4), {"stride": 2, "pad": 1}),   # the notebook's check
    ((1, 2, 7, 5), (3, 2, 3, 2), {"stride": 2, "pad": 0}),   # does not tile: floor
    ((3, 1, 5, 6), (2, 1, 1, 1), {"stride": 3, "pad": 2}),
]

POOL_CASES = [
    ((2, 3, 8, 8), {"pool_height": 2, "pool_width": 2, "stride": 2}),  # reshape path in cs231n
    ((2, 3, 7, 9), {"pool_height": 3, "pool_width": 2, "stride": 2}),  # does not tile: floor
    ((1, 2, 6, 6), {"pool_height": 3, "pool_width": 3, "stride": 1}),  # overlapping windows
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, w_shape, conv_param", CONV_CASES)
def test_conv_matches_naive_loops(x_shape, w_shape, conv_param, dtype, rng):
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    b = rng.standard_normal(w_shape[0]).astype(dtype)
    out, cache = cs.conv_forward_fast(x, w, b, conv_param)
    assert_close(out, conv_forward_naive(x, w, b, conv_param), dtype)
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx, dw, db = cs.conv_backward_fast(dout, cache)
    for got, expected in zip((dx, dw, db), conv_backward_naive(dout, x, w, conv_param)):
        assert_close(got, expected, dtype)


@pytest.mark.parametrize("x_shape, w_shape, conv_param", CONV_CASES)
def test_conv_passes_the_numeric_gradient_check(x_shape, w_shape, conv_param, rng):
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[0])
    out, cache = cs.conv_forward_fast(x, w, b, conv_param)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = cs.conv_backward_fast(dout, cache)
    dx_num = eval_numerical_gradient_array(lambda v: cs.conv_forward_fast(v, w, b, conv_param)[0], x, dout)
    dw_num = eval_numerical_gradient_array(lambda v: cs.conv_forward_fast(x, v, b, conv_param)[0], w, dout)
    db_num = eval_numerical_gradient_array(lambda v: cs.conv_forward_fast(x, w, v, conv_param)[0], b, dout)
    check_numeric(dx, dx_num)
    check_numeric(dw, dw_num)
    check_numeric(db, db_num)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape, pool_param", POOL_CASES)
def test_max_pool_matches_naive_loops(x_shape, pool_param, dtype, rng):
    x = rng.standard_normal(x_shape).astype(dtype)
    out, cache = cs.max_pool_forward_fast(x, pool_param)
    np.testing.assert_array_equal(out, max_pool_forward_naive(x, pool_param).astype(dtype))
    dout = rng.standard_normal(out.shape).astype(dtype)
    assert_close(cs.max_pool_backward_fast(dout, cache), max_pool_backward_naive(dout, x, pool_param),
                 dtype)


@pytest.mark.parametrize("x_shape, pool_param", POOL_CASES)
def test_max_pool_passes_the_numeric_gradient_check(x_shape, pool_param, rng):
    x = rng.standard_normal(x_shape)
    out, cache = cs.max_pool_forward_fast(x, pool_param)
    dout = rng.standard_normal(out.shape)
    dx = cs.max_pool_backward_fast(dout, cache)
    dx_num = eval_numerical_gradient_array(lambda v: cs.max_pool_forward_fast(v, pool_param)[0], x, dout)
    check_numeric(dx, dx_num)


def _relu_naive(a):
    return np.maximum(a, 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_relu_and_conv_relu_pool_match_the_naive_composition(dtype, rng):
    conv_param = {"stride": 1, "pad": 1}
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    x = rng.standard_normal((2, 3, 8, 8)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    a = conv_forward_naive(x, w, b, conv_param)
    s = _relu_naive(a)
    out, cache = cs.conv_relu_forward(x, w, b, conv_param)
    assert_close(out, s, dtype)
    dout = rng.standard_normal(out.shape).astype(dtype)
    expected = conv_backward_naive(dout * (a > 0), x, w, conv_param)
    for got, exp in zip(cs.conv_relu_backward(dout, cache), expected):
        assert_close(got, exp, dtype)

    out, cache = cs.conv_relu_pool_forward(x, w, b, conv_param, pool_param)
    assert_close(out, max_pool_forward_naive(s, pool_param), dtype)
    dout = rng.standard_normal(out.shape).astype(dtype)
    ds = max_pool_backward_naive(dout, s, pool_param)
    expected = conv_backward_naive(ds * (a > 0), x, w, conv_param)
    for got, exp in zip(cs.conv_relu_pool_backward(dout, cache), expected):
        assert_close(got, exp, dtype)



def _numeric_gradients(forward, arrays, params, dout):
    """Central-difference gradients of ``forward(*arrays, *params)[0]`` against ``dout``,
    one per array."""
    def perturbed(i):
        return lambda v: forward(*arrays[:i], v, *arrays[i + 1:], *params)[0]
    return [eval_numerical_gradient_array(perturbed(i), a, dout) for i, a in enumerate(arrays)]

def test_conv_relu_and_conv_relu_pool_pass_the_numeric_gradient_check(rng):
    conv_param = {"stride": 1, "pad": 1}
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    x = rng.standard_normal((2, 3, 8, 8))
    w = rng.standard_normal((3, 3, 3, 3))
    b = rng.standard_normal(3)
    for forward, backward, extra in (
        (cs.conv_relu_forward, cs.conv_relu_backward, ()),
        (cs.conv_relu_pool_forward, cs.conv_relu_pool_backward, (pool_param,)),
    ):
        out, cache = forward(x, w, b, conv_param, *extra)
        dout = rng.standard_normal(out.shape)
        dx, dw, db = backward(dout, cache)
        dx_num, dw_num, db_num = _numeric_gradients(forward, (x, w, b), (conv_param, *extra),
                                                    dout)
        check_numeric(dx, dx_num)
        check_numeric(dw, dw_num)
        check_numeric(db, db_num)


def test_relu_is_fused_in_place():
    x = np.ones((1, 1, 3, 3))
    w = -np.ones((2, 1, 1, 1))
    w[1] = 1
    out, _ = cs.conv_relu_forward(x, w, np.zeros(2), {"stride": 1, "pad": 0})
    np.testing.assert_array_equal(out[0, 0], 0)
    np.testing.assert_array_equal(out[0, 1], 1)


def test_aliases_are_the_fast_functions():
    for name in ("conv_forward_im2col", "conv_forward_strides"):
        assert getattr(cs, name) is cs.conv_forward_fast
    for name in ("conv_backward_im2col", "conv_backward_strides"):
        assert getattr(cs, name) is cs.conv_backward_fast
    for name in ("max_pool_forward_reshape", "max_pool_forward_im2col"):
        assert getattr(cs, name) is cs.max_pool_forward_fast
    for name in ("max_pool_backward_reshape", "max_pool_backward_im2col"):
        assert getattr(cs, name) is cs.max_pool_backward_fast


def test_star_import_gives_the_fast_layers_names_only():
    namespace = {}
    exec("from convkern.compat.cs231n import *", namespace)
    names = set(namespace) - {"__builtins__"}
    assert names == set(cs.__all__)
    assert {"conv_forward_fast", "conv_backward_fast", "max_pool_forward_fast",
            "max_pool_backward_fast", "conv_relu_forward", "conv_relu_backward",
            "conv_relu_pool_forward", "conv_relu_pool_backward"} <= names
    assert "np" not in names


def test_mixed_float32_float64_follow_numpy_promotion(rng):
    conv_param = {"stride": 1, "pad": 1}
    pool_param = {"pool_height": 2, "pool_width": 2, "stride": 2}
    x = rng.standard_normal((2, 3, 6, 6))                       # the assignment's float64 data
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)   # float32 parameters
    b = rng.standard_normal(4).astype(np.float32)
    w64, b64 = w.astype(np.float64), b.astype(np.float64)
    out, cache = cs.conv_relu_pool_forward(x, w, b, conv_param, pool_param)
    ref, ref_cache = cs.conv_relu_pool_forward(x, w64, b64, conv_param, pool_param)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, ref)
    dout = rng.standard_normal(out.shape)
    for got, exp in zip(cs.conv_relu_pool_backward(dout, cache),
                        cs.conv_relu_pool_backward(dout, ref_cache)):
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, exp)
    # all float32 stays float32; a float64 dout promotes the gradients
    x32 = x.astype(np.float32)
    out32, cache32 = cs.conv_forward_fast(x32, w, b, conv_param)
    assert out32.dtype == np.float32
    assert all(g.dtype == np.float32 for g in cs.conv_backward_fast(out32, cache32))
    assert all(g.dtype == np.float64 for g in cs.conv_backward_fast(out32.astype(np.float64), cache32))
    p32, pcache = cs.max_pool_forward_fast(x32, pool_param)
    assert cs.max_pool_backward_fast(p32, pcache).dtype == np.float32
    assert cs.max_pool_backward_fast(p32.astype(np.float64), pcache).dtype == np.float64


def test_matches_torch_conv_relu_pool(rng):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    conv_param = {"stride": 2, "pad": 2}
    pool_param = {"pool_height": 3, "pool_width": 2, "stride": 2}
    x = rng.standard_normal((3, 4, 15, 13))
    w = rng.standard_normal((5, 4, 5, 3))
    b = rng.standard_normal(5)
    xt, wt, bt = (torch.from_numpy(a.copy()).requires_grad_(True) for a in (x, w, b))
    yt = F.max_pool2d(torch.relu(F.conv2d(xt, wt, bt, stride=2, padding=2)), (3, 2), stride=2)
    out, cache = cs.conv_relu_pool_forward(x, w, b, conv_param, pool_param)
    assert_close(out, yt.detach().numpy(), np.float64)
    dout = rng.standard_normal(out.shape)
    yt.backward(torch.from_numpy(dout))
    for got, t in zip(cs.conv_relu_pool_backward(dout, cache), (xt, wt, bt)):
        assert_close(got, t.grad.numpy(), np.float64)


_X = np.ones((2, 3, 6, 6))
_W = np.ones((4, 3, 3, 3))
_B = np.ones(4)
_CP = {"stride": 1, "pad": 1}
_PP = {"pool_height": 2, "pool_width": 2, "stride": 2}


@pytest.mark.parametrize("call, error, pattern", [
    (lambda: cs.conv_forward_fast(_X, _W, _B, [1, 1]), TypeError, r"conv_param must be a dict"),
    (lambda: cs.conv_forward_fast(_X, _W, _B, {"stride": 1}), ValueError,
     r"conv_param must have exactly the keys \['stride', 'pad'\]; missing \['pad'\]"),
    (lambda: cs.conv_forward_fast(_X, _W, _B, {"stride": 1, "padding": 1}), ValueError,
     r"missing \['pad'\], unknown \['padding'\]"),
    (lambda: cs.conv_forward_fast(_X, _W, _B, {"stride": 1, "pad": 1, "dilation": 2}), ValueError,
     r"unknown \['dilation'\]"),
    (lambda: cs.conv_forward_fast(_X, _W, _B, {"stride": 0, "pad": 1}), ValueError,
     r"conv_param\['stride'\] must be >= 1"),
    (lambda: cs.conv_forward_fast(_X, _W, _B, {"stride": 1, "pad": -1}), ValueError,
     r"conv_param\['pad'\] must be >= 0"),
    (lambda: cs.conv_forward_fast(_X, _W, _B, {"stride": 1, "pad": 1.0}), ValueError,
     r"conv_param\['pad'\] must be an integer"),
    (lambda: cs.conv_forward_fast(_X, _W, _B, {"stride": True, "pad": 1}), ValueError,
     r"conv_param\['stride'\].*bool"),
    (lambda: cs.conv_forward_fast(_X[0], _W, _B, _CP), ValueError, r"x must have 4 dimensions"),
    (lambda: cs.conv_forward_fast(_X, _W[0], _B, _CP), ValueError, r"w must have 4 dimensions"),
    (lambda: cs.conv_forward_fast(_X, _W, _B[:3], _CP), ValueError, r"b must have shape \(4,\)"),
    (lambda: cs.conv_forward_fast(_X[:, :2], _W, _B, _CP), ValueError, r"channels"),
    (lambda: cs.conv_forward_fast(_X, np.ones((4, 3, 9, 9)), _B, _CP), ValueError, r"larger"),
    (lambda: cs.conv_forward_fast(_X.astype(np.int64), _W, _B, _CP), TypeError, r"\bx\b.*dtype"),
    (lambda: cs.conv_forward_fast(_X, _W.astype(np.float16), _B, _CP), TypeError, r"\bw\b.*dtype"),
    (lambda: cs.conv_forward_fast(None, _W, _B, _CP), TypeError, r"\bx\b.*ndarray"),
    (lambda: cs.conv_forward_fast(_X, _W, None, _CP), TypeError, r"\bb\b.*ndarray"),
    (lambda: cs.max_pool_forward_fast(_X, {"pool_height": 2, "stride": 2}), ValueError,
     r"missing \['pool_width'\]"),
    (lambda: cs.max_pool_forward_fast(_X, dict(_PP, pad=1)), ValueError, r"unknown \['pad'\]"),
    (lambda: cs.max_pool_forward_fast(_X, dict(_PP, stride=0)), ValueError,
     r"pool_param\['stride'\] must be >= 1"),
    (lambda: cs.max_pool_forward_fast(_X, dict(_PP, pool_height=7)), ValueError, r"larger"),
    (lambda: cs.max_pool_forward_fast(_X, None), TypeError, r"pool_param must be a dict"),
    (lambda: cs.max_pool_forward_fast(_X[0], _PP), ValueError, r"x must have 4 dimensions"),
    (lambda: cs.conv_relu_pool_forward(_X, _W, _B, _CP, {"pool_height": 2}), ValueError,
     r"pool_param"),
])
def test_bad_arguments(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_backward_refuses_foreign_caches_and_misshapen_dout():
    out, conv_cache = cs.conv_forward_fast(_X, _W, _B, _CP)
    pooled, pool_cache = cs.max_pool_forward_fast(_X, _PP)
    relu_out, relu_cache = cs.conv_relu_forward(_X, _W, _B, _CP)
    crp_out, crp_cache = cs.conv_relu_pool_forward(_X, _W, _B, _CP, _PP)
    with pytest.raises(TypeError, match="conv_forward_fast"):
        cs.conv_backward_fast(out, pool_cache)
    with pytest.raises(TypeError, match="conv_forward_fast"):
        cs.conv_backward_fast(out, (_X, _W, _B, _CP, None))  # cs231n's own tuple cache
    with pytest.raises(TypeError, match="max_pool_forward_fast"):
        cs.max_pool_backward_fast(pooled, conv_cache)
    with pytest.raises(TypeError, match="conv_relu_forward"):
        cs.conv_relu_backward(relu_out, conv_cache)
    with pytest.raises(TypeError, match="got one from conv_relu_pool_forward"):
        cs.conv_relu_backward(relu_out, crp_cache)
    with pytest.raises(TypeError, match="got one from conv_relu_forward"):
        cs.conv_relu_pool_backward(crp_out, relu_cache)
    with pytest.raises(ValueError, match=r"dout must have the forward output's shape"):
        cs.conv_backward_fast(out[:, :2], conv_cache)
    with pytest.raises(ValueError, match=r"dout must have the forward output's shape"):
        cs.max_pool_backward_fast(pooled[..., :1], pool_cache)
    with pytest.raises(ValueError, match=r"dout must have the forward output's shape"):
        cs.conv_relu_pool_backward(crp_out[:1], crp_cache)
    with pytest.raises(TypeError, match=r"dout.*dtype"):
        cs.conv_backward_fast(out.astype(np.int64), conv_cache)
