/*
 * trainer.h - one LoRA / DoRA / full fine-tuning run over a model:
 * recorded forward (train_forward.c), masked cross-entropy as mlx-lm's
 * default_loss, backward on the tape, gradient accumulation and the
 * optimizer update (optim.h). The CLI (`lmx lora`) and the tests drive it.
 *
 * A batch is B rows of T token ids (row-major, padded with 0) with, per
 * row, offset and length as mlx-lm's `lengths[:, 0]` / `lengths[:, 1]`:
 * inputs = tokens[:, :-1], targets = tokens[:, 1:], and target step s
 * (1-based) counts when offset <= s <= length. loss = Σ masked CE / ntoks.
 */
#ifndef LMX_TRAIN_TRAINER_H
#define LMX_TRAIN_TRAINER_H

#include "models/lora.h"
#include "train/optim.h"

typedef struct lmx_train_options {
    lmx_optim_config optim;
    float learning_rate;      /* base rate (schedule CONSTANT) */
    lmx_schedule schedule;
    int grad_accumulation_steps; /* >= 1 */
    bool grad_checkpoint;     /* recompute each block in backward */
    uint64_t seed;            /* dropout masks */
} lmx_train_options;

void lmx_train_options_init(lmx_train_options *o); /* adam, lr 1e-5, constant, accumulation 1 */

typedef struct lmx_trainer lmx_trainer;

/* m must stay alive and unchanged; ad is the attached, trainable set
 * (models/adapters.c) - the base weights are frozen. */
lmx_status lmx_trainer_create(lmx_exec *ex, lmx_transformer *m, lmx_adapters *ad, const lmx_train_options *o,
                              lmx_trainer **out);
void lmx_trainer_free(lmx_trainer *t);

/* Forward + backward of one micro-batch; gradients are summed into the
 * trainer. *loss = the batch's mean masked CE, *ntoks = masked tokens. */
lmx_status lmx_trainer_accumulate(lmx_trainer *t, const int32_t *tokens, int B, int T, const int32_t *offsets,
                                  const int32_t *lengths, double *loss, int64_t *ntoks);
/* Called once grad_accumulation_steps micro-batches were accumulated:
 * averages, one optimizer update at the scheduled rate, clears gradients.
 * *lr = the rate used (may be NULL). */
lmx_status lmx_trainer_update(lmx_trainer *t, double *lr);
/* Loss without gradients (validation / test): Σ masked CE and ntoks. */
lmx_status lmx_trainer_eval(lmx_trainer *t, const int32_t *tokens, int B, int T, const int32_t *offsets,
                            const int32_t *lengths, double *loss_sum, int64_t *ntoks);
int64_t lmx_trainer_step(const lmx_trainer *t); /* optimizer updates so far */
/* Copies the trained values into the adapter set's host arrays when the
 * optimizer runs on a device (a no-op otherwise): call it before reading
 * or saving the adapters during training; lmx_trainer_free also does. */
lmx_status lmx_trainer_sync(lmx_trainer *t);
/* Trainable / total parameter counts, for mlx-lm's "Trainable parameters" line. */
void lmx_trainer_param_counts(const lmx_trainer *t, int64_t *trainable, int64_t *total);

#endif
