# Unrolling of convolution windows into matrix operands, and its adjoint.
#
# Reduction index k = ((c * KD + kd) * KH + kh) * KW + kw, the order of the weight layout
# (F, Cg, KD, KH, KW).  Output positions p = (od * OH + oh) * OW + ow.

from libc.string cimport memcpy, memset

from fused cimport floating_t
from geometry cimport Geom, position, next_row, row_span, column_range, row_at, read_extent


cdef extern from "strided_copy.h":
    void ck_copy_stride2_f(float *dst, const float *src, Py_ssize_t n) noexcept nogil
    void ck_copy_stride2_d(double *dst, const double *src, Py_ssize_t n) noexcept nogil
    void ck_split_stride2_f(float *even, float *odd, const float *src,
                            Py_ssize_t n) noexcept nogil
    void ck_split_stride2_d(double *even, double *odd, const double *src,
                            Py_ssize_t n) noexcept nogil


cdef inline void copy_stride2(floating_t *dst, const floating_t *src,
                              Py_ssize_t n) noexcept nogil:
    """dst[q] = src[2 * q] for q < n (strided_copy.h)."""
    if floating_t is float:
        ck_copy_stride2_f(dst, src, n)
    else:
        ck_copy_stride2_d(dst, src, n)


cdef inline void split_stride2(floating_t *even, floating_t *odd, const floating_t *src,
                               Py_ssize_t n) noexcept nogil:
    """even[q] = src[2 * q], odd[q] = src[2 * q + 1] for q < n (strided_copy.h)."""
    if floating_t is float:
        ck_split_stride2_f(even, odd, src, n)
    else:
        ck_split_stride2_d(even, odd, src, n)


cdef inline void tap(const Geom *g, Py_ssize_t k, Py_ssize_t *c, Py_ssize_t *kd,
                     Py_ssize_t *kh, Py_ssize_t *kw) noexcept nogil:
    """Split the reduction index k into channel and kernel tap."""
    c[0] = k // g.KK
    kd[0] = (k // (g.KH * g.KW)) % g.KD
    kh[0] = (k // g.KW) % g.KH
    kw[0] = k % g.KW


# Unrolling works output row by output row; a short row (a small image's) pays more for
# finding where it reads (row_span's bounds and divisions) than for copying.  When the
# padded extent of one channel (the input positions the window reads, padding included)
# fits PADDED_MAX elements, im2col copies each channel once into a zero-padded volume on
# the stack and unrolls from it with plain copies.  Only copies: the same values.  Its
# adjoint, col2im_add, adds into such a copy of grad_x's channel and copies it back.
cdef enum:
    PADDED_MAX = 4096
    PADDED_ROW_MAX = 16


cdef inline void fill_padded(const floating_t *xc, const Geom *g, Py_ssize_t ED,
                             Py_ssize_t EH, Py_ssize_t EW, floating_t *pad) noexcept nogil:
    """pad[(ed * EH + eh) * EW + ew] = x[ed - pd, eh - ph, ew - pw] of one channel, zero
    where that is outside the input."""
    cdef Py_ssize_t ed, eh, n = min(g.W, EW - g.pw)
    cdef floating_t *dst
    cdef const floating_t *src
    memset(pad, 0, ED * EH * EW * sizeof(floating_t))
    if n <= 0:   # the window reads padding columns only
        return
    for ed in range(max(0, g.pd), min(ED, g.D + g.pd)):
        for eh in range(max(0, g.ph), min(EH, g.H + g.ph)):
            dst = pad + (ed * EH + eh) * EW + g.pw
            src = xc + ((ed - g.pd) * g.H + eh - g.ph) * g.W
            memcpy(dst, src, n * sizeof(floating_t))


cdef inline void unfill_padded(const floating_t *pad, const Geom *g, Py_ssize_t ED,
                               Py_ssize_t EH, Py_ssize_t EW, floating_t *xc) noexcept nogil:
    """The inverse of fill_padded: x[ed - pd, eh - ph, ew - pw] = pad[(ed * EH + eh) * EW
    + ew] for every position of one channel the padded volume holds."""
    cdef Py_ssize_t ed, eh, n = min(g.W, EW - g.pw)
    if n <= 0:
        return
    for ed in range(max(0, g.pd), min(ED, g.D + g.pd)):
        for eh in range(max(0, g.ph), min(EH, g.H + g.ph)):
            memcpy(xc + ((ed - g.pd) * g.H + eh - g.ph) * g.W, pad + (ed * EH + eh) * EW + g.pw,
                   n * sizeof(floating_t))


cdef inline bint padded_fits(const Geom *g, Py_ssize_t ED, Py_ssize_t EH,
                             Py_ssize_t EW) noexcept nogil:
    """Unrolling (and its adjoint) works on padded volumes: short rows, small extents
    (each bounded first: huge dilations would overflow their product)."""
    return (g.OW < PADDED_ROW_MAX and ED <= PADDED_MAX and EH <= PADDED_MAX
            and EW <= PADDED_MAX and ED * EH * EW <= PADDED_MAX)


cdef inline bint reads_no_padding(const Geom *g, Py_ssize_t ED, Py_ssize_t EH,
                                  Py_ssize_t EW) noexcept nogil:
    """The window reads inside the input only (the adjoint of a k2 s2 transposed
    convolution): a padded volume would be a copy of the whole channel."""
    return (g.pd == 0 and g.ph == 0 and g.pw == 0 and ED <= g.D and EH <= g.H
            and EW <= g.W and g.D * g.H * g.W < (1 << 30))


cdef inline void padded_positions(const Geom *g, Py_ssize_t rows, Py_ssize_t pitch,
                                  Py_ssize_t p0, Py_ssize_t pn, int *at) noexcept nogil:
    """at[j]: where position p0 + j's window starts in a volume of rows x pitch planes."""
    cdef Py_ssize_t j, od, oh, ow
    position(g, p0, &od, &oh, &ow)
    for j in range(pn):
        at[j] = <int> ((od * g.sd * rows + oh * g.sh) * pitch + ow * g.sw)
        ow += 1
        if ow == g.OW:
            next_row(g, &od, &oh, &ow)


cdef inline Py_ssize_t padded_tap(const Geom *g, Py_ssize_t t, Py_ssize_t rows,
                                  Py_ssize_t pitch) noexcept nogil:
    """Where tap t reads, relative to a window's start, in a volume of rows x pitch planes."""
    return (((t // (g.KH * g.KW)) * g.dd * rows + (t // g.KW % g.KH) * g.dh) * pitch
            + t % g.KW * g.dw)


cdef inline void copy4(const floating_t *vol, floating_t *row) noexcept nogil:
    """row[i] = vol[i] for i < 4, through locals (no loop, no overlap check)."""
    cdef floating_t a0 = vol[0], a1 = vol[1], a2 = vol[2], a3 = vol[3]
    row[0] = a0
    row[1] = a1
    row[2] = a2
    row[3] = a3


cdef inline void run_copy(floating_t *vol, floating_t *row, Py_ssize_t n,
                          bint adjoint) noexcept nogil:
    """row[i] = vol[i] (im2col), or vol[i] += row[i] (its adjoint), for i < n.  Runs of
    4 and 8 (4- and 8-wide outputs, the small images' usual widths) are copied four at a
    time through locals."""
    cdef Py_ssize_t i
    if (n == 4 or n == 8) and not adjoint:
        copy4(vol, row)
        if n == 8:
            copy4(vol + 4, row + 4)
        return
    if adjoint:
        for i in range(n):
            vol[i] += row[i]
    else:
        for i in range(n):
            row[i] = vol[i]


cdef inline void padded_unroll(floating_t *xc, const Geom *g, Py_ssize_t ED, Py_ssize_t EH,
                               Py_ssize_t EW, Py_ssize_t k0, Py_ssize_t nk, Py_ssize_t p0,
                               Py_ssize_t pn, floating_t *cols, Py_ssize_t ld,
                               bint adjoint) noexcept nogil:
    """Small images' unrolling (ED x EH x EW <= PADDED_MAX, so pn <= P <= PADDED_MAX too)
    through a zero-padded copy of each channel: position p0 + j's window starts at at[j]
    in the copy and tap t is an offset from there, the same for every row.

    im2col (adjoint False): cols[r, j] = the copy at at[j] + offset of row k0 + r, xc
    read only.  col2im_add (adjoint True): the copy takes grad_x's values (xc), every row
    adds into it, cols[r, j] to the copy at at[j] + offset, and the copy's inside goes
    back to grad_x: each value gets the same additions in the same order as in
    col2im_add's row walk (the rows in turn; a row adds to a value at most once), so the
    same bits, and the additions that land on padding are dropped with it.  A window that
    reads no padding (the adjoint of a k2 s2 transposed convolution) works on the channel
    itself, with its own pitches: the copy would be a copy of the whole channel."""
    cdef floating_t pad[PADDED_MAX]
    cdef int at[PADDED_MAX]
    cdef int runs[PADDED_MAX]
    cdef Py_ssize_t plane = g.D * g.H * g.W, r = 0, r1, rr, c, j, q, nruns = 0
    cdef bint inside = reads_no_padding(g, ED, EH, EW)
    cdef Py_ssize_t pitch = g.W if inside else EW       # elements per row
    cdef Py_ssize_t rows = g.H if inside else EH        # rows per plane
    # unit stride along the rows: positions whose windows start one apart form runs
    # (an output row's, at most pn / 4 + 2 of them), each row copied run by run
    cdef bint by_runs = g.sw == 1 and g.OW >= 4
    cdef floating_t *vol
    cdef floating_t *base
    cdef floating_t *row
    padded_positions(g, rows, pitch, p0, pn, at)
    if by_runs:
        j = 0
        while j < pn:
            q = j + 1
            while q < pn and at[q] == at[q - 1] + 1:
                q = q + 1
            runs[2 * nruns] = <int> j
            runs[2 * nruns + 1] = <int> (q - j)
            nruns = nruns + 1
            j = q
    while r < nk:
        c = (k0 + r) // g.KK
        r1 = min(nk, (c + 1) * g.KK - k0)   # this channel's rows
        if inside:
            vol = xc + c * plane
        else:
            fill_padded(xc + c * plane, g, ED, EH, EW, pad)
            vol = pad
        for rr in range(r, r1):
            base = vol + padded_tap(g, k0 + rr - c * g.KK, rows, pitch)
            row = cols + rr * ld
            if by_runs:
                for q in range(nruns):
                    j = runs[2 * q]
                    run_copy(base + at[j], row + j, runs[2 * q + 1], adjoint)
            elif adjoint:
                for j in range(pn):
                    base[at[j]] += row[j]
            else:
                for j in range(pn):
                    row[j] = base[at[j]]
        if adjoint and not inside:
            unfill_padded(pad, g, ED, EH, EW, xc + c * plane)
        r = r1


cdef inline void im2col(const floating_t *xg, const Geom *g, Py_ssize_t k0, Py_ssize_t nk,
                        Py_ssize_t p0, Py_ssize_t pn, floating_t *dst, Py_ssize_t ld) noexcept nogil:
    """Unroll reduction rows k0 .. k0 + nk for output positions p0 .. p0 + pn.

    Writes value (r, j) (zero where the window reads padding) to dst[r * ld + j].
    xg points at channel 0 of the group in one image.
    """
    cdef Py_ssize_t ED = read_extent(g.OD, g.sd, g.KD, g.dd)
    cdef Py_ssize_t EH = read_extent(g.OH, g.sh, g.KH, g.dh)
    cdef Py_ssize_t EW = read_extent(g.OW, g.sw, g.KW, g.dw)
    if padded_fits(g, ED, EH, EW):
        # (read only: the cast serves the adjoint's signature)
        padded_unroll(<floating_t *> xg, g, ED, EH, EW, k0, nk, p0, pn, dst, ld, False)
        return
    cdef Py_ssize_t r, c, kd, kh, kw, j, q, seg, off, lo, hi, od, oh, ow, lo_row, hi_row
    cdef Py_ssize_t plane = g.D * g.H * g.W, lo_next, hi_next
    cdef bint pair
    cdef const floating_t *xc
    cdef floating_t *row
    r = 0
    while r < nk:
        tap(g, k0 + r, &c, &kd, &kh, &kw)
        xc = xg + c * plane
        row = dst + r * ld
        # a whole output row's column range depends on the tap's kw only (row_span's
        # divisions per row were most of the unrolling of strided layers' rows)
        column_range(g, kw * g.dw - g.pw, g.OW, &lo_row, &hi_row)
        # a stride-2 window's taps kw and kw + 1 (rows r and r + 1) read neighbouring
        # input columns: where both read whole output rows, one pass splits the run into
        # both (a k2 s2 layer's unrolling is then one read of x)
        pair = g.sw == 2 and g.dw == 1 and kw + 1 < g.KW and r + 1 < nk
        if pair:
            column_range(g, kw + 1 - g.pw, g.OW, &lo_next, &hi_next)
            pair = lo_row == 0 and lo_next == 0 and hi_row == g.OW and hi_next == g.OW
        position(g, p0, &od, &oh, &ow)
        j = 0
        while j < pn:
            seg = min(g.OW - ow, pn - j)
            if seg == g.OW:
                off = row_at(g, kd, kh, kw, od, oh, 0, lo_row, hi_row, &lo, &hi)
                if pair and lo == 0 and hi == seg:
                    split_stride2(row + j, row + ld + j, xc + off, seg)
                    j += seg
                    next_row(g, &od, &oh, &ow)
                    continue
            else:
                off = row_span(g, kd, kh, kw, od, oh, ow, seg, &lo, &hi)
            for q in range(lo):
                row[j + q] = 0
            if g.sw == 1:
                for q in range(lo, hi):
                    row[j + q] = xc[off + q]
            elif g.sw == 2:
                copy_stride2(row + j + lo, xc + off + 2 * lo, hi - lo)
            else:
                for q in range(lo, hi):
                    row[j + q] = xc[off + q * g.sw]
            for q in range(hi, seg):
                row[j + q] = 0
            if pair:
                # the neighbouring tap's part of the run, on its own
                off = row_span(g, kd, kh, kw + 1, od, oh, ow, seg, &lo, &hi)
                for q in range(lo):
                    row[ld + j + q] = 0
                copy_stride2(row + ld + j + lo, xc + off + 2 * lo, hi - lo)
                for q in range(hi, seg):
                    row[ld + j + q] = 0
            j += seg
            next_row(g, &od, &oh, &ow)
        r += 2 if pair else 1


cdef inline void col2im_add(const floating_t *col, Py_ssize_t ld, const Geom *g,
                            Py_ssize_t k0, Py_ssize_t nk, Py_ssize_t p0, Py_ssize_t pn,
                            floating_t *gxc) noexcept nogil:
    """The adjoint of im2col: gx[where row k0 + r reads position p0 + j] += col[r, j].

    gxc points at the channel that reduction index 0 belongs to.
    """
    cdef Py_ssize_t ED = read_extent(g.OD, g.sd, g.KD, g.dd)
    cdef Py_ssize_t EH = read_extent(g.OH, g.sh, g.KH, g.dh)
    cdef Py_ssize_t EW = read_extent(g.OW, g.sw, g.KW, g.dw)
    if padded_fits(g, ED, EH, EW):
        padded_unroll(gxc, g, ED, EH, EW, k0, nk, p0, pn, <floating_t *> col, ld, True)
        return
    cdef Py_ssize_t r, c, kd, kh, kw, j, q, seg, off, lo, hi, od, oh, ow, lo_row, hi_row
    cdef Py_ssize_t plane = g.D * g.H * g.W
    cdef floating_t *dst
    cdef const floating_t *row
    for r in range(nk):
        tap(g, k0 + r, &c, &kd, &kh, &kw)
        dst = gxc + c * plane
        row = col + r * ld
        # a whole output row's column range depends on the tap's kw only (row_span's
        # divisions per row were most of the unrolling of strided layers' rows)
        column_range(g, kw * g.dw - g.pw, g.OW, &lo_row, &hi_row)
        position(g, p0, &od, &oh, &ow)
        j = 0
        while j < pn:
            seg = min(g.OW - ow, pn - j)
            if seg == g.OW:
                off = row_at(g, kd, kh, kw, od, oh, 0, lo_row, hi_row, &lo, &hi)
            else:
                off = row_span(g, kd, kh, kw, od, oh, ow, seg, &lo, &hi)
            if g.sw == 1:
                for q in range(lo, hi):
                    dst[off + q] += row[j + q]
            else:
                for q in range(lo, hi):
                    dst[off + q * g.sw] += row[j + q]
            j += seg
            next_row(g, &od, &oh, &ow)


cdef struct Tile:
    # A tile of the direct (slab) path: output planes od0 .. od0 + planes - 1, rows
    # oh0 .. oh0 + rows - 1, columns w0 .. w0 + cols - 1.  Its output (pz, r, q) is
    # column j = (pz * srows + r) * width + q of the tile's matrix, where width = cols +
    # the column halo (KW - 1) * dw // sw and srows = rows + the row halo
    # (KH - 1) * dh // sh (depth likewise); the other columns (the halos) are computed
    # and dropped.  npos = columns up to the last output row's last output (that row's
    # halo columns are not computed: a 1-D tile, one row, has none).
    Py_ssize_t od0, planes, oh0, rows, w0, cols
    Py_ssize_t width, srows, depth, npos
    Py_ssize_t pitch  # slab elements from one (channel, phase) plane to the next


# A slab plane whose size is a multiple of 32 elements is followed by 16 zeros: planes a
# power-of-two number of bytes apart (1-D rows of 256 + a 256-tap halo, say) put the same
# column of every channel in one L1 set, so a GEMM sliver's rows, one per channel and
# tap, evict each other (4 KiB apart: all in one set of 8 ways, for the 128 rows of a
# reduction block).  After the skew consecutive planes start 64 or 128 bytes apart modulo
# 256, and the rows spread over the sets.
cdef enum:
    SLAB_SKEW_EVERY = 32
    SLAB_SKEW = 16


cdef inline Py_ssize_t slab_pitch(Py_ssize_t plane) noexcept nogil:
    """Elements from one slab plane of `plane` elements to the next (see SLAB_SKEW)."""
    return plane + SLAB_SKEW if plane % SLAB_SKEW_EVERY == 0 else plane


cdef inline Tile make_tile(const Geom *g, Py_ssize_t od0, Py_ssize_t planes, Py_ssize_t oh0,
                           Py_ssize_t rows, Py_ssize_t w0, Py_ssize_t cols) noexcept nogil:
    """The tile at (od0, oh0, w0), clipped to the output (returned by value, so that a
    prange loop that assigns it keeps one per thread)."""
    cdef Tile t
    t.od0 = od0
    t.planes = min(planes, g.OD - od0)
    t.oh0 = oh0
    t.rows = min(rows, g.OH - oh0)
    t.w0 = w0
    t.cols = min(cols, g.OW - w0)
    t.width = t.cols + (g.KW - 1) * g.dw // g.sw
    t.srows = t.rows + (g.KH - 1) * g.dh // g.sh
    t.depth = t.planes + (g.KD - 1) * g.dd // g.sd
    t.npos = ((t.planes - 1) * t.srows + t.rows - 1) * t.width + t.cols
    t.pitch = slab_pitch(t.depth * t.srows * t.width)
    return t


cdef inline Py_ssize_t slab_size(const Geom *g, const Tile *t) noexcept nogil:
    return g.Cg * g.sd * g.sh * g.sw * t.pitch


cdef inline void fill_slab(const floating_t *xg, const Geom *g, const Tile *t,
                           floating_t *slab) noexcept nogil:
    """Copy the zero-padded input that a tile reads, split into stride phases.

    With xp the input padded by (pd, ph, pw), phase (a, b, e) of channel c holds
    slab[c, a, b, e, z, r, q] = xp[c, (od0 + z) * sd + a, (oh0 + r) * sh + b,
    (w0 + q) * sw + e] for z < depth, r < srows, q < width: output (pz, r, q) and tap
    (kd, kh, kw) then read phase (kd*dd % sd, kh*dh % sh, kw*dw % sw) at
    (pz + kd*dd // sd, r + kh*dh // sh, q + kw*dw // sw), a stride-1 run.  For stride 1
    there is one phase and the slab is the padded input.  Planes are t.pitch elements
    apart, the gap between them zero.  xg points at channel 0 of the group.
    """
    cdef Py_ssize_t c, a, b, e, z, r, q, id, ih, iw0, lo, hi
    cdef const floating_t *src
    cdef floating_t *dst = slab
    for c in range(g.Cg):
        for a in range(g.sd):
            for b in range(g.sh):
                for e in range(g.sw):
                    # columns q with 0 <= iw0 + q * sw < W
                    iw0 = t.w0 * g.sw + e - g.pw
                    lo = 0 if iw0 >= 0 else min((-iw0 + g.sw - 1) // g.sw, t.width)
                    hi = 0 if iw0 >= g.W else min((g.W - 1 - iw0) // g.sw + 1, t.width)
                    hi = max(lo, hi)
                    for z in range(t.depth):
                        id = (t.od0 + z) * g.sd + a - g.pd
                        for r in range(t.srows):
                            ih = (t.oh0 + r) * g.sh + b - g.ph
                            if id < 0 or id >= g.D or ih < 0 or ih >= g.H:
                                for q in range(t.width):
                                    dst[q] = 0
                                dst += t.width
                                continue
                            src = xg + ((c * g.D + id) * g.H + ih) * g.W + iw0
                            for q in range(lo):
                                dst[q] = 0
                            if g.sw == 1 and hi - lo >= 64:
                                # memcpy moves whole vectors: more of x's misses in flight
                                memcpy(dst + lo, src + lo, (hi - lo) * sizeof(floating_t))
                            elif g.sw == 1:
                                for q in range(lo, hi):  # short rows: no call overhead
                                    dst[q] = src[q]
                            elif g.sw == 2:
                                # (one shuffle per two vectors, strided_copy.h: the
                                # element loop was half of a 3-channel stride-2 stem's
                                # forward outside its GEMM)
                                copy_stride2(dst + lo, src + 2 * lo, hi - lo)
                            else:
                                for q in range(lo, hi):
                                    dst[q] = src[q * g.sw]
                            for q in range(hi, t.width):
                                dst[q] = 0
                            dst += t.width
                    for q in range(t.pitch - t.depth * t.srows * t.width):
                        dst[q] = 0
                    dst += t.pitch - t.depth * t.srows * t.width


cdef inline void slab_offsets(const Geom *g, const Tile *t, Py_ssize_t *boff) noexcept nogil:
    """boff[k] = where tap k of the tile's output column 0 reads in the slab.

    Output column j reads slab[boff[k] + j]: within its stride phase (see fill_slab) a
    window moves one slab column per output column (and one slab row or plane per
    output row or plane), so each tap is a contiguous run and the matrix product reads
    the slab in place.
    """
    cdef Py_ssize_t k = 0, c, kd, kh, kw, phase, plane = t.pitch
    for kd in range(g.KD):
        for kh in range(g.KH):
            for kw in range(g.KW):
                phase = ((kd * g.dd % g.sd) * g.sh + kh * g.dh % g.sh) * g.sw + kw * g.dw % g.sw
                boff[k] = (phase * plane + ((kd * g.dd // g.sd) * t.srows + kh * g.dh // g.sh) * t.width
                           + kw * g.dw // g.sw)
                k = k + 1
    # channel c repeats channel 0's taps sd * sh * sw phase planes further on
    for c in range(1, g.Cg):
        for k in range(g.KK):
            boff[c * g.KK + k] = boff[k] + c * g.sd * g.sh * g.sw * plane
