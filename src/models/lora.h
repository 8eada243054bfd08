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
    /* DoRA at generation time: m/‖W + scale·b·a‖_row [out] f32, computed once
     * by lmx_lora_freeze_dora for adapters that will not change (loaded from a
     * file); empty = recomputed on every forward call. Trainers drop it. */
    lmx_array dora_f;
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
    /* Added by the adapter files (models/adapters*.c). Full fine-tuning has
     * one entry per module: a Linear (targets; full = its weight rows, in
     * target order) or a norm (param); file tensors "<name>.weight"/".bias". */
    lmx_array full_bias;    /* full: the owned copy of the bias (linear rows, or a LayerNorm's bias) */
    lmx_array *param;       /* full, a norm: the model's weight array the copy replaces (NULL for linears) */
    lmx_array *param_bias;  /* full, a LayerNorm: the model's bias array (else NULL) */
    int64_t rows[4];        /* first row of targets[i] inside the entry (fused rows; else 0) */
    lmx_lora views[4];      /* fused rows: what targets[i]->lora points at (shared a, rows of b and m);
                               a single target points at `lora` itself */
    lmx_array saved_w[4], saved_b[4]; /* full: the model's arrays as loaded (per target, or the norm's
                                         weight/bias in [0]), put back by detach */
    lmx_dtype file_dtype;   /* full: the base tensors' dtype, the one adapters.safetensors holds
                               (mlx-lm saves the model's own parameters); LoRA/DoRA files are f32 */
    int layer;              /* block index, -1 for a model-level module (lm_head) */
} lmx_adapter_entry;

typedef struct lmx_adapters {
    lmx_adapter_config cfg;
    lmx_adapter_entry *e;
    int n;
    /* Added by the adapter files: */
    lmx_transformer *model; /* the model the set was made for (borrowed) */
    char prefix[32];        /* module-path prefix ("language_model." for mlx-lm's gemma3 wrapper) */
    bool attached;
} lmx_adapters;

/* ---- lora.c: helpers shared by the forward passes, the trainer and fuse ---- */

/* out[n, K] f32 = rows [r0, r0+n) of l's weight, dequantized (float dtypes,
 * GGUF blocks, MLX packed with scales/biases: scale·v + bias per group, in
 * f32 as the matmul kernels and vjps compute it). */
lmx_status lmx_linear_dequant_rows(const lmx_linear *l, int64_t r0, int64_t n, float *out);
/* DoRA's denominator: norm[j] = ‖W_j + (scale·b)·a_j‖ for the N rows of l
 * (W dequantized), f64 sums on the host (mlx-lm stops its gradient). */
lmx_status lmx_lora_dora_norms(const lmx_linear *l, const lmx_lora *lo, float *norm);
/* DoRA's per-row factor f[j] = m[j] / norm[j]. f: N floats. */
lmx_status lmx_lora_dora_factor(const lmx_linear *l, const lmx_lora *lo, float *f);
/* Zeroed f32 a [r, in], b [out, r] (and m [out] when dora), scale, dropout. */
lmx_status lmx_lora_alloc(lmx_lora *lo, int r, int64_t in, int64_t out, bool dora, float scale, float dropout);
void lmx_lora_release(lmx_lora *lo);
/* Fills lo->dora_f for the linear l it is attached to (no-op for LoRA):
 * generation then reads the factor instead of a pass over W per call. */
lmx_status lmx_lora_freeze_dora(const lmx_linear *l, lmx_lora *lo);

#endif
