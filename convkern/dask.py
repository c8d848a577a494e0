"""Convolution, max pooling and inference on dask arrays (``pip install "convkern[dask]"``).

Each function returns a lazy ``dask.array.Array`` whose blocks call convkern's in-memory
functions; compute it with any dask scheduler (threads, processes, ``dask.distributed``).
This module is not imported by ``import convkern``.

Design
------
Batch chunks map one to one; the channel axis is merged into one chunk.  Along a
spatial axis with kernel size k, dilation dl (window span ``dl * (k - 1) + 1``), stride
s, padding (before, after) and O outputs, the input is padded explicitly (zeros for the
convolution, -inf for pooling) and cropped to the ``(O - 1) * s + span`` positions the
windows read.  It is then rechunked so that every chunk but the last starts on a window
start (a multiple of s) and holds ``c * s`` positions for its c outputs; the output
chunk boundaries are the input's, rounded up to the next window start.  A chunk then
needs the first ``span - s`` positions of its right neighbour (no halo when span <= s):
``dask.array.overlap.overlap``, the halo exchange of ``map_overlap``, adds them, and an
unpadded call on the extended chunk gives exactly its c outputs.  (``map_overlap``
itself only takes arrays, and the weights must be one graph key: see below.)

Every output element is then computed from the same window values by the same
operations as in one in-memory call: convkern's kernels compute each output element by
a sequence of operations that depends only on the channels and the kernel, not on the
tile, the thread or the array's extent, padding taps multiply zeros either way, and a
bias is added after the sum.  So the result equals the in-memory call bit for bit
(``tests/test_dask.py`` checks this on a ``LocalCluster``).

The weights (and ``predict``'s model) are one ``dask.delayed`` key of the graph, so
``dask.distributed`` sends them to each worker once, not with every task.
"""

import copy
import functools
import math

import dask
import dask.array as da
import numpy as np

from ._validation import float_array, int_tuple
from .conv import conv_forward as _conv_forward
from .layers import Layer
from .plan import Geometry
from .pool import maxpool_forward as _maxpool_forward

__all__ = ["conv_forward", "maxpool_forward", "predict"]


def _check_dask_array(name, x):
    if not isinstance(x, da.Array):
        raise TypeError(f"{name} must be a dask.array.Array, got {type(x).__name__}")
    if any(math.isnan(n) for n in x.shape):
        raise ValueError(
            f"{name} has unknown chunk sizes {x.chunks}; call {name}.compute_chunk_sizes() first"
        )


def _axis_plan(chunks, before, stride, span, n_out):
    """Chunk one spatial axis of the padded, cropped input so that chunks start on windows.

    Parameters
    ----------
    chunks : tuple of int
        The axis's chunks in the caller's (unpadded) array.
    before : int
        Padding before the first element.
    stride, span, n_out : int
        Window stride, window span ``dilation * (k - 1) + 1`` and number of outputs.

    Returns
    -------
    in_chunks : tuple of int
        Chunks of the ``(n_out - 1) * stride + span`` padded positions the windows read.
    out_chunks : tuple of int
        Outputs of each chunk (same count).
    halo : int
        Positions each chunk needs from its right neighbour, ``max(span - stride, 0)``.
    """
    halo = max(span - stride, 0)
    # A chunk of c outputs holds c * stride positions; it must cover its neighbour's halo.
    shortest = max(1, -(-halo // stride))
    bounds = [0]
    start = 0
    for size in chunks[:-1]:
        start += size
        first = -(-(start + before) // stride)  # first window starting in the next chunk
        if first - bounds[-1] >= shortest and first < n_out:
            bounds.append(first)
    bounds.append(n_out)
    out_chunks = tuple(b - a for a, b in zip(bounds[:-1], bounds[1:]))
    in_chunks = tuple(c * stride for c in out_chunks[:-1]) + ((out_chunks[-1] - 1) * stride + span,)
    return in_chunks, out_chunks, halo


def _windowed(x, func, args, out_channels, out_dtype, kernel, stride, dilation, pads, out,
              fill):
    """Apply ``func(block, *args)`` (an unpadded windowed call) over a batched dask array.

    ``kernel``, ``stride``, ``dilation`` are d-tuples, ``pads`` a d-tuple of (before,
    after) pairs, ``out`` the d output sizes; ``fill`` is the padding value.
    """
    d = len(kernel)
    x = x.rechunk({1: -1})
    spans = [dl * (k - 1) + 1 for k, dl in zip(kernel, dilation)]
    plans = [
        _axis_plan(x_chunks, before, s, span, o)
        for x_chunks, (before, _), s, span, o in zip(x.chunks[2:], pads, stride, spans, out)
    ]
    lengths = [(o - 1) * s + span for o, s, span in zip(out, stride, spans)]
    widths = [(0, 0), (0, 0)] + [
        (before, max(0, length - before - size))
        for (before, _), length, size in zip(pads, lengths, x.shape[2:])
    ]
    if any(w != (0, 0) for w in widths):
        x = da.pad(x, widths, mode="constant", constant_values=fill)
    x = x[(slice(None), slice(None)) + tuple(slice(0, length) for length in lengths)]
    x = x.rechunk(x.chunks[:2] + tuple(in_chunks for in_chunks, _, _ in plans))
    halos = {2 + i: (0, halo) for i, (_, _, halo) in enumerate(plans)}
    if any(halo for _, halo in halos.values()):
        x = da.overlap.overlap(x, depth=halos, boundary="none")
    out_chunks = (x.chunks[0], (out_channels,)) + tuple(o for _, o, _ in plans)
    return da.map_blocks(
        func, x, *args, chunks=out_chunks, dtype=out_dtype,
        meta=np.empty((0,) * (d + 2), dtype=out_dtype),
    )


def _batched(x, d):
    """Return (x with a batch axis, whether it had one); ``d`` spatial axes expected."""
    if x.ndim == d + 1:
        return x[None], False
    return x, True


def _conv_block(block, weight, bias, stride, dilation, groups):
    return _conv_forward(block, weight, bias, stride=stride, dilation=dilation, groups=groups)


def conv_forward(x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1):
    """Lazy :func:`convkern.conv_forward` of a dask array.

    Parameters
    ----------
    x : dask.array.Array of shape (N, C, *S) or (C, *S)
        float32 or float64, chunked along any axes (the channel axis is merged into one
        chunk).  Chunk sizes must be known.
    weight : ndarray of shape (F, C // groups, *K)
    bias : None or ndarray of shape (F,) or (F, *O)
    stride, padding, dilation, groups
        As :func:`convkern.conv_forward` (every padding form, asymmetric included).

    Returns
    -------
    y : dask.array.Array of shape (N, F, *O) or (F, *O)
        Batch chunks follow x's; spatial chunks follow x's, rounded to window starts.
        Computed, it equals ``convkern.conv_forward`` of the whole array bit for bit.

    Raises
    ------
    TypeError, ValueError
        As :func:`convkern.conv_forward`, raised when the graph is built.
    """
    _check_dask_array("x", x)
    weight = float_array("weight", weight)
    xb, batched = _batched(x, weight.ndim - 2)
    # Validate everything on an empty batch of x's shape and dtype (no data is read).
    _conv_forward(np.empty((0,) + xb.shape[1:], x.dtype), weight, bias, stride=stride,
                  padding=padding, dilation=dilation, groups=groups)
    conv = Geometry(xb.shape, weight.shape, stride, padding, dilation, groups)
    tied = bias is not None and bias.ndim == 1
    block = functools.partial(_conv_block, stride=conv.stride, dilation=conv.dilation,
                              groups=conv.groups)
    weights = (dask.delayed(weight, pure=True),
               dask.delayed(np.ascontiguousarray(bias), pure=True) if tied else None)
    y = _windowed(xb, block, weights, weight.shape[0], x.dtype, weight.shape[2:], conv.stride,
                  conv.dilation, conv.padding, conv.y_shape[2:], 0)
    if bias is not None and not tied:
        # The kernel adds an untied bias after the sum too, so this is the same addition.
        y = y + da.from_array(np.ascontiguousarray(bias), chunks=y.chunks[1:])
    return y if batched else y[0]


def _pool_block(block, kernel, stride, dilation):
    return _maxpool_forward(block, kernel, stride=stride, dilation=dilation)[0]


def maxpool_forward(x, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Lazy max-pooling values (:func:`convkern.maxpool_forward` without the indices).

    Parameters
    ----------
    x : dask.array.Array of shape (N, C, *S) or (C, *S)
        float32 or float64, chunked along any axes (the channel axis is merged into one
        chunk).  An unbatched input needs a tuple ``kernel_size``.
    kernel_size, stride, padding, dilation, ceil_mode
        As :func:`convkern.maxpool_forward`.

    Returns
    -------
    y : dask.array.Array of shape (N, C, *O) or (C, *O)
        Computed, it equals the values of ``convkern.maxpool_forward`` bit for bit.
    """
    _check_dask_array("x", x)
    d = len(kernel_size) if isinstance(kernel_size, (tuple, list)) else x.ndim - 2
    xb, batched = _batched(x, d)
    # Validate everything (and get the output size) on an empty batch of x's shape.
    empty, _ = _maxpool_forward(np.empty((0,) + xb.shape[1:], x.dtype), kernel_size,
                                stride=stride, padding=padding, dilation=dilation,
                                ceil_mode=ceil_mode)
    kernel = int_tuple("kernel_size", kernel_size, d, 1)
    stride = kernel if stride is None else int_tuple("stride", stride, d, 1)
    dilation = int_tuple("dilation", dilation, d, 1)
    pads = tuple((p, p) for p in int_tuple("padding", padding, d, 0))
    block = functools.partial(_pool_block, kernel=kernel, stride=stride, dilation=dilation)
    y = _windowed(xb, block, (), xb.shape[1], x.dtype, kernel, stride, dilation, pads,
                  empty.shape[2:], -np.inf)
    return y if batched else y[0]


def _predict_block(block, model):
    # a layer owns the array it returns and overwrites it on its next call of that shape
    return model(block).copy()


def predict(model, x):
    """Apply a convkern model to every batch chunk of a dask array (eval mode).

    Parameters
    ----------
    model : convkern.Layer
        Any layer or ``Sequential``.  An eval-mode copy is made when the graph is built
        and shipped as one graph key, i.e. once to each worker; later changes to
        ``model`` do not affect the result.
    x : dask.array.Array of shape (N, *input)
        Chunked along the batch axis (other axes are merged into one chunk).

    Returns
    -------
    y : dask.array.Array of shape (N, *output)
        ``model(x)``, chunked as x along the batch axis, with the same bits as one
        in-memory call: every layer computes a sample's outputs by the same sums
        whatever the batch.

    Raises
    ------
    TypeError, ValueError
        If the model rejects one sample of x's shape and dtype (checked when the graph
        is built).
    """
    if not isinstance(model, Layer):
        raise TypeError(f"model must be a convkern Layer, got {type(model).__name__}")
    _check_dask_array("x", x)
    if x.ndim < 2:
        raise ValueError(f"x must have a batch axis and at least one more, got shape {x.shape}")
    model = copy.deepcopy(model).eval()
    sample = model(np.zeros((1,) + x.shape[1:], x.dtype))  # the output's shape and dtype
    inputs = tuple(range(x.ndim))
    outputs = (0,) + tuple(range(x.ndim, x.ndim + sample.ndim - 1))
    return da.blockwise(
        _predict_block, outputs,
        x.rechunk({axis: -1 for axis in inputs[1:]}), inputs,
        dask.delayed(model, traverse=False), None,
        new_axes=dict(zip(outputs[1:], sample.shape[1:])),
        concatenate=True, dtype=sample.dtype,
        meta=np.empty((0,) * sample.ndim, dtype=sample.dtype),
    )
