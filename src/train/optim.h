/*
 * optim.h - optimizers and learning-rate schedules with mlx.optimizers'
 * semantics and defaults (MLX-LM-SPEC §5), implemented in optim.c and
 * schedule.c.
 *
 * Parameters are f32 arrays (host memory); the optimizer keeps its state
 * (Adam's m and v, SGD's velocity) per parameter index, so the caller must
 * pass the same parameters in the same order on every update.
 */
#ifndef LMX_TRAIN_OPTIM_H
#define LMX_TRAIN_OPTIM_H

#include "core/array.h"
#include "base/base.h"

typedef enum { LMX_OPT_ADAM = 0, LMX_OPT_ADAMW, LMX_OPT_SGD } lmx_opt_kind;

typedef struct lmx_optim_config {
    lmx_opt_kind kind;
    float beta1, beta2, eps;  /* adam/adamw: 0.9, 0.999, 1e-8 */
    bool bias_correction;     /* adam/adamw: false (MLX's default) */
    float weight_decay;       /* adamw: 0.01 (decoupled); sgd: 0 (L2, added to the gradient) */
    float momentum, dampening; /* sgd: 0, 0 */
    bool nesterov;            /* sgd: false */
} lmx_optim_config;

/* MLX's defaults for kind. */
void lmx_optim_config_init(lmx_optim_config *c, lmx_opt_kind kind);
/* "adam" | "adamw" | "sgd" -> kind; LMX_ERR_INVALID_ARG names the others. */
lmx_status lmx_opt_kind_parse(const char *name, lmx_opt_kind *out);

typedef struct lmx_optim lmx_optim;
lmx_status lmx_optim_create(const lmx_optim_config *c, lmx_optim **out);
void lmx_optim_free(lmx_optim *o);
/* One step: params[i] (f32, contiguous, updated in place) -= f(grads[i])
 * at learning rate lr. grads[i] may be NULL when no gradient reached the
 * parameter: it is treated as zeros, as MLX's gradient tree would hold
 * (Adam's moments still decay and the parameter may still move). */
lmx_status lmx_optim_update(lmx_optim *o, int n, lmx_array *const *params, const lmx_array *const *grads, float lr);
int64_t lmx_optim_step(const lmx_optim *o); /* updates done so far */

/* Learning-rate schedules: mlx.optimizers.schedulers + mlx-lm's warm-up join. */
typedef enum {
    LMX_SCHED_CONSTANT = 0,  /* learning_rate */
    LMX_SCHED_COSINE,        /* cosine_decay(init, decay_steps, end=0) */
    LMX_SCHED_LINEAR,        /* linear_schedule(init, end, steps) */
    LMX_SCHED_STEP,          /* step_decay(init, decay_rate, step_size) */
    LMX_SCHED_EXPONENTIAL,   /* exponential_decay(init, decay_rate) */
} lmx_sched_kind;

typedef struct lmx_schedule {
    lmx_sched_kind kind;
    double args[3];   /* the YAML `arguments` list; args[0] = the initial rate */
    int n_args;
    int warmup;       /* linear warm-up steps from warmup_init to args[0]; 0 = none */
    double warmup_init;
} lmx_schedule;

/* "cosine_decay" | "linear_schedule" | "step_decay" | "exponential_decay". */
lmx_status lmx_sched_kind_parse(const char *name, lmx_sched_kind *out);
/* The rate used for optimizer update number `step` (0-based, as MLX counts
 * optimizer.step before its increment). CONSTANT returns base_lr. */
double lmx_schedule_lr(const lmx_schedule *s, double base_lr, int64_t step);

#endif
