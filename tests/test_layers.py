"""The layer API: finite-difference gradient checks (float64) of every layer, the losses
and a whole small network; the layer protocol; argument checks; optimisers; save/load.

Each check uses the scalar L = sum(layer(x) * r) for a fixed random r, so
dL/dx = layer.backward(r) and dL/dparam = layer.grads[name].

Tolerance: the layers are smooth or piecewise linear (ReLU, max pool) with inputs whose
kinks lie far from the probe points, so central differences with step H = 1e-6 have a
truncation error of about H^2 and a rounding error of about eps * |L| / H ~ 1e-9; errors are
measured relative to max|expected| with FD_TOL = 1e-6.
"""

import math

import numpy as np
import pytest
from conftest import assert_close
from reference import numerical_gradient  # noqa: E402

from convkern import conv_forward, maxpool_forward, set_num_threads
from convkern.layers import Conv, Dense, Flatten, MaxPool, ReLU, Sequential, Sigmoid, Tanh
from convkern.losses import MSELoss, SoftmaxCrossEntropyLoss
from convkern.optim import SGD, Adam
from convkern.serialization import load_model, save_model

H = 1e-6
FD_TOL = 1e-6


def check_gradients(layer, x, rng):
    """Compare backward's input and parameter gradients with finite differences."""
    r = rng.standard_normal(layer(x).shape)

    def loss():
        return float(np.sum(layer(x) * r))

    layer.zero_grad()
    layer(x)
    grad_x = layer.backward(r)
    assert_close(grad_x, numerical_gradient(loss, x, H), np.float64, "grad_x", tol=FD_TOL)
    assert layer.grads.keys() == layer.params.keys()
    for name, param in layer.params.items():
        assert_close(layer.grads[name], numerical_gradient(loss, param, H), np.float64,
                     f"grad {name}", tol=FD_TOL)


# --------------------------------------------------------------------------------------
# Gradient checks, layer by layer
# --------------------------------------------------------------------------------------

CONV_CASES = [
    # (id, constructor kwargs, input shape)
    ("1d-stride2-tied-relu",
     dict(in_channels=2, out_channels=3, kernel_size=(3,), stride=2, padding=1,
          activation="relu"), (2, 2, 9)),
    ("2d-int-kernel-full-none-sigmoid",
     dict(in_channels=2, out_channels=2, kernel_size=3, padding="full", bias=None,
          activation="sigmoid"), (2, 2, 4, 5)),
    ("2d-same-dil2-groups2-untied-tanh",
     dict(in_channels=4, out_channels=2, kernel_size=(3, 2), stride=(2, 1), padding="same",
          dilation=2, groups=2, bias="untied", activation="tanh"), (2, 4, 7, 6)),
    ("2d-depthwise-stride3-uneven",
     dict(in_channels=3, out_channels=6, kernel_size=(2, 2), stride=3, groups=3),
     (1, 3, 8, 7)),
    ("3d-pairs-tied",
     dict(in_channels=2, out_channels=2, kernel_size=(2, 3, 2),
          padding=((1, 0), (0, 1), (1, 1))), (2, 2, 4, 4, 3)),
]


@pytest.mark.parametrize("kwargs, shape", [c[1:] for c in CONV_CASES],
                         ids=[c[0] for c in CONV_CASES])
def test_conv_gradients(kwargs, shape, rng):
    layer = Conv(**kwargs, dtype=np.float64, rng=rng)
    x = rng.standard_normal(shape)
    layer(x)  # shapes an untied bias
    if "bias" in layer.params:  # non-zero, so the bias enters the activation
        bias = layer.params["bias"]
        bias[...] = rng.standard_normal(bias.shape)
    check_gradients(layer, x, rng)


POOL_CASES = [
    ("1d", dict(kernel_size=2), (2, 3, 9)),
    ("2d-pad-ceil", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), (2, 2, 7, 6)),
    ("2d-overlap", dict(kernel_size=(3, 2), stride=1), (1, 2, 5, 5)),
    ("3d-dilation", dict(kernel_size=(2, 2, 2), dilation=2), (1, 2, 5, 5, 4)),
]


@pytest.mark.parametrize("kwargs, shape", [c[1:] for c in POOL_CASES],
                         ids=[c[0] for c in POOL_CASES])
def test_maxpool_gradients(kwargs, shape, rng):
    check_gradients(MaxPool(**kwargs), rng.standard_normal(shape), rng)


@pytest.mark.parametrize("activation", [None, "relu", "sigmoid", "tanh"])
@pytest.mark.parametrize("bias", [True, False])
def test_dense_gradients(activation, bias, rng):
    layer = Dense(5, 4, bias=bias, activation=activation, dtype=np.float64, rng=rng)
    check_gradients(layer, rng.standard_normal((3, 5)), rng)


@pytest.mark.parametrize("cls", [Flatten, ReLU, Sigmoid, Tanh])
def test_parameterless_layer_gradients(cls, rng):
    check_gradients(cls(), rng.standard_normal((2, 3, 4)), rng)


def small_network(rng, dtype=np.float64):
    return Sequential(
        Conv(2, 4, (3, 3), padding=1, activation="relu", dtype=dtype, rng=rng),
        MaxPool(2),
        Conv(4, 4, 3, padding="same", groups=2, bias="untied", activation="tanh",
             dtype=dtype, rng=rng),
        MaxPool(2, stride=1),
        Flatten(),
        Dense(4 * 2 * 2, 6, activation="sigmoid", dtype=dtype, rng=rng),
        Dense(6, 3, dtype=dtype, rng=rng),
    )


@pytest.mark.parametrize("loss_cls", [SoftmaxCrossEntropyLoss, MSELoss])
def test_whole_network_gradients(loss_cls, rng):
    model = small_network(rng)
    model.needs_input_grad = True
    x = rng.standard_normal((3, 2, 6, 6))
    target = rng.integers(0, 3, 3) if loss_cls is SoftmaxCrossEntropyLoss else (
        rng.standard_normal((3, 3)))
    criterion = loss_cls()

    def loss():
        return criterion(model(x), target)

    model.zero_grad()
    loss()
    grad_x = model.backward(criterion.backward())
    assert_close(grad_x, numerical_gradient(loss, x, H), np.float64, "grad_x", tol=FD_TOL)
    grads = model.grads
    assert len(grads) == 8
    for name, param in model.params.items():
        assert_close(grads[name], numerical_gradient(loss, param, H), np.float64, name,
                     tol=FD_TOL)


@pytest.mark.parametrize("loss_cls", [SoftmaxCrossEntropyLoss, MSELoss])
def test_loss_gradients(loss_cls, rng):
    pred = rng.standard_normal((4, 5))
    target = rng.integers(0, 5, 4) if loss_cls is SoftmaxCrossEntropyLoss else (
        rng.standard_normal((4, 5)))
    criterion = loss_cls()
    criterion(pred, target)
    assert_close(criterion.backward(), numerical_gradient(lambda: criterion(pred, target), pred, H),
                 np.float64, tol=FD_TOL)


# --------------------------------------------------------------------------------------
# Losses: values
# --------------------------------------------------------------------------------------

def test_mse_value():
    pred = np.array([[1.0, 2.0], [3.0, 5.0]])
    target = np.array([[1.0, 0.0], [3.0, 2.0]])
    # (0 + 4 + 0 + 9) / 2 / N=2
    assert MSELoss()(pred, target) == pytest.approx(13 / 4)


def test_cross_entropy_value_and_stability():
    logits = np.array([[0.0, 0.0], [1e4, 0.0]], dtype=np.float32)
    criterion = SoftmaxCrossEntropyLoss()
    assert criterion(logits, np.array([0, 1])) == pytest.approx((np.log(2) + 1e4) / 2)
    grad = criterion.backward()
    assert grad.dtype == np.float32 and np.isfinite(grad).all()
    np.testing.assert_allclose(grad, [[-0.25, 0.25], [0.5, -0.5]])


# --------------------------------------------------------------------------------------
# The layer protocol
# --------------------------------------------------------------------------------------

def test_sequential_first_layer_skips_input_gradient(rng):
    model = small_network(rng)
    x = rng.standard_normal((2, 2, 6, 6))
    assert model(x).shape == (2, 3)
    assert model.backward(np.ones((2, 3))) is None
    assert np.any(model.grads["0.weight"])
    model.needs_input_grad = True
    model(x)
    assert model.backward(np.ones((2, 3))).shape == x.shape


def test_gradients_accumulate_until_zero_grad(rng):
    layer = Conv(2, 3, (3,), dtype=np.float64, rng=rng)
    x, g = rng.standard_normal((2, 2, 7)), rng.standard_normal((2, 3, 5))
    layer(x)
    layer.backward(g)
    once = {k: v.copy() for k, v in layer.grads.items()}
    layer.backward(g)
    for name, grad in layer.grads.items():
        np.testing.assert_allclose(grad, 2 * once[name])
    layer.zero_grad()
    assert not any(np.any(grad) for grad in layer.grads.values())


def test_eval_mode_keeps_nothing_for_backward(rng):
    model = small_network(rng)
    x = rng.standard_normal((2, 2, 6, 6))
    y_train = model(x).copy()  # the output array is the model's: the next call reuses it
    model.eval()
    assert not model.training and not model[0].training
    np.testing.assert_array_equal(model(x), y_train)
    with pytest.raises(RuntimeError, match="without a forward pass"):
        model.backward(np.ones_like(y_train))
    model.train()
    model(x)
    model.backward(np.ones_like(y_train))


def test_pytorch_layouts_and_dtypes():
    conv = Conv(6, 8, (3, 2), groups=2)
    assert conv.params["weight"].shape == (8, 3, 3, 2)
    assert conv.params["bias"].shape == (8,)
    assert conv.params["weight"].dtype == np.float32
    dense = Dense(5, 7, dtype=np.float64)
    assert dense.params["weight"].shape == (7, 5)
    assert dense.params["bias"].shape == (7,)
    assert dense.grads["weight"].dtype == np.float64
    assert "bias" not in Conv(1, 2, 3, bias=None).params
    assert "bias" not in Dense(1, 2, bias=False).grads


def test_untied_bias_shape(rng):
    conv = Conv(2, 3, (3, 3), stride=2, bias="untied")
    assert "bias" not in conv.params
    conv(np.zeros((1, 2, 9, 8), np.float32))
    assert conv.params["bias"].shape == (3, 4, 3)
    assert conv.grads["bias"].shape == (3, 4, 3)
    with pytest.raises(ValueError, match="built for samples of shape"):
        conv(np.zeros((1, 2, 9, 9), np.float32))
    fixed = Conv(2, 3, (3,), padding="same", bias="untied", input_shape=(2, 10))
    assert fixed.params["bias"].shape == (3, 10)


def test_seeded_initialisation():
    a, b = Conv(3, 4, 3, rng=7), Conv(3, 4, 3, rng=7)
    np.testing.assert_array_equal(a.params["weight"], b.params["weight"])
    assert not np.array_equal(a.params["weight"], Conv(3, 4, 3, rng=8).params["weight"])
    np.testing.assert_array_equal(a.params["bias"], 0)
    # He for ReLU layers: std sqrt(2 / fan_in); Glorot uniform otherwise.
    he = Dense(400, 300, activation="relu", rng=0).params["weight"]
    assert he.std() == pytest.approx(np.sqrt(2 / 400), rel=0.02)
    glorot = Dense(400, 300, rng=0).params["weight"]
    bound = np.sqrt(6 / 700)
    assert glorot.max() <= bound and glorot.min() >= -bound
    assert glorot.std() == pytest.approx(bound / np.sqrt(3), rel=0.02)


def test_repr_shows_configuration():
    conv = Conv(1, 16, 3, padding=1, activation="relu", dtype=np.float64)
    assert repr(conv) == "Conv(1, 16, (3, 3), padding=(1, 1), activation='relu', dtype='float64')"
    assert repr(MaxPool(2, stride=1)) == "MaxPool(2, stride=1)"
    assert repr(Sequential(Flatten(), Dense(4, 2))) == (
        "Sequential(\n  (0): Flatten()\n  (1): Dense(4, 2)\n)")


BAD_ARGS = [
    (lambda: Conv(0, 2, 3), ValueError, "in_channels must be >= 1, got 0"),
    (lambda: Conv(1.0, 2, 3), ValueError, "in_channels must be an integer, got float"),
    (lambda: Conv(True, 2, 3), ValueError, r"in_channels must be an integer, got a bool"),
    (lambda: Conv(3, 4, 3, groups=2), ValueError, "groups=2 must divide"),
    (lambda: Conv(1, 2, (1, 2, 3, 4)), ValueError, "kernel_size must have 1, 2 or 3"),
    (lambda: Conv(1, 2, "3"), ValueError, "kernel_size must be an integer, got str"),
    (lambda: Conv(1, 2, (3, 0)), ValueError, r"kernel_size\[1\] must be >= 1"),
    (lambda: Conv(1, 2, 3, stride=0), ValueError, "stride must be >= 1"),
    (lambda: Conv(1, 2, 3, stride=(1, 2, 3)), ValueError, "stride must have 2 entries"),
    (lambda: Conv(1, 2, 3, dilation=1.5), ValueError, "dilation must be an integer"),
    (lambda: Conv(1, 2, 3, padding=-1), ValueError, "padding must be >= 0"),
    (lambda: Conv(1, 2, 3, padding="half"), ValueError, "padding must be 'valid'"),
    (lambda: Conv(1, 2, 3, padding=1.0), ValueError, "padding must be an integer"),
    (lambda: Conv(1, 2, 3, padding=((1, 2, 3), 1)), ValueError,
     r"padding\[0\] must be an int or a \(before, after\) pair"),
    (lambda: Conv(1, 2, 3, bias="shared"), ValueError, "bias must be 'tied'"),
    (lambda: Conv(1, 2, 3, activation="gelu"), ValueError, "activation must be None"),
    (lambda: Conv(1, 2, 3, dtype=np.int32), TypeError, "dtype must be float32 or float64"),
    (lambda: Conv(1, 2, 3, dtype="complex"), TypeError, "dtype must be float32 or float64"),
    (lambda: Conv(1, 2, 3, rng="seed"), TypeError, "rng must be None"),
    (lambda: Conv(1, 2, 3, init="lecun"), ValueError, "init must be None"),
    (lambda: Conv(1, 2, 3, input_shape=(1, 5, 5)), ValueError, "only used with bias='untied'"),
    (lambda: Conv(1, 2, 3, bias="untied", input_shape=(2, 5, 5)), ValueError, "has 2 channels"),
    (lambda: Conv(1, 2, 3, bias="untied", input_shape=(1, 5)), ValueError,
     "input_shape must have 3 entries"),
    (lambda: MaxPool(0), ValueError, "kernel_size must be >= 1"),
    (lambda: MaxPool(2, stride=[1, 1, 1, 1]), ValueError, "stride must have 1, 2 or 3"),
    (lambda: MaxPool((2, 2), stride=(1, 1, 1)), ValueError, "stride must have 2 entries"),
    (lambda: MaxPool(2, padding=-1), ValueError, "padding must be >= 0"),
    (lambda: MaxPool(2, ceil_mode=1), ValueError, "ceil_mode must be a bool"),
    (lambda: Dense(3, 0), ValueError, "out_features must be >= 1"),
    (lambda: Dense(3, 2, bias="yes"), ValueError, "bias must be a bool"),
    (lambda: Dense(3, 2, dtype=np.int64), TypeError, "dtype must be float32 or float64"),
    (lambda: Sequential(), ValueError, "at least one layer"),
    (lambda: Sequential(Flatten(), "relu"), TypeError, "layer 1 must be a convkern Layer"),
]


@pytest.mark.parametrize("make, exc, message", BAD_ARGS, ids=[m for _, _, m in BAD_ARGS])
def test_bad_constructor_arguments(make, exc, message):
    with pytest.raises(exc, match=message):
        make()


# One validation layer: a layer's constructor and the function it calls raise the same
# exception type with the same message for each bad parameter value.
BAD_INTS = [0, -1, 1.5, True, "2", None, np.float32(2.0)]
BAD_CONV_PARAMS = (
    [("stride", v) for v in BAD_INTS + [(1, 2, 3), (1, 0), (1, 1.0)]]
    + [("dilation", v) for v in BAD_INTS + [(2,), (0, 1), (True, 1)]]
    + [("padding", v) for v in [-1, 1.5, True, "half", None, (1, 2, 3), ((1, 2, 3), 1),
                                ((1, -1), 0), (1, (0, 1.5)), [1.0, 1]]]
    + [("groups", v) for v in BAD_INTS]
)
BAD_POOL_PARAMS = (
    [("kernel_size", v) for v in BAD_INTS + [(1, 2, 3, 4), (2, 0), (2, 1.5)]]
    + [("stride", v) for v in BAD_INTS[:-2] + [(1,), (1, 0), (2, False)]]
    + [("padding", v) for v in [-1, 1.5, True, "1", (1,), (0, 1, 0), (0, -1)]]
    + [("dilation", v) for v in BAD_INTS + [(1, 2, 3), (0, 1)]]
    + [("ceil_mode", v) for v in [1, 0, "yes", None, 1.0]]
)


def raised(call):
    """(type, message) of the TypeError or ValueError that call() raises."""
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    return type(info.value), str(info.value)


@pytest.mark.parametrize("name, value", BAD_CONV_PARAMS)
def test_conv_layer_and_function_raise_the_same(name, value):
    x, w = np.zeros((1, 2, 7, 7), np.float32), np.zeros((2, 2, 3, 3), np.float32)
    layer = raised(lambda: Conv(2, 2, 3, **{name: value}))
    assert layer == raised(lambda: conv_forward(x, w, **{name: value}))
    assert layer[0] is ValueError


@pytest.mark.parametrize("name, value", BAD_POOL_PARAMS)
def test_maxpool_layer_and_function_raise_the_same(name, value):
    x = np.zeros((1, 2, 6, 6), np.float32)
    kwargs = {"kernel_size": (2, 2), name: value}
    layer = raised(lambda: MaxPool(**kwargs))
    assert layer == raised(lambda: maxpool_forward(x, **kwargs))
    assert layer[0] is ValueError


def test_bad_forward_and_backward_inputs(rng):
    conv = Conv(2, 3, 3)
    with pytest.raises(TypeError, match="expects an ndarray"):
        conv([[1.0]])
    with pytest.raises(ValueError, match="expects x with 4 dims"):
        conv(np.zeros((2, 5, 5), np.float32))
    with pytest.raises(TypeError, match="Conv expects x of dtype float32, got float64"):
        conv(np.zeros((1, 2, 5, 5)))
    with pytest.raises(RuntimeError, match="without a forward pass"):
        conv.backward(np.zeros((1, 3, 3, 3), np.float32))
    y = conv(np.zeros((1, 2, 5, 5), np.float32))
    with pytest.raises(ValueError, match="grad_y must have the output's shape"):
        conv.backward(np.zeros((1, 3, 4, 4), np.float32))
    with pytest.raises(TypeError, match="grad_y must have the output's dtype"):
        conv.backward(np.zeros(y.shape, np.float64))
    dense = Dense(4, 2)
    with pytest.raises(ValueError, match="expects 4 features"):
        dense(np.zeros((3, 5), np.float32))
    with pytest.raises(TypeError, match="expects x of dtype float32"):
        dense(np.zeros((3, 4), np.float64))
    with pytest.raises(ValueError, match="Flatten expects x of shape"):
        Flatten()(np.zeros(3))


BAD_LOSS_ARGS = [
    (MSELoss, [[1.0]], np.zeros((1, 1)), TypeError, "pred must be an ndarray"),
    (MSELoss, np.zeros((2, 2)), np.zeros((2, 3)), ValueError, "target must have pred's shape"),
    (MSELoss, np.zeros((2, 2), np.int64), np.zeros((2, 2)), TypeError, "pred must be float32"),
    (MSELoss, np.zeros((0, 2)), np.zeros((0, 2)), ValueError, "non-empty batch"),
    (SoftmaxCrossEntropyLoss, np.zeros((2, 3)), np.array([0.0, 1.0]), TypeError,
     "integer labels"),
    (SoftmaxCrossEntropyLoss, np.zeros((2, 3)), np.array([0, 3]), ValueError,
     r"labels must be in \[0, 3\)"),
    (SoftmaxCrossEntropyLoss, np.zeros((2, 3)), np.array([0, 1, 2]), ValueError,
     r"target must have shape \(2,\)"),
    (SoftmaxCrossEntropyLoss, np.zeros((2, 3, 1)), np.array([0, 1]), ValueError,
     "pred must have 2 dims"),
]


@pytest.mark.parametrize("cls, pred, target, exc, message", BAD_LOSS_ARGS,
                         ids=[a[-1] for a in BAD_LOSS_ARGS])
def test_bad_loss_arguments(cls, pred, target, exc, message):
    with pytest.raises(exc, match=message):
        cls()(pred, target)


def test_loss_backward_before_forward():
    with pytest.raises(RuntimeError, match="backward called before forward"):
        MSELoss().backward()


# --------------------------------------------------------------------------------------
# Optimisers (their parity with torch.optim is in test_layers_torch.py)
# --------------------------------------------------------------------------------------

def test_sgd_plain_step_and_zero_grad(rng):
    layer = Dense(3, 2, dtype=np.float64, rng=rng)
    before = layer.params["weight"].copy()
    layer.grads["weight"][...] = 1.0
    optimizer = SGD(layer, lr=0.5)
    optimizer.step()
    np.testing.assert_array_equal(layer.params["weight"], before - 0.5)
    optimizer.zero_grad()
    assert not np.any(layer.grads["weight"])


def test_optimisers_update_in_place_and_keep_dtype(rng):
    model = small_network(rng, np.float32)
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    model(x)  # shapes the untied bias
    arrays = [id(a) for a in model.params.values()]
    for optimizer in (SGD(model, 0.1, momentum=0.9, weight_decay=1e-3), Adam(model)):
        model.backward(np.ones((2, 3), np.float32) - model(x))
        optimizer.step()
        assert [id(a) for a in model.params.values()] == arrays
        assert all(a.dtype == np.float32 for a in model.params.values())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_step_of_a_large_parameter_on_threads(momentum, dtype, rng):
    """A parameter of several chunks of the compiled step (1, 2, 4 threads): the bits of
    the NumPy expressions; a parameter replaced by a strided view is updated too."""
    layer = Dense(150, 170, dtype=dtype, rng=rng)        # 25,500 weights
    for nt in (1, 2, 4):
        set_num_threads(nt)
        try:
            weight = layer.params["weight"].copy()
            sgd = SGD(layer, lr=0.05, momentum=momentum)
            buf = None
            for _ in range(3):
                g = rng.standard_normal(weight.shape).astype(dtype)
                layer.grads["weight"][...] = g
                if momentum:
                    buf = g.copy() if buf is None else buf * dtype(momentum) + g
                weight -= (buf if momentum else g) * dtype(0.05)
                sgd.step()
                np.testing.assert_array_equal(layer.params["weight"], weight)
        finally:
            set_num_threads(None)
    strided = np.zeros((8, 6), dtype)[:, ::2]
    layer = Dense(3, 8, dtype=dtype, rng=rng)
    layer.params["weight"] = strided
    layer.grads["weight"][...] = 1.0
    SGD(layer, lr=0.5, momentum=momentum).step()
    np.testing.assert_array_equal(strided, np.full((8, 3), -0.5, dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_optimiser_steps_have_the_bits_of_the_textbook_expressions(weight_decay, dtype, rng):
    """The in-place steps (scratch arrays, no temporaries) compute the same expressions."""
    layer = Dense(6, 5, dtype=dtype, rng=rng)
    sgd_params = {k: v.copy() for k, v in layer.params.items()}
    adam_layer = Dense(6, 5, dtype=dtype, rng=0)
    adam_params = {k: v.copy() for k, v in adam_layer.params.items()}
    sgd = SGD(layer, lr=0.1, momentum=0.9, weight_decay=weight_decay)
    adam = Adam(adam_layer, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=weight_decay)
    b1, b2 = 0.8, 0.99
    buf, m, v = {}, {}, {}
    for t in range(1, 4):
        for name in layer.params:
            g = rng.standard_normal(layer.params[name].shape).astype(dtype)
            layer.grads[name][...] = g
            adam_layer.grads[name][...] = g
            gs = g + weight_decay * sgd_params[name] if weight_decay else g
            buf[name] = buf[name] * 0.9 + gs if name in buf else gs.copy()
            sgd_params[name] -= 0.1 * buf[name]
            ga = g + weight_decay * adam_params[name] if weight_decay else g
            m[name] = m.get(name, np.zeros_like(g))
            v[name] = v.get(name, np.zeros_like(g))
            m[name] += (1 - b1) * (ga - m[name])
            v[name] *= b2
            v[name] += (1 - b2) * ga * ga
            denom = v[name] ** 0.5 / math.sqrt(1 - b2**t) + 1e-6
            adam_params[name] -= 0.01 / (1 - b1**t) * m[name] / denom
        sgd.step()
        adam.step()
        for name in layer.params:
            np.testing.assert_array_equal(layer.params[name], sgd_params[name])
            np.testing.assert_array_equal(adam_layer.params[name], adam_params[name])


BAD_OPTIM_ARGS = [
    (lambda m: SGD(m, lr=-1), ValueError, "lr must be a finite number >= 0"),
    (lambda m: SGD(m, lr="0.1"), ValueError, "lr must be a real number"),
    (lambda m: SGD(m, lr=True), ValueError, "lr must be a real number"),
    (lambda m: SGD(m, lr=0.1, momentum=-0.5), ValueError, "momentum must be"),
    (lambda m: SGD(m, lr=0.1, weight_decay=float("nan")), ValueError, "weight_decay must be"),
    (lambda m: SGD(object(), lr=0.1), TypeError, "model must be a convkern layer"),
    (lambda m: Adam(m, betas=(0.9, 1.0)), ValueError, r"betas must be in \[0, 1\)"),
    (lambda m: Adam(m, betas=0.9), ValueError, "betas must be a pair"),
    (lambda m: Adam(m, eps=-1e-8), ValueError, "eps must be"),
]


@pytest.mark.parametrize("make, exc, message", BAD_OPTIM_ARGS,
                         ids=[m for _, _, m in BAD_OPTIM_ARGS])
def test_bad_optimiser_arguments(make, exc, message):
    with pytest.raises(exc, match=message):
        make(Dense(2, 2))


# --------------------------------------------------------------------------------------
# Save and load
# --------------------------------------------------------------------------------------

def test_save_and_rebuild(tmp_path, rng):
    model = small_network(rng, np.float32)
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    y = model(x)
    path = tmp_path / "model.npz"
    model.save(path)
    rebuilt = load_model(path)
    assert repr(rebuilt) == repr(model)
    np.testing.assert_array_equal(rebuilt(x), y)


def test_load_into_existing_model_in_place(tmp_path, rng):
    model = small_network(rng)
    x = rng.standard_normal((2, 2, 6, 6))
    y = model(x)  # shapes the untied bias
    save_model(model, tmp_path / "model.npz")
    other = small_network(np.random.default_rng(1))
    weight = other.params["0.weight"]
    assert load_model(tmp_path / "model.npz", other) is other
    assert other.params["0.weight"] is weight
    np.testing.assert_array_equal(other(x), y)


MISMATCHES = [
    (lambda: Sequential(Conv(2, 5, 3), Flatten()), r"model\[0\] \(Conv\): out_channels is 4"),
    (lambda: Sequential(Conv(2, 4, 3, activation="relu"), Flatten()), "activation is None"),
    (lambda: Sequential(Conv(2, 4, 3, dtype=np.float64), Flatten()), "dtype is 'float32'"),
    (lambda: Sequential(Conv(2, 4, 3), ReLU()), r"model\[1\]: the file has a Flatten layer"),
    (lambda: Sequential(Conv(2, 4, 3)), "the file has 2 layers, the model 1"),
    (lambda: Conv(2, 4, 3), "the file has a Sequential layer, the model a Conv"),
]


@pytest.mark.parametrize("make, message", MISMATCHES, ids=[m for _, m in MISMATCHES])
def test_load_refuses_mismatched_architecture(make, message, tmp_path):
    Sequential(Conv(2, 4, 3), Flatten()).save(tmp_path / "model.npz")
    with pytest.raises(ValueError, match=message):
        load_model(tmp_path / "model.npz", make())


def test_load_refuses_other_files(tmp_path):
    np.savez(tmp_path / "data.npz", images=np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match="not a convkern model file"):
        load_model(tmp_path / "data.npz")
    with pytest.raises(TypeError, match="model must be a convkern Layer"):
        save_model("model", tmp_path / "x.npz")


def test_serialization_does_not_import_the_layers():
    """One direction only: layers import serialization, which finds them by registry."""
    import ast

    import convkern.serialization as serialization

    with open(serialization.__file__) as f:
        tree = ast.parse(f.read())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for a in node.names}
    assert not any(name and name.split(".")[-1] == "layers" for name in imported), imported
    assert serialization.LAYER_TYPES["Conv"] is Conv
    assert "_Activation" not in serialization.LAYER_TYPES
