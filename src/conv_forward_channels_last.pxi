# The correlation y = act(x * W + bias) computed channels-last: output positions as the
# GEMM's rows, read in place from a channels-last copy of the input, and filters along
# the micro-kernel's vectors.  Included by _conv.pyx.
#
# With the input copied channels-last and zero-padded (one plane per image and group, as
# the channels-last weight gradient's slab: cl_fill_plane), the output at position
# r = (n, p) of a group is
#
#     yt[r, f] = sum over k = c * KK + tap of slab[start(r) + shift(tap) + c] * W[f, k],
#
# a GEMM whose A rows are gathered in place (gemm.pxd's gemm_gather_block: a row
# pointer start(r) per position, an offset shift(tap) + c per reduction index) and whose
# B is the weight transposed, nr filters per sliver (pack_forward_weights with nr for
# mr).  Against the other forward paths: no im2col (each input value is copied once, not
# once per tap) and no halo (the rows are the output positions themselves, over images,
# so small images fill the blocks: 16 positions of a 4x4 image are two 8-row blocks,
# where a 32-column sliver of positions is half empty).  k runs in the order, and the
# reduction in the blocks, of the other forward paths: the same bits.
#
# Tasks: a tile of positions (over images) times a range of filter slivers, so a batch
# of one small image still splits over the threads.  A task's tw x fn output block is
# transposed into y, then the bias and the activation are applied (copy_out's operations
# in its order).
#
# With one tile of positions (at most TILE in all: the 4x4 to 8x8 stages of VGG, ResNet
# and U-Net at their training batch), each block of the weight serves one task only, so
# the task packs each KC x nr block itself, into a buffer in its core's L1, right before
# the blocks of rows pass over it (gemm_gather_packing): the same transposes as the
# separate pack, but the packed weight (9 MiB for 512 x 512 x 3 x 3) is neither written
# to memory nor read back.  Measured on an AVX-512 Xeon (2 threads): 512-channel layers
# 1.07-1.12x faster, 128-256 channels within noise.  The flipped input gradient does
# the same with its flipped blocks (pack_flipped_kblock): VGG's 512-channel 4x4 layer
# at batch 16 5.2 -> 4.7 ms.  With more tiles the weight is packed once, up front, and
# read by every tile.
#
# Tap skipping (the paths channels_last_skip and flipped_channels_last_skip: L.skip).
# A tap that reads the zero padding multiplies zeros: a third of a 4x4 image's steps
# for a 3x3 window, over half of a 2x2 image's.  A block of rows shares its steps, so
# the rows take the (position, image) order: for at least mr images a block is one
# position of mr images (or spans two), for fewer a run of positions, which on a small
# image are sorted by their taps where that skips more (sort_skip_positions); per
# reduction block each distinct union of a block's positions' taps gets a list of its
# steps (SkipLists: the window offset and the
# packed weight's row of each), which the gathered micro-kernel's skip variant walks.
# A skipped step would have added a zero product (+0 or -0; a sum that starts at +0
# is never -0), so the sums are the full ones, bit for bit, unless a weight is not
# finite (0 * inf is NaN): then a sum of the tile is NaN or infinite, since every tap
# reads the input at some row of the tile (else it keeps every tap), and the tile is
# computed again with every tap.  The output block keeps the rows' order, so every
# whole block of rows is stored by the micro-kernel in place, also when it spans
# images (an image-major block, with fewer than mr images, sent every block through
# the edge copies: a 4x4x4 image at batch 2 then ran 1.04x faster than without
# skipping, for a third fewer steps); image n's rows, N rows apart, are transposed
# into y from there.

# Upper bound, in bytes, of a task's output block: it is read and written once per
# reduction block, so it stays within half the smallest per-core L2 of the x86 cores
# the wheels target (Zen 2's 512 KiB).  It only sets the task's filter range, never the
# bits.
cdef Py_ssize_t CL_FORWARD_OUT_BYTES = 256 << 10


cdef struct ClForward:
    # The slab's extent per axis, elements per position (cs >= Cg) and per (image,
    # group) plane; positions per
    # tile and tiles over the N * P positions; filter slivers and slivers per task range
    # and ranges; scratch elements per thread (output block, edge block and a KC x nr
    # block of the weight) and row pointers per thread.
    Py_ssize_t ED, EH, EW, cs, plane
    Py_ssize_t tw, ntiles
    Py_ssize_t nsl, sper, nsplit
    Py_ssize_t per_thread, ptrs
    # skip: rows in (position, image) order and the taps that read padding skipped;
    # then skip_per_thread 8-byte slots per thread (SkipLists)
    bint skip
    Py_ssize_t skip_per_thread


cdef inline Py_ssize_t channel_stride(Py_ssize_t Cg, Py_ssize_t KK, Py_ssize_t mr,
                                      Py_ssize_t itemsize) noexcept nogil:
    """Elements from one position of the slab to the next: Cg, or, when Cg values span
    several cache lines, Cg rounded up to a line, plus one line when that many bytes
    would put the positions a row block's windows read (mr rows, KK taps) in too few L1
    sets to stay in the cache (rows_alias: VGG's 4x4 images of 512 channels, 2 KiB
    apart, ran at half the speed)."""
    cdef Py_ssize_t line = 64 // itemsize, cs
    if Cg <= line:
        return Cg
    cs = round_up(Cg, line)
    if rows_alias(cs * itemsize, mr * KK):
        cs = cs + line
    return cs


cdef inline const Kernels *cl_forward_kernels(const Geom *g,
                                              const floating_t *tag) noexcept nogil:
    """The kernels of correlate_channels_last: one vector wide when the filters of a
    group fit in one vector (LeNet-5's 16), so that no sliver is half empty."""
    return &KERN1 if g.Fg <= block_vl(&KERN, tag) else &KERN


cdef inline Py_ssize_t cl_tile_rows(Py_ssize_t NP, Py_ssize_t mr) noexcept nogil:
    """Rows per tile of NP rows: equal tiles of at most TILE, whole blocks of mr rows."""
    cdef Py_ssize_t ntiles = (NP + TILE - 1) // TILE
    return round_up((NP + ntiles - 1) // ntiles, mr)


cdef ClForward cl_forward_layout(const Geom *g, const Kernels *kern, int nt,
                                 const floating_t *tag, bint skip) noexcept nogil:
    cdef ClForward L
    cdef Py_ssize_t mr = block_mr(kern, tag), nr = block_nr(kern, tag), NP = g.N * g.P
    L.ED = read_extent(g.OD, g.sd, g.KD, g.dd)
    L.EH = read_extent(g.OH, g.sh, g.KH, g.dh)
    L.EW = read_extent(g.OW, g.sw, g.KW, g.dw)
    L.cs = channel_stride(g.Cg, g.KK, mr, sizeof(floating_t))
    L.plane = L.ED * L.EH * L.EW * L.cs
    L.tw = cl_tile_rows(NP, mr)
    L.ntiles = (NP + L.tw - 1) // L.tw
    L.nsl = (g.Fg + nr - 1) // nr
    L.sper = min(blocks_per_split(g.G * L.ntiles, L.nsl, nt),
                 max(1, CL_FORWARD_OUT_BYTES // (L.tw * nr * <Py_ssize_t> sizeof(floating_t))))
    L.nsplit = (L.nsl + L.sper - 1) // L.sper
    L.skip = skip and 2 <= g.KK <= 64
    L.per_thread = round_up(L.tw * L.sper * nr + CK_MR_MAX * CK_NR_MAX + KC * nr,
                            64 // <Py_ssize_t> sizeof(floating_t))
    L.ptrs = L.tw + CK_MR_MAX
    L.skip_per_thread = skip_slots(L.tw // mr, KC) if L.skip else 0
    return L


cdef Py_ssize_t channels_last_forward_scratch(const Geom *g, const floating_t *tag,
                                              bint skip) noexcept nogil:
    """Bytes of scratch of correlate_channels_last on one thread: the slab, the packed
    weight (an upper bound: one tile packs it in its tasks) and the offsets (shared), the
    thread's output block, its block of the weight and its row pointers."""
    cdef const Kernels *kern = cl_forward_kernels(g, tag)
    cdef ClForward L = cl_forward_layout(g, kern, 1, tag, skip)
    cdef Py_ssize_t nr = block_nr(kern, tag), K = g.Cg * g.KK
    return ((g.G * g.N * L.plane + g.G * round_up(g.Fg, nr) * K + L.per_thread)
            * sizeof(floating_t) + (K + g.P) * sizeof(Py_ssize_t)
            + L.ptrs * sizeof(floating_t *)
            + ((L.skip_per_thread + 2 * g.P) * sizeof(unsigned long long)
               + 2 * g.P * sizeof(Py_ssize_t) if L.skip else 0))


cdef struct SkipLists:
    # A task's tap skipping (rows in (position, image) order): per block of rows of
    # its tile, bidx[b] = its list (of the taps umask[bidx[b]], the union of its rows'
    # taps that read the input) or -1 for all taps; nu lists; per reduction block, list
    # u's steps ab[u * abstride ..] (pairs: offset into the window, offset of the
    # packed weight's row) and cnt[u].
    Py_ssize_t nu, KK, abstride
    # the tile's rows r0 .. (row r: position r // N, image r % N)
    Py_ssize_t N, r0
    Py_ssize_t *bidx
    Py_ssize_t *cnt
    Py_ssize_t *ab
    unsigned long long *umask


cdef inline Py_ssize_t skip_slots(Py_ssize_t nblk, Py_ssize_t kc) noexcept nogil:
    """8-byte slots of one task's SkipLists for nblk blocks of rows and reduction blocks
    of at most kc steps."""
    return nblk * (3 + 2 * kc)


cdef inline SkipLists skip_lists(unsigned long long *buf, Py_ssize_t nblk,
                                 Py_ssize_t KK) noexcept nogil:
    """SkipLists in buf (skip_slots(nblk, KC) slots), with no lists yet."""
    cdef SkipLists sk
    sk.nu = 0
    sk.KK = KK
    sk.abstride = 2 * KC
    sk.umask = buf
    sk.bidx = <Py_ssize_t *> (buf + nblk)
    sk.cnt = <Py_ssize_t *> (buf + 2 * nblk)
    sk.ab = <Py_ssize_t *> (buf + 3 * nblk)
    return sk


cdef inline void skip_blocks(SkipLists *sk, const unsigned long long *taps, Py_ssize_t r0,
                             Py_ssize_t rn, Py_ssize_t N, Py_ssize_t mr) noexcept nogil:
    """The lists of the blocks of mr rows r0 .. r0 + rn (row r: position r // N): a block
    whose positions' taps do not cover the window gets the list of their union.  None
    (nu = 0) unless every tap reads the input at some row: a non-finite weight then
    makes some sum of the tile non-finite, and correlate_channels_last redoes the tile
    with every tap (its NaN from 0 * inf where the tap reads padding)."""
    cdef unsigned long long full = ((<unsigned long long> 1) << sk.KK) - 1 if sk.KK < 64 \
        else ~(<unsigned long long> 0)
    cdef unsigned long long m, seen = 0
    cdef Py_ssize_t b, p, u
    sk.nu = 0
    for b in range((rn + mr - 1) // mr):
        m = 0
        for p in range((r0 + b * mr) // N, (r0 + min(rn, b * mr + mr) - 1) // N + 1):
            m = m | taps[p]
        seen = seen | m
        sk.bidx[b] = -1
        if m == full:
            continue
        for u in range(sk.nu):
            if sk.umask[u] == m:
                sk.bidx[b] = u
        if sk.bidx[b] < 0:
            sk.umask[sk.nu] = m
            sk.bidx[b] = sk.nu
            sk.nu = sk.nu + 1
    if seen != full:
        sk.nu = 0


cdef inline void skip_steps(SkipLists *sk, const Py_ssize_t *aoff, Py_ssize_t k0,
                            Py_ssize_t kc, Py_ssize_t nr) noexcept nogil:
    """Each list's steps of the reduction block k0 .. k0 + kc (k = c * KK + tap): the
    window offset aoff[k] and the packed block's row (k - k0) * nr, for its taps only,
    in the order of k."""
    cdef Py_ssize_t u, k, t, j
    cdef Py_ssize_t *ab
    for u in range(sk.nu):
        ab = sk.ab + u * sk.abstride
        j = 0
        t = k0 % sk.KK
        for k in range(k0, k0 + kc):
            if (sk.umask[u] >> t) & 1:
                ab[2 * j] = aoff[k]
                ab[2 * j + 1] = (k - k0) * nr
                j = j + 1
            t = t + 1
            if t == sk.KK:
                t = 0
        sk.cnt[u] = j


cdef inline bint block_nonfinite(floating_t *C, Py_ssize_t rows, Py_ssize_t cols,
                                 Py_ssize_t ldc) noexcept nogil:
    """Whether a sum of the tile's rows in its output block C is NaN or infinite."""
    cdef Py_ssize_t i
    for i in range(rows):
        if has_nonfinite(C + i * ldc, cols):
            return True
    return False


cdef inline void rows_bias_act(floating_t *C, Py_ssize_t rows, Py_ssize_t cols,
                               Py_ssize_t ldc, const floating_t *bias, int act) noexcept nogil:
    """C[i, j] = act(C[i, j] + bias[j]) (bias not NULL) or act(C[i, j]): copy_out's
    operations on an output block whose rows are positions."""
    cdef Py_ssize_t i, j
    cdef floating_t *row
    for i in range(rows):
        row = C + i * ldc
        if bias != NULL:
            for j in range(cols):
                row[j] = activate(row[j] + bias[j], act)
        else:
            for j in range(cols):
                row[j] = activate(row[j], act)


cdef inline void skip_copy_out(floating_t *ctile, Py_ssize_t ldc, const SkipLists *sk,
                               const Geom *g, Py_ssize_t f0, Py_ssize_t fn, Py_ssize_t rn,
                               const floating_t *bias, int bias_mode, int act,
                               floating_t *y, const Py_ssize_t *perm) noexcept nogil:
    """The tile's output block (filters f0 .. f0 + fn; rows in (position, image) order,
    position q being perm[q], or q with perm NULL) into y, each image's runs of
    consecutive positions (every N-th row) transposed, with the bias and activation: a
    tied bias on the block's rows first (a run spans only the tile's positions, too short
    for copy_out's passes), the same operations."""
    cdef Py_ssize_t n, q0, q1, q, seg, i, p
    cdef floating_t *yblock
    for n in range(g.N):
        # the first of image n's rows sk.r0 .. sk.r0 + rn - 1 (its q0-th position) and
        # the end of their positions
        q0 = (sk.r0 - n + g.N - 1) // g.N if sk.r0 > n else 0
        q1 = (sk.r0 + rn - 1 - n) // g.N + 1 if sk.r0 + rn > n else 0
        while q0 < q1:
            # a run of positions p, p + 1, ...
            p = perm[q0] if perm != NULL else q0
            seg = 1
            if perm == NULL:
                seg = q1 - q0
            else:
                while q0 + seg < q1 and perm[q0 + seg] == p + seg:
                    seg = seg + 1
            i = q0 * g.N + n - sk.r0
            if bias_mode != 2 and (bias_mode != 0 or act != ACT_NONE):
                rows_bias_act(ctile + i * ldc, seg, fn, g.N * ldc,
                              bias + f0 if bias_mode == 1 else NULL, act)
            yblock = y + (n * g.F + f0) * g.P + p
            transpose(ctile + i * ldc, g.N * ldc, seg, fn, yblock, g.P)
            if bias_mode == 2:
                copy_out(yblock, g.P, g, f0, f0 + fn, n * g.P + p, seg, bias, bias_mode, act,
                         y)
            q0 = q0 + seg


cdef inline void cl_row_blocks(const Kernels *kern, const floating_t **rows,
                               const Py_ssize_t *aoff, Py_ssize_t M, Py_ssize_t kc,
                               const floating_t *bj, Py_ssize_t nn, floating_t *C,
                               Py_ssize_t ldc, const floating_t **aptr, floating_t *ctmp,
                               int acc, const SkipLists *sk) noexcept nogil:
    """One reduction block (kc steps from aoff, the packed block bj of nn <= nr columns)
    of every block of mr of the M rows: C (+)= as gemm_gather_run; with sk, a block
    with a list takes only its steps (the skipped ones multiply zeros: the same sums)."""
    cdef Py_ssize_t mr = block_mr(kern, bj), nr = block_nr(kern, bj)
    cdef Py_ssize_t mb, m0, mm, i, j
    cdef floating_t *c
    cdef bint edge
    for mb in range((M + mr - 1) // mr):
        m0 = mb * mr
        mm = min(mr, M - m0)
        # rows past M repeat the last row; their sums land in ctmp and are dropped
        for i in range(mr):
            aptr[i] = rows[min(m0 + i, M - 1)]
        c = C + m0 * ldc
        edge = not (mm == mr and nn == nr)
        if edge and acc:
            for i in range(mm):
                for j in range(nn):
                    ctmp[i * nr + j] = c[i * ldc + j]
        if sk != NULL and sk.nu > 0 and sk.bidx[mb] >= 0:
            ukernel_gather_skip(kern, sk.cnt[sk.bidx[mb]], aptr,
                                sk.ab + sk.bidx[mb] * sk.abstride, bj,
                                ctmp if edge else c, nr if edge else ldc, acc)
        else:
            ukernel_gather(kern, kc, aptr, aoff, bj, ctmp if edge else c,
                           nr if edge else ldc, acc)
        if edge:
            for i in range(mm):
                for j in range(nn):
                    c[i * ldc + j] = ctmp[i * nr + j]


cdef inline void cl_tile_gemm(const Kernels *kern, const floating_t **rows,
                              const Py_ssize_t *aoff, Py_ssize_t M, Py_ssize_t K,
                              const floating_t *wpack, const floating_t *w,
                              const Geom *flipped_from, Py_ssize_t grp, Py_ssize_t c0,
                              Py_ssize_t ncols, floating_t *C, Py_ssize_t ldc,
                              const floating_t **aptr, floating_t *ctmp, floating_t *bblock,
                              SkipLists *sk) noexcept nogil:
    """C[:M, :ncols] = the tile's rows (gathered through aoff) times B, reduction block
    by reduction block: B packed (wpack: slivers of nr columns K * nr apart), or, with
    wpack NULL, packed here one KC x nr block at a time into bblock (in L1 when the
    rows pass) from w's ncols rows (K values each) transposed, or, with flipped_from,
    as the flipped input gradient's of layer geometry flipped_from (w the layer's
    weight), columns c0 .. c0 + ncols of group grp.  sk not NULL: the blocks of rows
    with lists of SkipLists skip the other taps."""
    cdef Py_ssize_t nr = block_nr(kern, rows[0]), kstep = reduction_step(K)
    cdef Py_ssize_t nkb = (K + kstep - 1) // kstep if kstep > 0 else 0
    cdef Py_ssize_t kb, jb, k0, kc, nn
    cdef const floating_t *bj
    cdef int acc
    for kb in range(nkb):
        k0 = kb * kstep
        kc = min(kstep, K - k0)
        acc = CK_GEMM_ACCUMULATE if k0 > 0 else 0
        if sk != NULL and sk.nu > 0:
            skip_steps(sk, aoff, k0, kc, nr)
        for jb in range((ncols + nr - 1) // nr):
            nn = min(nr, ncols - jb * nr)
            if wpack != NULL:
                bj = wpack + jb * K * nr + k0 * nr
            elif flipped_from != NULL:
                pack_flipped_kblock(w, flipped_from, grp, c0 + jb * nr, nn, k0, kc, nr,
                                    bblock)
                bj = bblock
                # the next block's runs of the weight, as for the forward's below
                if (jb + 1) * nr < ncols:
                    prefetch_flipped_kblock(w, flipped_from, grp, c0 + (jb + 1) * nr,
                                            min(nr, ncols - (jb + 1) * nr), k0, kc)
                elif kb + 1 < nkb:
                    prefetch_flipped_kblock(w, flipped_from, grp, c0, min(nr, ncols),
                                            k0 + kstep, min(kstep, K - k0 - kstep))
            else:
                pack_transposed_rows(w + jb * nr * K + k0, K, nn, kc, nr, bblock)
                bj = bblock
                # the next block's rows (kc values in each of up to nr rows of w, a
                # row K apart; prefetch.h): in short runs, the hardware would not fetch
                # them ahead
                if (jb + 1) * nr < ncols:
                    ck_prefetch_rows(w + (jb + 1) * nr * K + k0, K * sizeof(floating_t),
                                     min(nr, ncols - (jb + 1) * nr),
                                     kc * sizeof(floating_t))
                elif kb + 1 < nkb:
                    ck_prefetch_rows(w + k0 + kstep, K * sizeof(floating_t), min(nr, ncols),
                                     min(kstep, K - k0 - kstep) * sizeof(floating_t))
            cl_row_blocks(kern, rows, aoff + k0, M, kc, bj, nn, C + jb * nr, ldc, aptr,
                          ctmp, acc, sk)


cdef void correlate_channels_last(const floating_t *x, const Geom *g, const floating_t *wpack,
                                  const floating_t *bias, int bias_mode, int act,
                                  floating_t *y, const ClForward *L, floating_t *slab,
                                  const Py_ssize_t *aoff, const Py_ssize_t *start, floating_t *scratch,
                                  const floating_t **ptrs, const Kernels *kern,
                                  int nt, const floating_t *w=NULL,
                                  const Geom *flipped_from=NULL,
                                  const unsigned long long *taps=NULL,
                                  unsigned long long *skipbuf=NULL,
                                  const Py_ssize_t *perm=NULL) noexcept nogil:
    """y (contiguous) = act(x * W + bias) as in the file's comment.  wpack: the weight
    packed nr filters per sliver (groups round_up(Fg, nr) * K apart), or w, the weight
    (F x K), packed by each task as it goes (cl_tile_gemm; with flipped_from, the
    layer's weight of that geometry, packed as its flipped input gradient's); slab:
    G * N planes; aoff[k] = shift(tap) + c, start[p]: where position p's window starts
    in its plane.  With L.skip: taps[p], the taps of position p that read the input
    (position_taps), skipbuf, L.skip_per_thread slots per thread, and perm, NULL or
    the positions' order (sort_skip_positions: start and taps are then in that order,
    position q being perm[q])."""
    cdef Py_ssize_t nr = block_nr(kern, x), K = g.Cg * g.KK, NP = g.N * g.P
    cdef Py_ssize_t mr = block_mr(kern, x)
    cdef Py_ssize_t fpad = round_up(g.Fg, nr), per_group = L.ntiles * L.nsplit
    cdef Py_ssize_t t, grp, tile, s0, s1, f0, fn, ldc, r0, rn, i, r, n, p0, seg
    cdef Py_ssize_t u, rows_per_plane
    cdef floating_t *ctile
    cdef floating_t *yblock
    cdef const floating_t **rows
    cdef SkipLists sk
    # the slab's rows, so that a batch of one (a plane) splits over the threads too
    rows_per_plane = L.ED * L.EH
    for t in prange(g.N * g.G * rows_per_plane, num_threads=nt, schedule="static"):
        u = t // rows_per_plane
        cl_fill_row(x, g, L.EH, L.EW, L.cs, u // g.G, u % g.G, g.pd, g.ph, g.pw,
                    t % rows_per_plane // L.EH, t % L.EH,
                    slab + (u % g.G * g.N + u // g.G) * L.plane)
    for t in prange(g.G * per_group, num_threads=nt, schedule="static"):
        rows = ptrs + threadid() * L.ptrs
        ctile = scratch + threadid() * L.per_thread
        grp = t // per_group
        tile = t % per_group // L.nsplit
        s0 = t % L.nsplit * L.sper
        s1 = min(L.nsl, s0 + L.sper)
        f0 = s0 * nr
        fn = min(g.Fg, s1 * nr) - f0
        ldc = (s1 - s0) * nr
        r0 = tile * L.tw
        rn = min(L.tw, NP - r0)
        # rows (image, position), or with L.skip (position, image): a block of rows
        # then shares its positions, and their taps
        if L.skip:
            n = r0 % g.N
            p0 = r0 // g.N
            for i in range(rn):
                rows[i] = slab + (grp * g.N + n) * L.plane + start[p0]
                n = n + 1
                if n == g.N:
                    n = 0
                    p0 = p0 + 1
        else:
            for i in range(rn):
                r = r0 + i
                rows[i] = slab + (grp * g.N + r // g.P) * L.plane + start[r % g.P]
        if L.skip:
            sk = skip_lists(skipbuf + threadid() * L.skip_per_thread, L.tw // mr, g.KK)
            skip_blocks(&sk, taps, r0, rn, g.N, mr)
            sk.N = g.N
            sk.r0 = r0
        if not L.skip and w == NULL:
            # (the weight packed up front, every tap: gemm.pxd's product, as before)
            gemm_gather_block(kern, rows, aoff, rn, K, wpack + (grp * fpad + f0) * K, fn,
                              ctile, ldc, rows + L.tw, ctile + L.tw * ldc)
        else:
            cl_tile_gemm(kern, rows, aoff, rn, K,
                         wpack + (grp * fpad + f0) * K if w == NULL else NULL,
                         w if flipped_from != NULL or w == NULL else w + (grp * g.Fg + f0) * K,
                         flipped_from, grp, f0, fn, ctile, ldc, rows + L.tw,
                         ctile + L.tw * ldc, ctile + L.tw * ldc + CK_MR_MAX * CK_NR_MAX,
                         &sk if L.skip else NULL)
        if L.skip and sk.nu > 0 and block_nonfinite(ctile, rn, fn, ldc):
            # a non-finite weight: the sums with every tap, as the other paths have them
            sk.nu = 0
            cl_tile_gemm(kern, rows, aoff, rn, K,
                         wpack + (grp * fpad + f0) * K if w == NULL else NULL,
                         w if flipped_from != NULL or w == NULL else w + (grp * g.Fg + f0) * K,
                         flipped_from, grp, f0, fn, ctile, ldc, rows + L.tw,
                         ctile + L.tw * ldc, ctile + L.tw * ldc + CK_MR_MAX * CK_NR_MAX,
                         &sk)
        # the block's positions, one image's run at a time, transposed into y
        if L.skip:
            skip_copy_out(ctile, ldc, &sk, g, grp * g.Fg + f0, fn, rn, bias, bias_mode, act,
                          y, perm)
            continue
        i = 0
        while i < rn:
            n = (r0 + i) // g.P
            p0 = (r0 + i) % g.P
            seg = min(g.P - p0, rn - i)
            yblock = y + (n * g.F + grp * g.Fg + f0) * g.P + p0
            transpose(ctile + i * ldc, ldc, seg, fn, yblock, g.P)
            if bias_mode != 0 or act != ACT_NONE:
                copy_out(yblock, g.P, g, grp * g.Fg + f0, grp * g.Fg + f0 + fn, n * g.P + p0,
                         seg, bias, bias_mode, act, y)
            i = i + seg


cdef void channels_last_offsets(const Geom *g, Py_ssize_t EH, Py_ssize_t EW, Py_ssize_t cs,
                                Py_ssize_t *aoff, Py_ssize_t *start) noexcept nogil:
    """The offsets into a channels-last copy of extents (., EH, EW), positions cs apart:
    aoff[k] = shift(tap) + c for k = c * KK + tap, start[p] where the window of each of
    the P positions of an image starts (in order: no division per position)."""
    cdef Py_ssize_t c, kd, kh, kw, k = 0, p, od = 0, oh = 0, ow = 0
    for c in range(g.Cg):
        for kd in range(g.KD):
            for kh in range(g.KH):
                for kw in range(g.KW):
                    aoff[k] = ((kd * g.dd * EH + kh * g.dh) * EW + kw * g.dw) * cs + c
                    k = k + 1
    for p in range(g.P):
        start[p] = ((od * g.sd * EH + oh * g.sh) * EW + ow * g.sw) * cs
        ow += 1
        if ow == g.OW:
            next_row(g, &od, &oh, &ow)


cdef inline unsigned long long axis_taps(Py_ssize_t o, Py_ssize_t s, Py_ssize_t pad,
                                         Py_ssize_t d, Py_ssize_t X,
                                         Py_ssize_t K) noexcept nogil:
    """Bit k set for the taps k < K of output o (stride s, padding pad, dilation d) that
    read inside an axis of X inputs."""
    cdef unsigned long long m = 0
    cdef Py_ssize_t k, i
    for k in range(K):
        i = o * s - pad + k * d
        if 0 <= i < X:
            m = m | ((<unsigned long long> 1) << k)
    return m


cdef inline unsigned long long position_taps(const Geom *g, Py_ssize_t od, Py_ssize_t oh,
                                             Py_ssize_t ow) noexcept nogil:
    """Bit tap = (kd * KH + kh) * KW + kw set for the taps of position (od, oh, ow) that
    read the input, not its padding (KK <= 64)."""
    cdef unsigned long long md = axis_taps(od, g.sd, g.pd, g.dd, g.D, g.KD)
    cdef unsigned long long mh = axis_taps(oh, g.sh, g.ph, g.dh, g.H, g.KH)
    cdef unsigned long long mw = axis_taps(ow, g.sw, g.pw, g.dw, g.W, g.KW)
    cdef unsigned long long m = 0
    cdef Py_ssize_t kd, kh
    for kd in range(g.KD):
        if (md >> kd) & 1:
            for kh in range(g.KH):
                if (mh >> kh) & 1:
                    m = m | (mw << ((kd * g.KH + kh) * g.KW))
    return m


cdef inline int popcount64(unsigned long long m) noexcept nogil:
    """The set bits of m (plan-time counting only: one step per bit)."""
    cdef int n = 0
    while m:
        m = m & (m - 1)
        n = n + 1
    return n


cdef inline double axis_use(Py_ssize_t O, Py_ssize_t s, Py_ssize_t pad, Py_ssize_t d,
                            Py_ssize_t X, Py_ssize_t K) noexcept nogil:
    """The fraction of an axis's (output, tap) pairs that read inside the input: per tap
    k, the outputs o < O with 0 <= o * s - pad + k * d < X (counted, not walked: O can
    be huge; conv_input_grad.pxi's floor_div)."""
    cdef Py_ssize_t k, lo, hi, n = 0
    for k in range(K):
        lo = max(0, -floor_div(k * d - pad, s))
        hi = min(O - 1, floor_div(X - 1 + pad - k * d, s))
        if hi >= lo:
            n = n + hi - lo + 1
    return n / (<double> O * K)


# Rows beyond which tap_skip_steps estimates instead of counting (a few ms of planning).
cdef Py_ssize_t SKIP_COUNT_ROWS = 1 << 22


cdef double skip_kept(const Geom *g, Py_ssize_t mr, const unsigned long long *taps,
                      const Py_ssize_t *perm) noexcept nogil:
    """The steps the blocks of mr rows keep, summed over rows: rows in (position, image)
    order, position q being perm[q] (q itself with perm NULL), each block taking the
    union of its positions' taps (taps[p] for position p), and every tap in a tile
    (cl_tile_rows) whose rows leave a tap unread (skip_blocks)."""
    cdef Py_ssize_t NP = g.N * g.P, tw = cl_tile_rows(NP, mr), t, b, r0, r1, q
    cdef unsigned long long m, seen
    cdef unsigned long long full = ((<unsigned long long> 1) << g.KK) - 1 if g.KK < 64 \
        else ~(<unsigned long long> 0)
    cdef double kept = 0, tile_kept
    for t in range((NP + tw - 1) // tw):
        seen = 0
        tile_kept = 0
        for b in range((min(tw, NP - t * tw) + mr - 1) // mr):
            r0 = t * tw + b * mr
            r1 = min(NP, r0 + mr, t * tw + tw)
            m = 0
            for q in range(r0 // g.N, (r1 - 1) // g.N + 1):
                m = m | taps[perm[q] if perm != NULL else q]
            seen = seen | m
            tile_kept = tile_kept + <double> popcount64(m) * (r1 - r0)
        kept = kept + (tile_kept if seen == full else
                       <double> g.KK * (min(NP, t * tw + tw) - t * tw))
    return kept


cdef void sort_by_taps(const unsigned long long *taps, Py_ssize_t n, Py_ssize_t *perm,
                       Py_ssize_t *tmp) noexcept nogil:
    """perm = 0 .. n - 1 stably sorted by taps[] (bottom-up merge sort; tmp: n slots)."""
    cdef Py_ssize_t width = 1, lo, mid, hi, i, j, k
    cdef Py_ssize_t *src = perm
    cdef Py_ssize_t *dst = tmp
    cdef Py_ssize_t *t
    for i in range(n):
        perm[i] = i
    while width < n:
        lo = 0
        while lo < n:
            mid = min(n, lo + width)
            hi = min(n, lo + 2 * width)
            i, j, k = lo, mid, lo
            while k < hi:
                if j >= hi or (i < mid and taps[src[i]] <= taps[src[j]]):
                    dst[k] = src[i]
                    i = i + 1
                else:
                    dst[k] = src[j]
                    j = j + 1
                k = k + 1
            lo = hi
        t = src
        src = dst
        dst = t
        width = 2 * width
    if src != perm:
        memcpy(perm, src, n * sizeof(Py_ssize_t))


cdef bint sort_skip_positions(const Geom *g, Py_ssize_t mr, const unsigned long long *taps,
                              Py_ssize_t *perm, Py_ssize_t *tmp) noexcept nogil:
    """Whether the tap skipping takes its positions sorted by their taps (perm: position
    q of that order is perm[q]; tmp: P slots): for at most SKIP_SORT_POSITIONS
    positions, when its blocks then keep fewer steps than in the positions' own order.
    A class of positions that share their taps (an image's left column, say) then fills
    blocks of its own: at batch 4, an 8x8 image's blocks skip 14% of a 3x3 window's
    steps against 8% (a block of two neighbours of one row shares only their row's
    taps), a 7x7 image's 14% against 10%."""
    if g.P > SKIP_SORT_POSITIONS or g.P < 2:
        return False
    sort_by_taps(taps, g.P, perm, tmp)
    return skip_kept(g, mr, taps, perm) < skip_kept(g, mr, taps, NULL)


cdef double tap_skip_steps(const Geom *g, Py_ssize_t mr) except? -1:
    """The multiply-add steps per output value (K = Cg * KK steps each) that the tap
    skipping leaves out: exactly, for its blocks of mr rows in (position, image) order,
    positions in their order or sorted by their taps (sort_skip_positions), each block
    taking the union of its positions' taps; 0 for a window of more than 64 taps or none
    that reads padding, or no rows.  Past SKIP_COUNT_ROWS rows (a layer that size has a
    thin border, or is absurd and refused later), as if each block were one position:
    the mean over positions, the product of the axes' fractions."""
    cdef Py_ssize_t NP = g.N * g.P
    cdef double kept, use
    cdef unsigned long long *taps
    cdef Py_ssize_t *perm
    if g.KK < 2 or g.KK > 64 or NP == 0:
        return 0
    use = (axis_use(g.OD, g.sd, g.pd, g.dd, g.D, g.KD)
           * axis_use(g.OH, g.sh, g.ph, g.dh, g.H, g.KH)
           * axis_use(g.OW, g.sw, g.pw, g.dw, g.W, g.KW))
    if use == 1:
        return 0
    if NP > SKIP_COUNT_ROWS:
        return (1 - use) * g.Cg * g.KK
    taps = <unsigned long long *> alloc_uninit(g.P * (sizeof(unsigned long long)
                                                      + 2 * sizeof(Py_ssize_t)))
    perm = <Py_ssize_t *> (taps + g.P)
    channels_last_taps(g, taps)
    if sort_skip_positions(g, mr, taps, perm, perm + g.P):
        kept = skip_kept(g, mr, taps, perm)
    else:
        kept = skip_kept(g, mr, taps, NULL)
    release(taps)
    return (g.KK - kept / NP) * g.Cg


cdef void channels_last_taps(const Geom *g, unsigned long long *taps) noexcept nogil:
    """taps[p] = position_taps of each of the P positions of an image."""
    cdef Py_ssize_t p, od, oh, ow
    for p in range(g.P):
        position(g, p, &od, &oh, &ow)
        taps[p] = position_taps(g, od, oh, ow)


cdef void correlate_channels_last_call(const floating_t *x, const Geom *g,
                                       const floating_t *w, const floating_t *bias,
                                       int bias_mode, int act, floating_t *y,
                                       const Geom *flipped_from, bint skip,
                                       int nt) except *:
    """correlate_channels_last of geometry g with its scratch allocated and the weight
    packed here: w is the layer's weight, packed as the forward's (flipped_from NULL) or,
    for the flipped input gradient of layer geometry flipped_from (g then its
    flipped_geom, x grad_y and y grad_x), as its flipped, transposed correlation."""
    cdef const Kernels *kern = cl_forward_kernels(g, x)
    cdef ClForward L = cl_forward_layout(g, kern, nt, x, skip)
    cdef Py_ssize_t nr = block_nr(kern, x), K = g.Cg * g.KK
    cdef Py_ssize_t *offsets = <Py_ssize_t *> alloc_uninit((K + g.P) * sizeof(Py_ssize_t))
    cdef floating_t *wpack = NULL
    cdef floating_t *slab = NULL
    cdef floating_t *scratch = NULL
    cdef const floating_t **ptrs = NULL
    cdef unsigned long long *taps = NULL
    cdef unsigned long long *old_taps
    cdef Py_ssize_t *perm = NULL
    cdef Py_ssize_t q
    # one tile of positions: each block of the weight serves one task, which packs it
    cdef bint packs_in_tasks = L.ntiles == 1
    try:
        # every element of these is written before it is read
        if not packs_in_tasks:
            wpack = <floating_t *> alloc_uninit(
                g.G * round_up(g.Fg, nr) * K * sizeof(floating_t))
        slab = <floating_t *> alloc_uninit(g.G * g.N * L.plane * sizeof(floating_t))
        scratch = <floating_t *> alloc_uninit(nt * L.per_thread * sizeof(floating_t))
        ptrs = <const floating_t **> alloc_uninit(nt * L.ptrs * sizeof(floating_t *))
        if L.skip:
            # the positions' taps, the tasks' lists, a copy of the taps, then the sorted
            # order and its scratch (P slots each)
            taps = <unsigned long long *> alloc_uninit(
                (2 * g.P + nt * L.skip_per_thread) * sizeof(unsigned long long)
                + 2 * g.P * sizeof(Py_ssize_t))
        with nogil:
            if not packs_in_tasks and flipped_from != NULL:
                pack_flipped_weights(w, flipped_from, nr, wpack, nt)
            elif not packs_in_tasks:
                pack_forward_weights(w, g, nr, wpack, nt)
            channels_last_offsets(g, L.EH, L.EW, L.cs, offsets, offsets + K)
            if L.skip:
                channels_last_taps(g, taps)
                # sorted by their taps, the positions' window starts and taps are
                # permuted in place (from copies: the sort's scratch and the taps' copy)
                old_taps = taps + g.P + nt * L.skip_per_thread
                perm = <Py_ssize_t *> (old_taps + g.P)
                if sort_skip_positions(g, block_mr(kern, x), taps, perm, perm + g.P):
                    for q in range(g.P):
                        perm[g.P + q] = offsets[K + q]
                        old_taps[q] = taps[q]
                    for q in range(g.P):
                        offsets[K + q] = perm[g.P + perm[q]]
                        taps[q] = old_taps[perm[q]]
                else:
                    perm = NULL
            correlate_channels_last(x, g, wpack, bias, bias_mode, act, y, &L, slab, offsets,
                                    offsets + K, scratch, ptrs, kern, nt,
                                    w if packs_in_tasks else NULL,
                                    flipped_from if packs_in_tasks else NULL, taps,
                                    taps + g.P if L.skip else NULL, perm)
    finally:
        release(taps)
        release(ptrs)
        release(scratch)
        release(slab)
        release(wpack)
        release(offsets)
