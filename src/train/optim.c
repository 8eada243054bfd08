/*
 * optim.c - Adam, AdamW and SGD exactly as mlx.optimizers 0.32 computes them
 * in f32 (optimizers.py, apply_single). Each hyper-parameter enters the f32
 * arithmetic the way a Python float does in MLX: rounded to f32 where it
 * meets an f32 array, with `1 - beta` and `1 - dampening` formed in double
 * first. Operations are kept one rounding per step, in MLX's order, so the
 * results match MLX to the last bit or so (the compiler must not contract
 * a*b+c into an FMA: the library is built without -mfma outside the SIMD
 * kernel files).
 */
#include "train/optim.h"

#include "core/backend.h"
#include "core/optim_step.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct lmx_optim {
    lmx_optim_config c;
    int64_t step;
    int n;           /* parameters seen at the first update (0 before) */
    int64_t *numel;  /* [n] */
    float **m, **v;  /* [n] arrays of numel floats, or NULL when unused */
};

void lmx_optim_config_init(lmx_optim_config *c, lmx_opt_kind kind) {
    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->beta1 = 0.9;
    c->beta2 = 0.999;
    c->eps = 1e-8;
    c->bias_correction = false;
    c->weight_decay = kind == LMX_OPT_ADAMW ? 0.01 : 0.0;
    c->momentum = 0.0;
    c->dampening = 0.0;
    c->nesterov = false;
}

static const char *const KIND_NAMES[] = {"adam", "adamw", "sgd"};

const char *lmx_opt_kind_name(lmx_opt_kind k) {
    return (unsigned)k < sizeof KIND_NAMES / sizeof *KIND_NAMES ? KIND_NAMES[k] : "?";
}

lmx_status lmx_opt_kind_parse(const char *name, lmx_opt_kind *out) {
    for (int k = 0; k < (int)(sizeof KIND_NAMES / sizeof *KIND_NAMES); k++) {
        if (strcmp(name, KIND_NAMES[k]) == 0) {
            *out = (lmx_opt_kind)k;
            return LMX_OK;
        }
    }
    if (strcmp(name, "muon") == 0 || strcmp(name, "adafactor") == 0)
        return lmx_err(LMX_ERR_UNSUPPORTED, "optimizer: '%s' is not implemented in lmx (adam, adamw, sgd are)", name);
    return lmx_err(LMX_ERR_INVALID_ARG, "optimizer: invalid choice '%s' (choose from adam, adamw, muon, sgd, adafactor)",
                   name);
}

lmx_status lmx_optim_config_check(const lmx_optim_config *c) {
    if (c->kind == LMX_OPT_ADAM || c->kind == LMX_OPT_ADAMW) {
        const double b[2] = {c->beta1, c->beta2};
        for (int i = 0; i < 2; i++)
            if (!(b[i] >= 0.0 && b[i] < 1.0))
                return lmx_err(LMX_ERR_INVALID_ARG, "optimizer_config: Adam beta%d should be in [0, 1), %g was provided instead",
                               i + 1, b[i]);
        if (!(c->eps >= 0.0))
            return lmx_err(LMX_ERR_INVALID_ARG, "optimizer_config: Adam epsilon should be >=0, %g was provided instead", c->eps);
    } else if (c->kind == LMX_OPT_SGD) {
        if (c->nesterov && (c->momentum <= 0 || c->dampening != 0))
            return lmx_err(LMX_ERR_INVALID_ARG, "optimizer_config: Nesterov momentum requires a momentum and zero dampening.");
    } else {
        return lmx_err(LMX_ERR_INVALID_ARG, "optimizer: unknown kind %d", (int)c->kind);
    }
    return LMX_OK;
}

lmx_status lmx_optim_config_set(lmx_optim_config *c, const char *key, const double *values, int n) {
    const bool adam = c->kind == LMX_OPT_ADAM || c->kind == LMX_OPT_ADAMW;
    struct {
        const char *key;
        bool ok;
        int n;
        double *dst;
        bool *flag;
    } keys[] = {
        {"betas", adam, 2, NULL, NULL},
        {"eps", adam, 1, &c->eps, NULL},
        {"bias_correction", adam, 1, NULL, &c->bias_correction},
        {"weight_decay", c->kind != LMX_OPT_ADAM, 1, &c->weight_decay, NULL},
        {"momentum", c->kind == LMX_OPT_SGD, 1, &c->momentum, NULL},
        {"dampening", c->kind == LMX_OPT_SGD, 1, &c->dampening, NULL},
        {"nesterov", c->kind == LMX_OPT_SGD, 1, NULL, &c->nesterov},
    };
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        if (strcmp(key, keys[i].key) != 0 || !keys[i].ok) continue;
        if (n != keys[i].n)
            return lmx_err(LMX_ERR_INVALID_ARG, "optimizer_config.%s.%s: expected %d value%s, got %d", lmx_opt_kind_name(c->kind),
                           key, keys[i].n, keys[i].n == 1 ? "" : "s", n);
        if (keys[i].dst) {
            *keys[i].dst = values[0];
        } else if (keys[i].flag) {
            *keys[i].flag = values[0] != 0.0;
        } else {
            c->beta1 = values[0];
            c->beta2 = values[1];
        }
        return LMX_OK;
    }
    return lmx_err(LMX_ERR_INVALID_ARG, "optimizer_config.%s: %s.__init__() got an unexpected keyword argument '%s'",
                   lmx_opt_kind_name(c->kind), c->kind == LMX_OPT_ADAM ? "Adam" : c->kind == LMX_OPT_ADAMW ? "AdamW" : "SGD",
                   key);
}

lmx_status lmx_optim_create(const lmx_optim_config *c, lmx_optim **out) {
    *out = NULL;
    LMX_TRY(lmx_optim_config_check(c));
    lmx_optim *o = calloc(1, sizeof *o);
    if (!o) return lmx_err(LMX_ERR_NOMEM, "optimizer: out of memory");
    o->c = *c;
    *out = o;
    return LMX_OK;
}

static void free_state(lmx_optim *o) {
    for (int i = 0; i < o->n; i++) {
        if (o->m) free(o->m[i]);
        if (o->v) free(o->v[i]);
    }
    free(o->m);
    free(o->v);
    free(o->numel);
    o->m = o->v = NULL;
    o->numel = NULL;
    o->n = 0;
}

void lmx_optim_free(lmx_optim *o) {
    if (!o) return;
    free_state(o);
    free(o);
}

int64_t lmx_optim_step(const lmx_optim *o) { return o->step; }

const float *lmx_optim_state(const lmx_optim *o, int i, char which) {
    if (i < 0 || i >= o->n) return NULL;
    if (which == 'm') return o->m ? o->m[i] : NULL;
    if (which == 'v') return o->v ? o->v[i] : NULL;
    return NULL;
}

/* MLX's init_single, on the first update: zeroed state per parameter. */
static lmx_status init_state(lmx_optim *o, int n, lmx_array *const *params) {
    bool need_m = o->c.kind != LMX_OPT_SGD, need_v = o->c.kind != LMX_OPT_SGD || o->c.momentum > 0;
    o->numel = calloc((size_t)n, sizeof *o->numel);
    if (need_m) o->m = calloc((size_t)n, sizeof *o->m);
    if (need_v) o->v = calloc((size_t)n, sizeof *o->v);
    if (!o->numel || (need_m && !o->m) || (need_v && !o->v)) goto nomem;
    o->n = n;
    for (int i = 0; i < n; i++) {
        o->numel[i] = lmx_array_numel(params[i]);
        size_t cnt = (size_t)(o->numel[i] > 0 ? o->numel[i] : 1);
        if (need_m && !(o->m[i] = calloc(cnt, sizeof(float)))) goto nomem;
        if (need_v && !(o->v[i] = calloc(cnt, sizeof(float)))) goto nomem;
    }
    return LMX_OK;
nomem:
    if (!o->n) o->n = n; /* so free_state walks what was allocated */
    free_state(o);
    return lmx_err(LMX_ERR_NOMEM, "optimizer: out of memory for the state of %d parameters", n);
}

/* One parameter's Adam / AdamW update (optimizers.py Adam.apply_single; AdamW
 * passes parameter * (1 - lr * weight_decay) in). g == NULL: zeros. t is the
 * step after the increment (bias correction's exponent). */
static void adam_one(const lmx_optim_config *c, float *p, const float *g, float *m, float *v, int64_t n, float lr,
                     int64_t t) {
    const float b1 = (float)c->beta1, b2 = (float)c->beta2;
    const float one_m_b1 = (float)(1.0 - c->beta1), one_m_b2 = (float)(1.0 - c->beta2);
    const float eps = (float)c->eps;
    float decay = 1.0f;
    if (c->kind == LMX_OPT_ADAMW) {
        float lw = lr * (float)c->weight_decay;
        decay = 1.0f - lw;
    }
    float c1 = 0, c2 = 0;
    if (c->bias_correction) {
        float den1 = 1.0f - powf(b1, (float)t);
        c1 = lr / den1;
        float den2 = 1.0f - powf(b2, (float)t);
        c2 = 1.0f / sqrtf(den2);
    }
    for (int64_t i = 0; i < n; i++) {
        float gi = g ? g[i] : 0.0f;
        float pi = p[i];
        if (c->kind == LMX_OPT_ADAMW) pi = pi * decay;
        float mi = b1 * m[i];
        float gm = one_m_b1 * gi;
        mi = mi + gm;
        float vi = b2 * v[i];
        float g2 = gi * gi;
        float gv = one_m_b2 * g2;
        vi = vi + gv;
        m[i] = mi;
        v[i] = vi;
        if (c->bias_correction) {
            float num = c1 * mi;
            float den = sqrtf(vi) * c2;
            den = den + eps;
            float q = num / den;
            p[i] = pi - q;
        } else {
            float lm = lr * mi;
            float den = sqrtf(vi) + eps;
            float q = lm / den;
            p[i] = pi - q;
        }
    }
}

/* SGD.apply_single: L2 weight decay into the gradient, optional momentum
 * (v = momentum * v + (1 - dampening) * g, the (1 - dampening) factor only
 * when dampening > 0), Nesterov's g + momentum * v. */
static void sgd_one(const lmx_optim_config *c, float *p, const float *g, float *v, int64_t n, float lr) {
    const float wd = (float)c->weight_decay, mom = (float)c->momentum;
    const float one_m_damp = (float)(1.0 - c->dampening);
    for (int64_t i = 0; i < n; i++) {
        float gi = g ? g[i] : 0.0f;
        if (c->weight_decay != 0) {
            float wp = wd * p[i];
            gi = gi + wp;
        }
        if (c->momentum <= 0) {
            float u = lr * gi;
            p[i] = p[i] - u;
            continue;
        }
        float vi = mom * v[i];
        if (c->dampening > 0) {
            float dg = one_m_damp * gi;
            vi = vi + dg;
        } else {
            vi = vi + gi;
        }
        float upd = vi;
        if (c->nesterov) {
            float mv = mom * vi;
            upd = gi + mv;
        }
        v[i] = vi;
        float u = lr * upd;
        p[i] = p[i] - u;
    }
}

static lmx_status check_f32(const lmx_array *a, const char *what, int i) {
    if (a->dtype != LMX_F32 || !lmx_array_is_contiguous(a))
        return lmx_err(LMX_ERR_UNSUPPORTED, "optimizer: %s %d must be a contiguous f32 array (dtype %s)", what, i,
                       lmx_dtype_info(a->dtype) ? lmx_dtype_info(a->dtype)->name : "?");
    return LMX_OK;
}

lmx_status lmx_optim_update(lmx_optim *o, int n, lmx_array *const *params, const lmx_array *const *grads, float lr) {
    if (n < 0 || (n > 0 && !params)) return lmx_err(LMX_ERR_INVALID_ARG, "optimizer: bad parameter list");
    for (int i = 0; i < n; i++) {
        LMX_TRY(check_f32(params[i], "parameter", i));
        if (grads && grads[i]) {
            LMX_TRY(check_f32(grads[i], "gradient", i));
            if (lmx_array_numel(grads[i]) != lmx_array_numel(params[i]))
                return lmx_err(LMX_ERR_SHAPE, "optimizer: gradient %d has %lld elements, its parameter %lld", i,
                               (long long)lmx_array_numel(grads[i]), (long long)lmx_array_numel(params[i]));
        }
    }
    if (o->step == 0 && o->n == 0) {
        LMX_TRY(init_state(o, n, params));
    } else {
        if (n != o->n)
            return lmx_err(LMX_ERR_INVALID_ARG, "optimizer: %d parameters passed, %d at the first update", n, o->n);
        for (int i = 0; i < n; i++)
            if (lmx_array_numel(params[i]) != o->numel[i])
                return lmx_err(LMX_ERR_SHAPE, "optimizer: parameter %d has %lld elements, %lld at the first update", i,
                               (long long)lmx_array_numel(params[i]), (long long)o->numel[i]);
    }
    o->step++; /* MLX increments before apply_single: bias correction sees t = 1 first */
    for (int i = 0; i < n; i++) {
        float *p = params[i]->data;
        const float *g = grads && grads[i] ? grads[i]->data : NULL;
        int64_t cnt = o->numel[i];
        if (o->c.kind == LMX_OPT_SGD)
            sgd_one(&o->c, p, g, o->v ? o->v[i] : NULL, cnt, lr);
        else
            adam_one(&o->c, p, g, o->m[i], o->v[i], cnt, lr, o->step);
    }
    return LMX_OK;
}

/* The device form of lmx_optim_update: the same coefficients, derived as
 * adam_one / sgd_one derive them, for one launch of b->optim_step over
 * the flat arrays in *a (p, g, m, v, n, steps set by the caller). The
 * step counter advances as on the host; the host state stays unused. */
lmx_status lmx_optim_update_device(lmx_optim *o, lmx_backend *b, lmx_optim_step_args *a, float lr) {
    if (!b->optim_step) return lmx_err(LMX_ERR_UNSUPPORTED, "optimizer: the %s backend has no update kernel", b->name);
    const lmx_optim_config *c = &o->c;
    o->step++;
    a->kind = (int)c->kind;
    a->lr = lr;
    if (c->kind == LMX_OPT_SGD) {
        a->wd = (float)c->weight_decay;
        a->mom = (float)c->momentum;
        a->one_m_damp = (float)(1.0 - c->dampening);
        a->dampening = c->dampening > 0;
        a->nesterov = c->nesterov;
        if (c->momentum <= 0) a->v = NULL;
        return b->optim_step(b, a);
    }
    a->b1 = (float)c->beta1;
    a->b2 = (float)c->beta2;
    a->one_m_b1 = (float)(1.0 - c->beta1);
    a->one_m_b2 = (float)(1.0 - c->beta2);
    a->eps = (float)c->eps;
    a->decay = 1.0f;
    if (c->kind == LMX_OPT_ADAMW) {
        float lw = lr * (float)c->weight_decay;
        a->decay = 1.0f - lw;
    }
    a->bias_correction = c->bias_correction;
    if (c->bias_correction) {
        float den1 = 1.0f - powf(a->b1, (float)o->step);
        a->c1 = lr / den1;
        float den2 = 1.0f - powf(a->b2, (float)o->step);
        a->c2 = 1.0f / sqrtf(den2);
    }
    return b->optim_step(b, a);
}
