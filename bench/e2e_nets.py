"""Whole networks built with convkern's layer API, and the same networks in PyTorch.

Each :class:`Net` builds a ``convkern.Sequential`` from the public constructors only;
:func:`torch_twin` builds the equivalent ``torch.nn.Sequential`` from the layers'
``config()`` and copies the weights (the layouts are the same), and
:func:`check_twins` checks that both compute the same network.
"""

from dataclasses import dataclass

import numpy as np
from measure import MismatchError
from peers import import_convkern

CLASSES = 10
# max|convkern - torch| <= TOLERANCE * max|torch|, per dtype (see check_twins).
TOLERANCE = {np.dtype(np.float32): 1e-3, np.dtype(np.float64): 1e-9}
LR = 0.01
MOMENTUM = 0.9


@dataclass(frozen=True)
class Net:
    """One end-to-end network.

    Parameters
    ----------
    key : str
        Short name (tables, ``--only``).
    title : str
        What it is.
    sample : tuple of int
        Shape of one input sample ``(C, *S)``.
    train_batch : int
        Batch of the timed training step.
    build : callable
        ``build(ck, rng, dtype) -> ck.Sequential``, given the convkern module.
    """

    key: str
    title: str
    sample: tuple
    train_batch: int
    build: object


def _relu_conv(ck, rng, dtype, c, f, k, **kw):
    return ck.Conv(c, f, k, activation="relu", rng=rng, dtype=dtype, **kw)


def _vgg(ck, rng, dtype):
    layers, c = [], 3
    for width in (32, 64, 128):
        layers += [_relu_conv(ck, rng, dtype, c, width, 3, padding=1),
                   _relu_conv(ck, rng, dtype, width, width, 3, padding=1), ck.MaxPool(2)]
        c = width
    return ck.Sequential(*layers, ck.Flatten(),
                         ck.Dense(128 * 4 * 4, 256, activation="relu", rng=rng, dtype=dtype),
                         ck.Dense(256, CLASSES, rng=rng, dtype=dtype))


def _mobilenet(ck, rng, dtype):
    layers = [_relu_conv(ck, rng, dtype, 3, 32, 3, stride=2, padding=1)]
    c = 32
    for width, stride in ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1)):
        layers += [_relu_conv(ck, rng, dtype, c, c, 3, stride=stride, padding=1, groups=c),
                   _relu_conv(ck, rng, dtype, c, width, 1)]
        c = width
    return ck.Sequential(*layers, ck.MaxPool(2), ck.Flatten(),
                         ck.Dense(256 * 4 * 4, CLASSES, rng=rng, dtype=dtype))


def _tcn(ck, rng, dtype):
    layers, c = [], 16
    for d in (1, 2, 4, 8, 16, 32):
        layers.append(_relu_conv(ck, rng, dtype, c, 64, (3,), padding=d, dilation=d))
        c = 64
    return ck.Sequential(*layers, ck.MaxPool(4), ck.Flatten(),
                         ck.Dense(64 * 256, CLASSES, rng=rng, dtype=dtype))


def _conv3d(ck, rng, dtype):
    layers, c = [], 1
    for width in (16, 32, 64):
        layers += [_relu_conv(ck, rng, dtype, c, width, (3, 3, 3), padding=1), ck.MaxPool(2)]
        c = width
    return ck.Sequential(*layers, ck.Flatten(),
                         ck.Dense(64 * 4 * 4 * 4, CLASSES, rng=rng, dtype=dtype))


def _lenet5(ck, rng, dtype):
    return ck.Sequential(
        _relu_conv(ck, rng, dtype, 1, 6, 5), ck.MaxPool(2),
        _relu_conv(ck, rng, dtype, 6, 16, 5), ck.MaxPool(2),
        _relu_conv(ck, rng, dtype, 16, 120, 5), ck.Flatten(),
        ck.Dense(120, 84, activation="relu", rng=rng, dtype=dtype),
        ck.Dense(84, CLASSES, rng=rng, dtype=dtype))


NETS = (
    Net("vgg", "VGG-style: 3 blocks of two 3x3 conv + ReLU and a 2x2 max-pool "
        "(32-128 channels), dense 2048-256-10", (3, 32, 32), 32, _vgg),
    Net("mobilenet", "MobileNet-style: 3x3 stride-2 stem, 5 depthwise 3x3 (groups=C) + "
        "pointwise 1x1 blocks (32-256 channels, 2 strided), max-pool, dense",
        (3, 64, 64), 32, _mobilenet),
    Net("tcn", "1-D dilated: 6 k=3 convs (64 channels, dilation 1-32), max-pool 4, dense",
        (16, 1024), 16, _tcn),
    Net("conv3d", "3-D: 3 blocks of a 3x3x3 conv + ReLU (16-64 channels) and a 2x max-pool, "
        "dense", (1, 32, 32, 32), 4, _conv3d),
    Net("lenet5", "LeNet-5 (ReLU, max-pool)", (1, 32, 32), 64, _lenet5),
)
BY_KEY = {net.key: net for net in NETS}


def make_batch(net, n, seed=0):
    """Return a float32 input batch ``(n, *sample)`` and int64 labels ``(n,)``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *net.sample), dtype=np.float32)
    return x, rng.integers(0, CLASSES, n)


def torch_twin(model, d):
    """Build the ``torch.nn.Sequential`` equal to `model`, with copies of its weights.

    Parameters
    ----------
    model : convkern.Sequential
        Of Conv, MaxPool, Dense, Flatten, ReLU, Sigmoid and Tanh layers (tied or no
        bias, integer padding).
    d : int
        Spatial dims of the input (for the max-pools).

    Returns
    -------
    torch.nn.Sequential

    Raises
    ------
    ValueError
        For a layer or option with no plain torch equivalent.
    """
    import torch

    ck = import_convkern()
    nn = torch.nn
    act = {None: [], "relu": [nn.ReLU()], "sigmoid": [nn.Sigmoid()], "tanh": [nn.Tanh()]}
    modules = []
    for layer in model.layers:
        cfg = layer.config()
        if isinstance(layer, ck.Conv):
            if cfg["bias"] == "untied" or not all(isinstance(p, int) for p in cfg["padding"]):
                raise ValueError(f"{layer!r}: untied bias or non-integer padding")
            conv = getattr(nn, f"Conv{len(cfg['kernel_size'])}d")(
                cfg["in_channels"], cfg["out_channels"], cfg["kernel_size"],
                stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"],
                groups=cfg["groups"], bias=cfg["bias"] is not None,
                dtype=getattr(torch, cfg["dtype"]))
            modules += [_copy_params(conv, layer)] + act[cfg["activation"]]
        elif isinstance(layer, ck.Dense):
            linear = nn.Linear(cfg["in_features"], cfg["out_features"], bias=cfg["bias"],
                               dtype=getattr(torch, cfg["dtype"]))
            modules += [_copy_params(linear, layer)] + act[cfg["activation"]]
        elif isinstance(layer, ck.MaxPool):
            modules.append(getattr(nn, f"MaxPool{d}d")(
                cfg["kernel_size"], stride=cfg["stride"], padding=cfg["padding"],
                dilation=cfg["dilation"], ceil_mode=cfg["ceil_mode"]))
        elif isinstance(layer, ck.Flatten):
            modules.append(nn.Flatten())
        elif isinstance(layer, (ck.ReLU, ck.Sigmoid, ck.Tanh)):
            modules += act[layer.name]
        else:
            raise ValueError(f"no torch equivalent for {layer!r}")
    return nn.Sequential(*modules)


def _copy_params(module, layer):
    import torch

    with torch.no_grad():
        for name, value in layer.params.items():
            getattr(module, name).copy_(torch.from_numpy(value))
    return module


def twin_params(model, twin):
    """Pair convkern's ``model.params`` keys with the twin's parameters, in order."""
    ours = list(model.params)
    theirs = list(twin.parameters())
    if len(ours) != len(theirs):
        raise ValueError(f"{len(ours)} convkern parameters, {len(theirs)} torch ones")
    return dict(zip(ours, theirs))


def _compare(what, ours, theirs):
    """Raise MismatchError unless every pair agrees within TOLERANCE of its dtype:
    ``max|ours - theirs| <= TOLERANCE * max|theirs|``."""
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype != b.dtype:
            raise MismatchError(f"{what} [{i}]: convkern {a.dtype} {a.shape}, "
                                f"torch {b.dtype} {b.shape}")
        scale = float(np.max(np.abs(b), initial=0.0))
        err = float(np.max(np.abs(a.astype(np.float64) - b), initial=0.0))
        if err > TOLERANCE[a.dtype] * scale:
            raise MismatchError(f"{what} [{i}] ({a.dtype}): max |diff| {err:.3g} > "
                                f"{TOLERANCE[a.dtype]:g} x max|torch| {scale:.3g}")


def _train_step(ck, torch, model, twin, x, labels):
    """One SGD step on both; return (convkern arrays, torch arrays) per stage."""
    params = twin_params(model, twin)
    criterion = ck.SoftmaxCrossEntropyLoss()
    optimizer = ck.SGD(model, lr=LR, momentum=MOMENTUM)
    torch_opt = torch.optim.SGD(twin.parameters(), lr=LR, momentum=MOMENTUM)
    xt, yt = torch.from_numpy(x), torch.from_numpy(labels)
    logits = model(x)
    loss = criterion(logits, labels)
    optimizer.zero_grad()
    model.backward(criterion.backward())
    t_logits = twin(xt)
    t_loss = torch.nn.functional.cross_entropy(t_logits, yt)
    torch_opt.zero_grad()
    t_loss.backward()
    stages = {"logits and loss": ([logits, np.asarray(loss, x.dtype)],
                                  [t_logits.detach().numpy(), t_loss.detach().numpy()]),
              "gradients": (list(model.grads.values()),
                            [params[k].grad.numpy() for k in model.grads])}
    optimizer.step()
    torch_opt.step()
    stages["parameters after one SGD step"] = (
        [p.copy() for p in model.params.values()],
        [params[k].detach().numpy().copy() for k in model.params])
    return stages


def _eval_output(torch, model, twin, x):
    """Batch-1 eval-mode outputs of both (both are left in training mode)."""
    model.eval()
    twin.eval()
    with torch.no_grad():
        out = [model(x[:1])], [twin(torch.from_numpy(x[:1])).numpy()]
    model.train()
    twin.train()
    return out


def check_twins(net, model, twin, n=2):
    """Check that the convkern and torch networks compute the same thing.

    - float64 copies of both (same weights): logits, loss, every gradient and every
      parameter after one SGD step with momentum, and the batch-1 eval output, to
      TOLERANCE[float64] (this proves the same network, pass for pass);
    - the float32 networks themselves: logits, loss and batch-1 eval output to
      TOLERANCE[float32], without changing their weights. (float32 gradients are not
      compared: rounding flips near-tied ReLU and max-pool decisions between the two
      libraries, which moves whole gradient terms: up to 3% of the maximum in the
      1-D and 3-D networks, while float64 agrees to 1e-15.)

    Parameters
    ----------
    net : Net
    model : convkern.Sequential
        ``net.build(ck, rng, np.float32)``.
    twin : torch.nn.Sequential
        ``torch_twin(model, d)``.
    n : int
        Batch size of the check.

    Raises
    ------
    MismatchError
        On any difference beyond the tolerance.
    """
    import torch

    ck = import_convkern()
    d = len(net.sample) - 1
    x, labels = make_batch(net, n)
    wide = net.build(ck, 0, np.float64)
    for name, value in model.params.items():
        wide.params[name][...] = value
    wide_twin = torch_twin(wide, d)
    x64 = x.astype(np.float64)
    for what, (ours, theirs) in _train_step(ck, torch, wide, wide_twin, x64, labels).items():
        _compare(f"{net.key} float64 {what}", ours, theirs)
    _compare(f"{net.key} float64 batch-1 eval output",
             *_eval_output(torch, wide, wide_twin, x64))
    with torch.no_grad():
        logits = twin(torch.from_numpy(x))
        loss = torch.nn.functional.cross_entropy(logits, torch.from_numpy(labels))
    ours = model(x)
    _compare(f"{net.key} float32 logits and loss",
             [ours, np.asarray(ck.SoftmaxCrossEntropyLoss()(ours, labels), np.float32)],
             [logits.numpy(), loss.numpy()])
    _compare(f"{net.key} float32 batch-1 eval output", *_eval_output(torch, model, twin, x))
