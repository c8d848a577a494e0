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

def kernel_info() -> dict[str, Any]:
    """Return the selected micro-kernels: {"isa": name, "float32": {...}, "float64": {...}}."""

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
    num_threads: int,
) -> None: ...
def conv_backward_bias(grad_y: _Float, out: _Float, untied: bool, num_threads: int) -> None: ...
