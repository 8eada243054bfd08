/*
 * model.h - the decoder-only transformer every supported family maps onto.
 *
 * One struct of hyperparameters (lmx_hparams) captures what differs between
 * llama, mistral, qwen2/3(+moe), phi/phi3, gemma/2/3, mixtral and starcoder2:
 * norm kind, biases, QK-norm, sandwich norms, parallel blocks, activation,
 * soft-capping, sliding windows, RoPE variant and MoE. Each family's file
 * (arch_*.c) fills lmx_hparams from config.json and names its tensors; the
 * forward pass in transformer.c is shared.
 *
 * Shapes (row-major): D = n_embd, H = n_head, Hkv = n_kv_head, hd = head_dim,
 * F = n_ff, V = n_vocab, E = n_expert, S = cache length, T = step tokens.
 */
#ifndef LMX_MODELS_MODEL_H
#define LMX_MODELS_MODEL_H

#include "core/ops.h"
#include "models/config.h"
#include "models/kv_cache.h"

#define LMX_MAX_LAYERS 512

typedef enum { LMX_NORM_RMS = 0, LMX_NORM_LAYER = 1 } lmx_norm_kind;

typedef enum {
    LMX_ROPE_DEFAULT = 0,
    LMX_ROPE_LINEAR,  /* positions / factor */
    LMX_ROPE_DYNAMIC, /* NTK: base grows once the sequence passes max_pos */
    LMX_ROPE_LLAMA3,
    LMX_ROPE_LONGROPE, /* phi3: short/long factors, attention factor */
    LMX_ROPE_YARN,
} lmx_rope_type;

/* One RoPE configuration; gemma3 has two (local and global layers). */
typedef struct lmx_rope_cfg {
    lmx_rope_type type;
    int dims;         /* rotated features per head (partial rotary < hd) */
    bool traditional; /* adjacent pairs (GGUF llama) vs rotate_half (HF) */
    double base, factor;
    int orig_max_pos;              /* original_max_position_embeddings */
    int max_pos;                   /* max_position_embeddings */
    double low_freq_factor, high_freq_factor; /* llama3 */
    double beta_fast, beta_slow, mscale, mscale_all_dim; /* yarn */
    float *short_factor, *long_factor;        /* longrope, dims/2 each */
    float attn_factor;                        /* multiplies cos/sin */
} lmx_rope_cfg;

typedef struct lmx_hparams {
    char arch[32];
    int n_vocab, n_embd, n_layer, n_head, n_kv_head, head_dim, n_ff, n_ctx;
    float norm_eps;
    lmx_norm_kind norm;
    bool norm_add_one;   /* gemma: weight is (1 + w) */
    bool qk_norm;        /* qwen3/gemma3: RMSNorm per head on q and k */
    bool sandwich_norm;  /* gemma2/3: post-attention and post-ffn norms */
    bool parallel_block; /* phi-2: x + attn(ln(x)) + mlp(ln(x)) */
    bool mlp_gated;      /* act(gate)·up (SwiGLU/GeGLU) vs act(fc1) */
    lmx_act_kind act;
    float attn_scale;    /* default hd^-0.5 */
    float attn_softcap;  /* gemma2: 50; 0 = off */
    float final_softcap; /* gemma2: 30; 0 = off */
    float embed_scale;   /* gemma: sqrt(D); 1 otherwise */
    bool tied;           /* lm_head = embed_tokens */
    int n_expert, n_expert_used, n_ff_expert;
    bool norm_topk_prob;
    int window[LMX_MAX_LAYERS];   /* sliding window per layer, 0 = full */
    int rope_idx[LMX_MAX_LAYERS]; /* which lmx_rope a layer uses */
    lmx_rope_cfg rope[2];
    int bos_id;
} lmx_hparams;

/* A projection (Linear) or embedding table in any storage format: float,
 * GGUF blocks (self-contained) or MLX packed (scales/biases per group of
 * group_size input elements; biases empty in the fp modes). Every
 * projection goes through the one linear() helper in transformer.c, so the
 * model code does not fork per format. Empty w means "absent". */
typedef struct lmx_linear {
    lmx_array w;              /* [N, K] ([out, in], as in HF/MLX) */
    lmx_array b;              /* additive bias [N] or empty */
    lmx_array scales, biases; /* MLX packed only: [N, K/group_size] */
    int group_size;
    const struct lmx_lora *lora; /* attached LoRA/DoRA adapter (models/lora.h), borrowed; NULL = none */
} lmx_linear;

void lmx_linear_release(lmx_linear *l);
/* dst = rows [r0, r0+n) of src (weight, bias, scales, biases), as views. */
lmx_status lmx_linear_rows(lmx_linear *dst, const lmx_linear *src, int64_t r0, int64_t n);
/* Expert e of a stacked [E, out, in] module as a 2-D [out, in] view. */
lmx_status lmx_linear_expert(lmx_linear *dst, const lmx_linear *src, int64_t e);
/* dst = another reference to src (tied lm_head). */
void lmx_linear_share(lmx_linear *dst, const lmx_linear *src);

/* A layer's tensors. Empty arrays (data == NULL) mean "absent". */
typedef struct lmx_layer {
    lmx_array attn_norm, attn_norm_b;         /* [D] */
    lmx_linear wq, wk, wv, wo;                /* [H·hd, D], [Hkv·hd, D] ×2, [D, H·hd] */
    lmx_array q_norm, k_norm;                 /* [hd] */
    lmx_array post_attn_norm;                 /* [D] gemma2/3 */
    lmx_array ffn_norm, ffn_norm_b;           /* [D] pre-MLP norm */
    lmx_array post_ffn_norm;                  /* [D] gemma2/3 */
    lmx_linear w_gate, w_up, w_down;          /* [F, D], [F, D], [D, F] */
    lmx_linear router;                        /* [E, D] */
    lmx_linear *exp_gate, *exp_up, *exp_down; /* E each: [Fe, D], [Fe, D], [D, Fe] */
} lmx_layer;

typedef struct lmx_weights_src lmx_weights_src;

typedef struct lmx_transformer {
    lmx_hparams hp;
    lmx_linear tok_embd;            /* [V, D] */
    lmx_array out_norm, out_norm_b; /* [D] */
    lmx_linear lm_head;             /* [V, D] (shares tok_embd when tied) */
    lmx_layer *layers;            /* n_layer */
} lmx_transformer;

/* Scratch activations for up to `cap` tokens per step, reused across steps. */
typedef struct lmx_scratch lmx_scratch;
void lmx_scratch_free(lmx_scratch *s);

/* Runs tokens[0..T) at positions cache->offset.. and appends them to the
 * cache (any flavour, kv_cache.h). logits: f32 [T, V] when all_logits, else [1, V] for the last token. */
lmx_status lmx_transformer_forward(lmx_exec *ex, const lmx_transformer *m, lmx_kv_cache *cache,
                                   lmx_scratch **scratch, const int32_t *tokens, int64_t T,
                                   bool all_logits, float *logits);
/* One decode step of B sequences: tokens[b] at position caches[b]->offset,
 * appended to caches[b]; logits f32 [B, V]. The projections and MLP run
 * once over the B rows (what makes batching pay while bandwidth-bound);
 * RoPE, the cache write and attention run per sequence. */
lmx_status lmx_transformer_forward_batch(lmx_exec *ex, const lmx_transformer *m, lmx_kv_cache **caches, int B,
                                         lmx_scratch **scratch, const int32_t *tokens, float *logits);
/* Several sequences in one pass (varlen): sequence b's lens[b] tokens
 * (tokens holds them concatenated in b order, Σ lens[b] rows) at positions
 * caches[b]->offset.., appended to caches[b]; each cache at most once.
 * Embedding, norms, every projection and the MLP run once over all rows;
 * RoPE, the cache append and causal attention run per sequence span, so
 * each sequence sees exactly what lmx_transformer_forward on its own tokens
 * would. logits: f32 [Σ lens, V] when all_logits, else [n, V] (each
 * sequence's last row). */
lmx_status lmx_transformer_forward_varlen(lmx_exec *ex, const lmx_transformer *m, lmx_kv_cache **caches, int n,
                                          const int64_t *lens, lmx_scratch **scratch, const int32_t *tokens,
                                          bool all_logits, float *logits);
/* The logits of the last step run with logits == NULL (lmx_transformer_forward
 * and its batch/varlen forms accept NULL and then leave them in the scratch,
 * in the backend's memory: a device sampler reads them there): f32
 * [rows, V], a borrowed view valid until the next step. */
lmx_status lmx_scratch_logits(const lmx_scratch *s, int64_t rows, lmx_array *out);
void lmx_transformer_free(lmx_transformer *m);
/* transformer_device.c: copies every weight into device backend b's memory
 * once (no-op on host backends); free the model before the backend. */
lmx_status lmx_transformer_to_backend(lmx_backend *b, lmx_transformer *m);

/* rope.c: inverse frequencies for a step whose last position is seq_len-1
 * (dynamic/longrope depend on it); out has dims/2 floats. */
void lmx_rope_inv_freq(const lmx_rope_cfg *r, int64_t seq_len, float *out, float *mscale);
lmx_status lmx_rope_from_config(const lmx_config *c, int head_dim, double default_base, lmx_rope_cfg *r);
/* kind: "full_attention" or "sliding_attention" (transformers 5 nests
 * rope_parameters per layer type). */
lmx_status lmx_rope_params(const lmx_config *c, const char *kind, int head_dim, double default_base,
                           lmx_rope_cfg *r);
void lmx_rope_free(lmx_rope_cfg *r);

#endif
