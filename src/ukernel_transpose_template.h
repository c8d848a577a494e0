/* One matrix-transpose kernel, instantiated by ukernel.h once per type and ISA.
 *
 * dst[j * ldd + i] = src[i * lds + j] for i < rows, j < cols: the copies that turn
 * grad_y tiles into GEMM operands, gradients from their GEMM layout into the caller's, and
 * inputs into channels-last slabs.  A plain loop moves one element per load and store;
 * here, under gcc, VL x VL blocks are loaded VL rows at a time, transposed in registers
 * (log2 VL levels of two-input shuffles, ukernel_shuffle.h) and stored as VL
 * rows, so both sides move whole vectors.  The ragged edges, and clang (whose shuffles
 * take constant lanes only), use the element loop in 16 x 16 blocks.  Only copies: the
 * result has the same bits either way.
 *
 * Parameters (macros): UKT_NAME, UK_T, UK_IT (the integer type of UK_T's size, for
 * shuffle masks), UK_VL, UK_ATTR.
 */
static UK_ATTR void UKT_NAME(const UK_T *src, Py_ssize_t lds, Py_ssize_t rows,
                             Py_ssize_t cols, UK_T *dst, Py_ssize_t ldd)
{
    Py_ssize_t i0 = 0, j0, i, j, full_rows = 0, full_cols = 0;
#ifndef __clang__
    typedef UK_T vec_t __attribute__((vector_size(UK_VL * sizeof(UK_T))));
    typedef UK_IT idx_t __attribute__((vector_size(UK_VL * sizeof(UK_T))));
#include "ukernel_shuffle.h"
    full_rows = rows / UK_VL * UK_VL;
    full_cols = cols / UK_VL * UK_VL;
    for (j0 = 0; j0 < full_cols; j0 += UK_VL) {
        for (i0 = 0; i0 < full_rows; i0 += UK_VL) {
            vec_t v[UK_VL];
#pragma GCC unroll 16
            for (i = 0; i < UK_VL; i++)
                memcpy(&v[i], src + (i0 + i) * lds + j0, sizeof(vec_t));
            UKS_TRANSPOSE(v) /* now v[j] is column j0 + j */
#pragma GCC unroll 16
            for (j = 0; j < UK_VL; j++)
                memcpy(dst + (j0 + j) * ldd + i0, &v[j], sizeof(vec_t));
        }
    }
#undef UKS_LANES
#undef UKS_LO
#undef UKS_HI
#undef UKS_LEVEL
#undef UKS_TRANSPOSE
#endif
    /* the rest, element by element: the rows past full_rows of the vector columns, then
     * every row of the columns past full_cols */
    for (j0 = 0; j0 < cols; j0 += 16) {
        const Py_ssize_t j1 = j0 + 16 < cols ? j0 + 16 : cols;
        for (i0 = 0; i0 < rows; i0 += 16) {
            const Py_ssize_t i1 = i0 + 16 < rows ? i0 + 16 : rows;
            for (j = j0; j < j1; j++)
                for (i = (j < full_cols && i0 < full_rows) ? full_rows : i0; i < i1; i++)
                    dst[j * ldd + i] = src[i * lds + j];
        }
    }
}

#undef UKT_NAME
#undef UK_T
#undef UK_IT
#undef UK_VL
#undef UK_ATTR
