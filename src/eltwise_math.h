/* Per-element activations and their derivatives for src/_eltwise.pyx, in float32 (_f)
 * and float64 (_d), written as C conditionals of plain values and with float
 * constants, so that compilers vectorise the loops over them (a Cython conditional
 * expression loads only the chosen operand, and Cython writes 0 and 1 as double
 * constants, which makes float code convert to double and back).
 *
 * The float32 exp of the sigmoid is branch-free (the C library's expf is a scalar call
 * of about 20 ns); float64 uses the C library.
 *
 * ck_exp_neg_f(x) = exp(x) for x <= 0 (NaN propagates; below -87.3, where exp(x) is
 * under the smallest normal float, it returns 0): Cephes' expf, x = n ln2 + r with
 * |r| <= ln2 / 2, exp(r) by a degree-6 polynomial, 2^n built in the exponent bits.
 * About 1 ulp.
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

/* grad_y * phi'(z) through y = phi(z), as the NumPy expressions
 * np.where(y > 0, g, 0), g * y * (1 - y) and g * (1 - y * y) (the same bits). */
static inline float ck_relu_grad_f(float g, float y) { return y > 0.0f ? g : 0.0f; }
static inline double ck_relu_grad_d(double g, double y) { return y > 0.0 ? g : 0.0; }
static inline float ck_sigmoid_grad_f(float g, float y) { return g * y * (1.0f - y); }
static inline double ck_sigmoid_grad_d(double g, double y) { return g * y * (1.0 - y); }
static inline float ck_tanh_grad_f(float g, float y) { return g * (1.0f - y * y); }
static inline double ck_tanh_grad_d(double g, double y) { return g * (1.0 - y * y); }

#endif
