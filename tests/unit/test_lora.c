/*
 * test_lora.c - LoRA / DoRA adapters in the forward passes and their
 * gradients through the training forward (src/train/train_forward.c).
 *
 * 1. Inference (models/transformer.c linear()): a model with random
 *    adapters on every projection equals the same model whose weights were
 *    fused on the host (LoRA W' = W + s·b·a; DoRA W'' = m/‖W'‖_row ⊙ W'):
 *    max|Δlogit| ≤ 1e-5·max|logit| (f32 throughout; the two orders of
 *    summation differ by a few ulps per product, ~1e-6 relative after two
 *    layers). Cases: the llama fixture (f32), qwen2 (q/k/v biases: DoRA
 *    adds the bias after the rescale), and a 4-bit MLX-quantized llama base
 *    (fused from the dequantized weights). The adapters move the logits by
 *    > 1e-2·max, so a path that skipped them would fail.
 * 2. The training forward's logits [B·(T-1), V] equal lmx_transformer_forward
 *    run on each row alone, 1e-5·max|logit|, for every dense family fixture
 *    (with LoRA attached); MoE is refused with LMX_ERR_UNSUPPORTED.
 * 3. Gradients of mlx-lm's loss (masked mean CE) w.r.t. lora a, b, DoRA m,
 *    a full fine-tune copy, with dropout, through a 4-bit base, and through
 *    phi3's fused q/k/v rows sharing one `a`, against central finite
 *    differences (ε = 1e-2, f64 difference of f32 losses). Tolerance per
 *    checked element |g − fd| ≤ 3e-3·max(|fd|, 0.05·gmax) + 2e-4 where gmax
 *    is the largest |fd| of that parameter (f32 loss rounding ~1e-6·|L| ≈
 *    5e-6 over 2ε gives ≲ 3e-4 absolute noise; the truncation error ε²/6
 *    times the third derivative is smaller), and the sampled vectors must
 *    agree to 3e-3 in relative L2 (observed 1e-4 .. 1.1e-3). A wrong vjp is
 *    off by O(|g|) (a missing stop-gradient in DoRA's norm, for one, shows
 *    as 0.12-0.2). DoRA's norms are held at their base-point values during
 *    the differences (lmx_dora_cache), as mlx-lm's stop_gradient defines
 *    the gradient.
 * 4. Dropout: the same key gives the identical loss, another key or no
 *    dropout a different one; the mask keeps 1-p of 1e5 entries within 4σ,
 *    kept values are exactly 1/(1-p).
 */
#include "testing.h"

#include "core/tape.h"
#include "generate/engine.h"
#include "lmx.h"
#include "models/lora.h"
#include "quant/quant.h"
#include "train/train_internal.h"

#include <math.h>
#include <stdlib.h>

#define MAXL 8
#define NLIN 7

static uint64_t rng_s = 0x243F6A8885A308D3ull;
static float frand(void) { /* uniform [-1, 1) */
    rng_s ^= rng_s << 13;
    rng_s ^= rng_s >> 7;
    rng_s ^= rng_s << 17;
    return (float)((rng_s >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
}

static lmx_model *load(const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/hf/%s", LMX_TEST_DATA, name);
    lmx_load_options lo;
    lmx_load_options_init(&lo);
    lo.no_tokenizer = true;
    lo.device = "cpu";
    lmx_model *m = NULL;
    CHECK_OK(lmx_load(path, &lo, &m));
    return m;
}

static lmx_linear *lin(lmx_transformer *tf, int li, int i) {
    lmx_layer *L = &tf->layers[li];
    lmx_linear *all[NLIN] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
    return lmx_array_empty(&all[i]->w) ? NULL : all[i];
}

/* Random adapters on every projection: a ~ U(±1/sqrt(in)), b ~ U(±0.1)
 * (non-zero, so the update is visible), DoRA m = ‖W‖_row·(1 ± 0.2). */
static void attach(lmx_transformer *tf, lmx_lora store[MAXL][NLIN], bool dora, float scale, float dropout) {
    memset(store, 0, sizeof(lmx_lora) * MAXL * NLIN);
    for (int li = 0; li < tf->hp.n_layer && li < MAXL; li++)
        for (int i = 0; i < NLIN; i++) {
            lmx_linear *l = lin(tf, li, i);
            if (!l) continue;
            int64_t N = l->w.shape[0], K = l->w.shape[1];
            lmx_lora *lo = &store[li][i];
            CHECK_OK(lmx_lora_alloc(lo, 4, K, N, dora, scale, dropout));
            float *a = lo->a.data, *b = lo->b.data;
            for (int64_t j = 0; j < 4 * K; j++) a[j] = frand() / sqrtf((float)K);
            for (int64_t j = 0; j < 4 * N; j++) b[j] = 0.1f * frand();
            if (dora) {
                float *w = malloc((size_t)(N * K) * sizeof *w);
                CHECK_OK(lmx_linear_dequant_rows(l, 0, N, w));
                for (int64_t r = 0; r < N; r++) {
                    double ss = 0;
                    for (int64_t k = 0; k < K; k++) ss += (double)w[r * K + k] * w[r * K + k];
                    ((float *)lo->m.data)[r] = (float)sqrt(ss) * (1.0f + 0.2f * frand());
                }
                free(w);
            }
            l->lora = lo;
        }
}

static void detach_free(lmx_transformer *tf, lmx_lora store[MAXL][NLIN]) {
    for (int li = 0; li < tf->hp.n_layer && li < MAXL; li++)
        for (int i = 0; i < NLIN; i++) {
            lmx_linear *l = lin(tf, li, i);
            if (l) l->lora = NULL;
            lmx_lora_release(&store[li][i]);
        }
}

/* Replaces l's weight by an f32 copy (dequantized). */
static void set_f32_weight(lmx_linear *l, const float *w) {
    int64_t sh[2] = {l->w.shape[0], l->w.shape[1]};
    lmx_array a = {0};
    CHECK_OK(lmx_array_alloc(&a, LMX_F32, 2, sh));
    memcpy(a.data, w, (size_t)(sh[0] * sh[1]) * sizeof *w);
    lmx_array_release(&l->w);
    lmx_array_release(&l->scales);
    lmx_array_release(&l->biases);
    l->group_size = 0;
    l->w = a;
}

/* W' = W + s·b·a, then DoRA's m/‖W'‖ per row, written into model dst. */
static void fuse_into(lmx_transformer *dst, lmx_transformer *src, lmx_lora store[MAXL][NLIN]) {
    for (int li = 0; li < src->hp.n_layer && li < MAXL; li++)
        for (int i = 0; i < NLIN; i++) {
            lmx_linear *l = lin(src, li, i), *d = lin(dst, li, i);
            if (!l) continue;
            const lmx_lora *lo = &store[li][i];
            int64_t N = l->w.shape[0], K = l->w.shape[1];
            float *w = malloc((size_t)(N * K) * sizeof *w);
            CHECK_OK(lmx_linear_dequant_rows(l, 0, N, w));
            const float *a = lo->a.data, *b = lo->b.data;
            for (int64_t r = 0; r < N; r++) {
                double ss = 0;
                for (int64_t k = 0; k < K; k++) {
                    float dlt = 0;
                    for (int q = 0; q < 4; q++) dlt += (lo->scale * b[r * 4 + q]) * a[q * K + k];
                    w[r * K + k] += dlt;
                    ss += (double)w[r * K + k] * w[r * K + k];
                }
                if (!lmx_array_empty(&lo->m)) {
                    float f = ((const float *)lo->m.data)[r] / (float)sqrt(ss);
                    for (int64_t k = 0; k < K; k++) w[r * K + k] *= f;
                }
            }
            set_f32_weight(d, w);
            free(w);
        }
}

/* MLX affine 4-bit, group 32, of every projection (in place). */
static void quantize4(lmx_transformer *tf) {
    for (int li = 0; li < tf->hp.n_layer; li++)
        for (int i = 0; i < NLIN; i++) {
            lmx_linear *l = lin(tf, li, i);
            if (!l) continue;
            int64_t N = l->w.shape[0], K = l->w.shape[1], sh[2] = {N, K}, gs[2] = {N, K / 32};
            float *w = malloc((size_t)(N * K) * sizeof *w);
            CHECK_OK(lmx_linear_dequant_rows(l, 0, N, w));
            lmx_array q = {0}, sc = {0}, bi = {0};
            CHECK_OK(lmx_array_alloc(&q, lmx_quant_weight_dtype(LMX_QMODE_AFFINE, 4), 2, sh));
            CHECK_OK(lmx_array_alloc(&sc, LMX_F32, 2, gs));
            CHECK_OK(lmx_array_alloc(&bi, LMX_F32, 2, gs));
            CHECK_OK(lmx_quantize(LMX_QMODE_AFFINE, 4, 32, LMX_F32, w, N * K, q.data, sc.data, bi.data));
            free(w);
            lmx_array_release(&l->w);
            lmx_array_release(&l->scales);
            lmx_array_release(&l->biases);
            l->w = q;
            l->scales = sc;
            l->biases = bi;
            l->group_size = 32;
        }
}

static const int32_t toks[] = {5, 17, 99, 3, 200, 42, 7, 128, 64, 250, 11, 33, 1, 90};
#define NT ((int)(sizeof toks / sizeof *toks))

static double max_abs_diff(const float *a, const float *b, size_t n, double *ref) {
    double md = 0, mr = 0;
    for (size_t i = 0; i < n; i++) {
        md = fmax(md, fabs((double)a[i] - b[i]));
        mr = fmax(mr, fabs((double)b[i]));
    }
    *ref = mr;
    return md;
}

/* ---- 1. inference adapters == fused weights ------------------------------ */

static void fused_case(const char *fixture, bool dora, bool q4) {
    lmx_model *A = load(fixture), *B = load(fixture);
    if (!A || !B) return;
    if (q4) {
        quantize4(&A->tf);
        quantize4(&B->tf);
    }
    int V = A->tf.hp.n_vocab;
    float *base = malloc((size_t)NT * V * sizeof *base), *la = malloc((size_t)NT * V * sizeof *la),
          *lb = malloc((size_t)NT * V * sizeof *lb);
    CHECK_OK(lmx_logits(A, toks, NT, base));
    static lmx_lora store[MAXL][NLIN];
    attach(&A->tf, store, dora, 2.0f, 0.0f);
    CHECK_OK(lmx_logits(A, toks, NT, la));
    fuse_into(&B->tf, &A->tf, store);
    CHECK_OK(lmx_logits(B, toks, NT, lb));
    double ref, moved = max_abs_diff(la, base, (size_t)NT * V, &ref);
    double md = max_abs_diff(la, lb, (size_t)NT * V, &ref);
    printf("  %-8s %-4s %-5s adapter vs fused max|d| %.3g of max|logit| %.3g (adapter moved logits by %.3g)\n",
           fixture, dora ? "DoRA" : "LoRA", q4 ? "4-bit" : "f32", md, ref, moved);
    CHECK_MSG(md <= 1e-5 * ref, "%s: adapter vs fused logits differ by %g (max %g)", fixture, md, ref);
    CHECK_MSG(moved > 1e-2 * ref, "%s: the adapter did not change the logits", fixture);
    detach_free(&A->tf, store);
    free(base), free(la), free(lb);
    lmx_model_free(A);
    lmx_model_free(B);
}

static void test_infer_fused(void) {
    fused_case("llama", false, false);
    fused_case("llama", true, false);
    fused_case("qwen2", true, false);
    fused_case("llama", false, true);
    fused_case("llama", true, true);
}

/* ---- 2. training forward == inference forward, per row -------------------- */

static void train_vs_infer(const char *fixture) {
    lmx_model *M = load(fixture);
    if (!M) return;
    static lmx_lora store[MAXL][NLIN];
    attach(&M->tf, store, false, 2.0f, 0.0f);
    int V = M->tf.hp.n_vocab, B = 2, T = 9;
    int32_t tok[2 * 9];
    for (int i = 0; i < B * T; i++) tok[i] = toks[(i * 5) % NT];
    lmx_train_model tm;
    lmx_train_batch b;
    lmx_array lg = {0};
    CHECK_OK(lmx_train_model_init(&tm, &M->tf, NULL));
    CHECK_OK(lmx_train_batch_init(&b, &tm, tok, B, T, NULL, NULL));
    lmx_tape *tape = NULL;
    CHECK_OK(lmx_tape_create(&tape));
    lmx_exec ex = {M->backend, tape};
    CHECK_OK(lmx_train_forward(&ex, &b, &lg));
    float *ref = malloc((size_t)(T - 1) * V * sizeof *ref);
    for (int r = 0; r < B && !lmx_array_empty(&lg); r++) {
        CHECK_OK(lmx_logits(M, tok + r * T, (size_t)(T - 1), ref));
        double mr, md = max_abs_diff((const float *)lg.data + (size_t)r * (T - 1) * V, ref, (size_t)(T - 1) * V, &mr);
        if (r == 0) printf("  %-14s train vs generate forward max|d| %.3g of %.3g\n", fixture, md, mr);
        CHECK_MSG(md <= 1e-5 * mr, "%s row %d: training forward differs by %g (max %g)", fixture, r, md, mr);
    }
    free(ref);
    lmx_array_release(&lg);
    lmx_tape_free(tape);
    lmx_train_batch_free(&b);
    detach_free(&M->tf, store);
    lmx_model_free(M);
}

static void test_train_forward_matches(void) {
    const char *fx[] = {"llama", "llama_bias", "llama_tied", "llama_rope_llama3", "llama_rope_dynamic", "mistral",
                        "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "phi3_longrope", "phi",
                        "starcoder2", "llama_bf16"};
    for (size_t i = 0; i < sizeof fx / sizeof *fx; i++) train_vs_infer(fx[i]);
}

static void test_moe_refused(void) {
    lmx_model *M = load("qwen3_moe");
    if (!M) return;
    lmx_train_model tm;
    lmx_status s = lmx_train_model_init(&tm, &M->tf, NULL);
    CHECK(s == LMX_ERR_UNSUPPORTED);
    CHECK(strstr(lmx_last_error(), "mixture-of-experts") != NULL);
    lmx_model_free(M);
}

/* ---- 3. gradients against finite differences ------------------------------ */

typedef struct {
    lmx_model *M;
    lmx_train_model tm;
    int B, T;
    int32_t tok[2 * 10];
    int32_t off[2], len[2];
    bool dropout;
    uint64_t key;
    lmx_dora_cache dora; /* filled at the base point: FD perturbations keep the stop-gradient norms fixed */
} gcase;

/* The loss (and, with a tape, the recorded graph). */
static double run_loss(gcase *g, lmx_tape *tape) {
    lmx_train_batch b;
    lmx_array lg = {0}, loss = {0};
    double L = NAN;
    lmx_exec ex = {g->M->backend, tape};
    lmx_status st = lmx_train_batch_init(&b, &g->tm, g->tok, g->B, g->T, g->off, g->len);
    b.dropout = g->dropout;
    b.dropout_key = g->key;
    b.dora = &g->dora;
    if (!st) st = lmx_train_forward(&ex, &b, &lg);
    if (!st) st = lmx_train_loss(&ex, &b, &lg, &loss);
    CHECK_OK(st);
    if (!st) L = *(float *)loss.data;
    if (!st && tape) st = lmx_tape_backward(tape, &loss, NULL);
    CHECK_OK(st);
    lmx_array_release(&lg);
    lmx_array_release(&loss);
    lmx_train_batch_free(&b);
    return L;
}

static void fd_check(const char *what, gcase *g, lmx_array **params, int np, int max_el) {
    lmx_tape *tape = NULL;
    CHECK_OK(lmx_tape_create(&tape));
    CHECK_OK(lmx_train_freeze(tape, &g->tm));
    run_loss(g, tape);
    const float eps = 1e-2f;
    double worst = 0;
    for (int p = 0; p < np; p++) {
        lmx_array *a = params[p];
        const lmx_array *gr = lmx_tape_grad(tape, a);
        CHECK_MSG(gr != NULL, "%s: param %d got no gradient", what, p);
        int64_t n = lmx_array_numel(a), step = n > max_el ? n / max_el : 1;
        float *x = a->data;
        int cnt = 0;
        double fd[64], an[64], gmax = 0, num = 0, den = 0;
        for (int64_t i = (p * 3) % step; i < n && cnt < 64; i += step, cnt++) {
            float v = x[i];
            x[i] = v + eps;
            double lp = run_loss(g, NULL);
            x[i] = v - eps;
            double lm = run_loss(g, NULL);
            x[i] = v;
            fd[cnt] = (lp - lm) / (2.0 * eps);
            an[cnt] = gr ? ((const float *)gr->data)[i] : 0.0;
            gmax = fmax(gmax, fabs(fd[cnt]));
        }
        for (int k = 0; k < cnt; k++) {
            double err = fabs(fd[k] - an[k]), tol = 3e-3 * fmax(fabs(fd[k]), 0.05 * gmax) + 2e-4;
            num += (fd[k] - an[k]) * (fd[k] - an[k]);
            den += fd[k] * fd[k];
            worst = fmax(worst, err / fmax(fabs(fd[k]), 0.05 * gmax + 1e-12));
            CHECK_MSG(err <= tol, "%s: param %d sample %d: tape %.6g vs finite difference %.6g", what, p, k, an[k],
                      fd[k]);
        }
        double rel = sqrt(num / fmax(den, 1e-30));
        CHECK_MSG(gmax > 1e-4, "%s: param %d: gradient is ~0 (%g), the check would be vacuous", what, p, gmax);
        CHECK_MSG(rel <= 3e-3, "%s: param %d: relative L2 error %.3g", what, p, rel);
        if (getenv("LMX_GRAD_VERBOSE")) fprintf(stderr, "  %-24s param %d |g|max %.3g rel L2 %.2e\n", what, p, gmax, rel);
    }
    printf("  %-28s worst scaled error %.2e\n", what, worst);
    lmx_tape_free(tape);
    lmx_dora_cache_clear(&g->dora);
}

static void gcase_init(gcase *g, lmx_model *M, const lmx_adapters *ad) {
    memset(g, 0, sizeof *g);
    g->M = M;
    g->B = 2;
    g->T = 10;
    for (int i = 0; i < g->B * g->T; i++) g->tok[i] = toks[(i * 3 + 1) % NT];
    g->off[0] = 2, g->len[0] = 9; /* row 0: prompt of 2 masked out */
    g->off[1] = 1, g->len[1] = 6; /* row 1: padded after 6 tokens */
    CHECK_OK(lmx_train_model_init(&g->tm, &M->tf, ad));
}

static void test_grad_lora(void) {
    lmx_model *M = load("llama");
    if (!M) return;
    static lmx_lora st[MAXL][NLIN];
    attach(&M->tf, st, false, 2.0f, 0.0f);
    gcase g;
    gcase_init(&g, M, NULL);
    lmx_array *ps[] = {&st[0][0].a, &st[0][0].b, &st[0][6].a, &st[1][2].b, &st[1][3].a, &st[1][5].b};
    fd_check("lora a/b (llama f32)", &g, ps, 6, 24);
    detach_free(&M->tf, st);
    lmx_model_free(M);
}

static void test_grad_dora(void) {
    const char *fx[] = {"llama", "qwen2"};
    for (int f = 0; f < 2; f++) {
        lmx_model *M = load(fx[f]);
        if (!M) return;
        static lmx_lora st[MAXL][NLIN];
        attach(&M->tf, st, true, 2.0f, 0.0f);
        gcase g;
        gcase_init(&g, M, NULL);
        lmx_array *ps[] = {&st[0][0].m, &st[0][1].a, &st[0][2].b, &st[1][4].m, &st[1][6].a, &st[1][3].b};
        fd_check(f ? "dora m/a/b (qwen2, bias)" : "dora m/a/b (llama)", &g, ps, 6, 24);
        detach_free(&M->tf, st);
        lmx_model_free(M);
    }
}

static void test_grad_q4_base(void) {
    lmx_model *M = load("llama");
    if (!M) return;
    quantize4(&M->tf);
    static lmx_lora st[MAXL][NLIN];
    attach(&M->tf, st, false, 2.0f, 0.0f);
    gcase g;
    gcase_init(&g, M, NULL);
    /* layer-0 parameters: their gradient passes back through layer 1's
     * quantized projections (dx through the dequantized rows) */
    lmx_array *ps[] = {&st[0][0].a, &st[0][1].b, &st[0][4].a, &st[1][6].b};
    fd_check("lora through a 4-bit base", &g, ps, 4, 24);
    detach_free(&M->tf, st);
    lmx_model_free(M);
}

static void test_grad_dropout(void) {
    lmx_model *M = load("llama");
    if (!M) return;
    static lmx_lora st[MAXL][NLIN];
    attach(&M->tf, st, false, 2.0f, 0.25f);
    gcase g;
    gcase_init(&g, M, NULL);
    g.dropout = true;
    g.key = 1234;
    lmx_array *ps[] = {&st[0][0].a, &st[0][5].a, &st[1][6].b};
    fd_check("lora with dropout 0.25", &g, ps, 3, 24);
    /* determinism: same key, same loss; another key, another loss */
    double l1 = run_loss(&g, NULL), l2 = run_loss(&g, NULL);
    g.key = 99;
    double l3 = run_loss(&g, NULL);
    g.dropout = false;
    double l0 = run_loss(&g, NULL);
    printf("  dropout losses: key 1234 %.7f / %.7f, key 99 %.7f, off %.7f\n", l1, l2, l3, l0);
    CHECK(l1 == l2);
    CHECK(fabs(l1 - l3) > 1e-4);
    CHECK(fabs(l1 - l0) > 1e-4);
    detach_free(&M->tf, st);
    lmx_model_free(M);
}

/* phi3: one adapter feeds the fused q/k/v rows (shared a, row views of b),
 * and a full fine-tune copy of the fused gate_up rows and of a norm - as
 * the adapter files lay them out (models/lora.h). */
static void test_grad_fused_and_full(void) {
    lmx_model *M = load("phi3");
    if (!M) return;
    lmx_transformer *tf = &M->tf;
    lmx_layer *L1 = &tf->layers[1];
    int64_t D = tf->hp.n_embd, Nq = L1->wq.w.shape[0], Nk = L1->wk.w.shape[0], Nv = L1->wv.w.shape[0];
    lmx_adapters ad;
    memset(&ad, 0, sizeof ad);
    lmx_adapter_entry e[3];
    memset(e, 0, sizeof e);
    ad.e = e;
    ad.n = 3;
    /* entry 0: LoRA on qkv_proj of layer 1 */
    CHECK_OK(lmx_lora_alloc(&e[0].lora, 4, D, Nq + Nk + Nv, false, 2.0f, 0.0f));
    for (int64_t j = 0; j < 4 * D; j++) ((float *)e[0].lora.a.data)[j] = frand() / 8;
    for (int64_t j = 0; j < 4 * (Nq + Nk + Nv); j++) ((float *)e[0].lora.b.data)[j] = 0.1f * frand();
    lmx_linear *qkv[3] = {&L1->wq, &L1->wk, &L1->wv};
    int64_t r0 = 0;
    for (int t = 0; t < 3; t++) {
        int64_t n = qkv[t]->w.shape[0];
        e[0].targets[t] = qkv[t];
        e[0].rows[t] = r0;
        e[0].views[t] = e[0].lora;
        e[0].views[t].a.buf = e[0].views[t].b.buf = NULL; /* borrowed */
        e[0].views[t].b.shape[0] = n;
        e[0].views[t].b.data = (float *)e[0].lora.b.data + r0 * 4;
        qkv[t]->lora = &e[0].views[t];
        r0 += n;
    }
    e[0].n_targets = 3;
    /* entry 1: full copy of gate_up (rows of w_gate then w_up), swapped in */
    lmx_linear *gu[2] = {&L1->w_gate, &L1->w_up};
    int64_t F = gu[0]->w.shape[0], shf[2] = {2 * F, D};
    CHECK_OK(lmx_array_alloc(&e[1].full, LMX_F32, 2, shf));
    for (int t = 0; t < 2; t++) {
        CHECK_OK(lmx_linear_dequant_rows(gu[t], 0, F, (float *)e[1].full.data + t * F * D));
        e[1].targets[t] = gu[t];
        e[1].rows[t] = t * F;
        e[1].saved_w[t] = gu[t]->w;
        int64_t sh[2] = {F, D};
        CHECK_OK(lmx_array_view(&gu[t]->w, &e[1].full, t * F * D, 2, sh));
    }
    e[1].n_targets = 2;
    /* entry 2: full copy of the post-attention norm */
    int64_t shn[1] = {D};
    CHECK_OK(lmx_array_alloc(&e[2].full, LMX_F32, 1, shn));
    CHECK_OK(lmx_array_to_f32(&L1->ffn_norm, e[2].full.data));
    for (int64_t j = 0; j < D; j++) ((float *)e[2].full.data)[j] += 0.1f * frand();
    e[2].param = &L1->ffn_norm;
    e[2].saved_w[0] = L1->ffn_norm;
    CHECK_OK(lmx_array_view(&L1->ffn_norm, &e[2].full, 0, 1, shn));

    gcase g;
    gcase_init(&g, M, &ad);
    CHECK_EQ_INT(g.tm.first_layer, 1);
    lmx_array *ps[] = {&e[0].lora.a, &e[0].lora.b, &e[1].full, &e[2].full};
    fd_check("phi3 fused lora + full", &g, ps, 4, 32);
    lmx_array **tp = NULL;
    int ntp = 0;
    CHECK_OK(lmx_train_params(&ad, &tp, &ntp));
    CHECK_EQ_INT(ntp, 4);
    free(tp);
    for (int t = 0; t < 3; t++) qkv[t]->lora = NULL;
    for (int t = 0; t < 2; t++) {
        lmx_array_release(&gu[t]->w);
        gu[t]->w = e[1].saved_w[t];
    }
    lmx_array_release(&L1->ffn_norm);
    L1->ffn_norm = e[2].saved_w[0];
    lmx_lora_release(&e[0].lora);
    lmx_array_release(&e[1].full);
    lmx_array_release(&e[2].full);
    lmx_model_free(M);
}

/* ---- 4. dropout mask statistics -------------------------------------------- */

/* Kept fraction 1-p within 4σ (σ = sqrt(p(1-p)/n) = 0.0014 for n = 1e5),
 * kept values exactly 1/(1-p); the mask is a function of (key, layer,
 * module) only. */
static void test_dropout_mask(void) {
    enum { N = 100000 };
    float *m1 = malloc(N * sizeof *m1), *m2 = malloc(N * sizeof *m2);
    const float p = 0.3f;
    lmx_train_dropout_mask(m1, N, p, 42, 3, 1);
    int64_t kept = 0;
    bool vals_ok = true;
    for (int i = 0; i < N; i++) {
        kept += m1[i] != 0;
        vals_ok &= m1[i] == 0 || m1[i] == 1.0f / (1.0f - p);
    }
    double frac = (double)kept / N, sigma = sqrt(p * (1 - p) / N);
    printf("  dropout p=0.3: kept %.4f (expect 0.7 ± %.4f)\n", frac, 4 * sigma);
    CHECK(fabs(frac - 0.7) <= 4 * sigma);
    CHECK(vals_ok);
    lmx_train_dropout_mask(m2, N, p, 42, 3, 1);
    CHECK(!memcmp(m1, m2, N * sizeof *m1));
    lmx_train_dropout_mask(m2, N, p, 42, 3, 2);
    CHECK(memcmp(m1, m2, N * sizeof *m1) != 0);
    lmx_train_dropout_mask(m2, N, p, 43, 3, 1);
    CHECK(memcmp(m1, m2, N * sizeof *m1) != 0);
    free(m1), free(m2);
}

void run_tests(void) {
    TEST(test_infer_fused);
    TEST(test_train_forward_matches);
    TEST(test_moe_refused);
    TEST(test_grad_lora);
    TEST(test_grad_dora);
    TEST(test_grad_q4_base);
    TEST(test_grad_dropout);
    TEST(test_grad_fused_and_full);
    TEST(test_dropout_mask);
}
