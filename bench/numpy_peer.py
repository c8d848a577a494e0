"""Plain NumPy peer: im2col with ``sliding_window_view`` and one GEMM per image.

Bench-only, float32, ``groups=1``. Each :class:`NumpyConv` owns padded input and
gradient buffers and a column workspace of one image ``(C*prod(K), prod(O))``,
allocated once and reused by every call, so the timings measure im2col and the
BLAS GEMM rather than page faults on fresh memory. Threads come from NumPy's BLAS only.
"""

from itertools import product
from math import prod

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


class NumpyConv:
    """im2col + matmul convolution for one fixed geometry.

    Parameters
    ----------
    x_shape : tuple of int
        ``(N, C, *spatial)``.
    w_shape : tuple of int
        ``(F, C, *kernel)``.
    stride, padding, dilation : tuple of int
        One entry per spatial dimension.
    """

    def __init__(self, x_shape, w_shape, stride, padding, dilation):
        self.x_shape = tuple(x_shape)
        self.w_shape = tuple(w_shape)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        n, c, *spatial = x_shape
        f, _, *kernel = w_shape
        self.kernel = tuple(kernel)
        self.eff = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
        self.out = tuple(
            (s + 2 * p - e) // st + 1
            for s, p, e, st in zip(spatial, padding, self.eff, stride)
        )
        ndim = len(spatial)
        self.axes = tuple(range(2, 2 + ndim))
        # Window view (N, C, *O, *K) -> per-image column order (C, *K, *O).
        self.perm = (0,) + tuple(range(1 + ndim, 1 + 2 * ndim)) + tuple(range(1, 1 + ndim))
        self.interior = (slice(None), slice(None)) + tuple(
            slice(p, p + s) for p, s in zip(padding, spatial)
        )
        self.xp = np.zeros((n, c) + tuple(s + 2 * p for s, p in zip(spatial, padding)),
                           np.float32)
        self.gxp = np.zeros_like(self.xp)
        self.cols = np.empty((c * prod(kernel), prod(self.out)), np.float32)
        self.cols_view = self.cols.reshape((c,) + self.kernel + self.out)

    def _windows(self, x):
        """Copy `x` into the padded buffer; return its (N, C, *O, *K) window view."""
        self.xp[self.interior] = x
        win = sliding_window_view(self.xp, self.eff, axis=self.axes)
        steps = tuple(slice(None, None, s) for s in self.stride) + tuple(
            slice(None, None, d) for d in self.dilation
        )
        return win[(slice(None), slice(None)) + steps]

    def _im2col(self, win_n):
        """Fill the column workspace from the window view of one image."""
        np.copyto(self.cols_view, win_n.transpose(self.perm))

    def forward(self, x, w, b):
        """Return ``y = conv(x, w) + b`` of shape ``(N, F, *O)``."""
        n, f = x.shape[0], w.shape[0]
        w2 = w.reshape(f, -1)
        y = np.empty((n, f) + self.out, np.float32)
        win = self._windows(x)
        for i in range(n):
            self._im2col(win[i])
            np.matmul(w2, self.cols, out=y[i].reshape(f, -1))
        y += b.reshape((f,) + (1,) * len(self.out))
        return y

    def backward_input(self, gy, w):
        """Return the input gradient (col2im of ``w^T @ grad_y``), shape `x_shape`."""
        n, f = gy.shape[0], w.shape[0]
        w2t = w.reshape(f, -1).T
        gxp = self.gxp
        gxp.fill(0)
        for i in range(n):
            np.matmul(w2t, gy[i].reshape(f, -1), out=self.cols)
            for k in product(*(range(kk) for kk in self.kernel)):
                # Input positions touched by kernel tap k: k*d + o*s for o < O.
                dst = (slice(None),) + tuple(
                    slice(kk * d, kk * d + s * (o - 1) + 1, s)
                    for kk, d, s, o in zip(k, self.dilation, self.stride, self.out)
                )
                gxp[i][dst] += self.cols_view[(slice(None),) + k]
        return np.ascontiguousarray(gxp[self.interior])

    def backward_weight(self, x, gy):
        """Return ``(grad_w, grad_b)``: the weight and bias gradients."""
        n, f = gy.shape[0], self.w_shape[0]
        gw = np.zeros((f, self.cols.shape[0]), np.float32)
        part = np.empty_like(gw)
        win = self._windows(x)
        for i in range(n):
            self._im2col(win[i])
            np.matmul(gy[i].reshape(f, -1), self.cols.T, out=part)
            gw += part
        gb = gy.sum(axis=(0,) + tuple(range(2, gy.ndim)), dtype=np.float32)
        return gw.reshape(self.w_shape), gb


def maxpool_forward(x, kernel, stride, padding=0):
    """2-D max-pool with PyTorch-style indices.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W), float32
    kernel, stride, padding : int

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW), float32
    idx : ndarray, shape (N, C, OH, OW), int64
        Flat index of each maximum in its ``H * W`` input plane.
    """
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)),
                constant_values=-np.inf)
    win = sliding_window_view(xp, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride]
    oh, ow = win.shape[2:4]
    flat = win.reshape(n, c, oh, ow, kernel * kernel)
    arg = flat.argmax(axis=-1)
    y = np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]
    rows = np.arange(oh)[:, None] * stride - padding + arg // kernel
    cols = np.arange(ow)[None, :] * stride - padding + arg % kernel
    return y, (rows * w + cols).astype(np.int64)


def maxpool_backward(gy, idx, x_shape):
    """Scatter-add `gy` to the input positions named by `idx`.

    Parameters
    ----------
    gy : ndarray, shape (N, C, OH, OW), float32
    idx : ndarray, shape (N, C, OH, OW), int64
    x_shape : tuple of int
        ``(N, C, H, W)``.

    Returns
    -------
    ndarray, shape `x_shape`, float32
    """
    n, c, h, w = x_shape
    planes = np.arange(n * c, dtype=np.int64)[:, None] * (h * w)
    flat = (idx.reshape(n * c, -1) + planes).ravel()
    gx = np.bincount(flat, weights=gy.ravel(), minlength=n * c * h * w)
    return gx.astype(np.float32).reshape(x_shape)
