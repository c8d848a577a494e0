# The weight gradient: grad_w summed over batch chunks on the slab or im2col operand, with
# GEMM or dot micro-kernels, and the per-thread scratch layout the four paths share with
# their caller.  Included by _conv.pyx.


cdef struct WgradLayout:
    # Everything the caller allocates for one weight-gradient call and the kernels carve,
    # computed once by wgrad_layout.  A thread's scratch (per_thread elements) starts with
    # the operand: the input slab (slab paths, tiled as d) or the im2col block (im2col
    # paths, tw positions wide; rb reduction rows per im2col-dot task, or per block of
    # the images path); then, at these
    # element offsets (-1 where a path has none): gyt, the transposed grad_y tile (GEMM
    # paths); edge, the micro-kernel's edge block; gys, the staged grad_y rows (slab
    # paths); res, the dot kernels' results.  Per thread there are also thread_offsets
    # Py_ssize_t tap offsets and thread_ptrs row pointers; shared_offsets more offsets
    # (rows of gyt) follow all threads' tap offsets.
    DirectPlan d
    Py_ssize_t tw, rb
    Py_ssize_t per_thread, gyt, edge, gys, res
    Py_ssize_t thread_offsets, shared_offsets, thread_ptrs
    Py_ssize_t nchunks, per_chunk
    # (im2col dot path) its chunks are runs of (image, tile of tw positions) units,
    # tiles_per_image of them per image: a batch of one still splits over the threads
    Py_ssize_t tiles_per_image
    Py_ssize_t bytes_per_thread


cdef WgradLayout wgrad_layout(const Geom *g, int path, const floating_t *tag) noexcept nogil:
    """The scratch layout and batch chunks of a weight-gradient path (see WgradLayout)."""
    cdef WgradLayout L
    cdef Py_ssize_t dr = dot_rows(&KERN, tag), dc = dot_cols(&KERN, tag)
    cdef Py_ssize_t nr = block_nr(&KERN, tag), K = g.Cg * g.KK
    cdef Py_ssize_t fpad = round_up(g.Fg, nr), part = g.F * K
    cdef Py_ssize_t edge = CK_MR_MAX * CK_NR_MAX
    # Batch chunks: a function of N and the shapes only (bitwise reproducible).
    cdef Py_ssize_t nchunks = max(1, min(g.N, MAX_CHUNKS,
                                         PARTIAL_BYTES // max(1, part * <Py_ssize_t> sizeof(floating_t))))
    L.per_chunk = (g.N + nchunks - 1) // nchunks
    L.nchunks = (g.N + L.per_chunk - 1) // L.per_chunk
    L.tw = min(g.P, DOT_TILE)
    L.rb = dc * 8
    L.gyt = L.edge = L.gys = L.res = -1
    L.tiles_per_image = 0
    L.shared_offsets = 0
    if path == BWW_SLAB_GEMM:
        L.d = plan_direct(g, nr, 0, DIRECT_TILE)
        L.gyt = L.d.slab
        L.edge = L.gyt + L.d.ldc * fpad
        L.gys = L.edge + edge
        L.per_thread = L.gys + g.Fg * L.d.ldc
        L.thread_offsets = K
        L.shared_offsets = L.d.ldc
        L.thread_ptrs = K + CK_MR_MAX
    elif path == BWW_SLAB_DOT:
        L.d = plan_direct(g, block_vl(&KERN, tag), 0, DOT_TILE)
        L.gys = L.d.slab
        L.res = L.gys + g.Fg * L.d.ldc
        L.per_thread = L.res + dr * dc
        L.thread_offsets = K
        L.thread_ptrs = dr + dc
    elif path == BWW_IM2COL_GEMM:
        # positions per im2col tile: the K x tile block stays near 512 KiB
        L.tw = min(g.P, max(16, min(1024, (512 << 10) // (K * <Py_ssize_t> sizeof(floating_t)) // 16 * 16)))
        L.gyt = K * L.tw
        L.edge = L.gyt + L.tw * fpad
        L.per_thread = L.edge + edge
        L.thread_offsets = 0
        L.shared_offsets = L.tw
        L.thread_ptrs = K + CK_MR_MAX
    elif path == BWW_IM2COL_GEMM_IMAGES:
        # blocks of rb reduction rows whose rb x Fg partial block stays in cache (256 KiB)
        # while every image of the chunk streams through it; tiles of tw (image,
        # position) columns whose im2col block and transposed grad_y stay near 512 KiB
        L.rb = max(<Py_ssize_t> CK_MR_MAX, (256 << 10) // (g.Fg * <Py_ssize_t> sizeof(floating_t))
                   // CK_MR_MAX * CK_MR_MAX)
        L.rb = min(L.rb, round_up(K, CK_MR_MAX))
        L.tw = max(16, min(1024, (512 << 10) // (max(L.rb, fpad) * <Py_ssize_t> sizeof(floating_t))
                           // 16 * 16))
        L.gyt = L.rb * L.tw
        L.edge = L.gyt + L.tw * fpad
        L.per_thread = L.edge + edge
        L.thread_offsets = 0
        L.shared_offsets = L.tw
        L.thread_ptrs = L.rb + CK_MR_MAX
    else:
        L.res = L.rb * L.tw
        L.per_thread = L.res + dr * dc
        L.thread_offsets = 0
        L.thread_ptrs = dr + dc
        L.tiles_per_image = (g.P + L.tw - 1) // L.tw
        # chunks of images, as on the other paths, unless they give fewer than 4 tasks
        # (a stem's 27 rows are one block of rows, a batch of one image one chunk): then
        # chunks of tiles.  (The shapes alone decide, for the bits.  Chunks of tiles cost
        # where image chunks have tasks enough: WaveNet's 1-D layer at batch 1, 4 blocks
        # of rows of two tiles, ran 1.33 ms on 2 threads in one chunk, 1.63 in two.)
        if nchunks * g.G * ((K + L.rb - 1) // L.rb) < 4:
            L.nchunks = max(1, min(g.N * L.tiles_per_image, MAX_CHUNKS,
                                   PARTIAL_BYTES // max(1, part * <Py_ssize_t> sizeof(floating_t))))
    L.bytes_per_thread = (L.per_thread * sizeof(floating_t) + L.thread_offsets * sizeof(Py_ssize_t)
                          + L.thread_ptrs * sizeof(floating_t *))
    return L

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


cdef inline void add_rows(double *acc, const floating_t *src, Py_ssize_t ld, Py_ssize_t rows,
                          Py_ssize_t cols) noexcept nogil:
    """acc[i] += the sum of src[i * ld + j] over j < cols (row_sum: 16 lanes in double, a
    fixed order), for i < rows: the bias gradient's sums, taken while the weight gradient
    reads grad_y anyway.  (One chain of in-order additions per row took a 3-channel
    stem's weight gradient from 0.94 ms to 1.48, the latency of a double add per value.)"""
    cdef Py_ssize_t i
    for i in range(rows):
        acc[i] += row_sum(src + i * ld, cols)


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
                             floating_t *partials, double *bsum, const WgradLayout *L,
                             floating_t *scratch, Py_ssize_t *offsets, const floating_t **ptrs,
                             int nt) noexcept nogil:
    """Direct-path weight gradient: grad_w[g]^T (K x Fg) += slab runs (K x L) @ gy^T (L x Fg).

    The K rows of A are the taps' runs in the input slab, read in place by the gemm_rows
    micro-kernel; B is the tile's grad_y transposed, zero in the halo columns.  A tile
    whose slab holds a NaN or infinity (0 * inf would be NaN) is reduced row by row over
    the valid columns only.  Tasks are (batch chunk, group, block of rows of A): a small
    batch has few chunks, so the K rows are split too (each split fills its own slab);
    every sum runs in the same order whatever the split.  partial[b] is G x K x Fg.
    """
    cdef Py_ssize_t nr = block_nr(&KERN, x), mr = block_mr(&KERN, x)
    cdef Py_ssize_t K = g.Cg * g.KK, plane_in = g.D * g.H * g.W
    cdef Py_ssize_t fpad = round_up(g.Fg, nr)
    cdef const DirectPlan *d = &L.d
    cdef Py_ssize_t ntiles = d.npl * d.nrb * d.nseg, per_chunk = L.per_chunk
    cdef const Py_ssize_t *gyt_rows = offsets + nt * K
    cdef Py_ssize_t kper = blocks_per_split(L.nchunks * g.G, (K + mr - 1) // mr, nt) * mr
    cdef Py_ssize_t nsplit = (K + kper - 1) // kper
    cdef Py_ssize_t t, b, grp, n, i, k, k0, k1, pz, r, base, used
    cdef bint image_finite
    cdef Tile tile
    cdef floating_t *slab
    cdef floating_t *gyt
    cdef floating_t *gys
    cdef floating_t *edge
    cdef floating_t *dst
    cdef Py_ssize_t *boff
    cdef const floating_t **rows
    cdef const floating_t **aptr
    for t in prange(L.nchunks * g.G * nsplit, num_threads=nt, schedule="static"):
        slab = scratch + threadid() * L.per_thread
        gyt = slab + L.gyt
        edge = slab + L.edge
        gys = slab + L.gys
        boff = offsets + threadid() * L.thread_offsets
        rows = ptrs + threadid() * L.thread_ptrs
        aptr = rows + K
        b = t // (g.G * nsplit)
        grp = t // nsplit % g.G
        k0 = t % nsplit * kper
        k1 = min(K, k0 + kper)
        # rows k0 .. k1 of the group's K x Fg partial
        dst = partials + b * g.F * K + grp * K * g.Fg + k0 * g.Fg
        memset(dst, 0, (k1 - k0) * g.Fg * sizeof(floating_t))
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
                if bsum != NULL and k0 == 0:
                    add_rows(bsum + b * g.F + grp * g.Fg, gys, d.ldc, g.Fg, tile.npos)
                transpose(gys, d.ldc, g.Fg, tile.npos, gyt, fpad)
                if image_finite or not has_nonfinite(slab, used):
                    gemm_rows_block(&KERN, rows + k0, 0, k1 - k0, tile.npos, gyt, gyt_rows,
                                    g.Fg, dst, g.Fg, aptr, edge)
                    continue
                for pz in range(tile.planes):
                    for r in range(tile.rows):
                        base = (pz * tile.srows + r) * tile.width
                        gemm_rows_block(&KERN, rows + k0, base, k1 - k0, tile.cols,
                                        gyt + base * fpad, gyt_rows, g.Fg, dst, g.Fg, aptr, edge)


cdef void weight_grad_slab_dot(const floating_t *x, const floating_t *gy, const Geom *g,
                               floating_t *partials, double *bsum, const WgradLayout *L,
                               floating_t *scratch, Py_ssize_t *offsets,
                               const floating_t **ptrs, int nt) noexcept nogil:
    """Direct-path weight gradient with few reduction rows: grad_w[g] (Fg x K) += gy . runs^T.

    Rows of the tile's staged grad_y (zero in the halo columns) against the K runs of
    the input slab, on the dot micro-kernels: no im2col and no transposition.  A tile
    whose slab holds a NaN or infinity is reduced over the valid columns of each row
    only.  Tasks are (batch chunk, group, block of filters): a small batch splits the
    filters too (each split fills its own slab); partial[b] is F x K.
    """
    cdef Py_ssize_t dr = dot_rows(&KERN, x), dc = dot_cols(&KERN, x)
    cdef Py_ssize_t K = g.Cg * g.KK, plane_in = g.D * g.H * g.W
    cdef const DirectPlan *d = &L.d
    cdef Py_ssize_t ntiles = d.npl * d.nrb * d.nseg, per_chunk = L.per_chunk
    cdef Py_ssize_t fper = blocks_per_split(L.nchunks * g.G, (g.Fg + dr - 1) // dr, nt)
    cdef Py_ssize_t nsplit = ((g.Fg + dr - 1) // dr + fper - 1) // fper
    cdef Py_ssize_t t, b, grp, n, i, used, fb, f0, f1, jb, ii, jj, pz, r, base, lpad
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
    for t in prange(L.nchunks * g.G * nsplit, num_threads=nt, schedule="static"):
        slab = scratch + threadid() * L.per_thread
        gys = slab + L.gys
        res = slab + L.res
        boff = offsets + threadid() * L.thread_offsets
        a = ptrs + threadid() * L.thread_ptrs
        bp = a + dr
        b = t // (g.G * nsplit)
        grp = t // nsplit % g.G
        # filter rows f0 .. f1 of the group, in blocks fb of dr rows
        f0 = t % nsplit * fper * dr
        f1 = min(g.Fg, f0 + fper * dr)
        dst = partials + b * g.F * K + grp * g.Fg * K
        memset(dst + f0 * K, 0, (f1 - f0) * K * sizeof(floating_t))
        for n in range(b * per_chunk, min(g.N, (b + 1) * per_chunk)):
            # a finite image needs no per-tile check (its slabs hold x and zeros only)
            image_finite = not has_nonfinite(x + (n * g.C + grp * g.Cg) * plane_in, g.Cg * plane_in)
            for i in range(ntiles):
                tile = tile_of(g, d, i)
                used = slab_for_runs(x + (n * g.C + grp * g.Cg) * plane_in, g, d, &tile,
                                     slab, boff)
                stage_grad_y(gy + (n * g.F + grp * g.Fg) * g.P, g, &tile, gys, d.ldc)
                if bsum != NULL:
                    add_rows(bsum + b * g.F + grp * g.Fg + f0, gys + f0 * d.ldc, d.ldc,
                             f1 - f0, tile.npos)
                # whole vectors: the sums run to npos rounded up (d.ldc and the slab's
                # slack allow it) over zero grad_y columns, which add exact zeros
                lpad = round_up(tile.npos, vl)
                for ii in range(g.Fg):
                    memset(gys + ii * d.ldc + tile.npos, 0, (lpad - tile.npos) * sizeof(floating_t))
                finite = image_finite or not has_nonfinite(slab, used)
                for fb in range(f0 // dr, (f1 + dr - 1) // dr):
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
                               floating_t *partials, double *bsum, const WgradLayout *L,
                               floating_t *scratch, const Py_ssize_t *gyt_rows,
                               const floating_t **ptrs, int nt) noexcept nogil:
    """Any-stride weight gradient: grad_w[g]^T (K x Fg) += col (K x tw) @ gy^T (tw x Fg).

    The rows of a per-thread im2col tile are read in place by the gemm_rows micro-kernel;
    B is the tile's grad_y transposed.  Tasks are (batch chunk, group, block of rows):
    a small batch splits the K rows too, and a split unrolls only its rows.  partial[b]
    is G x K x Fg, as in weight_grad_direct.
    """
    cdef Py_ssize_t nr = block_nr(&KERN, x), mr = block_mr(&KERN, x)
    cdef Py_ssize_t K = g.Cg * g.KK, plane = g.D * g.H * g.W
    cdef Py_ssize_t fpad = round_up(g.Fg, nr)
    cdef Py_ssize_t tw = L.tw, per_chunk = L.per_chunk
    cdef Py_ssize_t kper = blocks_per_split(L.nchunks * g.G, (K + mr - 1) // mr, nt) * mr
    cdef Py_ssize_t nsplit = (K + kper - 1) // kper
    cdef Py_ssize_t t, b, grp, n, tb, p0, pn, k, k0, k1
    cdef floating_t *col
    cdef floating_t *gyt
    cdef floating_t *edge
    cdef floating_t *dst
    cdef const floating_t **rows
    for t in prange(L.nchunks * g.G * nsplit, num_threads=nt, schedule="static"):
        col = scratch + threadid() * L.per_thread
        gyt = col + L.gyt
        edge = col + L.edge
        rows = ptrs + threadid() * L.thread_ptrs
        b = t // (g.G * nsplit)
        grp = t // nsplit % g.G
        k0 = t % nsplit * kper
        k1 = min(K, k0 + kper)
        dst = partials + b * g.F * K + grp * K * g.Fg + k0 * g.Fg
        memset(dst, 0, (k1 - k0) * g.Fg * sizeof(floating_t))
        for k in range(k1 - k0):
            rows[k] = col + k * tw
        for n in range(b * per_chunk, min(g.N, (b + 1) * per_chunk)):
            for tb in range((g.P + tw - 1) // tw):
                p0 = tb * tw
                pn = min(tw, g.P - p0)
                im2col(x + (n * g.C + grp * g.Cg) * plane, g, k0, k1 - k0, p0, pn, col, tw)
                # gyt[j, f] = gy[n, grp*Fg + f, p0 + j]
                transpose(gy + (n * g.F + grp * g.Fg) * g.P + p0, g.P, g.Fg, pn, gyt, fpad)
                if bsum != NULL and k0 == 0:
                    add_rows(bsum + b * g.F + grp * g.Fg, gy + (n * g.F + grp * g.Fg) * g.P + p0,
                             g.P, g.Fg, pn)
                gemm_rows_block(&KERN, rows, 0, k1 - k0, pn, gyt, gyt_rows, g.Fg, dst, g.Fg,
                                rows + K, edge)


cdef void weight_grad_unrolled_images(const floating_t *x, const floating_t *gy, const Geom *g,
                                      floating_t *partials, double *bsum, const WgradLayout *L,
                                      floating_t *scratch, const Py_ssize_t *gyt_rows,
                                      const floating_t **ptrs, int nt) noexcept nogil:
    """Any-stride weight gradient on im2col tiles whose tw columns run over the (image,
    position) pairs of a batch chunk: grad_w[g]^T (rb-row block of K x Fg) += col
    (rb x tw) @ gy^T (tw x Fg), block by block of rb rows, each block reduced over the
    whole chunk while it stays in cache.  Small images give weight_grad_unrolled a
    few columns per image, and each image then streams the whole K x Fg partial.

    Tasks as in weight_grad_unrolled; a (k, f) sum runs over the chunk's columns in
    order, in tiles of tw that depend on the shapes only (not on the split).
    """
    cdef Py_ssize_t nr = block_nr(&KERN, x), mr = block_mr(&KERN, x)
    cdef Py_ssize_t K = g.Cg * g.KK, plane = g.D * g.H * g.W
    cdef Py_ssize_t fpad = round_up(g.Fg, nr)
    cdef Py_ssize_t tw = L.tw, rb = L.rb, per_chunk = L.per_chunk
    cdef Py_ssize_t kper = blocks_per_split(L.nchunks * g.G, (K + mr - 1) // mr, nt) * mr
    cdef Py_ssize_t nsplit = (K + kper - 1) // kper
    cdef Py_ssize_t t, b, grp, n, k, k0, k1, kb, kb0, kn, tb, c0, c1, cn, j0, p0, seg
    cdef floating_t *col
    cdef floating_t *gyt
    cdef floating_t *edge
    cdef floating_t *dst
    cdef const floating_t *gyn
    cdef const floating_t **rows
    for t in prange(L.nchunks * g.G * nsplit, num_threads=nt, schedule="static"):
        col = scratch + threadid() * L.per_thread
        gyt = col + L.gyt
        edge = col + L.edge
        rows = ptrs + threadid() * L.thread_ptrs
        b = t // (g.G * nsplit)
        grp = t // nsplit % g.G
        k0 = t % nsplit * kper
        k1 = min(K, k0 + kper)
        dst = partials + b * g.F * K + grp * K * g.Fg + k0 * g.Fg
        memset(dst, 0, (k1 - k0) * g.Fg * sizeof(floating_t))
        for k in range(rb):
            rows[k] = col + k * tw
        # the chunk's columns n * P + p
        c1 = min(g.N, (b + 1) * per_chunk) * g.P
        for kb in range((k1 - k0 + rb - 1) // rb):
            kb0 = k0 + kb * rb
            kn = min(rb, k1 - kb0)
            for tb in range((c1 - b * per_chunk * g.P + tw - 1) // tw):
                c0 = b * per_chunk * g.P + tb * tw
                cn = min(tw, c1 - c0)
                j0 = 0
                while j0 < cn:
                    n = (c0 + j0) // g.P
                    p0 = (c0 + j0) % g.P
                    seg = min(g.P - p0, cn - j0)
                    gyn = gy + (n * g.F + grp * g.Fg) * g.P + p0
                    im2col(x + (n * g.C + grp * g.Cg) * plane, g, kb0, kn, p0, seg, col + j0, tw)
                    # gyt[j, f] = gy[n, grp*Fg + f, p0 + j - j0]
                    transpose(gyn, g.P, g.Fg, seg, gyt + j0 * fpad, fpad)
                    if bsum != NULL and kb0 == 0:
                        add_rows(bsum + b * g.F + grp * g.Fg, gyn, g.P, g.Fg, seg)
                    j0 = j0 + seg
                gemm_rows_block(&KERN, rows, 0, kn, cn, gyt, gyt_rows, g.Fg,
                                dst + (kb0 - k0) * g.Fg, g.Fg, rows + rb, edge)


cdef void weight_grad_im2col(const floating_t *x, const floating_t *gy, const Geom *g,
                             floating_t *partials, double *bsum, const WgradLayout *L,
                             floating_t *scratch, const floating_t **ptrs,
                             int nt) noexcept nogil:
    """Any-stride weight gradient: rows of grad_y against rows of an im2col tile.

    Tasks are (chunk, group, block of rb reduction rows); chunk b sums the units (image
    n, tile tb of tw positions) u = n * tiles_per_image + tb for U * b // nchunks <= u <
    U * (b + 1) // nchunks, U being all of them, so that one image's tiles split over
    the threads too (MobileNetV2's 3-channel stem at batch 1 is 7 tiles of 27 rows).  A
    pointwise layer's rows of patches are x's rows, read in place.
    """
    cdef Py_ssize_t dr = dot_rows(&KERN, x), dc = dot_cols(&KERN, x)
    cdef Py_ssize_t K = g.Cg * g.KK, plane = g.D * g.H * g.W
    cdef Py_ssize_t tw = L.tw, rb = L.rb, tpi = L.tiles_per_image, units = g.N * tpi
    cdef Py_ssize_t nkb = (K + rb - 1) // rb
    cdef Py_ssize_t t, b, grp, r0, nb, n, f, u, tb, p0, pn, fb, jb, i, j, ldcol
    cdef bint in_place = pointwise_fits(g)
    cdef const floating_t *rows
    cdef floating_t *col
    cdef floating_t *res
    cdef floating_t *dst
    cdef const floating_t **a
    cdef const floating_t **bp
    # no more threads than tasks: an idle one only adds its wake-up to the region's end
    for t in prange(L.nchunks * g.G * nkb, num_threads=min(nt, L.nchunks * g.G * nkb),
                    schedule="static"):
        col = scratch + threadid() * L.per_thread
        res = col + L.res
        a = ptrs + threadid() * L.thread_ptrs
        bp = a + dr
        b = t // (g.G * nkb)
        grp = (t // nkb) % g.G
        r0 = t % nkb * rb
        nb = min(rb, K - r0)
        # columns r0 .. r0 + nb of rows grp*Fg .. (grp + 1)*Fg of partial[b], F x K
        dst = partials + b * g.F * K + grp * g.Fg * K + r0
        for f in range(g.Fg):
            memset(dst + f * K, 0, nb * sizeof(floating_t))
        for u in range(units * b // L.nchunks, units * (b + 1) // L.nchunks):
            n = u // tpi
            tb = u % tpi
            p0 = tb * tw
            pn = min(tw, g.P - p0)
            if in_place:
                rows = x + (n * g.C + grp * g.Cg + r0) * g.P + p0
                ldcol = g.P
            else:
                im2col(x + (n * g.C + grp * g.Cg) * plane, g, r0, nb, p0, pn, col, tw)
                rows = col
                ldcol = tw
            if bsum != NULL and r0 == 0:
                add_rows(bsum + b * g.F + grp * g.Fg, gy + (n * g.F + grp * g.Fg) * g.P + p0,
                         g.P, g.Fg, pn)
            for fb in range((g.Fg + dr - 1) // dr):
                # rows past the end repeat the last row; their sums are dropped
                for i in range(dr):
                    a[i] = gy + (n * g.F + grp * g.Fg + min(fb * dr + i, g.Fg - 1)) * g.P + p0
                for jb in range((nb + dc - 1) // dc):
                    for j in range(dc):
                        bp[j] = rows + min(jb * dc + j, nb - 1) * ldcol
                    dot_accumulate(&KERN, pn, a, bp, dr, dc, min(dr, g.Fg - fb * dr),
                                   min(dc, nb - jb * dc), res, dst + fb * dr * K + jb * dc, K)


def conv_backward_weight(const floating_t[:, :, :, :, ::1] x not None,
                         const floating_t[:, :, :, :, ::1] grad_y not None,
                         floating_t[:, :, :, :, ::1] out not None, Py_ssize_t groups,
                         tuple stride, tuple pad, tuple dilation, int path,
                         floating_t[::1] bias_out not None, int num_threads):
    """Fill out (F, C // groups, KD, KH, KW) with the gradient of conv_forward w.r.t. weight.

    path: an index in PATHS["backward_weight"] that is valid for the geometry (the slab
    paths need geometry_facts(...)["direct"]).  bias_out: empty, or (F,) to fill with
    the gradient of a tied bias in the same pass over grad_y (sums in double over the
    batch chunks in order, within a chunk over images and tiles in order, within a tile
    as bias_sum.h sums).
    """
    cdef Geom g = make_geom(x.shape, out.shape, grad_y.shape, groups, stride, pad, dilation)
    if path == BWW_DEPTHWISE_CHANNELS_LAST:
        depthwise_cl_weight_grad_call(&x[0, 0, 0, 0, 0], &grad_y[0, 0, 0, 0, 0], &g,
                                      &out[0, 0, 0, 0, 0],
                                      &bias_out[0] if bias_out.shape[0] > 0 else NULL,
                                      max(1, num_threads))
        return
    if path == BWW_DEPTHWISE:
        depthwise_weight_grad_call(&x[0, 0, 0, 0, 0], &grad_y[0, 0, 0, 0, 0], &g,
                                   &out[0, 0, 0, 0, 0],
                                   &bias_out[0] if bias_out.shape[0] > 0 else NULL,
                                   max(1, num_threads))
        return
    cdef const floating_t *x0 = &x[0, 0, 0, 0, 0]
    cdef const floating_t *gy0 = &grad_y[0, 0, 0, 0, 0]
    cdef floating_t *w0 = &out[0, 0, 0, 0, 0]
    cdef Py_ssize_t K = g.Cg * g.KK, part = g.F * K
    cdef int nt = max(1, num_threads)
    cdef WgradLayout L = wgrad_layout(&g, path, x0)
    cdef bint gemm = path in (BWW_SLAB_GEMM, BWW_IM2COL_GEMM, BWW_IM2COL_GEMM_IMAGES)
    cdef floating_t *partials
    cdef floating_t *scratch = NULL
    cdef Py_ssize_t *offsets = NULL
    cdef const floating_t **ptrs = NULL
    cdef Py_ssize_t b, f, k, t
    cdef double *bsum = NULL
    cdef double acc
    if path == BWW_IM2ROW_GEMM:
        weight_grad_im2row(x0, gy0, &g, w0, &bias_out[0] if bias_out.shape[0] else NULL, nt)
        return
    if path == BWW_CHANNELS_LAST_GEMM:
        weight_grad_channels_last(x0, gy0, &g, w0, &bias_out[0] if bias_out.shape[0] else NULL,
                                  nt)
        return
    if path == BWW_GATHER_GEMM:
        weight_grad_gather(x0, gy0, &g, w0, &bias_out[0] if bias_out.shape[0] else NULL, nt)
        return
    if path == BWW_DENSE:
        dense_backward_weight(x0, gy0, &g, w0, &bias_out[0] if bias_out.shape[0] else NULL,
                              nt)
        return
    if bias_out.shape[0] > 0:
        bsum = <double *> alloc_scratch(L.nchunks * g.F * sizeof(double))
    try:
        partials = <floating_t *> alloc_scratch(L.nchunks * part * sizeof(floating_t))
    except MemoryError:
        release(bsum)
        raise
    try:
        scratch = <floating_t *> alloc_scratch(nt * L.per_thread * sizeof(floating_t))
        offsets = <Py_ssize_t *> alloc_scratch(
            (nt * L.thread_offsets + L.shared_offsets) * sizeof(Py_ssize_t))
        ptrs = <const floating_t **> alloc_scratch(nt * L.thread_ptrs * sizeof(floating_t *))
    except MemoryError:
        release(partials)
        release(scratch)
        release(offsets)
        release(bsum)
        raise
    with nogil:
        if path == BWW_SLAB_GEMM:
            # rows of the transposed grad_y tile: offsets j * fpad, shared by the threads
            row_offsets(offsets + nt * K, L.d.ldc, round_up(g.Fg, block_nr(&KERN, x0)))
            weight_grad_direct(x0, gy0, &g, partials, bsum, &L, scratch, offsets, ptrs, nt)
        elif path == BWW_SLAB_DOT:
            weight_grad_slab_dot(x0, gy0, &g, partials, bsum, &L, scratch, offsets, ptrs, nt)
        elif path == BWW_IM2COL_GEMM:
            row_offsets(offsets, L.tw, round_up(g.Fg, block_nr(&KERN, x0)))
            weight_grad_unrolled(x0, gy0, &g, partials, bsum, &L, scratch, offsets, ptrs, nt)
        elif path == BWW_IM2COL_GEMM_IMAGES:
            row_offsets(offsets, L.tw, round_up(g.Fg, block_nr(&KERN, x0)))
            weight_grad_unrolled_images(x0, gy0, &g, partials, bsum, &L, scratch, offsets,
                                        ptrs, nt)
        else:
            weight_grad_im2col(x0, gy0, &g, partials, bsum, &L, scratch, ptrs, nt)
        # partial[0] += partial[b] for b = 1, 2, ... in chunk order (contiguous adds),
        # then out[f, k] = partial[0] at (f, k): stored G x K x Fg by the GEMM paths
        # and F x K by the dot paths
        if L.nchunks > 1:  # (no parallel region, with its wake-ups, for nothing)
            for f in prange(g.F, num_threads=nt, schedule="static"):
                for b in range(1, L.nchunks):
                    for k in range(K):
                        partials[f * K + k] += partials[b * part + f * K + k]
        if gemm:
            # per group, a K x Fg block transposed in 64-row slices (cache blocked)
            for t in prange(g.G * ((K + 63) // 64), num_threads=nt, schedule="static"):
                b = t // ((K + 63) // 64)
                k = t % ((K + 63) // 64) * 64
                transpose(partials + (b * K + k) * g.Fg, g.Fg, min(64, K - k), g.Fg,
                          w0 + b * g.Fg * K + k, K)
        else:
            memcpy(w0, partials, part * sizeof(floating_t))
        if bsum != NULL:
            for f in range(g.F):
                acc = 0
                for b in range(L.nchunks):
                    acc += bsum[b * g.F + f]
                bias_out[f] = <floating_t> acc
    release(bsum)
    release(ptrs)
    release(offsets)
    release(scratch)
    release(partials)
