# cython: language_level=3
"""Convolution kernels: forward, input gradient, weight gradient and bias gradient.

The module is one compiled unit made of one file per seam:

- ``conv_geometry.pxi``: the call's geometry, tiling of the direct path, scratch helpers;
- ``conv_weight_pack.pxi``: the weights packed as the GEMM's A operand, in parallel;
- ``conv_forward.pxi``: the correlation (slab, im2col or in place) and ``conv_forward``;
- ``conv_pointwise.pxi``: the 1x1 correlation as a GEMM over the arrays in place;
- ``conv_dense.pxi``: all three passes of a window that covers its whole unpadded input
  (one output position) as matrix products over the arrays in place;
- ``conv_input_grad.pxi``: the flipped, phased and col2im input gradients;
- ``conv_weight_grad.pxi``: the slab/im2col x GEMM/dot weight gradients and their
  per-thread scratch layout;
- ``conv_weight_grad_channels_last.pxi``: the weight gradient as one GEMM per group over
  a channels-last copy of the input, reduced over a chunk of images' positions;
- ``conv_forward_channels_last.pxi``: the correlation (forward, flipped input gradient)
  with output positions as the GEMM's rows, gathered in place from a channels-last copy
  of the input;
- ``conv_weight_grad_gather.pxi``: the weight gradient with the window's (channel, tap)
  pairs as the GEMM's rows, gathered in place from that copy, filters in the vectors;
- ``conv_bias_grad.pxi``: the bias sums;
- ``conv_depthwise.pxi``: all three passes of layers with one input channel per group,
  on vectorised rows (dwconv_kernel.h), with no GEMM;
- this file: the kernel selection, the path codes and what the planner needs to know
  about a geometry (``geometry_facts``, ``scratch_bytes``).

Which path a pass takes is not decided here: the caller passes a path code, chosen by
the one table of rules in ``convkern/_paths.py`` (or forced by a test).  The only
choice made here depends on the data: the flipped, phased and depthwise input gradients
multiply every weight by grad_y's zero padding too, and 0 * inf would put NaN where the
true gradient has no term, so non-finite weights take col2im.

Design
------
Every pass is a matrix product on small tiles (gemm.pxd), never on a whole-batch
im2col, and every task owns the outputs it writes, so tasks run in parallel (prange)
with no synchronisation:

- forward, direct path: y[n, g] = W[g] (Fg x K) @ B, where B's rows are contiguous
  runs of a zero-padded input slab (unroll.fill_slab; for stride s the slab holds the
  s phases of each axis, so every tap still reads a stride-1 run): a tile of whole
  output rows is computed on the padded row width and the extra columns are dropped
  when the tile is copied out.  Tasks are (image, group, output plane, block of rows,
  column segment).
- forward, strides whose taps skip a phase (a 1x1 kernel with stride 2, say) or huge
  halos: B is an im2col tile of TW output positions (unroll.im2col) in a per-thread
  KC x TW scratch.  Tasks are (image, group, tile).
- input gradient, stride 1: a stride-1 forward correlation of grad_y with the flipped,
  transposed weights (the same direct path).  Stride s: one such correlation per stride
  phase (the input positions i * s + a - p get only the taps with k * d % s == a),
  scattered back into grad_x.  Few input channels per group, non-finite weights or
  strides whose taps skip a phase: cols = W[g]^T @ gy[n, g], scatter-added into grad_x
  (col2im); tasks are (image, group, chunk of input channels), and a channel's rows
  only touch that channel of grad_x.
- weight gradient: grad_w[g] (Fg x K) = sum over images and tiles of
  gy (Fg x TW) . col(x)^T (TW x K).  With many reduction rows K it is a GEMM
  grad_w^T += col(x) @ gy^T whose A rows are read in place (the runs of the input slab
  on the direct path, an im2col tile otherwise) and whose B is the tile's grad_y, staged and
  transposed.  With few rows it runs on dot-product micro-kernels over two sets of rows
  contiguous along the positions: the staged grad_y against the slab runs, or grad_y in
  place against an im2col tile.  Each batch chunk sums into its own partial
  and the partials are added in chunk order.  The chunks depend only on N and the
  shapes, never on the thread count, so the result has the same bits for any number of
  threads.  Or, channel-rich: grad_w[g] (Fg x KK * Cg, channels-last) += gy (Fg x R) @ B, where
  B's rows are the windows of R output positions of a chunk of images in a
  channels-last copy of the input, read in place (runs of KW * Cg values), with no halo
  and no partials.
- bias gradient: per filter sums, parallel over filters, accumulated in double.
- one input channel per group (depthwise): no product at all; every pass runs on
  vectorised rows of its planes (conv_depthwise.pxi).

The micro-kernels (ukernel.h) use the widest vectors of the running CPU.  Accumulation
is in the input's precision, as in PyTorch.  Every element of every output is computed
by the same sequence of operations whatever thread runs it.
"""

from cython.parallel cimport prange, threadid
from libc.string cimport memcpy, memset

from fused cimport floating_t
from geometry cimport Geom, next_row, position, read_extent
from gemm cimport (Kernels, select_kernels, block_mr, block_nr, block_vl, dot_rows, dot_cols,
                   gemv_rows, round_up, row_offsets, pack_rows, reduction_step, gemm_block,
                   gemm_rows_block, gemm_gather_block, gemm_gather_run, dot_block, gemv_block,
                   ukernel, ukernel_gather, ukernel_gather_skip, CK_GEMM_ACCUMULATE,
                   copy_sliver, rows_alias, KC, CK_MR_MAX, CK_NR_MAX)
from unroll cimport (Tile, make_tile, slab_size, im2col, col2im_add, fill_slab, slab_offsets,
                     SLAB_SKEW)

# KERN: the wide GEMM blocks; KERN4: 4-row blocks for products with at most 4 rows
# (the forward pass with up to 4 filters per group); KERN1: blocks of one vector of
# columns, for products with at most that many (a batch-1 4x4 image's 16 positions, on
# AVX-512's 32-column block, would leave half of every multiply-add unused).
cdef Kernels KERN, KERN4, KERN1
select_kernels(&KERN, &KERN4, &KERN1)

# Output positions per tile (rounded to the micro-kernel width at run time).
cdef Py_ssize_t TILE = 256
# Positions up to which the channels-last tap skipping may sort them by their taps
# (sort_skip_positions: an image of 64x64 at most; larger ones have a thin border).
cdef Py_ssize_t SKIP_SORT_POSITIONS = 4096
# Largest padded tile of the direct (slab) path, and the most (channel, depth tap) slab
# planes it copies per tile.
cdef Py_ssize_t DIRECT_TILE = 512
cdef Py_ssize_t SLAB_CHANNELS = 4096
# Largest stride the slab path splits into phases (per axis).
cdef Py_ssize_t MAX_PHASES = 4
# Rows of the reduction unrolled at once by the input gradient's col2im path.
cdef Py_ssize_t ROW_BLOCK = 256
# Output positions per dot-product tile of the weight gradient.
cdef Py_ssize_t DOT_TILE = 2048
# Upper bound, in bytes, of the weight-gradient partials (one per batch chunk).
cdef Py_ssize_t PARTIAL_BYTES = 32 << 20
# Upper bound, in bytes, of the cols blocks of col2im split over tiles.
cdef Py_ssize_t COL2IM_SPLIT_BYTES = 32 << 20
cdef Py_ssize_t MAX_CHUNKS = 8


cdef extern from "cpu_isa.h":
    int ck_cpu_isa() noexcept nogil
    const char *ck_isa_names[]


# Reduction rows per GEMM block (gemm.pxd's KC): the im2row weight gradient needs its
# call's output positions to fit one.
REDUCTION_BLOCK = KC
# Output positions per tile of the dot weight gradients (DOT_TILE).
DOT_TILE_POSITIONS = DOT_TILE
# Most rows per tile of the channels-last paths (TILE), and the most positions their tap
# skipping sorts by their taps.
TILE_ROWS = TILE
SKIP_SORT_POSITIONS_MAX = SKIP_SORT_POSITIONS


def slab_use(tuple xs, tuple ws, tuple ys, Py_ssize_t groups, tuple stride, tuple pad,
             tuple dilation, Py_ssize_t nr, Py_ssize_t vl):
    """The fraction of the columns a slab tile computes that are outputs (the rest are
    its halo columns, see plan_direct), for GEMM blocks of nr columns and vectors of vl;
    0 where the slab path does not apply."""
    cdef Geom g = geom_of(xs, ws, ys, groups, stride, pad, dilation)
    return geom_slab_use(&g, nr, vl)


def flipped_slab_use(tuple xs, tuple ws, tuple ys, Py_ssize_t groups, tuple stride,
                     tuple pad, tuple dilation, Py_ssize_t nr, Py_ssize_t vl):
    """slab_use of the input gradient's flipped correlation (grad_y with the flipped
    weights); 0 where that correlation does not take the slab path."""
    cdef Geom g = geom_of(xs, ws, ys, groups, stride, pad, dilation)
    cdef Geom t
    if not flip_fits(&g):
        return 0.0
    t = flipped_geom(&g)
    return geom_slab_use(&t, nr, vl)


cdef double geom_slab_use(const Geom *g, Py_ssize_t nr, Py_ssize_t vl) noexcept:
    cdef DirectPlan d
    if not direct_fits(g):
        return 0.0
    d = plan_direct(g, nr, vl, DIRECT_TILE)
    return d.planes * d.rows * min(d.seg, g.OW) / <double> d.ldc


def gather_image_bytes(tuple xs, tuple ws, tuple ys, Py_ssize_t groups, tuple stride,
                       tuple pad, tuple dilation, bint double):
    """Bytes the gathered weight gradient streams per image and group: its channels-last
    copy of the image and a run of transposed grad_y (gather_wgrad_layout)."""
    cdef Geom g = geom_of(xs, ws, ys, groups, stride, pad, dilation)
    cdef float fs = 0
    cdef double fd = 0
    g.N = max(g.N, 1)  # a batch of 0 runs no kernel; give what one image would use
    if g.Fg == 0 or g.P == 0:
        return 0
    if double:
        return _gather_image_bytes(&g, &fd)
    return _gather_image_bytes(&g, &fs)


cdef Py_ssize_t _gather_image_bytes(const Geom *g, const floating_t *tag) noexcept:
    cdef GatherWgrad L = gather_wgrad_layout(g, 1, tag)
    return (L.plane + L.prun * L.ldc) * <Py_ssize_t> sizeof(floating_t)


def scratch_cache_bytes():
    """Bytes of freed scratch blocks kept for the next calls (src/scratch_cache.h)."""
    return ck_cache_total


def release_scratch_cache():
    """Free the scratch blocks kept for the next calls (src/scratch_cache.h)."""
    ck_scratch_release_cache()


def cpu_isa():
    """Return the widest instruction-set level the running CPU supports: 'baseline',
    'avx2' or 'avx512' (see src/cpu_isa.h)."""
    return ck_isa_names[ck_cpu_isa()].decode()


def kernel_info():
    """Return the selected micro-kernels: ISA name, block shapes and vector length (in
    elements) per dtype."""
    return {
        "isa": KERN.s.name.decode(),
        "float32": {"gemm": (KERN.s.mr, KERN.s.nr), "gemm_narrow": (KERN4.s.mr, KERN4.s.nr),
                    "gemm_one_vector": (KERN1.s.mr, KERN1.s.nr),
                    "dot": (KERN.s.dr, KERN.s.dc), "vector": (KERN.s.vl,)},
        "float64": {"gemm": (KERN.d.mr, KERN.d.nr), "gemm_narrow": (KERN4.d.mr, KERN4.d.nr),
                    "gemm_one_vector": (KERN1.d.mr, KERN1.d.nr),
                    "dot": (KERN.d.dr, KERN.d.dc), "vector": (KERN.d.vl,)},
    }


# Path codes: the index of a path's name in PATHS[pass].  convkern/_paths.py holds the
# rules that choose among them; the kernels only run the path they are given.
PATHS = {
    "forward": ("slab", "slab_narrow", "im2col", "im2col_narrow", "pointwise", "im2col_images",
                "dense", "depthwise", "im2col_rows", "slab_rows", "channels_last",
                "depthwise_channels_last", "channels_last_skip"),
    "backward_input": ("flipped", "flipped_im2col", "phased", "col2im", "flipped_pointwise",
                       "flipped_im2col_images", "dense", "depthwise", "col2im_rows",
                       "flipped_channels_last", "depthwise_channels_last",
                       "flipped_channels_last_skip"),
    "backward_weight": ("slab_gemm", "slab_dot", "im2col_gemm", "im2col_dot",
                        "im2col_gemm_images", "dense", "depthwise", "im2row_gemm",
                        "channels_last_gemm", "gather_gemm", "depthwise_channels_last"),
    "backward_bias": ("sum",),
}
cdef enum:
    FWD_SLAB, FWD_SLAB_NARROW, FWD_IM2COL, FWD_IM2COL_NARROW, FWD_POINTWISE, FWD_IM2COL_IMAGES,
    FWD_DENSE, FWD_DEPTHWISE, FWD_IM2COL_ROWS, FWD_SLAB_ROWS, FWD_CHANNELS_LAST,
    FWD_DEPTHWISE_CHANNELS_LAST, FWD_CHANNELS_LAST_SKIP
cdef enum:
    BWI_FLIPPED, BWI_FLIPPED_IM2COL, BWI_PHASED, BWI_COL2IM, BWI_FLIPPED_POINTWISE,
    BWI_FLIPPED_IM2COL_IMAGES, BWI_DENSE, BWI_DEPTHWISE, BWI_COL2IM_ROWS,
    BWI_FLIPPED_CHANNELS_LAST, BWI_DEPTHWISE_CHANNELS_LAST, BWI_FLIPPED_CHANNELS_LAST_SKIP
cdef enum:
    BWW_SLAB_GEMM, BWW_SLAB_DOT, BWW_IM2COL_GEMM, BWW_IM2COL_DOT, BWW_IM2COL_GEMM_IMAGES,
    BWW_DENSE, BWW_DEPTHWISE, BWW_IM2ROW_GEMM, BWW_CHANNELS_LAST_GEMM, BWW_GATHER_GEMM,
    BWW_DEPTHWISE_CHANNELS_LAST
# Activations the forward pass applies to its output tile (after the bias).
ACTIVATIONS = ("none", "relu")
cdef enum:
    ACT_NONE, ACT_RELU
# Where a correlation's GEMM reads its B operand (see correlate).
cdef enum:
    OPERAND_SLAB, OPERAND_IM2COL, OPERAND_IN_PLACE, OPERAND_IM2COL_IMAGES


include "conv_geometry.pxi"
include "conv_weight_pack.pxi"
include "conv_pointwise.pxi"
include "conv_dense.pxi"
include "conv_forward.pxi"
include "conv_input_grad.pxi"
include "conv_weight_grad.pxi"
include "conv_weight_grad_channels_last.pxi"
include "conv_forward_channels_last.pxi"
include "conv_weight_grad_gather.pxi"
include "conv_bias_grad.pxi"
include "conv_depthwise.pxi"
include "conv_depthwise_channels_last.pxi"

# Bytes of grad_y the channels-last weight gradients pack per run of positions
# (CHANNELS_LAST_SUB_BYTES): the planner's measure of a grad_y that stays in L2.
CHANNELS_LAST_RUN_BYTES = CHANNELS_LAST_SUB_BYTES


cdef Geom geom_of(tuple xs, tuple ws, tuple ys, Py_ssize_t groups, tuple stride, tuple pad,
                  tuple dilation):
    """make_geom from shape tuples (5-D x, weight and y, as the kernels see them)."""
    cdef Py_ssize_t a[5]
    cdef Py_ssize_t b[5]
    cdef Py_ssize_t c[5]
    cdef int i
    for i in range(5):
        a[i], b[i], c[i] = xs[i], ws[i], ys[i]
    return make_geom(a, b, c, groups, stride, pad, dilation)


def geometry_facts(tuple xs, tuple ws, tuple ys, Py_ssize_t groups, tuple stride, tuple pad,
                   tuple dilation):
    """What the path rules need to know about a geometry (5-D shapes, 3-tuples).

    Returns
    -------
    dict
        ``direct``: the slab path applies to the correlation (forward, weight
        gradient); ``flipped``: the input gradient is a stride-1 correlation of grad_y;
        ``flipped_direct``: that correlation takes the slab path; ``phased``: a strided
        input gradient runs phase by phase on the slab path; ``pointwise``: a 1x1,
        stride-1, unpadded layer, a plain GEMM per image over the arrays in place;
        ``dense``: the window covers the whole unpadded input (one output position),
        every pass a matrix product over the arrays in place; ``depthwise``: one
        channel per group and halos the depthwise plane copy takes; ``channels_last``:
        halos the channels-last weight gradient's slab takes (and the channels-last
        forward's); ``flipped_channels_last``: the input gradient is a stride-1
        correlation of grad_y that takes the channels-last forward.
    """
    cdef Geom g = geom_of(xs, ws, ys, groups, stride, pad, dilation)
    cdef Geom t = flipped_geom(&g)
    return {
        "direct": bool(direct_fits(&g)),
        "flipped": bool(flip_fits(&g)),
        "flipped_direct": bool(flip_fits(&g) and direct_fits(&t)),
        "phased": bool(phased_fits(&g)),
        "pointwise": bool(pointwise_fits(&g)),
        "dense": bool(dense_fits(&g)),
        "depthwise": bool(depthwise_fits(&g)),
        "channels_last": bool(channels_last_fits(&g)),
        "flipped_channels_last": bool(flip_fits(&g) and channels_last_fits(&t)),
    }


def tap_skip_steps_of(tuple xs, tuple ws, tuple ys, Py_ssize_t groups, tuple stride,
                      tuple pad, tuple dilation, Py_ssize_t mr):
    """The multiply-adds per output value that the channels-last paths' ``_skip``
    variants leave out, with blocks of ``mr`` rows (the wide GEMM block's).

    Returns
    -------
    tuple of float
        The forward's and the input gradient's (its flipped correlation's; 0 when the
        input gradient is not one): 0 for a window of more than 64 taps.
    """
    cdef Geom g = geom_of(xs, ws, ys, groups, stride, pad, dilation)
    cdef Geom t = flipped_geom(&g)
    return tap_skip_steps(&g, mr), (tap_skip_steps(&t, mr) if flip_fits(&g) else 0.0)


def scratch_bytes(str pass_name, int path, tuple xs, tuple ws, tuple ys, Py_ssize_t groups,
                  tuple stride, tuple pad, tuple dilation, bint double):
    """Bytes of scratch memory per thread that one call of this pass and path uses."""
    cdef Geom g = geom_of(xs, ws, ys, groups, stride, pad, dilation)
    cdef float fs = 0
    g.N = max(g.N, 1)  # a batch of 0 runs no kernel; give what one image would use
    cdef double fd = 0
    if double:
        return _scratch_bytes(pass_name, path, &g, &fd)
    return _scratch_bytes(pass_name, path, &g, &fs)


cdef Py_ssize_t _scratch_bytes(str pass_name, int path, const Geom *g,
                               const floating_t *tag) except -1:
    cdef Geom t
    cdef OutLayout out
    cdef Py_ssize_t e, best = 0
    cdef Py_ssize_t nr = block_nr(&KERN, tag)
    if ((pass_name == "forward" and path == FWD_DEPTHWISE)
            or (pass_name == "backward_input" and path == BWI_DEPTHWISE)
            or (pass_name == "backward_weight" and path == BWW_DEPTHWISE)):
        return depthwise_scratch(pass_name, g, tag)
    if ((pass_name == "forward" and path == FWD_DEPTHWISE_CHANNELS_LAST)
            or (pass_name == "backward_weight" and path == BWW_DEPTHWISE_CHANNELS_LAST)):
        return depthwise_cl_scratch(g, tag)
    if pass_name == "backward_input" and path == BWI_DEPTHWISE_CHANNELS_LAST:
        t = flipped_geom(g)
        return depthwise_cl_scratch(&t, tag)
    if pass_name == "forward" and path in (FWD_CHANNELS_LAST, FWD_CHANNELS_LAST_SKIP):
        return channels_last_forward_scratch(g, tag, path == FWD_CHANNELS_LAST_SKIP)
    if pass_name == "backward_input" and path in (BWI_FLIPPED_CHANNELS_LAST,
                                                  BWI_FLIPPED_CHANNELS_LAST_SKIP):
        t = flipped_geom(g)
        return channels_last_forward_scratch(&t, tag, path == BWI_FLIPPED_CHANNELS_LAST_SKIP)
    if pass_name == "forward" and path == FWD_IM2COL_ROWS:
        return im2col_rows_scratch(g, tag)
    if pass_name == "forward" and path == FWD_SLAB_ROWS:
        return (correlate_scratch(g, &KERN, OPERAND_SLAB, tag)
                + (g.Fg + CK_MR_MAX) * sizeof(floating_t *))
    if pass_name == "forward" and path == FWD_DENSE and g.N < nr // block_vl(&KERN, tag):
        return gemv_rows(&KERN, tag) * (sizeof(floating_t) + sizeof(floating_t *))
    if pass_name == "forward" and path == FWD_DENSE:
        return (dense_forward_per_thread(g, dense_forward_tile(g, nr, sizeof(floating_t)),
                                         block_mr(&KERN, tag), nr) * sizeof(floating_t)
                + (g.Fg + CK_MR_MAX) * sizeof(floating_t *))
    if pass_name == "backward_input" and path == BWI_DENSE:
        return dense_gemm_per_thread(g.Fg, nr) * sizeof(floating_t)
    if pass_name == "backward_input" and path == BWI_COL2IM_ROWS:
        return (dense_gemm_per_thread(g.Fg, nr) + g.Cg * g.KK * g.P) * sizeof(floating_t)
    if pass_name == "backward_weight" and path == BWW_IM2ROW_GEMM:
        return (dense_gemm_per_thread(g.N * g.P, nr) + g.Cg * g.KK * g.P) * sizeof(floating_t)
    if pass_name == "backward_weight" and path == BWW_CHANNELS_LAST_GEMM:
        return channels_last_scratch(g, tag)
    if pass_name == "backward_weight" and path == BWW_GATHER_GEMM:
        return gather_wgrad_scratch(g, tag)
    if pass_name == "backward_weight" and path == BWW_DENSE:
        return dense_gemm_per_thread(g.N, nr) * sizeof(floating_t)
    if pass_name == "forward":
        return correlate_scratch(g, &KERN4 if path in (FWD_SLAB_NARROW, FWD_IM2COL_NARROW)
                                 else &KERN,
                                 OPERAND_SLAB if path in (FWD_SLAB, FWD_SLAB_NARROW) else
                                 OPERAND_IN_PLACE if path == FWD_POINTWISE else
                                 OPERAND_IM2COL_IMAGES if path == FWD_IM2COL_IMAGES else
                                 OPERAND_IM2COL,
                                 tag)
    if pass_name == "backward_input":
        if path == BWI_COL2IM:
            return col2im_layout(g, 1, tag).per_thread * sizeof(floating_t)
        if path == BWI_PHASED:
            for e in range(g.sd * g.sh * g.sw):
                t = phase_geom(g, e, &out)
                if t.P > 0:  # an input shorter than the stride has empty phases
                    best = max(best, correlate_scratch(&t, &KERN, OPERAND_SLAB, tag))
            return best
        t = flipped_geom(g)
        return correlate_scratch(&t, &KERN, OPERAND_SLAB if path == BWI_FLIPPED else
                                 OPERAND_IN_PLACE if path == BWI_FLIPPED_POINTWISE else
                                 OPERAND_IM2COL_IMAGES if path == BWI_FLIPPED_IM2COL_IMAGES else
                                 OPERAND_IM2COL, tag)
    if pass_name == "backward_weight":
        return wgrad_layout(g, path, tag).bytes_per_thread
    return 0
