"""The number of threads the compiled kernels use, and what happens after ``fork``.

Fork
----
GNU libgomp keeps a pool of worker threads after the first parallel region.  A child
created by ``os.fork()`` (or by multiprocessing's ``'fork'`` start method) inherits the
pool's bookkeeping but not its threads, so the child's first parallel region with more
than one thread waits forever for workers that do not exist.  A parallel region with
one thread never touches the pool (libgomp's ``gomp_team_start`` returns before it), so
convkern makes every fork child serial: an ``os.register_at_fork`` hook marks the
child, and from then on :func:`get_num_threads` is 1 there, whatever
``set_num_threads`` or ``OMP_NUM_THREADS`` say.  Processes started with ``'spawn'`` or
``'forkserver'`` (fresh interpreters) use threads as usual.

threadpoolctl
-------------
``threadpoolctl.threadpool_limits(n, 'openmp')`` calls ``omp_set_num_threads(n)`` in
every OpenMP runtime loaded, convkern's included, and restores the old value on exit.
Without a :func:`set_num_threads` count, :func:`get_num_threads` reads
``omp_get_max_threads()`` on every call, so the limit applies.  OpenMP keeps that value
per calling thread: it covers calls from the Python thread that set it.  A count given
to :func:`set_num_threads` is explicit and wins (as scikit-learn's ``n_threads`` does):
otherwise an unrelated ``omp_set_num_threads`` in the same runtime, such as
``torch.set_num_threads(1)`` when PyTorch loads the same libgomp, would override it.
"""

import os
import warnings

from . import _openmp
from ._validation import integer

__all__ = ["set_num_threads", "get_num_threads", "MAX_THREADS"]

# More threads than this is refused: libgomp aborts the process when it cannot create
# a thread, and overflows its stack on very large teams (about 100,000).
MAX_THREADS = 1024

_requested = None
_in_fork_child = False
# (read once: every call asks for the thread count)
_OPENMP = _openmp.openmp_enabled()


def set_num_threads(n):
    """Use ``n`` threads in every following kernel call.

    Parameters
    ----------
    n : int or None
        A thread count in ``1 .. MAX_THREADS`` (1024), or None to return to OpenMP's
        default (which honours ``OMP_NUM_THREADS``).  Without OpenMP, and in a process
        created by ``fork``, the kernels always run on one thread.

    Raises
    ------
    TypeError
        If ``n`` is not an int (a bool or float is refused).
    ValueError
        If ``n`` is below 1 or above ``MAX_THREADS``.
    """
    global _requested
    if n is None:
        _requested = None
        return
    n = integer("n", n, 1)
    if n > MAX_THREADS:
        raise ValueError(f"n (thread count) must be <= {MAX_THREADS}, got {n}")
    _requested = n
    if _in_fork_child and n > 1 and _openmp.openmp_enabled():
        warnings.warn(
            "convkern runs serially in a process created by fork (OpenMP cannot start "
            "threads there); use the 'spawn' or 'forkserver' start method for threads",
            RuntimeWarning,
            stacklevel=2,
        )


def get_num_threads():
    """Return the thread count the kernels use.

    The last ``set_num_threads``, else OpenMP's current ``omp_get_max_threads()``
    (capped at ``MAX_THREADS``), which follows ``OMP_NUM_THREADS`` and
    ``threadpoolctl.threadpool_limits(n, 'openmp')``; always 1 without OpenMP and in a
    process created by ``fork``.
    """
    if _in_fork_child or not _OPENMP:
        return 1
    if _requested is not None:
        return _requested
    return max(1, min(_openmp.max_threads(), MAX_THREADS))


def _after_fork_in_child():
    """os.register_at_fork hook: kernels in a fork child run on one thread."""
    global _in_fork_child
    _in_fork_child = True


if hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
