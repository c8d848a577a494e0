/* GEMM micro-kernels for convkern, selected once at run time by CPU feature.
 *
 * Wheels are compiled for the baseline ISA (no -march=native); the x86-64 kernels for
 * AVX2+FMA and AVX-512 are compiled with per-function target attributes and chosen by
 * __builtin_cpu_supports, so one binary runs on every x86-64 CPU and uses the widest
 * vectors it has.  Compilers without GNU vector extensions (MSVC) get a plain C kernel.
 *
 * ck_select_s / ck_select_d return the kernel for float / double and write its block
 * shape (MR rows, NR columns) and a name for show_config().
 */
#ifndef CONVKERN_UKERNEL_H
#define CONVKERN_UKERNEL_H

#include <string.h>
#include <Python.h>

#define CK_MR_MAX 16
#define CK_NR_MAX 64

typedef void (*ck_ukernel_s)(Py_ssize_t, const float *, const float *, Py_ssize_t,
                             float *, Py_ssize_t, int);
typedef void (*ck_ukernel_d)(Py_ssize_t, const double *, const double *, Py_ssize_t,
                             double *, Py_ssize_t, int);

#if defined(__GNUC__) || defined(__clang__)

#if defined(__x86_64__) && !defined(__clang__)
#define CK_X86_DISPATCH 1
#endif

#ifdef CK_X86_DISPATCH
#define UK_NAME ck_uk_s_avx512
#define UK_T float
#define UK_VL 16
#define UK_MR 8
#define UK_NV 3
#define UK_ATTR __attribute__((target("avx512f,avx2,fma")))
#include "ukernel_template.h"
#define UK_NAME ck_uk_d_avx512
#define UK_T double
#define UK_VL 8
#define UK_MR 8
#define UK_NV 3
#define UK_ATTR __attribute__((target("avx512f,avx2,fma")))
#include "ukernel_template.h"
#define UK_NAME ck_uk_s_avx2
#define UK_T float
#define UK_VL 8
#define UK_MR 6
#define UK_NV 2
#define UK_ATTR __attribute__((target("avx2,fma")))
#include "ukernel_template.h"
#define UK_NAME ck_uk_d_avx2
#define UK_T double
#define UK_VL 4
#define UK_MR 6
#define UK_NV 2
#define UK_ATTR __attribute__((target("avx2,fma")))
#include "ukernel_template.h"
#endif

/* Baseline: 16-byte vectors (SSE2 on x86-64, NEON on aarch64). */
#define UK_NAME ck_uk_s_base
#define UK_T float
#define UK_VL 4
#define UK_MR 4
#define UK_NV 3
#define UK_ATTR
#include "ukernel_template.h"
#define UK_NAME ck_uk_d_base
#define UK_T double
#define UK_VL 2
#define UK_MR 4
#define UK_NV 3
#define UK_ATTR
#include "ukernel_template.h"

static ck_ukernel_s ck_select_s(int *mr, int *nr, const char **name)
{
#ifdef CK_X86_DISPATCH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) {
        *mr = 8; *nr = 48; *name = "avx512";
        return ck_uk_s_avx512;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        *mr = 6; *nr = 16; *name = "avx2";
        return ck_uk_s_avx2;
    }
#endif
    *mr = 4; *nr = 12; *name = "baseline";
    return ck_uk_s_base;
}

static ck_ukernel_d ck_select_d(int *mr, int *nr, const char **name)
{
#ifdef CK_X86_DISPATCH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) {
        *mr = 8; *nr = 24; *name = "avx512";
        return ck_uk_d_avx512;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        *mr = 6; *nr = 8; *name = "avx2";
        return ck_uk_d_avx2;
    }
#endif
    *mr = 4; *nr = 6; *name = "baseline";
    return ck_uk_d_base;
}

#else /* no GNU vector extensions: plain C, 4 x 4 blocks */

#define CK_SCALAR_KERNEL(NAME, T)                                                  \
    static void NAME(Py_ssize_t kc, const T *A, const T *B, Py_ssize_t ldb, T *C,  \
                     Py_ssize_t ldc, int accumulate)                               \
    {                                                                              \
        T acc[4][4] = {{0}};                                                       \
        Py_ssize_t k;                                                              \
        int i, j;                                                                  \
        for (k = 0; k < kc; k++)                                                   \
            for (i = 0; i < 4; i++)                                                \
                for (j = 0; j < 4; j++)                                            \
                    acc[i][j] += A[k * 4 + i] * B[k * ldb + j];                    \
        for (i = 0; i < 4; i++)                                                    \
            for (j = 0; j < 4; j++)                                                \
                C[i * ldc + j] = accumulate ? C[i * ldc + j] + acc[i][j] : acc[i][j]; \
    }
CK_SCALAR_KERNEL(ck_uk_s_scalar, float)
CK_SCALAR_KERNEL(ck_uk_d_scalar, double)

static ck_ukernel_s ck_select_s(int *mr, int *nr, const char **name)
{
    *mr = 4; *nr = 4; *name = "scalar";
    return ck_uk_s_scalar;
}

static ck_ukernel_d ck_select_d(int *mr, int *nr, const char **name)
{
    *mr = 4; *nr = 4; *name = "scalar";
    return ck_uk_d_scalar;
}

#endif
#endif /* CONVKERN_UKERNEL_H */
