/*
 * train_internal.h - the recorded training forward (train_forward.c) that
 * trainer.c drives, split into embedding / block / head so that gradient
 * checkpointing can re-run one block on a sub-tape (docs/AUTOGRAD.md).
 *
 * Every activation is a fresh heap array (the tape contract: nothing a
 * recorded node reads is overwritten); the forward drops its own handles
 * as it goes, so while recording the tape holds the only references and
 * lmx_tape_reset() frees a step's activations; unrecorded (eval) runs free
 * each block's temporaries when the block ends.
 */
#ifndef LMX_TRAIN_TRAIN_INTERNAL_H
#define LMX_TRAIN_TRAIN_INTERNAL_H

#include "core/tape.h"
#include "models/lora.h"

/* The model as training sees it: the frozen base plus the adapter set. */
typedef struct lmx_train_model {
    const lmx_transformer *m;
    const lmx_adapters *ad; /* NULL: no adapters (plain recorded forward) */
    int first_layer;        /* first block with a trainable parameter (n_layer: none) */
} lmx_train_model;

/* Checks that the model can be trained (dense families; trainable arrays
 * f32 in host memory: a device trainer keeps mirrors of them) and
 * finds the first trainable block. MoE models: LMX_ERR_UNSUPPORTED. */
lmx_status lmx_train_model_init(lmx_train_model *tm, const lmx_transformer *m, const lmx_adapters *ad);

/* Freezes every base parameter of tm's model on tape t (no weight gradient
 * is computed for them; the adapters' arrays stay trainable). */
lmx_status lmx_train_freeze(lmx_tape *t, const lmx_train_model *tm);

/* DoRA's denominators ‖W + s·b·a‖_row, kept per adapter (keyed by its b
 * rows) while the parameters do not change: a micro-batch, its checkpoint
 * re-runs, or a finite-difference check holding the stop-gradient fixed. */
typedef struct lmx_dora_cache {
    const void **key;
    float **norm;
    int n, cap;
} lmx_dora_cache;
void lmx_dora_cache_clear(lmx_dora_cache *c); /* frees the norms; the struct can be reused */

/* One micro-batch: inputs tokens[:, :-1] and targets tokens[:, 1:] (B rows
 * of Ti = T-1 positions, flattened row-major), mlx-lm's mask (target step s,
 * 1-based, counts when offset <= s <= length), the RoPE frequencies of a
 * Ti-token sequence, and the dropout stream. */
typedef struct lmx_train_batch {
    const lmx_train_model *tm;
    int B, Ti;
    lmx_array ids, targets; /* i32 [B·Ti] */
    lmx_array mask;         /* f32 [B·Ti] (0/1) */
    int64_t ntoks;          /* Σ mask */
    lmx_array inv_freq[2];  /* f32 [dims/2] per RoPE config */
    float mscale[2];
    bool dropout;           /* apply the adapters' dropout (training) */
    uint64_t dropout_key;   /* masks are a function of (key, layer, module): a re-run block draws the same */
    lmx_dora_cache *dora;   /* NULL: DoRA norms computed at each use */
} lmx_train_batch;

/* offsets/lengths may be NULL (every target counts). */
lmx_status lmx_train_batch_init(lmx_train_batch *b, const lmx_train_model *tm, const int32_t *tokens, int B, int T,
                                const int32_t *offsets, const int32_t *lengths);
void lmx_train_batch_free(lmx_train_batch *b);
/* Moves the batch's arrays (ids, targets, mask, RoPE frequencies) into
 * device backend be's memory (no-op on a host backend); ntoks stays. */
lmx_status lmx_train_batch_to_backend(lmx_train_batch *b, lmx_backend *be);

/* x [B·Ti, D] = the scaled embedding rows (never recorded: the embedding is
 * not trainable). *x is a new reference. */
lmx_status lmx_train_embed(lmx_exec *ex, const lmx_train_batch *b, lmx_array *x);
/* y = block li applied to x (both [B·Ti, D]); recorded when ex->tape is set.
 * *y is a new reference. */
lmx_status lmx_train_block(lmx_exec *ex, const lmx_train_batch *b, int li, const lmx_array *x, lmx_array *y);
/* logits [B·Ti, V] f32 = lm_head(final_norm(x)) (+ soft-cap). New reference. */
lmx_status lmx_train_head(lmx_exec *ex, const lmx_train_batch *b, const lmx_array *x, lmx_array *logits);
/* The whole forward: embedding, blocks (recorded from tm->first_layer on
 * when ex->tape is set), head. */
lmx_status lmx_train_forward(lmx_exec *ex, const lmx_train_batch *b, lmx_array *logits);
/* loss f32 [1] = Σ mask·CE / ntoks (mlx-lm's default_loss), recorded. */
lmx_status lmx_train_loss(lmx_exec *ex, const lmx_train_batch *b, const lmx_array *logits, lmx_array *loss);

/* The dropout mask of module `slot` of block li (slot: index among q,k,v,o,
 * gate,up,down of the first projection sharing the adapter's `a`; the head
 * is li = n_layer, slot 0): mlx.nn.Dropout's keep-with-probability 1-p,
 * kept entries 1/(1-p), drawn from splitmix64 seeded by (key, li, slot). */
void lmx_train_dropout_mask(float *m, int64_t n, float p, uint64_t key, int li, int slot);

/* The trainable arrays of an adapter set, in a fixed order (entries in
 * order; a, b, m of LoRA/DoRA entries; full and full_bias of full ones).
 * *out is malloc'ed (free it); *n its length. */
lmx_status lmx_train_params(const lmx_adapters *ad, lmx_array ***out, int *n);

/* trainer.c internals for tests: the trainable arrays (lmx_train_params
 * order) and their summed gradients since the last update (NULL: none yet). */
struct lmx_trainer;
int lmx_trainer_n_params(const struct lmx_trainer *t);
lmx_array *lmx_trainer_param(const struct lmx_trainer *t, int i);
const float *lmx_trainer_grad_sum(const struct lmx_trainer *t, int i);
/* The most nodes recorded at once (main tape, or one checkpointed block). */
int lmx_trainer_peak_nodes(const struct lmx_trainer *t);

#endif
