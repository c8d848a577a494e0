# The weight gradient with the window's (channel, tap) pairs as the GEMM's rows, gathered
# in place from a channels-last copy of the input at every output position, and the
# filters along the micro-kernel's vectors.  Included by _conv.pyx.
#
# With the input copied channels-last and zero-padded (cl_fill_plane, as the
# channels-last correlation's copy), per image n and group
#
#     gw_t[c * KK + tap, f] += sum over p of slab_n[start(p) + shift(tap) + c] * gy[n, f, p],
#
# a GEMM (gemm.pxd's gemm_gather_block) whose row i = (c, tap) is the pointer
# slab_n + shift(tap) + c, whose reduction index p reads it at start(p), and whose B is
# grad_y transposed, nr filters per sliver.  For a layer of few channels (a stem's 1-3, a
# 3-D U-Net's first 16) the other paths' vectors run along positions or along runs of
# KW * Cg channels: an im2col of the stem copies its 3 x 7 x 7 window per position
# (49 copies of the input), and the channels-last GEMM's runs of 21 or 3 values fill a
# fraction of their slivers.  Here every vector is filters of grad_y and nothing is
# unrolled.
#
# Tasks: the batch in chunks (a function of the shapes only), each summed into its own
# partial, times ranges of row blocks (enough tasks for the threads); a task goes over
# its chunk's images in order and, per image, over runs of positions (the run
# boundaries a function of the shapes).  A task transposes each run of grad_y into B's
# layout in its own buffer (the bias gradient's sums taken on the way by the first
# range) right before its GEMM, which then reads B from L2 and L1: transposed for the
# whole call first, B came back from L3 (VGG's 3-channel stem at batch 32 spent 30% of
# its time transposing and ran its GEMM at half the speed it reaches with B in cache).
# Ranges of one chunk transpose the same runs, each its own copy.  The partials are
# added in chunk order: the same bits for any thread count.


cdef struct GatherWgrad:
    # The copy's extent per axis, elements per position (cs) and per (image, group)
    # plane; rows per group (Cg * KK) and the partials' row stride (filters rounded up
    # to whole slivers); filter slivers; images per chunk and chunks; positions per run
    # and runs per image; row blocks per range and ranges; a partial's elements; a
    # thread's scratch elements (a run of B, then the edge block) and row pointers.
    Py_ssize_t ED, EH, EW, cs, plane
    Py_ssize_t M, ldc, nsl
    Py_ssize_t per_chunk, nchunks
    Py_ssize_t prun, nruns
    Py_ssize_t mper, nsplit
    Py_ssize_t part, per_thread, ptrs


cdef inline const Kernels *gather_wgrad_kernels(const Geom *g,
                                                const floating_t *tag) noexcept nogil:
    """One vector wide when a group's filters fit in one vector (3-D U-Net's 16)."""
    return &KERN1 if g.Fg <= block_vl(&KERN, tag) else &KERN


cdef GatherWgrad gather_wgrad_layout(const Geom *g, int nt, const floating_t *tag) noexcept nogil:
    cdef GatherWgrad L
    cdef const Kernels *kern = gather_wgrad_kernels(g, tag)
    cdef Py_ssize_t mr = block_mr(kern, tag), nr = block_nr(kern, tag)
    cdef Py_ssize_t isz = sizeof(floating_t)
    L.ED = read_extent(g.OD, g.sd, g.KD, g.dd)
    L.EH = read_extent(g.OH, g.sh, g.KH, g.dh)
    L.EW = read_extent(g.OW, g.sw, g.KW, g.dw)
    L.cs = channel_stride(g.Cg, g.KK, mr, isz)
    L.plane = L.ED * L.EH * L.EW * L.cs
    L.M = g.Cg * g.KK
    L.nsl = (g.Fg + nr - 1) // nr
    L.ldc = L.nsl * nr
    L.part = g.G * L.M * L.ldc
    L.nchunks = max(1, min(g.N, MAX_CHUNKS, PARTIAL_BYTES // max(1, L.part * isz)))
    L.per_chunk = (g.N + L.nchunks - 1) // L.nchunks
    L.nchunks = (g.N + L.per_chunk - 1) // L.per_chunk
    # runs of whole reduction blocks whose packed grad_y fits CHANNELS_LAST_SUB_BYTES
    L.prun = max(<Py_ssize_t> KC,
                 CHANNELS_LAST_SUB_BYTES // (L.ldc * isz) // KC * KC)
    L.prun = min(L.prun, g.P)
    L.nruns = (g.P + L.prun - 1) // L.prun
    # Ranges of row blocks per (chunk, group): every range reads and transposes its
    # chunk's grad_y once more (3.2 MB per range for ResNet-18's 7x7 stem at batch 1),
    # so as few as give every thread the same number of tasks; finer, the last range's
    # few blocks left one thread 12 of 19 blocks and both a stream each per range.
    L.nsplit = nt // gcd(L.nchunks * g.G, nt)
    L.mper = ((L.M + mr - 1) // mr + L.nsplit - 1) // L.nsplit
    L.nsplit = ((L.M + mr - 1) // mr + L.mper - 1) // L.mper
    L.per_thread = round_up(L.prun * L.ldc + CK_MR_MAX * CK_NR_MAX, 64 // isz)
    L.ptrs = L.mper * mr + CK_MR_MAX
    return L


cdef Py_ssize_t gather_wgrad_scratch(const Geom *g, const floating_t *tag) noexcept nogil:
    """Bytes of scratch of weight_grad_gather on one thread: the copy, the partials, the
    offsets and the bias sums (shared), a thread's run of B, edge block and row
    pointers."""
    cdef GatherWgrad L = gather_wgrad_layout(g, 1, tag)
    return ((g.G * g.N * L.plane + L.nchunks * L.part + L.per_thread)
            * sizeof(floating_t) + (L.M + g.P) * sizeof(Py_ssize_t)
            + L.ptrs * sizeof(floating_t *) + g.N * L.nruns * g.F * sizeof(double))


cdef void gather_wgrad_pack(const floating_t *gy, const Geom *g, const GatherWgrad *L,
                            Py_ssize_t nr, Py_ssize_t n, Py_ssize_t grp, Py_ssize_t s,
                            Py_ssize_t r, floating_t *dst, double *bsum) noexcept nogil:
    """Sliver s of run r of B for image n, group grp (positions p0 .. p0 + pn, p0 = r *
    prun): dst[p * nr + j] = gy[n, grp * Fg + s * nr + j, p0 + p], zero past Fg; with
    bsum, bsum[(n * nruns + r) * F + f] = the run's sum of grad_y for the sliver's
    filters."""
    cdef Py_ssize_t rows = min(nr, g.Fg - s * nr), p0 = r * L.prun
    cdef Py_ssize_t pn = min(L.prun, g.P - p0), p, j
    cdef const floating_t *src = gy + (n * g.F + grp * g.Fg + s * nr) * g.P + p0
    transpose(src, g.P, rows, pn, dst, nr)
    if rows < nr:
        for p in range(pn):
            for j in range(rows, nr):
                dst[p * nr + j] = 0
    if bsum != NULL:
        add_rows(bsum + (n * L.nruns + r) * g.F + grp * g.Fg + s * nr, src, g.P, rows, pn)


cdef void weight_grad_gather(const floating_t *x, const floating_t *gy, const Geom *g,
                             floating_t *gw, floating_t *bias_out, int nt) except *:
    """gw (F, Cg, KD, KH, KW) as in the file's comment, for a call that
    channels_last_fits; bias_out (F,), when not NULL, gets grad_y's sums per filter
    (double, in image order, within an image in run order)."""
    cdef const Kernels *kern = gather_wgrad_kernels(g, x)
    cdef GatherWgrad L = gather_wgrad_layout(g, nt, x)
    cdef Py_ssize_t mr = block_mr(kern, x), nr = block_nr(kern, x), K = g.Cg * g.KK
    cdef Py_ssize_t t, c, grp, sp, i0, i1, i, n, n1, r, p0, pn, b, f, s
    cdef floating_t *slab = NULL
    cdef floating_t *partials = NULL
    cdef floating_t *scratch = NULL
    cdef floating_t *brun
    cdef floating_t *part
    cdef Py_ssize_t *offsets = NULL
    cdef Py_ssize_t *shift
    cdef Py_ssize_t *start
    cdef const floating_t **ptrs = NULL
    cdef const floating_t **rows
    cdef double *bsum = NULL
    cdef double acc
    try:
        # every element of these is written before it is read
        slab = <floating_t *> alloc_uninit(g.G * g.N * L.plane * sizeof(floating_t))
        partials = <floating_t *> alloc_uninit(L.nchunks * L.part * sizeof(floating_t))
        scratch = <floating_t *> alloc_uninit(nt * L.per_thread * sizeof(floating_t))
        offsets = <Py_ssize_t *> alloc_uninit((L.M + g.P) * sizeof(Py_ssize_t))
        ptrs = <const floating_t **> alloc_uninit(nt * L.ptrs * sizeof(floating_t *))
        if bias_out != NULL:
            bsum = <double *> alloc_scratch(g.N * L.nruns * g.F * sizeof(double))
        with nogil:
            # shift[c * KK + tap] and start[p] as the channels-last correlation's
            shift = offsets
            start = offsets + L.M
            channels_last_offsets(g, L.EH, L.EW, L.cs, shift, start)
            for t in prange(g.N * g.G, num_threads=nt, schedule="static"):
                cl_fill_plane(x, g, L.ED, L.EH, L.EW, L.cs, t // g.G, t % g.G,
                              g.pd, g.ph, g.pw, slab + (t % g.G * g.N + t // g.G) * L.plane)
            for t in prange(L.nchunks * g.G * L.nsplit, num_threads=nt, schedule="static"):
                c = t // (g.G * L.nsplit)
                grp = t // L.nsplit % g.G
                sp = t % L.nsplit
                i0 = sp * L.mper * mr
                i1 = min(L.M, i0 + L.mper * mr)
                if i0 >= i1:
                    continue
                rows = ptrs + threadid() * L.ptrs
                brun = scratch + threadid() * L.per_thread
                part = partials + c * L.part + grp * L.M * L.ldc
                n1 = min(g.N, (c + 1) * L.per_chunk)
                for n in range(c * L.per_chunk, n1):
                    for i in range(i0, i1):
                        rows[i - i0] = slab + (grp * g.N + n) * L.plane + shift[i]
                    for r in range(L.nruns):
                        p0 = r * L.prun
                        pn = min(L.prun, g.P - p0)
                        # the run of B, sliver s at brun + s * prun * nr
                        for s in range(L.nsl):
                            gather_wgrad_pack(gy, g, &L, nr, n, grp, s, r,
                                              brun + s * L.prun * nr,
                                              bsum if sp == 0 else NULL)
                        gemm_gather_run(kern, rows, start + p0, i1 - i0, pn, brun,
                                        L.prun * nr, g.Fg, part + i0 * L.ldc, L.ldc,
                                        rows + L.mper * mr, brun + L.prun * L.ldc,
                                        n > c * L.per_chunk or r > 0)
            # partial[0] += partial[b] for b = 1, 2, ... in chunk order, then
            # gw[grp * Fg + f, i] = partial[0][grp][i][f]
            for t in prange(g.G * L.M, num_threads=nt, schedule="static"):
                for b in range(1, L.nchunks):
                    for f in range(g.Fg):
                        partials[t * L.ldc + f] += partials[b * L.part + t * L.ldc + f]
            for grp in range(g.G):
                transpose(partials + grp * L.M * L.ldc, L.ldc, L.M, g.Fg, gw + grp * g.Fg * K, K)
            if bsum != NULL:
                for f in range(g.F):
                    acc = 0
                    for b in range(g.N * L.nruns):
                        acc += bsum[b * g.F + f]
                    bias_out[f] = <floating_t> acc
    finally:
        release(bsum)
        release(ptrs)
        release(offsets)
        release(scratch)
        release(partials)
        release(slab)
