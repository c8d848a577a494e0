# The geometry of a call, the tiling of the direct (slab) path and when it applies, and
# small helpers shared by the passes.  Included by _conv.pyx.


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


cdef extern from "prefetch.h":
    void ck_prefetch_rows(const void *p, Py_ssize_t stride, Py_ssize_t rows,
                          Py_ssize_t bytes) noexcept nogil


cdef extern from "scratch_cache.h":
    void *ck_scratch_alloc(size_t n, int zero) noexcept nogil
    void ck_scratch_free(void *p) noexcept nogil
    void ck_scratch_release_cache() noexcept nogil
    size_t ck_cache_total


cdef void *alloc_scratch(Py_ssize_t nbytes) except NULL:
    """Zeroed scratch on a 64-byte line, released with release (scratch_cache.h: the
    last large blocks are kept for the next call)."""
    cdef void *p = ck_scratch_alloc(<size_t> max(nbytes, 1), 1)
    if p == NULL:
        raise MemoryError(f"convkern: cannot allocate {nbytes} bytes of scratch")
    return p


cdef void *alloc_uninit(Py_ssize_t nbytes) except NULL:
    """Scratch that the caller writes in full before reading it: alloc_scratch without
    the zeroing (a whole extra pass over it).  Like every scratch block it starts on a
    64-byte line, so that threads splitting a product's rows by columns do not share a
    line at every cut (MobileNetV2's 160 -> 960 1x1 input gradient at batch 1, with
    malloc's 16-byte alignment: 0.265 ms on 2 threads, slower than on 1; aligned 0.17)."""
    cdef void *p = ck_scratch_alloc(<size_t> max(nbytes, 1), 0)
    if p == NULL:
        raise MemoryError(f"convkern: cannot allocate {nbytes} bytes of scratch")
    return p


cdef inline void release(void *p) noexcept nogil:
    """Release scratch from alloc_scratch or alloc_uninit (NULL is a no-op)."""
    ck_scratch_free(p)


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
    """dst[j * ldd + i] = src[i * lds + j] for i < rows, j < cols (the running CPU's
    transpose kernel: vector blocks transposed in registers)."""
    if floating_t is float:
        KERN.s.transpose(src, lds, rows, cols, dst, ldd)
    else:
        KERN.d.transpose(src, lds, rows, cols, dst, ldd)


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
    Py_ssize_t vsegs               # (rowvec) vector rows per output row: 1, or OW / vl


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
                                 Py_ssize_t width, Py_ssize_t cols) noexcept nogil:
    """Columns a tile computes (unroll.Tile.npos)."""
    return ((planes - 1) * srows + rows - 1) * width + cols


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
    columns are a whole number of slivers.  So do rows of whole vectors when a sliver is
    two of them (d.vsegs = OW / vl vector rows per output row; two vectors are always
    equally spaced, so a sliver may end one output row and start the next): a strided
    stem's 112-column output rows are 7 vectors of 16, 3.5 slivers of 32, and its halo
    tile computed 12% more columns and copied every output out of it.
    """
    cdef DirectPlan d
    cdef Py_ssize_t halo = (g.KW - 1) * g.dw // g.sw, hh = (g.KH - 1) * g.dh // g.sh
    cdef Py_ssize_t phases = g.sd * g.sh * g.sw
    cdef Py_ssize_t width = g.OW + halo, r, n, unit, rmax
    cdef double eff, best = -1
    d.planes = 1
    d.rowvec = False
    d.vsegs = 1
    # rows per tile must be a multiple of unit for rows * OW to fill whole slivers
    unit = nr // gcd(g.OW, nr) if g.OW > 0 else 1
    rmax = (max_tile // g.OW) // unit * unit if 0 < g.OW and width <= max_tile else 0
    if (vl > 0 and (g.OW == vl or g.OW % nr == 0 or (nr == 2 * vl and g.OW % vl == 0))
            and g.OH % unit == 0 and rmax > 0):
        d.rowvec = True
        if g.OW != vl and g.OW % nr != 0:
            d.vsegs = g.OW // vl
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
                if tile_npos(n, g.OH, g.OH + hh, width, g.OW) > max_tile:
                    break
                eff = (<double> (n * g.OH * g.OW)
                       / round_up(tile_npos(n, g.OH, g.OH + hh, width, g.OW), nr))
                if eff >= best:
                    best = eff
                    d.planes = n
    else:
        # one row at a time, in segments of whole slivers (a tile of one row computes
        # no halo column, see tile_npos)
        d.rows = 1
        d.seg = round_up(TILE, nr)
        width = d.seg + halo
    d.npl = (g.OD + d.planes - 1) // d.planes
    d.nrb = (g.OH + d.rows - 1) // d.rows
    d.nseg = (g.OW + d.seg - 1) // d.seg
    # planes up to SLAB_SKEW apart beyond their size (any tile's, at most this one's)
    d.slab = (g.Cg * phases
              * ((d.planes + (g.KD - 1) * g.dd // g.sd) * (d.rows + hh) * width + SLAB_SKEW)
              + halo + nr)
    d.ldc = round_up(tile_npos(d.planes, d.rows, d.rows + hh, width, d.seg), nr)
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


cdef inline Py_ssize_t blocks_per_split(Py_ssize_t tasks, Py_ssize_t blocks,
                                        int nt) noexcept nogil:
    """How many of a task's blocks (of filters, or of reduction rows) one split takes so
    that tasks x splits gives every thread several tasks (a small batch has few)."""
    cdef Py_ssize_t want
    if tasks >= 4 * nt or blocks <= 1:
        return max(1, blocks)
    want = min(blocks, (4 * nt + tasks - 1) // tasks)
    return (blocks + want - 1) // want


cdef inline bint depthwise_axis_fits(Py_ssize_t X, Py_ssize_t K, Py_ssize_t O, Py_ssize_t s,
                                     Py_ssize_t p, Py_ssize_t d) noexcept nogil:
    """One axis of depthwise_fits: a stride the padded copy splits into phases, and a
    window reach and padding (before, and after as the output implies) of at most TILE."""
    cdef Py_ssize_t reach
    if s > MAX_PHASES or K - 1 > TILE or d > TILE or p > TILE:
        return False
    reach = (K - 1) * d
    return reach <= TILE and (O - 1) * s + reach + 1 - X - p <= TILE


cdef inline bint depthwise_fits(const Geom *g) noexcept nogil:
    """The depthwise path applies: one input channel per group, and per axis a stride of at
    most MAX_PHASES and a bounded halo (its zero-padded plane copy splits rows into the
    stride's phases and pads them; huge strides, dilations or paddings would make that
    copy's size overflow)."""
    return (g.Cg == 1
            and depthwise_axis_fits(g.D, g.KD, g.OD, g.sd, g.pd, g.dd)
            and depthwise_axis_fits(g.H, g.KH, g.OH, g.sh, g.ph, g.dh)
            and depthwise_axis_fits(g.W, g.KW, g.OW, g.sw, g.pw, g.dw))
