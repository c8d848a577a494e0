# Stub for the compiled module built from src/_eltwise.pyx.
#
# Internal kernels behind convkern/_activations.py: they fill preallocated, validated
# outputs.  ``kind`` indexes ACTIVATIONS; ``bias_mode`` is 0 (none), 1 (tied, (F,)) or
# 2 (untied, (F * P,)).

import numpy as np
from numpy.typing import NDArray

_Float = NDArray[np.float32] | NDArray[np.float64]

ACTIVATIONS: tuple[str, ...]

def activation_forward(x: _Float, out: _Float, kind: int, num_threads: int) -> None:
    """Fill out (1-D, may be x) with phi(x) for relu or sigmoid (tanh is np.tanh)."""

def activation_backward(
    grad_y: _Float,
    y: _Float,
    out: _Float,
    kind: int,
    bias_out: _Float,
    bias_mode: int,
    num_threads: int,
) -> None:
    """Fill out (N, F, P) with grad_y * phi'(z) through y, and bias_out with its sums."""

def sgd_update(
    param: _Float,
    grad: _Float,
    buf: _Float,
    lr: float,
    momentum: float,
    mode: int,
    num_threads: int,
) -> None:
    """param -= v * lr with v = grad (mode 0), buf = grad (1) or buf * momentum + grad (2)."""
