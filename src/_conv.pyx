# cython: language_level=3
"""Convolution kernels: forward, input gradient, weight gradient and bias gradient.

Design
------
Every pass is a matrix product on small tiles (gemm.pxd), never on a whole-batch
im2col, and every task owns the outputs it writes, so tasks run in parallel (prange)
with no synchronisation:

- forward, direct path: y[n, g] = W[g] (Fg x K) @ B, where B's rows are contiguous
  runs of a zero-padded input slab (unroll.fill_slab; for stride s the slab holds the
  s phases of each axis, so every tap still reads a stride-1 run): a tile of whole
  output rows is computed on the padded row width and the extra columns are dropped
  when the tile is copied out.  Tasks are (image, group, output plane, block of rows,
  column segment).
- forward, strides whose taps skip a phase (a 1x1 kernel with stride 2, say) or huge
  halos: B is an im2col tile of TW output positions (unroll.im2col) in a per-thread
  KC x TW scratch.  Tasks are (image, group, tile).
- input gradient, stride 1: a stride-1 forward correlation of grad_y with the flipped,
  transposed weights (the same direct path).  Stride s: one such correlation per stride
  phase (the input positions i * s + a - p get only the taps with k * d % s == a),
  scattered back into grad_x.  Few input channels per group, non-finite weights or
  strides whose taps skip a phase: cols = W[g]^T @ gy[n, g], scatter-added into grad_x
  (col2im); tasks are (image, group, chunk of input channels), and a channel's rows
  only touch that channel of grad_x.
- weight gradient: grad_w[g] (Fg x K) = sum over images and tiles of
  gy (Fg x TW) . col(x)^T (TW x K).  With many reduction rows K it is a GEMM
  grad_w^T += col(x) @ gy^T whose A rows are read in place (the runs of the input slab
  on the direct path, an im2col tile otherwise) and whose B is the tile's grad_y, staged and
  transposed.  With few rows it runs on dot-product micro-kernels over two sets of rows
  contiguous along the positions: the staged grad_y against the slab runs, or grad_y in
  place against an im2col tile.  Each batch chunk sums into its own partial
  and the partials are added in chunk order.  The chunks depend only on N and the
  shapes, never on the thread count, so the result has the same bits for any number of
  threads.
- bias gradient: per filter sums, parallel over filters, accumulated in double.

The micro-kernels (ukernel.h) use the widest vectors of the running CPU.  Accumulation
is in the input's precision, as in PyTorch.  Every element of every output is computed
by the same sequence of operations whatever thread runs it.
"""

from cython.parallel cimport prange, threadid
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memset

from fused cimport floating_t
from geometry cimport Geom
from gemm cimport (Kernels, select_kernels, block_mr, block_nr, block_vl, dot_rows, dot_cols,
                   round_up, row_offsets, pack_rows, gemm_block, gemm_rows_block, dot_block,
                   KC, CK_MR_MAX, CK_NR_MAX)
from unroll cimport Tile, make_tile, slab_size, im2col, col2im_add, fill_slab, slab_offsets

# KERN: the wide GEMM blocks; KERN4: 4-row blocks for products with at most 4 rows
# (the forward pass with up to 4 filters per group).
cdef Kernels KERN, KERN4
select_kernels(&KERN, &KERN4)

# Output positions per tile (rounded to the micro-kernel width at run time).
cdef Py_ssize_t TILE = 256
# Largest padded tile of the direct (slab) path, and the most (channel, depth tap) slab
# planes it copies per tile.
cdef Py_ssize_t DIRECT_TILE = 512
cdef Py_ssize_t SLAB_CHANNELS = 4096
# Largest stride the slab path splits into phases (per axis).
cdef Py_ssize_t MAX_PHASES = 4
# Rows of the reduction unrolled at once by the input gradient's col2im path.
cdef Py_ssize_t ROW_BLOCK = 256
# Output positions per dot-product tile of the weight gradient.
cdef Py_ssize_t DOT_TILE = 2048
# Upper bound, in bytes, of the weight-gradient partials (one per batch chunk).
cdef Py_ssize_t PARTIAL_BYTES = 32 << 20
cdef Py_ssize_t MAX_CHUNKS = 8


def kernel_info():
    """Return the selected micro-kernels: ISA name and block shapes per dtype."""
    return {
        "isa": KERN.s.name.decode(),
        "float32": {"gemm": (KERN.s.mr, KERN.s.nr), "gemm_narrow": (KERN4.s.mr, KERN4.s.nr),
                    "dot": (KERN.s.dr, KERN.s.dc)},
        "float64": {"gemm": (KERN.d.mr, KERN.d.nr), "gemm_narrow": (KERN4.d.mr, KERN4.d.nr),
                    "dot": (KERN.d.dr, KERN.d.dc)},
    }


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


cdef inline bint has_nonfinite(const floating_t *v, Py_ssize_t n) noexcept nogil:
    """True if any of v[0 .. n) is NaN or infinite (v - v is then NaN)."""
    cdef int bad = 0
    cdef floating_t z
    cdef Py_ssize_t i
    for i in range(n):
        z = v[i] - v[i]
        bad = bad | (z != z)
    return bad != 0


cdef inline void transpose(const floating_t *src, Py_ssize_t lds, Py_ssize_t rows,
                           Py_ssize_t cols, floating_t *dst, Py_ssize_t ldd) noexcept nogil:
    """dst[j * ldd + i] = src[i * lds + j] for i < rows, j < cols, in 16 x 16 blocks
    so that both sides stay in L1."""
    cdef Py_ssize_t i0, j0, i, j
    for j0 in range(0, cols, 16):
        for i0 in range(0, rows, 16):
            for j in range(j0, min(j0 + 16, cols)):
                for i in range(i0, min(i0 + 16, rows)):
                    dst[j * ldd + i] = src[i * lds + j]


cdef inline Py_ssize_t tile_width(Py_ssize_t P, Py_ssize_t nr) noexcept nogil:
    return round_up(min(P, TILE), nr)


cdef inline bint unit_stride(const Geom *g) noexcept nogil:
    return g.sd == 1 and g.sh == 1 and g.sw == 1


cdef struct DirectPlan:
    Py_ssize_t planes, rows, seg   # output planes, rows and columns per tile
    Py_ssize_t npl, nrb, nseg      # tiles along the planes, rows and columns
    Py_ssize_t slab                # slab elements per thread (with slack for whole slivers)
    Py_ssize_t ldc                 # leading dimension of the tile's output (or grad_y) block
    Py_ssize_t per_thread          # scratch elements per thread (correlate_direct)
    bint rowvec                    # vector rows: each micro-kernel vector is one output row


cdef struct OutLayout:
    # Where output (n, f, od, oh, ow) of a correlation goes: y + offset + n * sn +
    # f * sf + od * sd + oh * sh + ow * sw (a contiguous y, or one stride phase of
    # grad_x, see backward_input_phased).
    Py_ssize_t offset, sn, sf, sd, sh, sw


cdef inline OutLayout contiguous(const Geom *g) noexcept nogil:
    cdef OutLayout o
    o.offset = 0
    o.sw = 1
    o.sh = g.OW
    o.sd = g.OH * g.OW
    o.sf = g.P
    o.sn = g.F * g.P
    return o


cdef inline Py_ssize_t tile_npos(Py_ssize_t planes, Py_ssize_t rows, Py_ssize_t srows,
                                 Py_ssize_t width) noexcept nogil:
    return ((planes - 1) * srows + rows) * width


cdef inline Py_ssize_t gcd(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    while b:
        a, b = b, a % b
    return a


cdef DirectPlan plan_direct(const Geom *g, Py_ssize_t nr, Py_ssize_t vl,
                            Py_ssize_t max_tile) noexcept nogil:
    """Tile a correlation into padded tiles of at most max_tile columns (direct_fits).

    A tile computes its outputs plus the halo columns (see unroll.Tile) in slivers of nr;
    the row count (and, when whole planes fit, the plane count) is the one that wastes
    the fewest columns.  With vl > 0 and output rows of one vl-vector or of whole
    nr-slivers, tiles use vector rows instead (d.rowvec, see gemm_block): every vector
    is part of one output row, no halo column is computed, and a tile's rows * OW
    columns are a whole number of slivers.
    """
    cdef DirectPlan d
    cdef Py_ssize_t halo = (g.KW - 1) * g.dw // g.sw, hh = (g.KH - 1) * g.dh // g.sh
    cdef Py_ssize_t phases = g.sd * g.sh * g.sw
    cdef Py_ssize_t width = g.OW + halo, r, n, unit, rmax
    cdef double eff, best = -1
    d.planes = 1
    d.rowvec = False
    # rows per tile must be a multiple of unit for rows * OW to fill whole slivers
    unit = nr // gcd(g.OW, nr) if g.OW > 0 else 1
    rmax = (max_tile // g.OW) // unit * unit if 0 < g.OW and width <= max_tile else 0
    if vl > 0 and (g.OW == vl or g.OW % nr == 0) and g.OH % unit == 0 and rmax > 0:
        d.rowvec = True
        d.seg = g.OW
        if rmax >= g.OH:
            # whole planes, as many as fit, spread evenly over the tiles
            d.rows = g.OH
            n = (g.OD + rmax // g.OH - 1) // (rmax // g.OH)
            d.planes = (g.OD + n - 1) // n
        else:
            n = (g.OH + rmax - 1) // rmax
            d.rows = round_up((g.OH + n - 1) // n, unit)
    elif width <= max_tile:
        d.seg = g.OW
        d.rows = 1
        for r in range(1, min(g.OH, max_tile // width) + 1):
            eff = <double> (r * g.OW) / round_up(r * width, nr)
            if eff >= best:
                best = eff
                d.rows = r
        # the same number of row blocks, evened out (no short last block)
        n = (g.OH + d.rows - 1) // d.rows
        d.rows = (g.OH + n - 1) // n
        if d.rows == g.OH:
            for n in range(2, g.OD + 1):
                if tile_npos(n, g.OH, g.OH + hh, width) > max_tile:
                    break
                eff = <double> (n * g.OH * g.OW) / round_up(tile_npos(n, g.OH, g.OH + hh, width), nr)
                if eff >= best:
                    best = eff
                    d.planes = n
    else:
        # one row at a time, in segments whose padded width is a multiple of nr
        d.rows = 1
        d.seg = round_up(TILE + halo, nr) - halo
        width = d.seg + halo
    d.npl = (g.OD + d.planes - 1) // d.planes
    d.nrb = (g.OH + d.rows - 1) // d.rows
    d.nseg = (g.OW + d.seg - 1) // d.seg
    d.slab = (g.Cg * phases * (d.planes + (g.KD - 1) * g.dd // g.sd) * (d.rows + hh) * width
              + halo + nr)
    d.ldc = round_up(tile_npos(d.planes, d.rows, d.rows + hh, width), nr)
    if d.rowvec:
        d.ldc = d.planes * d.rows * g.OW
    # the output tile holds whole mr-row blocks (up to CK_MR_MAX rows past Fg)
    d.per_thread = d.slab + (g.Fg + CK_MR_MAX) * d.ldc + CK_MR_MAX * CK_NR_MAX
    return d


cdef inline Tile tile_of(const Geom *g, const DirectPlan *d, Py_ssize_t i) noexcept nogil:
    """The i-th tile of a plane block / row block / column segment walk."""
    return make_tile(g, i // (d.nrb * d.nseg) * d.planes, d.planes,
                     (i // d.nseg) % d.nrb * d.rows, d.rows, i % d.nseg * d.seg, d.seg)


cdef inline bint taps_cover_phases(Py_ssize_t k, Py_ssize_t dil, Py_ssize_t s) noexcept nogil:
    """True if the taps i * dil (i < k) fall in every stride phase 0 .. s - 1."""
    cdef Py_ssize_t a, i
    cdef bint hit
    if k < s or s > MAX_PHASES:
        return False
    for a in range(s):
        hit = False
        for i in range(min(k, s)):  # i * dil % s repeats with a period dividing s
            hit = hit or i * dil % s == a
        if not hit:
            return False
    return True


cdef inline bint direct_fits(const Geom *g) noexcept nogil:
    """The slab path applies: every stride phase of the input is read by some tap (the
    slab copies them all, see unroll.fill_slab), and the halo is small enough that the
    padded slab stays a small tile."""
    return (taps_cover_phases(g.KD, g.dd, g.sd) and taps_cover_phases(g.KH, g.dh, g.sh)
            and taps_cover_phases(g.KW, g.dw, g.sw)
            and (g.KW - 1) * g.dw // g.sw <= TILE and (g.KH - 1) * g.dh // g.sh <= TILE
            and (g.KD - 1) * g.dd // g.sd <= TILE
            and g.Cg * g.sd * g.sh * g.sw * ((g.KD - 1) * g.dd // g.sd + 1) <= SLAB_CHANNELS)


cdef void correlate_direct(const floating_t *x, const Geom *g, const floating_t *wpack,
                           const floating_t *bias, int bias_mode, floating_t *y,
                           const OutLayout *out, const DirectPlan *d, floating_t *scratch,
                           Py_ssize_t *offsets, const Kernels *kern, int nt) noexcept nogil:
    """Direct-path correlation y = x * W + bias with the weights packed per group.

    x is (N, C, D, H, W), contiguous; y (N, F, OD, OH, OW) is laid out as out says
    (contiguous whenever there is a bias); wpack holds G blocks of round_up(Fg, mr) x K
    packed rows for kern's mr.  Tasks are (image, group, tile).
    """
    cdef Py_ssize_t mr = block_mr(kern, x), nr = block_nr(kern, x), K = g.Cg * g.KK
    cdef Py_ssize_t fpad = round_up(g.Fg, mr)
    cdef Py_ssize_t plane_in = g.D * g.H * g.W
    cdef Py_ssize_t ntiles = d.npl * d.nrb * d.nseg
    cdef Py_ssize_t t, n, grp, f, pz, r, q, p, ncols, row_len, pitch, cplane
    cdef Tile tile
    cdef floating_t *slab
    cdef floating_t *ctile
    cdef floating_t *src
    cdef floating_t *dst
    cdef Py_ssize_t *boff
    cdef Py_ssize_t *roff
    for t in prange(g.N * g.G * ntiles, num_threads=nt, schedule="static"):
        slab = scratch + threadid() * d.per_thread
        ctile = slab + d.slab
        boff = offsets + threadid() * (K + d.planes * d.rows)
        roff = boff + K
        n = t // (g.G * ntiles)
        grp = (t // ntiles) % g.G
        tile = tile_of(g, d, t % ntiles)
        fill_slab(x + (n * g.C + grp * g.Cg) * plane_in, g, &tile, slab)
        slab_offsets(g, &tile, boff)
        # output (pz, r, q) is column pz * cplane + r * pitch + q of the tile's matrix:
        # vector rows are packed, padded-row tiles keep the slab's halo columns
        if d.rowvec:
            ncols = tile.planes * tile.rows * tile.cols
            row_len = tile.cols
            pitch = tile.cols
            cplane = tile.rows * tile.cols
            for pz in range(tile.planes):
                for r in range(tile.rows):
                    roff[pz * tile.rows + r] = (pz * tile.srows + r) * tile.width
        else:
            ncols = tile.npos
            row_len = 0
            pitch = tile.width
            cplane = tile.srows * tile.width
        # whole mr x nr blocks into the tile (the packed rows past Fg are zero, the slab
        # and the tile have room for the last sliver): no ragged-edge copies
        gemm_block(kern, wpack + grp * fpad * K, mr * K, fpad, K, slab, boff, row_len, roff,
                   round_up(ncols, nr), ctile, d.ldc, ctile + fpad * d.ldc, False)
        # copy the tile's outputs out, dropping the halo columns, adding the bias
        for f in range(g.Fg):
            for pz in range(tile.planes):
                for r in range(tile.rows):
                    src = ctile + f * d.ldc + pz * cplane + r * pitch
                    p = ((tile.od0 + pz) * g.OH + tile.oh0 + r) * g.OW + tile.w0
                    dst = y + (out.offset + n * out.sn + (grp * g.Fg + f) * out.sf
                               + (tile.od0 + pz) * out.sd + (tile.oh0 + r) * out.sh
                               + tile.w0 * out.sw)
                    if bias_mode == 0 and out.sw != 1:
                        for q in range(tile.cols):
                            dst[q * out.sw] = src[q]
                    elif bias_mode == 0:
                        for q in range(tile.cols):
                            dst[q] = src[q]
                    elif bias_mode == 1:
                        for q in range(tile.cols):
                            dst[q] = src[q] + bias[grp * g.Fg + f]
                    else:
                        for q in range(tile.cols):
                            dst[q] = src[q] + bias[(grp * g.Fg + f) * g.P + p + q]


cdef void correlate_im2col(const floating_t *x, const Geom *g, const floating_t *wpack,
                           const floating_t *bias, int bias_mode, floating_t *y,
                           Py_ssize_t tw, floating_t *scratch, Py_ssize_t *offsets,
                           const Kernels *kern, int nt) noexcept nogil:
    """Any-stride correlation y = x * W + bias on im2col tiles of tw positions."""
    cdef Py_ssize_t mr = block_mr(kern, x), K = g.Cg * g.KK
    cdef Py_ssize_t fpad = round_up(g.Fg, mr)
    cdef Py_ssize_t plane_in = g.D * g.H * g.W
    cdef Py_ssize_t ntiles = (g.P + tw - 1) // tw
    cdef Py_ssize_t per_thread = KC * tw + CK_MR_MAX * CK_NR_MAX
    cdef Py_ssize_t t, n, grp, p0, pn, kb, k0, kc, f, j
    cdef floating_t *col
    cdef floating_t *yrow
    for t in prange(g.N * g.G * ntiles, num_threads=nt, schedule="static"):
        col = scratch + threadid() * per_thread
        n = t // (g.G * ntiles)
        grp = (t // ntiles) % g.G
        p0 = (t % ntiles) * tw
        pn = min(tw, g.P - p0)
        for kb in range((K + KC - 1) // KC):
            k0 = kb * KC
            kc = min(<Py_ssize_t> KC, K - k0)
            im2col(x + (n * g.C + grp * g.Cg) * plane_in, g, k0, kc, p0, pn, col, tw, 0)
            gemm_block(kern, wpack + grp * fpad * K + k0 * mr, mr * K, g.Fg, kc, col,
                       offsets, 0, NULL, pn, y + (n * g.F + grp * g.Fg) * g.P + p0, g.P,
                       col + KC * tw, k0 > 0)
        if bias_mode != 0:
            for f in range(grp * g.Fg, (grp + 1) * g.Fg):
                yrow = y + (n * g.F + f) * g.P + p0
                if bias_mode == 1:
                    for j in range(pn):
                        yrow[j] = yrow[j] + bias[f]
                else:
                    for j in range(pn):
                        yrow[j] = yrow[j] + bias[f * g.P + p0 + j]


cdef void correlate(const floating_t *x, const Geom *g, const floating_t *wpack,
                    const floating_t *bias, int bias_mode, floating_t *y,
                    const OutLayout *out, const Kernels *kern, int nt) except *:
    """y = x * W + bias on the best path for the geometry; wpack as in correlate_direct.

    y is laid out as out says: a layout other than contiguous(g) needs direct_fits(g).
    """
    cdef Py_ssize_t nr = block_nr(kern, x), K = g.Cg * g.KK
    cdef Py_ssize_t tw = tile_width(g.P, nr)
    cdef DirectPlan d
    cdef floating_t *scratch
    cdef Py_ssize_t *offsets
    if direct_fits(g):
        d = plan_direct(g, nr, block_vl(kern, x), DIRECT_TILE)
        offsets = <Py_ssize_t *> alloc_scratch(nt * (K + d.planes * d.rows) * sizeof(Py_ssize_t))
        try:
            scratch = <floating_t *> alloc_scratch(nt * d.per_thread * sizeof(floating_t))
        except MemoryError:
            free(offsets)
            raise
        with nogil:
            correlate_direct(x, g, wpack, bias, bias_mode, y, out, &d, scratch, offsets, kern, nt)
    else:
        offsets = <Py_ssize_t *> alloc_scratch(KC * sizeof(Py_ssize_t))
        try:
            scratch = <floating_t *> alloc_scratch(
                nt * (KC * tw + CK_MR_MAX * CK_NR_MAX) * sizeof(floating_t))
        except MemoryError:
            free(offsets)
            raise
        row_offsets(offsets, KC, tw)
        with nogil:
            correlate_im2col(x, g, wpack, bias, bias_mode, y, tw, scratch, offsets, kern, nt)
    free(scratch)
    free(offsets)


def conv_forward(const floating_t[:, :, :, :, ::1] x not None,
                 const floating_t[:, :, :, :, ::1] weight not None,
                 const floating_t[::1] bias not None, int bias_mode,
                 floating_t[:, :, :, :, ::1] out not None, Py_ssize_t groups,
                 tuple stride, tuple pad, tuple dilation, int num_threads):
    """Fill out (N, F, OD, OH, OW) with the cross-correlation of x and weight.

    bias_mode 0: no bias; 1: bias (F,); 2: untied bias (F, OD * OH * OW).
    pad holds the padding before each axis; the shapes were validated by the caller.
    """
    cdef Geom g = make_geom(x.shape, weight.shape, out.shape, groups, stride, pad, dilation)
    cdef const Kernels *kern = &KERN4 if g.Fg <= 4 else &KERN
    cdef OutLayout layout
    cdef Py_ssize_t mr = block_mr(kern, &x[0, 0, 0, 0, 0])
    cdef Py_ssize_t K = g.Cg * g.KK, fpad = round_up(g.Fg, mr), gi
    cdef floating_t *wpack = <floating_t *> alloc_scratch(g.G * fpad * K * sizeof(floating_t))
    with nogil:
        for gi in range(g.G):
            pack_rows(&weight[gi * g.Fg, 0, 0, 0, 0], K, 1, g.Fg, K, mr, wpack + gi * fpad * K)
    try:
        layout = contiguous(&g)
        correlate(&x[0, 0, 0, 0, 0], &g, wpack, &bias[0] if bias.shape[0] else NULL,
                  bias_mode, &out[0, 0, 0, 0, 0], &layout, kern, max(1, num_threads))
    finally:
        free(wpack)


cdef bint flip_fits(const Geom *g) noexcept nogil:
    """True if the input gradient is a stride-1 correlation with non-negative padding."""
    return (unit_stride(g) and g.pd <= (g.KD - 1) * g.dd and g.ph <= (g.KH - 1) * g.dh
            and g.pw <= (g.KW - 1) * g.dw)


cdef void backward_input_flipped(const floating_t *gy, const floating_t *w, const Geom *g,
                                 floating_t *gx, int nt) except *:
    """grad_x = grad_y * flip(W)^T, a stride-1 correlation of grad_y (see flip_fits)."""
    cdef Geom t = g[0]
    cdef OutLayout layout
    cdef Py_ssize_t mr = block_mr(&KERN, gy)
    cdef Py_ssize_t K = g.Fg * g.KK, cpad = round_up(g.Cg, mr)
    cdef Py_ssize_t gi, b, k, i, c, f, kk
    cdef floating_t *wpack
    # the correlation reads grad_y as its input and writes grad_x as its output
    t.C, t.D, t.H, t.W = g.F, g.OD, g.OH, g.OW
    t.F, t.Cg, t.Fg = g.C, g.Fg, g.Cg
    t.OD, t.OH, t.OW, t.P = g.D, g.H, g.W, g.D * g.H * g.W
    t.pd = (g.KD - 1) * g.dd - g.pd
    t.ph = (g.KH - 1) * g.dh - g.ph
    t.pw = (g.KW - 1) * g.dw - g.pw
    wpack = <floating_t *> alloc_scratch(g.G * cpad * K * sizeof(floating_t))
    with nogil:
        # packed A[c, f * KK + kk] = W[grp * Fg + f, c, KK - 1 - kk] per group
        for gi in range(g.G):
            for b in range(cpad // mr):
                for k in range(K):
                    f = k // g.KK
                    kk = k % g.KK
                    for i in range(mr):
                        c = b * mr + i
                        wpack[((gi * cpad // mr + b) * K + k) * mr + i] = (
                            w[((gi * g.Fg + f) * g.Cg + c) * g.KK + g.KK - 1 - kk]
                            if c < g.Cg else 0)
    try:
        layout = contiguous(&t)
        correlate(gy, &t, wpack, NULL, 0, gx, &layout, &KERN, nt)
    finally:
        free(wpack)


cdef void backward_input_col2im(const floating_t *gy, const floating_t *w, const Geom *g,
                                floating_t *gx, int nt) except *:
    """grad_x by cols = W^T @ grad_y followed by col2im, for any stride."""
    cdef Py_ssize_t mr = block_mr(&KERN, gy), nr = block_nr(&KERN, gy)
    cdef Py_ssize_t K = g.Cg * g.KK
    cdef Py_ssize_t plane = g.D * g.H * g.W
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
    cdef floating_t *scratch = NULL
    cdef Py_ssize_t *offsets = NULL
    cdef floating_t *gyt
    cdef floating_t *cols
    cdef floating_t *gxc
    cdef const floating_t *ap
    cdef Py_ssize_t t, n, grp, ch, c0, c1, nrows, tb, p0, pn, rbi, r0, nb, f, j, gi, ci
    try:
        scratch = <floating_t *> alloc_scratch(nt * per_thread * sizeof(floating_t))
        offsets = <Py_ssize_t *> alloc_scratch(g.Fg * sizeof(Py_ssize_t))
    except MemoryError:
        free(wpack)
        free(scratch)
        raise
    row_offsets(offsets, g.Fg, tw)
    with nogil:
        # W[g]^T restricted to a chunk's rows, packed: A[r, f] = W[g*Fg + f, c0*KK + r].
        for gi in range(g.G):
            for ci in range(nchunks):
                c0 = ci * cch
                nrows = (min(g.Cg, c0 + cch) - c0) * g.KK
                pack_rows(w + gi * g.Fg * K + c0 * g.KK, 1, K, nrows, g.Fg,
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
            gxc = gx + (n * g.C + grp * g.Cg + c0) * plane
            memset(gxc, 0, (c1 - c0) * plane * sizeof(floating_t))
            for tb in range((g.P + tw - 1) // tw):
                p0 = tb * tw
                pn = min(tw, g.P - p0)
                # gy tile (Fg x pn) copied so the micro-kernel may read whole nr slivers
                for f in range(g.Fg):
                    for j in range(pn):
                        gyt[f * tw + j] = gy[(n * g.F + grp * g.Fg + f) * g.P + p0 + j]
                for rbi in range((nrows + rb - 1) // rb):
                    r0 = rbi * rb
                    nb = min(rb, nrows - r0)
                    gemm_block(&KERN, ap + r0 * g.Fg, mr * g.Fg, nb, g.Fg, gyt, offsets,
                               0, NULL, pn, cols, tw, cols + rb * tw, False)
                    col2im_add(cols, tw, g, r0, nb, p0, pn, gxc)
    free(scratch)
    free(offsets)
    free(wpack)


cdef struct AxisPhase:
    # The taps and outputs of one stride phase a of one axis of the input gradient:
    # grad_x[i * s + a - p] for i = q0 .. q0 + count - 1 gets grad_y[i - m] * w[k] for
    # the n taps k = kmax, kmax - kstep, ... with k * d % s == a, where m = (k*d - a)/s.
    # As a stride-1 correlation of grad_y over u = i - q0: tap j (k = kmax - j * kstep)
    # reads grad_y[u - pad + j * dil], with pad = mmax - q0 and dil = d / gcd(d, s).
    Py_ssize_t n, kmax, kstep, dil, pad, q0, count


cdef inline Py_ssize_t floor_div(Py_ssize_t x, Py_ssize_t s) noexcept nogil:
    return x // s if x >= 0 else -((-x + s - 1) // s)


cdef AxisPhase axis_phase(Py_ssize_t K, Py_ssize_t d, Py_ssize_t s, Py_ssize_t p,
                          Py_ssize_t size, Py_ssize_t a) noexcept nogil:
    """Phase a of an axis with kernel K, dilation d, stride s, padding p and input size."""
    cdef AxisPhase ph
    cdef Py_ssize_t k
    ph.n = 0
    ph.kmax = -1
    for k in range(K):
        if k * d % s == a:
            ph.n += 1
            ph.kmax = k
    ph.kstep = s // gcd(d, s)
    ph.dil = d // gcd(d, s)
    ph.q0 = -floor_div(a - p, s)                  # first i with i * s + a - p >= 0
    ph.count = max(0, floor_div(size - 1 + p - a, s) - ph.q0 + 1)
    ph.pad = (ph.kmax * d - a) // s - ph.q0 if ph.n > 0 else 0
    return ph


cdef inline AxisPhase phase_of(const Geom *g, Py_ssize_t i, int axis) noexcept nogil:
    """Axis 0, 1 or 2 (D, H, W) of phase i = (a_d * sh + a_h) * sw + a_w."""
    if axis == 0:
        return axis_phase(g.KD, g.dd, g.sd, g.pd, g.D, i // (g.sh * g.sw))
    if axis == 1:
        return axis_phase(g.KH, g.dh, g.sh, g.ph, g.H, i // g.sw % g.sh)
    return axis_phase(g.KW, g.dw, g.sw, g.pw, g.W, i % g.sw)


cdef Geom phase_geom(const Geom *g, Py_ssize_t e, OutLayout *out) noexcept nogil:
    """Phase e of a strided input gradient as a stride-1 correlation of grad_y (see
    AxisPhase), and where its outputs go in grad_x."""
    cdef AxisPhase pd = phase_of(g, e, 0), ph = phase_of(g, e, 1), pw = phase_of(g, e, 2)
    cdef Geom t = g[0]
    t.C, t.D, t.H, t.W = g.F, g.OD, g.OH, g.OW
    t.F, t.Cg, t.Fg = g.C, g.Fg, g.Cg
    t.KD, t.KH, t.KW = pd.n, ph.n, pw.n
    t.KK = pd.n * ph.n * pw.n
    t.OD, t.OH, t.OW = pd.count, ph.count, pw.count
    t.P = pd.count * ph.count * pw.count
    t.sd = t.sh = t.sw = 1
    t.pd, t.ph, t.pw = pd.pad, ph.pad, pw.pad
    t.dd, t.dh, t.dw = pd.dil, ph.dil, pw.dil
    # output u of the phase is grad_x position (q0 + u) * s + a - p on every axis
    out.sw = g.sw
    out.sh = g.sh * g.W
    out.sd = g.sd * g.H * g.W
    out.sf = g.D * g.H * g.W
    out.sn = g.C * g.D * g.H * g.W
    out.offset = (((pd.q0 * g.sd + e // (g.sh * g.sw) - g.pd) * g.H
                   + ph.q0 * g.sh + e // g.sw % g.sh - g.ph) * g.W + pw.q0 * g.sw + e % g.sw - g.pw)
    return t


cdef bint phased_fits(const Geom *g) noexcept nogil:
    """True if a strided input gradient can run phase by phase (backward_input_phased):
    every stride phase of every axis has taps, and each phase takes the direct path
    (which writes its outputs to their strided places in grad_x)."""
    cdef OutLayout out
    cdef Geom t
    cdef Py_ssize_t e
    if (unit_stride(g) or not taps_cover_phases(g.KD, g.dd, g.sd)
            or not taps_cover_phases(g.KH, g.dh, g.sh)
            or not taps_cover_phases(g.KW, g.dw, g.sw)):
        return False
    for e in range(g.sd * g.sh * g.sw):
        t = phase_geom(g, e, &out)
        if not direct_fits(&t):
            return False
    return True


cdef void backward_input_phased(const floating_t *gy, const floating_t *w, const Geom *g,
                                floating_t *gx, int nt) except *:
    """grad_x of a strided convolution, one stride phase at a time.

    The input positions of one phase (i * s + a - p on every axis) receive only the
    taps with k * d % s == a, and as a function of i that is a stride-1 correlation of
    grad_y with those taps flipped (see AxisPhase), which the direct path writes
    straight to those strided positions.  The phases run over chunks of images (about
    4 MiB of grad_x) so that the phases of a chunk meet its grad_x in cache.  Every
    position of grad_x belongs to exactly one phase, and phased_fits makes sure every
    phase has taps: all of grad_x is written.
    """
    cdef AxisPhase pd, ph, pw
    cdef OutLayout out
    cdef Geom t
    cdef Py_ssize_t mr = block_mr(&KERN, gy)
    cdef Py_ssize_t cpad = round_up(g.Cg, mr)
    cdef Py_ssize_t nph = g.sd * g.sh * g.sw, plane = g.D * g.H * g.W
    cdef Py_ssize_t chunk = max(1, min(g.N, (4 << 20) // max(1, g.C * plane * <Py_ssize_t> sizeof(floating_t))))
    cdef Py_ssize_t K, gi, b, k, i, c, f, kk, jd, jh, jw, n0, e
    cdef Py_ssize_t *woff = NULL
    cdef floating_t *wpack = NULL
    try:
        woff = <Py_ssize_t *> alloc_scratch((nph + 1) * sizeof(Py_ssize_t))
        # phase e's packed weights start at woff[e]
        for e in range(nph):
            pd, ph, pw = phase_of(g, e, 0), phase_of(g, e, 1), phase_of(g, e, 2)
            woff[e + 1] = woff[e] + g.G * cpad * g.Fg * pd.n * ph.n * pw.n
        wpack = <floating_t *> alloc_scratch(woff[nph] * sizeof(floating_t))
        with nogil:
            # packed A[c, f * KK' + tap j] = W[grp * Fg + f, c, tap k_j], per phase and group
            for e in range(nph):
                pd, ph, pw = phase_of(g, e, 0), phase_of(g, e, 1), phase_of(g, e, 2)
                K = g.Fg * pd.n * ph.n * pw.n
                for gi in range(g.G):
                    for b in range(cpad // mr):
                        for k in range(K):
                            f = k // (pd.n * ph.n * pw.n)
                            kk = k % (pd.n * ph.n * pw.n)
                            jd = kk // (ph.n * pw.n)
                            jh = kk // pw.n % ph.n
                            jw = kk % pw.n
                            kk = (((pd.kmax - jd * pd.kstep) * g.KH + ph.kmax - jh * ph.kstep)
                                  * g.KW + pw.kmax - jw * pw.kstep)
                            for i in range(mr):
                                c = b * mr + i
                                wpack[woff[e] + ((gi * cpad // mr + b) * K + k) * mr + i] = (
                                    w[((gi * g.Fg + f) * g.Cg + c) * g.KK + kk] if c < g.Cg else 0)
        for n0 in range(0, g.N, chunk):
            for e in range(nph):
                t = phase_geom(g, e, &out)
                if t.P == 0:
                    continue  # an input smaller than the stride: no position in phase e
                t.N = min(chunk, g.N - n0)
                correlate(gy + n0 * g.F * g.P, &t, wpack + woff[e], NULL, 0,
                          gx + n0 * g.C * plane, &out, &KERN, nt)
    finally:
        free(wpack)
        free(woff)


def conv_backward_input(const floating_t[:, :, :, :, ::1] grad_y not None,
                        const floating_t[:, :, :, :, ::1] weight not None,
                        floating_t[:, :, :, :, ::1] out not None, Py_ssize_t groups,
                        tuple stride, tuple pad, tuple dilation, int num_threads):
    """Fill out (N, C, D, H, W) with the gradient of conv_forward with respect to x."""
    cdef Geom g = make_geom(out.shape, weight.shape, grad_y.shape, groups, stride, pad,
                            dilation)
    # The flipped correlation multiplies every weight by grad_y's zero padding too, and
    # 0 * inf would put NaN where the true gradient has no term: such weights take col2im.
    # Its GEMM has only Cg rows, so few input channels also take col2im (K rows): with
    # so little reuse per input element (Cg * KK), copying the slab costs as much as
    # the product, even on the narrow kernels.
    # Strided layers split into stride phases when every phase has taps.
    cdef bint wide = g.Cg >= 2 * block_mr(&KERN, &weight[0, 0, 0, 0, 0])
    if (wide and (flip_fits(&g) or phased_fits(&g))
            and not has_nonfinite(&weight[0, 0, 0, 0, 0], <Py_ssize_t> weight.size)):
        if flip_fits(&g):
            backward_input_flipped(&grad_y[0, 0, 0, 0, 0], &weight[0, 0, 0, 0, 0], &g,
                                   &out[0, 0, 0, 0, 0], max(1, num_threads))
        else:
            backward_input_phased(&grad_y[0, 0, 0, 0, 0], &weight[0, 0, 0, 0, 0], &g,
                                  &out[0, 0, 0, 0, 0], max(1, num_threads))
    else:
        backward_input_col2im(&grad_y[0, 0, 0, 0, 0], &weight[0, 0, 0, 0, 0], &g,
                              &out[0, 0, 0, 0, 0], max(1, num_threads))


cdef inline void dot_accumulate(const Kernels *kern, Py_ssize_t L, const floating_t **a,
                                const floating_t **bp, Py_ssize_t dr, Py_ssize_t dc,
                                Py_ssize_t ni, Py_ssize_t nj, floating_t *res,
                                floating_t *dst, Py_ssize_t ldd) noexcept nogil:
    """dst[i, j] += sum over p < L of a[i][p] * bp[j][p], for i < ni and j < nj."""
    cdef Py_ssize_t i, j
    dot_block(kern, L, a, bp, res)
    for i in range(ni):
        for j in range(nj):
            dst[i * ldd + j] += res[i * dc + j]


cdef inline Py_ssize_t slab_for_runs(const floating_t *xg, const Geom *g, const DirectPlan *d,
                                     const Tile *tile, floating_t *slab,
                                     Py_ssize_t *boff) noexcept nogil:
    """Fill a weight-gradient tile's slab and its tap offsets (boff), and zero the slack
    past it that the last taps' runs read (up to the column halo); returns the slab's
    used size."""
    cdef Py_ssize_t used = slab_size(g, tile)
    fill_slab(xg, g, tile, slab)
    memset(slab + used, 0, (d.slab - used) * sizeof(floating_t))
    slab_offsets(g, tile, boff)
    return used


cdef inline void stage_grad_y(const floating_t *gyg, const Geom *g, const Tile *tile,
                              floating_t *gys, Py_ssize_t ld) noexcept nogil:
    """gys[f * ld + j] = grad_y at the tile's output column j (see unroll.Tile) for
    f < Fg, and 0 in the halo columns j < npos; gyg points at filter 0 of the group."""
    cdef Py_ssize_t f, pz, r, base
    cdef const floating_t *src
    for f in range(g.Fg):
        for pz in range(tile.planes):
            for r in range(tile.rows):
                src = gyg + f * g.P + ((tile.od0 + pz) * g.OH + tile.oh0 + r) * g.OW + tile.w0
                base = (pz * tile.srows + r) * tile.width
                memcpy(gys + f * ld + base, src, tile.cols * sizeof(floating_t))
                memset(gys + f * ld + base + tile.cols, 0,
                       (min(base + tile.width, tile.npos) - base - tile.cols) * sizeof(floating_t))


cdef void weight_grad_direct(const floating_t *x, const floating_t *gy, const Geom *g,
                             floating_t *partials, Py_ssize_t nchunks, Py_ssize_t per_chunk,
                             const DirectPlan *d, floating_t *scratch, Py_ssize_t per_thread,
                             Py_ssize_t *offsets, const Py_ssize_t *gyt_rows,
                             const floating_t **ptrs,
                             int nt) noexcept nogil:
    """Direct-path weight gradient: grad_w[g]^T (K x Fg) += slab runs (K x L) @ gy^T (L x Fg).

    The K rows of A are the taps' runs in the input slab, read in place by the gemm_rows
    micro-kernel; B is the tile's grad_y transposed, zero in the halo columns.  A tile
    whose slab holds a NaN or infinity (0 * inf would be NaN) is reduced row by row over
    the valid columns only.  Tasks are (batch chunk, group); partial[b] is G x K x Fg.
    """
    cdef Py_ssize_t nr = block_nr(&KERN, x), mr = block_mr(&KERN, x)
    cdef Py_ssize_t K = g.Cg * g.KK, plane_in = g.D * g.H * g.W
    cdef Py_ssize_t fpad = round_up(g.Fg, nr)
    cdef Py_ssize_t ntiles = d.npl * d.nrb * d.nseg
    cdef Py_ssize_t t, b, grp, n, i, k, pz, r, base, used
    cdef bint image_finite
    cdef Tile tile
    cdef floating_t *slab
    cdef floating_t *gyt
    cdef floating_t *gys
    cdef floating_t *dst
    cdef Py_ssize_t *boff
    cdef const floating_t **rows
    cdef const floating_t **aptr
    for t in prange(nchunks * g.G, num_threads=nt, schedule="static"):
        slab = scratch + threadid() * per_thread
        gyt = slab + d.slab
        gys = gyt + d.ldc * fpad + CK_MR_MAX * CK_NR_MAX
        boff = offsets + threadid() * K
        rows = ptrs + threadid() * (K + CK_MR_MAX)
        aptr = rows + K
        b = t // g.G
        grp = t % g.G
        dst = partials + b * g.F * K + grp * K * g.Fg
        memset(dst, 0, K * g.Fg * sizeof(floating_t))
        for n in range(b * per_chunk, min(g.N, (b + 1) * per_chunk)):
            # a finite image needs no per-tile check (its slabs hold x and zeros only)
            image_finite = not has_nonfinite(x + (n * g.C + grp * g.Cg) * plane_in, g.Cg * plane_in)
            for i in range(ntiles):
                tile = tile_of(g, d, i)
                used = slab_for_runs(x + (n * g.C + grp * g.Cg) * plane_in, g, d, &tile,
                                     slab, boff)
                for k in range(K):
                    rows[k] = slab + boff[k]
                # grad_y's rows are copied whole, then transposed from cache into gyt
                stage_grad_y(gy + (n * g.F + grp * g.Fg) * g.P, g, &tile, gys, d.ldc)
                transpose(gys, d.ldc, g.Fg, tile.npos, gyt, fpad)
                if image_finite or not has_nonfinite(slab, used):
                    gemm_rows_block(&KERN, rows, 0, K, tile.npos, gyt, gyt_rows, g.Fg, dst,
                                    g.Fg, aptr, gyt + d.ldc * fpad)
                    continue
                for pz in range(tile.planes):
                    for r in range(tile.rows):
                        base = (pz * tile.srows + r) * tile.width
                        gemm_rows_block(&KERN, rows, base, K, tile.cols, gyt + base * fpad,
                                        gyt_rows, g.Fg, dst, g.Fg, aptr, gyt + d.ldc * fpad)


cdef void weight_grad_slab_dot(const floating_t *x, const floating_t *gy, const Geom *g,
                               floating_t *partials, Py_ssize_t nchunks, Py_ssize_t per_chunk,
                               const DirectPlan *d, floating_t *scratch, Py_ssize_t per_thread,
                               Py_ssize_t *offsets, const floating_t **ptrs,
                               int nt) noexcept nogil:
    """Direct-path weight gradient with few reduction rows: grad_w[g] (Fg x K) += gy . runs^T.

    Rows of the tile's staged grad_y (zero in the halo columns) against the K runs of
    the input slab, on the dot micro-kernels: no im2col and no transposition.  A tile
    whose slab holds a NaN or infinity is reduced over the valid columns of each row
    only.  Tasks are (batch chunk, group); partial[b] is F x K.
    """
    cdef Py_ssize_t dr = dot_rows(&KERN, x), dc = dot_cols(&KERN, x)
    cdef Py_ssize_t K = g.Cg * g.KK, plane_in = g.D * g.H * g.W
    cdef Py_ssize_t ntiles = d.npl * d.nrb * d.nseg
    cdef Py_ssize_t t, b, grp, n, i, used, fb, jb, ii, jj, pz, r, base, lpad
    cdef Py_ssize_t vl = block_vl(&KERN, x)
    cdef bint finite, image_finite
    cdef Tile tile
    cdef floating_t *slab
    cdef floating_t *gys
    cdef floating_t *res
    cdef floating_t *dst
    cdef Py_ssize_t *boff
    cdef const floating_t **a
    cdef const floating_t **bp
    for t in prange(nchunks * g.G, num_threads=nt, schedule="static"):
        slab = scratch + threadid() * per_thread
        gys = slab + d.slab
        res = gys + g.Fg * d.ldc
        boff = offsets + threadid() * K
        a = ptrs + threadid() * (dr + dc)
        bp = a + dr
        b = t // g.G
        grp = t % g.G
        dst = partials + b * g.F * K + grp * g.Fg * K
        memset(dst, 0, g.Fg * K * sizeof(floating_t))
        for n in range(b * per_chunk, min(g.N, (b + 1) * per_chunk)):
            # a finite image needs no per-tile check (its slabs hold x and zeros only)
            image_finite = not has_nonfinite(x + (n * g.C + grp * g.Cg) * plane_in, g.Cg * plane_in)
            for i in range(ntiles):
                tile = tile_of(g, d, i)
                used = slab_for_runs(x + (n * g.C + grp * g.Cg) * plane_in, g, d, &tile,
                                     slab, boff)
                stage_grad_y(gy + (n * g.F + grp * g.Fg) * g.P, g, &tile, gys, d.ldc)
                # whole vectors: the sums run to npos rounded up (d.ldc and the slab's
                # slack allow it) over zero grad_y columns, which add exact zeros
                lpad = round_up(tile.npos, vl)
                for ii in range(g.Fg):
                    memset(gys + ii * d.ldc + tile.npos, 0, (lpad - tile.npos) * sizeof(floating_t))
                finite = image_finite or not has_nonfinite(slab, used)
                for fb in range((g.Fg + dr - 1) // dr):
                    # rows past the end repeat the last row; their sums are dropped
                    for ii in range(dr):
                        a[ii] = gys + min(fb * dr + ii, g.Fg - 1) * d.ldc
                    for jb in range((K + dc - 1) // dc):
                        for jj in range(dc):
                            bp[jj] = slab + boff[min(jb * dc + jj, K - 1)]
                        if finite:
                            dot_accumulate(&KERN, lpad, a, bp, dr, dc,
                                           min(dr, g.Fg - fb * dr), min(dc, K - jb * dc),
                                           res, dst + fb * dr * K + jb * dc, K)
                            continue
                        for pz in range(tile.planes):
                            for r in range(tile.rows):
                                base = (pz * tile.srows + r) * tile.width
                                for ii in range(dr):
                                    a[ii] += base
                                for jj in range(dc):
                                    bp[jj] += base
                                dot_accumulate(&KERN, tile.cols, a, bp, dr, dc,
                                               min(dr, g.Fg - fb * dr), min(dc, K - jb * dc),
                                               res, dst + fb * dr * K + jb * dc, K)
                                for ii in range(dr):
                                    a[ii] -= base
                                for jj in range(dc):
                                    bp[jj] -= base


cdef void weight_grad_unrolled(const floating_t *x, const floating_t *gy, const Geom *g,
                               floating_t *partials, Py_ssize_t nchunks, Py_ssize_t per_chunk,
                               Py_ssize_t tw, floating_t *scratch, Py_ssize_t per_thread,
                               const Py_ssize_t *gyt_rows, const floating_t **ptrs,
                               int nt) noexcept nogil:
    """Any-stride weight gradient: grad_w[g]^T (K x Fg) += col (K x tw) @ gy^T (tw x Fg).

    The rows of a per-thread im2col tile are read in place by the gemm_rows micro-kernel;
    B is the tile's grad_y transposed.  Tasks are (batch chunk, group); partial[b] is
    G x K x Fg, as in weight_grad_direct.
    """
    cdef Py_ssize_t nr = block_nr(&KERN, x)
    cdef Py_ssize_t K = g.Cg * g.KK, plane = g.D * g.H * g.W
    cdef Py_ssize_t fpad = round_up(g.Fg, nr)
    cdef Py_ssize_t t, b, grp, n, tb, p0, pn, k, f, j
    cdef floating_t *col
    cdef floating_t *gyt
    cdef floating_t *dst
    cdef const floating_t *src
    cdef const floating_t **rows
    for t in prange(nchunks * g.G, num_threads=nt, schedule="static"):
        col = scratch + threadid() * per_thread
        gyt = col + K * tw
        rows = ptrs + threadid() * (K + CK_MR_MAX)
        b = t // g.G
        grp = t % g.G
        dst = partials + b * g.F * K + grp * K * g.Fg
        memset(dst, 0, K * g.Fg * sizeof(floating_t))
        for k in range(K):
            rows[k] = col + k * tw
        for n in range(b * per_chunk, min(g.N, (b + 1) * per_chunk)):
            for tb in range((g.P + tw - 1) // tw):
                p0 = tb * tw
                pn = min(tw, g.P - p0)
                im2col(x + (n * g.C + grp * g.Cg) * plane, g, 0, K, p0, pn, col, tw, 0)
                # gyt[j, f] = gy[n, grp*Fg + f, p0 + j]
                for f in range(g.Fg):
                    src = gy + (n * g.F + grp * g.Fg + f) * g.P + p0
                    for j in range(pn):
                        gyt[j * fpad + f] = src[j]
                gemm_rows_block(&KERN, rows, 0, K, pn, gyt, gyt_rows, g.Fg, dst, g.Fg,
                                rows + K, gyt + tw * fpad)


cdef void weight_grad_im2col(const floating_t *x, const floating_t *gy, const Geom *g,
                             floating_t *partials, Py_ssize_t nchunks, Py_ssize_t per_chunk,
                             Py_ssize_t tw, Py_ssize_t rb, floating_t *scratch,
                             Py_ssize_t per_thread, const floating_t **ptrs,
                             int nt) noexcept nogil:
    """Any-stride weight gradient: rows of grad_y against rows of an im2col tile.

    Tasks are (batch chunk, group, block of rb reduction rows).
    """
    cdef Py_ssize_t dr = dot_rows(&KERN, x), dc = dot_cols(&KERN, x)
    cdef Py_ssize_t K = g.Cg * g.KK, plane = g.D * g.H * g.W
    cdef Py_ssize_t nkb = (K + rb - 1) // rb
    cdef Py_ssize_t t, b, grp, r0, nb, n, f, tb, p0, pn, fb, jb, i, j
    cdef floating_t *col
    cdef floating_t *res
    cdef floating_t *dst
    cdef const floating_t **a
    cdef const floating_t **bp
    for t in prange(nchunks * g.G * nkb, num_threads=nt, schedule="static"):
        col = scratch + threadid() * per_thread
        res = col + rb * tw
        a = ptrs + threadid() * (dr + dc)
        bp = a + dr
        b = t // (g.G * nkb)
        grp = (t // nkb) % g.G
        r0 = t % nkb * rb
        nb = min(rb, K - r0)
        # columns r0 .. r0 + nb of rows grp*Fg .. (grp + 1)*Fg of partial[b], F x K
        dst = partials + b * g.F * K + grp * g.Fg * K + r0
        for f in range(g.Fg):
            memset(dst + f * K, 0, nb * sizeof(floating_t))
        for n in range(b * per_chunk, min(g.N, (b + 1) * per_chunk)):
            for tb in range((g.P + tw - 1) // tw):
                p0 = tb * tw
                pn = min(tw, g.P - p0)
                im2col(x + (n * g.C + grp * g.Cg) * plane, g, r0, nb, p0, pn, col, tw, 0)
                for fb in range((g.Fg + dr - 1) // dr):
                    # rows past the end repeat the last row; their sums are dropped
                    for i in range(dr):
                        a[i] = gy + (n * g.F + grp * g.Fg + min(fb * dr + i, g.Fg - 1)) * g.P + p0
                    for jb in range((nb + dc - 1) // dc):
                        for j in range(dc):
                            bp[j] = col + min(jb * dc + j, nb - 1) * tw
                        dot_accumulate(&KERN, pn, a, bp, dr, dc, min(dr, g.Fg - fb * dr),
                                       min(dc, nb - jb * dc), res, dst + fb * dr * K + jb * dc, K)


def conv_backward_weight(const floating_t[:, :, :, :, ::1] x not None,
                         const floating_t[:, :, :, :, ::1] grad_y not None,
                         floating_t[:, :, :, :, ::1] out not None, Py_ssize_t groups,
                         tuple stride, tuple pad, tuple dilation, int num_threads):
    """Fill out (F, C // groups, KD, KH, KW) with the gradient of conv_forward w.r.t. weight."""
    cdef Geom g = make_geom(x.shape, out.shape, grad_y.shape, groups, stride, pad, dilation)
    cdef const floating_t *x0 = &x[0, 0, 0, 0, 0]
    cdef floating_t *w0 = &out[0, 0, 0, 0, 0]
    cdef Py_ssize_t dr = dot_rows(&KERN, x0), dc = dot_cols(&KERN, x0)
    cdef Py_ssize_t nr = block_nr(&KERN, x0)
    cdef Py_ssize_t K = g.Cg * g.KK
    cdef int nt = max(1, num_threads)
    cdef Py_ssize_t tw = min(g.P, DOT_TILE), rb = dc * 8
    cdef Py_ssize_t part = g.F * K
    # Batch chunks: a function of N and the shapes only (bitwise reproducible).
    cdef Py_ssize_t nchunks = max(1, min(g.N, MAX_CHUNKS,
                                         PARTIAL_BYTES // max(1, part * <Py_ssize_t> sizeof(floating_t))))
    cdef Py_ssize_t per_chunk = (g.N + nchunks - 1) // nchunks
    # The GEMM paths transpose grad_y per tile, which pays off only over enough
    # reduction rows; short ones (few input channels) take the dot products, on the
    # input slab when direct_fits and on im2col tiles otherwise.
    cdef bint gemm = K >= 4 * nr
    cdef bint direct = gemm and direct_fits(&g)
    cdef bint slab_dot = not gemm and direct_fits(&g)
    cdef DirectPlan d
    cdef Py_ssize_t per_thread, nptrs, noffsets, fpad = round_up(g.Fg, nr)
    # positions per im2col tile of the GEMM path: the K x tile block stays near 512 KiB
    cdef Py_ssize_t tw_gemm = min(g.P, max(16, min(1024, (512 << 10) // (K * <Py_ssize_t> sizeof(floating_t)) // 16 * 16)))
    cdef floating_t *partials
    cdef floating_t *scratch = NULL
    cdef Py_ssize_t *offsets = NULL
    cdef const floating_t **ptrs = NULL
    cdef Py_ssize_t b, f, k
    nchunks = (g.N + per_chunk - 1) // per_chunk
    # per-thread scratch of each path (the kernels carve it in this order):
    # direct: slab, transposed grad_y (ldc x fpad), edge block, staged grad_y (Fg x ldc);
    # slab dot: slab, staged grad_y, dot results; unrolled: im2col tile, transposed
    # grad_y, edge block; im2col dot: im2col rows, dot results
    if direct:
        d = plan_direct(&g, nr, 0, DIRECT_TILE)
        per_thread = d.slab + d.ldc * fpad + CK_MR_MAX * CK_NR_MAX + g.Fg * d.ldc
        noffsets = nt * K + d.ldc
        nptrs = nt * (K + CK_MR_MAX)
    elif slab_dot:
        d = plan_direct(&g, block_vl(&KERN, x0), 0, DOT_TILE)
        per_thread = d.slab + g.Fg * d.ldc + dr * dc
        noffsets = nt * K
        nptrs = nt * (dr + dc)
    elif gemm:
        per_thread = K * tw_gemm + tw_gemm * fpad + CK_MR_MAX * CK_NR_MAX
        noffsets = tw_gemm
        nptrs = nt * (K + CK_MR_MAX)
    else:
        per_thread = rb * tw + dr * dc
        noffsets = 1
        nptrs = nt * (dr + dc)
    partials = <floating_t *> alloc_scratch(nchunks * part * sizeof(floating_t))
    try:
        scratch = <floating_t *> alloc_scratch(nt * per_thread * sizeof(floating_t))
        offsets = <Py_ssize_t *> alloc_scratch(noffsets * sizeof(Py_ssize_t))
        ptrs = <const floating_t **> alloc_scratch(nptrs * sizeof(floating_t *))
    except MemoryError:
        free(partials)
        free(scratch)
        free(offsets)
        raise
    with nogil:
        if direct:
            # rows of the transposed grad_y tile: offsets j * fpad, shared by the threads
            row_offsets(offsets + nt * K, d.ldc, fpad)
            weight_grad_direct(x0, &grad_y[0, 0, 0, 0, 0], &g, partials, nchunks, per_chunk,
                               &d, scratch, per_thread, offsets, offsets + nt * K, ptrs, nt)
        elif slab_dot:
            weight_grad_slab_dot(x0, &grad_y[0, 0, 0, 0, 0], &g, partials, nchunks, per_chunk,
                                 &d, scratch, per_thread, offsets, ptrs, nt)
        elif gemm:
            row_offsets(offsets, tw_gemm, fpad)
            weight_grad_unrolled(x0, &grad_y[0, 0, 0, 0, 0], &g, partials, nchunks, per_chunk,
                                 tw_gemm, scratch, per_thread, offsets, ptrs, nt)
        else:
            weight_grad_im2col(x0, &grad_y[0, 0, 0, 0, 0], &g, partials, nchunks, per_chunk,
                               tw, rb, scratch, per_thread, ptrs, nt)
        # partial[0] += partial[b] for b = 1, 2, ... in chunk order (contiguous adds),
        # then out[f, k] = partial[0] at (f, k): stored G x K x Fg by the GEMM paths
        # and F x K by the dot path
        for f in prange(g.F, num_threads=nt, schedule="static"):
            for b in range(1, nchunks):
                for k in range(K):
                    partials[f * K + k] += partials[b * part + f * K + k]
        for f in prange(g.F, num_threads=nt, schedule="static"):
            if gemm:
                for k in range(K):
                    w0[f * K + k] = partials[(f // g.Fg * K + k) * g.Fg + f % g.Fg]
            else:
                for k in range(K):
                    w0[f * K + k] = partials[f * K + k]
    free(ptrs)
    free(offsets)
    free(scratch)
    free(partials)


cdef enum:
    LANES = 16       # independent double sums of the bias gradient (a fixed fold order)
    BIAS_BLOCK = 256  # positions summed at once by the untied bias gradient


cdef void bias_sum(const floating_t *gy, Py_ssize_t N, Py_ssize_t ld, Py_ssize_t P,
                   floating_t *out) noexcept nogil:
    """out[0] = sum over n < N, p < P of gy[n * ld + p], in double.

    Position p goes to lane p % LANES; the lanes are folded in halves at the end, so
    the order of the additions is fixed (and vectorisable).
    """
    cdef double acc[LANES]
    cdef Py_ssize_t n, p, j, w, pv = P - P % LANES
    cdef const floating_t *row
    for j in range(<Py_ssize_t> LANES):
        acc[j] = 0
    for n in range(N):
        row = gy + n * ld
        for p in range(pv // LANES):
            for j in range(<Py_ssize_t> LANES):
                acc[j] += row[p * LANES + j]
        for p in range(pv, P):
            acc[p - pv] += row[p]
    w = LANES // 2
    while w > 0:
        for j in range(w):
            acc[j] += acc[j + w]
        w = w // 2
    out[0] = <floating_t> acc[0]


cdef void bias_sum_untied(const floating_t *gy, Py_ssize_t N, Py_ssize_t ld, Py_ssize_t P,
                          floating_t *out) noexcept nogil:
    """out[p] = sum over n < N of gy[n * ld + p], in double, for p < P."""
    cdef double acc[BIAS_BLOCK]
    cdef Py_ssize_t b, n, p0, pn, j
    for b in range((P + BIAS_BLOCK - 1) // BIAS_BLOCK):
        p0 = b * BIAS_BLOCK
        pn = min(<Py_ssize_t> BIAS_BLOCK, P - p0)
        for j in range(pn):
            acc[j] = 0
        for n in range(N):
            for j in range(pn):
                acc[j] += gy[n * ld + p0 + j]
        for j in range(pn):
            out[p0 + j] = <floating_t> acc[j]


def conv_backward_bias(const floating_t[:, :, ::1] grad_y not None,
                       floating_t[::1] out not None, bint untied, int num_threads):
    """Fill out with the bias gradient of grad_y viewed as (N, F, P).

    out is (F,) for a bias per filter, or (F * P,) for an untied bias.  Sums over the
    batch and the positions run in a fixed order, in double precision.
    """
    cdef Py_ssize_t N = grad_y.shape[0], F = grad_y.shape[1], P = grad_y.shape[2]
    cdef Py_ssize_t f
    cdef int nt = max(1, num_threads)
    if N == 0 or F == 0 or P == 0:
        out[:] = 0
        return
    with nogil:
        for f in prange(F, num_threads=nt, schedule="static"):
            if untied:
                bias_sum_untied(&grad_y[0, f, 0], N, F * P, P, &out[f * P])
            else:
                bias_sum(&grad_y[0, f, 0], N, F * P, P, &out[f])
