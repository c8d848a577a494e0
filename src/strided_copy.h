/* Copies of every second element: dst[q] = src[2 q] for q < n, the rows im2col unrolls
 * for a stride-2 window (a k2 s2 adjoint's or a strided stem's taps read every second
 * input column) and the stride-2 depthwise phase copy's short rows; and the split of a
 * run into both: even[q] = src[2 q], odd[q] = src[2 q + 1] (two neighbouring taps of a
 * stride-2 window, one pass over their input).  An element loop
 * moves one value per load and store; here, under gcc and clang, two 16-byte vectors of
 * the input are de-interleaved by one shuffle (shufps on SSE, which every x86-64 CPU
 * has, so no ISA dispatch is needed).  The vector loop stops one vector early so that it
 * never reads past src[2 (n - 1)]: the input's last row ends there.  Only copies: the
 * same values as the element loop.  One definition per element type (CK_COPY_STRIDE2).
 */
#ifndef CONVKERN_STRIDED_COPY_H
#define CONVKERN_STRIDED_COPY_H

#include <string.h>
#include <Python.h>

#if defined(__GNUC__) || defined(__clang__)
#ifdef __clang__
#define CK_EVEN_LANES(a, b, VL, IT) __builtin_shufflevector(a, b, 0, 2, 4, 6)
#define CK_EVEN_LANES2(a, b, VL, IT) __builtin_shufflevector(a, b, 0, 2)
#define CK_ODD_LANES(a, b, VL, IT) __builtin_shufflevector(a, b, 1, 3, 5, 7)
#define CK_ODD_LANES2(a, b, VL, IT) __builtin_shufflevector(a, b, 1, 3)
#else
#define CK_EVEN_LANES(a, b, VL, IT) __builtin_shuffle(a, b, (IT){0, 2, 4, 6})
#define CK_EVEN_LANES2(a, b, VL, IT) __builtin_shuffle(a, b, (IT){0, 2})
#define CK_ODD_LANES(a, b, VL, IT) __builtin_shuffle(a, b, (IT){1, 3, 5, 7})
#define CK_ODD_LANES2(a, b, VL, IT) __builtin_shuffle(a, b, (IT){1, 3})
#endif
/* NAME(dst, src, n) for element type T, VL of them to a 16-byte vector, EVEN the macro
 * that picks the even lanes of two vectors */
#define CK_COPY_STRIDE2(NAME, T, IT_ELEM, VL, EVEN)                                    \
    static inline void NAME(T *dst, const T *src, Py_ssize_t n)                        \
    {                                                                                  \
        typedef T vec_t __attribute__((vector_size(16)));                              \
        typedef IT_ELEM idx_t __attribute__((vector_size(16), unused));                \
        Py_ssize_t q = 0;                                                              \
        for (; q + VL + 1 <= n; q += VL) {                                             \
            vec_t a, b, r;                                                             \
            memcpy(&a, src + 2 * q, sizeof a);                                         \
            memcpy(&b, src + 2 * q + VL, sizeof b);                                    \
            r = EVEN(a, b, VL, idx_t);                                                 \
            memcpy(dst + q, &r, sizeof r);                                             \
        }                                                                              \
        for (; q < n; q++)                                                             \
            dst[q] = src[2 * q];                                                       \
    }
/* NAME(even, odd, src, n), reading src[0 .. 2 n - 1]; ODD picks the odd lanes */
#define CK_SPLIT_STRIDE2(NAME, T, IT_ELEM, VL, EVEN, ODD)                              \
    static inline void NAME(T *even, T *odd, const T *src, Py_ssize_t n)               \
    {                                                                                  \
        typedef T vec_t __attribute__((vector_size(16)));                              \
        typedef IT_ELEM idx_t __attribute__((vector_size(16), unused));                \
        Py_ssize_t q = 0;                                                              \
        for (; q + VL <= n; q += VL) {                                                 \
            vec_t a, b, e, o;                                                          \
            memcpy(&a, src + 2 * q, sizeof a);                                         \
            memcpy(&b, src + 2 * q + VL, sizeof b);                                    \
            e = EVEN(a, b, VL, idx_t);                                                 \
            o = ODD(a, b, VL, idx_t);                                                  \
            memcpy(even + q, &e, sizeof e);                                            \
            memcpy(odd + q, &o, sizeof o);                                             \
        }                                                                              \
        for (; q < n; q++) {                                                           \
            even[q] = src[2 * q];                                                      \
            odd[q] = src[2 * q + 1];                                                   \
        }                                                                              \
    }
#else
#define CK_COPY_STRIDE2(NAME, T, IT_ELEM, VL, EVEN)                                    \
    static inline void NAME(T *dst, const T *src, Py_ssize_t n)                        \
    {                                                                                  \
        Py_ssize_t q;                                                                  \
        for (q = 0; q < n; q++)                                                        \
            dst[q] = src[2 * q];                                                       \
    }
#define CK_SPLIT_STRIDE2(NAME, T, IT_ELEM, VL, EVEN, ODD)                              \
    static inline void NAME(T *even, T *odd, const T *src, Py_ssize_t n)               \
    {                                                                                  \
        Py_ssize_t q;                                                                  \
        for (q = 0; q < n; q++) {                                                      \
            even[q] = src[2 * q];                                                      \
            odd[q] = src[2 * q + 1];                                                   \
        }                                                                              \
    }
#endif

CK_COPY_STRIDE2(ck_copy_stride2_f, float, int, 4, CK_EVEN_LANES)
CK_COPY_STRIDE2(ck_copy_stride2_d, double, long long, 2, CK_EVEN_LANES2)
CK_SPLIT_STRIDE2(ck_split_stride2_f, float, int, 4, CK_EVEN_LANES, CK_ODD_LANES)
CK_SPLIT_STRIDE2(ck_split_stride2_d, double, long long, 2, CK_EVEN_LANES2, CK_ODD_LANES2)

/* NAME(even, odd, src, rows, w): the rows of w elements of src split by parity,
 * even[R w + j] = src[2 R w + j] and odd[R w + j] = src[(2 R + 1) w + j] for R < rows,
 * j < w: the two tap rows of a 2x2 max-pool's windows over planes whose rows it takes
 * whole (_pool.pyx, pool_pairs).  Rows move 16 bytes at a time; float rows of two (a
 * 2x2 plane) as two rows per pair of 16-byte vectors, one shuffle each.  Only copies. */
#if defined(__GNUC__) || defined(__clang__)
#ifdef __clang__
#define CK_LOW_PAIRS(a, b) __builtin_shufflevector(a, b, 0, 1, 4, 5)
#define CK_HIGH_PAIRS(a, b) __builtin_shufflevector(a, b, 2, 3, 6, 7)
#else
#define CK_LOW_PAIRS(a, b) __builtin_shuffle(a, b, (ck_i4){0, 1, 4, 5})
#define CK_HIGH_PAIRS(a, b) __builtin_shuffle(a, b, (ck_i4){2, 3, 6, 7})
#endif
typedef int ck_i4 __attribute__((vector_size(16), unused));
typedef float ck_f4 __attribute__((vector_size(16)));
#define CK_PAIRS_OF_ROWS 1
#else
#define CK_PAIRS_OF_ROWS 0
#endif
#define CK_SPLIT_ROWS(NAME, T, PAIRS)                                                  \
    static inline void NAME(T *even, T *odd, const T *src, Py_ssize_t rows,            \
                            Py_ssize_t w)                                              \
    {                                                                                  \
        Py_ssize_t R = 0, j;                                                           \
        const Py_ssize_t v = 16 / sizeof(T);                                           \
        PAIRS                                                                          \
        for (; R < rows; R++) {                                                        \
            const T *a = src + 2 * R * w, *b = a + w;                                  \
            T *e = even + R * w, *o = odd + R * w;                                     \
            for (j = 0; j + v <= w; j += v) {                                          \
                memcpy(e + j, a + j, 16);                                              \
                memcpy(o + j, b + j, 16);                                              \
            }                                                                          \
            for (; j < w; j++) {                                                       \
                e[j] = a[j];                                                           \
                o[j] = b[j];                                                           \
            }                                                                          \
        }                                                                              \
    }
#if CK_PAIRS_OF_ROWS
#define CK_FLOAT_PAIRS                                                                 \
    if (w == 2)                                                                        \
        for (; R + 2 <= rows; R += 2) {                                                \
            ck_f4 a, b, e, o;                                                          \
            memcpy(&a, src + 4 * R, sizeof a);                                         \
            memcpy(&b, src + 4 * R + 4, sizeof b);                                     \
            e = CK_LOW_PAIRS(a, b);                                                    \
            o = CK_HIGH_PAIRS(a, b);                                                   \
            memcpy(even + 2 * R, &e, sizeof e);                                        \
            memcpy(odd + 2 * R, &o, sizeof o);                                         \
        }
#else
#define CK_FLOAT_PAIRS
#endif
CK_SPLIT_ROWS(ck_split_rows_f, float, CK_FLOAT_PAIRS)
CK_SPLIT_ROWS(ck_split_rows_d, double, )

#endif
