# Blocked matrix product built on the register-blocked micro-kernels of ukernel.h.
#
# Layout conventions (all row-major):
#   packed A: blocks of mr rows; block b holds A[b*mr + i, k] at [(b * kdim + k) * mr + i],
#             rows past M are zero (see pack_rows);
#   B:        B[k, j] at B[boff[k] + j], readable for ncols rounded up to nr columns
#             (row offsets k * ld for an im2col tile, or one per kernel tap for a
#             padded input slab, where the product reads the input in place); or, in
#             gemm_block, output rows of row_len columns at given offsets (vector rows);
#   C:        C[i, j] at C[i * ldc + j], written only for i < M, j < ncols.
# (gemm_gather_block: A gathered through row pointers and per-k offsets, B packed nr
# columns per sliver.)

from libc.string cimport memcpy, memset

from fused cimport floating_t

cdef extern from "ukernel.h":
    ctypedef void (*ck_gemm_s)(Py_ssize_t, const float *, const float *,
                               const Py_ssize_t *, Py_ssize_t, float *, Py_ssize_t,
                               int, const float *) noexcept nogil
    ctypedef void (*ck_gemm_d)(Py_ssize_t, const double *, const double *,
                               const Py_ssize_t *, Py_ssize_t, double *, Py_ssize_t,
                               int, const double *) noexcept nogil
    ctypedef void (*ck_gemm_gather_s)(Py_ssize_t, const float * const *, const Py_ssize_t *,
                                      const float *, float *, Py_ssize_t, int,
                                      const float *) noexcept nogil
    ctypedef void (*ck_gemm_rows_s)(Py_ssize_t, const float * const *, const float *,
                                    const Py_ssize_t *, Py_ssize_t, float *, Py_ssize_t,
                                    int, const float *) noexcept nogil
    ctypedef void (*ck_gemm_gather_d)(Py_ssize_t, const double * const *, const Py_ssize_t *,
                                      const double *, double *, Py_ssize_t, int,
                                      const double *) noexcept nogil
    ctypedef void (*ck_gemm_rows_d)(Py_ssize_t, const double * const *, const double *,
                                    const Py_ssize_t *, Py_ssize_t, double *, Py_ssize_t,
                                    int, const double *) noexcept nogil
    ctypedef void (*ck_dot_s)(Py_ssize_t, const float * const *, const float * const *,
                              float *) noexcept nogil
    ctypedef void (*ck_gemv_s)(Py_ssize_t, const float * const *, const float *, float *,
                               int) noexcept nogil
    ctypedef void (*ck_transpose_s)(const float *, Py_ssize_t, Py_ssize_t, Py_ssize_t, float *,
                                    Py_ssize_t) noexcept nogil
    ctypedef void (*ck_dot_d)(Py_ssize_t, const double * const *, const double * const *,
                              double *) noexcept nogil
    ctypedef void (*ck_gemv_d)(Py_ssize_t, const double * const *, const double *, double *,
                               int) noexcept nogil
    ctypedef void (*ck_transpose_d)(const double *, Py_ssize_t, Py_ssize_t, Py_ssize_t, double *,
                                    Py_ssize_t) noexcept nogil
    ctypedef struct ck_kernels_s:
        ck_gemm_s gemm
        ck_gemm_rows_s gemm_rows
        ck_gemm_gather_s gemm_gather
        ck_gemm_gather_s gemm_gather_skip
        ck_dot_s dot
        ck_gemv_s gemv
        ck_transpose_s transpose
        int mr, nr, vl, dr, dc, gr
        const char *name
    ctypedef struct ck_kernels_d:
        ck_gemm_d gemm
        ck_gemm_rows_d gemm_rows
        ck_gemm_gather_d gemm_gather
        ck_gemm_gather_d gemm_gather_skip
        ck_dot_d dot
        ck_gemv_d gemv
        ck_transpose_d transpose
        int mr, nr, vl, dr, dc, gr
        const char *name
    void ck_select_s(ck_kernels_s *k, ck_kernels_s *k4, ck_kernels_s *k1) noexcept nogil
    void ck_select_d(ck_kernels_d *k, ck_kernels_d *k4, ck_kernels_d *k1) noexcept nogil
    enum:
        CK_MR_MAX
        CK_NR_MAX
        CK_GEMM_ACCUMULATE
        CK_GEMM_RELU
        CK_GEMM_PREFETCH

# Reduction block: one B sliver (KC x nr) stays in L1 while the mr-row blocks of A stream.
cdef enum:
    KC = 128

cdef struct Kernels:
    ck_kernels_s s
    ck_kernels_d d


cdef inline void select_kernels(Kernels *kern, Kernels *narrow, Kernels *one) noexcept nogil:
    """The running CPU's kernels: kern with the wide GEMM block (block_mr rows), narrow
    with the 4-row block for products with at most 4 rows, one with block_mr rows of a
    single vector for products with at most one vector of columns (same dot kernels)."""
    ck_select_s(&kern.s, &narrow.s, &one.s)
    ck_select_d(&kern.d, &narrow.d, &one.d)


cdef inline Py_ssize_t block_mr(const Kernels *kern, const floating_t *tag) noexcept nogil:
    """Rows of A per GEMM micro-kernel call."""
    if floating_t is float:
        return kern.s.mr
    else:
        return kern.d.mr


cdef inline Py_ssize_t block_nr(const Kernels *kern, const floating_t *tag) noexcept nogil:
    """Columns of B per GEMM micro-kernel call."""
    if floating_t is float:
        return kern.s.nr
    else:
        return kern.d.nr


cdef inline Py_ssize_t block_vl(const Kernels *kern, const floating_t *tag) noexcept nogil:
    """Elements per vector of the GEMM micro-kernel (block_nr is a multiple)."""
    if floating_t is float:
        return kern.s.vl
    else:
        return kern.d.vl


cdef inline Py_ssize_t dot_rows(const Kernels *kern, const floating_t *tag) noexcept nogil:
    """Rows of A per dot micro-kernel call."""
    if floating_t is float:
        return kern.s.dr
    else:
        return kern.d.dr


cdef inline Py_ssize_t dot_cols(const Kernels *kern, const floating_t *tag) noexcept nogil:
    """Rows of B per dot micro-kernel call."""
    if floating_t is float:
        return kern.s.dc
    else:
        return kern.d.dc


cdef inline Py_ssize_t gemv_rows(const Kernels *kern, const floating_t *tag) noexcept nogil:
    """Rows of A per gemv micro-kernel call."""
    if floating_t is float:
        return kern.s.gr
    else:
        return kern.d.gr


cdef inline void gemv_block(const Kernels *kern, Py_ssize_t kc, const floating_t **a,
                            const floating_t *x, floating_t *y, int accumulate) noexcept nogil:
    """y[i] (+)= sum over k < kc of a[i][k] * x[k] for i < gemv_rows, one chain per row
    with the bits of the GEMM kernels."""
    if floating_t is float:
        kern.s.gemv(kc, a, x, y, accumulate)
    else:
        kern.d.gemv(kc, a, x, y, accumulate)


cdef inline void dot_block(const Kernels *kern, Py_ssize_t L, const floating_t **a,
                           const floating_t **b, floating_t *out) noexcept nogil:
    """out[i * dc + j] = sum over p < L of a[i][p] * b[j][p] (dot_rows x dot_cols)."""
    if floating_t is float:
        kern.s.dot(L, a, b, out)
    else:
        kern.d.dot(L, a, b, out)


cdef inline void row_offsets(Py_ssize_t *boff, Py_ssize_t n, Py_ssize_t ld) noexcept nogil:
    """boff[k] = k * ld: the row offsets of a row-major B with leading dimension ld."""
    cdef Py_ssize_t k
    for k in range(n):
        boff[k] = k * ld


cdef inline Py_ssize_t round_up(Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    return (n + m - 1) // m * m


cdef inline Py_ssize_t reduction_step(Py_ssize_t kdim) noexcept nogil:
    """Length of the equal reduction blocks (at most KC) a product of kdim rows is cut
    into.  Every path cuts a reduction the same way, block sums added in order, so an
    output has the same bits whichever path (and tile) computes it."""
    cdef Py_ssize_t nkb = (kdim + KC - 1) // KC
    return (kdim + nkb - 1) // nkb if nkb > 0 else 0


cdef inline bint rows_alias(Py_ssize_t stride_bytes, Py_ssize_t rows) noexcept nogil:
    """Rows stride_bytes apart fall into too few L1 sets for a sliver of `rows` of them
    to stay in the cache: they start in only 4096 / gcd(stride, 4096) of its 64-byte-line
    sets, and 8 ways (the fewest of current x86 cores) hold 8 lines of each."""
    cdef Py_ssize_t a = stride_bytes, b = 4096
    while b != 0:
        a, b = b, a % b
    return rows > 8 * 4096 // a


cdef inline void copy_sliver(const floating_t *src, Py_ssize_t lds, Py_ssize_t rows,
                             Py_ssize_t cols, Py_ssize_t nr, floating_t *dst) noexcept nogil:
    """dst[k * nr + j] = src[k * lds + j] for k < rows, j < cols <= nr, and 0 for the
    columns cols .. nr: one B sliver, contiguous, its ragged columns zero."""
    cdef Py_ssize_t k
    for k in range(rows):
        memcpy(dst + k * nr, src + k * lds, cols * sizeof(floating_t))
        if cols < nr:
            memset(dst + k * nr + cols, 0, (nr - cols) * sizeof(floating_t))


cdef inline void pack_rows(const floating_t *src, Py_ssize_t rs, Py_ssize_t cs,
                           Py_ssize_t M, Py_ssize_t kdim, Py_ssize_t mr,
                           floating_t *dst) noexcept nogil:
    """Pack the M x kdim matrix src[i * rs + k * cs] into mr-row blocks (zero-filled)."""
    cdef Py_ssize_t b, k, i, row
    for b in range((M + mr - 1) // mr):
        for k in range(kdim):
            for i in range(mr):
                row = b * mr + i
                dst[(b * kdim + k) * mr + i] = src[row * rs + k * cs] if row < M else 0


cdef inline void ukernel(const Kernels *kern, Py_ssize_t kc, const floating_t *A,
                         const floating_t *B, const Py_ssize_t *boff, Py_ssize_t vs,
                         floating_t *C, Py_ssize_t ldc, int flags,
                         const floating_t *bias=NULL) noexcept nogil:
    """One micro-kernel block; flags: CK_GEMM_ACCUMULATE, CK_GEMM_RELU (ukernel_template.h)."""
    if floating_t is float:
        kern.s.gemm(kc, A, B, boff, vs, C, ldc, flags, bias)
    else:
        kern.d.gemm(kc, A, B, boff, vs, C, ldc, flags, bias)


cdef inline void ukernel_rows(const Kernels *kern, Py_ssize_t kc, const floating_t **A,
                              const floating_t *B, const Py_ssize_t *boff, Py_ssize_t vs,
                              floating_t *C, Py_ssize_t ldc, int flags,
                              const floating_t *bias=NULL) noexcept nogil:
    if floating_t is float:
        kern.s.gemm_rows(kc, A, B, boff, vs, C, ldc, flags, bias)
    else:
        kern.d.gemm_rows(kc, A, B, boff, vs, C, ldc, flags, bias)


cdef inline const floating_t *block_bias(const floating_t *bias, Py_ssize_t m0,
                                         Py_ssize_t mm, Py_ssize_t mr,
                                         floating_t *buf) noexcept nogil:
    """The epilogue's bias for the block of rows m0 .. m0 + mm: bias + m0, or, for an
    edge block (mm < mr; the micro-kernel reads mr values), its mm values copied to buf
    (CK_MR_MAX elements) with zeros for the rows past M, whose sums are dropped."""
    cdef Py_ssize_t i
    if mm == mr:
        return bias + m0
    for i in range(mr):
        buf[i] = bias[m0 + i] if i < mm else 0
    return buf


cdef inline void gemm_block(const Kernels *kern, const floating_t *A, Py_ssize_t a_stride,
                            Py_ssize_t M, Py_ssize_t kdim, const floating_t *B,
                            const Py_ssize_t *boff, Py_ssize_t row_len,
                            const Py_ssize_t *roff, Py_ssize_t ncols, floating_t *C,
                            Py_ssize_t ldc, floating_t *ctmp, bint accumulate,
                            const floating_t *bias=NULL, bint relu=False,
                            bint prefetch=False) noexcept nogil:
    """C[:M, :ncols] (+)= A[:M, :kdim] @ B[:kdim, :ncols], then, with bias (M values,
    not NULL) or relu, C = relu(C + bias[row]) in the last reduction block's stores.
    With prefetch (B's rows contiguous, row_len = 0), the micro-kernel asks for each
    row's lines two slivers ahead (CK_GEMM_PREFETCH).

    A is packed (a_stride elements between mr-row blocks, so a block may be a column
    slice of a wider packed matrix); ctmp is mr x nr scratch for the ragged edges.
    With row_len = 0, B's rows are contiguous.  Otherwise (vector rows) the ncols
    columns are output rows of row_len columns, row R starting roff[R] into B's rows:
    column j = R * row_len + q is at B + boff[k] + roff[R] + q.  row_len is then
    block_vl (each vector one row; the rows of one sliver equally spaced) or a multiple
    of block_nr (whole slivers per row), and ncols a multiple of block_nr.
    """
    cdef Py_ssize_t mr = block_mr(kern, A), nr = block_nr(kern, A), vl = block_vl(kern, A)
    cdef Py_ssize_t kb, jb, mb, k0, kc, j0, m0, mm, nn, i, j
    cdef Py_ssize_t vs = vl, row
    cdef Py_ssize_t kstep = reduction_step(kdim)
    cdef Py_ssize_t nkb = (kdim + kstep - 1) // kstep if kstep > 0 else 0
    cdef const floating_t *a
    cdef const floating_t *bj
    cdef const floating_t *bm
    cdef floating_t *c
    cdef floating_t bedge[CK_MR_MAX]
    cdef int acc
    for kb in range(nkb):
        k0 = kb * kstep
        kc = min(kstep, kdim - k0)
        acc = CK_GEMM_ACCUMULATE if accumulate or k0 > 0 else 0
        if kb == nkb - 1 and relu:
            acc = acc | CK_GEMM_RELU
        if prefetch:
            acc = acc | CK_GEMM_PREFETCH
        for jb in range((ncols + nr - 1) // nr):
            j0 = jb * nr
            nn = min(nr, ncols - j0)
            bj = B + j0
            if row_len > 0:
                row = j0 // row_len
                bj = B + roff[row] + j0 % row_len
                if row_len < nr:
                    vs = roff[row + 1] - roff[row]
            for mb in range((M + mr - 1) // mr):
                m0 = mb * mr
                mm = min(mr, M - m0)
                a = A + mb * a_stride + k0 * mr
                c = C + m0 * ldc + j0
                bm = NULL
                if bias != NULL and kb == nkb - 1:
                    bm = block_bias(bias, m0, mm, mr, bedge)
                if mm == mr and nn == nr:
                    ukernel(kern, kc, a, bj, boff + k0, vs, c, ldc, acc, bm)
                    continue
                if acc & CK_GEMM_ACCUMULATE:
                    for i in range(mm):
                        for j in range(nn):
                            ctmp[i * nr + j] = c[i * ldc + j]
                ukernel(kern, kc, a, bj, boff + k0, vs, ctmp, nr, acc, bm)
                for i in range(mm):
                    for j in range(nn):
                        c[i * ldc + j] = ctmp[i * nr + j]


cdef inline void gemm_rows_block(const Kernels *kern, const floating_t **rows, Py_ssize_t a_off,
                                 Py_ssize_t M, Py_ssize_t kdim, const floating_t *B,
                                 const Py_ssize_t *boff, Py_ssize_t ncols, floating_t *C,
                                 Py_ssize_t ldc, const floating_t **aptr,
                                 floating_t *ctmp, Py_ssize_t sliver=0, Py_ssize_t row_len=0,
                                 const Py_ssize_t *roff=NULL, bint accumulate=True,
                                 Py_ssize_t kchunk=1, const floating_t *bias=NULL,
                                 bint relu=False) noexcept nogil:
    """C[:M, :ncols] (+)= A[:M, :kdim] @ B[:kdim, :ncols] with A[i, k] = rows[i][a_off + k]
    (accumulate False overwrites C: no zeroing pass over it first); then bias (M values,
    or NULL) added to each row and ReLU if relu, in the stores of the last reduction
    block (the micro-kernel's epilogue: copy_out's operations in its order).

    The rows of A are read in place (no packing); aptr is scratch for mr pointers and
    ctmp for an mr x nr edge block, as in gemm_block.  B's nr-column sliver s starts at
    B + s * sliver: nr (the default, 0) for B's rows contiguous, kdim * nr for B packed
    sliver by sliver (then boff[k] = k * nr).  With row_len > 0, B's columns are vector
    rows, as in gemm_block.

    With kchunk 1, each kstep x nr block of B stays in L1 while every block of rows
    passes.  With more, the reduction runs kchunk blocks at a time with the blocks of
    rows outermost: each block of A's rows reads kchunk * kstep values of each of its
    rows in one run, for every sliver, while B's kchunk blocks stay in L2 (the rows of
    a large weight, read from L3, stream at the prefetcher's pace only in long runs:
    VGG's 512 x 4608 weight against one sliver ran 1.4x faster).  Every output sums its
    reduction blocks in order either way: the same bits.
    """
    cdef Py_ssize_t mr = block_mr(kern, B), nr = block_nr(kern, B)
    # equal reduction blocks (reduction_step): C is read and written once per block, so
    # a short last block would cost as much C traffic as a full one
    cdef Py_ssize_t kstep = reduction_step(kdim)
    cdef Py_ssize_t nkb = (kdim + kstep - 1) // kstep if kstep > 0 else 0
    cdef Py_ssize_t nmb = (M + mr - 1) // mr, njb = (ncols + nr - 1) // nr
    cdef Py_ssize_t kb, kb0, kb1, jb, mb
    if kchunk <= 1:
        for kb in range(nkb):
            for jb in range(njb):
                for mb in range(nmb):
                    rows_block_run(kern, rows, a_off, M, kdim, kstep, kb, kb + 1, B, boff,
                                   ncols, C, ldc, aptr, ctmp, sliver, row_len, roff,
                                   accumulate, mb, jb, bias, relu)
        return
    kb0 = 0
    while kb0 < nkb:
        kb1 = min(nkb, kb0 + kchunk)
        for mb in range(nmb):
            for jb in range(njb):
                rows_block_run(kern, rows, a_off, M, kdim, kstep, kb0, kb1, B, boff, ncols,
                               C, ldc, aptr, ctmp, sliver, row_len, roff, accumulate, mb, jb,
                               bias, relu)
        kb0 = kb1


cdef inline void rows_block_run(const Kernels *kern, const floating_t **rows, Py_ssize_t a_off,
                                Py_ssize_t M, Py_ssize_t kdim, Py_ssize_t kstep,
                                Py_ssize_t kb0, Py_ssize_t kb1, const floating_t *B,
                                const Py_ssize_t *boff, Py_ssize_t ncols, floating_t *C,
                                Py_ssize_t ldc, const floating_t **aptr, floating_t *ctmp,
                                Py_ssize_t sliver, Py_ssize_t row_len, const Py_ssize_t *roff,
                                bint accumulate, Py_ssize_t mb, Py_ssize_t jb,
                                const floating_t *bias, bint relu) noexcept nogil:
    """gemm_rows_block's block of rows mb and sliver jb over the reduction blocks
    kb0 .. kb1 - 1, in order."""
    cdef Py_ssize_t mr = block_mr(kern, B), nr = block_nr(kern, B), vl = block_vl(kern, B)
    cdef Py_ssize_t kb, k0, kc, i, j, row
    cdef floating_t bpad[CK_MR_MAX]
    cdef const floating_t *bb = NULL
    cdef Py_ssize_t vs = vl, j0 = jb * nr, m0 = mb * mr
    cdef Py_ssize_t nn = min(nr, ncols - j0), mm = min(mr, M - m0)
    cdef const floating_t *bj = B + jb * (sliver if sliver > 0 else nr)
    cdef floating_t *c = C + m0 * ldc + j0
    cdef bint edge = not (mm == mr and nn == nr)
    cdef floating_t *dst = ctmp if edge else c
    cdef int acc
    if row_len > 0:
        row = j0 // row_len
        bj = B + roff[row] + j0 % row_len
        if row_len < nr:
            vs = roff[row + 1] - roff[row]
    if edge and (accumulate or kb0 > 0):
        for i in range(mm):
            for j in range(nn):
                ctmp[i * nr + j] = c[i * ldc + j]
    if bias != NULL:
        bb = block_bias(bias, m0, mm, mr, bpad)
    for kb in range(kb0, kb1):
        k0 = kb * kstep
        kc = min(kstep, kdim - k0)
        acc = CK_GEMM_ACCUMULATE if accumulate or k0 > 0 else 0
        if k0 + kc == kdim and relu:
            acc = acc | CK_GEMM_RELU
        # rows past M repeat the last row; their sums land in ctmp and are dropped
        for i in range(mr):
            aptr[i] = rows[min(m0 + i, M - 1)] + a_off + k0
        ukernel_rows(kern, kc, aptr, bj, boff + k0, vs, dst, nr if edge else ldc, acc,
                     bb if k0 + kc == kdim else NULL)
    if edge:
        for i in range(mm):
            for j in range(nn):
                c[i * ldc + j] = ctmp[i * nr + j]


cdef inline void ukernel_gather(const Kernels *kern, Py_ssize_t kc, const floating_t **A,
                                const Py_ssize_t *aoff, const floating_t *B, floating_t *C,
                                Py_ssize_t ldc, int flags) noexcept nogil:
    if floating_t is float:
        kern.s.gemm_gather(kc, A, aoff, B, C, ldc, flags, NULL)
    else:
        kern.d.gemm_gather(kc, A, aoff, B, C, ldc, flags, NULL)


cdef inline void ukernel_gather_skip(const Kernels *kern, Py_ssize_t kc, const floating_t **A,
                                     const Py_ssize_t *ab, const floating_t *B, floating_t *C,
                                     Py_ssize_t ldc, int flags) noexcept nogil:
    """The gathered micro-kernel over kc chosen steps: step j reads A[i][ab[2 j]] and
    B's row at B + ab[2 j + 1]."""
    if floating_t is float:
        kern.s.gemm_gather_skip(kc, A, ab, B, C, ldc, flags, NULL)
    else:
        kern.d.gemm_gather_skip(kc, A, ab, B, C, ldc, flags, NULL)


cdef inline void gemm_gather_block(const Kernels *kern, const floating_t **rows,
                                   const Py_ssize_t *aoff, Py_ssize_t M, Py_ssize_t kdim,
                                   const floating_t *B, Py_ssize_t ncols, floating_t *C,
                                   Py_ssize_t ldc, const floating_t **aptr,
                                   floating_t *ctmp) noexcept nogil:
    """C[:M, :ncols] = A[:M, :kdim] @ B[:kdim, :ncols] with A[i, k] = rows[i][aoff[k]]
    (gathered in place) and B packed nr columns per sliver: B[k, s * nr + j] at
    B[(s * kdim + k) * nr + j], the columns past ncols zero.  The reduction runs in
    gemm_rows_block's blocks, in order (the same bits as the other GEMMs over the same
    k order); aptr is scratch for mr pointers and ctmp for an mr x nr edge block."""
    gemm_gather_run(kern, rows, aoff, M, kdim, B, kdim * block_nr(kern, B), ncols, C, ldc,
                    aptr, ctmp, False)


cdef inline void gemm_gather_run(const Kernels *kern, const floating_t **rows,
                                 const Py_ssize_t *aoff, Py_ssize_t M, Py_ssize_t kdim,
                                 const floating_t *B, Py_ssize_t sliver, Py_ssize_t ncols,
                                 floating_t *C, Py_ssize_t ldc, const floating_t **aptr,
                                 floating_t *ctmp, bint accumulate) noexcept nogil:
    """gemm_gather_block over a run of a longer reduction: B's slivers sliver elements
    apart (B[k, s * nr + j] at B[s * sliver + k * nr + j]); with accumulate, C +=."""
    cdef Py_ssize_t mr = block_mr(kern, B), nr = block_nr(kern, B)
    cdef Py_ssize_t kb, jb, mb, k0, kc, j0, m0, mm, nn, i, j
    cdef Py_ssize_t kstep = reduction_step(kdim)
    cdef Py_ssize_t nkb = (kdim + kstep - 1) // kstep if kstep > 0 else 0
    cdef floating_t *c
    cdef const floating_t *bj
    cdef int acc
    cdef bint edge
    for kb in range(nkb):
        k0 = kb * kstep
        kc = min(kstep, kdim - k0)
        acc = CK_GEMM_ACCUMULATE if accumulate or k0 > 0 else 0
        for jb in range((ncols + nr - 1) // nr):
            j0 = jb * nr
            nn = min(nr, ncols - j0)
            bj = B + jb * sliver + k0 * nr
            for mb in range((M + mr - 1) // mr):
                m0 = mb * mr
                mm = min(mr, M - m0)
                # rows past M repeat the last row; their sums land in ctmp and are dropped
                for i in range(mr):
                    aptr[i] = rows[min(m0 + i, M - 1)]
                c = C + m0 * ldc + j0
                edge = not (mm == mr and nn == nr)
                if not edge:
                    ukernel_gather(kern, kc, aptr, aoff + k0, bj, c, ldc, acc)
                    continue
                if acc:
                    for i in range(mm):
                        for j in range(nn):
                            ctmp[i * nr + j] = c[i * ldc + j]
                ukernel_gather(kern, kc, aptr, aoff + k0, bj, ctmp, nr, acc)
                for i in range(mm):
                    for j in range(nn):
                        c[i * ldc + j] = ctmp[i * nr + j]
