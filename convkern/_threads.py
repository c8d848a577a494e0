"""The number of threads the compiled kernels use."""

from . import _openmp
from ._validation import integer

__all__ = ["set_num_threads", "get_num_threads"]

_requested = None


def set_num_threads(n):
    """Use ``n`` threads in every following kernel call.

    Parameters
    ----------
    n : int or None
        A positive thread count, or None to return to OpenMP's default (which honours
        ``OMP_NUM_THREADS``).  Without OpenMP the kernels always run on one thread.
    """
    global _requested
    _requested = None if n is None else integer("n", n, 1)


def get_num_threads():
    """Return the thread count the kernels use: the last ``set_num_threads``, else OpenMP's default."""
    if not _openmp.openmp_enabled():
        return 1
    return _requested if _requested is not None else _openmp.max_threads()
