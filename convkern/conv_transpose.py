"""Transposed convolution (``torch.nn.functional.conv_transpose{d}d``) on the conv kernels.

A transposed convolution of ``x (N, C_in, *S)`` with ``weight (C_in, F // groups, *K)`` is
the input gradient of the ordinary convolution that maps ``(N, F, *O)`` to
``(N, C_in, *S)`` with the same weight, stride, padding, dilation and groups, where

    O = (S - 1) * stride - 2 * padding + dilation * (K - 1) + output_padding + 1.

That convolution has ``S + output_padding // stride`` outputs per axis: exactly S unless
``output_padding >= stride`` (possible only when ``dilation > stride``), where x is
extended with zeros at the end (the extra outputs take no part in the result).  Its
gradients come from the same convolution: ``grad_x = conv_forward(grad_y, weight, ...)``
(its first S entries per axis) and ``grad_w = conv_backward_weight(grad_y, x, ...)``.
"""

import numpy as np

from ._validation import (
    check_out,
    check_size,
    float_array,
    int_tuple,
    integer,
    nonzero_dims,
    same_dtype,
)
from .conv import conv_backward_input, conv_backward_weight, conv_forward

__all__ = ["conv_transpose"]


class _Transposed:
    """A validated transposed-convolution geometry.

    Attributes
    ----------
    d : int
        Number of spatial axes.
    batched : bool
        False when the caller gave an unbatched ``(C_in, *S)`` input.
    conv : dict
        ``stride``, ``padding``, ``dilation`` and ``groups`` of the equivalent convolution.
    x_shape, y_shape : tuple of int
        ``(N, C_in, *S)`` and ``(N, F, *O)``, batched.
    extended : tuple of int
        ``(N, C_in, *S')`` with ``S' = S + output_padding // stride``: the output shape of
        the equivalent convolution.
    """

    def __init__(self, x_shape, w_shape, stride, padding, output_padding, dilation, groups):
        if len(w_shape) not in (3, 4, 5):
            raise ValueError(
                f"weight must have 3, 4 or 5 dimensions (C_in, F // groups, *kernel), "
                f"got {len(w_shape)}"
            )
        d = len(w_shape) - 2
        if len(x_shape) not in (d + 1, d + 2):
            raise ValueError(
                f"x must have {d + 2} dimensions (N, C_in, *spatial) or {d + 1} (C_in, *spatial) "
                f"for a {d}-D weight, got {len(x_shape)}"
            )
        self.d = d
        self.batched = len(x_shape) == d + 2
        x_shape = tuple(x_shape) if self.batched else (1,) + tuple(x_shape)
        stride = int_tuple("stride", stride, d, 1)
        dilation = int_tuple("dilation", dilation, d, 1)
        padding = int_tuple("padding", padding, d, 0)
        output_padding = int_tuple("output_padding", output_padding, d, 0)
        groups = integer("groups", groups, 1)
        nonzero_dims("weight", w_shape, "channel or kernel")
        nonzero_dims("x", x_shape[1:], "channel or spatial")
        c_in, f_per_group = w_shape[:2]
        if c_in % groups:
            raise ValueError(f"groups={groups} does not divide the {c_in} input channels of weight")
        if x_shape[1] != c_in:
            raise ValueError(
                f"x has {x_shape[1]} channels but weight expects {c_in} (weight.shape[0])"
            )
        out, extended = [], []
        for i, (s, k, st, p, op, dl) in enumerate(
            zip(x_shape[2:], w_shape[2:], stride, padding, output_padding, dilation)
        ):
            if op >= max(st, dl):
                raise ValueError(
                    f"output_padding {op} along spatial axis {i} must be smaller than either "
                    f"stride {st} or dilation {dl}"
                )
            o = (s - 1) * st - 2 * p + dl * (k - 1) + op + 1
            if o < 1:
                raise ValueError(
                    f"the output would have size {o} along spatial axis {i}: padding {p} is "
                    f"too large for input size {s}, kernel size {k}, stride {st}, dilation {dl}"
                )
            out.append(o)
            extended.append(s + op // st)
        self.conv = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
        self.x_shape = x_shape
        self.y_shape = (x_shape[0], f_per_group * groups) + tuple(out)
        self.extended = x_shape[:2] + tuple(extended)
        check_size("output", self.y_shape)
        check_size("x extended by output_padding // stride", self.extended)

    def user_shape(self, shape):
        """Drop the batch axis again for an unbatched call."""
        return shape if self.batched else shape[1:]

    def extend(self, x):
        """``x`` (batched) with zeros appended up to ``extended``; ``x`` itself if no axis grows."""
        if self.extended == x.shape:
            return x
        out = np.zeros(self.extended, dtype=x.dtype)
        out[tuple(slice(0, n) for n in x.shape)] = x
        return out

    def crop(self, a):
        """The first ``x_shape`` entries of a batched ``extended``-shaped array."""
        if a.shape == self.x_shape:
            return a
        return np.ascontiguousarray(a[tuple(slice(0, n) for n in self.x_shape)])


def conv_transpose(x, weight, bias=None, *, stride=1, padding=0, output_padding=0, dilation=1,
                   groups=1, out=None):
    """Transposed convolution, equal to ``torch.nn.functional.conv_transpose{d}d``.

    Parameters
    ----------
    x : ndarray of shape (N, C_in, *S) or (C_in, *S)
        float32 or float64; ``S`` has 1, 2 or 3 axes.
    weight : ndarray of shape (C_in, F // groups, *K)
        PyTorch's ``ConvTranspose{d}d`` layout, same dtype as ``x``.
    bias : None or ndarray of shape (F,)
    stride, dilation : int or tuple of d ints
        Positive.
    padding : int or tuple of d ints
        As in PyTorch: the output loses ``padding`` entries at both ends of every axis.
    output_padding : int or tuple of d ints
        Extra entries at the end of every axis, each smaller than ``stride`` or
        ``dilation`` (PyTorch's rule).
    groups : int
        Divides C_in (and F = ``weight.shape[1] * groups``).
    out : ndarray of shape (N, F, *O), optional
        Preallocated C-contiguous output to fill.

    Returns
    -------
    y : ndarray of shape (N, F, *O) or (F, *O)
        ``O = (S - 1) * stride - 2 * padding + dilation * (K - 1) + output_padding + 1``.
    """
    given = (x, weight, bias)
    x = float_array("x", x)
    weight = float_array("weight", weight)
    bias = None if bias is None else float_array("bias", bias)
    same_dtype(x=x, weight=weight, bias=bias)
    t = _Transposed(x.shape, weight.shape, stride, padding, output_padding, dilation, groups)
    F = t.y_shape[1]
    if bias is not None and bias.shape != (F,):
        raise ValueError(f"bias must have shape ({F},), got {bias.shape}")
    y = check_out(out, t.user_shape(t.y_shape), x.dtype, given + (x, weight, bias))
    yb = y if t.batched else y[None]
    conv_backward_input(t.extend(x.reshape(t.x_shape)), weight, t.y_shape, out=yb, **t.conv)
    if bias is not None:
        yb += bias.reshape((F,) + (1,) * t.d)
    return y


def _backward_input(grad_y, weight, x_shape, *, stride, padding, output_padding, dilation,
                    groups):
    """Gradient of :func:`conv_transpose` with respect to ``x``: conv_forward(grad_y, weight)."""
    t = _Transposed(x_shape, weight.shape, stride, padding, output_padding, dilation, groups)
    gy = grad_y if t.batched else grad_y[None]
    return t.user_shape(t.crop(conv_forward(gy, weight, **t.conv)))


def _backward_weight(x, grad_y, weight_shape, *, stride, padding, output_padding, dilation,
                     groups):
    """Gradient of :func:`conv_transpose` with respect to ``weight``:
    conv_backward_weight(grad_y, x) (the convolution's input is grad_y, its output x)."""
    t = _Transposed(x.shape, weight_shape, stride, padding, output_padding, dilation, groups)
    xb = x if t.batched else x[None]
    gy = grad_y if t.batched else grad_y[None]
    return conv_backward_weight(gy, t.extend(xb), weight_shape, **t.conv)
