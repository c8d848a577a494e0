# cython: language_level=3
"""Max-pool kernels: forward with argmax indices, and the backward scatter.

Design
------
Both passes are parallel over (image, channel) planes (prange): a plane owns its
block of the output and of the input gradient, so threads never share a write and
overlapping windows accumulate in scan order inside one thread (bitwise reproducible).
Forward gives PyTorch's result for each window scanned in (kd, kh, kw) order: the
padding is skipped (implicit -inf), ties keep the first maximum and a NaN always
replaces the running maximum.  Windows inside the plane take a branch-free path (the
maximum, then the first tap equal to it), since branches on data mispredict.
Indices are flat positions (id * H + ih) * W + iw inside the unpadded plane.
Backward checks every index against the plane before it writes and counts the bad
ones, so forged indices are reported, never written out of bounds.
"""

from cython.parallel cimport prange, threadid
from libc.stdint cimport int32_t, int64_t
from libc.math cimport INFINITY
from libc.string cimport memset

from libc.stdlib cimport malloc, free

from fused cimport floating_t
from geometry cimport Geom

cdef extern from "pool_kernel.h":
    ctypedef Py_ssize_t (*ck_pool_s)(const float *, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                     const Py_ssize_t *, Py_ssize_t, const int32_t *,
                                     const Py_ssize_t *, float *, int64_t *) noexcept nogil
    ctypedef Py_ssize_t (*ck_pool_d)(const double *, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                     const Py_ssize_t *, Py_ssize_t, const int32_t *,
                                     const Py_ssize_t *, double *, int64_t *) noexcept nogil
    ck_pool_s ck_pool_select_s(int *vl) noexcept nogil
    ck_pool_d ck_pool_select_d(int *vl) noexcept nogil

cdef extern from "strided_copy.h":
    void ck_split_rows_f(float *even, float *odd, const float *src, Py_ssize_t rows,
                         Py_ssize_t w) noexcept nogil
    void ck_split_rows_d(double *even, double *odd, const double *src, Py_ssize_t rows,
                         Py_ssize_t w) noexcept nogil

cdef extern from "cpu_isa.h":
    int ck_isa_level() noexcept nogil
    const char *ck_isa_names[]

# Vectorised rows for stride 2 along W (NULL without GNU vector extensions), and their
# windows per vector.
cdef int _vl_s = 0, _vl_d = 0
cdef ck_pool_s POOL_ROW_S = ck_pool_select_s(&_vl_s)
cdef ck_pool_d POOL_ROW_D = ck_pool_select_d(&_vl_d)
cdef Py_ssize_t POOL_VL_S = _vl_s
cdef Py_ssize_t POOL_VL_D = _vl_d


def kernel_isa():
    """The instruction-set level of the vectorised rows ('scalar' without GNU vector
    extensions)."""
    return ck_isa_names[ck_isa_level()].decode() if POOL_ROW_S != NULL else "scalar"


cdef inline Py_ssize_t first_tap(Py_ssize_t start, Py_ssize_t dil) noexcept nogil:
    """The first tap start + j * dil (j >= 0) that is not in the left padding."""
    if start >= 0:
        return start
    return start + ((-start - 1) // dil + 1) * dil


cdef extern from *:
    """
    #define CK_SELECT(c, a, b) ((c) ? (a) : (b))
    """
    float select_f "CK_SELECT"(bint c, float a, float b) noexcept nogil
    double select_d "CK_SELECT"(bint c, double a, double b) noexcept nogil
    int64_t select_i "CK_SELECT"(bint c, int64_t a, int64_t b) noexcept nogil


cdef inline void scan_window(const floating_t *xp, const Geom *g, Py_ssize_t d0,
                             Py_ssize_t d1, Py_ssize_t h0, Py_ssize_t h1, Py_ssize_t w0,
                             Py_ssize_t w1, floating_t *best, int64_t *arg) noexcept nogil:
    """PyTorch's scan of one window: taps d0 <= id < d1 (step dd), and so on for h and w.

    The running maximum starts at -inf with the first tap's index; a tap replaces it if
    it is larger or NaN.
    """
    cdef Py_ssize_t id, ih, iw, idx
    cdef floating_t m = -INFINITY, v
    cdef int64_t a = (d0 * g.H + h0) * g.W + w0
    id = d0
    while id < d1:
        ih = h0
        while ih < h1:
            idx = (id * g.H + ih) * g.W
            iw = w0
            while iw < w1:
                v = xp[idx + iw]
                if v > m or v != v:
                    m = v
                    a = idx + iw
                iw = iw + g.dw
            ih = ih + g.dh
        id = id + g.dd
    best[0] = m
    arg[0] = a


cdef inline void pool_run(const floating_t *xp, const Geom *g, Py_ssize_t base,
                          Py_ssize_t n, floating_t *yp, int64_t *ip, const Py_ssize_t *taps,
                          Py_ssize_t ntaps) noexcept nogil:
    """Max and argmax of n consecutive windows of an output row that lie inside the plane.

    base is the first tap of the first window; window j starts at base + j * sw.  Without
    branches on the data: the maximum first, then the first tap equal to it (taps scanned
    backwards with selects).  A window holding a NaN takes scan_window instead (PyTorch's
    scan, in which every NaN replaces the running maximum).
    """
    cdef Py_ssize_t kd, kh, kw, j, start, idx, done = 0
    cdef floating_t v, m
    cdef int64_t arg
    cdef bint nan
    if taps != NULL:
        # stride 2 along the row: whole vectors of windows at once (pool_kernel.h)
        if floating_t is float:
            if POOL_ROW_S != NULL:
                done = POOL_ROW_S(xp, g.D * g.H * g.W, base, n, taps, ntaps, NULL, NULL, yp, ip)
        else:
            if POOL_ROW_D != NULL:
                done = POOL_ROW_D(xp, g.D * g.H * g.W, base, n, taps, ntaps, NULL, NULL, yp, ip)
    for j in range(done, n):
        start = base + j * g.sw
        m = xp[start]
        nan = False
        for kd in range(g.KD):
            for kh in range(g.KH):
                idx = start + (kd * g.dd * g.H + kh * g.dh) * g.W
                for kw in range(g.KW):
                    v = xp[idx + kw * g.dw]
                    nan = nan | (v != v)
                    if floating_t is float:
                        m = select_f(v > m, v, m)
                    else:
                        m = select_d(v > m, v, m)
        if nan:
            kd = start // (g.H * g.W)
            kh = (start // g.W) % g.H
            kw = start % g.W
            scan_window(xp, g, kd, kd + (g.KD - 1) * g.dd + 1, kh, kh + (g.KH - 1) * g.dh + 1,
                        kw, kw + (g.KW - 1) * g.dw + 1, &yp[j], &ip[j])
            continue
        arg = start
        for kd in range(g.KD - 1, -1, -1):
            for kh in range(g.KH - 1, -1, -1):
                idx = start + (kd * g.dd * g.H + kh * g.dh) * g.W
                for kw in range(g.KW - 1, -1, -1):
                    arg = select_i(xp[idx + kw * g.dw] == m, idx + kw * g.dw, arg)
        yp[j] = m
        ip[j] = arg


cdef inline void pool_plane(const floating_t *xp, const Geom *g, floating_t *yp,
                            int64_t *ip, const Py_ssize_t *taps, Py_ssize_t ntaps) noexcept nogil:
    """Max-pool one (D, H, W) plane into (OD, OH, OW) values and argmax indices.

    Runs of windows inside the plane take pool_run; the others clip their taps.
    """
    cdef Py_ssize_t od, oh, ow, d0, h0, w0, d1, h1, o = 0
    cdef Py_ssize_t span_w = (g.KW - 1) * g.dw + 1
    # output columns whose windows lie inside the row: ow_lo <= ow < ow_hi
    cdef Py_ssize_t ow_lo = (g.pw + g.sw - 1) // g.sw
    cdef Py_ssize_t ow_hi = (max(ow_lo, min(g.OW, (g.W - span_w + g.pw) // g.sw + 1))
                             if g.W >= span_w else ow_lo)
    cdef bint inside_d, inside_dh
    for od in range(g.OD):
        # first in-bounds tap of the window, and one past the last tap
        d0 = od * g.sd - g.pd
        d1 = min(d0 + (g.KD - 1) * g.dd + 1, g.D)
        inside_d = d0 >= 0 and d0 + (g.KD - 1) * g.dd < g.D
        d0 = first_tap(d0, g.dd)
        for oh in range(g.OH):
            h0 = oh * g.sh - g.ph
            h1 = min(h0 + (g.KH - 1) * g.dh + 1, g.H)
            inside_dh = inside_d and h0 >= 0 and h0 + (g.KH - 1) * g.dh < g.H
            h0 = first_tap(h0, g.dh)
            ow = 0
            while ow < g.OW:
                if inside_dh and ow == ow_lo and ow_hi > ow_lo:
                    pool_run(xp, g, (d0 * g.H + h0) * g.W + ow * g.sw - g.pw, ow_hi - ow_lo,
                             yp + o, ip + o, taps, ntaps)
                    o += ow_hi - ow_lo
                    ow = ow_hi
                    continue
                w0 = ow * g.sw - g.pw
                scan_window(xp, g, d0, d1, h0, h1, first_tap(w0, g.dw), min(w0 + span_w, g.W),
                            &yp[o], &ip[o])
                o += 1
                ow += 1


# Small planes of 2x2 (or 2x2x2) windows as many apart: rows of fewer windows than a
# vector (VGG's 8x8 to 2x2 planes, LeNet's) would run scalar, one window at a time.
# Every window lies inside the plane and reads two runs of two taps per input plane row
# pair, so a chunk of planes is copied into one run of rows per tap row (kd, kh), every
# output row's 2 * OW taps after the previous row's: window J of the chunk (over its
# planes, then od, oh, ow) then reads taps 2 J and 2 J + 1 of each run, and the row
# kernel takes whole vectors of windows across rows and planes.  Its indices come from a
# table of each window's first tap in its plane.  Windows past the last whole vector
# take scan_window.


cdef inline bint pairs_fit(const Geom *g, Py_ssize_t vl) noexcept nogil:
    """The chunked path applies: 2x2 (2-D) or 2x2x2 / 1x2x2 windows with stride = window,
    no padding, no dilation, every window inside the input, rows of fewer windows than
    a vector, and a plane whose positions fit in 32 bits."""
    return (vl > 0 and g.KH == 2 and g.KW == 2 and g.sh == 2 and g.sw == 2
            and ((g.KD == 1 and g.sd == 1) or (g.KD == 2 and g.sd == 2 and g.dd == 1))
            and g.dh == 1 and g.dw == 1 and g.pd == 0 and g.ph == 0 and g.pw == 0
            and g.sd * (g.OD - 1) + g.KD <= g.D and 2 * g.OH <= g.H and 2 * g.OW <= g.W
            and g.OW < vl and g.D * g.H * g.W < 2147483647)


cdef void pool_pairs(const floating_t *x, const Geom *g, floating_t *y, int64_t *ind,
                     Py_ssize_t per, Py_ssize_t vl, int nt) except *:
    """Max-pool x into y and ind, pairs_fit(g), per planes at a time (see above)."""
    cdef Py_ssize_t plane_in = g.D * g.H * g.W, plane_out = g.OD * g.OH * g.OW
    cdef Py_ssize_t nplanes = g.N * g.C, n = per * plane_out, W2 = 2 * g.OW
    cdef Py_ssize_t runs = g.KD * 2, S = 2 * n, size = runs * S + 2 * vl
    # planes of 2-D windows that take every row and column (2 OH x 2 OW planes, or
    # their 1x2x2 windows' slices): row R of the chunk's run kh is input row 2 R + kh
    cdef bint whole_rows = g.KD == 1 and g.H == 2 * g.OH and g.W == W2
    cdef Py_ssize_t t, p, p0, np_, od, oh, ow, r, kd, kh, j, done, row
    cdef Py_ssize_t taps[8]
    cdef Py_ssize_t toff[8]
    cdef floating_t *buf
    cdef const floating_t *xp
    cdef int32_t *first = <int32_t *> malloc(n * sizeof(int32_t))
    cdef floating_t *scratch = <floating_t *> malloc(nt * size * sizeof(floating_t))
    if first == NULL or scratch == NULL:
        free(first)
        free(scratch)
        raise MemoryError("convkern: cannot allocate the pooling scratch")
    # taps in scan order (kd, kh, kw): offsets into the runs and into the plane
    for kd in range(g.KD):
        for kh in range(2):
            for j in range(2):
                taps[(kd * 2 + kh) * 2 + j] = (kd * 2 + kh) * S + j
                toff[(kd * 2 + kh) * 2 + j] = (kd * g.H + kh) * g.W + j
    # each window's first tap in its plane (the same for every plane of a chunk)
    for p in range(per):
        for od in range(g.OD):
            for oh in range(g.OH):
                for ow in range(g.OW):
                    first[((p * g.OD + od) * g.OH + oh) * g.OW + ow] = (
                        (g.sd * od * g.H + 2 * oh) * g.W + 2 * ow)
    with nogil:
        for t in prange((nplanes + per - 1) // per, num_threads=nt, schedule="static"):
            buf = scratch + threadid() * size
            p0 = t * per
            np_ = min(per, nplanes - p0)
            # run (kd, kh): row (p, od, oh) holds input row (sd * od + kd, 2 * oh + kh)
            if whole_rows:
                # the chunk's input rows in order are the runs' rows taken in turn
                if floating_t is float:
                    ck_split_rows_f(buf, buf + S, x + p0 * plane_in, np_ * g.OD * g.OH, W2)
                else:
                    ck_split_rows_d(buf, buf + S, x + p0 * plane_in, np_ * g.OD * g.OH, W2)
            else:
                for p in range(np_):
                    for od in range(g.OD):
                        for oh in range(g.OH):
                            row = (p * g.OD + od) * g.OH + oh
                            for r in range(runs):
                                xp = x + (p0 + p) * plane_in + (
                                    (g.sd * od + r // 2) * g.H + 2 * oh + r % 2) * g.W
                                # an element loop: the rows are under two vectors long,
                                # where a call to memcpy per row cost more than the copy
                                # (2x2 pools of 4x4-16x16 planes at batch 16-32 ran 8-15%
                                # faster, AVX-512 Xeon, 2 threads)
                                for j in range(W2):
                                    buf[r * S + row * W2 + j] = xp[j]
            memset(buf + runs * S, 0, 2 * vl * sizeof(floating_t))
            done = 0
            if floating_t is float:
                done = POOL_ROW_S(buf, size, 0, np_ * plane_out, taps, runs * 2, first, toff,
                                  y + p0 * plane_out, ind + p0 * plane_out)
            else:
                done = POOL_ROW_D(buf, size, 0, np_ * plane_out, taps, runs * 2, first, toff,
                                  y + p0 * plane_out, ind + p0 * plane_out)
            for j in range(done, np_ * plane_out):
                p = j // plane_out
                od = j % plane_out // (g.OH * g.OW)
                oh = j % (g.OH * g.OW) // g.OW
                ow = j % g.OW
                scan_window(x + (p0 + p) * plane_in, g, g.sd * od, g.sd * od + g.KD,
                            2 * oh, 2 * oh + 2, 2 * ow, 2 * ow + 2, &y[p0 * plane_out + j],
                            &ind[p0 * plane_out + j])
    free(scratch)
    free(first)


# Outputs a chunk of planes of pool_pairs holds at most (fewer when that leaves a thread
# fewer than four chunks).
cdef Py_ssize_t PAIRS_CHUNK = 4096


def maxpool_forward(const floating_t[:, :, :, :, ::1] x not None,
                    floating_t[:, :, :, :, ::1] out not None,
                    int64_t[:, :, :, :, ::1] indices not None,
                    tuple kernel, tuple stride, tuple pad, tuple dilation,
                    int num_threads):
    """Fill out and indices (N, C, OD, OH, OW) with window maxima of x and their positions."""
    cdef Geom g
    cdef Py_ssize_t plane_in, plane_out, t, kd, kh, kw, ntaps, per
    cdef Py_ssize_t *taps = NULL
    cdef Py_ssize_t vl = POOL_VL_S if floating_t is float else POOL_VL_D
    g.N, g.C, g.D, g.H, g.W = x.shape[0], x.shape[1], x.shape[2], x.shape[3], x.shape[4]
    g.OD, g.OH, g.OW = out.shape[2], out.shape[3], out.shape[4]
    g.KD, g.KH, g.KW = kernel
    g.sd, g.sh, g.sw = stride
    g.pd, g.ph, g.pw = pad
    g.dd, g.dh, g.dw = dilation
    plane_in = g.D * g.H * g.W
    plane_out = g.OD * g.OH * g.OW
    # small planes of 2x2 windows: chunks of planes copied into runs of tap rows
    if plane_out > 0 and g.N * g.C > 0 and pairs_fit(&g, vl):
        per = max(1, min(PAIRS_CHUNK // plane_out,
                         (g.N * g.C + 4 * max(1, num_threads) - 1) // (4 * max(1, num_threads))))
        pool_pairs(&x[0, 0, 0, 0, 0], &g, &out[0, 0, 0, 0, 0], &indices[0, 0, 0, 0, 0],
                   per, vl, max(1, num_threads))
        return
    # the vector rows keep indices in 32 bits, need stride 2 along W and a small window
    # (each factor is bounded before the product, which could otherwise wrap)
    ntaps = 0
    if g.KD <= 1024 and g.KH <= 1024 and g.KW <= 1024:
        ntaps = g.KD * g.KH * g.KW
    if g.sw == 2 and plane_in < 2**31 - 1 and 0 < ntaps <= 1024:
        taps = <Py_ssize_t *> malloc(ntaps * sizeof(Py_ssize_t))
        if taps == NULL:
            raise MemoryError("convkern: cannot allocate the pooling taps")
        # offsets of the taps from a window's first tap, in scan order (ascending)
        for kd in range(g.KD):
            for kh in range(g.KH):
                for kw in range(g.KW):
                    taps[(kd * g.KH + kh) * g.KW + kw] = (kd * g.dd * g.H + kh * g.dh) * g.W + kw * g.dw
    with nogil:
        for t in prange(g.N * g.C, num_threads=max(1, num_threads), schedule="static"):
            pool_plane(&x[0, 0, 0, 0, 0] + t * plane_in, &g,
                       &out[0, 0, 0, 0, 0] + t * plane_out,
                       &indices[0, 0, 0, 0, 0] + t * plane_out, taps, ntaps)
    free(taps)


def maxpool_backward(const floating_t[:, ::1] grad_y not None,
                     const int64_t[:, ::1] indices not None,
                     floating_t[:, ::1] out not None, int num_threads,
                     const floating_t[:, ::1] positive=None):
    """Fill out (planes, plane_size) with grad_y scattered to indices; return the bad count.

    grad_y and indices are (planes, outputs per plane).  An index outside
    [0, plane_size) is counted and skipped.  With positive (grad_y's shape: the pooled
    outputs) only the entries whose output is > 0 are scattered: the gradient through a
    ReLU before the pool, whose output at the argmax is that value (a NaN or a value
    <= 0 gives 0, as ReLU's derivative does).
    """
    cdef Py_ssize_t planes = out.shape[0], size = out.shape[1], per = grad_y.shape[1]
    cdef bint masked = positive is not None
    # chunks of planes (small planes: one memset and one task for many of them)
    cdef Py_ssize_t chunk = max(1, min(SCATTER_CHUNK // max(1, size + per),
                                       (planes + 4 * max(1, num_threads) - 1)
                                       // (4 * max(1, num_threads))))
    cdef Py_ssize_t c, t, t1, o
    cdef int64_t idx
    cdef Py_ssize_t bad = 0
    if planes == 0 or size == 0:
        return 0
    with nogil:
        for c in prange((planes + chunk - 1) // chunk, num_threads=max(1, num_threads),
                        schedule="static"):
            t1 = min(planes, (c + 1) * chunk)
            memset(&out[c * chunk, 0], 0, (t1 - c * chunk) * size * sizeof(floating_t))
            for t in range(c * chunk, t1):
                for o in range(per):
                    idx = indices[t, o]
                    if idx < 0 or idx >= size:
                        bad += 1
                    elif not masked or positive[t, o] > 0:
                        out[t, idx] = out[t, idx] + grad_y[t, o]
    return bad


# Elements (input and output) a chunk of maxpool_backward's planes holds at most.
cdef Py_ssize_t SCATTER_CHUNK = 16384
