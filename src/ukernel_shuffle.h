/* The in-register transpose of UK_VL vectors, shared by ukernel_gemv_template.h and
 * ukernel_transpose_template.h (gcc only: __builtin_shuffle with constant masks, so gcc
 * picks the ISA's own shuffles).  Included inside a kernel's body, once per
 * instantiation (UK_VL decides the masks: no include guard), with vec_t, idx_t (UK_IT
 * lanes of vec_t's size) and an int i in scope; the kernel #undefs the UKS_ names after.
 *
 * UKS_TRANSPOSE(v): v[0 .. UK_VL) hold rows r0 .. r(VL-1); after it, v[j] holds lane j of
 * every row.  Level b (1, 2, 4, 8, those below UK_VL): rows i and i + b (bit b of i
 * clear) swap the lanes where the row's bit b differs from the lane's.
 */
#if UK_VL == 16
#define UKS_LANES(F, b) {F(0, b), F(1, b), F(2, b), F(3, b), F(4, b), F(5, b), F(6, b), F(7, b), \
                         F(8, b), F(9, b), F(10, b), F(11, b), F(12, b), F(13, b), F(14, b),     \
                         F(15, b)}
#elif UK_VL == 8
#define UKS_LANES(F, b) {F(0, b), F(1, b), F(2, b), F(3, b), F(4, b), F(5, b), F(6, b), F(7, b)}
#elif UK_VL == 4
#define UKS_LANES(F, b) {F(0, b), F(1, b), F(2, b), F(3, b)}
#else
#define UKS_LANES(F, b) {F(0, b), F(1, b)}
#endif
#define UKS_LO(l, b) (((l) & (b)) ? UK_VL + (l) - (b) : (l))
#define UKS_HI(l, b) (((l) & (b)) ? UK_VL + (l) : (l) + (b))
#define UKS_LEVEL(v, b)                                                            \
    if ((b) < UK_VL) {                                                             \
        const idx_t lo = UKS_LANES(UKS_LO, b), hi = UKS_LANES(UKS_HI, b);          \
        for (i = 0; i < UK_VL; i++) {                                              \
            if (i & (b))                                                           \
                continue;                                                          \
            vec_t first = v[i], second = v[i + (b)];                               \
            v[i] = __builtin_shuffle(first, second, lo);                           \
            v[i + (b)] = __builtin_shuffle(first, second, hi);                     \
        }                                                                          \
    }
#define UKS_TRANSPOSE(v) \
    UKS_LEVEL(v, 1)      \
    UKS_LEVEL(v, 2)      \
    UKS_LEVEL(v, 4)      \
    UKS_LEVEL(v, 8)
