"""The layer API against PyTorch: a Sequential CNN with the same weights gives the same
outputs, losses and every gradient as the equivalent torch model, and SGD and Adam steps
match torch.optim. Tolerances are conftest.TOLERANCE (by dtype, relative to the output's
magnitude).
"""

import numpy as np
import pytest
from conftest import DTYPES, assert_close

from convkern.layers import Conv, Dense, Flatten, MaxPool, Sequential
from convkern.losses import MSELoss, SoftmaxCrossEntropyLoss
from convkern.optim import SGD, Adam

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

pytestmark = pytest.mark.torch

SPATIAL = {1: (20,), 2: (10, 9), 3: (6, 7, 6)}
KERNEL = {1: (3,), 2: (3, 2), 3: (2, 3, 2)}
N, C, CLASSES = 3, 4, 5


def cnn_pair(d, dtype, rng):
    """Return (convkern model, equivalent torch model with the same weights).

    conv-relu-pool, grouped strided conv-tanh-padded pool, flatten, dense-sigmoid, dense.
    """
    k = KERNEL[d]
    features = Sequential(
        Conv(C, 6, k, padding=1, activation="relu", dtype=dtype, rng=rng),
        MaxPool(2),
        Conv(6, 8, k, stride=2, dilation=(1, 2, 1)[:d], padding=1, groups=2,
             activation="tanh", dtype=dtype, rng=rng),
        MaxPool(2, stride=1, padding=1),
        Flatten(),
    )
    n_features = features(np.zeros((1, C, *SPATIAL[d]), dtype)).shape[1]
    model = Sequential(
        *features.layers,
        Dense(n_features, 7, activation="sigmoid", dtype=dtype, rng=rng),
        Dense(7, CLASSES, dtype=dtype, rng=rng),
    )
    conv = getattr(nn, f"Conv{d}d")
    pool = getattr(nn, f"MaxPool{d}d")
    reference = nn.Sequential(
        conv(C, 6, k, padding=1), nn.ReLU(), pool(2),
        conv(6, 8, k, stride=2, dilation=(1, 2, 1)[:d], padding=1, groups=2), nn.Tanh(),
        pool(2, stride=1, padding=1),
        nn.Flatten(),
        nn.Linear(n_features, 7), nn.Sigmoid(),
        nn.Linear(7, CLASSES),
    ).to(getattr(torch, np.dtype(dtype).name))
    # convkern layer index -> torch module index
    pairs = {0: 0, 2: 3, 5: 7, 6: 9}
    with torch.no_grad():
        for ours, theirs in pairs.items():
            reference[theirs].weight.copy_(torch.from_numpy(model[ours].params["weight"]))
            reference[theirs].bias.copy_(torch.from_numpy(model[ours].params["bias"]))
    return model, reference, pairs


def torch_params(reference, pairs):
    """The torch parameters, keyed as convkern's ``model.params``."""
    return {
        f"{ours}.{name}": getattr(reference[theirs], name)
        for ours, theirs in pairs.items()
        for name in ("weight", "bias")
    }


def assert_same_params(model, reference, pairs, what):
    params = torch_params(reference, pairs)
    for name, value in getattr(model, what).items():
        expected = params[name] if what == "params" else params[name].grad
        assert_close(value, expected.detach().numpy(), value.dtype, f"{what} {name}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("loss_name", ["cross_entropy", "mse"])
def test_cnn_forward_loss_and_gradients_match_torch(d, dtype, loss_name, rng):
    model, reference, pairs = cnn_pair(d, dtype, rng)
    model.needs_input_grad = True
    x = rng.standard_normal((N, C, *SPATIAL[d])).astype(dtype)
    x_t = torch.tensor(x, requires_grad=True)
    if loss_name == "cross_entropy":
        target = rng.integers(0, CLASSES, N)
        criterion = SoftmaxCrossEntropyLoss()
        torch_loss = F.cross_entropy(reference(x_t), torch.from_numpy(target))
    else:
        target = rng.standard_normal((N, CLASSES)).astype(dtype)
        criterion = MSELoss()
        torch_loss = 0.5 * F.mse_loss(reference(x_t), torch.from_numpy(target),
                                      reduction="sum") / N
    torch_loss.backward()

    y = model(x)
    assert_close(y, reference(x_t).detach().numpy(), dtype, "output")
    loss = criterion(y, target)
    assert loss == pytest.approx(torch_loss.item(), rel=float(10 * np.finfo(dtype).eps))
    grad_x = model.backward(criterion.backward())
    assert_close(grad_x, x_t.grad.numpy(), dtype, "grad_x")
    assert len(model.grads) == 8
    assert_same_params(model, reference, pairs, "grads")


@pytest.mark.parametrize("dtype", DTYPES)
def test_untied_bias_and_asymmetric_padding_match_torch(dtype, rng):
    layer = Conv(3, 4, (3, 2), stride=(2, 1), padding=((1, 0), (0, 2)), bias="untied",
                 activation="sigmoid", dtype=dtype, rng=rng)
    x = rng.standard_normal((2, 3, 8, 7)).astype(dtype)
    layer(x)  # shapes the untied bias; then give it non-zero values
    layer.params["bias"][...] = rng.standard_normal(layer.params["bias"].shape)
    y = layer(x)
    x_t = torch.tensor(x, requires_grad=True)
    w_t = torch.tensor(layer.params["weight"], requires_grad=True)
    b_t = torch.tensor(layer.params["bias"], requires_grad=True)
    # F.pad lists the last dim first: (left, right, top, bottom).
    y_t = torch.sigmoid(F.conv2d(F.pad(x_t, (0, 2, 1, 0)), w_t, stride=(2, 1)) + b_t)
    g = rng.standard_normal(y.shape).astype(dtype)
    y_t.backward(torch.from_numpy(g))
    assert_close(y, y_t.detach().numpy(), dtype, "output")
    assert_close(layer.backward(g), x_t.grad.numpy(), dtype, "grad_x")
    assert_close(layer.grads["weight"], w_t.grad.numpy(), dtype, "grad_w")
    assert_close(layer.grads["bias"], b_t.grad.numpy(), dtype, "grad_b")


def run_steps(model, reference, pairs, optimizer, torch_optimizer, x, target, steps):
    """Take the same training steps in both frameworks and compare the parameters."""
    criterion = SoftmaxCrossEntropyLoss()
    x_t, target_t = torch.from_numpy(x), torch.from_numpy(target)
    for _ in range(steps):
        optimizer.zero_grad()
        criterion(model(x), target)
        model.backward(criterion.backward())
        optimizer.step()
        torch_optimizer.zero_grad()
        F.cross_entropy(reference(x_t), target_t).backward()
        torch_optimizer.step()
        assert_same_params(model, reference, pairs, "params")


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_momentum_weight_decay_steps_match_torch(dtype, rng):
    model, reference, pairs = cnn_pair(2, dtype, rng)
    x = rng.standard_normal((N, C, *SPATIAL[2])).astype(dtype)
    target = rng.integers(0, CLASSES, N)
    optimizer = SGD(model, lr=0.1, momentum=0.9, weight_decay=0.01)
    torch_optimizer = torch.optim.SGD(torch_params(reference, pairs).values(), lr=0.1,
                                      momentum=0.9, weight_decay=0.01)
    # Three steps: the first creates the momentum buffers, the next ones use them.
    run_steps(model, reference, pairs, optimizer, torch_optimizer, x, target, 3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_steps_match_torch(dtype, rng):
    model, reference, pairs = cnn_pair(2, dtype, rng)
    x = rng.standard_normal((N, C, *SPATIAL[2])).astype(dtype)
    target = rng.integers(0, CLASSES, N)
    optimizer = Adam(model, lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01)
    torch_optimizer = torch.optim.Adam(torch_params(reference, pairs).values(), lr=0.01,
                                       betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01)
    run_steps(model, reference, pairs, optimizer, torch_optimizer, x, target, 3)
