/* One dot-product micro-kernel, instantiated by ukernel.h once per type and ISA.
 *
 * out[i * DR + j] = sum over p < L of a[i][p] * b[j][p], for i < DR rows of A and j < DC
 * rows of B, both contiguous along p (the weight gradient: rows of grad_y against
 * rows of an im2col tile, reduced over output positions).  Each of the DR * DC sums
 * runs in vector lanes p = 0, VL, 2 VL, ..., then folds the lanes in halves (a fixed
 * tree) and adds the scalar tail last, so the result does not depend on the caller's
 * threads.
 *
 * Parameters (macros): UKD_NAME, UK_T, UK_VL, UKD_R (DR), UKD_C (DC), UK_ATTR.
 */
static UK_ATTR void UKD_NAME(Py_ssize_t L, const UK_T *const *a, const UK_T *const *b,
                             UK_T *out)
{
    typedef UK_T vec_t __attribute__((vector_size(UK_VL * sizeof(UK_T))));
    vec_t acc[UKD_R][UKD_C];
    const vec_t zero = {0};
    Py_ssize_t p, Lv = L - L % UK_VL;
    int i, j, l;
#pragma GCC unroll 8
    for (i = 0; i < UKD_R; i++)
#pragma GCC unroll 8
        for (j = 0; j < UKD_C; j++)
            acc[i][j] = zero;
    for (p = 0; p < Lv; p += UK_VL) {
        vec_t va[UKD_R];
#pragma GCC unroll 8
        for (i = 0; i < UKD_R; i++)
            memcpy(&va[i], a[i] + p, sizeof(vec_t));
#pragma GCC unroll 8
        for (j = 0; j < UKD_C; j++) {
            vec_t vb;
            memcpy(&vb, b[j] + p, sizeof(vec_t));
#pragma GCC unroll 8
            for (i = 0; i < UKD_R; i++)
                acc[i][j] += va[i] * vb;
        }
    }
    for (i = 0; i < UKD_R; i++) {
        for (j = 0; j < UKD_C; j++) {
            UK_T lanes[UK_VL], s;
            int w;
            memcpy(lanes, &acc[i][j], sizeof(vec_t));
#pragma GCC unroll 8
            for (w = UK_VL / 2; w > 0; w /= 2)
#pragma GCC unroll 16
                for (l = 0; l < w; l++)
                    lanes[l] += lanes[l + w];
            s = lanes[0];
            for (p = Lv; p < L; p++)
                s += a[i][p] * b[j][p];
            out[i * UKD_C + j] = s;
        }
    }
}

#undef UKD_NAME
#undef UK_T
#undef UK_VL
#undef UKD_R
#undef UKD_C
#undef UK_ATTR
