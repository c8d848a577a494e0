"""Loss functions: ``forward(pred, target) -> float`` and ``backward() -> grad_pred``.

Both average over the batch (the first dim of ``pred``), so their gradients match
PyTorch's for the corresponding mean-reduced loss. A loss computes in arrays it owns,
one set per ``pred`` shape and dtype, reused on every call: the gradient ``backward``
returns is overwritten by the next ``forward`` of the same shape.
"""

import numpy as np

from ._buffers import ShapeCache

__all__ = ["MSELoss", "SoftmaxCrossEntropyLoss"]


def _check_pred(pred, ndim=None):
    if not isinstance(pred, np.ndarray):
        raise TypeError(f"pred must be an ndarray, got {type(pred).__name__}")
    if pred.dtype not in (np.float32, np.float64):
        raise TypeError(f"pred must be float32 or float64, got {pred.dtype}")
    if pred.ndim < 1 or pred.shape[0] == 0:
        raise ValueError(f"pred must have a non-empty batch dim, got shape {pred.shape}")
    if ndim is not None and pred.ndim != ndim:
        raise ValueError(f"pred must have {ndim} dims, got shape {pred.shape}")


class _Loss:
    """Call protocol and the check that backward follows forward."""

    _grad = None

    def __init__(self):
        self._shapes = ShapeCache()

    def __call__(self, pred, target):
        return self.forward(pred, target)

    def backward(self):
        """Return the gradient of the last loss with respect to ``pred``.

        Returns
        -------
        grad_pred : ndarray of the shape and dtype of ``pred``
        """
        if self._grad is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return self._grad

    def __repr__(self):
        return f"{type(self).__name__}()"


class MSELoss(_Loss):
    """Half squared error, averaged over the batch: ``C = sum ||y - a||^2 / (2 N)``.

    Equals ``0.5 * torch.nn.functional.mse_loss(a, y, reduction="sum") / N``.
    """

    def forward(self, pred, target):
        """Compute the loss.

        Parameters
        ----------
        pred : ndarray of shape (N, ...)
            Network output a.
        target : array_like of the same shape
            Desired output y; cast to ``pred``'s dtype.

        Returns
        -------
        float
        """
        _check_pred(pred)
        target = np.asarray(target)
        if target.shape != pred.shape:
            raise ValueError(f"target must have pred's shape {pred.shape}, got {target.shape}")
        if target.dtype.kind not in "biuf":
            raise TypeError(f"target must be numeric, got {target.dtype}")
        entry = self._shapes.entry(pred)
        diff = entry.array("diff", pred.shape, pred.dtype)
        # target is cast to pred's dtype first, then subtracted (as target.astype would).
        np.subtract(pred, target, out=diff, dtype=pred.dtype, casting="unsafe")
        n = pred.shape[0]
        self._grad = np.divide(diff, n, out=entry.array("grad", pred.shape, pred.dtype))
        return float(np.vdot(diff, diff)) / (2 * n)


class SoftmaxCrossEntropyLoss(_Loss):
    """Softmax followed by the negative log-likelihood of integer labels, batch mean.

    Equals ``torch.nn.functional.cross_entropy(logits, labels)``; computed with the
    log-sum-exp shift, so large logits do not overflow.
    """

    def forward(self, pred, target):
        """Compute the loss.

        Parameters
        ----------
        pred : ndarray of shape (N, K)
            Logits.
        target : array_like of int, shape (N,)
            Class labels in ``[0, K)``.

        Returns
        -------
        float
        """
        _check_pred(pred, 2)
        target = np.asarray(target)
        if target.dtype.kind not in "iu":
            raise TypeError(f"target must hold integer labels, got dtype {target.dtype}")
        if target.shape != pred.shape[:1]:
            raise ValueError(f"target must have shape ({pred.shape[0]},), got {target.shape}")
        n, k = pred.shape
        if target.min() < 0 or target.max() >= k:
            raise ValueError(
                f"target labels must be in [0, {k}), got {target.min()}..{target.max()}"
            )
        entry = self._shapes.entry(pred)
        log_probs = entry.array("log_probs", pred.shape, pred.dtype)
        grad = entry.array("grad", pred.shape, pred.dtype)
        row = entry.array("row", (n, 1), pred.dtype)
        # log_softmax with the max shift, in place: pred - max, then minus log sum exp.
        np.subtract(pred, np.max(pred, axis=1, keepdims=True, out=row), out=log_probs)
        np.sum(np.exp(log_probs, out=grad), axis=1, keepdims=True, out=row)
        log_probs -= np.log(row, out=row)
        rows = np.arange(n)
        np.exp(log_probs, out=grad)
        grad[rows, target] -= 1
        grad /= n
        self._grad = grad
        return -float(log_probs[rows, target].sum()) / n
