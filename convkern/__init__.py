"""convkern: compiled Cython convolution and max-pool kernels for NumPy networks."""

from . import (
    _isa,  # noqa: F401  (refuses a bad CONVKERN_ISA before anything runs)
    testing,
)
from ._config import openmp_enabled, show_config
from ._threads import get_num_threads, set_num_threads
from ._version import __version__
from .conv import conv_backward_bias, conv_backward_input, conv_backward_weight, conv_forward
from .conv_transpose import conv_transpose
from .interop import from_torch, to_torch
from .layers import Conv, ConvTranspose, Dense, Flatten, Layer, MaxPool, ReLU, Sequential, Sigmoid, Tanh
from .losses import MSELoss, SoftmaxCrossEntropyLoss
from .optim import SGD, Adam
from .plan import ConvPlan, conv_plan
from .pool import maxpool_backward, maxpool_forward
from .pool_plans import PoolPlan, pool_plan
from .serialization import load_model, save_model

__all__ = [
    "__version__",
    "conv_forward",
    "conv_backward_input",
    "conv_backward_weight",
    "conv_backward_bias",
    "conv_plan",
    "ConvPlan",
    "conv_transpose",
    "maxpool_forward",
    "maxpool_backward",
    "pool_plan",
    "PoolPlan",
    "set_num_threads",
    "get_num_threads",
    "show_config",
    "openmp_enabled",
    "Layer",
    "Conv",
    "ConvTranspose",
    "MaxPool",
    "Dense",
    "Flatten",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "Sequential",
    "MSELoss",
    "SoftmaxCrossEntropyLoss",
    "SGD",
    "Adam",
    "save_model",
    "load_model",
    "from_torch",
    "to_torch",
    "testing",
]
