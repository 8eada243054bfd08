/*
 * test_kv_cache.c - the KV cache and prompt-cache files (issue 7).
 *
 *  - continuing from a cache (prefilled, trimmed, or saved and loaded) gives
 *    the logits of prefilling the whole text at once: max|Δ| <= 1e-4·max|ref|
 *    (the chunking differs, so the f32 sums may round differently);
 *  - cache files round-trip their metadata and contents; another model's
 *    cache, truncated/garbage files and unknown cache classes are refused;
 *  - rotating (max_kv_size) and quantized (kv_bits) caches give mlx-lm's own
 *    greedy tokens (tests/data/kv_cache/mlx_greedy.json, made by
 *    tests/fixtures/make_kv_cache_fixtures.py), and a rotating cache stays
 *    bounded far beyond its window;
 *  - quantized KV logits stay within a stated bound of the float cache.
 */
#include "testing.h"

#include "lmx.h"

#include "generate/engine.h" /* lmx_cache internals: the rotating cache's allocation */

#include <cjson/cJSON.h>
#include <stdlib.h>

static char model_path[1024], hf_dir[1024], tmpdir[1024];

static const char *hf(const char *name) {
    snprintf(hf_dir, sizeof hf_dir, "%s/hf/%s", LMX_TEST_DATA, name);
    return hf_dir;
}

/* The suite also runs on a device (LMX_DEVICE=cuda ctest). */
static bool host_device(void) {
    const char *d = getenv("LMX_DEVICE");
    return !d || !*d || !strcmp(d, "cpu");
}

static lmx_model *load(const char *path) {
    lmx_load_options o;
    lmx_load_options_init(&o);
    o.n_threads = 1; /* tiny models: the pool costs more than it saves */
    if (host_device()) o.device = "cpu"; /* host-only cache variants; not "auto" */
    lmx_model *m = NULL;
    CHECK_OK(lmx_load(path, &o, &m));
    return m;
}

static double maxabs(const float *a, int n) {
    double m = 0;
    for (int i = 0; i < n; i++) m = fabs(a[i]) > m ? fabs(a[i]) : m;
    return m;
}

static double maxdiff(const float *a, const float *b, int n) {
    double m = 0;
    for (int i = 0; i < n; i++) m = fabs(a[i] - b[i]) > m ? fabs(a[i] - b[i]) : m;
    return m;
}

#define NT 24
static int32_t TOKS[NT] = {1, 403, 407, 261, 378, 300, 295, 261, 374, 421, 500, 322,
                           29, 70, 99, 260, 411, 273, 341, 376, 288, 30, 11, 270};

/* Logits of the last of tokens[0..n) from an empty cache. */
static void ref_logits(lmx_model *m, const int32_t *t, size_t n, float *out) {
    int V = lmx_model_vocab_size(m);
    float *all = malloc(n * (size_t)V * sizeof *all);
    CHECK_OK(lmx_logits(m, t, n, all));
    memcpy(out, all + (n - 1) * (size_t)V, (size_t)V * sizeof *out);
    free(all);
}

static void check_close(const float *got, const float *ref, int V, const char *what) {
    double d = maxdiff(got, ref, V), mx = maxabs(ref, V);
    CHECK_MSG(d <= 1e-4 * mx, "%s: max|d| %g of %g", what, d, mx);
}

static void test_continue_and_trim(void) {
    lmx_model *m = load(model_path);
    if (!m) return;
    int V = lmx_model_vocab_size(m);
    float *ref = malloc(V * sizeof *ref), *got = malloc(V * sizeof *got);
    ref_logits(m, TOKS, NT, ref);
    lmx_cache *c;
    CHECK_OK(lmx_cache_new(m, NULL, &c));
    CHECK_OK(lmx_cache_prefill(m, c, TOKS, 10, NULL));
    CHECK_EQ_INT(lmx_cache_length(c), 10);
    CHECK_OK(lmx_cache_prefill_logits(m, c, TOKS + 10, NT - 10, got));
    check_close(got, ref, V, "prefix then rest");
    /* trim back to 7 tokens, then continue with the true rest */
    CHECK(lmx_cache_trimmable(c));
    CHECK_EQ_INT(lmx_cache_trim(c, NT - 7), NT - 7);
    CHECK_EQ_INT(lmx_cache_length(c), 7);
    CHECK_OK(lmx_cache_prefill_logits(m, c, TOKS + 7, NT - 7, got));
    check_close(got, ref, V, "trimmed then rest");
    CHECK_EQ_INT(lmx_cache_trim(c, 1000), NT); /* at most what it holds */
    lmx_cache_free(c);
    /* growth across several 256-token steps, one token at a time */
    int32_t *long_t = malloc(600 * sizeof *long_t);
    for (int i = 0; i < 600; i++) long_t[i] = TOKS[i % NT];
    ref_logits(m, long_t, 600, ref);
    CHECK_OK(lmx_cache_new(m, NULL, &c));
    for (int i = 0; i < 599; i++) CHECK_OK(lmx_cache_prefill(m, c, long_t + i, 1, NULL));
    CHECK_OK(lmx_cache_prefill_logits(m, c, long_t + 599, 1, got));
    check_close(got, ref, V, "600 single steps");
    lmx_cache_free(c);
    free(long_t);
    free(ref);
    free(got);
    lmx_model_free(m);
}

static void test_save_load(void) {
    lmx_model *m = load(model_path);
    if (!m) return;
    int V = lmx_model_vocab_size(m);
    float *ref = malloc(V * sizeof *ref), *got = malloc(V * sizeof *got);
    ref_logits(m, TOKS, NT, ref);
    char path[1100];
    snprintf(path, sizeof path, "%s/c.safetensors", tmpdir);
    lmx_cache *c, *l = NULL;
    CHECK_OK(lmx_cache_new(m, NULL, &c));
    CHECK_OK(lmx_cache_prefill(m, c, TOKS, 15, NULL));
    const char *meta[] = {"model", "stories", "tokenizer_config", "{\"trust_remote_code\": false}", NULL};
    CHECK_OK(lmx_cache_save(c, path, meta));
    CHECK_OK(lmx_cache_load(m, path, &l));
    if (l) {
        CHECK_EQ_INT(lmx_cache_length(l), 15);
        CHECK_STR(lmx_cache_metadata(l, "model"), "stories");
        CHECK_STR(lmx_cache_metadata(l, "tokenizer_config"), "{\"trust_remote_code\": false}");
        CHECK(lmx_cache_metadata(l, "nope") == NULL);
        CHECK_OK(lmx_cache_prefill_logits(m, l, TOKS + 15, NT - 15, got));
        check_close(got, ref, V, "loaded then rest");
        lmx_cache_free(l);
    }
    lmx_cache_free(c);

    /* refused: another model's cache, garbage, truncation, unknown class */
    lmx_model *other = load(hf("qwen3"));
    lmx_status s = other ? lmx_cache_load(other, path, &l) : LMX_OK;
    CHECK(s == LMX_ERR_SHAPE);
    CHECK(strstr(lmx_last_error(), "another model") != NULL);
    lmx_model_free(other);
    char bad[1200], buf[4096];
    snprintf(bad, sizeof bad, "%s/garbage.safetensors", tmpdir);
    FILE *f = fopen(bad, "wb");
    fputs("not a safetensors file at all", f);
    fclose(f);
    CHECK(lmx_cache_load(m, bad, &l) != LMX_OK);
    CHECK(l == NULL);
    t_sh(buf, sizeof buf, "head -c 300 '%s' > '%s/trunc.safetensors'", path, tmpdir);
    snprintf(bad, sizeof bad, "%s/trunc.safetensors", tmpdir);
    CHECK(lmx_cache_load(m, bad, &l) == LMX_ERR_FORMAT);
    t_sh(buf, sizeof buf, "sed 's/\"KVCache\"/\"XXCache\"/g' '%s' > '%s/cls.safetensors'", path, tmpdir);
    snprintf(bad, sizeof bad, "%s/cls.safetensors", tmpdir);
    CHECK(lmx_cache_load(m, bad, &l) == LMX_ERR_UNSUPPORTED);
    free(ref);
    free(got);
    lmx_model_free(m);
}

typedef struct {
    int32_t ids[512];
    int n;
} ids_acc;

static int on_tok(const lmx_response *r, void *u) {
    ids_acc *a = u;
    if (r->finish_reason != LMX_FINISH_STOP && a->n < 512) a->ids[a->n++] = r->token;
    return 0;
}

static void test_mlx_greedy(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/kv_cache/mlx_greedy.json", LMX_TEST_DATA);
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    if (!f) return;
    static char js[1 << 16];
    size_t n = fread(js, 1, sizeof js - 1, f);
    fclose(f);
    js[n] = 0;
    cJSON *arr = cJSON_Parse(js);
    CHECK(cJSON_IsArray(arr));
    const cJSON *c;
    cJSON_ArrayForEach(c, arr) {
        const char *name = cJSON_GetObjectItem(c, "model")->valuestring;
        lmx_model *m = load(hf(name));
        if (!m) continue;
        int32_t prompt[64];
        int np = 0;
        const cJSON *t;
        cJSON_ArrayForEach(t, cJSON_GetObjectItem(c, "prompt")) prompt[np++] = t->valueint;
        const cJSON *greedy = cJSON_GetObjectItem(c, "greedy");
        lmx_generate_options o;
        lmx_generate_options_init(&o);
        o.max_tokens = cJSON_GetArraySize(greedy);
        o.ignore_eos = true;
        o.max_kv_size = cJSON_GetObjectItem(c, "max_kv_size")->valueint;
        o.kv_bits = cJSON_GetObjectItem(c, "kv_bits")->valueint;
        o.kv_group_size = cJSON_GetObjectItem(c, "kv_group_size")->valueint;
        o.quantized_kv_start = cJSON_GetObjectItem(c, "quantized_kv_start")->valueint;
        o.prefill_step_size = cJSON_GetObjectItem(c, "prefill_step_size")->valueint;
        ids_acc a = {.n = 0};
        if (o.kv_bits && !host_device()) { /* quantized KV is host-only so far: refused cleanly */
            CHECK(lmx_generate_stream(m, prompt, (size_t)np, &o, on_tok, &a) == LMX_ERR_UNSUPPORTED);
            lmx_model_free(m);
            continue;
        }
        CHECK_OK(lmx_generate_stream(m, prompt, (size_t)np, &o, on_tok, &a));
        int same = 0;
        while (same < a.n && same < o.max_tokens && a.ids[same] == cJSON_GetArrayItem(greedy, same)->valueint) same++;
        CHECK_MSG(same == o.max_tokens && a.n == o.max_tokens,
                  "%s prompt %d max_kv_size %d kv_bits %d step %d: %d of %d greedy tokens match mlx-lm", name, np,
                  o.max_kv_size, o.kv_bits, o.prefill_step_size, same, o.max_tokens);
        lmx_model_free(m);
    }
    cJSON_Delete(arr);
}

/* Cache files written by mlx-lm (KVCache with its padded 256-row buffer,
 * RotatingKVCache's raw ring, QuantizedKVCache) load in lmx and continue with
 * mlx-lm's own greedy tokens (tests/data/kv_cache/mlx_files.json). */
static void test_mlx_cache_files(void) {
    char path[1024];
    snprintf(path, sizeof path, "%s/kv_cache/mlx_files.json", LMX_TEST_DATA);
    char js[8192];
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    if (!f) return;
    size_t n = fread(js, 1, sizeof js - 1, f);
    fclose(f);
    js[n] = 0;
    cJSON *arr = cJSON_Parse(js);
    lmx_model *m = load(hf("qwen3"));
    const cJSON *c;
    cJSON_ArrayForEach(c, arr) {
        if (!m) break;
        int bits = cJSON_GetObjectItem(c, "kv_bits")->valueint;
        snprintf(path, sizeof path, "%s/kv_cache/%s", LMX_TEST_DATA, cJSON_GetObjectItem(c, "file")->valuestring);
        lmx_cache *cache = NULL;
        lmx_status st = lmx_cache_load(m, path, &cache);
        if (bits && !host_device()) {
            CHECK(st == LMX_ERR_UNSUPPORTED);
            continue;
        }
        CHECK_OK(st);
        if (!cache) continue;
        CHECK_EQ_INT(lmx_cache_length(cache), cJSON_GetArraySize(cJSON_GetObjectItem(c, "cached")));
        CHECK_STR(lmx_cache_metadata(cache, "model"), "qwen3-fixture");
        lmx_cache_options co;
        lmx_cache_get_options(cache, &co);
        CHECK_EQ_INT(co.max_kv_size, cJSON_GetObjectItem(c, "max_kv_size")->valueint);
        CHECK_EQ_INT(co.kv_bits, bits);
        int32_t prompt[16];
        int np = 0;
        const cJSON *t;
        cJSON_ArrayForEach(t, cJSON_GetObjectItem(c, "prompt")) prompt[np++] = t->valueint;
        const cJSON *greedy = cJSON_GetObjectItem(c, "greedy");
        lmx_generate_options o;
        lmx_generate_options_init(&o);
        o.max_tokens = cJSON_GetArraySize(greedy);
        o.ignore_eos = true;
        o.cache = cache;
        ids_acc a = {.n = 0};
        CHECK_OK(lmx_generate_stream(m, prompt, (size_t)np, &o, on_tok, &a));
        int same = 0;
        while (same < a.n && same < o.max_tokens && a.ids[same] == cJSON_GetArrayItem(greedy, same)->valueint) same++;
        CHECK_MSG(same == o.max_tokens, "%s: %d of %d greedy tokens match mlx-lm", path, same, o.max_tokens);
        lmx_cache_free(cache);
    }
    lmx_model_free(m);
    cJSON_Delete(arr);
}

/* A rotating cache far beyond its window keeps generating in bounded
 * memory, and below the window it equals the full cache. */
static void test_rotating_bounded(void) {
    lmx_model *m = load(model_path);
    if (!m) return;
    lmx_generate_options o;
    lmx_generate_options_init(&o);
    o.max_tokens = 60;
    o.ignore_eos = true;
    ids_acc full = {.n = 0}, rot = {.n = 0};
    CHECK_OK(lmx_generate_stream(m, TOKS, 5, &o, on_tok, &full));
    lmx_cache_options co;
    lmx_cache_options_init(&co);
    co.max_kv_size = 70; /* 5 + 60 tokens fit: identical */
    lmx_cache *c;
    CHECK_OK(lmx_cache_new(m, &co, &c));
    o.cache = c;
    CHECK_OK(lmx_generate_stream(m, TOKS, 5, &o, on_tok, &rot));
    CHECK_EQ_INT(rot.n, full.n);
    CHECK(memcmp(rot.ids, full.ids, sizeof(int32_t) * (size_t)full.n) == 0);
    lmx_cache_free(c);
    co.max_kv_size = 32;
    CHECK_OK(lmx_cache_new(m, &co, &c));
    o.cache = c;
    o.max_tokens = 400;
    rot.n = 0;
    CHECK_OK(lmx_generate_stream(m, TOKS, NT, &o, on_tok, &rot));
    CHECK_EQ_INT(rot.n, 400);
    CHECK_EQ_INT(lmx_cache_length(c), NT + 399);
    /* bounded: the ring never holds more than max_kv_size rows (+ one prefill chunk) */
    CHECK_MSG(c->kv.rows <= 32 && c->kv.capacity <= 32 + NT, "rows %lld capacity %lld", (long long)c->kv.rows,
              (long long)c->kv.capacity);
    CHECK(!lmx_cache_trimmable(c));
    CHECK_EQ_INT(lmx_cache_trim(c, 3), 0);
    lmx_cache_free(c);
    /* bad settings */
    co.max_kv_size = 3;
    CHECK(lmx_cache_new(m, &co, &c) == LMX_ERR_INVALID_ARG);
    co.max_kv_size = 0;
    co.kv_bits = 7;
    CHECK(lmx_cache_new(m, &co, &c) != LMX_OK);
    co.kv_bits = 4;
    co.kv_group_size = 64; /* stories260K: head_dim 8 */
    CHECK(lmx_cache_new(m, &co, &c) != LMX_OK);
    lmx_model_free(m);
}

/* Quantized KV on qwen3 (head_dim 32): logits vs the float cache. Bounds
 * measured: 8-bit 1e-2, 4-bit 1.5e-1 of max|logit| (stated, asserted). */
static void test_quantized_logits(void) {
    if (!host_device()) {
        printf("  skipped: quantized KV is host-only (LMX_DEVICE=%s)\n", getenv("LMX_DEVICE"));
        return;
    }
    lmx_model *m = load(hf("qwen3"));
    if (!m) return;
    int V = lmx_model_vocab_size(m);
    int32_t t[40];
    for (int i = 0; i < 40; i++) t[i] = (i * 37 + 11) % 250 + 3;
    float *ref = malloc(V * sizeof *ref), *got = malloc(V * sizeof *got);
    ref_logits(m, t, 40, ref);
    int bits[2] = {8, 4};
    double bound[2] = {1e-2, 1.5e-1};
    for (int b = 0; b < 2; b++) {
        lmx_cache_options co;
        lmx_cache_options_init(&co);
        co.kv_bits = bits[b];
        co.kv_group_size = 32;
        co.quantized_kv_start = 8;
        lmx_cache *c = NULL;
        CHECK_OK(lmx_cache_new(m, &co, &c));
        if (!c) continue;
        CHECK_OK(lmx_cache_prefill(m, c, t, 20, NULL));
        char path[1100];
        snprintf(path, sizeof path, "%s/q%d.safetensors", tmpdir, bits[b]);
        CHECK_OK(lmx_cache_save(c, path, NULL));
        lmx_cache *l = NULL;
        CHECK_OK(lmx_cache_load(m, path, &l));
        CHECK_OK(lmx_cache_prefill_logits(m, c, t + 20, 20, got));
        double d = maxdiff(got, ref, V), mx = maxabs(ref, V);
        printf("  kv_bits %d: max|dlogit| %.3g of %.3g (%.2e relative)\n", bits[b], d, mx, d / mx);
        CHECK_MSG(d <= bound[b] * mx, "kv_bits %d: %g > %g", bits[b], d, bound[b] * mx);
        if (l) { /* the loaded copy continues exactly as the original */
            float *got2 = malloc(V * sizeof *got2);
            lmx_cache_options lo;
            lmx_cache_get_options(l, &lo);
            CHECK_EQ_INT(lo.kv_bits, bits[b]);
            CHECK_EQ_INT(lo.kv_group_size, 32);
            CHECK_OK(lmx_cache_prefill_logits(m, l, t + 20, 20, got2));
            CHECK(maxdiff(got2, got, V) == 0);
            free(got2);
            lmx_cache_free(l);
        }
        lmx_cache_free(c);
    }
    free(ref);
    free(got);
    lmx_model_free(m);
}

/* Stop strings and top logprobs through the API. */
typedef struct {
    char text[4096];
    size_t len;
    lmx_finish_reason fin;
    int n_top;
    bool top_ok;
} text_acc;

static int on_text(const lmx_response *r, void *u) {
    text_acc *a = u;
    if (a->len + r->text_len < sizeof a->text) {
        memcpy(a->text + a->len, r->text, r->text_len);
        a->len += r->text_len;
        a->text[a->len] = 0;
    }
    a->fin = r->finish_reason;
    if (r->finish_reason == LMX_FINISH_NONE) {
        a->n_top = r->n_top;
        if (r->n_top > 0 && (r->top_ids[0] != r->token || r->top_logprobs[0] != r->logprob)) a->top_ok = false;
        for (int i = 1; i < r->n_top; i++)
            if (r->top_logprobs[i] > r->top_logprobs[i - 1]) a->top_ok = false;
    }
    return 0;
}

static void test_stop_strings(void) {
    lmx_model *m = load(model_path);
    if (!m) return;
    const lmx_tokenizer *tok = lmx_model_tokenizer(m);
    int32_t *ids;
    size_t n;
    CHECK_OK(lmx_tokenize(tok, "Once upon a time", 16, true, &ids, &n));
    lmx_generate_options o;
    lmx_generate_options_init(&o);
    o.max_tokens = 40;
    o.top_logprobs = 5;
    text_acc full = {.top_ok = true};
    CHECK_OK(lmx_generate_stream(m, ids, n, &o, on_text, &full));
    CHECK_EQ_INT(full.n_top, 5);
    CHECK(full.top_ok);
    const char *stops[] = {"zzz", "little girl"};
    o.stop_strings = stops;
    o.n_stop_strings = 2;
    text_acc st = {.top_ok = true};
    CHECK_OK(lmx_generate_stream(m, ids, n, &o, on_text, &st));
    const char *at = strstr(full.text, "little girl");
    CHECK(at != NULL);
    if (at) {
        CHECK_EQ_INT(st.len, (size_t)(at - full.text));
        CHECK(strncmp(st.text, full.text, st.len) == 0);
    }
    CHECK_EQ_INT(st.fin, LMX_FINISH_STOP);
    lmx_free(ids);
    lmx_model_free(m);
}

void run_tests(void) {
    snprintf(model_path, sizeof model_path, "%s/models/stories260K.gguf", LMX_SOURCE_DIR);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lmx_kv_test_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        t_skip("all", "no temp dir");
        return;
    }
    TEST(test_continue_and_trim);
    TEST(test_save_load);
    TEST(test_mlx_greedy);
    TEST(test_mlx_cache_files);
    TEST(test_rotating_bounded);
    TEST(test_quantized_logits);
    TEST(test_stop_strings);
    char buf[256];
    t_sh(buf, sizeof buf, "rm -rf '%s'", tmpdir);
}
