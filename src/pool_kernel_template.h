/* One vectorised max-pool row kernel, instantiated by pool_kernel.h per type and ISA.
 *
 * PK_NAME(xp, end, base, n, taps, ntaps, first, toff, y, idx): n windows of an output
 * row, stride 2 along the row, all inside the plane xp[0 .. end).  Window j's tap t
 * reads xp[base + taps[t] + 2 j]; taps ascend.  Its index is that position, or, when
 * first is not NULL, first[j] + toff[t] (xp is then a copy of the plane's rows laid
 * out for the kernel, and the index is of the plane itself).  The
 * taps are visited in PyTorch's scan order and each one replaces the running maximum
 * where it is larger or NaN, so values and indices equal the scalar scan exactly.
 * Lanes hold consecutive windows: a tap's values are the even lanes of two vector loads.
 * Indices are kept in 32-bit lanes (the caller checks the plane fits) and widened on
 * store.  Returns how many windows it did: whole vectors whose two loads per tap stay
 * inside the plane; the caller does the rest.
 */
#ifndef PK_CAT
#define PK_CAT2(a, b) a##_##b
#define PK_CAT(a, b) PK_CAT2(a, b)
#endif

/* The kernel's vector length (windows per vector), for the caller's choice of path. */
static const int PK_CAT(PK_NAME, vl) = PK_VL;

static PK_ATTR Py_ssize_t PK_NAME(const PK_T *xp, Py_ssize_t end, Py_ssize_t base, Py_ssize_t n,
                                  const Py_ssize_t *taps, Py_ssize_t ntaps,
                                  const int32_t *first, const Py_ssize_t *toff, PK_T *y,
                                  int64_t *idx)
{
    typedef PK_T vec_t __attribute__((vector_size(PK_VL * sizeof(PK_T))));
    typedef PK_I ivec_t __attribute__((vector_size(PK_VL * sizeof(PK_I))));
    typedef int32_t i32v_t __attribute__((vector_size(PK_VL * 4)));
    typedef int64_t i64v_t __attribute__((vector_size(PK_VL * 8)));
    i32v_t lane2;
#ifdef __clang__
#define PK_EVEN_LANES(a, b) __builtin_shufflevector(a, b, PK_EVEN)
#else
#define PK_EVEN_LANES(a, b) __builtin_shuffle(a, b, (ivec_t){PK_EVEN})
#endif
    Py_ssize_t j, t;
    int l;
    for (l = 0; l < PK_VL; l++)
        lane2[l] = 2 * l;
    for (j = 0; j + PK_VL <= n && base + 2 * j + taps[ntaps - 1] + 2 * PK_VL <= end;
         j += PK_VL) {
        vec_t m, lo, hi, v;
        i32v_t arg, cand, take, at;
        ivec_t mask;
        Py_ssize_t start = base + 2 * j;
        if (first != NULL)
            memcpy(&at, first + j, sizeof(at));
        else
            at = (int32_t)start + lane2;
        /* tap 0 starts the scan: -inf is replaced by any value except -inf, whose index
           is tap 0's anyway */
        memcpy(&lo, xp + start + taps[0], sizeof(vec_t));
        memcpy(&hi, xp + start + taps[0] + PK_VL, sizeof(vec_t));
        m = PK_EVEN_LANES(lo, hi);
        arg = at + (int32_t)(first != NULL ? toff[0] : taps[0]);
        for (t = 1; t < ntaps; t++) {
            const PK_T *p = xp + start + taps[t];
            memcpy(&lo, p, sizeof(vec_t));
            memcpy(&hi, p + PK_VL, sizeof(vec_t));
            v = PK_EVEN_LANES(lo, hi);
            cand = at + (int32_t)(first != NULL ? toff[t] : taps[t]);
            mask = (v > m) | (v != v);
            m = (vec_t)(((ivec_t)v & mask) | ((ivec_t)m & ~mask));
            take = __builtin_convertvector(mask, i32v_t);
            arg = (arg & ~take) | (cand & take);
        }
        memcpy(y + j, &m, sizeof(vec_t));
        {
            i64v_t wide = __builtin_convertvector(arg, i64v_t);
            memcpy(idx + j, &wide, sizeof(wide));
        }
    }
    return j;
}

#undef PK_EVEN_LANES
#undef PK_NAME
#undef PK_T
#undef PK_I
#undef PK_VL
#undef PK_EVEN
#undef PK_ATTR
