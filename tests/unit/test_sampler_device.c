/*
 * test_sampler_device.c - the proof obligation of the device greedy path
 * (generate/sampler_device.c), checked on the CPU: whenever
 * lmx_greedy_pick_exact accepts a row's (max, runner-up, log-sum-exp), the
 * host pipeline (lmx_log_softmax, then lmx_sampler_sample at temperature 0)
 * picks the first index of the logit max. Rows are built to break it:
 * near ties at gaps from 2^-30 to 2^-8 around max, on both sides of the
 * winner's index, small logits (where x - lse rounds most coarsely), large
 * ones, flat rows, vocabularies of 2 to 128256. The lse handed to the
 * check is the exact (double) one moved by up to ±1e-4, the error
 * allowance the check documents (the device's f32 sums land ~1e-6 off).
 * Also: ordinary random rows must take the fast path (the check is not
 * vacuous), and near ties that really do flip the host's pick exist among
 * the cases (the check is needed).
 */
#include "testing.h"

#include "generate/engine.h"

#include <stdlib.h>

static uint64_t rs = 0x243f6a8885a308d3ull;
static double urand(void) {
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return (double)(rs >> 11) * 0x1.0p-53;
}

typedef struct {
    int accepted, rejected, flips, wrong;
} tally;

/* Runs one row through the host pipeline and the check; x is kept. */
static void check_row(const float *x, int V, lmx_sampler *s, float *work, tally *t) {
    int first = 0;
    for (int i = 1; i < V; i++)
        if (x[i] > x[first]) first = i;
    double second = -INFINITY, sum = 0;
    for (int i = 0; i < V; i++) {
        if (i != first && x[i] > second) second = x[i];
        sum += exp((double)x[i] - x[first]);
    }
    double lse = x[first] + log(sum) + (2 * urand() - 1) * 1e-4;
    memcpy(work, x, (size_t)V * sizeof *work);
    lmx_log_softmax(work, V);
    int32_t host = lmx_sampler_sample(s, work);
    if (host != first) t->flips++;
    if (lmx_greedy_pick_exact(x[first], (float)second, (float)lse, 0)) {
        t->accepted++;
        if (host != first) {
            t->wrong++;
            fprintf(stderr, "  V=%d max %.9g second %.9g: host picked %d, the device's %d was accepted\n", V,
                    x[first], second, host, first);
        }
    } else {
        t->rejected++;
    }
}

static void near_ties(void) {
    static const int vocabs[] = {2, 37, 1000, 32000, 128256};
    lmx_generate_options o;
    lmx_generate_options_init(&o); /* temp 0: argmax */
    tally t = {0, 0, 0, 0};
    for (size_t vi = 0; vi < sizeof vocabs / sizeof *vocabs; vi++) {
        int V = vocabs[vi];
        lmx_sampler s;
        CHECK_OK(lmx_sampler_init(&s, &o, V));
        float *x = malloc((size_t)V * sizeof *x), *work = malloc((size_t)V * sizeof *work);
        int rows = V > 10000 ? 60 : 400;
        for (int r = 0; r < rows; r++) {
            /* scale of the row: tiny logits round worst against lse ~ log V */
            double amp = r % 3 == 0 ? 1e-3 : r % 3 == 1 ? 3.0 : 0.0;
            double top = r % 4 == 0 ? 1e-3 : r % 4 == 1 ? 5.0 : r % 4 == 2 ? 40.0 : 300.0;
            for (int i = 0; i < V; i++) x[i] = (float)((2 * urand() - 1) * amp + (amp == 0 ? top : 0));
            int a = (int)(urand() * V), b = (int)(urand() * V);
            if (b == a) b = (a + 1) % V;
            int k = 8 + (int)(urand() * 23); /* gap 2^-k relative to max(|top|, 1) */
            double scale = fabs(top) > 1 ? fabs(top) : 1;
            x[a] = (float)(top + amp);
            x[b] = (float)((double)x[a] - ldexp(scale, -k) * (0.5 + urand()));
            check_row(x, V, &s, work, &t);
        }
        lmx_sampler_free(&s);
        free(x);
        free(work);
    }
    printf("  near ties: %d accepted, %d sent to the host, %d where the host's pick is not the logit argmax\n",
           t.accepted, t.rejected, t.flips);
    CHECK_EQ_INT(t.wrong, 0);
    CHECK(t.flips > 0);    /* the rows do reach the case the check guards */
    CHECK(t.accepted > 0); /* and it is not rejecting everything */
}

static void ordinary_rows_take_the_fast_path(void) {
    int V = 128256;
    lmx_generate_options o;
    lmx_generate_options_init(&o);
    lmx_sampler s;
    CHECK_OK(lmx_sampler_init(&s, &o, V));
    float *x = malloc((size_t)V * sizeof *x), *work = malloc((size_t)V * sizeof *work);
    tally t = {0, 0, 0, 0};
    for (int r = 0; r < 40; r++) {
        for (int i = 0; i < V; i++) x[i] = (float)((urand() + urand() + urand() - 1.5) * 4 + r * 0.25);
        check_row(x, V, &s, work, &t);
    }
    printf("  random rows: %d of 40 decided by the device's pick\n", t.accepted);
    CHECK_EQ_INT(t.wrong, 0);
    CHECK(t.accepted >= 38); /* a random max beats the runner-up by far more than 8 f32 steps */
    lmx_sampler_free(&s);
    free(x);
    free(work);
}

static void degenerate_inputs(void) {
    CHECK(lmx_greedy_pick_exact(1.0f, -INFINITY, 1.0f, 0));    /* V = 1 */
    CHECK(!lmx_greedy_pick_exact(1.0f, 1.0f, 2.0f, 0));        /* an exact tie: the host's lowest id */
    CHECK(!lmx_greedy_pick_exact(1.0f, 0.0f, 2.0f, 1));        /* a NaN/inf in the row */
    CHECK(!lmx_greedy_pick_exact(1.0f, 0.0f, NAN, 0));         /* a broken lse */
    CHECK(!lmx_greedy_pick_exact(1.0f, 0.0f, 0.5f, 0));        /* lse below max cannot be */
    CHECK(!lmx_greedy_pick_exact(NAN, 0.0f, 2.0f, 0));
    CHECK(lmx_greedy_pick_exact(10.0f, 9.0f, 12.0f, 0));
}

static void host_backend_keeps_the_host_path(void) {
    lmx_model m;
    memset(&m, 0, sizeof m);
    CHECK_OK(lmx_backend_create("cpu", 1, &m.backend));
    lmx_generate_options o;
    lmx_generate_options_init(&o);
    lmx_sampler s;
    CHECK_OK(lmx_sampler_init(&s, &o, 8));
    CHECK(!lmx_device_greedy_usable(&m, &o, &s));
    lmx_sampler_free(&s);
    lmx_backend_free(m.backend);
}

void run_tests(void) {
    TEST(degenerate_inputs);
    TEST(near_ties);
    TEST(ordinary_rows_take_the_fast_path);
    TEST(host_backend_keeps_the_host_path);
}
