/* ukernel_template.h's parameters for one GEMM block shape, from ukernel_isa.h's CKI_T,
 * CKI_IT, CKI_VL and CKI_ATTR and ukernel_gemm_shape.h's CKG_MR and CKG_NV; included
 * before each of ukernel_gemm_shape.h's instantiations (the template undefines them). */
#define UK_T CKI_T
#define UK_IT CKI_IT
#define UK_VL CKI_VL
#define UK_MR CKG_MR
#define UK_NV CKG_NV
#define UK_ATTR CKI_ATTR
