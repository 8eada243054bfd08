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

static float frand(void) { /* uniform in [-1, 1) */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
}

static lmx_array mk(int ndim, int64_t d0, int64_t d1, int64_t d2, float amp) {
    int64_t sh[3] = {d0, d1, d2};
    lmx_array a = {0};
    CHECK_OK(lmx_array_alloc(&a, LMX_F32, ndim, sh));
    for (int64_t i = 0; i < lmx_array_numel(&a); i++) ((float *)a.data)[i] = frand() * amp;
    return a;
}

static lmx_array mk_i32(int n, const int32_t *v) {
    int64_t sh[1] = {n};
    lmx_array a = {0};
    CHECK_OK(lmx_array_alloc(&a, LMX_I32, 1, sh));
    memcpy(a.data, v, (size_t)n * 4);
    return a;
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
    op_ctx o = {.a = mk(2, 6, 5, 1, 1), .ids = mk_i32(4, ids)};
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
        op_ctx o = {.a = mk(2, 4, 7, 1, 2), .ids = mk_i32(4, tg), .b = mk(1, 4, 1, 1, 0), .flag = masked};
        float m[4] = {1, 0, 1, 1};
        memcpy(o.b.data, m, sizeof m);
        o.out = mk(1, 1, 1, 1, 0);
        lmx_array *ps[] = {&o.a};
        fd_check(masked ? "cross_entropy (masked)" : "cross_entropy", f_ce, &o, ps, 1, 64);
        lmx_array_release(&o.a), lmx_array_release(&o.ids), lmx_array_release(&o.b), lmx_array_release(&o.out);
    }
    /* an out-of-range target is refused */
    int32_t bad[4] = {2, 0, 7, 3};
    lmx_array lg = mk(2, 4, 7, 1, 1), ids = mk_i32(4, bad), loss = mk(1, 1, 1, 1, 0);
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
              .ids = mk_i32(T, ids), .tg = mk_i32(T, tg), .mask = mk(1, T, 1, 1, 0)};
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

/* ---- fast vjps (src/backend/cpu/cpu_vjp*.c) vs the reference ------------
 *
 * Each node's vjp is run by the reference (the oracle above) and by the fast
 * version on every SIMD table this CPU has, with a 2-thread pool, and on a
 * 1-thread pool. Tolerances:
 * - matmul: per element |fast - ref| ≤ 2·(n+2)·2⁻²⁴·Σ_k|a_k·b_k| (n terms):
 *   both are f32 sums of the same n products in the same order, the fast
 *   one with FMA, and each lies within γ_n·Σ|a·b| of the exact sum
 *   (γ_n ≈ n·2⁻²⁴, the classic bound for recursive summation); a wrong
 *   index or a dropped term is off by O(|a·b|). The bias gradient and the
 *   1-thread vs 2-thread results are equal bit for bit.
 * - attention: per element ≤ 2e-5·max|ref| of that tensor: the scores,
 *   dO·v and the dq/dk/dv products are GEMM tiles (reordered f32 sums,
 *   relative error ≲ n·2⁻²⁴ ≈ 1e-6 here), the softmax uses a polynomial
 *   exp (relative error < 1e-6 for scores within 20 of the row max) and f32
 *   sums; observed ≤ 0.03 of the tolerance (LMX_GRAD_VERBOSE=1).
 * - norms, RoPE, element-wise ops, softmax, cross-entropy: bit for bit (the
 *   same arithmetic per element, only split over threads). */
static lmx_pool *POOL1;

typedef lmx_status (*fast_with_fn)(const lmx_simd_kernels *k, const lmx_node *n, const lmx_array *dout,
                                   lmx_array *dsrc[], lmx_pool *pool);

/* ds[i] = zeroed f32 of src[i]'s shape where want[i]; runs the reference
 * (k == NULL && !fw) or the fast vjp. */
static void run_vjp(const lmx_node *n, const lmx_array *dout, const bool *want, lmx_array *ds, fast_with_fn fw,
                    lmx_vjp_kernel_fn fe, const lmx_simd_kernels *k, lmx_pool *pool, bool ref) {
    lmx_array *dp[LMX_MAX_SRC] = {0};
    for (int i = 0; i < LMX_MAX_SRC; i++) {
        memset(&ds[i], 0, sizeof ds[i]);
        if (!want[i]) continue;
        CHECK_OK(lmx_array_alloc(&ds[i], LMX_F32, n->src[i]->ndim, n->src[i]->shape));
        dp[i] = &ds[i];
    }
    if (ref) CHECK_OK(lmx_op_defs[n->op].vjp(n, dout, dp));
    else if (fw) CHECK_OK(fw(k, n, dout, dp, pool));
    else CHECK_OK(fe(n, dout, dp, pool));
}

static void release_all(lmx_array *a, int n) {
    for (int i = 0; i < n; i++) lmx_array_release(&a[i]);
}

static bool same_bits(const lmx_array *a, const lmx_array *b) {
    return lmx_array_numel(a) == lmx_array_numel(b) && !memcmp(a->data, b->data, lmx_array_nbytes(a));
}

/* Compares the fast vjp of n with the reference on every table; bound(i, ref, out)
 * fills a per-element tolerance for src i (NULL: bit for bit). */
typedef void (*bound_fn)(const lmx_node *n, const lmx_array *dout, int i, const lmx_array *ref, float *tol);

static void fast_vs_ref(const char *what, const lmx_node *n, const lmx_array *dout, const bool *want, fast_with_fn fw,
                        lmx_vjp_kernel_fn fe, bound_fn bound) {
    lmx_array ref[LMX_MAX_SRC], fast[LMX_MAX_SRC], one[LMX_MAX_SRC];
    run_vjp(n, dout, want, ref, fw, fe, NULL, NULL, true);
    for (int isa = 0; isa < LMX_ISA_COUNT; isa++) {
        const lmx_simd_kernels *k = lmx_simd_for((lmx_isa)isa);
        if (!k || (!fw && isa > 0)) continue; /* plain C vjps: one run */
        run_vjp(n, dout, want, fast, fw, fe, k, BE->pool, false);
        run_vjp(n, dout, want, one, fw, fe, k, POOL1, false);
        double worst = 0;
        for (int i = 0; i < LMX_MAX_SRC; i++) {
            if (!want[i]) continue;
            CHECK_MSG(same_bits(&fast[i], &one[i]), "%s [%s]: src %d differs between 1 and 2 threads", what, k->name, i);
            int64_t cnt = lmx_array_numel(&ref[i]);
            float *tol = bound ? malloc((size_t)cnt * sizeof *tol) : NULL;
            if (!bound) {
                CHECK_MSG(same_bits(&fast[i], &ref[i]), "%s [%s]: src %d is not the reference bit for bit", what,
                          k->name, i);
                continue;
            }
            if (!tol) continue;
            bound(n, dout, i, &ref[i], tol);
            const float *r = ref[i].data, *f = fast[i].data;
            int bad = 0;
            for (int64_t e = 0; e < cnt; e++) {
                double d = fabs((double)f[e] - r[e]);
                if (tol[e] > 0 && d / tol[e] > worst) worst = d / tol[e];
                if (!(d <= tol[e]) && bad++ < 3)
                    CHECK_MSG(0, "%s [%s]: src %d elem %lld: fast %.9g ref %.9g (tol %.3g)", what, k->name, i,
                              (long long)e, f[e], r[e], tol[e]);
            }
            free(tol);
        }
        if (getenv("LMX_GRAD_VERBOSE") && bound)
            fprintf(stderr, "  %-34s [%s] worst |fast-ref|/tol %.3f\n", what, k->name, worst);
        release_all(fast, LMX_MAX_SRC);
        release_all(one, LMX_MAX_SRC);
    }
    release_all(ref, LMX_MAX_SRC);
}

/* Dense f32 of a weight as the reference sees it (s·q + b for MLX rows). */
static float *dense_w(const lmx_node *n) {
    const lmx_array *w = n->src[1], *sc = n->src[3], *qb = n->src[4];
    int64_t N = w->shape[0], K = w->shape[1];
    float *d = malloc((size_t)(N * K) * sizeof *d);
    if (!d || lmx_array_to_f32(w, d) != LMX_OK) return d;
    if (!sc) return d;
    int group = n->ip[0];
    float *s = malloc((size_t)lmx_array_numel(sc) * sizeof *s), *b = malloc((size_t)lmx_array_numel(sc) * sizeof *b);
    if (s && b && !lmx_array_to_f32(sc, s) && (!qb || !lmx_array_to_f32(qb, b)))
        for (int64_t r = 0; r < N; r++)
            for (int64_t c = 0; c < K; c++) {
                int64_t g = r * (K / group) + c / group;
                d[r * K + c] = s[g] * d[r * K + c] + (qb ? b[g] : 0.0f);
            }
    free(s);
    free(b);
    return d;
}

static void matmul_bound(const lmx_node *n, const lmx_array *dout, int i, const lmx_array *ref, float *tol) {
    const lmx_array *x = n->src[0], *w = n->src[1];
    int64_t M = lmx_array_numel(x) / w->shape[1], K = w->shape[1], N = w->shape[0];
    const float *g = dout->data;
    float *X = NULL, *W = i == 0 ? dense_w(n) : NULL;
    if (i == 1) CHECK_OK(lmx_vjp_dense(x, &X));
    const double u = 1.0 / (1 << 24);
    for (int64_t e = 0; e < lmx_array_numel(ref); e++) tol[e] = 0;
    if (i == 0 && W) /* dx[m,k] = Σ_j g[m,j]·W[j,k] */
        for (int64_t m = 0; m < M; m++)
            for (int64_t k = 0; k < K; k++) {
                double s = 0;
                for (int64_t j = 0; j < N; j++) s += fabs((double)g[m * N + j] * W[j * K + k]);
                tol[m * K + k] = (float)(2.0 * (N + 2) * u * s);
            }
    if (i == 1 && X) /* dW[j,k] = Σ_m g[m,j]·x[m,k] */
        for (int64_t j = 0; j < N; j++)
            for (int64_t k = 0; k < K; k++) {
                double s = 0;
                for (int64_t m = 0; m < M; m++) s += fabs((double)g[m * N + j] * X[m * K + k]);
                tol[j * K + k] = (float)(2.0 * (M + 2) * u * s);
            }
    free(X);
    free(W);
}

static lmx_array mk_weight(lmx_dtype dt, int64_t N, int64_t K) {
    lmx_array f = mk(2, N, K, 1, 0.5f), w = {0};
    if (dt == LMX_F32) return f;
    int64_t sh[2] = {N, K};
    CHECK_OK(lmx_array_alloc(&w, dt, 2, sh));
    const lmx_dtype_traits *tr = lmx_dtype_info(dt);
    if (tr->needs_scales) { /* random grid values */
        for (size_t b = 0; b < lmx_array_nbytes(&w); b++) ((uint8_t *)w.data)[b] = (uint8_t)(frand() * 127 + 128);
    } else {
        tr->from_f32(f.data, w.data, N * K);
    }
    lmx_array_release(&f);
    return w;
}

static void test_fast_matmul(void) {
    struct { lmx_dtype dt; int group; int64_t M, K, N; bool bias, strided, dw; const char *name; } c[] = {
        {LMX_F32, 0, 37, 128, 300, true, false, true, "f32 37x128x300 +bias (panels)"},
        {LMX_F32, 0, 300, 64, 8, false, false, true, "f32 300x64x8 (LoRA b: rows split)"},
        {LMX_F32, 0, 5, 8, 40, false, true, true, "f32 5x8x40 strided x (LoRA a)"},
        {LMX_F32, 0, 2, 40, 13, true, false, true, "f32 2x40x13 +bias"},
        {LMX_BF16, 0, 37, 128, 300, false, true, false, "bf16 37x128x300 strided x"},
        {LMX_F16, 0, 19, 64, 70, false, false, false, "f16 19x64x70"},
        {LMX_MLX_Q4, 32, 37, 128, 300, false, false, false, "mlx q4 g32 37x128x300"},
        {LMX_MLX_Q4, 64, 13, 192, 45, false, true, false, "mlx q4 g64 13x192x45 strided x"},
        {LMX_MLX_Q8, 64, 13, 128, 33, false, false, false, "mlx q8 g64 13x128x33"},
        {LMX_Q8_0, 0, 13, 96, 50, false, false, false, "q8_0 13x96x50"},
        {LMX_Q4_0, 0, 13, 64, 50, false, false, false, "q4_0 13x64x50"},
    };
    for (size_t v = 0; v < sizeof c / sizeof *c; v++) {
        lmx_array xs = mk(2, c[v].M, c[v].strided ? 2 * c[v].K + 3 : c[v].K, 1, 1), x = xs;
        if (c[v].strided) { /* columns [3, 3+K) of a wider array: row stride 2K+3 */
            x.data = (float *)xs.data + 3;
            x.shape[1] = c[v].K;
        }
        lmx_array w = mk_weight(c[v].dt, c[v].N, c[v].K), b = mk(1, c[v].N, 1, 1, 1), out = mk(2, c[v].M, c[v].N, 1, 0);
        lmx_array sc = {0}, qb = {0}, dout = mk(2, c[v].M, c[v].N, 1, 1);
        lmx_node n = {.op = LMX_OP_MATMUL, .out = &out, .src = {&x, &w, c[v].bias ? &b : NULL}};
        if (c[v].group) {
            sc = mk(2, c[v].N, c[v].K / c[v].group, 1, 0.05f);
            qb = mk(2, c[v].N, c[v].K / c[v].group, 1, 0.5f);
            n.src[3] = &sc;
            n.src[4] = &qb;
            n.ip[0] = c[v].group;
        }
        bool want[LMX_MAX_SRC] = {true, c[v].dw, false};
        fast_vs_ref(c[v].name, &n, &dout, want, lmx_fast_vjp_matmul_with, NULL, matmul_bound);
        if (c[v].bias) { /* the bias gradient alone: bit for bit */
            bool wb[LMX_MAX_SRC] = {false, false, true};
            fast_vs_ref(c[v].name, &n, &dout, wb, lmx_fast_vjp_matmul_with, NULL, NULL);
        }
        lmx_array *all[] = {&xs, &w, &b, &out, &sc, &qb, &dout};
        for (size_t i = 0; i < 7; i++) lmx_array_release(all[i]);
    }
}

static void attn_bound(const lmx_node *n, const lmx_array *dout, int i, const lmx_array *ref, float *tol) {
    float mx = 0;
    for (int64_t e = 0; e < lmx_array_numel(ref); e++) mx = fmaxf(mx, fabsf(((const float *)ref->data)[e]));
    for (int64_t e = 0; e < lmx_array_numel(ref); e++) tol[e] = 2e-5f * mx;
}

static void test_fast_attention(void) {
    struct { int64_t T, H, Hkv, hd, pos0; int window; float cap; bool strided; const char *name; } c[] = {
        {13, 8, 2, 24, 0, 0, 0, false, "attention T13 H8/2 hd24"},
        {9, 4, 2, 16, 3, 5, 2.0f, false, "attention pos0 3, window 5, softcap"},
        {6, 4, 4, 8, 0, 0, 0, true, "attention H4/4 hd8, strided k/v"},
        {17, 6, 3, 40, 0, 4, 0, false, "attention T17 H6/3 hd40 window 4"},
        {110, 4, 2, 16, 5, 0, 0, false, "attention T110 (3 row blocks) pos0 5"},
        {100, 2, 1, 8, 0, 30, 1.5f, false, "attention T100 window 30 softcap"},
    };
    for (size_t v = 0; v < sizeof c / sizeof *c; v++) {
        int64_t S = c[v].pos0 + c[v].T, T = c[v].T, H = c[v].H, Hkv = c[v].Hkv, hd = c[v].hd;
        lmx_array q = mk(3, T, H, hd, 1.5f), kvb = mk(3, S, 2 * Hkv, hd, 1.5f), k = {0}, vv = {0};
        lmx_array out = mk(3, T, H, hd, 0), dout = mk(3, T, H, hd, 1);
        if (c[v].strided) { /* k and v interleaved per position: [S, Hkv, hd] with row stride 2·Hkv·hd */
            k = kvb;
            vv = kvb;
            k.shape[1] = vv.shape[1] = Hkv;
            vv.data = (float *)kvb.data + Hkv * hd;
        } else {
            int64_t sh[3] = {S, Hkv, hd};
            CHECK_OK(lmx_array_view(&k, &kvb, 0, 3, sh));
            CHECK_OK(lmx_array_view(&vv, &kvb, S * Hkv * hd, 3, sh));
        }
        lmx_node n = {.op = LMX_OP_ATTENTION, .out = &out, .src = {&q, &k, &vv}};
        n.ip[0] = (int32_t)c[v].pos0;
        n.ip[1] = c[v].window;
        n.fp[0] = 1.0f / sqrtf((float)hd);
        n.fp[1] = c[v].cap;
        bool want[LMX_MAX_SRC] = {true, true, true};
        fast_vs_ref(c[v].name, &n, &dout, want, lmx_fast_vjp_attention_with, NULL, attn_bound);
        if (!c[v].strided) lmx_array_release(&k), lmx_array_release(&vv);
        lmx_array *all[] = {&q, &kvb, &out, &dout};
        for (size_t i = 0; i < 4; i++) lmx_array_release(all[i]);
    }
}

/* Norms, RoPE, element-wise ops, softmax: equal to the reference bit for bit. */
static void test_fast_elementwise(void) {
    lmx_array xs = mk(2, 37, 2 * 24 + 5, 1, 1.5f), x = xs, y = mk(2, 37, 24, 1, 1), w = mk(1, 24, 1, 1, 1);
    lmx_array bias = mk(1, 24, 1, 1, 1), row = mk(1, 24, 1, 1, 1), out = mk(2, 37, 24, 1, 0);
    lmx_array dout = mk(2, 37, 24, 1, 1), xg = xs;
    x.shape[1] = 24; /* a column view: row stride 53 */
    xg.data = (float *)xs.data + 24;
    xg.shape[1] = 24; /* its neighbour (the "up" half of a fused gate_up) */
    for (int64_t i = 0; i < lmx_array_numel(&xs); i++) /* away from ReLU's kink */
        if (fabsf(((float *)xs.data)[i]) < 0.05f) ((float *)xs.data)[i] = 0.3f;
    struct { lmx_op op; const lmx_array *a, *b, *c; int ip0; float fp0; const char *name; lmx_vjp_kernel_fn fe; } c[] = {
        {LMX_OP_RMS_NORM, &x, &w, NULL, 0, 1e-5f, "rms_norm (strided x)", lmx_fast_vjp_rms_norm},
        {LMX_OP_RMS_NORM, &y, &w, NULL, 1, 1e-5f, "rms_norm (1+w)", lmx_fast_vjp_rms_norm},
        {LMX_OP_RMS_NORM, &y, NULL, NULL, 0, 1e-6f, "rms_norm (no weight)", lmx_fast_vjp_rms_norm},
        {LMX_OP_LAYER_NORM, &x, &w, &bias, 0, 1e-5f, "layer_norm (strided x)", lmx_fast_vjp_layer_norm},
        {LMX_OP_ADD, &x, &y, NULL, 0, 0, "add", lmx_fast_vjp_binary},
        {LMX_OP_MUL, &x, &y, NULL, 0, 0, "mul", lmx_fast_vjp_binary},
        {LMX_OP_ADD, &y, &row, NULL, 0, 0, "add (row broadcast)", lmx_fast_vjp_binary},
        {LMX_OP_MUL, &x, &row, NULL, 0, 0, "mul (row broadcast)", lmx_fast_vjp_binary},
        {LMX_OP_SCALE, &x, NULL, NULL, 0, -0.7f, "scale", lmx_fast_vjp_unary},
        {LMX_OP_COPY, &x, NULL, NULL, 0, 0, "copy", lmx_fast_vjp_unary},
        {LMX_OP_SOFTCAP, &x, NULL, NULL, 0, 1.5f, "softcap", lmx_fast_vjp_unary},
        {LMX_OP_SOFTMAX, &x, NULL, NULL, 0, 0, "softmax (strided)", lmx_fast_vjp_softmax},
        {LMX_OP_ACT, &x, &xg, NULL, LMX_ACT_SILU, 0, "silu gated (column views)", lmx_fast_vjp_unary},
        {LMX_OP_ACT, &x, &xg, NULL, LMX_ACT_GELU_ERF, 0, "gelu (erf) gated", lmx_fast_vjp_unary},
        {LMX_OP_ACT, &y, NULL, NULL, LMX_ACT_GELU_TANH, 0, "gelu (tanh)", lmx_fast_vjp_unary},
        {LMX_OP_ACT, &x, NULL, NULL, LMX_ACT_RELU, 0, "relu", lmx_fast_vjp_unary},
        {LMX_OP_ACT, &y, NULL, NULL, LMX_ACT_SILU, 0, "silu", lmx_fast_vjp_unary},
    };
    for (size_t v = 0; v < sizeof c / sizeof *c; v++) {
        lmx_node n = {.op = c[v].op, .out = &out, .src = {c[v].a, c[v].b, c[v].c}};
        n.ip[0] = c[v].ip0;
        n.fp[0] = c[v].fp0;
        bool want[LMX_MAX_SRC] = {true, c[v].b != NULL, c[v].c != NULL};
        fast_vs_ref(c[v].name, &n, &dout, want, NULL, c[v].fe, NULL);
    }
    /* RoPE [T=7, H=3, hd=10]: both pairings, partial rotary, pos0, mscale */
    lmx_array rx = mk(3, 7, 3, 10, 1), rout = mk(3, 7, 3, 10, 0), rd = mk(3, 7, 3, 10, 1), f = mk(1, 3, 1, 1, 0);
    for (int i = 0; i < 3; i++) ((float *)f.data)[i] = powf(100.0f, -(float)i / 3.0f);
    for (int trad = 0; trad < 2; trad++) {
        lmx_node n = {.op = LMX_OP_ROPE, .out = &rout, .src = {&rx, &f}, .ip = {5, 6, trad}, .fp = {1.3f}};
        bool want[LMX_MAX_SRC] = {true};
        fast_vs_ref(trad ? "rope traditional" : "rope", &n, &rd, want, NULL, lmx_fast_vjp_rope, NULL);
    }
    lmx_array *all[] = {&xs, &y, &w, &bias, &row, &out, &dout, &rx, &rout, &rd, &f};
    for (size_t i = 0; i < 11; i++) lmx_array_release(all[i]);
}

/* The loss and its vjp on the backend's pool equal the one-thread run. */
static void test_fast_cross_entropy(void) {
    int32_t tg[9] = {5, 999, 0, 17, 400, 3, 3, 800, 1};
    lmx_array lg = mk(2, 9, 1000, 1, 4), ids = mk_i32(9, tg), m = mk(1, 9, 1, 1, 0);
    lmx_array l1 = mk(1, 1, 1, 1, 0), l2 = mk(1, 1, 1, 1, 0);
    for (int i = 0; i < 9; i++) ((float *)m.data)[i] = i % 4 == 1 ? 0.0f : 1.0f;
    CHECK_OK(lmx_cross_entropy(NULL, &l1, &lg, &ids, &m));
    float *g[2] = {NULL, NULL};
    for (int fast = 0; fast < 2; fast++) {
        lmx_tape *tape = NULL;
        CHECK_OK(lmx_tape_create(&tape));
        lmx_tape_set_reference(tape, !fast);
        lmx_exec ex = {BE, tape};
        CHECK_OK(lmx_cross_entropy(&ex, &l2, &lg, &ids, &m));
        CHECK(*(float *)l1.data == *(float *)l2.data);
        CHECK_OK(lmx_tape_backward(tape, &l2, NULL));
        const lmx_array *gr = lmx_tape_grad(tape, &lg);
        CHECK(gr != NULL);
        if (gr && (g[fast] = malloc(lmx_array_nbytes(&lg)))) memcpy(g[fast], gr->data, lmx_array_nbytes(&lg));
        lmx_tape_free(tape);
    }
    CHECK(g[0] && g[1] && !memcmp(g[0], g[1], lmx_array_nbytes(&lg)));
    free(g[0]);
    free(g[1]);
    lmx_array *all[] = {&lg, &ids, &m, &l1, &l2};
    for (size_t i = 0; i < 5; i++) lmx_array_release(all[i]);
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
    if (lmx_pool_create(1, &POOL1) == LMX_OK) {
        lmx_vjp_set_serial_ns(0); /* small test shapes still run on both threads */
        TEST(test_fast_matmul);
        TEST(test_fast_attention);
        TEST(test_fast_elementwise);
        TEST(test_fast_cross_entropy);
        lmx_pool_free(POOL1);
    }
    lmx_backend_free(BE);
}
