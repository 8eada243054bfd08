/* batch.c - lmx_batch_generate: continuous batching (mlx-lm's
 * BatchGenerator, simplified).
 *
 * Up to max_batch sequences decode together: each step is one batched
 * forward pass (lmx_transformer_forward_batch: projections and MLP over all
 * rows at once, attention per sequence against its own KV cache). A
 * sequence leaves as soon as it finishes and the next waiting prompt joins;
 * joiners are prefilled one at a time (mlx-lm batches prefill with left
 * padding; lmx does not yet). Each sequence has its own cache, sampler,
 * detokenizer and counters, so at temperature 0 its tokens are those of
 * lmx_generate_stream on the same prompt. */
#include "generate/engine.h"

#include <stdlib.h>

typedef struct {
    size_t index;
    lmx_cache *cache;
    lmx_sampler smp;
    lmx_detok *dt;
    int32_t *recent;
    size_t n_recent;
    int32_t tok;
    int n_gen;
    double t0, tic, prompt_tps;
    int prompt_tokens;
} seq;

static void seq_free(seq *q) {
    if (!q->cache) return;
    lmx_cache_free(q->cache);
    lmx_sampler_free(&q->smp);
    if (q->dt) lmx_detok_free(q->dt);
    free(q->recent);
    memset(q, 0, sizeof *q);
}

static lmx_status seq_start(lmx_model *m, const lmx_generate_options *o, size_t index, const int32_t *p, size_t n,
                            seq *q, float *logits) {
    memset(q, 0, sizeof *q);
    if (n == 0) return lmx_err(LMX_ERR_INVALID_ARG, "prompt %zu: no tokens", index);
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0 || p[i] >= m->tf.hp.n_vocab)
            return lmx_err(LMX_ERR_INVALID_ARG, "prompt %zu: token %zu: id %d is outside the vocabulary", index, i, p[i]);
    q->index = index;
    q->t0 = lmx_time_s();
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
    if (!s && n > 1) s = lmx_cache_run(m, q->cache, p, n - 1, o->prefill_step_size, NULL, NULL, logits);
    if (s) {
        seq_free(q);
        return s;
    }
    q->recent[q->n_recent++] = p[n - 1];
    q->tok = p[n - 1];
    q->prompt_tokens = (int)n;
    /* prompt speed: this sequence's own prefill (its last token runs in the
     * next batched step), not the time it waited for other joiners */
    double el = lmx_time_s() - q->t0;
    q->prompt_tps = el > 0 ? (double)n / el : 0;
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
    if (q->n_gen == 0) q->tic = now;
    q->n_gen++;
    lmx_response r;
    memset(&r, 0, sizeof r);
    r.token = next;
    r.logprob = row[next];
    r.prompt_tokens = q->prompt_tokens;
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
    if (n == 0 || o->max_tokens == 0) return LMX_OK;
    int64_t V = m->tf.hp.n_vocab;
    seq *act = calloc((size_t)max_batch, sizeof *act);
    lmx_kv_cache **caches = calloc((size_t)max_batch, sizeof *caches);
    int32_t *toks = calloc((size_t)max_batch, sizeof *toks);
    float *logits = malloc((size_t)(V * max_batch) * sizeof *logits);
    lmx_status s = act && caches && toks && logits ? LMX_OK : lmx_err(LMX_ERR_NOMEM, "out of memory");
    int n_act = 0;
    size_t next = 0;
    while (!s && (n_act > 0 || next < n)) {
        while (!s && n_act < max_batch && next < n) { /* join */
            s = seq_start(m, o, next, prompts[next], n_prompts[next], &act[n_act], logits);
            next++;
            if (!s) n_act++;
        }
        if (s || n_act == 0) break;
        for (int b = 0; b < n_act; b++) {
            caches[b] = &act[b].cache->kv;
            toks[b] = act[b].tok;
        }
        s = lmx_transformer_forward_batch(&m->ex, &m->tf, caches, n_act, &m->scratch, toks, logits);
        for (int b = 0; !s && b < n_act; b++) {
            bool done;
            s = seq_step(m, o, &act[b], logits + (int64_t)b * V, cb, user, &done);
            if (!s && done) { /* leave: the last active sequence takes the slot */
                seq_free(&act[b]);
                act[b] = act[n_act - 1];
                memset(&act[n_act - 1], 0, sizeof act[0]);
                /* its logits row moves with it */
                if (b != n_act - 1) memcpy(logits + (int64_t)b * V, logits + (int64_t)(n_act - 1) * V, (size_t)V * sizeof *logits);
                n_act--;
                b--;
            }
        }
    }
    for (int b = 0; act && b < n_act; b++) seq_free(&act[b]);
    free(act);
    free(caches);
    free(toks);
    free(logits);
    return s;
}
