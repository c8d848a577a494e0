"""The libraries under test, each behind the same small interface.

A peer has a ``name``, ``set_threads(n)`` and ``bind(workload, pass_, inputs)``,
which returns a zero-argument callable running one pass and returning a tuple of
NumPy arrays (the outputs that are checked against convkern).
"""

import sys
from pathlib import Path

import numpy as np
import numpy_peer
from workloads import PoolWorkload

REPO_ROOT = Path(__file__).resolve().parents[1]


def import_convkern():
    """Import convkern: the installed package, else the checkout built in place.

    Raises
    ------
    RuntimeError
        If the import works but the compiled API is missing (package not built).
    """
    try:
        import convkern
    except ImportError:
        sys.path.append(str(REPO_ROOT))
        import convkern
    if not hasattr(convkern, "conv_forward"):
        raise RuntimeError(
            f"convkern at {list(convkern.__path__)} has no conv_forward: "
            "build it first (see README)"
        )
    return convkern


def numpy_blas_controller():
    """Return a threadpoolctl controller of NumPy's own BLAS, or None.

    Only the BLAS shipped inside NumPy's installation is selected, so that a BLAS
    that convkern or SciPy load is left alone; if NumPy links a system BLAS, all
    BLAS libraries are selected. None when threadpoolctl is not installed.
    """
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    blas = ThreadpoolController().select(user_api="blas")
    np_dir = Path(np.__file__).resolve().parent
    roots = (np_dir, np_dir.with_name("numpy.libs"))
    own = [
        lib.filepath
        for lib in blas.lib_controllers
        if any(root in Path(lib.filepath).resolve().parents for root in roots)
    ]
    return blas.select(filepath=own) if own else blas


class ConvkernPeer:
    """convkern's public functions."""

    name = "convkern"

    def __init__(self):
        self.lib = import_convkern()

    def set_threads(self, n):
        """Use `n` threads."""
        self.lib.set_num_threads(n)

    def bind(self, workload, pass_, inputs):
        """Return a callable running `pass_` of `workload` on `inputs`."""
        ck = self.lib
        x, gy = inputs["x"], inputs["gy"]
        if isinstance(workload, PoolWorkload):
            k, s, p = workload.kernel, workload.stride, workload.padding
            if pass_ == "fwd":
                return lambda: ck.maxpool_forward(x, k, stride=s, padding=p)
            idx = inputs["idx"]
            return lambda: (ck.maxpool_backward(gy, idx, x.shape),)
        w, b, geo = inputs["w"], inputs["b"], workload.geometry
        if pass_ == "fwd":
            return lambda: (ck.conv_forward(x, w, b, **geo),)
        if pass_ == "bwd_input":
            return lambda: (ck.conv_backward_input(gy, w, x.shape, **geo),)
        return lambda: (
            ck.conv_backward_weight(x, gy, w.shape, **geo),
            ck.conv_backward_bias(gy),
        )


class NumpyPeer:
    """The im2col + matmul implementation of :mod:`numpy_peer`."""

    name = "numpy"

    def __init__(self):
        self.blas = numpy_blas_controller()

    def set_threads(self, n):
        """Limit NumPy's BLAS to `n` threads.

        Without threadpoolctl this does nothing: run.py then measures each thread
        count in a child process started with ``OPENBLAS_NUM_THREADS=n``.
        """
        if self.blas is not None:
            self.blas.limit(limits=n)

    def bind(self, workload, pass_, inputs):
        """Return a callable running `pass_` of `workload` on `inputs`."""
        x, gy = inputs["x"], inputs["gy"]
        if isinstance(workload, PoolWorkload):
            if len(workload.spatial) != 2:
                raise ValueError("the NumPy peer supports 2-D max-pools only")
            k, s, p = workload.kernel, workload.stride, workload.padding
            if pass_ == "fwd":
                return lambda: numpy_peer.maxpool_forward(x, k, s, p)
            idx = inputs["idx"]
            return lambda: (numpy_peer.maxpool_backward(gy, idx, x.shape),)
        if workload.groups != 1:
            raise ValueError("the NumPy peer supports groups=1 only")
        w, b = inputs["w"], inputs["b"]
        conv = numpy_peer.NumpyConv(
            x.shape, w.shape, workload.stride, workload.padding, workload.dilation
        )
        if pass_ == "fwd":
            return lambda: (conv.forward(x, w, b),)
        if pass_ == "bwd_input":
            return lambda: (conv.backward_input(gy, w),)
        return lambda: conv.backward_weight(x, gy)


class TorchPeer:
    """PyTorch: ``F.convNd``, ``aten.convolution_backward`` and max-pool ops."""

    name = "torch"

    def __init__(self):
        import torch

        self.torch = torch

    def set_threads(self, n):
        """Use `n` intra-op threads."""
        self.torch.set_num_threads(n)

    def bind(self, workload, pass_, inputs):
        """Return a callable running `pass_` of `workload` on `inputs`."""
        torch = self.torch
        aten = torch.ops.aten
        t = {k: torch.from_numpy(v) for k, v in inputs.items()}
        x, gy = t["x"], t["gy"]
        if isinstance(workload, PoolWorkload):
            k, s, p = workload.kernel, workload.stride, workload.padding
            d = len(workload.spatial)
            if d not in (2, 3):
                raise ValueError("the torch peer times 2-D and 3-D max-pools only")
            if pass_ == "fwd":
                pool = getattr(torch.nn.functional, f"max_pool{d}d")

                def run():
                    y, idx = pool(x, k, s, p, return_indices=True)
                    return y.numpy(), idx.numpy()

                return run
            idx = t["idx"]
            pool_backward = getattr(aten, f"max_pool{d}d_with_indices_backward")
            return lambda: (
                pool_backward(gy, x, [k] * d, [s] * d, [p] * d, [1] * d, False, idx).numpy(),
            )
        w, b = t["w"], t["b"]
        stride, padding, dilation = workload.stride, workload.padding, workload.dilation
        groups, ndim = workload.groups, len(workload.spatial)
        if pass_ == "fwd":
            conv = getattr(torch.nn.functional, f"conv{ndim}d")
            return lambda: (conv(x, w, b, stride, padding, dilation, groups).numpy(),)

        def backward(bias_sizes, mask):
            return aten.convolution_backward(
                gy, x, w, bias_sizes, stride, padding, dilation,
                False, [0] * ndim, groups, mask,
            )

        if pass_ == "bwd_input":
            return lambda: (backward(None, [True, False, False])[0].numpy(),)

        def weight_and_bias():
            _, gw, gb = backward([workload.f], [False, True, True])
            return gw.numpy(), gb.numpy()

        return weight_and_bias


def make_peers(with_torch):
    """Return the available peers, convkern first.

    Parameters
    ----------
    with_torch : bool
        Include PyTorch if it can be imported.

    Returns
    -------
    list
    """
    peers = [ConvkernPeer(), NumpyPeer()]
    if with_torch:
        try:
            peers.append(TorchPeer())
        except ImportError:
            print("torch is not importable: timing convkern and numpy only")
    return peers
