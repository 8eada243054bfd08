/* convert_internal.h - shared by the convert/ files. */
#ifndef LMX_CONVERT_INTERNAL_H
#define LMX_CONVERT_INTERNAL_H

#include "convert/convert.h"
#include "io/shards.h"
#include "models/config.h"
#include "models/weights.h"

/* CV_REQUANT_*: an MLX-quantized module rewritten by an edit, re-quantized
 * with its own parameters (fuse). */
typedef enum { CV_COPY, CV_QUANT_W, CV_QUANT_S, CV_QUANT_B, CV_DEQUANT, CV_REQUANT_W, CV_REQUANT_S, CV_REQUANT_B } cv_kind;

typedef struct cv_entry {
    const char *name;   /* output tensor name (owned by the plan) */
    const char *module; /* quantized / dequantized module path (owned) */
    const lmx_st_tensor *src;
    const lmx_st_tensor **stack; /* MoE: E per-expert sources stacked on a new axis 0 (owned), or NULL */
    int n_stack;
    cv_kind kind;
    lmx_dtype dtype;    /* output dtype */
    lmx_dtype fdt;      /* quant parts: the float dtype quantized from */
    int ndim;
    int64_t shape[LMX_MAX_DIMS];
    bool quant, per_layer;
    bool no_mode; /* per-layer entry without "mode" (the model's own quant_predicate) */
    bool edit;    /* the options' edit rewrites this tensor (CV_COPY, CV_DEQUANT) */
    lmx_qmode mode;
    int bits, group;
} cv_entry;

typedef struct cv_plan {
    const char *src;
    const char *origin; /* the user's source when src is an intermediate folder (GGUF), else NULL */
    lmx_st_set *st;
    const lmx_config *cfg;
    const char *model_type;
    bool quantize, dequantize, tied;
    lmx_qmode mode;
    int bits, group;
    const char *recipe;
    lmx_dtype cast; /* LMX_DTYPE_INVALID: keep */
    const lmx_convert_edit *edit; /* NULL: none */
    bool keep_dtype;
    int n_layers, layer_location;
    cv_entry *e;
    size_t n, cap;
} cv_plan;

lmx_status cv_plan_build(cv_plan *p);

/* convert_gguf.c / convert_gguf_tok.c: a GGUF written as an HF folder
 * (config.json, model.safetensors, tokenizer files) into dir. */
struct lmx_gguf;
lmx_status cv_gguf_to_folder(const char *gguf_path, const char *dir);
lmx_status cv_gguf_tokenizer(const struct lmx_gguf *g, const char *dir);
void cv_plan_free(cv_plan *p);

#endif
