/*
 * test_models_hf.c - every architecture against Hugging Face transformers.
 *
 * Fixtures (tests/fixtures/make_hf_fixtures.py) are tiny random-weight models
 * with reference logits for 40 tokens and a 16-token greedy continuation.
 * Tolerance: max|Δlogit| ≤ 1e-4 · max|ref| for f32 weights. bf16 cases are
 * referenced against the same bf16 weights upcast to f32, so the same bound
 * applies (only storage is bf16; lmx computes in f32 as the reference did).
 * Greedy continuations must be identical.
 */
#include "testing.h"

#include "io/safetensors.h"
#include "lmx.h"

#include <dirent.h>
#include <math.h>
#include <stdlib.h>

#define REL_TOL 1e-4

typedef struct {
    int32_t out[64];
    int n;
} greedy_acc;

static int on_tok(const lmx_response *r, void *u) {
    greedy_acc *g = u;
    if (g->n < 64) g->out[g->n++] = r->token;
    return 0;
}

static void check_case(const char *dir, const char *name) {
    char gpath[1024];
    snprintf(gpath, sizeof gpath, "%s/golden.safetensors", dir);
    lmx_st_file *gf;
    CHECK_OK(lmx_st_open(gpath, &gf));
    if (t_failed_checks) return;
    const lmx_st_tensor *tt = lmx_st_find(gf, "tokens"), *lt = lmx_st_find(gf, "logits"),
                        *gt = lmx_st_find(gf, "greedy");
    CHECK(tt && lt && gt);
    if (!tt || !lt || !gt) {
        lmx_st_close(gf);
        return;
    }
    int64_t T = tt->shape[0], V = lt->shape[1];
    int32_t *tokens = malloc((size_t)T * sizeof *tokens);
    memcpy(tokens, tt->data, (size_t)T * sizeof *tokens);
    lmx_load_options lo;
    lmx_load_options_init(&lo);
    lo.no_tokenizer = true;
    lmx_model *m;
    lmx_status s = lmx_load(dir, &lo, &m);
    CHECK_OK(s);
    if (s) {
        free(tokens);
        lmx_st_close(gf);
        return;
    }
    CHECK_EQ_INT(lmx_model_vocab_size(m), V);
    float *lg = malloc((size_t)(T * V) * sizeof *lg);
    CHECK_OK(lmx_logits(m, tokens, (size_t)T, lg));
    const float *ref = (const float *)lt->data;
    double maxref = 0, maxd = 0;
    int64_t worst = 0;
    for (int64_t i = 0; i < T * V; i++) {
        float r;
        memcpy(&r, &ref[i], 4);
        if (fabs(r) > maxref) maxref = fabs(r);
        double d = fabs((double)lg[i] - r);
        if (d > maxd) {
            maxd = d;
            worst = i;
        }
    }
    printf("  %-20s max|d| = %.3g (%.3g of max|ref| %.3g), worst at pos %lld\n", name, maxd, maxd / maxref,
           maxref, (long long)(worst / V));
    CHECK_MSG(maxd <= REL_TOL * maxref, "%s: logits differ: max|d| %.3g > %.1g * %.3g", name, maxd, REL_TOL, maxref);

    /* Dynamic/longrope cases also carry a shorter prefix, where the RoPE
     * variant behaves differently (below original_max_position_embeddings). */
    const lmx_st_tensor *pt = lmx_st_find(gf, "prefix_tokens"), *pl = lmx_st_find(gf, "prefix_logits");
    if (pt && pl) {
        int64_t P = pt->shape[0];
        int32_t *ptok = malloc((size_t)P * sizeof *ptok);
        float *plg = malloc((size_t)(P * V) * sizeof *plg);
        memcpy(ptok, pt->data, (size_t)P * sizeof *ptok);
        CHECK_OK(lmx_logits(m, ptok, (size_t)P, plg));
        double pmax = 0, pd = 0;
        for (int64_t i = 0; i < P * V; i++) {
            float r;
            memcpy(&r, (const uint8_t *)pl->data + 4 * i, 4);
            pmax = fmax(pmax, fabs(r));
            pd = fmax(pd, fabs((double)plg[i] - r));
        }
        CHECK_MSG(pd <= REL_TOL * pmax, "%s: prefix logits differ: max|d| %.3g vs max|ref| %.3g", name, pd, pmax);
        free(ptok);
        free(plg);
    }

    lmx_generate_options o;
    lmx_generate_options_init(&o);
    o.max_tokens = (int)gt->shape[0];
    o.ignore_eos = true;
    greedy_acc g = {{0}, 0};
    CHECK_OK(lmx_generate_stream(m, tokens, (size_t)T, &o, on_tok, &g));
    const int32_t *want = (const int32_t *)gt->data;
    int n = (int)gt->shape[0];
    CHECK_EQ_INT(g.n, n);
    for (int i = 0; i < n && i < g.n; i++) {
        int32_t w;
        memcpy(&w, &want[i], 4);
        CHECK_MSG(g.out[i] == w, "%s: greedy token %d is %d, HF has %d", name, i, g.out[i], w);
        if (g.out[i] != w) break;
    }
    free(lg);
    free(tokens);
    lmx_model_free(m);
    lmx_st_close(gf);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static char *cases[128];
static int n_cases;
static const char *current;

static void one_case(void) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/hf/%s", LMX_TEST_DATA, current);
    check_case(dir, current);
}

void run_tests(void) {
    char root[1024];
    snprintf(root, sizeof root, "%s/hf", LMX_TEST_DATA);
    DIR *d = opendir(root);
    if (!d) {
        t_skip("hf_fixtures", "tests/data/hf is missing");
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) && n_cases < 128)
        if (e->d_name[0] != '.') cases[n_cases++] = strdup(e->d_name);
    closedir(d);
    qsort(cases, (size_t)n_cases, sizeof *cases, cmp_str);
    for (int i = 0; i < n_cases; i++) {
        current = cases[i];
        char label[160];
        snprintf(label, sizeof label, "hf_%s", cases[i]);
        t_run(label, one_case);
        free(cases[i]);
    }
}
