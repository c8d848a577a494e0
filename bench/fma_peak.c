/* The machine's float32 FMA peak: independent multiply-add chains, held in registers.
 *
 * bench/fma.py compiles this file at bench time into a shared library and calls
 * fma_run() through ctypes (which releases the GIL, so two Python threads measure
 * two cores). Each ISA version is compiled with a function target attribute and
 * picked at run time with __builtin_cpu_supports, as convkern's micro-kernels are:
 * AVX-512 (16 lanes), AVX2 + FMA (8 lanes), else scalar multiply-add.
 *
 * The chains must cover the FMA latency (4-5 cycles) times the FMA units per core (2),
 * and they, with the two constants, must fit in the vector registers: a spilled chain
 * adds a load and a store to every multiply-add.  AVX-512 has 32 registers and runs 16
 * chains; AVX2 and SSE have 16 and run 12 (16 chains there spilled and measured 61
 * GFLOP/s on a Zen 2 whose convolutions reach 90).
 */
#include <stdint.h>

/* The chains are named variables, not an array, so that the compiler keeps them in
 * registers (bench/fma.py compiles with -O2). */
#define REP12(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define REP16(X) REP12(X) X(12) X(13) X(14) X(15)

/* One ISA's loop: acc_c = acc_c * m + a for every chain (REP: REP12 or REP16),
 * `iters` times. VEC, SET1, MULADD, ADD and FIRST are defined for each ISA just before
 * the expansion. */
#define DEFINE_RUN(NAME, REP)                                        \
    static float NAME(int64_t iters)                                 \
    {                                                                \
        const VEC m = SET1(0.999999f), a = SET1(1e-7f);              \
        REP(DECLARE)                                                 \
        for (int64_t i = 0; i < iters; i++) {                        \
            REP(STEP)                                                \
        }                                                            \
        VEC s = SET1(0.0f);                                          \
        REP(SUM)                                                     \
        return FIRST(s);                                             \
    }
#define DECLARE(c) VEC acc##c = SET1((float)(c));
#define STEP(c) acc##c = MULADD(acc##c, m, a);
#define SUM(c) s = ADD(s, acc##c);

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define VEC __m512
#define SET1 _mm512_set1_ps
#define MULADD _mm512_fmadd_ps
#define ADD _mm512_add_ps
#define FIRST _mm512_cvtss_f32
__attribute__((target("avx512f")))
DEFINE_RUN(run_avx512, REP16)
#undef VEC
#undef SET1
#undef MULADD
#undef ADD
#undef FIRST

#define VEC __m256
#define SET1 _mm256_set1_ps
#define MULADD _mm256_fmadd_ps
#define ADD _mm256_add_ps
#define FIRST _mm256_cvtss_f32
__attribute__((target("avx2,fma")))
DEFINE_RUN(run_avx2, REP12)
#undef VEC
#undef SET1
#undef MULADD
#undef ADD
#undef FIRST
#endif

/* Baseline: one lane per multiply-add (12 independent scalars). */
#define VEC float
#define SET1(v) (v)
#define MULADD(x, m, a) ((x) * (m) + (a))
#define ADD(x, y) ((x) + (y))
#define FIRST(v) (v)
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-vectorize")))  /* keep it one lane */
#endif
DEFINE_RUN(run_scalar, REP12)

/* Lanes of the widest vector this CPU runs: 16 (AVX-512), 8 (AVX2 + FMA) or 1. */
int fma_lanes(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        return 16;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return 8;
#endif
    return 1;
}

/* Run `iters` iterations of 16 (AVX-512) or 12 multiply-adds of fma_lanes() lanes each.
 * Returns the floating-point operations done, 2 * chains * lanes * iters; the result of
 * the arithmetic goes to a volatile sink so the loop is kept. */
volatile float fma_sink;

int64_t fma_run(int64_t iters)
{
    int lanes = fma_lanes(), chains = 12;
    float r;
#if defined(__x86_64__) || defined(__i386__)
    if (lanes == 16) {
        r = run_avx512(iters);
        chains = 16;
    } else if (lanes == 8)
        r = run_avx2(iters);
    else
#endif
        r = run_scalar(iters);
    fma_sink = r;
    return 2 * (int64_t)chains * lanes * iters;
}
