/*
 * weights.h - named tensors from a safetensors folder or a GGUF file.
 *
 * Model code asks for tensors by their Hugging Face names
 * ("model.layers.3.self_attn.q_proj.weight"); for GGUF the llama.cpp name
 * ("blk.3.attn_q.weight") is looked up instead and its ggml dims reversed to
 * row-major. Arrays view the file mapping (zero copy).
 */
#ifndef LMX_MODELS_WEIGHTS_H
#define LMX_MODELS_WEIGHTS_H

#include "core/array.h"
#include "io/gguf.h"
#include "io/shards.h"

struct lmx_weights_src {
    const char *path;
    lmx_st_set *st;     /* folder models */
    const lmx_gguf *gguf; /* GGUF models (borrowed) */
};

/* Fetches `name` into *out. expect: NULL or ndim sizes (-1 = any).
 * Missing: LMX_ERR_NOT_FOUND unless !required (then *out stays empty). */
lmx_status lmx_weights_get(const struct lmx_weights_src *w, const char *name, int ndim,
                           const int64_t *expect, bool required, lmx_array *out);
bool lmx_weights_has(const struct lmx_weights_src *w, const char *name);

/* printf-style name builder into a caller buffer. */
const char *lmx_wname(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
