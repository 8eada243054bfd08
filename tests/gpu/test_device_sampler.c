/*
 * test_device_sampler.c - greedy and sampled decoding with the logits left on
 * the GPU (generate/sampler_device.c, backend/cuda/cuda_sample*.cu) against the host
 * pipeline, on a real model (default models/stories260K.gguf, on CUDA):
 *
 * 1. lmx_generate_stream, 256 greedy tokens after a 6-token prompt, once
 *    with LMX_DEVICE_SAMPLER=0 (host pipeline) and once with the device
 *    pick: token ids identical; logprobs within 1e-4 absolute (the device's
 *    log-sum-exp is an f32 tree sum, the host's a fixed sequence of f32
 *    lanes; observed differences are ~1e-6).
 * 2. Step by step with the logits left on the device: whenever
 *    lmx_device_greedy decides on the device, the host pipeline on the same
 *    downloaded row picks the same id; at least 90% of the steps must be
 *    decided on the device (a trained model rarely has near ties), or the
 *    fast path would silently be the slow one.
 *
 * 3. Sampled decoding on the device (cuda_sample_topp.cu) against the host
 *    sampler on the same rows with the same uniform draw: random logit rows
 *    of V = 512 and V = 128256 at three spreads, temperatures 0.6/1/1.3,
 *    top-p off/0.9/0.5, top-k off/40, min-p off/0.05. The device sums the
 *    host's terms in another order, so a draw within rounding of a boundary
 *    between two tokens may land on the neighbour: at most 2 of the 1,600
 *    rows may differ (a wrong filter or draw differs in most of them); the
 *    chosen token's logprob within 1e-4 (as 1.: the two log-sum-exps are f32
 *    sums in different orders; 1.5e-5 seen at V = 128256).
 * 4. lmx_generate_stream sampled (temp 0.8, top-p 0.9, seed 7), 256 tokens:
 *    the device twice gives the same tokens (a seed repeats its stream), and
 *    the host pipeline (LMX_DEVICE_SAMPLER=host) gives the same tokens too.
 * 5. The logits processors (bias, penalties) edit the device's row with the
 *    host's bits (lmx_cuda_logits_edit vs lmx_logit_op_apply), and generation
 *    with them, greedy and sampled, gives the host pipeline's tokens.
 *
 *   test_device_sampler [MODEL]
 * Exit 77 (skipped) when no CUDA device answers.
 */
#include "backend/cuda/cuda.h"
#include "generate/engine.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { STEPS = 256 };

typedef struct {
    int32_t ids[STEPS];
    float lp[STEPS];
    int n;
} run_acc;

static int on_tok(const lmx_response *r, void *u) {
    run_acc *a = u;
    if (a->n < STEPS) {
        a->ids[a->n] = r->token;
        a->lp[a->n++] = r->logprob;
    }
    return 0;
}

static int fails;
#define EXPECT(cond, ...)                      \
    do {                                       \
        if (!(cond)) {                         \
            printf("FAIL " __VA_ARGS__);       \
            printf("\n");                      \
            fails++;                           \
        }                                      \
    } while (0)

static const int32_t prompt[6] = {1, 403, 407, 261, 347, 430}; /* stories260K: 512 ids */

static void generate_both_ways(lmx_model *m) {
    lmx_generate_options o;
    lmx_generate_options_init(&o);
    o.max_tokens = STEPS;
    o.ignore_eos = true;
    run_acc host = {{0}, {0}, 0}, dev = {{0}, {0}, 0};
    setenv("LMX_DEVICE_SAMPLER", "0", 1);
    lmx_status s1 = lmx_generate_stream(m, prompt, 6, &o, on_tok, &host);
    unsetenv("LMX_DEVICE_SAMPLER");
    lmx_status s2 = lmx_generate_stream(m, prompt, 6, &o, on_tok, &dev);
    EXPECT(!s1 && !s2, "generate: %s", lmx_last_error());
    EXPECT(host.n == STEPS && dev.n == STEPS, "generate: %d and %d tokens", host.n, dev.n);
    int first_diff = -1;
    double worst = 0;
    for (int i = 0; i < host.n && i < dev.n; i++) {
        if (host.ids[i] != dev.ids[i] && first_diff < 0) first_diff = i;
        double d = fabs((double)host.lp[i] - dev.lp[i]);
        if (d > worst || isnan(d)) worst = d;
    }
    EXPECT(first_diff < 0, "generate: token %d differs (host %d, device %d)", first_diff,
           host.ids[first_diff < 0 ? 0 : first_diff], dev.ids[first_diff < 0 ? 0 : first_diff]);
    EXPECT(worst <= 1e-4, "generate: logprobs differ by %.3g", worst);
    printf("%s generate: %d greedy tokens identical, host vs device; logprob |d| <= %.2e (tol 1e-4)\n",
           first_diff < 0 && worst <= 1e-4 ? "ok  " : "FAIL", host.n, worst);
}

/* 3. */
static uint64_t trng = 0x2545F4914F6CDD1Dull;
static double tunif(void) {
    trng ^= trng << 13, trng ^= trng >> 7, trng ^= trng << 17;
    return (double)(trng >> 11) / 9007199254740992.0;
}

static void rows_vs_host(lmx_model *m) {
    static const float temps[3] = {0.6f, 1.0f, 1.3f}, top_ps[3] = {1.0f, 0.9f, 0.5f}, spreads[3] = {1.0f, 4.0f, 12.0f};
    int total = 0, differ = 0, errors = 0;
    double worst_lp = 0;
    for (int vi = 0; vi < 2; vi++) {
        int V = vi ? 128256 : 512, trials = vi ? 400 : 1200;
        float *row = malloc((size_t)V * sizeof *row), *lp = malloc((size_t)V * sizeof *lp);
        int64_t sh[1] = {V};
        lmx_array h, d;
        if (!row || !lp || lmx_array_alloc(&h, LMX_F32, 1, sh)) {
            printf("FAIL rows: setup\n");
            fails++;
            free(row), free(lp);
            return;
        }
        for (int t = 0; t < trials; t++) {
            float spread = spreads[t % 3];
            for (int i = 0; i < V; i++) /* a bell-shaped spread: the sum of three uniforms */
                row[i] = spread * (float)(tunif() + tunif() + tunif() - 1.5);
            memcpy(h.data, row, (size_t)V * sizeof *row);
            lmx_generate_options o;
            lmx_generate_options_init(&o);
            o.temp = temps[(t / 3) % 3];
            o.top_p = top_ps[(t / 9) % 3];
            o.top_k = (t / 27) % 2 ? 40 : 0;
            o.min_p = (t / 54) % 2 ? 0.05f : 0.0f;
            o.has_seed = true;
            o.seed = (uint64_t)t + 1;
            lmx_sampler smp;
            if (lmx_sampler_init(&smp, &o, V) || lmx_array_to_backend(m->backend, &d, &h)) {
                errors++;
                continue;
            }
            lmx_rng r = smp.rng;
            double u = lmx_rng_uniform(&r);
            int32_t id = -1;
            float dlp = 0;
            if (lmx_cuda_sample(m->backend, &d, o.temp, o.top_p, o.top_k, o.min_p, smp.min_tokens_to_keep, u, &id,
                                &dlp))
                errors++;
            memcpy(lp, row, (size_t)V * sizeof *row);
            lmx_log_softmax(lp, V);
            int32_t host = lmx_sampler_sample(&smp, lp);
            total++;
            if (id != host) differ++;
            else if (fabs((double)dlp - lp[host]) > worst_lp) worst_lp = fabs((double)dlp - lp[host]);
            lmx_array_release(&d);
            lmx_sampler_free(&smp);
        }
        lmx_array_release(&h);
        free(row), free(lp);
    }
    bool ok = !errors && differ <= 2 && worst_lp <= 1e-4;
    EXPECT(ok, "rows: %d errors, %d of %d rows differ, logprob |d| %.2e", errors, differ, total, worst_lp);
    printf("%s rows: sampled on the device vs the host sampler: %d of %d rows differ (at most 2), logprob |d| <= "
           "%.2e (tol 1e-4)\n",
           ok ? "ok  " : "FAIL", differ, total, worst_lp);
}

/* 4. */
static void sampled_generate(lmx_model *m) {
    lmx_generate_options o;
    lmx_generate_options_init(&o);
    o.max_tokens = STEPS;
    o.ignore_eos = true;
    o.temp = 0.8f;
    o.top_p = 0.9f;
    o.has_seed = true;
    o.seed = 7;
    run_acc a = {{0}, {0}, 0}, b = {{0}, {0}, 0}, host = {{0}, {0}, 0};
    unsetenv("LMX_DEVICE_SAMPLER");
    lmx_status s1 = lmx_generate_stream(m, prompt, 6, &o, on_tok, &a);
    lmx_status s2 = lmx_generate_stream(m, prompt, 6, &o, on_tok, &b);
    setenv("LMX_DEVICE_SAMPLER", "host", 1);
    lmx_status s3 = lmx_generate_stream(m, prompt, 6, &o, on_tok, &host);
    unsetenv("LMX_DEVICE_SAMPLER");
    EXPECT(!s1 && !s2 && !s3, "sampled generate: %s", lmx_last_error());
    int rep = 0, same = 0;
    while (rep < a.n && rep < b.n && a.ids[rep] == b.ids[rep]) rep++;
    while (same < a.n && same < host.n && a.ids[same] == host.ids[same]) same++;
    bool ok = a.n == STEPS && rep == STEPS && same == STEPS;
    EXPECT(ok, "sampled generate: device runs agree on %d, device and host on %d of %d tokens", rep, same, STEPS);
    printf("%s sampled generate (temp 0.8, top-p 0.9, seed 7): device twice %d of %d tokens equal, device vs host %d\n",
           ok ? "ok  " : "FAIL", rep, STEPS, same);
}

/* 5. The logits processors on the device: lmx_cuda_logits_edit on a random row against the host's edits bit
 * for bit (biases, a repeated id, both signs), then generation with logit bias and repetition, presence and
 * frequency penalties, greedy and sampled, against the host pipeline: the same tokens. */
static void processors(lmx_model *m) {
    int V = m->tf.hp.n_vocab;
    lmx_array lg;
    float *row = malloc((size_t)V * sizeof *row), *back = malloc((size_t)V * sizeof *back);
    lmx_status s = row && back ? lmx_scratch_logits(m->scratch, 1, &lg) : LMX_ERR_NOMEM;
    for (int i = 0; i < V && row; i++) row[i] = (float)(8 * tunif() - 4);
    lmx_logit_op ops[300];
    for (int i = 0; i < 300; i++) {
        int32_t id = i % 7 == 0 ? 5 : (int32_t)(tunif() * V); /* id 5 edited many times over */
        ops[i] = (lmx_logit_op){i % 3, id, i % 3 == 1 ? (float)(1 + tunif()) : (float)(2 * tunif() - 1)};
    }
    if (!s) s = lmx_backend_upload(m->backend, lg.data, row, (size_t)V * sizeof *row);
    if (!s) s = lmx_cuda_logits_edit(m->backend, &lg, ops, 300);
    if (!s) s = lmx_array_download(m->backend, &lg, back);
    int diff = 0;
    for (int i = 0; i < 300 && !s; i++) row[ops[i].id] = lmx_logit_op_apply(row[ops[i].id], &ops[i]);
    for (int i = 0; i < V && !s; i++) diff += memcmp(&row[i], &back[i], sizeof *row) != 0;
    EXPECT(!s && diff == 0, "logits edit: %s, %d of %d logits differ from the host's", s ? lmx_last_error() : "ok",
           diff, V);
    printf("%s logits edit: 300 edits (3 chunks) on the device, %d of %d logits differ from the host's\n",
           !s && !diff ? "ok  " : "FAIL", diff, V);
    free(row);
    free(back);
    static const int32_t bias_ids[3] = {403, 261, 17};
    static const float bias_v[3] = {2.5f, -1.0f, 4.0f};
    for (int sampled = 0; sampled < 2; sampled++) {
        lmx_generate_options o;
        lmx_generate_options_init(&o);
        o.max_tokens = STEPS;
        o.ignore_eos = true;
        o.logit_bias_ids = bias_ids;
        o.logit_bias_values = bias_v;
        o.n_logit_bias = 3;
        o.repetition_penalty = 1.3f;
        o.presence_penalty = 0.4f;
        o.frequency_penalty = 0.2f;
        o.frequency_context_size = 300; /* up to ~260 edits a step late in the run: two chunks */
        if (sampled) {
            o.temp = 0.8f;
            o.top_p = 0.9f;
            o.has_seed = true;
            o.seed = 11;
        }
        run_acc dev = {{0}, {0}, 0}, host = {{0}, {0}, 0};
        lmx_status s1 = lmx_generate_stream(m, prompt, 6, &o, on_tok, &dev);
        setenv("LMX_DEVICE_SAMPLER", sampled ? "host" : "0", 1);
        lmx_status s2 = lmx_generate_stream(m, prompt, 6, &o, on_tok, &host);
        unsetenv("LMX_DEVICE_SAMPLER");
        int same = 0;
        while (same < dev.n && same < host.n && dev.ids[same] == host.ids[same]) same++;
        bool ok = !s1 && !s2 && dev.n == STEPS && same == STEPS;
        EXPECT(ok, "processors %s: %s; device and host agree on %d of %d tokens", sampled ? "sampled" : "greedy",
               s1 || s2 ? lmx_last_error() : "ok", same, STEPS);
        printf("%s generate %s with logit bias, repetition 1.3, presence 0.4, frequency 0.2: device and host agree on "
               "%d of %d tokens\n",
               ok ? "ok  " : "FAIL", sampled ? "sampled (temp 0.8, top-p 0.9)" : "greedy", same, STEPS);
    }
}

static void step_by_step(lmx_model *m) {
    int V = m->tf.hp.n_vocab;
    float *lp = malloc((size_t)V * sizeof *lp), *row = malloc((size_t)V * sizeof *row);
    lmx_generate_options o;
    lmx_generate_options_init(&o);
    lmx_sampler smp;
    lmx_cache *c = NULL;
    if (!lp || !row || lmx_sampler_init(&smp, &o, V) || lmx_cache_new(m, NULL, &c)) {
        printf("FAIL setup: %s\n", lmx_last_error());
        fails++;
        free(lp);
        free(row);
        return;
    }
    int decided_n = 0, wrong = 0, steps = 0;
    lmx_status s = lmx_cache_run(m, c, prompt, 5, 512, NULL, NULL, true, NULL);
    int32_t tok = prompt[5];
    for (; !s && steps < STEPS; steps++) {
        s = lmx_transformer_forward(&m->ex, &m->tf, &c->kv, &m->scratch, &tok, 1, false, NULL);
        int32_t dev_tok = -1;
        bool decided = false;
        bool processed = false;
        if (!s) s = lmx_device_greedy(m, NULL, NULL, 0, &dev_tok, lp, &decided, &processed);
        lmx_array lg;
        if (!s) s = lmx_scratch_logits(m->scratch, 1, &lg);
        if (!s) s = lmx_array_download(m->backend, &lg, row);
        if (s) break;
        lmx_log_softmax(row, V);
        int32_t host_tok = lmx_sampler_sample(&smp, row);
        if (decided) {
            decided_n++;
            if (dev_tok != host_tok || fabsf(lp[dev_tok] - row[host_tok]) > 1e-4f) wrong++;
        }
        tok = host_tok;
    }
    EXPECT(!s, "step: %s", lmx_last_error());
    EXPECT(wrong == 0, "step: %d device picks differ from the host pipeline", wrong);
    EXPECT(decided_n * 10 >= steps * 9, "step: only %d of %d steps decided on the device", decided_n, steps);
    printf("%s steps: %d of %d decided on the device, %d differ from the host pipeline\n",
           !s && !wrong && decided_n * 10 >= steps * 9 ? "ok  " : "FAIL", decided_n, steps, wrong);
    lmx_cache_free(c);
    lmx_sampler_free(&smp);
    free(lp);
    free(row);
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "models/stories260K.gguf";
    char why[256];
    if (lmx_cuda_device_count(why, sizeof why) <= 0) {
        printf("SKIP test_device_sampler: %s\n", why);
        return 77;
    }
    lmx_load_options lo;
    lmx_load_options_init(&lo);
    lo.device = "cuda";
    lmx_model *m;
    if (lmx_load(path, &lo, &m)) {
        printf("FAIL load %s: %s\n", path, lmx_last_error());
        return 1;
    }
    generate_both_ways(m);
    step_by_step(m);
    rows_vs_host(m);
    sampled_generate(m);
    processors(m);
    lmx_model_free(m);
    printf("%s\n", fails ? "FAILED" : "passed");
    return fails ? 1 : 0;
}
