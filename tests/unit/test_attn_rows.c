/* test_attn_rows.c - attention over batch rows and RoPE with a period.
 *
 * lmx_attention_rows (ATTENTION ip[2] = R) and lmx_rope_rows (ROPE ip[3] =
 * P) put a training batch's B rows in one node each. They must compute what
 * one node per row computes, bit for bit (the CPU training loss and
 * adapters may not move): forward on the backend's fast kernels and on the
 * reference kernels, the reference vjps and the CPU fast vjps, each against
 * a loop of single-row nodes on views. Then finite differences of the tape's
 * gradients through rope_rows -> attention_rows (tolerance as test_grad.c:
 * |g - fd| <= 2e-3·max(1, |fd|), ε = 1e-2), and the constructors' shape
 * refusals.
 */
#include "backend/cpu/cpu.h"
#include "backend/cpu/cpu_simd.h"
#include "backend/cpu/cpu_vjp.h"
#include "core/ops.h"
#include "core/tape.h"
#include "testing.h"

#include <math.h>
#include <stdlib.h>

#define EPS 1e-2f
#define TOL 2e-3

static lmx_backend *BE;
static lmx_pool *POOL;
static uint64_t rng = 0x2545F4914F6CDD1Dull;

static lmx_array mk(int ndim, int64_t d0, int64_t d1, int64_t d2, float amp) {
    return t_rand_f32(&rng, ndim, d0, d1, d2, amp);
}

/* Rows [r0, r0 + n) of a contiguous array as a view with the same trailing dims. */
static lmx_array rows(const lmx_array *a, int64_t r0, int64_t n) {
    lmx_array v = {0};
    int64_t sh[3] = {n, a->ndim > 1 ? a->shape[1] : 1, a->ndim > 2 ? a->shape[2] : 1};
    int64_t per = lmx_array_numel(a) / a->shape[0];
    CHECK_OK(lmx_array_view(&v, a, r0 * per, a->ndim, sh));
    return v;
}

static void zero(lmx_array *a) { memset(a->data, 0, lmx_array_nbytes(a)); }

static bool same(const lmx_array *a, const lmx_array *b) {
    return lmx_array_nbytes(a) == lmx_array_nbytes(b) && !memcmp(a->data, b->data, lmx_array_nbytes(a));
}

typedef struct {
    int R;
    int64_t T, pos0, extra, H, Hkv, hd;
    int window;
    float cap;
    const char *name;
} attn_case;

static const attn_case CASES[] = {
    {3, 13, 0, 0, 4, 2, 16, 0, 0, "R3 T13 H4/2 hd16"},
    {2, 9, 3, 1, 4, 1, 8, 5, 2.0f, "R2 T9 pos0 3 (S 13) window 5 softcap"},
    {4, 17, 0, 0, 6, 3, 24, 4, 0, "R4 T17 H6/3 hd24 window 4"},
    {2, 70, 2, 0, 2, 2, 8, 0, 1.5f, "R2 T70 pos0 2 softcap (several vjp row blocks)"},
};

typedef lmx_status (*vjp_pool_fn)(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool);

/* The batched node vs one node per row: forward (backend + reference kernel) and both vjps. */
static void test_attention_rows_bitwise(void) {
    for (size_t c = 0; c < sizeof CASES / sizeof *CASES; c++) {
        const attn_case *k = &CASES[c];
        int64_t S = k->pos0 + k->T + k->extra, RT = k->R * k->T, RS = k->R * S;
        lmx_array q = mk(3, RT, k->H, k->hd, 1.5f), kk = mk(3, RS, k->Hkv, k->hd, 1.5f);
        lmx_array v = mk(3, RS, k->Hkv, k->hd, 1.5f), dout = mk(2, RT, k->H * k->hd, 1, 1.0f);
        lmx_array o1 = mk(2, RT, k->H * k->hd, 1, 0), o2 = mk(2, RT, k->H * k->hd, 1, 0);
        float scale = 1.0f / sqrtf((float)k->hd);
        lmx_exec ex = {BE, NULL};
        /* forward on the backend (fast kernels) */
        CHECK_OK(lmx_attention_rows(&ex, &o1, &q, &kk, &v, k->R, k->pos0, scale, k->cap, k->window));
        for (int r = 0; r < k->R; r++) {
            lmx_array qr = rows(&q, r * k->T, k->T), kr = rows(&kk, r * S, S), vr = rows(&v, r * S, S);
            lmx_array orr = rows(&o2, r * k->T, k->T);
            CHECK_OK(lmx_attention(&ex, &orr, &qr, &kr, &vr, k->pos0, scale, k->cap, k->window));
            lmx_array *all[] = {&qr, &kr, &vr, &orr};
            for (int i = 0; i < 4; i++) lmx_array_release(all[i]);
        }
        CHECK_MSG(same(&o1, &o2), "%s: fast forward differs from the per-row loop", k->name);
        /* the batched node by hand, for the reference kernel and the vjps */
        lmx_node n = {.op = LMX_OP_ATTENTION, .out = &o1, .src = {&q, &kk, &v}};
        n.ip[0] = (int32_t)k->pos0;
        n.ip[1] = k->window;
        n.ip[2] = k->R;
        n.fp[0] = scale;
        n.fp[1] = k->cap;
        zero(&o1);
        CHECK_OK(lmx_cpu_attention(&n, POOL));
        zero(&o2);
        for (int r = 0; r < k->R; r++) {
            lmx_array qr = rows(&q, r * k->T, k->T), kr = rows(&kk, r * S, S), vr = rows(&v, r * S, S);
            lmx_array orr = rows(&o2, r * k->T, k->T);
            lmx_node one = n;
            one.ip[2] = 0;
            one.out = &orr;
            one.src[0] = &qr;
            one.src[1] = &kr;
            one.src[2] = &vr;
            CHECK_OK(lmx_cpu_attention(&one, POOL));
            lmx_array *all[] = {&qr, &kr, &vr, &orr};
            for (int i = 0; i < 4; i++) lmx_array_release(all[i]);
        }
        CHECK_MSG(same(&o1, &o2), "%s: reference forward differs from the per-row loop", k->name);
        /* vjps: mode 0 reference, 1 fast */
        for (int mode = 0; mode < 2; mode++) {
            lmx_array g1[3] = {mk(3, RT, k->H, k->hd, 0), mk(3, RS, k->Hkv, k->hd, 0), mk(3, RS, k->Hkv, k->hd, 0)};
            lmx_array g2[3] = {mk(3, RT, k->H, k->hd, 0), mk(3, RS, k->Hkv, k->hd, 0), mk(3, RS, k->Hkv, k->hd, 0)};
            for (int i = 0; i < 3; i++) zero(&g1[i]), zero(&g2[i]);
            lmx_array *d1[LMX_MAX_SRC] = {&g1[0], &g1[1], &g1[2]};
            if (mode == 0)
                CHECK_OK(lmx_vjp_attention(&n, &dout, d1));
            else
                CHECK_OK(lmx_fast_vjp_attention(&n, &dout, d1, POOL));
            for (int r = 0; r < k->R; r++) {
                lmx_array qr = rows(&q, r * k->T, k->T), kr = rows(&kk, r * S, S), vr = rows(&v, r * S, S);
                lmx_array orr = rows(&o2, r * k->T, k->T), gr = rows(&dout, r * k->T, k->T);
                lmx_array dq = rows(&g2[0], r * k->T, k->T), dk = rows(&g2[1], r * S, S), dv = rows(&g2[2], r * S, S);
                lmx_node one = n;
                one.ip[2] = 0;
                one.out = &orr;
                one.src[0] = &qr;
                one.src[1] = &kr;
                one.src[2] = &vr;
                lmx_array *d2[LMX_MAX_SRC] = {&dq, &dk, &dv};
                if (mode == 0)
                    CHECK_OK(lmx_vjp_attention(&one, &gr, d2));
                else
                    CHECK_OK(lmx_fast_vjp_attention(&one, &gr, d2, POOL));
                lmx_array *all[] = {&qr, &kr, &vr, &orr, &gr, &dq, &dk, &dv};
                for (int i = 0; i < 8; i++) lmx_array_release(all[i]);
            }
            for (int i = 0; i < 3; i++) {
                CHECK_MSG(same(&g1[i], &g2[i]), "%s: %s vjp d%s differs from the per-row loop", k->name,
                          mode ? "fast" : "reference", i == 0 ? "q" : i == 1 ? "k" : "v");
                lmx_array_release(&g1[i]);
                lmx_array_release(&g2[i]);
            }
        }
        lmx_array *all[] = {&q, &kk, &v, &dout, &o1, &o2};
        for (int i = 0; i < 6; i++) lmx_array_release(all[i]);
    }
}

/* ROPE with a period P: the same as one rope per block of P rows. */
static void test_rope_period_bitwise(void) {
    const int R = 3, P = 7;
    lmx_array x = mk(3, R * P, 3, 10, 1.0f), f = mk(1, 3, 1, 1, 0), dout = mk(3, R * P, 3, 10, 1.0f);
    lmx_array o1 = mk(3, R * P, 3, 10, 0), o2 = mk(3, R * P, 3, 10, 0);
    for (int i = 0; i < 3; i++) ((float *)f.data)[i] = powf(100.0f, -(float)i / 3.0f);
    lmx_exec ex = {BE, NULL};
    for (int trad = 0; trad < 2; trad++) {
        CHECK_OK(lmx_rope_rows(&ex, &o1, &x, &f, 2, P, 6, trad, 1.3f));
        for (int r = 0; r < R; r++) {
            lmx_array xr = rows(&x, r * P, P), orr = rows(&o2, r * P, P);
            CHECK_OK(lmx_rope(&ex, &orr, &xr, &f, 2, 6, trad, 1.3f));
            lmx_array_release(&xr);
            lmx_array_release(&orr);
        }
        CHECK_MSG(same(&o1, &o2), "rope period (trad %d): fast forward differs from the per-row loop", trad);
        lmx_node n = {.op = LMX_OP_ROPE, .out = &o1, .src = {&x, &f}, .ip = {2, 6, trad, P}, .fp = {1.3f}};
        zero(&o1);
        CHECK_OK(lmx_cpu_rope(&n, POOL));
        CHECK_MSG(same(&o1, &o2), "rope period (trad %d): reference forward differs from the per-row loop", trad);
        for (int mode = 0; mode < 2; mode++) {
            lmx_array g1 = mk(3, R * P, 3, 10, 0), g2 = mk(3, R * P, 3, 10, 0);
            zero(&g1);
            zero(&g2);
            lmx_array *d1[LMX_MAX_SRC] = {&g1};
            if (mode == 0)
                CHECK_OK(lmx_vjp_rope(&n, &dout, d1));
            else
                CHECK_OK(lmx_fast_vjp_rope(&n, &dout, d1, POOL));
            for (int r = 0; r < R; r++) {
                lmx_array xr = rows(&x, r * P, P), orr = rows(&o2, r * P, P), gr = rows(&dout, r * P, P);
                lmx_array dx = rows(&g2, r * P, P);
                lmx_node one = n;
                one.ip[3] = 0;
                one.out = &orr;
                one.src[0] = &xr;
                lmx_array *d2[LMX_MAX_SRC] = {&dx};
                if (mode == 0)
                    CHECK_OK(lmx_vjp_rope(&one, &gr, d2));
                else
                    CHECK_OK(lmx_fast_vjp_rope(&one, &gr, d2, POOL));
                lmx_array *all[] = {&xr, &orr, &gr, &dx};
                for (int i = 0; i < 4; i++) lmx_array_release(all[i]);
            }
            CHECK_MSG(same(&g1, &g2), "rope period (trad %d): %s vjp differs from the per-row loop", trad,
                      mode ? "fast" : "reference");
            lmx_array_release(&g1);
            lmx_array_release(&g2);
        }
    }
    lmx_array *all[] = {&x, &f, &dout, &o1, &o2};
    for (int i = 0; i < 5; i++) lmx_array_release(all[i]);
}

/* ---- finite differences through rope_rows -> attention_rows -------------- */

typedef struct {
    int R;
    int64_t T, H, Hkv, hd;
    int window;
    float cap;
    lmx_array q, k, v, f, qr, kr, out;
} fd_ctx;

static lmx_status fd_forward(lmx_exec *ex, fd_ctx *c) {
    LMX_TRY(lmx_rope_rows(ex, &c->qr, &c->q, &c->f, 0, c->T, 4, false, 1.0f));
    LMX_TRY(lmx_rope_rows(ex, &c->kr, &c->k, &c->f, 0, c->T, 4, false, 1.0f));
    return lmx_attention_rows(ex, &c->out, &c->qr, &c->kr, &c->v, c->R, 0, 1.0f / sqrtf((float)c->hd), c->cap,
                              c->window);
}

static double objective(const lmx_array *y, const float *w) {
    double L = 0;
    for (int64_t i = 0; i < lmx_array_numel(y); i++) L += (double)((const float *)y->data)[i] * w[i];
    return L;
}

static void test_rows_finite_differences(void) {
    fd_ctx cs[] = {{.R = 3, .T = 6, .H = 4, .Hkv = 2, .hd = 8}, {.R = 2, .T = 7, .H = 2, .Hkv = 1, .hd = 6, .window = 3, .cap = 1.5f}};
    for (size_t ci = 0; ci < sizeof cs / sizeof *cs; ci++) {
        fd_ctx *c = &cs[ci];
        int64_t M = c->R * c->T;
        c->q = mk(3, M, c->H, c->hd, 1.0f);
        c->k = mk(3, M, c->Hkv, c->hd, 1.0f);
        c->v = mk(3, M, c->Hkv, c->hd, 1.0f);
        c->f = mk(1, 2, 1, 1, 0);
        ((float *)c->f.data)[0] = 1.0f;
        ((float *)c->f.data)[1] = 0.1f;
        c->qr = mk(3, M, c->H, c->hd, 0);
        c->kr = mk(3, M, c->Hkv, c->hd, 0);
        c->out = mk(2, M, c->H * c->hd, 1, 0);
        lmx_array W = mk(1, lmx_array_numel(&c->out), 1, 1, 1.0f);
        lmx_array *params[3] = {&c->q, &c->k, &c->v};
        float *grads[2][3] = {{0}};
        for (int mode = 0; mode < 2; mode++) { /* 0: reference vjps, 1: fast */
            lmx_tape *tape = NULL;
            CHECK_OK(lmx_tape_create(&tape));
            if (!tape) return;
            lmx_tape_set_reference(tape, mode == 0);
            lmx_exec ex = {BE, tape};
            CHECK_OK(fd_forward(&ex, c));
            CHECK_OK(lmx_tape_backward(tape, &c->out, &W));
            for (int p = 0; p < 3; p++) {
                const lmx_array *g = lmx_tape_grad(tape, params[p]);
                size_t n = (size_t)lmx_array_numel(params[p]);
                grads[mode][p] = calloc(n, sizeof(float));
                if (g && grads[mode][p]) memcpy(grads[mode][p], g->data, n * sizeof(float));
            }
            lmx_tape_free(tape);
        }
        lmx_exec ex0 = {BE, NULL};
        for (int p = 0; p < 3; p++) {
            float *x = params[p]->data;
            int64_t n = lmx_array_numel(params[p]), step = n > 90 ? n / 90 : 1;
            for (int64_t i = p % step; i < n && grads[0][p] && grads[1][p]; i += step) {
                float x0 = x[i];
                x[i] = x0 + EPS;
                CHECK_OK(fd_forward(&ex0, c));
                double lp = objective(&c->out, W.data);
                x[i] = x0 - EPS;
                CHECK_OK(fd_forward(&ex0, c));
                double lm = objective(&c->out, W.data);
                x[i] = x0;
                double fd = (lp - lm) / (2.0 * EPS);
                for (int mode = 0; mode < 2; mode++) {
                    double an = grads[mode][p][i];
                    CHECK_MSG(fabs(fd - an) <= TOL * fmax(1.0, fabs(fd)),
                              "rows fd case %zu (%s vjps): param %d elem %lld: tape %.6f vs fd %.6f", ci,
                              mode ? "fast" : "reference", p, (long long)i, an, fd);
                }
            }
            free(grads[0][p]);
            free(grads[1][p]);
        }
        lmx_array *all[] = {&c->q, &c->k, &c->v, &c->f, &c->qr, &c->kr, &c->out, &W};
        for (int i = 0; i < 8; i++) lmx_array_release(all[i]);
    }
}

static void test_rows_shapes(void) {
    lmx_exec ex = {BE, NULL};
    lmx_array q = mk(3, 10, 4, 8, 1), k = mk(3, 10, 2, 8, 1), v = mk(3, 10, 2, 8, 1), out = mk(2, 10, 32, 1, 0);
    lmx_array k9 = mk(3, 9, 2, 8, 1), f = mk(1, 2, 1, 1, 1);
    CHECK(lmx_attention_rows(&ex, &out, &q, &k, &v, 2, 0, 1.0f, 0, 0) == LMX_OK);
    CHECK(lmx_attention_rows(&ex, &out, &q, &k, &v, 3, 0, 1.0f, 0, 0) == LMX_ERR_SHAPE); /* 10 rows over 3 */
    CHECK(lmx_attention_rows(&ex, &out, &q, &k, &v, 2, 1, 1.0f, 0, 0) == LMX_ERR_SHAPE); /* pos0 + T > S */
    CHECK(lmx_attention_rows(&ex, &out, &q, &k, &v, 0, 0, 1.0f, 0, 0) == LMX_ERR_SHAPE);
    CHECK(lmx_attention_rows(&ex, &out, &q, &k9, &v, 1, 0, 1.0f, 0, 0) == LMX_ERR_SHAPE); /* k, v rows differ */
    CHECK(lmx_rope_rows(&ex, &q, &q, &f, 0, -1, 4, false, 1.0f) == LMX_ERR_SHAPE);
    CHECK(lmx_rope_rows(&ex, &q, &q, &f, 0, 5, 4, false, 1.0f) == LMX_OK);
    lmx_array *all[] = {&q, &k, &v, &out, &k9, &f};
    for (int i = 0; i < 6; i++) lmx_array_release(all[i]);
}

void run_tests(void) {
    if (lmx_backend_create("cpu", 2, &BE) != LMX_OK || lmx_pool_create(2, &POOL) != LMX_OK) {
        t_skip("attn_rows", lmx_last_error());
        return;
    }
    lmx_vjp_set_serial_ns(0); /* small test shapes still run on both threads */
    TEST(test_attention_rows_bitwise);
    TEST(test_rope_period_bitwise);
    TEST(test_rows_finite_differences);
    TEST(test_rows_shapes);
    lmx_pool_free(POOL);
    lmx_backend_free(BE);
}
