/*
 * lora.h - LoRA / DoRA adapters on a model's projections (issue 8).
 *
 * Shared contract between the adapter files (models/adapters*.c: create,
 * load, save, attach), the forward passes (transformer.c for generation,
 * train/train_forward.c for training) and `lmx fuse`.
 *
 * Math (mlx-lm, MLX-LM-SPEC §4c), with the adapter file's lora_a [in, r]
 * and lora_b [r, out] stored here transposed so that every product is the
 * core's x·Wᵀ matmul:
 *   LoRA:  y = x·Wᵀ + bias + scale·((dropout(x)·aᵀ)·bᵀ)
 *   DoRA:  y = (m / stopgrad(‖W + scale·b·a‖_row)) ⊙ (x·Wᵀ + scale·(x·aᵀ)·bᵀ) + bias
 * a: [r, in] f32, b: [out, r] f32, m: [out] f32. For a quantized base W is
 * its dequantized value (QLoRA: the base stays packed and frozen).
 *
 * Ownership: an lmx_linear points at (borrows) the lmx_lora of the
 * lmx_adapters set that attached it; lmx_adapters_free() detaches them.
 * Fused rows (phi3 qkv_proj / gate_up_proj split into views): each view's
 * lmx_lora shares `a` and takes the matching rows of `b` (and `m`), so the
 * gradients of the shared `a` add up by memory identity on the tape.
 */
#ifndef LMX_MODELS_LORA_H
#define LMX_MODELS_LORA_H

#include "models/model.h"

typedef enum { LMX_FT_LORA = 0, LMX_FT_DORA = 1, LMX_FT_FULL = 2 } lmx_ft_type;

typedef struct lmx_lora {
    lmx_array a; /* [r, in] f32 */
    lmx_array b; /* [out, r] f32 */
    lmx_array m; /* DoRA magnitude [out] f32; empty for LoRA */
    float scale;
    float dropout; /* training only (0 = off) */
} lmx_lora;

/* What adapter_config.json says (the fields the loader needs, §4c). */
typedef struct lmx_adapter_config {
    lmx_ft_type type;
    int num_layers; /* last N blocks; -1 = all */
    int rank;
    float scale, dropout;
    char **keys; /* relative module paths ("self_attn.q_proj"); NULL = every linear in a block */
    int n_keys;
} lmx_adapter_config;

/* One adapted module. */
typedef struct lmx_adapter_entry {
    char name[160];        /* MLX path, e.g. "model.layers.3.self_attn.q_proj" */
    lmx_linear *targets[4]; /* the model's linear(s) this entry feeds (several for fused rows) */
    int n_targets;
    lmx_lora lora;          /* LoRA/DoRA: the trainable arrays (owned) */
    lmx_array full;         /* full fine-tune: the owned trainable copy of the weight */
} lmx_adapter_entry;

typedef struct lmx_adapters {
    lmx_adapter_config cfg;
    lmx_adapter_entry *e;
    int n;
} lmx_adapters;

#endif
