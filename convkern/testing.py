"""Gradient checks for users: ``gradcheck`` (central differences) and ``compare_with_torch``.

``gradcheck`` compares the analytic gradient of a convkern function, layer or Sequential
with central differences, in float64, for the scalar loss ``sum(g * f(x))`` with a seeded
random upstream gradient ``g``. A layer's analytic gradient is its own ``backward``; a
function's comes from a registry of vector-Jacobian products (VJPs) built from the
gradient functions:

==========================  ==================================================
function                    differentiable positional arguments
==========================  ==================================================
``conv_forward``            ``x``, ``weight``, ``bias`` (tied or untied)
``conv_backward_input``     ``grad_y``, ``weight``
``conv_backward_weight``    ``x``, ``grad_y``
``conv_backward_bias``      ``grad_y``
``maxpool_forward``         ``x`` (the loss uses the values, not the indices)
``conv_transpose``          ``x``, ``weight``, ``bias``
==========================  ==================================================

:func:`register_vjp` adds a function. The error of one argument or parameter is
``max|analytic - numeric| / max(max|analytic|, max|numeric|)`` (0 when both are zero):
relative to the largest entry, so entries near zero, where differences are all noise, do
not dominate. :class:`GradcheckError` subclasses ``AssertionError``, so a failed check
reads as a failed assertion in pytest and unittest.
"""

import copy
import functools
import inspect

import numpy as np

from .conv import conv_backward_bias, conv_backward_input, conv_backward_weight, conv_forward
from .conv_transpose import _backward_input as _transpose_backward_input
from .conv_transpose import _backward_weight as _transpose_backward_weight
from .conv_transpose import conv_transpose
from .interop import named_grads, to_torch
from .layers import Layer, Sequential
from .pool import maxpool_backward, maxpool_forward

__all__ = ["gradcheck", "compare_with_torch", "register_vjp", "GradcheckError"]

# compare_with_torch: largest allowed error (as defined above) by dtype; the same bounds
# as the test suite's PyTorch parity tests.
TORCH_TOLERANCE = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}


class GradcheckError(AssertionError):
    """A gradient (or, in ``compare_with_torch``, an output) differs beyond tolerance.

    Attributes
    ----------
    errors : dict of str to float
        The error of every checked input and parameter, as returned on success.
    failed : list of str
        The names over tolerance, in checking order.
    """

    def __init__(self, message, errors, failed):
        super().__init__(message)
        self.errors = errors
        self.failed = failed


# ---------------------------------------------------------------------------
# The VJP registry: fn -> (output picker, vjp).


_RULES = {}


def register_vjp(fn, vjp, output=None):
    """Teach :func:`gradcheck` the analytic backward of a function.

    Parameters
    ----------
    fn : callable
        The function, as the user passes it to ``gradcheck``.
    vjp : callable
        ``vjp(g, result, *args, **kwargs) -> tuple``: given the upstream gradient ``g``
        (shaped like the differentiated output), ``fn``'s return value and its
        arguments, one gradient per positional argument (None for arguments that are not
        differentiable).
    output : callable, optional
        Picks the differentiated array from ``fn``'s return value (for example the
        values of ``(values, indices)``); default: the return value itself.
    """
    _RULES[fn] = (output or (lambda result: result), vjp)


def _conv_forward_vjp(g, y, x, weight, bias=None, **geometry):
    grad_bias = None
    if bias is not None:
        batched = g if x.ndim == weight.ndim else g[None]
        grad_bias = conv_backward_bias(batched, untied=bias.ndim > 1)
    return (
        conv_backward_input(g, weight, x.shape, **geometry),
        conv_backward_weight(x, g, weight.shape, **geometry),
        grad_bias,
    )


# conv_backward_input and conv_backward_weight are the partial derivatives of the
# bilinear form <conv_forward(x, w), grad_y>, so their VJPs are its other derivatives.
def _conv_backward_input_vjp(g, grad_x, grad_y, weight, x_shape, **geometry):
    return (
        conv_forward(g, weight, **geometry),
        conv_backward_weight(g, grad_y, weight.shape, **geometry),
        None,
    )


def _conv_backward_weight_vjp(g, grad_w, x, grad_y, weight_shape, **geometry):
    return (
        conv_backward_input(grad_y, g, x.shape, **geometry),
        conv_forward(x, g, **geometry),
        None,
    )


def _conv_backward_bias_vjp(g, grad_b, grad_y, untied=False):
    shape = (1, *g.shape) if untied else (1, g.shape[0]) + (1,) * (grad_y.ndim - 2)
    return (np.broadcast_to(g.reshape(shape), grad_y.shape).copy(),)


def _maxpool_forward_vjp(g, result, x, kernel_size, **options):
    d = len(kernel_size) if isinstance(kernel_size, (tuple, list)) else x.ndim - 2
    return maxpool_backward(g, result[1], x.shape, spatial_dims=d), None


register_vjp(conv_forward, _conv_forward_vjp)
register_vjp(conv_backward_input, _conv_backward_input_vjp)
register_vjp(conv_backward_weight, _conv_backward_weight_vjp)
register_vjp(conv_backward_bias, _conv_backward_bias_vjp)
register_vjp(maxpool_forward, _maxpool_forward_vjp, output=lambda result: result[0])


def _conv_transpose_vjp(g, y, x, weight, bias=None, *, stride=1, padding=0, output_padding=0,
                        dilation=1, groups=1):
    # the transposed convolution is the input gradient of a convolution: its gradients
    # are that convolution's forward and weight gradient (see conv_transpose.py)
    geometry = dict(stride=stride, padding=padding, output_padding=output_padding,
                    dilation=dilation, groups=groups)
    grad_bias = None
    if bias is not None:
        batched = g if x.ndim == weight.ndim else g[None]
        grad_bias = conv_backward_bias(batched)
    return (
        _transpose_backward_input(g, weight, x.shape, **geometry),
        _transpose_backward_weight(x, g, weight.shape, **geometry),
        grad_bias,
    )


register_vjp(conv_transpose, _conv_transpose_vjp)


# ---------------------------------------------------------------------------
# Central differences.


def _positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {value}")


def _error(analytic, numeric):
    """``max|a - n| / max(max|a|, max|n|)``, 0 when both are zero."""
    scale = max(float(np.max(np.abs(analytic), initial=0)),
                float(np.max(np.abs(numeric), initial=0)))
    diff = float(np.max(np.abs(analytic - numeric), initial=0))
    return 0.0 if scale == 0 else diff / scale


def _numeric(loss, array, eps):
    """Central differences of ``loss()`` with respect to ``array``, perturbed in place."""
    grad = np.empty(array.shape)
    flat, out = array.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + eps
        plus = loss()
        flat[i] = saved - eps
        minus = loss()
        flat[i] = saved
        out[i] = (plus - minus) / (2 * eps)
    return grad


def _check(analytic, numeric, rtol):
    """Return the error of every name, or raise GradcheckError naming those over rtol."""
    errors, failed = {}, []
    for name in analytic:
        if analytic[name] is None or analytic[name].shape != numeric[name].shape:
            got = None if analytic[name] is None else analytic[name].shape
            raise GradcheckError(f"gradcheck: the analytic gradient of {name!r} has shape "
                                 f"{got}, expected {numeric[name].shape}", errors, [name])
        errors[name] = _error(analytic[name], numeric[name])
        if not errors[name] <= rtol:  # NaN fails too
            failed.append(name)
    if failed:
        worst = ", ".join(f"{name!r} (error {errors[name]:.3g})" for name in failed)
        raise GradcheckError(f"gradcheck failed for {worst}: the analytic gradient differs "
                             f"from central differences by more than rtol={rtol:g}",
                             errors, failed)
    return errors


def _float64(value):
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return value.astype(np.float64)
    return value


def _as_float64_layer(layer):
    """A float64 copy of a layer (every sub-layer's params, grads and dtype), training."""
    layer = copy.deepcopy(layer)
    stack = [layer]
    while stack:
        sub = stack.pop()
        if isinstance(sub, Sequential):
            stack.extend(sub.layers)
            continue
        if hasattr(sub, "dtype"):
            sub.dtype = np.dtype(np.float64)
        sub.params = {k: v.astype(np.float64) for k, v in sub.params.items()}
        sub.grads = {k: np.zeros_like(v) for k, v in sub.params.items()}
    layer.train()
    layer.needs_input_grad = True
    return layer


def _check_layer(layer, inputs, eps, rtol, rng):
    if len(inputs) != 1 or not isinstance(inputs[0], np.ndarray) or inputs[0].dtype.kind != "f":
        raise TypeError("gradcheck of a layer takes one float input array")
    layer = _as_float64_layer(layer)
    x = _float64(inputs[0])
    g = rng.standard_normal(layer(x).shape)
    analytic = {"x": layer.backward(g), **layer.grads}

    def loss():
        return float(np.sum(g * layer(x)))

    numeric = {"x": _numeric(loss, x, eps)}
    numeric.update((name, _numeric(loss, p, eps)) for name, p in layer.params.items())
    return _check(analytic, numeric, rtol)


def _check_function(fn, inputs, kwargs, eps, rtol, rng):
    if isinstance(fn, functools.partial):
        kwargs = {**fn.keywords, **kwargs}
        inputs = fn.args + tuple(inputs)
        fn = fn.func
    if fn not in _RULES:
        names = ", ".join(f.__name__ for f in _RULES)
        raise TypeError(f"gradcheck has no analytic backward for {fn!r}; it knows {names} "
                        "(see convkern.testing.register_vjp) and every convkern Layer")
    output, vjp = _RULES[fn]
    args = [_float64(a) for a in inputs]
    floats = [i for i, a in enumerate(args) if isinstance(a, np.ndarray) and a.dtype.kind == "f"]
    if not floats:
        raise ValueError("gradcheck: no float array among the positional inputs")
    result = fn(*args, **kwargs)
    g = rng.standard_normal(output(result).shape)
    grads = vjp(g, result, *args, **kwargs)
    # Float arrays the function is not differentiated in (the VJP gives None) are skipped.
    checked = [i for i in floats if i < len(grads) and grads[i] is not None]
    params = list(inspect.signature(fn).parameters)
    name = {i: params[i] if i < len(params) else f"input {i}" for i in checked}

    def loss():
        return float(np.sum(g * output(fn(*args, **kwargs))))

    analytic = {name[i]: grads[i] for i in checked}
    numeric = {name[i]: _numeric(loss, args[i], eps) for i in checked}
    return _check(analytic, numeric, rtol)


def gradcheck(fn_or_layer, *inputs, eps=1e-6, rtol=1e-5, seed=0, kwargs=None):
    """Check an analytic gradient against central differences in float64.

    The loss is ``sum(g * f(*inputs))`` with ``g`` drawn from a standard normal
    (seeded); each element of each input and parameter is moved by ``+-eps``, so the
    cost is two forward passes per element: use small arrays. Inputs near a kink (a
    ReLU at 0, tied max-pool candidates) give false alarms; random inputs avoid them.

    Parameters
    ----------
    fn_or_layer : callable or Layer
        A convkern Layer or Sequential (its ``backward`` is checked for the input and
        for every parameter in ``params``; the layer itself is not modified, a float64
        copy is checked), or a function known to :func:`register_vjp` (bare or in a
        ``functools.partial``).
    *inputs
        A layer's one input array; a function's positional arguments, of which the
        float arrays are checked (others, such as ``kernel_size`` or ``None``, are
        passed as they are). float32 arrays are checked in float64.
    eps : float, default 1e-6
        Step of the central differences.
    rtol : float, default 1e-5
        Largest accepted error (see the module docstring).
    seed : int, default 0
        Seed of the upstream gradient ``g``.
    kwargs : dict, optional
        Keyword arguments of the function (``stride``, ``padding``, ...).

    Returns
    -------
    dict of str to float
        The error of each checked input (named as in the function's signature; ``"x"``
        for a layer's input) and parameter (named as in ``params``: ``"weight"``,
        ``"0.bias"``).

    Raises
    ------
    GradcheckError
        Naming every input or parameter whose error exceeds ``rtol``.
    TypeError
        For a function with no registered backward.
    ValueError
        If ``eps`` or ``rtol`` is not positive, or no positional input is a float array.
    """
    _positive("eps", eps)
    _positive("rtol", rtol)
    rng = np.random.default_rng(seed)
    if isinstance(fn_or_layer, Layer):
        if kwargs:
            raise TypeError("gradcheck of a layer takes no kwargs")
        return _check_layer(fn_or_layer, inputs, eps, rtol, rng)
    return _check_function(fn_or_layer, inputs, dict(kwargs or {}), eps, rtol, rng)


# ---------------------------------------------------------------------------
# Against PyTorch.


def compare_with_torch(model, x, *, tol=None, seed=0):
    """Compare a model's forward and every gradient with ``to_torch(model)``.

    Both get the same input ``x`` and the same seeded standard-normal upstream gradient;
    a copy of ``model`` is used, so its gradients stay as they were.

    Parameters
    ----------
    model : Layer
        A Sequential (or one layer, wrapped in one) that :func:`convkern.to_torch`
        converts.
    x : ndarray
        Input, in the model's dtype.
    tol : float, optional
        Largest accepted error (``max|ours - torch| / max(max|ours|, max|torch|)``);
        default 1e-4 for float32 and 1e-10 for float64.
    seed : int, default 0

    Returns
    -------
    dict of str to float
        The errors of ``"output"``, ``"x"`` (the input gradient) and each parameter
        gradient, keyed as ``model.params``.

    Raises
    ------
    ImportError
        If torch is not importable.
    GradcheckError
        Naming every array over tolerance.
    """
    if tol is not None:
        _positive("tol", tol)
    try:
        import torch
    except ImportError as exc:
        raise ImportError("compare_with_torch needs PyTorch (pip install torch)") from exc
    if not isinstance(model, Layer):
        raise TypeError(f"model must be a convkern Layer, got {type(model).__name__}")
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
        raise TypeError("x must be a float32 or float64 ndarray")
    ours = copy.deepcopy(model if isinstance(model, Sequential) else Sequential(model))
    ours.train()
    ours.zero_grad()
    ours.needs_input_grad = True
    theirs = to_torch(ours)

    y = ours(x)
    g = np.random.default_rng(seed).standard_normal(y.shape).astype(y.dtype)
    results = {"output": y, "x": ours.backward(g)}
    x_torch = torch.from_numpy(x.copy()).requires_grad_(True)
    y_torch = theirs(x_torch)
    y_torch.backward(torch.from_numpy(g))
    expected = {"output": y_torch.detach().numpy(), "x": x_torch.grad.numpy()}

    # Parameter gradients: pair convkern's keys with torch's through the state-dict keys.
    torch_grads = {name: p.grad.numpy() for name, p in theirs.named_parameters()}
    # Both walk the layers and their params in order, so the keys pair up one to one.
    for ck_key, torch_key in zip(ours.grads, named_grads(ours)):
        results[ck_key] = ours.grads[ck_key]
        expected[ck_key] = torch_grads[torch_key]

    bound = TORCH_TOLERANCE[x.dtype] if tol is None else tol
    errors = {name: _error(results[name].astype(np.float64), expected[name].astype(np.float64))
              for name in results}
    failed = [name for name in errors if not errors[name] <= bound]
    if failed:
        worst = ", ".join(f"{name!r} (error {errors[name]:.3g})" for name in failed)
        raise GradcheckError(f"compare_with_torch: {worst} differ from PyTorch by more than "
                             f"{bound:g}", errors, failed)
    return errors
