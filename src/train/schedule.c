/*
 * schedule.c - mlx.optimizers.schedulers (cosine_decay, linear_schedule,
 * step_decay, exponential_decay) and mlx-lm's build_schedule warm-up join,
 * evaluated as MLX evaluates them: the step is an mx.uint64 array, so every
 * Python-float argument meets it as an f32 and each operation rounds to f32;
 * expressions built only from Python floats ((end - init) / steps, pi /
 * decay_steps, init - end) are formed in double first.
 */
#include "train/optim.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

static const char *const SCHED_NAMES[] = {"constant", "cosine_decay", "linear_schedule", "step_decay",
                                          "exponential_decay"};
/* Python signatures: minimum and maximum positional argument counts. */
static const int ARGS_MIN[] = {0, 2, 3, 3, 2};
static const int ARGS_MAX[] = {0, 3, 3, 3, 2};
static const char *const ARG_NAMES[][3] = {
    {"", "", ""},
    {"init", "decay_steps", "end"},
    {"init", "end", "steps"},
    {"init", "decay_rate", "step_size"},
    {"init", "decay_rate", ""},
};

const char *lmx_sched_kind_name(lmx_sched_kind k) {
    return (unsigned)k < sizeof SCHED_NAMES / sizeof *SCHED_NAMES ? SCHED_NAMES[k] : "?";
}

lmx_status lmx_sched_kind_parse(const char *name, lmx_sched_kind *out) {
    for (int k = 1; k < (int)(sizeof SCHED_NAMES / sizeof *SCHED_NAMES); k++) {
        if (strcmp(name, SCHED_NAMES[k]) == 0) {
            *out = (lmx_sched_kind)k;
            return LMX_OK;
        }
    }
    return lmx_err(LMX_ERR_INVALID_ARG,
                   "lr_schedule.name: module 'mlx.optimizers.schedulers' has no attribute '%s' (cosine_decay, "
                   "linear_schedule, step_decay, exponential_decay)",
                   name);
}

lmx_status lmx_schedule_check(const lmx_schedule *s) {
    if (s->kind == LMX_SCHED_CONSTANT) return LMX_OK;
    if ((unsigned)s->kind >= sizeof SCHED_NAMES / sizeof *SCHED_NAMES)
        return lmx_err(LMX_ERR_INVALID_ARG, "lr_schedule: unknown schedule %d", (int)s->kind);
    const char *name = SCHED_NAMES[s->kind];
    int lo = ARGS_MIN[s->kind], hi = ARGS_MAX[s->kind];
    if (s->n_args < lo)
        return lmx_err(LMX_ERR_INVALID_ARG, "lr_schedule.arguments: %s() missing required positional argument '%s' (%d given)",
                       name, ARG_NAMES[s->kind][s->n_args], s->n_args);
    if (s->n_args > hi)
        return lmx_err(LMX_ERR_INVALID_ARG, "lr_schedule.arguments: %s() takes from %d to %d positional arguments but %d were given",
                       name, lo, hi, s->n_args);
    if (s->kind == LMX_SCHED_COSINE && s->args[1] < 1)
        return lmx_err(LMX_ERR_INVALID_ARG, "lr_schedule.arguments: decay_steps must be greater than 0, but got %g.", s->args[1]);
    if (s->kind == LMX_SCHED_LINEAR && s->args[2] < 1)
        return lmx_err(LMX_ERR_INVALID_ARG, "lr_schedule.arguments: steps must be greater than 0, but got %g.", s->args[2]);
    if (s->kind == LMX_SCHED_STEP && s->args[2] < 1)
        return lmx_err(LMX_ERR_INVALID_ARG, "lr_schedule.arguments: step_size must be greater than 0, but got %g.", s->args[2]);
    /* build_schedule: `if warmup := config.get("warmup", 0)` - a negative
     * count is truthy and reaches linear_schedule's check. */
    if (s->warmup < 0)
        return lmx_err(LMX_ERR_INVALID_ARG, "lr_schedule.warmup: steps must be greater than 0, but got %d.", s->warmup);
    return LMX_OK;
}

/* mx.cos on the CPU for |x| <= 2^23: MLX's Cephes-derived sincos
 * (mlx/backend/cpu/simd/math.h), not libm - it differs from a correctly
 * rounded cosf by an ulp at some arguments, which 0.5 * (1 + cos) near the
 * end of a cosine decay magnifies. */
static float mlx_cosf(float in) {
    if (fabsf(in) > 8388608.0f) return cosf(in);
    float x = fabsf(in);
    float y = x * 1.27323954473516f;
    uint32_t emm2 = (uint32_t)y;
    emm2 = (emm2 + 1) & ~1u;
    y = (float)emm2;
    bool poly_mask = (emm2 & 2) != 0;
    x = fmaf(y, -0.78515625f, x);
    x = fmaf(y, -2.4187564849853515625e-4f, x);
    x = fmaf(y, -3.77489497744594108e-8f, x);
    bool sign_mask_cos = ((emm2 - 2) & 4) != 0;
    float z = x * x;
    float y1 = fmaf(z, 2.443315711809948e-5f, -1.388731625493765e-3f);
    float y2 = fmaf(z, -1.9515295891e-4f, 8.3321608736e-3f);
    y1 = fmaf(y1, z, 4.166664568298827e-2f);
    y2 = fmaf(y2, z, -1.6666654611e-1f);
    y1 = y1 * z;
    y2 = y2 * z;
    y1 = y1 * z;
    y2 = fmaf(x, y2, x);
    y1 = fmaf(z, -0.5f, y1);
    y1 = y1 + 1.0f;
    float yc = poly_mask ? y2 : y1;
    return sign_mask_cos ? yc : -yc;
}

/* linear_schedule(init, end, steps)(step) */
static float linear_at(double init, double end, double steps, uint64_t step) {
    float s = (float)(step < steps ? (double)step : steps); /* mx.minimum(step, steps) */
    float slope = (float)((end - init) / steps);
    float y = s * slope;
    return y + (float)init;
}

static float cosine_at(double init, double decay_steps, double end, uint64_t step) {
    float s = (float)(step < decay_steps ? (double)step : decay_steps);
    float arg = (float)(M_PI / decay_steps) * s;
    float c = mlx_cosf(arg);
    float decay = 0.5f * (1.0f + c);
    float span = decay * (float)(init - end);
    return (float)end + span;
}

static float step_decay_at(double init, double rate, double step_size, uint64_t step) {
    float q;
    if (step_size == floor(step_size)) /* an int: uint64 floor division */
        q = (float)(step / (uint64_t)step_size);
    else
        q = floorf((float)step / (float)step_size);
    float p = powf((float)rate, q);
    return (float)init * p;
}

static float exponential_at(double init, double rate, uint64_t step) {
    float p = powf((float)rate, (float)step);
    return (float)init * p;
}

static float fn_at(const lmx_schedule *s, uint64_t step) {
    const double *a = s->args;
    switch (s->kind) {
    case LMX_SCHED_COSINE: return cosine_at(a[0], a[1], s->n_args > 2 ? a[2] : 0.0, step);
    case LMX_SCHED_LINEAR: return linear_at(a[0], a[1], a[2], step);
    case LMX_SCHED_STEP: return step_decay_at(a[0], a[1], a[2], step);
    case LMX_SCHED_EXPONENTIAL: return exponential_at(a[0], a[1], step);
    default: return (float)a[0];
    }
}

double lmx_schedule_lr(const lmx_schedule *s, double base_lr, int64_t step) {
    if (!s || s->kind == LMX_SCHED_CONSTANT) return (double)(float)base_lr;
    uint64_t st = step < 0 ? 0 : (uint64_t)step;
    if (s->warmup > 0) {
        /* join_schedules([warmup, fn], [warmup + 1]): where(step < boundary, ...) */
        uint64_t boundary = (uint64_t)s->warmup + 1;
        if (st < boundary) return linear_at(s->warmup_init, s->args[0], (double)s->warmup, st);
        return fn_at(s, st - boundary);
    }
    return fn_at(s, st);
}
