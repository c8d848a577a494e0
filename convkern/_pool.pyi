# Stub for the compiled module built from src/_pool.pyx.
#
# Internal kernels behind convkern/pool.py: they fill preallocated, validated outputs.

import numpy as np
from numpy.typing import NDArray

_Float = NDArray[np.float32] | NDArray[np.float64]
_Ints3 = tuple[int, int, int]

def kernel_isa() -> str:
    """The instruction-set level of the vectorised rows ('scalar' without vector extensions)."""

def maxpool_forward(
    x: _Float,
    out: _Float,
    indices: NDArray[np.int64],
    kernel: _Ints3,
    stride: _Ints3,
    pad: _Ints3,
    dilation: _Ints3,
    num_threads: int,
) -> None: ...
def maxpool_backward(
    grad_y: _Float,
    indices: NDArray[np.int64],
    out: _Float,
    num_threads: int,
    positive: _Float | None = None,
) -> int:
    """Scatter grad_y to out[plane, indices] (only where positive > 0, when given);
    return how many indices were out of range."""
