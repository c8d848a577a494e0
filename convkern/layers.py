"""Layers over the kernel core: Conv, MaxPool, Dense, Flatten, activations, Sequential.

Every layer has ``forward(x)`` (also ``layer(x)``), ``backward(grad_y) -> grad_x``,
``params`` and ``grads`` dicts with the same keys (``"weight"``, ``"bias"``),
``train()``/``eval()`` and ``zero_grad()``. Weights use PyTorch's layouts, so a model can
exchange weights with the equivalent ``torch.nn`` model by plain copies.

Conventions
-----------
- ``backward`` *adds* to ``grads`` (as PyTorch accumulates ``.grad``); call
  ``zero_grad()`` (or the optimiser's) between steps.
- In training mode (the default) ``forward`` keeps what ``backward`` needs; in eval mode it
  keeps nothing and ``backward`` raises ``RuntimeError``.
- ``needs_input_grad``: when False, ``backward`` computes only the parameter gradients and
  returns None. ``Sequential`` sets it to False on its first layer (nothing upstream
  needs that gradient); set ``model.needs_input_grad = True`` to get the input gradient.
- Conv and MaxPool call only the public functions of :mod:`convkern.conv` and
  :mod:`convkern.pool`; Dense uses NumPy's matmul.
"""

import inspect
import numbers

import numpy as np

from .conv import (
    conv_backward_bias,
    conv_backward_input,
    conv_backward_weight,
    conv_forward,
)
from .conv_transpose import _backward_input, _backward_weight, conv_transpose
from .init import init_weight, make_rng
from .pool import maxpool_backward, maxpool_forward

__all__ = [
    "Layer",
    "Conv",
    "MaxPool",
    "Dense",
    "Flatten",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "Sequential",
    "ConvTranspose",
]


# ---------------------------------------------------------------------------
# Activations: phi(z) and the backward rule written in terms of y = phi(z).


def _relu(z):
    return np.maximum(z, 0)


def _relu_backward(grad_y, y):
    return np.where(y > 0, grad_y, 0)


def _sigmoid(z):
    # exp(-|z|) never overflows: sigma(z) = 1 / (1 + e) for z >= 0, e / (1 + e) below.
    e = np.exp(-np.abs(z))
    r = 1 / (1 + e)
    return np.where(z >= 0, r, e * r)


def _sigmoid_backward(grad_y, y):
    return grad_y * y * (1 - y)


def _tanh_backward(grad_y, y):
    return grad_y * (1 - y * y)


ACTIVATIONS = {
    "relu": (_relu, _relu_backward),
    "sigmoid": (_sigmoid, _sigmoid_backward),
    "tanh": (np.tanh, _tanh_backward),
}


# ---------------------------------------------------------------------------
# Argument checks (TypeError for kinds, ValueError for values).


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _positive_int(name, value):
    if not _is_int(value):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return int(value)


def _int_tuple(name, value, d, minimum):
    """Return ``value`` (an int or a d-sequence of ints >= minimum) as a d-tuple."""
    items = [value] * d if _is_int(value) else value
    if not isinstance(items, (tuple, list)) or not all(_is_int(v) for v in items):
        raise TypeError(f"{name} must be an int or a tuple of {d} ints, got {value!r}")
    if len(items) != d:
        raise ValueError(f"{name} must have {d} entries (one per spatial dim), got {value!r}")
    if any(v < minimum for v in items):
        raise ValueError(f"{name} entries must be >= {minimum}, got {value!r}")
    return tuple(int(v) for v in items)


def _conv_padding(padding, d):
    """Normalise a Conv padding to a string, a d-tuple of ints or a d-tuple of pairs."""
    if isinstance(padding, str):
        if padding not in ("valid", "same", "full"):
            raise ValueError(
                f"padding must be 'valid', 'same', 'full', an int or a tuple, got {padding!r}"
            )
        return padding
    if not (_is_int(padding) or isinstance(padding, (tuple, list))):
        raise TypeError(f"padding must be an int, a tuple or a string, got {padding!r}")
    if _is_int(padding) or not any(isinstance(p, (tuple, list)) for p in padding):
        return _int_tuple("padding", padding, d, 0)
    if len(padding) != d:
        raise ValueError(f"padding must have {d} entries (one per spatial dim), got {padding!r}")
    # Mixed entries: an int p means the pair (p, p).
    return tuple(_int_tuple("padding", p, 2, 0) for p in padding)


def _kernel_size(kernel_size, name="kernel_size"):
    """Return a conv kernel size as a tuple of 1, 2 or 3 positive ints (an int means 2-D)."""
    if _is_int(kernel_size):
        return _int_tuple(name, kernel_size, 2, 1)
    if not isinstance(kernel_size, (tuple, list)):
        raise TypeError(f"{name} must be an int or a tuple of ints, got {kernel_size!r}")
    if len(kernel_size) not in (1, 2, 3):
        raise ValueError(f"{name} must have 1, 2 or 3 entries, got {kernel_size!r}")
    return _int_tuple(name, kernel_size, len(kernel_size), 1)


def _activation(activation):
    if activation is not None and activation not in ACTIVATIONS:
        raise ValueError(
            f"activation must be None, 'relu', 'sigmoid' or 'tanh', got {activation!r}"
        )
    return activation


def _float_dtype(dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from exc
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def _init_scheme(init, activation):
    """``init=None`` picks He for ReLU layers and Glorot otherwise."""
    if init is None:
        return "he" if activation == "relu" else "glorot"
    if init not in ("he", "glorot"):
        raise ValueError(f"init must be None, 'he' or 'glorot', got {init!r}")
    return init


def _check_input(layer, x, ndim=None, dtype=None):
    name = type(layer).__name__
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} expects an ndarray, got {type(x).__name__}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} expects x with {ndim} dims, got shape {x.shape}")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"{name} expects x of dtype {dtype}, got {x.dtype}")


def _check_grad(layer, grad_y):
    """Check ``grad_y`` against the output kept by the last forward pass."""
    y = getattr(layer, "_y", None)
    if y is None:
        raise RuntimeError(
            f"{type(layer).__name__}.backward called without a forward pass in training mode"
        )
    if not isinstance(grad_y, np.ndarray):
        raise TypeError(f"grad_y must be an ndarray, got {type(grad_y).__name__}")
    if grad_y.shape != y.shape:
        raise ValueError(f"grad_y must have the output's shape {y.shape}, got {grad_y.shape}")
    if grad_y.dtype != y.dtype:
        raise TypeError(f"grad_y must have the output's dtype {y.dtype}, got {grad_y.dtype}")


# ---------------------------------------------------------------------------
# Layers.


class Layer:
    """Base class: parameter and gradient dicts, train/eval mode, the call protocol."""

    def __init__(self):
        self.params = {}
        self.grads = {}
        self.training = True
        self.needs_input_grad = True

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):
        """Compute the layer's output (implemented by each layer)."""
        raise NotImplementedError

    def backward(self, grad_y):
        """Add the parameter gradients to ``grads`` and return the input gradient."""
        raise NotImplementedError

    def train(self, mode=True):
        """Set training mode (``forward`` keeps what ``backward`` needs); return self."""
        self.training = bool(mode)
        return self

    def eval(self):
        """Set eval mode (``forward`` keeps nothing); return self."""
        return self.train(False)

    def zero_grad(self):
        """Set every gradient in ``grads`` to zero, in place."""
        for grad in self.grads.values():
            grad.fill(0)

    def config(self):
        """Return the constructor arguments (JSON-compatible) that rebuild this layer."""
        return {}

    def save(self, path):
        """Save the architecture and parameters to ``path`` (.npz); see ``load_model``."""
        # Imported here: serialization imports this module to rebuild layers.
        from .serialization import save_model

        save_model(self, path)

    def state_dict(self):
        """Return the parameters keyed as PyTorch's; see :func:`convkern.interop.state_dict`."""
        # Imported here: interop imports this module.
        from .interop import state_dict

        return state_dict(self)

    def load_state_dict(self, state_dict, strict=True):
        """Copy PyTorch-keyed parameters in place; see :func:`convkern.interop.load_state_dict`."""
        from .interop import load_state_dict

        return load_state_dict(self, state_dict, strict=strict)

    def _param(self, name, value):
        self.params[name] = value
        self.grads[name] = np.zeros_like(value)

    def _keep(self, **cache):
        for key, value in cache.items():
            setattr(self, "_" + key, value if self.training else None)

    def __repr__(self):
        """Show the configuration: required arguments, then keywords that differ from
        their defaults (an int default also covers the tuple that repeats it)."""
        signature = inspect.signature(type(self)).parameters
        args = []
        for key, value in self.config().items():
            default = signature[key].default
            if default is inspect.Parameter.empty:
                args.append(repr(value))
                continue
            if key == "dtype":
                default = np.dtype(default).name
            repeats = _is_int(default) and isinstance(value, tuple) and set(value) == {default}
            if value != default and not repeats:
                args.append(f"{key}={value!r}")
        return f"{type(self).__name__}({', '.join(args)})"


class Conv(Layer):
    """N-dimensional convolution layer, ``Y = phi(X * K + b)``.

    The number of spatial dims d (1, 2 or 3) is ``len(kernel_size)``; an int
    ``kernel_size`` means a 2-D square kernel.

    Parameters
    ----------
    in_channels, out_channels : int
        C and F. Both must be divisible by ``groups``.
    kernel_size : int or tuple of 1, 2 or 3 ints
        K.
    stride, dilation : int or d-tuple of int, default 1
    padding : int, d-tuple, d-tuple of (before, after) pairs, or {'valid', 'same', 'full'}
        As in :func:`convkern.conv_forward`.
    groups : int, default 1
    bias : {'tied', 'untied', None}, default 'tied'
        'tied': one bias per filter, shape ``(F,)``. 'untied': one per filter and output
        position, shape ``(F, *O)``, fixed by ``input_shape`` or on the first call.
    activation : {None, 'relu', 'sigmoid', 'tanh'}, default None
        phi, applied inside the layer; backward applies phi'(z).
    dtype : {numpy.float32, numpy.float64}, default numpy.float32
    rng : None, int or numpy.random.Generator
        Source of the initial weights.
    input_shape : tuple of int, optional
        Shape ``(C, *S)`` of one input sample; only with ``bias='untied'``.
    init : {None, 'he', 'glorot'}, default None
        Weight initialisation; None means He for ReLU and Glorot otherwise. Biases start
        at zero.

    Attributes
    ----------
    params : dict
        ``"weight"``: ndarray of shape (F, C // groups, *K); ``"bias"``: ndarray of shape
        (F,) or (F, *O) (absent when ``bias=None``).
    grads : dict
        Same keys and shapes as ``params``.
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        *,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        bias="tied",
        activation=None,
        dtype=np.float32,
        rng=None,
        input_shape=None,
        init=None,
    ):
        super().__init__()
        self.in_channels = _positive_int("in_channels", in_channels)
        self.out_channels = _positive_int("out_channels", out_channels)
        self.kernel_size = _kernel_size(kernel_size)
        d = len(self.kernel_size)
        self.stride = _int_tuple("stride", stride, d, 1)
        self.padding = _conv_padding(padding, d)
        self.dilation = _int_tuple("dilation", dilation, d, 1)
        self.groups = _positive_int("groups", groups)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"groups={self.groups} must divide in_channels={self.in_channels} "
                f"and out_channels={self.out_channels}"
            )
        if bias not in ("tied", "untied", None):
            raise ValueError(f"bias must be 'tied', 'untied' or None, got {bias!r}")
        self.bias = bias
        self.activation = _activation(activation)
        self.dtype = _float_dtype(dtype)
        shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        scheme = _init_scheme(init, self.activation)
        self._param("weight", init_weight(shape, scheme, make_rng(rng), self.dtype))
        if bias == "tied":
            self._param("bias", np.zeros(self.out_channels, self.dtype))
        self.input_shape = None
        if input_shape is not None:
            if bias != "untied":
                raise ValueError("input_shape is only used with bias='untied'")
            self.build(input_shape)

    @property
    def _geometry(self):
        return {
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
            "groups": self.groups,
        }

    def build(self, input_shape):
        """Fix the sample shape ``(C, *S)`` and allocate the untied bias ``(F, *O)``.

        Parameters
        ----------
        input_shape : tuple of int
            Shape of one input sample, ``(C, *S)``.
        """
        if self.bias != "untied":
            raise ValueError("build(input_shape) is only used with bias='untied'")
        shape = _int_tuple("input_shape", input_shape, len(self.kernel_size) + 1, 1)
        if shape[0] != self.in_channels:
            raise ValueError(
                f"input_shape {shape} has {shape[0]} channels, expected {self.in_channels}"
            )
        # An empty batch gives the output shape from the kernel core's own size rules.
        probe = conv_forward(
            np.zeros((0, *shape), self.dtype), self.params["weight"], **self._geometry
        )
        self._param("bias", np.zeros((self.out_channels, *probe.shape[2:]), self.dtype))
        self.input_shape = shape

    def forward(self, x):
        """Apply the layer.

        Parameters
        ----------
        x : ndarray of shape (N, C, *S)
            Same dtype as the layer.

        Returns
        -------
        y : ndarray of shape (N, F, *O)
        """
        _check_input(self, x, len(self.kernel_size) + 2, self.dtype)
        if self.bias == "untied":
            if self.input_shape is None:
                self.build(x.shape[1:])
            elif x.shape[1:] != self.input_shape:
                raise ValueError(
                    f"Conv with an untied bias was built for samples of shape "
                    f"{self.input_shape}, got x of shape {x.shape}"
                )
        z = conv_forward(x, self.params["weight"], self.params.get("bias"), **self._geometry)
        y = ACTIVATIONS[self.activation][0](z) if self.activation else z
        self._keep(x=x, y=y)
        return y

    def backward(self, grad_y):
        """Accumulate the weight and bias gradients and return the input gradient.

        Parameters
        ----------
        grad_y : ndarray of shape (N, F, *O)
            Gradient of the loss with respect to the layer's output.

        Returns
        -------
        grad_x : ndarray of shape (N, C, *S), or None if ``needs_input_grad`` is False
        """
        _check_grad(self, grad_y)
        grad_z = ACTIVATIONS[self.activation][1](grad_y, self._y) if self.activation else grad_y
        weight = self.params["weight"]
        self.grads["weight"] += conv_backward_weight(
            self._x, grad_z, weight.shape, **self._geometry
        )
        if "bias" in self.params:
            self.grads["bias"] += conv_backward_bias(grad_z, untied=self.bias == "untied")
        if not self.needs_input_grad:
            return None
        return conv_backward_input(grad_z, weight, self._x.shape, **self._geometry)

    def config(self):
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
            "groups": self.groups,
            "bias": self.bias,
            "activation": self.activation,
            "dtype": self.dtype.name,
            "input_shape": self.input_shape,
        }


class MaxPool(Layer):
    """N-dimensional max-pooling layer.

    Parameters
    ----------
    kernel_size : int or tuple of 1, 2 or 3 ints
        An int applies to every spatial dim of the input (d = x.ndim - 2).
    stride : None, int or tuple of int, default None
        None means ``kernel_size``.
    padding : int, tuple of int, tuple of (before, after) pairs, or {'valid', 'same', 'full'}
        Implicit -inf padding, as in :func:`convkern.maxpool_forward`: an int at most half
        the kernel, a pair each side below the dilated kernel extent.
    dilation : int or tuple of int, default 1
    ceil_mode : bool, default False
        As in PyTorch.
    """

    def __init__(self, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False):
        super().__init__()
        self.kernel_size = self._sizes("kernel_size", kernel_size, 1)
        self.stride = None if stride is None else self._sizes("stride", stride, 1)
        self.padding = self._padding(padding)
        self.dilation = self._sizes("dilation", dilation, 1)
        if not isinstance(ceil_mode, (bool, np.bool_)):
            raise TypeError(f"ceil_mode must be a bool, got {type(ceil_mode).__name__}")
        self.ceil_mode = bool(ceil_mode)

    @staticmethod
    def _sizes(name, value, minimum):
        """An int (kept, it applies to every dim) or a tuple of 1 to 3 ints >= minimum."""
        if _is_int(value):
            return _int_tuple(name, value, 1, minimum)[0]
        if not isinstance(value, (tuple, list)):
            raise TypeError(f"{name} must be an int or a tuple of ints, got {value!r}")
        if len(value) not in (1, 2, 3):
            raise ValueError(f"{name} must have 1, 2 or 3 entries, got {value!r}")
        return _int_tuple(name, value, len(value), minimum)

    @classmethod
    def _padding(cls, padding):
        """A padding string, an int, or a tuple of 1 to 3 ints or (before, after) pairs."""
        if isinstance(padding, str):
            return _conv_padding(padding, 1)
        pairs = isinstance(padding, (tuple, list)) and any(
            isinstance(p, (tuple, list)) for p in padding
        )
        if pairs:
            if len(padding) not in (1, 2, 3):
                raise ValueError(f"padding must have 1, 2 or 3 entries, got {padding!r}")
            # An int entry stays an int: it keeps PyTorch's half-kernel rule.
            return tuple(
                _int_tuple("padding", p, 2, 0) if isinstance(p, (tuple, list))
                else _int_tuple("padding", p, 1, 0)[0]
                for p in padding
            )
        return cls._sizes("padding", padding, 0)

    def forward(self, x):
        """Apply the layer.

        Parameters
        ----------
        x : ndarray of shape (N, C, *S)

        Returns
        -------
        y : ndarray of shape (N, C, *O)
        """
        _check_input(self, x)
        y, indices = maxpool_forward(
            x,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            ceil_mode=self.ceil_mode,
        )
        self._keep(y=y, indices=indices, x_shape=x.shape)
        return y

    def backward(self, grad_y):
        """Return the input gradient (each output's gradient goes to its argmax).

        Parameters
        ----------
        grad_y : ndarray of shape (N, C, *O)

        Returns
        -------
        grad_x : ndarray of shape (N, C, *S), or None if ``needs_input_grad`` is False
        """
        _check_grad(self, grad_y)
        if not self.needs_input_grad:
            return None
        return maxpool_backward(grad_y, self._indices, self._x_shape)

    def config(self):
        return {
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
            "ceil_mode": self.ceil_mode,
        }


class Dense(Layer):
    """Fully connected layer, ``y = phi(x W^T + b)``.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool, default True
    activation : {None, 'relu', 'sigmoid', 'tanh'}, default None
    dtype : {numpy.float32, numpy.float64}, default numpy.float32
    rng : None, int or numpy.random.Generator
    init : {None, 'he', 'glorot'}, default None
        None means He for ReLU and Glorot otherwise. The bias starts at zero.

    Attributes
    ----------
    params : dict
        ``"weight"``: ndarray of shape (out_features, in_features); ``"bias"``: ndarray of
        shape (out_features,) (absent when ``bias=False``).
    grads : dict
        Same keys and shapes as ``params``.
    """

    def __init__(
        self,
        in_features,
        out_features,
        *,
        bias=True,
        activation=None,
        dtype=np.float32,
        rng=None,
        init=None,
    ):
        super().__init__()
        self.in_features = _positive_int("in_features", in_features)
        self.out_features = _positive_int("out_features", out_features)
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias must be a bool, got {type(bias).__name__}")
        self.bias = bool(bias)
        self.activation = _activation(activation)
        self.dtype = _float_dtype(dtype)
        shape = (self.out_features, self.in_features)
        scheme = _init_scheme(init, self.activation)
        self._param("weight", init_weight(shape, scheme, make_rng(rng), self.dtype))
        if self.bias:
            self._param("bias", np.zeros(self.out_features, self.dtype))

    def forward(self, x):
        """Apply the layer.

        Parameters
        ----------
        x : ndarray of shape (N, in_features)
            Same dtype as the layer.

        Returns
        -------
        y : ndarray of shape (N, out_features)
        """
        _check_input(self, x, 2, self.dtype)
        if x.shape[1] != self.in_features:
            raise ValueError(f"Dense expects {self.in_features} features, got shape {x.shape}")
        z = x @ self.params["weight"].T
        if self.bias:
            z += self.params["bias"]
        y = ACTIVATIONS[self.activation][0](z) if self.activation else z
        self._keep(x=x, y=y)
        return y

    def backward(self, grad_y):
        """Accumulate the weight and bias gradients and return the input gradient.

        Parameters
        ----------
        grad_y : ndarray of shape (N, out_features)

        Returns
        -------
        grad_x : ndarray of shape (N, in_features), or None if ``needs_input_grad`` is False
        """
        _check_grad(self, grad_y)
        grad_z = ACTIVATIONS[self.activation][1](grad_y, self._y) if self.activation else grad_y
        self.grads["weight"] += grad_z.T @ self._x
        if self.bias:
            self.grads["bias"] += grad_z.sum(axis=0)
        if not self.needs_input_grad:
            return None
        return grad_z @ self.params["weight"]

    def config(self):
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias,
            "activation": self.activation,
            "dtype": self.dtype.name,
        }


class Flatten(Layer):
    """Flatten every dim after the batch dim: ``(N, *S) -> (N, prod(S))``."""

    def forward(self, x):
        """Apply the layer.

        Parameters
        ----------
        x : ndarray of shape (N, *S)

        Returns
        -------
        y : ndarray of shape (N, prod(S))
        """
        _check_input(self, x)
        if x.ndim < 2:
            raise ValueError(f"Flatten expects x of shape (N, ...), got shape {x.shape}")
        y = x.reshape(x.shape[0], -1)
        self._keep(y=y, x_shape=x.shape)
        return y

    def backward(self, grad_y):
        """Reshape the gradient back to the input's shape.

        Parameters
        ----------
        grad_y : ndarray of shape (N, prod(S))

        Returns
        -------
        grad_x : ndarray of shape (N, *S), or None if ``needs_input_grad`` is False
        """
        _check_grad(self, grad_y)
        return grad_y.reshape(self._x_shape) if self.needs_input_grad else None


class _Activation(Layer):
    """Element-wise activation layer; subclasses name the function."""

    name = None

    def forward(self, x):
        """Apply the activation.

        Parameters
        ----------
        x : ndarray of any shape

        Returns
        -------
        y : ndarray of the same shape
        """
        _check_input(self, x)
        y = ACTIVATIONS[self.name][0](x)
        self._keep(y=y)
        return y

    def backward(self, grad_y):
        """Return ``grad_y * phi'(x)``.

        Parameters
        ----------
        grad_y : ndarray of the output's shape

        Returns
        -------
        grad_x : ndarray of the same shape, or None if ``needs_input_grad`` is False
        """
        _check_grad(self, grad_y)
        return ACTIVATIONS[self.name][1](grad_y, self._y) if self.needs_input_grad else None


class ReLU(_Activation):
    """Element-wise ``max(x, 0)``."""

    name = "relu"


class Sigmoid(_Activation):
    """Element-wise ``1 / (1 + exp(-x))``, computed without overflow."""

    name = "sigmoid"


class Tanh(_Activation):
    """Element-wise ``tanh(x)``."""

    name = "tanh"


class Sequential(Layer):
    """A chain of layers, applied in order.

    ``params`` and ``grads`` are flat dicts keyed ``"<index>.<name>"`` (``"0.weight"``),
    built on each access from the layers' own arrays, so in-place updates reach the
    layers. The first layer skips its input gradient (``backward`` returns None) unless
    ``needs_input_grad`` is set to True.

    Parameters
    ----------
    *layers : Layer
    """

    def __init__(self, *layers):
        # No super().__init__(): params, grads and needs_input_grad are views of the layers.
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layer {i} must be a convkern Layer, got {type(layer).__name__}")
        self.layers = list(layers)
        self.training = True
        self.needs_input_grad = False
        # A nested Sequential turned its own first layer's flag off; only ours may be off.
        for layer in self.layers[1:]:
            layer.needs_input_grad = True

    @property
    def params(self):
        """dict: every layer's parameters, keyed ``"<index>.<name>"``."""
        return self._flat("params")

    @property
    def grads(self):
        """dict: every layer's gradients, keyed as ``params``."""
        return self._flat("grads")

    def _flat(self, attr):
        return {
            f"{i}.{name}": array
            for i, layer in enumerate(self.layers)
            for name, array in getattr(layer, attr).items()
        }

    @property
    def needs_input_grad(self):
        """bool: whether ``backward`` returns the input gradient (the first layer's flag)."""
        return self.layers[0].needs_input_grad

    @needs_input_grad.setter
    def needs_input_grad(self, value):
        self.layers[0].needs_input_grad = bool(value)

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, index):
        return self.layers[index]

    def train(self, mode=True):
        """Set every layer's mode; return self."""
        self.training = bool(mode)
        for layer in self.layers:
            layer.train(mode)
        return self

    def zero_grad(self):
        """Set every layer's gradients to zero, in place."""
        for layer in self.layers:
            layer.zero_grad()

    def forward(self, x):
        """Apply the layers in order.

        Parameters
        ----------
        x : ndarray
            Input of the first layer.

        Returns
        -------
        ndarray
            Output of the last layer.
        """
        for layer in self.layers:
            x = layer(x)
        return x

    def backward(self, grad_y):
        """Back-propagate through the layers in reverse order.

        Parameters
        ----------
        grad_y : ndarray
            Gradient with respect to the last layer's output.

        Returns
        -------
        grad_x : ndarray, or None if ``needs_input_grad`` is False
        """
        for layer in reversed(self.layers):
            grad_y = layer.backward(grad_y)
        return grad_y

    def __repr__(self):
        lines = [f"  ({i}): {layer!r}".replace("\n", "\n  ") for i, layer in enumerate(self.layers)]
        return "Sequential(\n" + "\n".join(lines) + "\n)"


class ConvTranspose(Layer):
    """N-dimensional transposed convolution layer, ``Y = phi(conv_transpose(X, K) + b)``.

    Equal to ``torch.nn.ConvTranspose{d}d`` (followed by phi). The number of spatial dims
    d (1, 2 or 3) is ``len(kernel_size)``; an int ``kernel_size`` means 2-D.

    Parameters
    ----------
    in_channels, out_channels : int
        C_in and F. Both must be divisible by ``groups``.
    kernel_size : int or tuple of 1, 2 or 3 ints
        K.
    stride, dilation : int or d-tuple of int, default 1
    padding : int or d-tuple of int, default 0
        Entries removed at both ends of every output axis.
    output_padding : int or d-tuple of int, default 0
        Entries added at the end of every output axis, each smaller than the stride or
        the dilation.
    groups : int, default 1
    bias : bool, default True
    activation : {None, 'relu', 'sigmoid', 'tanh'}, default None
    dtype : {numpy.float32, numpy.float64}, default numpy.float32
    rng : None, int or numpy.random.Generator
    init : {None, 'he', 'glorot'}, default None
        None means He for ReLU and Glorot otherwise (fans as PyTorch computes them for
        this layout). The bias starts at zero.

    Attributes
    ----------
    params : dict
        ``"weight"``: ndarray of shape (C_in, F // groups, *K); ``"bias"``: ndarray of
        shape (F,) (absent when ``bias=False``).
    grads : dict
        Same keys and shapes as ``params``.
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        *,
        stride=1,
        padding=0,
        output_padding=0,
        dilation=1,
        groups=1,
        bias=True,
        activation=None,
        dtype=np.float32,
        rng=None,
        init=None,
    ):
        super().__init__()
        self.in_channels = _positive_int("in_channels", in_channels)
        self.out_channels = _positive_int("out_channels", out_channels)
        self.kernel_size = _kernel_size(kernel_size)
        d = len(self.kernel_size)
        self.stride = _int_tuple("stride", stride, d, 1)
        self.padding = _int_tuple("padding", padding, d, 0)
        self.output_padding = _int_tuple("output_padding", output_padding, d, 0)
        self.dilation = _int_tuple("dilation", dilation, d, 1)
        for op, st, dl in zip(self.output_padding, self.stride, self.dilation):
            if op >= max(st, dl):
                raise ValueError(
                    f"output_padding {self.output_padding} must be smaller than either "
                    f"stride {self.stride} or dilation {self.dilation} on every axis"
                )
        self.groups = _positive_int("groups", groups)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"groups={self.groups} must divide in_channels={self.in_channels} "
                f"and out_channels={self.out_channels}"
            )
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias must be a bool, got {type(bias).__name__}")
        self.bias = bool(bias)
        self.activation = _activation(activation)
        self.dtype = _float_dtype(dtype)
        shape = (self.in_channels, self.out_channels // self.groups, *self.kernel_size)
        scheme = _init_scheme(init, self.activation)
        self._param("weight", init_weight(shape, scheme, make_rng(rng), self.dtype))
        if self.bias:
            self._param("bias", np.zeros(self.out_channels, self.dtype))

    @property
    def _geometry(self):
        return {
            "stride": self.stride,
            "padding": self.padding,
            "output_padding": self.output_padding,
            "dilation": self.dilation,
            "groups": self.groups,
        }

    def forward(self, x):
        """Apply the layer.

        Parameters
        ----------
        x : ndarray of shape (N, C_in, *S)
            Same dtype as the layer.

        Returns
        -------
        y : ndarray of shape (N, F, *O)
            ``O = (S - 1) * stride - 2 * padding + dilation * (K - 1) + output_padding + 1``.
        """
        _check_input(self, x, len(self.kernel_size) + 2, self.dtype)
        z = conv_transpose(x, self.params["weight"], self.params.get("bias"), **self._geometry)
        y = ACTIVATIONS[self.activation][0](z) if self.activation else z
        self._keep(x=x, y=y)
        return y

    def backward(self, grad_y):
        """Accumulate the weight and bias gradients and return the input gradient.

        Parameters
        ----------
        grad_y : ndarray of shape (N, F, *O)

        Returns
        -------
        grad_x : ndarray of shape (N, C_in, *S), or None if ``needs_input_grad`` is False
        """
        _check_grad(self, grad_y)
        grad_z = ACTIVATIONS[self.activation][1](grad_y, self._y) if self.activation else grad_y
        weight = self.params["weight"]
        self.grads["weight"] += _backward_weight(self._x, grad_z, weight.shape, **self._geometry)
        if self.bias:
            self.grads["bias"] += conv_backward_bias(grad_z)
        if not self.needs_input_grad:
            return None
        return _backward_input(grad_z, weight, self._x.shape, **self._geometry)

    def config(self):
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
            "output_padding": self.output_padding,
            "dilation": self.dilation,
            "groups": self.groups,
            "bias": self.bias,
            "activation": self.activation,
            "dtype": self.dtype.name,
        }
