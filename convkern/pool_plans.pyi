# Stub for convkern/pool_plans.py: max-pool plans.
# tests/test_config.py checks that these signatures match the implementation.

from typing import Literal, TypeVar

import numpy as np
from numpy.typing import DTypeLike, NDArray

_F = TypeVar("_F", np.float32, np.float64)

_IntOrTuple = int | tuple[int, ...]
_Padding = (
    int
    | tuple[int | tuple[int, int], ...]
    | Literal["valid", "same", "full"]
)

def pool_plan(
    x_shape: tuple[int, ...],
    kernel_size: _IntOrTuple,
    *,
    dtype: DTypeLike = ...,
    stride: _IntOrTuple | None = None,
    padding: _Padding = 0,
    dilation: _IntOrTuple = 1,
    ceil_mode: bool = False,
) -> PoolPlan: ...

class PoolPlan:
    x_shape: tuple[int, ...]
    y_shape: tuple[int, ...]
    dtype: np.dtype
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    ceil_mode: bool
    def __init__(
        self,
        x_shape: tuple[int, ...],
        kernel_size: _IntOrTuple,
        *,
        dtype: DTypeLike = ...,
        stride: _IntOrTuple | None = None,
        padding: _Padding = 0,
        dilation: _IntOrTuple = 1,
        ceil_mode: bool = False,
    ) -> None: ...
    @property
    def num_threads(self) -> int: ...
    def forward(
        self,
        x: NDArray[_F],
        *,
        out: tuple[NDArray[_F], NDArray[np.int64]] | None = None,
    ) -> tuple[NDArray[_F], NDArray[np.int64]]: ...
    def backward(
        self,
        grad_y: NDArray[_F],
        indices: NDArray[np.int64],
        *,
        out: NDArray[_F] | None = None,
    ) -> NDArray[_F]: ...

def scatter_to_argmax(
    grad_y: NDArray[_F],
    indices: NDArray[np.int64],
    planes: int,
    plane: int,
    gx: NDArray[_F],
    positive: NDArray[_F] | None = None,
) -> NDArray[_F]: ...
