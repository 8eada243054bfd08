/*
 * test_sampler.c - logits processors and sampling filters against
 * mlx_lm.sample_utils semantics (MLX-LM-SPEC §8), worked by hand:
 * penalties (once per distinct id vs per occurrence), logit bias, top-p /
 * min-p / top-k / XTC truncation, temperature after truncation, and the
 * empirical distribution of categorical sampling (fixed seed).
 */
#include "testing.h"

#include "generate/engine.h"

#include <math.h>

static void init(lmx_sampler *s, lmx_generate_options *o, int V) {
    CHECK_OK(lmx_sampler_init(s, o, V));
}

static void penalties(void) {
    lmx_generate_options o;
    lmx_generate_options_init(&o);
    o.repetition_penalty = 2.0f;
    o.presence_penalty = 0.5f;
    o.frequency_penalty = 0.25f;
    int32_t bias_ids[1] = {4};
    float bias_vals[1] = {1.0f};
    o.logit_bias_ids = bias_ids;
    o.logit_bias_values = bias_vals;
    o.n_logit_bias = 1;
    lmx_sampler s;
    init(&s, &o, 5);
    float lg[5] = {1.0f, -1.0f, 2.0f, 0.0f, 0.0f};
    int32_t recent[4] = {0, 1, 1, 2};
    lmx_sampler_process(&s, lg, recent, 4);
    /* id0: 1/2 -0.5 -0.25 ; id1: -1*2 -0.5 -2*0.25 ; id2: 2/2 -0.5 -0.25 ; id4: +1 */
    CHECK(fabsf(lg[0] - (-0.25f)) < 1e-6f);
    CHECK(fabsf(lg[1] - (-3.0f)) < 1e-6f);
    CHECK(fabsf(lg[2] - 0.25f) < 1e-6f);
    CHECK(fabsf(lg[3] - 0.0f) < 1e-6f);
    CHECK(fabsf(lg[4] - 1.0f) < 1e-6f);
    lmx_sampler_free(&s);
}

static void context_window(void) {
    lmx_generate_options o;
    lmx_generate_options_init(&o);
    o.frequency_penalty = 1.0f;
    o.frequency_context_size = 2;
    lmx_sampler s;
    init(&s, &o, 3);
    float lg[3] = {0, 0, 0};
    int32_t recent[4] = {0, 0, 1, 2}; /* only the last two count */
    lmx_sampler_process(&s, lg, recent, 4);
    CHECK(lg[0] == 0 && lg[1] == -1 && lg[2] == -1);
    lmx_sampler_free(&s);
}

/* logprobs of probabilities p */
static void lp_of(const float *p, float *lp, int n) {
    for (int i = 0; i < n; i++) lp[i] = logf(p[i]);
}

static int sample_hist(lmx_generate_options *o, const float *p, int n, int draws, int *hist) {
    lmx_sampler s;
    CHECK_OK(lmx_sampler_init(&s, o, n));
    float lp[16];
    lp_of(p, lp, n);
    for (int i = 0; i < n; i++) hist[i] = 0;
    for (int d = 0; d < draws; d++) hist[lmx_sampler_sample(&s, lp)]++;
    lmx_sampler_free(&s);
    return 0;
}

static const float probs[5] = {0.4f, 0.3f, 0.15f, 0.1f, 0.05f};

static void greedy(void) {
    lmx_generate_options o;
    lmx_generate_options_init(&o);
    int h[5];
    sample_hist(&o, probs, 5, 10, h);
    CHECK(h[0] == 10);
}

static void top_p(void) {
    lmx_generate_options o;
    lmx_generate_options_init(&o);
    o.temp = 1.0f;
    o.top_p = 0.7f; /* mass above id1 = 0.4 < 0.7 keeps it; above id2 = 0.7 drops it */
    o.has_seed = true;
    o.seed = 3;
    int h[5];
    sample_hist(&o, probs, 5, 4000, h);
    CHECK(h[0] > 0 && h[1] > 0 && h[2] == 0 && h[3] == 0 && h[4] == 0);
    CHECK_MSG(fabs(h[0] / 4000.0 - 0.4 / 0.7) < 0.03, "top-p renormalised share %g", h[0] / 4000.0);
}

static void min_p_and_top_k(void) {
    lmx_generate_options o;
    lmx_generate_options_init(&o);
    o.temp = 1.0f;
    o.min_p = 0.3f; /* keeps p >= 0.12: ids 0,1,2 */
    o.has_seed = true;
    int h[5];
    sample_hist(&o, probs, 5, 3000, h);
    CHECK(h[2] > 0 && h[3] == 0 && h[4] == 0);
    o.min_p = 0;
    o.top_k = 2;
    sample_hist(&o, probs, 5, 3000, h);
    CHECK(h[0] > 0 && h[1] > 0 && h[2] == 0);
}

static void xtc(void) {
    lmx_generate_options o;
    lmx_generate_options_init(&o);
    o.temp = 1.0f;
    o.xtc_probability = 1.0f;
    o.xtc_threshold = 0.12f; /* above: 0.4, 0.3, 0.15 -> keep only 0.15 of them */
    o.has_seed = true;
    int h[5];
    sample_hist(&o, probs, 5, 3000, h);
    CHECK(h[0] == 0 && h[1] == 0 && h[2] > 0 && h[3] > 0 && h[4] > 0);
    int32_t special[1] = {0}; /* e.g. EOS: never removed */
    o.xtc_special = special;
    o.n_xtc_special = 1;
    sample_hist(&o, probs, 5, 3000, h);
    CHECK(h[0] > 0 && h[1] == 0);
}

static void temperature_distribution(void) {
    lmx_generate_options o;
    lmx_generate_options_init(&o);
    o.temp = 0.5f; /* p^2 renormalised */
    o.has_seed = true;
    o.seed = 11;
    int h[5];
    int N = 20000;
    sample_hist(&o, probs, 5, N, h);
    double z = 0;
    for (int i = 0; i < 5; i++) z += probs[i] * probs[i];
    for (int i = 0; i < 5; i++) {
        double want = probs[i] * probs[i] / z, got = (double)h[i] / N;
        CHECK_MSG(fabs(got - want) < 0.015, "id %d: %g vs %g", i, got, want);
    }
}

static void bad_options(void) {
    lmx_generate_options o;
    lmx_generate_options_init(&o);
    lmx_sampler s;
    o.top_p = 1.5f;
    CHECK(lmx_sampler_init(&s, &o, 5) == LMX_ERR_INVALID_ARG);
    lmx_generate_options_init(&o);
    o.xtc_threshold = 0.9f;
    CHECK(lmx_sampler_init(&s, &o, 5) == LMX_ERR_INVALID_ARG);
    lmx_generate_options_init(&o);
    int32_t id = 7;
    float v = 1;
    o.logit_bias_ids = &id;
    o.logit_bias_values = &v;
    o.n_logit_bias = 1;
    CHECK(lmx_sampler_init(&s, &o, 5) == LMX_ERR_INVALID_ARG);
}

void run_tests(void) {
    TEST(penalties);
    TEST(context_window);
    TEST(greedy);
    TEST(top_p);
    TEST(min_p_and_top_k);
    TEST(xtc);
    TEST(temperature_distribution);
    TEST(bad_options);
}
