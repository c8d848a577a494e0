/* One dot-product micro-kernel, instantiated by ukernel.h once per type and ISA.
 *
 * out[i * DC + j] = sum over p < L of a[i][p] * b[j][p], for i < DR rows of A and j < DC
 * rows of B, both contiguous along p (the weight gradient: rows of grad_y against
 * rows of an im2col tile, reduced over output positions).  Each of the DR * DC sums
 * runs in vector lanes p = 0, VL, 2 VL, ..., then folds the lanes in halves (a fixed
 * tree) and adds the scalar tail last, so the result does not depend on the caller's
 * threads.  gcc folds with variable shuffles (__builtin_shuffle); clang, whose
 * shuffles take constant lanes only, folds each sum's lanes in memory by the same tree
 * (lane l += lane l + w / 2 for width w = VL, VL / 2, ... 2): the same additions in the
 * same order, so the same bits.
 *
 * Parameters (macros): UKD_NAME, UK_T, UK_IT (the integer type of UK_T's size, for
 * shuffle masks), UK_VL, UKD_R (DR), UKD_C (DC), UK_ATTR.
 */
static UK_ATTR void UKD_NAME(Py_ssize_t L, const UK_T *const *a, const UK_T *const *b,
                             UK_T *out)
{
    typedef UK_T vec_t __attribute__((vector_size(UK_VL * sizeof(UK_T))));
    vec_t acc[UKD_R][UKD_C];
    const vec_t zero = {0};
    Py_ssize_t p, Lv = L - L % UK_VL;
    int i, j;
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
#ifdef __clang__
    for (i = 0; i < UKD_R; i++) {
        for (j = 0; j < UKD_C; j++) {
            UK_T lanes[UK_VL];
            int w, l;
            memcpy(lanes, &acc[i][j], sizeof(lanes));
            for (w = UK_VL; w > 1; w /= 2)
                for (l = 0; l < w / 2; l++)
                    lanes[l] = lanes[l] + lanes[l + w / 2];
            for (p = Lv; p < L; p++)
                lanes[0] += a[i][p] * b[j][p];
            out[i * UKD_C + j] = lanes[0];
        }
    }
#else
    {
        /* Fold the DR * DC accumulators (padded with zero vectors to a multiple of VL)
         * into one lane each.  Each level pairs vectors u[2m], u[2m+1] that hold n sums
         * of w lanes each and adds the first half of every sum's lanes to its second
         * half: one vector of 2n sums of w / 2 lanes (u[2m]'s sums first).  After
         * log2(VL) levels, vector m holds sums m * VL .. m * VL + VL - 1 in order. */
        enum { NACC = UKD_R * UKD_C, NVEC = (NACC + UK_VL - 1) / UK_VL * UK_VL };
        typedef UK_IT idx_t __attribute__((vector_size(UK_VL * sizeof(UK_T))));
        vec_t u[NVEC];
        int n, w, m, l, h, t, count = NVEC;
#pragma GCC unroll 32
        for (t = 0; t < NVEC; t++)
            u[t] = t < NACC ? acc[t / UKD_C][t % UKD_C] : zero;
#pragma GCC unroll 8
        for (w = UK_VL; w > 1; w /= 2) {
            idx_t lo, hi;
            n = UK_VL / w;
            h = w / 2;
            /* lane l of the result: sum l / h (u[2m]'s n sums, then u[2m+1]'s), lane l % h */
#pragma GCC unroll 16
            for (l = 0; l < UK_VL; l++) {
                int sum = l / h;
                lo[l] = (sum < n ? sum * w : UK_VL + (sum - n) * w) + l % h;
                hi[l] = lo[l] + h;
            }
#pragma GCC unroll 16
            for (m = 0; m < count / 2; m++)
                u[m] = __builtin_shuffle(u[2 * m], u[2 * m + 1], lo)
                       + __builtin_shuffle(u[2 * m], u[2 * m + 1], hi);
            count /= 2;
        }
        for (i = 0; i < UKD_R; i++) {
            for (j = 0; j < UKD_C; j++) {
                UK_T s;
                t = i * UKD_C + j;
                s = u[t / UK_VL][t % UK_VL];
                for (p = Lv; p < L; p++)
                    s += a[i][p] * b[j][p];
                out[i * UKD_C + j] = s;
            }
        }
    }
#endif
}

#undef UKD_NAME
#undef UK_T
#undef UK_IT
#undef UK_VL
#undef UKD_R
#undef UKD_C
#undef UK_ATTR
