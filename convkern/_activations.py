"""Activations for the layers: phi(z) in place, and the fused backward with the bias.

The forward ReLU and sigmoid are compiled loops (src/_eltwise.pyx), the forward tanh is
``np.tanh(x, out=out)``; all run in place without temporaries.

``activation_backward`` computes ``grad_z = grad_y * phi'(z)`` from the forward output
``y = phi(z)`` (ReLU: ``y > 0``, as PyTorch's zero gradient where ``z <= 0``; sigmoid:
``y (1 - y)``; tanh: ``1 - y^2``) and, in the same pass over ``grad_y``, the bias
gradient (the sums of ``grad_z`` that :func:`convkern.conv_backward_bias` gives, in the
same order and in double, so with the same bits).
"""

import math

import numpy as np

from . import _eltwise
from ._validation import check_out, choice, float_array, same_dtype
from ._work import ELTWISE_GRAIN, threads_for

NAMES = _eltwise.ACTIVATIONS
BIAS_MODES = {None: 0, "tied": 1, "untied": 2}
# Stand-ins for a bias gradient that is not wanted (the kernel then leaves it alone).
_NO_BIAS = {dt: np.empty(0, dt) for dt in (np.dtype(np.float32), np.dtype(np.float64))}


def _check_in_place(out, *inputs):
    """An ``out`` that is the (C-contiguous) input itself: writable, no other overlap."""
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    if any(np.may_share_memory(out, a) for a in inputs):
        raise ValueError("out shares memory with an input")


def activation_name(value):
    """Return ``value`` if it is None or an activation name, else raise ValueError."""
    return choice("activation", value, (None, *NAMES))


def activate_in_place(y, name):
    """Apply the activation ``name`` to ``y`` in place, without checks.

    For the layers' own outputs: ``y`` is a C-contiguous float32/float64 array the caller
    allocated, and ``name`` a validated activation name.
    """
    if name == "tanh":
        np.tanh(y, out=y)
    else:
        flat = y.reshape(-1)
        _eltwise.activation_forward(flat, flat, NAMES.index(name),
                                    threads_for(flat.size, ELTWISE_GRAIN))


def activation_forward(x, name, *, out=None):
    """Apply the activation ``name`` element-wise.

    Parameters
    ----------
    x : ndarray of any shape
        float32 or float64.
    name : {'relu', 'sigmoid', 'tanh'}
    out : ndarray of the shape and dtype of x, optional
        May be ``x`` itself (in place) when x is C-contiguous.

    Returns
    -------
    y : ndarray of the shape of x
    """
    given = x
    x = float_array("x", x)
    name = choice("activation", name, NAMES)
    if out is given and x is given:
        _check_in_place(out)
    else:
        out = check_out(out, x.shape, x.dtype, (given, x))
    if name == "tanh":
        # NumPy's tanh is vectorised for the CPU it runs on (AVX-512: 0.4 ms per million
        # float32, where the compiled loop over the C library's takes 20-40 ms).
        return np.tanh(x, out=out)
    _eltwise.activation_forward(x.reshape(-1), out.reshape(-1), NAMES.index(name),
                                threads_for(x.size, ELTWISE_GRAIN))
    return out


def activation_backward(grad_y, y, name, *, bias=None, out=None, bias_out=None):
    """Gradient through the activation ``name``, and the bias gradient in the same pass.

    Parameters
    ----------
    grad_y : ndarray of shape (N, F, *O)
        Gradient of the loss with respect to ``y``; ``O`` may be empty (a Dense layer).
    y : ndarray of the shape and dtype of grad_y
        The forward output ``phi(z)``.
    name : {'relu', 'sigmoid', 'tanh'}
    bias : {None, 'tied', 'untied'}
        Also return the bias gradient: one per filter ``(F,)`` (sums over N and O) or
        one per filter and position ``(F, *O)`` (sums over N).
    out : ndarray of the shape and dtype of grad_y, optional
        Receives ``grad_z``; may be ``grad_y`` itself when it is C-contiguous.
    bias_out : ndarray of shape (F,) or (F, *O), optional

    Returns
    -------
    grad_z : ndarray of the shape of grad_y
    grad_b : ndarray of shape (F,) or (F, *O), or None when ``bias`` is None
    """
    given = (grad_y, y)
    grad_y = float_array("grad_y", grad_y)
    y = float_array("y", y)
    same_dtype(grad_y=grad_y, y=y)
    kind = NAMES.index(choice("activation", name, NAMES))
    mode = BIAS_MODES[choice("bias", bias, tuple(BIAS_MODES))]
    if grad_y.ndim < 2:
        raise ValueError(f"grad_y must have shape (N, F, ...), got {grad_y.shape}")
    if y.shape != grad_y.shape:
        raise ValueError(f"y must have grad_y's shape {grad_y.shape}, got {y.shape}")
    n, f = grad_y.shape[:2]
    p = math.prod(grad_y.shape[2:])
    if out is given[0] and grad_y is given[0]:
        _check_in_place(out, y)
    else:
        out = check_out(out, grad_y.shape, grad_y.dtype, given + (grad_y, y))
    if mode:
        shape = (f,) if mode == 1 else grad_y.shape[1:]
        bias_out = check_out(bias_out, shape, grad_y.dtype, given + (grad_y, y, out))
        flat_bias = bias_out.reshape(-1)
    else:
        flat_bias = _NO_BIAS[grad_y.dtype]
    _eltwise.activation_backward(grad_y.reshape(n, f, p), y.reshape(n, f, p),
                                 out.reshape(n, f, p), kind, flat_bias, mode,
                                 threads_for(grad_y.size, ELTWISE_GRAIN))
    return out, (bias_out if mode else None)
