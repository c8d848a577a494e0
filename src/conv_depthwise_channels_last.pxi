# The depthwise passes with the vector lanes over channels.  Included by _conv.pyx after
# conv_depthwise.pxi.
#
# The depthwise path's plane kernels put output positions in the lanes: an output row
# narrower than a vector leaves lanes empty on every row (MobileNetV2's 7 x 7 stage, 960
# channels, fills 7 of 16 float lanes), and each row pays its masked edge.  Here a task
# owns vl channels (one vector: the lanes) and a chunk of images, and per image copies
# the channels' input planes channels-last into a zero-padded scratch (positions x vl,
# transposed in registers, then the rows into their padded places).  Then every output
# position is one vector and each tap one vector of the input at a fixed offset from the
# position's window start (dwconv_kernel_template.h's fwcl and wgcl): every lane full
# whatever the plane's width, no edge masks.
#
# - forward: y[p, c] = act(bias + sum over taps of W[c, tap] * x[start(p) + tap, c]),
#   the taps' weight vectors in registers, the output block transposed back into y.
# - input gradient (stride 1): the forward's kernel on the flipped correlation of grad_y
#   (flipped_geom, the taps reversed), as the flipped GEMM paths compute it: its zero
#   padding meets every weight, so non-finite weights take col2im.
# - weight gradient: grad_y copied channels-last too (positions x vl), then
#   grad_w[c, tap] += grad_y[p, c] * x[start(p) + tap, c], one register per tap for the
#   whole plane, grad_y's sum for the bias in double lanes in the same pass.
#
# What it adds against the plane kernels is a transposed copy of the output (forward,
# input gradient) or of grad_y (weight gradient): one load and store per element,
# against prod(K) multiply-adds per element.
#
# Only for one filter per channel (Fg == 1, as in MobileNet): channel c is filter c, so a
# vector of channels is a vector of filters.  In the weight gradient a lane sums its
# terms in the order of the images, then the positions; the chunks of images depend
# only on N and C and are added in order.  Every output of the other passes is one
# lane's sum in tap order.  So no bits depend on the thread count.


cdef struct DwCl:
    # The padded extents (what the windows reach), the vectors of channels (blocks) and
    # batch chunks, and the element offsets of a thread's scratch: the padded input
    # (Dp * Hp * Wp * vl), the unpadded transposed input (D * H * W * vl), grad_y or
    # the output block (P * vl), the tap sums or weights (KK * vl), the bias sums (vl
    # doubles) or the tied bias, and an untied bias block (P * vl, forward only), then
    # its bytes.
    Py_ssize_t Dp, Hp, Wp, vl, nblocks, nch
    Py_ssize_t o_plain, o_gy, o_acc, o_bias, o_init, bytes


cdef DwCl dwcl_layout(const Geom *g, bint untied, int nt,
                      const floating_t *tag) noexcept nogil:
    """The layout of a pass of geometry g (the flipped one for the input gradient);
    untied: room for an untied bias block.  nt 0 (the weight gradient): batch chunks
    that depend on N and C only, as its sums do; else (no sums across images) about 4
    tasks per thread of nt."""
    cdef DwCl L
    cdef Py_ssize_t line = 64 // sizeof(floating_t)
    L.vl = dw_lanes(tag)
    L.Dp = (g.OD - 1) * g.sd + (g.KD - 1) * g.dd + 1
    L.Hp = (g.OH - 1) * g.sh + (g.KH - 1) * g.dh + 1
    L.Wp = (g.OW - 1) * g.sw + (g.KW - 1) * g.dw + 1
    L.nblocks = (g.C + L.vl - 1) // L.vl
    if nt == 0:
        L.nch = max(1, min(g.N, DW_WGRAD_TASKS // L.nblocks))
    else:
        L.nch = max(1, min(g.N, (4 * nt + L.nblocks - 1) // L.nblocks))
    L.o_plain = round_up(L.Dp * L.Hp * L.Wp * L.vl, line)
    L.o_gy = L.o_plain + round_up(g.D * g.H * g.W * L.vl, line)
    L.o_acc = L.o_gy + round_up(g.P * L.vl, line)
    L.o_bias = L.o_acc + round_up(g.KK * L.vl, line)
    L.o_init = L.o_bias + round_up(L.vl, line) * sizeof(double) // sizeof(floating_t)
    L.bytes = (L.o_init + (round_up(g.P * L.vl, line) if untied else 0)) * sizeof(floating_t)
    return L


cdef inline void dw_fwcl(floating_t *y, const floating_t *x, const Geom *g, const DwCl *L,
                         const Py_ssize_t *toff, const floating_t *w, const floating_t *init,
                         Py_ssize_t init_ld, bint relu) noexcept nogil:
    """The channels-last forward kernel over one image's positions."""
    cdef Py_ssize_t sw = g.sw * L.vl, sh = g.sh * L.Wp * L.vl, sd = g.sd * L.Hp * L.Wp * L.vl
    if floating_t is float:
        DWK_S.fwcl(y, x, g.OD, g.OH, g.OW, sd, sh, sw, toff, g.KK, w, init, init_ld, relu)
    else:
        DWK_D.fwcl(y, x, g.OD, g.OH, g.OW, sd, sh, sw, toff, g.KK, w, init, init_ld, relu)


cdef inline void dw_wgcl(const floating_t *gy, const floating_t *x, const Geom *g,
                         const DwCl *L, const Py_ssize_t *toff, floating_t *acc,
                         double *bacc) noexcept nogil:
    """The channels-last weight-gradient kernel over one image's positions."""
    cdef Py_ssize_t sw = g.sw * L.vl, sh = g.sh * L.Wp * L.vl, sd = g.sd * L.Hp * L.Wp * L.vl
    if floating_t is float:
        DWK_S.wgcl(gy, x, g.OD, g.OH, g.OW, sd, sh, sw, toff, g.KK, acc, bacc)
    else:
        DWK_D.wgcl(gy, x, g.OD, g.OH, g.OW, sd, sh, sw, toff, g.KK, acc, bacc)


cdef void dwcl_offsets(const Geom *g, const DwCl *L, Py_ssize_t *toff) noexcept nogil:
    """toff[(kd * KH + kh) * KW + kw]: where a tap reads in the padded scratch, from its
    window's start."""
    cdef Py_ssize_t kd, kh, kw
    for kd in range(g.KD):
        for kh in range(g.KH):
            for kw in range(g.KW):
                toff[(kd * g.KH + kh) * g.KW + kw] = (
                    ((kd * g.dd * L.Hp + kh * g.dh) * L.Wp + kw * g.dw) * L.vl)


cdef void dwcl_zero_border(const Geom *g, const DwCl *L, floating_t *padded) noexcept nogil:
    """Zero what dwcl_fill does not write in padded: the rows and columns the windows
    reach past the input."""
    cdef Py_ssize_t vl = L.vl, i, j, row
    cdef Py_ssize_t nd = min(g.D, L.Dp - g.pd), nh = min(g.H, L.Hp - g.ph)
    cdef Py_ssize_t nw = max(0, min(g.W, L.Wp - g.pw))
    for i in range(L.Dp):
        for j in range(L.Hp):
            row = (i * L.Hp + j) * L.Wp * vl
            if i < g.pd or i >= g.pd + nd or j < g.ph or j >= g.ph + nh or nw == 0:
                memset(padded + row, 0, L.Wp * vl * sizeof(floating_t))
            else:
                memset(padded + row, 0, g.pw * vl * sizeof(floating_t))
                memset(padded + row + (g.pw + nw) * vl, 0,
                       (L.Wp - g.pw - nw) * vl * sizeof(floating_t))


cdef inline void dwcl_fill(const floating_t *x, const Geom *g, const DwCl *L, Py_ssize_t nc,
                           floating_t *plain, floating_t *padded) noexcept nogil:
    """The nc channels' planes of one image (x at the first, planes D * H * W apart)
    channels-last into plain, then their rows to their places in padded (whose rest
    dwcl_zero_border zeroed).  Lanes past nc are zero."""
    cdef Py_ssize_t pin = g.D * g.H * g.W, vl = L.vl, i, j
    cdef Py_ssize_t nd = min(g.D, L.Dp - g.pd), nh = min(g.H, L.Hp - g.ph)
    cdef Py_ssize_t nw = min(g.W, L.Wp - g.pw)
    if nc < vl:
        memset(plain, 0, pin * vl * sizeof(floating_t))
    transpose(x, pin, nc, pin, plain, vl)
    if nw <= 0:
        return
    for i in range(nd):
        for j in range(nh):
            memcpy(padded + (((i + g.pd) * L.Hp + j + g.ph) * L.Wp + g.pw) * vl,
                   plain + (i * g.H + j) * g.W * vl, nw * vl * sizeof(floating_t))


cdef void depthwise_cl_weight_grad(const floating_t *x, const floating_t *gy, const Geom *g,
                                   const DwCl *L, floating_t *partials, double *bpart,
                                   const Py_ssize_t *toff, char *scratch,
                                   int nt) noexcept nogil:
    """partials[b, c, tap] and (bpart not NULL) bpart[b, c]: the weight and bias gradient
    sums over chunk b of the images, for a layer with one filter per channel (see the
    file's comment)."""
    cdef Py_ssize_t vl = L.vl, per = (g.N + L.nch - 1) // L.nch, pin = g.D * g.H * g.W
    cdef Py_ssize_t t, b, c0, nc, n, i, k
    cdef floating_t *padded
    cdef floating_t *gs
    cdef floating_t *acc
    cdef double *bacc
    for t in prange(L.nblocks * L.nch, num_threads=nt, schedule="static"):
        padded = <floating_t *> (scratch + threadid() * L.bytes)
        gs = padded + L.o_gy
        acc = padded + L.o_acc
        bacc = <double *> (padded + L.o_bias)
        c0 = t // L.nch * vl
        b = t % L.nch
        nc = min(vl, g.C - c0)
        memset(acc, 0, g.KK * vl * sizeof(floating_t))
        memset(bacc, 0, vl * sizeof(double))
        if nc < vl:
            memset(gs, 0, g.P * vl * sizeof(floating_t))
        dwcl_zero_border(g, L, padded)
        for n in range(b * per, min(g.N, (b + 1) * per)):
            dwcl_fill(x + (n * g.C + c0) * pin, g, L, nc, padded + L.o_plain, padded)
            transpose(gy + (n * g.F + c0) * g.P, g.P, nc, g.P, gs, vl)
            dw_wgcl(gs, padded, g, L, toff, acc, bacc if bpart != NULL else NULL)
        for i in range(nc):
            for k in range(g.KK):
                partials[(b * g.C + c0 + i) * g.KK + k] = acc[k * vl + i]
            if bpart != NULL:
                bpart[b * g.C + c0 + i] = bacc[i]


cdef void depthwise_cl_forward(const floating_t *x, const Geom *g, const floating_t *w,
                               bint flip, const floating_t *bias, int bias_mode, int act,
                               floating_t *y, const DwCl *L, const Py_ssize_t *toff,
                               char *scratch, int nt) noexcept nogil:
    """y = act(x * W + bias) for one filter per channel (see the file's comment); flip:
    the taps of W reversed (the input gradient's flipped correlation, g its
    flipped_geom)."""
    cdef Py_ssize_t vl = L.vl, per = (g.N + L.nch - 1) // L.nch, pin = g.D * g.H * g.W
    cdef Py_ssize_t t, c0, nc, n, i, k
    cdef floating_t *padded
    cdef floating_t *ys
    cdef floating_t *wv
    cdef floating_t *init
    for t in prange(L.nblocks * L.nch, num_threads=nt, schedule="static"):
        padded = <floating_t *> (scratch + threadid() * L.bytes)
        ys = padded + L.o_gy
        wv = padded + L.o_acc
        c0 = t // L.nch * vl
        nc = min(vl, g.C - c0)
        # the block's weights, tap by tap, and its bias; lanes past nc zero
        memset(wv, 0, g.KK * vl * sizeof(floating_t))
        for i in range(nc):
            for k in range(g.KK):
                wv[k * vl + i] = w[(c0 + i) * g.KK + (g.KK - 1 - k if flip else k)]
        init = NULL
        if bias_mode == 1:
            init = padded + L.o_bias
            memset(init, 0, vl * sizeof(floating_t))
            for i in range(nc):
                init[i] = bias[c0 + i]
        elif bias_mode == 2:
            init = padded + L.o_init
            if nc < vl:
                memset(init, 0, g.P * vl * sizeof(floating_t))
            transpose(bias + c0 * g.P, g.P, nc, g.P, init, vl)
        dwcl_zero_border(g, L, padded)
        for n in range(t % L.nch * per, min(g.N, (t % L.nch + 1) * per)):
            dwcl_fill(x + (n * g.C + c0) * pin, g, L, nc, padded + L.o_plain, padded)
            dw_fwcl(ys, padded, g, L, toff, wv, init, 1 if bias_mode == 2 else 0,
                    act == ACT_RELU)
            transpose(ys, vl, g.P, nc, y + (n * g.F + c0) * g.P, g.P)


cdef void depthwise_cl_forward_call(const floating_t *x, const Geom *g, const floating_t *w,
                                    bint flip, const floating_t *bias, int bias_mode, int act,
                                    floating_t *y, int nt) except *:
    """depthwise_cl_forward with its scratch allocated here."""
    cdef DwCl L = dwcl_layout(g, bias_mode == 2, nt, x)
    cdef char *scratch = NULL
    cdef Py_ssize_t *toff = NULL
    try:
        toff = <Py_ssize_t *> alloc_uninit(g.KK * sizeof(Py_ssize_t))
        scratch = <char *> alloc_uninit(nt * L.bytes)
        with nogil:
            dwcl_offsets(g, &L, toff)
            depthwise_cl_forward(x, g, w, flip, bias, bias_mode, act, y, &L, toff, scratch, nt)
    finally:
        release(scratch)
        release(toff)


cdef Py_ssize_t depthwise_cl_scratch(const Geom *g, const floating_t *tag) noexcept nogil:
    """Bytes of scratch per thread of the channels-last depthwise passes of geometry g
    (the flipped one for the input gradient), an untied bias's block included."""
    return dwcl_layout(g, True, 1, tag).bytes


cdef void depthwise_cl_weight_grad_call(const floating_t *x, const floating_t *gy,
                                        const Geom *g, floating_t *gw, floating_t *bias_out,
                                        int nt) except *:
    """gw (C, KK) and, if bias_out is not NULL, bias_out (C,) of a layer with one filter
    per channel: the chunks' partial sums added in chunk order."""
    cdef DwCl L = dwcl_layout(g, False, 0, x)
    cdef char *scratch = NULL
    cdef double *bpart = NULL
    cdef Py_ssize_t *toff = NULL
    cdef floating_t *partials = NULL
    try:
        partials = <floating_t *> alloc_uninit(L.nch * g.F * g.KK * sizeof(floating_t))
        toff = <Py_ssize_t *> alloc_uninit(g.KK * sizeof(Py_ssize_t))
        scratch = <char *> alloc_uninit(nt * L.bytes)
        if bias_out != NULL:
            bpart = <double *> alloc_uninit(L.nch * g.F * sizeof(double))
        with nogil:
            dwcl_offsets(g, &L, toff)
            depthwise_cl_weight_grad(x, gy, g, &L, partials, bpart, toff, scratch, nt)
            add_chunk_partials(partials, bpart, L.nch, g, gw, bias_out)
    finally:
        release(bpart)
        release(scratch)
        release(toff)
        release(partials)
