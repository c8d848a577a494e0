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
- Buffers: a layer owns its outputs, its input gradients and its scratch arrays, one set
  per input ``(shape, dtype)``, and reuses them on every call, so that a training step
  allocates no large array after the first. The array ``forward`` returns is
  overwritten by the layer's next ``forward`` of the same input shape (and
  ``backward``'s by the next ``backward``): copy it to keep it.
- Conv and Dense apply their activation in place on their output and compute its
  derivative and the bias gradient in one pass over ``grad_y``
  (:mod:`convkern._activations`). Conv and Dense call the convolution through one plan
  per input shape; MaxPool calls :mod:`convkern.pool`.
- ``backward(grad_y, overwrite_grad_y=True)`` (Conv, Dense, ConvTranspose and the
  activation layers) lets the layer write ``phi'``'s product over ``grad_y`` itself,
  as SciPy's ``overwrite_x`` does: one fewer large array streamed through the cache.
  ``Sequential`` passes it for the gradients its own layers returned, never for the
  caller's ``grad_y`` unless told so.
- ``Sequential`` takes the derivative of a ReLU (a Conv's or a ReLU layer's) that feeds a
  MaxPool in the pool's scatter (only outputs > 0 go back) and the Conv's bias sums in
  its weight gradient's pass: no pass over the larger gradient for the activation.
"""

import inspect

import numpy as np

from ._activations import (
    activate_in_place,
    activation_backward,
    activation_forward,
    activation_name,
)
from ._buffers import ShapeCache
from ._validation import boolean, choice, float_dtype, int_tuple, integer, padding_pairs
from .conv import conv_backward_bias
from .conv_transpose import _backward_input, _backward_weight, conv_transpose
from .init import init_weight, make_rng
from .plan import conv_plan
from .pool_plans import pool_plan
from .serialization import register_layer, save_model

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
# Constructor arguments: the rules (and messages) of convkern._validation, as the
# functions apply them: TypeError only for the dtype, ValueError for every wrong value.


def _kernel_size(kernel_size):
    """Return a conv kernel size as a tuple of 1, 2 or 3 positive ints (an int means 2-D)."""
    if not isinstance(kernel_size, (tuple, list)):
        return int_tuple("kernel_size", kernel_size, 2, 1)
    if len(kernel_size) not in (1, 2, 3):
        raise ValueError(f"kernel_size must have 1, 2 or 3 entries, got {len(kernel_size)}")
    return int_tuple("kernel_size", kernel_size, len(kernel_size), 1)


def _conv_padding(padding, kernel, stride, dilation):
    """Return a Conv padding as 'valid', 'same' or 'full', or as (before, after) pairs."""
    # 'same' depends on the input size; any size checks the argument itself.
    pairs = padding_pairs(padding, (1,) * len(kernel), kernel, stride, dilation)
    return padding if isinstance(padding, str) else pairs


def _compact_padding(padding):
    """A padding as the shortest equivalent argument: a string, ints, or pairs."""
    if isinstance(padding, str) or any(lo != hi for lo, hi in padding):
        return padding
    return tuple(lo for lo, _ in padding)


def _pool_sizes(name, value, minimum, d):
    """An int (kept: it applies to every spatial dim) or a tuple of d ints >= minimum.

    ``d`` is None until a tuple argument has fixed it; then 1, 2 or 3 entries.
    """
    if not isinstance(value, (tuple, list)):
        return integer(name, value, minimum)
    if d is None and len(value) not in (1, 2, 3):
        raise ValueError(f"{name} must have 1, 2 or 3 entries, got {len(value)}")
    return int_tuple(name, value, len(value) if d is None else d, minimum)


def _init_scheme(init, activation):
    """``init=None`` picks He for ReLU layers and Glorot otherwise."""
    init = choice("init", init, (None, "he", "glorot"))
    if init is None:
        return "he" if activation == "relu" else "glorot"
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


def _writable_in_place(grad_y, y, overwrite_grad_y):
    """Whether ``grad_y * phi'(y)`` may be written over ``grad_y``."""
    return (overwrite_grad_y and grad_y.flags.c_contiguous and grad_y.flags.writeable
            and not np.may_share_memory(grad_y, y))


def _grad_z_buffer(entry, grad_y, y, overwrite_grad_y):
    """Where ``grad_y * phi'(y)`` goes: ``grad_y`` itself when allowed, else a layer buffer."""
    if _writable_in_place(grad_y, y, overwrite_grad_y):
        return grad_y
    return entry.array("grad_z", y.shape, y.dtype, grad_y, y)


# ---------------------------------------------------------------------------
# Layers.


class Layer:
    """Base class: parameter and gradient dicts, train/eval mode, the call protocol."""

    def __init__(self):
        self.params = {}
        self.grads = {}
        self.training = True
        self.needs_input_grad = True
        self._shapes = ShapeCache(self._plan)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_"):
            register_layer(cls)  # so that load_model can rebuild it by name

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):
        """Compute the layer's output (implemented by each layer)."""
        raise NotImplementedError

    def backward(self, grad_y):
        """Add the parameter gradients to ``grads`` and return the input gradient.

        Layers that can work in place also take ``overwrite_grad_y=False``.
        """
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

    def _plan(self, x_shape, dtype):
        """What the layer needs per input shape besides its arrays (None by default)."""
        return None

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
            repeats = (isinstance(default, int) and not isinstance(default, bool)
                       and isinstance(value, tuple) and set(value) == {default})
            if value != default and not repeats:
                args.append(f"{key}={value!r}")
        return f"{type(self).__name__}({', '.join(args)})"


register_layer(Layer)


class Conv(Layer):
    """N-dimensional convolution layer, ``Y = phi(X * K + b)``.

    The number of spatial dims d (1, 2 or 3) is ``len(kernel_size)``; an int
    ``kernel_size`` means a 2-D square kernel. The activation runs in place on the
    layer's output; backward computes ``phi'`` and the bias gradient in one pass over
    ``grad_y``, then the weight and input gradients of the convolution.

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
    padding : str or tuple of (before, after) pairs
        The validated padding.
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
        self.in_channels = integer("in_channels", in_channels, 1)
        self.out_channels = integer("out_channels", out_channels, 1)
        self.kernel_size = _kernel_size(kernel_size)
        d = len(self.kernel_size)
        self.groups = integer("groups", groups, 1)
        self.stride = int_tuple("stride", stride, d, 1)
        self.dilation = int_tuple("dilation", dilation, d, 1)
        self.padding = _conv_padding(padding, self.kernel_size, self.stride, self.dilation)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"groups={self.groups} must divide in_channels={self.in_channels} "
                f"and out_channels={self.out_channels}"
            )
        self.bias = choice("bias", bias, ("tied", "untied", None))
        self.activation = activation_name(activation)
        self.dtype = float_dtype("dtype", dtype)
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

    def _plan(self, x_shape, dtype):
        # The one place that makes a plan: validated once per input shape.
        return conv_plan(x_shape, self.params["weight"].shape, dtype=dtype, stride=self.stride,
                         padding=self.padding, dilation=self.dilation, groups=self.groups,
                         bias=self.bias)

    def build(self, input_shape):
        """Fix the sample shape ``(C, *S)`` and allocate the untied bias ``(F, *O)``.

        Parameters
        ----------
        input_shape : tuple of int
            Shape of one input sample, ``(C, *S)``.
        """
        if self.bias != "untied":
            raise ValueError("build(input_shape) is only used with bias='untied'")
        shape = int_tuple("input_shape", input_shape, len(self.kernel_size) + 1, 1)
        if shape[0] != self.in_channels:
            raise ValueError(
                f"input_shape {shape} has {shape[0]} channels, expected {self.in_channels}"
            )
        y_shape = self._plan((1, *shape), self.dtype).y_shape
        self._param("bias", np.zeros(y_shape[1:], self.dtype))
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
            Owned by the layer: the next forward of the same input shape overwrites it.
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
        entry = self._shapes.entry(x)
        y = entry.array("y", entry.plan.y_shape, self.dtype, x)
        # ReLU runs in the kernel's output tile; the others in place afterwards
        fused = self.activation if self.activation == "relu" else None
        entry.plan.forward(x, self.params["weight"], self.params.get("bias"), out=y,
                           activation=fused)
        if self.activation and not fused:
            activate_in_place(y, self.activation)
        self._keep(x=x, y=y, entry=entry)
        return y

    def backward(self, grad_y, *, overwrite_grad_y=False):
        """Accumulate the weight and bias gradients and return the input gradient.

        Parameters
        ----------
        grad_y : ndarray of shape (N, F, *O)
            Gradient of the loss with respect to the layer's output.
        overwrite_grad_y : bool, default False
            Let the activation's derivative overwrite ``grad_y`` (when it is C-contiguous
            and writable) instead of a buffer of the layer's.

        Returns
        -------
        grad_x : ndarray of shape (N, C, *S), or None if ``needs_input_grad`` is False
            Owned by the layer: the next backward of the same shape overwrites it.
        """
        _check_grad(self, grad_y)
        if not self.activation:
            return self._backward_z(grad_y)
        entry, y = self._entry, self._y
        grad_b = None
        if "bias" in self.params:
            grad_b = entry.array("grad_b", self.params["bias"].shape, self.dtype)
        grad_z = _grad_z_buffer(entry, grad_y, y, overwrite_grad_y)
        activation_backward(grad_y, y, self.activation, bias=self.bias, out=grad_z,
                            bias_out=grad_b)
        return self._backward_z(grad_z, grad_b)

    def _backward_z(self, grad_z, grad_b=None):
        """backward from the gradient before the activation, ``grad_z``; ``grad_b`` is
        its bias gradient when already summed (else the weight gradient's pass sums it)."""
        entry, x = self._entry, self._x
        weight = self.params["weight"]
        grad_w = entry.array("grad_w", weight.shape, self.dtype)
        if grad_b is None and "bias" in self.params:
            # the bias gradient in the weight gradient's pass over grad_z
            grad_b = entry.array("grad_b", self.params["bias"].shape, self.dtype)
            entry.plan.backward_weight_bias(x, grad_z, out=grad_w, bias_out=grad_b)
        else:
            entry.plan.backward_weight(x, grad_z, out=grad_w)
        self.grads["weight"] += grad_w
        if grad_b is not None:
            self.grads["bias"] += grad_b
        if not self.needs_input_grad:
            return None
        grad_x = entry.array("grad_x", x.shape, self.dtype, grad_z)
        return entry.plan.backward_input(grad_z, weight, out=grad_x)

    def config(self):
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": _compact_padding(self.padding),
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
        # Tuples must agree on d with the first tuple given, as the function requires.
        d = None
        sizes = []
        for name, value, minimum in (("kernel_size", kernel_size, 1), ("stride", stride, 1),
                                     ("padding", padding, 0), ("dilation", dilation, 1)):
            if name == "stride" and value is None:  # None means kernel_size
                sizes.append(None)
                continue
            if name == "padding":
                size = self._padding(value, d)
            else:
                size = _pool_sizes(name, value, minimum, d)
            if isinstance(size, tuple):
                d = len(size)
            sizes.append(size)
        self.kernel_size, self.stride, self.padding, self.dilation = sizes
        self.ceil_mode = boolean("ceil_mode", ceil_mode)

    @staticmethod
    def _padding(padding, d):
        """A padding string, an int, or a tuple of d (1 to 3) ints or (before, after) pairs."""
        if isinstance(padding, str):
            padding_pairs(padding, (1,), (1,), (1,), (1,))  # the functions' check and message
            return padding
        pairs = isinstance(padding, (tuple, list)) and any(
            isinstance(p, (tuple, list)) for p in padding
        )
        if not pairs:
            return _pool_sizes("padding", padding, 0, d)
        if len(padding) not in ((1, 2, 3) if d is None else (d,)):
            raise ValueError(f"padding must have {d or '1, 2 or 3'} entries, got {len(padding)}")
        # An int entry stays an int: it keeps PyTorch's half-kernel rule.
        return tuple(
            int_tuple("padding", p, 2, 0) if isinstance(p, (tuple, list))
            else integer("padding", p, 0)
            for p in padding
        )

    def _plan(self, x_shape, dtype):
        # The one place that makes a pool plan: validated once per input shape.
        return pool_plan(x_shape, self.kernel_size, dtype=float_dtype("x", dtype),
                         stride=self.stride, padding=self.padding, dilation=self.dilation,
                         ceil_mode=self.ceil_mode)

    def forward(self, x):
        """Apply the layer.

        Parameters
        ----------
        x : ndarray of shape (N, C, *S)

        Returns
        -------
        y : ndarray of shape (N, C, *O)
            Owned by the layer: the next forward of the same input shape overwrites it.
        """
        _check_input(self, x)
        entry = self._shapes.entry(x)
        plan = entry.plan
        out = (entry.array("y", plan.y_shape, plan.dtype, x),
               entry.array("indices", plan.y_shape, np.int64, x))
        plan.forward(x, out=out)
        y, indices = out
        self._keep(y=y, indices=indices, x_shape=x.shape, entry=entry)
        return y

    def backward(self, grad_y):
        """Return the input gradient (each output's gradient goes to its argmax).

        Parameters
        ----------
        grad_y : ndarray of shape (N, C, *O)

        Returns
        -------
        grad_x : ndarray of shape (N, C, *S), or None if ``needs_input_grad`` is False
            Owned by the layer: the next backward of the same shape overwrites it.
        """
        _check_grad(self, grad_y)
        if not self.needs_input_grad:
            return None
        grad_x = self._entry.array("grad_x", self._x_shape, self._y.dtype, grad_y)
        return self._entry.plan.backward(grad_y, self._indices, out=grad_x)

    def _backward_through_relu(self, grad_y):
        """The input gradient times ReLU's derivative at the input, for an input that a
        ReLU made: the pooled outputs are the input's values at the argmax, so only the
        outputs > 0 are scattered (the same bits as backward, then the derivative)."""
        _check_grad(self, grad_y)
        grad_x = self._entry.array("grad_x", self._x_shape, self._y.dtype, grad_y)
        return self._entry.plan._backward_positive(grad_y, self._indices, self._y, grad_x)

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

    The products run on convkern's kernels (the layer is a 1-D convolution of N
    one-position images), never on NumPy's BLAS; ReLU is applied in the output tile, other
    activations in place on the output; backward computes ``phi'`` and the bias gradient
    (summed in double) in one pass over ``grad_y``.

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
        self.in_features = integer("in_features", in_features, 1)
        self.out_features = integer("out_features", out_features, 1)
        self.bias = boolean("bias", bias)
        self.activation = activation_name(activation)
        self.dtype = float_dtype("dtype", dtype)
        shape = (self.out_features, self.in_features)
        scheme = _init_scheme(init, self.activation)
        self._param("weight", init_weight(shape, scheme, make_rng(rng), self.dtype))
        if self.bias:
            self._param("bias", np.zeros(self.out_features, self.dtype))

    def _plan(self, x_shape, dtype):
        # A dense layer is a 1-D convolution of N one-position images (weight (F, C, 1)):
        # its products run on convkern's OpenMP kernels, whose tiles span the images, and
        # never on NumPy's BLAS threads, which would spin against them on the same cores.
        return conv_plan((*x_shape, 1), (*self.params["weight"].shape, 1), dtype=dtype,
                         bias="tied" if self.bias else None)

    def forward(self, x):
        """Apply the layer.

        Parameters
        ----------
        x : ndarray of shape (N, in_features)
            Same dtype as the layer.

        Returns
        -------
        y : ndarray of shape (N, out_features)
            Owned by the layer: the next forward of the same input shape overwrites it.
        """
        _check_input(self, x, 2, self.dtype)
        if x.shape[1] != self.in_features:
            raise ValueError(f"Dense expects {self.in_features} features, got shape {x.shape}")
        entry = self._shapes.entry(x)
        y = entry.array("y", (x.shape[0], self.out_features), self.dtype, x)
        fused = "relu" if self.activation == "relu" else None
        entry.plan.forward(x[:, :, None], self.params["weight"][:, :, None],
                           self.params.get("bias"), out=y[:, :, None], activation=fused)
        if self.activation and not fused:
            activate_in_place(y, self.activation)
        self._keep(x=x, y=y, entry=entry)
        return y

    def backward(self, grad_y, *, overwrite_grad_y=False):
        """Accumulate the weight and bias gradients and return the input gradient.

        Parameters
        ----------
        grad_y : ndarray of shape (N, out_features)
        overwrite_grad_y : bool, default False
            As in :meth:`Conv.backward`.

        Returns
        -------
        grad_x : ndarray of shape (N, in_features), or None if ``needs_input_grad`` is False
            Owned by the layer: the next backward of the same shape overwrites it.
        """
        _check_grad(self, grad_y)
        entry, x, y = self._entry, self._x, self._y
        grad_b = entry.array("grad_b", (self.out_features,), self.dtype) if self.bias else None
        if self.activation:
            grad_z = _grad_z_buffer(entry, grad_y, y, overwrite_grad_y)
            activation_backward(grad_y, y, self.activation, bias="tied" if self.bias else None,
                                out=grad_z, bias_out=grad_b)
        else:
            grad_z = grad_y
            if self.bias:
                # The same double, fixed-order sum as the fused kernel, over (N, F, 1).
                conv_backward_bias(grad_z.reshape(*grad_z.shape, 1), out=grad_b)
        grad_w = entry.array("grad_w", self.params["weight"].shape, self.dtype)
        entry.plan.backward_weight(x[:, :, None], grad_z[:, :, None], out=grad_w[:, :, None])
        self.grads["weight"] += grad_w
        if self.bias:
            self.grads["bias"] += grad_b
        if not self.needs_input_grad:
            return None
        grad_x = entry.array("grad_x", x.shape, self.dtype, grad_z)
        entry.plan.backward_input(grad_z[:, :, None], self.params["weight"][:, :, None],
                                  out=grad_x[:, :, None])
        return grad_x

    def config(self):
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias,
            "activation": self.activation,
            "dtype": self.dtype.name,
        }


class Flatten(Layer):
    """Flatten every dim after the batch dim: ``(N, *S) -> (N, prod(S))``.

    The output is a view of the input when the input is C-contiguous.
    """

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
            float32 or float64.

        Returns
        -------
        y : ndarray of the same shape
            Owned by the layer: the next forward of the same input shape overwrites it.
        """
        _check_input(self, x)
        entry = self._shapes.entry(x)
        y = activation_forward(x, self.name, out=entry.array("y", x.shape, x.dtype, x))
        self._keep(y=y, entry=entry)
        return y

    def backward(self, grad_y, *, overwrite_grad_y=False):
        """Return ``grad_y * phi'(x)``.

        Parameters
        ----------
        grad_y : ndarray of the output's shape
        overwrite_grad_y : bool, default False
            Compute the product in ``grad_y`` itself (when it is C-contiguous and
            writable) and return it.

        Returns
        -------
        grad_x : ndarray of the same shape, or None if ``needs_input_grad`` is False
            Owned by the layer (or ``grad_y``): the next backward of the same shape
            overwrites it.
        """
        _check_grad(self, grad_y)
        if not self.needs_input_grad:
            return None
        grad_x = _grad_z_buffer(self._entry, grad_y, self._y, overwrite_grad_y)
        return activation_backward(grad_y, self._y, self.name, out=grad_x)[0]


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
    ``needs_input_grad`` is set to True. ``forward`` returns the last layer's output
    array (owned by that layer, see the module notes).

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

    def backward(self, grad_y, *, overwrite_grad_y=False):
        """Back-propagate through the layers in reverse order.

        Each gradient a convkern layer returned (its own buffer, or a view of one) is
        handed to the layer before it with ``overwrite_grad_y=True``: nothing else reads
        it. A layer of another class gets the one-argument call, and its result is left
        alone.

        Parameters
        ----------
        grad_y : ndarray
            Gradient with respect to the last layer's output.
        overwrite_grad_y : bool, default False
            Let the last layer overwrite ``grad_y`` too.

        Returns
        -------
        grad_x : ndarray, or None if ``needs_input_grad`` is False
        """
        scratch = overwrite_grad_y  # whether grad_y may be overwritten
        i = len(self.layers) - 1
        while i >= 0:
            layer = self.layers[i]
            backward = type(layer).backward
            if i > 0 and _relu_before_pool(self.layers[i - 1], layer):
                # a ReLU's derivative in the pool's scatter: one pass over the larger
                # gradient fewer
                before = self.layers[i - 1]
                grad_z = layer._backward_through_relu(grad_y)
                if isinstance(before, _Activation):
                    grad_x = grad_z if before.needs_input_grad else None
                else:
                    grad_x = before._backward_z(grad_z)
                scratch, grad_y, i = True, grad_x, i - 2
                continue
            if backward in _IN_PLACE_BACKWARDS:
                grad_x = layer.backward(grad_y, overwrite_grad_y=scratch)
            else:
                grad_x = layer.backward(grad_y)
            # MaxPool and Flatten return a new buffer or a view of grad_y: either is as
            # free to overwrite as grad_y was.
            scratch = backward in _OWNED_RESULT_BACKWARDS and (
                scratch or grad_x is None or not np.may_share_memory(grad_x, grad_y))
            grad_y = grad_x
            i -= 1
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
        self.in_channels = integer("in_channels", in_channels, 1)
        self.out_channels = integer("out_channels", out_channels, 1)
        self.kernel_size = _kernel_size(kernel_size)
        d = len(self.kernel_size)
        self.stride = int_tuple("stride", stride, d, 1)
        self.padding = int_tuple("padding", padding, d, 0)
        self.output_padding = int_tuple("output_padding", output_padding, d, 0)
        self.dilation = int_tuple("dilation", dilation, d, 1)
        for op, st, dl in zip(self.output_padding, self.stride, self.dilation):
            if op >= max(st, dl):
                raise ValueError(
                    f"output_padding {self.output_padding} must be smaller than either "
                    f"stride {self.stride} or dilation {self.dilation} on every axis"
                )
        self.groups = integer("groups", groups, 1)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"groups={self.groups} must divide in_channels={self.in_channels} "
                f"and out_channels={self.out_channels}"
            )
        self.bias = boolean("bias", bias)
        self.activation = activation_name(activation)
        self.dtype = float_dtype("dtype", dtype)
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
        y = conv_transpose(x, self.params["weight"], self.params.get("bias"), **self._geometry)
        if self.activation:
            activate_in_place(y, self.activation)
        self._keep(x=x, y=y)
        return y

    def backward(self, grad_y, *, overwrite_grad_y=False):
        """Accumulate the weight and bias gradients and return the input gradient.

        Parameters
        ----------
        grad_y : ndarray of shape (N, F, *O)
        overwrite_grad_y : bool, default False
            As in :meth:`Conv.backward`.

        Returns
        -------
        grad_x : ndarray of shape (N, C_in, *S), or None if ``needs_input_grad`` is False
        """
        _check_grad(self, grad_y)
        weight = self.params["weight"]
        if self.activation:
            out = grad_y if _writable_in_place(grad_y, self._y, overwrite_grad_y) else None
            grad_z, grad_b = activation_backward(grad_y, self._y, self.activation,
                                                 bias="tied" if self.bias else None, out=out)
        else:
            grad_z = grad_y
            grad_b = conv_backward_bias(grad_z) if self.bias else None
        self.grads["weight"] += _backward_weight(self._x, grad_z, weight.shape, **self._geometry)
        if self.bias:
            self.grads["bias"] += grad_b
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


# The layers whose backward takes ``overwrite_grad_y``, and those whose result is a
# buffer of their own or a view of their grad_y (what Sequential may pass on as scratch).
_IN_PLACE_BACKWARDS = frozenset(
    cls.backward for cls in (Conv, Dense, ConvTranspose, ReLU, Sigmoid, Tanh, Sequential))
_OWNED_RESULT_BACKWARDS = frozenset(
    cls.backward for cls in (Conv, Dense, ConvTranspose, ReLU, Sigmoid, Tanh, MaxPool, Flatten))


def _relu_before_pool(before, layer):
    """A MaxPool fed by a ReLU (a Conv's or a ReLU layer's), both of convkern's own
    classes: Sequential.backward then scatters only the pooled outputs > 0."""
    if type(layer).backward is not MaxPool.backward or not layer.needs_input_grad:
        return False
    if type(before).backward is _Activation.backward:
        return before.name == "relu"
    return type(before).backward is Conv.backward and before.activation == "relu"
