# Stub for convkern/conv_transpose.py: the public transposed convolution.
# tests/test_config.py checks that these signatures match the implementation.

from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)

_IntOrTuple = int | tuple[int, ...]

def conv_transpose(
    x: NDArray[_F],
    weight: NDArray[_F],
    bias: NDArray[_F] | None = None,
    *,
    stride: _IntOrTuple = 1,
    padding: _IntOrTuple = 0,
    output_padding: _IntOrTuple = 0,
    dilation: _IntOrTuple = 1,
    groups: int = 1,
    out: NDArray[_F] | None = None,
) -> NDArray[_F]: ...
