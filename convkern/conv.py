"""Convolution: forward cross-correlation and its three gradients.

Shapes follow PyTorch: ``x`` is ``(N, C, *S)`` (or unbatched ``(C, *S)``), ``weight``
is ``(F, C // groups, *K)`` and the output is ``(N, F, *O)``, with ``d = len(K)`` in
1, 2, 3 spatial axes.  ``conv_forward`` equals ``torch.nn.functional.conv{d}d`` of the
zero-padded input (plus the untied bias where one is given).
"""

import numpy as np

from . import _conv
from ._lift import lift_params, lift_shape
from ._work import CONV_GRAIN, POOL_GRAIN, threads_for
from ._validation import (
    check_out,
    check_size,
    conv_output_shape,
    float_array,
    int_tuple,
    integer,
    nonzero_dims,
    padding_pairs,
    same_dtype,
    shape_tuple,
)

__all__ = [
    "conv_forward",
    "conv_backward_input",
    "conv_backward_weight",
    "conv_backward_bias",
]


class _Conv:
    """A validated convolution geometry.

    Attributes
    ----------
    d : int
        Number of spatial axes.
    x_shape, w_shape, y_shape : tuple of int
        Batched shapes ``(N, C, *S)``, ``(F, C // groups, *K)``, ``(N, F, *O)``.
    batched : bool
        False when the caller gave an unbatched ``(C, *S)`` input.
    """

    def __init__(self, x_shape, w_shape, stride, padding, dilation, groups, x_name="x"):
        d = _spatial_dims(len(w_shape))
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

    def as5d(self, a, batched_shape):
        """View a batched array as (N, C, D, H, W) (or (F, C, KD, KH, KW))."""
        return a.reshape(lift_shape(batched_shape, self.d))

    def threads(self):
        """Threads worth using for one pass: 2 * N * F * C/groups * prod(K) * prod(O) flops."""
        flops = 2 * self.y_shape[0] * self.w_shape[0] * self.w_shape[1]
        for n in self.w_shape[2:] + self.y_shape[2:]:
            flops *= n
        return threads_for(flops, CONV_GRAIN)

    def params(self):
        """Stride, padding-before and dilation as 3-tuples for the kernels."""
        return (
            lift_params(self.stride, self.d, 1),
            lift_params((lo for lo, _ in self.padding), self.d, 0),
            lift_params(self.dilation, self.d, 1),
        )


def _spatial_dims(weight_ndim):
    """Return d = weight.ndim - 2, which must be 1, 2 or 3."""
    if weight_ndim not in (3, 4, 5):
        raise ValueError(
            f"weight must have 3, 4 or 5 dimensions (F, C // groups, *kernel), got {weight_ndim}"
        )
    return weight_ndim - 2


def _check_grad_y(grad_y, conv):
    expected = conv.user_shape(conv.y_shape)
    if grad_y.shape != expected:
        raise ValueError(f"grad_y must have shape {expected} (the forward output), got {grad_y.shape}")


def conv_forward(x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1, out=None):
    """Cross-correlate ``x`` with ``weight`` (a PyTorch ``conv{d}d``).

    Parameters
    ----------
    x : ndarray of shape (N, C, *S) or (C, *S)
        Input, float32 or float64; ``S`` has 1, 2 or 3 axes.
    weight : ndarray of shape (F, C // groups, *K)
        Filters, same dtype as ``x``.
    bias : None or ndarray of shape (F,) or (F, *O)
        One bias per filter, or an untied bias per filter and output position.
    stride, dilation : int or tuple of d ints
        Positive.
    padding : int, tuple of d ints, tuple of d (before, after) pairs, 'valid', 'same' or 'full'
        Zero padding.  'same' gives ``ceil(S / stride)`` outputs (the odd padding goes
        after); 'full' pads ``(K - 1) * dilation`` on both sides.
    groups : int
        Divides both C and F.
    out : ndarray of shape (N, F, *O), optional
        Preallocated C-contiguous output to fill.

    Returns
    -------
    y : ndarray of shape (N, F, *O) or (F, *O)
        ``O = floor((S + before + after - dilation * (K - 1) - 1) / stride) + 1``.
    """
    given = (x, weight, bias)  # out may not overlap these, nor their contiguous copies
    weight = float_array("weight", weight)
    x = float_array("x", x)
    bias = None if bias is None else float_array("bias", bias)
    same_dtype(x=x, weight=weight, bias=bias)
    conv = _Conv(x.shape, weight.shape, stride, padding, dilation, groups)
    F = conv.w_shape[0]
    mode = 0
    if bias is not None:
        if bias.shape == (F,):
            mode = 1
        elif bias.shape == conv.y_shape[1:]:
            mode = 2
        else:
            raise ValueError(
                f"bias must have shape ({F},) or {conv.y_shape[1:]} (untied), got {bias.shape}"
            )
    y = check_out(out, conv.user_shape(conv.y_shape), x.dtype, given + (x, weight, bias))
    if conv.y_shape[0] == 0:
        return y
    flat_bias = bias.reshape(-1) if bias is not None else np.empty(0, dtype=x.dtype)
    _conv.conv_forward(
        conv.as5d(x, conv.x_shape),
        conv.as5d(weight, conv.w_shape),
        flat_bias,
        mode,
        conv.as5d(y, conv.y_shape),
        conv.groups,
        *conv.params(),
        conv.threads(),
    )
    return y


def conv_backward_input(grad_y, weight, x_shape, *, stride=1, padding=0, dilation=1, groups=1,
                        out=None):
    """Gradient of :func:`conv_forward` with respect to its input.

    Parameters
    ----------
    grad_y : ndarray of shape (N, F, *O) or (F, *O)
        Gradient of the loss with respect to the forward output.
    weight : ndarray of shape (F, C // groups, *K)
    x_shape : tuple of int
        Shape of the forward input, ``(N, C, *S)`` or ``(C, *S)``.
    stride, padding, dilation, groups
        As given to :func:`conv_forward`.
    out : ndarray of shape x_shape, optional

    Returns
    -------
    grad_x : ndarray of shape x_shape
        Input positions no output window reaches get zero.
    """
    given = (grad_y, weight)
    weight = float_array("weight", weight)
    grad_y = float_array("grad_y", grad_y)
    same_dtype(grad_y=grad_y, weight=weight)
    d = _spatial_dims(weight.ndim)
    x_shape = shape_tuple("x_shape", x_shape, (d + 1, d + 2))
    conv = _Conv(x_shape, weight.shape, stride, padding, dilation, groups, x_name="x_shape")
    _check_grad_y(grad_y, conv)
    gx = check_out(out, conv.user_shape(conv.x_shape), weight.dtype, given + (grad_y, weight))
    if conv.x_shape[0] == 0:
        return gx
    _conv.conv_backward_input(
        conv.as5d(grad_y, conv.y_shape),
        conv.as5d(weight, conv.w_shape),
        conv.as5d(gx, conv.x_shape),
        conv.groups,
        *conv.params(),
        conv.threads(),
    )
    return gx


def conv_backward_weight(x, grad_y, weight_shape, *, stride=1, padding=0, dilation=1, groups=1,
                         out=None):
    """Gradient of :func:`conv_forward` with respect to its weight.

    Parameters
    ----------
    x : ndarray of shape (N, C, *S) or (C, *S)
        The forward input.
    grad_y : ndarray of shape (N, F, *O) or (F, *O)
        Gradient of the loss with respect to the forward output.
    weight_shape : tuple of int
        ``(F, C // groups, *K)``.
    stride, padding, dilation, groups
        As given to :func:`conv_forward`.
    out : ndarray of shape weight_shape, optional

    Returns
    -------
    grad_w : ndarray of shape weight_shape
        Summed over the batch in a fixed order (the same bits for any thread count).
    """
    given = (x, grad_y)
    x = float_array("x", x)
    grad_y = float_array("grad_y", grad_y)
    same_dtype(x=x, grad_y=grad_y)
    weight_shape = shape_tuple("weight_shape", weight_shape, (3, 4, 5))
    conv = _Conv(x.shape, weight_shape, stride, padding, dilation, groups)
    _check_grad_y(grad_y, conv)
    gw = check_out(out, conv.w_shape, x.dtype, given + (x, grad_y))
    if conv.x_shape[0] == 0:
        gw[...] = 0
        return gw
    _conv.conv_backward_weight(
        conv.as5d(x, conv.x_shape),
        conv.as5d(grad_y, conv.y_shape),
        conv.as5d(gw, conv.w_shape),
        conv.groups,
        *conv.params(),
        conv.threads(),
    )
    return gw


def conv_backward_bias(grad_y, *, untied=False, out=None):
    """Gradient of :func:`conv_forward` with respect to its bias.

    Parameters
    ----------
    grad_y : ndarray of shape (N, F, *O)
        Batched gradient of the loss with respect to the forward output (1 to 3
        spatial axes); add a leading axis for an unbatched call.
    untied : bool
        False: one bias per filter; True: one per filter and output position.
    out : ndarray of shape (F,) or (F, *O), optional

    Returns
    -------
    grad_b : ndarray of shape (F,) or (F, *O)
        Sums over the batch (and the positions) in double precision.
    """
    given = grad_y
    grad_y = float_array("grad_y", grad_y)
    if not isinstance(untied, (bool, np.bool_)):
        raise TypeError(f"untied must be a bool, got {type(untied).__name__}")
    if grad_y.ndim not in (3, 4, 5):
        raise ValueError(f"grad_y must have 3, 4 or 5 dimensions (N, F, *O), got {grad_y.ndim}")
    nonzero_dims("grad_y", grad_y.shape[1:], "filter or spatial")
    n, f = grad_y.shape[:2]
    shape = grad_y.shape[1:] if untied else (f,)
    gb = check_out(out, shape, grad_y.dtype, (given, grad_y))
    if n == 0:
        gb[...] = 0
        return gb
    _conv.conv_backward_bias(grad_y.reshape(n, f, -1), gb.reshape(-1), bool(untied),
                             threads_for(grad_y.size, POOL_GRAIN))
    return gb
