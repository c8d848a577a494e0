"""Train a small CNN on handwritten digits: ``python -m convkern.demo``.

The default data set is scikit-learn's ``load_digits`` (1,797 8x8 images, shipped with
scikit-learn, no download); ``--data FILE.npz`` trains on your own arrays ``images``
((N, H, W) or (N, C, H, W)) and ``labels`` instead. The network is conv-relu-pool,
conv-relu-pool, dense, trained with SGD and momentum on a seeded held-out split. The
output is per-epoch loss and accuracy, examples per second, a PNG of the training curves
and of test images with their predicted labels, and a last line ``test accuracy: 0.xxxx``.

Needs the optional ``demo`` extra (scikit-learn, tqdm, matplotlib):
``pip install "convkern[demo]"``.  ``mpiexec -n 2 python -m convkern.demo --mpi`` trains
data-parallel over MPI ranks (``convkern.distributed``; needs the ``mpi`` extra too).
"""

import argparse
import copy
import functools
import importlib
import os
import sys
import time

import numpy as np

from . import get_num_threads, set_num_threads
from .layers import Conv, Dense, Flatten, MaxPool, Sequential
from .losses import SoftmaxCrossEntropyLoss
from .optim import SGD

TEST_FRACTION = 0.2
PNG_NAME = "convkern_demo.png"


def _require(module):
    """Import an optional dependency of the demo, or exit with an install hint."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SystemExit(
            f"the demo needs scikit-learn, tqdm and matplotlib ({module} is missing): "
            "pip install 'convkern[demo]'"
        ) from None


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m convkern.demo",
        description="Train a small CNN with convkern and report held-out accuracy.",
    )
    parser.add_argument("--epochs", type=int, default=12, help="passes over the training set")
    parser.add_argument("--batch-size", type=int, default=32, help="examples per step")
    parser.add_argument("--lr", type=float, default=0.05, help="SGD learning rate")
    parser.add_argument("--threads", type=int, default=None,
                        help="kernel threads (default: convkern's, i.e. OMP_NUM_THREADS)")
    parser.add_argument("--seed", type=int, default=0, help="seed of split, init, shuffling")
    parser.add_argument("--out", default="demo_out", help="directory for the PNG")
    parser.add_argument("--data", metavar="FILE.npz", default=None,
                        help="arrays 'images' (N, H, W) or (N, C, H, W) and 'labels'")
    parser.add_argument("--compare-torch", action="store_true",
                        help="also time the same training step with PyTorch")
    parser.add_argument("--mpi", action="store_true",
                        help="data-parallel training under mpiexec: each rank trains on its "
                             "share of every batch (needs convkern[mpi])")
    args = parser.parse_args(argv)
    if args.mpi and args.compare_torch:
        parser.error("--compare-torch does not combine with --mpi")
    for name in ("epochs", "batch_size", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if not args.lr > 0:
        parser.error("--lr must be > 0")
    return args


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------

def load_data(path):
    """Return images scaled to [0, 1] and labels numbered from 0.

    Parameters
    ----------
    path : str or None
        An ``.npz`` file with ``images`` and ``labels``; None loads scikit-learn's digits.

    Returns
    -------
    images : ndarray of shape (N, C, H, W), float32
    labels : ndarray of shape (N,), int64
        Index into ``names``.
    names : ndarray of shape (K,)
        The original label of each class.
    """
    if path is None:
        digits = _require("sklearn.datasets").load_digits()
        images, labels = digits.images, digits.target
    else:
        with np.load(path, allow_pickle=False) as data:
            if "images" not in data.files or "labels" not in data.files:
                raise SystemExit(f"{path} must hold arrays 'images' and 'labels'")
            images, labels = data["images"], data["labels"]
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or labels.shape != images.shape[:1]:
        raise SystemExit(
            f"images must be (N, H, W) or (N, C, H, W) and labels (N,); "
            f"got {images.shape} and {labels.shape}"
        )
    if len(labels) < 5:
        raise SystemExit(f"need at least 5 images for a training and a test set, got {len(labels)}")
    if min(images.shape[2:]) < 4:
        raise SystemExit(f"images must be at least 4x4 for two 2x2 poolings, got {images.shape}")
    images = images.astype(np.float32)
    low, high = images.min(), images.max()
    images = (images - low) / max(high - low, np.finfo(np.float32).tiny)
    names, labels = np.unique(labels, return_inverse=True)
    return images, labels.astype(np.int64), names


def split(images, labels, rng):
    """Shuffle and hold out ``TEST_FRACTION`` of the examples for testing."""
    order = rng.permutation(len(labels))
    n_test = max(1, round(TEST_FRACTION * len(labels)))
    test, train = order[:n_test], order[n_test:]
    return images[train], labels[train], images[test], labels[test]


# --------------------------------------------------------------------------------------
# Model and training
# --------------------------------------------------------------------------------------

def build_model(in_channels, height, width, n_classes, rng):
    """conv(16)-relu-pool, conv(32)-relu-pool, dense; 'same' 3x3 convolutions."""
    return Sequential(
        Conv(in_channels, 16, (3, 3), padding=1, activation="relu", rng=rng),
        MaxPool(2),
        Conv(16, 32, (3, 3), padding=1, activation="relu", rng=rng),
        MaxPool(2),
        Flatten(),
        Dense(32 * (height // 4) * (width // 4), n_classes, rng=rng),
    )


def train_epoch(model, criterion, optimizer, images, labels, batch_size, rng, progress,
                sync=None):
    """One shuffled pass; return (mean loss, accuracy) over the training examples.

    ``sync(model)``, if given, runs between backward and the update (``--mpi``)."""
    order = rng.permutation(len(labels))
    total_loss, correct = 0.0, 0
    for start in progress:
        batch = order[start:start + batch_size]
        logits = model(images[batch])
        loss = criterion(logits, labels[batch])
        optimizer.zero_grad()
        model.backward(criterion.backward())
        if sync is not None:
            sync(model)
        optimizer.step()
        total_loss += loss * len(batch)
        correct += int(np.sum(logits.argmax(axis=1) == labels[batch]))
        progress.set_postfix(loss=f"{loss:.4f}", refresh=False)
    return total_loss / len(labels), correct / len(labels)


def data_parallel(model, train_x, train_y, batch_size):
    """Set up ``--mpi``: the same model on every rank, each with its share of the data.

    Returns
    -------
    (train_x, train_y, batch_size, sync, rank, ranks)
        This rank's share of the training set and of each batch of ``batch_size``, the
        gradient all-reduce to run before every update, the rank and the number of ranks.
        Ranks other than 0 print nothing to stdout.
    """
    try:
        from mpi4py import MPI

        from . import distributed
    except ImportError as exc:
        raise SystemExit(
            f"--mpi needs mpi4py and an MPI: pip install 'convkern[mpi]' ({exc})"
        ) from exc
    comm = MPI.COMM_WORLD
    distributed.broadcast_parameters(model, comm)
    if comm.rank:
        sys.stdout = open(os.devnull, "w")  # for the life of the process
    batch_size = max(1, batch_size // comm.size)
    print(f"data-parallel over {comm.size} MPI rank(s), each with 1/{comm.size} of the "
          f"training set and of every batch ({batch_size} images)")
    return (distributed.shard(train_x, comm), distributed.shard(train_y, comm), batch_size,
            functools.partial(distributed.allreduce_gradients, comm=comm), comm.rank, comm.size)


def predict(model, images, batch_size):
    """Return the predicted class of every image (eval mode, in batches)."""
    model.eval()
    predictions = np.concatenate([
        model(images[start:start + batch_size]).argmax(axis=1)
        for start in range(0, len(images), batch_size)
    ])
    model.train()
    return predictions


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------

def plot(history, images, labels, predictions, names, path):
    """Write a PNG: loss and accuracy per epoch, and a grid of test images."""
    matplotlib = _require("matplotlib")
    matplotlib.use("Agg")
    plt = _require("matplotlib.pyplot")
    epochs = np.arange(1, len(history["loss"]) + 1)
    fig = plt.figure(figsize=(10, 5), layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[1, 1.1])
    ax_loss = left.subplots()
    ax_loss.plot(epochs, history["loss"], "o-", color="tab:blue", label="training loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy loss", color="tab:blue")
    ax_acc = ax_loss.twinx()
    ax_acc.plot(epochs, history["train_acc"], "s--", color="tab:orange", label="train")
    ax_acc.plot(epochs, history["test_acc"], "s-", color="tab:green", label="test")
    ax_acc.set_ylabel("accuracy")
    ax_acc.legend(loc="center right")
    ax_loss.set_title("training curves")
    grid = right.subplots(4, 6)
    for ax in grid.flat:
        ax.axis("off")
    shown = zip(grid.flat[:len(images)], images, labels, predictions, strict=True)
    for ax, image, label, pred in shown:
        ax.imshow(image.mean(axis=0), cmap="gray_r")
        ax.set_title(str(names[pred]), color="tab:green" if pred == label else "tab:red")
    right.suptitle("test images, predicted label (red: wrong)")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def compare_torch(model, images, labels, lr, steps=20, repeats=5):
    """Time one training step of ``model`` and of the same network in PyTorch.

    Each time is the best of ``repeats`` runs of ``steps`` steps, after a warm-up.

    Returns
    -------
    (float, float) or None
        Seconds per step for convkern and torch; None if torch is not installed.
    """
    try:
        torch = importlib.import_module("torch")
    except ImportError:
        return None
    torch.set_num_threads(get_num_threads())
    conv1, _, conv2, _, _, dense = model.layers
    reference = torch.nn.Sequential(
        torch.nn.Conv2d(conv1.in_channels, conv1.out_channels, 3, padding=1),
        torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(conv2.in_channels, conv2.out_channels, 3, padding=1),
        torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(dense.in_features, dense.out_features),
    )
    with torch.no_grad():
        pairs = zip((conv1, conv2, dense), (reference[0], reference[3], reference[7]), strict=True)
        for ours, theirs in pairs:
            theirs.weight.copy_(torch.from_numpy(ours.params["weight"]))
            theirs.bias.copy_(torch.from_numpy(ours.params["bias"]))
    model = copy.deepcopy(model)  # the timed steps must not change the caller's model
    criterion = SoftmaxCrossEntropyLoss()
    optimizer = SGD(model, lr=lr, momentum=0.9)
    torch_optimizer = torch.optim.SGD(reference.parameters(), lr=lr, momentum=0.9)
    x_t, labels_t = torch.from_numpy(images), torch.from_numpy(labels)

    def ours_step():
        criterion(model(images), labels)
        optimizer.zero_grad()
        model.backward(criterion.backward())
        optimizer.step()

    def torch_step():
        loss = torch.nn.functional.cross_entropy(reference(x_t), labels_t)
        torch_optimizer.zero_grad()
        loss.backward()
        torch_optimizer.step()

    times = []
    for step in (ours_step, torch_step):
        time.sleep(0.3)  # let the other library's worker threads go idle first
        for _ in range(3):  # warm-up
            step()
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(steps):
                step()
            best = min(best, (time.perf_counter() - start) / steps)
        times.append(best)
    return tuple(times)


def main(argv=None):
    """Run the demo; ``argv`` defaults to ``sys.argv[1:]``. Returns the test accuracy."""
    args = parse_args(argv)
    tqdm = _require("tqdm").tqdm
    if args.threads is not None:
        set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    images, labels, names = load_data(args.data)
    train_x, train_y, test_x, test_y = split(images, labels, rng)
    _, channels, height, width = images.shape
    model = build_model(channels, height, width, len(names), rng)
    criterion = SoftmaxCrossEntropyLoss()
    optimizer = SGD(model, lr=args.lr, momentum=0.9)
    batch_size, sync, rank, ranks = args.batch_size, None, 0, 1
    if args.mpi:
        train_x, train_y, batch_size, sync, rank, ranks = data_parallel(
            model, train_x, train_y, batch_size)
        if rank:
            tqdm = functools.partial(tqdm, disable=True)
    print(f"{len(train_y)} training and {len(test_y)} test images of shape "
          f"{images.shape[1:]}, {len(names)} classes, {get_num_threads()} thread(s)")
    print(model)

    history = {"loss": [], "train_acc": [], "test_acc": []}
    train_seconds = 0.0
    for epoch in range(1, args.epochs + 1):
        starts = range(0, len(train_y), batch_size)
        with tqdm(starts, desc=f"epoch {epoch}/{args.epochs}", unit="batch",
                  leave=False, file=sys.stderr) as progress:
            start = time.perf_counter()
            loss, train_acc = train_epoch(model, criterion, optimizer, train_x, train_y,
                                          batch_size, rng, progress, sync)
            train_seconds += time.perf_counter() - start
        predictions = predict(model, test_x, 256)
        test_acc = float(np.mean(predictions == test_y))
        for key, value in zip(history, (loss, train_acc, test_acc), strict=True):
            history[key].append(value)
        print(f"epoch {epoch:2d}/{args.epochs}: loss {loss:.4f}, "
              f"train accuracy {train_acc:.4f}, held-out accuracy {test_acc:.4f}")

    examples = args.epochs * len(train_y) * ranks
    print(f"trained {args.epochs} epochs in {train_seconds:.1f} s "
          f"({examples / train_seconds:,.0f} examples/s)")
    os.makedirs(args.out, exist_ok=True)
    png = os.path.join(args.out, PNG_NAME)
    grid = slice(0, 24)
    if rank == 0:
        plot(history, test_x[grid], test_y[grid], predictions[grid], names, png)
        print(f"wrote {png}")
    if args.compare_torch:
        batch = slice(0, args.batch_size)
        times = compare_torch(model, train_x[batch], train_y[batch], args.lr)
        if times is None:
            print("--compare-torch: torch is not installed")
        else:
            print(f"training step, batch {len(train_y[batch])}: convkern "
                  f"{times[0] * 1e3:.2f} ms, torch {times[1] * 1e3:.2f} ms")
    accuracy = float(np.mean(predictions == test_y))
    print(f"test accuracy: {accuracy:.4f}")
    return accuracy


if __name__ == "__main__":
    main()
