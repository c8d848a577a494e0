# The correlation y = act(x * W + bias) computed channels-last: output positions as the
# GEMM's rows, read in place from a channels-last copy of the input, and filters along
# the micro-kernel's vectors.  Included by _conv.pyx.
#
# With the input copied channels-last and zero-padded (one plane per image and group, as
# the channels-last weight gradient's slab: cl_fill_plane), the output at position
# r = (n, p) of a group is
#
#     yt[r, f] = sum over k = c * KK + tap of slab[start(r) + shift(tap) + c] * W[f, k],
#
# a GEMM whose A rows are gathered in place (gemm.pxd's gemm_gather_block: a row
# pointer start(r) per position, an offset shift(tap) + c per reduction index) and whose
# B is the weight transposed, nr filters per sliver (pack_forward_weights with nr for
# mr).  Against the other forward paths: no im2col (each input value is copied once, not
# once per tap) and no halo (the rows are the output positions themselves, over images,
# so small images fill the blocks: 16 positions of a 4x4 image are two 8-row blocks,
# where a 32-column sliver of positions is half empty).  k runs in the order, and the
# reduction in the blocks, of the other forward paths: the same bits.
#
# Tasks: a tile of positions (over images) times a range of filter slivers, so a batch
# of one small image still splits over the threads.  A task's tw x fn output block is
# transposed into y, then the bias and the activation are applied (copy_out's operations
# in its order).
#
# With one tile of positions (at most TILE in all: the 4x4 to 8x8 stages of VGG, ResNet
# and U-Net at their training batch), each block of the weight serves one task only, so
# the task packs each KC x nr block itself, into a buffer in its core's L1, right before
# the blocks of rows pass over it (gemm_gather_packing): the same transposes as the
# separate pack, but the packed weight (9 MiB for 512 x 512 x 3 x 3) is neither written
# to memory nor read back.  Measured on an AVX-512 Xeon (2 threads): 512-channel layers
# 1.07-1.12x faster, 128-256 channels within noise.  The flipped input gradient does
# the same with its flipped blocks (pack_flipped_kblock): VGG's 512-channel 4x4 layer
# at batch 16 5.2 -> 4.7 ms.  With more tiles the weight is packed once, up front, and
# read by every tile.

# Upper bound, in bytes, of a task's output block: it is read and written once per
# reduction block, so it stays within half the smallest per-core L2 of the x86 cores
# the wheels target (Zen 2's 512 KiB).  It only sets the task's filter range, never the
# bits.
cdef Py_ssize_t CL_FORWARD_OUT_BYTES = 256 << 10


cdef struct ClForward:
    # The slab's extent per axis, elements per position (cs >= Cg) and per (image,
    # group) plane; positions per
    # tile and tiles over the N * P positions; filter slivers and slivers per task range
    # and ranges; scratch elements per thread (output block, edge block and a KC x nr
    # block of the weight) and row pointers per thread.
    Py_ssize_t ED, EH, EW, cs, plane
    Py_ssize_t tw, ntiles
    Py_ssize_t nsl, sper, nsplit
    Py_ssize_t per_thread, ptrs


cdef inline Py_ssize_t channel_stride(Py_ssize_t Cg, Py_ssize_t KK, Py_ssize_t mr,
                                      Py_ssize_t itemsize) noexcept nogil:
    """Elements from one position of the slab to the next: Cg, or, when Cg values span
    several cache lines, Cg rounded up to a line, plus one line when that many bytes
    would put the positions a row block's windows read (mr rows, KK taps) in too few L1
    sets to stay in the cache (rows_alias: VGG's 4x4 images of 512 channels, 2 KiB
    apart, ran at half the speed)."""
    cdef Py_ssize_t line = 64 // itemsize, cs
    if Cg <= line:
        return Cg
    cs = round_up(Cg, line)
    if rows_alias(cs * itemsize, mr * KK):
        cs = cs + line
    return cs


cdef inline const Kernels *cl_forward_kernels(const Geom *g,
                                              const floating_t *tag) noexcept nogil:
    """The kernels of correlate_channels_last: one vector wide when the filters of a
    group fit in one vector (LeNet-5's 16), so that no sliver is half empty."""
    return &KERN1 if g.Fg <= block_vl(&KERN, tag) else &KERN


cdef ClForward cl_forward_layout(const Geom *g, const Kernels *kern, int nt,
                                 const floating_t *tag) noexcept nogil:
    cdef ClForward L
    cdef Py_ssize_t mr = block_mr(kern, tag), nr = block_nr(kern, tag), NP = g.N * g.P
    L.ED = read_extent(g.OD, g.sd, g.KD, g.dd)
    L.EH = read_extent(g.OH, g.sh, g.KH, g.dh)
    L.EW = read_extent(g.OW, g.sw, g.KW, g.dw)
    L.cs = channel_stride(g.Cg, g.KK, mr, sizeof(floating_t))
    L.plane = L.ED * L.EH * L.EW * L.cs
    # equal tiles of at most TILE positions, whole row blocks
    L.ntiles = (NP + TILE - 1) // TILE
    L.tw = round_up((NP + L.ntiles - 1) // L.ntiles, mr)
    L.ntiles = (NP + L.tw - 1) // L.tw
    L.nsl = (g.Fg + nr - 1) // nr
    L.sper = min(blocks_per_split(g.G * L.ntiles, L.nsl, nt),
                 max(1, CL_FORWARD_OUT_BYTES // (L.tw * nr * <Py_ssize_t> sizeof(floating_t))))
    L.nsplit = (L.nsl + L.sper - 1) // L.sper
    L.per_thread = round_up(L.tw * L.sper * nr + CK_MR_MAX * CK_NR_MAX + KC * nr,
                            64 // <Py_ssize_t> sizeof(floating_t))
    L.ptrs = L.tw + CK_MR_MAX
    return L


cdef Py_ssize_t channels_last_forward_scratch(const Geom *g,
                                              const floating_t *tag) noexcept nogil:
    """Bytes of scratch of correlate_channels_last on one thread: the slab, the packed
    weight (an upper bound: one tile packs it in its tasks) and the offsets (shared), the
    thread's output block, its block of the weight and its row pointers."""
    cdef const Kernels *kern = cl_forward_kernels(g, tag)
    cdef ClForward L = cl_forward_layout(g, kern, 1, tag)
    cdef Py_ssize_t nr = block_nr(kern, tag), K = g.Cg * g.KK
    return ((g.G * g.N * L.plane + g.G * round_up(g.Fg, nr) * K + L.per_thread)
            * sizeof(floating_t) + (K + g.P) * sizeof(Py_ssize_t)
            + L.ptrs * sizeof(floating_t *))


cdef inline void gemm_gather_packing(const Kernels *kern, const floating_t **rows,
                                     const Py_ssize_t *aoff, Py_ssize_t M, Py_ssize_t K,
                                     const floating_t *w, Py_ssize_t ncols, floating_t *C,
                                     Py_ssize_t ldc, const floating_t **aptr,
                                     floating_t *ctmp, floating_t *bblock,
                                     const Geom *flipped_from, Py_ssize_t grp,
                                     Py_ssize_t c0) noexcept nogil:
    """gemm_gather_block with B = w's ncols rows (K values each) transposed, packed here
    one reduction block of one sliver at a time into bblock (KC x nr, in L1 when the
    block's rows pass): the same products, in the same order.  flipped_from not NULL:
    B is instead the flipped input gradient's of layer geometry flipped_from (w the
    layer's weight), columns c0 .. c0 + ncols of group grp."""
    cdef Py_ssize_t nr = block_nr(kern, w), kstep = reduction_step(K)
    cdef Py_ssize_t nkb = (K + kstep - 1) // kstep if kstep > 0 else 0
    cdef Py_ssize_t kb, jb, k0, kc, nn
    for kb in range(nkb):
        k0 = kb * kstep
        kc = min(kstep, K - k0)
        for jb in range((ncols + nr - 1) // nr):
            nn = min(nr, ncols - jb * nr)
            if flipped_from != NULL:
                pack_flipped_kblock(w, flipped_from, grp, c0 + jb * nr, nn, k0, kc, nr,
                                    bblock)
            else:
                pack_transposed_rows(w + jb * nr * K + k0, K, nn, kc, nr, bblock)
            gemm_gather_run(kern, rows, aoff + k0, M, kc, bblock, kc * nr, nn,
                            C + jb * nr, ldc, aptr, ctmp, kb > 0)


cdef void correlate_channels_last(const floating_t *x, const Geom *g, const floating_t *wpack,
                                  const floating_t *bias, int bias_mode, int act,
                                  floating_t *y, const ClForward *L, floating_t *slab,
                                  const Py_ssize_t *aoff, const Py_ssize_t *start, floating_t *scratch,
                                  const floating_t **ptrs, const Kernels *kern,
                                  int nt, const floating_t *w=NULL,
                                  const Geom *flipped_from=NULL) noexcept nogil:
    """y (contiguous) = act(x * W + bias) as in the file's comment.  wpack: the weight
    packed nr filters per sliver (groups round_up(Fg, nr) * K apart), or w, the weight
    (F x K), packed by each task as it goes (gemm_gather_packing; with flipped_from,
    the layer's weight of that geometry, packed as its flipped input gradient's); slab:
    G * N planes; aoff[k] = shift(tap) + c, start[p]: where position p's window starts
    in its plane."""
    cdef Py_ssize_t nr = block_nr(kern, x), K = g.Cg * g.KK, NP = g.N * g.P
    cdef Py_ssize_t fpad = round_up(g.Fg, nr), per_group = L.ntiles * L.nsplit
    cdef Py_ssize_t t, grp, tile, s0, s1, f0, fn, ldc, r0, rn, i, r, n, p0, seg
    cdef floating_t *ctile
    cdef floating_t *yblock
    cdef const floating_t **rows
    for t in prange(g.N * g.G, num_threads=nt, schedule="static"):
        cl_fill_plane(x, g, L.ED, L.EH, L.EW, L.cs, t // g.G, t % g.G,
                      g.pd, g.ph, slab + (t % g.G * g.N + t // g.G) * L.plane)
    for t in prange(g.G * per_group, num_threads=nt, schedule="static"):
        rows = ptrs + threadid() * L.ptrs
        ctile = scratch + threadid() * L.per_thread
        grp = t // per_group
        tile = t % per_group // L.nsplit
        s0 = t % L.nsplit * L.sper
        s1 = min(L.nsl, s0 + L.sper)
        f0 = s0 * nr
        fn = min(g.Fg, s1 * nr) - f0
        ldc = (s1 - s0) * nr
        r0 = tile * L.tw
        rn = min(L.tw, NP - r0)
        for i in range(rn):
            r = r0 + i
            rows[i] = slab + (grp * g.N + r // g.P) * L.plane + start[r % g.P]
        if w != NULL:
            gemm_gather_packing(kern, rows, aoff, rn, K,
                                w if flipped_from != NULL else w + (grp * g.Fg + f0) * K,
                                fn, ctile, ldc, rows + L.tw, ctile + L.tw * ldc,
                                ctile + L.tw * ldc + CK_MR_MAX * CK_NR_MAX, flipped_from,
                                grp, f0)
        else:
            gemm_gather_block(kern, rows, aoff, rn, K, wpack + (grp * fpad + f0) * K, fn,
                              ctile, ldc, rows + L.tw, ctile + L.tw * ldc)
        # the block's positions, one image's run at a time, transposed into y
        i = 0
        while i < rn:
            n = (r0 + i) // g.P
            p0 = (r0 + i) % g.P
            seg = min(g.P - p0, rn - i)
            yblock = y + (n * g.F + grp * g.Fg + f0) * g.P + p0
            transpose(ctile + i * ldc, ldc, seg, fn, yblock, g.P)
            if bias_mode != 0 or act != ACT_NONE:
                copy_out(yblock, g.P, g, grp * g.Fg + f0, grp * g.Fg + f0 + fn, n * g.P + p0,
                         seg, bias, bias_mode, act, y)
            i = i + seg


cdef void channels_last_offsets(const Geom *g, Py_ssize_t EH, Py_ssize_t EW, Py_ssize_t cs,
                                Py_ssize_t *aoff, Py_ssize_t *start) noexcept nogil:
    """The offsets into a channels-last copy of extents (., EH, EW), positions cs apart:
    aoff[k] = shift(tap) + c for k = c * KK + tap, start[p] where the window of each of
    the P positions of an image starts (in order: no division per position)."""
    cdef Py_ssize_t c, kd, kh, kw, k = 0, p, od = 0, oh = 0, ow = 0
    for c in range(g.Cg):
        for kd in range(g.KD):
            for kh in range(g.KH):
                for kw in range(g.KW):
                    aoff[k] = ((kd * g.dd * EH + kh * g.dh) * EW + kw * g.dw) * cs + c
                    k = k + 1
    for p in range(g.P):
        start[p] = ((od * g.sd * EH + oh * g.sh) * EW + ow * g.sw) * cs
        ow += 1
        if ow == g.OW:
            next_row(g, &od, &oh, &ow)


cdef void correlate_channels_last_call(const floating_t *x, const Geom *g,
                                       const floating_t *w, const floating_t *bias,
                                       int bias_mode, int act, floating_t *y,
                                       const Geom *flipped_from, int nt) except *:
    """correlate_channels_last of geometry g with its scratch allocated and the weight
    packed here: w is the layer's weight, packed as the forward's (flipped_from NULL) or,
    for the flipped input gradient of layer geometry flipped_from (g then its
    flipped_geom, x grad_y and y grad_x), as its flipped, transposed correlation."""
    cdef const Kernels *kern = cl_forward_kernels(g, x)
    cdef ClForward L = cl_forward_layout(g, kern, nt, x)
    cdef Py_ssize_t nr = block_nr(kern, x), K = g.Cg * g.KK
    cdef Py_ssize_t *offsets = <Py_ssize_t *> alloc_uninit((K + g.P) * sizeof(Py_ssize_t))
    cdef floating_t *wpack = NULL
    cdef floating_t *slab = NULL
    cdef floating_t *scratch = NULL
    cdef const floating_t **ptrs = NULL
    # one tile of positions: each block of the weight serves one task, which packs it
    cdef bint packs_in_tasks = L.ntiles == 1
    try:
        # every element of these is written before it is read
        if not packs_in_tasks:
            wpack = <floating_t *> alloc_uninit(
                g.G * round_up(g.Fg, nr) * K * sizeof(floating_t))
        slab = <floating_t *> alloc_uninit(g.G * g.N * L.plane * sizeof(floating_t))
        scratch = <floating_t *> alloc_uninit(nt * L.per_thread * sizeof(floating_t))
        ptrs = <const floating_t **> alloc_uninit(nt * L.ptrs * sizeof(floating_t *))
        with nogil:
            if not packs_in_tasks and flipped_from != NULL:
                pack_flipped_weights(w, flipped_from, nr, wpack, nt)
            elif not packs_in_tasks:
                pack_forward_weights(w, g, nr, wpack, nt)
            channels_last_offsets(g, L.EH, L.EW, L.cs, offsets, offsets + K)
            correlate_channels_last(x, g, wpack, bias, bias_mode, act, y, &L, slab, offsets,
                                    offsets + K, scratch, ptrs, kern, nt,
                                    w if packs_in_tasks else NULL,
                                    flipped_from if packs_in_tasks else NULL)
    finally:
        release(ptrs)
        release(scratch)
        release(slab)
        release(wpack)
        release(offsets)
