/* cuda_lora.cuh - LoRA factor kernels (cuda_lora.cu): f32 adapter factors of rank 8 or 16.
 * Each entry sets *done = false (and launches nothing) for a node it does not cover, or when its switch
 * (LMX_CUDA_LORA_FWD=sgemm, LMX_CUDA_LORA_VJP=sgemm) keeps cuBLAS; the caller then runs the cuBLAS path. */
#ifndef LMX_CUDA_LORA_CUH
#define LMX_CUDA_LORA_CUH

#include "backend/cuda/cuda_common.cuh"

/* MATMUL with f32 W [R, K] (R = 8 or 16), M > 8, no bias: out [M, R] (dense) = x·Wᵀ. */
lmx_status cuda_lora_fwd_a(lmx_cuda_ctx *c, const lmx_node *n, int64_t M, int64_t N, int64_t K, int64_t xs,
                           int64_t os, bool *done);
/* MATMUL_ACC with K = R = 8 or 16 (x = ts dense [M, R], W = B [N, R]): out += fp[0]·x·Wᵀ. */
lmx_status cuda_lora_fwd_acc(lmx_cuda_ctx *c, const lmx_node *n, int64_t M, int64_t N, int64_t K, int64_t xs,
                             int64_t os, bool *done);
/* The vjp of MATMUL / MATMUL_ACC (scale fp[0]) with a factor side of 8 or 16: dsrc[0] added into, or written
 * whole when overwrite; dsrc[1] added into. */
lmx_status cuda_lora_vjp(lmx_cuda_ctx *c, const lmx_node *n, const float *g, lmx_array *dsrc[], int64_t M,
                         int64_t N, int64_t K, int64_t xs, bool overwrite, bool *done);
/* lmx_cuda_vjp_matmul (MATMUL and MATMUL_ACC) with dsrc[0] written whole when overwrite != 0 instead of added
 * into (cuda_vjp_matmul.cu): for the tape's fresh sources, and tests/gpu/test_cuda_lora.c (C linkage). */
extern "C" lmx_status lmx_cuda_vjp_matmul_ex(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[],
                                             lmx_pool *pool, int overwrite);
/* The switches, read once per process: 1 = cuBLAS. */
int cuda_lora_fwd_off(void);
int cuda_lora_vjp_off(void);

#endif
