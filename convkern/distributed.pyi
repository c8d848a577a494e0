# Stub for convkern/distributed.py: MPI data parallelism over mpi4py communicators.
# tests/test_mpi.py checks that these signatures match the implementation.

from typing import TypeVar

from mpi4py import MPI

from .layers import Layer

_S = TypeVar("_S")  # an ndarray or any sequence that slices

def broadcast_parameters(model: Layer, comm: MPI.Comm, root: int = 0) -> None: ...
def allreduce_gradients(model: Layer, comm: MPI.Comm) -> None: ...
def shard(data: _S, comm: MPI.Comm) -> _S: ...
