"""PyTorch interop: ``from_torch``, ``to_torch`` and PyTorch-style state dicts.

torch is imported only inside ``from_torch`` and ``to_torch``, never at ``import
convkern``; ``load_state_dict`` takes torch tensors by duck typing
(``.detach().cpu().numpy()``).

Key names
---------
A model's state-dict keys are the keys of ``to_torch(model).state_dict()``. Each layer
of a ``Sequential`` takes one torch module, or two when it has a fused activation (a
``Conv`` or ``Dense`` with ``activation=``; the activation becomes the next module), so
``Sequential(Conv(..., activation='relu'), MaxPool(2), Flatten(), Dense(...))`` has the
keys ``"0.weight"``, ``"0.bias"``, ``"4.weight"``, ``"4.bias"``. A nested ``Sequential``
adds a level (``"1.0.weight"``). ``from_torch`` fuses an activation only into the module
right before it in the same ``nn.Sequential``, so numbering a converted model this way
gives back the torch model's own indices. ``from_torch`` also remembers the torch names
(they can be strings, from an ``OrderedDict``) and uses them while the ``Sequential``
keeps the layers it was converted with (changing the layer list or the activations falls
back to the numbering rule; ``save_model`` does not store the names).

Errors
------
``from_torch`` and ``to_torch`` raise ``TypeError`` for a module or layer *type* that
has no counterpart (``"model[3] (BatchNorm2d) is not supported"``) and ``ValueError``
for a supported type with a setting that has none (``padding_mode='reflect'``, an
asymmetric or stride-dependent padding, a float16 weight, an untied bias), naming the
path of the first such module.
"""

from collections import OrderedDict, namedtuple

import numpy as np

from .layers import Conv, Dense, Flatten, MaxPool, ReLU, Sequential, Sigmoid, Tanh

__all__ = ["from_torch", "to_torch", "state_dict", "load_state_dict", "IncompatibleKeys"]

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])
IncompatibleKeys.__doc__ = "Keys ``load_state_dict(strict=False)`` skipped, as in PyTorch."

ACTIVATION_LAYERS = {"relu": ReLU, "sigmoid": Sigmoid, "tanh": Tanh}
TORCH_ACTIVATIONS = {"ReLU": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh"}
TORCH_NAMES_ATTR = "_torch_names"


# ---------------------------------------------------------------------------
# Key names.


def _slots(layer):
    """Number of torch modules a convkern layer becomes (2 with a fused activation)."""
    return 2 if isinstance(layer, (Conv, Dense)) and layer.activation else 1


def module_names(model):
    """Return, per layer of ``model`` (a Sequential), the tuple of its torch module names.

    The names remembered by :func:`from_torch` while they still fit the layers, else
    consecutive indices (one per torch module, two for a layer with a fused activation).
    """
    remembered = getattr(model, TORCH_NAMES_ATTR, None)
    if remembered is not None and len(remembered) == len(model.layers) and all(
        len(names) == _slots(layer) for names, layer in zip(remembered, model.layers)
    ):
        return list(remembered)
    names, index = [], 0
    for layer in model.layers:
        names.append(tuple(str(index + k) for k in range(_slots(layer))))
        index += _slots(layer)
    return names


def _named(layer, attr, prefix=""):
    """Yield ``(torch key, array)`` for ``layer.params`` or ``layer.grads``."""
    if isinstance(layer, Sequential):
        for names, sub in zip(module_names(layer), layer.layers):
            yield from _named(sub, attr, f"{prefix}{names[0]}.")
    else:
        for name, array in getattr(layer, attr).items():
            yield prefix + name, array


def state_dict(model):
    """Return the parameters of a layer or Sequential keyed by PyTorch's names.

    Parameters
    ----------
    model : Layer
        A layer or a (nested) Sequential.

    Returns
    -------
    dict of str to ndarray
        The parameter arrays themselves (as PyTorch returns its parameters' storage),
        keyed as ``to_torch(model).state_dict()``; copy them to keep a snapshot.
        Layouts are PyTorch's: Conv ``(F, C // groups, *K)``, Dense ``(out, in)``, biases
        ``(F,)`` (an untied Conv bias, which PyTorch lacks, is ``(F, *O)``).
    """
    return dict(_named(model, "params"))


def named_grads(model):
    """Return the gradients of a layer or Sequential keyed as :func:`state_dict`."""
    return dict(_named(model, "grads"))


def _as_array(key, value):
    """Return ``value`` (an ndarray or a tensor-like) as an ndarray."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise TypeError(f"state_dict[{key!r}] must be an ndarray or a tensor, "
                        f"got {type(value).__name__}")
    if value.dtype.kind not in "fiu":
        raise TypeError(f"state_dict[{key!r}] must hold real numbers, got dtype {value.dtype}")
    return value


def load_state_dict(model, state, strict=True):
    """Copy parameters keyed as :func:`state_dict` into ``model``, in place.

    Parameters
    ----------
    model : Layer
        A layer or a (nested) Sequential.
    state : mapping of str to ndarray or torch.Tensor
        For example ``torch_model.state_dict()``. Values are cast to the layer's dtype.
    strict : bool, default True
        As in PyTorch: when True, a key of the model missing from ``state`` or a key of
        ``state`` the model lacks is an error; when False such keys are skipped.

    Returns
    -------
    IncompatibleKeys
        ``(missing_keys, unexpected_keys)``, both empty when ``strict`` is True.

    Raises
    ------
    ValueError
        Naming the first missing or unexpected key (strict) or the first key whose shape
        differs (always). Nothing is copied unless every check passes.
    TypeError
        If a value is neither an ndarray nor a tensor, or holds no real numbers.
    """
    if not hasattr(state, "keys"):
        raise TypeError(f"state_dict must be a mapping, got {type(state).__name__}")
    ours = state_dict(model)
    missing = [key for key in ours if key not in state]
    unexpected = [key for key in state if key not in ours]
    if strict and missing:
        raise ValueError(f"missing key {missing[0]!r} in state_dict "
                         f"({len(missing)} missing; the model's keys: {list(ours)})")
    if strict and unexpected:
        raise ValueError(f"unexpected key {unexpected[0]!r} in state_dict "
                         f"({len(unexpected)} unexpected; the model's keys: {list(ours)})")
    values = {}
    for key, param in ours.items():
        if key in state:
            value = _as_array(key, state[key])
            if value.shape != param.shape:
                raise ValueError(f"state_dict[{key!r}] has shape {value.shape}, "
                                 f"the model's parameter {param.shape}")
            values[key] = value
    for key, value in values.items():
        ours[key][...] = value
    return IncompatibleKeys(missing, unexpected)


# ---------------------------------------------------------------------------
# torch -> convkern.


def _where(path):
    """A Python expression reaching the module: ``model[1][0]`` or ``model.conv1``."""
    return "model" + "".join(f"[{name}]" if name.isdigit() else f".{name}" for name in path)


def _unsupported(path, module, why=None):
    kind = type(module).__name__
    if why is None:
        return TypeError(
            f"{_where(path)} ({kind}) is not supported; from_torch takes Conv1d/2d/3d, "
            "MaxPool1d/2d/3d, Linear, Flatten, ReLU, Sigmoid, Tanh and nn.Sequential"
        )
    return ValueError(f"{_where(path)} ({kind}) is not supported: {why}")


def _dtype(path, module):
    dtype = module.weight.dtype
    name = str(dtype).removeprefix("torch.")
    if name not in ("float32", "float64"):
        raise _unsupported(path, module, f"weights of dtype {name} (float32 or float64 only)")
    return np.dtype(name)


def _numpy(tensor):
    return tensor.detach().cpu().numpy()


def _from_conv(path, m):
    if m.padding_mode != "zeros":
        raise _unsupported(path, m, f"padding_mode={m.padding_mode!r} ('zeros' only)")
    layer = Conv(
        m.in_channels, m.out_channels, tuple(m.kernel_size),
        stride=tuple(m.stride),
        padding=m.padding if isinstance(m.padding, str) else tuple(m.padding),
        dilation=tuple(m.dilation), groups=m.groups,
        bias="tied" if m.bias is not None else None,
        dtype=_dtype(path, m), rng=0,
    )
    layer.params["weight"][...] = _numpy(m.weight)
    if m.bias is not None:
        layer.params["bias"][...] = _numpy(m.bias)
    return layer


def _from_linear(path, m):
    layer = Dense(m.in_features, m.out_features, bias=m.bias is not None,
                  dtype=_dtype(path, m), rng=0)
    layer.params["weight"][...] = _numpy(m.weight)
    if m.bias is not None:
        layer.params["bias"][...] = _numpy(m.bias)
    return layer


def _from_maxpool(m, d):
    def tup(value):
        return (value,) * d if isinstance(value, int) else tuple(value)

    return MaxPool(tup(m.kernel_size), stride=tup(m.stride), padding=tup(m.padding),
                   dilation=tup(m.dilation), ceil_mode=bool(m.ceil_mode))


def _from_flatten(path, m):
    if m.start_dim != 1 or m.end_dim != -1:
        raise _unsupported(path, m, f"start_dim={m.start_dim}, end_dim={m.end_dim} "
                                    "(start_dim=1, end_dim=-1 only)")
    return Flatten()


def _from_sequential(nn, module, path):
    """Convert an ``nn.Sequential``; return the convkern Sequential."""
    layers, names = [], []
    for name, sub in module.named_children():
        where = path + (name,)
        kind = type(sub).__name__
        previous = layers[-1] if layers else None
        if kind in TORCH_ACTIVATIONS and type(sub) is getattr(nn, kind):
            activation = TORCH_ACTIVATIONS[kind]
            if isinstance(previous, (Conv, Dense)) and previous.activation is None:
                previous.activation = activation
                names[-1] += (name,)
                continue
            layer = ACTIVATION_LAYERS[activation]()
        else:
            layer = _from_module(nn, sub, where)
        layers.append(layer)
        names.append((name,))
    if not layers:
        raise ValueError(f"{_where(path)} is an empty Sequential")
    model = Sequential(*layers)
    setattr(model, TORCH_NAMES_ATTR, names)
    return model


def _from_module(nn, module, path):
    """Convert one torch module (exact types only: a subclass may change forward)."""
    kind = type(module)
    if kind is nn.Sequential:
        return _from_sequential(nn, module, path)
    if kind in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
        return _from_conv(path, module)
    if kind is nn.Linear:
        return _from_linear(path, module)
    if kind is nn.Flatten:
        return _from_flatten(path, module)
    for d in (1, 2, 3):
        if kind is getattr(nn, f"MaxPool{d}d"):
            return _from_maxpool(module, d)
    raise _unsupported(path, module)


def from_torch(module):
    """Convert a ``torch.nn.Sequential`` into a convkern :class:`Sequential`.

    Parameters
    ----------
    module : torch.nn.Sequential
        Nested ``nn.Sequential`` allowed. Modules: ``Conv1d/2d/3d`` (any stride,
        padding including 'same' and 'valid', dilation and groups, bias or not,
        ``padding_mode='zeros'``), ``MaxPool1d/2d/3d``, ``Linear``, ``Flatten()``
        (``start_dim=1``), ``ReLU``, ``Sigmoid``, ``Tanh``; float32 or float64 weights.
        A ReLU, Sigmoid or Tanh right after a Conv or Linear in the same Sequential
        becomes that layer's ``activation``; elsewhere it becomes a ReLU/Sigmoid/Tanh
        layer.

    Returns
    -------
    Sequential
        Same outputs; weights copied; ``state_dict()`` keys equal the module's.

    Raises
    ------
    TypeError
        If ``module`` is not an ``nn.Sequential``, or for the first module of a type
        with no convkern counterpart, named by its path (``model[1][3] (BatchNorm2d)
        is not supported``).
    ValueError
        For the first supported module whose settings have no counterpart
        (``padding_mode='reflect'``, ``Flatten(start_dim=2)``, float16 weights) or an
        empty ``nn.Sequential``.
    """
    import torch

    if type(module) is not torch.nn.Sequential:
        raise TypeError(f"from_torch takes a torch.nn.Sequential, got {type(module).__name__}")
    return _from_sequential(torch.nn, module, ())


# ---------------------------------------------------------------------------
# convkern -> torch.


def _conv_padding(where, layer):
    """Return the torch Conv padding for a convkern Conv, or raise ValueError."""
    padding = layer.padding
    if padding == "same" and any(s != 1 for s in layer.stride):
        raise ValueError(f"{where} (Conv): padding='same' with stride {layer.stride} depends "
                         "on the input size; torch allows 'same' with stride 1 only")
    if padding in ("same", "valid"):
        return padding
    if padding == "full":
        return tuple(dl * (k - 1) for k, dl in zip(layer.kernel_size, layer.dilation))
    if all(isinstance(p, tuple) for p in padding):
        if any(before != after for before, after in padding):
            raise ValueError(f"{where} (Conv): asymmetric padding {padding} has no "
                             "torch.nn.Conv equivalent")
        return tuple(before for before, _ in padding)
    return padding


def _to_conv(nn, torch_dtype, where, layer):
    if layer.bias == "untied":
        raise ValueError(f"{where} (Conv): an untied bias has no torch.nn.Conv equivalent")
    d = len(layer.kernel_size)
    return getattr(nn, f"Conv{d}d")(
        layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
        padding=_conv_padding(where, layer), dilation=layer.dilation, groups=layer.groups,
        bias=layer.bias == "tied", dtype=torch_dtype,
    )


def _pool_dims(where, layer, d):
    """The spatial dims of a MaxPool: from its tuples, else from the layers before it."""
    sizes = [v for v in (layer.kernel_size, layer.stride, layer.padding, layer.dilation)
             if isinstance(v, tuple)]
    if sizes:
        return len(sizes[0])
    if d is None:
        raise ValueError(f"{where} (MaxPool): its number of spatial dims is unknown (all "
                         "ints and no Conv or MaxPool with tuples before it); give "
                         "kernel_size as a tuple")
    return d


def _to_pool(nn, where, layer, d):
    padding = layer.padding
    if not (isinstance(padding, int) or all(isinstance(p, int) for p in padding)):
        raise ValueError(f"{where} (MaxPool): padding {padding!r} has no torch.nn.MaxPool "
                         "equivalent")
    return getattr(nn, f"MaxPool{d}d")(
        layer.kernel_size, stride=layer.stride, padding=padding, dilation=layer.dilation,
        ceil_mode=layer.ceil_mode,
    )


def _to_sequential(torch, model, where, d=None):
    """Return ``(nn.Sequential, spatial dims after it)`` for a convkern Sequential."""
    nn = torch.nn
    modules = OrderedDict()
    for i, (names, layer) in enumerate(zip(module_names(model), model.layers)):
        here = f"{where}[{i}]"
        if isinstance(layer, Sequential):
            module, d = _to_sequential(torch, layer, here, d)
        elif isinstance(layer, Conv):
            d = len(layer.kernel_size)
            module = _to_conv(nn, getattr(torch, layer.dtype.name), here, layer)
        elif isinstance(layer, Dense):
            module = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias,
                               dtype=getattr(torch, layer.dtype.name))
        elif isinstance(layer, MaxPool):
            d = _pool_dims(here, layer, d)
            module = _to_pool(nn, here, layer, d)
        elif type(layer) is Flatten:
            d = None
            module = nn.Flatten()
        elif type(layer) in (ReLU, Sigmoid, Tanh):
            module = getattr(nn, type(layer).__name__)()
        else:
            raise TypeError(f"{here} ({type(layer).__name__}) has no torch equivalent")
        if isinstance(layer, (Conv, Dense)):
            with torch.no_grad():
                for name, array in layer.params.items():
                    getattr(module, name).copy_(torch.from_numpy(array))
        modules[names[0]] = module
        if len(names) == 2:
            modules[names[1]] = getattr(nn, ACTIVATION_LAYERS[layer.activation].__name__)()
    return nn.Sequential(modules), d


def to_torch(model):
    """Convert a convkern :class:`Sequential` into a ``torch.nn.Sequential``.

    Parameters
    ----------
    model : Sequential
        Nested Sequentials allowed. Layers: Conv (padding as ints, symmetric pairs,
        'valid', 'full', or 'same' with stride 1; tied bias or none), MaxPool, Dense,
        Flatten, ReLU, Sigmoid, Tanh.

    Returns
    -------
    torch.nn.Sequential
        In the layers' dtype, with copies of their weights (torch's default CPU
        device). A fused activation becomes its own module after the Conv or Linear;
        module names follow :func:`module_names`, so ``state_dict()`` keys equal
        ``model.state_dict()``'s.

    Raises
    ------
    TypeError
        If ``model`` is not a Sequential, or for the first layer type with no torch
        module (a custom Layer subclass), named by its position (``model[2][0]``).
    ValueError
        For the first layer whose settings torch cannot express (an untied bias,
        asymmetric padding, 'same' with a stride above 1, a MaxPool given only ints with
        no Conv before it to fix its dimension).
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"to_torch takes a convkern Sequential, got {type(model).__name__}")
    import torch

    return _to_sequential(torch, model, "model")[0]

