/* decode_graph.c - a greedy decode step of one sequence as one CUDA graph
 * launch plus a 20-byte read-back.
 *
 * Per step the host uploads the token id (and the constant RoPE
 * frequencies) into the fixed step scratch, sets the position (8 bytes),
 * replays the graph and reads the pick. The graph is captured again only
 * when what it baked in moves: the scratch arrays, the kernel scratch, the
 * KV rows (they grow by 256 rows, LMX_KV_STEP) or the attention's 256-row
 * split bucket (cuda_attention.cu picks split lengths per bucket so the
 * per-step launch and the graph compute the same floats). Without the graph
 * every step launched ~10 kernels per layer from the host, with ~1-2 µs of
 * launch gap each (bench/cuda-notes.md). */
#include "models/decode_graph.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ATTN_BUCKET 256 /* cuda_attention.cu's ATT_BUCKET */

void lmx_decode_graph_free(lmx_decode_graph *g) {
    if (!g) return;
    free(g->rows);
    memset(g, 0, sizeof *g);
}

bool lmx_decode_graph_usable(const lmx_transformer *m, const lmx_backend *b, const lmx_kv_cache *c) {
    if (lmx_backend_is_host(b) || !b->name || strcmp(b->name, "cuda")) return false;
    const char *env = getenv("LMX_CUDA_GRAPH"); /* "0": per-step launches (A/B timing, a safety switch) */
    if (env && !strcmp(env, "0")) return false;
    if (!c || c->kind != LMX_KV_STANDARD || c->kv_bits || c->backend != b) return false;
    const lmx_hparams *hp = &m->hp;
    /* MoE reads the routing back every layer; length-dependent RoPE changes
     * its frequencies and mscale (a captured constant) with the position */
    if (hp->n_expert > 0 || lmx_transformer_rope_per_length(m)) return false;
    for (int l = 0; l < hp->n_layer; l++) {
        const lmx_layer *L = &m->layers[l];
        const lmx_linear *lins[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof lins / sizeof *lins; i++)
            if (lins[i]->lora) return false;
    }
    return !m->lm_head.lora;
}

/* Fills the key of the step about to run; true when it equals g's. */
static bool key_matches(lmx_decode_graph *g, const lmx_kv_cache *c, const lmx_scratch *s, const lmx_backend *b,
                        bool store) {
    uint64_t sg = lmx_scratch_generation(s), cg = lmx_cuda_scratch_generation(b);
    int64_t bucket = (c->offset + 1 + ATTN_BUCKET - 1) / ATTN_BUCKET;
    bool same = g->valid && g->cache == c && g->scratch_gen == sg && g->cuda_gen == cg && g->capacity == c->capacity &&
                g->bucket == bucket && g->n_rows == 2 * c->n_layer;
    for (int l = 0; same && l < c->n_layer; l++)
        same = g->rows[2 * l] == c->k[l].data && g->rows[2 * l + 1] == c->v[l].data;
    if (!store || same) return same;
    g->cache = c;
    g->scratch_gen = sg;
    g->cuda_gen = cg;
    g->capacity = c->capacity;
    g->bucket = bucket;
    for (int l = 0; l < c->n_layer && g->n_rows == 2 * c->n_layer; l++) {
        g->rows[2 * l] = c->k[l].data;
        g->rows[2 * l + 1] = c->v[l].data;
    }
    return false;
}

/* Kernel scratch the step needs at most: split attention partials
 * (heads × 256 splits × (head_dim + 2) floats, cuda_attention.cu) with
 * room for the quantized GEMVs' converted activations. */
static size_t step_scratch_bytes(const lmx_hparams *hp) {
    size_t attn = (size_t)hp->n_head * 256 * (size_t)(hp->head_dim + 2) * sizeof(float);
    size_t x = (size_t)(hp->n_ff > hp->n_embd ? hp->n_ff : hp->n_embd) * 8 * sizeof(float);
    return (attn > x ? attn : x) + (1u << 20);
}

static lmx_status capture(lmx_exec *ex, const lmx_transformer *m, lmx_kv_cache *c, lmx_scratch *s,
                          lmx_decode_graph *g) {
    if (g->n_rows != 2 * c->n_layer) {
        free(g->rows);
        g->n_rows = 0;
        g->rows = malloc((size_t)(2 * c->n_layer) * sizeof *g->rows);
        if (!g->rows) return lmx_err(LMX_ERR_NOMEM, "out of memory");
        g->n_rows = 2 * c->n_layer;
    }
    g->valid = false;
    LMX_TRY(lmx_cuda_step_capture_begin(ex->backend, c->offset, step_scratch_bytes(&m->hp)));
    lmx_array lg;
    lmx_status st = lmx_transformer_step_body(ex, m, c, s, &lg);
    if (!st) st = lmx_cuda_greedy_launch(ex->backend, &lg);
    if (st) {
        lmx_cuda_step_capture_abort(ex->backend);
        return st;
    }
    LMX_TRY(lmx_cuda_step_capture_end(ex->backend, LMX_DECODE_GRAPH_SLOT));
    (void)key_matches(g, c, s, ex->backend, true);
    g->valid = true;
    g->captures++;
    return LMX_OK;
}

lmx_status lmx_decode_graph_step(lmx_exec *ex, const lmx_transformer *m, lmx_kv_cache *c, lmx_scratch **sp,
                                 lmx_decode_graph *g, int32_t token, lmx_cuda_pick *pick) {
    LMX_TRY(lmx_transformer_step_begin(ex, m, c, sp, token));
    lmx_scratch *s = *sp;
    bool replay = key_matches(g, c, s, ex->backend, false);
    /* a shape whose capture failed runs plainly until its rows or scratch move */
    bool skip = !replay && g->failed && g->cache == c && g->capacity == c->capacity &&
                g->scratch_gen == lmx_scratch_generation(s);
    if (!replay && !skip) {
        lmx_status st = capture(ex, m, c, s, g);
        if (st) { /* e.g. a kernel that cannot run inside a graph */
            if (getenv("LMX_CUDA_GRAPH_LOG")) fprintf(stderr, "lmx: decode graph not captured: %s\n", lmx_last_error());
            (void)key_matches(g, c, s, ex->backend, true);
            g->valid = false;
        }
        g->failed = st != LMX_OK;
        replay = !st;
    }
    if (replay) {
        LMX_TRY(lmx_cuda_step_launch(ex->backend, LMX_DECODE_GRAPH_SLOT, c->offset));
        g->replays++;
    } else {
        lmx_array lg;
        LMX_TRY(lmx_transformer_step_body(ex, m, c, s, &lg));
        LMX_TRY(lmx_cuda_greedy_launch(ex->backend, &lg));
    }
    LMX_TRY(lmx_kv_end(c));
    return lmx_cuda_greedy_read(ex->backend, pick);
}
