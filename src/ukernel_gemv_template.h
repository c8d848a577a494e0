/* One matrix-vector micro-kernel, instantiated by ukernel.h once per type and ISA.
 *
 * y[i] (+)= sum over k < kc of A[i][k] * x[k] for i < VL rows of A read in place.  Each
 * sum is one chain, k = 0, 1, ... in order, with the GEMM kernels' expression: a vector
 * of accumulators (one lane per row, as the GEMM keeps one lane per output) plus a
 * vector times a broadcast, so the compiler contracts it as it contracts theirs (a fused
 * multiply-add where the ISA has one, in optimised builds); accumulate adds the old y
 * after the chain as they add the old C.  A row's result thus has the bits the GEMM
 * gives the same row and column.  (Written as a scalar loop, the chains were vectorised
 * along k instead: products, then in-order scalar adds, no fused multiply-adds.)
 *
 * For products with one column (a batch of one), where the GEMM would fill a whole
 * block of columns to use one.  The lanes need A's columns: under gcc, VL rows are
 * loaded VL elements at a time and transposed in registers (log2 VL levels of two-input
 * shuffles, each swapping the off-diagonal blocks of one size), so A is read once, in
 * whole vectors; clang, whose shuffles take constant lanes only, and the last kc % VL
 * columns gather the lanes element by element.
 *
 * Parameters (macros): UKG_NAME, UK_T, UK_IT (the integer type of UK_T's size, for
 * shuffle masks), UK_VL, UK_ATTR.
 */
static UK_ATTR void UKG_NAME(Py_ssize_t kc, const UK_T *const *A, const UK_T *x, UK_T *y,
                             int accumulate)
{
    typedef UK_T vec_t __attribute__((vector_size(UK_VL * sizeof(UK_T))));
    const vec_t zero = {0};
    vec_t acc = zero, a = zero;
    Py_ssize_t k = 0;
    int i;
#ifndef __clang__
    typedef UK_IT idx_t __attribute__((vector_size(UK_VL * sizeof(UK_T))));
#if UK_VL == 16
#define UKG_LANES(F, b) {F(0, b), F(1, b), F(2, b), F(3, b), F(4, b), F(5, b), F(6, b), F(7, b), \
                         F(8, b), F(9, b), F(10, b), F(11, b), F(12, b), F(13, b), F(14, b),     \
                         F(15, b)}
#elif UK_VL == 8
#define UKG_LANES(F, b) {F(0, b), F(1, b), F(2, b), F(3, b), F(4, b), F(5, b), F(6, b), F(7, b)}
#elif UK_VL == 4
#define UKG_LANES(F, b) {F(0, b), F(1, b), F(2, b), F(3, b)}
#else
#define UKG_LANES(F, b) {F(0, b), F(1, b)}
#endif
/* level b: rows i and i + b (bit b of i clear) swap the lanes where the row's bit b
 * differs from the lane's (constant masks, so gcc picks the ISA's own shuffles) */
#define UKG_LO(l, b) (((l) & (b)) ? UK_VL + (l) - (b) : (l))
#define UKG_HI(l, b) (((l) & (b)) ? UK_VL + (l) : (l) + (b))
#define UKG_LEVEL(b)                                                               \
    if ((b) < UK_VL) {                                                             \
        const idx_t lo = UKG_LANES(UKG_LO, b), hi = UKG_LANES(UKG_HI, b);          \
        for (i = 0; i < UK_VL; i++) {                                              \
            if (i & (b))                                                           \
                continue;                                                          \
            vec_t first = v[i], second = v[i + (b)];                               \
            v[i] = __builtin_shuffle(first, second, lo);                           \
            v[i + (b)] = __builtin_shuffle(first, second, hi);                     \
        }                                                                          \
    }
    for (; k + UK_VL <= kc; k += UK_VL) {
        vec_t v[UK_VL];
        int j;
#pragma GCC unroll 16
        for (i = 0; i < UK_VL; i++)
            memcpy(&v[i], A[i] + k, sizeof(vec_t));
        /* after every level, v[j] is column k + j */
        UKG_LEVEL(1)
        UKG_LEVEL(2)
        UKG_LEVEL(4)
        UKG_LEVEL(8)
#pragma GCC unroll 16
        for (j = 0; j < UK_VL; j++) {
            const vec_t xk = x[k + j] - zero; /* a broadcast, as in the GEMM kernels */
            acc += v[j] * xk;
        }
    }
#undef UKG_LANES
#undef UKG_LO
#undef UKG_HI
#undef UKG_LEVEL
#endif
    for (; k < kc; k++) {
        const vec_t xk = x[k] - zero;
#pragma GCC unroll 16
        for (i = 0; i < UK_VL; i++)
            a[i] = A[i][k];
        acc += a * xk;
    }
#pragma GCC unroll 16
    for (i = 0; i < UK_VL; i++)
        y[i] = accumulate ? acc[i] + y[i] : acc[i];
}

#undef UKG_NAME
#undef UK_T
#undef UK_IT
#undef UK_VL
#undef UK_ATTR
