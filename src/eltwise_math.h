/* Per-element activations and their derivatives for src/_eltwise.pyx, in float32 (_f)
 * and float64 (_d), written as C conditionals of plain values and with float
 * constants, so that compilers vectorise the loops over them (a Cython conditional
 * expression loads only the chosen operand, and Cython writes 0 and 1 as double
 * constants, which makes float code convert to double and back).
 *
 * The float32 exp and tanh are branch-free (the C library's expf and tanhf are scalar
 * calls of 20-50 ns); float64 uses the C library.
 *
 * ck_exp_neg_f(x) = exp(x) for x <= 0 (NaN propagates; below -87.3, where exp(x) is
 * under the smallest normal float, it returns 0): Cephes' expf, x = n ln2 + r with
 * |r| <= ln2 / 2, exp(r) by a degree-6 polynomial, 2^n built in the exponent bits.
 * About 1 ulp.
 *
 * ck_tanh_f(x): Cephes' tanhf: x + x^3 P(x^2) for |x| < 0.625, otherwise
 * sign(x) (1 - e) / (1 + e) with e = exp(-2|x|). About 2 ulp.
 */
#ifndef CK_ELTWISE_MATH_H
#define CK_ELTWISE_MATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float ck_exp_neg_f(float x)
{
    const float lo = -87.33654f;             /* log(FLT_MIN) */
    float xc = x < lo ? lo : x;              /* NaN stays NaN */
    /* n = round(x / ln2): truncation of a value <= 0.5 rounds half away */
    int32_t n = (int32_t)(xc * 1.44269504088896341f - 0.5f);
    float fn = (float)n;
    float r = xc - fn * 0.693359375f;        /* ln2 in two parts, exact products */
    r = r - fn * -2.12194440e-4f;
    float r2 = r * r;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r2 + r + 1.0f;
    /* 2^n for n in [-126, 0]: a normal float; n is garbage only when x is NaN, and
     * p is then NaN. */
    int32_t bits = (n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    float e = p * scale;
    return x < lo ? 0.0f : e;
}

static inline float ck_tanh_f(float x)
{
    float a = x < 0 ? -x : x;
    /* small |x|: the odd polynomial */
    float z = x * x;
    float q = -5.70498872745e-3f;
    q = q * z + 2.06390887954e-2f;
    q = q * z - 5.37397155531e-2f;
    q = q * z + 1.33314422036e-1f;
    q = q * z - 3.33332819422e-1f;
    float small = q * z * x + x;
    /* larger |x|: through exp(-2|x|) <= exp(-1.25), no cancellation */
    float e = ck_exp_neg_f(-2.0f * a);
    float t = (1.0f - e) / (1.0f + e);
    float large = x < 0 ? -t : t;
    return a < 0.625f ? small : large;
}

/* ReLU as np.maximum(z, 0): NaN and -0.0 pass through. */
static inline float ck_relu_f(float z) { return z < 0.0f ? 0.0f : z; }
static inline double ck_relu_d(double z) { return z < 0.0 ? 0.0 : z; }

/* Sigmoid without overflow: e = exp(-|z|); 1 / (1 + e) for z >= 0, e / (1 + e) below. */
static inline float ck_sigmoid_f(float z)
{
    float e = ck_exp_neg_f(z < 0.0f ? z : -z);
    float r = 1.0f / (1.0f + e);
    return z >= 0.0f ? r : e * r;
}

static inline double ck_sigmoid_d(double z)
{
    double e = exp(-fabs(z));
    double r = 1.0 / (1.0 + e);
    return z >= 0.0 ? r : e * r;
}

static inline double ck_tanh_d(double z) { return tanh(z); }

/* grad_y * phi'(z) through y = phi(z), as the NumPy expressions
 * np.where(y > 0, g, 0), g * y * (1 - y) and g * (1 - y * y) (the same bits). */
static inline float ck_relu_grad_f(float g, float y) { return y > 0.0f ? g : 0.0f; }
static inline double ck_relu_grad_d(double g, double y) { return y > 0.0 ? g : 0.0; }
static inline float ck_sigmoid_grad_f(float g, float y) { return g * y * (1.0f - y); }
static inline double ck_sigmoid_grad_d(double g, double y) { return g * y * (1.0 - y); }
static inline float ck_tanh_grad_f(float g, float y) { return g * (1.0f - y * y); }
static inline double ck_tanh_grad_d(double g, double y) { return g * (1.0 - y * y); }

#endif
