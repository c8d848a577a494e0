# Blocked matrix product built on the register-blocked micro-kernels of ukernel.h.
#
# Layout conventions (all row-major):
#   packed A: blocks of mr rows; block b holds A[b*mr + i, k] at [(b * kdim + k) * mr + i],
#             rows past M are zero (see pack_rows);
#   B:        B[k, j] at B[k * ldb + j], readable for ncols rounded up to nr columns;
#   C:        C[i, j] at C[i * ldc + j], written only for i < M, j < ncols.

from fused cimport floating_t

cdef extern from "ukernel.h":
    ctypedef void (*ck_ukernel_s)(Py_ssize_t, const float *, const float *, Py_ssize_t,
                                  float *, Py_ssize_t, int) noexcept nogil
    ctypedef void (*ck_ukernel_d)(Py_ssize_t, const double *, const double *, Py_ssize_t,
                                  double *, Py_ssize_t, int) noexcept nogil
    ck_ukernel_s ck_select_s(int *mr, int *nr, const char **name) noexcept nogil
    ck_ukernel_d ck_select_d(int *mr, int *nr, const char **name) noexcept nogil
    enum:
        CK_MR_MAX
        CK_NR_MAX

# Reduction block: one B sliver (KC x nr) stays in L1 while the mr-row blocks of A stream.
cdef enum:
    KC = 128

cdef struct Kernels:
    ck_ukernel_s sgemm
    ck_ukernel_d dgemm
    int mr_s
    int nr_s
    int mr_d
    int nr_d
    const char *name


cdef inline void select_kernels(Kernels *kern) noexcept nogil:
    kern.sgemm = ck_select_s(&kern.mr_s, &kern.nr_s, &kern.name)
    kern.dgemm = ck_select_d(&kern.mr_d, &kern.nr_d, &kern.name)


cdef inline Py_ssize_t block_mr(const Kernels *kern, const floating_t *tag) noexcept nogil:
    if floating_t is float:
        return kern.mr_s
    else:
        return kern.mr_d


cdef inline Py_ssize_t block_nr(const Kernels *kern, const floating_t *tag) noexcept nogil:
    if floating_t is float:
        return kern.nr_s
    else:
        return kern.nr_d


cdef inline Py_ssize_t round_up(Py_ssize_t n, Py_ssize_t m) noexcept nogil:
    return (n + m - 1) // m * m


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
                         const floating_t *B, Py_ssize_t ldb, floating_t *C,
                         Py_ssize_t ldc, int accumulate) noexcept nogil:
    if floating_t is float:
        kern.sgemm(kc, A, B, ldb, C, ldc, accumulate)
    else:
        kern.dgemm(kc, A, B, ldb, C, ldc, accumulate)


cdef inline void gemm_block(const Kernels *kern, const floating_t *A, Py_ssize_t a_stride,
                            Py_ssize_t M, Py_ssize_t kdim, const floating_t *B,
                            Py_ssize_t ldb, Py_ssize_t ncols, floating_t *C,
                            Py_ssize_t ldc, floating_t *ctmp, bint accumulate) noexcept nogil:
    """C[:M, :ncols] (+)= A[:M, :kdim] @ B[:kdim, :ncols].

    A is packed (a_stride elements between mr-row blocks, so a block may be a column
    slice of a wider packed matrix); ctmp is mr x nr scratch for the ragged edges.
    """
    cdef Py_ssize_t mr = block_mr(kern, A), nr = block_nr(kern, A)
    cdef Py_ssize_t kb, jb, mb, k0, kc, j0, m0, mm, nn, i, j
    cdef const floating_t *a
    cdef floating_t *c
    cdef int acc
    for kb in range((kdim + KC - 1) // KC):
        k0 = kb * KC
        kc = min(<Py_ssize_t> KC, kdim - k0)
        acc = accumulate or k0 > 0
        for jb in range((ncols + nr - 1) // nr):
            j0 = jb * nr
            nn = min(nr, ncols - j0)
            for mb in range((M + mr - 1) // mr):
                m0 = mb * mr
                mm = min(mr, M - m0)
                a = A + mb * a_stride + k0 * mr
                c = C + m0 * ldc + j0
                if mm == mr and nn == nr:
                    ukernel(kern, kc, a, B + k0 * ldb + j0, ldb, c, ldc, acc)
                    continue
                if acc:
                    for i in range(mm):
                        for j in range(nn):
                            ctmp[i * nr + j] = c[i * ldc + j]
                ukernel(kern, kc, a, B + k0 * ldb + j0, ldb, ctmp, nr, acc)
                for i in range(mm):
                    for j in range(nn):
                        c[i * ldc + j] = ctmp[i * nr + j]
