"""Data-parallel training with MPI, in the Horovod model (``pip install "convkern[mpi]"``).

Every rank holds the whole model and trains on its own shard of each batch: broadcast
the parameters from one rank once, then after every backward pass average the gradients
over the ranks (``allreduce_gradients``) before the optimiser's step.  The ranks then
apply the same update to the same parameters and stay identical.  ``comm`` is an
``mpi4py`` communicator (usually ``mpi4py.MPI.COMM_WORLD``).  ``import convkern`` imports
neither this module nor mpi4py.

Run a script with ``mpiexec -n 2 python script.py`` (the ``mpich`` wheel of the ``mpi``
extra ships ``mpiexec``); ``python -m convkern.demo --mpi`` is an example.
"""

from mpi4py import MPI

__all__ = ["broadcast_parameters", "allreduce_gradients", "shard"]


def _arrays(model, attr):
    """The model's ``params`` or ``grads`` in a fixed order (sorted names)."""
    if not (hasattr(model, "params") and hasattr(model, "grads")):
        raise TypeError(
            f"model must be a convkern layer (with params and grads), got {type(model).__name__}"
        )
    arrays = getattr(model, attr)
    return [(name, arrays[name]) for name in sorted(arrays)]


def broadcast_parameters(model, comm, root=0):
    """Copy the parameters of rank ``root`` to every rank, in place.

    Call it on every rank after building the model (and after loading weights on
    ``root``).  It first checks that every rank's model has the same parameter names,
    shapes and dtypes, so that no rank waits for a message that never comes.

    Parameters
    ----------
    model : convkern.Layer
        Any layer or ``Sequential``; its ``params`` arrays are overwritten in place.
    comm : mpi4py.MPI.Comm
    root : int, default 0

    Raises
    ------
    ValueError
        If ``root`` is not a rank, or (on every rank) if the ranks' models differ in their
        parameters' names, shapes or dtypes.
    """
    params = _arrays(model, "params")
    if isinstance(root, bool) or not isinstance(root, int) or not 0 <= root < comm.Get_size():
        raise ValueError(f"root must be a rank in [0, {comm.Get_size()}), got {root!r}")
    layout = [(name, a.shape, a.dtype.str) for name, a in params]
    layouts = comm.allgather(layout)
    for rank, other in enumerate(layouts):
        if other != layouts[root]:
            raise ValueError(
                f"the model on rank {rank} has parameters {other}, but the one on rank "
                f"{root} has {layouts[root]}"
            )
    for _, array in params:
        comm.Bcast(array, root=root)


def allreduce_gradients(model, comm):
    """Replace every gradient by its mean over the ranks, in place.

    Each gradient is summed over the ranks (``MPI.SUM``, one ``Allreduce`` per array in
    sorted name order) and divided by the number of ranks.  With each rank's loss the
    mean over an equal share of the batch, this is the gradient of the mean over the
    whole batch.

    Parameters
    ----------
    model : convkern.Layer
        Its ``grads`` arrays are overwritten in place (call after ``backward``, before
        the optimiser's ``step``).
    comm : mpi4py.MPI.Comm
    """
    size = comm.Get_size()
    for _, grad in _arrays(model, "grads"):
        comm.Allreduce(MPI.IN_PLACE, grad, op=MPI.SUM)
        grad /= size


def shard(data, comm):
    """Return this rank's equal share of ``data`` (a contiguous slice along axis 0).

    Every rank gets ``len(data) // size`` items, rank r the r-th run of them; the last
    ``len(data) % size`` items are left out, so that every rank runs the same number of
    steps (a rank with more would wait forever in ``allreduce_gradients``).

    Parameters
    ----------
    data : ndarray or any sequence that slices
    comm : mpi4py.MPI.Comm

    Returns
    -------
    The slice ``data[r * m:(r + 1) * m]`` with ``m = len(data) // size`` (a view of an
    ndarray).

    Raises
    ------
    ValueError
        If ``data`` has fewer items than there are ranks.
    """
    size, rank = comm.Get_size(), comm.Get_rank()
    share = len(data) // size
    if share == 0:
        raise ValueError(f"cannot shard {len(data)} items over {size} ranks")
    return data[rank * share:(rank + 1) * share]

