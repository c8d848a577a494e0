"""Optimisers with PyTorch's update rules: SGD (momentum, weight decay) and Adam.

An optimiser reads ``model.params`` and ``model.grads`` on every ``step()`` and updates
the parameter arrays in place; its state is keyed by parameter name, so a parameter that
appears later (an untied bias fixed on the first call) is picked up.
"""

import math
import numbers

import numpy as np

__all__ = ["SGD", "Adam"]


def _non_negative(name, value):
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
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
                grad = grad + self.weight_decay * param
            self._update(name, param, grad)

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
        if self.momentum:
            buf = self.state.get(name)
            if buf is None:
                buf = self.state[name] = grad.copy()
            else:
                buf *= self.momentum
                buf += grad
            grad = buf
        param -= self.lr * grad

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
            raise TypeError(f"betas must be a pair of floats, got {betas!r}")
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
        m += (1 - beta1) * (grad - m)
        v *= beta2
        v += (1 - beta2) * grad * grad
        denom = v**0.5 / math.sqrt(1 - beta2**t) + self.eps
        param -= self.lr / (1 - beta1**t) * m / denom

    def __repr__(self):
        return (
            f"Adam(lr={self.lr}, betas={self.betas}, eps={self.eps}, "
            f"weight_decay={self.weight_decay})"
        )
