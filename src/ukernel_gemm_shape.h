/* The four GEMM micro-kernels of one block shape (ukernel_template.h: A packed, A read
 * through row pointers, A gathered through row pointers and offsets, and A and B's rows
 * gathered through pairs of offsets), instantiated by ukernel_isa.h once per shape.
 *
 * Parameters (macros, undefined at the end): CKG_PACKED, CKG_ROWS, CKG_GATHER and
 * CKG_GATHER_SKIP (the four functions' names), CKG_MR and CKG_NV (the block: MR rows x
 * NV vectors); and ukernel_isa.h's CKI_T, CKI_IT, CKI_VL and CKI_ATTR (the template's
 * parameters from them: ukernel_gemm_params.h).
 */
#define UK_NAME CKG_PACKED
#include "ukernel_gemm_params.h"
#include "ukernel_template.h"
#define UK_NAME CKG_ROWS
#define UK_AROWS 1
#include "ukernel_gemm_params.h"
#include "ukernel_template.h"
#define UK_NAME CKG_GATHER
#define UK_AGATHER 1
#include "ukernel_gemm_params.h"
#include "ukernel_template.h"
#define UK_NAME CKG_GATHER_SKIP
#define UK_AGATHER_SKIP 1
#include "ukernel_gemm_params.h"
#include "ukernel_template.h"

#undef CKG_PACKED
#undef CKG_ROWS
#undef CKG_GATHER
#undef CKG_GATHER_SKIP
#undef CKG_MR
#undef CKG_NV
