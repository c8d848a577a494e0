"""Max pooling with PyTorch's argmax indices, and its backward pass.

``maxpool_forward`` equals ``torch.nn.functional.max_pool{d}d(..., return_indices=True)``:
implicit ``-inf`` padding, indices flattened within each ``(n, c)`` plane of the
unpadded input, the first maximum in scan order on ties, and a NaN always wins.
"""

import numpy as np

from . import _pool
from ._lift import lift_params, lift_shape
from ._work import POOL_GRAIN, threads_for
from ._validation import (
    boolean,
    check_extent,
    check_out,
    check_size,
    float_array,
    index_array,
    int_tuple,
    integer,
    nonzero_dims,
    padding_pairs,
    shape_tuple,
)

__all__ = ["maxpool_forward", "maxpool_backward"]


def _pool_padding(padding, spatial, kernel, stride, dilation):
    """Return the pooling padding as ((before, after), ...), checked against the kernel.

    An int (or an int entry of a tuple) pads both sides and may be at most
    ``kernel_size // 2``, as in PyTorch.  A ``(before, after)`` pair may use each side up
    to the dilated kernel extent minus one.  The strings are as for convolution ('same'
    and 'full' stay within that bound by construction).
    """
    pairs = padding_pairs(padding, spatial, kernel, stride, dilation)
    if isinstance(padding, str):
        return pairs
    entries = padding if isinstance(padding, (tuple, list)) else (padding,) * len(pairs)
    for i, (entry, (lo, hi), k, dl) in enumerate(zip(entries, pairs, kernel, dilation)):
        span = dl * (k - 1) + 1
        if not isinstance(entry, (tuple, list)) and lo > k // 2:
            raise ValueError(
                f"padding {lo} along spatial axis {i} is over half the kernel size {k} "
                "(a (before, after) pair may go up to the dilated kernel extent minus one)"
            )
        if lo >= span or hi >= span:
            raise ValueError(
                f"padding {(lo, hi)} along spatial axis {i} must be smaller than the dilated "
                f"kernel extent {span} on each side (kernel_size {k}, dilation {dl})"
            )
    return pairs


def _pool_output_size(axis, s, k, st, pads, dl, ceil_mode):
    """Output length of one axis, as PyTorch's pooling_output_shape with (before, after) pads."""
    lo, hi = pads
    span = dl * (k - 1) + 1
    check_extent("padding", s + lo + hi, axis)
    check_extent("dilation", span, axis)
    if s + lo + hi < span:
        raise ValueError(
            f"kernel_size {k} (dilation {dl}, span {span}) is larger than the padded input "
            f"({s} + {lo} + {hi}) along spatial axis {axis}"
        )
    num = s + lo + hi - span + (st - 1 if ceil_mode else 0)
    out = num // st + 1
    # with ceil_mode the last window must start inside the input or its left padding
    if ceil_mode and (out - 1) * st >= s + lo:
        out -= 1
    if dl > 1:
        _check_windows_reach_input(axis, s, k, st, lo, dl, out)
    return out


def _check_windows_reach_input(axis, s, k, st, p, dl, out):
    """Raise ValueError if a dilated window has all its taps in the padding.

    PyTorch returns -inf and an index outside the plane for such a window (which no
    backward can use).  Window o reads a + j * dl (j < k) with a = o * st - p, p the
    padding before.  A window with a >= 0 reads a itself (windows start before s, since
    the padding after is below the span), so only windows with a < 0 can be empty: their
    first tap that is not left padding is a mod dl (within the k taps, since p is below
    the span dl * (k - 1) + 1), empty when it is >= s.  That needs s < dl, and the residues
    repeat within dl windows, so the loop is short and independent of the sizes.
    """
    if s >= dl:
        return
    for o in range(min(out, -(-p // st), dl)):
        if (o * st - p) % dl >= s:
            raise ValueError(
                f"window {o} along spatial axis {axis} covers only padding (kernel_size {k}, "
                f"dilation {dl}, padding {p}); reduce padding or dilation"
            )


def maxpool_forward(x, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False,
                    out=None):
    """Max-pool ``x`` and return the values and the argmax of every window.

    Parameters
    ----------
    x : ndarray of shape (N, C, *S) or (C, *S)
        float32 or float64.
    kernel_size : int or tuple of d ints
        Window size; an int means ``d = x.ndim - 2`` (so an unbatched input needs a tuple).
    stride : None, int or tuple of d ints
        None means ``kernel_size``.
    padding : int, tuple of d ints, tuple of d (before, after) pairs, 'valid', 'same' or 'full'
        Implicit ``-inf`` padding.  An int pads both sides by at most
        ``kernel_size // 2`` (PyTorch's rule); a ``(before, after)`` pair pads each side by
        less than the dilated kernel extent ``dilation * (kernel_size - 1) + 1``.
        'same' gives ``ceil(S / stride)`` outputs with the odd padding after (ONNX's
        ``SAME_UPPER``), 'valid' none, 'full' ``dilation * (kernel_size - 1)`` per side.
    dilation : int or tuple of d ints
    ceil_mode : bool
        Round the output size up, as PyTorch (the last window must start inside the
        input or its left padding).
    out : (ndarray, ndarray), optional
        Preallocated C-contiguous ``(y, indices)`` to fill, of the shapes and dtypes
        returned.

    Returns
    -------
    y : ndarray of shape (N, C, *O) or (C, *O)
        Window maxima, dtype of ``x``.
    indices : ndarray of int64, same shape as y
        Flat position of each maximum within its ``(n, c)`` plane of the unpadded input.
    """
    given, out_pair = x, out
    x = float_array("x", x)
    if isinstance(kernel_size, (tuple, list)):
        d = len(kernel_size)
        if d not in (1, 2, 3):
            raise ValueError(f"kernel_size must have 1, 2 or 3 entries, got {d}")
    else:
        d = x.ndim - 2
        if d not in (1, 2, 3):
            raise ValueError(
                f"x must have 3, 4 or 5 dimensions (N, C, *spatial) for an int kernel_size, got {x.ndim}"
            )
    if x.ndim not in (d + 1, d + 2):
        raise ValueError(
            f"x must have {d + 2} dimensions (N, C, *spatial) or {d + 1} (C, *spatial) "
            f"for a {d}-D kernel_size, got {x.ndim}"
        )
    ceil_mode = boolean("ceil_mode", ceil_mode)
    batched = x.ndim == d + 2
    xb = x if batched else x[None]
    nonzero_dims("x", xb.shape[1:], "channel or spatial")
    kernel = int_tuple("kernel_size", kernel_size, d, 1)
    stride = kernel if stride is None else int_tuple("stride", stride, d, 1)
    dilation = int_tuple("dilation", dilation, d, 1)
    pad = _pool_padding(padding, xb.shape[2:], kernel, stride, dilation)
    out = tuple(
        _pool_output_size(i, s, k, st, p, dl, bool(ceil_mode))
        for i, (s, k, st, p, dl) in enumerate(zip(xb.shape[2:], kernel, stride, pad, dilation))
    )
    y_shape = xb.shape[:2] + out
    check_size("x", xb.shape)
    check_size("output", y_shape)
    if out_pair is not None and not (isinstance(out_pair, tuple) and len(out_pair) == 2):
        raise TypeError(f"out must be a (y, indices) pair of arrays, got {out_pair!r}")
    out_y, out_indices = (None, None) if out_pair is None else out_pair
    user_shape = y_shape if batched else y_shape[1:]
    y = check_out(out_y, user_shape, x.dtype, (given, x))
    indices = check_out(out_indices, user_shape, np.dtype(np.int64), (given, x, y))
    if y_shape[0] > 0:
        _pool.maxpool_forward(
            xb.reshape(lift_shape(xb.shape, d)),
            y.reshape(lift_shape(y_shape, d)),
            indices.reshape(lift_shape(y_shape, d)),
            lift_params(kernel, d, 1),
            lift_params(stride, d, 1),
            lift_params((lo for lo, _ in pad), d, 0),
            lift_params(dilation, d, 1),
            threads_for(y.size * int(np.prod(kernel, dtype=object)), POOL_GRAIN),
        )
    return y, indices


def maxpool_backward(grad_y, indices, x_shape, *, spatial_dims=None, out=None):
    """Scatter ``grad_y`` back to the argmax positions of :func:`maxpool_forward`.

    Parameters
    ----------
    grad_y : ndarray of shape (N, C, *O) or (C, *O)
        Gradient of the loss with respect to the pooled output.
    indices : ndarray of int64, same shape as grad_y
        The indices returned by :func:`maxpool_forward`.
    x_shape : tuple of int
        Shape of the forward input, ``(N, C, *S)`` or ``(C, *S)``.
    spatial_dims : int, optional
        Number of spatial axes d; default ``len(x_shape) - 2`` (give it for an unbatched
        call).
    out : ndarray of shape x_shape, optional

    Returns
    -------
    grad_x : ndarray of shape x_shape
        Windows that overlap add their gradients.

    Raises
    ------
    ValueError
        If an index lies outside its plane (nothing is written out of bounds).
    """
    given = (grad_y, indices)
    grad_y = float_array("grad_y", grad_y)
    indices = index_array("indices", indices)
    x_shape = shape_tuple("x_shape", x_shape, (2, 3, 4, 5))
    d = len(x_shape) - 2 if spatial_dims is None else integer("spatial_dims", spatial_dims, 1)
    if d not in (1, 2, 3) or len(x_shape) not in (d + 1, d + 2):
        raise ValueError(f"x_shape {x_shape} does not have {'d' if spatial_dims is None else d} "
                         "spatial axes after (N, C) or (C,), with d in 1, 2, 3")
    lead_axes = len(x_shape) - d
    if grad_y.ndim != len(x_shape):
        raise ValueError(f"grad_y must have {len(x_shape)} dimensions like x_shape, got {grad_y.ndim}")
    if grad_y.shape[:lead_axes] != x_shape[:lead_axes]:
        raise ValueError(
            f"grad_y has leading (batch, channel) shape {grad_y.shape[:lead_axes]} but x_shape "
            f"has {x_shape[:lead_axes]}"
        )
    if indices.shape != grad_y.shape:
        raise ValueError(f"indices must have the shape of grad_y {grad_y.shape}, got {indices.shape}")
    nonzero_dims("x_shape", x_shape[lead_axes - 1:], "channel or spatial")
    check_size("x_shape", x_shape)
    gx = check_out(out, x_shape, grad_y.dtype, given + (grad_y, indices))
    planes = int(np.prod(x_shape[:lead_axes], dtype=object))
    if planes == 0:
        return gx
    plane = int(np.prod(x_shape[lead_axes:], dtype=object))
    bad = _pool.maxpool_backward(
        grad_y.reshape(planes, -1), indices.reshape(planes, -1), gx.reshape(planes, plane),
        threads_for(gx.size, POOL_GRAIN),
    )
    if bad:
        raise ValueError(f"indices has {bad} entries outside the input plane [0, {plane})")
    return gx
