/*
 * test_speculative.c - speculative decoding (issue 7): greedy output with a
 * draft model equals plain greedy output, token for token, for every draft
 * length; the acceptance counts are reported. Drafts are the target cut to
 * its first layers (a smaller model of the same family and vocabulary;
 * untrained for early exit, so acceptance is low but correctness is what counts),
 * written to a temp folder: stories260K (HF copy, 5 -> 2 layers) drafting
 * for the GGUF stories260K, and the llama / phi3 / qwen3_moe HF fixtures (2 -> 1).
 */
#include "testing.h"

#include "lmx.h"

#include "io/safetensors.h"

#include <stdlib.h>

static char tmpdir[256];

/* dst = src with only layers [0, keep) (config and tensors). */
static bool make_truncated(const char *src, const char *dst, int keep) {
    char p[1200], q[1200], buf[256];
    snprintf(p, sizeof p, "%s/config.json", src);
    char *cfg;
    size_t n;
    if (lmx_read_file(p, &cfg, &n)) return false;
    char *at = strstr(cfg, "\"num_hidden_layers\":");
    if (!at) return false;
    char *num = at + strlen("\"num_hidden_layers\":");
    while (*num == ' ') num++;
    char *end = num;
    while (*end >= '0' && *end <= '9') end++;
    t_sh(buf, sizeof buf, "mkdir -p '%s'", dst);
    snprintf(q, sizeof q, "%s/config.json", dst);
    FILE *f = fopen(q, "wb");
    if (!f) return false;
    fwrite(cfg, 1, (size_t)(num - cfg), f);
    fprintf(f, "%d", keep);
    fputs(end, f);
    fclose(f);
    free(cfg);
    snprintf(p, sizeof p, "%s/model.safetensors", src);
    lmx_st_file *st;
    if (lmx_st_open(p, &st)) return false;
    size_t nt = lmx_st_n_tensors(st), k = 0;
    lmx_st_write_tensor *w = calloc(nt, sizeof *w);
    for (size_t i = 0; i < nt; i++) {
        const lmx_st_tensor *t = lmx_st_tensor_at(st, i);
        int layer = -1;
        if (sscanf(t->name, "model.layers.%d.", &layer) == 1 && layer >= keep) continue;
        w[k++] = (lmx_st_write_tensor){t->name, t->dtype, t->n_dims, t->shape, t->data, t->size};
    }
    snprintf(q, sizeof q, "%s/model.safetensors", dst);
    bool ok = lmx_st_write(q, w, k, NULL) == LMX_OK;
    free(w);
    lmx_st_close(st);
    return ok;
}

typedef struct {
    int32_t ids[256];
    int n, from_draft, accepted, proposed;
} acc;

static int on_tok(const lmx_response *r, void *u) {
    acc *a = u;
    if (r->finish_reason != LMX_FINISH_STOP && a->n < 256) a->ids[a->n++] = r->token;
    a->from_draft += r->from_draft;
    a->accepted = r->draft_accepted;
    a->proposed = r->draft_proposed;
    return 0;
}

static lmx_model *load(const char *path) {
    lmx_load_options o;
    lmx_load_options_init(&o);
    o.n_threads = 1;
    lmx_model *m = NULL;
    CHECK_OK(lmx_load(path, &o, &m));
    return m;
}

static void check_case(const char *target, const char *draft_src, int keep, const int32_t *prompt, size_t np,
                       int max_tokens) {
    char dpath[512];
    snprintf(dpath, sizeof dpath, "%s/draft_%d_%zu", tmpdir, keep, strlen(draft_src));
    CHECK(make_truncated(draft_src, dpath, keep));
    lmx_model *m = load(target), *d = load(dpath);
    if (!m || !d) {
        lmx_model_free(m);
        lmx_model_free(d);
        return;
    }
    lmx_generate_options o;
    lmx_generate_options_init(&o);
    o.max_tokens = max_tokens;
    o.ignore_eos = true;
    acc plain = {.n = 0};
    CHECK_OK(lmx_generate_stream(m, prompt, np, &o, on_tok, &plain));
    CHECK_EQ_INT(plain.n, max_tokens);
    for (int k = 1; k <= 5; k += 2) {
        acc spec = {.n = 0};
        o.draft_model = d;
        o.num_draft_tokens = k;
        CHECK_OK(lmx_generate_stream(m, prompt, np, &o, on_tok, &spec));
        int same = 0;
        while (same < spec.n && same < plain.n && spec.ids[same] == plain.ids[same]) same++;
        CHECK_MSG(same == plain.n && spec.n == plain.n, "%s, %d-layer draft, k=%d: %d of %d tokens equal", target,
                  keep, k, same, plain.n);
        CHECK_EQ_INT(spec.from_draft, spec.accepted);
        printf("  %s: draft %d layers, k=%d: accepted %d of %d drafted (%.0f%%)\n", strrchr(target, '/') + 1, keep, k,
               spec.accepted, spec.proposed, spec.proposed ? 100.0 * spec.accepted / spec.proposed : 0.0);
    }
    /* the model itself as its draft accepts everything */
    acc self = {.n = 0};
    o.draft_model = m;
    o.num_draft_tokens = 3;
    CHECK_OK(lmx_generate_stream(m, prompt, np, &o, on_tok, &self));
    CHECK(memcmp(self.ids, plain.ids, sizeof(int32_t) * (size_t)plain.n) == 0);
    CHECK_EQ_INT(self.accepted, self.proposed);
    /* a rotating cache cannot be rewound */
    o.max_kv_size = 64;
    CHECK(lmx_generate_stream(m, prompt, np, &o, on_tok, &self) == LMX_ERR_UNSUPPORTED);
    lmx_model_free(d);
    lmx_model_free(m);
}

static void test_stories(void) {
    char target[512], src[512];
    snprintf(target, sizeof target, "%s/models/stories260K.gguf", LMX_SOURCE_DIR);
    snprintf(src, sizeof src, "%s/stories260K/hf", LMX_TEST_DATA);
    int32_t prompt[5] = {1, 403, 407, 261, 378}; /* "Once upon a time" */
    check_case(target, src, 2, prompt, 5, 120);
}

static void test_hf_fixtures(void) {
    const char *names[] = {"llama", "phi3", "qwen3_moe"}; /* configs without layer_types */
    int32_t prompt[12] = {5, 17, 99, 3, 200, 42, 7, 128, 64, 250, 11, 33};
    for (int i = 0; i < 3; i++) {
        char target[512];
        snprintf(target, sizeof target, "%s/hf/%s", LMX_TEST_DATA, names[i]);
        check_case(target, target, 1, prompt, 12, 40);
    }
}

void run_tests(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lmx_spec_test_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        t_skip("all", "no temp dir");
        return;
    }
    TEST(test_stories);
    TEST(test_hf_fixtures);
    char buf[256];
    t_sh(buf, sizeof buf, "rm -rf '%s'", tmpdir);
}
