/*
 * test_fuse.c - `lmx fuse` against mlx-lm's fuse and against the unfused
 * model with its adapters.
 *
 * For every adapter fixture of tests/data/adapters (mlx-lm 0.32.2's own
 * files; expect.safetensors holds mlx-lm's LoRALinear/DoRALinear.fuse()
 * results, make_adapter_fixtures.py):
 *  - every fused tensor against mlx-lm's: f32 within 2e-6·max|W| (the
 *    rank-r update summed in another order, DoRA's row norms); full
 *    fine-tuning: exactly the adapter's tensors; untouched tensors
 *    byte-identical to the base folder's;
 *  - a 4-bit base re-quantized: scales/biases within 2e-6 relative and at
 *    least 99% of the packed weights identical (a value at a rounding edge
 *    may land one step over: the dequantized weights then differ by at most
 *    one scale), and --dequantize: f32 weights within 2e-6·max|W|, no
 *    quantization left in config.json;
 *  - logits of the fused folder vs the base model with the adapters
 *    attached: 1e-5·max|logit| for float bases (the same sums, the update
 *    folded into W first); vs mlx-lm's fused model: 1e-4·max|logit|.
 *    A re-quantized 4-bit base loses part of the update to the new
 *    quantization (the "fused model lost the adapter" reports): its gap to
 *    the attached model must equal mlx-lm's own gap within 1e-3·max|logit|;
 *  - --export-gguf on stories260K (llama with tokenizer.json) and a random
 *    lmx-made LoRA adapter: the GGUF loads with the same logits as the
 *    fused folder (1e-5·max|logit|; q/k rows permuted and un-permuted by
 *    the GGUF path's traditional RoPE), the same special-token ids and
 *    the same id -> text mapping (mlx-lm scores every token -1000, so the
 *    GGUF's SentencePiece merges differ from the source's by design);
 *  - refusals: an existing save path, a GGUF base, --export-gguf of phi3
 *    or of a quantized model without --dequantize.
 */
#include "testing.h"

#include "convert/fuse.h"
#include "generate/engine.h"
#include "io/shards.h"
#include "models/adapters.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[256];

typedef struct {
    const char *name, *base;
    bool quant;
} fixture;

static const fixture cases[] = {
    {"llama_lora", "hf/llama", false},      {"llama_dora", "hf/llama", false},
    {"llama_keys", "hf/llama", false},      {"llama_full", "hf/llama", false},
    {"llama_bf16_full", "hf/llama_bf16", false}, {"phi3_lora", "hf/phi3", false},
    {"phi3_dora", "hf/phi3", false},        {"llama_q4_lora", "adapters/llama_q4", true},
    {"llama_q4_dora", "adapters/llama_q4", true},
};
#define N_CASES (sizeof cases / sizeof *cases)

static const int32_t toks[] = {1, 5, 17, 42, 100, 200, 7, 3, 99, 250, 12, 64};
#define NT (sizeof toks / sizeof *toks)

static float *logits_of(const char *model, const char *adapter, int *V) {
    lmx_load_options lo;
    lmx_load_options_init(&lo);
    lo.no_tokenizer = true;
    lo.device = "cpu";
    lo.adapter_path = adapter;
    lmx_model *m;
    lmx_status s = lmx_load(model, &lo, &m);
    CHECK_OK(s);
    if (s) return NULL;
    *V = lmx_model_vocab_size(m);
    float *lg = malloc(NT * (size_t)*V * sizeof *lg);
    CHECK_OK(lmx_logits(m, toks, NT, lg));
    lmx_model_free(m);
    return lg;
}

static double max_abs(const float *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(x[i]));
    return m;
}

static float *to_f32(const lmx_st_tensor *t, int64_t *n) {
    *n = 1;
    for (int i = 0; i < t->n_dims; i++) *n *= t->shape[i];
    float *f = malloc((size_t)*n * sizeof *f);
    lmx_dtype_info(t->dtype)->to_f32(t->data, f, *n);
    return f;
}

/* Every "<tag>.<tensor>" of expect against the fused folder's tensor. */
static void compare_fused(const char *what, const char *expect, const char *folder, const char *tag, bool requant) {
    lmx_st_file *ef;
    lmx_st_set *out;
    CHECK_OK(lmx_st_open(expect, &ef));
    CHECK_OK(lmx_st_set_open(folder, &out));
    if (!ef || !out) return;
    size_t tl = strlen(tag), seen = 0, packed = 0, packed_same = 0;
    double worst = 0;
    for (size_t i = 0; i < lmx_st_n_tensors(ef); i++) {
        const lmx_st_tensor *r = lmx_st_tensor_at(ef, i);
        if (strncmp(r->name, tag, tl) || r->name[tl] != '.') continue;
        const char *nm = r->name + tl + 1;
        const lmx_st_tensor *g = lmx_st_set_find(out, nm, NULL);
        CHECK_MSG(g != NULL, "%s: fused folder lacks '%s'", what, nm);
        if (!g) continue;
        seen++;
        CHECK_MSG(g->dtype == r->dtype && g->n_dims == r->n_dims && !memcmp(g->shape, r->shape, sizeof g->shape),
                  "%s: '%s': dtype/shape differ from mlx-lm's", what, nm);
        if (g->size != r->size) continue;
        if (r->dtype == LMX_U32) { /* re-quantized packed words */
            for (size_t k = 0; k < r->size / 4; k++) packed_same += !memcmp(g->data + 4 * k, r->data + 4 * k, 4);
            packed += r->size / 4;
            continue;
        }
        int64_t n;
        float *a = to_f32(r, &n), *b = to_f32(g, &n);
        double mx = max_abs(a, (size_t)n), d = 0;
        for (int64_t k = 0; k < n; k++) d = fmax(d, fabs((double)a[k] - b[k]));
        d /= mx > 0 ? mx : 1;
        worst = fmax(worst, d);
        /* full fine-tuning writes the adapter's tensors as they are */
        if (!strcmp(tag, "fused") && strstr(what, "full")) CHECK_MSG(d == 0, "%s: '%s' differs by %g", what, nm, d);
        free(a), free(b);
    }
    CHECK_MSG(seen > 0, "%s: no %s tensors compared", what, tag);
    CHECK_MSG(worst <= 2e-6, "%s: %s tensors differ from mlx-lm's by %.3g of max|W|", what, tag, worst);
    if (requant) {
        double frac = packed ? (double)packed_same / (double)packed : 0;
        CHECK_MSG(frac >= 0.99, "%s: only %.4f of the re-quantized words equal mlx-lm's", what, frac);
        printf("  %s/%s: %zu tensors, max rel %.2e, packed words equal %.5f\n", what, tag, seen, worst, frac);
    } else {
        printf("  %s/%s: %zu tensors, max rel %.2e\n", what, tag, seen, worst);
    }
    lmx_st_close(ef);
    lmx_st_set_close(out);
}

/* Tensors the adapters do not touch are copied byte for byte. */
static void untouched_identical(const char *what, const char *base, const char *folder, const lmx_adapters *ad) {
    lmx_st_set *a, *b;
    CHECK_OK(lmx_st_set_open(base, &a));
    CHECK_OK(lmx_st_set_open(folder, &b));
    int diff = 0, n = 0;
    for (size_t i = 0; a && b && i < lmx_st_set_n_tensors(a); i++) {
        const lmx_st_tensor *t = lmx_st_set_tensor_at(a, i, NULL);
        char mod[256];
        snprintf(mod, sizeof mod, "%s", t->name);
        char *dot = strrchr(mod, '.');
        if (dot) *dot = 0;
        if (lmx_adapters_find(ad, mod)) continue;
        const lmx_st_tensor *u = lmx_st_set_find(b, t->name, NULL);
        n++;
        if (!u || u->size != t->size || memcmp(u->data, t->data, t->size)) diff++;
    }
    CHECK_MSG(n > 0 && diff == 0, "%s: %d of %d untouched tensors changed", what, diff, n);
    lmx_st_set_close(a);
    lmx_st_set_close(b);
}

static void test_vs_mlx(void) {
    for (size_t c = 0; c < N_CASES; c++) {
        char base[512], ad_dir[512], out[600], expect[600];
        snprintf(base, sizeof base, "%s/%s", LMX_TEST_DATA, cases[c].base);
        snprintf(ad_dir, sizeof ad_dir, "%s/adapters/%s", LMX_TEST_DATA, cases[c].name);
        snprintf(expect, sizeof expect, "%s/expect.safetensors", ad_dir);
        for (int dq = 0; dq < (cases[c].quant ? 2 : 1); dq++) {
            snprintf(out, sizeof out, "%s/%s%s", tmpdir, cases[c].name, dq ? "_dq" : "");
            lmx_fuse_options o = {.model = base, .adapter_path = ad_dir, .save_path = out, .dequantize = dq};
            lmx_fuse_result r;
            lmx_status s = lmx_fuse(&o, &r);
            CHECK_OK(s);
            if (s) continue;
            CHECK(r.n_tensors > 0 && r.quantized == (cases[c].quant && !dq));
            compare_fused(cases[c].name, expect, out, dq ? "fused_dq" : "fused", cases[c].quant && !dq);
            /* config.json: quantization kept (and mirrored) or dropped */
            lmx_config *cfg;
            CHECK_OK(lmx_config_load(out, &cfg));
            if (cfg) {
                bool q = lmx_cfg_get(cfg, "quantization") != NULL, qc = lmx_cfg_get(cfg, "quantization_config") != NULL;
                CHECK(q == (cases[c].quant && !dq) && qc == q);
                lmx_config_free(cfg);
            }
            if (!dq) {
                lmx_model *m;
                lmx_load_options lo;
                lmx_load_options_init(&lo);
                lo.device = "cpu";
                lo.no_tokenizer = true;
                lo.adapter_path = ad_dir;
                CHECK_OK(lmx_load(base, &lo, &m));
                if (m) {
                    untouched_identical(cases[c].name, base, out, m->adapters);
                    lmx_model_free(m);
                }
            }
            /* the fused model computes what base + adapters compute (float bases), and what
             * mlx-lm's fused model computes (every base) */
            int V = 0, V2 = 0;
            float *fused = logits_of(out, NULL, &V), *attached = logits_of(base, ad_dir, &V2);
            lmx_st_file *ef = NULL;
            CHECK_OK(lmx_st_open(expect, &ef));
            const lmx_st_tensor *mf = ef ? lmx_st_find(ef, dq ? "fused_dq_logits" : "fused_logits") : NULL;
            const lmx_st_tensor *ma = ef ? lmx_st_find(ef, "logits") : NULL;
            if (!mf) mf = ma; /* full fine-tuning: no module to fuse */
            if (fused && attached && mf && ma && V == V2) {
                size_t n = NT * (size_t)V;
                float *mlx_fused = malloc(mf->size), *mlx_att = malloc(ma->size); /* MLX does not align */
                memcpy(mlx_fused, mf->data, mf->size);
                memcpy(mlx_att, ma->data, ma->size);
                double mx = max_abs(attached, n), d_att = 0, d_mlx = 0, gap_mlx = 0;
                for (size_t i = 0; i < n; i++) {
                    d_att = fmax(d_att, fabs((double)fused[i] - attached[i]));
                    d_mlx = fmax(d_mlx, fabs((double)fused[i] - mlx_fused[i]));
                    gap_mlx = fmax(gap_mlx, fabs((double)mlx_fused[i] - mlx_att[i]));
                }
                bool requant = cases[c].quant && !dq, bf16 = strstr(cases[c].name, "bf16") != NULL;
                /* float bases: the same sums with the update folded into W first */
                if (!requant)
                    CHECK_MSG(d_att <= 1e-5 * mx, "%s%s: fused logits differ from base + adapters by %g (max %g)",
                              cases[c].name, dq ? " (dequantized)" : "", d_att, mx);
                /* two implementations' f32 forward passes over the same tensors (mlx-lm runs a bf16
                 * model in bf16: that case is covered by the exact tensors above) */
                if (!bf16)
                    CHECK_MSG(d_mlx <= 1e-4 * mx, "%s%s: fused logits differ from mlx-lm's fused model by %g",
                              cases[c].name, dq ? " (dequantized)" : "", d_mlx);
                /* re-quantized: the adapter's update partly lost to the new quantization, in both
                 * implementations alike (mlx-lm's own gap is the reference) */
                if (requant)
                    CHECK_MSG(fabs(d_att - gap_mlx) <= 1e-3 * mx, "%s: fused-vs-attached gap %g, mlx-lm's %g",
                              cases[c].name, d_att, gap_mlx);
                printf("  %s%s: logits max|fused - attached| = %.3g (%.2g of max|logit|; mlx-lm's gap %.3g), "
                       "max|fused - mlx-lm fused| = %.3g\n", cases[c].name, dq ? " --dequantize" : "", d_att,
                       d_att / mx, gap_mlx, d_mlx);
                free(mlx_fused), free(mlx_att);
            }
            lmx_st_close(ef);
            free(fused), free(attached);
        }
    }
}

/* --export-gguf: stories260K with a random lmx-made adapter. */
static void test_export_gguf(void) {
    char base[600], ad_dir[600], out[600], gguf[700], p[700];
    snprintf(base, sizeof base, "%s/stories_chat", tmpdir);
    mkdir(base, 0755);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "cp %s/stories260K/hf/* %s/stories260K/chat/* %s/", LMX_TEST_DATA, LMX_TEST_DATA, base);
    CHECK(system(cmd) == 0);
    lmx_model *m;
    lmx_load_options lo;
    lmx_load_options_init(&lo);
    lo.device = "cpu";
    CHECK_OK(lmx_load(base, &lo, &m));
    if (!m) return;
    lmx_adapter_config cfg = {.type = LMX_FT_LORA, .num_layers = -1, .rank = 4, .scale = 8.0f};
    lmx_adapters *ad;
    CHECK_OK(lmx_adapters_create(&m->tf, &cfg, 3, &ad));
    if (!ad) return;
    for (int i = 0; i < ad->n; i++)
        for (int64_t k = 0; k < lmx_array_numel(&ad->e[i].lora.b); k++)
            ((float *)ad->e[i].lora.b.data)[k] = (float)((k * 131 + i * 17) % 97) * 4e-4f - 0.02f;
    snprintf(ad_dir, sizeof ad_dir, "%s/stories_adapters", tmpdir);
    CHECK_OK(lmx_adapters_save(ad, ad_dir, -1));
    snprintf(p, sizeof p, "%s/adapter_config.json", ad_dir);
    const char *json = "{\"fine_tune_type\": \"lora\", \"num_layers\": -1, "
                       "\"lora_parameters\": {\"rank\": 4, \"scale\": 8.0, \"dropout\": 0.0}}";
    CHECK_OK(lmx_atomic_write(p, json, strlen(json)));
    lmx_adapters_free(ad);
    lmx_model_free(m);
    snprintf(out, sizeof out, "%s/stories_fused", tmpdir);
    lmx_fuse_options o = {.model = base, .adapter_path = ad_dir, .save_path = out, .export_gguf = true,
                          .gguf_path = "ggml-model-f16.gguf"};
    lmx_fuse_result r;
    CHECK_OK(lmx_fuse(&o, &r));
    snprintf(gguf, sizeof gguf, "%s/ggml-model-f16.gguf", out);
    int V = 0, V2 = 0, V3 = 0;
    float *folder = logits_of(out, NULL, &V), *g = logits_of(gguf, NULL, &V2), *att = logits_of(base, ad_dir, &V3);
    if (folder && g && att && V == V2 && V == V3) {
        double mx = max_abs(folder, NT * (size_t)V), d = 0, d2 = 0, d3 = 0;
        float *b0 = logits_of(base, NULL, &V3);
        for (size_t i = 0; i < NT * (size_t)V; i++) {
            d = fmax(d, fabs((double)folder[i] - g[i]));
            d2 = fmax(d2, fabs((double)folder[i] - att[i]));
            d3 = fmax(d3, fabs((double)folder[i] - (b0 ? b0[i] : 0)));
        }
        CHECK_MSG(d <= 1e-5 * mx, "GGUF logits differ from the fused folder's by %g (max %g)", d, mx);
        CHECK_MSG(d2 <= 1e-5 * mx, "fused folder differs from base + adapters by %g (max %g)", d2, mx);
        CHECK_MSG(d3 > 1e-3 * mx, "the adapter changed nothing (%g)", d3); /* the test must see a fused change */
        printf("  stories260K GGUF vs folder: %.3g, folder vs attached: %.3g, vs base: %.3g (max|logit| %.3g)\n", d, d2,
               d3, mx);
        free(b0);
    }
    free(folder), free(g), free(att);
    /* the GGUF's vocabulary: same special ids, same encoding */
    lmx_tokenizer *t1, *t2;
    CHECK_OK(lmx_tokenizer_load(out, &t1));
    CHECK_OK(lmx_tokenizer_load(gguf, &t2));
    if (t1 && t2) {
        CHECK_EQ_INT(lmx_tokenizer_bos(t2), lmx_tokenizer_bos(t1));
        CHECK_EQ_INT(lmx_tokenizer_eos(t2), lmx_tokenizer_eos(t1));
        CHECK_EQ_INT(lmx_tokenizer_vocab_size(t2), lmx_tokenizer_vocab_size(t1));
        /* mlx-lm scores every token -1000, so SentencePiece merges differ from the source
         * model's: the vocabulary (id -> string) is what must agree */
        const char *text = "Once upon a time, there was a little dog named Max.";
        int32_t *a;
        size_t na;
        CHECK_OK(lmx_tokenize(t1, text, strlen(text), true, &a, &na));
        char *x = NULL, *y = NULL;
        CHECK_OK(lmx_detokenize(t1, a, na, &x));
        CHECK_OK(lmx_detokenize(t2, a, na, &y));
        CHECK(x && y && !strcmp(x, y));
        lmx_free(a), lmx_free(x), lmx_free(y);
    }
    if (t1) lmx_tokenizer_free(t1);
    if (t2) lmx_tokenizer_free(t2);
}

static void test_refusals(void) {
    char base[512], ad[512], out[600];
    snprintf(base, sizeof base, "%s/hf/llama", LMX_TEST_DATA);
    snprintf(ad, sizeof ad, "%s/adapters/llama_lora", LMX_TEST_DATA);
    snprintf(out, sizeof out, "%s/exists", tmpdir);
    mkdir(out, 0755);
    lmx_fuse_result r;
    lmx_fuse_options o = {.model = base, .adapter_path = ad, .save_path = out};
    CHECK(lmx_fuse(&o, &r) == LMX_ERR_INVALID_ARG && strstr(lmx_last_error(), "already exists"));
    snprintf(out, sizeof out, "%s/never", tmpdir);
    o.save_path = out;
    char gg[512];
    snprintf(gg, sizeof gg, "%s/models/llama-2-tiny-random.gguf", LMX_TEST_DATA);
    o.model = gg;
    CHECK(lmx_fuse(&o, &r) == LMX_ERR_UNSUPPORTED && strstr(lmx_last_error(), "model folder"));
    char phi[512], pad[512];
    snprintf(phi, sizeof phi, "%s/hf/phi3", LMX_TEST_DATA);
    snprintf(pad, sizeof pad, "%s/adapters/phi3_lora", LMX_TEST_DATA);
    o.model = phi;
    o.adapter_path = pad;
    o.export_gguf = true;
    CHECK(lmx_fuse(&o, &r) == LMX_ERR_UNSUPPORTED && strstr(lmx_last_error(), "phi3"));
    char q4[512], qad[512];
    snprintf(q4, sizeof q4, "%s/adapters/llama_q4", LMX_TEST_DATA);
    snprintf(qad, sizeof qad, "%s/adapters/llama_q4_lora", LMX_TEST_DATA);
    o.model = q4;
    o.adapter_path = qad;
    CHECK(lmx_fuse(&o, &r) == LMX_ERR_UNSUPPORTED && strstr(lmx_last_error(), "quantized"));
    o.adapter_path = ad; /* missing adapter folder pieces are the loader's errors */
    o.export_gguf = false;
    snprintf(qad, sizeof qad, "%s/nothing_here", tmpdir);
    o.adapter_path = qad;
    CHECK(lmx_fuse(&o, &r) == LMX_ERR_NOT_FOUND);
    CHECK(access(out, F_OK) != 0); /* nothing written on failure */
}

void run_tests(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lmx_test_fuse_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        fprintf(stderr, "cannot make a temporary folder\n");
        t_failed_checks++;
        return;
    }
    TEST(test_vs_mlx);
    TEST(test_export_gguf);
    TEST(test_refusals);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
}
