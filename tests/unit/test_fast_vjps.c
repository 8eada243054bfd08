/* test_fast_vjps.c - the CPU backend's fast vjps (src/backend/cpu/cpu_vjp*.c)
 * against the reference vjps of the op table (which test_grad.c checks
 * against finite differences), on every SIMD table this CPU has and on 1 and
 * 2 threads; tolerances below. */
#include "backend/cpu/cpu_vjp.h"
#include "core/ops.h"
#include "core/tape.h"
#include "testing.h"

#include <math.h>
#include <stdlib.h>

static lmx_backend *BE;
static uint64_t rng = 0x9E3779B97F4A7C15ull;

static float frand(void) { return t_frand(&rng); } /* uniform in [-1, 1) */

static lmx_array mk(int ndim, int64_t d0, int64_t d1, int64_t d2, float amp) {
    return t_rand_f32(&rng, ndim, d0, d1, d2, amp);
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
    lmx_array lg = mk(2, 9, 1000, 1, 4), ids = t_i32(9, tg), m = mk(1, 9, 1, 1, 0);
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
        t_skip("fast vjps", lmx_last_error());
        return;
    }
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
