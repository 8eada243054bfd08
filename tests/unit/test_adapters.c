/*
 * test_adapters.c - adapter folders as mlx-lm writes and reads them.
 *
 * Fixtures (tests/data/adapters, tests/fixtures/make_adapter_fixtures.py):
 * adapters made by mlx-lm 0.32.2's own linear_to_lora_layers / full
 * unfreezing on the HF llama, llama_bf16 and phi3 fixtures and a 4-bit
 * llama, saved as its trainer saves them.
 *  - names: lmx_adapters_create on the same config selects exactly the
 *    modules mlx-lm chose (every tensor name, shape and dtype of its file),
 *    for LoRA, DoRA, keys (with the model-level lm_head), full, phi3 fused.
 *  - values: loading gives the file's values exactly (lora_a/lora_b
 *    transposed; phi3 q/k/v and gate/up targets see row slices of b and m).
 *  - init: a ~ U(-1/sqrt(in), 1/sqrt(in)), b = 0, seeded; DoRA m equals
 *    mlx-lm's initial magnitudes within 1e-6 relative (f32 sums in another
 *    order), also from the dequantized 4-bit weights.
 *  - round trip: lmx's adapters.safetensors (+ the NNNNNNN_ checkpoint) has
 *    mlx-lm's header (sorted keys, "__metadata__": null, dtypes, shapes) and
 *    bit-identical tensor bytes, and loads back bit-identical.
 *  - attach/detach: the model's arrays come back as loaded (same logits).
 *  - malformed: wrong shape, unknown tensor, missing tensor, bad dtype,
 *    missing config / weights, truncated file, unknown key, alpha for scale,
 *    MoE and GGUF models, --device cuda: one-line errors naming the culprit.
 *  - logits with adapters vs mlx-lm's (needs the LoRA math in the forward
 *    pass; skipped with a note while an attached adapter changes nothing).
 */
#include "testing.h"

#include "generate/engine.h"
#include "io/safetensors.h"
#include "models/adapters.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[256];

typedef struct {
    const char *name, *base;
} fixture;

static const fixture cases[] = {
    {"llama_lora", "hf/llama"},          {"llama_dora", "hf/llama"},     {"llama_keys", "hf/llama"},
    {"llama_full", "hf/llama"},          {"llama_bf16_full", "hf/llama_bf16"}, {"phi3_lora", "hf/phi3"},
    {"phi3_dora", "hf/phi3"},            {"llama_q4_lora", "adapters/llama_q4"},
    {"llama_q4_dora", "adapters/llama_q4"},
};
#define N_CASES (sizeof cases / sizeof *cases)

static const char *data(const char *rel, char *buf, size_t cap) {
    snprintf(buf, cap, "%s/%s", LMX_TEST_DATA, rel);
    return buf;
}

static lmx_status load(const char *base, const char *adapter, lmx_model **m) {
    char b[512];
    lmx_load_options lo;
    lmx_load_options_init(&lo);
    lo.no_tokenizer = true;
    lo.device = "cpu";
    lo.adapter_path = adapter;
    return lmx_load(data(base, b, sizeof b), &lo, m);
}

static lmx_st_file *open_st(const char *path) {
    lmx_st_file *f = NULL;
    CHECK_OK(lmx_st_open(path, &f));
    return f;
}

/* A tensor's bytes in aligned memory (MLX's files do not pad: data may sit
 * at any offset). */
static void *aligned_copy(const lmx_st_tensor *t) {
    void *p = malloc(t->size ? t->size : 1);
    if (p) memcpy(p, t->data, t->size);
    return p;
}

static bool one_line(void) { return !strchr(lmx_last_error(), '\n') && *lmx_last_error(); }

/* ---- names and shapes as mlx-lm chose them -------------------------------------- */

static void test_names_match_mlx(void) {
    for (size_t c = 0; c < N_CASES; c++) {
        char d[512], p[600];
        snprintf(d, sizeof d, "%s/adapters/%s", LMX_TEST_DATA, cases[c].name);
        lmx_adapter_config cfg;
        snprintf(p, sizeof p, "%s/adapter_config.json", d);
        CHECK_OK(lmx_adapter_config_read(p, &cfg));
        lmx_model *m;
        if (load(cases[c].base, NULL, &m) != LMX_OK) {
            CHECK_MSG(0, "%s: %s", cases[c].name, lmx_last_error());
            continue;
        }
        lmx_adapters *ad;
        lmx_status s = lmx_adapters_create(&m->tf, &cfg, 7, &ad);
        CHECK_OK(s);
        snprintf(p, sizeof p, "%s/adapters.safetensors", d);
        lmx_st_file *f = open_st(p);
        if (!s && f) {
            bool full = cfg.type == LMX_FT_FULL;
            size_t total = 0;
            for (int i = 0; i < ad->n; i++) {
                const lmx_adapter_entry *e = &ad->e[i];
                static const char *const leaf[5] = {".lora_a", ".lora_b", ".m", ".weight", ".bias"};
                int parts[3], np = 0;
                if (full) {
                    parts[np++] = 3;
                    if (!lmx_array_empty(&e->full_bias)) parts[np++] = 4;
                } else {
                    parts[np++] = 0;
                    parts[np++] = 1;
                    if (cfg.type == LMX_FT_DORA) parts[np++] = 2;
                }
                total += (size_t)np;
                for (int j = 0; j < np; j++) {
                    int k = parts[j];
                    char nm[256];
                    snprintf(nm, sizeof nm, "%s%s", e->name, leaf[k]);
                    const lmx_st_tensor *t = lmx_st_find(f, nm);
                    CHECK_MSG(t != NULL, "%s: lmx chose '%s', mlx-lm did not", cases[c].name, nm);
                    if (!t) continue;
                    const lmx_array *a = k == 0 ? &e->lora.a : k == 1 ? &e->lora.b : k == 2 ? &e->lora.m
                                         : k == 3 ? &e->full : &e->full_bias;
                    bool tr = k < 2; /* file: [in, r] / [r, out] */
                    CHECK_EQ_INT(t->n_dims, a->ndim);
                    CHECK_EQ_INT(t->shape[0], tr ? a->shape[1] : a->shape[0]);
                    if (a->ndim == 2) CHECK_EQ_INT(t->shape[1], tr ? a->shape[0] : a->shape[1]);
                    CHECK_EQ_INT(t->dtype, cfg.type == LMX_FT_FULL ? e->file_dtype : LMX_F32);
                }
                if (!full) CHECK(e->targets[0]->lora != NULL);
            }
            CHECK_MSG(total == lmx_st_n_tensors(f), "%s: lmx selects %zu tensors, mlx-lm's file has %zu", cases[c].name,
                      total, lmx_st_n_tensors(f));
        }
        lmx_st_close(f);
        lmx_adapters_free(ad);
        lmx_adapter_config_free(&cfg);
        lmx_model_free(m);
    }
}

/* ---- values after loading ------------------------------------------------------- */

static void test_load_values(void) {
    for (size_t c = 0; c < N_CASES; c++) {
        char d[512], p[600];
        snprintf(d, sizeof d, "%s/adapters/%s", LMX_TEST_DATA, cases[c].name);
        lmx_model *m;
        if (load(cases[c].base, d, &m) != LMX_OK) {
            CHECK_MSG(0, "%s: %s", cases[c].name, lmx_last_error());
            continue;
        }
        const lmx_adapters *ad = m->adapters;
        snprintf(p, sizeof p, "%s/adapters.safetensors", d);
        lmx_st_file *f = open_st(p);
        int bad = 0;
        for (size_t i = 0; f && i < lmx_st_n_tensors(f); i++) {
            const lmx_st_tensor *t = lmx_st_tensor_at(f, i);
            int64_t n = t->n_dims == 2 ? t->shape[0] * t->shape[1] : t->shape[0];
            float *v = malloc((size_t)n * sizeof *v);
            lmx_dtype_info(t->dtype)->to_f32(t->data, v, n);
            char mod[256];
            snprintf(mod, sizeof mod, "%s", t->name);
            char *dot = strrchr(mod, '.');
            *dot = 0;
            const char *leaf = dot + 1;
            const lmx_adapter_entry *e = lmx_adapters_find(ad, mod);
            CHECK_MSG(e != NULL, "%s: %s not loaded", cases[c].name, t->name);
            if (e) {
                for (int64_t k = 0; k < n; k++) {
                    float got;
                    if (!strcmp(leaf, "lora_a") || !strcmp(leaf, "lora_b")) {
                        const lmx_array *a = leaf[5] == 'a' ? &e->lora.a : &e->lora.b; /* [R, C] = file [C, R] */
                        int64_t R = a->shape[0], C = a->shape[1], fc = k / R, fr = k % R;
                        (void)C;
                        got = ((const float *)a->data)[fr * a->shape[1] + fc];
                    } else if (!strcmp(leaf, "m")) {
                        got = ((const float *)e->lora.m.data)[k];
                    } else {
                        got = ((const float *)(leaf[0] == 'w' ? e->full.data : e->full_bias.data))[k];
                    }
                    if (got != v[k]) bad++;
                }
                /* full: the model computes with the loaded values */
                if (ad->cfg.type == LMX_FT_FULL) {
                    if (e->param) CHECK(e->param->data == e->full.data && e->saved_w[0].data != NULL);
                    else CHECK(e->targets[0]->w.data == e->full.data && e->targets[0]->w.dtype == LMX_F32);
                }
            }
            free(v);
        }
        CHECK_MSG(bad == 0, "%s: %d values differ from mlx-lm's file", cases[c].name, bad);
        /* phi3: q/k/v and gate/up share a, and see rows of b (and m) */
        if (!strncmp(cases[c].name, "phi3", 4)) {
            const lmx_layer *L = &m->tf.layers[m->tf.hp.n_layer - 1];
            const lmx_adapter_entry *e = NULL;
            for (int i = 0; i < ad->n; i++)
                if (strstr(ad->e[i].name, "qkv_proj")) e = &ad->e[i];
            CHECK(e && e->n_targets == 3 && L->wq.lora && L->wk.lora && L->wv.lora);
            if (e && L->wq.lora && L->wk.lora && L->wv.lora) {
                int64_t r = e->lora.b.shape[1], qr = L->wq.w.shape[0], kr = L->wk.w.shape[0];
                CHECK(L->wq.lora->a.data == e->lora.a.data && L->wv.lora->a.data == e->lora.a.data);
                CHECK((const float *)L->wk.lora->b.data == (const float *)e->lora.b.data + qr * r);
                CHECK((const float *)L->wv.lora->b.data == (const float *)e->lora.b.data + (qr + kr) * r);
                CHECK_EQ_INT(L->wv.lora->b.shape[0], L->wv.w.shape[0]);
                CHECK(L->wq.lora->scale == e->lora.scale);
                if (ad->cfg.type == LMX_FT_DORA)
                    CHECK((const float *)L->wk.lora->m.data == (const float *)e->lora.m.data + qr);
                CHECK(L->w_gate.lora && L->w_up.lora && L->w_up.lora->b.shape[0] == L->w_up.w.shape[0]);
            }
            if (m->tf.hp.n_layer > 1 && ad->cfg.num_layers == 1) CHECK(m->tf.layers[0].wq.lora == NULL);
        }
        lmx_st_close(f);
        lmx_model_free(m);
    }
}

/* ---- initialisation -------------------------------------------------------------- */

static void test_create_init(void) {
    lmx_model *m;
    CHECK_OK(load("hf/llama", NULL, &m));
    if (!m) return;
    lmx_adapter_config cfg = {.type = LMX_FT_LORA, .num_layers = 1, .rank = 4, .scale = 20.0f};
    lmx_adapters *a1, *a2;
    CHECK_OK(lmx_adapters_create(&m->tf, &cfg, 11, &a1));
    if (!a1) return;
    CHECK_EQ_INT(a1->n, 7);
    const char *want[7] = {"model.layers.1.mlp.down_proj",     "model.layers.1.mlp.gate_proj",
                           "model.layers.1.mlp.up_proj",       "model.layers.1.self_attn.k_proj",
                           "model.layers.1.self_attn.o_proj",  "model.layers.1.self_attn.q_proj",
                           "model.layers.1.self_attn.v_proj"};
    for (int i = 0; i < 7 && i < a1->n; i++) CHECK_STR(a1->e[i].name, want[i]);
    bool in_bound = true, nonzero = false, b_zero = true;
    for (int i = 0; i < a1->n; i++) {
        const lmx_adapter_entry *e = &a1->e[i];
        int64_t in = e->targets[0]->w.shape[1];
        float bound = 1.0f / sqrtf((float)in);
        CHECK_EQ_INT(e->lora.a.shape[0], 4);
        CHECK_EQ_INT(e->lora.a.shape[1], in);
        CHECK_EQ_INT(e->lora.b.shape[0], e->targets[0]->w.shape[0]);
        for (int64_t k = 0; k < lmx_array_numel(&e->lora.a); k++) {
            float v = ((float *)e->lora.a.data)[k];
            in_bound &= v >= -bound && v < bound;
            nonzero |= v != 0;
        }
        for (int64_t k = 0; k < lmx_array_numel(&e->lora.b); k++) b_zero &= ((float *)e->lora.b.data)[k] == 0;
        CHECK(e->targets[0]->lora == &e->lora);
    }
    CHECK(in_bound && nonzero && b_zero);
    lmx_adapters_free(a1);
    CHECK(m->tf.layers[1].wq.lora == NULL);
    /* the seed decides a */
    CHECK_OK(lmx_adapters_create(&m->tf, &cfg, 11, &a1));
    CHECK_OK(lmx_adapters_create(&m->tf, &cfg, 12, &a2));
    if (a1 && a2) {
        size_t nb = lmx_array_nbytes(&a1->e[0].lora.a);
        CHECK(memcmp(a1->e[0].lora.a.data, a2->e[0].lora.a.data, nb) != 0);
        /* rank 4 over q 64x64, k/v 32x64, o 64x64, gate/up 128x64, down 64x128: 4·(in + out) each */
        CHECK_EQ_INT(lmx_adapters_n_params(a1), 4 * (128 + 96 + 96 + 128 + 192 + 192 + 192));
        lmx_adapters_free(a2);
        CHECK_OK(lmx_adapters_create(&m->tf, &cfg, 11, &a2));
        if (a2) CHECK(!memcmp(a1->e[0].lora.a.data, a2->e[0].lora.a.data, nb));
    }
    lmx_adapters_free(a2);
    lmx_adapters_free(a1);
    lmx_model_free(m);
}

/* DoRA m: mlx-lm's initial magnitudes, recorded before the fixture perturbed them. */
static void test_dora_init_vs_mlx(void) {
    const char *dora[] = {"llama_dora", "phi3_dora", "llama_q4_dora"};
    const char *base[] = {"hf/llama", "hf/phi3", "adapters/llama_q4"};
    for (int c = 0; c < 3; c++) {
        char p[600];
        snprintf(p, sizeof p, "%s/adapters/%s/adapter_config.json", LMX_TEST_DATA, dora[c]);
        lmx_adapter_config cfg;
        CHECK_OK(lmx_adapter_config_read(p, &cfg));
        lmx_model *m;
        if (load(base[c], NULL, &m)) {
            CHECK_MSG(0, "%s", lmx_last_error());
            continue;
        }
        lmx_adapters *ad;
        CHECK_OK(lmx_adapters_create(&m->tf, &cfg, 0, &ad));
        snprintf(p, sizeof p, "%s/adapters/%s/expect.safetensors", LMX_TEST_DATA, dora[c]);
        lmx_st_file *f = open_st(p);
        double worst = 0;
        int seen = 0;
        for (int i = 0; ad && f && i < ad->n; i++) {
            char nm[256];
            snprintf(nm, sizeof nm, "m_init.%s.m", ad->e[i].name);
            const lmx_st_tensor *t = lmx_st_find(f, nm);
            CHECK_MSG(t != NULL, "%s: no %s", dora[c], nm);
            if (!t) continue;
            seen++;
            float *ref = aligned_copy(t);
            const float *got = ad->e[i].lora.m.data;
            for (int64_t k = 0; k < t->shape[0]; k++) {
                double rel = fabs((double)got[k] - ref[k]) / fabs((double)ref[k]);
                if (rel > worst) worst = rel;
            }
            free(ref);
        }
        CHECK(seen > 0);
        /* f32 sums of squares in another order than MLX's: a few ulps */
        CHECK_MSG(worst <= 1e-6, "%s: DoRA m init differs from mlx-lm's by %.3g relative", dora[c], worst);
        printf("  %s: DoRA m init vs mlx-lm: max rel %.2e\n", dora[c], worst);
        lmx_st_close(f);
        lmx_adapters_free(ad);
        lmx_adapter_config_free(&cfg);
        lmx_model_free(m);
    }
}

/* ---- save / load round trips ------------------------------------------------------ */

static bool same_tensors(const char *a_path, const char *b_path, const char *what) {
    lmx_st_file *a = open_st(a_path), *b = open_st(b_path);
    bool ok = a && b && lmx_st_n_tensors(a) == lmx_st_n_tensors(b);
    const char *prev = "";
    for (size_t i = 0; ok && i < lmx_st_n_tensors(b); i++) {
        const lmx_st_tensor *tb = lmx_st_tensor_at(b, i), *ta = lmx_st_find(a, tb->name);
        ok = ta && ta->dtype == tb->dtype && ta->n_dims == tb->n_dims &&
             !memcmp(ta->shape, tb->shape, sizeof ta->shape) && ta->size == tb->size &&
             !memcmp(ta->data, tb->data, ta->size) && strcmp(prev, tb->name) < 0; /* sorted header */
        CHECK_MSG(ok, "%s: tensor '%s' differs", what, tb->name);
        prev = tb->name;
    }
    if (a && b) CHECK_MSG(lmx_st_n_metadata(b) == 0, "%s: metadata written", what);
    lmx_st_close(a);
    lmx_st_close(b);
    return ok;
}

static void copy_file(const char *from, const char *to) {
    char *d;
    size_t n;
    CHECK_OK(lmx_read_file(from, &d, &n));
    CHECK_OK(lmx_atomic_write(to, d, n));
    free(d);
}

static void test_roundtrip(void) {
    for (size_t c = 0; c < N_CASES; c++) {
        char d[512], out[600], p[700], q[700];
        snprintf(d, sizeof d, "%s/adapters/%s", LMX_TEST_DATA, cases[c].name);
        snprintf(out, sizeof out, "%s/rt_%s/sub", tmpdir, cases[c].name); /* created with its parent */
        lmx_model *m;
        if (load(cases[c].base, d, &m) != LMX_OK) {
            CHECK_MSG(0, "%s: %s", cases[c].name, lmx_last_error());
            continue;
        }
        CHECK_OK(lmx_adapters_save(m->adapters, out, 7));
        snprintf(p, sizeof p, "%s/adapters.safetensors", d);
        snprintf(q, sizeof q, "%s/adapters.safetensors", out);
        CHECK(same_tensors(p, q, cases[c].name));
        snprintf(q, sizeof q, "%s/0000007_adapters.safetensors", out);
        CHECK(same_tensors(p, q, cases[c].name));
        /* the header as MLX writes it */
        char *txt;
        size_t n;
        if (lmx_read_file(q, &txt, &n) == LMX_OK) {
            CHECK(n > 30 && !memcmp(txt + 8, "{\"__metadata__\":null,\"", 22));
            free(txt);
        }
        /* lmx's folder loads back to the same values */
        snprintf(p, sizeof p, "%s/adapter_config.json", d);
        snprintf(q, sizeof q, "%s/adapter_config.json", out);
        copy_file(p, q);
        lmx_model *m2;
        if (load(cases[c].base, out, &m2) == LMX_OK) {
            const lmx_adapters *a = m->adapters, *b = m2->adapters;
            bool same = a->n == b->n;
            for (int i = 0; same && i < a->n; i++) {
                const lmx_adapter_entry *x = &a->e[i], *y = &b->e[i];
                same = !strcmp(x->name, y->name);
                const lmx_array *xs[5] = {&x->lora.a, &x->lora.b, &x->lora.m, &x->full, &x->full_bias};
                const lmx_array *ys[5] = {&y->lora.a, &y->lora.b, &y->lora.m, &y->full, &y->full_bias};
                for (int k = 0; same && k < 5; k++)
                    same = lmx_array_empty(xs[k]) == lmx_array_empty(ys[k]) &&
                           (lmx_array_empty(xs[k]) || !memcmp(xs[k]->data, ys[k]->data, lmx_array_nbytes(xs[k])));
            }
            CHECK_MSG(same, "%s: reloaded adapters differ", cases[c].name);
            lmx_model_free(m2);
        } else {
            CHECK_MSG(0, "%s: reload: %s", cases[c].name, lmx_last_error());
        }
        lmx_model_free(m);
    }
    /* a freshly created (random) set, with non-zero b, also comes back bit-identical */
    char p[700], q[700];
    lmx_model *m;
    CHECK_OK(load("hf/phi3", NULL, &m));
    if (!m) return;
    lmx_adapter_config cfg = {.type = LMX_FT_DORA, .num_layers = -1, .rank = 3, .scale = 2.5f};
    lmx_adapters *ad;
    CHECK_OK(lmx_adapters_create(&m->tf, &cfg, 5, &ad));
    if (ad) {
        for (int i = 0; i < ad->n; i++)
            for (int64_t k = 0; k < lmx_array_numel(&ad->e[i].lora.b); k++)
                ((float *)ad->e[i].lora.b.data)[k] = (float)((k * 7919 + i * 31) % 101) * 1e-3f - 0.05f;
        snprintf(p, sizeof p, "%s/random_dora", tmpdir);
        CHECK_OK(lmx_adapters_save(ad, p, -1));
        snprintf(q, sizeof q, "%s/random_dora/0000000_adapters.safetensors", tmpdir);
        CHECK(!lmx_file_exists(q)); /* iteration -1: only adapters.safetensors */
        snprintf(q, sizeof q, "%s/random_dora/adapter_config.json", tmpdir);
        const char *json = "{\"fine_tune_type\": \"dora\", \"num_layers\": -1, "
                           "\"lora_parameters\": {\"rank\": 3, \"scale\": 2.5, \"dropout\": 0.0}}";
        CHECK_OK(lmx_atomic_write(q, json, strlen(json)));
        lmx_adapters_free(ad);
        lmx_model *m2;
        CHECK_OK(load("hf/phi3", p, &m2));
        lmx_adapters *b = m2 ? m2->adapters : NULL;
        CHECK_OK(lmx_adapters_create(&m->tf, &cfg, 5, &ad)); /* same seed: same a */
        bool same = ad && b && ad->n == b->n;
        for (int i = 0; same && i < ad->n; i++) {
            for (int64_t k = 0; k < lmx_array_numel(&ad->e[i].lora.b); k++)
                ((float *)ad->e[i].lora.b.data)[k] = (float)((k * 7919 + i * 31) % 101) * 1e-3f - 0.05f;
            same = !memcmp(ad->e[i].lora.a.data, b->e[i].lora.a.data, lmx_array_nbytes(&ad->e[i].lora.a)) &&
                   !memcmp(ad->e[i].lora.b.data, b->e[i].lora.b.data, lmx_array_nbytes(&ad->e[i].lora.b)) &&
                   !memcmp(ad->e[i].lora.m.data, b->e[i].lora.m.data, lmx_array_nbytes(&ad->e[i].lora.m));
        }
        CHECK(same);
        lmx_adapters_free(ad);
        lmx_model_free(m2);
    }
    lmx_model_free(m);
}

/* ---- attach / detach ---------------------------------------------------------------- */

static void test_detach_restores(void) {
    lmx_model *m;
    CHECK_OK(load("hf/llama_bf16", NULL, &m));
    if (!m) return;
    static const int32_t toks[] = {1, 5, 17, 42, 100};
    int V = lmx_model_vocab_size(m);
    float *before = malloc(5 * (size_t)V * sizeof *before), *after = malloc(5 * (size_t)V * sizeof *after);
    CHECK_OK(lmx_logits(m, toks, 5, before));
    lmx_layer *L = &m->tf.layers[1];
    void *wq = L->wq.w.data, *norm = L->attn_norm.data;
    lmx_adapter_config cfg = {.type = LMX_FT_FULL, .num_layers = 1};
    lmx_adapters *ad;
    CHECK_OK(lmx_adapters_create(&m->tf, &cfg, 0, &ad));
    if (ad) {
        CHECK(L->wq.w.data != wq && L->wq.w.dtype == LMX_F32 && L->attn_norm.data != norm);
        CHECK(m->tf.layers[0].wq.w.data != NULL && m->tf.layers[0].wq.w.dtype == LMX_BF16);
        /* untrained full copies are the base values: same logits */
        CHECK_OK(lmx_logits(m, toks, 5, after));
        double worst = 0;
        for (int i = 0; i < 5 * V; i++) worst = fmax(worst, fabs(before[i] - after[i]));
        CHECK_MSG(worst <= 1e-4, "full copies change the logits by %g", worst); /* f32 vs bf16 kernels */
        lmx_adapters_detach(ad);
        CHECK(L->wq.w.data == wq && L->wq.w.dtype == LMX_BF16 && L->attn_norm.data == norm);
        lmx_adapters_attach(ad);
        CHECK(L->wq.w.data != wq);
        lmx_adapters_free(ad);
        CHECK(L->wq.w.data == wq && L->attn_norm.data == norm);
    }
    CHECK_OK(lmx_logits(m, toks, 5, after));
    CHECK(!memcmp(before, after, 5 * (size_t)V * sizeof *before));
    free(before);
    free(after);
    lmx_model_free(m);
}

/* ---- malformed input -------------------------------------------------------------------- */

/* dir/adapters.safetensors = the llama_lora file with one change. */
typedef enum { MUT_SHAPE, MUT_EXTRA, MUT_DROP, MUT_DTYPE } mutation;

static void write_mutated(const char *dir, mutation mu) {
    char p[700];
    snprintf(p, sizeof p, "%s/adapters/llama_lora/adapters.safetensors", LMX_TEST_DATA);
    lmx_st_file *f = open_st(p);
    if (!f) return;
    size_t n = lmx_st_n_tensors(f);
    lmx_st_write_tensor *ts = calloc(n + 1, sizeof *ts);
    int64_t sh[2][2];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const lmx_st_tensor *t = lmx_st_tensor_at(f, i);
        ts[k] = (lmx_st_write_tensor){t->name, t->dtype, t->n_dims, t->shape, t->data, t->size};
        if (!strcmp(t->name, "model.layers.1.self_attn.q_proj.lora_a")) {
            if (mu == MUT_SHAPE) { /* [r, in] instead of [in, r] */
                sh[0][0] = t->shape[1], sh[0][1] = t->shape[0];
                ts[k].shape = sh[0];
            } else if (mu == MUT_DTYPE) {
                ts[k].dtype = LMX_I32;
            }
        }
        if (mu == MUT_DROP && !strcmp(t->name, "model.layers.1.mlp.up_proj.lora_b")) continue;
        k++;
    }
    if (mu == MUT_EXTRA) {
        const lmx_st_tensor *t = lmx_st_tensor_at(f, 0);
        sh[1][0] = t->shape[0], sh[1][1] = t->shape[1];
        ts[k++] = (lmx_st_write_tensor){"model.layers.1.self_attn.q_proj.lora_c", t->dtype, 2, sh[1], t->data, t->size};
    }
    snprintf(p, sizeof p, "%s/adapters.safetensors", dir);
    CHECK_OK(lmx_st_write(p, ts, k, NULL));
    free(ts);
    lmx_st_close(f);
}

static void bad_dir(const char *tag, char *dir, size_t cap, bool with_config) {
    snprintf(dir, cap, "%s/bad_%s", tmpdir, tag);
    mkdir(dir, 0755);
    if (with_config) {
        char a[700], b[700];
        snprintf(a, sizeof a, "%s/adapters/llama_lora/adapter_config.json", LMX_TEST_DATA);
        snprintf(b, sizeof b, "%s/adapter_config.json", dir);
        copy_file(a, b);
    }
}

static void expect_fail(const char *base, const char *dir, lmx_status want, const char *needle, const char *what) {
    lmx_model *m = NULL;
    lmx_status s = load(base, dir, &m);
    CHECK_MSG(s == want, "%s: status %s, expected %s (%s)", what, lmx_status_str(s), lmx_status_str(want),
              lmx_last_error());
    CHECK_MSG(s == LMX_OK || (one_line() && strstr(lmx_last_error(), needle)), "%s: message '%s' lacks '%s'", what,
              lmx_last_error(), needle);
    if (s == LMX_OK) lmx_model_free(m);
    else CHECK(m == NULL);
}

static void test_malformed(void) {
    char d[512], p[700];
    bad_dir("shape", d, sizeof d, true);
    write_mutated(d, MUT_SHAPE);
    expect_fail("hf/llama", d, LMX_ERR_SHAPE, "model.layers.1.self_attn.q_proj.lora_a", "wrong shape");
    bad_dir("extra", d, sizeof d, true);
    write_mutated(d, MUT_EXTRA);
    expect_fail("hf/llama", d, LMX_ERR_FORMAT, "q_proj.lora_c", "unknown tensor");
    bad_dir("drop", d, sizeof d, true);
    write_mutated(d, MUT_DROP);
    expect_fail("hf/llama", d, LMX_ERR_NOT_FOUND, "model.layers.1.mlp.up_proj.lora_b", "missing tensor");
    bad_dir("dtype", d, sizeof d, true);
    write_mutated(d, MUT_DTYPE);
    expect_fail("hf/llama", d, LMX_ERR_FORMAT, "dtype", "integer dtype");
    /* no config / no weights */
    bad_dir("nocfg", d, sizeof d, false);
    write_mutated(d, MUT_SHAPE);
    expect_fail("hf/llama", d, LMX_ERR_NOT_FOUND, "adapter_config.json", "missing config");
    bad_dir("noweights", d, sizeof d, true);
    expect_fail("hf/llama", d, LMX_ERR_NOT_FOUND, "adapters.safetensors", "missing weights");
    snprintf(p, sizeof p, "%s/nonexistent", tmpdir);
    expect_fail("hf/llama", p, LMX_ERR_NOT_FOUND, "nonexistent", "missing path");
    /* truncated */
    bad_dir("trunc", d, sizeof d, true);
    {
        char src[700], *txt;
        size_t n;
        snprintf(src, sizeof src, "%s/adapters/llama_lora/adapters.safetensors", LMX_TEST_DATA);
        CHECK_OK(lmx_read_file(src, &txt, &n));
        snprintf(p, sizeof p, "%s/adapters.safetensors", d);
        CHECK_OK(lmx_atomic_write(p, txt, n / 2));
        free(txt);
    }
    expect_fail("hf/llama", d, LMX_ERR_FORMAT, "adapters.safetensors", "truncated");
    /* configs */
    struct {
        const char *tag, *json, *needle;
        lmx_status want;
    } cfgs[] = {
        {"key", "{\"num_layers\": 2, \"lora_parameters\": {\"rank\": 4, \"scale\": 1, \"dropout\": 0, "
                "\"keys\": [\"self_attn.nope\"]}}", "self_attn.nope", LMX_ERR_NOT_FOUND},
        {"alpha", "{\"num_layers\": 2, \"lora_parameters\": {\"rank\": 4, \"alpha\": 16, \"dropout\": 0}}", "alpha",
         LMX_ERR_FORMAT},
        {"nolayers", "{\"lora_parameters\": {\"rank\": 4, \"scale\": 1, \"dropout\": 0}}", "num_layers", LMX_ERR_FORMAT},
        {"type", "{\"fine_tune_type\": \"qlora\", \"num_layers\": 1, \"lora_parameters\": {\"rank\": 4, \"scale\": 1, "
                 "\"dropout\": 0}}", "fine_tune_type", LMX_ERR_FORMAT},
        {"rank", "{\"num_layers\": 1, \"lora_parameters\": {\"rank\": 0, \"scale\": 1, \"dropout\": 0}}", "rank",
         LMX_ERR_FORMAT},
        {"json", "{\"num_layers\": 1,", "not valid JSON", LMX_ERR_FORMAT},
        {"embed", "{\"num_layers\": 1, \"lora_parameters\": {\"rank\": 4, \"scale\": 1, \"dropout\": 0, "
                  "\"keys\": [\"model.embed_tokens\"]}}", "embed_tokens", LMX_ERR_UNSUPPORTED},
        /* the dora file's layer-0 tensors are outside a 1-layer config */
        {"layers", "{\"num_layers\": 1, \"fine_tune_type\": \"dora\", \"lora_parameters\": {\"rank\": 4, "
                   "\"scale\": 10, \"dropout\": 0}}", "model.layers.0.", LMX_ERR_FORMAT},
    };
    for (size_t i = 0; i < sizeof cfgs / sizeof *cfgs; i++) {
        bad_dir(cfgs[i].tag, d, sizeof d, false);
        char src[700];
        snprintf(src, sizeof src, "%s/adapters/%s/adapters.safetensors", LMX_TEST_DATA,
                 !strcmp(cfgs[i].tag, "layers") ? "llama_dora" : "llama_lora");
        snprintf(p, sizeof p, "%s/adapters.safetensors", d);
        copy_file(src, p);
        snprintf(p, sizeof p, "%s/adapter_config.json", d);
        CHECK_OK(lmx_atomic_write(p, cfgs[i].json, strlen(cfgs[i].json)));
        expect_fail("hf/llama", d, cfgs[i].want, cfgs[i].needle, cfgs[i].tag);
    }
    /* models adapters do not apply to (yet), and devices */
    snprintf(d, sizeof d, "%s/adapters/llama_lora", LMX_TEST_DATA);
    expect_fail("hf/qwen3_moe", d, LMX_ERR_UNSUPPORTED, "mixture-of-experts", "MoE model");
    expect_fail("models/llama-2-tiny-random.gguf", d, LMX_ERR_UNSUPPORTED, "model folders", "GGUF model");
    expect_fail("hf/phi3", d, LMX_ERR_FORMAT, "gate_proj.lora_a", "llama adapters on phi3");
    lmx_load_options lo;
    lmx_load_options_init(&lo);
    lo.device = "cuda";
    lo.no_tokenizer = true;
    lo.adapter_path = d;
    lmx_model *m = NULL;
    /* adapters run on CUDA too (uploaded once); without a GPU the load fails naming the device */
    lmx_status cst = lmx_load(data("hf/llama", p, sizeof p), &lo, &m);
    if (cst == LMX_OK) {
        lmx_model_free(m);
        m = NULL;
    } else {
        CHECK(m == NULL && (strstr(lmx_last_error(), "cuda") || strstr(lmx_last_error(), "CUDA")));
    }
    /* full fine-tuning of packed weights */
    CHECK_OK(load("adapters/llama_q4", NULL, &m));
    if (m) {
        lmx_adapter_config cfg = {.type = LMX_FT_FULL, .num_layers = 1};
        lmx_adapters *ad = NULL;
        CHECK(lmx_adapters_create(&m->tf, &cfg, 0, &ad) == LMX_ERR_UNSUPPORTED && ad == NULL);
        CHECK(m->tf.layers[1].wq.lora == NULL);
        lmx_model_free(m);
    }
}

/* A checkpoint file of a folder loads like the folder (config read beside it). */
static void test_checkpoint_path(void) {
    char d[600], p[700];
    snprintf(d, sizeof d, "%s/ckpt", tmpdir);
    lmx_model *m;
    char src[600];
    snprintf(src, sizeof src, "%s/adapters/llama_keys", LMX_TEST_DATA);
    CHECK_OK(load("hf/llama", src, &m));
    if (!m) return;
    CHECK_OK(lmx_adapters_save(m->adapters, d, 1234567));
    snprintf(p, sizeof p, "%s/adapter_config.json", src);
    char q[700];
    snprintf(q, sizeof q, "%s/adapter_config.json", d);
    copy_file(p, q);
    snprintf(p, sizeof p, "%s/1234567_adapters.safetensors", d);
    lmx_model *m2;
    CHECK_OK(load("hf/llama", p, &m2));
    if (m2) {
        CHECK_EQ_INT(m2->adapters->n, 5);
        CHECK(lmx_adapters_find(m2->adapters, "lm_head") != NULL);
        CHECK(m2->tf.lm_head.lora != NULL && m2->tf.layers[0].wq.lora != NULL && m2->tf.layers[0].wk.lora == NULL);
        lmx_model_free(m2);
    }
    lmx_model_free(m);
}

/* ---- logits vs mlx-lm ------------------------------------------------------------------- */

static void test_logits_vs_mlx(void) {
    int no_effect = 0;
    for (size_t c = 0; c < N_CASES; c++) {
        char d[512], p[600];
        snprintf(d, sizeof d, "%s/adapters/%s", LMX_TEST_DATA, cases[c].name);
        snprintf(p, sizeof p, "%s/expect.safetensors", d);
        lmx_st_file *f = open_st(p);
        lmx_model *m = NULL, *base = NULL;
        CHECK_OK(load(cases[c].base, d, &m));
        CHECK_OK(load(cases[c].base, NULL, &base));
        if (!f || !m || !base) goto next;
        const lmx_st_tensor *tt = lmx_st_find(f, "tokens"), *tl = lmx_st_find(f, "logits");
        int T = (int)tt->shape[0], V = lmx_model_vocab_size(m);
        float *got = malloc((size_t)T * V * sizeof *got), *b = malloc((size_t)T * V * sizeof *b);
        int32_t *ids = aligned_copy(tt);
        float *ref = aligned_copy(tl), *bref = NULL;
        CHECK_OK(lmx_logits(m, ids, (size_t)T, got));
        CHECK_OK(lmx_logits(base, ids, (size_t)T, b));
        bool effect = memcmp(got, b, (size_t)T * V * sizeof *got) != 0;
        /* the base model against mlx-lm's base: what the two implementations differ by anyway */
        const lmx_st_tensor *tb = lmx_st_find(f, "base_logits");
        double base_diff = 0;
        bref = aligned_copy(tb);
        for (int i = 0; i < T * V; i++) base_diff = fmax(base_diff, fabs((double)b[i] - bref[i]));
        if (effect) {
            double worst = 0, mx = 0;
            for (int i = 0; i < T * V; i++) {
                worst = fmax(worst, fabs((double)got[i] - ref[i]));
                mx = fmax(mx, fabs((double)ref[i]));
            }
            /* f32 forward passes in two implementations: 1e-4 of max|logit| (observed ~1e-6). A bf16
             * model: MLX computes in bf16, lmx in f32 - no tighter than twice the base models' gap. */
            double tol = strstr(cases[c].name, "bf16") ? fmax(2 * base_diff, 1e-4 * mx) : 1e-4 * mx;
            CHECK_MSG(worst <= tol, "%s: logits differ from mlx-lm's by %g (max|ref| %g)", cases[c].name, worst, mx);
            printf("  %s: max|lmx - mlx-lm| = %.3g (%.2g of max|logit|; base models: %.3g)\n", cases[c].name, worst,
                   worst / mx, base_diff);
        } else {
            CHECK_MSG(!strstr(cases[c].name, "full"), "%s: full weights not swapped in", cases[c].name);
            printf("  %s: the attached adapter does not change the logits yet\n", cases[c].name);
            no_effect++;
        }
        free(got);
        free(b);
        free(ids), free(ref), free(bref);
    next:
        lmx_st_close(f);
        lmx_model_free(m);
        lmx_model_free(base);
    }
    if (no_effect)
        t_skip("logits_vs_mlx (lora/dora cases)", "attached LoRA/DoRA adapters change nothing: the LoRA math is not "
               "in transformer.c's linear() yet");
}

void run_tests(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lmx_test_adapters_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        fprintf(stderr, "cannot make a temporary folder\n");
        t_failed_checks++;
        return;
    }
    TEST(test_names_match_mlx);
    TEST(test_load_values);
    TEST(test_create_init);
    TEST(test_dora_init_vs_mlx);
    TEST(test_roundtrip);
    TEST(test_detach_restores);
    TEST(test_malformed);
    TEST(test_checkpoint_path);
    TEST(test_logits_vs_mlx);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
}
