/* One matrix-transpose kernel, instantiated by ukernel.h once per type and ISA.
 *
 * dst[j * ldd + i] = src[i * lds + j] for i < rows, j < cols: the copies that turn
 * grad_y tiles into GEMM operands, gradients from their GEMM layout into the caller's, and
 * inputs into channels-last slabs.  A plain loop moves one element per load and store;
 * here, under gcc, VL x VL blocks are loaded VL rows at a time, transposed in registers
 * (log2 VL levels of two-input shuffles, as in ukernel_gemv_template.h) and stored as VL
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
#if UK_VL == 16
#define UKT_LANES(F, b) {F(0, b), F(1, b), F(2, b), F(3, b), F(4, b), F(5, b), F(6, b), F(7, b), \
                         F(8, b), F(9, b), F(10, b), F(11, b), F(12, b), F(13, b), F(14, b),     \
                         F(15, b)}
#elif UK_VL == 8
#define UKT_LANES(F, b) {F(0, b), F(1, b), F(2, b), F(3, b), F(4, b), F(5, b), F(6, b), F(7, b)}
#elif UK_VL == 4
#define UKT_LANES(F, b) {F(0, b), F(1, b), F(2, b), F(3, b)}
#else
#define UKT_LANES(F, b) {F(0, b), F(1, b)}
#endif
#define UKT_LO(l, b) (((l) & (b)) ? UK_VL + (l) - (b) : (l))
#define UKT_HI(l, b) (((l) & (b)) ? UK_VL + (l) : (l) + (b))
#define UKT_LEVEL(b)                                                               \
    if ((b) < UK_VL) {                                                             \
        const idx_t lo = UKT_LANES(UKT_LO, b), hi = UKT_LANES(UKT_HI, b);          \
        for (i = 0; i < UK_VL; i++) {                                              \
            if (i & (b))                                                           \
                continue;                                                          \
            vec_t first = v[i], second = v[i + (b)];                               \
            v[i] = __builtin_shuffle(first, second, lo);                           \
            v[i + (b)] = __builtin_shuffle(first, second, hi);                     \
        }                                                                          \
    }
    full_rows = rows / UK_VL * UK_VL;
    full_cols = cols / UK_VL * UK_VL;
    for (j0 = 0; j0 < full_cols; j0 += UK_VL) {
        for (i0 = 0; i0 < full_rows; i0 += UK_VL) {
            vec_t v[UK_VL];
#pragma GCC unroll 16
            for (i = 0; i < UK_VL; i++)
                memcpy(&v[i], src + (i0 + i) * lds + j0, sizeof(vec_t));
            /* after every level, v[j] is column j0 + j */
            UKT_LEVEL(1)
            UKT_LEVEL(2)
            UKT_LEVEL(4)
            UKT_LEVEL(8)
#pragma GCC unroll 16
            for (j = 0; j < UK_VL; j++)
                memcpy(dst + (j0 + j) * ldd + i0, &v[j], sizeof(vec_t));
        }
    }
#undef UKT_LANES
#undef UKT_LO
#undef UKT_HI
#undef UKT_LEVEL
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
