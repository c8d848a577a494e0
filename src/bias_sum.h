/* The bias gradient's sum of one filter: the values gy[n * ld + p] (n < N, p < P) added
 * in double into 16 lanes (position p to lane p % 16, image after image), the lanes then
 * folded in halves (lane j += lane j + w for w = 8, 4, 2, 1).  The order of the additions
 * is fixed whatever the shape.  Under gcc and clang the lanes are eight 2-double vectors
 * held in registers: the same additions, lane by lane, without a stack array that is
 * zeroed, stored by element and reloaded by vector per call (store-forwarding stalls that,
 * for few positions per filter, a 4x4 output, cost more than the sums).  A row's last
 * partial block adds zeros to its unused lanes: a lane never holds -0 (it starts at +0,
 * and x + y is -0 only when both are), so adding +0 leaves it as it is.
 * One definition per element type (CK_BIAS_SUM): NAME rounds the sum to the element
 * type, NAME_double returns it in double (for the weight gradients' fused sums, which
 * add one such sum per tile of positions).
 */
#ifndef CONVKERN_BIAS_SUM_H
#define CONVKERN_BIAS_SUM_H

#include <string.h>
#include <Python.h>

#include "cpu_isa.h"

/* The same sum with the lanes as scalars: every value to lane p % 16 in turn, then the
 * fold.  The whole sum when there are no vectors to use (compilers without vector
 * extensions) or no whole block of 16 positions (a Dense layer's one position per
 * image: the vector path's zero-padded block per image would cost more than the sum). */
#define CK_CAT_SMALL(NAME) NAME##_lanes
#define CK_BIAS_SUM_LANES(NAME, T)                                                     \
    static double NAME##_lanes(const T *gy, Py_ssize_t N, Py_ssize_t ld, Py_ssize_t P) \
    {                                                                                  \
        double acc[16] = {0};                                                          \
        Py_ssize_t n, p;                                                               \
        int j, w;                                                                      \
        for (n = 0; n < N; n++)                                                        \
            for (p = 0; p < P; p++)                                                    \
                acc[p % 16] += gy[n * ld + p];                                         \
        for (w = 8; w > 0; w /= 2)                                                     \
            for (j = 0; j < w; j++)                                                    \
                acc[j] += acc[j + w];                                                  \
        return acc[0];                                                                 \
    }
CK_BIAS_SUM_LANES(ck_bias_sum_f, float)
CK_BIAS_SUM_LANES(ck_bias_sum_d, double)

#if defined(__GNUC__) || defined(__clang__)
typedef double ck_d2 __attribute__((vector_size(16)));

#ifdef CK_X86_DISPATCH
#include <immintrin.h>

/* The same sums on AVX-512 (picked at run time, as the micro-kernels are): lanes 0-7 in
 * one 8-double vector and lanes 8-15 in another, each block of 16 converted by vector
 * instead of element by element (a row's last, partial block by masked loads); the fold then adds lane j + 8, j + 4, j + 2 and j + 1
 * to lane j exactly as above.  The same additions in the same order: the same bits. */
typedef double ck_d8 __attribute__((vector_size(64)));
typedef float ck_f8 __attribute__((vector_size(32)));
#define CK_BIAS_AVX512 __attribute__((target("avx512f")))

static CK_BIAS_AVX512 double ck_bias_fold8(ck_d8 lo, ck_d8 hi)
{
    double s[8];
    int j;
    lo += hi;
    memcpy(s, &lo, sizeof s);
    for (j = 0; j < 4; j++)
        s[j] += s[j + 4];
    for (j = 0; j < 2; j++)
        s[j] += s[j + 2];
    return s[0] + s[1];
}

#define CK_BIAS_SUM_AVX512(NAME, T, LOAD8, TAIL)                                       \
    static CK_BIAS_AVX512 double NAME##_avx512(const T *gy, Py_ssize_t N, Py_ssize_t ld,\
                                               Py_ssize_t P)                           \
    {                                                                                  \
        ck_d8 lo = {0}, hi = {0};                                                      \
        Py_ssize_t n, p, pv = P - P % 16;                                              \
        for (n = 0; n < N; n++) {                                                      \
            const T *row = gy + n * ld;                                                \
            for (p = 0; p < pv; p += 16) {                                             \
                lo += LOAD8(row + p);                                                  \
                hi += LOAD8(row + p + 8);                                              \
            }                                                                          \
            if (pv < P)                                                                \
                TAIL(row + pv, P - pv, &lo, &hi);                                      \
        }                                                                              \
        return ck_bias_fold8(lo, hi);                                                  \
    }

static CK_BIAS_AVX512 inline ck_d8 ck_bias_load8_f(const float *src)
{
    ck_f8 v;
    memcpy(&v, src, sizeof v);
    return __builtin_convertvector(v, ck_d8);
}

static CK_BIAS_AVX512 inline ck_d8 ck_bias_load8_d(const double *src)
{
    ck_d8 v;
    memcpy(&v, src, sizeof v);
    return v;
}

/* A row's last m < 16 values (lanes m .. 15 zero) by masked loads, which read nothing
 * past the row: no zeroed copy stored by element and reloaded by vector (a
 * store-forwarding stall per row, most of the time of a 7x7 output's sum). */
static CK_BIAS_AVX512 inline void ck_bias_tail_f(const float *src, Py_ssize_t m, ck_d8 *lo,
                                                 ck_d8 *hi)
{
    __m512 v = _mm512_maskz_loadu_ps((__mmask16)((1u << m) - 1), src);
    *lo += (ck_d8)_mm512_cvtps_pd(_mm512_castps512_ps256(v));
    *hi += (ck_d8)_mm512_cvtps_pd(
        _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}

static CK_BIAS_AVX512 inline void ck_bias_tail_d(const double *src, Py_ssize_t m, ck_d8 *lo,
                                                 ck_d8 *hi)
{
    unsigned keep = (1u << m) - 1;
    *lo += (ck_d8)_mm512_maskz_loadu_pd((__mmask8)(keep & 0xff), src);
    *hi += (ck_d8)_mm512_maskz_loadu_pd((__mmask8)(keep >> 8), src + 8);
}

CK_BIAS_SUM_AVX512(ck_bias_sum_f, float, ck_bias_load8_f, ck_bias_tail_f)
CK_BIAS_SUM_AVX512(ck_bias_sum_d, double, ck_bias_load8_d, ck_bias_tail_d)

/* 1 when the sums run on AVX-512 (ck_isa_level, read once) */
static int ck_bias_wide(void)
{
    static int level = -1;
    if (level < 0)
        level = ck_isa_level() == CK_ISA_AVX512;
    return level;
}
#define CK_BIAS_WIDE(NAME, gy, N, ld, P)                                               \
    if (ck_bias_wide())                                                                \
        return NAME##_avx512(gy, N, ld, P);
#else
#define CK_BIAS_WIDE(NAME, gy, N, ld, P)
#endif

/* lanes 2 v, 2 v + 1 of the 16 += the values src[2 v], src[2 v + 1] in double */
#define CK_BIAS_ADD_BLOCK(T, acc, src)                                                 \
    do {                                                                               \
        int v_;                                                                        \
        for (v_ = 0; v_ < 8; v_++) {                                                   \
            ck_d2 x_ = {(double)(src)[2 * v_], (double)(src)[2 * v_ + 1]};             \
            (acc)[v_] += x_;                                                           \
        }                                                                              \
    } while (0)

#define CK_BIAS_SUM(NAME, T)                                                           \
    static inline double NAME##_double(const T *gy, Py_ssize_t N, Py_ssize_t ld,       \
                                       Py_ssize_t P)                                   \
    {                                                                                  \
        ck_d2 acc[8];                                                                  \
        T tail[16];                                                                    \
        Py_ssize_t n, p, pv = P - P % 16;                                              \
        int v;                                                                         \
        if (P < 16)                                                                    \
            return CK_CAT_SMALL(NAME)(gy, N, ld, P);                                   \
        CK_BIAS_WIDE(NAME, gy, N, ld, P)                                               \
        for (v = 0; v < 8; v++)                                                        \
            acc[v] = (ck_d2){0, 0};                                                    \
        for (n = 0; n < N; n++) {                                                      \
            const T *row = gy + n * ld;                                                \
            for (p = 0; p < pv; p += 16)                                               \
                CK_BIAS_ADD_BLOCK(T, acc, row + p);                                    \
            if (pv < P) {                                                              \
                memset(tail, 0, sizeof tail);                                          \
                memcpy(tail, row + pv, (size_t)(P - pv) * sizeof(T));                  \
                CK_BIAS_ADD_BLOCK(T, acc, tail);                                       \
            }                                                                          \
        }                                                                              \
        for (v = 0; v < 4; v++)                                                        \
            acc[v] += acc[v + 4];                                                      \
        for (v = 0; v < 2; v++)                                                        \
            acc[v] += acc[v + 2];                                                      \
        acc[0] += acc[1];                                                              \
        return acc[0][0] + acc[0][1];                                                  \
    }                                                                                  \
    static inline T NAME(const T *gy, Py_ssize_t N, Py_ssize_t ld, Py_ssize_t P)       \
    {                                                                                  \
        return (T) NAME##_double(gy, N, ld, P);                                        \
    }
#else
#define CK_BIAS_SUM(NAME, T)                                                           \
    static double NAME##_double(const T *gy, Py_ssize_t N, Py_ssize_t ld, Py_ssize_t P)\
    {                                                                                  \
        return CK_CAT_SMALL(NAME)(gy, N, ld, P);                                       \
    }                                                                                  \
    static T NAME(const T *gy, Py_ssize_t N, Py_ssize_t ld, Py_ssize_t P)              \
    {                                                                                  \
        return (T) NAME##_double(gy, N, ld, P);                                        \
    }
#endif

CK_BIAS_SUM(ck_bias_sum_f, float)
CK_BIAS_SUM(ck_bias_sum_d, double)

#endif
