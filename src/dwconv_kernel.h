/* The plane kernels of the depthwise convolution path (conv_depthwise.pxi), selected
 * once at run time.
 *
 * Seven kernels per element type and instruction set (dwconv_kernel_template.h): fwd
 * (a plane of output rows = bias + taps x input rows, ReLU fused), wgrad (per-tap lane
 * sums of grad_y x input rows over a plane, and grad_y's own sum for the bias), fwcl
 * and wgcl (fwd and wgrad with the lanes over channels, for channels-last planes), fold
 * (those lane sums added up in a fixed order), copy (rows into a padded scratch, split
 * into stride phases) and zip (two rows interleaved: grad_y upsampled by 2).  The
 * AVX-512 and AVX2 (+FMA) variants are compiled with per-function target attributes, so
 * the binary needs only the baseline; the level of cpu_isa.h (the CPU's widest, or the
 * lower one CONVKERN_ISA names) tells which one runs, as for the GEMM micro-kernels and
 * the pool rows.  Without GNU vector extensions (MSVC) every variant is the template's
 * scalar loop (vl = 1).
 */
#ifndef CONVKERN_DWCONV_KERNEL_H
#define CONVKERN_DWCONV_KERNEL_H

#include <stdint.h>
#include <string.h>
#include <Python.h>

#include "cpu_isa.h"
#include "strided_copy.h"

#define CK_DW_TYPES(S, T)                                                               \
    typedef void (*ck_dw_fwd_##S)(T *, Py_ssize_t, Py_ssize_t, Py_ssize_t, const T *,       \
                                  Py_ssize_t, const Py_ssize_t *, Py_ssize_t, const T *,    \
                                  Py_ssize_t, const Py_ssize_t *, const T *, Py_ssize_t,    \
                                  int);                                                     \
    typedef void (*ck_dw_wgrad_##S)(const T *, Py_ssize_t, Py_ssize_t, Py_ssize_t,          \
                                    const T *, Py_ssize_t, const Py_ssize_t *, Py_ssize_t,  \
                                    Py_ssize_t, const Py_ssize_t *, T *, double *);         \
    typedef void (*ck_dw_wgcl_##S)(const T *, const T *, Py_ssize_t, Py_ssize_t, Py_ssize_t, \
                                   Py_ssize_t, Py_ssize_t, Py_ssize_t, const Py_ssize_t *,  \
                                   Py_ssize_t, T *, double *);                              \
    typedef void (*ck_dw_fwcl_##S)(T *, const T *, Py_ssize_t, Py_ssize_t, Py_ssize_t,       \
                                   Py_ssize_t, Py_ssize_t, Py_ssize_t, const Py_ssize_t *,  \
                                   Py_ssize_t, const T *, const T *, Py_ssize_t, int);      \
    typedef void (*ck_dw_copy_##S)(T *, Py_ssize_t, const T *, Py_ssize_t, Py_ssize_t,      \
                                   Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t);         \
    typedef void (*ck_dw_fold_##S)(const T *, Py_ssize_t, T *, const double *, double *);   \
    typedef void (*ck_dw_zip_##S)(T *, const T *, const T *, Py_ssize_t);                   \
    typedef struct {                                                                        \
        ck_dw_fwd_##S fwd;                                                                  \
        ck_dw_wgrad_##S wgrad;                                                              \
        ck_dw_wgcl_##S wgcl;                                                                \
        ck_dw_fwcl_##S fwcl;                                                                \
        ck_dw_copy_##S copy;                                                                \
        ck_dw_fold_##S fold;                                                                \
        ck_dw_zip_##S zip;                                                                  \
        Py_ssize_t vl; /* elements per vector: the weight gradient's lanes per tap */       \
        const char *name;                                                                   \
    } ck_dw_kernels_##S;
CK_DW_TYPES(s, float)
CK_DW_TYPES(d, double)
#undef CK_DW_TYPES

/* The most lanes any variant uses per tap (AVX-512 float). */
#define CK_DW_LANES_MAX 16

#if (defined(__GNUC__) && __GNUC__ >= 9) || defined(__clang__)
#define CK_DW_VECTORS 1
#ifdef CK_X86_DISPATCH
#define CK_DW_X86 1
#endif
#ifdef __clang__
#define CK_DW_SHUFFLE(a, b, ivec_t, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define CK_DW_SHUFFLE(a, b, ivec_t, ...) __builtin_shuffle(a, b, (ivec_t){__VA_ARGS__})
#endif
/* Lane masks: the low and high halves of two vectors interleaved. */
#define CK_DW_ZIPLO2 0, 2
#define CK_DW_ZIPHI2 1, 3
#define CK_DW_ZIPLO4 0, 4, 1, 5
#define CK_DW_ZIPHI4 2, 6, 3, 7
#define CK_DW_ZIPLO8 0, 8, 1, 9, 2, 10, 3, 11
#define CK_DW_ZIPHI8 4, 12, 5, 13, 6, 14, 7, 15
#define CK_DW_ZIPLO16 0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23
#define CK_DW_ZIPHI16 8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31
#endif

#ifdef CK_DW_X86
#define CK_DW_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")))
#define CK_DW_AVX2 __attribute__((target("avx2,fma")))

#define DW_NAME ck_dw_s_avx512
#define DW_T float
#define DW_I int32_t
#define DW_VL 16
#define DW_ZIPLO CK_DW_ZIPLO16
#define DW_ZIPHI CK_DW_ZIPHI16
#define DW_ATTR CK_DW_AVX512
#include "dwconv_kernel_template.h"
#define DW_NAME ck_dw_d_avx512
#define DW_T double
#define DW_I int64_t
#define DW_VL 8
#define DW_ZIPLO CK_DW_ZIPLO8
#define DW_ZIPHI CK_DW_ZIPHI8
#define DW_ATTR CK_DW_AVX512
#include "dwconv_kernel_template.h"
#define DW_NAME ck_dw_s_avx2
#define DW_T float
#define DW_I int32_t
#define DW_VL 8
#define DW_ZIPLO CK_DW_ZIPLO8
#define DW_ZIPHI CK_DW_ZIPHI8
#define DW_ATTR CK_DW_AVX2
#include "dwconv_kernel_template.h"
#define DW_NAME ck_dw_d_avx2
#define DW_T double
#define DW_I int64_t
#define DW_VL 4
#define DW_ZIPLO CK_DW_ZIPLO4
#define DW_ZIPHI CK_DW_ZIPHI4
#define DW_ATTR CK_DW_AVX2
#include "dwconv_kernel_template.h"
#endif

/* The baseline: 16-byte vectors with GNU vector extensions, else scalar loops. */
#define DW_NAME ck_dw_s_baseline
#define DW_T float
#define DW_I int32_t
#ifdef CK_DW_VECTORS
#define DW_VL 4
#define DW_ZIPLO CK_DW_ZIPLO4
#define DW_ZIPHI CK_DW_ZIPHI4
#else
#define DW_VL 1
#endif
#define DW_ATTR
#include "dwconv_kernel_template.h"
#define DW_NAME ck_dw_d_baseline
#define DW_T double
#define DW_I int64_t
#ifdef CK_DW_VECTORS
#define DW_VL 2
#define DW_ZIPLO CK_DW_ZIPLO2
#define DW_ZIPHI CK_DW_ZIPHI2
#else
#define DW_VL 1
#endif
#define DW_ATTR
#include "dwconv_kernel_template.h"

#define CK_DW_SET(k, S, isa)                                                          \
    do {                                                                              \
        (k)->fwd = ck_dw_##S##_##isa##_fwd;                                           \
        (k)->wgrad = ck_dw_##S##_##isa##_wgrad;                                       \
        (k)->wgcl = ck_dw_##S##_##isa##_wgcl;                                         \
        (k)->fwcl = ck_dw_##S##_##isa##_fwcl;                                         \
        (k)->copy = ck_dw_##S##_##isa##_copy;                                         \
        (k)->fold = ck_dw_##S##_##isa##_fold;                                         \
        (k)->zip = ck_dw_##S##_##isa##_zip;                                           \
        (k)->vl = ck_dw_##S##_##isa##_vl;                                             \
        (k)->name = #isa;                                                             \
    } while (0)

/* Fill both kernel sets with the variant of ck_isa_level(). */
static void ck_dw_select(ck_dw_kernels_s *s, ck_dw_kernels_d *d)
{
    switch (ck_isa_level()) {
#ifdef CK_DW_X86
    case CK_ISA_AVX512:
        CK_DW_SET(s, s, avx512);
        CK_DW_SET(d, d, avx512);
        return;
    case CK_ISA_AVX2:
        CK_DW_SET(s, s, avx2);
        CK_DW_SET(d, d, avx2);
        return;
#endif
    default:
        CK_DW_SET(s, s, baseline);
        CK_DW_SET(d, d, baseline);
    }
}

#endif /* CONVKERN_DWCONV_KERNEL_H */
