/* The depthwise plane kernels of one element type on one instruction set, instantiated
 * by dwconv_kernel.h.
 *
 * Parameters (macros): DW_NAME (prefix), DW_T (element), DW_I (the integer of its size),
 * DW_VL (elements per vector; 1 means scalar loops only), DW_ZIPLO, DW_ZIPHI
 * (lane masks, for DW_VL > 1), DW_ATTR (a target attribute or nothing).
 *
 * A plane operation runs nrows output rows of n outputs.  Output row i reads R input
 * rows, row r starting at base + i * step + roff[r], with KW taps: output q meets
 * element q + coff[k] of each row, k < KW (a strided layer's caller splits its rows
 * into stride phases, so that every tap reads consecutive elements).  Outputs run as
 * vectors, the last one of a row partial: its outputs past n are neither loaded nor
 * stored, but its input loads run whole, so the caller pads the input rows up to
 * element round_up(n, VL) - 1 + coff[k].  Every output sums its terms in the same order,
 * row by row and tap by tap (the forward's 3 x 3 window: each row's taps in order, then
 * the three rows' sums added, which shortens the dependency chain), so the results
 * depend only on the shapes.  The 3 x 3 window (R = 3, KW = 3) keeps its nine taps
 * (forward) or nine sums (weight gradient) in registers for the whole plane.
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

/* lanes l < m of p (m < VL), zero in the others */
DW_INLINE DW_V DW_FN(ldp)(const DW_T *p, Py_ssize_t m)
{
    DW_V v = {0};
    Py_ssize_t l;
    for (l = 0; l < m; l++)
        v[l] = p[l];
    return v;
}

/* p[l] = v[l] for l < m */
DW_INLINE void DW_FN(stp)(DW_T *p, DW_V v, Py_ssize_t m)
{
    Py_ssize_t l;
    for (l = 0; l < m; l++)
        p[l] = v[l];
}

/* all ones in the lanes l < m, zero in the others */
DW_INLINE DW_IV DW_FN(keep)(Py_ssize_t m)
{
    DW_IV keep;
    int l;
    for (l = 0; l < DW_VL; l++)
        keep[l] = l < m ? -1 : 0;
    return keep;
}

/* a in every lane (a - 0 is a, signed zeros and NaN included) */
DW_INLINE DW_V DW_FN(splat)(DW_T a)
{
    return a - (DW_V){0};
}

/* v where v > 0 or NaN, else 0 (ReLU as the kernels' activate) */
DW_INLINE DW_V DW_FN(relu)(DW_V v)
{
    return (DW_V)((DW_IV)v & ~(DW_IV)(v <= 0));
}

/* The forward's initial vector at output q of a row: b0, or the row's bias bi. */
#define DW_INIT(q, m) (bi == NULL ? b0 : (m) < DW_VL ? DW_FN(ldp)(bi + (q), m) : DW_FN(ld)(bi + (q)))

/* fwd for R = 3, KW = 3, with column offsets 0, c1 and c2 (constants 1 and 2 when
 * inlined so) */
DW_INLINE void DW_FN(fwd33)(DW_T *y, Py_ssize_t ldy, Py_ssize_t nrows, Py_ssize_t n,
                            const DW_T *base, Py_ssize_t step, const Py_ssize_t *roff,
                            const DW_T *w, const Py_ssize_t c1, const Py_ssize_t c2,
                            const DW_T *bias, Py_ssize_t bias_ld, int relu)
{
    DW_V w0 = DW_FN(splat)(w[0]), w1 = DW_FN(splat)(w[1]), w2 = DW_FN(splat)(w[2]);
    DW_V w3 = DW_FN(splat)(w[3]), w4 = DW_FN(splat)(w[4]), w5 = DW_FN(splat)(w[5]);
    DW_V w6 = DW_FN(splat)(w[6]), w7 = DW_FN(splat)(w[7]), w8 = DW_FN(splat)(w[8]);
    DW_V b0 = DW_FN(splat)(bias != NULL ? bias[0] : 0);
    const DW_T *a = base + roff[0], *b = base + roff[1], *c = base + roff[2];
    const DW_T *bi = bias != NULL && bias_ld > 0 ? bias : NULL;
    Py_ssize_t i, q, m;
    /* rows one after the other (ldy == n): a last vector may be stored whole when what
       it spills over are outputs of this call's later rows */
    for (i = 0; i < nrows; i++) {
        for (q = 0; q < n; q += DW_VL) {
            const DW_T *pa = a + q, *pb = b + q, *pc = c + q;
            DW_V acc, sb, sc;
            m = n - q;
            /* three independent chains, one per row, added at the end */
            acc = DW_INIT(q, m);
            acc += w0 * DW_FN(ld)(pa);
            sb = w3 * DW_FN(ld)(pb);
            sc = w6 * DW_FN(ld)(pc);
            acc += w1 * DW_FN(ld)(pa + c1);
            sb += w4 * DW_FN(ld)(pb + c1);
            sc += w7 * DW_FN(ld)(pc + c1);
            acc += w2 * DW_FN(ld)(pa + c2);
            sb += w5 * DW_FN(ld)(pb + c2);
            sc += w8 * DW_FN(ld)(pc + c2);
            acc = acc + sb + sc;
            if (relu)
                acc = DW_FN(relu)(acc);
            if (m >= DW_VL || (ldy == n && i * n + q + DW_VL <= nrows * n))
                DW_FN(st)(y + q, acc);
            else
                DW_FN(stp)(y + q, acc, m);
        }
        a += step;
        b += step;
        c += step;
        y += ldy;
        if (bi != NULL)
            bi += bias_ld;
    }
}

/* fwd for any R and KW */
DW_INLINE void DW_FN(fwdg)(DW_T *y, Py_ssize_t ldy, Py_ssize_t nrows, Py_ssize_t n,
                           const DW_T *base, Py_ssize_t step, const Py_ssize_t *roff,
                           Py_ssize_t R, const DW_T *w, Py_ssize_t KW, const Py_ssize_t *coff,
                           const DW_T *bias, Py_ssize_t bias_ld, int relu)
{
    DW_V b0 = DW_FN(splat)(bias != NULL ? bias[0] : 0);
    Py_ssize_t i, q, m, r, k;
    for (i = 0; i < nrows; i++) {
        const DW_T *bi = bias != NULL && bias_ld > 0 ? bias + i * bias_ld : NULL;
        DW_T *yi = y + i * ldy;
        for (q = 0; q < n; q += DW_VL) {
            DW_V acc;
            m = n - q;
            acc = DW_INIT(q, m);
            for (r = 0; r < R; r++) {
                const DW_T *p = base + i * step + roff[r] + q;
                for (k = 0; k < KW; k++)
                    acc += DW_FN(splat)(w[r * KW + k]) * DW_FN(ld)(p + coff[k]);
            }
            if (relu)
                acc = DW_FN(relu)(acc);
            if (m >= DW_VL || (ldy == n && i * n + q + DW_VL <= nrows * n))
                DW_FN(st)(yi + q, acc);
            else
                DW_FN(stp)(yi + q, acc, m);
        }
    }
}
#undef DW_INIT

/* One vector step of wg33 (M masks the products of a partial vector). */
#define DW_WG_STEP(M)                                                                  \
    s0 += M(gv * DW_FN(ld)(pa));                                                       \
    s1 += M(gv * DW_FN(ld)(pa + c1));                                                  \
    s2 += M(gv * DW_FN(ld)(pa + c2));                                                  \
    s3 += M(gv * DW_FN(ld)(pb));                                                       \
    s4 += M(gv * DW_FN(ld)(pb + c1));                                                  \
    s5 += M(gv * DW_FN(ld)(pb + c2));                                                  \
    s6 += M(gv * DW_FN(ld)(pc));                                                       \
    s7 += M(gv * DW_FN(ld)(pc + c1));                                                  \
    s8 += M(gv * DW_FN(ld)(pc + c2));
#define DW_ALL(v) (v)
#define DW_KEEP(v) ((DW_V)((DW_IV)(v) & keep))

/* wgrad for R = 3, KW = 3, with column offsets 0, c1 and c2 (constants 1 and 2 when
 * inlined so) */
DW_INLINE void DW_FN(wg33)(const DW_T *g, Py_ssize_t ldg, Py_ssize_t nrows, Py_ssize_t n,
                           const DW_T *base, Py_ssize_t step, const Py_ssize_t *roff,
                           const Py_ssize_t c1, const Py_ssize_t c2, DW_T *lanes,
                           double *blanes)
{
    DW_V s0 = DW_FN(ld)(lanes), s1 = DW_FN(ld)(lanes + DW_VL);
    DW_V s2 = DW_FN(ld)(lanes + 2 * DW_VL), s3 = DW_FN(ld)(lanes + 3 * DW_VL);
    DW_V s4 = DW_FN(ld)(lanes + 4 * DW_VL), s5 = DW_FN(ld)(lanes + 5 * DW_VL);
    DW_V s6 = DW_FN(ld)(lanes + 6 * DW_VL), s7 = DW_FN(ld)(lanes + 7 * DW_VL);
    DW_V s8 = DW_FN(ld)(lanes + 8 * DW_VL);
    DW_DV bl = {0};
    Py_ssize_t i, q, nv = n / DW_VL * DW_VL;
    DW_IV keep = DW_FN(keep)(n - nv);
    if (blanes != NULL)
        memcpy(&bl, blanes, sizeof(bl));
    const DW_T *a = base + roff[0], *b = base + roff[1], *c = base + roff[2], *gi = g;
    for (i = 0; i < nrows; i++, a += step, b += step, c += step, gi += ldg) {
        for (q = 0; q < nv; q += DW_VL) {
            const DW_T *pa = a + q, *pb = b + q, *pc = c + q;
            DW_V gv = DW_FN(ld)(gi + q);
            DW_WG_STEP(DW_ALL)
            if (blanes != NULL)
                bl += __builtin_convertvector(gv, DW_DV);
        }
        if (q < n) {
            /* a whole load when it stays inside this call's rows of grad_y */
            const DW_T *pa = a + q, *pb = b + q, *pc = c + q;
            DW_V gv = ldg == n && i * n + q + DW_VL <= nrows * n ? DW_FN(ld)(gi + q)
                                                                 : DW_FN(ldp)(gi + q, n - q);
            gv = DW_KEEP(gv);
            DW_WG_STEP(DW_KEEP)
            if (blanes != NULL)
                bl += __builtin_convertvector(gv, DW_DV);
        }
    }
    if (blanes != NULL)
        memcpy(blanes, &bl, sizeof(bl));
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
#undef DW_WG_STEP
#undef DW_ALL

/* wgrad for any R and KW: up to DW_WG_TAPS taps of a window row at a time over the
 * plane, each in its own register, so that every grad_y vector is loaded once per group
 * of taps and the taps' chains run side by side.  A row's last, partial vector of grad_y
 * is loaded whole where it stays inside this call's rows (as in wg33); its products are
 * masked, as the scalar loop's terms past the row do not exist.  Every lane still sums
 * its terms in the order of i, then q. */
#define DW_WG_TAPS 8
DW_INLINE void DW_FN(wgg)(const DW_T *g, Py_ssize_t ldg, Py_ssize_t nrows, Py_ssize_t n,
                          const DW_T *base, Py_ssize_t step, const Py_ssize_t *roff,
                          Py_ssize_t R, Py_ssize_t KW, const Py_ssize_t *coff, DW_T *lanes,
                          double *blanes)
{
    Py_ssize_t i, q, r, k0, k, nk, nv = n / DW_VL * DW_VL;
    DW_IV keep = DW_FN(keep)(n - nv);
    DW_V acc[DW_WG_TAPS];
    for (r = 0; r < R; r++) {
        for (k0 = 0; k0 < KW; k0 += nk) {
            nk = KW - k0 < DW_WG_TAPS ? KW - k0 : DW_WG_TAPS;
            for (k = 0; k < nk; k++)
                acc[k] = DW_FN(ld)(lanes + (r * KW + k0 + k) * DW_VL);
            for (i = 0; i < nrows; i++) {
                const DW_T *p = base + i * step + roff[r], *gi = g + i * ldg;
                const Py_ssize_t *c = coff + k0;
                for (q = 0; q < nv; q += DW_VL) {
                    DW_V gv = DW_FN(ld)(gi + q);
                    for (k = 0; k < nk; k++)
                        acc[k] += gv * DW_FN(ld)(p + q + c[k]);
                }
                if (q < n) {
                    DW_V gv = ldg == n && i * n + q + DW_VL <= nrows * n
                                  ? DW_FN(ld)(gi + q) : DW_FN(ldp)(gi + q, n - q);
                    for (k = 0; k < nk; k++)
                        acc[k] += DW_KEEP(gv * DW_FN(ld)(p + q + c[k]));
                }
            }
            for (k = 0; k < nk; k++)
                DW_FN(st)(lanes + (r * KW + k0 + k) * DW_VL, acc[k]);
        }
    }
    if (blanes != NULL) {
        DW_DV bl;
        memcpy(&bl, blanes, sizeof(bl));
        for (i = 0; i < nrows; i++) {
            for (q = 0; q < nv; q += DW_VL)
                bl += __builtin_convertvector(DW_FN(ld)(g + i * ldg + q), DW_DV);
            if (q < n)
                bl += __builtin_convertvector(DW_FN(ldp)(g + i * ldg + q, n - q), DW_DV);
        }
        memcpy(blanes, &bl, sizeof(bl));
    }
}
#undef DW_KEEP
#undef DW_WG_TAPS
#endif

/* y[i * ldy + q] = act(init + sum over r < R, k < KW of w[r * KW + k] *
 * base[i * step + roff[r] + q + coff[k]]) for i < nrows, q < n, summed in the order
 * of r, then k (see the top for the 3 x 3 window).  init: 0 (bias NULL), bias[0]
 * (bias_ld 0) or bias[i * bias_ld + q]; act: ReLU if relu, else none. */
static DW_ATTR void DW_FN(fwd)(DW_T *y, Py_ssize_t ldy, Py_ssize_t nrows, Py_ssize_t n,
                               const DW_T *base, Py_ssize_t step, const Py_ssize_t *roff,
                               Py_ssize_t R, const DW_T *w, Py_ssize_t KW,
                               const Py_ssize_t *coff, const DW_T *bias, Py_ssize_t bias_ld,
                               int relu)
{
    Py_ssize_t i, q, r, k;
    DW_T acc;
#if DW_VL > 1
    if (R == 3 && KW == 3 && coff[0] == 0) {
        if (coff[1] == 1 && coff[2] == 2)
            DW_FN(fwd33)(y, ldy, nrows, n, base, step, roff, w, 1, 2, bias, bias_ld, relu);
        else
            DW_FN(fwd33)(y, ldy, nrows, n, base, step, roff, w, coff[1], coff[2], bias,
                         bias_ld, relu);
        return;
    }
    DW_FN(fwdg)(y, ldy, nrows, n, base, step, roff, R, w, KW, coff, bias, bias_ld, relu);
    return;
#endif
    for (i = 0; i < nrows; i++) {
        for (q = 0; q < n; q++) {
            acc = bias == NULL ? 0 : bias_ld > 0 ? bias[i * bias_ld + q] : bias[0];
            for (r = 0; r < R; r++)
                for (k = 0; k < KW; k++)
                    acc += w[r * KW + k] * base[i * step + roff[r] + q + coff[k]];
            y[i * ldy + q] = relu && acc <= 0 ? 0 : acc;
        }
    }
}

/* lanes[(r * KW + k) * VL + l] += g[i * ldg + q] * base[i * step + roff[r] + q + coff[k]]
 * and blanes[l] += g[i * ldg + q] (if blanes is not NULL), over i < nrows and q < n with
 * q % VL == l; every lane sums its terms in the order of i, then q. */
static DW_ATTR void DW_FN(wgrad)(const DW_T *g, Py_ssize_t ldg, Py_ssize_t nrows, Py_ssize_t n,
                                 const DW_T *base, Py_ssize_t step, const Py_ssize_t *roff,
                                 Py_ssize_t R, Py_ssize_t KW, const Py_ssize_t *coff,
                                 DW_T *lanes, double *blanes)
{
    Py_ssize_t i, q, r, k, l;
    DW_T gq;
#if DW_VL > 1
    if (R == 3 && KW == 3 && coff[0] == 0) {
        if (coff[1] == 1 && coff[2] == 2)
            DW_FN(wg33)(g, ldg, nrows, n, base, step, roff, 1, 2, lanes, blanes);
        else
            DW_FN(wg33)(g, ldg, nrows, n, base, step, roff, coff[1], coff[2], lanes, blanes);
        return;
    }
    DW_FN(wgg)(g, ldg, nrows, n, base, step, roff, R, KW, coff, lanes, blanes);
    return;
#endif
    for (i = 0; i < nrows; i++) {
        for (q = 0; q < n; q++) {
            l = q % DW_VL;
            gq = g[i * ldg + q];
            for (r = 0; r < R; r++)
                for (k = 0; k < KW; k++)
                    lanes[(r * KW + k) * DW_VL + l] += gq * base[i * step + roff[r] + q + coff[k]];
            if (blanes != NULL)
                blanes[l] += gq;
        }
    }
}

/* The channels-last weight gradient (lanes over channels): VL channels' grad_y g
 * (positions x VL, in the order od, oh, ow) against their padded input x (positions x VL):
 * acc[t * VL + l] += g[p * VL + l] * x[start(p) + toff[t] + l] over the positions p,
 * start(p) = od * sd + oh * sh + ow * sw (element strides), and bacc[l] += g[p * VL + l]
 * in double (if bacc is not NULL).  Taps run in groups of up to DW_CL_TAPS, each tap's
 * sum in its own register for the whole pass over the positions: every lane sums its
 * terms in the order of the positions, whatever the group. */
#define DW_CL_TAPS 9
#if DW_VL > 1
/* v[k] = the vector at src + k * VL and o[k] = toff[k] for k < nk (nk <= DW_CL_TAPS, a
 * constant where inlined: the vectors stay in registers) */
DW_INLINE void DW_FN(cl_load)(DW_V *v, Py_ssize_t *o, const DW_T *src, const Py_ssize_t *toff,
                              const int nk)
{
    int k;
#pragma GCC unroll 9
    for (k = 0; k < nk; k++) {
        v[k] = DW_FN(ld)(src + k * DW_VL);
        o[k] = toff[k];
    }
}

DW_INLINE void DW_FN(wgcl_group)(const DW_T *g, const DW_T *x, Py_ssize_t OD, Py_ssize_t OH,
                                 Py_ssize_t OW, Py_ssize_t sd, Py_ssize_t sh, Py_ssize_t sw,
                                 const Py_ssize_t *toff, DW_T *acc, double *bacc, const int nk)
{
    DW_V s[DW_CL_TAPS];
    DW_DV bl = {0};
    Py_ssize_t o[DW_CL_TAPS], od, oh, ow;
    int k;
    DW_FN(cl_load)(s, o, acc, toff, nk);
    if (bacc != NULL)
        memcpy(&bl, bacc, sizeof(bl));
    for (od = 0; od < OD; od++) {
        for (oh = 0; oh < OH; oh++) {
            const DW_T *xr = x + od * sd + oh * sh;
            for (ow = 0; ow < OW; ow++, g += DW_VL) {
                const DW_T *xp = xr + ow * sw;
                DW_V gv = DW_FN(ld)(g);
#pragma GCC unroll 9
                for (k = 0; k < nk; k++)
                    s[k] += gv * DW_FN(ld)(xp + o[k]);
                if (bacc != NULL)
                    bl += __builtin_convertvector(gv, DW_DV);
            }
        }
    }
#pragma GCC unroll 9
    for (k = 0; k < nk; k++)
        DW_FN(st)(acc + k * DW_VL, s[k]);
    if (bacc != NULL)
        memcpy(bacc, &bl, sizeof(bl));
}
#endif

static DW_ATTR void DW_FN(wgcl)(const DW_T *g, const DW_T *x, Py_ssize_t OD, Py_ssize_t OH,
                                Py_ssize_t OW, Py_ssize_t sd, Py_ssize_t sh, Py_ssize_t sw,
                                const Py_ssize_t *toff, Py_ssize_t ntaps, DW_T *acc,
                                double *bacc)
{
    Py_ssize_t t0, nk;
#if DW_VL > 1
    for (t0 = 0; t0 < ntaps; t0 += nk) {
        nk = ntaps - t0 < DW_CL_TAPS ? ntaps - t0 : DW_CL_TAPS;
        double *b = t0 == 0 ? bacc : NULL;  /* grad_y's sum in the first pass only */
        switch (nk) {
#define DW_CL_CASE(n) \
        case n: DW_FN(wgcl_group)(g, x, OD, OH, OW, sd, sh, sw, toff + t0, acc + t0 * DW_VL, b, n); break;
        DW_CL_CASE(1) DW_CL_CASE(2) DW_CL_CASE(3) DW_CL_CASE(4) DW_CL_CASE(5)
        DW_CL_CASE(6) DW_CL_CASE(7) DW_CL_CASE(8) DW_CL_CASE(9)
#undef DW_CL_CASE
        }
    }
#else
    Py_ssize_t od, oh, ow, t;
    (void)t0;
    (void)nk;
    for (od = 0; od < OD; od++)
        for (oh = 0; oh < OH; oh++)
            for (ow = 0; ow < OW; ow++, g++) {
                const DW_T *xp = x + od * sd + oh * sh + ow * sw;
                for (t = 0; t < ntaps; t++)
                    acc[t] += g[0] * xp[toff[t]];
                if (bacc != NULL)
                    bacc[0] += g[0];
            }
#endif
}

/* The channels-last forward (lanes over channels): y[p * VL + l] = act(init(p) + sum over
 * taps t in order of w[t * VL + l] * x[start(p) + toff[t] + l]) for the positions p in the
 * order od, oh, ow (start(p) as in wgcl); init(p) is zero (init NULL), init[l] (init_ld
 * 0) or init[p * VL + l]; act is ReLU if relu.  Up to DW_CL_TAPS taps keep their
 * weight vectors in registers for the whole plane. */
#if DW_VL > 1
DW_INLINE void DW_FN(fwcl_taps)(DW_T *y, const DW_T *x, Py_ssize_t OD, Py_ssize_t OH,
                                Py_ssize_t OW, Py_ssize_t sd, Py_ssize_t sh, Py_ssize_t sw,
                                const Py_ssize_t *toff, const DW_T *w, const DW_T *init,
                                Py_ssize_t init_ld, int relu, const int nk)
{
    DW_V wv[DW_CL_TAPS];
    Py_ssize_t o[DW_CL_TAPS], od, oh, ow;
    int k;
    DW_FN(cl_load)(wv, o, w, toff, nk);
    for (od = 0; od < OD; od++) {
        for (oh = 0; oh < OH; oh++) {
            const DW_T *xr = x + od * sd + oh * sh;
            for (ow = 0; ow < OW; ow++, y += DW_VL) {
                const DW_T *xp = xr + ow * sw;
                DW_V acc = init == NULL ? (DW_V){0} : DW_FN(ld)(init);
#pragma GCC unroll 9
                for (k = 0; k < nk; k++)
                    acc += wv[k] * DW_FN(ld)(xp + o[k]);
                DW_FN(st)(y, relu ? DW_FN(relu)(acc) : acc);
                if (init != NULL)
                    init += init_ld * DW_VL;
            }
        }
    }
}
#endif

static DW_ATTR void DW_FN(fwcl)(DW_T *y, const DW_T *x, Py_ssize_t OD, Py_ssize_t OH,
                                Py_ssize_t OW, Py_ssize_t sd, Py_ssize_t sh, Py_ssize_t sw,
                                const Py_ssize_t *toff, Py_ssize_t ntaps, const DW_T *w,
                                const DW_T *init, Py_ssize_t init_ld, int relu)
{
    Py_ssize_t od, oh, ow, t;
#if DW_VL > 1
    switch (ntaps) {
#define DW_CL_CASE(n) \
    case n: DW_FN(fwcl_taps)(y, x, OD, OH, OW, sd, sh, sw, toff, w, init, init_ld, relu, n); return;
    DW_CL_CASE(1) DW_CL_CASE(2) DW_CL_CASE(3) DW_CL_CASE(4) DW_CL_CASE(5)
    DW_CL_CASE(6) DW_CL_CASE(7) DW_CL_CASE(8) DW_CL_CASE(9)
#undef DW_CL_CASE
    }
    /* more taps: the weights from L1, tap by tap */
    for (od = 0; od < OD; od++)
        for (oh = 0; oh < OH; oh++)
            for (ow = 0; ow < OW; ow++, y += DW_VL) {
                const DW_T *xp = x + od * sd + oh * sh + ow * sw;
                DW_V acc = init == NULL ? (DW_V){0} : DW_FN(ld)(init);
                for (t = 0; t < ntaps; t++)
                    acc += DW_FN(ld)(w + t * DW_VL) * DW_FN(ld)(xp + toff[t]);
                DW_FN(st)(y, relu ? DW_FN(relu)(acc) : acc);
                if (init != NULL)
                    init += init_ld * DW_VL;
            }
#else
    for (od = 0; od < OD; od++)
        for (oh = 0; oh < OH; oh++)
            for (ow = 0; ow < OW; ow++, y++) {
                const DW_T *xp = x + od * sd + oh * sh + ow * sw;
                DW_T acc = init == NULL ? 0 : init[0];
                for (t = 0; t < ntaps; t++)
                    acc += w[t] * xp[toff[t]];
                y[0] = relu && acc <= 0 ? 0 : acc;
                if (init != NULL)
                    init += init_ld;
            }
#endif
}
#undef DW_CL_TAPS

/* Rows i < nrows of n elements (src + i * lds) into the s stride phases of a padded
 * row (dst + i * ldd): element j, at padded column j + left, goes to phase
 * (j + left) % s at (j + left) / s, phase a starting at a * lph (s = 1: one phase of
 * lph elements).  With s = 1 a row's last vector is stored whole, its lanes past the
 * row zero (the padding's value), while it stays inside the row and its loads inside the
 * rows; s = 2 splits each row into both phases in one pass; larger strides go element
 * by element. */
static DW_ATTR void DW_FN(copy)(DW_T *dst, Py_ssize_t ldd, const DW_T *src, Py_ssize_t lds,
                                Py_ssize_t nrows, Py_ssize_t n, Py_ssize_t s, Py_ssize_t left,
                                Py_ssize_t lph)
{
    Py_ssize_t i, j, a, t0, t1, t;
    Py_ssize_t ext = (nrows - 1) * lds + n;  /* elements readable from src */
    if (s == 1) {
#if DW_VL > 1
        DW_IV keep = DW_FN(keep)(n % DW_VL);
#endif
        for (i = 0; i < nrows; i++) {
            const DW_T *si = src + i * lds;
            DW_T *di = dst + i * ldd + left;
            j = 0;
#if DW_VL > 1
            for (; j + DW_VL <= n; j += DW_VL)
                DW_FN(st)(di + j, DW_FN(ld)(si + j));
            if (j < n && i * lds + j + DW_VL <= ext && left + j + DW_VL <= lph) {
                DW_FN(st)(di + j, (DW_V)((DW_IV)DW_FN(ld)(si + j) & keep));
                j = n;
            }
#endif
            for (; j < n; j++)
                di[j] = si[j];
        }
        return;
    }
    if (s == 2) {
        /* both phases in one pass: the elements j = j0 + 2 u, j + 1 (padded columns
           2 (m0 + u), 2 (m0 + u) + 1) go to phases 0 and 1 at m0 + u, split by
           strided_copy.h; a row starting at an odd padded column has element 0 left
           over, and an odd count one more at its end */
        Py_ssize_t j0 = left % 2, m0 = (j0 + left) / 2, np = (n - j0) / 2, m;
        if (m0 + np > lph)
            np = lph > m0 ? lph - m0 : 0;
        for (i = 0; i < nrows; i++) {
            const DW_T *si = src + i * lds;
            DW_T *d0 = dst + i * ldd;
            if (j0 == 1 && left / 2 < lph)
                d0[lph + left / 2] = si[0];
            if (sizeof(DW_T) == sizeof(float))
                ck_split_stride2_f((float *)(d0 + m0), (float *)(d0 + lph + m0),
                                   (const float *)(si + j0), np);
            else
                ck_split_stride2_d((double *)(d0 + m0), (double *)(d0 + lph + m0),
                                   (const double *)(si + j0), np);
            j = j0 + 2 * np;
            m = (j + left) / 2;
            if (j < n && m < lph)
                d0[(j + left) % 2 * lph + m] = si[j];
        }
        return;
    }
    for (a = 0; a < s; a++) {
        /* phase a holds the elements j = a + s t - left, 0 <= j < n, t < lph */
        t0 = left > a ? (left - a + s - 1) / s : 0;
        t1 = n - 1 + left - a >= 0 ? (n - 1 + left - a) / s + 1 : 0;
        t1 = t1 < lph ? t1 : lph;
        for (i = 0; i < nrows; i++) {
            const DW_T *si = src + i * lds + a - left;
            DW_T *di = dst + i * ldd + a * lph;
            for (t = t0; t < t1; t++)
                di[t] = si[s * t];
        }
    }
}

/* out[t] = the sum of lanes[t * VL + l] over l < VL for t < ntaps, and *bout that of
 * blanes[l] (if blanes is not NULL), folded in halves: a fixed order. */
static DW_ATTR void DW_FN(fold)(const DW_T *lanes, Py_ssize_t ntaps, DW_T *out,
                                const double *blanes, double *bout)
{
    DW_T v[DW_VL];
    double b[DW_VL];
    Py_ssize_t t;
    int h, l;
    for (t = 0; t < ntaps; t++) {
        memcpy(v, lanes + t * DW_VL, sizeof(v));
        for (h = DW_VL / 2; h > 0; h /= 2)
            for (l = 0; l < h; l++)
                v[l] += v[l + h];
        out[t] = v[0];
    }
    if (blanes != NULL) {
        memcpy(b, blanes, sizeof(b));
        for (h = DW_VL / 2; h > 0; h /= 2)
            for (l = 0; l < h; l++)
                b[l] += b[l + h];
        *bout = b[0];
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
