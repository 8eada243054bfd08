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

/* More edits than one chunk (300 biases, a repeated id, long windows; a huge repetition window): processed
 * chunk by chunk they give the bits of a direct loop in mlx-lm's order (bias, repetition and presence once per
 * distinct id, frequency once per occurrence), with ops_cap 256 and with 7. */
static void many_edits(void) {
    enum { V = 50, NB = 300, NR = 400 };
    int32_t bias_ids[NB], recent[NR];
    float bias_vals[NB], base[V];
    uint64_t rs = 12345;
    for (int i = 0; i < NB; i++) {
        bias_ids[i] = i % 5 == 0 ? 3 : (int32_t)((t_frand(&rs) + 1) * 0.5f * (V - 1));
        bias_vals[i] = t_frand(&rs);
    }
    for (int i = 0; i < NR; i++) recent[i] = (int32_t)((t_frand(&rs) + 1) * 0.5f * (V - 1));
    for (int i = 0; i < V; i++) base[i] = 4 * t_frand(&rs);
    lmx_generate_options o;
    lmx_generate_options_init(&o);
    o.logit_bias_ids = bias_ids;
    o.logit_bias_values = bias_vals;
    o.n_logit_bias = NB;
    o.repetition_penalty = 1.3f;
    o.repetition_context_size = 1000000000; /* the whole history; no allocation grows with it */
    o.presence_penalty = 0.4f;
    o.presence_context_size = 150;
    o.frequency_penalty = 0.2f;
    o.frequency_context_size = 300;
    float want[V];
    memcpy(want, base, sizeof want);
    for (int i = 0; i < NB; i++) want[bias_ids[i]] += bias_vals[i];
    bool seen[V] = {false};
    for (int i = 0; i < NR; i++)
        if (!seen[recent[i]]) {
            seen[recent[i]] = true;
            float x = want[recent[i]];
            want[recent[i]] = x < 0 ? x * 1.3f : x / 1.3f;
        }
    memset(seen, 0, sizeof seen);
    for (int i = NR - 150; i < NR; i++)
        if (!seen[recent[i]]) {
            seen[recent[i]] = true;
            want[recent[i]] -= 0.4f;
        }
    for (int i = NR - 300; i < NR; i++) want[recent[i]] -= 0.2f;
    for (int cap = 0; cap < 2; cap++) {
        lmx_sampler s;
        init(&s, &o, V);
        if (cap) s.ops_cap = 7; /* smaller chunks than the allocation: the walk over chunks */
        float lg[V];
        memcpy(lg, base, sizeof lg);
        lmx_sampler_process(&s, lg, recent, NR);
        CHECK(!memcmp(lg, want, sizeof lg));
        CHECK(lmx_sampler_edits(&s, recent, NR, 0) > 256);
        lmx_sampler_free(&s);
    }
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
    TEST(many_edits);
    TEST(greedy);
    TEST(top_p);
    TEST(min_p_and_top_k);
    TEST(xtc);
    TEST(temperature_distribution);
    TEST(bad_options);
}
