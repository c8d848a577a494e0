"""Convolution plans: a validated geometry with the kernel path chosen for every pass.

``conv_plan(x_shape, weight_shape, ...)`` checks the geometry once and picks each pass's
path from the table in :mod:`convkern._paths`.  Its methods then check only what can
change from call to call (the arrays' kinds, dtype, shapes and memory layout) before one
kernel call, so a layer or a training loop that calls the same geometry again pays no
validation or planning.  The functional API (:mod:`convkern.conv`) is a cached use of
plans: a function and the plan of the same geometry give the same bits.
"""

import math

import numpy as np

from . import _conv, _paths
from ._lift import lift_params, lift_shape
from ._validation import (
    check_out,
    check_size,
    conv_output_shape,
    float_array,
    float_dtype,
    int_tuple,
    integer,
    nonzero_dims,
    padding_pairs,
)
from ._work import CONV_GRAIN, CONV_MEMORY_GRAIN, DEPTHWISE_GRAIN, ELTWISE_GRAIN, threads_for

__all__ = ["ConvPlan", "conv_plan", "BIAS_MODES", "ACTIVATIONS"]

BIAS_MODES = (None, "tied", "untied")
ACTIVATIONS = (None, "relu")


def spatial_dims(weight_ndim):
    """Return d = weight.ndim - 2, which must be 1, 2 or 3."""
    if weight_ndim not in (3, 4, 5):
        raise ValueError(
            f"weight must have 3, 4 or 5 dimensions (F, C // groups, *kernel), got {weight_ndim}"
        )
    return weight_ndim - 2


class Geometry:
    """A validated convolution geometry.

    Attributes
    ----------
    d : int
        Number of spatial axes.
    x_shape, w_shape, y_shape : tuple of int
        Batched shapes ``(N, C, *S)``, ``(F, C // groups, *K)``, ``(N, F, *O)``.
    batched : bool
        False when the caller gave an unbatched ``(C, *S)`` input.
    stride, dilation : tuple of int
    padding : tuple of (before, after) pairs
    groups : int
    """

    def __init__(self, x_shape, w_shape, stride, padding, dilation, groups, x_name="x"):
        d = spatial_dims(len(w_shape))
        if len(x_shape) not in (d + 1, d + 2):
            raise ValueError(
                f"{x_name} must have {d + 2} dimensions (N, C, *spatial) or {d + 1} (C, *spatial) "
                f"for a {d}-D weight, got {len(x_shape)}"
            )
        self.d = d
        self.batched = len(x_shape) == d + 2
        x_shape = tuple(x_shape) if self.batched else (1,) + tuple(x_shape)
        groups = integer("groups", groups, 1)
        F, cg = w_shape[:2]
        kernel = tuple(w_shape[2:])
        nonzero_dims("weight", w_shape, "filter, channel or kernel")
        nonzero_dims(x_name, x_shape[1:], "channel or spatial")
        if F % groups:
            raise ValueError(f"groups={groups} does not divide the {F} filters of weight")
        if x_shape[1] != cg * groups:
            raise ValueError(
                f"{x_name} has {x_shape[1]} channels but weight expects "
                f"{cg} per group x {groups} groups = {cg * groups}"
            )
        spatial = x_shape[2:]
        self.stride = int_tuple("stride", stride, d, 1)
        self.dilation = int_tuple("dilation", dilation, d, 1)
        self.padding = padding_pairs(padding, spatial, kernel, self.stride, self.dilation)
        out = conv_output_shape(spatial, kernel, self.stride, self.padding, self.dilation)
        self.groups = groups
        self.x_shape = x_shape
        self.w_shape = tuple(w_shape)
        self.y_shape = (x_shape[0], F) + out
        for name, shape in ((x_name, x_shape), ("weight", w_shape), ("output", self.y_shape)):
            check_size(name, shape)
        check_size("unrolled input", (cg,) + kernel + out)

    def user_shape(self, shape):
        """Drop the batch axis again for an unbatched call."""
        return shape if self.batched else shape[1:]

    def flops(self):
        """2 * N * F * C/groups * prod(K) * prod(O): the multiply-adds of one pass, twice."""
        flops = 2 * self.y_shape[0] * self.w_shape[0] * self.w_shape[1]
        for n in self.w_shape[2:] + self.y_shape[2:]:
            flops *= n
        return flops

    def kernel_args(self):
        """The 5-D shapes and 3-tuples of parameters the kernels take."""
        return (
            lift_shape(self.x_shape, self.d),
            lift_shape(self.w_shape, self.d),
            lift_shape(self.y_shape, self.d),
            self.groups,
            lift_params(self.stride, self.d, 1),
            lift_params((lo for lo, _ in self.padding), self.d, 0),
            lift_params(self.dilation, self.d, 1),
        )


def conv_plan(x_shape, weight_shape, *, dtype=np.float32, stride=1, padding=0, dilation=1,
              groups=1, bias="tied"):
    """Plan a convolution: validate its geometry once and choose each pass's kernel path.

    Parameters
    ----------
    x_shape : tuple of int
        ``(N, C, *S)``, or ``(C, *S)`` for unbatched calls; ``S`` has 1, 2 or 3 axes.
    weight_shape : tuple of int
        ``(F, C // groups, *K)``.
    dtype : float32 or float64
    stride, padding, dilation, groups
        As for :func:`convkern.conv_forward`.
    bias : 'tied', 'untied' or None
        The bias ``forward`` takes: ``(F,)``, ``(F, *O)`` or none.

    Returns
    -------
    ConvPlan
    """
    return ConvPlan(x_shape, weight_shape, dtype=dtype, stride=stride, padding=padding,
                    dilation=dilation, groups=groups, bias=bias)


class ConvPlan:
    """A convolution geometry, validated once, with the kernel path of every pass.

    Build it with :func:`conv_plan`.  Its methods give the same bits as the functions
    :func:`convkern.conv_forward`, :func:`convkern.conv_backward_input`,
    :func:`convkern.conv_backward_weight` and :func:`convkern.conv_backward_bias`, and
    check per call only the arrays (kind, dtype, shape; non-contiguous arrays are copied).

    Attributes
    ----------
    x_shape, weight_shape, y_shape : tuple of int
        As the caller gives them (unbatched when ``x_shape`` is).
    dtype : numpy.dtype
    stride, dilation : tuple of int
    padding : tuple of (before, after) pairs
    groups : int
    bias : 'tied', 'untied' or None
    paths : dict
        The path of each pass (``'forward'``, ``'backward_input'``, ``'backward_weight'``,
        ``'backward_bias'``), named as in :mod:`convkern._paths`.
    scratch_bytes : dict
        Scratch memory per thread of each pass's path.
    isa : str
        The micro-kernels' instruction set (``'avx512'``, ``'avx2'``, ``'baseline'``...).
    num_threads : int
        Threads a call uses now (the global setting, capped by the work).
    """

    def __init__(self, x_shape, weight_shape, *, dtype=np.float32, stride=1, padding=0,
                 dilation=1, groups=1, bias="tied", _x_name="x_shape"):
        if not isinstance(x_shape, (tuple, list)) or not isinstance(weight_shape, (tuple, list)):
            raise TypeError("x_shape and weight_shape must be tuples of ints")
        w_shape = tuple(integer(f"weight_shape[{i}]", v, 0) for i, v in enumerate(weight_shape))
        x_shape = tuple(integer(f"x_shape[{i}]", v, 0) for i, v in enumerate(x_shape))
        if not (bias is None or (isinstance(bias, str) and bias in BIAS_MODES)):
            raise ValueError(f"bias must be 'tied', 'untied' or None, got {bias!r}")
        self.dtype = float_dtype("dtype", dtype)
        self._geom = Geometry(x_shape, w_shape, stride, padding, dilation, groups,
                              x_name=_x_name)
        g = self._geom
        self.x_shape = g.user_shape(g.x_shape)
        self.weight_shape = g.w_shape
        self.y_shape = g.user_shape(g.y_shape)
        self.stride, self.padding, self.dilation = g.stride, g.padding, g.dilation
        self.groups = g.groups
        self.bias = bias
        # the kernels' arguments: the 5-D shapes (x, weight, y) and the parameters
        self._args = g.kernel_args()
        self._no_bias = np.empty(0, self.dtype)
        self._flops = g.flops()
        self._activations = math.prod(g.x_shape) + math.prod(g.y_shape)
        self._facts = _paths.facts(self._args, self.dtype)
        self.paths = {p: _paths.choose(p, self._facts) for p in _paths.PASSES}
        self._set_paths(self.paths)
        self.isa = _conv.kernel_info()["isa"]

    def _set_paths(self, paths):
        self.paths = dict(paths)
        self._codes = {p: _paths.code(p, name) for p, name in paths.items()}
        double = self.dtype == np.float64
        self.scratch_bytes = {
            p: _conv.scratch_bytes(p, self._codes[p], *self._args, double) for p in paths
        }

    @property
    def num_threads(self):
        grain = DEPTHWISE_GRAIN if self._facts.channels == 1 else CONV_GRAIN
        # a call's time is its multiply-adds' plus its memory's: the grains add (VGG's
        # 3-channel stem at batch 1, 1.8 grains of the one and 0.3 of the other, runs
        # its input gradient in 0.65x the time on two threads)
        return threads_for(self._flops + self._activations * grain // CONV_MEMORY_GRAIN,
                           grain)

    def valid_paths(self, pass_name):
        """The paths of ``pass_name`` that compute this geometry correctly, in table order."""
        if pass_name not in _paths.TABLE:
            raise ValueError(f"pass must be one of {_paths.PASSES}, got {pass_name!r}")
        return _paths.valid_paths(pass_name, self._facts)

    def force(self, **paths):
        """Return a copy of the plan that runs the given paths (for tests and experts).

        Parameters
        ----------
        **paths : str
            ``forward=``, ``backward_input=``, ``backward_weight=`` or ``backward_bias=``
            a path name from :attr:`valid_paths`.

        Raises
        ------
        ValueError
            For an unknown pass or a path that is not valid for this geometry.
        """
        chosen = dict(self.paths)
        for pass_name, name in paths.items():
            valid = self.valid_paths(pass_name)
            if name not in valid:
                raise ValueError(
                    f"{pass_name} path {name!r} is not valid for this geometry; valid: {valid}"
                )
            chosen[pass_name] = name
        other = object.__new__(ConvPlan)
        other.__dict__.update(self.__dict__)
        other._set_paths(chosen)
        return other

    def __repr__(self):
        def kib(n):
            return f"{n / 1024:.1f} KiB"

        passes = ",\n    ".join(
            f"{p}={name!r} (scratch {kib(self.scratch_bytes[p])}/thread)"
            for p, name in self.paths.items()
        )
        return (
            f"ConvPlan(x_shape={self.x_shape}, weight_shape={self.weight_shape}, "
            f"dtype={self.dtype.name}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, groups={self.groups}, bias={self.bias!r},\n"
            f"    y_shape={self.y_shape}, isa={self.isa!r}, threads={self.num_threads},\n"
            f"    {passes})"
        )

    # -- per-call checks -----------------------------------------------------------------

    def _array(self, name, a, shape):
        a = float_array(name, a)
        if a.dtype != self.dtype:
            raise TypeError(f"{name} has dtype {a.dtype} but the plan is for {self.dtype}")
        if a.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
        return a

    # -- the passes ----------------------------------------------------------------------

    def forward(self, x, weight, bias=None, *, out=None, activation=None):
        """``act(x * weight + bias)``: the cross-correlation of :func:`convkern.conv_forward`.

        Parameters
        ----------
        x : ndarray of shape x_shape
        weight : ndarray of shape weight_shape
        bias : None or ndarray of shape (F,) (plan bias 'tied') or (F, *O) ('untied')
        out : ndarray of shape y_shape, optional
        activation : None or 'relu'
            Applied to each output as it leaves the kernel's tile (``max(y, 0)``, NaN
            kept), so no second pass over the output is needed.

        Returns
        -------
        y : ndarray of shape y_shape
        """
        given = (x, weight, bias)  # out may not overlap these, nor their contiguous copies
        g = self._geom
        weight = self._array("weight", weight, g.w_shape)
        x = self._array("x", x, self.x_shape)
        F = g.w_shape[0]
        mode = 0
        if bias is not None:
            bias = float_array("bias", bias)
            if bias.dtype != self.dtype:
                raise TypeError(f"bias has dtype {bias.dtype} but the plan is for {self.dtype}")
            if self.bias is None:
                raise ValueError("this plan takes no bias (planned with bias=None)")
            expected = (F,) if self.bias == "tied" else g.y_shape[1:]
            if bias.shape != expected:
                raise ValueError(
                    f"bias must have shape {expected} (the plan's {self.bias} bias), "
                    f"got {bias.shape}"
                )
            mode = 1 if self.bias == "tied" else 2
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be None or 'relu', got {activation!r}")
        y = check_out(out, self.y_shape, self.dtype, given + (x, weight, bias))
        return self._forward(x, weight, bias, mode, ACTIVATIONS.index(activation), y)

    def _forward(self, x, weight, bias, mode, act, y):
        """The forward pass of validated arrays into ``y``; mode and act are the
        kernel's codes of the bias and the activation."""
        if self._geom.y_shape[0] == 0:
            return y
        flat_bias = bias.reshape(-1) if bias is not None else self._no_bias
        x5, w5, y5 = self._args[:3]
        _conv.conv_forward(
            x.reshape(x5), weight.reshape(w5), flat_bias, mode,
            y.reshape(y5), *self._args[3:], self._codes["forward"], act, self.num_threads,
        )
        return y

    def backward_input(self, grad_y, weight, *, out=None):
        """Gradient with respect to ``x`` (:func:`convkern.conv_backward_input`).

        Parameters
        ----------
        grad_y : ndarray of shape y_shape
        weight : ndarray of shape weight_shape
        out : ndarray of shape x_shape, optional

        Returns
        -------
        grad_x : ndarray of shape x_shape
            Input positions no output window reaches get zero.
        """
        given = (grad_y, weight)
        g = self._geom
        weight = self._array("weight", weight, g.w_shape)
        grad_y = self._array("grad_y", grad_y, self.y_shape)
        gx = check_out(out, self.x_shape, self.dtype, given + (grad_y, weight))
        return self._backward_input(grad_y, weight, gx)

    def _backward_input(self, grad_y, weight, gx):
        """The input gradient of validated arrays into ``gx``."""
        if self._geom.x_shape[0] == 0:
            return gx
        x5, w5, y5 = self._args[:3]
        _conv.conv_backward_input(
            grad_y.reshape(y5), weight.reshape(w5),
            gx.reshape(x5), *self._args[3:], self._codes["backward_input"],
            self.num_threads,
        )
        return gx

    def backward_weight(self, x, grad_y, *, out=None):
        """Gradient with respect to ``weight`` (:func:`convkern.conv_backward_weight`).

        Parameters
        ----------
        x : ndarray of shape x_shape
        grad_y : ndarray of shape y_shape
        out : ndarray of shape weight_shape, optional

        Returns
        -------
        grad_w : ndarray of shape weight_shape
            Summed over the batch in a fixed order (the same bits for any thread count).
        """
        given = (x, grad_y)
        g = self._geom
        x = self._array("x", x, self.x_shape)
        grad_y = self._array("grad_y", grad_y, self.y_shape)
        gw = check_out(out, g.w_shape, self.dtype, given + (x, grad_y))
        self._weight_gradient(x, grad_y, gw, self._no_bias)
        return gw

    def backward_weight_bias(self, x, grad_y, *, out=None, bias_out=None):
        """The weight and bias gradients, with a tied bias's sums taken in the weight
        gradient's own pass over ``grad_y`` (one read of it instead of two).

        Parameters
        ----------
        x : ndarray of shape x_shape
        grad_y : ndarray of shape y_shape
        out : ndarray of shape weight_shape, optional
        bias_out : ndarray of shape (F,) ('tied') or (F, *O) ('untied'), optional

        Returns
        -------
        grad_w : ndarray of shape weight_shape
            The bits of :meth:`backward_weight`.
        grad_b : ndarray
            Equal to :meth:`backward_bias` up to the order of the double-precision sums
            (fixed for a geometry, whatever the thread count); an untied bias is summed
            by :meth:`backward_bias` itself.
        """
        if self.bias is None:
            raise ValueError("this plan has no bias (planned with bias=None)")
        given = (x, grad_y)
        g = self._geom
        x = self._array("x", x, self.x_shape)
        grad_y = self._array("grad_y", grad_y, self.y_shape)
        gw = check_out(out, g.w_shape, self.dtype, given + (x, grad_y))
        if self.bias == "untied":
            self._weight_gradient(x, grad_y, gw, self._no_bias)
            return gw, self.backward_bias(grad_y, out=bias_out)
        gb = check_out(bias_out, g.w_shape[:1], self.dtype, given + (x, grad_y, gw))
        self._weight_gradient(x, grad_y, gw, gb)
        return gw, gb

    def _weight_gradient(self, x, grad_y, gw, gb):
        g = self._geom
        if g.x_shape[0] == 0:
            gw[...] = 0
            gb[...] = 0
            return
        x5, w5, y5 = self._args[:3]
        _conv.conv_backward_weight(
            x.reshape(x5), grad_y.reshape(y5),
            gw.reshape(w5), *self._args[3:], self._codes["backward_weight"],
            gb, self.num_threads,
        )

    def backward_bias(self, grad_y, *, out=None):
        """Gradient with respect to the plan's bias (:func:`convkern.conv_backward_bias`).

        Parameters
        ----------
        grad_y : ndarray of shape y_shape
        out : ndarray of shape (F,) ('tied') or (F, *O) ('untied'), optional

        Returns
        -------
        grad_b : ndarray
            Sums over the batch (and the positions) in double precision.
        """
        if self.bias is None:
            raise ValueError("this plan has no bias (planned with bias=None)")
        given = grad_y
        g = self._geom
        grad_y = self._array("grad_y", grad_y, self.y_shape)
        return bias_gradient(grad_y.reshape(g.y_shape), self.bias == "untied", out, given)


def bias_gradient(grad_y, untied, out, given):
    """Fill or allocate the bias gradient of a batched, validated ``grad_y``."""
    n, f = grad_y.shape[:2]
    shape = grad_y.shape[1:] if untied else (f,)
    gb = check_out(out, shape, grad_y.dtype, (given, grad_y))
    if n == 0:
        gb[...] = 0
        return gb
    _conv.conv_backward_bias(grad_y.reshape(n, f, -1), gb.reshape(-1), bool(untied),
                             threads_for(grad_y.size, ELTWISE_GRAIN))
    return gb
