# cython: language_level=3
"""Element-wise kernels of the layers: activations and the fused activation backward.

Design
------
The forward ReLU and sigmoid are element-wise: they run in place (``out`` may be ``x``)
over contiguous chunks of CHUNK elements shared out by prange (the forward tanh is
NumPy's np.tanh, vectorised for the CPU at run time).  The per-element functions live in
eltwise_math.h, written so that compilers vectorise the loops (the float32 sigmoid
there has its own branch-free exp; float64 uses the C library).  The
backward computes ``grad_z = grad_y * phi'(z)`` from the forward output y (ReLU: y > 0; sigmoid:
y (1 - y); tanh: 1 - y^2) and, in the same pass over grad_y viewed as (N, F, P), the
bias gradient: per filter (sum over n and p) or untied (per filter and position, sum
over n).  With a bias the loop is parallel over filters f, which own their bias
entries, and each sum runs in a fixed order (the order of convkern's
conv_backward_bias: lane p % LANES, lanes folded in halves; untied: n in order), in
double, so the bits do not depend on the thread count.  Without a bias it is parallel
over (n, f) rows.  grad_z is written to ``out``, which may be grad_y itself (each
element is read before it is written).

The SGD step (sgd_update) is one pass over a parameter, its gradient and its momentum
buffer, in chunks as the forward, with the operations and roundings of the NumPy
expressions it replaces (buf = buf * momentum + grad; param -= buf * lr: two roundings
each, no fused multiply-add; the module is built with -ffp-contract=off).
"""

from cython.parallel cimport prange

from fused cimport floating_t

cdef extern from "eltwise_math.h":
    # phi(z) and grad_y * phi'(z) through y, per element (vectorisable; see the header).
    float ck_relu_f(float z) noexcept nogil
    double ck_relu_d(double z) noexcept nogil
    float ck_sigmoid_f(float z) noexcept nogil
    double ck_sigmoid_d(double z) noexcept nogil
    float ck_relu_grad_f(float g, float y) noexcept nogil
    double ck_relu_grad_d(double g, double y) noexcept nogil
    float ck_sigmoid_grad_f(float g, float y) noexcept nogil
    double ck_sigmoid_grad_d(double g, double y) noexcept nogil
    float ck_tanh_grad_f(float g, float y) noexcept nogil
    double ck_tanh_grad_d(double g, double y) noexcept nogil

# Activation codes, in the order of ACTIVATIONS.
cdef enum:
    RELU = 0
    SIGMOID = 1
    TANH = 2

ACTIVATIONS = ("relu", "sigmoid", "tanh")

# Bias modes.
cdef enum:
    NO_BIAS = 0
    TIED = 1
    UNTIED = 2

cdef enum:
    CHUNK = 8192      # elements per forward task
    LANES = 16        # independent double sums of a tied bias gradient (fixed fold order)
    ROW_BLOCK = 1024  # positions of a row done at once (a multiple of LANES; stays in L1)
    BIAS_BLOCK = 256  # positions summed at once by the untied bias gradient


cdef inline void forward_run(const floating_t *x, floating_t *y, Py_ssize_t n,
                             int kind) noexcept nogil:
    """y[i] = phi(x[i]) for i < n (RELU or SIGMOID); y may be x."""
    cdef Py_ssize_t i
    if floating_t is float:
        if kind == RELU:
            for i in range(n):
                y[i] = ck_relu_f(x[i])
        else:
            for i in range(n):
                y[i] = ck_sigmoid_f(x[i])
    else:
        if kind == RELU:
            for i in range(n):
                y[i] = ck_relu_d(x[i])
        else:
            for i in range(n):
                y[i] = ck_sigmoid_d(x[i])


cdef inline void backward_run(const floating_t *gy, const floating_t *y, floating_t *gz,
                              Py_ssize_t n, int kind) noexcept nogil:
    """gz[i] = gy[i] * phi'(z[i]), written through y = phi(z); gz may be gy.

    ReLU: zero where z <= 0, as PyTorch (y = max(z, 0) > 0 exactly when z > 0).
    """
    cdef Py_ssize_t i
    if floating_t is float:
        if kind == RELU:
            for i in range(n):
                gz[i] = ck_relu_grad_f(gy[i], y[i])
        elif kind == SIGMOID:
            for i in range(n):
                gz[i] = ck_sigmoid_grad_f(gy[i], y[i])
        else:
            for i in range(n):
                gz[i] = ck_tanh_grad_f(gy[i], y[i])
    else:
        if kind == RELU:
            for i in range(n):
                gz[i] = ck_relu_grad_d(gy[i], y[i])
        elif kind == SIGMOID:
            for i in range(n):
                gz[i] = ck_sigmoid_grad_d(gy[i], y[i])
        else:
            for i in range(n):
                gz[i] = ck_tanh_grad_d(gy[i], y[i])


cdef void backward_tied(const floating_t *gy, const floating_t *y, floating_t *gz,
                        Py_ssize_t N, Py_ssize_t ld, Py_ssize_t P, int kind,
                        floating_t *bias) noexcept nogil:
    """One filter: gz = gy * phi'(z) on rows n * ld (n < N) of P; bias[0] = sum of gz.

    Position p goes to lane p % LANES in increasing p; the lanes are folded in halves.
    """
    cdef double acc[LANES]
    cdef Py_ssize_t n, p0, pn, pv, p, j, w, off
    for j in range(<Py_ssize_t> LANES):
        acc[j] = 0
    for n in range(N):
        p0 = 0
        while p0 < P:
            pn = min(<Py_ssize_t> ROW_BLOCK, P - p0)
            off = n * ld + p0
            backward_run(gy + off, y + off, gz + off, pn, kind)
            # p0 is a multiple of LANES, so entry p of the block goes to lane p % LANES.
            pv = pn - pn % LANES
            for p in range(pv // LANES):
                for j in range(<Py_ssize_t> LANES):
                    acc[j] += gz[off + p * LANES + j]
            for p in range(pv, pn):
                acc[p - pv] += gz[off + p]
            p0 += pn
    w = LANES // 2
    while w > 0:
        for j in range(w):
            acc[j] += acc[j + w]
        w = w // 2
    bias[0] = <floating_t> acc[0]


cdef void backward_untied(const floating_t *gy, const floating_t *y, floating_t *gz,
                          Py_ssize_t N, Py_ssize_t ld, Py_ssize_t P, int kind,
                          floating_t *bias) noexcept nogil:
    """One filter: gz = gy * phi'(z); bias[p] = sum over n < N of gz[n * ld + p]."""
    cdef double acc[BIAS_BLOCK]
    cdef Py_ssize_t b, n, p0, pn, j, off
    for b in range((P + BIAS_BLOCK - 1) // BIAS_BLOCK):
        p0 = b * BIAS_BLOCK
        pn = min(<Py_ssize_t> BIAS_BLOCK, P - p0)
        for j in range(pn):
            acc[j] = 0
        for n in range(N):
            off = n * ld + p0
            backward_run(gy + off, y + off, gz + off, pn, kind)
            for j in range(pn):
                acc[j] += gz[off + j]
        for j in range(pn):
            bias[p0 + j] = <floating_t> acc[j]


def activation_forward(const floating_t[::1] x not None, floating_t[::1] out not None,
                       int kind, int num_threads):
    """Fill out with phi(x) for kind RELU or SIGMOID (ACTIVATIONS[kind]); out may be x."""
    cdef Py_ssize_t n = x.shape[0], t, lo
    cdef Py_ssize_t tasks = (n + CHUNK - 1) // CHUNK
    if n == 0:
        return
    with nogil:
        for t in prange(tasks, num_threads=max(1, num_threads), schedule="static"):
            lo = t * CHUNK
            forward_run(&x[lo], &out[lo], min(<Py_ssize_t> CHUNK, n - lo), kind)


def activation_backward(const floating_t[:, :, ::1] grad_y not None,
                        const floating_t[:, :, ::1] y not None,
                        floating_t[:, :, ::1] out not None, int kind,
                        floating_t[::1] bias_out not None, int bias_mode, int num_threads):
    """Fill out with grad_y * phi'(z) through y, all (N, F, P); out may be grad_y.

    bias_mode 1 also fills bias_out (F,) with the sums over n and p, bias_mode 2 fills
    bias_out (F * P,) with the sums over n; bias_mode 0 leaves bias_out alone.
    """
    cdef Py_ssize_t N = grad_y.shape[0], F = grad_y.shape[1], P = grad_y.shape[2]
    cdef Py_ssize_t f, t
    cdef int nt = max(1, num_threads)
    if F == 0 or P == 0:
        return
    if N == 0:
        if bias_mode != NO_BIAS:
            bias_out[:] = 0
        return
    with nogil:
        if bias_mode == TIED:
            for f in prange(F, num_threads=nt, schedule="static"):
                backward_tied(&grad_y[0, f, 0], &y[0, f, 0], &out[0, f, 0], N, F * P, P,
                              kind, &bias_out[f])
        elif bias_mode == UNTIED:
            for f in prange(F, num_threads=nt, schedule="static"):
                backward_untied(&grad_y[0, f, 0], &y[0, f, 0], &out[0, f, 0], N, F * P, P,
                                kind, &bias_out[f * P])
        else:
            for t in prange(N * F, num_threads=nt, schedule="static"):
                backward_run(&grad_y[0, 0, 0] + t * P, &y[0, 0, 0] + t * P,
                             &out[0, 0, 0] + t * P, P, kind)


cdef inline void sgd_run(floating_t *p, const floating_t *g, floating_t *b, Py_ssize_t n,
                         floating_t lr, floating_t mu, int mode) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating_t v
    for i in range(n):
        if mode == 0:        # no momentum
            v = g[i]
        elif mode == 1:      # momentum, first step: the buffer starts as the gradient
            v = g[i]
            b[i] = v
        else:
            v = b[i] * mu
            v = v + g[i]
            b[i] = v
        p[i] = p[i] - v * lr


def sgd_update(floating_t[::1] param not None, const floating_t[::1] grad not None,
               floating_t[::1] buf not None, double lr, double momentum, int mode,
               int num_threads):
    """One SGD step in place: v = grad (mode 0), buf = v = grad (mode 1, momentum's
    first step) or buf = v = buf * momentum + grad (mode 2); then param -= v * lr.

    lr and momentum are rounded to the arrays' dtype first, as NumPy does with Python
    floats; buf is unused in mode 0 (may be empty).
    """
    cdef Py_ssize_t n = param.shape[0], t, lo
    cdef Py_ssize_t tasks = (n + CHUNK - 1) // CHUNK
    cdef floating_t lr_t = <floating_t> lr, mu_t = <floating_t> momentum
    cdef floating_t *b = &buf[0] if mode != 0 else NULL
    if n == 0:
        return
    with nogil:
        for t in prange(tasks, num_threads=max(1, num_threads), schedule="static"):
            lo = t * CHUNK
            sgd_run(&param[lo], &grad[lo], b + lo if b != NULL else NULL,
                    min(<Py_ssize_t> CHUNK, n - lo), lr_t, mu_t, mode)
