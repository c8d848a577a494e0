"""The kernel paths of each convolution pass, and the one table of rules that picks them.

Every pass can run on several hand-written paths.  A path is named after where it sits
on the pass's real axes:

- **forward**: the operand the micro-kernel reads, ``slab`` (runs of a zero-padded input
  slab read in place), ``channels_last`` (the windows of a channels-last copy of the
  input gathered in place, output positions as the GEMM's rows and filters as its
  vectors, ``src/conv_forward_channels_last.pxi``; ``channels_last_skip`` leaves out the
  steps of the taps that read padding, and so does the flipped input gradient's
  ``flipped_channels_last_skip``), ``im2col`` (unrolled tiles of one
  image's positions),
  ``im2col_images`` (unrolled tiles whose columns run over several images, for small
  images) or ``pointwise`` (a 1x1, stride-1, unpadded layer's input read in place, its
  output written in place), times the GEMM block, wide or ``narrow`` (4 rows, for
  layers with at most 4 filters per group);
- **backward_input**: the formulation, ``flipped`` (a stride-1 correlation of grad_y with
  the flipped weights, on the slab, on the channels-last gather, on im2col tiles, on
  im2col tiles spanning images or, for a pointwise layer, in place), ``phased`` (one
  such correlation per stride phase, on the slab) or ``col2im`` (``W^T @ grad_y``
  scattered back);
- **backward_weight**: the operand, ``slab``, ``im2col`` or ``im2col`` tiles over
  several images (``im2col_gemm_images``, reduced block of rows by block of rows over a
  batch chunk), times the micro-kernel, ``gemm`` (the operand's rows against the
  transposed grad_y) or ``dot`` (rows of grad_y against the operand's rows, for short
  reductions); ``im2row_gemm`` (packed grad_y against rows of patches, for a few
  positions in all), ``channels_last_gemm`` (packed grad_y against runs of a
  channels-last copy of the input read in place, reduced over the positions of a chunk
  of images, ``src/conv_weight_grad_channels_last.pxi``) and ``gather_gemm`` (the
  window's (channel, tap) pairs gathered from that copy against grad_y transposed,
  filters in the vectors, ``src/conv_weight_grad_gather.pxi``);
- **backward_bias**: ``sum``.

Every pass also has ``depthwise``: for layers with one input channel per group, no
GEMM at all but vectorised rows of each (image, channel) plane, read from a zero-padded
copy of the plane (``src/conv_depthwise.pxi``); and, for one filter per channel,
``depthwise_channels_last``: the same sums with the vector lanes over channels of
channels-last copies of the planes (``src/conv_depthwise_channels_last.pxi``; the input
gradient at stride 1).

Every convolution pass also has ``dense``: when the window covers the whole unpadded
input (one output position per image, as in LeNet's C5 and every Dense layer), the
pass is one matrix product over the arrays in place (``src/conv_dense.pxi``), with no
slab, no im2col and no transposed copies.

Each row of :data:`TABLE` says when its path is *valid* (it computes the right answer
for the geometry) and when it is *preferred*.  A plan takes, per pass, the first row
that is both; a test may force any valid row instead.  The predicates read the
geometry's facts (``convkern._conv.geometry_facts``) and the micro-kernels' block
shapes (``convkern._conv.kernel_info``), which depend on the CPU's vector width.
"""

import math
import os
from collections import namedtuple

from . import _conv

__all__ = ["PASSES", "TABLE", "Facts", "choose", "valid_paths"]

PASSES = ("forward", "backward_input", "backward_weight", "backward_bias")

Facts = namedtuple(
    "Facts",
    [
        "direct",          # the slab path applies to the correlation (forward, weight gradient)
        "flipped",         # stride 1: the input gradient is a correlation of grad_y
        "flipped_direct",  # ... that takes the slab path
        "phased",          # strided: every stride phase has taps and takes the slab path
        "pointwise",       # 1x1, stride 1, no padding: a GEMM over the arrays in place
        "dense",           # the window covers the whole unpadded input: matrix products
        "depthwise",       # one channel per group, strides and halo the plane copy can take
        "channels_last",   # halos the channels-last weight gradient's slab can take
        "flipped_channels_last",  # stride 1, and the flipped correlation's halos too
        "filters",         # filters per group, Fg
        "channels",        # input channels per group, Cg
        "groups",          # groups, G
        "reduction",       # Cg * prod(K), the weight gradient's reduction rows
        "mr",              # rows of the wide GEMM block for the dtype
        "nr",              # columns of the GEMM block for the dtype
        "images",          # N, the batch
        "positions",       # output positions per image, prod(O)
        "channel_run",     # values per run of the channels-last input: KW * Cg, or Cg if dilated
        "taps",            # prod(K), the window's taps
        "itemsize",        # bytes per element of the dtype
        "row_width",       # OW, outputs per output row
        "input_row_width",  # W, inputs per input row (the flipped correlation's outputs)
        "vl",              # elements per vector of the micro-kernels for the dtype
        "disjoint",        # stride >= the dilated window on every axis: no input read twice
        "depth_taps",      # KD, the window's taps along the first of three spatial axes
        "slab_use",        # outputs / columns a slab tile computes (the rest is halo)
        "flipped_slab_use",  # ... of the input gradient's flipped correlation
        "tap_skip_steps",  # multiply-adds per output value the _skip blocks leave out
        "flipped_tap_skip_steps",  # ... of the input gradient's flipped correlation
        "gather_image_bytes",  # the gathered weight gradient's copy of an image and run of B
    ],
)

Path = namedtuple("Path", ["name", "axes", "valid", "preferred"])


def _always(f):
    return True


def _never(f):
    return False


# One input channel per group: the depthwise path's rows work per (image, channel)
# plane and add the window's taps along vectors of output positions, with no slab, no
# packing and no product.  It is preferred for the forward and the weight gradient when a
# GEMM would have little to block over: several groups (a GEMM per group, each with only
# prod(K) reduction rows, pays its slab copy and packing per group), or fewer filters
# than the wide block has rows (the block cannot be filled).  One group of at least mr
# filters is one well-shaped product, where the GEMM reuses each input load over a block
# of filters and the rows do not.
def _depthwise(f):
    return f.depthwise


def _depthwise_rows_pay(f):
    return f.depthwise and (f.groups > 1 or f.filters < f.mr)


# The depthwise weight gradient's plane kernels put a row's output positions in the
# lanes: a row that is not a whole number of vectors leaves lanes empty and pays a
# masked edge on every row, a large share of a row of one or two vectors.  The
# channels-last planes put the channels in the lanes instead, for a transposed copy of
# x and grad_y per image (one load and store per element, against prod(K) multiply-adds),
# and pay when the channels fill the lanes better than the rows do.  Measured on an
# AVX-512 Xeon (2 threads, float32, 3x3, batch 1 and 4): rows of 7 (7 of 16 lanes
# used) 2.5-3.5x faster, 14 and 20 1.2-1.6x, 24 and 28 within 5-13% either way,
# 16 and 32 (whole vectors) 0.7-1.1x, 56 and 112 (planes far past L1) 0.4-0.8x; with
# AVX2's 8 lanes rows of 7 and 14 1.2-1.9x, 16 and 28 0.7-0.85x.
def _lane_use(n, vl):
    return n / (-(-n // vl) * vl)


def _channel_lanes_pay(f):
    return (f.depthwise and f.filters == 1 and f.row_width < 2 * f.vl
            and _lane_use(f.groups, f.vl) > _lane_use(f.row_width, f.vl))


# The forward and input gradient on channels-last planes transpose their output back,
# where the weight gradient's sums leave only KK values per channel: they pay for rows of
# at most one vector.  Measured (2 threads, float32, 3x3, batch 1 and 4): on AVX-512
# rows of 7 2-3.7x faster, 14 1.3-1.7x, 16 and 20 within 7%, 28 and wider 0.65-0.8x; on
# AVX2's 8 lanes rows of 7 and 8 1.35-2.7x, 14 and 16 within 20% either way.
def _channel_rows_short(f):
    return (f.depthwise and f.filters == 1 and f.row_width <= f.vl
            and _lane_use(f.groups, f.vl) >= _lane_use(f.row_width, f.vl))


# The depthwise input gradient adds Fg * prod(K) taps per input element in the lanes of
# one row kernel, every tap a load; col2im multiplies W^T (prod(K) x Fg) by grad_y, a
# GEMM whose reduction runs over the Fg filters, and scatters prod(K) values per
# position.  Few filters per channel leave that GEMM nothing to reduce over; a GEMM
# block of them (mr) fills it whatever the number of groups.  Measured on Zen 2 (AVX2,
# both dtypes, 3x3 and 5x5 2-D windows): one filter per group ran 2-10x col2im's speed
# at strides 1-4 and 2-4 filters 1.0-3.3x at stride 1, but 6 filters 0.7-1.3x, 32 filters
# (one group or two) 0.3-0.4x, and a one-position layer of 64 filters (a Dense of one
# input feature) 0.2x the dense path's.
def _depthwise_input_pays(f):
    return f.depthwise and f.filters < f.mr


# Few filters per group fill the 4-row block better than the wide one.
def _few_filters(f):
    return f.filters <= 4


# The flipped and phased input gradients are GEMMs with only Cg rows per group: with
# fewer than two wide blocks of rows, copying grad_y's slab costs as much as the product
# and col2im (K = Cg * prod(K) rows) is faster.
def _channel_rich(f):
    return f.channels >= 2 * f.mr


# One whole block of rows (Cg >= mr) over a long flipped reduction (Fg * prod(K) rows)
# keeps the flipped slab ahead too: LeNet-5's C3 (6 <- 16 channels, 5x5, batch 64) ran
# 0.84-0.95x PyTorch flipped and 0.71-0.79x on col2im (Zen 2, 1 and 2 threads), where
# the stems' 1-3 channels (part of a block) ran 0.9-2.1x flipped and 1.3-5.5x on col2im.
def _flipped_block_pays(f):
    return _channel_rich(f) or (f.channels >= f.mr and f.filters * f.taps >= 8 * f.nr)


# The GEMM weight gradient transposes grad_y per tile, which pays off only over enough
# reduction rows; shorter reductions take the dot products.  The transpose moves each
# grad_y value once and the product multiplies it by every reduction row, both a vector
# at a time: the break-even is a number of rows, whatever the vector width.  Measured
# at 64 rows on Zen 2 (AVX2); on an AVX-512 Xeon MobileNetV2's 1x1 expansions of 64 and
# 96 channels at batch 4 ran 1.9-2.0x faster on the GEMM than on the dots.
LONG_REDUCTION = 64


def _long_reduction(f):
    return f.reduction >= LONG_REDUCTION


# A small image gives a GEMM tile only a few nr-slivers of columns (and the slab path
# adds its halo columns, a 2x2 output computes 2 x 4 columns): with a batch, tiles whose
# columns run over several images keep the micro-kernel on whole slivers and amortise
# each sweep over the packed weights.  Few slivers: fewer than 4 per image.  A single
# small image takes the im2col tiles (no halo) or col2im instead of the slab.
def _small_output(f):
    return f.positions < 4 * f.nr


def _small_images(f):
    return f.images >= 2 and _small_output(f)


# Few output positions in the whole call: at most two reduction blocks of them.
def _few_positions(f):
    return f.images * f.positions <= 2 * _conv.REDUCTION_BLOCK


# The channels-last weight gradient (src/conv_weight_grad_channels_last.pxi) is one GEMM
# with grad_y's filters as rows and runs of the channels-last input as columns, reduced
# over the output positions of a chunk of images, each chunk on one thread with its own
# partial gradient.  Its blocks fill when there are filters for several row blocks (each
# B sliver it reads from the slab serves every block of filters) and the runs fill their
# column slivers to three quarters or more (3-D U-Net's 16-channel 3x3x3 layer, runs of
# 48 on AVX-512's 32 columns, ran 1.7-2.2x faster on it than on the slab GEMM).  Then it
# beats the per-image slab paths, whose every image sweeps the whole Cg * prod(K) x Fg
# partial, and the im2col tiles, which copy each input value prod(K) times.  Measured on
# an AVX-512 Xeon (2 threads) once its chunks ran on one thread each (pack, slab and GEMM
# in one core's cache): every zoo layer the slab GEMM had (VGG's, ResNet's and U-Net's
# 3x3 layers at batch 4-16, WaveNet's dilated ones at batch 4) ran 1.0-1.5x faster on
# it, and 1x1 expansions at batch 4 1.4x faster than on im2col.  Before, a chunk's pack
# and GEMM were split among the threads, which then read each other's operands from L3,
# and the slab kept the batches whose partial fits in half the L2 (on Zen 2, VGG's 16x16
# layers at batch 32 ran 0.76-0.92x PyTorch on it then, 0.9-1.0x on the slab).  Not a
# strided or padded 1x1 window's, whose im2col is a plain strided copy (ResNet's
# downsamples: within 10% either way); nor, for a batch with few positions in all under
# a 1-D or 2-D window, im2row's (VGG's 4x4, ResNet's 7x7 and 4x4, U-Net's 8x8 layers at
# batch 4-16: within 5% either way, U-Net's k2 s2 adjoint 1.2x faster on im2row), where
# a 3-D window's stays (3-D U-Net's 4x4x4 bottleneck at batch 2: 1.5x faster on the
# channels-last GEMM).
def _channels_last_fills(f):
    return (f.channels_last and f.filters >= 4 * f.mr and f.channel_run >= f.nr
            and f.channel_run / _round_up(f.channel_run, f.nr) >= 0.75
            and (f.taps > 1 or f.pointwise)
            and (f.images == 1 or f.depth_taps > 1 or not _few_positions(f)))


def _round_up(n, m):
    return -(-n // m) * m


# The other GEMM paths put the filters on the micro-kernel's columns: fewer filters than
# a sliver (16 filters on AVX-512's 32 columns) waste the rest, whatever the cache.  The
# channels-last GEMM puts them on the rows and the input's runs on the columns; it pays
# when it uses more of its block (rows x columns) than they use of their columns.
# Measured on an AVX-512 Xeon (2 threads): 3-D U-Net's 16-filter 3x3x3 layers at 32^3
# ran 2.2-3.8x faster on the channels-last GEMM than on the slab GEMM, LeNet-5's C3 (6 ->
# 16 channels, 5x5, batch 64) 1.9x.  (On AVX2 16 filters fill a sliver: no change.)
# With few positions in all, im2row, whose columns are the patches, stays first.
def _filter_columns_wasted(f):
    filter_use = f.filters / _round_up(f.filters, f.nr)
    block_use = (f.filters / _round_up(f.filters, f.mr)
                 * f.channel_run / _round_up(f.channel_run, f.nr))
    return (f.channels_last and filter_use < 0.75 and block_use > filter_use
            and not _few_positions(f))


# The in-place pointwise paths read the GEMM's B rows, one per reduced channel, straight
# from the caller's array, P positions apart.  Rows s bytes apart start in only
# 4096 / gcd(s, 4096) of the L1 cache's 64-byte-line sets (64 sets of 4 KiB per way on
# every current x86 core), so a reduction block of them (up to KC rows) shares those
# sets' ways; with too many rows per way a micro-kernel sliver evicts its own rows,
# which matters when it is reused by several blocks of output rows (more than mr of
# them).  The paths that copy the input (slab, im2col tiles) pack the rows densely.
# Up to ALIAS_ROWS_PER_WAY rows per way of the running CPU's L1 (read at run time:
# l1_ways) the L2 still feeds the sliver: on Zen 2 (8 ways) WaveNet's 1x1 layers over
# 4096 samples (16 KiB rows, 64-256 channels: 8-16 rows per way) ran 0.6-0.9x PyTorch in
# place and 1.1-1.7x on the copying paths, while MobileNetV2's 112x112 layers (49 KiB
# rows, 16-32 channels, 1-2 per way) kept theirs; on an AVX-512 Xeon (12 ways)
# MobileNet's 32x32 and 16x16 1x1 layers (32-128 rows, 1-5 per way) ran 1.1-1.4x faster
# in place, WaveNet's 64 channels (5 per way) as fast, its 128-256 (11 per way) up to
# 2x slower.
ALIAS_ROWS_PER_WAY = 6


def _cache_attribute(level, kinds, name):
    """The sysfs attribute ``name`` of the running CPU's first cache of ``level`` whose
    type is in ``kinds`` (Linux), or None when it cannot be read."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for index in sorted(os.listdir(base)):
            d = os.path.join(base, index)
            with open(os.path.join(d, "level")) as lv, open(os.path.join(d, "type")) as kind:
                if lv.read().strip() == str(level) and kind.read().strip() in kinds:
                    with open(os.path.join(d, name)) as value:
                        return value.read().strip()
    except OSError:
        pass
    return None


def l1_ways():
    """Ways of the running CPU's L1 data cache (Linux sysfs), or 8, the fewest of
    current x86 cores, when it cannot be read."""
    global _L1_WAYS
    if _L1_WAYS is None:
        _L1_WAYS = 8
        ways = _cache_attribute(1, ("Data",), "ways_of_associativity")
        if ways is not None and ways.isdigit():
            _L1_WAYS = max(1, int(ways))
    return _L1_WAYS


def l2_bytes():
    """Bytes of the running CPU's (per-core) L2 cache (Linux sysfs, "1024K"), or 512 KiB,
    the smallest of the x86 cores the wheels target (Zen 2), when it cannot be read."""
    global _L2_BYTES
    if _L2_BYTES is None:
        _L2_BYTES = 512 << 10
        size = _cache_attribute(2, ("Unified", "Data"), "size")
        units = {"K": 1 << 10, "M": 1 << 20}
        if size and size[:-1].isdigit() and size[-1] in units:
            _L2_BYTES = max(64 << 10, int(size[:-1]) * units[size[-1]])
    return _L2_BYTES


_L1_WAYS = None
_L2_BYTES = None


def _aliased_rows(f, rows, outputs):
    stride = f.positions * f.itemsize
    groups = 4096 // math.gcd(stride, 4096)
    return (outputs > f.mr
            and min(rows, _conv.REDUCTION_BLOCK) > ALIAS_ROWS_PER_WAY * l1_ways() * groups)


# A pointwise layer with fewer filters than channels (MobileNet's projections) and at
# least two reduction blocks of positions per image: im2col is a plain copy of x, and its
# GEMM puts the channels on the micro-kernel's rows against grad_y transposed, few
# filters wide, with no halo.  The channels-last GEMM puts the few filters on its rows,
# so each slab sliver serves only a few blocks of them.  Measured on Zen 2 (AVX2, float32,
# MobileNetV2's and WaveNet's 1x1 layers, batches 1 and 4): 1.1-2.3x the slab and
# channels-last paths' speed.
def _pointwise_projection(f):
    return (f.pointwise and f.filters < f.channels and not _few_filters(f)
            and f.positions >= 2 * _conv.REDUCTION_BLOCK)


# Windows that do not overlap (stride >= the dilated window on every axis: the adjoints
# of transposed convolutions with kernel = stride, patchifying stems): every input value
# is read once, so im2col is a plain gather, while the slab splits the input into its
# stride phases and reads each phase at one tap.  Measured on Zen 2 (AVX2, float32, 2
# threads): U-Net's k2 s2 layers ran 1.0-2.5x PyTorch on im2col, 0.4-1.0x on the slab.
def _slab_pays(f):
    return not f.disjoint and f.slab_use >= SLAB_USE_MIN


# A slab tile computes its outputs plus halo columns; a small volume's tile is mostly halo
# (a 4x4x4 output with a 3x3x3 window: 128 columns for 64 outputs), where im2col's tiles,
# since unrolling reads small images from a padded copy, compute the outputs alone.
# Measured on Zen 2 (AVX2, float32, 2 threads), 3-D U-Net's 4x4x4 bottleneck: 0.63-0.67x
# PyTorch on the slab with the weight's rows in place, 0.81-0.90x on im2col_rows (batch
# 2); 1.21x and 1.60x at batch 1.  The zoo's 2-D layers that use less than this (VGG's
# 4x4 and 2x2 stages, ResNet's strided 8x8 layer) took im2col tiles already (small
# outputs); LeNet's 5x5 layer over 14x14 uses 0.62 and keeps the slab.
SLAB_USE_MIN = 0.6


# The slab computes no halo column when an output row is one vector or whole slivers, or
# whole vectors where a sliver is two (src/conv_geometry.pxi, plan_direct's vector rows):
# 16x16 images on AVX2, say, or a strided stem's 112-wide output on AVX-512.
def _slab_rows_whole(f):
    return f.direct and (f.row_width == f.vl or f.row_width % f.nr == 0
                         or (f.nr == 2 * f.vl and f.row_width % f.vl == 0))


# The forward reading the weight's rows in place (im2col_rows) against the paths that
# pack the weight first: with few positions in all (one tile of them) packing copies the
# whole weight to read it once, and the slab and im2col paths have few columns to block
# over.  Measured on Zen 2 (AVX2, float32, 2 threads, the zoo's layers): 1.0-2.3x
# PyTorch at 1-128 positions in all, against 0.3-1.2x on the others, small weights
# included (strided 1x1 downsamples, 3-D bottlenecks); but with more than a reduction
# block of positions in whole-vector slab rows (16x16 images of 64-512 channels) the slab
# ran 0.9-1.15x, im2col_rows 0.8-1.05x.
def _forward_rows_pay(f):
    slab_fits = _slab_rows_whole(f) and not _small_images(f)  # the slab would be planned
    return (_few_positions(f) and not _few_filters(f)
            and not (f.images * f.positions > _conv.REDUCTION_BLOCK and slab_fits))


# A small output's pointwise forward reads x in place where im2col_rows copies it (C x
# N * P values) to read the weight (C x F) in place: with more positions in all than
# filters the copy is the larger.  Measured on Zen 2 (AVX2, float32, 2 threads):
# MobileNetV2's 7x7 projections at batch 4 (576 and 960 -> 160) ran 0.93-1.05x PyTorch in
# place and 0.73-0.74x on im2col_rows; 960 -> 320 ran 0.87-0.88x on both.
def _pointwise_input_outweighs(f):
    return f.images * f.positions > f.filters


# The slab forward with the weight's rows read in place (gemm_rows) instead of packed:
# packing is a pass over the whole weight (read and written) per call, which the
# product amortises over its positions.  Measured on Zen 2 (AVX2, float32, 2 threads),
# channel-rich 3x3 and 3x3x3 layers of at most four reduction blocks of positions in all
# (8x8 to 16x16 images, 4x4x4 volumes): 0.73-1.54x PyTorch against 0.51-1.54x on the
# packed slab and 0.55-1.05x on im2col_rows (4 x 256 x 8x8 -> 512: 1.23x against 0.84x);
# at 784-1024 positions level with the packed slab.  Not for small outputs (a 4x4
# image's slab is mostly halo: im2col_rows ran 0.93x, the slab 0.61-0.71x).
def _slab_rows_pay(f):
    return (f.direct and _slab_pays(f) and not _small_output(f) and not _few_filters(f)
            and f.images * f.positions <= 4 * _conv.REDUCTION_BLOCK)


# The pointwise input gradient's flipped product in place: a channel-rich layer whose
# rows do not alias in L1, unless it is an expansion over a small output (MobileNetV2's
# last 1x1, 320 -> 1280 at 7x7, ran 0.44x PyTorch in place over its 49 positions).
def _flipped_pointwise_pays(f):
    return (f.pointwise and _channel_rich(f) and not _aliased_rows(f, f.filters, f.channels)
            and not (_small_output(f) and f.filters > f.channels)
            and not _ragged_projection(f))


# A pointwise projection (fewer filters than channels) over a small output whose
# positions fill the in-place product's column slivers worse than the channels-last
# correlation's blocks of mr rows (MobileNetV2's 7x7 layers: 49 positions in 4 slivers of
# 16, 77%, or in 9 blocks of 6 rows, 91%): its flipped input gradient puts the positions
# on the rows and the channels in the vectors.  Measured on AMD Zen 3 (AVX2, 2 threads),
# MobileNetV2's 576 -> 160, 960 -> 160 and 960 -> 320 at 7x7: 1.05-1.35x the in-place
# product's speed at batch 1 and 4 (0.78-1.48x PyTorch before, 0.93-1.70x after),
# 1.27-1.32x at 1 thread.  The rows must fill better by a tenth or more (77% against 91%
# here).  The expansions (160 -> 960, 320 -> 1280) ran 0.7-0.97x col2im_rows' speed on
# it: they keep col2im_rows, whose reduction is their many filters.
def _ragged_projection(f):
    return (f.pointwise and f.flipped_channels_last and f.filters < f.channels
            and _channel_rich(f) and _small_output(f)
            and _lane_use(f.positions, f.mr) > _lane_use(f.positions, f.nr) + 0.1)


# A short reduction (at most two reduction blocks of Cg * prod(K) rows) over many positions
# per image (at least four blocks): im2col_dot's tiles are x's rows of patches, long and
# contiguous along the positions, and its dot kernel sums each against grad_y's rows in
# place, with no transposed copy of grad_y and no partial per tile.  Measured on Zen 2
# (AVX2, float32, 2 threads) over the zoo's weight gradients: 1.0-2.1x PyTorch for
# MobileNetV2's 1x1 layers, WaveNet's 1-D layers and the 3-channel stems (the GEMM and
# slab paths 0.4-1.3x), but 0.3-0.7x with fewer than 256 positions per image.
# The dot kernel reads DR + DC rows of a long tile (2048 positions, beyond L1) per block,
# a vector of each per DR * DC multiply-adds: its bytes per multiply-add grow with the
# vector, while the GEMM reads packed slivers that stay in L1.  With 64-byte vectors it
# keeps its lead only where the GEMM's transpose is not amortised (short reductions),
# where its rows are the arrays themselves (pointwise layers: no im2col copy) or where
# few channels make every GEMM path unroll long windows (the stems).  On an AVX-512 Xeon
# (2 threads) WaveNet's dilated 64-channel layers (128 rows) ran 1.2-1.6x faster on the
# GEMM paths; its 1x1 layers at batch 1 ran 1.2-1.4x faster on the dots.  ResNet's 7x7
# stem (147 rows) ran as fast on both at batch 1 but 1.2-1.45x faster on the GEMM paths
# at batch 4 (slab 5.8 ms, im2col 4.8, dots 7.0), since the fused bias sums no longer
# cost the GEMM paths more: a long few-channel reduction keeps the dots at batch 1 only.
# So does a pointwise layer whose channels or filters span fewer than 4 vectors: the
# GEMM paths' transposes of x and grad_y move C + F values per position for C * F
# multiply-adds, which a batch of WaveNet's 64-256-channel 1x1 layers (4 x 4096
# positions) amortised (1.1-1.6x the dots' speed), MobileNetV2's projections to 32
# channels (784 positions) did not (0.8x); AVX-512 Xeon, 2 threads.
# Where the dots pay, a batch of images that each fit one dot tile takes them on the slab:
# the input read in place instead of an im2col copy of each value per tap.  LeNet-5's C1
# (1 channel, 5x5, batch 64) ran 0.21 ms on the slab dots against 0.37 on im2col's and
# 0.43 on the depthwise rows, the A-E suite's D (1 -> 8 channels, 28x28) 0.19 against
# 0.30 (AVX-512 Xeon, 2 threads); a batch of one (the filters split among the threads,
# each filling its own slab) and large images (tiles re-copying their halo rows) ran
# slower on them (VGG's stem at batch 1: 0.12 ms against 0.07; U-Net's 128x128 stem at
# batch 4: 1.37 against 1.20).
def _slab_dots_pay(f):
    return (f.direct and f.groups == 1 and f.images >= 2 and _dot_pays(f) and _slab_pays(f)
            and f.positions <= _conv.DOT_TILE_POSITIONS)


def _dot_pays(f):
    return (f.reduction <= 2 * _conv.REDUCTION_BLOCK
            and f.positions >= 4 * _conv.REDUCTION_BLOCK
            and (f.vl * f.itemsize <= 32 or not _long_reduction(f)
                 or (f.pointwise and (f.images == 1 or min(f.channels, f.filters) < 4 * f.vl))
                 or (not _channel_rich(f) and f.images == 1)))


# With a few positions in all (at most half a reduction block) over a window of one or
# two axes, the channels-last GEMM's gradient, written channels-last and transposed,
# costs more than the product; im2row writes it once in its own layout.  Measured on
# Zen 2 (AVX2, float32, 2 threads) since im2row packs grad_y without a division per
# element: 1.0-1.6x PyTorch at 49-64 positions (VGG's 8x8 and 4x4 stages, ResNet's
# strided 1x1 downsamples, MobileNetV2's 7x7 1x1 layers, U-Net's 8x8 bottleneck)
# against the channels-last GEMM's 0.67-1.33x, but 0.47-0.85x against 0.56-1.36x at
# 196-256 positions; a window over three axes (27 taps per row of patches) kept the
# channels-last GEMM ahead (3-D U-Net's 4x4x4 bottleneck: 1.3-1.6x against 0.8-1.0x).
# A 1x1 window's rows of patches are x's rows transposed, no larger than x: with grad_y
# read in place and the rows built packed sliver by sliver, im2row ran 0.92-2.3x PyTorch
# at up to two blocks of positions (MobileNetV2's 14x14 and 7x7 expansions, ResNet's
# strided downsamples, at batch 1 and at their training batch) where the channels-last
# GEMM ran 0.46-1.55x; but a projection (fewer filters than channels) over more than
# half a block of positions per image kept it (0.83-1.06x against 1.01-1.17x).
# The channels-last correlation (src/conv_forward_channels_last.pxi) reads each input
# value from one channels-last copy, at every tap, where im2col copies it once per tap
# and the slab computes halo columns; it pays a gather per multiply-add step (an offset
# load), the copy of x and a transpose of y.  It is preferred when the window has taps
# that overlap (a disjoint window's im2col copies each value once), for at least one
# reduction block of positions in all (the packed transposed weight is then reused by
# 16 blocks of rows or more; with fewer, the paths that read the weight's rows in place
# win: VGG's 4x4 and 2x2 layers at batch 1 ran 0.9-1.0x their speed), and where the slab
# would compute more than 1 - CHANNELS_LAST_SLAB_USE halo: over the zoo's layers (AVX-512
# Xeon, 2 threads) the 38 entries this rule takes ran 0.95-1.48x the planned path's
# speed (mean 1.16x: 3-D U-Net's 8^3 and 4^3 volumes 1.2-1.5x, ResNet's 14x14 and 7x7
# layers 1.1-1.2x, VGG's 8x8 and 4x4 layers at batch 16 1.0-1.17x), while the slab at
# full use was faster (VGG's 16x16 layers at batch 16 ran 0.72x on channels-last).  The
# filters are its vectors: a group needs one vector of them (the A-E suite's D, 8 filters
# of one channel's 5x5 window, ran 0.75x PyTorch on it against 1.29x on the slab).
CHANNELS_LAST_SLAB_USE = 0.9


# A slab at full use can still lose to the channels-last correlation when its output
# rows are one vector long (16x16 images and 16^3 volumes on AVX-512): its vector rows
# then make each sliver two output rows, and every multiply-add step loads from two
# rows of the slab a padded row apart, where the channels-last correlation's vectors
# run along the filters (the flipped input gradient's: the channels).  Measured on an
# AVX-512 Xeon (2 threads) over the zoo's layers with such rows and at least a GEMM
# block (nr) of those: 1.02-1.14x the slab's speed, forward and input gradient (VGG's
# 16x16 stage at batch 16, U-Net's 16x16 stage, 3-D U-Net's 16^3 layers of 32-64
# channels); with one vector of them (3-D U-Net's 16 -> 32 layer's input gradient, 16
# channels) 0.90-0.93x.  Rows of two vectors (32x32 images) ran 0.94-1.05x: no rule.
# On AVX2's kernels (the same Xeon) 8x8 images of 64-512 channels ran 0.97-1.1x faster
# forward and 1.0-1.2x input gradient (col2im_rows included, at batch 2-4), and so did
# float64's 8-value rows on AVX-512 (8x8 and 8^3, 64-256 channels: 1.02-1.2x).  Small
# outputs (a 4x4 image of SSE2's 4-value vectors) keep their own rules.
def _slab_rows_of_one_vector(width, vector_values, f):
    return width == f.vl and vector_values >= f.nr and not _small_output(f)


# A window over three axes also loses on the slab at full use when the correlation's
# vectors (the filters; the flipped input gradient's channels) fill a whole block of
# columns (the slab's slivers read their 27 taps from rows scattered over three planes
# of each channel's slab, where the channels-last correlation reads its packed weight's
# rows in order and gathers one value per row of the block).  Measured on AMD Zen 3
# (AVX2's 16 columns, 2 threads) over 3-D U-Net's 16^3 and 32^3 layers of 16-64
# channels at batch 1 and 2: forward 0.99-1.32x the slab's speed (most 1.15x or more),
# input gradient 1.0-1.32x; at 1 thread 0.90-1.31x and 1.05-1.18x.  Not for a short
# reduction (the one-channel first layer's 27 rows: 0.7-0.9x), nor, on AVX-512's 32
# columns, for 16-channel vectors (a 3-D input gradient ran 0.90-0.93x on it, Xeon:
# fewer vectors than a block).
def _three_axis_vectors_fill(vector_values, reduced_channels, f):
    return f.depth_taps > 1 and vector_values >= f.nr and reduced_channels >= 2 * f.mr


def _channels_last_window_pays(f):
    return (not f.disjoint and f.taps > 1 and f.filters >= f.vl
            and (not f.direct or f.slab_use < CHANNELS_LAST_SLAB_USE
                 or _slab_rows_of_one_vector(f.row_width, f.filters, f)
                 or _three_axis_vectors_fill(f.filters, f.channels, f)))


def _channels_last_pays(f):
    return _channels_last_window_pays(f) and f.images * f.positions >= _conv.REDUCTION_BLOCK


# The channels-last correlation's taps that read padding multiply zeros: its _skip
# variants order the rows (position, image), so that a block of mr rows is one
# position of mr images or a run of positions of fewer images (for small images, the
# positions sorted by their taps where that skips more: an 8x8 image's left column
# fills blocks of its own), and leave out the steps of the taps that none of the
# block's positions reads the input at (per reduction block a list of the block's
# steps; the sums are the same, bit for bit: a skipped step adds a zero product, and a
# non-finite weight, whose 0 * inf is NaN, is caught in the tile's sums and the tile
# redone with every tap).  tap_skip_steps counts the steps
# per output value those blocks leave out.  It costs a pair of offsets per step (one
# load more than the plain gathered kernel's) and, per output value, the lists and the
# transpose from every N-th row of the block: some 9-10 cycles, worth 150 multiply-add
# steps of 16 lanes on a core that retires one 512-bit FMA per cycle (Zen 4), 300 on
# one that retires two (a Xeon).  Measured over the zoo's layers, forward and input
# gradient, against the same correlation without skipping (2 threads): on Zen 4, 276
# or more steps skipped (128-512 channels; 4x4 to 8x8 images, 4^3 to 8^3 volumes;
# batch 1-16) 0.98-1.27x, most 1.05x or more; 184-192 1.01-1.13x; 70-141 0.92-1.10x;
# on a Xeon (before the rows kept their order) 370 even, 180 0.94x.
# Against the paths that read the weight's rows in place (col2im_rows, im2col_rows)
# with few positions in all, the skip needs a block of one position of mr images or a
# reduction block of rows: at batch 1, 7x7 and 8x8 images ran 0.85x col2im_rows, 2x2
# at batch 16 1.6-1.9x faster, 7x7 and 8x8 at batch 4 1.11-1.18x (Zen 4).  A window
# over three axes also pays in the forward at batch 1 (3-D U-Net's 4^3 bottleneck,
# 1.24-1.58x im2col_rows), not in the input gradient (0.85-1.16x col2im_rows).
TAP_SKIP_STEPS = 256


def _tap_skip_pays(f, steps):
    return (steps >= TAP_SKIP_STEPS
            and (f.images >= f.mr or f.images * f.positions >= _conv.REDUCTION_BLOCK))


def _channels_last_skip_pays(f):
    return (_channels_last_window_pays(f)
            and (_tap_skip_pays(f, f.tap_skip_steps)
                 or (f.depth_taps > 1 and f.tap_skip_steps >= TAP_SKIP_STEPS)))


def _flipped_channels_last_skip_pays(f):
    return (_channel_rich(f) and _tap_skip_pays(f, f.flipped_tap_skip_steps)
            and _flipped_slab_loses(f))


# The flipped input gradient on the channels-last correlation: the same trade against
# the flipped slab and tiles, for a channel-rich layer (its input channels are the
# correlation's vectors) whose positions are not few (col2im_rows takes those), or are
# few but fill a reduction block over a window of three axes or in rows of one vector
# (_flipped_few_pay).
def _flipped_channels_last_pays(f):
    return ((f.taps > 1 and _channel_rich(f)
             and (not _few_positions(f) or _flipped_few_pay(f))
             and _flipped_slab_loses(f))
            or _ragged_projection(f))


# (the flipped slab's halo, or its rows of one vector, as for the forward)
def _flipped_slab_loses(f):
    return (not f.flipped_direct or f.flipped_slab_use < CHANNELS_LAST_SLAB_USE
            or _slab_rows_of_one_vector(f.input_row_width, f.channels, f)
            or _three_axis_vectors_fill(f.channels, f.filters, f))


# A window over three axes (27 taps) with few positions in all, but at least a reduction
# block of them: col2im_rows scatters 27 taps' columns back per input value, the flipped
# channels-last correlation reads each gradient value from one copy and reuses its
# packed weight over the block.  Measured on an AVX-512 Xeon (2 threads): 3-D U-Net's
# 4x4x4 bottleneck at batch 2 (128 positions) ran 1.12-1.20x faster on it, at batch 1
# (64 positions, a half-used weight pack) 0.82-0.84x.  Over a 2-D window col2im_rows
# kept VGG's 4x4, ResNet's 7x7 and U-Net's 8x8 stages at their training batch (1.1-1.3x
# faster), but lost to it on 16x16 images at batch 1, rows of one vector
# (_slab_rows_of_one_vector; 64-512 channels: 1.08-1.26x faster on it).
def _flipped_few_pay(f):
    return ((f.depth_taps > 1 or _slab_rows_of_one_vector(f.input_row_width, f.channels, f))
            and _few_positions(f) and f.images * f.positions >= _conv.REDUCTION_BLOCK)


# The gathered weight gradient (src/conv_weight_grad_gather.pxi) puts the filters in the
# vectors and gathers the window's (channel, tap) pairs in place, where the channels-last
# GEMM's vectors run along runs of KW * Cg channels: it pays where those runs fill less
# than 4/5 of their slivers (a stem's 21 values of 32, a 3-D layer's 48 of 64) and the
# filters fill two vectors.  Its rows are the Cg * KK pairs: GATHER_WGRAD_ROWS or more
# always pay (ResNet-18's 7x7 stem ran 1.07x (batch 1) and 1.46x (batch 4) the planned
# path's speed, 3-D U-Net's 16 -> 32 layer 1.08-1.19x, runs of 48 values at 16x16 and
# 16^3 1.2-1.3x the channels-last GEMM; AVX-512 Xeon, 2 threads).  Fewer rows pay when
# they and the filters fill 4/5 of their blocks (a 3x3 RGB stem's 27 rows in 32; a
# 1-channel stem's 9 rows in 16 do not, nor LeNet-5's 8 filters in SSE2's 12-wide
# slivers, 0.8x the slab dots) and the row ranges that split a batch of one (each
# transposes all of the image's grad_y) transpose a grad_y that fits L2, an image of
# CHANNELS_LAST_RUN_BYTES: 3x3 RGB stems at 32x32 (batch 1-32) and 64x64 (batch 4-32)
# ran 1.1-1.4x the dot paths, at batch 1 on 128x128 or 224x224 0.7-0.85x (AVX-512 Xeon,
# 2 threads).  Filters that fill one vector (its one-vector kernel) pay in a batch, where
# each thread gathers its own images: 3-D U-Net's 16-filter first layers at 32^3 and
# batch 2 ran 1.26-1.32x the dots (1 channel) and 1.04-1.25x the channels-last GEMM (16
# channels), but at batch 1, whose row ranges each transpose the whole grad_y,
# 0.84-0.88x the channels-last GEMM; on AVX2's kernels (the same Xeon), 8 filters of a
# 5x5 window over 1 channel (LeNet-5-like, batch 4-64) ran 1.1-1.2x the dots.
# In a batch, those few rows give the GEMM few multiply-adds per byte it streams: each
# image's channels-last copy and the run of transposed grad_y it sweeps once per block
# of rows (f.gather_image_bytes) must stay in half the running CPU's L2 (read at run
# time).  Measured on AMD Zen 4 (1 MiB L2, 2 threads, 3x3 RGB stems of 32 filters at
# stride 2, batch 4): 96x96 (370 KB) even with the dots, 128x128 (460 KB) 0.86x,
# 160x160 (570 KB) 0.79x, 224x224 (860 KB) 0.64x, where 3-D U-Net's one-channel 32^3
# layer (410 KB) kept a 1.1-1.4x lead; the Xeon's 2 MiB L2 holds all of them.
GATHER_WGRAD_ROWS = 64


def _gather_wgrad_pays(f):
    run_use = f.channel_run / _round_up(f.channel_run, f.nr)
    row_use = f.reduction / _round_up(f.reduction, f.mr)
    filter_use = f.filters / _round_up(f.filters, f.vl if f.filters <= f.vl else f.nr)
    rows_pay = (f.reduction >= GATHER_WGRAD_ROWS
                or (row_use >= 0.8 and filter_use >= 0.8
                    and ((f.images >= 2 and f.gather_image_bytes <= l2_bytes() // 2)
                         or f.filters * f.positions * f.itemsize
                         <= _conv.CHANNELS_LAST_RUN_BYTES)))
    filters_pay = (f.filters >= 2 * f.vl
                   or (f.filters <= f.vl and filter_use >= 0.8 and f.images >= 2))
    return (run_use < 0.8 and rows_pay and filters_pay
            and f.taps > 1 and not f.disjoint and not _few_positions(f))


def _few_positions_for_rows(f):
    if f.taps == 1:
        return (_few_positions(f) and not (f.filters < f.channels
                                           and f.positions > _conv.REDUCTION_BLOCK // 2))
    return f.depth_taps == 1 and f.images * f.positions <= _conv.REDUCTION_BLOCK // 2


TABLE = {
    "forward": (
        # one output position: every other path pays tiles for what is one product
        Path("dense", {"operand": "in place", "block": "rows"}, lambda f: f.dense, _always),
        Path("depthwise_channels_last", {"operand": "channels-last planes", "block": "none"},
             lambda f: f.depthwise and f.filters == 1,
             lambda f: _depthwise_rows_pay(f) and _channel_rows_short(f)),
        Path("depthwise", {"operand": "rows", "block": "none"}, _depthwise,
             _depthwise_rows_pay),
        # no slab copy, no halo, no copy-out, few filters included (U-Net's 2-class heads
        # ran 1.2-2.5x PyTorch here, 0.6-2.1x on the narrow slab, Zen 2, 2 threads)
        Path("pointwise", {"operand": "in place", "block": "wide"},
             lambda f: f.pointwise,
             lambda f: ((not _small_output(f) or _pointwise_input_outweighs(f))
                        and not _aliased_rows(f, f.channels, f.filters))),
        Path("channels_last_skip",
             {"operand": "channels-last gather", "block": "wide", "taps": "reading input"},
             lambda f: f.channels_last and f.tap_skip_steps > 0, _channels_last_skip_pays),
        Path("channels_last", {"operand": "channels-last gather", "block": "wide"},
             lambda f: f.channels_last, _channels_last_pays),
        # the slab with the weight's rows read in place (_slab_rows_pay)
        Path("slab_rows", {"operand": "slab", "block": "weight rows"}, lambda f: f.direct,
             _slab_rows_pay),
        # few positions in all (one tile of them, over images): the packed weights would
        # be swept by that one tile, so packing would copy the whole weight (a pass over
        # memory as long as the product's own, for channel-rich layers) to read it once;
        # the rows are read in place
        Path("im2col_rows", {"operand": "im2col over images", "block": "weight rows"},
             _always, _forward_rows_pay),
        # (not for images of whole slivers, P a multiple of nr: their per-image tiles have
        # no ragged sliver, and ResNet-CIFAR's 8x8 downsample at batch 16 ran 1.28x
        # faster on them, VGG's 8x8 layers at batch 16-32 1.02-1.13x; AVX-512 Xeon, 2
        # threads)
        Path("im2col_images", {"operand": "im2col over images", "block": "wide"}, _always,
             lambda f: (_small_images(f) and f.positions % f.nr != 0
                        and not _few_filters(f))),
        Path("slab_narrow", {"operand": "slab", "block": "narrow"},
             lambda f: f.direct, lambda f: _few_filters(f) and _slab_pays(f)),
        Path("slab", {"operand": "slab", "block": "wide"}, lambda f: f.direct,
             lambda f: not _small_output(f) and _slab_pays(f)),
        Path("im2col_narrow", {"operand": "im2col", "block": "narrow"}, _always, _few_filters),
        Path("im2col", {"operand": "im2col", "block": "wide"}, _always, _always),
    ),
    "backward_input": (
        Path("dense", {"formulation": "col2im", "operand": "in place"}, lambda f: f.dense,
             _always),
        # (_channel_rows_short: rows of at most one vector)
        Path("depthwise_channels_last",
             {"formulation": "flipped", "operand": "channels-last planes"},
             lambda f: f.depthwise and f.filters == 1 and f.flipped,
             lambda f: _depthwise_input_pays(f) and _channel_rows_short(f)),
        # with one channel per group the GEMM formulations have Cg = 1 rows (col2im
        # would run): the direct correlation of grad_y's rows pays for few filters
        Path("depthwise", {"formulation": "flipped", "operand": "rows"}, _depthwise,
             _depthwise_input_pays),
        # few output positions in all: col2im's GEMM with grad_y packed and the weight's
        # rows read in place (col2im packs a transposed copy of the whole weight, which
        # costs as much as a product over a few positions); its reduction runs over the
        # filters, so it needs as many as a long reduction (below, the flipped paths);
        # a channel-rich pointwise layer's flipped product runs in place, with no copy
        # at all.  Measured on Zen 2 (AVX2, float32, 2 threads) over the zoo's layers
        # with at least 64 filters and few positions: 0.64-1.64x PyTorch against col2im's
        # 0.55-1.25x on 3x3, 3x3x3, k2 s2 and 1x1 expansion layers; col2im kept 5-15% on
        # some strided 1x1 downsamples, all above 1.4x
        Path("flipped_channels_last_skip",
             {"formulation": "flipped", "operand": "channels-last gather",
              "taps": "reading input"},
             lambda f: f.flipped_channels_last and f.flipped_tap_skip_steps > 0,
             _flipped_channels_last_skip_pays),
        Path("col2im_rows", {"formulation": "col2im", "operand": "weight rows"},
             _few_positions,
             lambda f: (f.filters >= 4 * f.nr and not _flipped_pointwise_pays(f)
                        and not (f.flipped_channels_last and _flipped_channels_last_pays(f)))),
        Path("flipped_pointwise", {"formulation": "flipped", "operand": "in place"},
             lambda f: f.pointwise, _flipped_pointwise_pays),
        # the flipped correlations pay a slab or unrolled tiles per image (a 4x4x4
        # volume's slab is 6x6x6) and the packed weights: with few positions in all,
        # col2im (whose tiles are the positions themselves) ran 0.8-1.0x PyTorch on 3-D
        # U-Net's bottleneck and U-Net's 16x16 stage, the flipped paths 0.4-0.7x (Zen 2,
        # 2 threads; VGG's 16x16 stage at batch 1 lost 6%)
        Path("flipped_channels_last",
             {"formulation": "flipped", "operand": "channels-last gather"},
             lambda f: f.flipped_channels_last, _flipped_channels_last_pays),
        Path("flipped_im2col_images", {"formulation": "flipped", "operand": "im2col over images"},
             lambda f: f.flipped,
             lambda f: _channel_rich(f) and _small_images(f) and not _few_positions(f)),
        Path("flipped", {"formulation": "flipped", "operand": "slab"},
             lambda f: f.flipped_direct,
             lambda f: (_flipped_block_pays(f) and not _small_output(f)
                        and not _few_positions(f)
                        and f.flipped_slab_use >= SLAB_USE_MIN)),
        Path("flipped_im2col", {"formulation": "flipped", "operand": "im2col"},
             lambda f: f.flipped,
             lambda f: _channel_rich(f) and not _small_output(f) and not _few_positions(f)),
        # since the weight packs run in parallel, col2im ran 1.1-3.4x the phased path's
        # speed on every strided layer of the zoo (Zen 2, 1 and 2 threads): kept for
        # tests and forcing, planned for none
        Path("phased", {"formulation": "phased", "operand": "slab"},
             lambda f: f.phased, _never),
        Path("col2im", {"formulation": "col2im", "operand": "cols"}, _always, _always),
    ),
    "backward_weight": (
        Path("dense", {"operand": "in place", "kernel": "gemm"}, lambda f: f.dense, _always),
        # (_channel_lanes_pay: rows of less than two vectors that leave lanes empty)
        Path("depthwise_channels_last", {"operand": "channels-last planes", "kernel": "lanes"},
             lambda f: f.depthwise and f.filters == 1,
             lambda f: (_depthwise_rows_pay(f) and _channel_lanes_pay(f)
                        and not (_slab_dots_pay(f) and f.taps > 9))),
        # (a window past 3x3 in a batch of small images takes the slab dots instead: 1 ->
        # 2-6 channels at 28x28, batch 64, ran 1.5-2.2x faster on them with a 5x5
        # window and 1.5-1.9x slower with a 3x3 one, AVX-512 Xeon, 2 threads)
        Path("depthwise", {"operand": "rows", "kernel": "lanes"}, _depthwise,
             lambda f: _depthwise_rows_pay(f) and not (_slab_dots_pay(f) and f.taps > 9)),
        # the window's (channel, tap) pairs gathered in place (_gather_wgrad_pays)
        Path("gather_gemm", {"operand": "channels-last gather", "kernel": "gemm"},
             lambda f: f.channels_last, _gather_wgrad_pays),
        # one GEMM over a channels-last copy of the input (_channels_last_fills)
        Path("channels_last_gemm", {"operand": "channels-last slab", "kernel": "gemm"},
             lambda f: f.channels_last,
             lambda f: ((_channels_last_fills(f) or _filter_columns_wasted(f))
                        and not _few_positions_for_rows(f)
                        and not _pointwise_projection(f) and not _dot_pays(f))),
        # few output positions in all: the GEMM writes the gradient in its own layout
        # once per reduction block of positions, where the other GEMM paths write it into
        # partials, add them and transpose it (about three writes): with at most two
        # blocks the output traffic, a few multiply-adds per element, is smaller
        Path("im2row_gemm", {"operand": "im2row", "kernel": "gemm"}, _few_positions, _always),
        Path("im2col_gemm_images", {"operand": "im2col over images", "kernel": "gemm"},
             _always, lambda f: _long_reduction(f) and _small_images(f)),
        # (not for a pointwise layer, whose im2col is a plain copy of x: MobileNetV2's 14x14
        # 1x1 layers at batch 4 ran 0.93-1.38x PyTorch on im2col_gemm, 0.82-1.01x on the
        # slab GEMM and 0.2-0.4x on the slab dots, Zen 2, 2 threads)
        # (nor, with the slab dots, for windows that do not overlap, _slab_pays: U-Net's
        # k2 s2 adjoints ran 1.3-6x faster on im2col, AVX-512 Xeon, 2 threads)
        Path("slab_gemm", {"operand": "slab", "kernel": "gemm"},
             lambda f: f.direct, lambda f: (_long_reduction(f) and not _small_output(f)
                                            and not f.pointwise and not _dot_pays(f)
                                            and _slab_pays(f))),
        Path("slab_dot", {"operand": "slab", "kernel": "dot"}, lambda f: f.direct,
             lambda f: ((not (_long_reduction(f) and _small_output(f))
                         and not f.pointwise and not _dot_pays(f) and _slab_pays(f))
                        or _slab_dots_pay(f))),
        Path("im2col_gemm", {"operand": "im2col", "kernel": "gemm"}, _always,
             lambda f: (_long_reduction(f) or _pointwise_projection(f)) and not _dot_pays(f)),
        Path("im2col_dot", {"operand": "im2col", "kernel": "dot"}, _always, _always),
    ),
    "backward_bias": (
        Path("sum", {"kernel": "sum"}, _always, _always),
    ),
}

# The table and the compiled kernels name the same paths.
if {p: {row.name for row in rows} for p, rows in TABLE.items()} != {
    p: set(names) for p, names in _conv.PATHS.items()
}:
    raise ImportError("convkern: the path table and the compiled kernels name different paths")


def facts(geometry, dtype):
    """The facts the rules read, for a geometry's 5-D shapes and kernel parameters.

    Parameters
    ----------
    geometry : tuple
        ``(x5, w5, y5, groups, stride3, pad3, dilation3)`` as the kernels take them.
    dtype : numpy.dtype
        float32 or float64.
    """
    x5, w5, y5, groups = geometry[:4]
    info = _conv.kernel_info()[dtype.name]
    mr, nr = info["gemm"]
    return Facts(
        filters=w5[0] // groups,
        channels=w5[1],
        groups=groups,
        reduction=w5[1] * w5[2] * w5[3] * w5[4],
        mr=mr,
        nr=nr,
        images=x5[0],
        positions=y5[2] * y5[3] * y5[4],
        channel_run=w5[1] * w5[4] if w5[4] == 1 or geometry[6][2] == 1 else w5[1],
        taps=w5[2] * w5[3] * w5[4],
        itemsize=dtype.itemsize,
        row_width=y5[4],
        input_row_width=x5[4],
        depth_taps=w5[2],
        disjoint=all(st >= (k - 1) * d + 1
                     for k, st, d in zip(w5[2:], geometry[4], geometry[6])),
        vl=info["vector"][0],
        slab_use=_conv.slab_use(*geometry, nr, info["vector"][0]),
        flipped_slab_use=_conv.flipped_slab_use(*geometry, nr, info["vector"][0]),
        gather_image_bytes=_conv.gather_image_bytes(*geometry, dtype.itemsize == 8),
        **_conv.geometry_facts(*geometry),
        **dict(zip(("tap_skip_steps", "flipped_tap_skip_steps"),
                   _conv.tap_skip_steps_of(*geometry, mr))),
    )


def valid_paths(pass_name, f):
    """The names of the paths of ``pass_name`` that are valid for facts ``f``, in table order."""
    return tuple(row.name for row in TABLE[pass_name] if row.valid(f))


def choose(pass_name, f):
    """The first path of ``pass_name`` in the table that is valid and preferred for ``f``."""
    for row in TABLE[pass_name]:
        if row.valid(f) and row.preferred(f):
            return row.name
    raise RuntimeError(f"no path of {pass_name} applies")  # the last row always does


def code(pass_name, name):
    """The path's code for the compiled kernels."""
    return _conv.PATHS[pass_name].index(name)
