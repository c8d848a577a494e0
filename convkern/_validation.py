"""Argument checking shared by the public functions.

Everything a compiled kernel relies on is checked here, in Python integers, before a
kernel runs: the kernels have bounds checks off.  Kinds of argument that are wrong
raise TypeError; wrong values raise ValueError.  Every message names the argument.
"""

import math
import operator

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# Largest element count we accept for any array (keeps byte offsets far from overflow).
MAX_ELEMENTS = 2**62 // 8
# Largest stride, padding, dilation, kernel size or padded extent: every intermediate of
# the kernels' index arithmetic then stays below 2**63.
MAX_EXTENT = 2**62


def float_array(name, a):
    """Return ``a`` as a C-contiguous float32/float64 ndarray (a copy only if needed).

    Parameters
    ----------
    name : str
        The argument's name, for messages.
    a : ndarray
        A float32 or float64 array in native byte order, any memory layout.
    """
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:   # (native float32 and float64 compare equal here)
        if a.dtype.newbyteorder("=") not in FLOAT_DTYPES:
            raise TypeError(f"{name} must have dtype float32 or float64, got {a.dtype}")
        raise TypeError(f"{name} must be in native byte order, got {a.dtype.str}")
    # (checked first: a small call's validation is a good part of it)
    return a if type(a) is np.ndarray and a.flags.c_contiguous else np.ascontiguousarray(a)


def index_array(name, a):
    """Return ``a`` as a C-contiguous int64 ndarray; other integer dtypes are a TypeError."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    if a.dtype != np.dtype(np.int64) or not a.dtype.isnative:
        raise TypeError(f"{name} must have dtype int64, got {a.dtype}")
    return np.ascontiguousarray(a)


def same_dtype(**arrays):
    """Raise TypeError unless every given array has the same dtype."""
    named = [(k, v) for k, v in arrays.items() if v is not None]
    first_name, first = named[0]
    for name, a in named[1:]:
        if a.dtype != first.dtype:
            raise TypeError(
                f"{name} has dtype {a.dtype} but {first_name} has dtype {first.dtype}; "
                "convert them to one dtype"
            )


def integer(name, value, minimum, maximum=MAX_EXTENT):
    """Return ``value`` as a Python int in [minimum, maximum].

    Bools, floats and other non-integers are a ValueError, as every wrong parameter
    value is (TypeError is kept for the kinds of array arguments).
    """
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be an integer, got a bool ({value})")
    try:
        v = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {type(value).__name__} {value!r}") from None
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    if v > maximum:
        raise ValueError(f"{name} is too large: must be <= {maximum}, got {v}")
    return v


def boolean(name, value):
    """Return ``value`` as a bool; anything but a bool (or numpy.bool_) is a ValueError."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def choice(name, value, options):
    """Return ``value`` if it is one of ``options`` (strings or None), else ValueError."""
    for option in options:
        if value is option or (isinstance(value, str) and value == option):
            return option
    names = [repr(o) for o in options]
    raise ValueError(f"{name} must be {', '.join(names[:-1])} or {names[-1]}, got {value!r}")


def float_dtype(name, dtype):
    """Return ``dtype`` as numpy.dtype float32 or float64; any other dtype is a TypeError.

    A dtype names the kind of array a call makes, so a wrong one is a TypeError as a
    wrong array dtype is.
    """
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name} must be float32 or float64, got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {dt}")
    return dt


def int_tuple(name, value, d, minimum):
    """Return an int or a length-d sequence of ints as a d-tuple of ints >= minimum."""
    if isinstance(value, (tuple, list)):
        if len(value) != d:
            raise ValueError(f"{name} must have {d} entries, got {len(value)}")
        return tuple(integer(f"{name}[{i}]", v, minimum) for i, v in enumerate(value))
    return (integer(name, value, minimum),) * d


def shape_tuple(name, value, ndims):
    """Return a shape given as a sequence of ints; its length must be in ``ndims``."""
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"{name} must be a tuple of ints, got {type(value).__name__}")
    if len(value) not in ndims:
        raise ValueError(f"{name} must have {' or '.join(map(str, ndims))} entries, got {len(value)}")
    return tuple(integer(f"{name}[{i}]", v, 0) for i, v in enumerate(value))


def check_extent(name, extent, axis):
    """Raise ValueError if a padded extent is too large for the kernels' index arithmetic."""
    if extent > MAX_EXTENT:
        raise ValueError(
            f"{name} is too large: the padded input would be {extent} long along spatial "
            f"axis {axis}; the limit is {MAX_EXTENT}"
        )


def check_size(name, shape):
    """Raise ValueError if an array of this shape would be too large to index."""
    count = 1
    for s in shape:
        count *= s
    if count > MAX_ELEMENTS:
        raise ValueError(f"{name} of shape {tuple(shape)} has too many elements ({count})")


def nonzero_dims(name, shape, what):
    """Raise ValueError if any of the given dimensions is zero."""
    if any(s == 0 for s in shape):
        raise ValueError(f"{name} has a zero-size {what} dimension: shape {tuple(shape)}")


def padding_pairs(padding, spatial, kernel, stride, dilation):
    """Return the padding as ((before, after), ...) per spatial axis.

    Parameters
    ----------
    padding : int, tuple, tuple of pairs, 'valid', 'same' or 'full'
    spatial, kernel, stride, dilation : tuple of int, one entry per spatial axis
    """
    d = len(spatial)
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * d
        if padding == "full":
            return tuple(((k - 1) * dl,) * 2 for k, dl in zip(kernel, dilation))
        if padding == "same":
            pairs = []
            for s, k, st, dl in zip(spatial, kernel, stride, dilation):
                out = -(-s // st)
                total = max((out - 1) * st + (k - 1) * dl + 1 - s, 0)
                pairs.append((total // 2, total - total // 2))
            return tuple(pairs)
        raise ValueError(f"padding must be 'valid', 'same' or 'full' as a string, got {padding!r}")
    if isinstance(padding, (tuple, list)):
        if len(padding) != d:
            raise ValueError(f"padding must have {d} entries, got {len(padding)}")
        pairs = []
        for i, p in enumerate(padding):
            if isinstance(p, (tuple, list)):
                if len(p) != 2:
                    raise ValueError(f"padding[{i}] must be an int or a (before, after) pair")
                pairs.append((integer(f"padding[{i}][0]", p[0], 0),
                              integer(f"padding[{i}][1]", p[1], 0)))
            else:
                v = integer(f"padding[{i}]", p, 0)
                pairs.append((v, v))
        return tuple(pairs)
    v = integer("padding", padding, 0)
    return ((v, v),) * d


def window_span(axis, s, k, lo, hi, dl, name="kernel size"):
    """Return the dilated window span ``dl * (k - 1) + 1`` along one spatial axis, or raise
    ValueError (naming the window ``name``) if it does not fit in the padded input
    ``lo + s + hi``."""
    span = dl * (k - 1) + 1
    check_extent("padding", s + lo + hi, axis)
    check_extent("dilation", span, axis)
    if s + lo + hi < span:
        raise ValueError(
            f"{name} {k} (dilation {dl}, span {span}) is larger than the padded "
            f"input ({s} + {lo} + {hi}) along spatial axis {axis}"
        )
    return span


def conv_output_shape(spatial, kernel, stride, padding, dilation):
    """Return the output spatial shape of a convolution, or raise ValueError if it is empty."""
    return tuple(
        (s + lo + hi - window_span(i, s, k, lo, hi, dl)) // st + 1
        for i, (s, k, st, (lo, hi), dl) in enumerate(zip(spatial, kernel, stride, padding,
                                                         dilation))
    )


CACHE_LINE = 64
# Outputs smaller than this are allocated by NumPy as they are: the threads of the
# calls that make them barely split them, and aligning costs a few microseconds a call.
ALIGN_BYTES = 64 << 10


def empty_aligned(shape, dtype):
    """``numpy.empty(shape, dtype)`` whose data starts on a 64-byte cache line when it
    holds at least ``ALIGN_BYTES``.

    NumPy's own allocation is 16-byte aligned.  Kernels that split an output's rows
    among threads by columns cut them at whole vectors from each row's start; with the
    rows off the line grid, the two threads' tiles share a line at every such cut and
    write it in turn (MobileNetV2's 576 x 96 1x1 weight gradient at batch 1 ran about
    10% slower on two threads).
    """
    if not isinstance(dtype, np.dtype):
        dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < ALIGN_BYTES:
        return np.empty(shape, dtype)
    raw = np.empty(nbytes + CACHE_LINE, dtype=np.uint8)
    start = -raw.__array_interface__["data"][0] % CACHE_LINE
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def check_out(out, shape, dtype, inputs):
    """Validate a caller-supplied output array; return it, or a new one (cache-line
    aligned, :func:`empty_aligned`) if ``out`` is None."""
    if out is None:
        return empty_aligned(shape, dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"out must have dtype {dtype}, got {out.dtype}")
    if out.shape != tuple(shape):
        raise ValueError(f"out must have shape {tuple(shape)}, got {out.shape}")
    if not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    for a in inputs:
        if a is not None and np.may_share_memory(out, a):
            raise ValueError("out shares memory with an input")
    return out
