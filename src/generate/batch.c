/* batch.c - lmx_batch_generate: continuous batching (mlx-lm's
 * BatchGenerator, simplified).
 *
 * Up to max_batch sequences run together, and every step is ONE forward
 * pass over all of them (lmx_transformer_forward_varlen: projections and
 * MLP over all rows at once, RoPE / cache append / attention per sequence
 * span): each decoding sequence contributes one row, and sequences still
 * reading their prompt contribute a prefill chunk — prefill and decode
 * mixed in one pass, as vLLM's chunked prefill does (mlx-lm instead
 * prefills joiners in a separate left-padded batch). The prefill chunks of
 * one step share a budget of prefill_step_size tokens, oldest prompt first,
 * so a long prompt never stalls the decoding sequences for more than one
 * chunk. A sequence's prompt is cut exactly as lmx_generate_stream cuts it
 * (chunks of prefill_step_size over all but the last token, which runs as
 * its first decode row), so every cache flavour (rotating, quantized) sees
 * the same steps; each sequence has its own cache, sampler, detokenizer and
 * counters, so at temperature 0 its tokens are lmx_generate_stream's. */
#include "generate/engine.h"

#include <stdlib.h>

typedef struct {
    size_t index;
    const int32_t *prompt;
    size_t n_prompt, fed; /* prompt tokens in the cache; decoding once fed == n_prompt - 1 */
    lmx_cache *cache;
    lmx_sampler smp;
    lmx_detok *dt;
    int32_t *recent;
    size_t n_recent;
    int32_t tok;
    int n_gen;
    double tic, prompt_time, prompt_tps;
    bool done;
} seq;

static void seq_free(seq *q) {
    if (!q->cache) return;
    lmx_cache_free(q->cache);
    lmx_sampler_free(&q->smp);
    if (q->dt) lmx_detok_free(q->dt);
    free(q->recent);
    memset(q, 0, sizeof *q);
}

static lmx_status check_prompt(const lmx_model *m, size_t index, const int32_t *p, size_t n) {
    if (n == 0) return lmx_err(LMX_ERR_INVALID_ARG, "prompt %zu: no tokens", index);
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0 || p[i] >= m->tf.hp.n_vocab)
            return lmx_err(LMX_ERR_INVALID_ARG, "prompt %zu: token %zu: id %d is outside the vocabulary", index, i, p[i]);
    return LMX_OK;
}

/* A joining sequence: its cache, sampler and detokenizer; its prompt is
 * fed by the following steps. */
static lmx_status seq_start(lmx_model *m, const lmx_generate_options *o, size_t index, const int32_t *p, size_t n,
                            seq *q) {
    memset(q, 0, sizeof *q);
    q->index = index;
    q->prompt = p;
    q->n_prompt = n;
    lmx_cache_options co = {o->max_kv_size, o->kv_bits, o->kv_group_size, o->quantized_kv_start};
    LMX_TRY(lmx_cache_new(m, &co, &q->cache));
    lmx_generate_options so = *o;
    so.seed = o->seed + index; /* independent, reproducible streams */
    lmx_status s = lmx_sampler_init(&q->smp, &so, m->tf.hp.n_vocab);
    if (s) {
        lmx_cache_free(q->cache);
        q->cache = NULL;
        return s;
    }
    q->recent = malloc(((size_t)o->max_tokens + 2) * sizeof *q->recent);
    if (!q->recent) s = lmx_err(LMX_ERR_NOMEM, "out of memory");
    if (!s && m->tok) s = lmx_detok_new(m->tok, &q->dt);
    if (s) {
        seq_free(q);
        return s;
    }
    q->recent[q->n_recent++] = p[n - 1];
    q->tok = p[n - 1];
    return LMX_OK;
}

static bool is_stop(const lmx_model *m, const lmx_generate_options *o, int32_t t) {
    if (o->ignore_eos) return false;
    for (size_t i = 0; i < m->n_eos; i++)
        if (m->eos[i] == t) return true;
    for (size_t i = 0; i < o->n_extra_eos; i++)
        if (o->extra_eos[i] == t) return true;
    return false;
}

/* Samples sequence q's next token from its logits row and reports it;
 * *done when it finished. */
static lmx_status seq_step(lmx_model *m, const lmx_generate_options *o, seq *q, float *row, lmx_batch_fn cb,
                           void *user, bool *done) {
    int V = m->tf.hp.n_vocab;
    lmx_sampler_process(&q->smp, row, q->recent, q->n_recent);
    lmx_log_softmax(row, V);
    int32_t next = lmx_sampler_sample(&q->smp, row);
    double now = lmx_time_s();
    if (q->n_gen == 0) {
        q->tic = now;
        q->prompt_tps = q->prompt_time > 0 ? (double)q->n_prompt / q->prompt_time : 0;
    }
    q->n_gen++;
    lmx_response r;
    memset(&r, 0, sizeof r);
    r.token = next;
    r.logprob = row[next];
    r.prompt_tokens = (int)q->n_prompt;
    r.prompt_tps = q->prompt_tps;
    r.generation_tokens = q->n_gen;
    r.generation_tps = now > q->tic ? q->n_gen / (now - q->tic) : 0;
    r.peak_memory_gb = (double)lmx_backend_mem_peak(m->backend) / 1e9;
    r.text = "";
    *done = false;
    if (is_stop(m, o, next)) {
        r.finish_reason = LMX_FINISH_STOP;
        *done = true;
    } else {
        if (q->dt) LMX_TRY(lmx_detok_add(q->dt, next, &r.text, &r.text_len));
        if (q->n_gen == o->max_tokens) *done = true;
        r.finish_reason = *done ? LMX_FINISH_LENGTH : LMX_FINISH_NONE;
    }
    char *final_text = NULL;
    if (*done) { /* the last segment + the detokenizer's remainder, in one final response */
        const char *seg = "";
        size_t seg_len = 0, head = r.text_len;
        final_text = malloc(head + 1);
        if (!final_text) return lmx_err(LMX_ERR_NOMEM, "out of memory");
        memcpy(final_text, r.text, head);
        lmx_status s = q->dt ? lmx_detok_finish(q->dt, &seg, &seg_len) : LMX_OK;
        char *ft = s ? NULL : realloc(final_text, head + seg_len + 1);
        if (!ft) {
            free(final_text);
            return s ? s : lmx_err(LMX_ERR_NOMEM, "out of memory");
        }
        final_text = ft;
        memcpy(final_text + head, seg, seg_len);
        final_text[head + seg_len] = 0;
        r.text = final_text;
        r.text_len = head + seg_len;
    }
    int stop = cb ? cb(q->index, &r, user) : 0;
    free(final_text);
    if (stop) return lmx_err(LMX_ERR_ABORTED, "generation stopped by the callback");
    q->recent[q->n_recent++] = next;
    q->tok = next;
    return LMX_OK;
}

/* The buffers of one lmx_batch_generate call; spans are the rows of one
 * forward pass, at most one per active sequence. */
typedef struct {
    seq *act;              /* max_batch active sequences */
    lmx_kv_cache **caches; /* per span */
    int64_t *lens;         /* per span */
    int *span_seq;         /* per span: its sequence in act */
    int *order;            /* sequences still reading their prompt, oldest first */
    int32_t *toks;         /* budget + max_batch: the step's tokens, span after span */
    float *logits;         /* max_batch × V: each span's last row */
} batch_bufs;

static void add_span(batch_bufs *bb, int *ns, int64_t *T, int b, const int32_t *toks, int64_t len) {
    bb->span_seq[*ns] = b;
    bb->caches[*ns] = &bb->act[b].cache->kv;
    bb->lens[*ns] = len;
    memcpy(bb->toks + *T, toks, (size_t)len * sizeof *toks);
    ++*ns;
    *T += len;
}

/* This step's spans: one row per decoding sequence, then the next prompt
 * chunk (min(budget, what is left of all but the last token), the cut
 * lmx_cache_run makes) of the sequences still reading their prompt, oldest
 * first, while the chunks fit the budget; the oldest always fits. */
static int plan_step(batch_bufs *bb, int n_act, int64_t budget, int64_t *T) {
    int ns = 0, np = 0;
    *T = 0;
    for (int b = 0; b < n_act; b++) {
        seq *q = &bb->act[b];
        if (q->fed + 1 < q->n_prompt) { /* insertion by prompt index: the oldest joined first */
            int j = np++;
            while (j > 0 && bb->act[bb->order[j - 1]].index > q->index) {
                bb->order[j] = bb->order[j - 1];
                j--;
            }
            bb->order[j] = b;
            continue;
        }
        add_span(bb, &ns, T, b, &q->tok, 1);
    }
    int64_t used = 0;
    for (int i = 0; i < np; i++) {
        seq *q = &bb->act[bb->order[i]];
        int64_t left = (int64_t)(q->n_prompt - 1 - q->fed), chunk = left < budget ? left : budget;
        if (used + chunk > budget) continue;
        add_span(bb, &ns, T, bb->order[i], q->prompt + q->fed, chunk);
        used += chunk;
    }
    return ns;
}

lmx_status lmx_batch_generate(lmx_model *m, const int32_t *const *prompts, const size_t *n_prompts, size_t n,
                              const lmx_generate_options *o, int max_batch, lmx_batch_fn cb, void *user) {
    lmx_generate_options def;
    if (!o) {
        lmx_generate_options_init(&def);
        o = &def;
    }
    if (max_batch < 1 || max_batch > 4096)
        return lmx_err(LMX_ERR_INVALID_ARG, "batch size: %d is out of range [1, 4096]", max_batch);
    if (o->max_tokens < 0) return lmx_err(LMX_ERR_INVALID_ARG, "max_tokens: %d is negative", o->max_tokens);
    if (o->cache || o->draft_model || o->n_stop_strings || o->top_logprobs)
        return lmx_err(LMX_ERR_UNSUPPORTED, "batch generation: cache, draft_model, stop strings and top_logprobs "
                                            "are per-sequence options lmx_batch_generate does not take yet");
    for (size_t i = 0; i < n; i++) LMX_TRY(check_prompt(m, i, prompts[i], n_prompts[i]));
    if (n == 0 || o->max_tokens == 0) return LMX_OK;
    int64_t V = m->tf.hp.n_vocab, budget = o->prefill_step_size > 0 ? o->prefill_step_size : 2048;
    batch_bufs bb = {calloc((size_t)max_batch, sizeof(seq)), calloc((size_t)max_batch, sizeof(lmx_kv_cache *)),
                     calloc((size_t)max_batch, sizeof(int64_t)), calloc((size_t)max_batch, sizeof(int)),
                     calloc((size_t)max_batch, sizeof(int)), calloc((size_t)(budget + max_batch), sizeof(int32_t)),
                     malloc((size_t)(V * max_batch) * sizeof(float))};
    lmx_status s = bb.act && bb.caches && bb.lens && bb.span_seq && bb.order && bb.toks && bb.logits
                       ? LMX_OK
                       : lmx_err(LMX_ERR_NOMEM, "out of memory");
    int n_act = 0;
    size_t next = 0;
    while (!s && (n_act > 0 || next < n)) {
        for (; !s && n_act < max_batch && next < n; next++) { /* join */
            s = seq_start(m, o, next, prompts[next], n_prompts[next], &bb.act[n_act]);
            if (!s) n_act++;
        }
        if (s) break;
        int64_t T;
        int ns = plan_step(&bb, n_act, budget, &T);
        double t0 = lmx_time_s();
        s = lmx_transformer_forward_varlen(&m->ex, &m->tf, bb.caches, ns, bb.lens, &m->scratch, bb.toks, false,
                                           bb.logits);
        /* prompt time: each sequence's share of the passes its prompt ran
         * in, by rows (the last prompt token's row included) */
        double dt = lmx_time_s() - t0;
        for (int i = 0; !s && i < ns; i++) {
            seq *q = &bb.act[bb.span_seq[i]];
            if (q->fed + 1 < q->n_prompt) { /* a prefill chunk: its logits row is not needed */
                q->fed += (size_t)bb.lens[i];
                q->prompt_time += dt * (double)bb.lens[i] / (double)T;
                continue;
            }
            if (q->n_gen == 0) q->prompt_time += dt / (double)T;
            s = seq_step(m, o, q, bb.logits + (int64_t)i * V, cb, user, &q->done);
        }
        for (int b = 0; !s && b < n_act; b++) {
            if (!bb.act[b].done) continue;
            seq_free(&bb.act[b]); /* leave: the last active sequence takes the slot */
            bb.act[b] = bb.act[n_act - 1];
            memset(&bb.act[n_act - 1], 0, sizeof bb.act[0]);
            n_act--;
            b--;
        }
    }
    for (int b = 0; bb.act && b < n_act; b++) seq_free(&bb.act[b]);
    free(bb.act);
    free(bb.caches);
    free(bb.lens);
    free(bb.span_seq);
    free(bb.order);
    free(bb.toks);
    free(bb.logits);
    return s;
}
