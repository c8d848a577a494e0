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
# - Padding: a task copies its input volume once into a zero-padded scratch (DwPad),
#   wide enough that every output row runs as whole vectors, its last one partial (the
#   extra outputs are computed into a row buffer and dropped, the weight gradient masks
#   their products).  MobileNet's planes are 7 to 112 wide: with the padding and the
#   ragged end of a row left to scalar code (XNNPACK masks them, which needs reads past
#   the arrays), a 16-wide row ran half its outputs scalar and the path was 3-6x slower
#   than this; the copy costs one load and store per input element against the
#   window's taps per output.  The forward and weight gradient keep the contract's terms
#   with the zero padding (0 * inf is NaN, as in the explicitly padded convolution).
#   The input gradient pads grad_y's rows along W only (its rows outside grad_y are
#   skipped): that adds 0 * w terms that the true gradient lacks, so non-finite weights
#   take col2im (as for the flipped and phased paths).
# - forward: y[n, f] row (od, oh) = bias + the KD * KH padded input rows of channel c,
#   each with KW taps at stride sw.  3 x 3 windows run three rows per pass (9 taps held
#   in registers, one load and store of the output vector).  Tasks are (image, channel,
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
#   output row it adds grad_y's row times the taps' padded input rows into per-tap lane
#   sums (one vector accumulator per tap; the 3 x 3 window's nine stay in registers
#   along the row), with the bias gradient's sum of grad_y in double lanes in the same
#   pass.  The lanes are folded in a fixed order at the end of the task and the chunks
#   are added in order; the chunks depend only on N and F, so the bits do not depend on
#   the thread count.
#
# Every output is computed by the same sequence of operations whatever the task split,
# so all three passes give the same bits for any number of threads.

cdef extern from "dwconv_kernel.h":
    ctypedef void (*ck_dw_fwd_s)(float *, Py_ssize_t, const float **, Py_ssize_t,
                                 const float *, Py_ssize_t, Py_ssize_t, Py_ssize_t) noexcept nogil
    ctypedef void (*ck_dw_fwd_d)(double *, Py_ssize_t, const double **, Py_ssize_t,
                                 const double *, Py_ssize_t, Py_ssize_t,
                                 Py_ssize_t) noexcept nogil
    ctypedef void (*ck_dw_wgrad_s)(const float *, Py_ssize_t, const float **, Py_ssize_t,
                                   Py_ssize_t, Py_ssize_t, Py_ssize_t, float *,
                                   double *) noexcept nogil
    ctypedef void (*ck_dw_wgrad_d)(const double *, Py_ssize_t, const double **, Py_ssize_t,
                                   Py_ssize_t, Py_ssize_t, Py_ssize_t, double *,
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
                        const floating_t *w, Py_ssize_t KW, Py_ssize_t s,
                        Py_ssize_t d) noexcept nogil:
    """y[q] += sum over r < R, k < KW of w[r * KW + k] * rows[r][q * s + k * d], q < n
    (rounded up to whole vectors for s <= 2, see dwconv_kernel_template.h)."""
    if floating_t is float:
        DWK_S.fwd(y, n, rows, R, w, KW, s, d)
    else:
        DWK_D.fwd(y, n, rows, R, w, KW, s, d)


cdef inline void dw_wgrad(const floating_t *gy, Py_ssize_t n, const floating_t **rows,
                          Py_ssize_t R, Py_ssize_t KW, Py_ssize_t s, Py_ssize_t d,
                          floating_t *lanes, double *blanes) noexcept nogil:
    """Per-tap lane sums of gy[q] * rows[r][q * s + k * d] (see dwconv_kernel_template.h)."""
    if floating_t is float:
        DWK_S.wgrad(gy, n, rows, R, KW, s, d, lanes, blanes)
    else:
        DWK_D.wgrad(gy, n, rows, R, KW, s, d, lanes, blanes)


cdef inline void dw_zip(floating_t *dst, const floating_t *a, const floating_t *b,
                        Py_ssize_t n) noexcept nogil:
    """dst[2 q] = a[q], dst[2 q + 1] = b[q] for q < n."""
    if floating_t is float:
        DWK_S.zip(dst, a, b, n)
    else:
        DWK_D.zip(dst, a, b, n)


cdef inline Py_ssize_t dw_lanes(const floating_t *tag) noexcept nogil:
    """Elements per vector of the row kernels for the dtype (the lanes per tap)."""
    if floating_t is float:
        return DWK_S.vl
    else:
        return DWK_D.vl


cdef inline Py_ssize_t dw_tasks(Py_ssize_t planes, Py_ssize_t rows, int nt) noexcept nogil:
    """Row blocks per plane: 1, or enough for 4 tasks per thread when the planes are few."""
    if planes >= 4 * nt:
        return 1
    return max(1, min(rows, (4 * nt + planes - 1) // max(planes, 1)))


cdef struct DwPad:
    # The padded scratch of one pass and a thread's share of scratch, in bytes: ptrs
    # pointer-sized slots, then elements: the padded copy (padded, of Dp x Hp rows of
    # Lp elements, its column 0 being input column -left), a row buffer (buf), the
    # gathered taps (taps), the lane sums (lanes), then dlanes doubles.  nq: outputs a
    # kernel call computes per row (whole vectors for strides 1 and 2).
    Py_ssize_t nq, Dp, Hp, Lp, left
    Py_ssize_t ptrs, padded, buf, taps, lanes, elems, dlanes, bytes


cdef DwPad dw_pad(const Geom *g, int pass_code, const floating_t *tag) noexcept nogil:
    """The padded scratch of a depthwise pass: 0 forward, 1 input, 2 weight gradient."""
    cdef DwPad p
    cdef Py_ssize_t vl = dw_lanes(tag), a, nq, R = g.KD * g.KH, span
    cdef AxisPhase ph
    if pass_code == 1:
        # grad_y's rows (Fg planes of them), padded along W for every stride phase's
        # correlation: phase a reads row[left - pad_a + u + j * dil_a], u < nq_a
        p.left = 0
        for a in range(g.sw):
            ph = axis_phase(g.KW, g.dw, g.sw, g.pw, g.W, a)
            if ph.n > 0:
                p.left = max(p.left, ph.pad)
        p.Lp = p.left + g.OW
        p.nq = 0
        for a in range(g.sw):
            ph = axis_phase(g.KW, g.dw, g.sw, g.pw, g.W, a)
            nq = round_up(ph.count, vl)
            p.nq = max(p.nq, nq)
            if ph.n > 0:
                p.Lp = max(p.Lp, p.left - ph.pad + nq + (ph.n - 1) * ph.dil)
        p.Dp = g.Fg * g.OD
        p.Hp = g.OH
        p.ptrs = 2 * g.Fg * R
        p.buf = p.Dp * p.Hp * p.Lp
        p.taps = p.buf + g.sw * p.nq
        p.lanes = p.taps + g.Fg * R * g.KW
        p.elems = p.lanes
        p.dlanes = 0
    else:
        # the input volume over the windows' reach, zero outside the input
        p.nq = round_up(g.OW, vl) if g.sw <= 2 else g.OW
        p.left = g.pw
        p.Dp = (g.OD - 1) * g.sd + (g.KD - 1) * g.dd + 1
        p.Hp = (g.OH - 1) * g.sh + (g.KH - 1) * g.dh + 1
        p.Lp = (p.nq - 1) * g.sw + (g.KW - 1) * g.dw + 2
        p.ptrs = R
        p.buf = p.Dp * p.Hp * p.Lp
        p.taps = p.buf + p.nq
        p.lanes = p.taps
        p.elems = p.lanes + (g.KK * CK_DW_LANES_MAX if pass_code == 2 else 0)
        p.dlanes = CK_DW_LANES_MAX if pass_code == 2 else 0
    p.padded = 0
    p.bytes = p.ptrs * sizeof(floating_t *) + p.elems * sizeof(floating_t) + p.dlanes * sizeof(double)
    p.bytes = (p.bytes + 63) // 64 * 64
    return p


cdef inline void pad_row(const floating_t *src, Py_ssize_t n, Py_ssize_t left, Py_ssize_t Lp,
                         floating_t *dst) noexcept nogil:
    """dst[0 .. Lp) = src[j - left] where 0 <= j - left < n (src NULL: none), else 0."""
    cdef Py_ssize_t z = min(left, Lp), m = 0
    memset(dst, 0, z * sizeof(floating_t))
    if src != NULL:
        m = max(0, min(n, Lp - left))
        memcpy(dst + z, src, m * sizeof(floating_t))
    memset(dst + z + m, 0, (Lp - z - m) * sizeof(floating_t))


cdef inline void pad_volume(const floating_t *plane, const Geom *g, const DwPad *p,
                            floating_t *dst) noexcept nogil:
    """The input volume plane (D, H, W) over the windows' reach: padded row (i, j) is
    input row (i - pd, j - ph), zero outside the input."""
    cdef Py_ssize_t i, j, id, ih
    for i in range(p.Dp):
        id = i - g.pd
        for j in range(p.Hp):
            ih = j - g.ph
            pad_row(plane + (id * g.H + ih) * g.W if 0 <= id < g.D and 0 <= ih < g.H
                    else NULL, g.W, p.left, p.Lp, dst + (i * p.Hp + j) * p.Lp)


cdef inline void window_rows(const floating_t *padded, const Geom *g, const DwPad *p,
                             Py_ssize_t od, Py_ssize_t oh,
                             const floating_t **rows) noexcept nogil:
    """rows[kd * KH + kh]: the padded row tap (kd, kh) of output row (od, oh) reads."""
    cdef Py_ssize_t kd, kh
    for kd in range(g.KD):
        for kh in range(g.KH):
            rows[kd * g.KH + kh] = padded + ((od * g.sd + kd * g.dd) * p.Hp
                                             + oh * g.sh + kh * g.dh) * p.Lp


cdef void depthwise_forward(const floating_t *x, const Geom *g, const floating_t *w,
                            const floating_t *bias, int bias_mode, int act, floating_t *y,
                            char *scratch, int nt) noexcept nogil:
    """y = act(x * W + bias) for a layer with one input channel per group."""
    cdef DwPad P = dw_pad(g, 0, x)
    cdef Py_ssize_t R = g.KD * g.KH, nrows = g.OD * g.OH
    cdef Py_ssize_t nb = dw_tasks(g.N * g.C, nrows, nt)
    cdef Py_ssize_t per = (nrows + nb - 1) // nb
    cdef bint in_place = P.nq == g.OW
    cdef Py_ssize_t t, n, c, m, f, i, q
    cdef floating_t b
    cdef const floating_t **rows
    cdef floating_t *padded
    cdef floating_t *out
    cdef floating_t *yrow
    for t in prange(g.N * g.C * nb, num_threads=nt, schedule="static"):
        rows = <const floating_t **> (scratch + threadid() * P.bytes)
        padded = <floating_t *> (rows + P.ptrs) + P.padded
        n = t // (g.C * nb)
        c = t // nb % g.C
        pad_volume(x + (n * g.C + c) * g.D * g.H * g.W, g, &P, padded)
        for i in range(t % nb * per, min(nrows, (t % nb + 1) * per)):
            window_rows(padded, g, &P, i // g.OH, i % g.OH, rows)
            for m in range(g.Fg):
                f = c * g.Fg + m
                yrow = y + ((n * g.F + f) * nrows + i) * g.OW
                # whole vectors straight into y when the row is made of them
                out = yrow if in_place else padded + P.buf
                if bias_mode == 1:
                    b = bias[f]
                    for q in range(P.nq):
                        out[q] = b
                elif bias_mode == 2:
                    memcpy(out, bias + (f * nrows + i) * g.OW, g.OW * sizeof(floating_t))
                    memset(out + g.OW, 0, (P.nq - g.OW) * sizeof(floating_t))
                else:
                    memset(out, 0, P.nq * sizeof(floating_t))
                dw_fwd(out, g.OW, rows, R, w + f * g.KK, g.KW, g.sw, g.dw)
                if act != ACT_NONE or not in_place:
                    for q in range(g.OW):
                        yrow[q] = activate(out[q], act)


cdef void depthwise_input_grad(const floating_t *gy, const floating_t *w, const Geom *g,
                               floating_t *gx, char *scratch, int nt) noexcept nogil:
    """grad_x for a layer with one input channel per group (see the design above)."""
    cdef DwPad P = dw_pad(g, 1, gy)
    cdef Py_ssize_t nrows = g.D * g.H, R = g.Fg * g.KD * g.KH, orows = g.OD * g.OH
    cdef Py_ssize_t nb = dw_tasks(g.N * g.C, nrows, nt)
    cdef Py_ssize_t per = (nrows + nb - 1) // nb
    cdef Py_ssize_t t, n, c, i, id, ih, m, f, kd, kh, od, oh, nr, r, j, a, u, e, lo, col
    cdef bint in_place = g.sw == 1 and P.nq == g.W
    cdef AxisPhase ph
    cdef const floating_t **rows
    cdef Py_ssize_t *kwof
    cdef floating_t *padded
    cdef floating_t *taps
    cdef floating_t *out
    cdef floating_t *gxrow
    for t in prange(g.N * g.C * nb, num_threads=nt, schedule="static"):
        rows = <const floating_t **> (scratch + threadid() * P.bytes)
        kwof = <Py_ssize_t *> (rows + R)
        padded = <floating_t *> (rows + P.ptrs) + P.padded
        taps = padded + P.taps
        n = t // (g.C * nb)
        c = t // nb % g.C
        # the channel's Fg grad_y planes, rows padded along W
        for j in range(g.Fg * orows):
            pad_row(gy + ((n * g.F + c * g.Fg) * orows + j) * g.OW, g.OW, P.left, P.Lp,
                    padded + j * P.Lp)
        for i in range(t % nb * per, min(nrows, (t % nb + 1) * per)):
            id = i // g.H
            ih = i % g.H
            gxrow = gx + ((n * g.C + c) * nrows + i) * g.W
            # the grad_y rows that reach this row, and the offset in w of their window
            # row (f * KK + (kd * KH + kh) * KW)
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
                        rows[nr] = padded + ((m * g.OD + od // g.sd) * g.OH + oh // g.sh) * P.Lp
                        kwof[nr] = f * g.KK + (kd * g.KH + kh) * g.KW
                        nr = nr + 1
            for a in range(g.sw):
                ph = axis_phase(g.KW, g.dw, g.sw, g.pw, g.W, a)
                out = gxrow if in_place else padded + P.buf + a * P.nq
                memset(out, 0, round_up(ph.count, dw_lanes(gy)) * sizeof(floating_t))
                if ph.n == 0 or nr == 0:
                    continue
                # tap j of the phase is w's kw = kmax - j * kstep, flipped; the rows
                # start where the phase's first output reads
                for r in range(nr):
                    for j in range(ph.n):
                        taps[r * ph.n + j] = w[kwof[r] + ph.kmax - j * ph.kstep]
                    rows[r] = rows[r] + P.left - ph.pad
                dw_fwd(out, ph.count, rows, nr, taps, ph.n, 1, ph.dil)
                for r in range(nr):
                    rows[r] = rows[r] - (P.left - ph.pad)
            if in_place:
                continue
            # the phases into grad_x's row: phase a's u-th is column (q0 + u) s + a - p
            if g.sw == 1:
                memcpy(gxrow, padded + P.buf, g.W * sizeof(floating_t))
            elif g.sw == 2:
                ph = axis_phase(g.KW, g.dw, 2, g.pw, g.W, 0)
                e = 0 if ph.q0 * 2 - g.pw == 0 else 1  # the phase of the even columns
                lo = g.W // 2
                dw_zip(gxrow, padded + P.buf + e * P.nq, padded + P.buf + (1 - e) * P.nq, lo)
                if g.W % 2:
                    gxrow[g.W - 1] = padded[P.buf + e * P.nq + lo]
            else:
                for a in range(g.sw):
                    ph = axis_phase(g.KW, g.dw, g.sw, g.pw, g.W, a)
                    col = ph.q0 * g.sw + a - g.pw
                    for u in range(ph.count):
                        gxrow[col + u * g.sw] = padded[P.buf + a * P.nq + u]


cdef inline floating_t fold_lanes(floating_t *v, Py_ssize_t n) noexcept nogil:
    """v[0] + ... + v[n - 1] (n a power of two) folded in halves: a fixed order."""
    cdef Py_ssize_t h = n // 2, j
    while h > 0:
        for j in range(h):
            v[j] = v[j] + v[j + h]
        h = h // 2
    return v[0]


cdef inline double fold_double(double *v, Py_ssize_t n) noexcept nogil:
    """fold_lanes in double."""
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
                                int nt) noexcept nogil:
    """partials[b, f, tap] and (bpart not NULL) bpart[b, f]: the weight and bias
    gradient sums over chunk b of the images, for a layer with one input channel per
    group (see the design above)."""
    cdef DwPad P = dw_pad(g, 2, x)
    cdef Py_ssize_t R = g.KD * g.KH, nrows = g.OD * g.OH, vl = dw_lanes(x)
    cdef Py_ssize_t nch = dw_wgrad_chunks(g), per = (g.N + nch - 1) // nch
    cdef bint in_place = P.nq == g.OW
    cdef Py_ssize_t t, b, f, n, i, tap
    cdef const floating_t **rows
    cdef floating_t *padded
    cdef floating_t *lanes
    cdef double *dlanes
    cdef const floating_t *grow
    for t in prange(g.F * nch, num_threads=nt, schedule="static"):
        rows = <const floating_t **> (scratch + threadid() * P.bytes)
        padded = <floating_t *> (rows + P.ptrs) + P.padded
        lanes = padded + P.lanes
        dlanes = <double *> (padded + P.elems)
        memset(lanes, 0, g.KK * vl * sizeof(floating_t))
        memset(dlanes, 0, vl * sizeof(double))
        f = t // nch
        b = t % nch
        for n in range(b * per, min(g.N, (b + 1) * per)):
            pad_volume(x + (n * g.C + f // g.Fg) * g.D * g.H * g.W, g, &P, padded)
            for i in range(nrows):
                window_rows(padded, g, &P, i // g.OH, i % g.OH, rows)
                grow = gy + ((n * g.F + f) * nrows + i) * g.OW
                if not in_place:
                    # grad_y's row, zero up to whole vectors
                    memcpy(padded + P.buf, grow, g.OW * sizeof(floating_t))
                    memset(padded + P.buf + g.OW, 0, (P.nq - g.OW) * sizeof(floating_t))
                    grow = padded + P.buf
                dw_wgrad(grow, g.OW, rows, R, g.KW, g.sw, g.dw, lanes,
                         dlanes if bpart != NULL else NULL)
        for tap in range(g.KK):
            partials[(b * g.F + f) * g.KK + tap] = fold_lanes(lanes + tap * vl, vl)
        if bpart != NULL:
            bpart[b * g.F + f] = fold_double(dlanes, vl)


cdef Py_ssize_t depthwise_scratch(str pass_name, const Geom *g,
                                  const floating_t *tag) noexcept:
    """Bytes of scratch per thread of the depthwise path of a pass."""
    return dw_pad(g, 0 if pass_name == "forward" else 1 if pass_name == "backward_input"
                  else 2, tag).bytes


cdef void depthwise_forward_call(const floating_t *x, const Geom *g, const floating_t *w,
                                 const floating_t *bias, int bias_mode, int act,
                                 floating_t *y, int nt) except *:
    cdef char *scratch = <char *> alloc_scratch(nt * dw_pad(g, 0, x).bytes)
    with nogil:
        depthwise_forward(x, g, w, bias, bias_mode, act, y, scratch, nt)
    free(scratch)


cdef void depthwise_input_grad_call(const floating_t *gy, const floating_t *w, const Geom *g,
                                    floating_t *gx, int nt) except *:
    cdef char *scratch = <char *> alloc_scratch(nt * dw_pad(g, 1, gy).bytes)
    with nogil:
        depthwise_input_grad(gy, w, g, gx, scratch, nt)
    free(scratch)


cdef void depthwise_weight_grad_call(const floating_t *x, const floating_t *gy, const Geom *g,
                                     floating_t *gw, floating_t *bias_out, int nt) except *:
    """gw (F, KK) and, if bias_out is not NULL, bias_out (F,): the chunks' partial sums
    added in chunk order."""
    cdef Py_ssize_t nch = dw_wgrad_chunks(g)
    cdef Py_ssize_t f, k, b
    cdef double acc
    cdef char *scratch = NULL
    cdef double *bpart = NULL
    cdef floating_t *partials = <floating_t *> alloc_scratch(nch * g.F * g.KK * sizeof(floating_t))
    try:
        scratch = <char *> alloc_scratch(nt * dw_pad(g, 2, x).bytes)
        if bias_out != NULL:
            bpart = <double *> alloc_scratch(nch * g.F * sizeof(double))
    except MemoryError:
        free(partials)
        free(scratch)
        raise
    with nogil:
        depthwise_weight_grad(x, gy, g, partials, bpart, scratch, nt)
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
