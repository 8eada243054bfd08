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
#include "models/config.h"

struct lmx_weights_src {
    const char *path;
    lmx_st_set *st;     /* folder models */
    const lmx_gguf *gguf; /* GGUF models (borrowed) */
    const lmx_config *cfg; /* folder models: config.json (quantization), borrowed */
};

/* Fetches `name` into *out. expect: NULL or ndim sizes (-1 = any).
 * Missing: LMX_ERR_NOT_FOUND unless !required (then *out stays empty). */
lmx_status lmx_weights_get(const struct lmx_weights_src *w, const char *name, int ndim,
                           const int64_t *expect, bool required, lmx_array *out);
/* Any dtype (U32/U8 packed data included), no shape check. */
lmx_status lmx_weights_get_raw(const struct lmx_weights_src *w, const char *name, bool required, lmx_array *out);
bool lmx_weights_has(const struct lmx_weights_src *w, const char *name);

/* weights_quant.c: a Linear/Embedding module `module` ("model.layers.0.mlp.up_proj"):
 * "<module>.weight" (+ "<module>.bias" when want_bias), and for MLX-quantized
 * modules "<module>.scales"/".biases" with the packed weight reinterpreted as
 * an MLX dtype row of the unpacked shape. expect: the unpacked shape (-1 any).
 * Quantized iff config.json's quantization has an entry for the module (a
 * dict: its params; false: not quantized) or "<module>.scales" exists (global
 * params); a config without "mode" is affine. Shapes and params are checked
 * (LMX_ERR_SHAPE / LMX_ERR_UNSUPPORTED naming the tensor). */
struct lmx_linear;
lmx_status lmx_weights_get_linear(const struct lmx_weights_src *w, const char *module, int ndim,
                                  const int64_t *expect, bool required, bool want_bias, struct lmx_linear *out);
/* Every per-module entry of config.json's quantization must name a module
 * whose weight exists (LMX_ERR_FORMAT otherwise). */
lmx_status lmx_weights_check_quant_overrides(const struct lmx_weights_src *w);

/* printf-style name builder into a caller buffer. */
const char *lmx_wname(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
