/*
 * test_device_sampler.c - greedy decoding with the logits left on the GPU
 * (generate/sampler_device.c + backend/cuda/cuda_sample.cu) against the host
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
        if (!s) s = lmx_device_greedy(m, &dev_tok, lp, &decided);
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
    lmx_model_free(m);
    printf("%s\n", fails ? "FAILED" : "passed");
    return fails ? 1 : 0;
}
