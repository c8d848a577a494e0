# Stub for convkern/pool.py: the public max-pool functions.
# tests/test_config.py checks that these signatures match the implementation.

import numpy as np
from numpy.typing import NDArray

from .pool_plans import _F, _IntOrTuple, _Padding

def maxpool_forward(
    x: NDArray[_F],
    kernel_size: _IntOrTuple,
    *,
    stride: _IntOrTuple | None = None,
    padding: _Padding = 0,
    dilation: _IntOrTuple = 1,
    ceil_mode: bool = False,
    out: tuple[NDArray[_F], NDArray[np.int64]] | None = None,
) -> tuple[NDArray[_F], NDArray[np.int64]]: ...
def maxpool_backward(
    grad_y: NDArray[_F],
    indices: NDArray[np.int64],
    x_shape: tuple[int, ...],
    *,
    spatial_dims: int | None = None,
    out: NDArray[_F] | None = None,
) -> NDArray[_F]: ...
