"""Max pooling with PyTorch's argmax indices, and its backward pass.

``maxpool_forward`` equals ``torch.nn.functional.max_pool{d}d(..., return_indices=True)``:
implicit ``-inf`` padding, indices flattened within each ``(n, c)`` plane of the
unpadded input, the first maximum in scan order on ties, and a NaN always wins.  It is a
cached use of :func:`convkern.pool_plan`: a repeated call neither validates the
parameters nor plans again.
"""

import numpy as np

from ._plan_cache import PlanCache, frozen
from ._validation import (
    check_out,
    check_size,
    float_array,
    index_array,
    integer,
    nonzero_dims,
    shape_tuple,
)
from .pool_plans import PoolPlan, scatter_to_argmax

__all__ = ["maxpool_forward", "maxpool_backward"]

_plans = PlanCache()
_scatters = PlanCache()  # maxpool_backward: validated shapes


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
    given = x
    x = float_array("x", x)
    key = (x.shape, x.dtype, frozen(kernel_size), frozen(stride), frozen(padding),
           frozen(dilation), frozen(ceil_mode))
    plan = _plans.get(key, lambda: PoolPlan(
        x.shape, kernel_size, dtype=x.dtype, stride=stride, padding=padding,
        dilation=dilation, ceil_mode=ceil_mode))
    return plan._forward(given, x, out)


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
    key = (grad_y.shape, indices.shape, frozen(x_shape), frozen(spatial_dims))
    x_shape, planes, plane = _scatters.get(key, lambda: _scatter_geometry(
        grad_y.shape, indices.shape, x_shape, spatial_dims))
    gx = check_out(out, x_shape, grad_y.dtype, given + (grad_y, indices))
    return scatter_to_argmax(grad_y, indices, planes, plane, gx)


def _scatter_geometry(grad_y_shape, indices_shape, x_shape, spatial_dims):
    """Validate maxpool_backward's shapes; return ``(x_shape, planes, plane)``."""
    x_shape = shape_tuple("x_shape", x_shape, (2, 3, 4, 5))
    d = len(x_shape) - 2 if spatial_dims is None else integer("spatial_dims", spatial_dims, 1)
    if d not in (1, 2, 3) or len(x_shape) not in (d + 1, d + 2):
        raise ValueError(f"x_shape {x_shape} does not have {'d' if spatial_dims is None else d} "
                         "spatial axes after (N, C) or (C,), with d in 1, 2, 3")
    lead_axes = len(x_shape) - d
    if len(grad_y_shape) != len(x_shape):
        raise ValueError(f"grad_y must have {len(x_shape)} dimensions like x_shape, "
                         f"got {len(grad_y_shape)}")
    if grad_y_shape[:lead_axes] != x_shape[:lead_axes]:
        raise ValueError(
            f"grad_y has leading (batch, channel) shape {grad_y_shape[:lead_axes]} but x_shape "
            f"has {x_shape[:lead_axes]}"
        )
    if indices_shape != grad_y_shape:
        raise ValueError(f"indices must have the shape of grad_y {grad_y_shape}, "
                         f"got {indices_shape}")
    nonzero_dims("x_shape", x_shape[lead_axes - 1:], "channel or spatial")
    check_size("x_shape", x_shape)
    planes = int(np.prod(x_shape[:lead_axes], dtype=object))
    plane = int(np.prod(x_shape[lead_axes:], dtype=object))
    return x_shape, planes, plane
