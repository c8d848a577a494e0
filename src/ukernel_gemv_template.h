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
 * loaded VL elements at a time and transposed in registers (ukernel_shuffle.h: log2 VL
 * levels of two-input shuffles, each swapping the off-diagonal blocks of one size), so A
 * is read once, in whole vectors; clang, whose shuffles take constant lanes only, and the
 * last kc % VL columns gather the lanes element by element.
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
#include "ukernel_shuffle.h"
    for (; k + UK_VL <= kc; k += UK_VL) {
        vec_t v[UK_VL];
        int j;
#pragma GCC unroll 16
        for (i = 0; i < UK_VL; i++)
            memcpy(&v[i], A[i] + k, sizeof(vec_t));
        UKS_TRANSPOSE(v) /* now v[j] is column k + j */
#pragma GCC unroll 16
        for (j = 0; j < UK_VL; j++) {
            const vec_t xk = x[k + j] - zero; /* a broadcast, as in the GEMM kernels */
            acc += v[j] * xk;
        }
    }
#undef UKS_LANES
#undef UKS_LO
#undef UKS_HI
#undef UKS_LEVEL
#undef UKS_TRANSPOSE
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
