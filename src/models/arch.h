/*
 * arch.h - what each model family file provides: its model_type names, a
 * hook that adjusts the common hyperparameters, and its tensor names.
 * arch_common.c reads the keys every family shares and loads tensors by the
 * names table; arch_<family>.c holds only what is particular to a family.
 */
#ifndef LMX_MODELS_ARCH_H
#define LMX_MODELS_ARCH_H

#include "models/model.h"
#include "models/weights.h"

typedef struct lmx_arch_names {
    const char *embed, *final_norm, *lm_head;            /* full names, without ".weight" */
    const char *attn_norm, *q, *k, *v, *o, *qkv_fused;   /* per layer, after "model.layers.N." */
    const char *q_norm, *k_norm;
    const char *post_attn_norm, *ffn_norm, *post_ffn_norm;
    const char *gate, *up, *down, *gate_up_fused;
    const char *router;                                  /* MoE */
    const char *exp_gate, *exp_up, *exp_down;            /* printf patterns with %d = expert */
    const char *stacked_gate, *stacked_up, *stacked_down; /* MLX switch_mlp [E, out, in] */
} lmx_arch_names;

typedef struct lmx_arch {
    const char *model_type;
    /* Adjusts hp after the common keys were read (defaults, flags). */
    lmx_status (*hparams)(const lmx_config *c, lmx_hparams *hp);
    const lmx_arch_names *names;
    /* Whether layer l has a mixture of experts (NULL: every layer if n_expert > 0). */
    bool (*layer_is_moe)(const lmx_config *c, const lmx_hparams *hp, int l);
} lmx_arch;

/* The families (arch_*.c). */
extern const lmx_arch lmx_arch_llama, lmx_arch_mistral, lmx_arch_mixtral;
extern const lmx_arch lmx_arch_qwen2, lmx_arch_qwen3, lmx_arch_qwen3_moe;
extern const lmx_arch lmx_arch_phi3, lmx_arch_phi;
extern const lmx_arch lmx_arch_gemma, lmx_arch_gemma2, lmx_arch_gemma3;
extern const lmx_arch lmx_arch_starcoder2;

extern const lmx_arch_names lmx_names_llama; /* the HF default naming */

/* Finds the family for a (remapped) model_type; NULL if unknown. */
const lmx_arch *lmx_arch_find(const char *model_type);
/* Reads the keys every family shares into hp. */
lmx_status lmx_hparams_common(const lmx_config *c, lmx_hparams *hp);
lmx_act_kind lmx_act_from_name(const char *name, bool *ok);
/* Sliding windows from layer_types, or every layer when all_layers. */
lmx_status lmx_windows_from_config(const lmx_config *c, lmx_hparams *hp, bool all_layers);

/* Builds a model from config + tensors (folder) — loader.c. */
lmx_status lmx_transformer_load_hf(const char *dir, const lmx_config *c, const struct lmx_weights_src *w,
                                   lmx_transformer *m);
/* Builds a model from a GGUF file (arch_gguf.c). */
lmx_status lmx_transformer_load_gguf(const lmx_gguf *g, const struct lmx_weights_src *w, lmx_transformer *m);
/* Fetches all tensors for hp by the names table (shared by both loaders). */
lmx_status lmx_transformer_load_tensors(const lmx_arch *arch, const lmx_config *c,
                                        const struct lmx_weights_src *w, lmx_transformer *m);

#endif
