/* generate.c - the generation loop behind lmx_generate_stream (mlx-lm's
 * stream_generate): chunked prefill of all but the last prompt token, then
 * one step per token; EOS never reaches the text; a final response carries
 * the detokenizer's remainder and the finish reason. */
#include "generate/engine.h"

#include <stdlib.h>
#include <string.h>

void lmx_generate_options_init(lmx_generate_options *o) {
    memset(o, 0, sizeof *o);
    o->max_tokens = 100;
    o->top_p = 1.0f;
    o->min_tokens_to_keep = 1;
    o->repetition_context_size = 20;
    o->presence_context_size = 20;
    o->frequency_context_size = 20;
    o->xtc_threshold = 0.1f;
    o->prefill_step_size = 2048;
}

static lmx_status check_ids(const lmx_model *m, const int32_t *ids, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->tf.hp.n_vocab)
            return lmx_err(LMX_ERR_INVALID_ARG, "token %zu: id %d is outside the vocabulary [0, %d)", i, ids[i],
                           m->tf.hp.n_vocab);
    return LMX_OK;
}

lmx_status lmx_logits(lmx_model *m, const int32_t *tokens, size_t n, float *out) {
    if (n == 0) return lmx_err(LMX_ERR_INVALID_ARG, "logits: no tokens");
    LMX_TRY(check_ids(m, tokens, n));
    lmx_kv_cache cache;
    LMX_TRY(lmx_kv_cache_init_on(m->backend, &cache, &m->tf.hp, (int64_t)n));
    lmx_status s = LMX_OK;
    int64_t V = m->tf.hp.n_vocab, step = 512;
    for (size_t i = 0; i < n && !s; i += (size_t)step) {
        int64_t T = (int64_t)(n - i) < step ? (int64_t)(n - i) : step;
        s = lmx_transformer_forward(&m->ex, &m->tf, &cache, &m->scratch, tokens + i, T, true, out + i * V);
    }
    lmx_kv_cache_free(&cache);
    return s;
}

static bool is_eos(const lmx_model *m, const lmx_generate_options *o, int32_t t) {
    if (o->ignore_eos) return false;
    for (size_t i = 0; i < m->n_eos; i++)
        if (m->eos[i] == t) return true;
    for (size_t i = 0; i < o->n_extra_eos; i++)
        if (o->extra_eos[i] == t) return true;
    return false;
}

lmx_status lmx_generate_stream(lmx_model *m, const int32_t *prompt, size_t n_prompt,
                               const lmx_generate_options *o, lmx_stream_fn cb, void *user) {
    lmx_generate_options def;
    if (!o) {
        lmx_generate_options_init(&def);
        o = &def;
    }
    if (n_prompt == 0) return lmx_err(LMX_ERR_INVALID_ARG, "prompt: no tokens");
    if (o->max_tokens < 0) return lmx_err(LMX_ERR_INVALID_ARG, "max_tokens: %d is negative", o->max_tokens);
    LMX_TRY(check_ids(m, prompt, n_prompt));
    int64_t V = m->tf.hp.n_vocab;
    int64_t capacity = (int64_t)n_prompt + o->max_tokens + 1;
    int step = o->prefill_step_size > 0 ? o->prefill_step_size : 2048;

    lmx_kv_cache cache;
    lmx_sampler smp;
    lmx_detok *dt = NULL;
    float *logits = malloc((size_t)V * sizeof *logits);
    int32_t *recent = malloc(((size_t)o->max_tokens + 2) * sizeof *recent);
    if (!logits || !recent) {
        free(logits);
        free(recent);
        return lmx_err(LMX_ERR_NOMEM, "out of memory");
    }
    lmx_status s = lmx_kv_cache_init_on(m->backend, &cache, &m->tf.hp, capacity);
    if (s) {
        free(logits);
        free(recent);
        return s;
    }
    s = lmx_sampler_init(&smp, o, (int)V);
    if (!s && m->tok) s = lmx_detok_new(m->tok, &dt);

    double tic = lmx_time_s(), prompt_tps = 0;
    /* Prefill all but the last prompt token. */
    for (size_t i = 0; !s && i + 1 < n_prompt; i += (size_t)step) {
        int64_t T = (int64_t)(n_prompt - 1 - i) < step ? (int64_t)(n_prompt - 1 - i) : step;
        s = lmx_transformer_forward(&m->ex, &m->tf, &cache, &m->scratch, prompt + i, T, false, logits);
    }
    size_t n_recent = 0;
    if (!s) recent[n_recent++] = prompt[n_prompt - 1];
    int32_t tok = prompt[n_prompt - 1];
    lmx_response r;
    memset(&r, 0, sizeof r);
    r.prompt_tokens = (int)n_prompt;
    for (int n = 0; !s && n < o->max_tokens; n++) {
        s = lmx_transformer_forward(&m->ex, &m->tf, &cache, &m->scratch, &tok, 1, false, logits);
        if (s) break;
        lmx_sampler_process(&smp, logits, recent, n_recent);
        lmx_log_softmax(logits, (int)V);
        int32_t next = lmx_sampler_sample(&smp, logits);
        if (n == 0) {
            double dt_s = lmx_time_s() - tic;
            prompt_tps = dt_s > 0 ? (double)n_prompt / dt_s : 0;
            tic = lmx_time_s();
        }
        r.token = next;
        r.logprob = logits[next];
        r.prompt_tps = prompt_tps;
        r.generation_tokens = n + 1;
        double el = lmx_time_s() - tic;
        r.generation_tps = el > 0 ? (n + 1) / el : 0;
        r.peak_memory_gb = (double)lmx_peak_rss_bytes() / 1e9;
        r.text = "";
        r.text_len = 0;
        if (is_eos(m, o, next)) {
            r.finish_reason = LMX_FINISH_STOP;
            break;
        }
        if (dt) s = lmx_detok_add(dt, next, &r.text, &r.text_len);
        if (s) break;
        r.finish_reason = n + 1 == o->max_tokens ? LMX_FINISH_LENGTH : LMX_FINISH_NONE;
        if (r.finish_reason == LMX_FINISH_LENGTH) break; /* text goes out with the final response */
        if (cb && cb(&r, user)) {
            s = lmx_err(LMX_ERR_ABORTED, "generation stopped by the callback");
            break;
        }
        recent[n_recent++] = next;
        tok = next;
    }
    if (!s) {
        if (o->max_tokens == 0) r.finish_reason = LMX_FINISH_LENGTH;
        /* Final response: the last token's segment (for length) + the detokenizer's remainder. */
        const char *seg = "";
        size_t seg_len = 0;
        size_t head = r.finish_reason == LMX_FINISH_LENGTH ? r.text_len : 0;
        char *final_text = malloc(head + 1);
        if (!final_text) s = lmx_err(LMX_ERR_NOMEM, "out of memory");
        if (!s) memcpy(final_text, r.text, head); /* copy before finish() reuses the buffer */
        if (!s && dt) s = lmx_detok_finish(dt, &seg, &seg_len);
        if (!s) {
            char *ft = realloc(final_text, head + seg_len + 1);
            if (!ft) {
                s = lmx_err(LMX_ERR_NOMEM, "out of memory");
            } else {
                final_text = ft;
                memcpy(final_text + head, seg, seg_len);
                final_text[head + seg_len] = 0;
                r.text = final_text;
                r.text_len = head + seg_len;
                if (cb && cb(&r, user)) s = lmx_err(LMX_ERR_ABORTED, "generation stopped by the callback");
            }
        }
        free(final_text);
    }
    if (dt) lmx_detok_free(dt);
    lmx_sampler_free(&smp);
    lmx_kv_cache_free(&cache);
    free(logits);
    free(recent);
    return s;
}

typedef struct {
    char *buf;
    size_t len, cap;
    bool oom;
} text_acc;

static int collect(const lmx_response *r, void *user) {
    text_acc *a = user;
    if (a->len + r->text_len + 1 > a->cap) {
        size_t nc = (a->cap + r->text_len + 1) * 2;
        char *nb = realloc(a->buf, nc);
        if (!nb) {
            a->oom = true;
            return 1;
        }
        a->buf = nb;
        a->cap = nc;
    }
    memcpy(a->buf + a->len, r->text, r->text_len);
    a->len += r->text_len;
    a->buf[a->len] = 0;
    return 0;
}

lmx_status lmx_generate(lmx_model *m, const char *prompt, const lmx_generate_options *o, char **text) {
    *text = NULL;
    if (!m->tok) return lmx_err(LMX_ERR_NOT_FOUND, "%s: the model has no tokenizer", m->path);
    int32_t *ids;
    size_t n;
    LMX_TRY(lmx_tokenize(m->tok, prompt, strlen(prompt), true, &ids, &n));
    text_acc acc = {calloc(1, 1), 0, 1, false};
    if (!acc.buf) {
        free(ids);
        return lmx_err(LMX_ERR_NOMEM, "out of memory");
    }
    lmx_status s = lmx_generate_stream(m, ids, n, o, collect, &acc);
    free(ids);
    if (acc.oom) s = lmx_err(LMX_ERR_NOMEM, "out of memory");
    if (s) {
        free(acc.buf);
        return s;
    }
    *text = acc.buf;
    return LMX_OK;
}
