# cython: language_level=3
"""Convolution kernels: forward, input gradient, weight gradient and bias gradient.

Design
------
Every pass is a matrix product on small tiles, never on a whole-batch im2col:

- forward: y[n, g] (Fg x P) = W[g] (Fg x K) @ col(x[n, g]) (K x P).  Tasks are
  (image, group, tile of TW output positions); a task fills its own block of y, so tasks
  run in parallel (prange) with no synchronisation.  The task unrolls x into a per-thread
  KC x TW scratch tile (im2col of one reduction block) and multiplies it with the
  weights, packed once per call.
- input gradient: cols (K x P) = W[g]^T @ gy[n, g], then scatter-added into grad_x
  (col2im).  Tasks are (image, group, chunk of input channels): the rows of cols that a
  channel owns only touch that channel of grad_x, so tasks never write the same element.
- weight gradient: grad_w[g]^T (K x Fg) = sum over images and tiles of
  col(x) (K x TW) @ gy^T (TW x Fg).  Tasks are (batch chunk, group, block of K rows);
  each chunk sums into its own partial, and the partials are added in chunk order.  The
  chunks depend only on N and the shapes, never on the thread count, so the result has
  the same bits for any number of threads.
- bias gradient: per filter sums, parallel over filters, accumulated in double.

The micro-kernels (ukernel.h) use the widest vectors of the running CPU.  Accumulation
is in the input's precision, as in PyTorch.  Every element of every output is computed
by the same sequence of operations whatever thread runs it.
"""

from cython.parallel cimport prange, threadid
from libc.stdlib cimport calloc, free
from libc.string cimport memset

from fused cimport floating_t
from geometry cimport Geom, position, next_row, row_span
from gemm cimport (Kernels, select_kernels, block_mr, block_nr, round_up, pack_rows,
                   gemm_block, KC, CK_MR_MAX, CK_NR_MAX)

cdef Kernels KERN
select_kernels(&KERN)

# Output positions per tile (rounded to the micro-kernel width at run time).
cdef Py_ssize_t TILE = 256
# Rows of the reduction unrolled at once by the gradient passes.
cdef Py_ssize_t ROW_BLOCK = 256
# Upper bound, in bytes, of the weight-gradient partials (one per batch chunk).
cdef Py_ssize_t PARTIAL_BYTES = 32 << 20
cdef Py_ssize_t MAX_CHUNKS = 8


def kernel_info():
    """Return (name, mr_float, nr_float, mr_double, nr_double) of the selected micro-kernels."""
    return (KERN.name.decode(), KERN.mr_s, KERN.nr_s, KERN.mr_d, KERN.nr_d)


cdef Geom make_geom(const Py_ssize_t *xs, const Py_ssize_t *ws, const Py_ssize_t *ys,
                    Py_ssize_t groups, tuple stride, tuple pad, tuple dilation):
    """Describe a call from the shapes of x (N, C, D, H, W), weight (F, Cg, KD, KH, KW)
    and y (N, F, OD, OH, OW), all as 5-D arrays."""
    cdef Geom g
    g.N, g.C, g.D, g.H, g.W = xs[0], xs[1], xs[2], xs[3], xs[4]
    g.F, g.Cg, g.KD, g.KH, g.KW = ws[0], ws[1], ws[2], ws[3], ws[4]
    g.OD, g.OH, g.OW = ys[2], ys[3], ys[4]
    g.G = groups
    g.Fg = g.F // groups
    g.KK = g.KD * g.KH * g.KW
    g.P = g.OD * g.OH * g.OW
    g.sd, g.sh, g.sw = stride
    g.pd, g.ph, g.pw = pad
    g.dd, g.dh, g.dw = dilation
    return g


cdef void *alloc_scratch(Py_ssize_t nbytes) except NULL:
    cdef void *p = calloc(<size_t> max(nbytes, 1), 1)
    if p == NULL:
        raise MemoryError(f"convkern: cannot allocate {nbytes} bytes of scratch")
    return p


cdef inline Py_ssize_t tile_width(Py_ssize_t P, Py_ssize_t nr) noexcept nogil:
    return round_up(min(P, TILE), nr)


cdef void im2col(const floating_t *xg, const Geom *g, Py_ssize_t k0, Py_ssize_t nk,
                 Py_ssize_t p0, Py_ssize_t pn, floating_t *col,
                 Py_ssize_t ldcol) noexcept nogil:
    """col[r, j] = x_g[k0 + r read at output position p0 + j] (zero in the padding).

    Reduction index k = ((c * KD + kd) * KH + kh) * KW + kw, as in the weight layout;
    xg points at channel 0 of the group in one image.
    """
    cdef Py_ssize_t r, k, c, kd, kh, kw, j, q, seg, off, lo, hi, od, oh, ow
    cdef Py_ssize_t plane = g.D * g.H * g.W
    cdef const floating_t *xc
    cdef floating_t *row
    for r in range(nk):
        k = k0 + r
        c = k // g.KK
        kd = (k // (g.KH * g.KW)) % g.KD
        kh = (k // g.KW) % g.KH
        kw = k % g.KW
        xc = xg + c * plane
        row = col + r * ldcol
        position(g, p0, &od, &oh, &ow)
        j = 0
        while j < pn:
            seg = min(g.OW - ow, pn - j)
            off = row_span(g, kd, kh, kw, od, oh, ow, seg, &lo, &hi)
            for q in range(lo):
                row[j + q] = 0
            if g.sw == 1:
                for q in range(lo, hi):
                    row[j + q] = xc[off + q]
            else:
                for q in range(lo, hi):
                    row[j + q] = xc[off + q * g.sw]
            for q in range(hi, seg):
                row[j + q] = 0
            j += seg
            next_row(g, &od, &oh, &ow)


cdef void col2im_add(const floating_t *col, Py_ssize_t ldcol, const Geom *g,
                     Py_ssize_t k0, Py_ssize_t nk, Py_ssize_t p0, Py_ssize_t pn,
                     floating_t *gxc) noexcept nogil:
    """The adjoint of im2col: gx_c[where (k0 + r) reads position p0 + j] += col[r, j].

    gxc points at the channel that reduction index 0 belongs to.
    """
    cdef Py_ssize_t r, k, c, kd, kh, kw, j, q, seg, off, lo, hi, od, oh, ow
    cdef Py_ssize_t plane = g.D * g.H * g.W
    cdef floating_t *dst
    cdef const floating_t *row
    for r in range(nk):
        k = k0 + r
        c = k // g.KK
        kd = (k // (g.KH * g.KW)) % g.KD
        kh = (k // g.KW) % g.KH
        kw = k % g.KW
        dst = gxc + c * plane
        row = col + r * ldcol
        position(g, p0, &od, &oh, &ow)
        j = 0
        while j < pn:
            seg = min(g.OW - ow, pn - j)
            off = row_span(g, kd, kh, kw, od, oh, ow, seg, &lo, &hi)
            if g.sw == 1:
                for q in range(lo, hi):
                    dst[off + q] += row[j + q]
            else:
                for q in range(lo, hi):
                    dst[off + q * g.sw] += row[j + q]
            j += seg
            next_row(g, &od, &oh, &ow)


def conv_forward(const floating_t[:, :, :, :, ::1] x not None,
                 const floating_t[:, :, :, :, ::1] weight not None,
                 const floating_t[::1] bias not None, int bias_mode,
                 floating_t[:, :, :, :, ::1] out not None, Py_ssize_t groups,
                 tuple stride, tuple pad, tuple dilation, int num_threads):
    """Fill out (N, F, OD, OH, OW) with the cross-correlation of x and weight.

    bias_mode 0: no bias; 1: bias (F,); 2: untied bias (F, OD * OH * OW).
    pad holds the padding before each axis; the shapes were validated by the caller.
    """
    cdef Geom g = make_geom(x.shape, weight.shape, out.shape, groups,
                            stride, pad, dilation)
    cdef Py_ssize_t mr = block_mr(&KERN, &x[0, 0, 0, 0, 0])
    cdef Py_ssize_t nr = block_nr(&KERN, &x[0, 0, 0, 0, 0])
    cdef Py_ssize_t K = g.Cg * g.KK
    cdef Py_ssize_t Fpad = round_up(g.Fg, mr)
    cdef Py_ssize_t tw = tile_width(g.P, nr)
    cdef Py_ssize_t ntiles = (g.P + tw - 1) // tw
    cdef Py_ssize_t ntasks = g.N * g.G * ntiles
    cdef Py_ssize_t per_thread = KC * tw + CK_MR_MAX * CK_NR_MAX
    cdef int nt = max(1, num_threads)
    cdef floating_t *wpack = <floating_t *> alloc_scratch(g.G * Fpad * K * sizeof(floating_t))
    cdef floating_t *scratch
    cdef floating_t *col
    cdef floating_t *yrow
    cdef const floating_t *xg
    cdef Py_ssize_t t, n, grp, p0, pn, kb, k0, kc, f, j, gi
    try:
        scratch = <floating_t *> alloc_scratch(nt * per_thread * sizeof(floating_t))
    except MemoryError:
        free(wpack)
        raise
    with nogil:
        for gi in range(g.G):
            pack_rows(&weight[gi * g.Fg, 0, 0, 0, 0], K, 1, g.Fg, K, mr, wpack + gi * Fpad * K)
        for t in prange(ntasks, num_threads=nt, schedule="static"):
            col = scratch + threadid() * per_thread
            n = t // (g.G * ntiles)
            grp = (t // ntiles) % g.G
            p0 = (t % ntiles) * tw
            pn = min(tw, g.P - p0)
            xg = &x[n, grp * g.Cg, 0, 0, 0]
            for kb in range((K + KC - 1) // KC):
                k0 = kb * KC
                kc = min(<Py_ssize_t> KC, K - k0)
                im2col(xg, &g, k0, kc, p0, pn, col, tw)
                gemm_block(&KERN, wpack + grp * Fpad * K + k0 * mr, mr * K, g.Fg, kc,
                           col, tw, pn, &out[n, grp * g.Fg, 0, 0, 0] + p0, g.P,
                           col + KC * tw, k0 > 0)
            if bias_mode != 0:
                for f in range(grp * g.Fg, (grp + 1) * g.Fg):
                    yrow = &out[n, f, 0, 0, 0] + p0
                    if bias_mode == 1:
                        for j in range(pn):
                            yrow[j] = yrow[j] + bias[f]
                    else:
                        for j in range(pn):
                            yrow[j] = yrow[j] + bias[f * g.P + p0 + j]
    free(scratch)
    free(wpack)


def conv_backward_input(const floating_t[:, :, :, :, ::1] grad_y not None,
                        const floating_t[:, :, :, :, ::1] weight not None,
                        floating_t[:, :, :, :, ::1] out not None, Py_ssize_t groups,
                        tuple stride, tuple pad, tuple dilation, int num_threads):
    """Fill out (N, C, D, H, W) with the gradient of conv_forward with respect to x."""
    cdef Geom g = make_geom(out.shape, weight.shape, grad_y.shape, groups,
                            stride, pad, dilation)
    cdef Py_ssize_t mr = block_mr(&KERN, &weight[0, 0, 0, 0, 0])
    cdef Py_ssize_t nr = block_nr(&KERN, &weight[0, 0, 0, 0, 0])
    cdef Py_ssize_t K = g.Cg * g.KK
    cdef Py_ssize_t plane = g.D * g.H * g.W
    cdef int nt = max(1, num_threads)
    # Channels per chunk: enough chunks to keep every thread busy when the batch is small.
    cdef Py_ssize_t want = (2 * nt + g.N * g.G - 1) // (g.N * g.G)
    cdef Py_ssize_t cch = max(1, (g.Cg + want - 1) // want)
    cdef Py_ssize_t nchunks = (g.Cg + cch - 1) // cch
    cdef Py_ssize_t rows = cch * g.KK
    cdef Py_ssize_t rb = min(round_up(rows, mr), ROW_BLOCK // mr * mr)
    cdef Py_ssize_t rows_pad = round_up(rows, mr)
    cdef Py_ssize_t tw = tile_width(g.P, nr)
    cdef Py_ssize_t ntasks = g.N * g.G * nchunks
    cdef Py_ssize_t per_thread = g.Fg * tw + rb * tw + CK_MR_MAX * CK_NR_MAX
    cdef floating_t *wpack = <floating_t *> alloc_scratch(
        g.G * nchunks * rows_pad * g.Fg * sizeof(floating_t))
    cdef floating_t *scratch
    cdef floating_t *gyt
    cdef floating_t *cols
    cdef floating_t *gxc
    cdef const floating_t *ap
    cdef Py_ssize_t t, n, grp, ch, c0, c1, nrows, tb, p0, pn, rbi, r0, nb, f, j, gi, ci
    try:
        scratch = <floating_t *> alloc_scratch(nt * per_thread * sizeof(floating_t))
    except MemoryError:
        free(wpack)
        raise
    with nogil:
        # W[g]^T restricted to a chunk's rows, packed: A[r, f] = W[g*Fg + f, c0*KK + r].
        for gi in range(g.G):
            for ci in range(nchunks):
                c0 = ci * cch
                nrows = (min(g.Cg, c0 + cch) - c0) * g.KK
                pack_rows(&weight[gi * g.Fg, 0, 0, 0, 0] + c0 * g.KK, 1, K, nrows, g.Fg,
                          mr, wpack + (gi * nchunks + ci) * rows_pad * g.Fg)
        for t in prange(ntasks, num_threads=nt, schedule="static"):
            gyt = scratch + threadid() * per_thread
            cols = gyt + g.Fg * tw
            n = t // (g.G * nchunks)
            grp = (t // nchunks) % g.G
            ch = t % nchunks
            c0 = ch * cch
            c1 = min(g.Cg, c0 + cch)
            nrows = (c1 - c0) * g.KK
            ap = wpack + (grp * nchunks + ch) * rows_pad * g.Fg
            gxc = &out[n, grp * g.Cg + c0, 0, 0, 0]
            memset(gxc, 0, (c1 - c0) * plane * sizeof(floating_t))
            for tb in range((g.P + tw - 1) // tw):
                p0 = tb * tw
                pn = min(tw, g.P - p0)
                # gy tile (Fg x pn) copied so the micro-kernel may read whole nr slivers
                for f in range(g.Fg):
                    for j in range(pn):
                        gyt[f * tw + j] = grad_y[n, grp * g.Fg + f, 0, 0, p0 + j]
                for rbi in range((nrows + rb - 1) // rb):
                    r0 = rbi * rb
                    nb = min(rb, nrows - r0)
                    gemm_block(&KERN, ap + r0 * g.Fg, mr * g.Fg, nb, g.Fg, gyt, tw, pn,
                               cols, tw, cols + rb * tw, False)
                    col2im_add(cols, tw, &g, r0, nb, p0, pn, gxc)
    free(scratch)
    free(wpack)


def conv_backward_weight(const floating_t[:, :, :, :, ::1] x not None,
                         const floating_t[:, :, :, :, ::1] grad_y not None,
                         floating_t[:, :, :, :, ::1] out not None, Py_ssize_t groups,
                         tuple stride, tuple pad, tuple dilation, int num_threads):
    """Fill out (F, C // groups, KD, KH, KW) with the gradient of conv_forward w.r.t. weight."""
    cdef Geom g = make_geom(x.shape, out.shape, grad_y.shape, groups,
                            stride, pad, dilation)
    cdef Py_ssize_t mr = block_mr(&KERN, &x[0, 0, 0, 0, 0])
    cdef Py_ssize_t nr = block_nr(&KERN, &x[0, 0, 0, 0, 0])
    cdef Py_ssize_t K = g.Cg * g.KK
    cdef int nt = max(1, num_threads)
    cdef Py_ssize_t tw = tile_width(g.P, nr)
    cdef Py_ssize_t fpad = round_up(g.Fg, nr)
    cdef Py_ssize_t rb = min(round_up(K, mr), ROW_BLOCK // mr * mr)
    cdef Py_ssize_t nkb = (K + rb - 1) // rb
    cdef Py_ssize_t part = g.G * K * g.Fg
    # Batch chunks: a function of N and the shapes only (bitwise reproducible).
    cdef Py_ssize_t nchunks = max(1, min(g.N, MAX_CHUNKS,
                                         PARTIAL_BYTES // max(1, part * <Py_ssize_t> sizeof(floating_t))))
    cdef Py_ssize_t per_chunk = (g.N + nchunks - 1) // nchunks
    cdef Py_ssize_t ntasks
    cdef Py_ssize_t per_thread = rb * tw + rb * tw + tw * fpad + CK_MR_MAX * CK_NR_MAX
    cdef floating_t *partials
    cdef floating_t *scratch
    cdef floating_t *col
    cdef floating_t *apack
    cdef floating_t *gyt
    cdef floating_t *dst
    cdef floating_t s
    cdef Py_ssize_t t, b, grp, kb, r0, nb, n, n0, n1, tb, p0, pn, f, j, k
    cdef bint first
    nchunks = (g.N + per_chunk - 1) // per_chunk
    ntasks = nchunks * g.G * nkb
    partials = <floating_t *> alloc_scratch(nchunks * part * sizeof(floating_t))
    try:
        scratch = <floating_t *> alloc_scratch(nt * per_thread * sizeof(floating_t))
    except MemoryError:
        free(partials)
        raise
    with nogil:
        for t in prange(ntasks, num_threads=nt, schedule="static"):
            col = scratch + threadid() * per_thread
            apack = col + rb * tw
            gyt = apack + rb * tw
            b = t // (g.G * nkb)
            grp = (t // nkb) % g.G
            kb = t % nkb
            r0 = kb * rb
            nb = min(rb, K - r0)
            # rows r0 .. r0 + nb of partial[b, grp]^T, which is K x Fg
            dst = partials + (b * g.G + grp) * K * g.Fg + r0 * g.Fg
            n0 = b * per_chunk
            n1 = min(g.N, n0 + per_chunk)
            first = True
            for n in range(n0, n1):
                for tb in range((g.P + tw - 1) // tw):
                    p0 = tb * tw
                    pn = min(tw, g.P - p0)
                    im2col(&x[n, grp * g.Cg, 0, 0, 0], &g, r0, nb, p0, pn, col, tw)
                    pack_rows(col, tw, 1, nb, pn, mr, apack)
                    # gy^T tile: gyt[j, f] = gy[n, grp*Fg + f, p0 + j]
                    for f in range(g.Fg):
                        for j in range(pn):
                            gyt[j * fpad + f] = grad_y[n, grp * g.Fg + f, 0, 0, p0 + j]
                    gemm_block(&KERN, apack, mr * pn, nb, pn, gyt, fpad, g.Fg, dst, g.Fg,
                               gyt + tw * fpad, not first)
                    first = False
        # out[grp*Fg + f, k] = sum over chunks, in chunk order, of partial[b, grp][k, f]
        for f in prange(g.F, num_threads=nt, schedule="static"):
            grp = f // g.Fg
            for k in range(K):
                s = 0
                for b in range(nchunks):
                    s = s + partials[(b * g.G + grp) * K * g.Fg + k * g.Fg + f % g.Fg]
                (&out[f, 0, 0, 0, 0])[k] = s
    free(scratch)
    free(partials)


def conv_backward_bias(const floating_t[:, :, ::1] grad_y not None,
                       floating_t[::1] out not None, bint untied, int num_threads):
    """Fill out with the bias gradient of grad_y viewed as (N, F, P).

    out is (F,) for a bias per filter, or (F * P,) for an untied bias.  Sums over the
    batch and the positions run in a fixed order, in double precision.
    """
    cdef Py_ssize_t N = grad_y.shape[0], F = grad_y.shape[1], P = grad_y.shape[2]
    cdef Py_ssize_t n, f, p
    cdef double s
    cdef int nt = max(1, num_threads)
    with nogil:
        for f in prange(F, num_threads=nt, schedule="static"):
            if untied:
                for p in range(P):
                    s = 0
                    for n in range(N):
                        s = s + grad_y[n, f, p]
                    out[f * P + p] = <floating_t> s
            else:
                s = 0
                for n in range(N):
                    for p in range(P):
                        s = s + grad_y[n, f, p]
                out[f] = <floating_t> s
