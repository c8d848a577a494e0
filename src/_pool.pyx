# cython: language_level=3
"""Max-pool kernels: forward with argmax indices, and the backward scatter.

Design
------
Both passes are parallel over (image, channel) planes (prange): a plane owns its
block of the output and of the input gradient, so threads never share a write and
overlapping windows accumulate in scan order inside one thread (bitwise reproducible).
Forward scans each window in (kd, kh, kw) order, skips the implicit -inf padding and
keeps the first maximum; a NaN always replaces the running maximum, as in PyTorch.
Indices are flat positions (id * H + ih) * W + iw inside the unpadded plane.
Backward checks every index against the plane before it writes and counts the bad
ones, so forged indices are reported, never written out of bounds.
"""

from cython.parallel cimport prange
from libc.stdint cimport int64_t
from libc.math cimport INFINITY
from libc.string cimport memset

from fused cimport floating_t
from geometry cimport Geom


cdef inline Py_ssize_t first_tap(Py_ssize_t start, Py_ssize_t dil) noexcept nogil:
    """The first tap start + j * dil (j >= 0) that is not in the left padding."""
    if start >= 0:
        return start
    return start + ((-start - 1) // dil + 1) * dil


cdef inline void pool_plane(const floating_t *xp, const Geom *g, floating_t *yp,
                            int64_t *ip) noexcept nogil:
    """Max-pool one (D, H, W) plane into (OD, OH, OW) values and argmax indices."""
    cdef Py_ssize_t od, oh, ow, d0, h0, w0, d1, h1, w1, id, ih, iw, idx, o = 0
    cdef floating_t best, v
    cdef int64_t arg
    for od in range(g.OD):
        # first in-bounds tap of the window, and one past the last tap
        d0 = od * g.sd - g.pd
        d1 = min(d0 + (g.KD - 1) * g.dd + 1, g.D)
        d0 = first_tap(d0, g.dd)
        for oh in range(g.OH):
            h0 = oh * g.sh - g.ph
            h1 = min(h0 + (g.KH - 1) * g.dh + 1, g.H)
            h0 = first_tap(h0, g.dh)
            for ow in range(g.OW):
                w0 = ow * g.sw - g.pw
                w1 = min(w0 + (g.KW - 1) * g.dw + 1, g.W)
                w0 = first_tap(w0, g.dw)
                best = -INFINITY
                arg = (d0 * g.H + h0) * g.W + w0
                id = d0
                while id < d1:
                    ih = h0
                    while ih < h1:
                        idx = (id * g.H + ih) * g.W
                        iw = w0
                        while iw < w1:
                            v = xp[idx + iw]
                            if v > best or v != v:
                                best = v
                                arg = idx + iw
                            iw = iw + g.dw
                        ih = ih + g.dh
                    id = id + g.dd
                yp[o] = best
                ip[o] = arg
                o += 1


def maxpool_forward(const floating_t[:, :, :, :, ::1] x not None,
                    floating_t[:, :, :, :, ::1] out not None,
                    int64_t[:, :, :, :, ::1] indices not None,
                    tuple kernel, tuple stride, tuple pad, tuple dilation,
                    int num_threads):
    """Fill out and indices (N, C, OD, OH, OW) with window maxima of x and their positions."""
    cdef Geom g
    cdef Py_ssize_t plane_in, plane_out, t
    g.N, g.C, g.D, g.H, g.W = x.shape[0], x.shape[1], x.shape[2], x.shape[3], x.shape[4]
    g.OD, g.OH, g.OW = out.shape[2], out.shape[3], out.shape[4]
    g.KD, g.KH, g.KW = kernel
    g.sd, g.sh, g.sw = stride
    g.pd, g.ph, g.pw = pad
    g.dd, g.dh, g.dw = dilation
    plane_in = g.D * g.H * g.W
    plane_out = g.OD * g.OH * g.OW
    with nogil:
        for t in prange(g.N * g.C, num_threads=max(1, num_threads), schedule="static"):
            pool_plane(&x[0, 0, 0, 0, 0] + t * plane_in, &g,
                       &out[0, 0, 0, 0, 0] + t * plane_out,
                       &indices[0, 0, 0, 0, 0] + t * plane_out)


def maxpool_backward(const floating_t[:, ::1] grad_y not None,
                     const int64_t[:, ::1] indices not None,
                     floating_t[:, ::1] out not None, int num_threads):
    """Fill out (planes, plane_size) with grad_y scattered to indices; return the bad count.

    grad_y and indices are (planes, outputs per plane).  An index outside
    [0, plane_size) is counted and skipped.
    """
    cdef Py_ssize_t planes = out.shape[0], size = out.shape[1], per = grad_y.shape[1]
    cdef Py_ssize_t t, o
    cdef int64_t idx
    cdef Py_ssize_t bad = 0
    with nogil:
        for t in prange(planes, num_threads=max(1, num_threads), schedule="static"):
            memset(&out[t, 0], 0, size * sizeof(floating_t))
            for o in range(per):
                idx = indices[t, o]
                if idx < 0 or idx >= size:
                    bad += 1
                else:
                    out[t, idx] = out[t, idx] + grad_y[t, o]
    return bad
