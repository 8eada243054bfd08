/*
 * convert.h - `lmx convert`: a Hugging Face / MLX model folder to an MLX
 * folder as mlx_lm.convert writes it (MLX-LM-SPEC §1.3, §4a, §4b):
 * optional cast (--dtype, default config torch_dtype), affine/fp
 * quantization with mlx-lm's mixed recipes, or dequantization; sorted
 * tensors in ≤ 5 GiB shards with {"format": "mlx"} metadata and MLX's
 * header layout, model.safetensors.index.json, config.json (sorted keys,
 * indent 4, quantization + quantization_config), tokenizer files,
 * generation_config.json and *.py copied, a README.md model card.
 * Everything is written into a temporary folder next to dst and renamed at
 * the end: an interrupted run never leaves dst, an existing dst is refused.
 */
#ifndef LMX_CONVERT_CONVERT_H
#define LMX_CONVERT_CONVERT_H

#include "quant/quant.h"

#include <cjson/cJSON.h>

/* A rewrite of chosen float tensors before they are written (`lmx fuse`,
 * convert/fuse.c). claims(name) selects tensors ("<module>.weight", or any
 * float tensor); apply() changes one in place: numel = rows·cols values of
 * dtype dt (the file's float dtype; for an MLX-quantized module's weight its
 * dequantized values in the dtype mx.dequantize returns, re-quantized with
 * the module's own mode/bits/group_size afterwards unless dequantize). */
typedef struct lmx_convert_edit {
    bool (*claims)(void *user, const char *name);
    lmx_status (*apply)(void *user, const char *name, lmx_dtype dt, int64_t rows, int64_t cols, void *data);
    void *user;
} lmx_convert_edit;

typedef struct lmx_convert_options {
    const char *src, *dst;
    bool quantize, dequantize;
    int q_bits, q_group;   /* 0: the mode's default */
    const char *q_mode;    /* NULL: affine */
    const char *recipe;    /* mixed_2_6 | mixed_3_4 | mixed_3_6 | mixed_4_6 | NULL */
    const char *dtype;     /* float16 | bfloat16 | float32 | NULL (config torch_dtype) */
    uint64_t max_shard_bytes; /* 0: 5 GiB */
    const lmx_convert_edit *edit; /* NULL: none */
    bool keep_dtype;       /* no cast, even where config.json names a torch_dtype (fuse) */
    const char *model_card; /* README.md text; NULL: the convert card naming the source */
    /* called after each tensor is written (done/total bytes of data) */
    void (*progress)(uint64_t done, uint64_t total, void *user);
    void *user;
} lmx_convert_options;

typedef struct lmx_convert_result {
    double bits_per_weight; /* over all parameters, as mlx-lm prints it */
    uint64_t total_size;    /* bytes of tensor data */
    uint64_t total_params;  /* quantized weights counted unpacked */
    int n_shards;
    const char *dtype;      /* the dtype used ("float16", ...), or NULL: kept */
} lmx_convert_result;

void lmx_convert_options_init(lmx_convert_options *o);
lmx_status lmx_convert(const lmx_convert_options *o, lmx_convert_result *r);

/* params.c: the model's parameter count as mlx-lm's get_total_parameters
 * reports it (quantized weights unpacked; scales/biases, a tied lm_head and
 * rotary buffers not counted), for a model folder or a .gguf file. */
lmx_status lmx_count_parameters(const char *path, uint64_t *out);

/* pyjson.c: Python json.dump(indent=4) text; top-level keys sorted when asked. */
char *lmx_pyjson_dump(const cJSON *v, bool sort_top_keys);

#endif
