# Stub for the compiled module built from src/_openmp.pyx.

def openmp_enabled() -> bool:
    """Return True if the kernels were compiled with OpenMP."""

def max_threads() -> int:
    """Return OpenMP's default thread count (honours OMP_NUM_THREADS); 1 without OpenMP."""
