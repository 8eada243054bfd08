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

/* The hyper-parameters are doubles because MLX holds them as Python floats
 * and derives some coefficients in double before rounding to f32
 * (1 - beta1 = 0.09999999999999998 -> 0.1f, not 1 - 0.9f). */
typedef struct lmx_optim_config {
    lmx_opt_kind kind;
    double beta1, beta2, eps;  /* adam/adamw: 0.9, 0.999, 1e-8 */
    bool bias_correction;      /* adam/adamw: false (MLX's default) */
    double weight_decay;       /* adamw: 0.01 (decoupled); sgd: 0 (L2, added to the gradient) */
    double momentum, dampening; /* sgd: 0, 0 */
    bool nesterov;             /* sgd: false */
} lmx_optim_config;

/* MLX's defaults for kind. */
void lmx_optim_config_init(lmx_optim_config *c, lmx_opt_kind kind);
/* "adam" | "adamw" | "sgd" -> kind; LMX_ERR_INVALID_ARG names the others
 * (mlx-lm's "muon" and "adafactor" are LMX_ERR_UNSUPPORTED). */
lmx_status lmx_opt_kind_parse(const char *name, lmx_opt_kind *out);
const char *lmx_opt_kind_name(lmx_opt_kind k);
/* The checks MLX's constructors make (Adam: 0 <= beta < 1, eps >= 0; SGD:
 * nesterov needs momentum > 0 and dampening 0), with MLX's wording. */
lmx_status lmx_optim_config_check(const lmx_optim_config *c);
/* One optimizer_config kwarg (mlx-lm's YAML `optimizer_config.<name>`):
 * key is the Python keyword (betas, eps, bias_correction, weight_decay,
 * momentum, dampening, nesterov), values[0..n) its number(s) (betas takes 2,
 * booleans 0/1). An unknown keyword is an error naming it, as Python's
 * "unexpected keyword argument". */
lmx_status lmx_optim_config_set(lmx_optim_config *c, const char *key, const double *values, int n);

typedef struct lmx_optim lmx_optim;
lmx_status lmx_optim_create(const lmx_optim_config *c, lmx_optim **out);
void lmx_optim_free(lmx_optim *o);
/* One step: params[i] (f32, contiguous, updated in place) -= f(grads[i])
 * at learning rate lr. grads[i] may be NULL when no gradient reached the
 * parameter: it is treated as zeros, as MLX's gradient tree would hold
 * (Adam's moments still decay and the parameter may still move). */
lmx_status lmx_optim_update(lmx_optim *o, int n, lmx_array *const *params, const lmx_array *const *grads, float lr);
int64_t lmx_optim_step(const lmx_optim *o); /* updates done so far */
/* Optimizer state of parameter i: which 'm' (Adam's first moment) or 'v'
 * (Adam's second moment, SGD's velocity); NULL before the first update or
 * when the optimizer keeps no such state (SGD without momentum has v = 0
 * in MLX and never touches it: NULL here). numel floats. */
const float *lmx_optim_state(const lmx_optim *o, int i, char which);

/* One step on a device backend (b->optim_step): a's p, g (summed
 * gradients, zeroed by the update), m, v (zeroed at the first step by the
 * caller), n and steps set by the caller; the kind and the coefficients
 * come from o's config, derived as the host update derives them (same
 * bits). Advances the step counter; lmx_optim_state stays NULL.
 * LMX_ERR_UNSUPPORTED when b has no update kernel. */
struct lmx_backend;
struct lmx_optim_step_args;
lmx_status lmx_optim_update_device(lmx_optim *o, struct lmx_backend *b, struct lmx_optim_step_args *a, float lr);

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
const char *lmx_sched_kind_name(lmx_sched_kind k); /* "constant" for CONSTANT */
/* The argument count each function takes (Python's TypeError otherwise) and
 * the ValueErrors mlx.optimizers.schedulers raises (decay_steps, steps,
 * step_size >= 1); warmup >= 0. */
lmx_status lmx_schedule_check(const lmx_schedule *s);
/* The rate used for optimizer update number `step` (0-based, as MLX counts
 * optimizer.step before its increment). CONSTANT returns base_lr. Computed
 * in f32 as MLX does (the step is a uint64 array, so every product is f32);
 * the result is that f32 value. With warm-up W (mlx-lm's build_schedule):
 * join_schedules([linear(warmup_init, args[0], W), fn], [W + 1]), so steps
 * 0..W ramp (step W gives args[0]) and step W+1+k gives fn(k) - the peak
 * rate is used twice. */
double lmx_schedule_lr(const lmx_schedule *s, double base_lr, int64_t step);

#endif
