/*
 * test_batch.c - lmx_batch_generate (issue 7): at temperature 0 every
 * sequence's tokens equal lmx_generate_stream's on the same prompt, for
 * batch sizes 1, 3 and 8, prompts of different lengths (different positions
 * in one batched step), sequences leaving at EOS and new ones joining;
 * across architectures (stories260K GGUF, llama, qwen3_moe, phi3 longrope,
 * gemma2 sliding window + soft-capping). Bad arguments are refused.
 */
#include "testing.h"

#include "lmx.h"

#include <stdlib.h>

#define NP 10
#define MAXT 64

typedef struct {
    int32_t ids[NP][MAXT + 1];
    int n[NP];
    int finals[NP];
} batch_acc;

static int on_batch(size_t i, const lmx_response *r, void *u) {
    batch_acc *a = u;
    if (i >= NP) return 1;
    if (r->finish_reason != LMX_FINISH_STOP && a->n[i] <= MAXT) a->ids[i][a->n[i]++] = r->token;
    if (r->finish_reason != LMX_FINISH_NONE) a->finals[i]++;
    return 0;
}

typedef struct {
    int32_t ids[MAXT + 1];
    int n;
} one_acc;

static int on_one(const lmx_response *r, void *u) {
    one_acc *a = u;
    if (r->finish_reason != LMX_FINISH_STOP && a->n <= MAXT) a->ids[a->n++] = r->token;
    return 0;
}

static void check_model(const char *path, int vocab_hi, bool ignore_eos, int max_tokens) {
    lmx_load_options lo;
    lmx_load_options_init(&lo);
    lo.n_threads = 1;
    lmx_model *m = NULL;
    CHECK_OK(lmx_load(path, &lo, &m));
    if (!m) return;
    int32_t buf[NP][40];
    const int32_t *prompts[NP];
    size_t lens[NP];
    for (int i = 0; i < NP; i++) {
        lens[i] = 1 + (size_t)(i * 7) % 23;
        buf[i][0] = 1;
        for (size_t j = 1; j < lens[i]; j++) buf[i][j] = (int32_t)((i * 131 + j * 17) % (vocab_hi - 3) + 3);
        prompts[i] = buf[i];
    }
    lmx_generate_options o;
    lmx_generate_options_init(&o);
    o.max_tokens = max_tokens;
    o.ignore_eos = ignore_eos;
    int32_t stop[1];
    const lmx_tokenizer *tok = lmx_model_tokenizer(m);
    if (!ignore_eos && tok && (stop[0] = lmx_tokenizer_token_id(tok, ".")) >= 0) {
        o.extra_eos = stop; /* sentences end early: sequences leave, waiting ones join */
        o.n_extra_eos = 1;
    }
    one_acc ref[NP];
    int early = 0;
    for (int i = 0; i < NP; i++) {
        ref[i].n = 0;
        CHECK_OK(lmx_generate_stream(m, prompts[i], lens[i], &o, on_one, &ref[i]));
        early += ref[i].n < max_tokens;
    }
    int sizes[3] = {1, 3, 8};
    for (int k = 0; k < 3; k++) {
        batch_acc *a = calloc(1, sizeof *a);
        CHECK_OK(lmx_batch_generate(m, prompts, lens, NP, &o, sizes[k], on_batch, a));
        for (int i = 0; i < NP; i++) {
            int same = 0;
            while (same < a->n[i] && same < ref[i].n && a->ids[i][same] == ref[i].ids[same]) same++;
            CHECK_MSG(same == ref[i].n && a->n[i] == ref[i].n, "%s batch %d prompt %d (%zu tokens): %d of %d equal",
                      path, sizes[k], i, lens[i], same, ref[i].n);
            CHECK_EQ_INT(a->finals[i], 1);
        }
        free(a);
    }
    if (!ignore_eos) printf("  %s: %d of %d sequences stopped early at EOS\n", path, early, NP);
    lmx_model_free(m);
}

static void test_stories(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/models/stories260K.gguf", LMX_SOURCE_DIR);
    check_model(path, 512, false, MAXT);
}

static void test_hf_fixtures(void) {
    const char *names[] = {"llama", "qwen3_moe", "phi3_longrope", "gemma2"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/hf/%s", LMX_TEST_DATA, names[i]);
        check_model(path, 256, true, 24);
    }
}

static int count_cb(size_t i, const lmx_response *r, void *u) {
    (void)i;
    (void)r;
    ++*(int *)u;
    return 0;
}

static void test_bad_args(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/models/stories260K.gguf", LMX_SOURCE_DIR);
    lmx_model *m = NULL;
    CHECK_OK(lmx_load(path, NULL, &m));
    if (!m) return;
    int32_t p[2] = {1, 403}, bad[2] = {1, 99999};
    const int32_t *ps[2] = {p, bad};
    size_t ns[2] = {2, 2};
    int count = 0;
    CHECK(lmx_batch_generate(m, ps, ns, 1, NULL, 0, count_cb, &count) == LMX_ERR_INVALID_ARG);
    CHECK(lmx_batch_generate(m, ps, ns, 2, NULL, 4, count_cb, &count) == LMX_ERR_INVALID_ARG);
    CHECK(strstr(lmx_last_error(), "prompt 1") != NULL);
    size_t zero[1] = {0};
    CHECK(lmx_batch_generate(m, ps, zero, 1, NULL, 4, count_cb, &count) == LMX_ERR_INVALID_ARG);
    lmx_model_free(m);
}

void run_tests(void) {
    TEST(test_stories);
    TEST(test_hf_fixtures);
    TEST(test_bad_args);
}
