/* The depthwise row kernels of one element type on one instruction set, instantiated by
 * dwconv_kernel.h.
 *
 * Parameters (macros): DW_NAME (prefix), DW_T (element), DW_I (the integer of its size),
 * DW_VL (elements per vector; 1 means scalar loops only), DW_EVEN, DW_ZIPLO, DW_ZIPHI
 * (lane masks, for DW_VL > 1), DW_ATTR (a target attribute or nothing).
 *
 * A row operation reads R input rows with KW taps of dilation d at stride s: output q
 * of the row meets rows[r][q * s + k * d] for k < KW.  Strides 1 and 2 run on whole
 * vectors of outputs (a stride-2 tap's elements are the even lanes of two loads): the
 * caller gives rows padded so that every vector's loads stay inside them, up to element
 * (round_up(n, VL) - 1) * s + (KW - 1) * d + 1.  Other strides (and DW_VL = 1) run
 * scalar and read only the elements they use.  Every output sums its terms in the same
 * order, row by row and tap by tap, so the results depend only on the row's shape.
 */
#define DW_CAT2(a, b) a##_##b
#define DW_CAT(a, b) DW_CAT2(a, b)
#define DW_FN(x) DW_CAT(DW_NAME, x)
#define DW_INLINE static DW_ATTR inline __attribute__((always_inline))

static const Py_ssize_t DW_FN(vl) = DW_VL;

#if DW_VL > 1
#define DW_V DW_FN(vec_t)
#define DW_IV DW_FN(ivec_t)
#define DW_DV DW_FN(dvec_t)
typedef DW_T DW_V __attribute__((vector_size(DW_VL * sizeof(DW_T))));
typedef DW_I DW_IV __attribute__((vector_size(DW_VL * sizeof(DW_T))));
typedef double DW_DV __attribute__((vector_size(DW_VL * sizeof(double))));

DW_INLINE DW_V DW_FN(ld)(const DW_T *p)
{
    DW_V v;
    memcpy(&v, p, sizeof(v));
    return v;
}

DW_INLINE void DW_FN(st)(DW_T *p, DW_V v)
{
    memcpy(p, &v, sizeof(v));
}

/* a in every lane (a - 0 is a, signed zeros and NaN included) */
DW_INLINE DW_V DW_FN(splat)(DW_T a)
{
    return a - (DW_V){0};
}

/* p[0], p[s], ..., p[(VL - 1) s] for s = 1 or 2, a constant once inlined */
DW_INLINE DW_V DW_FN(lds)(const DW_T *p, const int s)
{
    DW_V lo, hi;
    if (s == 1)
        return DW_FN(ld)(p);
    lo = DW_FN(ld)(p);
    hi = DW_FN(ld)(p + DW_VL);
    return CK_DW_SHUFFLE(lo, hi, DW_IV, DW_EVEN);
}

/* y[q] += the 3 x 3 taps w of rows a, b, c for q < nv (fwd with KW = 3) */
DW_INLINE void DW_FN(fwd3)(DW_T *y, Py_ssize_t nv, const DW_T *a, const DW_T *b,
                           const DW_T *c, const DW_T *w, Py_ssize_t d, const int s)
{
    DW_V w0 = DW_FN(splat)(w[0]), w1 = DW_FN(splat)(w[1]), w2 = DW_FN(splat)(w[2]);
    DW_V w3 = DW_FN(splat)(w[3]), w4 = DW_FN(splat)(w[4]), w5 = DW_FN(splat)(w[5]);
    DW_V w6 = DW_FN(splat)(w[6]), w7 = DW_FN(splat)(w[7]), w8 = DW_FN(splat)(w[8]);
    Py_ssize_t q;
    for (q = 0; q < nv; q += DW_VL) {
        const DW_T *pa = a + q * s, *pb = b + q * s, *pc = c + q * s;
        DW_V acc = DW_FN(ld)(y + q);
        acc += w0 * DW_FN(lds)(pa, s);
        acc += w1 * DW_FN(lds)(pa + d, s);
        acc += w2 * DW_FN(lds)(pa + 2 * d, s);
        acc += w3 * DW_FN(lds)(pb, s);
        acc += w4 * DW_FN(lds)(pb + d, s);
        acc += w5 * DW_FN(lds)(pb + 2 * d, s);
        acc += w6 * DW_FN(lds)(pc, s);
        acc += w7 * DW_FN(lds)(pc + d, s);
        acc += w8 * DW_FN(lds)(pc + 2 * d, s);
        DW_FN(st)(y + q, acc);
    }
}

/* y[q] += the KW taps w of row a for q < nv */
DW_INLINE void DW_FN(fwd1)(DW_T *y, Py_ssize_t nv, const DW_T *a, const DW_T *w,
                           Py_ssize_t KW, Py_ssize_t d, const int s)
{
    Py_ssize_t q, k;
    for (q = 0; q < nv; q += DW_VL) {
        const DW_T *p = a + q * s;
        DW_V acc = DW_FN(ld)(y + q);
        for (k = 0; k < KW; k++)
            acc += DW_FN(splat)(w[k]) * DW_FN(lds)(p + k * d, s);
        DW_FN(st)(y + q, acc);
    }
}

/* One vector step of wg3 (M masks the products of a last, partial vector). */
#define DW_WG3_STEP(M)                                                                \
    const DW_T *pa = a + q * s, *pb = b + q * s, *pc = c + q * s;                     \
    DW_V gv = DW_FN(ld)(g + q);                                                        \
    s0 += M(gv * DW_FN(lds)(pa, s));                                                   \
    s1 += M(gv * DW_FN(lds)(pa + d, s));                                               \
    s2 += M(gv * DW_FN(lds)(pa + 2 * d, s));                                           \
    s3 += M(gv * DW_FN(lds)(pb, s));                                                   \
    s4 += M(gv * DW_FN(lds)(pb + d, s));                                               \
    s5 += M(gv * DW_FN(lds)(pb + 2 * d, s));                                           \
    s6 += M(gv * DW_FN(lds)(pc, s));                                                   \
    s7 += M(gv * DW_FN(lds)(pc + d, s));                                               \
    s8 += M(gv * DW_FN(lds)(pc + 2 * d, s));
#define DW_ALL(v) (v)
#define DW_KEEP(v) ((DW_V)((DW_IV)(v) & keep))

/* keep: all ones in the lanes l < m, zero in the others */
DW_INLINE DW_IV DW_FN(keep)(Py_ssize_t m)
{
    DW_IV keep;
    int l;
    for (l = 0; l < DW_VL; l++)
        keep[l] = l < m ? -1 : 0;
    return keep;
}

/* The lane sums of wgrad for KW = 3 and rows a, b, c (and, with blanes, grad_y's) */
DW_INLINE void DW_FN(wg3)(const DW_T *g, Py_ssize_t n, const DW_T *a, const DW_T *b,
                          const DW_T *c, DW_T *lanes, double *blanes, Py_ssize_t d,
                          const int s)
{
    DW_V s0 = DW_FN(ld)(lanes), s1 = DW_FN(ld)(lanes + DW_VL);
    DW_V s2 = DW_FN(ld)(lanes + 2 * DW_VL), s3 = DW_FN(ld)(lanes + 3 * DW_VL);
    DW_V s4 = DW_FN(ld)(lanes + 4 * DW_VL), s5 = DW_FN(ld)(lanes + 5 * DW_VL);
    DW_V s6 = DW_FN(ld)(lanes + 6 * DW_VL), s7 = DW_FN(ld)(lanes + 7 * DW_VL);
    DW_V s8 = DW_FN(ld)(lanes + 8 * DW_VL);
    Py_ssize_t q, nv = n / DW_VL * DW_VL;
    if (blanes != NULL) {
        DW_DV bl;
        memcpy(&bl, blanes, sizeof(bl));
        for (q = 0; q < nv; q += DW_VL) {
            DW_WG3_STEP(DW_ALL)
            bl += __builtin_convertvector(gv, DW_DV);
        }
        if (q < n) {
            DW_IV keep = DW_FN(keep)(n - q);
            DW_WG3_STEP(DW_KEEP)
            bl += __builtin_convertvector(gv, DW_DV);
        }
        memcpy(blanes, &bl, sizeof(bl));
    } else {
        for (q = 0; q < nv; q += DW_VL) {
            DW_WG3_STEP(DW_ALL)
        }
        if (q < n) {
            DW_IV keep = DW_FN(keep)(n - q);
            DW_WG3_STEP(DW_KEEP)
        }
    }
    DW_FN(st)(lanes, s0);
    DW_FN(st)(lanes + DW_VL, s1);
    DW_FN(st)(lanes + 2 * DW_VL, s2);
    DW_FN(st)(lanes + 3 * DW_VL, s3);
    DW_FN(st)(lanes + 4 * DW_VL, s4);
    DW_FN(st)(lanes + 5 * DW_VL, s5);
    DW_FN(st)(lanes + 6 * DW_VL, s6);
    DW_FN(st)(lanes + 7 * DW_VL, s7);
    DW_FN(st)(lanes + 8 * DW_VL, s8);
}
#undef DW_WG3_STEP

/* The lane sums of one tap: lanes += g[q] * a[q * s] for q < n */
DW_INLINE void DW_FN(wg1)(const DW_T *g, Py_ssize_t n, const DW_T *a, DW_T *lanes,
                          const int s)
{
    DW_V acc = DW_FN(ld)(lanes);
    Py_ssize_t q, nv = n / DW_VL * DW_VL;
    for (q = 0; q < nv; q += DW_VL)
        acc += DW_FN(ld)(g + q) * DW_FN(lds)(a + q * s, s);
    if (q < n) {
        DW_IV keep = DW_FN(keep)(n - q);
        acc += DW_KEEP(DW_FN(ld)(g + q) * DW_FN(lds)(a + q * s, s));
    }
    DW_FN(st)(lanes, acc);
}
#undef DW_ALL
#undef DW_KEEP
#endif

/* y[q] += sum over r < R, k < KW of w[r * KW + k] * rows[r][q * s + k * d], for q < n,
 * in the order of r, then k; strides 1 and 2 compute round_up(n, VL) outputs (y has
 * room for them). */
static DW_ATTR void DW_FN(fwd)(DW_T *y, Py_ssize_t n, const DW_T **rows, Py_ssize_t R,
                               const DW_T *w, Py_ssize_t KW, Py_ssize_t s, Py_ssize_t d)
{
    Py_ssize_t q, r = 0, k;
    DW_T acc;
#if DW_VL > 1
    Py_ssize_t nv = (n + DW_VL - 1) / DW_VL * DW_VL;
    if (s <= 2) {
        if (KW == 3) {
            for (; r + 3 <= R; r += 3) {
                if (s == 1)
                    DW_FN(fwd3)(y, nv, rows[r], rows[r + 1], rows[r + 2], w + r * 3, d, 1);
                else
                    DW_FN(fwd3)(y, nv, rows[r], rows[r + 1], rows[r + 2], w + r * 3, d, 2);
            }
        }
        for (; r < R; r++) {
            if (s == 1)
                DW_FN(fwd1)(y, nv, rows[r], w + r * KW, KW, d, 1);
            else
                DW_FN(fwd1)(y, nv, rows[r], w + r * KW, KW, d, 2);
        }
        return;
    }
#endif
    for (q = 0; q < n; q++) {
        acc = y[q];
        for (r = 0; r < R; r++)
            for (k = 0; k < KW; k++)
                acc += w[r * KW + k] * rows[r][q * s + k * d];
        y[q] = acc;
    }
}

/* lanes[(r * KW + k) * VL + l] += g[q] * rows[r][q * s + k * d] for r < R, k < KW, and
 * blanes[l] += g[q] (if blanes is not NULL), over q < n, with l = q % VL; every lane
 * sums its terms in the order of q.  Strides 1 and 2 read g up to round_up(n, VL),
 * zero past n (the products past n are dropped). */
static DW_ATTR void DW_FN(wgrad)(const DW_T *g, Py_ssize_t n, const DW_T **rows, Py_ssize_t R,
                                 Py_ssize_t KW, Py_ssize_t s, Py_ssize_t d, DW_T *lanes,
                                 double *blanes)
{
    Py_ssize_t q, r = 0, k, l;
    DW_T gq;
#if DW_VL > 1
    double *bl = blanes;
    if (s <= 2) {
        if (KW == 3) {
            for (; r + 3 <= R; r += 3) {
                if (s == 1)
                    DW_FN(wg3)(g, n, rows[r], rows[r + 1], rows[r + 2], lanes + r * 3 * DW_VL,
                               bl, d, 1);
                else
                    DW_FN(wg3)(g, n, rows[r], rows[r + 1], rows[r + 2], lanes + r * 3 * DW_VL,
                               bl, d, 2);
                bl = NULL;
            }
        }
        for (; r < R; r++) {
            for (k = 0; k < KW; k++) {
                if (s == 1)
                    DW_FN(wg1)(g, n, rows[r] + k * d, lanes + (r * KW + k) * DW_VL, 1);
                else
                    DW_FN(wg1)(g, n, rows[r] + k * d, lanes + (r * KW + k) * DW_VL, 2);
            }
        }
        if (bl != NULL) {
            DW_DV acc;
            memcpy(&acc, bl, sizeof(acc));
            for (q = 0; q < n; q += DW_VL)
                acc += __builtin_convertvector(DW_FN(ld)(g + q), DW_DV);
            memcpy(bl, &acc, sizeof(acc));
        }
        return;
    }
#endif
    for (q = 0; q < n; q++) {
        l = q % DW_VL;
        gq = g[q];
        for (r = 0; r < R; r++)
            for (k = 0; k < KW; k++)
                lanes[(r * KW + k) * DW_VL + l] += gq * rows[r][q * s + k * d];
        if (blanes != NULL)
            blanes[l] += gq;
    }
}

/* dst[2 q] = a[q], dst[2 q + 1] = b[q] for q < n */
static DW_ATTR void DW_FN(zip)(DW_T *dst, const DW_T *a, const DW_T *b, Py_ssize_t n)
{
    Py_ssize_t q = 0;
#if DW_VL > 1
    for (; q + DW_VL <= n; q += DW_VL) {
        DW_V va = DW_FN(ld)(a + q), vb = DW_FN(ld)(b + q);
        DW_FN(st)(dst + 2 * q, CK_DW_SHUFFLE(va, vb, DW_IV, DW_ZIPLO));
        DW_FN(st)(dst + 2 * q + DW_VL, CK_DW_SHUFFLE(va, vb, DW_IV, DW_ZIPHI));
    }
#endif
    for (; q < n; q++) {
        dst[2 * q] = a[q];
        dst[2 * q + 1] = b[q];
    }
}

#if DW_VL > 1
#undef DW_V
#undef DW_IV
#undef DW_DV
#undef DW_EVEN
#undef DW_ZIPLO
#undef DW_ZIPHI
#endif
#undef DW_CAT2
#undef DW_CAT
#undef DW_FN
#undef DW_INLINE
#undef DW_NAME
#undef DW_T
#undef DW_I
#undef DW_VL
#undef DW_ATTR
