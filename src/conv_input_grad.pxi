# The input gradient: a flipped stride-1 correlation of grad_y, one correlation per stride
# phase, or W^T @ grad_y scattered back (col2im).  Included by _conv.pyx.


cdef bint flip_fits(const Geom *g) noexcept nogil:
    """True if the input gradient is a stride-1 correlation with non-negative padding."""
    return (unit_stride(g) and g.pd <= (g.KD - 1) * g.dd and g.ph <= (g.KH - 1) * g.dh
            and g.pw <= (g.KW - 1) * g.dw)


cdef Geom flipped_geom(const Geom *g) noexcept nogil:
    """The input gradient of a stride-1 layer as a correlation that reads grad_y as its
    input and writes grad_x as its output (see flip_fits)."""
    cdef Geom t = g[0]
    t.C, t.D, t.H, t.W = g.F, g.OD, g.OH, g.OW
    t.F, t.Cg, t.Fg = g.C, g.Fg, g.Cg
    t.OD, t.OH, t.OW, t.P = g.D, g.H, g.W, g.D * g.H * g.W
    t.pd = (g.KD - 1) * g.dd - g.pd
    t.ph = (g.KH - 1) * g.dh - g.ph
    t.pw = (g.KW - 1) * g.dw - g.pw
    return t


cdef void backward_input_flipped(const floating_t *gy, const floating_t *w, const Geom *g,
                                 floating_t *gx, int operand, int nt) except *:
    """grad_x = grad_y * flip(W)^T, a stride-1 correlation of grad_y (see flip_fits), on
    the given operand (see correlate; the slab needs direct_fits of flipped_geom, reading
    grad_y in place a 1x1 unpadded layer)."""
    cdef Geom t = flipped_geom(g)
    cdef OutLayout layout
    cdef const Kernels *kern = &KERN
    if operand == OPERAND_IN_PLACE:
        kern = pointwise_kernels(&t, kern, gy)
    cdef Py_ssize_t mr = block_mr(kern, gy)
    cdef Py_ssize_t K = g.Fg * g.KK, cpad = round_up(g.Cg, mr)
    cdef floating_t *wpack = NULL
    layout = contiguous(&t)
    if operand == OPERAND_IN_PLACE and pointwise_packs_in_tasks(&t, kern, gy):
        correlate(gy, &t, NULL, NULL, 0, ACT_NONE, gx, &layout, operand, kern, nt, w, g)
        return
    wpack = <floating_t *> alloc_uninit(g.G * cpad * K * sizeof(floating_t))
    with nogil:
        pack_flipped_weights(w, g, mr, wpack, nt)
    try:
        correlate(gy, &t, wpack, NULL, 0, ACT_NONE, gx, &layout, operand, kern, nt)
    finally:
        release(wpack)


cdef struct Col2imLayout:
    # Tasks are (image, group, chunk of cch input channels) of ntiles tiles of tw
    # positions; a thread's scratch holds the grad_y tile (Fg x tw) or sliver (Fg x nr),
    # then rb rows of cols (rb x tw), then the micro-kernel's edge block: per_thread
    # elements.  split: the GEMMs run as (image, group, tile) pieces, then the col2im
    # per (image, group, channel) (backward_input_col2im_split).
    Py_ssize_t cch, nchunks, rows_pad, rb, tw, ntiles, per_thread
    bint split


cdef Col2imLayout col2im_layout(const Geom *g, int nt, const floating_t *tag) noexcept nogil:
    """Chunking and per-thread scratch of backward_input_col2im for nt threads."""
    cdef Col2imLayout c
    cdef Py_ssize_t mr = block_mr(&KERN, tag), nr = block_nr(&KERN, tag), ntasks
    # Channels per chunk: enough chunks to keep every thread busy when the batch is small.
    # A channel's rows only touch that channel of grad_x, whatever the chunking.
    cdef Py_ssize_t want = (2 * nt + g.N * g.G - 1) // (g.N * g.G)
    c.cch = max(1, (g.Cg + want - 1) // want)
    c.nchunks = (g.Cg + c.cch - 1) // c.cch
    c.tw = tile_width(g.P, nr)
    c.ntiles = (g.P + c.tw - 1) // c.tw
    # Too few tasks to share evenly (VGG's 3-channel stem at batch 1: 3 one-channel tasks
    # on 2 threads, one thread doing two) lose a quarter or more of the threads' time:
    # then the GEMMs, most of the work, split over tiles instead, all channels at once
    # (no half-empty row block per channel), and the col2im over channels.
    # Its cols blocks, an im2col's size, stay within COL2IM_SPLIT_BYTES (a 3-channel
    # 1024x1024 image's 7x7 layer would take 600 MB).
    ntasks = g.N * g.G * c.nchunks
    c.split = (c.ntiles > 1 and 4 * ntasks <= 3 * round_up(ntasks, nt)
               and g.N * g.G * c.ntiles * round_up(g.Cg * g.KK, mr) * c.tw
               * <Py_ssize_t> sizeof(floating_t) <= COL2IM_SPLIT_BYTES)
    if c.split:
        c.cch = g.Cg
        c.nchunks = 1
    c.rows_pad = round_up(c.cch * g.KK, mr)
    c.rb = min(c.rows_pad, ROW_BLOCK // mr * mr)
    c.per_thread = g.Fg * c.tw + c.rb * c.tw + CK_MR_MAX * CK_NR_MAX
    return c


cdef inline void col2im_gemm_tile(const floating_t *A, Py_ssize_t a_stride, Py_ssize_t M,
                                  const floating_t *gy, const Geom *g, Py_ssize_t n,
                                  Py_ssize_t grp, Py_ssize_t p0, Py_ssize_t pn,
                                  const Py_ssize_t *boff, floating_t *bbuf, floating_t *C,
                                  Py_ssize_t ldc, floating_t *ctmp) noexcept nogil:
    """C[:M, :pn] = A @ (the Fg x pn tile of grad_y at positions p0.. of image n, group
    grp), A packed (gemm_block's a_stride), one nr-column sliver at a time: the sliver
    is copied to bbuf (Fg x nr, rows nr apart, zero past pn; boff[k] = k * nr), where it
    stays in L1 while A's row blocks stream.  For few rows (a 3-channel stem's 27): each
    sliver then serves only a few row blocks, and a copy of the whole tile, rows tw
    apart, would come back from L2 for every one of them (VGG's 32x32 stem: grad_y's
    own rows, 4 KiB apart, share an L1 set)."""
    cdef Py_ssize_t nr = block_nr(&KERN, gy), s, q1, j0
    cdef const floating_t *src = gy + (n * g.F + grp * g.Fg) * g.P + p0
    for s in range((pn + nr - 1) // nr):
        j0 = s * nr
        q1 = min(nr, pn - j0)
        copy_sliver(src + j0, g.P, g.Fg, q1, nr, bbuf)
        gemm_block(&KERN, A, a_stride, M, g.Fg, bbuf, boff, 0, NULL, q1, C + j0, ldc, ctmp,
                   False)


cdef void backward_input_col2im_split(const floating_t *gy, const Geom *g,
                                      const Col2imLayout *lay, const floating_t *wpack,
                                      const Py_ssize_t *offsets, floating_t *scratch,
                                      floating_t *cols_all, floating_t *gx,
                                      int nt) noexcept nogil:
    """backward_input_col2im in two parallel loops: the GEMM of every (image, group,
    tile) into its own block of cols_all (all Cg * KK rows, rows_pad x tw), then the
    col2im of every (image, group, channel), tiles in order."""
    cdef Py_ssize_t mr = block_mr(&KERN, gy), nr = block_nr(&KERN, gy), tw = lay.tw
    cdef Py_ssize_t ntiles = lay.ntiles, block = lay.rows_pad * tw
    cdef Py_ssize_t plane = g.D * g.H * g.W, nrows = g.Cg * g.KK
    cdef Py_ssize_t u, t, c, n, grp, tb, p0, pn
    cdef floating_t *gyt
    cdef floating_t *gxc
    for u in prange(g.N * g.G * ntiles, num_threads=nt, schedule="static"):
        t = u // ntiles
        p0 = u % ntiles * tw
        pn = min(tw, g.P - p0)
        gyt = scratch + threadid() * lay.per_thread
        col2im_gemm_tile(wpack + t % g.G * lay.rows_pad * g.Fg, mr * g.Fg, nrows, gy, g,
                         t // g.G, t % g.G, p0, pn, offsets, gyt, cols_all + u * block, tw,
                         gyt + g.Fg * tw + lay.rb * tw)
    for u in prange(g.N * g.G * g.Cg, num_threads=nt, schedule="static"):
        t = u // g.Cg
        c = u % g.Cg
        gxc = gx + (t // g.G * g.C + t % g.G * g.Cg) * plane
        memset(gxc + c * plane, 0, plane * sizeof(floating_t))
        for tb in range(ntiles):
            p0 = tb * tw
            col2im_add(cols_all + (t * ntiles + tb) * block + c * g.KK * tw, tw, g,
                       c * g.KK, g.KK, p0, min(tw, g.P - p0), gxc)


cdef void backward_input_col2im(const floating_t *gy, const floating_t *w, const Geom *g,
                                floating_t *gx, int nt) except *:
    """grad_x by cols = W^T @ grad_y followed by col2im, for any stride.

    A task (image, group, channel chunk) computes its cols one tile of positions and one
    block of rows at a time and adds each block into grad_x at once; with lay.split,
    backward_input_col2im_split.  Either way every grad_x value is the same sum of the
    same products in the same order: the same bits.
    """
    cdef Py_ssize_t mr = block_mr(&KERN, gy), nr = block_nr(&KERN, gy)
    cdef Py_ssize_t plane = g.D * g.H * g.W
    cdef Col2imLayout lay = col2im_layout(g, nt, gy)
    cdef Py_ssize_t cch = lay.cch, nchunks = lay.nchunks, rb = lay.rb
    cdef Py_ssize_t rows_pad = lay.rows_pad, tw = lay.tw, per_thread = lay.per_thread
    cdef Py_ssize_t ntasks = g.N * g.G * nchunks
    cdef floating_t *wpack = <floating_t *> alloc_uninit(
        g.G * nchunks * rows_pad * g.Fg * sizeof(floating_t))
    cdef floating_t *scratch = NULL
    cdef floating_t *cols_all = NULL
    cdef Py_ssize_t *offsets = NULL
    cdef floating_t *gyt
    cdef floating_t *cols
    cdef floating_t *gxc
    cdef const floating_t *ap
    cdef Py_ssize_t t, n, grp, ch, c0, c1, nrows, tb, p0, pn, rbi, r0, nb, f, j
    try:
        scratch = <floating_t *> alloc_scratch(nt * per_thread * sizeof(floating_t))
        offsets = <Py_ssize_t *> alloc_scratch(2 * g.Fg * sizeof(Py_ssize_t))
        if lay.split:
            # every piece writes its whole block before the col2im reads it
            cols_all = <floating_t *> alloc_uninit(
                g.N * g.G * lay.ntiles * rows_pad * tw * sizeof(floating_t))
    except MemoryError:
        release(wpack)
        release(scratch)
        release(offsets)
        raise
    row_offsets(offsets, g.Fg, nr)  # col2im_gemm_tile's sliver, and the whole tile's rows
    row_offsets(offsets + g.Fg, g.Fg, tw)
    with nogil:
        pack_col2im_weights(w, g, cch, nchunks, rows_pad, mr, wpack, nt)
        if lay.split:
            backward_input_col2im_split(gy, g, &lay, wpack, offsets, scratch, cols_all, gx,
                                        nt)
        else:
            for t in prange(ntasks, num_threads=nt, schedule="static"):
                gyt = scratch + threadid() * per_thread
                cols = gyt + g.Fg * tw
                n = t // (g.G * nchunks)
                grp = (t // nchunks) % g.G
                ch = t % nchunks
                c0 = ch * cch
                c1 = min(g.Cg, c0 + cch)
                nrows = (c1 - c0) * g.KK
                ap = wpack + (grp * nchunks + ch) * rows_pad * g.Fg
                gxc = gx + (n * g.C + grp * g.Cg + c0) * plane
                memset(gxc, 0, (c1 - c0) * plane * sizeof(floating_t))
                for tb in range(lay.ntiles):
                    p0 = tb * tw
                    pn = min(tw, g.P - p0)
                    if rows_pad <= rb:  # one block of rows: a sliver of grad_y at a time
                        col2im_gemm_tile(ap, mr * g.Fg, nrows, gy, g, n, grp, p0, pn,
                                         offsets, gyt, cols, tw, cols + rb * tw)
                        col2im_add(cols, tw, g, 0, nrows, p0, pn, gxc)
                        continue
                    # the grad_y tile (Fg x pn), rows tw apart, serves every block of rows
                    for f in range(g.Fg):
                        for j in range(pn):
                            gyt[f * tw + j] = gy[(n * g.F + grp * g.Fg + f) * g.P + p0 + j]
                    for rbi in range((nrows + rb - 1) // rb):
                        r0 = rbi * rb
                        nb = min(rb, nrows - r0)
                        gemm_block(&KERN, ap + r0 * g.Fg, mr * g.Fg, nb, g.Fg, gyt,
                                   offsets + g.Fg, 0, NULL, pn, cols, tw, cols + rb * tw,
                                   False)
                        col2im_add(cols, tw, g, r0, nb, p0, pn, gxc)
    release(cols_all)
    release(scratch)
    release(offsets)
    release(wpack)


cdef struct AxisPhase:
    # The taps and outputs of one stride phase a of one axis of the input gradient:
    # grad_x[i * s + a - p] for i = q0 .. q0 + count - 1 gets grad_y[i - m] * w[k] for
    # the n taps k = kmax, kmax - kstep, ... with k * d % s == a, where m = (k*d - a)/s.
    # As a stride-1 correlation of grad_y over u = i - q0: tap j (k = kmax - j * kstep)
    # reads grad_y[u - pad + j * dil], with pad = mmax - q0 and dil = d / gcd(d, s).
    Py_ssize_t n, kmax, kstep, dil, pad, q0, count


cdef inline Py_ssize_t floor_div(Py_ssize_t x, Py_ssize_t s) noexcept nogil:
    return x // s if x >= 0 else -((-x + s - 1) // s)


cdef AxisPhase axis_phase(Py_ssize_t K, Py_ssize_t d, Py_ssize_t s, Py_ssize_t p,
                          Py_ssize_t size, Py_ssize_t a) noexcept nogil:
    """Phase a of an axis with kernel K, dilation d, stride s, padding p and input size."""
    cdef AxisPhase ph
    cdef Py_ssize_t k
    ph.n = 0
    ph.kmax = -1
    for k in range(K):
        if k * d % s == a:
            ph.n += 1
            ph.kmax = k
    ph.kstep = s // gcd(d, s)
    ph.dil = d // gcd(d, s)
    ph.q0 = -floor_div(a - p, s)                  # first i with i * s + a - p >= 0
    ph.count = max(0, floor_div(size - 1 + p - a, s) - ph.q0 + 1)
    ph.pad = (ph.kmax * d - a) // s - ph.q0 if ph.n > 0 else 0
    return ph


cdef inline AxisPhase phase_of(const Geom *g, Py_ssize_t i, int axis) noexcept nogil:
    """Axis 0, 1 or 2 (D, H, W) of phase i = (a_d * sh + a_h) * sw + a_w."""
    if axis == 0:
        return axis_phase(g.KD, g.dd, g.sd, g.pd, g.D, i // (g.sh * g.sw))
    if axis == 1:
        return axis_phase(g.KH, g.dh, g.sh, g.ph, g.H, i // g.sw % g.sh)
    return axis_phase(g.KW, g.dw, g.sw, g.pw, g.W, i % g.sw)


cdef Geom phase_geom(const Geom *g, Py_ssize_t e, OutLayout *out) noexcept nogil:
    """Phase e of a strided input gradient as a stride-1 correlation of grad_y (see
    AxisPhase), and where its outputs go in grad_x."""
    cdef AxisPhase pd = phase_of(g, e, 0), ph = phase_of(g, e, 1), pw = phase_of(g, e, 2)
    cdef Geom t = g[0]
    t.C, t.D, t.H, t.W = g.F, g.OD, g.OH, g.OW
    t.F, t.Cg, t.Fg = g.C, g.Fg, g.Cg
    t.KD, t.KH, t.KW = pd.n, ph.n, pw.n
    t.KK = pd.n * ph.n * pw.n
    t.OD, t.OH, t.OW = pd.count, ph.count, pw.count
    t.P = pd.count * ph.count * pw.count
    t.sd = t.sh = t.sw = 1
    t.pd, t.ph, t.pw = pd.pad, ph.pad, pw.pad
    t.dd, t.dh, t.dw = pd.dil, ph.dil, pw.dil
    # output u of the phase is grad_x position (q0 + u) * s + a - p on every axis
    out.sw = g.sw
    out.sh = g.sh * g.W
    out.sd = g.sd * g.H * g.W
    out.sf = g.D * g.H * g.W
    out.sn = g.C * g.D * g.H * g.W
    out.offset = (((pd.q0 * g.sd + e // (g.sh * g.sw) - g.pd) * g.H
                   + ph.q0 * g.sh + e // g.sw % g.sh - g.ph) * g.W + pw.q0 * g.sw + e % g.sw - g.pw)
    return t


cdef bint phased_fits(const Geom *g) noexcept nogil:
    """True if a strided input gradient can run phase by phase (backward_input_phased):
    every stride phase of every axis has taps, and each phase takes the direct path
    (which writes its outputs to their strided places in grad_x)."""
    cdef OutLayout out
    cdef Geom t
    cdef Py_ssize_t e
    if (unit_stride(g) or not taps_cover_phases(g.KD, g.dd, g.sd)
            or not taps_cover_phases(g.KH, g.dh, g.sh)
            or not taps_cover_phases(g.KW, g.dw, g.sw)):
        return False
    for e in range(g.sd * g.sh * g.sw):
        t = phase_geom(g, e, &out)
        if not direct_fits(&t):
            return False
    return True


cdef void backward_input_phased(const floating_t *gy, const floating_t *w, const Geom *g,
                                floating_t *gx, int nt) except *:
    """grad_x of a strided convolution, one stride phase at a time.

    The input positions of one phase (i * s + a - p on every axis) receive only the
    taps with k * d % s == a, and as a function of i that is a stride-1 correlation of
    grad_y with those taps flipped (see AxisPhase), which the direct path writes
    straight to those strided positions.  The phases run over chunks of images (about
    4 MiB of grad_x) so that the phases of a chunk meet its grad_x in cache.  Every
    position of grad_x belongs to exactly one phase, and phased_fits makes sure every
    phase has taps: all of grad_x is written.
    """
    cdef AxisPhase pd, ph, pw
    cdef OutLayout out
    cdef Geom t
    cdef Py_ssize_t mr = block_mr(&KERN, gy)
    cdef Py_ssize_t cpad = round_up(g.Cg, mr)
    cdef Py_ssize_t nph = g.sd * g.sh * g.sw, plane = g.D * g.H * g.W
    cdef Py_ssize_t chunk = max(1, min(g.N, (4 << 20)
                                       // max(1, g.C * plane * <Py_ssize_t> sizeof(floating_t))))
    cdef Py_ssize_t n, j, jd, jh, jw, n0, e
    cdef Py_ssize_t *woff = NULL
    cdef Py_ssize_t *taps = NULL
    cdef floating_t *wpack = NULL
    try:
        woff = <Py_ssize_t *> alloc_scratch((nph + 1) * sizeof(Py_ssize_t))
        taps = <Py_ssize_t *> alloc_scratch(g.KK * sizeof(Py_ssize_t))
        # phase e's packed weights start at woff[e]
        for e in range(nph):
            pd, ph, pw = phase_of(g, e, 0), phase_of(g, e, 1), phase_of(g, e, 2)
            woff[e + 1] = woff[e] + g.G * cpad * g.Fg * pd.n * ph.n * pw.n
        wpack = <floating_t *> alloc_uninit(woff[nph] * sizeof(floating_t))
        with nogil:
            # packed A[c, f * KK' + j] = W[grp * Fg + f, c, taps[j]], per phase and group,
            # tap j of the phase's stride-1 correlation being (jd, jh, jw)
            for e in range(nph):
                pd, ph, pw = phase_of(g, e, 0), phase_of(g, e, 1), phase_of(g, e, 2)
                n = pd.n * ph.n * pw.n
                for j in range(n):
                    jd = j // (ph.n * pw.n)
                    jh = j // pw.n % ph.n
                    jw = j % pw.n
                    taps[j] = (((pd.kmax - jd * pd.kstep) * g.KH + ph.kmax - jh * ph.kstep)
                               * g.KW + pw.kmax - jw * pw.kstep)
                pack_phase_weights(w, g, taps, n, mr, wpack + woff[e], nt)
        for n0 in range(0, g.N, chunk):
            for e in range(nph):
                t = phase_geom(g, e, &out)
                if t.P == 0:
                    continue  # an input smaller than the stride: no position in phase e
                t.N = min(chunk, g.N - n0)
                correlate(gy + n0 * g.F * g.P, &t, wpack + woff[e], NULL, 0, ACT_NONE,
                          gx + n0 * g.C * plane, &out, OPERAND_SLAB, &KERN, nt)
    finally:
        release(wpack)
        release(taps)
        release(woff)


cdef void backward_input_on(int path, const floating_t *gy, const floating_t *w,
                            const Geom *g, floating_t *gx, int nt) except *:
    """grad_x on the given path (see conv_backward_input)."""
    cdef Geom t
    if path == BWI_COL2IM_ROWS:
        backward_input_rows(gy, w, g, gx, nt)
    elif path == BWI_DENSE:
        dense_backward_input(gy, w, g, gx, nt)
    elif path == BWI_DEPTHWISE_CHANNELS_LAST:
        t = flipped_geom(g)
        depthwise_cl_forward_call(gy, &t, w, True, NULL, 0, ACT_NONE, gx, nt)
    elif path == BWI_DEPTHWISE:
        depthwise_input_grad_call(gy, w, g, gx, nt)
    elif path == BWI_FLIPPED_CHANNELS_LAST or path == BWI_FLIPPED_CHANNELS_LAST_SKIP:
        t = flipped_geom(g)
        correlate_channels_last_call(gy, &t, w, NULL, 0, ACT_NONE, gx, g,
                                     path == BWI_FLIPPED_CHANNELS_LAST_SKIP, nt)
    elif path in (BWI_FLIPPED, BWI_FLIPPED_IM2COL, BWI_FLIPPED_POINTWISE,
                  BWI_FLIPPED_IM2COL_IMAGES):
        backward_input_flipped(gy, w, g, gx,
                               OPERAND_SLAB if path == BWI_FLIPPED else
                               OPERAND_IN_PLACE if path == BWI_FLIPPED_POINTWISE else
                               OPERAND_IM2COL_IMAGES if path == BWI_FLIPPED_IM2COL_IMAGES else
                               OPERAND_IM2COL, nt)
    elif path == BWI_PHASED:
        backward_input_phased(gy, w, g, gx, nt)
    else:
        backward_input_col2im(gy, w, g, gx, nt)


def conv_backward_input(const floating_t[:, :, :, :, ::1] grad_y not None,
                        const floating_t[:, :, :, :, ::1] weight not None,
                        floating_t[:, :, :, :, ::1] out not None, Py_ssize_t groups,
                        tuple stride, tuple pad, tuple dilation, int path, int num_threads):
    """Fill out (N, C, D, H, W) with the gradient of conv_forward with respect to x.

    path: an index in PATHS["backward_input"] that is valid for the geometry (see
    geometry_facts).  The flipped, phased and depthwise paths multiply every weight by
    grad_y's zero padding too, and 0 * inf would put NaN where the true gradient has no
    term: with non-finite weights they take col2im instead.  Whether there are any is
    read from the weight, or, when grad_x is smaller, from grad_x after the path ran: a
    product with a non-finite weight is NaN or infinite, and so is every sum of one, so
    a finite grad_x met none (a non-finite grad_x is then computed again on col2im).
    """
    cdef Geom g = make_geom(out.shape, weight.shape, grad_y.shape, groups, stride, pad,
                            dilation)
    cdef int nt = max(1, num_threads)
    cdef const floating_t *gy = &grad_y[0, 0, 0, 0, 0]
    cdef const floating_t *w = &weight[0, 0, 0, 0, 0]
    cdef floating_t *gx = &out[0, 0, 0, 0, 0]
    cdef Py_ssize_t nw = weight.size, nx = out.size
    # col2im and col2im_rows form only the true gradient's products; dense and a
    # pointwise layer's flipped correlation have no padding: non-finite weights meet
    # only real terms on them
    cdef bint exact = path in (BWI_COL2IM, BWI_COL2IM_ROWS, BWI_DENSE, BWI_FLIPPED_POINTWISE)
    if not exact and nw <= nx and has_nonfinite(w, nw):
        path = BWI_COL2IM
    backward_input_on(path, gy, w, &g, gx, nt)
    if not exact and nw > nx and has_nonfinite(gx, nx):
        backward_input_on(BWI_COL2IM, gy, w, &g, gx, nt)
