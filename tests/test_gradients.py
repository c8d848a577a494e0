"""Gradients checked against finite differences of convkern's own forward (float64), and
the adjoint identities <conv(x, w), g> = <x, input_grad(g, w)> = <w, weight_grad(x, g)>.

The scalar loss is L = sum(forward(...) * g) for a fixed random g, so dL/d(argument) is
exactly what the backward functions return for grad_y = g.
"""

import numpy as np
import pytest
from conftest import DTYPES, FD_TOLERANCE, TOLERANCE, assert_close
from reference import numerical_gradient  # noqa: E402
from test_conv import CONV_CASES, conv_kwargs, make_conv_inputs
from test_pool import POOL_CASES, make_pool_input, pool_kwargs

import convkern

H = 1e-3


FD_CONV_CASES = CONV_CASES[::5]


@pytest.mark.parametrize("case", FD_CONV_CASES, ids=[c["id"] for c in FD_CONV_CASES])
def test_conv_gradients_match_finite_differences(case, rng):
    kw = conv_kwargs(case)
    if case["bias"] == "nobias":
        case = dict(case, bias="tied")
    x, w, b, g = make_conv_inputs(case, np.float64, rng, N=1)
    untied = case["bias"] == "untied"

    def loss():
        return float(np.sum(convkern.conv_forward(x, w, b, **kw) * g))

    assert_close(convkern.conv_backward_input(g, w, x.shape, **kw),
                 numerical_gradient(loss, x, H), np.float64, "grad_x", tol=FD_TOLERANCE)
    assert_close(convkern.conv_backward_weight(x, g, w.shape, **kw),
                 numerical_gradient(loss, w, H), np.float64, "grad_w", tol=FD_TOLERANCE)
    assert_close(convkern.conv_backward_bias(g, untied=untied),
                 numerical_gradient(loss, b, H), np.float64, "grad_b", tol=FD_TOLERANCE)


def test_unreached_input_rows_get_zero_gradient(rng):
    # Stride 3 over 11 samples with a 2-tap kernel touches 0,1, 3,4, 6,7, 9,10: never 2,5,8.
    x = rng.standard_normal((2, 3, 11))
    w = rng.standard_normal((4, 3, 2))
    g = rng.standard_normal((2, 4, 4))
    gx = convkern.conv_backward_input(g, w, x.shape, stride=3)
    np.testing.assert_array_equal(gx[..., [2, 5, 8]], 0.0)
    assert np.all(gx[..., [0, 1, 3, 4, 6, 7, 9, 10]] != 0.0)


# Larger shapes for the adjoint identities (float32 and float64).
ADJOINT = [
    dict(x=(8, 16, 257), w=(24, 8, 7), stride=2, padding="same", dilation=3, groups=2),
    dict(x=(4, 12, 130), w=(12, 1, 5), stride=3, padding=((4, 1),), dilation=1, groups=12),
    dict(x=(4, 16, 32, 30), w=(24, 8, 3, 3), stride=2, padding="same", dilation=2, groups=2),
    dict(x=(3, 10, 29, 31), w=(20, 10, 5, 4), stride=(1, 3), padding=((2, 0), (1, 3)),
         dilation=1, groups=1),
    dict(x=(2, 8, 40, 40), w=(8, 1, 3, 3), stride=1, padding="full", dilation=(2, 1),
         groups=8),
    dict(x=(2, 8, 12, 11, 10), w=(8, 4, 3, 3, 3), stride=2, padding=1, dilation=1, groups=2),
    dict(x=(2, 6, 9, 14, 13), w=(9, 2, 2, 3, 4), stride=(1, 2, 3), padding="valid",
         dilation=(2, 1, 1), groups=3),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", ADJOINT, ids=[f"{len(p['x']) - 2}d-{i}" for i, p in
                                            enumerate(ADJOINT)])
def test_adjoint_identities(p, dtype, rng):
    kw = {k: p[k] for k in ("stride", "padding", "dilation", "groups")}
    x = rng.standard_normal(p["x"]).astype(dtype)
    w = rng.standard_normal(p["w"]).astype(dtype)
    y = convkern.conv_forward(x, w, **kw)
    g = rng.standard_normal(y.shape).astype(dtype)
    gx = convkern.conv_backward_input(g, w, x.shape, **kw)
    gw = convkern.conv_backward_weight(x, g, w.shape, **kw)
    f64 = np.float64
    lhs = np.sum(y.astype(f64) * g)
    via_x = np.sum(x.astype(f64) * gx)
    via_w = np.sum(w.astype(f64) * gw)
    # Rounding is bounded relative to the sum of absolute products of each side.
    scale = max(np.sum(np.abs(y.astype(f64) * g)), np.sum(np.abs(x.astype(f64) * gx)),
                np.sum(np.abs(w.astype(f64) * gw)))
    tol = TOLERANCE[np.dtype(dtype)] * scale
    assert abs(lhs - via_x) <= tol, (lhs, via_x, tol)
    assert abs(lhs - via_w) <= tol, (lhs, via_w, tol)
    # The bias identity: <y + b, g> - <y, g> = <b, bias_grad(g)>.
    b = rng.standard_normal(y.shape[1]).astype(dtype)
    yb = convkern.conv_forward(x, w, b, **kw)
    lhs_b = np.sum((yb.astype(f64) - y) * g)
    via_b = np.sum(b.astype(f64) * convkern.conv_backward_bias(g))
    assert abs(lhs_b - via_b) <= TOLERANCE[np.dtype(dtype)] * np.sum(np.abs(yb.astype(f64) * g))


FD_POOL_CASES = POOL_CASES[::4]


@pytest.mark.parametrize("case", FD_POOL_CASES, ids=[c["id"] for c in FD_POOL_CASES])
def test_maxpool_backward_matches_finite_differences(case, rng):
    # Distinct values at least 0.1 apart: a step of H never changes which element wins.
    x = make_pool_input(case, np.float64, "random", rng, N=1)
    x[...] = rng.permutation(x.size).reshape(x.shape) * 0.1
    kw = pool_kwargs(case)
    y, idx = convkern.maxpool_forward(x, case["kernel"], **kw)
    g = rng.standard_normal(y.shape)

    def loss():
        return float(np.sum(convkern.maxpool_forward(x, case["kernel"], **kw)[0] * g))

    assert_close(convkern.maxpool_backward(g, idx, x.shape), numerical_gradient(loss, x, H),
                 np.float64, tol=FD_TOLERANCE)
