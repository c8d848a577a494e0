# The weight gradient as one GEMM per group over a channels-last copy of the input, read
# in place: no im2col, no halo columns.  Included by _conv.pyx.
#
# With the input copied channels-last and zero-padded (slab[n][position][c], the
# positions those the window reads, see cl_layout), the input patch that output position
# p of image n reads at tap (kd, kh, kw) is a run of Cg channels at one offset, and for
# an undilated innermost axis the KW taps of a row are one run of KW * Cg values.  So, per
# group, with r = (n, p) running over a chunk of images' output positions,
#
#     gw_cl[f, (tap, c)] (Fg x KK * Cg) += gy[f, r] (Fg x R) @ B[r, (tap, c)],
#     B[r, u * run + j] = slab[boff[r] + shift(u) + j],
#
# where run u is a (kd, kh) row of taps (or one tap when the innermost axis is dilated)
# and boff[r] is where position r's window starts.  The GEMM micro-kernel reads B's rows
# through boff, so B is never built; A is grad_y packed in mr-row blocks.  The reduction
# runs over every output position of a sub-chunk of images (gemm.pxd's equal KC blocks,
# sub-chunk after sub-chunk), so there is no halo to drop (the slab paths compute the
# padded row width) and one image's few positions never cap a reduction block.  The channels-last gradient
# is transposed into (F, Cg, KD, KH, KW) at the end (a 1x1 window's is copied).
#
# Lanes: a run fills whole column slivers when it is a multiple of nr values long; its
# last sliver reads up to nr - 1 values past the run (the next position's channels, or
# the zeroed tail past the slab) into columns that are dropped.
#
# Units: an image, or, when one image's slab and packed grad_y outgrow a sub-chunk
# (CHANNELS_LAST_SUB_BYTES), a band of its output rows along the outermost axis with
# more than one (depth, else height, else width: a 1-D signal's band is a run of its
# positions), whose slab holds the input rows the band reads (a 128x128 image of 64
# channels is a 4.3 MB slab, which the GEMM streamed from L3 and every thread built in
# full: as sixteen 8-row bands it ran 1.3x faster).  The bands of an image have equal
# rows (the last fewer), their slabs the same extent.
#
# Tasks: the units are cut into chunks (a function of the shapes only), each reduced into
# its own partial gradient; a task is a chunk, or (when there are fewer chunks than
# threads) a chunk's range of column slivers, and runs on one thread from start to end:
# sub-chunk by sub-chunk of units, it packs grad_y, fills the slab and runs the GEMM
# while both are still in its core's L2 cache (two threads sharing one chunk's packed
# operands read them from the other core and the L3: the 2-thread GEMM ran 1.6x the
# 1-thread speed that way, against 2x for two separate calls).  The partials are then
# added in chunk order, so every element is the same sequence of operations whatever the
# thread count.

# Upper bound, in bytes, of a sub-chunk's slab and packed grad_y (unless one image, or
# the images for two reduction blocks, take more): half the smallest
# per-core L2 of the x86 cores the wheels target (Zen 2's 512 KiB), so that they stay in
# cache between the pack and the GEMM on any of them.  A constant: the sub-chunks set
# the reduction's blocks, and with them the bits.
cdef Py_ssize_t CHANNELS_LAST_SUB_BYTES = 256 << 10


cdef inline bint channels_last_axis_fits(Py_ssize_t X, Py_ssize_t K, Py_ssize_t O,
                                         Py_ssize_t s, Py_ssize_t p,
                                         Py_ssize_t d) noexcept nogil:
    """One axis of channels_last_fits: a window reach and padding (before, and after as the
    output implies) of at most TILE, so the slab's halo stays small."""
    cdef Py_ssize_t reach
    if K - 1 > TILE or d > TILE or p > TILE:
        return False
    reach = (K - 1) * d
    return reach <= TILE and (O - 1) * s + reach + 1 - X - p <= TILE


cdef inline bint channels_last_fits(const Geom *g) noexcept nogil:
    """The channels-last weight gradient applies: bounded halos on every axis (huge
    paddings or dilations would make the slab's size overflow)."""
    return (channels_last_axis_fits(g.D, g.KD, g.OD, g.sd, g.pd, g.dd)
            and channels_last_axis_fits(g.H, g.KH, g.OH, g.sh, g.ph, g.dh)
            and channels_last_axis_fits(g.W, g.KW, g.OW, g.sw, g.pw, g.dw))


cdef struct ClLayout:
    # The slab's extent per axis (the input positions the window reads, padding
    # included) and positions per image; B's runs (columns per run, runs per group);
    # the channels-last gradient's row stride (KK * Cg rounded up to a 64-byte cache line,
    # so that threads writing neighbouring column ranges of it never share a line);
    # filters per group rounded up to mr; images per chunk and chunks (one partial
    # gradient of F rows of ldc each per chunk); images per sub-chunk; per sub-chunk, the
    # elements of one group's slab (its images, then nr values zeroed after the last
    # image for the last run's overread) and packed grad_y; a thread's scratch elements
    # (every group's slab and packed grad_y, the micro-kernel's edge block, rounded up to
    # a cache line).  Bands: the axis (0 none, 1 depth, 2 height, 3 width), output rows
    # (along width: positions) per band, bands per image, positions per output row of
    # that axis and per unit (a whole band's, or P); a unit's slab extents are ED, EH,
    # EW.
    Py_ssize_t axis, rows, nbands, rowpos, PU
    Py_ssize_t ED, EH, EW, plane
    Py_ssize_t run, nruns, ldc
    Py_ssize_t fpad
    Py_ssize_t per_chunk, nchunks, part
    Py_ssize_t per_sub
    Py_ssize_t group_slab, group_pack, per_thread


cdef inline Py_ssize_t cl_band_plane(const Geom *g, const ClLayout *L, Py_ssize_t axis,
                                     Py_ssize_t rows) noexcept nogil:
    """Slab positions of a band of rows output rows along axis (1 depth, 2 height,
    3 width)."""
    if axis == 1:
        return read_extent(rows, g.sd, g.KD, g.dd) * L.EH * L.EW
    if axis == 2:
        return L.ED * read_extent(rows, g.sh, g.KH, g.dh) * L.EW
    return L.ED * L.EH * read_extent(rows, g.sw, g.KW, g.dw)


cdef void cl_bands(const Geom *g, ClLayout *L, Py_ssize_t itemsize) noexcept nogil:
    """The bands of L (see the file's comment): none when a whole image's slab and packed
    grad_y fit CHANNELS_LAST_SUB_BYTES, else as many rows per band as fit it, but at
    least the rows for two reduction blocks and 4 per row of the window's reach, in a
    number of bands that makes the units a multiple of MAX_CHUNKS where it can, else a
    power of two."""
    cdef Py_ssize_t OA, rows, lo, halo, rowpos, nbands, want, axis
    L.axis = 0
    L.rows = 1
    L.nbands = 1
    L.rowpos = g.P
    L.PU = g.P
    if g.G * (L.plane * g.Cg + L.fpad * g.P) * itemsize <= CHANNELS_LAST_SUB_BYTES:
        return
    if g.OD > 1:
        axis = 1
        OA = g.OD
        halo = (g.KD - 1) * g.dd
    elif g.OH > 1:
        axis = 2
        OA = g.OH
        halo = (g.KH - 1) * g.dh
    elif g.OW > 1 and g.N < MAX_CHUNKS:
        # (a batch of MAX_CHUNKS signals or more fills the chunks with whole signals:
        # their longer reductions ran 2-5% faster than bands, TCN-like 1-D layers of 64
        # channels at batch 16-32; a signal or a few left a thread idle or splitting a
        # chunk's columns: WaveNet's 4096-long layers at batch 1 ran 1.35-1.45x faster
        # in bands; AVX-512 Xeon, 2 threads)
        axis = 3
        OA = g.OW
        halo = (g.KW - 1) * g.dw
    else:
        return
    rowpos = g.P // OA
    rows = OA
    while rows > 1 and g.G * (cl_band_plane(g, L, axis, rows) * g.Cg + L.fpad * rows * rowpos
                              ) * itemsize > CHANNELS_LAST_SUB_BYTES:
        rows = rows - 1
    # at least the rows for two reduction blocks (each block of the GEMM loads and stores
    # the partial gradient), and 4 output rows per row of halo (a band's slab reads its
    # rows plus the window's reach)
    lo = max((2 * KC + rowpos - 1) // rowpos, 4 * halo)
    if lo >= OA:
        return
    rows = max(rows, lo)
    nbands = (OA + rows - 1) // rows
    # units a multiple of MAX_CHUNKS where the rows allow, so that the chunks are equal;
    # else a power of two of bands (an even share for 2, 4 or 8 threads)
    want = round_up(nbands, MAX_CHUNKS // gcd(g.N, MAX_CHUNKS))
    if (OA + want - 1) // want >= lo:
        nbands = want
    else:
        nbands = 1
        while (OA + 2 * nbands - 1) // (2 * nbands) >= lo:
            nbands = 2 * nbands
    rows = (OA + nbands - 1) // nbands      # equal bands, the last no longer
    nbands = (OA + rows - 1) // rows
    if nbands == 1:
        return
    L.axis = axis
    L.rows = rows
    L.nbands = nbands
    L.rowpos = rowpos
    L.PU = L.rows * L.rowpos
    if L.axis == 1:
        L.ED = read_extent(L.rows, g.sd, g.KD, g.dd)
    elif L.axis == 2:
        L.EH = read_extent(L.rows, g.sh, g.KH, g.dh)
    else:
        L.EW = read_extent(L.rows, g.sw, g.KW, g.dw)
    L.plane = L.ED * L.EH * L.EW


cdef inline Geom cl_band_geom(const Geom *g, const ClLayout *L) noexcept nogil:
    """g with a band's output rows (L.rows) along L's axis: the positions a band runs
    over (next_row)."""
    cdef Geom b = g[0]
    if L.axis == 1:
        b.OD = L.rows
    elif L.axis == 2:
        b.OH = L.rows
    elif L.axis == 3:
        b.OW = L.rows
    b.P = b.OD * b.OH * b.OW
    return b


cdef ClLayout cl_layout(const Geom *g, const floating_t *tag) noexcept nogil:
    cdef ClLayout L
    cdef Py_ssize_t mr = block_mr(&KERN, tag), nr = block_nr(&KERN, tag), line
    cdef Py_ssize_t per_image, nsub, min_images, units
    line = 64 // <Py_ssize_t> sizeof(floating_t)
    L.ED = read_extent(g.OD, g.sd, g.KD, g.dd)
    L.EH = read_extent(g.OH, g.sh, g.KH, g.dh)
    L.EW = read_extent(g.OW, g.sw, g.KW, g.dw)
    L.plane = L.ED * L.EH * L.EW
    L.fpad = round_up(g.Fg, mr)
    cl_bands(g, &L, sizeof(floating_t))
    if g.KW == 1 or g.dw == 1:
        L.run = g.KW * g.Cg
        L.nruns = g.KD * g.KH
    else:
        L.run = g.Cg
        L.nruns = g.KK
    L.ldc = round_up(g.KK * g.Cg, line)
    L.part = g.F * L.ldc
    # images whose positions make two reduction blocks: every block of the GEMM loads and
    # stores the whole partial, so shorter blocks (a few positions per image, one image
    # per sub-chunk) would multiply that traffic (VGG's 4x4 layers of 512 channels ran
    # 2.3x slower in sub-chunks of two images than in one of sixteen)
    units = g.N * L.nbands
    min_images = (2 * KC + L.PU - 1) // max(1, L.PU)
    # chunks of units as the other weight-gradient paths cut the batch (equal ones), of
    # at least min_images units each
    L.nchunks = max(1, min(units, MAX_CHUNKS, units // min_images,
                           PARTIAL_BYTES // max(1, L.part * <Py_ssize_t> sizeof(floating_t))))
    L.per_chunk = max(1, (units + L.nchunks - 1) // L.nchunks)
    L.nchunks = max(1, (units + L.per_chunk - 1) // L.per_chunk)
    per_image = g.G * (L.plane * g.Cg + L.fpad * L.PU) * <Py_ssize_t> sizeof(floating_t)
    L.per_sub = max(1, min(L.per_chunk,
                           max(min_images, CHANNELS_LAST_SUB_BYTES // max(1, per_image))))
    nsub = (L.per_chunk + L.per_sub - 1) // L.per_sub
    L.per_sub = (L.per_chunk + nsub - 1) // nsub   # equal sub-chunks
    if L.nbands > 1:
        L.per_sub = 1   # a band per sub-chunk (the last band's positions are fewer)
    L.group_slab = L.per_sub * L.plane * g.Cg + nr
    L.group_pack = L.fpad * L.per_sub * L.PU
    L.per_thread = round_up(g.G * (L.group_slab + L.group_pack) + CK_MR_MAX * CK_NR_MAX, line)
    return L


cdef Py_ssize_t channels_last_scratch(const Geom *g, const floating_t *tag) noexcept nogil:
    """Bytes of scratch per thread: its sub-chunk's slab and packed grad_y and edge block,
    and (shared by the threads) the chunks' partial gradients and the window offsets."""
    cdef ClLayout L = cl_layout(g, tag)
    return ((L.per_thread + L.nchunks * L.part) * sizeof(floating_t)
            + L.per_sub * L.PU * sizeof(Py_ssize_t))


cdef inline Py_ssize_t cl_shift(const Geom *g, const ClLayout *L, Py_ssize_t u) noexcept nogil:
    """Offset of run u's first value from its position's window start in the slab."""
    cdef Py_ssize_t kd, kh, kw = 0
    if L.nruns == g.KK and g.KW > 1:
        kw = u % g.KW
        u = u // g.KW
    kd = u // g.KH
    kh = u % g.KH
    return ((kd * g.dd * L.EH + kh * g.dh) * L.EW + kw * g.dw) * g.Cg


cdef void cl_pack(const floating_t *gy, const Geom *g, const ClLayout *L, Py_ssize_t u0,
                  Py_ssize_t nc, Py_ssize_t g0, Py_ssize_t g1, Py_ssize_t bias_from,
                  floating_t *apack, double *bsum) noexcept nogil:
    """Pack grad_y of units u0 .. u0 + nc (image u // nbands, band u % nbands), groups
    g0 .. g1 - 1: per group, A[f, j * PU + p] = gy[image, group * Fg + f, p0 + p] for
    the unit's positions p0 + p (p < its count) in mr-row blocks (rows past Fg zero);
    with bsum, for the groups from bias_from on, bsum[u * F + f] = the sum of those
    values (double, add_rows)."""
    cdef Py_ssize_t mr = block_mr(&KERN, gy), R = nc * L.PU, nb = L.fpad // mr
    cdef Py_ssize_t grp, j, b, i, p, rows, n, p0, pn
    cdef floating_t *dst
    cdef const floating_t *src
    for grp in range(g0, g1):
        for j in range(nc):
            n = (u0 + j) // L.nbands
            p0 = (u0 + j) % L.nbands * L.PU
            pn = min(L.PU, g.P - p0)
            for b in range(nb):
                dst = apack + grp * L.group_pack + (b * R + j * L.PU) * mr
                rows = min(mr, g.Fg - b * mr)
                src = gy + (n * g.F + grp * g.Fg + b * mr) * g.P + p0
                # the block's rows of this unit, a transposed copy (whole vectors)
                transpose(src, g.P, rows, pn, dst, mr)
                for p in range(pn):
                    for i in range(rows, mr):
                        dst[p * mr + i] = 0
                if bsum != NULL and grp >= bias_from:
                    add_rows(bsum + (u0 + j) * g.F + grp * g.Fg + b * mr, src, g.P, rows, pn)


cdef void cl_fill_row(const floating_t *x, const Geom *g, Py_ssize_t EH, Py_ssize_t EW,
                      Py_ssize_t cs, Py_ssize_t n, Py_ssize_t grp, Py_ssize_t pd,
                      Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t ed, Py_ssize_t eh,
                      floating_t *dst) noexcept nogil:
    """Row (ed, eh) of cl_fill_plane's slab (dst: the plane's start)."""
    cdef Py_ssize_t plane_in = g.D * g.H * g.W, rowlen = EW * cs
    # slab columns [w0, w1) hold input columns w0 - pw .. w1 - pw - 1
    cdef Py_ssize_t w0 = min(max(pw, 0), EW), w1 = max(w0, min(EW, g.W + pw))
    cdef Py_ssize_t id = ed - pd, ih = eh - ph
    cdef floating_t *row = dst + (ed * EH + eh) * rowlen
    if id < 0 or id >= g.D or ih < 0 or ih >= g.H or w1 <= w0:
        memset(row, 0, rowlen * sizeof(floating_t))
        return
    memset(row, 0, w0 * cs * sizeof(floating_t))
    transpose(x + (n * g.C + grp * g.Cg) * plane_in + (id * g.H + ih) * g.W + w0 - pw,
              plane_in, g.Cg, w1 - w0, row + w0 * cs, cs)
    memset(row + w1 * cs, 0, (EW - w1) * cs * sizeof(floating_t))


cdef void cl_fill_plane(const floating_t *x, const Geom *g, Py_ssize_t ED, Py_ssize_t EH,
                        Py_ssize_t EW, Py_ssize_t cs, Py_ssize_t n, Py_ssize_t grp,
                        Py_ssize_t pd, Py_ssize_t ph, Py_ssize_t pw,
                        floating_t *dst) noexcept nogil:
    """One (image, group) of a channels-last zero-padded slab of extents ED x EH x EW,
    positions cs >= Cg elements apart: dst[((ed * EH + eh) * EW + ew) * cs + c] =
    x[n, grp * Cg + c, ed - pd, eh - ph, ew - pw] for c < Cg, zero outside the input
    (the values cs - Cg after each position's are left as they are).  pd, ph, pw: g.pd,
    g.ph, g.pw for a whole image; a band of later output rows starts its slab further
    in (negative).  Row by row (cl_fill_row)."""
    cdef Py_ssize_t ed, eh
    for ed in range(ED):
        for eh in range(EH):
            cl_fill_row(x, g, EH, EW, cs, n, grp, pd, ph, pw, ed, eh, dst)


cdef void cl_fill_slab(const floating_t *x, const Geom *g, const ClLayout *L, Py_ssize_t u0,
                       Py_ssize_t nc, Py_ssize_t g0, Py_ssize_t g1,
                       floating_t *slab) noexcept nogil:
    """The channels-last zero-padded slabs of units u0 .. u0 + nc, groups g0 .. g1 - 1:
    per group, slab[((j * ED + ed) * EH + eh) * EW + ew][c] = x[image, group * Cg + c,
    the input position that slab position of unit u0 + j holds], zero outside the input,
    and nr zeros after the last unit."""
    cdef Py_ssize_t nr = block_nr(&KERN, x)
    cdef Py_ssize_t grp, j, o0
    for grp in range(g0, g1):
        memset(slab + grp * L.group_slab + nc * L.plane * g.Cg, 0, nr * sizeof(floating_t))
        for j in range(nc):
            # (a band's first row: its output rows' first, L.rows per band before it)
            o0 = (u0 + j) % L.nbands * L.rows
            cl_fill_plane(x, g, L.ED, L.EH, L.EW, g.Cg, (u0 + j) // L.nbands, grp,
                          g.pd - o0 * g.sd if L.axis == 1 else g.pd,
                          g.ph - o0 * g.sh if L.axis == 2 else g.ph,
                          g.pw - o0 * g.sw if L.axis == 3 else g.pw,
                          slab + grp * L.group_slab + j * L.plane * g.Cg)


cdef void cl_gemm(const floating_t *apack, const floating_t *slab, const Py_ssize_t *boff,
                  Py_ssize_t R, Py_ssize_t lda, const Geom *g, const ClLayout *L,
                  Py_ssize_t sl0, Py_ssize_t sl1, floating_t *cmat, bint accumulate,
                  floating_t *ctmp) noexcept nogil:
    """cmat[(group * Fg + f) * ldc + u * run + j] (+)= sum over r < R of
    A[f, r] * B[r, u * run + j] (A's mr-row blocks mr * lda apart, lda >= R)
    (the products of the file's comment) for the column slivers sl0 .. sl1 - 1 of the
    groups' slivers numbered in order (S per group: each run's, in run order), on one
    thread.  Per reduction block the block of packed grad_y (filters x KC) is reused by
    every sliver and each B sliver, read from the slab, by every filter block."""
    cdef Py_ssize_t mr = block_mr(&KERN, apack), nr = block_nr(&KERN, apack)
    cdef Py_ssize_t nsl = (L.run + nr - 1) // nr, S = L.nruns * nsl
    cdef Py_ssize_t kstep = reduction_step(R)
    cdef Py_ssize_t nkb = (R + kstep - 1) // kstep if kstep > 0 else 0
    cdef Py_ssize_t grp, s0, s1, kb, k0, kc, u, j0, j1
    cdef const floating_t *a
    cdef const floating_t *bg
    cdef floating_t *cg
    for grp in range(sl0 // S, (sl1 - 1) // S + 1):
        s0 = max(sl0, grp * S) - grp * S
        s1 = min(sl1, (grp + 1) * S) - grp * S
        a = apack + grp * L.group_pack
        bg = slab + grp * L.group_slab
        cg = cmat + grp * g.Fg * L.ldc
        for kb in range(nkb):
            k0 = kb * kstep
            kc = min(kstep, R - k0)
            for u in range(s0 // nsl, (s1 - 1) // nsl + 1):
                # this run's slivers in the range: columns j0 .. j1 of the run
                j0 = (max(s0, u * nsl) - u * nsl) * nr
                j1 = min((min(s1, (u + 1) * nsl) - u * nsl) * nr, L.run)
                gemm_block(&KERN, a + k0 * mr, mr * lda, g.Fg, kc,
                           bg + cl_shift(g, L, u) + j0, boff + k0, 0, NULL, j1 - j0,
                           cg + u * L.run + j0, L.ldc, ctmp, accumulate or k0 > 0)


cdef void cl_chunks(const floating_t *x, const floating_t *gy, const Geom *g,
                    const ClLayout *L, const Py_ssize_t *boff, floating_t *partials,
                    floating_t *scratch, double *bsum, int nt) noexcept nogil:
    """Every chunk's partial gradient (see the file's comment on tasks); bsum as in
    cl_pack, for every unit."""
    cdef Py_ssize_t nr = block_nr(&KERN, x)
    cdef Py_ssize_t S = L.nruns * ((L.run + nr - 1) // nr), slivers = g.G * S
    # column splits per chunk: enough tasks for the threads (no effect on the bits)
    cdef Py_ssize_t ncs = min(slivers, max(1, (nt + L.nchunks - 1) // L.nchunks))
    cdef Py_ssize_t sper = (slivers + ncs - 1) // ncs
    cdef Py_ssize_t t, c, sl0, sl1, g0, g1, u, uend, nc, un = g.N * L.nbands
    cdef floating_t *slab
    cdef floating_t *apack
    cdef floating_t *ctmp
    for t in prange(L.nchunks * ncs, num_threads=nt, schedule="static"):
        c = t // ncs
        sl0 = t % ncs * sper
        sl1 = min(slivers, sl0 + sper)
        if sl1 <= sl0:
            continue
        g0 = sl0 // S
        g1 = (sl1 - 1) // S + 1
        slab = scratch + threadid() * L.per_thread
        apack = slab + g.G * L.group_slab
        ctmp = apack + g.G * L.group_pack
        u = c * L.per_chunk
        uend = min(un, u + L.per_chunk)
        while u < uend:
            nc = min(L.per_sub, uend - u)
            # a group's bias is summed by the task holding its first sliver
            cl_pack(gy, g, L, u, nc, g0, g1, (sl0 + S - 1) // S, apack, bsum)
            cl_fill_slab(x, g, L, u, nc, g0, g1, slab)
            # (a sub-chunk of several units is whole images; the last band of an image
            # may have fewer positions than PU)
            cl_gemm(apack, slab, boff,
                    nc * L.PU if L.nbands == 1 else min(L.PU, g.P - u % L.nbands * L.PU),
                    nc * L.PU, g, L, sl0, sl1, partials + c * L.part, u > c * L.per_chunk,
                    ctmp)
            u = u + nc


cdef void weight_grad_channels_last(const floating_t *x, const floating_t *gy, const Geom *g,
                                    floating_t *gw, floating_t *bias_out, int nt) except *:
    """gw (F, Cg, KD, KH, KW) of a call that channels_last_fits, as in the file's comment;
    bias_out (F,), when not NULL, gets grad_y's sums per filter (double, in unit order)."""
    cdef ClLayout L = cl_layout(g, x)
    cdef Py_ssize_t K = g.Cg * g.KK, nl, p, od, oh, ow, f, n, b, k
    cdef Geom band = cl_band_geom(g, &L)
    cdef floating_t *scratch = NULL
    cdef floating_t *partials = NULL
    cdef Py_ssize_t *boff = NULL
    cdef double *bsum = NULL
    cdef double acc
    try:
        # every element of these is written before it is read
        scratch = <floating_t *> alloc_uninit(nt * L.per_thread * sizeof(floating_t))
        boff = <Py_ssize_t *> alloc_uninit(L.per_sub * L.PU * sizeof(Py_ssize_t))
        # on a 64-byte line (as all scratch), rows of whole cache lines: the column ranges
        # of a chunk's tasks (whole slivers) then meet at line boundaries
        partials = <floating_t *> alloc_uninit(L.nchunks * L.part * sizeof(floating_t))
        if bias_out != NULL:
            bsum = <double *> alloc_scratch(g.N * L.nbands * g.F * sizeof(double))
        with nogil:
            # where position r = nl * PU + p's window starts in a sub-chunk's slab
            # (positions in order, over a whole band's rows: no division per position)
            for nl in range(L.per_sub):
                od = 0
                oh = 0
                ow = 0
                for p in range(L.PU):
                    boff[nl * L.PU + p] = (((nl * L.ED + od * g.sd) * L.EH + oh * g.sh) * L.EW
                                           + ow * g.sw) * g.Cg
                    ow += 1
                    if ow == band.OW:
                        next_row(&band, &od, &oh, &ow)
            cl_chunks(x, gy, g, &L, boff, partials, scratch, bsum, nt)
            # partial[0] += partial[b] for b = 1, 2, ... in chunk order, then
            # gw[f, c, tap] = partial[0][f * ldc + tap * Cg + c]
            for f in prange(g.F, num_threads=nt, schedule="static"):
                for b in range(1, L.nchunks):
                    for k in range(K):
                        partials[f * L.ldc + k] += partials[b * L.part + f * L.ldc + k]
                if g.KK == 1:
                    memcpy(gw + f * K, partials + f * L.ldc, K * sizeof(floating_t))
                else:
                    transpose(partials + f * L.ldc, g.Cg, g.KK, g.Cg, gw + f * K, g.KK)
            if bsum != NULL:
                for f in range(g.F):
                    acc = 0
                    for n in range(g.N * L.nbands):
                        acc += bsum[n * g.F + f]
                    bias_out[f] = <floating_t> acc
    finally:
        release(bsum)
        release(partials)
        release(boff)
        release(scratch)
