"""conv_transpose and the ConvTranspose layer against PyTorch's conv_transpose{1,2,3}d.

- Forward over random geometries (stride, padding, output_padding, dilation, groups,
  bias, 1/2/3-D, batched and unbatched), including output_padding >= stride, which
  PyTorch allows when the dilation is larger than the stride.
- The README's gradient mapping, written with the existing functions only
  (grad_x = conv_forward(grad_y, weight, ...), grad_w = conv_backward_weight(grad_y, x, ...),
  grad_b = conv_backward_bias(grad_y)), against torch autograd on the same geometries.
- The layer: forward, every gradient, activations, save/load, errors.
"""

import numpy as np
import pytest
from conftest import DTYPES, LAYOUTS, assert_close, layout

import convkern as ck

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

pytestmark = pytest.mark.torch
torch.set_num_threads(1)

CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _random_geometry(rng, d):
    """Per-axis kernel, stride, padding, output_padding, dilation and input size with a
    positive output size; output_padding >= stride is drawn whenever it is allowed."""
    while True:
        k = tuple(int(v) for v in rng.integers(1, 4, d))
        st = tuple(int(v) for v in rng.integers(1, 4, d))
        dl = tuple(int(v) for v in rng.integers(1, 4, d))
        op = tuple(int(rng.integers(0, max(s, t))) for s, t in zip(st, dl))
        p = tuple(int(v) for v in rng.integers(0, 3, d))
        S = tuple(int(v) for v in rng.integers(1, {1: 9, 2: 6, 3: 4}[d], d))
        out = [(s - 1) * a - 2 * b + c * (kk - 1) + e + 1
               for s, a, b, c, kk, e in zip(S, st, p, dl, k, op)]
        if min(out) >= 1:
            return dict(kernel=k, stride=st, padding=p, output_padding=op, dilation=dl, S=S)


def _cases(rng, d, count):
    cases = []
    for i in range(count):
        g = _random_geometry(rng, d)
        groups = (1, 2, 3)[i % 3]
        cases.append(dict(g, groups=groups, C=groups * int(rng.integers(1, 3)),
                          F=groups * int(rng.integers(1, 3)), N=int(rng.integers(1, 3)),
                          bias=bool(i % 2)))
    # the case that needs the zero extension: output_padding >= stride (dilation > stride)
    cases.append(dict(kernel=(2,) * d, stride=(1,) * d, padding=(0,) * d,
                      output_padding=(2,) * d, dilation=(3,) * d, S=(3,) * d, groups=2,
                      C=2, F=4, N=2, bias=True))
    return cases


def _arrays(case, dtype, rng):
    d = len(case["kernel"])
    x = rng.standard_normal((case["N"], case["C"]) + case["S"]).astype(dtype)
    w = rng.standard_normal((case["C"], case["F"] // case["groups"]) + case["kernel"]).astype(dtype)
    b = rng.standard_normal(case["F"]).astype(dtype) if case["bias"] else None
    return d, x, w, b


def _kw(case):
    return {k: case[k] for k in ("stride", "padding", "output_padding", "dilation", "groups")}


def _torch_forward(x, w, b, case, requires_grad=False):
    d = w.ndim - 2
    xt = torch.from_numpy(x.copy()).requires_grad_(requires_grad)
    wt = torch.from_numpy(w.copy()).requires_grad_(requires_grad)
    bt = None if b is None else torch.from_numpy(b.copy()).requires_grad_(requires_grad)
    yt = CONV_T[d](xt, wt, bt, **_kw(case))
    return yt, xt, wt, bt


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 2, 3])
def test_forward_matches_torch(d, dtype, rng):
    for case in _cases(rng, d, 24):
        _, x, w, b = _arrays(case, dtype, rng)
        y = ck.conv_transpose(x, w, b, **_kw(case))
        yt, *_ = _torch_forward(x, w, b, case)
        assert_close(y, yt.numpy(), dtype, err_msg=str(case))
        # unbatched
        yu = ck.conv_transpose(x[0], w, b, **_kw(case))
        assert_close(yu, CONV_T[d](torch.from_numpy(x[0].copy()), torch.from_numpy(w),
                                   None if b is None else torch.from_numpy(b),
                                   **_kw(case)).numpy(), dtype, err_msg=str(case))


def _gradients_from_existing_functions(x, w, grad_y, case):
    """The README's mapping, with conv_forward / conv_backward_weight / conv_backward_bias."""
    conv = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
                groups=case["groups"])
    S = x.shape[2:]
    grad_x = ck.conv_forward(grad_y, w, **conv)
    # output_padding >= stride: the convolution has S + output_padding // stride outputs;
    # x's gradient is the first S, and x is extended with zeros for the weight gradient
    extended = tuple(s + op // st for s, op, st in zip(S, case["output_padding"], case["stride"]))
    assert grad_x.shape[2:] == extended
    grad_x = grad_x[(Ellipsis,) + tuple(slice(0, s) for s in S)]
    x_ext = np.zeros(x.shape[:2] + extended, x.dtype)
    x_ext[(Ellipsis,) + tuple(slice(0, s) for s in S)] = x
    grad_w = ck.conv_backward_weight(grad_y, x_ext, w.shape, **conv)
    grad_b = ck.conv_backward_bias(grad_y)
    return grad_x, grad_w, grad_b


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 2, 3])
def test_documented_gradient_mapping_matches_torch_autograd(d, dtype, rng):
    for case in _cases(rng, d, 18):
        case["bias"] = True
        _, x, w, b = _arrays(case, dtype, rng)
        yt, xt, wt, bt = _torch_forward(x, w, b, case, requires_grad=True)
        grad_y = rng.standard_normal(tuple(yt.shape)).astype(dtype)
        yt.backward(torch.from_numpy(grad_y))
        gx, gw, gb = _gradients_from_existing_functions(x, w, grad_y, case)
        assert_close(gx, xt.grad.numpy(), dtype, err_msg=f"grad_x {case}")
        assert_close(gw, wt.grad.numpy(), dtype, err_msg=f"grad_w {case}")
        assert_close(gb, bt.grad.numpy(), dtype, err_msg=f"grad_b {case}")


def test_the_mapping_needs_the_zero_extension_only_when_output_padding_reaches_stride():
    # output_padding < stride: the convolution has exactly S outputs, no extension
    x = np.ones((1, 2, 4, 4))
    gy = np.ones(ck.conv_transpose(x, np.ones((2, 3, 3, 3)), stride=2, output_padding=1).shape)
    assert ck.conv_forward(gy, np.ones((2, 3, 3, 3)), stride=2).shape == x.shape
    # output_padding 2 >= stride 1 (dilation 3): S + 2 outputs
    gy = np.ones(ck.conv_transpose(x, np.ones((2, 3, 2, 2)), dilation=3, output_padding=2).shape)
    assert ck.conv_forward(gy, np.ones((2, 3, 2, 2)), dilation=3).shape == (1, 2, 6, 6)


@pytest.mark.parametrize("kind", LAYOUTS)
def test_any_input_layout_gives_the_contiguous_result(kind, rng):
    x = rng.standard_normal((2, 4, 5, 6))
    w = rng.standard_normal((4, 3, 3, 2))
    b = rng.standard_normal(6)
    kw = dict(stride=2, padding=1, output_padding=1, groups=2)
    expected = ck.conv_transpose(x, w, b, **kw)
    got = ck.conv_transpose(layout(x, kind), layout(w, kind), layout(b, kind), **kw)
    np.testing.assert_array_equal(got, expected)


def test_out_is_filled_and_returned(rng):
    x = rng.standard_normal((2, 4, 5)).astype(np.float32)
    w = rng.standard_normal((4, 2, 3)).astype(np.float32)
    b = rng.standard_normal(2).astype(np.float32)
    expected = ck.conv_transpose(x, w, b, stride=2)
    out = np.full(expected.shape, np.nan, np.float32)
    assert ck.conv_transpose(x, w, b, stride=2, out=out) is out
    np.testing.assert_array_equal(out, expected)
    out_u = np.full(expected.shape[1:], np.nan, np.float32)
    assert ck.conv_transpose(x[0], w, b, stride=2, out=out_u) is out_u
    np.testing.assert_array_equal(out_u, expected[0])


def test_empty_batch_gives_an_empty_result():
    y = ck.conv_transpose(np.ones((0, 2, 4)), np.ones((2, 3, 3)), np.ones(3), stride=2)
    assert y.shape == (0, 3, 9)


_X = np.ones((2, 4, 5, 5))
_W = np.ones((4, 3, 3, 3))


@pytest.mark.parametrize("call, error, pattern", [
    (lambda: ck.conv_transpose(_X, _W, stride=2, output_padding=2), ValueError,
     r"output_padding 2 along spatial axis 0 must be smaller than either stride 2 or dilation 1"),
    (lambda: ck.conv_transpose(_X, _W, output_padding=1), ValueError, r"output_padding"),
    (lambda: ck.conv_transpose(_X, _W, dilation=2, stride=1, output_padding=(0, 2)), ValueError,
     r"output_padding 2 along spatial axis 1"),
    (lambda: ck.conv_transpose(_X, _W, output_padding=-1), ValueError, r"output_padding.*>= 0"),
    (lambda: ck.conv_transpose(_X, _W, output_padding=True), ValueError, r"output_padding.*bool"),
    (lambda: ck.conv_transpose(_X, _W, padding=4), ValueError, r"output would have size -1"),
    (lambda: ck.conv_transpose(_X, _W, padding="same"), ValueError, r"padding.*integer"),
    (lambda: ck.conv_transpose(_X, _W, padding=((1, 1), (1, 1))), ValueError, r"padding\[0\]"),
    (lambda: ck.conv_transpose(_X, _W, stride=0), ValueError, r"stride"),
    (lambda: ck.conv_transpose(_X, _W, stride=1.0), ValueError, r"stride.*float"),
    (lambda: ck.conv_transpose(_X, _W, groups=3), ValueError, r"groups=3 does not divide the 4"),
    (lambda: ck.conv_transpose(_X[:, :3], _W), ValueError, r"x has 3 channels.*expects 4"),
    (lambda: ck.conv_transpose(_X, _W, np.ones(4)), ValueError, r"bias must have shape \(3,\)"),
    (lambda: ck.conv_transpose(_X, _W, np.ones((3, 7, 7))), ValueError, r"bias must have shape"),
    (lambda: ck.conv_transpose(_X, _W[0, 0]), ValueError, r"weight must have 3, 4 or 5"),
    (lambda: ck.conv_transpose(_X[0, 0], _W), ValueError, r"x must have 4 dimensions"),
    (lambda: ck.conv_transpose(_X[:, :, :0], _W), ValueError, r"zero-size"),
    (lambda: ck.conv_transpose(_X, _W[:, :, :0]), ValueError, r"zero-size"),
    (lambda: ck.conv_transpose(None, _W), TypeError, r"\bx\b.*ndarray"),
    (lambda: ck.conv_transpose(_X, _W.tolist()), TypeError, r"weight.*ndarray"),
    (lambda: ck.conv_transpose(_X.astype(np.float32), _W), TypeError, r"dtype"),
    (lambda: ck.conv_transpose(_X, _W, np.ones(3, np.float32)), TypeError, r"dtype"),
    (lambda: ck.conv_transpose(_X.astype(np.int64), _W), TypeError, r"\bx\b.*dtype"),
    (lambda: ck.conv_transpose(_X, _W, out=np.ones((2, 3, 7, 6))), ValueError, r"out must have shape"),
    (lambda: ck.conv_transpose(_X, _W, out=np.ones((2, 3, 7, 7), np.float32)), TypeError,
     r"out must have dtype"),
])
def test_bad_arguments(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_out_may_not_overlap_an_input():
    buf = np.ones(2 * 4 * 7 * 7)
    x = buf[: 2 * 4 * 5 * 5].reshape(2, 4, 5, 5)
    with pytest.raises(ValueError, match="shares memory"):
        ck.conv_transpose(x, _W, out=buf[: 2 * 3 * 7 * 7].reshape(2, 3, 7, 7))


# ---------------------------------------------------------------------------
# The layer.

TORCH_LAYER = {1: "ConvTranspose1d", 2: "ConvTranspose2d", 3: "ConvTranspose3d"}
ACT = {None: lambda t: t, "relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}


@pytest.mark.parametrize("activation", [None, "relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 2, 3])
def test_layer_matches_torch_module(d, dtype, activation, rng):
    case = _cases(rng, d, 3)[(d + len(str(activation))) % 4]
    layer = ck.ConvTranspose(case["C"], case["F"], case["kernel"], bias=case["bias"],
                             activation=activation, dtype=dtype, rng=rng, **_kw(case))
    module = getattr(torch.nn, TORCH_LAYER[d])(case["C"], case["F"], case["kernel"],
                                               bias=case["bias"], **_kw(case))
    module = module.to(torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(layer.params["weight"]))
        if case["bias"]:
            layer.params["bias"][...] = rng.standard_normal(case["F"])
            module.bias.copy_(torch.from_numpy(layer.params["bias"]))
    x = rng.standard_normal((case["N"], case["C"]) + case["S"]).astype(dtype)
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    yt = ACT[activation](module(xt))
    y = layer(x)
    assert_close(y, yt.detach().numpy(), dtype, err_msg=str(case))
    g = rng.standard_normal(y.shape).astype(dtype)
    yt.backward(torch.from_numpy(g))
    gx = layer.backward(g)
    assert_close(gx, xt.grad.numpy(), dtype, err_msg=str(case))
    assert_close(layer.grads["weight"], module.weight.grad.numpy(), dtype)
    if case["bias"]:
        assert_close(layer.grads["bias"], module.bias.grad.numpy(), dtype)
    else:
        assert set(layer.params) == {"weight"}


def test_layer_accumulates_and_skips_the_input_gradient(rng):
    layer = ck.ConvTranspose(2, 4, 3, stride=2, output_padding=1, dtype=np.float64, rng=0)
    x = rng.standard_normal((2, 2, 4, 4))
    g = rng.standard_normal(layer(x).shape)
    gx = layer.backward(g)
    first = {k: v.copy() for k, v in layer.grads.items()}
    layer.needs_input_grad = False
    assert layer.backward(g) is None
    for k in first:
        np.testing.assert_allclose(layer.grads[k], 2 * first[k], rtol=1e-12)
    assert gx.shape == x.shape
    layer.eval()
    layer(x)
    with pytest.raises(RuntimeError):
        layer.backward(g)


def test_layer_in_a_sequential_saves_and_loads(tmp_path, rng):
    model = ck.Sequential(
        ck.Conv(1, 4, 3, stride=2, padding=1, activation="relu", rng=0),
        ck.ConvTranspose(4, 2, (3, 3), stride=2, padding=1, output_padding=1, groups=2,
                         activation="tanh", rng=1),
    )
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    y = model(x)
    assert y.shape == (2, 2, 8, 8)
    model.save(tmp_path / "m.npz")
    again = ck.load_model(tmp_path / "m.npz")
    np.testing.assert_array_equal(again(x), y)
    assert repr(again) == repr(model)
    assert "ConvTranspose(4, 2, (3, 3), stride=(2, 2), padding=(1, 1), output_padding=(1, 1), " \
           "groups=2, activation='tanh')" in repr(model)
    ck.load_model(tmp_path / "m.npz", model)  # in place, same architecture
    other = ck.Sequential(model[0], ck.ConvTranspose(4, 2, 3, stride=2, padding=1, groups=2,
                                                     activation="tanh"))
    with pytest.raises(ValueError, match="output_padding"):
        ck.load_model(tmp_path / "m.npz", other)


@pytest.mark.parametrize("kwargs, error, pattern", [
    (dict(stride=2, output_padding=2), ValueError, r"output_padding .* smaller than either"),
    (dict(output_padding=1), ValueError, r"output_padding"),
    (dict(output_padding=-1), ValueError, r"output_padding must be >= 0"),
    (dict(padding="same"), ValueError, r"padding must be an integer"),
    (dict(groups=3), ValueError, r"groups=3 must divide"),
    (dict(bias="tied"), ValueError, r"bias must be a bool"),
    (dict(activation="gelu"), ValueError, r"activation"),
    (dict(dtype=np.int32), TypeError, r"dtype"),
])
def test_layer_refuses_bad_arguments(kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        ck.ConvTranspose(4, 6, 3, **kwargs)


def test_layer_checks_its_input():
    layer = ck.ConvTranspose(4, 6, 3)
    with pytest.raises(TypeError, match="dtype"):
        layer(np.ones((1, 4, 3, 3)))
    with pytest.raises(ValueError, match="dims"):
        layer(np.ones((4, 3, 3), np.float32))
    with pytest.raises(ValueError, match="channels"):
        layer(np.ones((1, 3, 3, 3), np.float32))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 2, 3])
def test_forward_matches_the_scatter_reference(d, dtype, rng):
    import reference as ref

    for case in _cases(rng, d, 12):
        _, x, w, b = _arrays(case, dtype, rng)
        assert_close(ck.conv_transpose(x, w, b, **_kw(case)),
                     ref.conv_transpose(x, w, b, **_kw(case)), dtype, err_msg=str(case))


def test_sizes_too_large_to_index_are_refused_before_allocating():
    x, w = np.ones((1, 1, 2)), np.ones((1, 1, 2))
    with pytest.raises(ValueError, match="output of shape"):
        ck.conv_transpose(x, w, dilation=2**62, output_padding=2**61)
    with pytest.raises(ValueError, match="output of shape"):
        ck.conv_transpose(np.ones((2**20, 1, 2)), w, stride=2**44)
    # a one-element output whose equivalent convolution needs x extended by 2**61 - 1
    with pytest.raises(ValueError, match="x extended by output_padding"):
        ck.conv_transpose(x, np.ones((1, 1, 1)), dilation=2**61, output_padding=2**61 - 1,
                          padding=2**60)
