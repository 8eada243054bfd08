/* test_grad.c - every vjp of the op table against central finite differences.
 *
 * Each case runs a forward pass with the tape on, seeds the output with fixed
 * random weights R (objective L = Σ y·R, accumulated in f64; a scalar loss
 * is seeded with 1) and compares the tape's gradient of each f32 input with
 * (L(θ+ε) - L(θ-ε)) / 2ε, ε = 1e-2.
 *
 * Tolerance: |g_tape - g_fd| ≤ 2e-3·max(1, |g_fd|). Why: the f32 forward
 * has relative rounding ~1e-7 per element, so with |L| ≲ 10 the difference
 * quotient carries ≲ 1e-4 of rounding; the truncation error of the central
 * difference is ε²/6·|L'''| ≲ 1e-4 for these O(1)-scaled inputs. A wrong
 * vjp (missing term, transposed index, wrong sign) is off by O(|g|) ≫ 2e-3.
 * ReLU inputs are kept ≥ 0.05 away from its kink so ε never straddles it.
 * The CPU backend's fast vjps are checked against these references in
 * test_fast_vjps.c.
 */
#include "backend/cpu/cpu_vjp.h"
#include "core/ops.h"
#include "core/tape.h"
#include "testing.h"

#include <math.h>
#include <stdlib.h>

#define EPS 1e-2f
#define TOL 2e-3

static lmx_backend *BE;
static uint64_t rng = 0x9E3779B97F4A7C15ull;

static float frand(void) { return t_frand(&rng); } /* uniform in [-1, 1) */

static lmx_array mk(int ndim, int64_t d0, int64_t d1, int64_t d2, float amp) {
    return t_rand_f32(&rng, ndim, d0, d1, d2, amp);
}

typedef lmx_status (*fwd_fn)(lmx_exec *ex, void *ctx, lmx_array **y);

static double objective(const lmx_array *y, const float *R) {
    double L = 0;
    int64_t n = lmx_array_numel(y);
    float *d = malloc((size_t)n * sizeof *d);
    if (!d || lmx_array_to_f32(y, d) != LMX_OK) {
        free(d);
        return NAN;
    }
    for (int64_t i = 0; i < n; i++) L += (double)d[i] * (R ? R[i] : 1.0f);
    free(d);
    return L;
}

/* Checks d(Σ y·R)/dp for each p in params (at most max_el elements each,
 * spread evenly); a missing tape gradient counts as zeros. Both backward
 * paths are checked: the reference vjps (lmx_tape_set_reference) and the
 * CPU backend's fast ones. */
static void fd_check(const char *what, fwd_fn f, void *ctx, lmx_array **params, int np, int max_el) {
    lmx_exec ex0 = {BE, NULL};
    lmx_array *y = NULL;
    CHECK_OK(f(&ex0, ctx, &y));
    int64_t ny = lmx_array_numel(y);
    lmx_array R = {0};
    if (ny > 1) R = mk(1, ny, 1, 1, 1.0f);
    const float *Rd = ny > 1 ? R.data : NULL;
    float *grads[2][16] = {{0}};
    for (int mode = 0; mode < 2; mode++) { /* 0: reference vjps, 1: fast */
        lmx_tape *tape = NULL;
        CHECK_OK(lmx_tape_create(&tape));
        if (!tape) return;
        lmx_tape_set_reference(tape, mode == 0);
        lmx_exec ex = {BE, tape};
        CHECK_OK(f(&ex, ctx, &y));
        CHECK_OK(lmx_tape_backward(tape, y, ny > 1 ? &R : NULL));
        for (int p = 0; p < np && p < 16; p++) {
            const lmx_array *g = lmx_tape_grad(tape, params[p]);
            size_t n = (size_t)lmx_array_numel(params[p]);
            grads[mode][p] = calloc(n, sizeof(float));
            if (g && grads[mode][p]) memcpy(grads[mode][p], g->data, n * sizeof(float));
        }
        lmx_tape_free(tape);
    }
    double worst = 0;
    for (int p = 0; p < np && p < 16; p++) {
        lmx_array *a = params[p];
        int64_t n = lmx_array_numel(a), step = n > max_el ? (n + max_el - 1) / max_el : 1;
        float *x = a->data;
        for (int64_t i = (p * 7) % step; i < n && grads[0][p] && grads[1][p]; i += step) {
            float v = x[i];
            x[i] = v + EPS;
            CHECK_OK(f(&ex0, ctx, &y));
            double lp = objective(y, Rd);
            x[i] = v - EPS;
            CHECK_OK(f(&ex0, ctx, &y));
            double lm = objective(y, Rd);
            x[i] = v;
            double fd = (lp - lm) / (2.0 * EPS);
            for (int mode = 0; mode < 2; mode++) {
                double an = grads[mode][p][i], err = fabs(fd - an) / fmax(1.0, fabs(fd));
                if (err > worst) worst = err;
                CHECK_MSG(err <= TOL, "%s (%s vjps): param %d elem %lld: tape %.6f vs finite difference %.6f", what,
                          mode ? "fast" : "reference", p, (long long)i, an, fd);
            }
        }
        free(grads[0][p]);
        free(grads[1][p]);
    }
    if (getenv("LMX_GRAD_VERBOSE")) fprintf(stderr, "  %-28s worst rel err %.2e\n", what, worst);
    lmx_array_release(&R);
}

/* ---- single ops ------------------------------------------------------- */

typedef struct {
    lmx_array a, b, c, out, tmp, ids, w;
    lmx_array sc, qb;
    int kind, flag;
    float f;
} op_ctx;

static lmx_status f_matmul(lmx_exec *ex, void *c, lmx_array **y) {
    op_ctx *o = c;
    *y = &o->out;
    return lmx_matmul(ex, &o->out, &o->a, &o->b, o->flag ? &o->c : NULL);
}

static void test_matmul(void) {
    for (int bias = 0; bias < 2; bias++) {
        op_ctx o = {.a = mk(2, 5, 7, 1, 1), .b = mk(2, 3, 7, 1, 1), .c = mk(1, 3, 1, 1, 1), .flag = bias};
        o.out = mk(2, 5, 3, 1, 0);
        lmx_array *ps[] = {&o.a, &o.b, &o.c};
        fd_check(bias ? "matmul+bias" : "matmul", f_matmul, &o, ps, bias ? 3 : 2, 64);
        lmx_array_release(&o.a), lmx_array_release(&o.b), lmx_array_release(&o.c), lmx_array_release(&o.out);
    }
}

/* out = 1·c, then out += a·bᵀ in place (LMX_OP_MATMUL_ACC): the tape must
 * hand out's gradient on to the earlier value (and so to c) besides a, b. */
static lmx_status f_matmul_acc(lmx_exec *ex, void *c, lmx_array **y) {
    op_ctx *o = c;
    *y = &o->out;
    LMX_TRY(lmx_scale(ex, &o->out, &o->c, 1.0f));
    return lmx_matmul_acc(ex, &o->out, &o->a, &o->b, o->f);
}

/* s = 1 and a LoRA-like scale (dx, dw carry s; out's earlier value does not) */
static void test_matmul_acc(void) {
    op_ctx o = {.a = mk(2, 5, 7, 1, 1), .b = mk(2, 3, 7, 1, 1), .c = mk(2, 5, 3, 1, 1)};
    o.out = mk(2, 5, 3, 1, 0);
    lmx_array *ps[] = {&o.a, &o.b, &o.c};
    o.f = 1.0f;
    fd_check("matmul_acc (in place)", f_matmul_acc, &o, ps, 3, 64);
    o.f = -2.5f;
    fd_check("matmul_acc (in place, s -2.5)", f_matmul_acc, &o, ps, 3, 64);
    /* refused: w's columns do not match x, and an out of the wrong width */
    lmx_exec ex = {BE, NULL};
    lmx_array bad = mk(2, 3, 6, 1, 1), wide = mk(2, 5, 4, 1, 0);
    CHECK(lmx_matmul_acc(&ex, &o.out, &o.a, &bad, 1.0f) == LMX_ERR_SHAPE);
    CHECK(lmx_matmul_acc(&ex, &wide, &o.a, &o.b, 1.0f) == LMX_ERR_SHAPE);
    CHECK(strstr(lmx_last_error(), "matmul_acc") != NULL);
    lmx_array_release(&bad), lmx_array_release(&wide);
    lmx_array_release(&o.a), lmx_array_release(&o.b), lmx_array_release(&o.c), lmx_array_release(&o.out);
}

static lmx_status f_qmatmul(lmx_exec *ex, void *c, lmx_array **y) {
    op_ctx *o = c;
    *y = &o->out;
    return lmx_matmul_q(ex, &o->out, &o->a, &o->w, NULL, &o->sc, &o->qb, 32);
}

/* QLoRA: a 4-bit MLX weight; gradient w.r.t. x only, none for the weight. */
static void test_matmul_q4(void) {
    op_ctx o = {.a = mk(2, 3, 64, 1, 1), .sc = mk(2, 4, 2, 1, 0.1f), .qb = mk(2, 4, 2, 1, 0.5f)};
    int64_t sh[2] = {4, 64};
    CHECK_OK(lmx_array_alloc(&o.w, LMX_MLX_Q4, 2, sh));
    uint8_t *wb = o.w.data;
    for (size_t i = 0; i < lmx_array_nbytes(&o.w); i++) wb[i] = (uint8_t)(frand() * 127 + 128);
    o.out = mk(2, 3, 4, 1, 0);
    lmx_array *ps[] = {&o.a};
    fd_check("matmul q4 (dx)", f_qmatmul, &o, ps, 1, 64);
    lmx_tape *tape = NULL;
    CHECK_OK(lmx_tape_create(&tape));
    lmx_exec ex = {BE, tape};
    lmx_array *y;
    CHECK_OK(f_qmatmul(&ex, &o, &y));
    CHECK_OK(lmx_tape_backward(tape, y, NULL));
    CHECK(lmx_tape_grad(tape, &o.w) == NULL && lmx_tape_grad(tape, &o.sc) == NULL);
    CHECK(lmx_tape_grad(tape, &o.a) != NULL);
    lmx_tape_free(tape);
    lmx_array *all[] = {&o.a, &o.w, &o.sc, &o.qb, &o.out};
    for (size_t i = 0; i < 5; i++) lmx_array_release(all[i]);
}

static lmx_status f_get_rows(lmx_exec *ex, void *c, lmx_array **y) {
    op_ctx *o = c;
    *y = &o->out;
    return lmx_get_rows(ex, &o->out, &o->a, &o->ids);
}

static void test_get_rows(void) {
    int32_t ids[4] = {1, 3, 1, 5};
    op_ctx o = {.a = mk(2, 6, 5, 1, 1), .ids = t_i32(4, ids)};
    o.out = mk(2, 4, 5, 1, 0);
    lmx_array *ps[] = {&o.a};
    fd_check("get_rows (scatter-add)", f_get_rows, &o, ps, 1, 64);
    lmx_array_release(&o.a), lmx_array_release(&o.ids), lmx_array_release(&o.out);
}

static lmx_status f_norm(lmx_exec *ex, void *c, lmx_array **y) {
    op_ctx *o = c;
    *y = &o->out;
    if (o->kind == 0) return lmx_rms_norm(ex, &o->out, &o->a, o->flag >= 0 ? &o->b : NULL, 1e-5f, o->flag == 1);
    return lmx_layer_norm(ex, &o->out, &o->a, &o->b, &o->c, 1e-5f);
}

static void test_norms(void) {
    const char *names[] = {"rms_norm (no weight)", "rms_norm", "rms_norm (1+w)", "layer_norm"};
    int kinds[] = {0, 0, 0, 1}, flags[] = {-1, 0, 1, 0};
    for (int v = 0; v < 4; v++) {
        op_ctx o = {.a = mk(2, 3, 9, 1, 1.5f), .b = mk(1, 9, 1, 1, 1), .c = mk(1, 9, 1, 1, 1), .kind = kinds[v],
                    .flag = flags[v]};
        o.out = mk(2, 3, 9, 1, 0);
        lmx_array *ps[] = {&o.a, &o.b, &o.c};
        fd_check(names[v], f_norm, &o, ps, v == 0 ? 1 : v == 3 ? 3 : 2, 64);
        lmx_array_release(&o.a), lmx_array_release(&o.b), lmx_array_release(&o.c), lmx_array_release(&o.out);
    }
}

static lmx_status f_rope(lmx_exec *ex, void *c, lmx_array **y) {
    op_ctx *o = c;
    *y = &o->out;
    if (o->kind) { /* in place on a copy of the input */
        LMX_TRY(lmx_copy(ex, &o->tmp, &o->a));
        return lmx_rope(ex, &o->tmp, &o->tmp, &o->b, 2, 6, o->flag, o->f), *y = &o->tmp, LMX_OK;
    }
    return lmx_rope(ex, &o->out, &o->a, &o->b, 2, 6, o->flag, o->f);
}

static void test_rope(void) {
    for (int v = 0; v < 4; v++) { /* rotate_half / traditional, out of place / in place */
        op_ctx o = {.a = mk(3, 3, 4, 10, 1), .b = mk(1, 3, 1, 1, 0), .flag = v & 1, .kind = v >> 1, .f = 1.3f};
        for (int i = 0; i < 3; i++) ((float *)o.b.data)[i] = powf(100.0f, -(float)i / 3.0f);
        o.out = mk(3, 3, 4, 10, 0);
        o.tmp = mk(3, 3, 4, 10, 0);
        lmx_array *ps[] = {&o.a};
        const char *nm[] = {"rope", "rope traditional", "rope in place", "rope traditional in place"};
        fd_check(nm[v], f_rope, &o, ps, 1, 120);
        lmx_array_release(&o.a), lmx_array_release(&o.b), lmx_array_release(&o.out), lmx_array_release(&o.tmp);
    }
}

static lmx_status f_attn(lmx_exec *ex, void *c, lmx_array **y) {
    op_ctx *o = c;
    *y = &o->out;
    return lmx_attention(ex, &o->out, &o->a, &o->b, &o->c, 2, 1.0f / sqrtf(8.0f), o->f, o->kind);
}

static void test_attention(void) {
    struct { const char *name; float cap; int window; } v[] = {
        {"attention (GQA, causal)", 0, 0}, {"attention softcap", 1.5f, 0}, {"attention window", 0, 2},
        {"attention window+softcap", 2.0f, 3}};
    for (int i = 0; i < 4; i++) {
        op_ctx o = {.a = mk(3, 3, 4, 8, 1.5f), .b = mk(3, 5, 2, 8, 1.5f), .c = mk(3, 5, 2, 8, 1), .f = v[i].cap,
                    .kind = v[i].window};
        o.out = mk(2, 3, 32, 1, 0);
        lmx_array *ps[] = {&o.a, &o.b, &o.c};
        fd_check(v[i].name, f_attn, &o, ps, 3, 96);
        lmx_array_release(&o.a), lmx_array_release(&o.b), lmx_array_release(&o.c), lmx_array_release(&o.out);
    }
}

static lmx_status f_elem(lmx_exec *ex, void *c, lmx_array **y) {
    op_ctx *o = c;
    *y = &o->out;
    switch (o->kind) {
    case 0: return lmx_add(ex, &o->out, &o->a, &o->b);
    case 1: return lmx_mul(ex, &o->out, &o->a, &o->b);
    case 2: return lmx_scale(ex, &o->out, &o->a, o->f);
    case 3: return lmx_softcap(ex, &o->out, &o->a, o->f);
    case 4: return lmx_softmax(ex, &o->out, &o->a);
    default: return lmx_copy(ex, &o->out, &o->a);
    }
}

static void test_elementwise(void) {
    const char *nm[] = {"add", "mul", "scale", "softcap", "softmax", "copy"};
    for (int k = 0; k < 6; k++)
        for (int bc = 0; bc < (k < 2 ? 2 : 1); bc++) {
            op_ctx o = {.a = mk(2, 3, 7, 1, 2), .b = bc ? mk(1, 7, 1, 1, 1) : mk(2, 3, 7, 1, 1), .kind = k,
                        .f = k == 2 ? -0.7f : 1.5f};
            o.out = mk(2, 3, 7, 1, 0);
            lmx_array *ps[] = {&o.a, &o.b};
            char name[64];
            snprintf(name, sizeof name, "%s%s", nm[k], bc ? " (row broadcast)" : "");
            fd_check(name, f_elem, &o, ps, k < 2 ? 2 : 1, 64);
            lmx_array_release(&o.a), lmx_array_release(&o.b), lmx_array_release(&o.out);
        }
}

static lmx_status f_act(lmx_exec *ex, void *c, lmx_array **y) {
    op_ctx *o = c;
    *y = &o->out;
    if (!o->flag) return lmx_act(ex, &o->out, &o->a, NULL, (lmx_act_kind)o->kind);
    lmx_array g, u; /* gate and up: strided column views of one fused array */
    lmx_array_cols(&g, &o->a, 0, 5);
    lmx_array_cols(&u, &o->a, 5, 5);
    return lmx_act(ex, &o->out, &g, &u, (lmx_act_kind)o->kind);
}

static void test_act(void) {
    const char *nm[] = {"silu", "gelu (erf)", "gelu (tanh)", "relu"};
    for (int k = 0; k < 4; k++)
        for (int gated = 0; gated < 2; gated++) {
            op_ctx o = {.a = mk(2, 3, gated ? 10 : 5, 1, 2.5f), .kind = k, .flag = gated};
            float *d = o.a.data;
            for (int64_t i = 0; i < lmx_array_numel(&o.a); i++)
                if (fabsf(d[i]) < 0.05f) d[i] = d[i] < 0 ? -0.3f : 0.3f; /* off ReLU's kink */
            o.out = mk(2, 3, 5, 1, 0);
            lmx_array *ps[] = {&o.a};
            char name[64];
            snprintf(name, sizeof name, "act %s%s", nm[k], gated ? " gated (column views)" : "");
            fd_check(name, f_act, &o, ps, 1, 64);
            lmx_array_release(&o.a), lmx_array_release(&o.out);
        }
}

static lmx_status f_ce(lmx_exec *ex, void *c, lmx_array **y) {
    op_ctx *o = c;
    *y = &o->out;
    return lmx_cross_entropy(ex, &o->out, &o->a, &o->ids, o->flag ? &o->b : NULL);
}

static void test_cross_entropy(void) {
    int32_t tg[4] = {2, 0, 6, 3};
    for (int masked = 0; masked < 2; masked++) {
        op_ctx o = {.a = mk(2, 4, 7, 1, 2), .ids = t_i32(4, tg), .b = mk(1, 4, 1, 1, 0), .flag = masked};
        float m[4] = {1, 0, 1, 1};
        memcpy(o.b.data, m, sizeof m);
        o.out = mk(1, 1, 1, 1, 0);
        lmx_array *ps[] = {&o.a};
        fd_check(masked ? "cross_entropy (masked)" : "cross_entropy", f_ce, &o, ps, 1, 64);
        lmx_array_release(&o.a), lmx_array_release(&o.ids), lmx_array_release(&o.b), lmx_array_release(&o.out);
    }
    /* an out-of-range target is refused */
    int32_t bad[4] = {2, 0, 7, 3};
    lmx_array lg = mk(2, 4, 7, 1, 1), ids = t_i32(4, bad), loss = mk(1, 1, 1, 1, 0);
    lmx_exec ex = {BE, NULL};
    CHECK(lmx_cross_entropy(&ex, &loss, &lg, &ids, NULL) == LMX_ERR_INVALID_ARG);
    lmx_array_release(&lg), lmx_array_release(&ids), lmx_array_release(&loss);
}

/* ---- a 1-layer transformer, end to end --------------------------------- */

enum { T = 5, D = 16, H = 4, HKV = 2, HD = 6, F = 10, V = 11 };

typedef struct {
    lmx_array emb, wn1, wq, wk, bk, wv, wo, lnw, lnb, wgu, wd, wnf, wlm, inv_freq, ids, tg, mask;
    lmx_array x, h1, q, k, v, qr, kr, att, o, r1, h2, gu, act, d, r2, h3, logits, capped, loss;
} mini;

static lmx_status f_mini(lmx_exec *ex, void *c, lmx_array **y) {
    mini *m = c;
    *y = &m->loss;
    lmx_array q3 = {0}, k3 = {0}, v3 = {0}, g, u;
    int64_t sq[3] = {T, H, HD}, skv[3] = {T, HKV, HD};
    LMX_TRY(lmx_get_rows(ex, &m->x, &m->emb, &m->ids));
    LMX_TRY(lmx_rms_norm(ex, &m->h1, &m->x, &m->wn1, 1e-5f, false));
    LMX_TRY(lmx_matmul(ex, &m->q, &m->h1, &m->wq, NULL));
    LMX_TRY(lmx_matmul(ex, &m->k, &m->h1, &m->wk, &m->bk));
    LMX_TRY(lmx_matmul(ex, &m->v, &m->h1, &m->wv, NULL));
    lmx_status st = lmx_array_view(&q3, &m->q, 0, 3, sq);
    if (!st) st = lmx_array_view(&k3, &m->k, 0, 3, skv);
    if (!st) st = lmx_array_view(&v3, &m->v, 0, 3, skv);
    if (!st) st = lmx_rope(ex, &m->qr, &q3, &m->inv_freq, 0, 4, false, 1.0f);
    if (!st) st = lmx_rope(ex, &m->kr, &k3, &m->inv_freq, 0, 4, false, 1.0f);
    if (!st) st = lmx_attention(ex, &m->att, &m->qr, &m->kr, &v3, 0, 1.0f / sqrtf((float)HD), 0.0f, 3);
    lmx_array_release(&q3), lmx_array_release(&k3), lmx_array_release(&v3);
    LMX_TRY(st);
    LMX_TRY(lmx_matmul(ex, &m->o, &m->att, &m->wo, NULL));
    LMX_TRY(lmx_add(ex, &m->r1, &m->x, &m->o));
    LMX_TRY(lmx_layer_norm(ex, &m->h2, &m->r1, &m->lnw, &m->lnb, 1e-5f));
    LMX_TRY(lmx_matmul(ex, &m->gu, &m->h2, &m->wgu, NULL));
    lmx_array_cols(&g, &m->gu, 0, F);
    lmx_array_cols(&u, &m->gu, F, F);
    LMX_TRY(lmx_act(ex, &m->act, &g, &u, LMX_ACT_SILU));
    LMX_TRY(lmx_matmul(ex, &m->d, &m->act, &m->wd, NULL));
    LMX_TRY(lmx_add(ex, &m->r2, &m->r1, &m->d));
    LMX_TRY(lmx_rms_norm(ex, &m->h3, &m->r2, &m->wnf, 1e-5f, true));
    LMX_TRY(lmx_matmul(ex, &m->logits, &m->h3, &m->wlm, NULL));
    LMX_TRY(lmx_softcap(ex, &m->capped, &m->logits, 5.0f));
    return lmx_cross_entropy(ex, &m->loss, &m->capped, &m->tg, &m->mask);
}

static void test_mini_transformer(void) {
    int32_t ids[T] = {3, 7, 1, 3, 10}, tg[T] = {7, 1, 3, 10, 0};
    mini m = {.emb = mk(2, V, D, 1, 1), .wn1 = mk(1, D, 1, 1, 1), .wq = mk(2, H * HD, D, 1, 0.5f),
              .wk = mk(2, HKV * HD, D, 1, 0.5f), .bk = mk(1, HKV * HD, 1, 1, 0.2f),
              .wv = mk(2, HKV * HD, D, 1, 0.5f), .wo = mk(2, D, H * HD, 1, 0.3f), .lnw = mk(1, D, 1, 1, 1),
              .lnb = mk(1, D, 1, 1, 0.3f), .wgu = mk(2, 2 * F, D, 1, 0.5f), .wd = mk(2, D, F, 1, 0.4f),
              .wnf = mk(1, D, 1, 1, 0.3f), .wlm = mk(2, V, D, 1, 0.6f), .inv_freq = mk(1, 2, 1, 1, 0),
              .ids = t_i32(T, ids), .tg = t_i32(T, tg), .mask = mk(1, T, 1, 1, 0)};
    float mask[T] = {0, 1, 1, 0, 1};
    memcpy(m.mask.data, mask, sizeof mask);
    ((float *)m.inv_freq.data)[0] = 1.0f;
    ((float *)m.inv_freq.data)[1] = 0.1f;
    lmx_array *acts[] = {&m.x, &m.h1, &m.q, &m.k, &m.v, &m.qr, &m.kr, &m.att, &m.o, &m.r1,
                         &m.h2, &m.gu, &m.act, &m.d, &m.r2, &m.h3, &m.logits, &m.capped, &m.loss};
    int64_t shp[][3] = {{T, D, 1}, {T, D, 1}, {T, H * HD, 1}, {T, HKV * HD, 1}, {T, HKV * HD, 1},
                        {T, H, HD}, {T, HKV, HD}, {T, H * HD, 1}, {T, D, 1}, {T, D, 1}, {T, D, 1},
                        {T, 2 * F, 1}, {T, F, 1}, {T, D, 1}, {T, D, 1}, {T, D, 1}, {T, V, 1}, {T, V, 1}, {1, 1, 1}};
    int nd[] = {2, 2, 2, 2, 2, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1};
    for (int i = 0; i < 19; i++) *acts[i] = mk(nd[i], shp[i][0], shp[i][1], shp[i][2], 0);
    lmx_array *ps[] = {&m.emb, &m.wn1, &m.wq, &m.wk, &m.bk, &m.wv, &m.wo,
                       &m.lnw, &m.lnb, &m.wgu, &m.wd, &m.wnf, &m.wlm};
    fd_check("1-layer transformer + CE", f_mini, &m, ps, 13, 40);
    /* the loss itself is finite and the tape holds all 19 recorded nodes */
    lmx_tape *tape = NULL;
    CHECK_OK(lmx_tape_create(&tape));
    lmx_exec ex = {BE, tape};
    lmx_array *y;
    CHECK_OK(f_mini(&ex, &m, &y));
    CHECK_EQ_INT(lmx_tape_size(tape), 19);
    CHECK(isfinite(*(float *)m.loss.data) && *(float *)m.loss.data > 0);
    CHECK_OK(lmx_tape_freeze(tape, &m.wq));
    CHECK_OK(lmx_tape_backward(tape, y, NULL));
    CHECK(lmx_tape_grad(tape, &m.wq) == NULL && lmx_tape_grad(tape, &m.wo) != NULL);
    lmx_tape_free(tape);
    for (int i = 0; i < 19; i++) lmx_array_release(acts[i]);
    for (int i = 0; i < 13; i++) lmx_array_release(ps[i]);
    lmx_array_release(&m.inv_freq), lmx_array_release(&m.ids), lmx_array_release(&m.tg), lmx_array_release(&m.mask);
}

/* A tape is reusable after reset; a second backward gives the same
 * gradients; a seed of the wrong size is refused. */
static void test_tape_reuse(void) {
    op_ctx o = {.a = mk(2, 4, 6, 1, 1), .b = mk(2, 3, 6, 1, 1), .c = mk(1, 3, 1, 1, 1), .flag = 1};
    o.out = mk(2, 4, 3, 1, 0);
    lmx_array R = mk(1, 12, 1, 1, 1), bad = mk(1, 5, 1, 1, 1);
    lmx_tape *tape = NULL;
    CHECK_OK(lmx_tape_create(&tape));
    lmx_exec ex = {BE, tape};
    lmx_array *y;
    float first[18];
    for (int round = 0; round < 2; round++) {
        lmx_tape_reset(tape);
        CHECK_OK(f_matmul(&ex, &o, &y));
        CHECK_EQ_INT(lmx_tape_size(tape), 1);
        CHECK_OK(lmx_tape_backward(tape, y, &R));
        CHECK_OK(lmx_tape_backward(tape, y, &R)); /* again: not doubled */
        const lmx_array *g = lmx_tape_grad(tape, &o.b);
        CHECK(g != NULL);
        if (!g) break;
        if (round == 0) memcpy(first, g->data, sizeof first);
        else CHECK(memcmp(first, g->data, sizeof first) == 0);
    }
    CHECK(lmx_tape_backward(tape, y, &bad) == LMX_ERR_SHAPE);
    lmx_tape_free(tape);
    lmx_array *all[] = {&o.a, &o.b, &o.c, &o.out, &R, &bad};
    for (size_t i = 0; i < 6; i++) lmx_array_release(all[i]);
}

void run_tests(void) {
    if (lmx_backend_create("cpu", 2, &BE) != LMX_OK) {
        t_skip("grad", lmx_last_error());
        return;
    }
    TEST(test_matmul);
    TEST(test_matmul_acc);
    TEST(test_matmul_q4);
    TEST(test_get_rows);
    TEST(test_norms);
    TEST(test_rope);
    TEST(test_attention);
    TEST(test_elementwise);
    TEST(test_act);
    TEST(test_cross_entropy);
    TEST(test_mini_transformer);
    TEST(test_tape_reuse);
    lmx_backend_free(BE);
}
