/* decode_graph.h - one greedy decode step of one sequence replayed as a
 * static CUDA graph (decode_graph.c; the device side is
 * backend/cuda/cuda_step.cu). */
#ifndef LMX_MODELS_DECODE_GRAPH_H
#define LMX_MODELS_DECODE_GRAPH_H

#include "backend/cuda/cuda.h"
#include "models/model.h"

/* The graph slot of the CUDA backend (lmx_cuda_graph_*) this uses. */
#define LMX_DECODE_GRAPH_SLOT 7

/* What a captured step depends on besides the model (which owns this):
 * the step scratch's generation, the kernel scratch's, the KV cache's
 * device rows (every layer's k and v address and the capacity) and the
 * 256-row attention bucket of the position. A step whose key differs is
 * captured again; one whose capture failed runs the plain path until the
 * key changes. */
typedef struct lmx_decode_graph {
    bool valid, failed;
    uint64_t scratch_gen, cuda_gen;
    int64_t capacity, bucket;
    const lmx_kv_cache *cache;
    const void **rows; /* 2·n_layer device addresses */
    int n_rows;
    int64_t captures, replays; /* counts, for tests and notes */
} lmx_decode_graph;

void lmx_decode_graph_free(lmx_decode_graph *g);

/* Whether steps of m on cache c can run as a static graph: a CUDA backend,
 * LMX_CUDA_GRAPH not "0", a dense model without adapters whose RoPE does not
 * depend on the length, a standard float cache in device memory. */
bool lmx_decode_graph_usable(const lmx_transformer *m, const lmx_backend *b, const lmx_kv_cache *c);

/* One decode step of token `token` at c->offset through the graph (captured
 * first when needed), ending with the device's greedy pick of the logits
 * (cuda_sample.cu), which goes to *pick; the logits stay in the scratch
 * (lmx_scratch_logits). The same floats as lmx_transformer_forward with
 * logits == NULL followed by lmx_cuda_greedy: the kernels are the same and
 * read the position from device memory. */
lmx_status lmx_decode_graph_step(lmx_exec *ex, const lmx_transformer *m, lmx_kv_cache *c, lmx_scratch **sp,
                                 lmx_decode_graph *g, int32_t token, lmx_cuda_pick *pick);

/* transformer.c: a one-token step of one sequence split around its kernels
 * (begin: checks, uploads, cache rows; body: the kernels, logits left in
 * the scratch; then lmx_kv_end). */
lmx_status lmx_transformer_step_begin(lmx_exec *ex, const lmx_transformer *m, lmx_kv_cache *cache,
                                      lmx_scratch **sp, int32_t token);
lmx_status lmx_transformer_step_body(lmx_exec *ex, const lmx_transformer *m, lmx_kv_cache *cache,
                                     lmx_scratch *s, lmx_array *logits);
uint64_t lmx_scratch_generation(const lmx_scratch *s);
bool lmx_transformer_rope_per_length(const lmx_transformer *m);

#endif
