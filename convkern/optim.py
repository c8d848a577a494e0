"""Optimisers with PyTorch's update rules: SGD (momentum, weight decay) and Adam.

An optimiser reads ``model.params`` and ``model.grads`` on every ``step()`` and updates
the parameter arrays in place; its state is keyed by parameter name, so a parameter that
appears later (an untied bias fixed on the first call) is picked up. A step computes
in scratch arrays the optimiser keeps per parameter (the same operations, in the same
order, as the textbook expressions, so the same bits), so it allocates nothing after
the first step; SGD's step is one compiled pass over a parameter, its gradient and its
momentum buffer (src/_eltwise.pyx's sgd_update, the same roundings).

Hyper-parameters follow convkern's one rule: a wrong value, including one of the wrong
Python type (a string for a number), is a ValueError; only a model that is not a layer
is a TypeError.
"""

import math
import numbers

import numpy as np

from . import _eltwise
from ._validation import FLOAT_DTYPES
from ._work import ELTWISE_GRAIN, threads_for

__all__ = ["SGD", "Adam"]


def _fusable(param, grad, buf):
    """Whether sgd_update can update param in place: C-contiguous float arrays of one
    dtype (a parameter a user replaced by a strided view takes the NumPy expressions)."""
    return (type(param) is np.ndarray and param.dtype in FLOAT_DTYPES
            and param.flags.c_contiguous and param.flags.writeable
            and all(type(a) is np.ndarray and a.dtype == param.dtype and a.flags.c_contiguous
                    and a.shape == param.shape for a in (grad, buf) if a is not None))


def _non_negative(name, value):
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    if not value >= 0 or math.isinf(value):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return float(value)


class _Optimizer:
    """Shared parts: the model check, ``zero_grad`` and the loop over parameters."""

    def __init__(self, model, lr, weight_decay):
        if not (hasattr(model, "params") and hasattr(model, "grads")):
            raise TypeError(
                "model must be a convkern layer (with params and grads), "
                f"got {type(model).__name__}"
            )
        self.model = model
        self.lr = _non_negative("lr", lr)
        self.weight_decay = _non_negative("weight_decay", weight_decay)
        self.state = {}
        self._scratch = {}

    def zero_grad(self):
        """Set every gradient of the model to zero, in place."""
        for grad in self.model.grads.values():
            grad.fill(0)

    def step(self):
        """Update every parameter of the model in place from its gradient."""
        grads = self.model.grads
        for name, param in self.model.params.items():
            grad = grads[name]
            if self.weight_decay:
                # grad + weight_decay * param, in the first scratch array.
                decayed = np.multiply(param, self.weight_decay, out=self._work(name, param, 0))
                grad = np.add(grad, decayed, out=decayed)
            self._update(name, param, grad)

    def _work(self, name, param, i):
        """Scratch array ``i`` of parameter ``name`` (param's shape and dtype)."""
        arrays = self._scratch.setdefault(name, [])
        while len(arrays) <= i:
            arrays.append(np.empty_like(param))
        if arrays[i].shape != param.shape or arrays[i].dtype != param.dtype:
            arrays[i] = np.empty_like(param)
        return arrays[i]

    def _update(self, name, param, grad):
        raise NotImplementedError


class SGD(_Optimizer):
    """Stochastic gradient descent with momentum and L2 weight decay (as ``torch.optim.SGD``).

    ``g = grad + weight_decay * p``; with momentum ``b = momentum * b + g`` (``b = g`` on
    the first step) and ``g = b``; then ``p -= lr * g``.

    Parameters
    ----------
    model : Layer
        Any layer or Sequential; its ``params`` are updated.
    lr : float
        Learning rate.
    momentum : float, default 0.0
    weight_decay : float, default 0.0
    """

    def __init__(self, model, lr, momentum=0.0, weight_decay=0.0):
        super().__init__(model, lr, weight_decay)
        self.momentum = _non_negative("momentum", momentum)

    def _update(self, name, param, grad):
        buf = self.state.get(name) if self.momentum else None
        if _fusable(param, grad, buf):
            # one compiled pass over param, grad and buf (the expressions below, their
            # roundings): 3.3 MB of parameters took 1.7 ms in NumPy's four passes
            mode = 0 if not self.momentum else 1 if buf is None else 2
            if mode == 1:
                buf = self.state[name] = np.empty_like(param)
            _eltwise.sgd_update(param.reshape(-1), grad.reshape(-1),
                                (buf if mode else param[:0]).reshape(-1), self.lr,
                                self.momentum, mode, threads_for(param.size, ELTWISE_GRAIN))
            return
        if self.momentum:
            if buf is None:
                buf = self.state[name] = grad.copy()
            else:
                buf *= self.momentum
                buf += grad
            grad = buf
        # param -= lr * grad; grad may be the first scratch array (weight decay).
        param -= np.multiply(grad, self.lr, out=self._work(name, param, 0))

    def __repr__(self):
        return (
            f"SGD(lr={self.lr}, momentum={self.momentum}, weight_decay={self.weight_decay})"
        )


class Adam(_Optimizer):
    """Adam with L2 weight decay added to the gradient (as ``torch.optim.Adam``).

    ``g = grad + weight_decay * p``; ``m = b1 m + (1 - b1) g``; ``v = b2 v + (1 - b2) g^2``;
    ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``.

    Parameters
    ----------
    model : Layer
        Any layer or Sequential; its ``params`` are updated.
    lr : float, default 1e-3
    betas : tuple of 2 floats in [0, 1), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay : float, default 0.0
    """

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(model, lr, weight_decay)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair of floats, got {betas!r}")
        self.betas = tuple(_non_negative("betas", beta) for beta in betas)
        if any(beta >= 1 for beta in self.betas):
            raise ValueError(f"betas must be in [0, 1), got {betas!r}")
        self.eps = _non_negative("eps", eps)

    def _update(self, name, param, grad):
        beta1, beta2 = self.betas
        state = self.state.get(name)
        if state is None:
            state = {"step": 0, "m": np.zeros_like(param), "v": np.zeros_like(param)}
            self.state[name] = state
        state["step"] += 1
        m, v, t = state["m"], state["v"], state["step"]
        # Scratch 1 and 2; scratch 0 may hold grad (weight decay) until v is updated.
        s1, s2 = self._work(name, param, 1), self._work(name, param, 2)
        # m += (1 - beta1) * (grad - m)
        m += np.multiply(np.subtract(grad, m, out=s1), 1 - beta1, out=s1)
        # v = beta2 * v + (1 - beta2) * grad * grad
        v *= beta2
        v += np.multiply(np.multiply(grad, 1 - beta2, out=s1), grad, out=s1)
        # denom = sqrt(v) / sqrt(1 - beta2^t) + eps
        denom = np.sqrt(v, out=s1)
        denom /= math.sqrt(1 - beta2**t)
        denom += self.eps
        # param -= lr / (1 - beta1^t) * m / denom
        step = np.multiply(m, self.lr / (1 - beta1**t), out=s2)
        param -= np.divide(step, denom, out=s2)

    def __repr__(self):
        return (
            f"Adam(lr={self.lr}, betas={self.betas}, eps={self.eps}, "
            f"weight_decay={self.weight_decay})"
        )
