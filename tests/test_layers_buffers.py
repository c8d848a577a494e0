"""Layers that own and reuse their buffers, with the fused activation.

- After a warm-up step, a whole training step (forward, loss, backward, SGD with
  momentum) allocates no large array: tracemalloc (NumPy reports its allocations to it)
  sees a peak of a few KiB, below the smallest conv or pool buffer of the network.
- The losses and parameters after three steps have exactly the bits of the same steps
  written with the functional API and NumPy (fresh arrays everywhere, the activation
  and its derivative as NumPy expressions, the bias gradients by conv_backward_bias):
  the fused kernel computes the same expressions and the same double sums in the same
  order (see test_eltwise.py). Dense bias gradients are conv_backward_bias of the
  (N, F, 1) view there too; the convs, each followed by a max-pool, take their bias
  sums in the weight gradient's pass (backward_weight_bias), as Sequential does.
- The same steps equal PyTorch's (conftest tolerance).
- The returned arrays follow the ownership contract: the next forward of the same shape
  overwrites them, other shapes keep their own, and a layer fed its own output back is
  still right.
- ``overwrite_grad_y``: Sequential hands the gradients its own layers returned to the
  layer before with it (the functional steps above run that way), never the caller's
  grad_y (even through Flatten's view) nor what a layer of another class returned; a
  layer told so writes phi''s product over grad_y and computes the same bits.
- A ReLU (a Conv's or a ReLU layer's) before a MaxPool: Sequential scatters only the
  pooled outputs > 0 and skips the derivative's pass; the gradients equal the layers'
  own backward calls (the same bits but for the bias sums' order), NaN and overlapping
  windows included, and a sigmoid is not fused.
"""

import tracemalloc

import numpy as np
import pytest
from conftest import assert_close

import convkern as ck
from convkern import (
    SGD,
    Conv,
    Dense,
    Flatten,
    MaxPool,
    ReLU,
    Sequential,
    SoftmaxCrossEntropyLoss,
)
from convkern._buffers import MAX_SHAPES

LR, MOMENTUM, CLASSES = 0.05, 0.9, 10
# What a step may still allocate: Python objects and tiny arrays (the loss's row
# indices), about 1 KiB per layer; half the network's smallest conv or pool buffer
# (the second pool's output, 16 x 16 x 4 x 4 float32 = 16 KiB).
STEP_BYTES = 8192


def vgg_ish(dtype=np.float32, seed=0):
    """conv-relu-pool x 2, dense-relu, dense, for (N, 3, 16, 16) inputs."""
    rng = np.random.default_rng(seed)
    model = Sequential(
        Conv(3, 8, 3, padding=1, activation="relu", dtype=dtype, rng=rng),
        MaxPool(2),
        Conv(8, 16, 3, padding=1, activation="relu", dtype=dtype, rng=rng),
        MaxPool(2),
        Flatten(),
        Dense(16 * 4 * 4, 32, activation="relu", dtype=dtype, rng=rng),
        Dense(32, CLASSES, dtype=dtype, rng=rng),
    )
    # Non-zero biases, so that the bias paths matter.
    for name, param in model.params.items():
        if name.endswith("bias"):
            param[...] = rng.standard_normal(param.shape) * 0.1
    return model


def batch(n, dtype, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, 16, 16)).astype(dtype), rng.integers(0, CLASSES, n)


def layer_step(model, criterion, optimizer, x, labels):
    optimizer.zero_grad()
    loss = criterion(model(x), labels)
    model.backward(criterion.backward())
    optimizer.step()
    return loss


# Dense layers are 1-D convolutions of one-position images (see convkern.layers.Dense).
def dense(x, w, b):
    return ck.conv_forward(x[:, :, None], w[:, :, None], b)[:, :, 0]


def dense_input_grad(g, w):
    return ck.conv_backward_input(g[:, :, None], w[:, :, None], (g.shape[0], w.shape[1], 1))[:, :, 0]


def dense_weight_grad(x, g):
    return ck.conv_backward_weight(x[:, :, None], g[:, :, None], (g.shape[1], x.shape[1], 1))[:, :, 0]


def _weight_and_bias_grads(index, x, g, w):
    """A ReLU conv's gradients when a max-pool follows: Sequential takes ReLU's
    derivative in the pool's scatter, and the bias sums in the weight gradient's pass
    (backward_weight_bias: conv_backward_bias's values up to the order of the double
    sums)."""
    plan = ck.conv_plan(x.shape, w.shape, dtype=x.dtype, padding=1, bias="tied")
    grad_w, grad_b = plan.backward_weight_bias(x, g)
    return {f"{index}.weight": grad_w, f"{index}.bias": grad_b}


def functional_step(params, momentum, x, labels):
    """The same training step with the functional API and NumPy; updates params."""
    w0, b0, w2, b2 = params["0.weight"], params["0.bias"], params["2.weight"], params["2.bias"]
    w5, b5, w6, b6 = params["5.weight"], params["5.bias"], params["6.weight"], params["6.bias"]
    n = x.shape[0]
    a1 = np.maximum(ck.conv_forward(x, w0, b0, padding=1), 0)
    p1, i1 = ck.maxpool_forward(a1, 2)
    a2 = np.maximum(ck.conv_forward(p1, w2, b2, padding=1), 0)
    p2, i2 = ck.maxpool_forward(a2, 2)
    f = p2.reshape(n, -1)
    a5 = np.maximum(dense(f, w5, b5), 0)
    z6 = dense(a5, w6, b6)
    shifted = z6 - z6.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    rows = np.arange(n)
    loss = -float(log_probs[rows, labels].sum()) / n
    g6 = np.exp(log_probs)
    g6[rows, labels] -= 1
    g6 /= n
    grads = {"6.weight": dense_weight_grad(a5, g6), "6.bias": ck.conv_backward_bias(g6[:, :, None])}
    g5 = np.where(a5 > 0, dense_input_grad(g6, w6), 0)
    grads |= {"5.weight": dense_weight_grad(f, g5), "5.bias": ck.conv_backward_bias(g5[:, :, None])}
    g_f = dense_input_grad(g5, w5)
    g2 = np.where(a2 > 0, ck.maxpool_backward(g_f.reshape(p2.shape), i2, a2.shape), 0)
    grads |= _weight_and_bias_grads("2", p1, g2, w2)
    g_p1 = ck.conv_backward_input(g2, w2, p1.shape, padding=1)
    g1 = np.where(a1 > 0, ck.maxpool_backward(g_p1, i1, a1.shape), 0)
    grads |= _weight_and_bias_grads("0", x, g1, w0)
    for name, grad in grads.items():
        if name in momentum:
            momentum[name] = momentum[name] * MOMENTUM + grad
        else:
            momentum[name] = grad.copy()
        params[name] -= LR * momentum[name]
    return loss


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_three_steps_have_the_bits_of_the_functional_steps(dtype):
    model = vgg_ish(dtype)
    params = {name: p.copy() for name, p in model.params.items()}
    criterion = SoftmaxCrossEntropyLoss()
    optimizer = SGD(model, lr=LR, momentum=MOMENTUM)
    momentum = {}
    # Alternating batch sizes: each shape keeps its own buffers.
    for step, n in enumerate((8, 5, 8, 5)):
        x, labels = batch(n, dtype, step)
        loss = layer_step(model, criterion, optimizer, x, labels)
        assert loss == functional_step(params, momentum, x, labels)
        for name, value in model.params.items():
            np.testing.assert_array_equal(value, params[name], err_msg=f"step {step} {name}")


def test_a_training_step_allocates_no_large_arrays_after_the_first():
    model = vgg_ish()
    criterion = SoftmaxCrossEntropyLoss()
    optimizer = SGD(model, lr=LR, momentum=MOMENTUM)
    x, labels = batch(16, np.float32, 0)
    tracemalloc.start()
    try:
        layer_step(model, criterion, optimizer, x, labels)  # allocates the buffers
        first = tracemalloc.get_traced_memory()[1]
        peaks = []
        for _ in range(2):
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            layer_step(model, criterion, optimizer, x, labels)
            peaks.append(tracemalloc.get_traced_memory()[1] - before)
    finally:
        tracemalloc.stop()
    assert first > 50 * STEP_BYTES, first  # the warm-up did allocate the buffers
    assert max(peaks) < STEP_BYTES, (peaks, first)


def test_returned_arrays_are_owned_and_reused_per_shape(rng):
    layer = Conv(2, 3, 3, activation="relu", rng=0)
    small = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    large = rng.standard_normal((4, 2, 5, 5)).astype(np.float32)
    y_small = layer(small)
    y_large = layer(large)
    assert layer(small) is y_small  # overwritten in place by the next call of that shape
    assert layer(large) is y_large
    # Beyond MAX_SHAPES shapes the least recently used one is dropped.
    for n in range(5, 5 + MAX_SHAPES):
        layer(rng.standard_normal((n, 2, 5, 5)).astype(np.float32))
    assert layer(small) is not y_small


def test_a_layer_fed_its_own_output_is_still_right(rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    relu = ReLU()
    y = relu(x)
    np.testing.assert_array_equal(relu(y), np.maximum(x, 0))
    conv = Conv(3, 3, 3, padding=1, activation="tanh", rng=0)
    expected = conv(conv(x).copy()).copy()
    np.testing.assert_array_equal(conv(conv(x)), expected)
    grad = conv.backward(np.ones_like(expected))
    np.testing.assert_array_equal(conv.backward(grad), conv.backward(grad.copy()))


def test_pool_and_dense_keep_their_buffers(rng):
    pool, dense = MaxPool(2), Dense(8, 4, activation="sigmoid", rng=0)
    x = rng.standard_normal((3, 2, 4, 4)).astype(np.float32)
    y = pool(x)
    assert pool(x) is y and pool.backward(np.ones_like(y)) is pool.backward(np.ones_like(y))
    flat = Flatten()(y)
    out = dense(flat)
    assert dense(flat) is out
    assert dense.backward(np.ones_like(out)) is dense.backward(np.ones_like(out))


@pytest.mark.parametrize("shape", [(2, 3, 7, 6), (3, 7, 6)], ids=["batched", "unbatched"])
def test_maxpool_forward_fills_a_given_out_pair(shape, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    y, indices = ck.maxpool_forward(x, (3, 2), stride=2, padding=1)
    out = (np.full_like(y, np.nan), np.full_like(indices, -1))
    got = ck.maxpool_forward(x, (3, 2), stride=2, padding=1, out=out)
    assert got[0] is out[0] and got[1] is out[1]
    np.testing.assert_array_equal(out[0], y)
    np.testing.assert_array_equal(out[1], indices)


def test_maxpool_forward_refuses_a_bad_out_pair(rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    y, indices = ck.maxpool_forward(x, 2)
    with pytest.raises(TypeError, match=r"out must be a \(y, indices\) pair"):
        ck.maxpool_forward(x, 2, out=y)
    with pytest.raises(TypeError, match="out must have dtype int64"):
        ck.maxpool_forward(x, 2, out=(y, y.copy()))
    with pytest.raises(ValueError, match="out must have shape"):
        ck.maxpool_forward(x, 2, out=(y[:1], indices))
    with pytest.raises(ValueError, match="out shares memory with an input"):
        ck.maxpool_forward(x, 2, out=(x.reshape(-1)[:y.size].reshape(y.shape), indices))
    shared = np.empty(indices.nbytes, np.uint8)
    y_out = shared[:y.nbytes].view(np.float32).reshape(y.shape)
    with pytest.raises(ValueError, match="out shares memory with an input"):
        ck.maxpool_forward(x, 2, out=(y_out, shared.view(np.int64).reshape(indices.shape)))


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_three_steps_equal_torch(dtype):
    """The same network and steps in PyTorch 2.13 (conftest tolerance, by dtype)."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    model = vgg_ish(dtype)
    reference = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(16 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, CLASSES),
    ).to(getattr(torch, np.dtype(dtype).name))
    pairs = {"0": 0, "2": 3, "5": 7, "6": 9}  # convkern layer index -> torch module index
    theirs = {f"{i}.{name}": getattr(reference[j], name)
              for i, j in pairs.items() for name in ("weight", "bias")}
    with torch.no_grad():
        for name, param in model.params.items():
            theirs[name].copy_(torch.from_numpy(param))
    criterion = SoftmaxCrossEntropyLoss()
    optimizer = SGD(model, lr=LR, momentum=MOMENTUM)
    torch_optimizer = torch.optim.SGD(list(theirs.values()), lr=LR, momentum=MOMENTUM)
    for step, n in enumerate((8, 5, 8)):
        x, labels = batch(n, dtype, step)
        loss = layer_step(model, criterion, optimizer, x, labels)
        torch_optimizer.zero_grad()
        torch_loss = torch.nn.functional.cross_entropy(reference(torch.from_numpy(x)),
                                                       torch.from_numpy(labels))
        torch_loss.backward()
        torch_optimizer.step()
        assert loss == pytest.approx(torch_loss.item(), rel=float(10 * np.finfo(dtype).eps))
        for name, value in model.params.items():
            assert_close(value, theirs[name].detach().numpy(), dtype, f"step {step} {name}")


class _KeepsItsGradient(ck.Layer):
    """A user's layer: identity forward; backward returns an array it keeps and reuses."""

    def forward(self, x):
        self._y = x
        self.kept = np.full_like(x, 0.5)
        return x

    def backward(self, grad_y):
        return self.kept


def _relu_tail_models():
    """Models whose last activation layer gets the caller's grad_y, or a view of it."""
    return {
        "conv": Sequential(Conv(2, 3, 3, activation="relu", rng=0)),
        "conv, flatten": Sequential(Conv(2, 3, 3, activation="relu", rng=0), Flatten()),
        "relu": Sequential(Conv(2, 3, 3, rng=0), ReLU()),
        "dense, relu, flatten": Sequential(Flatten(), Dense(32, 6, rng=0), ReLU(), Flatten()),
    }


@pytest.mark.parametrize("name", list(_relu_tail_models()))
def test_sequential_leaves_the_callers_grad_y_alone(name, rng):
    model = _relu_tail_models()[name]
    x = rng.standard_normal((2, 2, 4, 4)).astype(np.float32)
    y = model(x)
    grad_y = rng.standard_normal(y.shape).astype(np.float32)
    kept = grad_y.copy()
    model.needs_input_grad = True
    grad_x = model.backward(grad_y).copy()
    np.testing.assert_array_equal(grad_y, kept)
    # Told it may, the last layer computes the same gradient over grad_y.
    model(x)
    np.testing.assert_array_equal(model.backward(grad_y, overwrite_grad_y=True), grad_x)
    assert not np.array_equal(grad_y, kept)


def test_sequential_leaves_a_user_layers_result_alone(rng):
    model = Sequential(Conv(2, 3, 3, activation="relu", rng=0), _KeepsItsGradient())
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    y = model(x)
    model.backward(np.ones_like(y))
    np.testing.assert_array_equal(model[1].kept, np.full_like(y, 0.5))


@pytest.mark.parametrize("layer", [
    Conv(2, 3, 3, padding=1, activation="tanh", rng=0),
    Dense(5, 4, activation="sigmoid", rng=0),
    ck.ConvTranspose(2, 3, 3, stride=2, activation="relu", rng=0),
    ReLU(),
], ids=type)
def test_a_layer_told_to_overwrite_grad_y_computes_the_same_bits(layer, rng):
    x = rng.standard_normal((3, 2, 5, 5) if not isinstance(layer, Dense) else (3, 5))
    x = x.astype(np.float32)
    y = layer(x)
    grad_y = rng.standard_normal(y.shape).astype(np.float32)
    expected_x = layer.backward(grad_y).copy()
    expected = {name: grad.copy() for name, grad in layer.grads.items()}
    layer.zero_grad()
    scratch = grad_y.copy()
    np.testing.assert_array_equal(layer.backward(scratch, overwrite_grad_y=True), expected_x)
    for name, grad in layer.grads.items():
        np.testing.assert_array_equal(grad, expected[name])
    assert not np.array_equal(scratch, grad_y)  # phi' was applied over it
    # A grad_y it cannot write in place (read-only) is left alone.
    layer.zero_grad()
    grad_y.flags.writeable = False
    np.testing.assert_array_equal(layer.backward(grad_y, overwrite_grad_y=True), expected_x)


def _layer_by_layer(model, grad_y):
    """Each layer's own backward, last to first (no fusion across layers)."""
    for layer in reversed(model.layers):
        grad_y = layer.backward(grad_y)
    return grad_y


class _MyReLU(ReLU):
    """A user's subclass that keeps ReLU's backward."""


@pytest.mark.parametrize("kind", ["conv relu", "relu layer", "relu subclass", "conv sigmoid"])
def test_a_relu_before_a_pool_is_fused_into_its_scatter(kind, rng):
    first = {
        "conv relu": [Conv(2, 4, 3, padding=1, activation="relu", rng=0)],
        "relu layer": [Conv(2, 4, 3, padding=1, rng=0), ReLU()],
        "relu subclass": [Conv(2, 4, 3, padding=1, rng=0), _MyReLU()],
        "conv sigmoid": [Conv(2, 4, 3, padding=1, activation="sigmoid", rng=0)],
    }[kind]
    # overlapping windows: one input can be the argmax of several outputs
    model = Sequential(*first, MaxPool(3, stride=2), Flatten(), Dense(36, 5, rng=0))
    model.needs_input_grad = True
    x = rng.standard_normal((3, 2, 7, 7)).astype(np.float32)
    x[0, :, 2:4, 2:4] = np.nan  # NaN outputs: ReLU keeps them, its derivative is 0 there
    y = model(x)
    grad_y = rng.standard_normal(y.shape).astype(np.float32)
    grad_x = model.backward(grad_y).copy()
    fused = {name: g.copy() for name, g in model.grads.items()}
    model.zero_grad()
    model(x)
    np.testing.assert_array_equal(_layer_by_layer(model, grad_y), grad_x)
    for name, grad in model.grads.items():
        if name.endswith("bias"):
            assert_close(fused[name], grad, np.float32)
        else:
            np.testing.assert_array_equal(fused[name], grad, err_msg=name)


def test_the_pools_scatter_through_relu_has_the_derivatives_bits(rng):
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    x[0, 0, :3, :3] = np.nan
    x[1, 2] = 0.0  # ReLU's derivative at 0 is 0
    model = Sequential(ReLU(), MaxPool(3, stride=2, padding=1))
    model.needs_input_grad = True
    y = model(x)
    grad_y = rng.standard_normal(y.shape).astype(np.float32)
    activated = np.maximum(x, 0)  # NaN kept, as ReLU keeps it
    _, indices = ck.maxpool_forward(activated, 3, stride=2, padding=1)
    expected = np.where(activated > 0, ck.maxpool_backward(grad_y, indices, x.shape), 0)
    np.testing.assert_array_equal(model.backward(grad_y), expected)
    # Without the input gradient, the first layer returns nothing.
    model.needs_input_grad = False
    model(x)
    assert model.backward(grad_y) is None
