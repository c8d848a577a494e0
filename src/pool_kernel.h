/* Vectorised max-pool rows (stride 2 along the row), selected once at run time.
 *
 * ck_pool_select_s / _d return the kernel of the level cpu_isa.h picks (see
 * pool_kernel_template.h) and its windows per vector, or NULL (and 0) where GNU
 * vector extensions are missing; the caller then uses its scalar path for every
 * window.
 */
#ifndef CONVKERN_POOL_KERNEL_H
#define CONVKERN_POOL_KERNEL_H

#include <stdint.h>
#include <string.h>
#include <Python.h>

#include "cpu_isa.h"

typedef Py_ssize_t (*ck_pool_s)(const float *, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                const Py_ssize_t *, Py_ssize_t, const int32_t *,
                                const Py_ssize_t *, float *, int64_t *);
typedef Py_ssize_t (*ck_pool_d)(const double *, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                const Py_ssize_t *, Py_ssize_t, const int32_t *,
                                const Py_ssize_t *, double *, int64_t *);

#if (defined(__GNUC__) && __GNUC__ >= 9) || defined(__clang__)

/* The even lanes of two vectors, as a constant index list (both compilers' shuffles). */
#define CK_EVEN2 0, 2
#define CK_EVEN4 0, 2, 4, 6
#define CK_EVEN8 0, 2, 4, 6, 8, 10, 12, 14
#define CK_EVEN16 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30

#ifdef CK_X86_DISPATCH
#define PK_NAME ck_pool_s_avx512
#define PK_T float
#define PK_I int32_t
#define PK_VL 16
#define PK_EVEN CK_EVEN16
#define PK_ATTR __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2")))
#include "pool_kernel_template.h"
#define PK_NAME ck_pool_d_avx512
#define PK_T double
#define PK_I int64_t
#define PK_VL 8
#define PK_EVEN CK_EVEN8
#define PK_ATTR __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2")))
#include "pool_kernel_template.h"
#define PK_NAME ck_pool_s_avx2
#define PK_T float
#define PK_I int32_t
#define PK_VL 8
#define PK_EVEN CK_EVEN8
#define PK_ATTR __attribute__((target("avx2")))
#include "pool_kernel_template.h"
#define PK_NAME ck_pool_d_avx2
#define PK_T double
#define PK_I int64_t
#define PK_VL 4
#define PK_EVEN CK_EVEN4
#define PK_ATTR __attribute__((target("avx2")))
#include "pool_kernel_template.h"
#endif

#define PK_NAME ck_pool_s_base
#define PK_T float
#define PK_I int32_t
#define PK_VL 4
#define PK_EVEN CK_EVEN4
#define PK_ATTR
#include "pool_kernel_template.h"
#define PK_NAME ck_pool_d_base
#define PK_T double
#define PK_I int64_t
#define PK_VL 2
#define PK_EVEN CK_EVEN2
#define PK_ATTR
#include "pool_kernel_template.h"

/* The kernel of the level cpu_isa.h picks; *vl gets its windows per vector. */
static ck_pool_s ck_pool_select_s(int *vl)
{
    switch (ck_isa_level()) {
#ifdef CK_X86_DISPATCH
    case CK_ISA_AVX512:
        *vl = ck_pool_s_avx512_vl;
        return ck_pool_s_avx512;
    case CK_ISA_AVX2:
        *vl = ck_pool_s_avx2_vl;
        return ck_pool_s_avx2;
#endif
    default:
        *vl = ck_pool_s_base_vl;
        return ck_pool_s_base;
    }
}

static ck_pool_d ck_pool_select_d(int *vl)
{
    switch (ck_isa_level()) {
#ifdef CK_X86_DISPATCH
    case CK_ISA_AVX512:
        *vl = ck_pool_d_avx512_vl;
        return ck_pool_d_avx512;
    case CK_ISA_AVX2:
        *vl = ck_pool_d_avx2_vl;
        return ck_pool_d_avx2;
#endif
    default:
        *vl = ck_pool_d_base_vl;
        return ck_pool_d_base;
    }
}

#else

static ck_pool_s ck_pool_select_s(int *vl) { *vl = 0; return NULL; }
static ck_pool_d ck_pool_select_d(int *vl) { *vl = 0; return NULL; }

#endif
#endif /* CONVKERN_POOL_KERNEL_H */
