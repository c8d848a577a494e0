# The depthwise path: layers with one input channel per group (Cg == 1), any number of
# filters per group, groups, stride, dilation, padding, 1-3-D.  Included by _conv.pyx.
#
# Design
# ------
# With one input channel per group there is no reduction over channels: filter f reads
# input channel c = f // Fg only, and each pass is a set of small correlations per
# (image, channel) plane.  A GEMM has nothing to block over (K = the window's taps, and
# its rows are Fg, usually 1), so this path works on whole planes instead, as XNNPACK's
# CHW depthwise kernels do: vectors run along the output rows, and every pass is one
# plane kernel (dwconv_kernel.h) called per (image, filter, output depth), y[i, q] =
# bias + sum over rows r and taps k of w[r, k] * row_r(i)[q * s + k * d], where the
# rows are the (depth, height) taps' input rows of output row i.  The 3 x 3 window keeps
# its taps (or its weight-gradient sums) in registers for the whole plane.
#
# - Padding: a task copies its input volume into a zero-padded scratch (DwPad), wide
#   enough that every row runs as whole vectors, its last one partial (loads run whole
#   over the scratch's slack; stores and the weight gradient's products are masked).
#   The scratch is zeroed once when it is allocated; tasks rewrite only the input's
#   place in it.  MobileNet's planes are 7 to 112 wide: with the padding and the ragged
#   end of a row left to scalar code (XNNPACK masks them, which needs reads past the
#   arrays), a 16-wide row ran half its outputs scalar and the path was 3-6x slower;
#   the copy costs one load and store per input element against the window's taps per
#   output.  The forward and weight gradient keep the contract's terms with the zero
#   padding (0 * inf is NaN, as in the explicitly padded convolution).
# - forward: y[n, f] plane od = bias + the KD * KH padded input rows of channel c of
#   each output row, with KW taps at stride sw, ReLU fused.  Tasks are (image, channel,
#   block of output rows): the rows are split only when the planes alone give a thread
#   fewer than 4 tasks, and small planes run several per task.  A task runs the
#   channel's Fg filters.
# - input gradient: along each axis a stride s splits grad_x into s phases (AxisPhase):
#   phase a's positions get only the taps k * d % s == a, as a stride-1 correlation of
#   grad_y with those taps flipped.  A task pads the channel's Fg planes of grad_y (so
#   0 * w terms appear that the true gradient lacks: non-finite weights take col2im, as
#   for the flipped and phased paths) and runs one plane kernel per (depth phase,
#   height phase, width phase, depth), with Fg x taps rows: stride 1 along W writes
#   grad_x's rows in place, stride 2 interleaves the two phases' rows (zip), larger
#   strides copy each phase out.  Positions no tap reaches are zeroed first.  Tasks
#   are (image, channel, block of each phase's rows).
# - weight gradient: grad_w[f, kd, kh, kw] = sum over images and output positions of
#   grad_y * x at the tap.  A task owns one filter and one chunk of images; the plane
#   kernel adds grad_y's rows times the taps' padded input rows into per-tap lane sums
#   (one vector accumulator per tap), with the bias gradient's sum of grad_y in double
#   lanes in the same pass.  The lanes are folded in a fixed order at the end of the
#   task and the chunks are added in order; the chunks depend only on N and F, so the
#   bits do not depend on the thread count.
#
# Every output is computed by the same sequence of operations whatever the task split,
# so all three passes give the same bits for any number of threads.

cdef extern from "dwconv_kernel.h":
    ctypedef void (*ck_dw_fwd_s)(float *, Py_ssize_t, Py_ssize_t, Py_ssize_t, const float *,
                                 Py_ssize_t, const Py_ssize_t *, Py_ssize_t, const float *,
                                 Py_ssize_t, const Py_ssize_t *, const float *, Py_ssize_t,
                                 int) noexcept nogil
    ctypedef void (*ck_dw_fwd_d)(double *, Py_ssize_t, Py_ssize_t, Py_ssize_t, const double *,
                                 Py_ssize_t, const Py_ssize_t *, Py_ssize_t, const double *,
                                 Py_ssize_t, const Py_ssize_t *, const double *, Py_ssize_t,
                                 int) noexcept nogil
    ctypedef void (*ck_dw_wgrad_s)(const float *, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                   const float *, Py_ssize_t, const Py_ssize_t *, Py_ssize_t,
                                   Py_ssize_t, const Py_ssize_t *, float *, double *) noexcept nogil
    ctypedef void (*ck_dw_wgrad_d)(const double *, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                   const double *, Py_ssize_t, const Py_ssize_t *, Py_ssize_t,
                                   Py_ssize_t, const Py_ssize_t *, double *,
                                   double *) noexcept nogil
    ctypedef void (*ck_dw_copy_s)(float *, Py_ssize_t, const float *, Py_ssize_t, Py_ssize_t,
                                  Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t) noexcept nogil
    ctypedef void (*ck_dw_copy_d)(double *, Py_ssize_t, const double *, Py_ssize_t, Py_ssize_t,
                                  Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t) noexcept nogil
    ctypedef void (*ck_dw_zip_s)(float *, const float *, const float *, Py_ssize_t) noexcept nogil
    ctypedef void (*ck_dw_zip_d)(double *, const double *, const double *,
                                 Py_ssize_t) noexcept nogil
    ctypedef struct ck_dw_kernels_s:
        ck_dw_fwd_s fwd
        ck_dw_wgrad_s wgrad
        ck_dw_copy_s copy
        ck_dw_zip_s zip
        Py_ssize_t vl
        const char *name
    ctypedef struct ck_dw_kernels_d:
        ck_dw_fwd_d fwd
        ck_dw_wgrad_d wgrad
        ck_dw_copy_d copy
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


cdef inline void dw_fwd(floating_t *y, Py_ssize_t ldy, Py_ssize_t nrows, Py_ssize_t n,
                        const floating_t *base, Py_ssize_t step, const Py_ssize_t *roff,
                        Py_ssize_t R, const floating_t *w, Py_ssize_t KW, const Py_ssize_t *coff,
                        const floating_t *bias, Py_ssize_t bias_ld, int relu) noexcept nogil:
    """The forward plane kernel (see dwconv_kernel_template.h)."""
    if floating_t is float:
        DWK_S.fwd(y, ldy, nrows, n, base, step, roff, R, w, KW, coff, bias, bias_ld, relu)
    else:
        DWK_D.fwd(y, ldy, nrows, n, base, step, roff, R, w, KW, coff, bias, bias_ld, relu)


cdef inline void dw_wgrad(const floating_t *gy, Py_ssize_t ldg, Py_ssize_t nrows, Py_ssize_t n,
                          const floating_t *base, Py_ssize_t step, const Py_ssize_t *roff,
                          Py_ssize_t R, Py_ssize_t KW, const Py_ssize_t *coff,
                          floating_t *lanes, double *blanes) noexcept nogil:
    """The weight-gradient plane kernel (see dwconv_kernel_template.h)."""
    if floating_t is float:
        DWK_S.wgrad(gy, ldg, nrows, n, base, step, roff, R, KW, coff, lanes, blanes)
    else:
        DWK_D.wgrad(gy, ldg, nrows, n, base, step, roff, R, KW, coff, lanes, blanes)


cdef inline void dw_copy(floating_t *dst, Py_ssize_t ldd, const floating_t *src,
                         Py_ssize_t lds, Py_ssize_t nrows, Py_ssize_t n, Py_ssize_t s,
                         Py_ssize_t left, Py_ssize_t lph) noexcept nogil:
    """Rows of n elements into the s stride phases of padded rows (element j at padded
    column j + left; phase a of a row starts at a * lph)."""
    if floating_t is float:
        DWK_S.copy(dst, ldd, src, lds, nrows, n, s, left, lph)
    else:
        DWK_D.copy(dst, ldd, src, lds, nrows, n, s, left, lph)


cdef inline void dw_zip(floating_t *dst, const floating_t *a, const floating_t *b,
                        Py_ssize_t n) noexcept nogil:
    """dst[2 q] = a[q], dst[2 q + 1] = b[q] for q < n."""
    if floating_t is float:
        DWK_S.zip(dst, a, b, n)
    else:
        DWK_D.zip(dst, a, b, n)


cdef inline Py_ssize_t dw_lanes(const floating_t *tag) noexcept nogil:
    """Elements per vector of the kernels for the dtype (the lanes per tap)."""
    if floating_t is float:
        return DWK_S.vl
    else:
        return DWK_D.vl


cdef inline Py_ssize_t dw_blocks(Py_ssize_t planes, Py_ssize_t rows, int nt) noexcept nogil:
    """Row blocks per plane: 1, or enough for 4 tasks per thread when the planes are few."""
    if planes >= 4 * nt:
        return 1
    return max(1, min(rows, (4 * nt + planes - 1) // max(planes, 1)))


cdef inline Py_ssize_t dw_planes_per_task(Py_ssize_t planes, Py_ssize_t nb,
                                          int nt) noexcept nogil:
    """Planes a task runs one after the other (1 when the planes' rows are split): about
    16 tasks per thread, so that small planes do not pay a task's index arithmetic each."""
    if nb > 1:
        return 1
    return max(1, planes // (16 * nt))


cdef struct DwPad:
    # The zero-padded copy of an input volume (forward, weight gradient): Dp x Hp rows,
    # row (i, j) being input row (i - pd, j - ph), each split into sw stride phases of Lph
    # elements (Lp = sw * Lph in all): padded column q * sw + k * dw (input column
    # that - pw) is element q + (k * dw) // sw of phase (k * dw) % sw, so every tap of
    # the window reads consecutive elements.  nq: outputs per row rounded up to whole
    # vectors; the elements (padded, then the lane sums) and bytes of a thread's scratch.
    Py_ssize_t Dp, Hp, Lph, Lp, nq, elems, bytes


cdef DwPad dw_pad(const Geom *g, bint lanes, const floating_t *tag) noexcept nogil:
    """The padded copy of the forward (lanes False) or weight gradient (True)."""
    cdef DwPad p
    p.nq = round_up(g.OW, dw_lanes(tag))
    p.Dp = (g.OD - 1) * g.sd + (g.KD - 1) * g.dd + 1
    p.Hp = (g.OH - 1) * g.sh + (g.KH - 1) * g.dh + 1
    p.Lph = p.nq + (g.KW - 1) * g.dw // g.sw
    p.Lp = g.sw * p.Lph
    p.elems = p.Dp * p.Hp * p.Lp + (g.KK * CK_DW_LANES_MAX if lanes else 0)
    p.bytes = p.elems * sizeof(floating_t) + (CK_DW_LANES_MAX * sizeof(double) if lanes else 0)
    p.bytes = (p.bytes + 63) // 64 * 64
    return p


cdef inline void pad_volume(const floating_t *plane, const Geom *g, const DwPad *p,
                            floating_t *dst) noexcept nogil:
    """Copy the input volume plane (D, H, W) to its place in the padded copy dst (whose
    rest stays zero): the rows and columns the windows reach."""
    cdef Py_ssize_t id, nh = min(g.H, p.Hp - g.ph)
    if nh <= 0:
        return
    for id in range(min(g.D, p.Dp - g.pd)):
        dw_copy(dst + ((id + g.pd) * p.Hp + g.ph) * p.Lp, p.Lp, plane + id * g.H * g.W, g.W,
                nh, g.W, g.sw, g.pw, p.Lph)


cdef void window_offsets(const Geom *g, const DwPad *p, Py_ssize_t *roff,
                         Py_ssize_t *coff) noexcept nogil:
    """roff[kd * KH + kh]: where tap (kd, kh)'s row starts, from its output row's first
    padded row; coff[kw]: where tap kw reads in that row, from output 0."""
    cdef Py_ssize_t kd, kh, kw
    for kd in range(g.KD):
        for kh in range(g.KH):
            roff[kd * g.KH + kh] = (kd * g.dd * p.Hp + kh * g.dh) * p.Lp
    for kw in range(g.KW):
        coff[kw] = kw * g.dw % g.sw * p.Lph + kw * g.dw // g.sw


cdef void depthwise_forward(const floating_t *x, const Geom *g, const floating_t *w,
                            const floating_t *bias, int bias_mode, int act, floating_t *y,
                            const Py_ssize_t *roff, char *scratch, int nt) noexcept nogil:
    """y = act(x * W + bias) for a layer with one input channel per group; roff holds
    window_offsets' row offsets, then its column offsets."""
    cdef DwPad P = dw_pad(g, False, x)
    cdef Py_ssize_t R = g.KD * g.KH, plane = g.OH * g.OW
    cdef Py_ssize_t nb = dw_blocks(g.N * g.C, g.OH, nt)
    cdef Py_ssize_t per = (g.OH + nb - 1) // nb
    cdef Py_ssize_t ppt = dw_planes_per_task(g.N * g.C, nb, nt)
    cdef Py_ssize_t ntasks = (g.N * g.C + ppt - 1) // ppt * nb
    cdef Py_ssize_t t, n, c, m, f, od, oh0, oh1, j, p0
    cdef floating_t *padded
    for t in prange(ntasks, num_threads=nt, schedule="static"):
        padded = <floating_t *> (scratch + threadid() * P.bytes)
        # planes p0 .. p0 + ppt (image n, channel c), rows oh0 .. oh1 of each
        p0 = t // nb * ppt
        n = p0 // g.C
        c = p0 - n * g.C
        oh0 = t % nb * per
        oh1 = min(g.OH, oh0 + per)
        for j in range(min(ppt, g.N * g.C - p0)):
            if oh0 >= oh1:
                break
            pad_volume(x + (n * g.C + c) * g.D * g.H * g.W, g, &P, padded)
            for m in range(g.Fg):
                f = c * g.Fg + m
                for od in range(g.OD):
                    dw_fwd(y + ((n * g.F + f) * g.OD + od) * plane + oh0 * g.OW, g.OW,
                           oh1 - oh0, g.OW, padded + (od * g.sd * P.Hp + oh0 * g.sh) * P.Lp,
                           g.sh * P.Lp, roff, R, w + f * g.KK, g.KW, roff + R,
                           NULL if bias_mode == 0 else bias + f if bias_mode == 1
                           else bias + (f * g.OD + od) * plane + oh0 * g.OW,
                           g.OW if bias_mode == 2 else 0, act == ACT_RELU)
            c = c + 1
            if c == g.C:
                c = 0
                n = n + 1


cdef struct DwPhases:
    # The input gradient's stride phases with taps along each axis (ph[axis][0 .. n[axis]),
    # first[axis][i] the first grad_x position of phase i), whether every phase of every
    # axis has taps (full), and the padded copy of grad_y: for each of the Fg filters,
    # Dg x Hg rows of Lg elements, grad_y's element (od, oh, ow) at (od + left_d,
    # oh + left_h, ow + left_w); nq: a phase's outputs per row rounded up to vectors;
    # hmax: the most rows of a height phase.  A thread's scratch: the rows' offsets
    # (noff of them) and KW column offsets, then in elements: the gathered taps (taps),
    # the padded copy (padded) and the phase rows (buf); bytes in all.
    AxisPhase *ph[3]
    Py_ssize_t *first[3]
    Py_ssize_t n[3]
    bint full
    Py_ssize_t left_d, left_h, left_w, Dg, Hg, Lg, nq, hmax
    Py_ssize_t noff, taps, padded, buf, elems, bytes


cdef inline Py_ssize_t tap_phases(Py_ssize_t K, Py_ssize_t d, Py_ssize_t s, Py_ssize_t p,
                                  Py_ssize_t size, AxisPhase *out,
                                  Py_ssize_t *first) noexcept nogil:
    """The phases a = k * d % s (k < K) of an axis, each once, in order of k, into out
    (and their first grad_x positions q0 * s + a - p into first); returns how many."""
    cdef Py_ssize_t k, j, a, n = 0
    cdef bint seen
    for k in range(K):
        a = k * d % s
        seen = False
        for j in range(k):
            seen = seen or j * d % s == a
        if seen:
            continue
        out[n] = axis_phase(K, d, s, p, size, a)
        first[n] = out[n].q0 * s + a - p
        n = n + 1
    return n


cdef DwPhases dw_phases(const Geom *g, AxisPhase *ph, Py_ssize_t *first,
                        const floating_t *tag) noexcept nogil:
    """The input gradient's phases and padded copy; ph and first hold KD + KH + KW
    entries."""
    cdef DwPhases P
    cdef Py_ssize_t vl = dw_lanes(tag), i, e
    cdef Py_ssize_t K[3]
    cdef Py_ssize_t dil[3]
    cdef Py_ssize_t s[3]
    cdef Py_ssize_t pad[3]
    cdef Py_ssize_t size[3]
    cdef Py_ssize_t out[3]
    cdef Py_ssize_t left[3]
    cdef Py_ssize_t ext[3]
    K[0], K[1], K[2] = g.KD, g.KH, g.KW
    dil[0], dil[1], dil[2] = g.dd, g.dh, g.dw
    s[0], s[1], s[2] = g.sd, g.sh, g.sw
    pad[0], pad[1], pad[2] = g.pd, g.ph, g.pw
    size[0], size[1], size[2] = g.D, g.H, g.W
    out[0], out[1], out[2] = g.OD, g.OH, g.OW
    P.full = True
    P.ph[0], P.first[0] = ph, first
    P.ph[1], P.first[1] = ph + g.KD, first + g.KD
    P.ph[2], P.first[2] = ph + g.KD + g.KH, first + g.KD + g.KH
    P.nq = 0
    P.hmax = 0
    for i in range(3):
        P.n[i] = tap_phases(K[i], dil[i], s[i], pad[i], size[i], P.ph[i], P.first[i])
        P.full = P.full and P.n[i] == s[i]
        # phase e's output u reads grad_y[u - pad + j * dil], j < n: padded on the left
        # by the largest pad, and on the right up to the last read of every phase
        left[i] = 0
        for e in range(P.n[i]):
            left[i] = max(left[i], P.ph[i][e].pad)
        ext[i] = left[i] + out[i]
        for e in range(P.n[i]):
            ext[i] = max(ext[i], left[i] - P.ph[i][e].pad
                         + (round_up(P.ph[i][e].count, vl) if i == 2 else P.ph[i][e].count)
                         + (P.ph[i][e].n - 1) * P.ph[i][e].dil)
            if i == 2:
                P.nq = max(P.nq, round_up(P.ph[i][e].count, vl))
            if i == 1:
                P.hmax = max(P.hmax, P.ph[i][e].count)
    P.left_d, P.left_h, P.left_w = left[0], left[1], left[2]
    P.Dg, P.Hg, P.Lg = ext[0], ext[1], ext[2]
    P.noff = g.Fg * g.KD * g.KH * P.n[2]
    P.taps = 0
    P.padded = P.taps + P.noff * g.KW
    P.buf = P.padded + g.Fg * P.Dg * P.Hg * P.Lg
    P.elems = P.buf + min(g.sw, 2) * P.hmax * P.nq
    P.bytes = (P.noff + g.KW) * sizeof(Py_ssize_t) + P.elems * sizeof(floating_t)
    P.bytes = (P.bytes + 63) // 64 * 64
    return P


cdef void depthwise_input_grad(const floating_t *gy, const floating_t *w, const Geom *g,
                               floating_t *gx, const DwPhases *P, char *scratch,
                               int nt) noexcept nogil:
    """grad_x for a layer with one input channel per group (see the design above)."""
    cdef Py_ssize_t nb = dw_blocks(g.N * g.C, P.hmax, nt), plane = g.D * g.H * g.W
    cdef Py_ssize_t R = g.Fg * g.KD * g.KH
    cdef Py_ssize_t t, n, c, m, f, e0, e1, e2, jd, jh, jw, r, vd, h0, h1, per, id, ih, i, u
    cdef Py_ssize_t even, nw, tap0
    cdef const AxisPhase *pd
    cdef const AxisPhase *ph
    cdef const AxisPhase *pw
    cdef Py_ssize_t *roff
    cdef Py_ssize_t *coff
    cdef floating_t *taps
    cdef floating_t *padded
    cdef floating_t *buf
    cdef floating_t *gxc
    cdef floating_t *dst
    if not P.full:
        memset(gx, 0, g.N * g.C * plane * sizeof(floating_t))  # positions no tap reaches
    for t in prange(g.N * g.C * nb, num_threads=nt, schedule="static"):
        roff = <Py_ssize_t *> (scratch + threadid() * P.bytes)
        taps = <floating_t *> (roff + P.noff + g.KW) + P.taps
        padded = <floating_t *> (roff + P.noff + g.KW) + P.padded
        buf = <floating_t *> (roff + P.noff + g.KW) + P.buf
        n = t // (g.C * nb)
        c = t // nb % g.C
        gxc = gx + (n * g.C + c) * plane
        # the channel's Fg grad_y planes into the padded copy
        for m in range(g.Fg):
            for vd in range(g.OD):
                dw_copy(padded + ((m * P.Dg + P.left_d + vd) * P.Hg + P.left_h) * P.Lg,
                        P.Lg, gy + ((n * g.F + c * g.Fg + m) * g.OD + vd) * g.OH * g.OW,
                        g.OW, g.OH, g.OW, 1, P.left_w, P.Lg)
        for e0 in range(P.n[0]):
            pd = &P.ph[0][e0]
            for e1 in range(P.n[1]):
                ph = &P.ph[1][e1]
                # this task's block of the height phase's rows
                per = (ph.count + nb - 1) // nb
                h0 = t % nb * per
                h1 = min(ph.count, h0 + per)
                if h0 >= h1:
                    continue
                # per width phase e2, rows r = (m, jd, jh) at roff[e2 * R + r]: filter
                # m's taps kd = kmax - jd * kstep (and kh, kw) flipped, reading grad_y at
                # u - pad + j * dil on each axis; their taps from taps[R * tap0]
                tap0 = 0
                for e2 in range(P.n[2]):
                    pw = &P.ph[2][e2]
                    for r in range(g.Fg * pd.n * ph.n):
                        m = r // (pd.n * ph.n)
                        jd = r // ph.n % pd.n
                        jh = r % ph.n
                        f = c * g.Fg + m
                        roff[e2 * R + r] = (((m * P.Dg + P.left_d - pd.pad + jd * pd.dil) * P.Hg
                                             + P.left_h - ph.pad + jh * ph.dil + h0) * P.Lg
                                            + P.left_w - pw.pad)
                        for jw in range(pw.n):
                            taps[R * tap0 + r * pw.n + jw] = w[
                                f * g.KK + ((pd.kmax - jd * pd.kstep) * g.KH + ph.kmax
                                            - jh * ph.kstep) * g.KW + pw.kmax - jw * pw.kstep]
                    tap0 = tap0 + pw.n
                coff = roff + P.noff  # the width phase's taps read u + j * dil
                for vd in range(pd.count):
                    id = P.first[0][e0] + vd * g.sd
                    ih = P.first[1][e1] + h0 * g.sh
                    dst = gxc + (id * g.H + ih) * g.W
                    tap0 = 0
                    for e2 in range(P.n[2]):
                        pw = &P.ph[2][e2]
                        nw = pw.n
                        for jw in range(nw):
                            coff[jw] = jw * pw.dil
                        if g.sw == 1:  # one phase, straight into grad_x's rows
                            dw_fwd(dst, g.sh * g.W, h1 - h0, g.W, padded + vd * P.Hg * P.Lg,
                                   P.Lg, roff, g.Fg * pd.n * ph.n, taps, nw, coff, NULL, 0,
                                   False)
                            continue
                        dw_fwd(buf + (e2 if g.sw == 2 else 0) * P.hmax * P.nq, P.nq, h1 - h0,
                               pw.count, padded + vd * P.Hg * P.Lg, P.Lg, roff + e2 * R,
                               g.Fg * pd.n * ph.n, taps + R * tap0, nw, coff, NULL, 0, False)
                        tap0 = tap0 + nw
                        if g.sw > 2:
                            for i in range(h1 - h0):
                                for u in range(pw.count):
                                    dst[i * g.sh * g.W + P.first[2][e2] + u * g.sw] = (
                                        buf[i * P.nq + u])
                    if g.sw == 2:
                        # the phases into grad_x's rows, even columns from the one whose
                        # first position is 0 (a phase without taps leaves its buffer
                        # rows zero)
                        even = 0 if P.first[2][0] == 0 else 1
                        for i in range(h1 - h0):
                            dw_zip(dst + i * g.sh * g.W, buf + (even * P.hmax + i) * P.nq,
                                   buf + ((1 - even) * P.hmax + i) * P.nq, g.W // 2)
                            if g.W % 2:
                                dst[i * g.sh * g.W + g.W - 1] = buf[(even * P.hmax + i) * P.nq
                                                                    + g.W // 2]


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
                                floating_t *partials, double *bpart, const Py_ssize_t *roff,
                                char *scratch, int nt) noexcept nogil:
    """partials[b, f, tap] and (bpart not NULL) bpart[b, f]: the weight and bias
    gradient sums over chunk b of the images, for a layer with one input channel per
    group (see the design above); roff holds window_offsets' row offsets, then its
    column offsets."""
    cdef DwPad P = dw_pad(g, True, x)
    cdef Py_ssize_t R = g.KD * g.KH, plane = g.OH * g.OW, vl = dw_lanes(x)
    cdef Py_ssize_t nch = dw_wgrad_chunks(g), per = (g.N + nch - 1) // nch
    cdef Py_ssize_t t, b, f, n, od, tap
    cdef floating_t *padded
    cdef floating_t *lanes
    cdef double *dlanes
    for t in prange(g.F * nch, num_threads=nt, schedule="static"):
        padded = <floating_t *> (scratch + threadid() * P.bytes)
        lanes = padded + P.Dp * P.Hp * P.Lp
        dlanes = <double *> (padded + P.elems)
        memset(lanes, 0, g.KK * vl * sizeof(floating_t))
        memset(dlanes, 0, vl * sizeof(double))
        f = t // nch
        b = t % nch
        for n in range(b * per, min(g.N, (b + 1) * per)):
            pad_volume(x + (n * g.C + f // g.Fg) * g.D * g.H * g.W, g, &P, padded)
            for od in range(g.OD):
                dw_wgrad(gy + ((n * g.F + f) * g.OD + od) * plane, g.OW, g.OH, g.OW,
                         padded + od * g.sd * P.Hp * P.Lp, g.sh * P.Lp, roff, R, g.KW,
                         roff + R, lanes, dlanes if bpart != NULL else NULL)
        for tap in range(g.KK):
            partials[(b * g.F + f) * g.KK + tap] = fold_lanes(lanes + tap * vl, vl)
        if bpart != NULL:
            bpart[b * g.F + f] = fold_double(dlanes, vl)


cdef Py_ssize_t depthwise_scratch(str pass_name, const Geom *g,
                                  const floating_t *tag) except -1:
    """Bytes of scratch per thread of the depthwise path of a pass."""
    cdef AxisPhase *ph
    cdef Py_ssize_t *first
    cdef Py_ssize_t nbytes
    cdef bint lanes = pass_name == "backward_weight"
    if pass_name != "backward_input":
        return dw_pad(g, lanes, tag).bytes
    ph = <AxisPhase *> alloc_scratch((g.KD + g.KH + g.KW) * sizeof(AxisPhase))
    first = <Py_ssize_t *> alloc_scratch((g.KD + g.KH + g.KW) * sizeof(Py_ssize_t))
    nbytes = dw_phases(g, ph, first, tag).bytes
    free(ph)
    free(first)
    return nbytes


cdef void depthwise_forward_call(const floating_t *x, const Geom *g, const floating_t *w,
                                 const floating_t *bias, int bias_mode, int act,
                                 floating_t *y, int nt) except *:
    cdef DwPad P = dw_pad(g, False, x)
    cdef Py_ssize_t *roff = <Py_ssize_t *> alloc_scratch((g.KD * g.KH + g.KW) * sizeof(Py_ssize_t))
    cdef char *scratch
    try:
        scratch = <char *> alloc_scratch(nt * P.bytes)  # zero: the padding
    except MemoryError:
        free(roff)
        raise
    with nogil:
        window_offsets(g, &P, roff, roff + g.KD * g.KH)
        depthwise_forward(x, g, w, bias, bias_mode, act, y, roff, scratch, nt)
    free(scratch)
    free(roff)


cdef void depthwise_input_grad_call(const floating_t *gy, const floating_t *w, const Geom *g,
                                    floating_t *gx, int nt) except *:
    cdef AxisPhase *ph = NULL
    cdef Py_ssize_t *first = NULL
    cdef char *scratch = NULL
    cdef DwPhases P
    try:
        ph = <AxisPhase *> alloc_scratch((g.KD + g.KH + g.KW) * sizeof(AxisPhase))
        first = <Py_ssize_t *> alloc_scratch((g.KD + g.KH + g.KW) * sizeof(Py_ssize_t))
        P = dw_phases(g, ph, first, gy)
        scratch = <char *> alloc_scratch(nt * P.bytes)  # zero: the padding
        with nogil:
            depthwise_input_grad(gy, w, g, gx, &P, scratch, nt)
    finally:
        free(scratch)
        free(first)
        free(ph)


cdef void depthwise_weight_grad_call(const floating_t *x, const floating_t *gy, const Geom *g,
                                     floating_t *gw, floating_t *bias_out, int nt) except *:
    """gw (F, KK) and, if bias_out is not NULL, bias_out (F,): the chunks' partial sums
    added in chunk order."""
    cdef DwPad P = dw_pad(g, True, x)
    cdef Py_ssize_t nch = dw_wgrad_chunks(g)
    cdef Py_ssize_t f, k, b
    cdef double acc
    cdef char *scratch = NULL
    cdef double *bpart = NULL
    cdef Py_ssize_t *roff = NULL
    cdef floating_t *partials = NULL
    try:
        partials = <floating_t *> alloc_scratch(nch * g.F * g.KK * sizeof(floating_t))
        roff = <Py_ssize_t *> alloc_scratch((g.KD * g.KH + g.KW) * sizeof(Py_ssize_t))
        scratch = <char *> alloc_scratch(nt * P.bytes)  # zero: the padding
        if bias_out != NULL:
            bpart = <double *> alloc_scratch(nch * g.F * sizeof(double))
        with nogil:
            window_offsets(g, &P, roff, roff + g.KD * g.KH)
            depthwise_weight_grad(x, gy, g, partials, bpart, roff, scratch, nt)
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
    finally:
        free(bpart)
        free(scratch)
        free(roff)
        free(partials)
