# The bias gradient: sums of grad_y per filter (or per filter and position), in double
# and in a fixed order.  Included by _conv.pyx.


cdef enum:
    BIAS_BLOCK = 256  # positions summed at once by the untied bias gradient


cdef extern from "bias_sum.h":
    float ck_bias_sum_f(const float *gy, Py_ssize_t N, Py_ssize_t ld, Py_ssize_t P) noexcept nogil
    double ck_bias_sum_d(const double *gy, Py_ssize_t N, Py_ssize_t ld,
                         Py_ssize_t P) noexcept nogil
    double ck_bias_sum_f_double(const float *gy, Py_ssize_t N, Py_ssize_t ld,
                                Py_ssize_t P) noexcept nogil
    double ck_bias_sum_d_double(const double *gy, Py_ssize_t N, Py_ssize_t ld,
                                Py_ssize_t P) noexcept nogil


cdef inline double row_sum(const floating_t *row, Py_ssize_t P) noexcept nogil:
    """sum over p < P of row[p], in double, in bias_sum's fixed order (not rounded)."""
    if floating_t is float:
        return ck_bias_sum_f_double(row, 1, P, P)
    else:
        return ck_bias_sum_d_double(row, 1, P, P)


cdef inline void bias_sum(const floating_t *gy, Py_ssize_t N, Py_ssize_t ld, Py_ssize_t P,
                          floating_t *out) noexcept nogil:
    """out[0] = sum over n < N, p < P of gy[n * ld + p], in double, in a fixed order
    (bias_sum.h: position p to lane p % 16, the lanes folded in halves)."""
    if floating_t is float:
        out[0] = ck_bias_sum_f(gy, N, ld, P)
    else:
        out[0] = ck_bias_sum_d(gy, N, ld, P)


cdef void bias_sum_untied(const floating_t *gy, Py_ssize_t N, Py_ssize_t ld, Py_ssize_t P,
                          floating_t *out) noexcept nogil:
    """out[p] = sum over n < N of gy[n * ld + p], in double, for p < P."""
    cdef double acc[BIAS_BLOCK]
    cdef Py_ssize_t b, n, p0, pn, j
    for b in range((P + BIAS_BLOCK - 1) // BIAS_BLOCK):
        p0 = b * BIAS_BLOCK
        pn = min(<Py_ssize_t> BIAS_BLOCK, P - p0)
        for j in range(pn):
            acc[j] = 0
        for n in range(N):
            for j in range(pn):
                acc[j] += gy[n * ld + p0 + j]
        for j in range(pn):
            out[p0 + j] = <floating_t> acc[j]


def conv_backward_bias(const floating_t[:, :, ::1] grad_y not None,
                       floating_t[::1] out not None, bint untied, int num_threads):
    """Fill out with the bias gradient of grad_y viewed as (N, F, P).

    out is (F,) for a bias per filter, or (F * P,) for an untied bias.  Sums over the
    batch and the positions run in a fixed order, in double precision.
    """
    cdef Py_ssize_t N = grad_y.shape[0], F = grad_y.shape[1], P = grad_y.shape[2]
    cdef Py_ssize_t f
    cdef int nt = max(1, num_threads)
    if N == 0 or F == 0 or P == 0:
        out[:] = 0
        return
    with nogil:
        for f in prange(F, num_threads=nt, schedule="static"):
            if untied:
                bias_sum_untied(&grad_y[0, f, 0], N, F * P, P, &out[f * P])
            else:
                bias_sum(&grad_y[0, f, 0], N, F * P, P, &out[f])
