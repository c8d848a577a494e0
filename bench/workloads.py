"""Benchmark suite: shapes, passes, work counts and input data.

Every workload is float32 in NCHW layout (NCL and NCDHW for 1-D and 3-D). A
convolution workload has three passes (``fwd``, ``bwd_input``, ``bwd_weight``;
the last one includes the bias gradient) and a max-pool workload has two
(``fwd`` with indices, ``bwd``).
"""

from dataclasses import dataclass
from math import prod

import numpy as np

CONV_PASSES = ("fwd", "bwd_input", "bwd_weight")
POOL_PASSES = ("fwd", "bwd")


@dataclass(frozen=True)
class ConvWorkload:
    """One convolution shape.

    Parameters
    ----------
    name : str
        Short label used on the command line and in the tables.
    n, c, f : int
        Batch size, input channels and output channels (filters).
    spatial : tuple of int
        Input spatial size, one entry per spatial dimension.
    kernel : tuple of int
        Kernel size, same length as `spatial`.
    stride, padding, dilation : tuple of int
        Per-dimension geometry, same length as `spatial`.
    groups : int
        Number of channel groups.
    """

    name: str
    n: int
    c: int
    f: int
    spatial: tuple
    kernel: tuple
    stride: tuple
    padding: tuple
    dilation: tuple
    groups: int = 1

    passes = CONV_PASSES
    unit = "GFLOP/s"

    @property
    def out_spatial(self):
        """tuple of int: output spatial size."""
        return tuple(
            (s + 2 * p - d * (k - 1) - 1) // st + 1
            for s, k, st, p, d in zip(
                self.spatial, self.kernel, self.stride, self.padding, self.dilation
            )
        )

    @property
    def x_shape(self):
        """tuple of int: input shape ``(N, C, *spatial)``."""
        return (self.n, self.c) + self.spatial

    @property
    def w_shape(self):
        """tuple of int: weight shape ``(F, C // groups, *kernel)``."""
        return (self.f, self.c // self.groups) + self.kernel

    @property
    def y_shape(self):
        """tuple of int: output shape ``(N, F, *out_spatial)``."""
        return (self.n, self.f) + self.out_spatial

    @property
    def geometry(self):
        """dict: keyword arguments ``stride, padding, dilation, groups``."""
        return dict(
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
        )

    @property
    def work(self):
        """int: FLOPs of one pass, ``2 * N * F * C/groups * prod(K) * prod(O)``.

        The count is the same for every pass (the bias gradient is not counted).
        """
        return (
            2
            * self.n
            * self.f
            * (self.c // self.groups)
            * prod(self.kernel)
            * prod(self.out_spatial)
        )

    def describe(self):
        """str: a one-line human-readable shape description."""
        dims = "x".join(map(str, self.spatial))
        ker = "x".join(map(str, self.kernel))
        extra = (f" d={self.dilation[0]}" if max(self.dilation) > 1 else "") + (
            f" g={self.groups}" if self.groups > 1 else "")
        return (
            f"N={self.n} C={self.c} {dims} F={self.f} k={ker} "
            f"s={self.stride[0]} p={self.padding[0]}{extra}"
        )

    def scaled_down(self):
        """ConvWorkload: the same geometry on a tiny batch, for warm-up calls."""
        small = tuple(min(s, 8 + k) for s, k in zip(self.spatial, self.kernel))
        return ConvWorkload(
            self.name + "-small", 1, self.c, self.f, small, self.kernel,
            self.stride, self.padding, self.dilation, self.groups,
        )


@dataclass(frozen=True)
class PoolWorkload:
    """One max-pool shape (with indices), 1-, 2- or 3-D.

    Parameters
    ----------
    name : str
        Short label.
    n, c : int
        Batch size and channels.
    spatial : tuple of int
        Input spatial size.
    kernel, stride, padding : int
        Cubic window geometry (the same on every axis).
    """

    name: str
    n: int
    c: int
    spatial: tuple
    kernel: int
    stride: int
    padding: int = 0

    passes = POOL_PASSES
    unit = "GB/s"

    @property
    def x_shape(self):
        """tuple of int: input shape ``(N, C, *spatial)``."""
        return (self.n, self.c) + self.spatial

    @property
    def y_shape(self):
        """tuple of int: output shape ``(N, C, *O)``."""
        out = tuple((s + 2 * self.padding - self.kernel) // self.stride + 1
                    for s in self.spatial)
        return (self.n, self.c) + out

    @property
    def work(self):
        """int: bytes moved by one pass (float32 values, int64 indices).

        ``fwd`` reads x and writes y and the indices; ``bwd`` reads grad_y and the
        indices and writes grad_x: the same total.
        """
        x_bytes = 4 * prod(self.x_shape)
        y_elems = prod(self.y_shape)
        return x_bytes + 12 * y_elems

    def describe(self):
        """str: a one-line human-readable shape description."""
        dims = "x".join(map(str, self.spatial))
        win = "x".join([str(self.kernel)] * len(self.spatial))
        pad = f" p={self.padding}" if self.padding else ""
        return f"N={self.n} C={self.c} {dims} {win} s={self.stride}{pad}"


def _conv(name, n, c, f, spatial, k, stride=1, padding=1):
    """Build a ConvWorkload with the same k, stride and padding on every axis."""
    d = len(spatial)
    return ConvWorkload(
        name, n, c, f, tuple(spatial), (k,) * d, (stride,) * d, (padding,) * d, (1,) * d
    )


SUITE = (
    _conv("A", 32, 3, 32, (32, 32), 3),
    _conv("B", 32, 64, 64, (32, 32), 3),
    _conv("C", 8, 128, 128, (56, 56), 3),
    _conv("D", 64, 1, 8, (28, 28), 5, padding=0),
    _conv("E", 16, 64, 64, (64, 64), 3, stride=2),
    _conv("1D", 32, 64, 64, (1024,), 7, padding=3),
    _conv("3D", 4, 16, 32, (16, 16, 16), 3),
    PoolWorkload("pool", 32, 64, (32, 32), 2, 2),
)
BY_NAME = {w.name: w for w in SUITE}
QUICK = ("A", "1D", "3D", "pool")
MEMORY_WORKLOAD = "C"


def make_inputs(workload, seed=0):
    """Create the float32 input arrays of a workload.

    Parameters
    ----------
    workload : ConvWorkload or PoolWorkload
    seed : int

    Returns
    -------
    dict of str to ndarray
        Convolution: ``x``, ``w``, ``b``, ``gy``. Max-pool: ``x``, ``gy`` and
        ``idx`` (the int64 argmax indices of ``x``, from the NumPy peer, or from
        convkern for 1-D and 3-D pools, used by the backward pass of every library).
    """
    rng = np.random.default_rng(seed)

    def normal(shape):
        return rng.standard_normal(shape, dtype=np.float32)

    if isinstance(workload, PoolWorkload):
        x = normal(workload.x_shape)
        k, s, p = workload.kernel, workload.stride, workload.padding
        if len(workload.spatial) == 2:
            from numpy_peer import maxpool_forward

            _, idx = maxpool_forward(x, k, s, p)
        else:  # the NumPy peer is 2-D only
            from peers import import_convkern

            _, idx = import_convkern().maxpool_forward(x, k, stride=s, padding=p)
        return {"x": x, "gy": normal(workload.y_shape), "idx": idx}
    return {
        "x": normal(workload.x_shape),
        "w": normal(workload.w_shape),
        "b": normal((workload.f,)),
        "gy": normal(workload.y_shape),
    }
