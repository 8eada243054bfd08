/*
 * fuse.h - `lmx fuse`: adapters merged into a model folder, as mlx_lm.fuse
 * does it (MLX-LM-SPEC §1.5):
 *   LoRA  W' = W + (scale·Bᵀ)·Aᵀ, the update rounded to W's dtype and added
 *         in it (A = lora_a [in, r], B = lora_b [r, out]);
 *   DoRA  W'' = m / ‖W'‖_row · W';
 *   full  the fine-tuned tensors replace the base ones.
 * A quantized module is dequantized (as mx.dequantize), fused and quantized
 * again with its own mode/bits/group_size, unless dequantize, which writes
 * every quantized module dequantized and drops quantization from
 * config.json. The folder is written like `lmx convert` writes one (sorted
 * shards, index, config.json, tokenizer files, generation_config.json,
 * *.py, a model card), into a temporary folder renamed at the end; an
 * existing save path is refused. export_gguf also writes an f16 GGUF of
 * the fused model inside it (llama/mistral, as mlx-lm's convert_to_gguf).
 */
#ifndef LMX_CONVERT_FUSE_H
#define LMX_CONVERT_FUSE_H

#include "base/base.h"

typedef struct lmx_fuse_options {
    const char *model;        /* base model folder (required) */
    const char *adapter_path; /* adapter folder, or one .safetensors in it (default "adapters") */
    const char *save_path;    /* default "fused_model" */
    bool dequantize;
    bool export_gguf;
    const char *gguf_path;    /* file name inside save_path (default "ggml-model-f16.gguf") */
} lmx_fuse_options;

typedef struct lmx_fuse_result {
    int n_modules;  /* adapted modules (LoRA/DoRA) or replaced modules (full) */
    int n_tensors;  /* tensors rewritten */
    bool quantized; /* the written model keeps quantized modules */
} lmx_fuse_result;

lmx_status lmx_fuse(const lmx_fuse_options *o, lmx_fuse_result *r);

/* fuse_gguf.c: the fused folder's weights as an f16 GGUF (mlx-lm's
 * convert_to_gguf: llama naming, q/k rows permuted, norms f32, tokenizer
 * vocabulary from tokenizer.json). */
lmx_status lmx_fuse_export_gguf(const char *folder, const char *gguf_file);

#endif
