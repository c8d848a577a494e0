"""Convolution: forward cross-correlation and its three gradients.

Shapes follow PyTorch: ``x`` is ``(N, C, *S)`` (or unbatched ``(C, *S)``), ``weight``
is ``(F, C // groups, *K)`` and the output is ``(N, F, *O)``, with ``d = len(K)`` in
1, 2, 3 spatial axes.  ``conv_forward`` equals ``torch.nn.functional.conv{d}d`` of the
zero-padded input (plus the untied bias where one is given).

Each function checks the kinds of its arrays, then runs the :class:`~convkern.plan.ConvPlan`
of its geometry, kept in a small cache keyed by the shapes, the dtype and the parameters
exactly as given: a repeated call neither validates the parameters nor plans again.
"""

from ._plan_cache import PlanCache, frozen
from ._validation import (
    boolean,
    check_out,
    float_array,
    nonzero_dims,
    same_dtype,
    shape_tuple,
)
from .plan import BIAS_MODES, ConvPlan, bias_gradient, spatial_dims

__all__ = [
    "conv_forward",
    "conv_backward_input",
    "conv_backward_weight",
    "conv_backward_bias",
]

_plans = PlanCache()


def _plan(x_shape, w_shape, dtype, stride, padding, dilation, groups, bias, x_name="x"):
    """The cached plan of a geometry; a new one is validated (raising on bad parameters)."""
    key = (tuple(x_shape), tuple(w_shape), dtype, bias, x_name,
           frozen(stride), frozen(padding), frozen(dilation), frozen(groups))
    return _plans.get(key, lambda: ConvPlan(
        x_shape, w_shape, dtype=dtype, stride=stride, padding=padding, dilation=dilation,
        groups=groups, bias=bias, _x_name=x_name))


def conv_forward(x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1, out=None):
    """Cross-correlate ``x`` with ``weight`` (a PyTorch ``conv{d}d``).

    Parameters
    ----------
    x : ndarray of shape (N, C, *S) or (C, *S)
        Input, float32 or float64; ``S`` has 1, 2 or 3 axes.
    weight : ndarray of shape (F, C // groups, *K)
        Filters, same dtype as ``x``.
    bias : None or ndarray of shape (F,) or (F, *O)
        One bias per filter, or an untied bias per filter and output position.
    stride, dilation : int or tuple of d ints
        Positive.
    padding : int, tuple of d ints, tuple of d (before, after) pairs, 'valid', 'same' or 'full'
        Zero padding.  'same' gives ``ceil(S / stride)`` outputs (the odd padding goes
        after); 'full' pads ``(K - 1) * dilation`` on both sides.
    groups : int
        Divides both C and F.
    out : ndarray of shape (N, F, *O), optional
        Preallocated C-contiguous output to fill.

    Returns
    -------
    y : ndarray of shape (N, F, *O) or (F, *O)
        ``O = floor((S + before + after - dilation * (K - 1) - 1) / stride) + 1``.
    """
    given = (x, weight, bias)
    weight = float_array("weight", weight)
    x = float_array("x", x)
    bias = None if bias is None else float_array("bias", bias)
    if x.dtype != weight.dtype or (bias is not None and bias.dtype != x.dtype):
        same_dtype(x=x, weight=weight, bias=bias)
    d = spatial_dims(weight.ndim)
    mode = None if bias is None else "tied" if bias.shape == weight.shape[:1] else "untied"
    plan = _plan(x.shape, weight.shape, x.dtype, stride, padding, dilation, groups, mode)
    untied_shape = plan.y_shape[-(d + 1):]
    if mode == "untied" and bias.shape != untied_shape:
        raise ValueError(
            f"bias must have shape ({weight.shape[0]},) or {untied_shape} (untied), "
            f"got {bias.shape}"
        )
    # the plan's own checks would repeat these: its key holds the shapes and the dtype
    y = check_out(out, plan.y_shape, x.dtype, given + (x, weight, bias))
    return plan._forward(x, weight, bias, BIAS_MODES.index(mode), 0, y)


def conv_backward_input(grad_y, weight, x_shape, *, stride=1, padding=0, dilation=1, groups=1,
                        out=None):
    """Gradient of :func:`conv_forward` with respect to its input.

    Parameters
    ----------
    grad_y : ndarray of shape (N, F, *O) or (F, *O)
        Gradient of the loss with respect to the forward output.
    weight : ndarray of shape (F, C // groups, *K)
    x_shape : tuple of int
        Shape of the forward input, ``(N, C, *S)`` or ``(C, *S)``.
    stride, padding, dilation, groups
        As given to :func:`conv_forward`.
    out : ndarray of shape x_shape, optional

    Returns
    -------
    grad_x : ndarray of shape x_shape
        Input positions no output window reaches get zero.
    """
    given = (grad_y, weight)
    weight = float_array("weight", weight)
    grad_y = float_array("grad_y", grad_y)
    if grad_y.dtype != weight.dtype:
        same_dtype(grad_y=grad_y, weight=weight)
    d = spatial_dims(weight.ndim)
    x_shape = shape_tuple("x_shape", x_shape, (d + 1, d + 2))
    plan = _plan(x_shape, weight.shape, weight.dtype, stride, padding, dilation, groups, None,
                 x_name="x_shape")
    _check_grad_y(grad_y, plan)
    gx = check_out(out, plan.x_shape, weight.dtype, given + (grad_y, weight))
    return plan._backward_input(grad_y, weight, gx)


def conv_backward_weight(x, grad_y, weight_shape, *, stride=1, padding=0, dilation=1, groups=1,
                         out=None):
    """Gradient of :func:`conv_forward` with respect to its weight.

    Parameters
    ----------
    x : ndarray of shape (N, C, *S) or (C, *S)
        The forward input.
    grad_y : ndarray of shape (N, F, *O) or (F, *O)
        Gradient of the loss with respect to the forward output.
    weight_shape : tuple of int
        ``(F, C // groups, *K)``.
    stride, padding, dilation, groups
        As given to :func:`conv_forward`.
    out : ndarray of shape weight_shape, optional

    Returns
    -------
    grad_w : ndarray of shape weight_shape
        Summed over the batch in a fixed order (the same bits for any thread count).
    """
    given = (x, grad_y)
    x = float_array("x", x)
    grad_y = float_array("grad_y", grad_y)
    if x.dtype != grad_y.dtype:
        same_dtype(x=x, grad_y=grad_y)
    weight_shape = shape_tuple("weight_shape", weight_shape, (3, 4, 5))
    plan = _plan(x.shape, weight_shape, x.dtype, stride, padding, dilation, groups, None)
    _check_grad_y(grad_y, plan)
    gw = check_out(out, weight_shape, x.dtype, given + (x, grad_y))
    plan._weight_gradient(x, grad_y, gw, plan._no_bias)
    return gw


def _check_grad_y(grad_y, plan):
    if grad_y.shape != plan.y_shape:
        raise ValueError(
            f"grad_y must have shape {plan.y_shape} (the forward output), got {grad_y.shape}"
        )


def conv_backward_bias(grad_y, *, untied=False, out=None):
    """Gradient of :func:`conv_forward` with respect to its bias.

    Parameters
    ----------
    grad_y : ndarray of shape (N, F, *O)
        Batched gradient of the loss with respect to the forward output (1 to 3
        spatial axes); add a leading axis for an unbatched call.
    untied : bool
        False: one bias per filter; True: one per filter and output position.
    out : ndarray of shape (F,) or (F, *O), optional

    Returns
    -------
    grad_b : ndarray of shape (F,) or (F, *O)
        Sums over the batch (and the positions) in double precision.
    """
    given = grad_y
    grad_y = float_array("grad_y", grad_y)
    untied = boolean("untied", untied)
    if grad_y.ndim not in (3, 4, 5):
        raise ValueError(f"grad_y must have 3, 4 or 5 dimensions (N, F, *O), got {grad_y.ndim}")
    nonzero_dims("grad_y", grad_y.shape[1:], "filter or spatial")
    return bias_gradient(grad_y, bool(untied), out, given)
