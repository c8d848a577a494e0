# The shape of one convolution or pooling call, with every operand seen as 3-D
# (the Python face turns 1-D and 2-D calls into D = 1 and H = 1 slices).

cdef struct Geom:
    Py_ssize_t N, C, D, H, W        # input (N, C, D, H, W)
    Py_ssize_t F, G, Cg, Fg         # filters, groups, channels and filters per group
    Py_ssize_t KD, KH, KW, KK       # window, KK = KD * KH * KW
    Py_ssize_t OD, OH, OW, P        # output, P = OD * OH * OW
    Py_ssize_t sd, sh, sw           # stride
    Py_ssize_t pd, ph, pw           # padding before each axis (the after side is implied)
    Py_ssize_t dd, dh, dw           # dilation


cdef inline void position(const Geom *g, Py_ssize_t p, Py_ssize_t *od, Py_ssize_t *oh,
                          Py_ssize_t *ow) noexcept nogil:
    """Split the flat output position p = (od * OH + oh) * OW + ow."""
    od[0] = p // (g.OH * g.OW)
    oh[0] = (p // g.OW) % g.OH
    ow[0] = p % g.OW


cdef inline void next_row(const Geom *g, Py_ssize_t *od, Py_ssize_t *oh,
                          Py_ssize_t *ow) noexcept nogil:
    """Move to the first position of the next output row."""
    ow[0] = 0
    oh[0] += 1
    if oh[0] == g.OH:
        oh[0] = 0
        od[0] += 1


cdef inline Py_ssize_t read_extent(Py_ssize_t O, Py_ssize_t s, Py_ssize_t K,
                                   Py_ssize_t d) noexcept nogil:
    """Input positions (padding included) that O outputs of stride s read through K taps
    dilation d apart: the extent of a padded copy of one axis."""
    return (O - 1) * s + (K - 1) * d + 1


cdef inline void column_range(const Geom *g, Py_ssize_t iw0, Py_ssize_t seg,
                              Py_ssize_t *qlo, Py_ssize_t *qhi) noexcept nogil:
    """[qlo, qhi): the q < seg with input column iw0 + q * sw inside the input."""
    cdef Py_ssize_t lo, hi
    # first q with iw0 + q*sw >= 0, and one past the last q with iw0 + q*sw <= W - 1
    lo = 0 if iw0 >= 0 else (-iw0 - 1) // g.sw + 1
    hi = 0 if iw0 >= g.W else (g.W - 1 - iw0) // g.sw + 1
    hi = min(hi, seg)
    qlo[0] = min(lo, hi)
    qhi[0] = hi


cdef inline Py_ssize_t row_at(const Geom *g, Py_ssize_t kd, Py_ssize_t kh, Py_ssize_t kw,
                              Py_ssize_t od, Py_ssize_t oh, Py_ssize_t ow, Py_ssize_t lo,
                              Py_ssize_t hi, Py_ssize_t *qlo,
                              Py_ssize_t *qhi) noexcept nogil:
    """row_span given the segment's column range [lo, hi) (column_range): empty when the
    whole row (id, ih) is padding."""
    cdef Py_ssize_t id = od * g.sd - g.pd + kd * g.dd
    cdef Py_ssize_t ih = oh * g.sh - g.ph + kh * g.dh
    if id < 0 or id >= g.D or ih < 0 or ih >= g.H:
        qlo[0] = 0
        qhi[0] = 0
        return 0
    qlo[0] = lo
    qhi[0] = hi
    return (id * g.H + ih) * g.W + ow * g.sw - g.pw + kw * g.dw


cdef inline Py_ssize_t row_span(const Geom *g, Py_ssize_t kd, Py_ssize_t kh, Py_ssize_t kw,
                                Py_ssize_t od, Py_ssize_t oh, Py_ssize_t ow,
                                Py_ssize_t seg, Py_ssize_t *qlo,
                                Py_ssize_t *qhi) noexcept nogil:
    """Where window tap (kd, kh, kw) reads for output positions ow .. ow + seg - 1 of row (od, oh).

    Output position ow + q reads input (id, ih, iw0 + q * sw) with
    id = od*sd - pd + kd*dd, ih = oh*sh - ph + kh*dh, iw0 = ow*sw - pw + kw*dw.
    Returns the flat offset (id * H + ih) * W + iw0 and sets [qlo, qhi) to the q that
    fall inside the input; the rest read zero padding.  The range is empty when the
    whole row (id, ih) is padding.  (A whole output row's range depends on kw only:
    unrolling computes it once per tap, column_range, and calls row_at.)
    """
    cdef Py_ssize_t lo, hi
    column_range(g, ow * g.sw - g.pw + kw * g.dw, seg, &lo, &hi)
    return row_at(g, kd, kh, kw, od, oh, ow, lo, hi, qlo, qhi)
