# A convolution whose window covers its whole unpadded input (one output position per
# image: LeNet's C5, a classifier's first dense layer written as a convolution, and
# every Dense layer, which runs as a 1-D convolution of one-position images) is a plain
# matrix product over the arrays in place.  Included by _conv.pyx.
#
# With R = Cg * KD * KH * KW, image n's input for group g is the contiguous row
# x[n, g] = x + n * C * KK + g * R (the window covers it exactly, in the weight's
# order), the filters' weights are the rows w[f] (R long) and the output is the
# N x F matrix y[n, f].  Per group:
#
# - forward: y^T (Fg x N) = W (Fg x R) @ x^T: the GEMM micro-kernel reads W's rows in
#   place (gemm_rows) against a transposed tile of x (N x R elements copied, 1/Fg of
#   the work), in the reduction blocks and order of every other forward path, so an
#   output has the same bits whether its window is the whole input or a part of a
#   larger one (a dask chunk of one window, say).  A batch too small to fill a GEMM
#   block's columns (one image) runs on the gemv micro-kernel instead: blocks of weight
#   rows times x[n], each row one chain in the same reduction blocks, so the same bits,
#   and the weight read once, as a matrix-vector product must.
# - input gradient: gx[n, :] = gy[n, :] @ W (N x Fg times Fg x R): the GEMM micro-kernel
#   with grad_y packed as A (it is small) and W's rows read in place as B.
# - weight gradient: gw = gy^T @ x (Fg x N times N x R): grad_y^T packed as A, x's rows
#   read in place as B, the reduction over the batch in the GEMM's own KC blocks; no
#   partials, no transposition.  The bias gradient, when asked for, is grad_y's column
#   sums (bias_sum, as the sum path does them).
#
# The GEMM passes run in column tiles of at most POINTWISE_TILE_BYTES of B (every block
# of A rows sweeps the tile, which stays in cache); a tile's ragged end is copied into
# a zero-padded block so no read runs past an array.  Every output element is one task's
# sum in a fixed order, so the bits do not depend on the thread count.


cdef inline bint dense_fits(const Geom *g) noexcept nogil:
    """The window covers the whole unpadded input: one output position, a matrix product
    (undilated: a dilated window of the input's size skips inputs and reads the padding
    after them)."""
    return (g.KD == g.D and g.KH == g.H and g.KW == g.W and g.P == 1
            and g.pd == 0 and g.ph == 0 and g.pw == 0
            and (g.KD == 1 or g.dd == 1) and (g.KH == 1 or g.dh == 1)
            and (g.KW == 1 or g.dw == 1))


cdef inline Py_ssize_t dense_tile(Py_ssize_t R, Py_ssize_t rows, Py_ssize_t nr,
                                  Py_ssize_t itemsize) noexcept nogil:
    """Columns per tile of a dense GEMM pass: B's rows x tile near POINTWISE_TILE_BYTES."""
    return min(round_up(R, nr),
               max(nr, POINTWISE_TILE_BYTES // (max(rows, 1) * itemsize) // nr * nr))


cdef inline Py_ssize_t dense_gemm_per_thread(Py_ssize_t rows, Py_ssize_t nr) noexcept nogil:
    """Scratch elements per thread of a dense GEMM pass over `rows` reduction rows: the
    copied B sliver (a reduction block of rows x nr) and the micro-kernel's edge block."""
    return min(rows, <Py_ssize_t> KC) * nr + CK_MR_MAX * CK_NR_MAX


cdef inline Py_ssize_t dense_forward_per_thread(const Geom *g, Py_ssize_t tw,
                                                Py_ssize_t mr, Py_ssize_t nr) noexcept nogil:
    """Scratch elements per thread of dense_forward: the transposed input tile (R x tw),
    the output block (Fg rounded up to mr rows, x tw) and the micro-kernel's edge block."""
    return g.Cg * g.KK * tw + round_up(g.Fg, mr) * tw + CK_MR_MAX * CK_NR_MAX


cdef void dense_forward(const floating_t *x, const floating_t *w, const Geom *g,
                        const floating_t *bias, int bias_mode, int act, floating_t *y,
                        Py_ssize_t tw, floating_t *scratch, const floating_t **ptrs,
                        Py_ssize_t *offsets, const Kernels *kern, int nt) noexcept nogil:
    """y (N x F) = act(x (N x R per group) @ w (F x R)^T + bias), dense_fits(g).

    Per group and tile of tw images, y^T (Fg x tw) = W (Fg x R) @ x^T (R x tw): W's rows
    are read in place (gemm_rows_block), x's tile is transposed into scratch (its ragged
    end zero), and the block goes out through y with the bias and activation.  Every
    output is the same sum, in the same reduction blocks and order, as on the GEMM paths
    of any other geometry (the slab, im2col and pointwise paths), so a one-window input
    gives the bits a larger input gives at that window.  Tasks are (group, image tile,
    block of filters); ptrs holds Fg + mr row pointers per thread, offsets k * tw.
    """
    cdef Py_ssize_t mr = block_mr(kern, x), nr = block_nr(kern, x)
    cdef Py_ssize_t R = g.Cg * g.KK, ldx = g.C * g.KK, fpad = round_up(g.Fg, mr)
    cdef Py_ssize_t per_thread = dense_forward_per_thread(g, tw, mr, nr)
    cdef Py_ssize_t ntiles = (g.N + tw - 1) // tw, mblocks = fpad // mr
    cdef Py_ssize_t per = blocks_per_split(g.G * ntiles, mblocks, nt)
    cdef Py_ssize_t nsplit = (mblocks + per - 1) // per
    cdef Py_ssize_t t, grp, n0, nn, m0, mm, i, j, f
    cdef const floating_t **rows
    cdef floating_t *xt
    cdef floating_t *ct
    cdef floating_t v
    for t in prange(g.G * ntiles * nsplit, num_threads=nt, schedule="static"):
        xt = scratch + threadid() * per_thread
        ct = xt + R * tw
        rows = ptrs + threadid() * (g.Fg + CK_MR_MAX)
        grp = t // (ntiles * nsplit)
        n0 = t // nsplit % ntiles * tw
        nn = min(tw, g.N - n0)
        m0 = t % nsplit * per * mr
        mm = min(per * mr, g.Fg - m0)
        if mm <= 0:
            continue
        transpose(x + n0 * ldx + grp * R, ldx, nn, R, xt, tw)
        if nn < tw:
            for i in range(R):
                memset(xt + i * tw + nn, 0, (tw - nn) * sizeof(floating_t))
        for i in range(mm):
            rows[i] = w + (grp * g.Fg + m0 + i) * R
        memset(ct, 0, mm * tw * sizeof(floating_t))
        gemm_rows_block(kern, rows, 0, mm, R, xt, offsets, round_up(nn, nr), ct, tw,
                        rows + g.Fg, ct + fpad * tw)
        for j in range(nn):
            for i in range(mm):
                f = grp * g.Fg + m0 + i
                v = ct[i * tw + j]
                if bias_mode != 0:
                    v = v + bias[f]  # one position: an untied bias is one per filter
                y[(n0 + j) * g.F + f] = activate(v, act)


cdef void dense_forward_rows(const floating_t *x, const floating_t *w, const Geom *g,
                             const floating_t *bias, int bias_mode, int act, floating_t *y,
                             const floating_t **ptrs, floating_t *res, const Kernels *kern,
                             int nt) noexcept nogil:
    """dense_forward for a batch too small to fill a GEMM block's columns: per image,
    blocks of gr weight rows times x[n] on the gemv micro-kernel, in the same reduction
    blocks, so with the same bits.  ptrs holds gr row pointers and res gr results per
    thread.  Tasks are (image, group, block of gr filters)."""
    cdef Py_ssize_t gr = gemv_rows(kern, x), R = g.Cg * g.KK, ldx = g.C * g.KK
    cdef Py_ssize_t step = reduction_step(R), fblocks = (g.Fg + gr - 1) // gr
    cdef Py_ssize_t t, n, grp, f0, fn, k0, i, f
    cdef const floating_t **a
    cdef floating_t *out
    cdef floating_t v
    for t in prange(g.N * g.G * fblocks, num_threads=nt, schedule="static"):
        a = ptrs + threadid() * gr
        out = res + threadid() * gr
        n = t // (g.G * fblocks)
        grp = t // fblocks % g.G
        f0 = grp * g.Fg + t % fblocks * gr
        fn = min(gr, (grp + 1) * g.Fg - f0)
        k0 = 0
        while k0 < R:
            # rows past the block repeat its last row; their sums are dropped
            for i in range(gr):
                a[i] = w + (f0 + min(i, fn - 1)) * R + k0
            gemv_block(kern, min(step, R - k0), a, x + n * ldx + grp * R + k0, out, k0 > 0)
            k0 = k0 + step
        for i in range(fn):
            f = f0 + i
            v = out[i]
            if bias_mode != 0:
                v = v + bias[f]
            y[n * g.F + f] = activate(v, act)


cdef void dense_gemm(const floating_t *apack, Py_ssize_t a_group, Py_ssize_t M, Py_ssize_t kdim,
                     const floating_t *B, Py_ssize_t b_group, Py_ssize_t ldb, Py_ssize_t ncols,
                     floating_t *C, Py_ssize_t c_group, Py_ssize_t ldc, Py_ssize_t G,
                     floating_t *scratch, const Py_ssize_t *offsets, const Kernels *kern,
                     int nt) noexcept nogil:
    """C[g] (M x ncols) = A[g] (M x kdim) @ B[g] (kdim x ncols) for each group g < G.

    A[g] is packed (pack_rows) at apack + g * a_group; B[g]'s row k is
    B + g * b_group + k * ldb and C[g]'s row i is C + g * c_group + i * ldc.  offsets
    holds k * ldb for k < kdim, then k * nr for k < KC; scratch
    dense_gemm_per_thread(kdim, nr) elements per thread.  Tasks are (group, column tile,
    block of A rows).

    Columns are cut into chunks of whole slivers, as even as slivers allow; with few
    chunks in all (fewer than 4 per thread) their number is a multiple of the thread
    count, so that the static schedule gives every thread the same share of columns
    (MobileNet's 960 x 160 weight at batch 1 is 10 slivers: 5 per thread, where tiles
    of 4, 4 and 2 slivers gave one thread twice the other's work).  Blocks of A rows are
    split among tasks only when there are fewer chunks in all than threads.

    When a task has several blocks of A rows and B's rows are some power of two bytes
    apart (the caller's weight rows, K = 256 * 3 * 3 floats: 9 KiB), each nr-column
    sliver of a reduction block is first copied into the task's scratch (its ragged last
    columns zero) and every block runs over the copy: in place, such rows fall into a
    few L1 sets and evict each other while the blocks reuse the sliver (rows_alias).
    Otherwise B is read in place, copying only a ragged last sliver.  The same
    reduction blocks, in the same order, as gemm_block: the same bits.
    """
    cdef Py_ssize_t mr = block_mr(kern, B), nr = block_nr(kern, B), vl = block_vl(kern, B)
    cdef Py_ssize_t tw = dense_tile(ncols, kdim, nr, sizeof(floating_t))
    cdef Py_ssize_t slivers = (ncols + nr - 1) // nr, mblocks = (M + mr - 1) // mr
    cdef Py_ssize_t ntiles = (ncols + tw - 1) // tw
    cdef Py_ssize_t per, nsplit
    cdef Py_ssize_t kstep = reduction_step(kdim)
    cdef Py_ssize_t nkb = (kdim + kstep - 1) // kstep if kstep > 0 else 0
    cdef Py_ssize_t t, grp, p0, pn, m0, mm, kb, k0, kc, jb, j0, nn, mb, rows, i, j, chunk
    cdef bint acc
    cdef bint alias = rows_alias(ldb * <Py_ssize_t> sizeof(floating_t), kstep)
    if G * ntiles < 4 * nt:
        ntiles = min(slivers, round_up(ntiles, nt))
    per = mblocks if G * ntiles >= nt else blocks_per_split(G * ntiles, mblocks, nt)
    nsplit = (mblocks + per - 1) // per
    cdef const floating_t *bg
    cdef const floating_t *bj
    cdef const Py_ssize_t *boff
    cdef const floating_t *a
    cdef floating_t *cg
    cdef floating_t *c
    cdef floating_t *buf
    cdef floating_t *ctmp
    for t in prange(G * ntiles * nsplit, num_threads=nt, schedule="static"):
        buf = scratch + threadid() * dense_gemm_per_thread(kdim, nr)
        ctmp = buf + min(kdim, <Py_ssize_t> KC) * nr
        grp = t // (ntiles * nsplit)
        chunk = t // nsplit % ntiles
        p0 = slivers * chunk // ntiles * nr
        pn = min(slivers * (chunk + 1) // ntiles * nr, ncols) - p0
        m0 = t % nsplit * per * mr
        mm = min(per * mr, M - m0)
        if mm <= 0:
            continue
        bg = B + grp * b_group + p0
        cg = C + grp * c_group + m0 * ldc + p0
        a = apack + grp * a_group + m0 * kdim
        for kb in range(nkb):
            k0 = kb * kstep
            kc = min(kstep, kdim - k0)
            acc = k0 > 0
            for jb in range((pn + nr - 1) // nr):
                j0 = jb * nr
                nn = min(nr, pn - j0)
                if (mm <= mr or not alias) and nn == nr:
                    bj = bg + j0
                    boff = offsets + k0
                else:
                    copy_sliver(bg + k0 * ldb + j0, ldb, kc, nn, nr, buf)
                    bj = buf
                    boff = offsets + kdim
                for mb in range((mm + mr - 1) // mr):
                    rows = min(mr, mm - mb * mr)
                    c = cg + mb * mr * ldc + j0
                    if rows == mr and nn == nr:
                        ukernel(kern, kc, a + mb * mr * kdim + k0 * mr, bj, boff, vl, c,
                                ldc, acc)
                        continue
                    if acc:
                        for i in range(rows):
                            for j in range(nn):
                                ctmp[i * nr + j] = c[i * ldc + j]
                    ukernel(kern, kc, a + mb * mr * kdim + k0 * mr, bj, boff, vl, ctmp,
                            nr, acc)
                    for i in range(rows):
                        for j in range(nn):
                            c[i * ldc + j] = ctmp[i * nr + j]


cdef void pack_rows_tasks(const floating_t *src, Py_ssize_t src_group, Py_ssize_t rs,
                          Py_ssize_t cs, Py_ssize_t M, Py_ssize_t kdim, Py_ssize_t mr,
                          floating_t *dst, Py_ssize_t dst_group, Py_ssize_t G,
                          int nt) noexcept nogil:
    """pack_rows of each group's M x kdim matrix (src + g * src_group) into dst + g *
    dst_group, one task per group and block of mr rows."""
    cdef Py_ssize_t nb = (M + mr - 1) // mr, t, b
    for t in prange(G * nb, num_threads=nt, schedule="static"):
        b = t % nb
        pack_rows(src + t // nb * src_group + b * mr * rs, rs, cs, min(mr, M - b * mr), kdim,
                  mr, dst + t // nb * dst_group + b * mr * kdim)


cdef void dense_call(const floating_t *apack, Py_ssize_t a_group, Py_ssize_t M,
                     Py_ssize_t kdim, const floating_t *B, Py_ssize_t b_group, Py_ssize_t ldb,
                     Py_ssize_t ncols, floating_t *C, Py_ssize_t c_group, Py_ssize_t ldc,
                     Py_ssize_t G, int nt) except *:
    """dense_gemm with its scratch and offsets allocated (and freed) here."""
    cdef Py_ssize_t nr = block_nr(&KERN, B)
    # every element of these is written before it is read
    cdef Py_ssize_t *offsets = <Py_ssize_t *> alloc_uninit((kdim + KC) * sizeof(Py_ssize_t))
    cdef floating_t *scratch
    try:
        scratch = <floating_t *> alloc_uninit(
            nt * dense_gemm_per_thread(kdim, nr) * sizeof(floating_t))
    except MemoryError:
        release(offsets)
        raise
    row_offsets(offsets, kdim, ldb)
    row_offsets(offsets + kdim, KC, nr)
    with nogil:
        dense_gemm(apack, a_group, M, kdim, B, b_group, ldb, ncols, C, c_group, ldc, G,
                   scratch, offsets, &KERN, nt)
    release(scratch)
    release(offsets)


cdef inline Py_ssize_t dense_forward_tile(const Geom *g, Py_ssize_t nr,
                                          Py_ssize_t itemsize) noexcept nogil:
    """Images per tile of dense_forward: the transposed tile (R x tw) near
    POINTWISE_TILE_BYTES, whole slivers."""
    return dense_tile(g.N, g.Cg * g.KK, nr, itemsize)


cdef void dense_forward_call(const floating_t *x, const floating_t *w, const Geom *g,
                             const floating_t *bias, int bias_mode, int act, floating_t *y,
                             int nt) except *:
    """dense_forward (or, for fewer images than a GEMM block's vectors per row,
    dense_forward_rows) with its scratch, row pointers and offsets allocated here."""
    cdef Py_ssize_t mr = block_mr(&KERN, x), nr = block_nr(&KERN, x)
    cdef Py_ssize_t gr = gemv_rows(&KERN, x)
    cdef Py_ssize_t tw = dense_forward_tile(g, nr, sizeof(floating_t)), R = g.Cg * g.KK
    cdef Py_ssize_t *offsets
    cdef const floating_t **ptrs = NULL
    cdef floating_t *scratch = NULL
    if g.N < nr // block_vl(&KERN, x):
        ptrs = <const floating_t **> alloc_scratch(nt * gr * sizeof(floating_t *))
        try:
            scratch = <floating_t *> alloc_scratch(nt * gr * sizeof(floating_t))
        except MemoryError:
            release(ptrs)
            raise
        with nogil:
            dense_forward_rows(x, w, g, bias, bias_mode, act, y, ptrs, scratch, &KERN, nt)
        release(scratch)
        release(ptrs)
        return
    offsets = <Py_ssize_t *> alloc_scratch(R * sizeof(Py_ssize_t))
    try:
        ptrs = <const floating_t **> alloc_scratch(
            nt * (g.Fg + CK_MR_MAX) * sizeof(floating_t *))
        scratch = <floating_t *> alloc_scratch(
            nt * dense_forward_per_thread(g, tw, mr, nr) * sizeof(floating_t))
    except MemoryError:
        release(offsets)
        release(ptrs)
        raise
    row_offsets(offsets, R, tw)
    with nogil:
        dense_forward(x, w, g, bias, bias_mode, act, y, tw, scratch, ptrs, offsets, &KERN, nt)
    release(scratch)
    release(ptrs)
    release(offsets)


cdef void dense_backward_input(const floating_t *gy, const floating_t *w, const Geom *g,
                               floating_t *gx, int nt) except *:
    """gx[n, group g] (N x R) = gy[n, group g] (N x Fg) @ w[g] (Fg x R), dense_fits(g)."""
    cdef Py_ssize_t mr = block_mr(&KERN, gy), R = g.Cg * g.KK
    cdef Py_ssize_t npad = round_up(g.N, mr)
    cdef floating_t *apack = <floating_t *> alloc_scratch(g.G * npad * g.Fg * sizeof(floating_t))
    try:
        with nogil:
            pack_rows_tasks(gy, g.Fg, g.F, 1, g.N, g.Fg, mr, apack, npad * g.Fg, g.G, nt)
        dense_call(apack, npad * g.Fg, g.N, g.Fg, w, g.Fg * R, R, R, gx, R, g.C * g.KK, g.G,
                   nt)
    finally:
        release(apack)


cdef void dense_backward_weight(const floating_t *x, const floating_t *gy, const Geom *g,
                                floating_t *gw, floating_t *bias_out, int nt) except *:
    """gw[g] (Fg x R) = gy[:, group g]^T (Fg x N) @ x[:, group g] (N x R), dense_fits(g);
    bias_out (F,), when not NULL, gets grad_y's column sums."""
    cdef Py_ssize_t mr = block_mr(&KERN, gy), R = g.Cg * g.KK
    cdef Py_ssize_t fpad = round_up(g.Fg, mr), f
    cdef floating_t *apack = <floating_t *> alloc_scratch(g.G * fpad * g.N * sizeof(floating_t))
    try:
        with nogil:
            pack_rows_tasks(gy, g.Fg, 1, g.F, g.Fg, g.N, mr, apack, fpad * g.N, g.G, nt)
        dense_call(apack, fpad * g.N, g.Fg, g.N, x, R, g.C * g.KK, R, gw, g.Fg * R, R, g.G,
                   nt)
    finally:
        release(apack)
    if bias_out != NULL:
        with nogil:
            for f in range(g.F):
                bias_sum(gy + f, g.N, g.F, 1, bias_out + f)


# The weight gradient of a call with few output positions in all (N * P at most two
# reduction blocks, 2 KC; the planner's rule): gw[g] (Fg x K) = gy[g] (Fg x NP) @ rows
# (NP x K), where row (n, p) holds the input patch that output position p of image n
# reads (an im2col tile transposed: "im2row").  The GEMM writes gw in its own layout once
# per reduction block of positions, where the im2col paths write the transposed gradient
# into per-chunk partials, add them and transpose them: with few positions the output
# traffic is the cost.
#
# The rows of patches are built packed sliver by sliver (nr columns of K, every position:
# sliver s holds rows[r, s * nr + j] at [(s * NP + r) * nr + j], its ragged columns zero),
# each a transposed copy of nr unrolled rows (of x itself for a pointwise layer): no
# sliver is copied again in the GEMM, and channel counts of a power of two (whose rows,
# K apart, would fall in a few L1 sets) cost nothing.  grad_y is read in place as the
# GEMM's A rows (gemm_rows), at batch 1 straight from gy, otherwise from a copy with each
# filter's positions of every image contiguous (runs of P values: memcpy, not a
# transposing pack).  Two parallel regions: the operands (and the bias sums), then the
# GEMM, whose tasks are (group, range of mr-row blocks of filters, range of slivers),
# filter ranges first, so that each thread writes whole rows of gw.


cdef void weight_grad_im2row(const floating_t *x, const floating_t *gy, const Geom *g,
                             floating_t *gw, floating_t *bias_out, int nt) except *:
    """gw (F x Cg * KK) = per group gy (Fg x N * P) @ im2row (N * P x Cg * KK); bias_out
    (F,), when not NULL, gets grad_y's sums per filter."""
    cdef Py_ssize_t mr = block_mr(&KERN, gy), nr = block_nr(&KERN, gy)
    cdef Py_ssize_t K = g.Cg * g.KK, NP = g.N * g.P, plane_in = g.D * g.H * g.W
    cdef Py_ssize_t ns = (K + nr - 1) // nr, mblocks = (g.Fg + mr - 1) // mr
    cdef bint direct = pointwise_fits(g)
    # operand tasks: (group, image, range of slivers) and (group, range of filters)
    cdef Py_ssize_t nsc = max(1, min(ns, (2 * nt + g.G * g.N - 1) // (g.G * g.N)))
    cdef Py_ssize_t sper = (ns + nsc - 1) // nsc
    cdef Py_ssize_t nfc = min(g.Fg, 2 * nt), nbuild = g.G * g.N * nsc
    # GEMM tasks: filter ranges first, then (few filters) sliver ranges
    cdef Py_ssize_t msplit = max(1, min(mblocks, (nt + g.G - 1) // g.G))
    cdef Py_ssize_t csplit = max(1, min(ns, (nt + g.G * msplit - 1) // (g.G * msplit)))
    cdef Py_ssize_t mper = (mblocks + msplit - 1) // msplit, cper = (ns + csplit - 1) // csplit
    cdef Py_ssize_t t, u, grp, n, s, s0, s1, rs, f, f0, f1, k0, p, m0, mm
    cdef floating_t *bpack = NULL
    cdef floating_t *arows = NULL
    cdef floating_t *col = NULL
    cdef floating_t *edge = NULL
    cdef const floating_t **ptrs = NULL
    cdef const floating_t **aptr
    cdef const floating_t *src
    cdef floating_t *dst
    cdef Py_ssize_t *boff = NULL
    try:
        # every element of these is written before it is read
        bpack = <floating_t *> alloc_uninit(g.G * ns * NP * nr * sizeof(floating_t))
        if g.N > 1:
            arows = <floating_t *> alloc_uninit(g.F * NP * sizeof(floating_t))
        if not direct:
            col = <floating_t *> alloc_uninit(nt * sper * nr * g.P * sizeof(floating_t))
        edge = <floating_t *> alloc_uninit(nt * CK_MR_MAX * CK_NR_MAX * sizeof(floating_t))
        ptrs = <const floating_t **> alloc_uninit(
            (g.F + nt * CK_MR_MAX) * sizeof(floating_t *))
        boff = <Py_ssize_t *> alloc_uninit(NP * sizeof(Py_ssize_t))
        row_offsets(boff, NP, nr)
        for f in range(g.F):
            ptrs[f] = (arows + f * NP) if g.N > 1 else (gy + f * g.P)
        with nogil:
            for t in prange(nbuild + g.G * nfc, num_threads=nt, schedule="static"):
                if t >= nbuild:
                    # filters f0 .. f1 of a group: their rows of A, their bias sums
                    u = t - nbuild
                    grp = u // nfc
                    f0 = grp * g.Fg + g.Fg * (u % nfc) // nfc
                    f1 = grp * g.Fg + g.Fg * (u % nfc + 1) // nfc
                    for f in range(f0, f1):
                        if g.N > 1:
                            for n in range(g.N):
                                memcpy(arows + f * NP + n * g.P, gy + (n * g.F + f) * g.P,
                                       g.P * sizeof(floating_t))
                        if bias_out != NULL:
                            bias_sum(gy + f * g.P, g.N, g.F * g.P, g.P, bias_out + f)
                    continue
                # slivers s0 .. s1 of image n's rows of patches
                grp = t // (g.N * nsc)
                n = t // nsc % g.N
                s0 = t % nsc * sper
                s1 = min(ns, s0 + sper)
                if s1 <= s0:
                    continue
                k0 = s0 * nr
                if direct:
                    src = x + (n * g.C + grp * g.Cg + k0) * plane_in
                else:
                    src = col + threadid() * sper * nr * g.P
                    im2col(x + (n * g.C + grp * g.Cg) * plane_in, g, k0,
                           min(K, s1 * nr) - k0, 0, g.P, <floating_t *> src, g.P)
                for s in range(s0, s1):
                    rs = min(nr, K - s * nr)
                    dst = bpack + ((grp * ns + s) * NP + n * g.P) * nr
                    transpose(src + (s * nr - k0) * g.P, g.P, rs, g.P, dst, nr)
                    if rs < nr:
                        for p in range(g.P):
                            memset(dst + p * nr + rs, 0, (nr - rs) * sizeof(floating_t))
            for t in prange(g.G * msplit * csplit, num_threads=nt, schedule="static"):
                grp = t // (msplit * csplit)
                m0 = t // csplit % msplit * mper * mr
                mm = min(mper * mr, g.Fg - m0)
                s0 = t % csplit * cper
                s1 = min(ns, s0 + cper)
                if mm <= 0 or s1 <= s0:
                    continue
                dst = gw + (grp * g.Fg + m0) * K + s0 * nr
                aptr = ptrs + g.F + threadid() * CK_MR_MAX
                gemm_rows_block(&KERN, ptrs + grp * g.Fg + m0, 0, mm, NP,
                                bpack + (grp * ns + s0) * NP * nr, boff,
                                min(K, s1 * nr) - s0 * nr, dst, K, aptr,
                                edge + threadid() * CK_MR_MAX * CK_NR_MAX, NP * nr, 0, NULL,
                                False)
    finally:
        release(boff)
        release(ptrs)
        release(edge)
        release(col)
        release(arows)
        release(bpack)


# The input gradient of a call with few output positions in all (the same rule):
# cols^T (N * P x K) = gy^T (N * P x Fg) @ W[g] (Fg x K), W's rows read in place (col2im
# packs W^T, a transposed copy of the whole weight, which at batch 1 costs as much as the
# product), then per image transposed and scattered back (col2im_add).


cdef void backward_input_rows(const floating_t *gy, const floating_t *w, const Geom *g,
                              floating_t *gx, int nt) except *:
    """grad_x (N, C, D, H, W) of a call with few output positions in all, as above.  The
    packing and the scatter run in parallel: the scatter's tasks are (image, group, chunk
    of channels), each zeroing and filling its own channels of grad_x."""
    cdef Py_ssize_t mr = block_mr(&KERN, gy), K = g.Cg * g.KK, NP = g.N * g.P
    cdef Py_ssize_t npad = round_up(NP, mr), plane = g.D * g.H * g.W
    cdef Py_ssize_t want = (4 * nt + g.N * g.G - 1) // (g.N * g.G)
    cdef Py_ssize_t cch = max(1, (g.Cg + want - 1) // want)
    cdef Py_ssize_t nch = (g.Cg + cch - 1) // cch
    cdef Py_ssize_t grp, n, b, i, f, row, t, c0, c1
    cdef floating_t *apack = <floating_t *> alloc_uninit(g.G * npad * g.Fg * sizeof(floating_t))
    cdef floating_t *a
    cdef const floating_t *src
    cdef floating_t *colst = NULL
    cdef floating_t *cols
    cdef floating_t *gxc
    cdef floating_t *col = NULL
    try:
        colst = <floating_t *> alloc_uninit(g.G * NP * K * sizeof(floating_t))
        col = <floating_t *> alloc_uninit(nt * cch * g.KK * g.P * sizeof(floating_t))
    except MemoryError:
        release(apack)
        release(colst)
        raise
    try:
        with nogil:
            # A[n * P + p, f] = gy[n, grp * Fg + f, p], packed in mr-row blocks
            # (a block of mr positions of one image reads mr contiguous values per filter;
            # only a block across images or past the end finds each row's source)
            for t in prange(g.G * (npad // mr), num_threads=nt, schedule="static"):
                grp = t // (npad // mr)
                b = t % (npad // mr)
                row = b * mr
                a = apack + grp * npad * g.Fg + b * g.Fg * mr
                if row + mr <= NP and row % g.P + mr <= g.P:
                    src = gy + (row // g.P * g.F + grp * g.Fg) * g.P + row % g.P
                    for f in range(g.Fg):
                        for i in range(mr):
                            a[f * mr + i] = src[f * g.P + i]
                    continue
                for i in range(mr):
                    row = b * mr + i
                    if row >= NP:
                        for f in range(g.Fg):
                            a[f * mr + i] = 0
                        continue
                    src = gy + (row // g.P * g.F + grp * g.Fg) * g.P + row % g.P
                    for f in range(g.Fg):
                        a[f * mr + i] = src[f * g.P]
        dense_call(apack, npad * g.Fg, NP, g.Fg, w, g.Fg * K, K, K, colst, NP * K, K, g.G, nt)
        with nogil:
            # tasks (image, group, chunk of channels) scatter into their own channels
            for t in prange(g.N * g.G * nch, num_threads=nt, schedule="static"):
                n = t // (g.G * nch)
                grp = t // nch % g.G
                c0 = t % nch * cch
                c1 = min(g.Cg, c0 + cch)
                cols = col + threadid() * cch * g.KK * g.P
                gxc = gx + (n * g.C + grp * g.Cg) * plane
                memset(gxc + c0 * plane, 0, (c1 - c0) * plane * sizeof(floating_t))
                transpose(colst + (grp * NP + n * g.P) * K + c0 * g.KK, K, g.P,
                          (c1 - c0) * g.KK, cols, g.P)
                col2im_add(cols, g.P, g, c0 * g.KK, (c1 - c0) * g.KK, 0, g.P, gxc)
    finally:
        release(col)
        release(colst)
        release(apack)
