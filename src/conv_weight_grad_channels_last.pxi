# The weight gradient as one GEMM per group over a channels-last copy of the input, read
# in place: no im2col, no halo columns, no partials.  Included by _conv.pyx.
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
# runs over every output position of a chunk of images (gemm.pxd's equal KC blocks, chunk
# after chunk), so there is no halo to drop (the slab paths compute the padded row width)
# and one image's few positions never cap a reduction block.  The channels-last gradient
# is transposed into (F, Cg, KD, KH, KW) at the end (a 1x1 window's is copied).
#
# Lanes: a run fills whole column slivers when it is a multiple of nr values long; its
# last sliver reads up to nr - 1 values past the run (the next position's channels, or
# the zeroed tail past the slab) into columns that are dropped.
#
# Tasks: per chunk, (group, image, block of filters) pack grad_y and sum the bias
# gradient, (group, image, slab row) fill the slab, then (group, range of column slivers,
# range of filter blocks) run the GEMM; each owns what it writes.  The chunks depend on the shapes
# only, so every element is the same sequence of operations whatever the thread count.

# Upper bound, in bytes, of one chunk's slab and packed grad_y.
cdef Py_ssize_t CHANNELS_LAST_CHUNK_BYTES = 16 << 20


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
    # filters per group rounded up to mr; images per chunk and chunks; per chunk, the
    # elements of one group's slab (its images, then nr values zeroed after the chunk's
    # last image for the last run's overread) and packed grad_y, and of all groups'.
    Py_ssize_t ED, EH, EW, plane
    Py_ssize_t run, nruns, ldc
    Py_ssize_t fpad
    Py_ssize_t per_chunk, nchunks
    Py_ssize_t group_slab, group_pack, slab, pack


cdef ClLayout cl_layout(const Geom *g, const floating_t *tag) noexcept nogil:
    cdef ClLayout L
    cdef Py_ssize_t mr = block_mr(&KERN, tag), nr = block_nr(&KERN, tag), per_image
    L.ED = read_extent(g.OD, g.sd, g.KD, g.dd)
    L.EH = read_extent(g.OH, g.sh, g.KH, g.dh)
    L.EW = read_extent(g.OW, g.sw, g.KW, g.dw)
    L.plane = L.ED * L.EH * L.EW
    if g.KW == 1 or g.dw == 1:
        L.run = g.KW * g.Cg
        L.nruns = g.KD * g.KH
    else:
        L.run = g.Cg
        L.nruns = g.KK
    L.ldc = round_up(g.KK * g.Cg, 64 // <Py_ssize_t> sizeof(floating_t))
    L.fpad = round_up(g.Fg, mr)
    per_image = g.G * (L.plane * g.Cg + L.fpad * g.P) * <Py_ssize_t> sizeof(floating_t)
    L.per_chunk = max(1, min(g.N, CHANNELS_LAST_CHUNK_BYTES // max(1, per_image)))
    L.nchunks = (g.N + L.per_chunk - 1) // L.per_chunk
    L.per_chunk = (g.N + L.nchunks - 1) // L.nchunks   # equal chunks
    L.group_slab = L.per_chunk * L.plane * g.Cg + nr
    L.group_pack = L.fpad * L.per_chunk * g.P
    L.slab = g.G * L.group_slab
    L.pack = g.G * L.group_pack
    return L


cdef Py_ssize_t channels_last_scratch(const Geom *g, const floating_t *tag) noexcept nogil:
    """Bytes of scratch of one call (shared by its threads): a chunk's slab, packed grad_y
    and window offsets, the channels-last gradient and the edge blocks of 8 threads."""
    cdef ClLayout L = cl_layout(g, tag)
    return ((L.slab + L.pack + g.F * L.ldc + 8 * CK_MR_MAX * CK_NR_MAX) * sizeof(floating_t)
            + L.per_chunk * g.P * sizeof(Py_ssize_t))


cdef inline Py_ssize_t cl_shift(const Geom *g, const ClLayout *L, Py_ssize_t u) noexcept nogil:
    """Offset of run u's first value from its position's window start in the slab."""
    cdef Py_ssize_t kd, kh, kw = 0
    if L.nruns == g.KK and g.KW > 1:
        kw = u % g.KW
        u = u // g.KW
    kd = u // g.KH
    kh = u % g.KH
    return ((kd * g.dd * L.EH + kh * g.dh) * L.EW + kw * g.dw) * g.Cg


cdef void cl_pack(const floating_t *gy, const Geom *g, const ClLayout *L, Py_ssize_t n0,
                  Py_ssize_t nc, floating_t *apack, double *bsum, int nt) noexcept nogil:
    """Pack grad_y of images n0 .. n0 + nc: per group, A[f, nl * P + p] = gy[n0 + nl,
    group * Fg + f, p] in mr-row blocks (rows past Fg zero), R = nc * P columns; with
    bsum, bsum[n * F + f] = sum over p of gy[n, f, p] in order (double)."""
    cdef Py_ssize_t mr = block_mr(&KERN, gy), R = nc * g.P, nb = L.fpad // mr
    cdef Py_ssize_t t, grp, nl, b, i, p, rows
    cdef floating_t *dst
    cdef const floating_t *src
    for t in prange(g.G * nc * nb, num_threads=nt, schedule="static"):
        grp = t // (nc * nb)
        nl = t // nb % nc
        b = t % nb
        dst = apack + grp * L.fpad * R + (b * R + nl * g.P) * mr
        rows = min(mr, g.Fg - b * mr)
        src = gy + ((n0 + nl) * g.F + grp * g.Fg + b * mr) * g.P
        # the block's rows of this image, a transposed copy (whole vectors)
        transpose(src, g.P, rows, g.P, dst, mr)
        for p in range(g.P):
            for i in range(rows, mr):
                dst[p * mr + i] = 0
        if bsum != NULL:
            # bsum is zeroed and each (image, filter) summed once
            add_rows(bsum + (n0 + nl) * g.F + grp * g.Fg + b * mr, src, g.P, rows, g.P)


cdef void cl_fill_slab(const floating_t *x, const Geom *g, const ClLayout *L, Py_ssize_t n0,
                       Py_ssize_t nc, floating_t *slab, int nt) noexcept nogil:
    """The channels-last zero-padded slab of images n0 .. n0 + nc: per group,
    slab[((nl * ED + ed) * EH + eh) * EW + ew][c] = x[n0 + nl, group * Cg + c, ed - pd,
    eh - ph, ew - pw], zero outside the input, and nr zeros after the last image.  Tasks
    are (group, image, slab row, segment of the row): a few long rows (1-D, one image)
    are split so that every thread gets a share."""
    cdef Py_ssize_t plane_in = g.D * g.H * g.W, rowlen = L.EW * g.Cg
    cdef Py_ssize_t nr = block_nr(&KERN, x), rows = g.G * nc * L.ED * L.EH
    cdef Py_ssize_t nseg = max(1, min((L.EW + 15) // 16, (4 * nt + rows - 1) // rows))
    cdef Py_ssize_t seg = (L.EW + nseg - 1) // nseg
    # slab columns [w0, w1) hold input columns w0 - pw .. w1 - pw - 1
    cdef Py_ssize_t w0 = min(g.pw, L.EW), w1 = max(w0, min(L.EW, g.W + g.pw))
    cdef Py_ssize_t t, grp, nl, ed, eh, id, ih, e0, e1, a, b
    cdef floating_t *dst
    for grp in range(g.G):
        memset(slab + grp * L.group_slab + nc * L.plane * g.Cg, 0, nr * sizeof(floating_t))
    for t in prange(rows * nseg, num_threads=nt, schedule="static"):
        grp = t // (nseg * nc * L.ED * L.EH)
        nl = t // (nseg * L.ED * L.EH) % nc
        ed = t // (nseg * L.EH) % L.ED
        eh = t // nseg % L.EH
        e0 = t % nseg * seg
        e1 = min(L.EW, e0 + seg)
        if e1 <= e0:
            continue
        dst = slab + grp * L.group_slab + ((nl * L.ED + ed) * L.EH + eh) * rowlen
        id = ed - g.pd
        ih = eh - g.ph
        a = e0
        b = e0
        if id >= 0 and id < g.D and ih >= 0 and ih < g.H:
            a = min(max(w0, e0), e1)
            b = min(max(w1, a), e1)
        memset(dst + e0 * g.Cg, 0, (a - e0) * g.Cg * sizeof(floating_t))
        if b > a:
            transpose(x + ((n0 + nl) * g.C + grp * g.Cg) * plane_in + (id * g.H + ih) * g.W
                      + a - g.pw, plane_in, g.Cg, b - a, dst + a * g.Cg, g.Cg)
        memset(dst + b * g.Cg, 0, (e1 - b) * g.Cg * sizeof(floating_t))


cdef void cl_gemm(const floating_t *apack, const floating_t *slab, const Py_ssize_t *boff,
                  Py_ssize_t R, const Geom *g, const ClLayout *L, floating_t *cmat,
                  bint accumulate, floating_t *edge, int nt) noexcept nogil:
    """cmat[(group * Fg + f) * ldc + u * run + j] (+)= sum over r < R of
    A[f, r] * B[r, u * run + j]
    (the products of the file's comment).

    The nr-column slivers of a group's runs are numbered in order; a task is (group,
    range of slivers, range of filter blocks), as few and as wide as give every thread
    one, and sweeps its ranges once per reduction block: the block of packed grad_y
    (filters x KC) is reused by every sliver of the range and each B sliver, read from
    the slab, by every filter block."""
    cdef Py_ssize_t mr = block_mr(&KERN, apack), nr = block_nr(&KERN, apack)
    cdef Py_ssize_t ldc = L.ldc
    cdef Py_ssize_t nsl = (L.run + nr - 1) // nr, S = L.nruns * nsl
    cdef Py_ssize_t mblocks = (g.Fg + mr - 1) // mr
    cdef Py_ssize_t splits = (nt + g.G - 1) // g.G
    cdef Py_ssize_t ncs = min(splits, S), nms = min(mblocks, (splits + ncs - 1) // ncs)
    cdef Py_ssize_t sper = (S + ncs - 1) // ncs, mper = (mblocks + nms - 1) // nms
    cdef Py_ssize_t kstep = reduction_step(R)
    cdef Py_ssize_t nkb = (R + kstep - 1) // kstep if kstep > 0 else 0
    cdef Py_ssize_t t, grp, s0, s1, m0, mm, kb, k0, kc, u, j0, j1
    cdef const floating_t *a
    cdef const floating_t *bg
    cdef floating_t *cg
    cdef floating_t *ctmp
    for t in prange(g.G * ncs * nms, num_threads=nt, schedule="static"):
        ctmp = edge + threadid() * CK_MR_MAX * CK_NR_MAX
        grp = t // (ncs * nms)
        s0 = t // nms % ncs * sper
        s1 = min(S, s0 + sper)
        m0 = t % nms * mper * mr
        mm = min(mper * mr, g.Fg - m0)
        if mm <= 0 or s1 <= s0:
            continue
        a = apack + grp * L.fpad * R + m0 * R
        bg = slab + grp * L.group_slab
        cg = cmat + (grp * g.Fg + m0) * ldc
        for kb in range(nkb):
            k0 = kb * kstep
            kc = min(kstep, R - k0)
            for u in range(s0 // nsl, (s1 - 1) // nsl + 1):
                # this run's slivers in the range: columns j0 .. j1 of the run
                j0 = (max(s0, u * nsl) - u * nsl) * nr
                j1 = min((min(s1, (u + 1) * nsl) - u * nsl) * nr, L.run)
                gemm_block(&KERN, a + k0 * mr, mr * R, mm, kc,
                           bg + cl_shift(g, L, u) + j0, boff + k0, 0, NULL, j1 - j0,
                           cg + u * L.run + j0, ldc, ctmp, accumulate or k0 > 0)


cdef void weight_grad_channels_last(const floating_t *x, const floating_t *gy, const Geom *g,
                                    floating_t *gw, floating_t *bias_out, int nt) except *:
    """gw (F, Cg, KD, KH, KW) of a call that channels_last_fits, as in the file's comment;
    bias_out (F,), when not NULL, gets grad_y's sums per filter (double, in image order)."""
    cdef ClLayout L = cl_layout(g, x)
    cdef Py_ssize_t K = g.Cg * g.KK, nl, p, od, oh, ow, c0, n0, nc, f, n
    cdef floating_t *apack = NULL
    cdef floating_t *slab = NULL
    cdef floating_t *cmat = NULL
    cdef floating_t *cmat_raw = NULL
    cdef floating_t *edge = NULL
    cdef Py_ssize_t *boff = NULL
    cdef double *bsum = NULL
    cdef double acc
    try:
        # every element of these is written before it is read
        apack = <floating_t *> alloc_uninit(L.pack * sizeof(floating_t))
        slab = <floating_t *> alloc_uninit(L.slab * sizeof(floating_t))
        boff = <Py_ssize_t *> alloc_scratch(L.per_chunk * g.P * sizeof(Py_ssize_t))
        edge = <floating_t *> alloc_scratch(nt * CK_MR_MAX * CK_NR_MAX * sizeof(floating_t))
        # 64-byte aligned, rows of whole cache lines: the threads' column ranges (whole
        # slivers) then meet at line boundaries
        cmat_raw = <floating_t *> alloc_uninit(g.F * L.ldc * sizeof(floating_t) + 64)
        cmat = <floating_t *> ((<size_t> cmat_raw + 63) // 64 * 64)
        if bias_out != NULL:
            bsum = <double *> alloc_scratch(g.N * g.F * sizeof(double))
        with nogil:
            # where position r = nl * P + p's window starts in the slab (positions in
            # order: no division per position, this loop runs on one thread)
            for nl in range(L.per_chunk):
                od = 0
                oh = 0
                ow = 0
                for p in range(g.P):
                    boff[nl * g.P + p] = (((nl * L.ED + od * g.sd) * L.EH + oh * g.sh) * L.EW
                                          + ow * g.sw) * g.Cg
                    ow += 1
                    if ow == g.OW:
                        next_row(g, &od, &oh, &ow)
            for c0 in range(L.nchunks):
                n0 = c0 * L.per_chunk
                nc = min(L.per_chunk, g.N - n0)
                cl_pack(gy, g, &L, n0, nc, apack, bsum, nt)
                cl_fill_slab(x, g, &L, n0, nc, slab, nt)
                cl_gemm(apack, slab, boff, nc * g.P, g, &L, cmat, c0 > 0, edge, nt)
            # gw[f, c, tap] = cmat[f * ldc + tap * Cg + c]
            for f in prange(g.F, num_threads=nt, schedule="static"):
                if g.KK == 1:
                    memcpy(gw + f * K, cmat + f * L.ldc, K * sizeof(floating_t))
                else:
                    transpose(cmat + f * L.ldc, g.Cg, g.KK, g.Cg, gw + f * K, g.KK)
            if bsum != NULL:
                for f in range(g.F):
                    acc = 0
                    for n in range(g.N):
                        acc += bsum[n * g.F + f]
                    bias_out[f] = <floating_t> acc
    finally:
        free(bsum)
        free(cmat_raw)
        free(edge)
        free(boff)
        free(slab)
        free(apack)
