/* cuda_attention.cuh - the attention kernels' shared argument block
 * (cuda_attention.cu: decode / CUDA-core tiles; cuda_attention_mma.cu:
 * prefill on tensor cores). */
#ifndef LMX_CUDA_ATTENTION_CUH
#define LMX_CUDA_ATTENTION_CUH

#include "backend/cuda/cuda_common.cuh"

struct attn_args {
    float *out, *part;
    const float *q;
    const void *k, *v;
    const int64_t *dpos; /* non-NULL in a static decode graph: pos0 from device memory */
    int H, Hkv, hd, vd, window, nsplit;
    int64_t qs0, qs1, ks0, ks1, vs0, vs1, pos0, chunk;
    float scale, cap;
    /* batch rows (ATTENTION ip[2], core/op_rows.h): rows > 1 only on the
     * tensor-core prefill path (grid z = row); rs = key rows per batch row */
    int rows;
    int64_t rs;
};

/* Prefill (T query rows, a.rows batch rows of them) on tensor cores, flash style; false when the shape,
 * cache dtype or card is not one it takes (the caller falls back). exact:
 * q, k, p, v each split into bf16 hi + lo and three products summed (~1e-5
 * of the f32 reference); otherwise one product of the rounded operands. */
bool cuda_attn_prefill_mma(const lmx_cuda_ctx *c, const attn_args &a, int64_t T, int kdt, bool exact);

/* Decode (any T) with each KV row read once per GQA group
 * (cuda_attention_gqa.cu): ok = the shape, dtype and 16-byte alignment it
 * takes; chunk = keys per split (like cuda_attn_chunk, by 256-key bucket);
 * launch writes out (nsplit 1) or the partials attn_combine_k merges. */
bool cuda_attn_gqa_ok(const attn_args &a, int kdt);
int64_t cuda_attn_gqa_chunk(const lmx_cuda_ctx *c, int64_t base, int64_t nmax, int kdt, int hd);
bool cuda_attn_gqa_launch(const lmx_cuda_ctx *c, const attn_args &a, int64_t T, int kdt); /* true: merged too */

#endif
