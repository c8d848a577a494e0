# The depthwise path: layers with one input channel per group (Cg == 1), any number of
# filters per group, groups, stride, dilation, padding, 1-3-D.  Included by _conv.pyx.
#
# Design
# ------
# With one input channel per group there is no reduction over channels: filter f reads
# input channel c = f // Fg only, and each pass is a set of small correlations per
# (image, channel) plane.  A GEMM has nothing to block over (K = the window's taps, and
# its rows are Fg, usually 1), so this path works on whole rows instead, as XNNPACK's
# CHW depthwise kernels do: vectors run along the output row, and every pass is built
# from one row operation (dwconv_kernel.h), y[q] += sum over rows r and taps k of
# w[r, k] * row_r[q * s + k * d], where the rows are the (depth, height) taps' input rows.
#
# - Padding is never copied.  Along W, each output row splits into the interior, whose
#   taps are all inside the input row (the vector kernel), and at most a few edge
#   outputs on each side (a scalar loop that knows where the row ends).  Along D and H, a
#   tap that lands in the padding reads a row of zeros.  The forward and weight gradient
#   keep the contract's terms with the zero padding (0 * inf is NaN, as in the explicitly
#   padded convolution); the input gradient has no such terms and skips them (no grad_y
#   padding, so non-finite weights need no other path).
# - forward: y[n, f] row (od, oh) = bias + the KD * KH input rows of channel c, each
#   with KW taps at stride sw.  3 x 3 windows run three rows per pass (9 taps held in
#   registers, one load and store of the output vector).  Tasks are (image, channel,
#   block of output rows): the rows are split only when the planes alone give a thread
#   fewer than 4 tasks.  A task runs the channel's Fg filters.
# - input gradient: grad_x[n, c] row (id, ih) = the sum over the channel's filters and
#   the (kd, kh) taps whose grad_y row exists (od = (id + pd - kd * dd) / sd an integer
#   inside grad_y, the same along H) of a 1-D correlation of that grad_y row with the
#   flipped taps.  Along W a stride s splits grad_x's row into s phases (AxisPhase):
#   phase a is a stride-1 correlation with the taps k * dw % s == a; stride 1 writes
#   its phase in place, stride 2 interleaves the two phases' rows (zip), larger strides
#   copy each phase out.  Tasks are (image, channel, block of input rows).
# - weight gradient: grad_w[f, kd, kh, kw] = sum over images and output positions of
#   grad_y * x at the tap.  A task owns one filter and one chunk of images; for every
#   output row it adds grad_y's row times the taps' input rows into per-tap lane sums
#   (one vector accumulator per tap; the 3 x 3 window's nine stay in registers along the
#   row), with the bias gradient's sum of grad_y in double lanes in the same pass.  The
#   edge outputs go to scalar sums.  The lanes are folded in a fixed order at the end of
#   the task and the chunks are added in order; the chunks depend only on N and F, so the
#   bits do not depend on the thread count.
#
# Every output is computed by the same sequence of operations whatever the task split,
# so all three passes give the same bits for any number of threads.

cdef extern from "dwconv_kernel.h":
    ctypedef void (*ck_dw_fwd_s)(float *, Py_ssize_t, const float **, Py_ssize_t,
                                 const float *, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                 Py_ssize_t) noexcept nogil
    ctypedef void (*ck_dw_fwd_d)(double *, Py_ssize_t, const double **, Py_ssize_t,
                                 const double *, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                 Py_ssize_t) noexcept nogil
    ctypedef void (*ck_dw_wgrad_s)(const float *, Py_ssize_t, const float **, Py_ssize_t,
                                   Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, float *,
                                   double *) noexcept nogil
    ctypedef void (*ck_dw_wgrad_d)(const double *, Py_ssize_t, const double **, Py_ssize_t,
                                   Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t, double *,
                                   double *) noexcept nogil
    ctypedef void (*ck_dw_zip_s)(float *, const float *, const float *, Py_ssize_t) noexcept nogil
    ctypedef void (*ck_dw_zip_d)(double *, const double *, const double *,
                                 Py_ssize_t) noexcept nogil
    ctypedef struct ck_dw_kernels_s:
        ck_dw_fwd_s fwd
        ck_dw_wgrad_s wgrad
        ck_dw_zip_s zip
        Py_ssize_t vl
        const char *name
    ctypedef struct ck_dw_kernels_d:
        ck_dw_fwd_d fwd
        ck_dw_wgrad_d wgrad
        ck_dw_zip_d zip
        Py_ssize_t vl
        const char *name
    void ck_dw_select(ck_dw_kernels_s *, ck_dw_kernels_d *) noexcept nogil
    enum:
        CK_DW_LANES_MAX

cdef ck_dw_kernels_s DWK_S
cdef ck_dw_kernels_d DWK_D
ck_dw_select(&DWK_S, &DWK_D)

# Weight-gradient tasks aimed at (filters x batch chunks): the batch is chunked only
# when there are fewer filters than this.
cdef Py_ssize_t DW_WGRAD_TASKS = 64


cdef inline void dw_fwd(floating_t *y, Py_ssize_t n, const floating_t **rows, Py_ssize_t R,
                        const floating_t *w, Py_ssize_t KW, Py_ssize_t s, Py_ssize_t d,
                        Py_ssize_t avail) noexcept nogil:
    """y[q] += sum over r < R, k < KW of w[r * KW + k] * rows[r][q * s + k * d], q < n."""
    if floating_t is float:
        DWK_S.fwd(y, n, rows, R, w, KW, s, d, avail)
    else:
        DWK_D.fwd(y, n, rows, R, w, KW, s, d, avail)


cdef inline void dw_wgrad(const floating_t *gy, Py_ssize_t n, const floating_t **rows,
                          Py_ssize_t R, Py_ssize_t KW, Py_ssize_t s, Py_ssize_t d,
                          Py_ssize_t avail, floating_t *lanes, double *blanes) noexcept nogil:
    """Per-tap lane sums of gy[q] * rows[r][q * s + k * d] (see dwconv_kernel_template.h)."""
    if floating_t is float:
        DWK_S.wgrad(gy, n, rows, R, KW, s, d, avail, lanes, blanes)
    else:
        DWK_D.wgrad(gy, n, rows, R, KW, s, d, avail, lanes, blanes)


cdef inline void dw_zip(floating_t *dst, const floating_t *a, const floating_t *b,
                        Py_ssize_t n) noexcept nogil:
    """dst[2 q] = a[q], dst[2 q + 1] = b[q] for q < n."""
    if floating_t is float:
        DWK_S.zip(dst, a, b, n)
    else:
        DWK_D.zip(dst, a, b, n)


cdef inline Py_ssize_t dw_lanes(const floating_t *tag) noexcept nogil:
    """Lanes per tap of the weight gradient's kernel for the dtype."""
    if floating_t is float:
        return DWK_S.vl
    else:
        return DWK_D.vl


cdef struct Span:
    Py_ssize_t a, b


cdef inline Span interior(Py_ssize_t n, Py_ssize_t K, Py_ssize_t s, Py_ssize_t d,
                          Py_ssize_t p, Py_ssize_t size) noexcept nogil:
    """[a, b): the outputs q < n of a row whose taps q * s - p + k * d (k < K) all fall
    inside an input row of size elements; the outputs outside it are the row's edges."""
    cdef Span sp
    cdef Py_ssize_t top = size - 1 - (K - 1) * d + p
    sp.a = min((p + s - 1) // s if p > 0 else 0, n)
    sp.b = max(sp.a, min(top // s + 1 if top >= 0 else 0, n))
    return sp


cdef inline Py_ssize_t dw_tasks(Py_ssize_t planes, Py_ssize_t rows, int nt) noexcept nogil:
    """Row blocks per plane: 1, or enough for 4 tasks per thread when the planes are few."""
    if planes >= 4 * nt:
        return 1
    return max(1, min(rows, (4 * nt + planes - 1) // max(planes, 1)))


cdef struct DwScratch:
    # A thread's scratch, in bytes: ptrs pointer-sized slots (rows, the rows shifted to
    # the interior, and for the input gradient the rows' window offsets), then elements:
    # a row of zeros (zeros), taps (weights gathered per row), a phase buffer (phase),
    # the weight gradient's lane sums (lanes) and edge sums (edge), then its double
    # lanes (dlanes).  Offsets in elements of the dtype past the pointers.
    Py_ssize_t rows, ptrs, zeros, taps, phase, lanes, edge, elems, dlanes, bytes


cdef DwScratch dw_scratch(const Geom *g, int pass_code, const floating_t *tag) noexcept nogil:
    """The per-thread scratch of a depthwise pass: 0 forward, 1 input, 2 weight gradient."""
    cdef DwScratch s
    s.rows = g.KD * g.KH * (g.Fg if pass_code == 1 else 1)
    s.ptrs = (3 if pass_code == 1 else 2) * s.rows
    s.zeros = 0
    s.taps = s.zeros + (g.W if pass_code != 1 else 0)
    s.phase = s.taps + (s.rows * g.KW if pass_code == 1 else 0)
    s.lanes = s.phase + (g.W + g.sw if pass_code == 1 and g.sw > 1 else 0)
    s.edge = s.lanes + (g.KK * CK_DW_LANES_MAX if pass_code == 2 else 0)
    s.elems = s.edge + (g.KK if pass_code == 2 else 0)
    s.dlanes = CK_DW_LANES_MAX if pass_code == 2 else 0
    s.bytes = (s.ptrs * sizeof(floating_t *) + s.elems * sizeof(floating_t)
               + s.dlanes * sizeof(double))
    s.bytes = (s.bytes + 63) // 64 * 64
    return s


cdef inline void input_rows(const floating_t *plane, const Geom *g, Py_ssize_t od,
                            Py_ssize_t oh, const floating_t *zeros,
                            const floating_t **rows) noexcept nogil:
    """rows[kd * KH + kh]: the input row tap (kd, kh) of output row (od, oh) reads, or
    zeros where it falls in the padding."""
    cdef Py_ssize_t kd, kh, id, ih
    for kd in range(g.KD):
        id = od * g.sd - g.pd + kd * g.dd
        for kh in range(g.KH):
            ih = oh * g.sh - g.ph + kh * g.dh
            if 0 <= id < g.D and 0 <= ih < g.H:
                rows[kd * g.KH + kh] = plane + (id * g.H + ih) * g.W
            else:
                rows[kd * g.KH + kh] = zeros


cdef inline void fwd_edges(floating_t *yrow, Py_ssize_t q0, Py_ssize_t q1,
                           const floating_t **rows, Py_ssize_t R, const floating_t *wf,
                           const Geom *g) noexcept nogil:
    """yrow[q] += the taps of outputs q0 <= q < q1 of a forward row (rows as input_rows
    gives them), the zero padding's terms (0 * w) included."""
    cdef Py_ssize_t q, r, k, iw
    cdef floating_t acc, v
    for q in range(q0, q1):
        acc = yrow[q]
        for r in range(R):
            for k in range(g.KW):
                iw = q * g.sw - g.pw + k * g.dw
                v = rows[r][iw] if 0 <= iw < g.W else 0
                acc = acc + wf[r * g.KW + k] * v
        yrow[q] = acc


cdef inline void igrad_edges(floating_t *out, Py_ssize_t u0, Py_ssize_t u1,
                             const floating_t **rows, Py_ssize_t nr, const floating_t *taps,
                             const AxisPhase *ph, Py_ssize_t OW) noexcept nogil:
    """out[u] = the phase's taps of outputs u0 <= u < u1 of an input-gradient row: the
    terms that fall outside grad_y's row do not exist."""
    cdef Py_ssize_t u, r, j, o
    cdef floating_t acc
    for u in range(u0, u1):
        acc = 0
        for r in range(nr):
            for j in range(ph.n):
                o = u - ph.pad + j * ph.dil
                if 0 <= o < OW:
                    acc = acc + taps[r * ph.n + j] * rows[r][o]
        out[u] = acc


cdef inline double wgrad_edges(const floating_t *grow, Py_ssize_t q0, Py_ssize_t q1,
                               const floating_t **rows, Py_ssize_t R, floating_t *edge,
                               const Geom *g) noexcept nogil:
    """edge[tap] += grad_y times the tap's input for outputs q0 <= q < q1 of a row, the
    zero padding's terms (grad_y * 0) included; returns the sum of those grad_y, in
    double."""
    cdef Py_ssize_t q, r, k, iw
    cdef floating_t gq, v
    cdef double s = 0
    for q in range(q0, q1):
        gq = grow[q]
        s += gq
        for r in range(R):
            for k in range(g.KW):
                iw = q * g.sw - g.pw + k * g.dw
                v = rows[r][iw] if 0 <= iw < g.W else 0
                edge[r * g.KW + k] += gq * v
    return s


cdef void depthwise_forward(const floating_t *x, const Geom *g, const floating_t *w,
                            const floating_t *bias, int bias_mode, int act, floating_t *y,
                            char *scratch, Py_ssize_t per_thread, int nt) noexcept nogil:
    """y = act(x * W + bias) for a layer with one input channel per group."""
    cdef DwScratch S = dw_scratch(g, 0, x)
    cdef Py_ssize_t R = g.KD * g.KH, nrows = g.OD * g.OH
    cdef Py_ssize_t nb = dw_tasks(g.N * g.C, nrows, nt)
    cdef Py_ssize_t per = (nrows + nb - 1) // nb
    cdef Py_ssize_t qa, qb, t, n, c, m, f, i, q, r, od, oh
    cdef floating_t b
    cdef const floating_t **rows
    cdef const floating_t **shifted
    cdef floating_t *zeros
    cdef const floating_t *plane
    cdef const floating_t *wf
    cdef floating_t *yrow
    cdef Span sp = interior(g.OW, g.KW, g.sw, g.dw, g.pw, g.W)
    qa, qb = sp.a, sp.b
    for t in prange(g.N * g.C * nb, num_threads=nt, schedule="static"):
        rows = <const floating_t **> (scratch + threadid() * per_thread)
        shifted = rows + R
        zeros = <floating_t *> (shifted + R) + S.zeros
        memset(zeros, 0, g.W * sizeof(floating_t))
        n = t // (g.C * nb)
        c = t // nb % g.C
        plane = x + (n * g.C + c) * g.D * g.H * g.W
        for i in range(t % nb * per, min(nrows, (t % nb + 1) * per)):
            od = i // g.OH
            oh = i % g.OH
            input_rows(plane, g, od, oh, zeros, rows)
            for r in range(R):
                shifted[r] = rows[r] + qa * g.sw - g.pw
            for m in range(g.Fg):
                f = c * g.Fg + m
                wf = w + f * g.KK
                yrow = y + ((n * g.F + f) * nrows + i) * g.OW
                if bias_mode == 1:
                    b = bias[f]
                    for q in range(g.OW):
                        yrow[q] = b
                elif bias_mode == 2:
                    memcpy(yrow, bias + (f * nrows + i) * g.OW, g.OW * sizeof(floating_t))
                else:
                    memset(yrow, 0, g.OW * sizeof(floating_t))
                dw_fwd(yrow + qa, qb - qa, shifted, R, wf, g.KW, g.sw, g.dw,
                       g.W - (qa * g.sw - g.pw))
                fwd_edges(yrow, 0, qa, rows, R, wf, g)
                fwd_edges(yrow, qb, g.OW, rows, R, wf, g)
                if act != ACT_NONE:
                    for q in range(g.OW):
                        yrow[q] = activate(yrow[q], act)


cdef void depthwise_input_grad(const floating_t *gy, const floating_t *w, const Geom *g,
                               floating_t *gx, char *scratch, Py_ssize_t per_thread,
                               int nt) noexcept nogil:
    """grad_x for a layer with one input channel per group (see the design above)."""
    cdef DwScratch S = dw_scratch(g, 1, gy)
    cdef Py_ssize_t nrows = g.D * g.H, R = g.Fg * g.KD * g.KH
    cdef Py_ssize_t nb = dw_tasks(g.N * g.C, nrows, nt)
    cdef Py_ssize_t per = (nrows + nb - 1) // nb
    cdef Py_ssize_t t, n, c, i, id, ih, m, f, kd, kh, od, oh, nr, r, j, a, u, ua, ub
    cdef Py_ssize_t col, even, e, lo
    cdef AxisPhase ph
    cdef Span sp
    cdef const floating_t **rows
    cdef const floating_t **shifted
    cdef Py_ssize_t *kwof
    cdef floating_t *taps
    cdef floating_t *phase
    cdef floating_t *out
    cdef floating_t *gxrow
    for t in prange(g.N * g.C * nb, num_threads=nt, schedule="static"):
        rows = <const floating_t **> (scratch + threadid() * per_thread)
        shifted = rows + R
        kwof = <Py_ssize_t *> (shifted + R)
        taps = <floating_t *> (kwof + R) + S.taps
        phase = <floating_t *> (kwof + R) + S.phase
        n = t // (g.C * nb)
        c = t // nb % g.C
        for i in range(t % nb * per, min(nrows, (t % nb + 1) * per)):
            id = i // g.H
            ih = i % g.H
            gxrow = gx + ((n * g.C + c) * nrows + i) * g.W
            # the grad_y rows that reach this row, with the flat offset of their window
            # row in w (f * KK + (kd * KH + kh) * KW) kept in kwof
            nr = 0
            for m in range(g.Fg):
                f = c * g.Fg + m
                for kd in range(g.KD):
                    od = id + g.pd - kd * g.dd
                    if od < 0 or od % g.sd != 0 or od // g.sd >= g.OD:
                        continue
                    for kh in range(g.KH):
                        oh = ih + g.ph - kh * g.dh
                        if oh < 0 or oh % g.sh != 0 or oh // g.sh >= g.OH:
                            continue
                        rows[nr] = gy + (((n * g.F + f) * g.OD + od // g.sd) * g.OH
                                         + oh // g.sh) * g.OW
                        kwof[nr] = f * g.KK + (kd * g.KH + kh) * g.KW
                        nr = nr + 1
            for a in range(g.sw):
                ph = axis_phase(g.KW, g.dw, g.sw, g.pw, g.W, a)
                out = gxrow if g.sw == 1 else phase + a * ((g.W + g.sw - 1) // g.sw)
                memset(out, 0, ph.count * sizeof(floating_t))
                if ph.n == 0 or nr == 0:
                    continue
                # tap j of the phase is w's kw = kmax - j * kstep, flipped
                for r in range(nr):
                    for j in range(ph.n):
                        taps[r * ph.n + j] = w[kwof[r] + ph.kmax - j * ph.kstep]
                sp = interior(ph.count, ph.n, 1, ph.dil, ph.pad, g.OW)
                ua = sp.a
                ub = sp.b
                for r in range(nr):
                    shifted[r] = rows[r] + ua - ph.pad
                dw_fwd(out + ua, ub - ua, shifted, nr, taps, ph.n, 1, ph.dil,
                       g.OW - (ua - ph.pad))
                igrad_edges(out, 0, ua, rows, nr, taps, &ph, g.OW)
                igrad_edges(out, ub, ph.count, rows, nr, taps, &ph, g.OW)
            if g.sw == 1:
                continue
            # the phases back into grad_x's row: phase a's u-th is column (q0 + u) s + a - p
            if g.sw == 2:
                even = 0
                ph = axis_phase(g.KW, g.dw, 2, g.pw, g.W, 0)
                if (ph.q0 * 2 - g.pw) != 0:
                    even = 1
                e = (g.W + 1) // 2
                lo = g.W // 2
                dw_zip(gxrow, phase + even * e, phase + (1 - even) * e, lo)
                if e > lo:
                    gxrow[g.W - 1] = phase[even * e + lo]
                continue
            for a in range(g.sw):
                ph = axis_phase(g.KW, g.dw, g.sw, g.pw, g.W, a)
                col = ph.q0 * g.sw + a - g.pw
                for u in range(ph.count):
                    gxrow[col + u * g.sw] = phase[a * ((g.W + g.sw - 1) // g.sw) + u]


cdef inline floating_t fold_lanes(floating_t *v, Py_ssize_t n) noexcept nogil:
    """v[0] + ... + v[n - 1] (n a power of two) folded in halves: a fixed order."""
    cdef Py_ssize_t h = n // 2, j
    while h > 0:
        for j in range(h):
            v[j] = v[j] + v[j + h]
        h = h // 2
    return v[0]


cdef inline double fold_double(double *v, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t h = n // 2, j
    while h > 0:
        for j in range(h):
            v[j] = v[j] + v[j + h]
        h = h // 2
    return v[0]


cdef inline Py_ssize_t dw_wgrad_chunks(const Geom *g) noexcept nogil:
    """Batch chunks of the weight gradient: a function of N and F only."""
    return max(1, min(g.N, DW_WGRAD_TASKS // max(g.F, 1)))


cdef void depthwise_weight_grad(const floating_t *x, const floating_t *gy, const Geom *g,
                                floating_t *partials, double *bpart, char *scratch,
                                Py_ssize_t per_thread, int nt) noexcept nogil:
    """partials[b, f, tap] and (bpart not NULL) bpart[b, f]: the weight and bias
    gradient sums over chunk b of the images, for a layer with one input channel per
    group (see the design above)."""
    cdef DwScratch S = dw_scratch(g, 2, x)
    cdef Py_ssize_t R = g.KD * g.KH, nrows = g.OD * g.OH, vl = dw_lanes(x)
    cdef Py_ssize_t nch = dw_wgrad_chunks(g), per = (g.N + nch - 1) // nch
    cdef Py_ssize_t qa, qb, t, b, f, n, i, r, tap
    cdef double bedge
    cdef const floating_t **rows
    cdef const floating_t **shifted
    cdef floating_t *zeros
    cdef floating_t *lanes
    cdef floating_t *edge
    cdef double *dlanes
    cdef const floating_t *plane
    cdef const floating_t *grow
    cdef Span sp = interior(g.OW, g.KW, g.sw, g.dw, g.pw, g.W)
    qa, qb = sp.a, sp.b
    for t in prange(g.F * nch, num_threads=nt, schedule="static"):
        rows = <const floating_t **> (scratch + threadid() * per_thread)
        shifted = rows + R
        zeros = <floating_t *> (shifted + R) + S.zeros
        lanes = <floating_t *> (shifted + R) + S.lanes
        edge = <floating_t *> (shifted + R) + S.edge
        dlanes = <double *> (<floating_t *> (shifted + R) + S.elems)
        memset(zeros, 0, g.W * sizeof(floating_t))
        memset(lanes, 0, g.KK * vl * sizeof(floating_t))
        memset(edge, 0, g.KK * sizeof(floating_t))
        memset(dlanes, 0, vl * sizeof(double))
        bedge = 0
        f = t // nch
        b = t % nch
        for n in range(b * per, min(g.N, (b + 1) * per)):
            plane = x + (n * g.C + f // g.Fg) * g.D * g.H * g.W
            for i in range(nrows):
                input_rows(plane, g, i // g.OH, i % g.OH, zeros, rows)
                for r in range(R):
                    shifted[r] = rows[r] + qa * g.sw - g.pw
                grow = gy + ((n * g.F + f) * nrows + i) * g.OW
                dw_wgrad(grow + qa, qb - qa, shifted, R, g.KW, g.sw, g.dw,
                         g.W - (qa * g.sw - g.pw), lanes, dlanes if bpart != NULL else NULL)
                bedge = bedge + wgrad_edges(grow, 0, qa, rows, R, edge, g)
                bedge = bedge + wgrad_edges(grow, qb, g.OW, rows, R, edge, g)
        for tap in range(g.KK):
            partials[(b * g.F + f) * g.KK + tap] = fold_lanes(lanes + tap * vl, vl) + edge[tap]
        if bpart != NULL:
            bpart[b * g.F + f] = fold_double(dlanes, vl) + bedge


cdef Py_ssize_t depthwise_scratch(str pass_name, const Geom *g,
                                  const floating_t *tag) noexcept:
    """Bytes of scratch per thread of the depthwise path of a pass."""
    return dw_scratch(g, 0 if pass_name == "forward" else 1 if pass_name == "backward_input"
                      else 2, tag).bytes


cdef void depthwise_forward_call(const floating_t *x, const Geom *g, const floating_t *w,
                                 const floating_t *bias, int bias_mode, int act,
                                 floating_t *y, int nt) except *:
    cdef Py_ssize_t per_thread = dw_scratch(g, 0, x).bytes
    cdef char *scratch = <char *> alloc_scratch(nt * per_thread)
    with nogil:
        depthwise_forward(x, g, w, bias, bias_mode, act, y, scratch, per_thread, nt)
    free(scratch)


cdef void depthwise_input_grad_call(const floating_t *gy, const floating_t *w, const Geom *g,
                                    floating_t *gx, int nt) except *:
    cdef Py_ssize_t per_thread = dw_scratch(g, 1, gy).bytes
    cdef char *scratch = <char *> alloc_scratch(nt * per_thread)
    with nogil:
        depthwise_input_grad(gy, w, g, gx, scratch, per_thread, nt)
    free(scratch)


cdef void depthwise_weight_grad_call(const floating_t *x, const floating_t *gy, const Geom *g,
                                     floating_t *gw, floating_t *bias_out, int nt) except *:
    """gw (F, KK) and, if bias_out is not NULL, bias_out (F,): the chunks' partial sums
    added in chunk order."""
    cdef Py_ssize_t per_thread = dw_scratch(g, 2, x).bytes, nch = dw_wgrad_chunks(g)
    cdef Py_ssize_t f, k, b
    cdef double acc
    cdef char *scratch = NULL
    cdef double *bpart = NULL
    cdef floating_t *partials = <floating_t *> alloc_scratch(nch * g.F * g.KK * sizeof(floating_t))
    try:
        scratch = <char *> alloc_scratch(nt * per_thread)
        if bias_out != NULL:
            bpart = <double *> alloc_scratch(nch * g.F * sizeof(double))
    except MemoryError:
        free(partials)
        free(scratch)
        raise
    with nogil:
        depthwise_weight_grad(x, gy, g, partials, bpart, scratch, per_thread, nt)
        for f in range(g.F):
            for k in range(g.KK):
                gw[f * g.KK + k] = partials[f * g.KK + k]
                for b in range(1, nch):
                    gw[f * g.KK + k] = gw[f * g.KK + k] + partials[(b * g.F + f) * g.KK + k]
            if bias_out != NULL:
                acc = 0
                for b in range(nch):
                    acc = acc + bpart[b * g.F + f]
                bias_out[f] = <floating_t> acc
    free(bpart)
    free(scratch)
    free(partials)
