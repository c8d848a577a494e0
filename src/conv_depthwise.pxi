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
# bias + sum over rows r and taps k of w[r, k] * row_r(i)[q + coff[k]], where the rows
# are the (depth, height) taps' input rows of output row i.  The 3 x 3 window keeps its
# taps (or its weight-gradient sums) in registers for the whole plane.
#
# - Padding: a task copies its input volume into a zero-padded scratch (DwPad), wide
#   enough that every row runs as whole vectors, its last one partial (loads run whole
#   over the scratch's slack; stores and the weight gradient's products are masked).
#   The copy splits each row into its stride phases, so that a strided window's tap kw
#   reads consecutive elements of one phase (coff[kw]) instead of every s-th element.
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
# - input gradient: grad_x is the correlation of grad_y, upsampled by the stride (s - 1
#   zeros between its elements on each axis) and padded by (K - 1) * d - p, with the
#   flipped window, summed over the channel's Fg filters: the forward's plane kernel on
#   a copy (DwUp) with Fg * KD * KH rows per output row.  The stride's zeros cost s_d *
#   s_h * s_w times the multiply-adds a gradient needs, but every output is then one
#   vector lane of one kernel, with no stride phases to compute apart and interleave
#   (which ran 1.5-2.5x slower at MobileNet's stride-2 sizes); col2im, the other path
#   for one channel per group, writes and scatters prod(K) values per grad_y element
#   and stays behind well past stride 2.  The padding and the zeros add 0 * w terms
#   that the true gradient lacks: non-finite weights take col2im, as for the flipped
#   and phased paths.  Tasks are (image, channel, block of input rows).
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
    ctypedef void (*ck_dw_wgcl_s)(const float *, const float *, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                  Py_ssize_t, Py_ssize_t, Py_ssize_t, const Py_ssize_t *,
                                  Py_ssize_t, float *, double *) noexcept nogil
    ctypedef void (*ck_dw_fwcl_s)(float *, const float *, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                  Py_ssize_t, Py_ssize_t, Py_ssize_t, const Py_ssize_t *,
                                  Py_ssize_t, const float *, const float *, Py_ssize_t,
                                  int) noexcept nogil
    ctypedef void (*ck_dw_copy_s)(float *, Py_ssize_t, const float *, Py_ssize_t, Py_ssize_t,
                                  Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t) noexcept nogil
    ctypedef void (*ck_dw_wgcl_d)(const double *, const double *, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                  Py_ssize_t, Py_ssize_t, Py_ssize_t, const Py_ssize_t *,
                                  Py_ssize_t, double *, double *) noexcept nogil
    ctypedef void (*ck_dw_fwcl_d)(double *, const double *, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                                  Py_ssize_t, Py_ssize_t, Py_ssize_t, const Py_ssize_t *,
                                  Py_ssize_t, const double *, const double *, Py_ssize_t,
                                  int) noexcept nogil
    ctypedef void (*ck_dw_copy_d)(double *, Py_ssize_t, const double *, Py_ssize_t, Py_ssize_t,
                                  Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t) noexcept nogil
    ctypedef void (*ck_dw_fold_s)(const float *, Py_ssize_t, float *, const double *,
                                  double *) noexcept nogil
    ctypedef void (*ck_dw_fold_d)(const double *, Py_ssize_t, double *, const double *,
                                  double *) noexcept nogil
    ctypedef void (*ck_dw_zip_s)(float *, const float *, const float *, Py_ssize_t) noexcept nogil
    ctypedef void (*ck_dw_zip_d)(double *, const double *, const double *,
                                 Py_ssize_t) noexcept nogil
    ctypedef struct ck_dw_kernels_s:
        ck_dw_fwd_s fwd
        ck_dw_wgrad_s wgrad
        ck_dw_wgcl_s wgcl
        ck_dw_fwcl_s fwcl
        ck_dw_copy_s copy
        ck_dw_fold_s fold
        ck_dw_zip_s zip
        Py_ssize_t vl
        const char *name
    ctypedef struct ck_dw_kernels_d:
        ck_dw_fwd_d fwd
        ck_dw_wgrad_d wgrad
        ck_dw_wgcl_d wgcl
        ck_dw_fwcl_d fwcl
        ck_dw_copy_d copy
        ck_dw_fold_d fold
        ck_dw_zip_d zip
        Py_ssize_t vl
        const char *name
    void ck_dw_select(ck_dw_kernels_s *, ck_dw_kernels_d *) noexcept nogil
    enum:
        CK_DW_LANES_MAX

cdef ck_dw_kernels_s DWK_S
cdef ck_dw_kernels_d DWK_D
ck_dw_select(&DWK_S, &DWK_D)


def depthwise_isa():
    """Return the instruction-set level of the depthwise plane kernels: 'baseline', 'avx2'
    or 'avx512', the level of src/cpu_isa.h as for the GEMM micro-kernels."""
    return DWK_S.name.decode()


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
    cdef const floating_t *bp
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
                    if bias_mode == 0:
                        bp = NULL
                    elif bias_mode == 1:
                        bp = bias + f
                    else:
                        bp = bias + (f * g.OD + od) * plane + oh0 * g.OW
                    dw_fwd(y + ((n * g.F + f) * g.OD + od) * plane + oh0 * g.OW, g.OW,
                           oh1 - oh0, g.OW, padded + (od * g.sd * P.Hp + oh0 * g.sh) * P.Lp,
                           g.sh * P.Lp, roff, R, w + f * g.KK, g.KW, roff + R, bp,
                           g.OW if bias_mode == 2 else 0, act == ACT_RELU)
            c = c + 1
            if c == g.C:
                c = 0
                n = n + 1


cdef struct DwUp:
    # The input gradient's copy of grad_y: for each of the Fg filters, grad_y upsampled by
    # the stride (zeros between its elements) and padded, Dg x Hg rows of Lg elements:
    # grad_y's (od, oh, ow) at (od * sd + left_d, oh * sh + left_h, ow * sw + left_w),
    # left = (K - 1) * d - p on each axis (elements that land outside reach no grad_x).
    # grad_x's (id, ih, iw) is then the flipped window's correlation of it at (id, ih,
    # iw).  nq: grad_x's rows rounded up to whole vectors; noff: the Fg * KD * KH row
    # offsets and KW column offsets of the window (one array for all threads).  A
    # thread's scratch: a row of zeros (OW) and the copy, elems in all (bytes).
    Py_ssize_t left_d, left_h, left_w, Dg, Hg, Lg, nq, noff, elems, bytes


cdef DwUp dw_up(const Geom *g, const floating_t *tag) noexcept nogil:
    """The input gradient's upsampled, padded copy of grad_y."""
    cdef DwUp u
    u.left_d = (g.KD - 1) * g.dd - g.pd
    u.left_h = (g.KH - 1) * g.dh - g.ph
    u.left_w = (g.KW - 1) * g.dw - g.pw
    u.nq = round_up(g.W, dw_lanes(tag))
    u.Dg = g.D + (g.KD - 1) * g.dd
    u.Hg = g.H + (g.KH - 1) * g.dh
    u.Lg = u.nq + (g.KW - 1) * g.dw
    u.noff = g.Fg * g.KD * g.KH + g.KW
    u.elems = g.OW + g.Fg * u.Dg * u.Hg * u.Lg
    u.bytes = (u.elems * sizeof(floating_t) + 63) // 64 * 64
    return u


cdef inline Py_ssize_t ceil_div(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """ceil(a / b) for b > 0 and any a."""
    return -floor_div(-a, b)


cdef inline void upsample_plane(const floating_t *gyp, const Geom *g, const DwUp *u,
                                const floating_t *zeros, floating_t *dst) noexcept nogil:
    """One grad_y plane (OD, OH, OW) to its places in dst, one filter's part of the copy
    (whose other elements stay zero)."""
    cdef Py_ssize_t od, oh, j, row
    # the grad_y elements that land inside the copy, on each axis
    cdef Py_ssize_t d0 = max(0, ceil_div(-u.left_d, g.sd))
    cdef Py_ssize_t d1 = min(g.OD, floor_div(u.Dg - 1 - u.left_d, g.sd) + 1)
    cdef Py_ssize_t h0 = max(0, ceil_div(-u.left_h, g.sh))
    cdef Py_ssize_t h1 = min(g.OH, floor_div(u.Hg - 1 - u.left_h, g.sh) + 1)
    cdef Py_ssize_t w0 = max(0, ceil_div(-u.left_w, g.sw))
    cdef Py_ssize_t w1 = min(g.OW, floor_div(u.Lg - 1 - u.left_w, g.sw) + 1)
    cdef Py_ssize_t npair, iw
    if h1 <= h0 or w1 <= w0:
        return
    for od in range(d0, d1):
        row = ((od * g.sd + u.left_d) * u.Hg + h0 * g.sh + u.left_h) * u.Lg
        if g.sw == 1:
            dw_copy(dst + row, g.sh * u.Lg, gyp + (od * g.OH + h0) * g.OW + w0, g.OW, h1 - h0,
                    w1 - w0, 1, u.left_w + w0, u.Lg)
            continue
        for oh in range(h0, h1):
            j = row + (oh - h0) * g.sh * u.Lg + w0 * g.sw + u.left_w
            if g.sw == 2:
                # pairs (element, zero) while the zero stays in the row
                npair = min(w1 - w0, (u.Lg - (w0 * 2 + u.left_w)) // 2)
                dw_zip(dst + j, gyp + (od * g.OH + oh) * g.OW + w0, zeros, npair)
                if npair < w1 - w0:
                    dst[j + 2 * npair] = gyp[(od * g.OH + oh) * g.OW + w0 + npair]
                continue
            for iw in range(w1 - w0):
                dst[j + iw * g.sw] = gyp[(od * g.OH + oh) * g.OW + w0 + iw]


cdef void depthwise_input_grad(const floating_t *gy, const floating_t *wflip, const Geom *g,
                               floating_t *gx, const Py_ssize_t *roff, char *scratch,
                               int nt) noexcept nogil:
    """grad_x for a layer with one input channel per group: the correlation of grad_y,
    upsampled by the stride and padded (DwUp), with the flipped window, as the forward
    runs it; wflip (F, KK) holds the flipped windows, roff the Fg * KD * KH rows' offsets
    (filter, kd, kh) and then the KW columns'."""
    cdef DwUp U = dw_up(g, gy)
    cdef Py_ssize_t R = g.Fg * g.KD * g.KH, plane = g.H * g.W
    cdef Py_ssize_t nb = dw_blocks(g.N * g.C, g.H, nt)
    cdef Py_ssize_t per = (g.H + nb - 1) // nb
    cdef Py_ssize_t ppt = dw_planes_per_task(g.N * g.C, nb, nt)
    cdef Py_ssize_t ntasks = (g.N * g.C + ppt - 1) // ppt * nb
    cdef Py_ssize_t t, n, c, m, id, ih0, ih1, j, p0
    cdef floating_t *zeros
    cdef floating_t *padded
    for t in prange(ntasks, num_threads=nt, schedule="static"):
        zeros = <floating_t *> (scratch + threadid() * U.bytes)
        padded = zeros + g.OW
        p0 = t // nb * ppt
        n = p0 // g.C
        c = p0 - n * g.C
        ih0 = t % nb * per
        ih1 = min(g.H, ih0 + per)
        for j in range(min(ppt, g.N * g.C - p0)):
            if ih0 >= ih1:
                break
            for m in range(g.Fg):
                upsample_plane(gy + (n * g.F + c * g.Fg + m) * g.OD * g.OH * g.OW, g, &U,
                               zeros, padded + m * U.Dg * U.Hg * U.Lg)
            for id in range(g.D):
                dw_fwd(gx + ((n * g.C + c) * g.D + id) * plane + ih0 * g.W, g.W, ih1 - ih0,
                       g.W, padded + (id * U.Hg + ih0) * U.Lg, U.Lg, roff, R,
                       wflip + c * g.Fg * g.KK, g.KW, roff + R, NULL, 0, False)
            c = c + 1
            if c == g.C:
                c = 0
                n = n + 1


cdef inline void dw_fold(const floating_t *lanes, Py_ssize_t ntaps, floating_t *out,
                         const double *blanes, double *bout) noexcept nogil:
    """out[t] = lanes[t] summed over the lanes, *bout = blanes summed (see the template)."""
    if floating_t is float:
        DWK_S.fold(lanes, ntaps, out, blanes, bout)
    else:
        DWK_D.fold(lanes, ntaps, out, blanes, bout)


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
    cdef Py_ssize_t t, b, f, n, od
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
        dw_fold(lanes, g.KK, partials + (b * g.F + f) * g.KK, dlanes if bpart != NULL else NULL,
                bpart + b * g.F + f if bpart != NULL else NULL)


cdef Py_ssize_t depthwise_scratch(str pass_name, const Geom *g,
                                  const floating_t *tag) noexcept:
    """Bytes of scratch per thread of the depthwise path of a pass."""
    cdef bint lanes = pass_name == "backward_weight"
    if pass_name == "backward_input":
        return dw_up(g, tag).bytes
    return dw_pad(g, lanes, tag).bytes


cdef void depthwise_forward_call(const floating_t *x, const Geom *g, const floating_t *w,
                                 const floating_t *bias, int bias_mode, int act,
                                 floating_t *y, int nt) except *:
    cdef DwPad P = dw_pad(g, False, x)
    cdef Py_ssize_t *roff = <Py_ssize_t *> alloc_scratch((g.KD * g.KH + g.KW) * sizeof(Py_ssize_t))
    cdef char *scratch
    try:
        scratch = <char *> alloc_scratch(nt * P.bytes)  # zero: the padding
    except MemoryError:
        release(roff)
        raise
    with nogil:
        window_offsets(g, &P, roff, roff + g.KD * g.KH)
        depthwise_forward(x, g, w, bias, bias_mode, act, y, roff, scratch, nt)
    release(scratch)
    release(roff)


cdef void depthwise_input_grad_call(const floating_t *gy, const floating_t *w, const Geom *g,
                                    floating_t *gx, int nt) except *:
    cdef DwUp U = dw_up(g, gy)
    cdef Py_ssize_t R = g.Fg * g.KD * g.KH, f, m, kd, kh, k
    cdef Py_ssize_t *roff = NULL
    cdef floating_t *wflip = NULL
    cdef char *scratch = NULL
    try:
        roff = <Py_ssize_t *> alloc_scratch(U.noff * sizeof(Py_ssize_t))
        wflip = <floating_t *> alloc_scratch(g.F * g.KK * sizeof(floating_t))
        scratch = <char *> alloc_scratch(nt * U.bytes)  # zero: the padding
        with nogil:
            for m in range(g.Fg):
                for kd in range(g.KD):
                    for kh in range(g.KH):
                        roff[(m * g.KD + kd) * g.KH + kh] = (
                            ((m * U.Dg + kd * g.dd) * U.Hg + kh * g.dh) * U.Lg)
            for k in range(g.KW):
                roff[R + k] = k * g.dw
            for f in range(g.F):
                for k in range(g.KK):
                    wflip[f * g.KK + k] = w[f * g.KK + g.KK - 1 - k]
            depthwise_input_grad(gy, wflip, g, gx, roff, scratch, nt)
    finally:
        release(scratch)
        release(wflip)
        release(roff)


cdef void add_chunk_partials(const floating_t *partials, const double *bpart, Py_ssize_t nch,
                             const Geom *g, floating_t *gw, floating_t *bias_out) noexcept nogil:
    """gw[f, tap] = partials[0, f, tap] + ... + partials[nch - 1, f, tap] and (bias_out
    not NULL) bias_out[f] = the bpart[b, f] summed in double, both in chunk order."""
    cdef Py_ssize_t f, k, b
    cdef double acc
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


cdef void depthwise_weight_grad_call(const floating_t *x, const floating_t *gy, const Geom *g,
                                     floating_t *gw, floating_t *bias_out, int nt) except *:
    """gw (F, KK) and, if bias_out is not NULL, bias_out (F,): the chunks' partial sums
    added in chunk order."""
    cdef DwPad P = dw_pad(g, True, x)
    cdef Py_ssize_t nch = dw_wgrad_chunks(g)
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
            add_chunk_partials(partials, bpart, nch, g, gw, bias_out)
    finally:
        release(bpart)
        release(scratch)
        release(roff)
        release(partials)
