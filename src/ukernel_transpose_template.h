/* One matrix-transpose kernel, instantiated by ukernel.h once per type and ISA.
 *
 * dst[j * ldd + i] = src[i * lds + j] for i < rows, j < cols: the copies that turn
 * grad_y tiles into GEMM operands, gradients from their GEMM layout into the caller's, and
 * inputs into channels-last slabs.  A plain loop moves one element per load and store;
 * here, under gcc, VL x VL blocks are loaded VL rows at a time, transposed in registers
 * (log2 VL levels of two-input shuffles, ukernel_shuffle.h) and stored as VL
 * rows, so both sides move whole vectors.  A last group of fewer than VL rows (a GEMM
 * block of 4 to 8 packed rows is one) is loaded with zero vectors for the missing rows
 * and each column stored as that many lanes.  The ragged columns, and clang (whose
 * shuffles take constant lanes only), use the element loop in 16 x 16 blocks.  Only
 * copies: the result has the same bits either way.  ldd may be negative (the columns
 * land in descending rows of dst).
 *
 * Parameters (macros): UKT_NAME, UK_T, UK_IT (the integer type of UK_T's size, for
 * shuffle masks), UK_VL, UK_ATTR.
 */
static UK_ATTR void UKT_NAME(const UK_T *src, Py_ssize_t lds, Py_ssize_t rows,
                             Py_ssize_t cols, UK_T *dst, Py_ssize_t ldd)
{
    Py_ssize_t i0 = 0, j0, i, j, full_cols = 0;
#ifndef __clang__
    typedef UK_T vec_t __attribute__((vector_size(UK_VL * sizeof(UK_T))));
    typedef UK_IT idx_t __attribute__((vector_size(UK_VL * sizeof(UK_T))));
#include "ukernel_shuffle.h"
    /* One group of n = rows < VL rows whose columns are contiguous runs (ldd == rows: a
     * packed GEMM block of mr rows): a column but the matrix's last is stored as a
     * whole vector, its VL - n extra lanes landing on the next column's first rows,
     * which that column's store overwrites (columns go in ascending order, and the
     * element loop below writes whole columns). */
    const int runs = rows < UK_VL && ldd == rows && 2 * rows >= UK_VL;
    full_cols = cols / UK_VL * UK_VL;
    for (j0 = 0; j0 < full_cols; j0 += UK_VL) {
        for (i0 = 0; i0 < rows; i0 += UK_VL) {
            const Py_ssize_t n = rows - i0 < UK_VL ? rows - i0 : UK_VL;
            vec_t v[UK_VL];
            if (n == UK_VL) {
                /* a whole block: straight-line loads, shuffles and stores (no lane
                 * test, so v stays in registers) */
#pragma GCC unroll 16
                for (i = 0; i < UK_VL; i++)
                    memcpy(&v[i], src + (i0 + i) * lds + j0, sizeof(vec_t));
                UKS_TRANSPOSE(v)
#pragma GCC unroll 16
                for (j = 0; j < UK_VL; j++)
                    memcpy(dst + (j0 + j) * ldd + i0, &v[j], sizeof(vec_t));
                continue;
            }
            /* the missing rows repeat the last one (no lane test: v stays in
             * registers); their lanes are not stored */
#pragma GCC unroll 16
            for (i = 0; i < UK_VL; i++)
                memcpy(&v[i], src + (i0 + (i < n ? i : n - 1)) * lds + j0, sizeof(vec_t));
            UKS_TRANSPOSE(v) /* now v[j] is column j0 + j */
#pragma GCC unroll 16
            for (j = 0; j < UK_VL; j++) {
                UK_T *d = dst + (j0 + j) * ldd + i0;
                if (runs && j0 + j + 1 < cols) {
                    memcpy(d, &v[j], sizeof(vec_t));
                    continue;
                }
                /* n lanes: a constant-size copy per case, so no library call */
                switch (n) {
#define UKT_LANES(m) case m: memcpy(d, &v[j], (m) * sizeof(UK_T)); break;
                UKT_LANES(1)
#if UK_VL > 2
                UKT_LANES(2) UKT_LANES(3)
#endif
#if UK_VL > 4
                UKT_LANES(4) UKT_LANES(5) UKT_LANES(6) UKT_LANES(7)
#endif
#if UK_VL > 8
                UKT_LANES(8) UKT_LANES(9) UKT_LANES(10) UKT_LANES(11) UKT_LANES(12)
                UKT_LANES(13) UKT_LANES(14) UKT_LANES(15)
#endif
#undef UKT_LANES
                default: break;
                }
            }
        }
    }
#undef UKS_LANES
#undef UKS_LO
#undef UKS_HI
#undef UKS_LEVEL
#undef UKS_TRANSPOSE
#endif
    /* the rest, element by element: the columns past full_cols (under clang, every
     * column: full_cols is then 0) */
    for (j0 = full_cols; j0 < cols; j0 += 16) {
        const Py_ssize_t j1 = j0 + 16 < cols ? j0 + 16 : cols;
        for (i0 = 0; i0 < rows; i0 += 16) {
            const Py_ssize_t i1 = i0 + 16 < rows ? i0 + 16 : rows;
            for (j = j0; j < j1; j++)
                for (i = i0; i < i1; i++)
                    dst[j * ldd + i] = src[i * lds + j];
        }
    }
}

#undef UKT_NAME
#undef UK_T
#undef UK_IT
#undef UK_VL
#undef UK_ATTR
