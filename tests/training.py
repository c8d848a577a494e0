"""The small training problem shared by tests/test_mpi.py and tests/mpi_steps.py."""

import numpy as np

import convkern as ck

STEPS = 3
BATCH = 16
LR, MOMENTUM = 0.1, 0.9


def model(seed):
    """conv-relu-pool, conv-relu, flatten, dense on 1x8x8 images (float32)."""
    return ck.Sequential(
        ck.Conv(1, 6, (3, 3), padding=1, activation="relu", rng=seed),
        ck.MaxPool(2),
        ck.Conv(6, 8, (3, 3), padding=((1, 0), (0, 1)), activation="relu", rng=seed + 100),
        ck.Flatten(),
        ck.Dense(8 * 3 * 3, 10, rng=seed + 200),  # (4 + 1 - 3 + 1) = 3 outputs per axis
    )


def batches():
    """STEPS batches of BATCH random images and labels (the same on every rank)."""
    rng = np.random.default_rng(42)
    for _ in range(STEPS):
        yield rng.random((BATCH, 1, 8, 8), dtype=np.float32), rng.integers(0, 10, BATCH)


def backward(model, x, labels):
    """Zero the gradients, then fill them with those of the mean loss over the batch."""
    criterion = ck.SoftmaxCrossEntropyLoss()
    criterion(model(x), labels)
    model.zero_grad()
    model.backward(criterion.backward())


def train(model, part=lambda a: a, sync=lambda m: None):
    """SGD with momentum over ``batches()``: ``part`` picks this process's share of each
    batch and ``sync(model)`` runs between backward and the update."""
    optimizer = ck.SGD(model, lr=LR, momentum=MOMENTUM)
    for x, labels in batches():
        backward(model, part(x), part(labels))
        sync(model)
        optimizer.step()
    return model
