# Stub for convkern/conv.py: the public convolution functions.
# tests/test_config.py checks that these signatures match the implementation.

from typing import Literal, TypeVar

import numpy as np
from numpy.typing import NDArray

_F = TypeVar("_F", np.float32, np.float64)

_IntOrTuple = int | tuple[int, ...]
_Padding = (
    int
    | tuple[int, ...]
    | tuple[tuple[int, int], ...]
    | Literal["valid", "same", "full"]
)
_Shape = tuple[int, ...]

def conv_forward(
    x: NDArray[_F],
    weight: NDArray[_F],
    bias: NDArray[_F] | None = None,
    *,
    stride: _IntOrTuple = 1,
    padding: _Padding = 0,
    dilation: _IntOrTuple = 1,
    groups: int = 1,
    out: NDArray[_F] | None = None,
) -> NDArray[_F]: ...
def conv_backward_input(
    grad_y: NDArray[_F],
    weight: NDArray[_F],
    x_shape: _Shape,
    *,
    stride: _IntOrTuple = 1,
    padding: _Padding = 0,
    dilation: _IntOrTuple = 1,
    groups: int = 1,
    out: NDArray[_F] | None = None,
) -> NDArray[_F]: ...
def conv_backward_weight(
    x: NDArray[_F],
    grad_y: NDArray[_F],
    weight_shape: _Shape,
    *,
    stride: _IntOrTuple = 1,
    padding: _Padding = 0,
    dilation: _IntOrTuple = 1,
    groups: int = 1,
    out: NDArray[_F] | None = None,
) -> NDArray[_F]: ...
def conv_backward_bias(
    grad_y: NDArray[_F],
    *,
    untied: bool = False,
    out: NDArray[_F] | None = None,
) -> NDArray[_F]: ...
