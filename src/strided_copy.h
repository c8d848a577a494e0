/* Copies of every second element: dst[q] = src[2 q] for q < n, the rows im2col unrolls
 * for a stride-2 window (a k2 s2 adjoint's or a strided stem's taps read every second
 * input column).  An element loop moves one value per load and store; here, under gcc
 * and clang, two vectors of the input are de-interleaved by one shuffle (shufps on
 * SSE, every x86-64 CPU has it, so no ISA dispatch is needed).  The vector loop stops
 * one vector early so that it never reads past src[2 (n - 1)]: the input's last row
 * ends there.  Only copies: the same values as the element loop.
 */
#ifndef CONVKERN_STRIDED_COPY_H
#define CONVKERN_STRIDED_COPY_H

#include <string.h>
#include <Python.h>

#if defined(__GNUC__) || defined(__clang__)
typedef float ck_v4f __attribute__((vector_size(16)));
typedef int ck_v4i __attribute__((vector_size(16)));
typedef double ck_v2d __attribute__((vector_size(16)));
typedef long long ck_v2i __attribute__((vector_size(16)));
#endif

static inline void ck_copy_stride2_f(float *dst, const float *src, Py_ssize_t n)
{
    Py_ssize_t q = 0;
#if defined(__GNUC__) || defined(__clang__)
    for (; q + 5 <= n; q += 4) {
        ck_v4f a, b, r;
        memcpy(&a, src + 2 * q, sizeof a);
        memcpy(&b, src + 2 * q + 4, sizeof b);
#ifdef __clang__
        r = __builtin_shufflevector(a, b, 0, 2, 4, 6);
#else
        r = __builtin_shuffle(a, b, (ck_v4i){0, 2, 4, 6});
#endif
        memcpy(dst + q, &r, sizeof r);
    }
#endif
    for (; q < n; q++)
        dst[q] = src[2 * q];
}

static inline void ck_copy_stride2_d(double *dst, const double *src, Py_ssize_t n)
{
    Py_ssize_t q = 0;
#if defined(__GNUC__) || defined(__clang__)
    for (; q + 3 <= n; q += 2) {
        ck_v2d a, b, r;
        memcpy(&a, src + 2 * q, sizeof a);
        memcpy(&b, src + 2 * q + 2, sizeof b);
#ifdef __clang__
        r = __builtin_shufflevector(a, b, 0, 2);
#else
        r = __builtin_shuffle(a, b, (ck_v2i){0, 2});
#endif
        memcpy(dst + q, &r, sizeof r);
    }
#endif
    for (; q < n; q++)
        dst[q] = src[2 * q];
}

#endif
