"""cs231n's ``fast_layers`` and convolution ``layer_utils`` functions on convkern's kernels.

Stanford cs231n's assignment 2 imports its fast layers from ``cs231n/fast_layers.py``,
whose ``im2col_cython.pyx`` must be compiled first (and no longer compiles with current
Cython).  This module has the same functions, with the same arguments and return
values, so one import line changes::

    from cs231n.fast_layers import *          # before
    from convkern.compat.cs231n import *      # after

- ``conv_forward_fast(x, w, b, conv_param) -> (out, cache)`` with
  ``conv_param = {'stride': s, 'pad': p}``; ``conv_backward_fast(dout, cache) -> (dx, dw, db)``.
- ``max_pool_forward_fast(x, pool_param) -> (out, cache)`` with ``pool_param`` keys
  ``'pool_height'``, ``'pool_width'`` and ``'stride'`` (no padding; the output is
  ``(H - pool_height) // stride + 1`` by ``(W - pool_width) // stride + 1``);
  ``max_pool_backward_fast(dout, cache) -> dx``.
- The aliases the assignment imports (``conv_forward_im2col``, ``conv_forward_strides``,
  ``max_pool_forward_reshape``, ``max_pool_forward_im2col`` and their backward passes)
  are these same functions.
- From ``layer_utils``: ``conv_relu_forward``/``conv_relu_backward`` and
  ``conv_relu_pool_forward``/``conv_relu_pool_backward``, with the ReLU applied in place
  on the convolution's output.

Shapes are cs231n's: ``x (N, C, H, W)``, ``w (F, C, HH, WW)``, ``b (F,)``.  Arrays may mix
float32 and float64: they are promoted as NumPy would (``numpy.result_type``), so float64
data with float32 parameters gives float64 results and gradients.  Caches are opaque
objects that only the matching backward function accepts.  A tie in a pooling window
sends the gradient to the first maximum (cs231n's ``reshape`` variant splits it).
"""

from collections.abc import Mapping

import numpy as np

from .._validation import float_array, integer
from ..conv import conv_backward_bias, conv_backward_input, conv_backward_weight, conv_forward
from ..pool import maxpool_backward, maxpool_forward

__all__ = [
    "conv_forward_fast",
    "conv_backward_fast",
    "max_pool_forward_fast",
    "max_pool_backward_fast",
    "conv_forward_im2col",
    "conv_backward_im2col",
    "conv_forward_strides",
    "conv_backward_strides",
    "max_pool_forward_reshape",
    "max_pool_backward_reshape",
    "max_pool_forward_im2col",
    "max_pool_backward_im2col",
    "conv_relu_forward",
    "conv_relu_backward",
    "conv_relu_pool_forward",
    "conv_relu_pool_backward",
]


def _params(name, params, keys, minimums):
    """Return the values of a cs231n parameter dict, which must have exactly ``keys``."""
    if not isinstance(params, Mapping):
        raise TypeError(
            f"{name} must be a dict with keys {list(keys)}, got {type(params).__name__}"
        )
    missing = [k for k in keys if k not in params]
    unknown = [k for k in params if k not in keys]
    if missing or unknown:
        raise ValueError(
            f"{name} must have exactly the keys {list(keys)}; "
            f"missing {missing}, unknown {unknown}"
        )
    return tuple(integer(f"{name}[{k!r}]", params[k], m) for k, m in zip(keys, minimums))


def _pool_params(pool_param):
    """``(pool_height, pool_width, stride)`` of a cs231n ``pool_param``."""
    keys = ("pool_height", "pool_width", "stride")
    return _params("pool_param", pool_param, keys, (1, 1, 1))


def _promoted(**arrays):
    """Check the float32/float64 arrays and return them in NumPy's promoted dtype."""
    checked = [float_array(name, a) for name, a in arrays.items()]
    dtype = np.result_type(*checked)
    return [a.astype(dtype, copy=False) for a in checked]


def _ndim(name, a, ndim, layout):
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions {layout}, got shape {a.shape}")


def _dout(dout, shape, *others):
    """``dout`` checked against the forward output's shape, in the promoted dtype."""
    dout = float_array("dout", dout)
    if dout.shape != shape:
        raise ValueError(f"dout must have the forward output's shape {shape}, got {dout.shape}")
    return dout.astype(np.result_type(dout, *others), copy=False)


def _cache(cache, kind, producer):
    if not isinstance(cache, kind):
        raise TypeError(
            f"cache must be the cache returned by {producer}, got {type(cache).__name__}"
        )
    return cache


class _ConvCache:
    """What conv_backward_fast needs: the (promoted) inputs and the geometry."""

    __slots__ = ("x", "w", "stride", "pad", "out_shape")

    def __init__(self, x, w, stride, pad, out_shape):
        self.x, self.w, self.stride, self.pad, self.out_shape = x, w, stride, pad, out_shape


class _PoolCache:
    """What max_pool_backward_fast needs: the argmax indices and the input's shape."""

    __slots__ = ("indices", "x_shape", "dtype")

    def __init__(self, indices, x_shape, dtype):
        self.indices, self.x_shape, self.dtype = indices, x_shape, dtype


class _ConvReluCache:
    """The convolution's cache and the ReLU's output (its mask)."""

    __slots__ = ("conv", "relu_out", "pool")

    def __init__(self, conv, relu_out, pool=None):
        self.conv, self.relu_out, self.pool = conv, relu_out, pool


def conv_forward_fast(x, w, b, conv_param):
    """Forward pass of a convolutional layer (cs231n's ``conv_forward_fast``).

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W)
    w : ndarray of shape (F, C, HH, WW)
    b : ndarray of shape (F,)
    conv_param : dict
        ``'stride'`` (positive int) and ``'pad'`` (zero padding on every side, int >= 0).

    Returns
    -------
    out : ndarray of shape (N, F, H', W')
        ``H' = (H + 2 * pad - HH) // stride + 1``, likewise W'; in the promoted dtype.
    cache : object
        For :func:`conv_backward_fast`.
    """
    stride, pad = _params("conv_param", conv_param, ("stride", "pad"), (1, 0))
    x, w, b = _promoted(x=x, w=w, b=b)
    _ndim("x", x, 4, "(N, C, H, W)")
    _ndim("w", w, 4, "(F, C, HH, WW)")
    if b.shape != (w.shape[0],):
        raise ValueError(f"b must have shape ({w.shape[0]},), got {b.shape}")
    out = conv_forward(x, w, b, stride=stride, padding=pad)
    return out, _ConvCache(x, w, stride, pad, out.shape)


def conv_backward_fast(dout, cache):
    """Backward pass of a convolutional layer (cs231n's ``conv_backward_fast``).

    Parameters
    ----------
    dout : ndarray of shape (N, F, H', W')
        Upstream gradient.
    cache : object
        From :func:`conv_forward_fast`.

    Returns
    -------
    dx : ndarray of shape (N, C, H, W)
    dw : ndarray of shape (F, C, HH, WW)
    db : ndarray of shape (F,)
        In the dtype NumPy promotes ``dout``, ``x`` and ``w`` to.
    """
    c = _cache(cache, _ConvCache, "conv_forward_fast")
    dout = _dout(dout, c.out_shape, c.x, c.w)
    x, w = c.x.astype(dout.dtype, copy=False), c.w.astype(dout.dtype, copy=False)
    geometry = dict(stride=c.stride, padding=c.pad)
    dx = conv_backward_input(dout, w, x.shape, **geometry)
    dw = conv_backward_weight(x, dout, w.shape, **geometry)
    db = conv_backward_bias(dout)
    return dx, dw, db


def max_pool_forward_fast(x, pool_param):
    """Forward pass of a max-pooling layer (cs231n's ``max_pool_forward_fast``).

    Parameters
    ----------
    x : ndarray of shape (N, C, H, W)
    pool_param : dict
        ``'pool_height'``, ``'pool_width'`` and ``'stride'`` (positive ints); no padding.

    Returns
    -------
    out : ndarray of shape (N, C, H', W')
        ``H' = (H - pool_height) // stride + 1``, ``W' = (W - pool_width) // stride + 1``.
    cache : object
        For :func:`max_pool_backward_fast`.
    """
    ph, pw, stride = _pool_params(pool_param)
    x = float_array("x", x)
    _ndim("x", x, 4, "(N, C, H, W)")
    out, indices = maxpool_forward(x, (ph, pw), stride=stride)
    return out, _PoolCache(indices, x.shape, x.dtype)


def max_pool_backward_fast(dout, cache):
    """Backward pass of a max-pooling layer (cs231n's ``max_pool_backward_fast``).

    Parameters
    ----------
    dout : ndarray of shape (N, C, H', W')
    cache : object
        From :func:`max_pool_forward_fast`.

    Returns
    -------
    dx : ndarray of shape (N, C, H, W)
        Each window's gradient goes to its (first) maximum.
    """
    c = _cache(cache, _PoolCache, "max_pool_forward_fast")
    dout = _dout(dout, c.indices.shape, c.dtype)
    return maxpool_backward(dout, c.indices, c.x_shape)


def conv_relu_forward(x, w, b, conv_param):
    """Convolution then ReLU (cs231n's ``layer_utils.conv_relu_forward``).

    Returns
    -------
    out : ndarray of shape (N, F, H', W')
    cache : object
        For :func:`conv_relu_backward`.
    """
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    np.maximum(a, 0, out=a)
    return a, _ConvReluCache(conv_cache, a)


def conv_relu_backward(dout, cache):
    """Backward pass of :func:`conv_relu_forward`; returns ``(dx, dw, db)``."""
    c = _cache(cache, _ConvReluCache, "conv_relu_forward")
    if c.pool is not None:
        raise TypeError("cache must be the cache returned by conv_relu_forward, "
                        "got one from conv_relu_pool_forward")
    dout = _dout(dout, c.relu_out.shape, c.relu_out)
    return conv_backward_fast(np.where(c.relu_out > 0, dout, 0), c.conv)


def conv_relu_pool_forward(x, w, b, conv_param, pool_param):
    """Convolution, ReLU, then max pooling (cs231n's ``layer_utils.conv_relu_pool_forward``).

    Returns
    -------
    out : ndarray of shape (N, F, H'', W'')
    cache : object
        For :func:`conv_relu_pool_backward`.
    """
    _pool_params(pool_param)  # a bad pool_param fails before the convolution runs
    a, conv_cache = conv_forward_fast(x, w, b, conv_param)
    np.maximum(a, 0, out=a)
    out, pool_cache = max_pool_forward_fast(a, pool_param)
    return out, _ConvReluCache(conv_cache, a, pool_cache)


def conv_relu_pool_backward(dout, cache):
    """Backward pass of :func:`conv_relu_pool_forward`; returns ``(dx, dw, db)``."""
    c = _cache(cache, _ConvReluCache, "conv_relu_pool_forward")
    if c.pool is None:
        raise TypeError("cache must be the cache returned by conv_relu_pool_forward, "
                        "got one from conv_relu_forward")
    ds = max_pool_backward_fast(dout, c.pool)
    return conv_backward_fast(np.where(c.relu_out > 0, ds, 0), c.conv)


# The names the assignment's notebooks import: one fast implementation behind all of them.
conv_forward_im2col = conv_forward_strides = conv_forward_fast
conv_backward_im2col = conv_backward_strides = conv_backward_fast
max_pool_forward_reshape = max_pool_forward_im2col = max_pool_forward_fast
max_pool_backward_reshape = max_pool_backward_im2col = max_pool_backward_fast
