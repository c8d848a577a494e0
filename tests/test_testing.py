"""convkern.testing: gradcheck passes on convkern's functions and layers and fails, naming
the input, on a deliberately wrong backward; compare_with_torch checks a small net and
catches a wrong gradient. Also: importing convkern does not import torch.
"""

import functools
import subprocess
import sys

import numpy as np
import pytest
from conftest import DTYPES

import convkern
from convkern import Conv, Dense, Flatten, MaxPool, ReLU, Sequential, Sigmoid, Tanh
from convkern.testing import GradcheckError, compare_with_torch, gradcheck, register_vjp


def test_import_convkern_does_not_import_torch():
    code = ("import sys, convkern, convkern.interop, convkern.testing; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ---------------------------------------------------------------------------
# Functions.


def test_conv_forward_all_inputs(rng):
    x = rng.standard_normal((2, 4, 6, 5))
    w = rng.standard_normal((6, 2, 3, 2))
    b = rng.standard_normal(6)
    errors = gradcheck(convkern.conv_forward, x, w, b,
                       kwargs=dict(stride=(2, 1), padding=((1, 0), (0, 2)), groups=2))
    assert set(errors) == {"x", "weight", "bias"}
    assert max(errors.values()) < 1e-7


@pytest.mark.parametrize("kw", [dict(stride=2, padding=1, output_padding=1, groups=2),
                                dict(stride=1, padding=0, output_padding=2, dilation=3)])
def test_conv_transpose_all_inputs(kw, rng):
    x = rng.standard_normal((2, 4, 5, 4))
    w = rng.standard_normal((4, 3, 3, 2))
    b = rng.standard_normal(3 * kw.get("groups", 1))
    errors = gradcheck(convkern.conv_transpose, x, w, b, kwargs=kw)
    assert set(errors) == {"x", "weight", "bias"}
    assert max(errors.values()) < 1e-7


@pytest.mark.parametrize("d", [1, 3])
def test_conv_forward_untied_bias_and_partial(d, rng):
    x = rng.standard_normal((2, 2) + (4,) * d)
    w = rng.standard_normal((3, 2) + (2,) * d)
    b = rng.standard_normal((3,) + (5,) * d)  # untied, 'full' padding: O = 5
    fn = functools.partial(convkern.conv_forward, padding="full")
    assert set(gradcheck(fn, x, w, b)) == {"x", "weight", "bias"}
    # Unbatched input and no bias: only x and weight are checked.
    assert set(gradcheck(fn, x[0], w, None)) == {"x", "weight"}


def test_conv_gradients_are_differentiable_too(rng):
    x = rng.standard_normal((2, 4, 5, 5))
    w = rng.standard_normal((4, 2, 3, 3))
    kw = dict(stride=2, padding=1, dilation=(1, 2), groups=2)
    gy = convkern.conv_forward(x, w, **kw)
    assert set(gradcheck(convkern.conv_backward_input, gy, w, x.shape, kwargs=kw)) == {
        "grad_y", "weight"}
    assert set(gradcheck(convkern.conv_backward_weight, x, gy, w.shape, kwargs=kw)) == {
        "x", "grad_y"}
    assert set(gradcheck(convkern.conv_backward_bias, gy)) == {"grad_y"}
    assert set(gradcheck(convkern.conv_backward_bias, gy, kwargs=dict(untied=True))) == {
        "grad_y"}


@pytest.mark.parametrize("kernel, shape", [(2, (2, 3, 6, 5)), ((3,), (3, 9)),
                                           ((2, 2, 3), (1, 2, 4, 5, 6))])
def test_maxpool_forward(kernel, shape, rng):
    x = rng.standard_normal(shape)
    errors = gradcheck(convkern.maxpool_forward, x, kernel,
                       kwargs=dict(stride=1, padding=1, ceil_mode=True))
    assert list(errors) == ["x"] and errors["x"] < 1e-7


def test_float32_inputs_are_checked_in_float64(rng):
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    w = rng.standard_normal((2, 2, 3, 3)).astype(np.float32)
    assert max(gradcheck(convkern.conv_forward, x, w).values()) < 1e-7


def wrong_conv(x, weight):
    return convkern.conv_forward(x, weight)


def wrong_conv_vjp(g, y, x, weight):
    """The weight gradient is right; the input gradient lacks its first channel."""
    grad_x = convkern.conv_backward_input(g, weight, x.shape)
    grad_x[:, 0] = 0
    return grad_x, convkern.conv_backward_weight(x, g, weight.shape)


register_vjp(wrong_conv, wrong_conv_vjp)


def test_a_wrong_vjp_fails_naming_the_input(rng):
    x = rng.standard_normal((1, 2, 4, 4))
    w = rng.standard_normal((2, 2, 3, 3))
    with pytest.raises(GradcheckError, match=r"gradcheck failed for 'x' \(error") as info:
        gradcheck(wrong_conv, x, w)
    assert isinstance(info.value, AssertionError)
    assert info.value.failed == ["x"]
    assert info.value.errors["x"] > 0.1 and info.value.errors["weight"] < 1e-7


def test_functions_without_a_backward_are_refused(rng):
    x = rng.standard_normal((1, 1, 3, 3))
    with pytest.raises(TypeError, match="no analytic backward"):
        gradcheck(lambda a: 2 * a, x)
    with pytest.raises(TypeError, match="no analytic backward"):
        gradcheck(convkern.maxpool_backward, x, x.astype(np.int64), x.shape)
    with pytest.raises(ValueError, match="no float array"):
        gradcheck(convkern.conv_backward_bias, x.astype(np.int64))


# ---------------------------------------------------------------------------
# Layers.


LAYERS = [
    ("conv-relu", lambda: Conv(2, 3, 3, padding=1, activation="relu", rng=0), (2, 2, 5, 5)),
    ("conv1d-sigmoid-nobias", lambda: Conv(2, 3, (3,), stride=2, bias=None,
                                           activation="sigmoid", rng=0), (2, 2, 9)),
    ("conv3d-untied-tanh", lambda: Conv(2, 2, (2, 2, 2), bias="untied", activation="tanh",
                                        dtype=np.float64, rng=0, input_shape=(2, 3, 4, 3)),
     (1, 2, 3, 4, 3)),
    ("maxpool", lambda: MaxPool(2, stride=1, padding=1), (2, 2, 4, 4)),
    ("dense-tanh", lambda: Dense(5, 3, activation="tanh", rng=0), (4, 5)),
    ("flatten", Flatten, (2, 2, 3)),
    ("relu", ReLU, (3, 4)),
    ("sigmoid", Sigmoid, (3, 4)),
    ("tanh", Tanh, (3, 4)),
    ("nested-sequential", lambda: Sequential(
        Conv(1, 2, 3, activation="relu", rng=0),
        Sequential(MaxPool(2), Sequential(Flatten(), Dense(2, 3, activation="sigmoid", rng=1))),
        Dense(3, 2, rng=2)), (2, 1, 4, 4)),
]


@pytest.mark.parametrize("case", LAYERS, ids=[c[0] for c in LAYERS])
def test_layers_pass(case, rng):
    _, make, shape = case
    layer = make()
    for array in layer.params.values():  # non-zero biases
        array[...] = rng.standard_normal(array.shape)
    x = rng.standard_normal(shape).astype(np.float32)
    before = {k: (v.copy(), layer.grads[k].copy()) for k, v in layer.params.items()}
    errors = gradcheck(layer, x)
    assert set(errors) == {"x", *layer.params}
    assert max(errors.values()) < 1e-6
    for key, (param, grad) in before.items():  # the layer itself is untouched
        assert layer.params[key].dtype == param.dtype
        np.testing.assert_array_equal(layer.params[key], param)
        np.testing.assert_array_equal(layer.grads[key], grad)


class BrokenWeightGrad(Conv):
    """A Conv whose weight gradient misses the last tap of every filter."""

    def backward(self, grad_y):
        before = self.grads["weight"].copy()
        grad_x = super().backward(grad_y)
        self.grads["weight"][..., -1] = before[..., -1]
        return grad_x


class BrokenInputGrad(Dense):
    """A Dense whose input gradient forgets the activation's derivative."""

    def backward(self, grad_y):
        super().backward(grad_y)  # the parameter gradients, right
        return grad_y @ self.params["weight"]


def test_a_broken_layer_backward_fails_naming_the_parameter(rng):
    model = Sequential(Conv(1, 2, 3, rng=0), BrokenWeightGrad(2, 2, 2, rng=1))
    x = rng.standard_normal((1, 1, 5, 5))
    with pytest.raises(GradcheckError, match="'1.weight'") as info:
        gradcheck(model, x)
    assert info.value.failed == ["1.weight"]
    assert info.value.errors["0.weight"] < 1e-7


def test_a_broken_input_gradient_fails_naming_x(rng):
    layer = BrokenInputGrad(4, 3, activation="tanh", rng=0)
    with pytest.raises(GradcheckError, match="gradcheck failed for 'x'"):
        gradcheck(layer, rng.standard_normal((2, 4)))
    # Upstream of it, every gradient of a Sequential goes wrong.
    model = Sequential(Dense(3, 4, rng=1), layer)
    with pytest.raises(GradcheckError) as info:
        gradcheck(model, rng.standard_normal((2, 3)))
    assert info.value.failed == ["x", "0.weight", "0.bias"]


def test_eps_and_rtol_must_be_positive():
    x = np.ones((1, 1, 3, 3))
    with pytest.raises(ValueError, match="eps must be positive"):
        gradcheck(ReLU(), x, eps=0.0)
    with pytest.raises(ValueError, match="rtol must be positive"):
        gradcheck(convkern.conv_forward, x, x, rtol=-1e-5)
    with pytest.raises(TypeError, match="eps must be a float"):
        gradcheck(ReLU(), x, eps="1e-6")


def test_layer_gradcheck_arguments():
    with pytest.raises(TypeError, match="one float input array"):
        gradcheck(ReLU(), np.ones(3), np.ones(3))
    with pytest.raises(TypeError, match="one float input array"):
        gradcheck(ReLU(), np.ones(3, np.int64))
    with pytest.raises(TypeError, match="no kwargs"):
        gradcheck(ReLU(), np.ones(3), kwargs={"stride": 1})


# ---------------------------------------------------------------------------
# compare_with_torch.


def small_net(dtype):
    return Sequential(
        Conv(2, 4, 3, padding=1, activation="relu", dtype=dtype, rng=0),
        MaxPool(2),
        Sequential(Conv(4, 4, (3, 3), padding="same", groups=2, dtype=dtype, rng=1), Tanh()),
        Flatten(),
        Dense(16, 3, activation="sigmoid", dtype=dtype, rng=2),
    )


@pytest.mark.torch
@pytest.mark.parametrize("dtype", DTYPES)
def test_compare_with_torch_small_net(dtype, rng, torch):
    model = small_net(dtype)
    x = rng.standard_normal((2, 2, 4, 4)).astype(dtype)
    errors = compare_with_torch(model, x)
    assert set(errors) == {"output", "x", *model.params}
    assert max(errors.values()) <= {np.float32: 1e-4, np.float64: 1e-10}[dtype]
    assert all(not g.any() for g in model.grads.values())  # the model itself is untouched
    # One layer is wrapped in a Sequential.
    assert set(compare_with_torch(Conv(2, 3, 3, dtype=dtype, rng=0), x)) == {
        "output", "x", "0.weight", "0.bias"}


@pytest.mark.torch
def test_compare_with_torch_catches_a_wrong_gradient(rng, torch):
    model = Sequential(Dense(3, 4, rng=1), BrokenInputGrad(4, 3, activation="tanh", rng=0))
    with pytest.raises(GradcheckError, match="compare_with_torch: 'x'") as info:
        compare_with_torch(model, rng.standard_normal((2, 3)).astype(np.float32))
    assert info.value.failed == ["x", "0.weight", "0.bias"]


def test_compare_with_torch_without_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    with pytest.raises(ImportError, match="compare_with_torch needs PyTorch"):
        compare_with_torch(small_net(np.float32), np.ones((1, 2, 4, 4), np.float32))
