# Stub for convkern/dask.py: conv_forward, maxpool_forward and predict on dask arrays.
# tests/test_dask.py checks that these signatures match the implementation.

from typing import Literal

import dask.array as da
import numpy as np
from numpy.typing import NDArray

from .layers import Layer

_IntOrTuple = int | tuple[int, ...]
_Padding = _IntOrTuple | tuple[tuple[int, int], ...] | Literal["valid", "same", "full"]

def conv_forward(
    x: da.Array,
    weight: NDArray[np.float32] | NDArray[np.float64],
    bias: NDArray[np.float32] | NDArray[np.float64] | None = None,
    *,
    stride: _IntOrTuple = 1,
    padding: _Padding = 0,
    dilation: _IntOrTuple = 1,
    groups: int = 1,
) -> da.Array: ...
def maxpool_forward(
    x: da.Array,
    kernel_size: _IntOrTuple,
    *,
    stride: _IntOrTuple | None = None,
    padding: _IntOrTuple = 0,
    dilation: _IntOrTuple = 1,
    ceil_mode: bool = False,
) -> da.Array: ...
def predict(model: Layer, x: da.Array) -> da.Array: ...
