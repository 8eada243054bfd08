/*
 * test_decode_graph.c - the static decode graph (models/decode_graph.c,
 * backend/cuda/cuda_step.cu) against the per-step launches, on the GPU:
 *
 * 1. Two caches of one model fed the same tokens: one by
 *    lmx_transformer_forward + lmx_cuda_greedy (per-step launches), one by
 *    lmx_decode_graph_step (one graph replay per step). For 300 steps after
 *    a 6-token prompt, crossing the KV cache's growth at 256 rows (a
 *    re-capture: the rows move) and the attention's 256-key split bucket:
 *    every step's logits are bit-identical (memcmp; the same kernels on the
 *    same inputs, the position read from device memory instead of a launch
 *    parameter, and the splits a graph adds are empty ones that merge as
 *    exact zeros), and so are the picks (id, max, runner-up, lse).
 *    The graph must have been captured at least twice (the growth) and
 *    replayed for all but the captured steps, or the test proves nothing.
 * 2. lmx_generate_stream, 300 greedy tokens, LMX_CUDA_GRAPH=0 vs default:
 *    identical token ids (the generation loop's use of the graph).
 *
 *   test_decode_graph [MODEL]   (default models/stories260K.gguf)
 * Exit 77 (skipped) when no CUDA device answers.
 */
#include "backend/cuda/cuda.h"
#include "generate/engine.h"
#include "models/decode_graph.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { STEPS = 300 };

static int fails;
#define EXPECT(cond, ...)                \
    do {                                 \
        if (!(cond)) {                   \
            printf("FAIL " __VA_ARGS__); \
            printf("\n");                \
            fails++;                     \
        }                                \
    } while (0)

static const int32_t prompt[6] = {1, 403, 407, 261, 347, 430}; /* stories260K: 512 ids */

static void graph_vs_plain(lmx_model *m) {
    int V = m->tf.hp.n_vocab;
    float *a = malloc((size_t)V * sizeof *a), *b = malloc((size_t)V * sizeof *b);
    lmx_cache *c1 = NULL, *c2 = NULL;
    lmx_scratch *s1 = NULL, *s2 = NULL;
    lmx_decode_graph g;
    memset(&g, 0, sizeof g);
    if (!a || !b || lmx_cache_new(m, NULL, &c1) || lmx_cache_new(m, NULL, &c2)) {
        printf("FAIL setup: %s\n", lmx_last_error());
        fails++;
        free(a);
        free(b);
        return;
    }
    EXPECT(lmx_decode_graph_usable(&m->tf, m->backend, &c2->kv), "usable: the graph path refuses this model");
    lmx_status s = lmx_transformer_forward(&m->ex, &m->tf, &c1->kv, &s1, prompt, 5, false, NULL);
    if (!s) s = lmx_transformer_forward(&m->ex, &m->tf, &c2->kv, &s2, prompt, 5, false, NULL);
    int32_t tok = prompt[5];
    int logit_diff = -1, pick_diff = -1, steps = 0;
    for (; !s && steps < STEPS; steps++) {
        lmx_cuda_pick p1, p2;
        lmx_array l1, l2;
        s = lmx_transformer_forward(&m->ex, &m->tf, &c1->kv, &s1, &tok, 1, false, NULL);
        if (!s) s = lmx_scratch_logits(s1, 1, &l1);
        if (!s) s = lmx_cuda_greedy(m->backend, &l1, &p1);
        if (!s) s = lmx_array_download(m->backend, &l1, a);
        if (!s) s = lmx_decode_graph_step(&m->ex, &m->tf, &c2->kv, &s2, &g, tok, &p2);
        if (!s) s = lmx_scratch_logits(s2, 1, &l2);
        if (!s) s = lmx_array_download(m->backend, &l2, b);
        if (s) break;
        if (logit_diff < 0 && memcmp(a, b, (size_t)V * sizeof *a)) logit_diff = steps;
        if (pick_diff < 0 && (p1.id != p2.id || memcmp(&p1.max, &p2.max, 3 * sizeof(float)))) pick_diff = steps;
        tok = p1.id >= 0 ? p1.id : 0;
    }
    EXPECT(!s, "step %d: %s", steps, lmx_last_error());
    EXPECT(logit_diff < 0, "logits of step %d differ (graph vs per-step launches)", logit_diff);
    EXPECT(pick_diff < 0, "pick of step %d differs", pick_diff);
    EXPECT(c2->kv.capacity > 256 && g.captures >= 2, "capacity %lld, %lld captures: the growth was not crossed",
           (long long)c2->kv.capacity, (long long)g.captures);
    EXPECT(g.replays == steps, "%lld replays of %d steps (a capture failed? LMX_CUDA_GRAPH_LOG=1 says why)",
           (long long)g.replays, steps);
    printf("%s graph vs plain: %d steps, logits bit-identical: %s, picks identical: %s, %lld captures, %lld replays\n",
           !s && logit_diff < 0 && pick_diff < 0 && g.captures >= 2 ? "ok  " : "FAIL", steps,
           logit_diff < 0 ? "yes" : "NO", pick_diff < 0 ? "yes" : "NO", (long long)g.captures,
           (long long)g.replays);
    lmx_decode_graph_free(&g);
    lmx_scratch_free(s1);
    lmx_scratch_free(s2);
    lmx_cache_free(c1);
    lmx_cache_free(c2);
    free(a);
    free(b);
}

typedef struct {
    int32_t ids[STEPS];
    int n;
} run_acc;

static int on_tok(const lmx_response *r, void *u) {
    run_acc *a = u;
    if (a->n < STEPS) a->ids[a->n++] = r->token;
    return 0;
}

static void generate_both_ways(lmx_model *m) {
    lmx_generate_options o;
    lmx_generate_options_init(&o);
    o.max_tokens = STEPS;
    o.ignore_eos = true;
    run_acc plain = {{0}, 0}, graph = {{0}, 0};
    setenv("LMX_CUDA_GRAPH", "0", 1);
    lmx_status s1 = lmx_generate_stream(m, prompt, 6, &o, on_tok, &plain);
    unsetenv("LMX_CUDA_GRAPH");
    int64_t before = m->dgraph.replays;
    lmx_status s2 = lmx_generate_stream(m, prompt, 6, &o, on_tok, &graph);
    int64_t replays = m->dgraph.replays - before;
    EXPECT(!s1 && !s2, "generate: %s", lmx_last_error());
    EXPECT(plain.n == STEPS && graph.n == STEPS, "generate: %d and %d tokens", plain.n, graph.n);
    int first = -1;
    for (int i = 0; i < plain.n && i < graph.n; i++)
        if (plain.ids[i] != graph.ids[i] && first < 0) first = i;
    EXPECT(first < 0, "generate: token %d differs (plain %d, graph %d)", first, plain.ids[first < 0 ? 0 : first],
           graph.ids[first < 0 ? 0 : first]);
    /* the first token comes from the prefill's logits, the rest from decode steps */
    EXPECT(replays >= STEPS - 2, "generate: only %lld graph replays for %d tokens", (long long)replays, STEPS);
    printf("%s generate: %d greedy tokens identical with and without the graph (%lld replays)\n",
           first < 0 && !s1 && !s2 && replays >= STEPS - 2 ? "ok  " : "FAIL", graph.n, (long long)replays);
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "models/stories260K.gguf";
    char why[256];
    if (lmx_cuda_device_count(why, sizeof why) <= 0) {
        printf("SKIP test_decode_graph: %s\n", why);
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
    unsetenv("LMX_CUDA_GRAPH");
    graph_vs_plain(m);
    generate_both_ways(m);
    lmx_model_free(m);
    printf("%s\n", fails ? "FAILED" : "passed");
    return fails ? 1 : 0;
}
