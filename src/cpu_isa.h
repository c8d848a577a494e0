/* The one CPU dispatcher of convkern's kernels (GEMM and dot micro-kernels, max-pool
 * rows): which instruction-set level they run at.
 *
 * Levels, each a superset of the one before:
 *   CK_ISA_BASELINE  the build's target (SSE2 on x86-64; NEON on aarch64; plain C elsewhere)
 *   CK_ISA_AVX2      AVX2 + FMA
 *   CK_ISA_AVX512    AVX-512 F, BW, DQ and VL (every AVX-512 CPU since Skylake-SP)
 * Wheels are compiled for the baseline (no -march=native); the AVX2 and AVX-512 kernels
 * are compiled with per-function target attributes, under gcc and clang alike
 * (CK_X86_DISPATCH), and chosen here once, when a kernel module is imported.
 *
 * ck_isa_level() is the CPU's widest level, lowered to CONVKERN_ISA when that names a
 * level the CPU has.  convkern/_isa.py reads the same variable at `import convkern` and
 * raises ImportError for an unknown name or a level the CPU lacks, so a bad value never
 * runs; here it only ever lowers the level, never raises it past the CPU.
 */
#ifndef CONVKERN_CPU_ISA_H
#define CONVKERN_CPU_ISA_H

#include <stdlib.h>
#include <string.h>

enum { CK_ISA_BASELINE = 0, CK_ISA_AVX2 = 1, CK_ISA_AVX512 = 2, CK_ISA_COUNT = 3 };

static const char *const ck_isa_names[CK_ISA_COUNT] = {"baseline", "avx2", "avx512"};

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CK_X86_DISPATCH 1
#endif

/* The widest level the running CPU supports. */
static int ck_cpu_isa(void)
{
#ifdef CK_X86_DISPATCH
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")))
        return CK_ISA_BASELINE;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
        return CK_ISA_AVX512;
    return CK_ISA_AVX2;
#else
    return CK_ISA_BASELINE;
#endif
}

/* The level the kernels use: the CPU's, or the lower one CONVKERN_ISA names. */
static int ck_isa_level(void)
{
    int cpu = ck_cpu_isa(), level;
    const char *want = getenv("CONVKERN_ISA");
    if (want == NULL || want[0] == '\0')
        return cpu;
    for (level = 0; level < cpu; level++)
        if (strcmp(want, ck_isa_names[level]) == 0)
            return level;
    return cpu;
}

#endif /* CONVKERN_CPU_ISA_H */
