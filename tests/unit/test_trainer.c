/*
 * test_trainer.c - the fine-tuning trainer (src/train/trainer.c).
 *
 * 1. Loss semantics (mlx-lm's default_loss): the trainer's loss equals the
 *    masked mean CE computed here in f64 from lmx_logits of each row alone
 *    (1e-5 relative: f32 logits, f64 sums on both sides), with mlx-lm's
 *    mask offset <= s <= length (s 1-based over targets; a row of length L
 *    also counts the target after its last token, as mlx-lm does).
 *    lmx_trainer_eval returns loss·ntoks (mlx-lm's evaluate sum).
 * 2. Gradient accumulation: mlx-lm sums the gradients of each micro-batch's
 *    MEAN loss and divides by grad_accumulation_steps - micro-batches weigh
 *    equally, whatever their token counts. Checked: accumulating rows {0}
 *    and {1} (2 steps) gives (g(row 0) + g(row 1)) / 2 exactly as computed
 *    from two separate single-row runs (1e-6 relative: same arithmetic, one
 *    extra rounding in the sum); with equal token counts it equals the
 *    gradient of the 2-row batch (1e-5: the batch's mean differs from the
 *    mean of means only by rounding); with unequal counts it does NOT equal
 *    it (the difference is > 1e-3 relative), as in mlx-lm.
 * 3. Gradient checkpointing gives the same summed gradients as the plain
 *    recorded step (1e-5 relative; only the order of f32 additions into
 *    the block inputs' gradients differs; observed identical), for LoRA with
 *    dropout, DoRA and gemma2 (sandwich norms, soft-capping), while holding
 *    one block's graph at a time instead of all of them. Dropout masks
 *    follow the seed: the same seed gives the same loss, another seed not.
 * 4. PyTorch + PEFT reference (tests/fixtures/make_peft_fixtures.py, data in
 *    tests/data/train/peft_llama_{f32,q4}.safetensors): the loss and every
 *    lora_a / lora_b gradient of the fixed batch, f32 base and 4-bit base
 *    (tolerance: loss 1e-5 relative; gradients max|Δ| ≤ 1e-4·max|g| per
 *    tensor - PyTorch and lmx order their f32 sums differently, observed
 *    ~1e-6); the loss before each of 20 updates with MLX's Adam (no bias
 *    correction, written out by hand in the script) and with SGD, ≤ 1e-4
 *    relative per step (the curves start ~1e-7 apart; Adam's normalised
 *    steps keep the drift small over 20 steps).
 * 5. Parameter counts: trainable = the adapter arrays; total = mlx-lm's
 *    get_total_parameters (lmx_count_parameters on the folder), for the
 *    f32 and the 4-bit model.
 * 6. Integration with the adapter files (models/adapters.c): LoRA, DoRA and
 *    full fine-tuning sets from lmx_adapters_create train (the loss on the
 *    trained batch falls by > 20% in 15 Adam steps).
 */
#include "testing.h"

#include "convert/convert.h"
#include "generate/engine.h"
#include "io/safetensors.h"
#include "lmx.h"
#include "models/adapters.h"
#include "train/train_internal.h"
#include "train/trainer.h"

#include <math.h>
#include <stdlib.h>

static uint64_t rng_s = 0x13198A2E03707344ull;
static float frand(void) {
    rng_s ^= rng_s << 13;
    rng_s ^= rng_s >> 7;
    rng_s ^= rng_s << 17;
    return (float)((rng_s >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
}

static lmx_model *load_path(const char *path) {
    lmx_load_options lo;
    lmx_load_options_init(&lo);
    lo.no_tokenizer = true;
    lo.device = "cpu";
    lmx_model *m = NULL;
    CHECK_OK(lmx_load(path, &lo, &m));
    return m;
}

static lmx_model *load(const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/hf/%s", LMX_TEST_DATA, name);
    return load_path(path);
}

#define MAXL 8
#define NLIN 7

/* A hand-made LoRA/DoRA set on every projection (an lmx_adapters whose
 * entries own the arrays; each linear points at its entry). */
typedef struct {
    lmx_adapters ad;
    lmx_adapter_entry e[MAXL * NLIN];
} handset;

static void hand_attach(lmx_transformer *tf, handset *h, bool dora, float dropout) {
    memset(h, 0, sizeof *h);
    h->ad.e = h->e;
    for (int li = 0; li < tf->hp.n_layer && li < MAXL; li++) {
        lmx_layer *L = &tf->layers[li];
        lmx_linear *all[NLIN] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (int i = 0; i < NLIN; i++) {
            lmx_linear *l = all[i];
            if (lmx_array_empty(&l->w)) continue;
            lmx_adapter_entry *e = &h->e[h->ad.n++];
            int64_t N = l->w.shape[0], K = l->w.shape[1];
            CHECK_OK(lmx_lora_alloc(&e->lora, 4, K, N, dora, 2.0f, dropout));
            for (int64_t j = 0; j < 4 * K; j++) ((float *)e->lora.a.data)[j] = frand() / sqrtf((float)K);
            for (int64_t j = 0; j < 4 * N; j++) ((float *)e->lora.b.data)[j] = 0.05f * frand();
            if (dora) {
                float *w = malloc((size_t)(N * K) * sizeof *w);
                CHECK_OK(lmx_linear_dequant_rows(l, 0, N, w));
                for (int64_t r = 0; r < N; r++) {
                    double ss = 0;
                    for (int64_t k = 0; k < K; k++) ss += (double)w[r * K + k] * w[r * K + k];
                    ((float *)e->lora.m.data)[r] = (float)sqrt(ss) * (1.0f + 0.1f * frand());
                }
                free(w);
            }
            e->targets[0] = l;
            e->n_targets = 1;
            l->lora = &e->lora;
        }
    }
}

static void hand_free(lmx_transformer *tf, handset *h) {
    for (int i = 0; i < h->ad.n; i++) {
        h->e[i].targets[0]->lora = NULL;
        lmx_lora_release(&h->e[i].lora);
    }
}

static lmx_trainer *mk_trainer(lmx_model *M, lmx_adapters *ad, lmx_opt_kind kind, float lr, int accum, bool ckpt) {
    lmx_train_options o;
    lmx_train_options_init(&o);
    lmx_optim_config_init(&o.optim, kind);
    o.learning_rate = lr;
    o.grad_accumulation_steps = accum;
    o.grad_checkpoint = ckpt;
    o.seed = 5;
    lmx_trainer *t = NULL;
    CHECK_OK(lmx_trainer_create(&M->ex, &M->tf, ad, &o, &t));
    return t;
}

/* max|a-b| / max|b| over the summed gradients of two trainers. */
static double grad_diff(const lmx_trainer *a, const lmx_trainer *b, double *gmax_out) {
    double md = 0, mr = 0;
    for (int i = 0; i < lmx_trainer_n_params(a); i++) {
        const float *ga = lmx_trainer_grad_sum(a, i), *gb = lmx_trainer_grad_sum(b, i);
        int64_t n = lmx_array_numel(lmx_trainer_param(a, i));
        for (int64_t j = 0; j < n; j++) {
            double x = ga ? ga[j] : 0, y = gb ? gb[j] : 0;
            md = fmax(md, fabs(x - y));
            mr = fmax(mr, fabs(y));
        }
    }
    if (gmax_out) *gmax_out = mr;
    return md / fmax(mr, 1e-30);
}

static const int32_t toks[2][12] = {{5, 17, 99, 3, 200, 42, 7, 128, 64, 250, 11, 33},
                                    {9, 18, 77, 250, 3, 14, 160, 0, 0, 0, 0, 0}};

/* ---- 1. loss semantics --------------------------------------------------- */

static void test_loss_semantics(void) {
    lmx_model *M = load("llama");
    if (!M) return;
    handset h;
    hand_attach(&M->tf, &h, false, 0.0f);
    lmx_trainer *t = mk_trainer(M, &h.ad, LMX_OPT_SGD, 0.0f, 1, false);
    int32_t off[2] = {3, 2}, len[2] = {12, 7};
    double loss = 0;
    int64_t ntoks = 0;
    if (t) CHECK_OK(lmx_trainer_accumulate(t, &toks[0][0], 2, 12, off, len, &loss, &ntoks));
    /* reference: per row, logits of tokens[:11] alone, CE in f64 */
    int V = M->tf.hp.n_vocab;
    float *lg = malloc((size_t)11 * V * sizeof *lg);
    double sum = 0;
    int64_t n = 0;
    for (int r = 0; r < 2; r++) {
        CHECK_OK(lmx_logits(M, toks[r], 11, lg));
        for (int tpos = 0; tpos < 11; tpos++) {
            int s = tpos + 1;
            if (s < off[r] || s > len[r]) continue;
            const float *x = lg + (size_t)tpos * V;
            double mx = -INFINITY, se = 0;
            for (int v = 0; v < V; v++) mx = fmax(mx, x[v]);
            for (int v = 0; v < V; v++) se += exp(x[v] - mx);
            sum += mx + log(se) - x[toks[r][tpos + 1]];
            n++;
        }
    }
    free(lg);
    /* row 0: steps 3..11 (9 targets); row 1: steps 2..7 (6, the last one is
     * the first padding token, as mlx-lm's s <= length counts it) */
    CHECK_EQ_INT(n, 15);
    CHECK_EQ_INT(ntoks, 15);
    double ref = sum / (double)n;
    printf("  loss %.7f, reference %.7f over %lld tokens\n", loss, ref, (long long)n);
    CHECK_MSG(fabs(loss - ref) <= 1e-5 * fabs(ref), "loss %.8f vs %.8f", loss, ref);
    double lsum = 0;
    int64_t nt2 = 0;
    if (t) CHECK_OK(lmx_trainer_eval(t, &toks[0][0], 2, 12, off, len, &lsum, &nt2));
    CHECK_EQ_INT(nt2, 15);
    CHECK_MSG(fabs(lsum - ref * 15) <= 1e-5 * fabs(ref * 15), "eval sum %.6f vs %.6f", lsum, ref * 15);
    lmx_trainer_free(t);
    hand_free(&M->tf, &h);
    lmx_model_free(M);
}

/* ---- 2. gradient accumulation -------------------------------------------- */

static void test_grad_accumulation(void) {
    lmx_model *M = load("llama");
    if (!M) return;
    handset h;
    hand_attach(&M->tf, &h, false, 0.0f);
    for (int equal = 0; equal < 2; equal++) {
        /* equal: both rows count 9 targets; else 9 and 6 */
        int32_t off[2] = {3, 2}, len[2] = {12, equal ? 10 : 7};
        lmx_trainer *acc = mk_trainer(M, &h.ad, LMX_OPT_SGD, 1.0f, 2, false);
        lmx_trainer *r0 = mk_trainer(M, &h.ad, LMX_OPT_SGD, 1.0f, 1, false);
        lmx_trainer *r1 = mk_trainer(M, &h.ad, LMX_OPT_SGD, 1.0f, 1, false);
        lmx_trainer *full = mk_trainer(M, &h.ad, LMX_OPT_SGD, 1.0f, 1, false);
        if (!acc || !r0 || !r1 || !full) return;
        int32_t tk[2][12];
        memcpy(tk, toks, sizeof tk);
        if (equal)
            for (int i = 7; i < 12; i++) tk[1][i] = (int32_t)(3 + 17 * i);
        CHECK_OK(lmx_trainer_accumulate(acc, tk[0], 1, 12, &off[0], &len[0], NULL, NULL));
        CHECK_OK(lmx_trainer_accumulate(acc, tk[1], 1, 12, &off[1], &len[1], NULL, NULL));
        CHECK_OK(lmx_trainer_accumulate(r0, tk[0], 1, 12, &off[0], &len[0], NULL, NULL));
        CHECK_OK(lmx_trainer_accumulate(r1, tk[1], 1, 12, &off[1], &len[1], NULL, NULL));
        CHECK_OK(lmx_trainer_accumulate(full, tk[0], 2, 12, off, len, NULL, NULL));
        /* (g0 + g1) / 2 vs the accumulated sum / 2: compare sums */
        double md = 0, mr = 0, mf = 0, mfr = 0;
        for (int i = 0; i < lmx_trainer_n_params(acc); i++) {
            const float *ga = lmx_trainer_grad_sum(acc, i), *g0 = lmx_trainer_grad_sum(r0, i),
                        *g1 = lmx_trainer_grad_sum(r1, i), *gf = lmx_trainer_grad_sum(full, i);
            int64_t n = lmx_array_numel(lmx_trainer_param(acc, i));
            for (int64_t j = 0; ga && g0 && g1 && gf && j < n; j++) {
                md = fmax(md, fabs((double)ga[j] - ((double)g0[j] + g1[j])));
                mr = fmax(mr, fabs((double)g0[j] + g1[j]));
                mf = fmax(mf, fabs((double)ga[j] / 2 - gf[j]));
                mfr = fmax(mfr, fabs((double)gf[j]));
            }
        }
        printf("  %s token counts: accumulated vs g0+g1 %.2e, (g0+g1)/2 vs one batch %.2e (relative)\n",
               equal ? "equal" : "unequal", md / mr, mf / mfr);
        CHECK_MSG(md <= 1e-6 * mr, "accumulated gradient differs from g0 + g1 by %g", md / mr);
        if (equal)
            CHECK_MSG(mf <= 1e-5 * mfr, "equal counts: mean of means differs from the batch by %g", mf / mfr);
        else
            CHECK_MSG(mf > 1e-3 * mfr, "unequal counts: micro-batches were token-weighted (%g)", mf / mfr);
        /* the update divides by grad_accumulation_steps: SGD lr 1 moves by
         * (g0 + g1)/2 */
        lmx_array *p0 = lmx_trainer_param(acc, 0);
        int64_t n0 = lmx_array_numel(p0);
        float *before = malloc((size_t)n0 * sizeof *before), *g0 = malloc((size_t)n0 * sizeof *g0);
        memcpy(before, p0->data, (size_t)n0 * sizeof *before);
        for (int64_t j = 0; j < n0; j++)
            g0[j] = (lmx_trainer_grad_sum(r0, 0)[j] + lmx_trainer_grad_sum(r1, 0)[j]) / 2;
        double lr = -1;
        CHECK_OK(lmx_trainer_update(acc, &lr));
        CHECK(lr == 1.0);
        CHECK_EQ_INT(lmx_trainer_step(acc), 1);
        double ud = 0, um = 0;
        for (int64_t j = 0; j < n0; j++) {
            ud = fmax(ud, fabs((double)(before[j] - ((float *)p0->data)[j]) - g0[j]));
            um = fmax(um, fabs(g0[j]));
        }
        CHECK_MSG(ud <= 1e-5 * um + 1e-7, "update moved by %g off (g0+g1)/2", ud);
        memcpy(p0->data, before, (size_t)n0 * sizeof *before); /* undo for the next round */
        free(before), free(g0);
        lmx_trainer_free(acc), lmx_trainer_free(r0), lmx_trainer_free(r1), lmx_trainer_free(full);
    }
    hand_free(&M->tf, &h);
    lmx_model_free(M);
}

/* ---- 3. gradient checkpointing ------------------------------------------ */

static void ckpt_case(const char *fixture, bool dora, float dropout) {
    lmx_model *M = load(fixture);
    if (!M) return;
    handset h;
    hand_attach(&M->tf, &h, dora, dropout);
    lmx_trainer *a = mk_trainer(M, &h.ad, LMX_OPT_ADAM, 1e-3f, 1, false);
    lmx_trainer *b = mk_trainer(M, &h.ad, LMX_OPT_ADAM, 1e-3f, 1, true);
    int32_t off[2] = {1, 1}, len[2] = {12, 7};
    double la = 0, lb = 0;
    if (a && b) {
        CHECK_OK(lmx_trainer_accumulate(a, &toks[0][0], 2, 12, off, len, &la, NULL));
        CHECK_OK(lmx_trainer_accumulate(b, &toks[0][0], 2, 12, off, len, &lb, NULL));
        double gmax, d = grad_diff(b, a, &gmax);
        int na = lmx_trainer_peak_nodes(a), nb = lmx_trainer_peak_nodes(b), L = M->tf.hp.n_layer;
        printf("  %-8s %s%s checkpointed vs plain: loss %.7f / %.7f, gradients %.2e relative; "
               "recorded nodes at once %d vs %d\n", fixture, dora ? "DoRA" : "LoRA", dropout > 0 ? " +dropout" : "",
               lb, la, d, nb, na);
        CHECK(la == lb);
        /* one block's graph instead of L blocks' (plus the head) */
        CHECK_MSG(nb * (L - 0.5) < na, "checkpointing recorded %d nodes at once, the plain step %d", nb, na);
        CHECK_MSG(d <= 1e-5 && gmax > 0, "%s: checkpointed gradients differ by %g", fixture, d);
        if (dropout > 0) { /* the masks follow the seed: another seed, another loss */
            lmx_train_options o;
            lmx_train_options_init(&o);
            o.seed = 6;
            lmx_trainer *c = NULL;
            double lc = 0;
            CHECK_OK(lmx_trainer_create(&M->ex, &M->tf, &h.ad, &o, &c));
            if (c) CHECK_OK(lmx_trainer_accumulate(c, &toks[0][0], 2, 12, off, len, &lc, NULL));
            CHECK_MSG(fabs(lc - la) > 1e-4, "seed 6 gave the loss of seed 5 (%.7f)", lc);
            lmx_trainer_free(c);
        }
    }
    lmx_trainer_free(a), lmx_trainer_free(b);
    hand_free(&M->tf, &h);
    lmx_model_free(M);
}

static void test_grad_checkpoint(void) {
    ckpt_case("llama", false, 0.2f);
    ckpt_case("qwen2", true, 0.0f);
    ckpt_case("gemma2", false, 0.0f);
}

/* ---- 4. PyTorch + PEFT ---------------------------------------------------- */

static const lmx_st_tensor *need(lmx_st_file *f, const char *name) {
    const lmx_st_tensor *t = lmx_st_find(f, name);
    CHECK_MSG(t != NULL, "fixture: %s missing", name);
    return t;
}

/* PEFT's targets: q, v, o, gate, up, down (not k). */
static void peft_attach(lmx_transformer *tf, lmx_st_file *f, handset *h) {
    static const char *mods[] = {"self_attn.q_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
                                 "mlp.up_proj", "mlp.down_proj"};
    memset(h, 0, sizeof *h);
    h->ad.e = h->e;
    float scale = *(const float *)need(f, "hp.scale")->data;
    for (int li = 0; li < tf->hp.n_layer; li++) {
        lmx_layer *L = &tf->layers[li];
        lmx_linear *lins[] = {&L->wq, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (int i = 0; i < 6; i++) {
            lmx_adapter_entry *e = &h->e[h->ad.n++];
            snprintf(e->name, sizeof e->name, "model.layers.%d.%s", li, mods[i]);
            char na[256], nb[256];
            snprintf(na, sizeof na, "%s.lora_a", e->name);
            snprintf(nb, sizeof nb, "%s.lora_b", e->name);
            const lmx_st_tensor *ta = need(f, na), *tb = need(f, nb);
            if (!ta || !tb) continue;
            int64_t N = lins[i]->w.shape[0], K = lins[i]->w.shape[1];
            CHECK_OK(lmx_lora_alloc(&e->lora, (int)ta->shape[0], K, N, false, scale, 0.0f));
            CHECK(ta->shape[1] == K && tb->shape[0] == N && ta->size == lmx_array_nbytes(&e->lora.a));
            memcpy(e->lora.a.data, ta->data, ta->size);
            memcpy(e->lora.b.data, tb->data, tb->size);
            e->targets[0] = lins[i];
            e->n_targets = 1;
            lins[i]->lora = &e->lora;
        }
    }
}

static void peft_case(const char *fixture_file, const char *model_path) {
    char fp[1024];
    snprintf(fp, sizeof fp, "%s/train/%s", LMX_TEST_DATA, fixture_file);
    lmx_st_file *f = NULL;
    CHECK_OK(lmx_st_open(fp, &f));
    lmx_model *M = load_path(model_path);
    if (!f || !M) {
        lmx_st_close(f);
        lmx_model_free(M);
        return;
    }
    const lmx_st_tensor *tt = need(f, "tokens"), *to = need(f, "offsets"), *tl = need(f, "lengths");
    if (!tt || !to || !tl) return;
    int B = (int)tt->shape[0], T = (int)tt->shape[1];
    const int32_t *tokens = (const int32_t *)tt->data, *off = (const int32_t *)to->data,
                  *len = (const int32_t *)tl->data;
    /* loss and gradients at the initial point */
    handset h;
    peft_attach(&M->tf, f, &h);
    lmx_trainer *t = mk_trainer(M, &h.ad, LMX_OPT_SGD, 0.0f, 1, false);
    double loss = 0;
    int64_t ntoks = 0;
    if (t) CHECK_OK(lmx_trainer_accumulate(t, tokens, B, T, off, len, &loss, &ntoks));
    float ref = *(const float *)need(f, "loss")->data;
    CHECK_EQ_INT(ntoks, *(const int32_t *)need(f, "ntoks")->data);
    double worst = 0;
    for (int i = 0; t && i < h.ad.n; i++) {
        const char *which[2] = {"lora_a", "lora_b"};
        lmx_array *arr[2] = {&h.e[i].lora.a, &h.e[i].lora.b};
        for (int k = 0; k < 2; k++) {
            char gn[256];
            snprintf(gn, sizeof gn, "grad.%s.%s", h.e[i].name, which[k]);
            const lmx_st_tensor *g = need(f, gn);
            int pi = -1;
            for (int p = 0; p < lmx_trainer_n_params(t); p++)
                if (lmx_trainer_param(t, p) == arr[k]) pi = p;
            const float *mine = pi >= 0 ? lmx_trainer_grad_sum(t, pi) : NULL;
            CHECK_MSG(mine != NULL, "%s: no gradient", gn);
            if (!g || !mine) continue;
            const float *r = (const float *)g->data;
            double md = 0, mr = 0;
            for (int64_t j = 0; j < lmx_array_numel(arr[k]); j++) {
                md = fmax(md, fabs((double)mine[j] - r[j]));
                mr = fmax(mr, fabs((double)r[j]));
            }
            worst = fmax(worst, md / mr);
            CHECK_MSG(md <= 1e-4 * mr && mr > 0, "%s: max|d| %g of max|g| %g", gn, md, mr);
        }
    }
    printf("  %-26s loss %.7f vs PEFT %.7f (rel %.1e); gradients worst max|d|/max|g| %.1e\n", fixture_file, loss,
           (double)ref, fabs(loss - ref) / ref, worst);
    CHECK_MSG(fabs(loss - ref) <= 1e-5 * fabs(ref), "loss %.8f vs PEFT %.8f", loss, (double)ref);
    lmx_trainer_free(t);
    hand_free(&M->tf, &h);
    /* 20-step curves: MLX Adam (by hand in the script) and SGD */
    const char *kinds[2] = {"adam", "sgd"};
    for (int k = 0; k < 2; k++) {
        char cn[64], ln[64];
        snprintf(cn, sizeof cn, "%s_losses", kinds[k]);
        snprintf(ln, sizeof ln, "hp.%s_lr", kinds[k]);
        const lmx_st_tensor *c = need(f, cn), *lr = need(f, ln);
        if (!c || !lr) continue;
        peft_attach(&M->tf, f, &h);
        t = mk_trainer(M, &h.ad, k ? LMX_OPT_SGD : LMX_OPT_ADAM, *(const float *)lr->data, 1, false);
        const float *curve = (const float *)c->data;
        double cw = 0;
        for (int s = 0; t && s < (int)c->shape[0]; s++) {
            double l = 0;
            CHECK_OK(lmx_trainer_accumulate(t, tokens, B, T, off, len, &l, NULL));
            CHECK_OK(lmx_trainer_update(t, NULL));
            double rel = fabs(l - curve[s]) / fabs(curve[s]);
            cw = fmax(cw, rel);
            if (getenv("LMX_TRAIN_VERBOSE")) fprintf(stderr, "    %s step %2d: %.7f vs %.7f\n", cn, s, l, (double)curve[s]);
            CHECK_MSG(rel <= 1e-4, "%s step %d: loss %.7f vs PEFT %.7f", cn, s, l, (double)curve[s]);
        }
        printf("  %-26s %s: 20 steps %.5f -> %.5f, worst rel diff %.1e\n", fixture_file, kinds[k], (double)curve[0],
               (double)curve[c->shape[0] - 1], cw);
        CHECK(curve[c->shape[0] - 1] < curve[0] - 0.05f); /* the reference curve trains */
        lmx_trainer_free(t);
        hand_free(&M->tf, &h);
    }
    lmx_model_free(M);
    lmx_st_close(f);
}

static void test_peft_reference(void) {
    char p[1024];
    snprintf(p, sizeof p, "%s/hf/llama", LMX_TEST_DATA);
    peft_case("peft_llama_f32.safetensors", p);
    snprintf(p, sizeof p, "%s/train/peft_llama_q4_base", LMX_TEST_DATA);
    peft_case("peft_llama_q4.safetensors", p);
}

/* ---- 5. parameter counts ------------------------------------------------- */

static void test_param_counts(void) {
    const char *paths[2] = {"hf/llama", "train/peft_llama_q4_base"};
    for (int i = 0; i < 2; i++) {
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", LMX_TEST_DATA, paths[i]);
        lmx_model *M = load_path(p);
        if (!M) continue;
        handset h;
        hand_attach(&M->tf, &h, true, 0.0f);
        lmx_trainer *t = mk_trainer(M, &h.ad, LMX_OPT_ADAM, 1e-3f, 1, false);
        int64_t tr = 0, tot = 0, want_tr = 0;
        uint64_t want_tot = 0;
        if (t) lmx_trainer_param_counts(t, &tr, &tot);
        for (int e = 0; e < h.ad.n; e++)
            want_tr += lmx_array_numel(&h.e[e].lora.a) + lmx_array_numel(&h.e[e].lora.b) +
                       lmx_array_numel(&h.e[e].lora.m);
        CHECK_OK(lmx_count_parameters(p, &want_tot));
        printf("  %-26s trainable %lld (expect %lld), total %lld (mlx-lm count %llu)\n", paths[i], (long long)tr,
               (long long)want_tr, (long long)tot, (unsigned long long)want_tot);
        CHECK_EQ_INT(tr, want_tr);
        CHECK_EQ_INT(tot, (int64_t)want_tot);
        lmx_trainer_free(t);
        hand_free(&M->tf, &h);
        lmx_model_free(M);
    }
}

/* ---- 6. adapter sets from models/adapters.c train --------------------------- */

static void test_adapters_train(void) {
    const lmx_ft_type types[3] = {LMX_FT_LORA, LMX_FT_DORA, LMX_FT_FULL};
    const char *names[3] = {"lora", "dora", "full"};
    int32_t off[2] = {1, 1}, len[2] = {12, 7};
    for (int k = 0; k < 3; k++) {
        lmx_model *M = load("llama");
        if (!M) return;
        lmx_adapter_config cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.type = types[k];
        cfg.num_layers = 1;
        cfg.rank = 4;
        cfg.scale = 10.0f;
        lmx_adapters *ad = NULL;
        CHECK_OK(lmx_adapters_create(&M->tf, &cfg, 3, &ad));
        lmx_trainer *t = ad ? mk_trainer(M, ad, LMX_OPT_ADAM, k == 2 ? 1e-3f : 1e-2f, 1, k == 1) : NULL;
        double first = 0, last = 0;
        for (int s = 0; t && s < 15; s++) {
            double l = 0;
            CHECK_OK(lmx_trainer_accumulate(t, &toks[0][0], 2, 12, off, len, &l, NULL));
            CHECK_OK(lmx_trainer_update(t, NULL));
            if (s == 0) first = l;
            last = l;
        }
        int64_t tr = 0;
        if (t) lmx_trainer_param_counts(t, &tr, NULL);
        printf("  %s: 15 Adam steps %.4f -> %.4f, trainable %lld\n", names[k], first, last, (long long)tr);
        CHECK(last < 0.8 * first);
        if (ad) CHECK_EQ_INT(tr, lmx_adapters_n_params(ad));
        lmx_trainer_free(t);
        lmx_adapters_free(ad);
        lmx_model_free(M);
    }
}

/* ---- errors ----------------------------------------------------------------- */

static void test_errors(void) {
    lmx_model *M = load("llama");
    if (!M) return;
    handset h;
    hand_attach(&M->tf, &h, false, 0.0f);
    lmx_train_options o;
    lmx_train_options_init(&o);
    o.grad_accumulation_steps = 0;
    lmx_trainer *t = NULL;
    CHECK(lmx_trainer_create(&M->ex, &M->tf, &h.ad, &o, &t) == LMX_ERR_INVALID_ARG);
    o.grad_accumulation_steps = 1;
    lmx_adapters none;
    memset(&none, 0, sizeof none);
    CHECK(lmx_trainer_create(&M->ex, &M->tf, &none, &o, &t) == LMX_ERR_INVALID_ARG);
    CHECK(t == NULL);
    CHECK_OK(lmx_trainer_create(&M->ex, &M->tf, &h.ad, &o, &t));
    int32_t bad[4] = {1, 2, 999, 3};
    if (t) CHECK(lmx_trainer_accumulate(t, bad, 1, 4, NULL, NULL, NULL, NULL) == LMX_ERR_INVALID_ARG);
    if (t) CHECK(lmx_trainer_accumulate(t, bad, 1, 1, NULL, NULL, NULL, NULL) == LMX_ERR_INVALID_ARG);
    lmx_trainer_free(t);
    hand_free(&M->tf, &h);
    lmx_model_free(M);
    M = load("qwen3_moe");
    if (!M) return;
    lmx_adapters empty;
    memset(&empty, 0, sizeof empty);
    CHECK(lmx_trainer_create(&M->ex, &M->tf, &empty, &o, &t) == LMX_ERR_UNSUPPORTED);
    lmx_model_free(M);
}

void run_tests(void) {
    TEST(test_loss_semantics);
    TEST(test_grad_accumulation);
    TEST(test_grad_checkpoint);
    TEST(test_peft_reference);
    TEST(test_param_counts);
    TEST(test_adapters_train);
    TEST(test_errors);
}
