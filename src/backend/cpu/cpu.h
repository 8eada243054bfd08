/*
 * cpu.h - the CPU backend's kernels (plain C11 reference versions).
 *
 * These are the oracle every optimized kernel (AVX2/AVX-512, CUDA) is tested
 * against. Work is split across the pool by output rows/features (ith, nth),
 * each output element computed by exactly one thread in a fixed order, so
 * results do not depend on the thread count.
 */
#ifndef LMX_BACKEND_CPU_H
#define LMX_BACKEND_CPU_H

#include "core/backend.h"

lmx_status lmx_cpu_get_rows(const lmx_node *n, lmx_pool *pool);
lmx_status lmx_cpu_matmul(const lmx_node *n, lmx_pool *pool);
lmx_status lmx_cpu_rms_norm(const lmx_node *n, lmx_pool *pool);
lmx_status lmx_cpu_layer_norm(const lmx_node *n, lmx_pool *pool);
lmx_status lmx_cpu_rope(const lmx_node *n, lmx_pool *pool);
lmx_status lmx_cpu_attention(const lmx_node *n, lmx_pool *pool);
lmx_status lmx_cpu_add(const lmx_node *n, lmx_pool *pool);
lmx_status lmx_cpu_mul(const lmx_node *n, lmx_pool *pool);
lmx_status lmx_cpu_scale(const lmx_node *n, lmx_pool *pool);
lmx_status lmx_cpu_act(const lmx_node *n, lmx_pool *pool);
lmx_status lmx_cpu_softcap(const lmx_node *n, lmx_pool *pool);
lmx_status lmx_cpu_copy(const lmx_node *n, lmx_pool *pool);
lmx_status lmx_cpu_softmax(const lmx_node *n, lmx_pool *pool);
lmx_status lmx_cpu_cross_entropy(const lmx_node *n, lmx_pool *pool); /* cpu_cross_entropy.c */
lmx_status lmx_cpu_add_rms_norm(const lmx_node *n, lmx_pool *pool); /* cpu_fused.c */
lmx_status lmx_cpu_matmul_acc(const lmx_node *n, lmx_pool *pool);   /* cpu_fused.c */
lmx_status lmx_cpu_rope_kv(const lmx_node *n, lmx_pool *pool);      /* cpu_fused.c */

lmx_status lmx_cpu_backend_create(int n_threads, lmx_backend **out);

/* Row helpers shared by kernels. */
static inline int64_t cpu_rows(const lmx_array *a) {
    return a->ndim ? lmx_array_numel(a) / a->shape[a->ndim - 1] : 1;
}
static inline int64_t cpu_cols(const lmx_array *a) { return a->ndim ? a->shape[a->ndim - 1] : 1; }
/* Row stride in elements of the last-but-one dimension (contiguous or a
 * column view). */
static inline int64_t cpu_row_stride(const lmx_array *a) {
    return a->ndim >= 2 ? a->strides[a->ndim - 2] : cpu_cols(a);
}
/* Runs fn over the pool, or inline on the calling thread when the op
 * touches fewer than LMX_CPU_INLINE elements (a decode step's norms, adds,
 * RoPE and cache copies on one row): splitting ~2k floats saves less than
 * the round trip to a worker costs, and costs far more when another process
 * holds the worker's core. Every op's outputs are the same for any split. */
#define LMX_CPU_INLINE 8192
static inline void lmx_cpu_run(lmx_pool *pool, lmx_pool_fn fn, void *arg, int64_t elements) {
    if (elements < LMX_CPU_INLINE)
        fn(0, 1, arg);
    else
        lmx_pool_run(pool, fn, arg);
}
float lmx_cpu_dot_f32(const float *a, const float *b, int64_t n);
/* Row r of w [N, K] (any dtype row) as f32 into out[K]; MLX packed rows use
 * scales/biases [N, K/group] and need sb = out + K scratch (see below). */
void lmx_cpu_dequant_row(const lmx_array *w, int64_t r, const lmx_array *scales, const lmx_array *biases,
                         int group, float *out, float *sb);
/* Floats of scratch a dequantized row needs (out and sb together). */
int64_t lmx_cpu_dequant_scratch(const lmx_array *w, int group);
/* Per-thread scratch of at least n floats (grown on demand, reused). */
float *lmx_cpu_scratch(int64_t n);

#endif
