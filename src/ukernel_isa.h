/* The micro-kernels of one element type on one ISA, instantiated by ukernel.h.
 *
 * Parameters (macros): CKI_S (s or d), CKI_T, CKI_ISA (a name: avx512, avx2, baseline),
 * CKI_ATTR (a target attribute or nothing), CKI_VL (elements per vector), CKI_MR and
 * CKI_NV (the wide GEMM block, MR x NV vectors), CKI_NV4 (the narrow GEMM block:
 * 4 x NV4 vectors, for products with at most 4 rows), CKI_DR and CKI_DC (the dot
 * block).  Defines
 * ck_<S>_<ISA>_{gemm,gemm_rows,gemm_gather,gemm_gather_skip,gemm4,...,gemm1,...,dot,gemv,
 * transpose} (gemm4 and gemm1 with the same four variants) (gemm1: MR x one vector, for products
 * with at most one vector of columns) and ck_<S>_<ISA>_select(wide, narrow, one), which
 * fills the three kernel sets.
 */
#define CKI_CAT2(a, b, c, d) a##_##b##_##c##_##d
#define CKI_CAT(a, b, c, d) CKI_CAT2(a, b, c, d)
#define CKI_FN(kind) CKI_CAT(ck, CKI_S, CKI_ISA, kind)
#define CKI_KT2(s) ck_kernels_##s
#define CKI_KT(s) CKI_KT2(s)
#define CKI_STR2(x) #x
#define CKI_STR(x) CKI_STR2(x)

/* the wide block, the narrow one (4 rows) and the one-vector one, each in its four A
 * variants */
#define CKG_PACKED CKI_FN(gemm)
#define CKG_ROWS CKI_FN(gemm_rows)
#define CKG_GATHER CKI_FN(gemm_gather)
#define CKG_GATHER_SKIP CKI_FN(gemm_gather_skip)
#define CKG_MR CKI_MR
#define CKG_NV CKI_NV
#include "ukernel_gemm_shape.h"
#define CKG_PACKED CKI_FN(gemm4)
#define CKG_ROWS CKI_FN(gemm4_rows)
#define CKG_GATHER CKI_FN(gemm4_gather)
#define CKG_GATHER_SKIP CKI_FN(gemm4_gather_skip)
#define CKG_MR 4
#define CKG_NV CKI_NV4
#include "ukernel_gemm_shape.h"
#define CKG_PACKED CKI_FN(gemm1)
#define CKG_ROWS CKI_FN(gemm1_rows)
#define CKG_GATHER CKI_FN(gemm1_gather)
#define CKG_GATHER_SKIP CKI_FN(gemm1_gather_skip)
#define CKG_MR CKI_MR
#define CKG_NV 1
#include "ukernel_gemm_shape.h"
#define UKD_NAME CKI_FN(dot)
#define UK_T CKI_T
#define UK_IT CKI_IT
#define UK_VL CKI_VL
#define UKD_R CKI_DR
#define UKD_C CKI_DC
#define UK_ATTR CKI_ATTR
#include "ukernel_dot_template.h"
#define UKG_NAME CKI_FN(gemv)
#define UK_T CKI_T
#define UK_IT CKI_IT
#define UK_VL CKI_VL
#define UK_ATTR CKI_ATTR
#include "ukernel_gemv_template.h"
#define UKT_NAME CKI_FN(transpose)
#define UK_T CKI_T
#define UK_IT CKI_IT
#define UK_VL CKI_VL
#define UK_ATTR CKI_ATTR
#include "ukernel_transpose_template.h"

static void CKI_FN(select)(CKI_KT(CKI_S) *wide, CKI_KT(CKI_S) *narrow, CKI_KT(CKI_S) *one)
{
    wide->gemm = CKI_FN(gemm);
    wide->gemm_rows = CKI_FN(gemm_rows);
    wide->gemm_gather = CKI_FN(gemm_gather);
    wide->gemm_gather_skip = CKI_FN(gemm_gather_skip);
    wide->mr = CKI_MR;
    wide->nr = CKI_NV * CKI_VL;
    narrow->gemm = CKI_FN(gemm4);
    narrow->gemm_rows = CKI_FN(gemm4_rows);
    narrow->gemm_gather = CKI_FN(gemm4_gather);
    narrow->gemm_gather_skip = CKI_FN(gemm4_gather_skip);
    narrow->mr = 4;
    narrow->nr = CKI_NV4 * CKI_VL;
    one->gemm = CKI_FN(gemm1);
    one->gemm_rows = CKI_FN(gemm1_rows);
    one->gemm_gather = CKI_FN(gemm1_gather);
    one->gemm_gather_skip = CKI_FN(gemm1_gather_skip);
    one->mr = CKI_MR;
    one->nr = CKI_VL;
    wide->dot = narrow->dot = one->dot = CKI_FN(dot);
    wide->gemv = narrow->gemv = one->gemv = CKI_FN(gemv);
    wide->transpose = narrow->transpose = one->transpose = CKI_FN(transpose);
    wide->gr = narrow->gr = one->gr = CKI_VL;
    wide->vl = narrow->vl = one->vl = CKI_VL;
    wide->dr = narrow->dr = one->dr = CKI_DR;
    wide->dc = narrow->dc = one->dc = CKI_DC;
    wide->name = narrow->name = one->name = CKI_STR(CKI_ISA);
}

#undef CKI_CAT2
#undef CKI_CAT
#undef CKI_FN
#undef CKI_KT2
#undef CKI_KT
#undef CKI_STR2
#undef CKI_STR
#undef CKI_S
#undef CKI_T
#undef CKI_IT
#undef CKI_ISA
#undef CKI_ATTR
#undef CKI_VL
#undef CKI_MR
#undef CKI_NV
#undef CKI_NV4
#undef CKI_DR
#undef CKI_DC
