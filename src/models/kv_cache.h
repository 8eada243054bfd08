/*
 * kv_cache.h - the KV cache the forward pass writes and attends over, in the
 * three flavours of mlx-lm's models/cache.py:
 *
 *   standard   (KVCache)          rows = positions, grows in 256-row steps;
 *   rotating   (RotatingKVCache)  at most max_size rows, the first `keep`
 *                                 (attention sinks) never evicted; the ring
 *                                 buffer and its mask follow mlx-lm exactly;
 *   quantized  (QuantizedKVCache) MLX affine (bits, group_size along
 *                                 head_dim); a standard cache converts once
 *                                 offset >= quantized_start, as mlx-lm's
 *                                 maybe_quantize_kv_cache does.
 *
 * Layout per layer: k, v [rows, Hkv, hd] f32 (the model's activations), in the
 * backend's memory. mlx-lm stores [B, Hkv, T, hd]; cache files are transposed
 * on save/load (prompt_cache.c).
 *
 * One step of T tokens: lmx_kv_begin() plans it (grows storage, decides the
 * rotating cache's reorder), lmx_kv_store() is called once per layer with the
 * step's post-RoPE k and v and returns what to attend over, lmx_kv_end()
 * commits the offset (and converts to quantized when due). RoPE positions are
 * always offset.. (absolute), whatever the rows hold.
 */
#ifndef LMX_MODELS_KV_CACHE_H
#define LMX_MODELS_KV_CACHE_H

#include "core/ops.h"

typedef enum { LMX_KV_STANDARD = 0, LMX_KV_ROTATING = 1, LMX_KV_QUANTIZED = 2 } lmx_kv_kind;

#define LMX_KV_STEP 256

typedef struct lmx_kv_cache {
    lmx_kv_kind kind;
    int n_layer, n_kv_head, head_dim;
    lmx_backend *backend; /* where the rows live (NULL: host) */
    int64_t offset;       /* tokens processed (the next RoPE position) */
    int64_t rows;         /* rows in use: mlx-lm's keys.shape[2] (rotating) or offset */
    int64_t capacity;     /* rows allocated per layer */
    lmx_array *k, *v;     /* n_layer each, [capacity, Hkv, hd] f32; empty once quantized */
    /* rotating */
    int64_t max_size, keep, idx; /* idx: next write row (mlx-lm's _idx) */
    /* quantized (kv_bits > 0 asks for it; kind turns QUANTIZED at quantized_start) */
    int kv_bits, group_size;
    int64_t quantized_start;
    uint32_t **kq, **vq;         /* n_layer each, [capacity, Hkv, hd·bits/32] */
    float **ks, **kb, **vs, **vb; /* [capacity, Hkv, hd/group] */
    lmx_array deq_k, deq_v;       /* f32 [capacity, Hkv, hd], shared by all layers */
    lmx_array tmp;                /* rotating reorder scratch [capacity, Hkv, hd] */
    /* the current step (lmx_kv_begin) */
    int64_t step_T, step_kept, step_write;
    bool step_concat;
} lmx_kv_cache;

typedef struct lmx_kv_config {
    int64_t max_size;        /* > 0: rotating cache of this many rows */
    int64_t keep;            /* rotating sink rows (mlx-lm: 4) */
    int kv_bits;             /* 0 = float; else 2,3,4,5,6,8 */
    int group_size;          /* quantization group along head_dim (64) */
    int64_t quantized_start; /* quantize once offset >= this */
} lmx_kv_config;

/* An empty cache (no rows allocated yet); cfg NULL = standard. b: NULL or
 * host = host memory. Quantized caches are host-only (LMX_ERR_UNSUPPORTED). */
lmx_status lmx_kv_cache_init(lmx_kv_cache *c, lmx_backend *b, int n_layer, int n_kv_head, int head_dim,
                             const lmx_kv_config *cfg);
void lmx_kv_cache_free(lmx_kv_cache *c);

/* Plans a step of T tokens (grows storage). */
lmx_status lmx_kv_begin(lmx_exec *ex, lmx_kv_cache *c, int64_t T);
/* Layer li: appends k, v ([T, Hkv·hd] f32) and sets *K, *V (views to attend
 * over), *pos0 (the row index of the first query under the causal rule) and
 * *window (0 or the window, combined with the model's own model_window). */
lmx_status lmx_kv_store(lmx_exec *ex, lmx_kv_cache *c, int li, const lmx_array *k, const lmx_array *v,
                        int model_window, lmx_array *K, lmx_array *V, int64_t *pos0, int *window);
/* A standard, unquantized cache: the rows this step writes in layer li
 * ([T, Hkv·hd] views), for a caller that stores k and v itself (the fused
 * rope_kv op) and then calls lmx_kv_store with k = v = NULL. */
lmx_status lmx_kv_rows(lmx_kv_cache *c, int li, lmx_array *K, lmx_array *V);
/* Commits the step: offset += T; converts to quantized when due. */
lmx_status lmx_kv_end(lmx_kv_cache *c);

/* mlx-lm's is_trimmable()/trim(): drops the last n tokens (at most offset);
 * a rotating cache only while it has not wrapped. Returns the count trimmed
 * (0 when not trimmable). */
int64_t lmx_kv_trim(lmx_kv_cache *c, int64_t n);
bool lmx_kv_trimmable(const lmx_kv_cache *c);

/* Makes room for `rows` rows per layer (keeping the first c->rows). */
lmx_status lmx_kv_reserve(lmx_exec *ex, lmx_kv_cache *c, int64_t rows);
/* Switches a standard cache to quantized now (rows [0, rows) quantized). */
lmx_status lmx_kv_quantize_now(lmx_kv_cache *c);

#endif
