# Stub for the compiled module built from src/_conv.pyx.
#
# Internal kernels: they only fill a preallocated, validated ``out`` (the public,
# validating functions are in convkern/conv.py).  Arrays are C-contiguous 5-D
# (N, C, D, H, W) views of float32 or float64, all of one dtype.

from typing import Any

import numpy as np
from numpy.typing import NDArray

_Float = NDArray[np.float32] | NDArray[np.float64]
_Ints3 = tuple[int, int, int]
_Ints5 = tuple[int, int, int, int, int]

# Path names per pass; a path's code is its index (see convkern/_paths.py).
PATHS: dict[str, tuple[str, ...]]
# Reduction rows per GEMM block.
REDUCTION_BLOCK: int
CHANNELS_LAST_RUN_BYTES: int
DOT_TILE_POSITIONS: int
# Most rows per tile of the channels-last paths; most positions the tap skipping sorts.
TILE_ROWS: int
SKIP_SORT_POSITIONS_MAX: int
# Activations the forward applies in its output tile; the code is the index.
ACTIVATIONS: tuple[str, ...]

def slab_use(
    xs: tuple[int, ...], ws: tuple[int, ...], ys: tuple[int, ...], groups: int,
    stride: tuple[int, ...], pad: tuple[int, ...], dilation: tuple[int, ...], nr: int, vl: int,
) -> float: ...
def flipped_slab_use(
    xs: tuple[int, ...], ws: tuple[int, ...], ys: tuple[int, ...], groups: int,
    stride: tuple[int, ...], pad: tuple[int, ...], dilation: tuple[int, ...], nr: int, vl: int,
) -> float: ...
def gather_image_bytes(
    xs: tuple[int, ...], ws: tuple[int, ...], ys: tuple[int, ...], groups: int,
    stride: tuple[int, ...], pad: tuple[int, ...], dilation: tuple[int, ...], double: bool,
) -> int:
    """Bytes the gathered weight gradient streams per image and group: its channels-last
    copy of the image and a run of transposed grad_y (gather_wgrad_layout)."""
def scratch_cache_bytes() -> int:
    """Bytes of freed scratch blocks kept for the next calls (src/scratch_cache.h)."""

def release_scratch_cache() -> None:
    """Free the scratch blocks kept for the next calls (src/scratch_cache.h)."""

def cpu_isa() -> str:
    """Return the widest instruction-set level of the running CPU: 'baseline', 'avx2' or 'avx512'."""

def kernel_info() -> dict[str, Any]:
    """Return the selected micro-kernels: {"isa": name, "float32": {...}, "float64": {...}}."""

def depthwise_isa() -> str:
    """Return the instruction-set level of the depthwise plane kernels (as kernel_info's "isa")."""

def conv_forward(
    x: _Float,
    weight: _Float,
    bias: _Float,
    bias_mode: int,
    out: _Float,
    groups: int,
    stride: _Ints3,
    pad: _Ints3,
    dilation: _Ints3,
    path: int,
    activation: int,
    num_threads: int,
) -> None: ...
def conv_backward_input(
    grad_y: _Float,
    weight: _Float,
    out: _Float,
    groups: int,
    stride: _Ints3,
    pad: _Ints3,
    dilation: _Ints3,
    path: int,
    num_threads: int,
) -> None: ...
def conv_backward_weight(
    x: _Float,
    grad_y: _Float,
    out: _Float,
    groups: int,
    stride: _Ints3,
    pad: _Ints3,
    dilation: _Ints3,
    path: int,
    bias_out: _Float,
    num_threads: int,
) -> None: ...
def conv_backward_bias(grad_y: _Float, out: _Float, untied: bool, num_threads: int) -> None: ...
def geometry_facts(
    xs: _Ints5,
    ws: _Ints5,
    ys: _Ints5,
    groups: int,
    stride: _Ints3,
    pad: _Ints3,
    dilation: _Ints3,
) -> dict[str, bool]:
    """What the path rules need to know: {"direct", "flipped", "flipped_direct", "phased",
    "pointwise", "dense", "depthwise"}."""

def tap_skip_steps_of(
    xs: _Ints5,
    ws: _Ints5,
    ys: _Ints5,
    groups: int,
    stride: _Ints3,
    pad: _Ints3,
    dilation: _Ints3,
    mr: int,
) -> tuple[float, float]:
    """Multiply-adds per output value the forward's and the input gradient's ``_skip``
    paths leave out, with blocks of ``mr`` rows."""

def scratch_bytes(
    pass_name: str,
    path: int,
    xs: _Ints5,
    ws: _Ints5,
    ys: _Ints5,
    groups: int,
    stride: _Ints3,
    pad: _Ints3,
    dilation: _Ints3,
    double: bool,
) -> int:
    """Scratch bytes per thread of one call of the pass on the path."""
