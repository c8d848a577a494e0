/* Checks every micro-kernel of src/ukernel.h that this CPU can run against plain loops.
 *
 * Built and run by test_ukernels.py.  Exit status 0 and one "ok <kernel>" line per
 * kernel, or "FAIL ..." lines and status 1.  The import-time dispatch picks only the
 * widest ISA, so without this program the AVX2 and baseline kernels would run on no
 * machine that also has AVX-512.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "ukernel.h"

static int failures = 0;

static double uniform(unsigned *state)
{
    *state = *state * 1103515245u + 12345u;
    return ((*state >> 8) & 0xffff) / 32768.0 - 1.0;
}

static void report(const char *name, double err, double tol)
{
    if (err <= tol) {
        printf("ok %s\n", name);
    } else {
        printf("FAIL %s: max error %g > %g\n", name, err, tol);
        failures++;
    }
}

/* One check of a GEMM kernel (packed or row-pointer A) and one of a dot kernel per
 * element type.  vs = pitch != VL exercises vector rows (gemm_block's row_len). */
#define CHECKS(T, S, TOL)                                                             \
    static void check_gemm_##S(const char *name, ck_gemm_##S gemm,                    \
                               ck_gemm_rows_##S gemm_rows, int mr, int nr, int vl)    \
    {                                                                                 \
        enum { KC = 37, LD = 200 };                                                   \
        static T A[KC * 16], B[KC * LD], C[16 * 80], R[16 * 80], C0[16 * 80], bias[16]; \
        const T *rows[16];                                                            \
        Py_ssize_t boff[KC];                                                          \
        unsigned st = 7;                                                              \
        int pass, i, j, k;                                                            \
        for (i = 0; i < KC * 16; i++) A[i] = (T) uniform(&st);                        \
        for (i = 0; i < KC * LD; i++) B[i] = (T) uniform(&st);                        \
        for (k = 0; k < KC; k++) boff[k] = (k * 5) % 3 + k * LD / 2;                  \
        for (i = 0; i < 16; i++) bias[i] = (T) (uniform(&st) * 4);                     \
        for (pass = 0; pass < 6; pass++) {                                            \
            /* pass 0/1: packed A, contiguous / strided vectors; 2/3: rows, acc;        \
               4: packed A, accumulated, then a bias per row and ReLU (the epilogue);   \
               5: pass 0 with CK_GEMM_PREFETCH, which must not change a bit */          \
            Py_ssize_t vs = pass == 1 ? vl + 3 : vl, ldc = nr + 5;                    \
            double err = 0;                                                           \
            char label[96];                                                           \
            for (i = 0; i < mr; i++) {                                                \
                rows[i] = A + i * KC;                                                 \
                for (j = 0; j < nr; j++) C[i * ldc + j] = R[i * ldc + j] = (T) (i - j); \
            }                                                                         \
            for (i = 0; i < mr; i++)                                                  \
                for (j = 0; j < nr; j++) {                                            \
                    double s = pass == 3 || pass == 4 ? (double) R[i * ldc + j] : 0;  \
                    for (k = 0; k < KC; k++) {                                        \
                        double a = pass < 2 || pass >= 4 ? A[k * mr + i] : A[i * KC + k]; \
                        s += a * B[boff[k] + (j / vl) * vs + j % vl];                 \
                    }                                                                 \
                    if (pass == 4) {                                                  \
                        s += bias[i];                                                 \
                        s = s > 0 ? s : 0;                                            \
                    }                                                                 \
                    R[i * ldc + j] = (T) s;                                           \
                }                                                                     \
            if (pass < 2)                                                             \
                gemm(KC, A, B, boff, vs, C, ldc, 0, NULL);                            \
            else if (pass == 4)                                                       \
                gemm(KC, A, B, boff, vs, C, ldc, CK_GEMM_ACCUMULATE | CK_GEMM_RELU, bias); \
            else if (pass == 5)                                                       \
                gemm(KC, A, B, boff, vs, C, ldc, CK_GEMM_PREFETCH, NULL);             \
            else                                                                      \
                gemm_rows(KC, rows, B, boff, vs, C, ldc, pass == 3, NULL);            \
            for (i = 0; i < mr; i++)                                                  \
                for (j = 0; j < nr; j++)                                              \
                    err = fmax(err, fabs((double) C[i * ldc + j] - R[i * ldc + j]));   \
            if (pass == 0)                                                            \
                memcpy(C0, C, sizeof C);                                              \
            if (pass == 5 && memcmp(C0, C, sizeof C) != 0)                            \
                err = INFINITY; /* the prefetch hint changed a bit */                 \
            snprintf(label, sizeof label, "%s pass %d", name, pass);                  \
            report(label, err, TOL);                                                  \
        }                                                                             \
    }                                                                                 \
    static void check_dot_##S(const char *name, ck_dot_##S dot, int dr, int dc)       \
    {                                                                                 \
        static T data[16][300];                                                       \
        const T *a[16], *b[16];                                                       \
        T out[256];                                                                   \
        unsigned st = 11;                                                             \
        int i, j, p, L;                                                               \
        for (i = 0; i < 16; i++)                                                      \
            for (p = 0; p < 300; p++) data[i][p] = (T) uniform(&st);                  \
        for (i = 0; i < dr; i++) a[i] = data[i];                                      \
        for (j = 0; j < dc; j++) b[j] = data[8 + j] + j;                              \
        for (L = 0; L <= 67; L += 67) {                                               \
            double err = 0;                                                           \
            char label[96];                                                           \
            dot(L, a, b, out);                                                        \
            for (i = 0; i < dr; i++)                                                  \
                for (j = 0; j < dc; j++) {                                            \
                    double s = 0;                                                     \
                    for (p = 0; p < L; p++) s += (double) a[i][p] * b[j][p];          \
                    err = fmax(err, fabs(out[i * dc + j] - s));                       \
                }                                                                     \
            snprintf(label, sizeof label, "%s L=%d", name, L);                        \
            report(label, err, TOL);                                                  \
        }                                                                             \
    }
/* The gathered GEMM kernel (A[i][aoff[k]], B packed nr columns per row) must give the
 * bits of the row-pointer kernel on the same values laid out contiguously, with and
 * without accumulation, and match plain loops. */
#define CHECK_GATHER(T, S, TOL)                                                       \
    static void check_gather_##S(const char *name, ck_gemm_gather_##S gather,         \
                                 ck_gemm_rows_##S gemm_rows, int mr, int nr, int vl)  \
    {                                                                                 \
        enum { KC = 29, SPAN = 400 };                                                 \
        static T src[16 * SPAN], A[16 * KC], B[KC * 64], C[16 * 64], R[16 * 64];      \
        const T *rows[16], *grows[16];                                                \
        Py_ssize_t aoff[KC], boff[KC];                                                \
        unsigned st = 5;                                                              \
        int acc, i, j, k;                                                             \
        for (i = 0; i < 16 * SPAN; i++) src[i] = (T) uniform(&st);                    \
        for (i = 0; i < KC * 64; i++) B[i] = (T) uniform(&st);                        \
        for (k = 0; k < KC; k++) {                                                    \
            aoff[k] = (k * 7) % KC * 13 % (SPAN - 40) + k % 3; /* any order, repeats */ \
            boff[k] = k * nr;                                                         \
        }                                                                             \
        for (i = 0; i < mr; i++) {                                                    \
            grows[i] = src + i * 23; /* rows overlap, as windows of neighbours do */  \
            rows[i] = A + i * KC;                                                     \
            for (k = 0; k < KC; k++) A[i * KC + k] = grows[i][aoff[k]];               \
        }                                                                             \
        for (acc = 0; acc < 2; acc++) {                                               \
            double err = 0;                                                           \
            int same = 1;                                                             \
            char label[96];                                                           \
            for (i = 0; i < mr * nr; i++) C[i] = R[i] = (T) (i % 7 - 3);              \
            gemm_rows(KC, rows, B, boff, vl, R, nr, acc, NULL);                      \
            gather(KC, grows, aoff, B, C, nr, acc, NULL);                             \
            for (i = 0; i < mr; i++)                                                  \
                for (j = 0; j < nr; j++) {                                            \
                    double s = acc ? (double) (((i * nr + j) % 7) - 3) : 0;           \
                    for (k = 0; k < KC; k++) s += (double) grows[i][aoff[k]] * B[k * nr + j]; \
                    err = fmax(err, fabs((double) C[i * nr + j] - s));                \
                    same = same && C[i * nr + j] == R[i * nr + j];                    \
                }                                                                     \
            snprintf(label, sizeof label, "%s accumulate %d", name, acc);             \
            report(label, same ? err : 1e300, TOL);                                   \
        }                                                                             \
    }
CHECK_GATHER(float, s, 1e-4)
CHECK_GATHER(double, d, 1e-12)

/* The gemv kernel (gr rows times one column) must give the bits of the GEMM's
 * row-pointer kernel in column 0, with and without accumulation, for a length with a
 * ragged end. */
#define CHECK_GEMV(T, S)                                                              \
    static void check_gemv_##S(const char *name, ck_gemv_##S gemv,                    \
                               ck_gemm_rows_##S gemm_rows, int mr, int nr, int gr)    \
    {                                                                                 \
        enum { L = 67 };                                                              \
        static T A[16][L], x[L], B[L * 64], C[16 * 64], y[16];                        \
        const T *rows[16];                                                            \
        Py_ssize_t boff[L];                                                           \
        unsigned st = 5;                                                              \
        int acc, i, k, bad;                                                           \
        for (i = 0; i < 16; i++) {                                                    \
            rows[i] = A[i];                                                           \
            for (k = 0; k < L; k++) A[i][k] = (T) uniform(&st);                       \
        }                                                                             \
        for (k = 0; k < L; k++) {                                                     \
            x[k] = (T) uniform(&st);                                                  \
            boff[k] = k * nr;                                                         \
            for (i = 0; i < nr; i++) B[k * nr + i] = i ? (T) 0 : x[k];                \
        }                                                                             \
        for (acc = 0; acc < 2; acc++) {                                               \
            char label[96];                                                           \
            for (i = 0; i < 16; i++) C[i * nr] = y[i] = (T) (0.25 * i);               \
            gemv(L, rows, x, y, acc);                                                 \
            gemm_rows(L, rows, B, boff, 0, C, nr, acc, NULL);                         \
            bad = 0;                                                                  \
            for (i = 0; i < (gr < mr ? gr : mr); i++)                                 \
                bad += y[i] != C[i * nr];                                             \
            snprintf(label, sizeof label, "%s accumulate=%d", name, acc);             \
            report(label, bad ? 1.0 : 0.0, 0.0);                                      \
        }                                                                             \
    }
CHECK_GEMV(float, s)
CHECK_GEMV(double, d)

/* The transpose kernel must copy every element of every shape to its transposed place
 * (whole vector blocks, ragged rows and columns, leading dimensions wider than the
 * shape) and write nothing else. */
#define CHECK_TRANSPOSE(T, S)                                                         \
    static void check_transpose_##S(const char *name, ck_transpose_##S transpose)     \
    {                                                                                 \
        enum { LD = 53 };                                                             \
        static T src[LD * LD], dst[LD * LD];                                          \
        int rows, cols, i, j, bad = 0;                                                \
        for (i = 0; i < LD * LD; i++) src[i] = (T) i;                                 \
        for (rows = 0; rows <= 40; rows += (rows < 20 ? 1 : 7))                       \
            for (cols = 0; cols <= 40; cols += (cols < 20 ? 1 : 9)) {                 \
                for (i = 0; i < LD * LD; i++) dst[i] = (T) -1;                        \
                transpose(src + 3, LD, rows, cols, dst + 1, LD - 2);                  \
                for (j = 0; j < LD; j++)                                              \
                    for (i = 0; i < LD - 2; i++) {                                    \
                        T want = (i < rows && j < cols) ? src[3 + i * LD + j] : (T) -1; \
                        if (j * (LD - 2) + i + 1 < LD * LD)                           \
                            bad += dst[1 + j * (LD - 2) + i] != want;                 \
                    }                                                                 \
                /* a negative ldd: column j lands in row cols - 1 - j */              \
                if (cols == 0) continue;                                              \
                for (i = 0; i < LD * LD; i++) dst[i] = (T) -1;                        \
                transpose(src + 3, LD, rows, cols, dst + 1 + (cols - 1) * (LD - 2),   \
                          -(LD - 2));                                                 \
                for (j = 0; j < LD; j++)                                              \
                    for (i = 0; i < LD - 2; i++) {                                    \
                        T want = (i < rows && j < cols)                               \
                                     ? src[3 + i * LD + cols - 1 - j] : (T) -1;       \
                        if (j * (LD - 2) + i + 1 < LD * LD)                           \
                            bad += dst[1 + j * (LD - 2) + i] != want;                 \
                    }                                                                 \
            }                                                                         \
        report(name, bad ? 1.0 : 0.0, 0.0);                                           \
    }
CHECK_TRANSPOSE(float, s)
CHECK_TRANSPOSE(double, d)
CHECKS(float, s, 1e-4)
CHECKS(double, d, 1e-12)

#define CHECK_ISA(ISA, S, MR, NR, NR4, VL, DR, DC)                                    \
    do {                                                                             \
        check_gemm_##S(#S "_" #ISA "_gemm", ck_##S##_##ISA##_gemm,                   \
                       ck_##S##_##ISA##_gemm_rows, MR, NR, VL);                      \
        check_gemm_##S(#S "_" #ISA "_gemm4", ck_##S##_##ISA##_gemm4,                 \
                       ck_##S##_##ISA##_gemm4_rows, 4, NR4, VL);                     \
        check_gather_##S(#S "_" #ISA "_gemm_gather", ck_##S##_##ISA##_gemm_gather,   \
                         ck_##S##_##ISA##_gemm_rows, MR, NR, VL);                    \
        check_gather_##S(#S "_" #ISA "_gemm4_gather", ck_##S##_##ISA##_gemm4_gather, \
                         ck_##S##_##ISA##_gemm4_rows, 4, NR4, VL);                   \
        check_gemm_##S(#S "_" #ISA "_gemm1", ck_##S##_##ISA##_gemm1,                 \
                       ck_##S##_##ISA##_gemm1_rows, MR, VL, VL);                     \
        check_gather_##S(#S "_" #ISA "_gemm1_gather", ck_##S##_##ISA##_gemm1_gather, \
                         ck_##S##_##ISA##_gemm1_rows, MR, VL, VL);                   \
        check_dot_##S(#S "_" #ISA "_dot", ck_##S##_##ISA##_dot, DR, DC);             \
        check_gemv_##S(#S "_" #ISA "_gemv", ck_##S##_##ISA##_gemv,                   \
                       ck_##S##_##ISA##_gemm_rows, MR, NR, VL);                      \
        check_transpose_##S(#S "_" #ISA "_transpose", ck_##S##_##ISA##_transpose);   \
    } while (0)

int main(void)
{
#ifdef CK_X86_DISPATCH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) {
        CHECK_ISA(avx512, s, 8, 32, 64, 16, 4, 6);
        CHECK_ISA(avx512, d, 8, 16, 32, 8, 4, 6);
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        CHECK_ISA(avx2, s, 6, 16, 24, 8, 3, 4);
        CHECK_ISA(avx2, d, 6, 8, 12, 4, 3, 4);
    }
#endif
#if defined(__GNUC__) || defined(__clang__)
    CHECK_ISA(baseline, s, 4, 12, 12, 4, 3, 4);
    CHECK_ISA(baseline, d, 4, 6, 6, 2, 3, 4);
#else
    check_gemm_s("s_scalar_gemm", ck_s_scalar_gemm, ck_s_scalar_gemm_rows, 4, 4, 4);
    check_gather_s("s_scalar_gemm_gather", ck_s_scalar_gemm_gather, ck_s_scalar_gemm_rows,
                   4, 4, 4);
    check_dot_s("s_scalar_dot", ck_s_scalar_dot, 2, 2);
    check_gemv_s("s_scalar_gemv", ck_s_scalar_gemv, ck_s_scalar_gemm_rows, 4, 4, 4);
    check_gemm_d("d_scalar_gemm", ck_d_scalar_gemm, ck_d_scalar_gemm_rows, 4, 4, 4);
    check_gather_d("d_scalar_gemm_gather", ck_d_scalar_gemm_gather, ck_d_scalar_gemm_rows,
                   4, 4, 4);
    check_dot_d("d_scalar_dot", ck_d_scalar_dot, 2, 2);
    check_gemv_d("d_scalar_gemv", ck_d_scalar_gemv, ck_d_scalar_gemm_rows, 4, 4, 4);
    check_transpose_s("s_scalar_transpose", ck_s_scalar_transpose);
    check_transpose_d("d_scalar_transpose", ck_d_scalar_transpose);
#endif
    return failures != 0;
}
