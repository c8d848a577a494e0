"""convkern: compiled Cython convolution and max-pool kernels for NumPy networks."""

from ._version import __version__
from ._threads import get_num_threads, set_num_threads
from .conv import conv_backward_bias, conv_backward_input, conv_backward_weight, conv_forward
from .plan import ConvPlan, conv_plan
from .conv_transpose import conv_transpose
from .pool import maxpool_backward, maxpool_forward
from .pool_plan import PoolPlan, pool_plan
from ._config import openmp_enabled, show_config
from .layers import Conv, Dense, Flatten, Layer, MaxPool, ReLU, Sequential, Sigmoid, Tanh
from .layers import ConvTranspose
from .losses import MSELoss, SoftmaxCrossEntropyLoss
from .optim import SGD, Adam
from .serialization import load_model, save_model
from .interop import from_torch, to_torch
from . import testing

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
