# The correlation y = x * W (+ bias, then an activation) on the direct (slab) path or on
# im2col tiles, and the forward pass.  Included by _conv.pyx.


cdef inline floating_t activate(floating_t v, int act) noexcept nogil:
    """The forward's activation of one output: ReLU keeps NaN (as max(v, 0) does in
    PyTorch), everything else passes through."""
    if act == ACT_RELU and v <= 0:
        return 0
    return v


cdef inline Py_ssize_t im2col_per_thread(Py_ssize_t tw) noexcept nogil:
    """Scratch elements per thread of correlate_im2col: a KC x tw im2col block and the
    micro-kernel's edge block."""
    return KC * tw + CK_MR_MAX * CK_NR_MAX


cdef void correlate_direct(const floating_t *x, const Geom *g, const floating_t *wpack,
                           const floating_t *bias, int bias_mode, int act, floating_t *y,
                           const OutLayout *out, const DirectPlan *d, floating_t *scratch,
                           Py_ssize_t *offsets, const Kernels *kern, int nt,
                           const floating_t *w=NULL, const floating_t **ptrs=NULL) noexcept nogil:
    """Direct-path correlation y = act(x * W + bias) with the weights packed per group,
    or, with wpack NULL, W's rows read in place (w, the forward's weight; ptrs holds
    Fg + CK_MR_MAX row pointers per thread): no pack, whose pass over a large weight
    costs as much as a good part of the product when few positions sweep it.

    x is (N, C, D, H, W), contiguous; y (N, F, OD, OH, OW) is laid out as out says
    (contiguous whenever there is a bias); wpack holds G blocks of round_up(Fg, mr) x K
    packed rows for kern's mr.  Tasks are (image, group, tile, block of filters): with
    fewer (image, group, tile) tasks than a few per thread (a small batch), the filters
    are split in one part per thread, the split outermost (see below).
    Every output is computed the same way whatever the split, so the bits do not depend
    on the thread count.  offsets holds direct_offsets(g, d) per thread, zeroed.
    """
    cdef Py_ssize_t mr = block_mr(kern, x), nr = block_nr(kern, x), K = g.Cg * g.KK
    cdef Py_ssize_t fpad = round_up(g.Fg, mr)
    cdef Py_ssize_t plane_in = g.D * g.H * g.W
    cdef Py_ssize_t ntiles = d.npl * d.nrb * d.nseg
    cdef Py_ssize_t ntasks = g.N * g.G * ntiles
    # few (image, group, tile) units: one split of the filters per thread, over every
    # unit (the split outermost): the threads write different filters' planes of y, not
    # different tiles of the same planes, whose cuts (rarely on the 64-byte line grid)
    # both would write, once per reduction block.  Not for vector-row tiles that divide
    # evenly among the threads (a 32x32 image's two tiles of 16 rows on two threads): their
    # cuts are between whole output rows, and with the filters split each thread fills
    # every tile's slab and sweeps it for half the filters (AMD Zen 3, 2 threads, batch 1:
    # 32x32 and 24x24 layers of 64-256 channels 1.06-1.21x faster forward and input
    # gradient on the tiles; same bits)
    cdef Py_ssize_t nsplit = (min(fpad // mr, nt)
                              if ntasks < 4 * nt and not (d.rowvec and ntasks % nt == 0)
                              else 1)
    cdef Py_ssize_t fper = (fpad // mr + nsplit - 1) // nsplit
    cdef Py_ssize_t t, u, n, grp, f, f0, f1, pz, r, q, p, ncols, row_len, pitch, cplane
    nsplit = (fpad // mr + fper - 1) // fper   # every split has filters (5 blocks, 4 threads: 3)
    # vector-row tiles of a contiguous y are written in place (see below)
    cdef bint in_place = (d.rowvec and out.offset == 0 and out.sn == g.F * g.P
                          and out.sf == g.P and out.sd == g.OH * g.OW and out.sh == g.OW
                          and out.sw == 1)
    cdef Tile tile
    cdef floating_t *slab
    cdef floating_t *ctile
    cdef floating_t *src
    cdef floating_t *dst
    cdef Py_ssize_t *boff
    cdef Py_ssize_t *roff
    cdef Py_ssize_t *filled
    cdef const floating_t **rows
    for t in prange(ntasks * nsplit, num_threads=nt, schedule="static"):
        slab = scratch + threadid() * d.per_thread
        ctile = slab + d.slab
        boff = offsets + threadid() * direct_offsets(g, d)
        roff = boff + K
        filled = roff + d.planes * d.rows * d.vsegs
        u = t % ntasks
        n = u // (g.G * ntiles)
        grp = u // ntiles % g.G
        tile = tile_of(g, d, u % ntiles)
        # filter rows f0 .. f1 of the group (whole mr-row blocks; rows past Fg are zero)
        f0 = t // ntasks * fper * mr
        f1 = min(fpad, f0 + fper * mr)
        # a unit the thread filled last (filled[0] is 1 + its index; the caller zeroes
        # it) keeps its slab and offsets: one unit and one split, run again
        if filled[0] != u + 1:
            fill_slab(x + (n * g.C + grp * g.Cg) * plane_in, g, &tile, slab)
            slab_offsets(g, &tile, boff)
            filled[0] = u + 1
        # output (pz, r, q) is column pz * cplane + r * pitch + q of the tile's matrix:
        # vector rows are packed, padded-row tiles keep the slab's halo columns
        if d.rowvec:
            ncols = tile.planes * tile.rows * tile.cols
            row_len = tile.cols // d.vsegs
            pitch = tile.cols
            cplane = tile.rows * tile.cols
            for pz in range(tile.planes):
                for r in range(tile.rows):
                    for q in range(d.vsegs):
                        roff[(pz * tile.rows + r) * d.vsegs + q] = (
                            (pz * tile.srows + r) * tile.width + q * row_len)
        else:
            ncols = tile.npos
            row_len = 0
            pitch = tile.width
            cplane = tile.srows * tile.width
        if wpack == NULL:
            rows = ptrs + threadid() * (g.Fg + CK_MR_MAX)
            for f in range(min(f1, g.Fg) - f0):
                rows[f] = w + (grp * g.Fg + f0 + f) * K
        if in_place:
            # a vector-row tile's outputs are one run of each filter's plane of y, whole
            # slivers long: the GEMM writes them there (the rows past Fg through the
            # edge block), then the bias and activation are applied in place
            p = (tile.od0 * g.OH + tile.oh0) * g.OW
            dst = y + (n * g.F + grp * g.Fg + f0) * g.P + p
            if wpack == NULL:
                for f in range(min(f1, g.Fg) - f0):
                    memset(dst + f * g.P, 0, ncols * sizeof(floating_t))
                gemm_rows_block(kern, rows, 0, min(f1, g.Fg) - f0, K, slab, boff, ncols, dst,
                                g.P, rows + g.Fg, ctile + fpad * d.ldc, 0, row_len, roff)
            else:
                # a tied bias and the activation in the GEMM's last stores
                gemm_block(kern, wpack + grp * fpad * K + f0 * K, mr * K, min(f1, g.Fg) - f0,
                           K, slab, boff, row_len, roff, ncols, dst, g.P, ctile + fpad * d.ldc,
                           False, bias + grp * g.Fg + f0 if bias_mode == 1 else NULL,
                           act == ACT_RELU and bias_mode != 2)
            if bias_mode == 2 or (wpack == NULL and (bias_mode != 0 or act != ACT_NONE)):
                copy_out(dst, g.P, g, grp * g.Fg + f0, grp * g.Fg + min(f1, g.Fg), n * g.P + p,
                         ncols, bias, bias_mode, act, y)
            continue
        if wpack == NULL:
            # the group's real rows only (the rows past Fg repeat the last one into the
            # edge block), summed into a zeroed tile
            memset(ctile, 0, (min(f1, g.Fg) - f0) * d.ldc * sizeof(floating_t))
            gemm_rows_block(kern, rows, 0, min(f1, g.Fg) - f0, K, slab, boff,
                            round_up(ncols, nr), ctile, d.ldc, rows + g.Fg,
                            ctile + fpad * d.ldc, 0, row_len, roff)
        else:
            # whole mr x nr blocks into the tile (the packed rows past Fg are zero, the
            # slab and the tile have room for the last sliver): no ragged-edge copies
            gemm_block(kern, wpack + grp * fpad * K + f0 * K, mr * K, f1 - f0, K, slab, boff,
                       row_len, roff, round_up(ncols, nr), ctile, d.ldc, ctile + fpad * d.ldc,
                       False)
        # copy the tile's outputs out, dropping the halo columns, adding the bias and
        # applying the activation
        for f in range(f0, min(f1, g.Fg)):
            for pz in range(tile.planes):
                for r in range(tile.rows):
                    src = ctile + (f - f0) * d.ldc + pz * cplane + r * pitch
                    p = ((tile.od0 + pz) * g.OH + tile.oh0 + r) * g.OW + tile.w0
                    dst = y + (out.offset + n * out.sn + (grp * g.Fg + f) * out.sf
                               + (tile.od0 + pz) * out.sd + (tile.oh0 + r) * out.sh
                               + tile.w0 * out.sw)
                    if bias_mode == 0 and out.sw != 1:
                        for q in range(tile.cols):
                            dst[q * out.sw] = activate(src[q], act)
                    elif bias_mode == 0 and act == ACT_NONE:
                        memcpy(dst, src, tile.cols * sizeof(floating_t))
                    elif bias_mode == 0:
                        for q in range(tile.cols):
                            dst[q] = activate(src[q], act)
                    elif bias_mode == 1:
                        for q in range(tile.cols):
                            dst[q] = activate(src[q] + bias[grp * g.Fg + f], act)
                    else:
                        for q in range(tile.cols):
                            dst[q] = activate(src[q] + bias[(grp * g.Fg + f) * g.P + p + q], act)


cdef void correlate_im2col(const floating_t *x, const Geom *g, const floating_t *wpack,
                           const floating_t *bias, int bias_mode, int act, floating_t *y,
                           Py_ssize_t tw, floating_t *scratch, Py_ssize_t *offsets,
                           const Kernels *kern, int nt) noexcept nogil:
    """Any-stride correlation y = act(x * W + bias) on im2col tiles of tw positions.

    Tasks are (image, group, tile); with few of them (a batch of one image of a few
    tiles) the filters are split too, one part per thread and the split outermost, as on
    the slab path: each thread unrolls every tile and writes its own filters' planes.
    But every split unrolls each tile again, so tasks that share out evenly over the
    threads are not split (3-D U-Net's k2 s2 adjoint at batch 2, four tiles on two
    threads, unrolls a copy of x: split, that was a quarter of the call).
    """
    cdef Py_ssize_t mr = block_mr(kern, x), K = g.Cg * g.KK
    cdef Py_ssize_t fpad = round_up(g.Fg, mr)
    cdef Py_ssize_t plane_in = g.D * g.H * g.W
    cdef Py_ssize_t ntiles = (g.P + tw - 1) // tw, units = g.N * g.G * ntiles
    cdef Py_ssize_t per_thread = im2col_per_thread(tw), step = reduction_step(K)
    cdef Py_ssize_t nsplit = (min(fpad // mr, nt) if units < 4 * nt and units % nt != 0
                              else 1)
    cdef Py_ssize_t fper = (fpad // mr + nsplit - 1) // nsplit
    cdef Py_ssize_t t, u, n, grp, p0, pn, kb, k0, kc, f0, f1
    nsplit = (fpad // mr + fper - 1) // fper   # every split has filters
    cdef floating_t *col
    cdef floating_t *yt
    for t in prange(units * nsplit, num_threads=nt, schedule="static"):
        col = scratch + threadid() * per_thread
        u = t % units
        n = u // (g.G * ntiles)
        grp = u // ntiles % g.G
        p0 = u % ntiles * tw
        pn = min(tw, g.P - p0)
        f0 = t // units * fper * mr
        f1 = min(g.Fg, f0 + fper * mr)
        if f0 >= f1:
            continue
        yt = y + (n * g.F + grp * g.Fg + f0) * g.P + p0
        for kb in range((K + step - 1) // step):
            k0 = kb * step
            kc = min(step, K - k0)
            im2col(x + (n * g.C + grp * g.Cg) * plane_in, g, k0, kc, p0, pn, col, tw)
            # the last block's stores add a tied bias and apply the activation
            gemm_block(kern, wpack + grp * fpad * K + f0 * K + k0 * mr, mr * K, f1 - f0, kc,
                       col, offsets, 0, NULL, pn, yt, g.P, col + KC * tw, k0 > 0,
                       bias + grp * g.Fg + f0 if bias_mode == 1 and k0 + kc == K else NULL,
                       act == ACT_RELU and bias_mode != 2 and k0 + kc == K)
        if bias_mode == 2:
            copy_out(yt, g.P, g, grp * g.Fg + f0, grp * g.Fg + f1, n * g.P + p0, pn, bias,
                     bias_mode, act, y)


# Bytes of unrolled tiles correlate_im2col_rows holds at once (at least one tile).
cdef Py_ssize_t ROWS_COLS_BYTES = 8 << 20
# Bytes of a tile that a block of the weight's rows passes over in one run
# (gemm_rows_block's kchunk; a tile too wide for two reduction blocks keeps the usual
# order): the budget of CHANNELS_LAST_SUB_BYTES, half the smallest per-core L2 of the
# x86 cores the wheels target, so that the tile's run stays in L2 while the rows stream.
cdef Py_ssize_t ROWS_STREAM_BYTES = 256 << 10


cdef inline const Kernels *im2col_rows_kernels(const Geom *g,
                                               const floating_t *tag) noexcept nogil:
    """The kernels of correlate_im2col_rows: one vector wide when every column (image,
    position) of the call fits in one vector (a batch-1 4x4 image on AVX-512)."""
    return &KERN1 if g.N * g.P <= block_vl(&KERN, tag) else &KERN


cdef inline void unroll_columns(const floating_t *x, const Geom *g, Py_ssize_t grp,
                                Py_ssize_t k0, Py_ssize_t kc, Py_ssize_t c0, Py_ssize_t cn,
                                floating_t *col, Py_ssize_t ld) noexcept nogil:
    """im2col rows k0 .. k0 + kc of group grp for the columns c0 .. c0 + cn of the
    (image, output position) pairs n * P + p, one image's run of positions at a time."""
    cdef Py_ssize_t plane_in = g.D * g.H * g.W, j0 = 0, n, p0, seg
    while j0 < cn:
        n = (c0 + j0) // g.P
        p0 = (c0 + j0) % g.P
        seg = min(g.P - p0, cn - j0)
        im2col(x + (n * g.C + grp * g.Cg) * plane_in, g, k0, kc, p0, seg, col + j0, ld)
        j0 = j0 + seg


cdef inline void copy_out(const floating_t *src, Py_ssize_t lds, const Geom *g,
                          Py_ssize_t f0, Py_ssize_t f1, Py_ssize_t c0, Py_ssize_t cn,
                          const floating_t *bias, int bias_mode, int act,
                          floating_t *y) noexcept nogil:
    """y[n, f, p] = act(src[(f - f0) * lds + j] + bias) for filters f0 .. f1 (of all
    groups' F) and the tile's columns c0 + j = n * P + p, j < cn, one image's run at a
    time; src may be y itself (then only the bias and activation are applied)."""
    cdef Py_ssize_t j0 = 0, j, f, n, p0, seg
    cdef const floating_t *row
    cdef floating_t *yrow
    while j0 < cn:
        n = (c0 + j0) // g.P
        p0 = (c0 + j0) % g.P
        seg = min(g.P - p0, cn - j0)
        for f in range(f0, f1):
            row = src + (f - f0) * lds + j0
            yrow = y + (n * g.F + f) * g.P + p0
            if bias_mode == 0:
                for j in range(seg):
                    yrow[j] = activate(row[j], act)
            elif bias_mode == 1:
                for j in range(seg):
                    yrow[j] = activate(row[j] + bias[f], act)
            else:
                for j in range(seg):
                    yrow[j] = activate(row[j] + bias[f * g.P + p0 + j], act)
        j0 = j0 + seg


cdef inline Py_ssize_t im2col_rows_per_round(const Geom *g, Py_ssize_t tw,
                                             Py_ssize_t itemsize) noexcept nogil:
    """Units (group, tile) correlate_im2col_rows unrolls at once."""
    cdef Py_ssize_t units = g.G * ((g.N * g.P + tw - 1) // tw)
    return max(1, min(units, ROWS_COLS_BYTES // max(1, g.Cg * g.KK * tw * itemsize)))


cdef void correlate_im2col_rows(const floating_t *x, const Geom *g, const floating_t *w,
                                const floating_t *bias, int bias_mode, int act, floating_t *y,
                                Py_ssize_t tw, Py_ssize_t per_round, floating_t *cols,
                                floating_t *scratch, Py_ssize_t per_thread,
                                const Py_ssize_t *offsets, const floating_t **ptrs,
                                const Kernels *kern, int nt) noexcept nogil:
    """Any-stride correlation y = act(x * W + bias) with the weight's rows read in place
    (gemm_rows) instead of packed: every tile of columns sweeps the whole weight, so
    packing it would copy it to read it a few times.  Preferred when the weight is large
    next to the columns: one small image, or a few.

    A tile's tw columns run over the (image, output position) pairs n * P + p of a group,
    as in correlate_im2col_images, so small images fill whole slivers and a batch sweeps
    the weight once per tile, not once per image.  The units (group, tile) run per_round
    at a time: the threads unroll the round's tiles in full (K x tw each, in cols, packed
    nr-column sliver by sliver so that the GEMM reads each sliver's rows contiguously),
    then run tasks (unit, block of filters), so that a single tile still splits over the
    threads while it is unrolled once.  A tile within one image is written to y in place,
    others through the thread's block.  The thread's scratch (per_thread elements) holds
    a KC x tw unrolled block while unrolling, then the Fg x tw output block and an mr x nr
    edge block.  The GEMM cuts the reduction into the same blocks, summed in the same
    order, as correlate_im2col: the same bits.  ptrs holds Fg + CK_MR_MAX row pointers per
    thread."""
    cdef Py_ssize_t mr = block_mr(kern, x), K = g.Cg * g.KK, NP = g.N * g.P
    cdef Py_ssize_t fpad = round_up(g.Fg, mr)
    cdef Py_ssize_t ntiles = (NP + tw - 1) // tw, units = g.G * ntiles
    cdef Py_ssize_t fper = blocks_per_split(min(units, per_round), fpad // mr, nt)
    cdef Py_ssize_t nsplit = (fpad // mr + fper - 1) // fper
    cdef Py_ssize_t nr = block_nr(kern, x), nkb = (K + KC - 1) // KC
    # the weight's rows stream in runs over ROWS_STREAM_BYTES of the tile
    cdef Py_ssize_t kchunk = ROWS_STREAM_BYTES // (reduction_step(K) * tw
                                                   * <Py_ssize_t> sizeof(floating_t))
    cdef Py_ssize_t rnd, u0, nu, t, u, grp, c0, cn, k0, kc, f, f0, f1, ldc, jb
    cdef bint inplace
    cdef floating_t *ctile
    cdef floating_t *dst
    cdef const floating_t **rows
    for rnd in range((units + per_round - 1) // per_round):
        u0 = rnd * per_round
        nu = min(per_round, units - u0)
        for t in prange(nu * nkb, num_threads=nt, schedule="static"):
            ctile = scratch + threadid() * per_thread
            u = u0 + t // nkb
            c0 = u % ntiles * tw
            cn = min(tw, NP - c0)
            k0 = t % nkb * KC
            kc = min(KC, K - k0)
            unroll_columns(x, g, u // ntiles, k0, kc, c0, cn, ctile, tw)
            # sliver jb of the tile: rows k of nr columns at cols[unit][(jb * K + k) * nr]
            # (the last sliver's columns past the tile zero)
            for jb in range((cn + nr - 1) // nr):
                copy_sliver(ctile + jb * nr, tw, kc, min(nr, cn - jb * nr), nr,
                            cols + (t // nkb) * K * tw + (jb * K + k0) * nr)
        # (the split outermost: the threads take different filters of a tile rather than
        # different tiles of one image, whose cut in each filter's row of y both write)
        for t in prange(nu * nsplit, num_threads=nt, schedule="static"):
            rows = ptrs + threadid() * (g.Fg + CK_MR_MAX)
            ctile = scratch + threadid() * per_thread
            u = u0 + t % nu
            grp = u // ntiles
            c0 = u % ntiles * tw
            cn = min(tw, NP - c0)
            f0 = t // nu * fper * mr
            f1 = min(g.Fg, f0 + fper * mr)
            if f0 >= f1:
                continue
            # one image: y in place, a tied bias and the activation in the GEMM's last
            # stores (the micro-kernel's epilogue)
            inplace = c0 // g.P == (c0 + cn - 1) // g.P and bias_mode != 2
            if inplace:
                dst = y + ((c0 // g.P) * g.F + grp * g.Fg + f0) * g.P + c0 % g.P
                ldc = g.P
            else:
                dst = ctile
                ldc = tw
            for f in range(f1 - f0):
                rows[f] = w + (grp * g.Fg + f0 + f) * K
            gemm_rows_block(kern, rows, 0, f1 - f0, K, cols + (t % nu) * K * tw, offsets,
                            cn, dst, ldc, rows + g.Fg, ctile + g.Fg * tw, K * nr, 0, NULL,
                            False, kchunk,
                            bias + grp * g.Fg + f0 if inplace and bias_mode == 1 else NULL,
                            inplace and act == ACT_RELU)
            if not inplace:
                copy_out(dst, ldc, g, grp * g.Fg + f0, grp * g.Fg + f1, c0, cn, bias,
                         bias_mode, act, y)


cdef inline Py_ssize_t im2col_rows_per_thread(const Geom *g, Py_ssize_t tw) noexcept nogil:
    """Scratch elements per thread of correlate_im2col_rows."""
    return max(<Py_ssize_t> KC, g.Fg) * tw + CK_MR_MAX * CK_NR_MAX


cdef Py_ssize_t im2col_rows_scratch(const Geom *g, const floating_t *tag) noexcept nogil:
    """Bytes of scratch of correlate_im2col_rows: the round's unrolled tiles and offsets
    (shared), one thread's scratch and row pointers."""
    cdef Py_ssize_t tw = tile_width(g.N * g.P, block_nr(im2col_rows_kernels(g, tag), tag))
    cdef Py_ssize_t K = g.Cg * g.KK
    return ((im2col_rows_per_round(g, tw, sizeof(floating_t)) * K * tw
             + im2col_rows_per_thread(g, tw)) * sizeof(floating_t)
            + K * sizeof(Py_ssize_t) + (g.Fg + CK_MR_MAX) * sizeof(floating_t *))


cdef void correlate_im2col_rows_call(const floating_t *x, const Geom *g, const floating_t *w,
                                     const floating_t *bias, int bias_mode, int act,
                                     floating_t *y, int nt) except *:
    """correlate_im2col_rows with its scratch, offsets and row pointers allocated here."""
    cdef const Kernels *kern = im2col_rows_kernels(g, x)
    cdef Py_ssize_t nr = block_nr(kern, x)
    cdef Py_ssize_t tw = tile_width(g.N * g.P, nr), K = g.Cg * g.KK
    cdef Py_ssize_t per_round = im2col_rows_per_round(g, tw, sizeof(floating_t))
    cdef Py_ssize_t per_thread = im2col_rows_per_thread(g, tw)
    cdef Py_ssize_t *offsets = <Py_ssize_t *> alloc_scratch(K * sizeof(Py_ssize_t))
    cdef const floating_t **ptrs = NULL
    cdef floating_t *cols = NULL
    cdef floating_t *scratch = NULL
    try:
        ptrs = <const floating_t **> alloc_scratch(nt * (g.Fg + CK_MR_MAX) * sizeof(floating_t *))
        scratch = <floating_t *> alloc_uninit(nt * per_thread * sizeof(floating_t))
        # every value the GEMM reads is unrolled first
        cols = <floating_t *> alloc_uninit(per_round * K * tw * sizeof(floating_t))
    except MemoryError:
        release(offsets)
        release(ptrs)
        release(scratch)
        raise
    row_offsets(offsets, K, nr)
    with nogil:
        correlate_im2col_rows(x, g, w, bias, bias_mode, act, y, tw, per_round, cols, scratch,
                              per_thread, offsets, ptrs, kern, nt)
    release(cols)
    release(scratch)
    release(ptrs)
    release(offsets)


cdef inline Py_ssize_t images_tile_width(const Geom *g, Py_ssize_t nr, int nt) noexcept nogil:
    """Columns per tile of correlate_im2col_images: the N * P (image, position) columns
    of a group in about 2 * nt tiles (so every thread has work), at most TILE and at
    least one nr-sliver (so at most tile_width(N * P, nr), which sizes the scratch).  A
    column's sums do not depend on the tile it lands in, so the width may depend on nt."""
    cdef Py_ssize_t want = max(1, (2 * nt + g.G - 1) // g.G)
    return max(nr, min(<Py_ssize_t> TILE, round_up((g.N * g.P + want - 1) // want, nr)))


cdef inline Py_ssize_t im2col_images_per_thread(Py_ssize_t tw, Py_ssize_t fpad) noexcept nogil:
    """Scratch elements per thread of correlate_im2col_images: the im2col block, the
    tile's output block (fpad rows) and the micro-kernel's edge block."""
    return KC * tw + fpad * tw + CK_MR_MAX * CK_NR_MAX


cdef void correlate_im2col_images(const floating_t *x, const Geom *g, const floating_t *wpack,
                                  const floating_t *bias, int bias_mode, int act, floating_t *y,
                                  Py_ssize_t tw, floating_t *scratch, Py_ssize_t per_thread,
                                  Py_ssize_t *offsets, const Kernels *kern, int nt) noexcept nogil:
    """Any-stride correlation y = act(x * W + bias) on im2col tiles whose tw columns run
    over (image, output position) pairs, n * P + p, of a group: small images give each
    GEMM sweep several images' columns instead of one short image (no halo columns, no
    per-image ragged sliver).  Each column is the same sum over k, in the same order, as
    in correlate_im2col; the tile's outputs go through a tw-wide block, then out."""
    cdef Py_ssize_t mr = block_mr(kern, x), K = g.Cg * g.KK
    cdef Py_ssize_t fpad = round_up(g.Fg, mr)
    cdef Py_ssize_t NP = g.N * g.P
    cdef Py_ssize_t ntiles = (NP + tw - 1) // tw, step = reduction_step(K)
    cdef Py_ssize_t t, grp, c0, cn, kb, k0, kc
    cdef floating_t *col
    cdef floating_t *ctile
    for t in prange(g.G * ntiles, num_threads=nt, schedule="static"):
        col = scratch + threadid() * per_thread
        ctile = col + KC * tw
        grp = t // ntiles
        c0 = (t % ntiles) * tw
        cn = min(tw, NP - c0)
        for kb in range((K + step - 1) // step):
            k0 = kb * step
            kc = min(step, K - k0)
            unroll_columns(x, g, grp, k0, kc, c0, cn, col, tw)
            gemm_block(kern, wpack + grp * fpad * K + k0 * mr, mr * K, g.Fg, kc, col,
                       offsets, 0, NULL, cn, ctile, tw, ctile + fpad * tw, k0 > 0)
        copy_out(ctile, tw, g, grp * g.Fg, (grp + 1) * g.Fg, c0, cn, bias, bias_mode, act, y)


cdef inline bint pointwise_fits(const Geom *g) noexcept nogil:
    """A 1x1, stride-1, unpadded correlation: a plain GEMM per image (correlate_pointwise).
    Unpadded on both sides: padding after the input (implied by the output's size) would
    make positions past the input's end."""
    return (g.KK == 1 and g.sd == 1 and g.sh == 1 and g.sw == 1
            and g.pd == 0 and g.ph == 0 and g.pw == 0
            and g.OD == g.D and g.OH == g.H and g.OW == g.W)


cdef inline Py_ssize_t direct_offsets(const Geom *g, const DirectPlan *d) noexcept nogil:
    """Offsets per thread of correlate_direct: the slab's K tap offsets, a vector-row
    tile's row offsets and the index of the tile last filled."""
    return g.Cg * g.KK + d.planes * d.rows * d.vsegs + 1


cdef Py_ssize_t correlate_scratch(const Geom *g, const Kernels *kern, int operand,
                                  const floating_t *tag) noexcept nogil:
    """Bytes of scratch per thread of correlate on the given operand."""
    cdef Py_ssize_t nr = block_nr(kern, tag), K = g.Cg * g.KK
    cdef DirectPlan d
    if operand == OPERAND_SLAB:
        d = plan_direct(g, nr, block_vl(kern, tag), DIRECT_TILE)
        return d.per_thread * sizeof(floating_t) + direct_offsets(g, &d) * sizeof(Py_ssize_t)
    if operand == OPERAND_IN_PLACE:
        nr = block_nr(pointwise_kernels(g, kern, tag), tag)
        return pointwise_per_thread(K, nr) * sizeof(floating_t)
    if operand == OPERAND_IM2COL_IMAGES:
        return im2col_images_per_thread(tile_width(g.N * g.P, nr),
                                        round_up(g.Fg, block_mr(kern, tag))) * sizeof(floating_t)
    return im2col_per_thread(tile_width(g.P, nr)) * sizeof(floating_t)


cdef void correlate(const floating_t *x, const Geom *g, const floating_t *wpack,
                    const floating_t *bias, int bias_mode, int act, floating_t *y,
                    const OutLayout *out, int operand, const Kernels *kern, int nt,
                    const floating_t *w=NULL, const Geom *flipped_from=NULL) except *:
    """y = act(x * W + bias) with the GEMM's B operand read from a padded input slab
    (OPERAND_SLAB, which needs direct_fits(g)), from im2col tiles (OPERAND_IM2COL, or
    OPERAND_IM2COL_IMAGES with tiles spanning images, which needs a contiguous y) or
    from x in place (OPERAND_IN_PLACE, which needs pointwise_fits(g)); wpack as in
    correlate_direct, or, in place where pointwise_packs_in_tasks, NULL with w the
    weight (flipped_from: the layer's geometry of a flipped input gradient).

    y is laid out as out says: a layout other than contiguous(g) needs the slab.
    """
    cdef Py_ssize_t nr = block_nr(kern, x), K = g.Cg * g.KK
    cdef Py_ssize_t tw = tile_width(g.P, nr)
    cdef DirectPlan d
    cdef floating_t *scratch
    cdef Py_ssize_t *offsets
    if operand == OPERAND_IN_PLACE:
        offsets = <Py_ssize_t *> alloc_scratch(2 * K * sizeof(Py_ssize_t))
        try:
            scratch = <floating_t *> alloc_scratch(
                nt * pointwise_per_thread(K, nr) * sizeof(floating_t))
        except MemoryError:
            release(offsets)
            raise
        row_offsets(offsets, K, g.P)
        row_offsets(offsets + K, K, nr)
        with nogil:
            correlate_pointwise(x, g, wpack, bias, bias_mode, act, y, scratch, offsets, kern,
                                nt, w, flipped_from)
    elif operand == OPERAND_SLAB:
        d = plan_direct(g, nr, block_vl(kern, x), DIRECT_TILE)
        offsets = <Py_ssize_t *> alloc_scratch(nt * direct_offsets(g, &d) * sizeof(Py_ssize_t))
        try:
            scratch = <floating_t *> alloc_scratch(nt * d.per_thread * sizeof(floating_t))
        except MemoryError:
            release(offsets)
            raise
        with nogil:
            correlate_direct(x, g, wpack, bias, bias_mode, act, y, out, &d, scratch, offsets,
                             kern, nt)
    elif operand == OPERAND_IM2COL_IMAGES:
        tw = images_tile_width(g, nr, nt)
        offsets = <Py_ssize_t *> alloc_scratch(KC * sizeof(Py_ssize_t))
        try:
            scratch = <floating_t *> alloc_scratch(nt * correlate_scratch(g, kern, operand, x))
        except MemoryError:
            release(offsets)
            raise
        row_offsets(offsets, KC, tw)
        with nogil:
            correlate_im2col_images(x, g, wpack, bias, bias_mode, act, y, tw, scratch,
                                    correlate_scratch(g, kern, operand, x) // sizeof(floating_t),
                                    offsets, kern, nt)
    else:
        offsets = <Py_ssize_t *> alloc_scratch(KC * sizeof(Py_ssize_t))
        try:
            scratch = <floating_t *> alloc_scratch(nt * im2col_per_thread(tw) * sizeof(floating_t))
        except MemoryError:
            release(offsets)
            raise
        row_offsets(offsets, KC, tw)
        with nogil:
            correlate_im2col(x, g, wpack, bias, bias_mode, act, y, tw, scratch, offsets, kern,
                             nt)
    release(scratch)
    release(offsets)


cdef void correlate_slab_rows_call(const floating_t *x, const Geom *g, const floating_t *w,
                                   const floating_t *bias, int bias_mode, int act,
                                   floating_t *y, int nt) except *:
    """correlate_direct with the weight's rows read in place (no pack), its scratch,
    offsets and row pointers allocated here; y contiguous."""
    cdef Py_ssize_t nr = block_nr(&KERN, x)
    cdef DirectPlan d = plan_direct(g, nr, block_vl(&KERN, x), DIRECT_TILE)
    cdef OutLayout layout = contiguous(g)
    cdef Py_ssize_t *offsets = <Py_ssize_t *> alloc_scratch(
        nt * direct_offsets(g, &d) * sizeof(Py_ssize_t))
    cdef floating_t *scratch = NULL
    cdef const floating_t **ptrs = NULL
    try:
        scratch = <floating_t *> alloc_scratch(nt * d.per_thread * sizeof(floating_t))
        ptrs = <const floating_t **> alloc_scratch(
            nt * (g.Fg + CK_MR_MAX) * sizeof(floating_t *))
    except MemoryError:
        release(offsets)
        release(scratch)
        raise
    with nogil:
        correlate_direct(x, g, NULL, bias, bias_mode, act, y, &layout, &d, scratch, offsets,
                         &KERN, nt, w, ptrs)
    release(ptrs)
    release(scratch)
    release(offsets)


def conv_forward(const floating_t[:, :, :, :, ::1] x not None,
                 const floating_t[:, :, :, :, ::1] weight not None,
                 const floating_t[::1] bias not None, int bias_mode,
                 floating_t[:, :, :, :, ::1] out not None, Py_ssize_t groups,
                 tuple stride, tuple pad, tuple dilation, int path, int activation,
                 int num_threads):
    """Fill out (N, F, OD, OH, OW) with act(x * weight + bias) on the given path.

    bias_mode 0: no bias; 1: bias (F,); 2: untied bias (F, OD * OH * OW).  activation:
    an index in ACTIVATIONS.  path: an index in PATHS["forward"] that is valid for the
    geometry (see geometry_facts).  pad holds the padding before each axis; the shapes
    were validated by the caller.
    """
    cdef Geom g = make_geom(x.shape, weight.shape, out.shape, groups, stride, pad, dilation)
    if path == FWD_DEPTHWISE_CHANNELS_LAST:
        depthwise_cl_forward_call(&x[0, 0, 0, 0, 0], &g, &weight[0, 0, 0, 0, 0], False,
                                  &bias[0] if bias.shape[0] else NULL, bias_mode, activation,
                                  &out[0, 0, 0, 0, 0], max(1, num_threads))
        return
    if path == FWD_DEPTHWISE:
        depthwise_forward_call(&x[0, 0, 0, 0, 0], &g, &weight[0, 0, 0, 0, 0],
                               &bias[0] if bias.shape[0] else NULL, bias_mode, activation,
                               &out[0, 0, 0, 0, 0], max(1, num_threads))
        return
    if path == FWD_IM2COL_ROWS:
        correlate_im2col_rows_call(&x[0, 0, 0, 0, 0], &g, &weight[0, 0, 0, 0, 0],
                                   &bias[0] if bias.shape[0] else NULL, bias_mode, activation,
                                   &out[0, 0, 0, 0, 0], max(1, num_threads))
        return
    if path == FWD_SLAB_ROWS:
        correlate_slab_rows_call(&x[0, 0, 0, 0, 0], &g, &weight[0, 0, 0, 0, 0],
                                 &bias[0] if bias.shape[0] else NULL, bias_mode, activation,
                                 &out[0, 0, 0, 0, 0], max(1, num_threads))
        return
    if path == FWD_CHANNELS_LAST or path == FWD_CHANNELS_LAST_SKIP:
        correlate_channels_last_call(&x[0, 0, 0, 0, 0], &g, &weight[0, 0, 0, 0, 0],
                                     &bias[0] if bias.shape[0] else NULL, bias_mode,
                                     activation, &out[0, 0, 0, 0, 0], NULL,
                                     path == FWD_CHANNELS_LAST_SKIP, max(1, num_threads))
        return
    if path == FWD_DENSE:
        dense_forward_call(&x[0, 0, 0, 0, 0], &weight[0, 0, 0, 0, 0], &g,
                           &bias[0] if bias.shape[0] else NULL, bias_mode, activation,
                           &out[0, 0, 0, 0, 0], max(1, num_threads))
        return
    cdef bint narrow = path == FWD_SLAB_NARROW or path == FWD_IM2COL_NARROW
    cdef const Kernels *kern = &KERN4 if narrow else &KERN
    cdef int operand = (OPERAND_SLAB if path == FWD_SLAB or path == FWD_SLAB_NARROW
                        else OPERAND_IN_PLACE if path == FWD_POINTWISE
                        else OPERAND_IM2COL_IMAGES if path == FWD_IM2COL_IMAGES
                        else OPERAND_IM2COL)
    if operand == OPERAND_IN_PLACE:
        kern = pointwise_kernels(&g, kern, &x[0, 0, 0, 0, 0])
    cdef OutLayout layout
    cdef Py_ssize_t mr = block_mr(kern, &x[0, 0, 0, 0, 0])
    cdef Py_ssize_t K = g.Cg * g.KK, fpad = round_up(g.Fg, mr)
    cdef floating_t *wpack = NULL
    layout = contiguous(&g)
    if operand == OPERAND_IN_PLACE and pointwise_packs_in_tasks(&g, kern, &x[0, 0, 0, 0, 0]):
        correlate(&x[0, 0, 0, 0, 0], &g, NULL, &bias[0] if bias.shape[0] else NULL,
                  bias_mode, activation, &out[0, 0, 0, 0, 0], &layout, operand, kern,
                  max(1, num_threads), &weight[0, 0, 0, 0, 0])
        return
    wpack = <floating_t *> alloc_uninit(g.G * fpad * K * sizeof(floating_t))
    with nogil:
        pack_forward_weights(&weight[0, 0, 0, 0, 0], &g, mr, wpack, max(1, num_threads))
    try:
        correlate(&x[0, 0, 0, 0, 0], &g, wpack, &bias[0] if bias.shape[0] else NULL,
                  bias_mode, activation, &out[0, 0, 0, 0, 0], &layout, operand, kern,
                  max(1, num_threads))
    finally:
        release(wpack)
