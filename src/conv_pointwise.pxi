# The correlation of a 1x1, stride-1, unpadded layer as a plain GEMM over the arrays in
# place: no slab, no im2col, no copy-out.  Included by _conv.pyx.


# Bytes of x one tile of the pointwise path spans (Cg rows of its positions): every
# mr-row block of filters sweeps it, so it should stay in the L2 cache.
cdef Py_ssize_t POINTWISE_TILE_BYTES = 256 << 10


cdef inline const Kernels *pointwise_kernels(const Geom *g, const Kernels *kern,
                                             const floating_t *tag) noexcept nogil:
    """The kernels of correlate_pointwise: the 4-row block when a group has at most 4
    filters (a segmentation head's 2 classes, whose 8-row blocks would be three-quarters
    empty: 3-D U-Net's 16 -> 2 head over 32^3 is a pass over memory that the wasted
    multiply-adds slowed), else kern.  The block shape never changes the bits."""
    if g.Fg <= block_mr(&KERN4, tag):
        return &KERN4
    return kern


cdef inline Py_ssize_t pointwise_per_thread(Py_ssize_t K, Py_ssize_t nr) noexcept nogil:
    """Scratch elements per thread of correlate_pointwise: a K x nr block for the ragged
    end of a plane, the micro-kernel's edge block and a K x mr block of A (packed by the
    task, pointwise_packs_in_tasks)."""
    return K * nr + CK_MR_MAX * CK_NR_MAX + K * CK_MR_MAX


cdef inline Py_ssize_t pointwise_tile(const Geom *g, Py_ssize_t nr,
                                      Py_ssize_t itemsize) noexcept nogil:
    """Positions per tile of correlate_pointwise: whole slivers, Cg rows of them within
    POINTWISE_TILE_BYTES."""
    return min(round_up(g.P, nr),
               max(nr, (POINTWISE_TILE_BYTES // (g.Cg * itemsize)) // nr * nr))


cdef inline bint pointwise_packs_in_tasks(const Geom *g, const Kernels *kern,
                                          const floating_t *tag) noexcept nogil:
    """One image and one tile of positions: each block of A serves one task only, which
    packs it itself (see correlate_pointwise)."""
    cdef Py_ssize_t nr = block_nr(kern, tag)
    return g.N == 1 and g.P <= pointwise_tile(g, nr, sizeof(floating_t))


cdef void correlate_pointwise(const floating_t *x, const Geom *g, const floating_t *wpack,
                              const floating_t *bias, int bias_mode, int act, floating_t *y,
                              floating_t *scratch, const Py_ssize_t *offsets,
                              const Kernels *kern, int nt, const floating_t *w=NULL,
                              const Geom *flipped_from=NULL) noexcept nogil:
    """y = act(W @ x + bias) for a 1x1, stride-1, unpadded correlation (pointwise_fits).

    Per image and group, y[n, g] (Fg x P) = W[g] (Fg x Cg) @ x[n, g] (Cg x P): the GEMM
    reads x's channel planes in place as its B rows and writes y's filter planes in place
    as its C rows.  Tiles of whole nr-slivers; the ragged end of a plane is copied into a
    zero-padded Cg x nr block first, so no read goes past a plane.  offsets holds the B
    row offsets k * P, then k * nr (for that block).  Each mr-row block of filters runs
    along the whole tile before the next starts, so the micro-kernel's stores are mr
    sequential streams into y rather than mr scattered lines per call (the tile of x,
    about 256 KiB at most, stays in cache meanwhile).  The first block brings the tile
    from memory: its K rows are K streams a plane apart, more than the hardware's
    prefetchers follow (MobileNetV2's 96 -> 16 input gradient waited on memory at every
    row, 2.5x slower), so it asks for each row's lines two slivers ahead
    (CK_GEMM_PREFETCH); the later blocks read the tile from cache.  With w given (wpack
    NULL: one image of one tile, pointwise_packs_in_tasks), each task packs its own
    blocks of A from the weight (pack_forward_block, or for the flipped input gradient
    pack_flipped_block of the layer's geometry flipped_from) right before they run, in
    its core's cache: no separate parallel pass, and no packed copy written out and read
    back.  Tasks are (block of filters, image, group, tile), the filter split
    outermost: with few (image, group, tile) units the threads then take different rows
    of y, not different columns of the same rows, whose cuts share a cache line per row
    that both threads write (MobileNetV2's 14x14 1x1 layers at batch 1 ran slower on 2
    threads than on 1 with tiles per thread).  Every
    output is the same sum as on the slab path (the same micro-kernel over the same
    reduction blocks), so the bits are the slab path's.
    """
    cdef Py_ssize_t mr = block_mr(kern, x), nr = block_nr(kern, x), K = g.Cg
    cdef Py_ssize_t fpad = round_up(g.Fg, mr), fblocks = fpad // mr
    cdef Py_ssize_t tw = pointwise_tile(g, nr, sizeof(floating_t))
    cdef Py_ssize_t ntiles = (g.P + tw - 1) // tw, units = g.N * g.G * ntiles
    cdef Py_ssize_t nsplit = 1, fper
    cdef Py_ssize_t t, u, n, grp, f0, f1, m0, p0, pn, full, k, j
    if units < 4 * nt:
        # splits of the filters, a multiple of the thread count (each thread's share of
        # the tasks is then whole splits over every unit)
        nsplit = min(fblocks, round_up((4 * nt + units - 1) // units, nt))
    fper = (fblocks + nsplit - 1) // nsplit
    nsplit = (fblocks + fper - 1) // fper
    cdef const floating_t *xg
    cdef const floating_t *a
    cdef const floating_t *brow
    cdef floating_t *yg
    cdef floating_t *tail
    for t in prange(units * nsplit, num_threads=nt, schedule="static"):
        tail = scratch + threadid() * pointwise_per_thread(K, nr)
        u = t % units
        n = u // (g.G * ntiles)
        grp = u // ntiles % g.G
        p0 = u % ntiles * tw
        pn = min(tw, g.P - p0)
        full = pn // nr * nr
        f0 = t // units * fper * mr
        f1 = min(g.Fg, f0 + fper * mr)
        if f0 >= f1:
            continue
        xg = x + (n * g.C + grp * g.Cg) * g.P + p0
        yg = y + (n * g.F + grp * g.Fg) * g.P + p0
        if pn > full:
            for k in range(K):
                memcpy(tail + k * nr, xg + k * g.P + full, (pn - full) * sizeof(floating_t))
                memset(tail + k * nr + pn - full, 0, (nr - pn + full) * sizeof(floating_t))
        for j in range((f1 - f0 + mr - 1) // mr):
            m0 = f0 + j * mr
            if w != NULL:
                a = tail + K * nr + CK_MR_MAX * CK_NR_MAX
                if flipped_from == NULL:
                    pack_forward_block(w, g, grp, m0, min(mr, f1 - m0), mr,
                                       <floating_t *> a)
                else:
                    pack_flipped_block(w, flipped_from, grp, m0, min(mr, f1 - m0), mr,
                                       <floating_t *> a)
            else:
                a = wpack + grp * fpad * K + m0 * K
            # a tied bias and the activation in the GEMM's last stores
            brow = bias + grp * g.Fg + m0 if bias_mode == 1 else NULL
            if full > 0:
                gemm_block(kern, a, mr * K, min(mr, f1 - m0), K, xg, offsets, 0, NULL, full,
                           yg + m0 * g.P, g.P, tail + K * nr, False, brow,
                           act == ACT_RELU and bias_mode != 2, j == 0)
            if pn > full:
                gemm_block(kern, a, mr * K, min(mr, f1 - m0), K, tail, offsets + K, 0, NULL,
                           pn - full, yg + m0 * g.P + full, g.P, tail + K * nr, False, brow,
                           act == ACT_RELU and bias_mode != 2)
        if bias_mode == 2:
            copy_out(yg + f0 * g.P, g.P, g, grp * g.Fg + f0, grp * g.Fg + f1, n * g.P + p0, pn,
                     bias, bias_mode, act, y)
