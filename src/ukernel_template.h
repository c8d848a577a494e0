/* One GEMM micro-kernel, instantiated by ukernel.h once per element type and ISA.
 *
 * Computes the MR x NR block  C (+)= A * B  where
 *   A is packed: A[k * MR + i] for row i of the block and reduction index k < kc, or,
 *     when UK_AROWS is defined, given as MR row pointers: A[i][k] (rows read in place),
 *     or, when UK_AGATHER is defined, MR row pointers and one offset per reduction
 *     index: A[i][aoff[k]] (a channels-last input's windows read in place, each k a
 *     (channel, tap) pair at its own offset from the window's start); B is then packed,
 *     row k at B + k * NV * VL (no boff, no vs: one load and one register fewer per
 *     step, 10% faster in L1 on an AVX-512 Xeon); or, when UK_AGATHER_SKIP is defined,
 *     gathered through one pair of offsets per step, A[i][aoff[2 k]] and B's row at
 *     B + aoff[2 k + 1] (a chosen subset of a packed block's rows: the taps that read
 *     the window's input, not its zero padding),
 *   B row k starts at B + boff[k], and its vector v (columns v * VL .. v * VL + VL - 1
 *     of the block, v < NV) at B + boff[k] + v * vs: vs = VL for a contiguous row (an
 *     im2col tile has boff[k] = k * ld; a padded input slab has one offset per kernel
 *     tap), or the slab's row pitch when each vector is one output row,
 *   C is row-major with leading dimension ldc.
 * flags & CK_GEMM_PREFETCH (B's rows in place, vs = VL: contiguous rows) asks, at each
 * reduction step, for the lines of B's row k two blocks of columns ahead (into L2): the
 * next-but-one call's, when the caller walks a row block by block.  Rows far apart in
 * memory are one stream each, and a product of more rows than the hardware's stream
 * prefetchers track (a 1x1 layer's 96 input channels) otherwise waits on memory at every
 * row.  A hint only: no value changes.
 * flags & CK_GEMM_ACCUMULATE adds the block to C, otherwise it overwrites C; then, the
 * epilogue of a product's last reduction block, bias (when not NULL) adds bias[i] to row
 * i and flags & CK_GEMM_RELU applies ReLU (v <= 0 becomes +0, NaN stays): the operations
 * and their order of the separate pass that they replace (conv_forward.pxi's copy_out),
 * so the same bits.  The accumulators live in
 * MR * NV vector registers; every reduction runs k = 0, 1, ... in order, so a given
 * binary gives the same bits on every call and for any thread count.
 *
 * Parameters (macros): UK_NAME, UK_T, UK_IT (the integer of UK_T's size), UK_VL
 * (elements per vector), UK_MR, UK_NV,
 * UK_ATTR (a target attribute or nothing) and optionally UK_AROWS or UK_AGATHER (which
 * adds the parameter aoff after A).
 */
#if defined(UK_AGATHER_SKIP)
#define UK_A_TYPE const UK_T *const *restrict
#define UK_A_AT(k, i) A[i][aoff[2 * (k)]]
#define UK_A_OFFSETS , const Py_ssize_t *restrict aoff
#define UK_B_AT(k, v) (B + aoff[2 * (k) + 1] + (v) * UK_VL)
#define UK_B_OFFSETS
#elif defined(UK_AGATHER)
#define UK_A_TYPE const UK_T *const *restrict
#define UK_A_AT(k, i) A[i][aoff[k]]
#define UK_A_OFFSETS , const Py_ssize_t *restrict aoff
#define UK_B_AT(k, v) (B + (k) * (UK_NV * UK_VL) + (v) * UK_VL)
#define UK_B_OFFSETS
#elif defined(UK_AROWS)
#define UK_A_TYPE const UK_T *const *restrict
#define UK_A_AT(k, i) A[i][k]
#define UK_A_OFFSETS
#else
#define UK_A_TYPE const UK_T *restrict
#define UK_A_AT(k, i) A[(k) * UK_MR + (i)]
#define UK_A_OFFSETS
#endif
#ifndef UK_B_AT
#define UK_B_AT(k, v) (B + boff[k] + (v) * vs)
#define UK_B_NEXT(k, v) (B + boff[k] + (2 * UK_NV + (v)) * UK_VL)
#define UK_B_OFFSETS , const Py_ssize_t *restrict boff, Py_ssize_t vs
#endif
static UK_ATTR void UK_NAME(Py_ssize_t kc, UK_A_TYPE A UK_A_OFFSETS,
                            const UK_T *restrict B UK_B_OFFSETS, UK_T *restrict C,
                            Py_ssize_t ldc, int flags, const UK_T *restrict bias)
{
    typedef UK_T vec_t __attribute__((vector_size(UK_VL * sizeof(UK_T))));
    typedef UK_IT ivec_t __attribute__((vector_size(UK_VL * sizeof(UK_T))));
    vec_t acc[UK_MR][UK_NV];
    const vec_t zero = {0};
    const int accumulate = flags & CK_GEMM_ACCUMULATE, relu = flags & CK_GEMM_RELU;
    int i, v;
    Py_ssize_t k;
#pragma GCC unroll 16
    for (i = 0; i < UK_MR; i++)
#pragma GCC unroll 8
        for (v = 0; v < UK_NV; v++)
            acc[i][v] = zero;
/* One reduction step: B's row k times A's column k into the accumulators. */
#define UK_STEP(k)                                                                     \
    do {                                                                               \
        vec_t b[UK_NV];                                                                \
        _Pragma("GCC unroll 8") for (v = 0; v < UK_NV; v++)                            \
            memcpy(&b[v], UK_B_AT(k, v), sizeof(vec_t));                               \
        _Pragma("GCC unroll 16") for (i = 0; i < UK_MR; i++) {                         \
            const vec_t a = UK_A_AT(k, i) - zero; /* a broadcast: x - 0 == x, folds */ \
            _Pragma("GCC unroll 8") for (v = 0; v < UK_NV; v++)                        \
                acc[i][v] += a * b[v];                                                 \
        }                                                                              \
    } while (0)
#ifdef UK_B_NEXT
    if (flags & CK_GEMM_PREFETCH) {
#pragma GCC unroll 2
        for (k = 0; k < kc; k++) {
#pragma GCC unroll 8
            for (v = 0; v < UK_NV; v++)
                __builtin_prefetch(UK_B_NEXT(k, v), 0, 2);
            UK_STEP(k);
        }
    } else
#endif
#pragma GCC unroll 2
        for (k = 0; k < kc; k++)
            UK_STEP(k);
#undef UK_STEP
#pragma GCC unroll 16
    for (i = 0; i < UK_MR; i++) {
#pragma GCC unroll 8
        for (v = 0; v < UK_NV; v++) {
            UK_T *c = C + i * ldc + v * UK_VL;
            if (accumulate) {
                vec_t old;
                memcpy(&old, c, sizeof(vec_t));
                acc[i][v] += old;
            }
            if (bias != NULL)
                acc[i][v] += bias[i] - zero;
            if (relu)
                acc[i][v] = (vec_t) ((ivec_t) acc[i][v] & ~(ivec_t) (acc[i][v] <= zero));
            memcpy(c, &acc[i][v], sizeof(vec_t));
        }
    }
}

#undef UK_A_TYPE
#undef UK_A_AT
#undef UK_A_OFFSETS
#undef UK_B_AT
#undef UK_B_NEXT
#undef UK_B_OFFSETS
#undef UK_AROWS
#undef UK_AGATHER
#undef UK_AGATHER_SKIP
#undef UK_NAME
#undef UK_T
#undef UK_IT
#undef UK_VL
#undef UK_MR
#undef UK_NV
#undef UK_ATTR
