# OpenMP runtime calls behind an #ifdef _OPENMP shim, so that a build without OpenMP
# still imports (calling omp_* directly would leave an undefined symbol).
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int ck_omp_max_threads(void) { return omp_get_max_threads(); }
    static int ck_openmp_enabled(void) { return 1; }
    #else
    static int ck_omp_max_threads(void) { return 1; }
    static int ck_openmp_enabled(void) { return 0; }
    #endif
    """
    int ck_omp_max_threads() noexcept nogil
    int ck_openmp_enabled() noexcept nogil
