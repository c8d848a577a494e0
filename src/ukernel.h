/* Micro-kernels for convkern, selected once at run time by CPU feature.
 *
 * Two kinds, both register-blocked:
 * - GEMM (ukernel_template.h): an MR x NR block of C += A @ B, with A packed (gemm),
 *   read in place through MR row pointers (gemm_rows) or gathered through MR row
 *   pointers and an offset per reduction index (gemm_gather), in two shapes: wide (MR = 4 to
 *   8 rows) and narrow (4 rows, more columns) for products with few rows;
 * - dot (ukernel_dot_template.h): a DR x DC block of sums of products of rows that
 *   are both contiguous along the reduction;
 * - gemv (ukernel_gemv_template.h): VL rows read in place times one vector, each row
 *   one chain with the GEMM's bits (products with a single column);
 * - transpose (ukernel_transpose_template.h): a matrix copied transposed, VL x VL blocks
 *   in registers.
 *
 * Wheels are compiled for the baseline ISA (no -march=native); the x86-64 kernels for
 * AVX2+FMA and AVX-512 are compiled with per-function target attributes, under gcc and
 * clang, and chosen by the level of cpu_isa.h (the CPU's widest, or CONVKERN_ISA), so
 * one binary runs on every x86-64 CPU and uses the widest vectors it has.  Compilers
 * without GNU vector extensions (MSVC) get plain C kernels.
 *
 * ck_select_s / ck_select_d fill three ck_kernels_s / ck_kernels_d (the wide, the
 * narrow and the one-vector GEMM shape) with the kernels for float / double, their
 * block shapes and a name for show_config(); ukernel_isa.h instantiates one ISA's
 * kernels.
 */
#ifndef CONVKERN_UKERNEL_H
#define CONVKERN_UKERNEL_H

#include <string.h>
#include <Python.h>

#include "cpu_isa.h"

#define CK_MR_MAX 16
#define CK_NR_MAX 64

/* The GEMM kernels' flags: add to C (rather than overwrite it); apply ReLU at the store;
 * prefetch B's rows ahead (ukernel_template.h). */
#define CK_GEMM_ACCUMULATE 1
#define CK_GEMM_RELU 2
#define CK_GEMM_PREFETCH 4

#define CK_DECLARE_KERNELS(T, S)                                                     \
    typedef void (*ck_gemm_##S)(Py_ssize_t, const T *, const T *, const Py_ssize_t *, \
                                Py_ssize_t, T *, Py_ssize_t, int, const T *);        \
    typedef void (*ck_gemm_rows_##S)(Py_ssize_t, const T *const *, const T *,        \
                                     const Py_ssize_t *, Py_ssize_t, T *, Py_ssize_t, \
                                     int, const T *);                                \
    typedef void (*ck_gemm_gather_##S)(Py_ssize_t, const T *const *, const Py_ssize_t *, \
                                       const T *, T *, Py_ssize_t, int, const T *);  \
    typedef void (*ck_dot_##S)(Py_ssize_t, const T *const *, const T *const *, T *);  \
    typedef void (*ck_gemv_##S)(Py_ssize_t, const T *const *, const T *, T *, int);   \
    typedef void (*ck_transpose_##S)(const T *, Py_ssize_t, Py_ssize_t, Py_ssize_t,   \
                                     T *, Py_ssize_t);                               \
    typedef struct {                                                                 \
        ck_gemm_##S gemm;                                                            \
        ck_gemm_rows_##S gemm_rows;                                                  \
        ck_gemm_gather_##S gemm_gather;                                              \
        ck_gemm_gather_##S gemm_gather_skip;                                         \
        ck_dot_##S dot;                                                              \
        ck_gemv_##S gemv;                                                            \
        ck_transpose_##S transpose;                                                  \
        int mr, nr, vl, dr, dc, gr;                                                  \
        const char *name;                                                            \
    } ck_kernels_##S;
CK_DECLARE_KERNELS(float, s)
CK_DECLARE_KERNELS(double, d)

#if defined(__GNUC__) || defined(__clang__)

#ifdef CK_X86_DISPATCH
#define CK_AVX512 __attribute__((target("avx512f,avx2,fma")))
#define CK_AVX2 __attribute__((target("avx2,fma")))

/* AVX-512: GEMM 8 x 2 vectors and 4 x 4 vectors (16 of 32 registers), dot 4 x 6. */
#define CKI_S s
#define CKI_T float
#define CKI_IT int
#define CKI_ISA avx512
#define CKI_ATTR CK_AVX512
#define CKI_VL 16
#define CKI_MR 8
#define CKI_NV 2
#define CKI_NV4 4
#define CKI_DR 4
#define CKI_DC 6
#include "ukernel_isa.h"
#define CKI_S d
#define CKI_T double
#define CKI_IT long long
#define CKI_ISA avx512
#define CKI_ATTR CK_AVX512
#define CKI_VL 8
#define CKI_MR 8
#define CKI_NV 2
#define CKI_NV4 4
#define CKI_DR 4
#define CKI_DC 6
#include "ukernel_isa.h"

/* AVX2: GEMM 6 x 2 vectors and 4 x 3 vectors (12 of 16 registers), dot 3 x 4. */
#define CKI_S s
#define CKI_T float
#define CKI_IT int
#define CKI_ISA avx2
#define CKI_ATTR CK_AVX2
#define CKI_VL 8
#define CKI_MR 6
#define CKI_NV 2
#define CKI_NV4 3
#define CKI_DR 3
#define CKI_DC 4
#include "ukernel_isa.h"
#define CKI_S d
#define CKI_T double
#define CKI_IT long long
#define CKI_ISA avx2
#define CKI_ATTR CK_AVX2
#define CKI_VL 4
#define CKI_MR 6
#define CKI_NV 2
#define CKI_NV4 3
#define CKI_DR 3
#define CKI_DC 4
#include "ukernel_isa.h"
#endif

/* Baseline: 16-byte vectors (SSE2 on x86-64, NEON on aarch64); GEMM 4 x 3 vectors. */
#define CKI_S s
#define CKI_T float
#define CKI_IT int
#define CKI_ISA baseline
#define CKI_ATTR
#define CKI_VL 4
#define CKI_MR 4
#define CKI_NV 3
#define CKI_NV4 3
#define CKI_DR 3
#define CKI_DC 4
#include "ukernel_isa.h"
#define CKI_S d
#define CKI_T double
#define CKI_IT long long
#define CKI_ISA baseline
#define CKI_ATTR
#define CKI_VL 2
#define CKI_MR 4
#define CKI_NV 3
#define CKI_NV4 3
#define CKI_DR 3
#define CKI_DC 4
#include "ukernel_isa.h"

/* Fill the wide (block_mr rows), narrow (4 rows) and one-vector kernel sets for
 * ck_isa_level(). */
static void ck_select_s(ck_kernels_s *k, ck_kernels_s *k4, ck_kernels_s *k1)
{
    switch (ck_isa_level()) {
#ifdef CK_X86_DISPATCH
    case CK_ISA_AVX512:
        ck_s_avx512_select(k, k4, k1);
        return;
    case CK_ISA_AVX2:
        ck_s_avx2_select(k, k4, k1);
        return;
#endif
    default:
        ck_s_baseline_select(k, k4, k1);
    }
}

static void ck_select_d(ck_kernels_d *k, ck_kernels_d *k4, ck_kernels_d *k1)
{
    switch (ck_isa_level()) {
#ifdef CK_X86_DISPATCH
    case CK_ISA_AVX512:
        ck_d_avx512_select(k, k4, k1);
        return;
    case CK_ISA_AVX2:
        ck_d_avx2_select(k, k4, k1);
        return;
#endif
    default:
        ck_d_baseline_select(k, k4, k1);
    }
}

#else /* no GNU vector extensions: plain C kernels */

#define CK_COMMA ,

/* One 4 x 4 GEMM block; A_AT reads A at row i, reduction index k (packed, by rows or
 * gathered: A_OFFSETS then adds the parameter aoff) and B_AT B at row k, column j (through
 * boff, or packed for the gathered kernel: B_PARAMS, the parameters after B). */
#define CK_SCALAR_GEMM(NAME, T, A_TYPE, A_OFFSETS, A_AT, B_PARAMS, B_AT)             \
    static void NAME(Py_ssize_t kc, A_TYPE A A_OFFSETS, const T *B B_PARAMS, T *C,   \
                     Py_ssize_t ldc, int flags, const T *bias)                       \
    {                                                                                \
        T acc[4][4] = {{0}};                                                         \
        Py_ssize_t k;                                                                \
        int i, j;                                                                    \
        for (k = 0; k < kc; k++)                                                     \
            for (i = 0; i < 4; i++)                                                  \
                for (j = 0; j < 4; j++)                                              \
                    acc[i][j] += (A_AT) * (B_AT);                                    \
        for (i = 0; i < 4; i++)                                                      \
            for (j = 0; j < 4; j++) {                                                \
                T v = flags & CK_GEMM_ACCUMULATE ? C[i * ldc + j] + acc[i][j]        \
                                                 : acc[i][j];                        \
                if (bias != NULL)                                                    \
                    v = v + bias[i];                                                 \
                if ((flags & CK_GEMM_RELU) && v <= 0)                                \
                    v = 0;                                                           \
                C[i * ldc + j] = v;                                                  \
            }                                                                        \
    }

/* (vs is unused: one vector of VL = NR columns) */
#define CK_SCALAR_KERNELS(S, T)                                                      \
    CK_SCALAR_GEMM(ck_##S##_scalar_gemm, T, const T *, , A[k * 4 + i],              \
                   CK_COMMA const Py_ssize_t *boff CK_COMMA Py_ssize_t vs,           \
                   B[boff[k] + j])                                                   \
    CK_SCALAR_GEMM(ck_##S##_scalar_gemm_rows, T, const T *const *, , A[i][k],        \
                   CK_COMMA const Py_ssize_t *boff CK_COMMA Py_ssize_t vs,           \
                   B[boff[k] + j])                                                   \
    CK_SCALAR_GEMM(ck_##S##_scalar_gemm_gather, T, const T *const *,                 \
                   CK_COMMA const Py_ssize_t *aoff, A[i][aoff[k]], , B[k * 4 + j])   \
    CK_SCALAR_GEMM(ck_##S##_scalar_gemm_gather_skip, T, const T *const *,            \
                   CK_COMMA const Py_ssize_t *aoff, A[i][aoff[2 * k]], ,             \
                   B[aoff[2 * k + 1] + j])                                           \
    static void ck_##S##_scalar_dot(Py_ssize_t L, const T *const *a,                 \
                                    const T *const *b, T *out)                       \
    {                                                                                \
        Py_ssize_t p;                                                                \
        int i, j;                                                                    \
        for (i = 0; i < 2; i++)                                                      \
            for (j = 0; j < 2; j++) {                                                \
                T s = 0;                                                             \
                for (p = 0; p < L; p++)                                              \
                    s += a[i][p] * b[j][p];                                          \
                out[i * 2 + j] = s;                                                  \
            }                                                                        \
    }                                                                                \
    static void ck_##S##_scalar_gemv(Py_ssize_t kc, const T *const *A, const T *x,   \
                                     T *y, int accumulate)                           \
    {                                                                                \
        T acc[4] = {0};                                                              \
        Py_ssize_t k;                                                                \
        int i;                                                                       \
        for (k = 0; k < kc; k++)                                                     \
            for (i = 0; i < 4; i++)                                                  \
                acc[i] += A[i][k] * x[k];                                            \
        for (i = 0; i < 4; i++)                                                      \
            y[i] = accumulate ? acc[i] + y[i] : acc[i];                              \
    }                                                                                \
    static void ck_##S##_scalar_transpose(const T *src, Py_ssize_t lds, Py_ssize_t rows, \
                                          Py_ssize_t cols, T *dst, Py_ssize_t ldd)   \
    {                                                                                \
        Py_ssize_t i, j;                                                             \
        for (j = 0; j < cols; j++)                                                   \
            for (i = 0; i < rows; i++)                                               \
                dst[j * ldd + i] = src[i * lds + j];                                 \
    }                                                                                \
    static void ck_select_##S(ck_kernels_##S *k, ck_kernels_##S *k4,                 \
                              ck_kernels_##S *k1)                                    \
    {                                                                                \
        k->gemm = ck_##S##_scalar_gemm;                                              \
        k->gemm_rows = ck_##S##_scalar_gemm_rows;                                    \
        k->gemm_gather = ck_##S##_scalar_gemm_gather;                                \
        k->gemm_gather_skip = ck_##S##_scalar_gemm_gather_skip;                      \
        k->dot = ck_##S##_scalar_dot;                                                \
        k->gemv = ck_##S##_scalar_gemv;                                              \
        k->transpose = ck_##S##_scalar_transpose;                                    \
        k->mr = 4; k->nr = 4; k->vl = 4; k->dr = 2; k->dc = 2; k->gr = 4;            \
        k->name = "scalar";                                                          \
        *k4 = *k1 = *k; /* the 4 x 4 block already is narrow, of one vector */       \
    }
CK_SCALAR_KERNELS(s, float)
CK_SCALAR_KERNELS(d, double)

#endif
#endif /* CONVKERN_UKERNEL_H */
