from typing import Any, Literal

import numpy as np
from numpy.typing import DTypeLike, NDArray

_Float = NDArray[np.float32] | NDArray[np.float64]
_Int = int | tuple[int, ...]
_Padding = int | str | tuple[int, ...] | tuple[tuple[int, int], ...]
_Bias = Literal["tied", "untied"] | None

BIAS_MODES: tuple[_Bias, ...]
ACTIVATIONS: tuple[str | None, ...]

def spatial_dims(weight_ndim: int) -> int: ...
def conv_plan(
    x_shape: tuple[int, ...],
    weight_shape: tuple[int, ...],
    *,
    dtype: DTypeLike = ...,
    stride: _Int = 1,
    padding: _Padding = 0,
    dilation: _Int = 1,
    groups: int = 1,
    bias: _Bias = "tied",
) -> ConvPlan: ...
def bias_gradient(grad_y: _Float, untied: bool, out: _Float | None, given: Any) -> _Float: ...

class Geometry:
    d: int
    x_shape: tuple[int, ...]
    w_shape: tuple[int, ...]
    y_shape: tuple[int, ...]
    batched: bool
    def __init__(self, x_shape: tuple[int, ...], w_shape: tuple[int, ...], stride: _Int,
                 padding: _Padding, dilation: _Int, groups: int, x_name: str = ...) -> None: ...

class ConvPlan:
    x_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]
    y_shape: tuple[int, ...]
    dtype: np.dtype[Any]
    stride: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    groups: int
    bias: _Bias
    paths: dict[str, str]
    scratch_bytes: dict[str, int]
    isa: str
    def __init__(self, x_shape: tuple[int, ...], weight_shape: tuple[int, ...], *,
                 dtype: DTypeLike = ..., stride: _Int = 1, padding: _Padding = 0,
                 dilation: _Int = 1, groups: int = 1, bias: _Bias = "tied",
                 _x_name: str = ...) -> None: ...
    @property
    def num_threads(self) -> int: ...
    def valid_paths(self, pass_name: str) -> tuple[str, ...]: ...
    def force(self, **paths: str) -> ConvPlan: ...
    def forward(self, x: _Float, weight: _Float, bias: _Float | None = None, *,
                out: _Float | None = None, activation: str | None = None) -> _Float: ...
    def backward_input(self, grad_y: _Float, weight: _Float, *,
                       out: _Float | None = None) -> _Float: ...
    def backward_weight(self, x: _Float, grad_y: _Float, *,
                        out: _Float | None = None) -> _Float: ...
    def backward_weight_bias(self, x: _Float, grad_y: _Float, *, out: _Float | None = None,
                             bias_out: _Float | None = None) -> tuple[_Float, _Float]: ...
    def backward_bias(self, grad_y: _Float, *, out: _Float | None = None) -> _Float: ...
