/* cuda_vjp.cuh - the CUDA backend's vjps (lmx_backend.vjps, core/backend.h).
 *
 * Contract (core/tape.h, backend.h): the node's arrays are the forward's
 * device arrays (row-strided views exactly as the forward kernels take them),
 * dout is dense f32 device memory of out's shape, each non-NULL dsrc[i] is a
 * dense f32 device array of src[i]'s shape that the vjp ADDS into. What a
 * vjp does not cover returns LMX_ERR_UNSUPPORTED with a one-line message
 * (the tape has no host fallback for device nodes). The math mirrors the
 * reference vjps in src/core/vjp*.c; precision notes are in each file. */
#ifndef LMX_CUDA_VJP_CUH
#define LMX_CUDA_VJP_CUH

#include "backend/cuda/cuda_common.cuh"

/* The table indexed by lmx_op (NULL: no CUDA vjp), filled on first use. */
const lmx_vjp_kernel_fn *lmx_cuda_vjp_table(void);
/* lmx_backend.vjp_overwrites: the sources whose dsrc these vjps write whole when n->fresh says so. */
uint32_t lmx_cuda_vjp_overwrites(const lmx_backend *b, const lmx_node *n);

lmx_status lmx_cuda_vjp_get_rows(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool);
lmx_status lmx_cuda_vjp_matmul(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool);
lmx_status lmx_cuda_vjp_rms_norm(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool);
lmx_status lmx_cuda_vjp_layer_norm(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool);
lmx_status lmx_cuda_vjp_rope(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool);
lmx_status lmx_cuda_vjp_attention(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool);
/* The tensor-core attention vjp (cuda_vjp_attention_mma.cu): *done = false when the node is not one it covers
 * (LMX_CUDA_EXACT=1, soft-cap, non-f32 q/k/v, head dims other than 64/128); the caller then runs the SGEMM vjp. */
lmx_status cuda_vjp_attention_mma(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool,
                                  bool *done);
lmx_status lmx_cuda_vjp_binary(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool);
lmx_status lmx_cuda_vjp_unary(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool);
lmx_status lmx_cuda_vjp_cross_entropy(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool);
/* The forward kernel of LMX_OP_CROSS_ENTROPY (cuda_cross_entropy.cu). */
lmx_status lmx_cuda_cross_entropy(const lmx_node *n, lmx_pool *pool);
lmx_status lmx_cuda_vjp_softmax(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool);

/* The optimizer update (cuda_optim.cu; lmx_backend.optim_step). */
lmx_status lmx_cuda_optim_step(lmx_backend *b, const struct lmx_optim_step_args *a);
/* DoRA's inverse row norms (cuda_dora.cu; lmx_backend.dora_norms). */
lmx_status lmx_cuda_dora_norms(lmx_backend *b, const struct lmx_dora_norm_args *a);

/* dst[c] += Σ_r src[r·srs + c] (r < R, c < C), all f32 device memory: the
 * reduction of a one-row broadcast (bias, norm weights). */
lmx_status cuda_vjp_colsum_add(lmx_cuda_ctx *c, float *dst, const float *src, int64_t R, int64_t C, int64_t srs);

static inline unsigned cuda_vjp_blocks(int64_t n) {
    int64_t b = (n + 255) / 256;
    return (unsigned)(b < 8192 ? (b > 0 ? b : 1) : 8192);
}

/* *p = v for a fresh dsrc (n->fresh, the tape's uninitialised memory), else *p += v. */
__device__ __forceinline__ void vjp_put(float *p, float v, bool fresh) { *p = fresh ? v : *p + v; }

#define CUDA_VJP_LOOP(i, n) \
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); i += (int64_t)gridDim.x * blockDim.x)

#endif
