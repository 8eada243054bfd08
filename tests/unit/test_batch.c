/*
 * test_batch.c - batch generation (issue 7).
 *
 * 1. lmx_batch_generate: at temperature 0 every sequence's tokens equal
 *    lmx_generate_stream's on the same prompt, for batch sizes 1, 3 and 8,
 *    prompts of different lengths, sequences leaving at EOS and new ones
 *    joining; across architectures (stories260K GGUF, llama, qwen3_moe, phi3
 *    longrope, gemma2 sliding window + soft-capping); with a small
 *    prefill_step_size (prompt chunks share a per-step token budget and run
 *    in the same pass as decode rows) and with rotating / quantized caches
 *    (a sequence's prompt must be cut as lmx_generate_stream cuts it).
 * 2. lmx_transformer_forward_varlen: the logits of several sequences of
 *    uneven lengths run in one pass equal each sequence's own
 *    lmx_transformer_forward, every row and last rows only, over three steps
 *    (the later ones continue caches that already hold tokens, mix one-row
 *    and multi-row spans and reorder the caches); fixtures with sliding
 *    windows (mistral, gemma2, gemma3_text), MoE (qwen3_moe, mixtral),
 *    length-dependent RoPE (phi3 longrope, llama dynamic NTK), phi's
 *    parallel block and layer norm, starcoder2.
 * Bad arguments are refused.
 */
#include "testing.h"

#include "lmx.h"

#include "generate/engine.h" /* the model's forward pass and scratch */

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

/* Cache and chunking options of a check_model run (0 = default). */
typedef struct {
    int prefill_step, max_kv, kv_bits;
} gen_cfg;

static void check_model(const char *path, int vocab_hi, bool ignore_eos, int max_tokens, gen_cfg g) {
    lmx_load_options lo;
    lmx_load_options_init(&lo);
    lo.n_threads = 1;
    lmx_model *m = NULL;
    CHECK_OK(lmx_load(path, &lo, &m));
    if (!m) return;
    if (g.kv_bits && !lmx_backend_is_host(m->backend)) {
        printf("  skipped kv_bits %d: quantized KV caches are host-only\n", g.kv_bits);
        lmx_model_free(m);
        return;
    }
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
    if (g.prefill_step) o.prefill_step_size = g.prefill_step;
    o.max_kv_size = g.max_kv;
    if (g.kv_bits) {
        o.kv_bits = g.kv_bits;
        o.kv_group_size = 32;     /* head_dim 32 */
        o.quantized_kv_start = 8; /* converts in the middle of most prompts */
    }
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
            CHECK_MSG(same == ref[i].n && a->n[i] == ref[i].n,
                      "%s (step %d, max_kv %d, kv_bits %d) batch %d prompt %d (%zu tokens): %d of %d equal", path,
                      g.prefill_step, g.max_kv, g.kv_bits, sizes[k], i, lens[i], same, ref[i].n);
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
    gen_cfg def = {0, 0, 0};
    check_model(path, 512, false, MAXT, def);
}

static void test_hf_fixtures(void) {
    const char *names[] = {"llama", "qwen3_moe", "phi3_longrope", "gemma2"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/hf/%s", LMX_TEST_DATA, names[i]);
        gen_cfg def = {0, 0, 0};
        check_model(path, 256, true, 24, def);
    }
}

/* Prompts of up to 23 tokens in chunks of 5 with a budget of 5 tokens per
 * pass: prompts wait for their turn, chunks and decode rows share passes.
 * Rotating (12 rows, smaller than most prompts) and 8-bit caches (groups of
 * 32, quantized from offset 8) only match lmx_generate_stream when each sequence's steps
 * are cut the same way. */
static void test_chunked_prefill(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/models/stories260K.gguf", LMX_SOURCE_DIR);
    gen_cfg chunked = {5, 0, 0}, rotating = {5, 12, 0}, quantized = {5, 0, 8};
    check_model(path, 512, false, MAXT, chunked);
    check_model(path, 512, false, 24, rotating);
    const char *names[] = {"qwen3_moe", "gemma2"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(path, sizeof path, "%s/hf/%s", LMX_TEST_DATA, names[i]);
        check_model(path, 256, true, 16, chunked);
    }
    check_model(path, 256, true, 16, quantized); /* gemma2: head_dim 32 */
}

#define NS 4     /* sequences in one varlen pass */
#define NSTEP 3

/* |got - ref| / max|ref| of one logits row. */
static double row_err(const float *got, const float *ref, int64_t V) {
    double mx = 0, d = 0;
    for (int64_t v = 0; v < V; v++) {
        if (fabs(ref[v]) > mx) mx = fabs(ref[v]);
        if (fabs((double)got[v] - ref[v]) > d) d = fabs((double)got[v] - ref[v]);
    }
    return mx > 0 ? d / mx : d;
}

static int32_t seq_token(int b, int64_t pos, int64_t V) { return (int32_t)((b * 131 + pos * 17 + 5) % (V - 3) + 3); }

/* Three varlen passes over NS sequences against each sequence's own
 * forward passes (same chunks); logits compared on every row (all_logits)
 * and on each span's last row (a separate set of caches). Tolerance
 * 1e-5·max|ref| per row: the attention of a span is the same op on the same
 * inputs, but a projection over ΣT rows may group rows differently in the
 * SIMD matmul kernels than one over T rows, which can change the summation
 * order of a dot product (f32 rounding, ~1e-7 relative; observed values are
 * printed). A wrong position, window, RoPE table or cache row gives errors
 * of order 1. */
static void check_varlen(const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/hf/%s", LMX_TEST_DATA, name);
    lmx_model *m = NULL;
    CHECK_OK(lmx_load(path, NULL, &m));
    if (!m) return;
    const lmx_hparams *hp = &m->tf.hp;
    int64_t V = hp->n_vocab;
    static const int64_t lens[NSTEP][NS] = {{1, 7, 23, 40}, {5, 1, 9, 3}, {1, 1, 30, 1}};
    static const int order[NSTEP][NS] = {{0, 1, 2, 3}, {0, 1, 2, 3}, {2, 0, 3, 1}}; /* span i = sequence order[i] */
    lmx_kv_cache ref[NS], all[NS], last[NS];
    int64_t pos[NS] = {0};
    for (int b = 0; b < NS; b++) {
        CHECK_OK(lmx_kv_cache_init(&ref[b], m->backend, hp->n_layer, hp->n_kv_head, hp->head_dim, NULL));
        CHECK_OK(lmx_kv_cache_init(&all[b], m->backend, hp->n_layer, hp->n_kv_head, hp->head_dim, NULL));
        CHECK_OK(lmx_kv_cache_init(&last[b], m->backend, hp->n_layer, hp->n_kv_head, hp->head_dim, NULL));
    }
    int64_t max_rows = 80;
    int32_t *toks = malloc((size_t)max_rows * sizeof *toks);
    float *want = malloc((size_t)(max_rows * V) * sizeof *want), *got = malloc((size_t)(max_rows * V) * sizeof *got);
    float *got_last = malloc((size_t)(NS * V) * sizeof *got_last);
    double worst_all = 0, worst_last = 0;
    for (int st = 0; st < NSTEP && toks && want && got && got_last; st++) {
        lmx_kv_cache *ca[NS], *cl[NS];
        int64_t sl[NS], T = 0;
        for (int i = 0; i < NS; i++) {
            int b = order[st][i];
            sl[i] = lens[st][b];
            ca[i] = &all[b];
            cl[i] = &last[b];
            for (int64_t t = 0; t < sl[i]; t++) toks[T + t] = seq_token(b, pos[b] + t, V);
            CHECK_OK(lmx_transformer_forward(&m->ex, &m->tf, &ref[b], &m->scratch, toks + T, sl[i], true, want + T * V));
            T += sl[i];
        }
        CHECK_OK(lmx_transformer_forward_varlen(&m->ex, &m->tf, ca, NS, sl, &m->scratch, toks, true, got));
        CHECK_OK(lmx_transformer_forward_varlen(&m->ex, &m->tf, cl, NS, sl, &m->scratch, toks, false, got_last));
        int64_t row = 0;
        for (int i = 0; i < NS; i++) {
            int b = order[st][i];
            for (int64_t t = 0; t < sl[i]; t++) {
                double e = row_err(got + (row + t) * V, want + (row + t) * V, V);
                if (e > worst_all) worst_all = e;
                CHECK_MSG(e <= 1e-5, "%s step %d sequence %d row %lld: rel err %.3g", name, st, b, (long long)t, e);
            }
            row += sl[i];
            double e = row_err(got_last + i * V, want + (row - 1) * V, V);
            if (e > worst_last) worst_last = e;
            CHECK_MSG(e <= 1e-5, "%s step %d sequence %d last row: rel err %.3g", name, st, b, e);
            pos[b] += sl[i];
            CHECK_EQ_INT(all[b].offset, pos[b]);
            CHECK_EQ_INT(last[b].offset, pos[b]);
        }
    }
    printf("  %s: varlen vs per-sequence logits, worst rel err %.3g (all rows), %.3g (last rows)\n", name, worst_all,
           worst_last);
    CHECK(toks && want && got && got_last);
    free(toks);
    free(want);
    free(got);
    free(got_last);
    for (int b = 0; b < NS; b++) {
        lmx_kv_cache_free(&ref[b]);
        lmx_kv_cache_free(&all[b]);
        lmx_kv_cache_free(&last[b]);
    }
    lmx_model_free(m);
}

static void test_varlen_logits(void) {
    const char *names[] = {"llama",     "mistral", "gemma2",        "gemma3_text",        "qwen3_moe",
                           "mixtral",   "phi3_longrope", "llama_rope_dynamic", "phi", "starcoder2"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) check_varlen(names[i]);
}

static void test_varlen_bad_args(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/hf/llama", LMX_TEST_DATA);
    lmx_model *m = NULL;
    CHECK_OK(lmx_load(path, NULL, &m));
    if (!m) return;
    const lmx_hparams *hp = &m->tf.hp;
    lmx_kv_cache c[2];
    CHECK_OK(lmx_kv_cache_init(&c[0], m->backend, hp->n_layer, hp->n_kv_head, hp->head_dim, NULL));
    CHECK_OK(lmx_kv_cache_init(&c[1], m->backend, hp->n_layer, hp->n_kv_head, hp->head_dim, NULL));
    float *logits = malloc((size_t)(2 * hp->n_vocab) * sizeof *logits);
    int32_t toks[4] = {5, 6, 7, 8};
    int64_t lens[2] = {2, 2}, zero[2] = {2, 0};
    lmx_kv_cache *same[2] = {&c[0], &c[0]}, *two[2] = {&c[0], &c[1]};
    CHECK(lmx_transformer_forward_varlen(&m->ex, &m->tf, same, 2, lens, &m->scratch, toks, false, logits) ==
          LMX_ERR_INVALID_ARG);
    CHECK(strstr(lmx_last_error(), "share a cache") != NULL);
    CHECK(lmx_transformer_forward_varlen(&m->ex, &m->tf, two, 2, zero, &m->scratch, toks, false, logits) ==
          LMX_ERR_INVALID_ARG);
    CHECK(lmx_transformer_forward_varlen(&m->ex, &m->tf, two, 0, lens, &m->scratch, toks, false, logits) ==
          LMX_ERR_INVALID_ARG);
    CHECK_EQ_INT(c[0].offset, 0); /* refused before anything ran */
    CHECK_OK(lmx_transformer_forward_varlen(&m->ex, &m->tf, two, 2, lens, &m->scratch, toks, false, logits));
    CHECK_EQ_INT(c[0].offset, 2);
    CHECK_EQ_INT(c[1].offset, 2);
    free(logits);
    lmx_kv_cache_free(&c[0]);
    lmx_kv_cache_free(&c[1]);
    lmx_model_free(m);
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
    TEST(test_chunked_prefill);
    TEST(test_varlen_logits);
    TEST(test_varlen_bad_args);
    TEST(test_bad_args);
}
