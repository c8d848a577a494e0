# The weights packed as the GEMM's A operand (gemm.pxd's layout: blocks of mr rows,
# block b holding A[b * mr + i, k] at [(b * K + k) * mr + i], rows past the matrix
# zero), for the forward, the flipped and phased input gradients and col2im.
# Included by _conv.pyx.
#
# Every call packs the whole weight once, which for a layer of many channels on small
# images costs as much as a good part of the product (512 x 512 x 3 x 3 float32 weights
# are 9.4 MB: about 1.3 ms on one Zen 2 core with one element per load and store, and
# an index division per element in the flipped layouts).  So the packs run in parallel
# over blocks of rows, and move whole vectors: a block's mr rows are a transposed copy
# (the transpose micro-kernel's ragged-row groups), the flipped one a transposed copy
# of each filter's (mr channels x KK taps) chunk with its taps reversed, col2im's a copy
# of runs of mr values.  Only copies: the packed values, and so the products, are the
# same whichever way they are moved.


cdef inline void pack_transposed_rows(const floating_t *src, Py_ssize_t lds, Py_ssize_t rows,
                                      Py_ssize_t kc, Py_ssize_t mr,
                                      floating_t *dst) noexcept nogil:
    """dst[k * mr + i] = src[i * lds + k] for i < rows (rows <= mr), k < kc, and zero
    for the rows past them: one block of a weight whose rows are the GEMM's rows (the
    forward's A, or the channels-last forward's B sliver)."""
    if rows < mr:
        memset(dst, 0, mr * kc * sizeof(floating_t))
    transpose(src, lds, rows, kc, dst, mr)


cdef inline void pack_forward_block(const floating_t *w, const Geom *g, Py_ssize_t grp,
                                    Py_ssize_t f0, Py_ssize_t rows, Py_ssize_t mr,
                                    floating_t *dst) noexcept nogil:
    """One mr-row block of the forward's A: dst[k * mr + i] = W[grp * Fg + f0 + i, k]
    for i < rows (rows <= mr), zero for the rows past them."""
    cdef Py_ssize_t K = g.Cg * g.KK
    pack_transposed_rows(w + (grp * g.Fg + f0) * K, K, rows, K, mr, dst)


cdef inline void pack_flipped_block(const floating_t *w, const Geom *g, Py_ssize_t grp,
                                    Py_ssize_t c0, Py_ssize_t rows, Py_ssize_t mr,
                                    floating_t *dst) noexcept nogil:
    """One mr-row block of the flipped input gradient's A (g the layer's geometry):
    dst[(f * KK + kk) * mr + i] = W[grp * Fg + f, c0 + i, KK - 1 - kk] for i < rows,
    zero for the rows past them."""
    cdef Py_ssize_t K = g.Fg * g.KK, f, i
    cdef const floating_t *src
    if rows < mr:
        memset(dst, 0, mr * K * sizeof(floating_t))
    for f in range(g.Fg):
        # the filter's channels c0 .. c0 + rows: rows x KK contiguous values
        src = w + ((grp * g.Fg + f) * g.Cg + c0) * g.KK
        if g.KK == 1:
            for i in range(rows):
                dst[f * mr + i] = src[i]
        else:
            # tap kk lands in row f * KK + KK - 1 - kk: the rows descend
            transpose(src, g.KK, rows, g.KK, dst + (f * g.KK + g.KK - 1) * mr, -mr)


cdef inline void pack_flipped_kblock(const floating_t *w, const Geom *g, Py_ssize_t grp,
                                     Py_ssize_t c0, Py_ssize_t rows, Py_ssize_t k0,
                                     Py_ssize_t kc, Py_ssize_t nr,
                                     floating_t *dst) noexcept nogil:
    """Rows k0 .. k0 + kc of the flipped input gradient's B sliver of channels c0 .. c0 +
    rows (g the layer's geometry): dst[(k - k0) * nr + i] = W[grp * Fg + f, c0 + i, KK -
    1 - kk] for k = f * KK + kk, zero for the columns past rows; pack_flipped_block's
    values, one reduction block of one sliver (the channels-last input gradient's
    tasks pack their own)."""
    cdef Py_ssize_t f, a, b
    cdef const floating_t *src
    if rows < nr:
        memset(dst, 0, kc * nr * sizeof(floating_t))
    for f in range(k0 // g.KK, (k0 + kc - 1) // g.KK + 1):
        src = w + ((grp * g.Fg + f) * g.Cg + c0) * g.KK
        if g.KK == 1:
            memcpy(dst + (f - k0) * nr, src, rows * sizeof(floating_t))
            continue
        # packed taps a .. b of filter f (tap KK - 1 - kk at packed kk), rows descending
        a = max(0, k0 - f * g.KK)
        b = min(g.KK, k0 + kc - f * g.KK)
        transpose(src + g.KK - b, g.KK, rows, b - a, dst + (f * g.KK + b - 1 - k0) * nr, -nr)


cdef inline void prefetch_flipped_kblock(const floating_t *w, const Geom *g, Py_ssize_t grp,
                                         Py_ssize_t c0, Py_ssize_t rows, Py_ssize_t k0,
                                         Py_ssize_t kc) noexcept nogil:
    """Ask for the weight that pack_flipped_kblock(w, g, grp, c0, rows, k0, kc, ...) reads
    (a run of rows * KK values of each of its filters, a filter Cg * KK apart) to be
    brought to L2 (prefetch.h)."""
    cdef Py_ssize_t f0 = k0 // g.KK, f1 = (k0 + kc - 1) // g.KK + 1
    ck_prefetch_rows(w + ((grp * g.Fg + f0) * g.Cg + c0) * g.KK,
                     g.Cg * g.KK * sizeof(floating_t), f1 - f0,
                     rows * g.KK * sizeof(floating_t))


cdef void pack_forward_weights(const floating_t *w, const Geom *g, Py_ssize_t mr,
                               floating_t *wpack, int nt) noexcept nogil:
    """wpack[grp]: A[f, k] = W[grp * Fg + f, k] (Fg x Cg * KK) in mr-row blocks, groups
    round_up(Fg, mr) * K elements apart."""
    cdef Py_ssize_t K = g.Cg * g.KK, nb = (g.Fg + mr - 1) // mr
    cdef Py_ssize_t t, grp, b
    for t in prange(g.G * nb, num_threads=nt, schedule="static"):
        grp = t // nb
        b = t % nb
        pack_forward_block(w, g, grp, b * mr, min(mr, g.Fg - b * mr), mr,
                           wpack + (grp * nb + b) * mr * K)


cdef void pack_flipped_weights(const floating_t *w, const Geom *g, Py_ssize_t mr,
                               floating_t *wpack, int nt) noexcept nogil:
    """The flipped input gradient's A per group: A[c, f * KK + kk] = W[grp * Fg + f, c,
    KK - 1 - kk] (Cg x Fg * KK) in mr-row blocks, groups round_up(Cg, mr) * Fg * KK
    elements apart."""
    cdef Py_ssize_t K = g.Fg * g.KK, nb = (g.Cg + mr - 1) // mr
    cdef Py_ssize_t t, grp, b
    for t in prange(g.G * nb, num_threads=nt, schedule="static"):
        grp = t // nb
        b = t % nb
        pack_flipped_block(w, g, grp, b * mr, min(mr, g.Cg - b * mr), mr,
                           wpack + (grp * nb + b) * mr * K)


cdef void pack_phase_weights(const floating_t *w, const Geom *g, const Py_ssize_t *taps,
                             Py_ssize_t ntaps, Py_ssize_t mr, floating_t *wpack,
                             int nt) noexcept nogil:
    """One stride phase's A per group: A[c, f * ntaps + j] = W[grp * Fg + f, c, taps[j]]
    (Cg x Fg * ntaps) in mr-row blocks, groups round_up(Cg, mr) * Fg * ntaps apart."""
    cdef Py_ssize_t K = g.Fg * ntaps, nb = (g.Cg + mr - 1) // mr
    cdef Py_ssize_t t, grp, b, rows, f, i, j
    cdef floating_t *dst
    cdef const floating_t *src
    for t in prange(g.G * nb, num_threads=nt, schedule="static"):
        grp = t // nb
        b = t % nb
        rows = min(mr, g.Cg - b * mr)
        dst = wpack + (grp * nb + b) * mr * K
        if rows < mr:
            memset(dst, 0, mr * K * sizeof(floating_t))
        for f in range(g.Fg):
            src = w + ((grp * g.Fg + f) * g.Cg + b * mr) * g.KK
            for j in range(ntaps):
                for i in range(rows):
                    dst[(f * ntaps + j) * mr + i] = src[i * g.KK + taps[j]]


cdef void pack_col2im_weights(const floating_t *w, const Geom *g, Py_ssize_t cch,
                              Py_ssize_t nchunks, Py_ssize_t rows_pad, Py_ssize_t mr,
                              floating_t *wpack, int nt) noexcept nogil:
    """col2im's A per (group, chunk of cch channels): A[r, f] = W[grp * Fg + f, c0 * KK +
    r] (the chunk's cch * KK rows of W[grp]^T) in mr-row blocks, rows_pad * Fg elements
    per chunk."""
    cdef Py_ssize_t K = g.Cg * g.KK, nb = rows_pad // mr
    cdef Py_ssize_t t, grp, ci, b, r0, rows, f, i
    cdef floating_t *dst
    cdef const floating_t *src
    for t in prange(g.G * nchunks * nb, num_threads=nt, schedule="static"):
        grp = t // (nchunks * nb)
        ci = t // nb % nchunks
        b = t % nb
        r0 = ci * cch * g.KK + b * mr      # the block's first row of W[grp]^T
        rows = max(0, min(mr, min(g.Cg, (ci + 1) * cch) * g.KK - r0))
        dst = wpack + ((grp * nchunks + ci) * nb + b) * mr * g.Fg
        if rows < mr:
            memset(dst, 0, mr * g.Fg * sizeof(floating_t))
        for f in range(g.Fg):
            src = w + (grp * g.Fg + f) * K + r0
            for i in range(rows):
                dst[f * mr + i] = src[i]
