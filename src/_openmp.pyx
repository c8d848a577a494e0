"""Facts about the OpenMP runtime the kernels were built with."""

from openmp_shim cimport ck_omp_max_threads, ck_openmp_enabled


def openmp_enabled():
    """Return True if the kernels were compiled with OpenMP."""
    return bool(ck_openmp_enabled())


def max_threads():
    """Return OpenMP's default thread count (honours OMP_NUM_THREADS); 1 without OpenMP."""
    return ck_omp_max_threads()
