"""Max-pool plans: a pooling geometry validated once, then cheap calls.

``pool_plan(x_shape, kernel_size, ...)`` checks the window, stride, padding, dilation and
``ceil_mode`` against the input shape once and works out the output shape.  Its methods
then check only what can change from call to call (the arrays' kind, dtype, shape and
layout) before one kernel call.  :func:`convkern.maxpool_forward` is a cached use of
plans and the :class:`convkern.layers.MaxPool` layer holds one per input shape, so both
give the plan's bits.
"""

import numpy as np

from . import _pool
from ._lift import lift_params, lift_shape
from ._validation import (
    boolean,
    check_out,
    check_size,
    float_array,
    float_dtype,
    index_array,
    int_tuple,
    integer,
    nonzero_dims,
    padding_pairs,
    window_span,
)
from ._work import POOL_GRAIN, threads_for

__all__ = ["PoolPlan", "pool_plan"]


def pool_plan(x_shape, kernel_size, *, dtype=np.float32, stride=None, padding=0, dilation=1,
              ceil_mode=False):
    """Plan a max pooling: validate its geometry once.

    Parameters
    ----------
    x_shape : tuple of int
        ``(N, C, *S)``, or ``(C, *S)`` for unbatched calls; ``S`` has 1, 2 or 3 axes.
    kernel_size, stride, padding, dilation, ceil_mode
        As for :func:`convkern.maxpool_forward`.
    dtype : float32 or float64

    Returns
    -------
    PoolPlan
    """
    return PoolPlan(x_shape, kernel_size, dtype=dtype, stride=stride, padding=padding,
                    dilation=dilation, ceil_mode=ceil_mode)


class PoolPlan:
    """A max-pool geometry, validated once.

    Build it with :func:`pool_plan`.  :meth:`forward` and :meth:`backward` give the bits
    of :func:`convkern.maxpool_forward` and :func:`convkern.maxpool_backward`.

    Attributes
    ----------
    x_shape, y_shape : tuple of int
        As the caller gives them (unbatched when ``x_shape`` is).
    dtype : numpy.dtype
    kernel_size, stride, dilation : tuple of int
    padding : tuple of (before, after) pairs
    ceil_mode : bool
    num_threads : int
        Threads a forward call uses now (the global setting, capped by the work).
    """

    def __init__(self, x_shape, kernel_size, *, dtype=np.float32, stride=None, padding=0,
                 dilation=1, ceil_mode=False):
        if not isinstance(x_shape, (tuple, list)):
            raise TypeError(f"x_shape must be a tuple of ints, got {type(x_shape).__name__}")
        x_shape = tuple(integer(f"x_shape[{i}]", v, 0) for i, v in enumerate(x_shape))
        self.dtype = float_dtype("dtype", dtype)
        if isinstance(kernel_size, (tuple, list)):
            d = len(kernel_size)
            if d not in (1, 2, 3):
                raise ValueError(f"kernel_size must have 1, 2 or 3 entries, got {d}")
        else:
            d = len(x_shape) - 2
            if d not in (1, 2, 3):
                raise ValueError(
                    "x must have 3, 4 or 5 dimensions (N, C, *spatial) for an int "
                    f"kernel_size, got {len(x_shape)}"
                )
        if len(x_shape) not in (d + 1, d + 2):
            raise ValueError(
                f"x must have {d + 2} dimensions (N, C, *spatial) or {d + 1} (C, *spatial) "
                f"for a {d}-D kernel_size, got {len(x_shape)}"
            )
        self.ceil_mode = boolean("ceil_mode", ceil_mode)
        self._batched = len(x_shape) == d + 2
        xb_shape = x_shape if self._batched else (1,) + x_shape
        nonzero_dims("x", xb_shape[1:], "channel or spatial")
        kernel = int_tuple("kernel_size", kernel_size, d, 1)
        stride = kernel if stride is None else int_tuple("stride", stride, d, 1)
        dilation = int_tuple("dilation", dilation, d, 1)
        pad = _pool_padding(padding, xb_shape[2:], kernel, stride, dilation)
        out = tuple(
            _pool_output_size(i, s, k, st, p, dl, self.ceil_mode)
            for i, (s, k, st, p, dl) in enumerate(
                zip(xb_shape[2:], kernel, stride, pad, dilation))
        )
        yb_shape = xb_shape[:2] + out
        check_size("x", xb_shape)
        check_size("output", yb_shape)
        self.x_shape = x_shape
        self.y_shape = yb_shape if self._batched else yb_shape[1:]
        self.kernel_size, self.stride, self.padding, self.dilation = kernel, stride, pad, dilation
        self._d = d
        self._x5 = lift_shape(xb_shape, d)
        self._y5 = lift_shape(yb_shape, d)
        self._params = (
            lift_params(kernel, d, 1),
            lift_params(stride, d, 1),
            lift_params((lo for lo, _ in pad), d, 0),
            lift_params(dilation, d, 1),
        )
        self._taps = int(np.prod(yb_shape, dtype=object)) * int(np.prod(kernel, dtype=object))
        self._planes = xb_shape[0] * xb_shape[1]
        self._plane = int(np.prod(xb_shape[2:], dtype=object))

    @property
    def num_threads(self):
        return threads_for(self._taps, POOL_GRAIN)

    def __repr__(self):
        return (
            f"PoolPlan(x_shape={self.x_shape}, kernel_size={self.kernel_size}, "
            f"dtype={self.dtype.name}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, ceil_mode={self.ceil_mode},\n"
            f"    y_shape={self.y_shape}, threads={self.num_threads})"
        )

    def _array(self, name, a, shape, check):
        a = check(name, a)
        if check is float_array and a.dtype != self.dtype:
            raise TypeError(f"{name} has dtype {a.dtype} but the plan is for {self.dtype}")
        if a.shape != shape:
            raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
        return a

    def forward(self, x, *, out=None):
        """Max-pool ``x``: the values and the argmax of every window.

        Parameters
        ----------
        x : ndarray of shape x_shape
        out : (ndarray, ndarray), optional
            Preallocated C-contiguous ``(y, indices)`` to fill.

        Returns
        -------
        y : ndarray of shape y_shape
            Window maxima, of the plan's dtype.
        indices : ndarray of int64, shape y_shape
            Flat position of each maximum within its ``(n, c)`` plane of the unpadded input.
        """
        return self._forward(x, self._array("x", x, self.x_shape, float_array), out)

    def _forward(self, given, x, out):
        """forward of an x already checked against the plan (C-contiguous, its shape and
        dtype): maxpool_forward's key holds them, so it checks x once, not twice."""
        if out is not None and not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError(f"out must be a (y, indices) pair of arrays, got {out!r}")
        out_y, out_indices = (None, None) if out is None else out
        y = check_out(out_y, self.y_shape, self.dtype, (given, x))
        indices = check_out(out_indices, self.y_shape, np.dtype(np.int64), (given, x, y))
        if self._planes > 0:
            _pool.maxpool_forward(
                x.reshape(self._x5), y.reshape(self._y5), indices.reshape(self._y5),
                *self._params, self.num_threads,
            )
        return y, indices

    def backward(self, grad_y, indices, *, out=None):
        """Scatter ``grad_y`` back to the argmax positions of :meth:`forward`.

        Parameters
        ----------
        grad_y : ndarray of shape y_shape
        indices : ndarray of int64, shape y_shape
            As :meth:`forward` returned them.
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
        return self._backward_positive(grad_y, indices, None, out)

    def _backward_positive(self, grad_y, indices, y, out):
        """backward into ``out``; with ``y`` (the pooled outputs) only of the entries
        whose output is > 0 (the gradient through a ReLU before the pool; MaxPool and
        Sequential's use)."""
        given = (grad_y, indices, y)
        grad_y = self._array("grad_y", grad_y, self.y_shape, float_array)
        indices = self._array("indices", indices, self.y_shape, index_array)
        if y is not None:
            y = self._array("y", y, self.y_shape, float_array)
        return scatter_to_argmax(grad_y, indices, self._planes, self._plane,
                                 check_out(out, self.x_shape, self.dtype,
                                           given + (grad_y, indices, y)), positive=y)


def scatter_to_argmax(grad_y, indices, planes, plane, gx, positive=None):
    """Fill ``gx`` (``planes`` planes of ``plane`` elements) with ``grad_y`` at ``indices``;
    with ``positive`` (the pooled outputs) only where it is > 0."""
    if planes == 0:
        return gx
    bad = _pool.maxpool_backward(
        grad_y.reshape(planes, -1), indices.reshape(planes, -1), gx.reshape(planes, plane),
        threads_for(gx.size, POOL_GRAIN),
        None if positive is None else positive.reshape(planes, -1),
    )
    if bad:
        raise ValueError(f"indices has {bad} entries outside the input plane [0, {plane})")
    return gx


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
    span = window_span(axis, s, k, lo, hi, dl, "kernel_size")
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
