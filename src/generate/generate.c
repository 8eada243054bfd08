/* generate.c - the generation loop behind lmx_generate_stream (mlx-lm's
 * stream_generate): a chunked prefill of the whole prompt whose last row's
 * logits give the first token, then one step per token; EOS never reaches
 * the text; a final response carries the detokenizer's remainder and the
 * finish reason.
 *
 * mlx-lm prefills all but the last prompt token and runs that one as the
 * first decode step. The tokens are the same either way (the last row of a
 * pass sees the same prefix), but the extra step reads every weight once
 * more: ~5 ms of a ~30 ms 512-token prefill of an 8B bf16 model on an H100.
 * mlx-lm's split is kept where the cache changes between the two (a
 * rotating cache's window, a KV cache switching to quantized storage), for
 * speculative decoding (its first round verifies the last prompt token with
 * the draft's proposals) and for max_tokens = 0 (the cache ends as mlx-lm's:
 * without the last prompt token). */
#include "backend/cuda/cuda.h"
#include "generate/engine.h"

#include <stdio.h>
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
    o->kv_group_size = 64;
    o->quantized_kv_start = 5000;
    o->num_draft_tokens = 2;
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
    const lmx_hparams *hp = &m->tf.hp;
    LMX_TRY(lmx_kv_cache_init(&cache, m->backend, hp->n_layer, hp->n_kv_head, hp->head_dim, NULL));
    lmx_status s = LMX_OK;
    int64_t V = hp->n_vocab, step = 512;
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

/* Stop strings: all generated text is kept; what may still turn into a
 * stop string (a suffix that is a prefix of one) is held back. */
typedef struct {
    char *buf;
    size_t len, cap, emitted;
} stop_text;

static lmx_status stop_append(stop_text *st, const char *t, size_t n) {
    if (st->len + n + 1 > st->cap) {
        size_t nc = (st->len + n + 1) * 2;
        char *nb = realloc(st->buf, nc);
        if (!nb) return lmx_err(LMX_ERR_NOMEM, "out of memory");
        st->buf = nb;
        st->cap = nc;
    }
    memcpy(st->buf + st->len, t, n);
    st->len += n;
    st->buf[st->len] = 0;
    return LMX_OK;
}

/* Sets [*seg, *seg + *n) to the text that can go out now; true when a stop
 * string was found (the text ends before it). */
static bool stop_scan(stop_text *st, const lmx_generate_options *o, bool final, const char **seg, size_t *n) {
    size_t from = st->emitted, end = st->len;
    bool hit = false;
    for (size_t i = 0; i < o->n_stop_strings; i++) {
        const char *ss = o->stop_strings[i];
        size_t sl = strlen(ss);
        if (!sl) continue;
        size_t start = st->emitted >= sl ? st->emitted - sl + 1 : 0;
        for (size_t p = start; p + sl <= st->len; p++)
            if (!memcmp(st->buf + p, ss, sl)) {
                if (p < end || !hit) end = p;
                hit = true;
                break;
            }
    }
    if (!hit && !final) {
        size_t hold = 0;
        for (size_t i = 0; i < o->n_stop_strings; i++) {
            size_t sl = strlen(o->stop_strings[i]);
            for (size_t k = sl > 1 ? sl - 1 : 0; k > hold; k--)
                if (k <= st->len - st->emitted && !memcmp(st->buf + st->len - k, o->stop_strings[i], k)) {
                    hold = k;
                    break;
                }
        }
        end = st->len - hold;
    }
    if (end < from) end = from;
    *seg = st->buf + from;
    *n = end - from;
    st->emitted = end;
    return hit;
}

/* The k best (id, logprob) pairs, best first (k small: insertion). */
static int top_k_pairs(const float *lp, int V, int k, int32_t *ids, float *vals) {
    int n = 0;
    for (int i = 0; i < V; i++) {
        if (n == k && lp[i] <= vals[n - 1]) continue;
        int j = n < k ? n++ : n - 1;
        while (j > 0 && vals[j - 1] < lp[i]) {
            vals[j] = vals[j - 1];
            ids[j] = ids[j - 1];
            j--;
        }
        vals[j] = lp[i];
        ids[j] = i;
    }
    return n;
}

static lmx_status validate(const lmx_model *m, const int32_t *prompt, size_t n_prompt, const lmx_generate_options *o) {
    if (n_prompt == 0) return lmx_err(LMX_ERR_INVALID_ARG, "prompt: no tokens");
    if (o->max_tokens < 0) return lmx_err(LMX_ERR_INVALID_ARG, "max_tokens: %d is negative", o->max_tokens);
    if (o->top_logprobs < 0 || o->top_logprobs > 64)
        return lmx_err(LMX_ERR_INVALID_ARG, "top_logprobs: %d is out of range [0, 64]", o->top_logprobs);
    for (size_t i = 0; i < o->n_stop_strings; i++)
        if (!o->stop_strings || !o->stop_strings[i]) return lmx_err(LMX_ERR_INVALID_ARG, "stop_strings[%zu]: NULL", i);
    if (o->cache) LMX_TRY(lmx_cache_check(m, o->cache));
    return check_ids(m, prompt, n_prompt);
}

/* One plain step: the target on its last token, processors, sampler. With
 * device_greedy the logits stay on the device and only the pick comes back,
 * unless it cannot be proven to be the host pipeline's (sampler_device.c). */
static lmx_status pick_token(lmx_gen_src *g, bool decided, bool processed, int32_t *toks, bool *from_draft,
                             int *count);

/* The device's pick of the row in the step scratch (greedy or sampled, the
 * logits processors applied there first). */
static lmx_status device_pick(lmx_gen_src *g, int32_t *toks, bool *decided, bool *processed) {
    if (g->device_greedy)
        return lmx_device_greedy(g->m, g->smp, g->recent, g->n_recent, &toks[0], g->lp, decided, processed);
    return lmx_device_sample(g->m, g->smp, g->recent, g->n_recent, &toks[0], g->lp, decided, processed);
}

static lmx_status plain_produce(lmx_gen_src *g, int32_t *toks, bool *from_draft, int *count) {
    lmx_model *m = g->m;
    bool decided = false, processed = false;
    bool dev = g->device_greedy || g->device_sample;
    if (dev && lmx_decode_graph_usable(&m->tf, m->backend, &g->cache->kv)) {
        lmx_cuda_pick p; /* one graph launch + 20 bytes back (models/decode_graph.c) */
        LMX_TRY(lmx_decode_graph_step(&m->ex, &m->tf, &g->cache->kv, &m->scratch, &m->dgraph, g->tok, &p));
        if (g->device_greedy && !lmx_sampler_has_edits(g->smp))
            LMX_TRY(lmx_device_greedy_finish(m, &p, &toks[0], g->lp, &decided));
        else /* the graph's pick is of the unprocessed row, or not used; the logits stay in the step scratch */
            LMX_TRY(device_pick(g, toks, &decided, &processed));
    } else {
        LMX_TRY(lmx_transformer_forward(&m->ex, &m->tf, &g->cache->kv, &m->scratch, &g->tok, 1, false,
                                        dev ? NULL : g->lp));
        if (dev) LMX_TRY(device_pick(g, toks, &decided, &processed));
    }
    return pick_token(g, decided, processed, toks, from_draft, count);
}

/* The sampler's part of a plain step over logits in g->lp (unless the
 * device already decided toks[0]; processed: the device applied the logits
 * processors to the row it sent back). */
static lmx_status pick_token(lmx_gen_src *g, bool decided, bool processed, int32_t *toks, bool *from_draft,
                             int *count) {
    lmx_model *m = g->m;
    if (!decided) {
        if (!processed) lmx_sampler_process(g->smp, g->lp, g->recent, g->n_recent);
        lmx_log_softmax(g->lp, m->tf.hp.n_vocab);
        toks[0] = lmx_sampler_sample(g->smp, g->lp);
    }
    from_draft[0] = false;
    *count = 1;
    g->recent[g->n_recent++] = toks[0];
    g->tok = toks[0];
    return LMX_OK;
}

/* LMX_MEM_TALLY=1: device memory in use / peak and the KV cache's bytes at
 * points of a generation, on stderr (with the CUDA backend's scratch and
 * workspace growth: the categories of issue 6's memory bound). */
static void mem_tally(const lmx_model *m, const char *at, const lmx_cache *c) {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("LMX_MEM_TALLY");
        on = e && *e && strcmp(e, "0") != 0;
    }
    if (!on || !c || lmx_backend_is_host(m->backend)) return;
    fprintf(stderr, "[mem] %-11s in use %.1f MB, peak %.1f MB, KV cache %.1f MB\n", at,
            lmx_cuda_mem_in_use(m->backend) / 1e6, lmx_cuda_mem_peak(m->backend) / 1e6, lmx_cache_nbytes(c) / 1e6);
}

/* mlx-lm's split (module comment): prefill all but the last prompt token. */
static bool split_last_token(const lmx_gen_src *g, const lmx_generate_options *o) {
    const lmx_kv_cache *kv = &g->cache->kv;
    return g->draft || o->max_tokens == 0 || kv->kind != LMX_KV_STANDARD || kv->kv_bits != 0;
}

/* The whole prompt (lmx_cache_run's chunks); its last row gives the first
 * token: picked on the device, or from its logits in g->lp. The loop
 * reports n of n with that token, so the last chunk reports nothing. */
static lmx_status prefill_first(lmx_gen_src *g, const int32_t *prompt, size_t n, const lmx_generate_options *o,
                                int32_t *toks, bool *from_draft, int *count) {
    lmx_model *m = g->m;
    LMX_TRY(lmx_cache_run(m, g->cache, prompt, n, o->prefill_step_size, o->progress, o->progress_user, false,
                          g->device_greedy || g->device_sample ? NULL : g->lp));
    bool decided = false, processed = false;
    if (g->device_greedy || g->device_sample) LMX_TRY(device_pick(g, toks, &decided, &processed));
    return pick_token(g, decided, processed, toks, from_draft, count);
}

/* Caches, samplers and buffers of one lmx_generate_stream call. */
typedef struct {
    lmx_gen_src g;
    lmx_cache *own, *down;
    lmx_sampler smp, dsmp;
    bool smp_ok, dsmp_ok;
} gen_res;

static void res_free(gen_res *r) {
    if (r->smp_ok) lmx_sampler_free(&r->smp);
    if (r->dsmp_ok) lmx_sampler_free(&r->dsmp);
    lmx_cache_free(r->own);
    lmx_cache_free(r->down);
    free(r->g.recent);
    free(r->g.lp);
    free(r->g.dlogits);
    free(r->g.seq);
}

static lmx_status res_init(gen_res *r, lmx_model *m, const lmx_generate_options *o) {
    memset(r, 0, sizeof *r);
    lmx_gen_src *g = &r->g;
    int64_t V = m->tf.hp.n_vocab;
    g->m = m;
    g->draft = o->draft_model;
    g->K = g->draft ? (o->num_draft_tokens > 0 ? o->num_draft_tokens : 2) : 0;
    if (g->K > 32) return lmx_err(LMX_ERR_INVALID_ARG, "num_draft_tokens: %d is out of range [1, 32]", g->K);
    if (g->draft && lmx_model_vocab_size(g->draft) != V)
        return lmx_err(LMX_ERR_INVALID_ARG, "draft model: vocabulary of %d tokens, the model has %d",
                       lmx_model_vocab_size(g->draft), (int)V);
    g->cache = o->cache;
    if (!g->cache) {
        lmx_cache_options co = {o->max_kv_size, o->kv_bits, o->kv_group_size, o->quantized_kv_start};
        LMX_TRY(lmx_cache_new(m, &co, &r->own));
        g->cache = r->own;
    }
    if (g->draft) {
        if (o->draft_cache) {
            LMX_TRY(lmx_cache_check(g->draft, o->draft_cache));
            g->dcache = o->draft_cache;
        } else {
            LMX_TRY(lmx_cache_new(g->draft, NULL, &r->down));
            g->dcache = r->down;
        }
        if (g->cache->kv.kind == LMX_KV_ROTATING || g->dcache->kv.kind == LMX_KV_ROTATING)
            return lmx_err(LMX_ERR_UNSUPPORTED, "speculative decoding needs a trimmable KV cache (no max_kv_size)");
    }
    g->recent = malloc(((size_t)o->max_tokens + (size_t)g->K + 3) * sizeof *g->recent);
    g->lp = malloc((size_t)(V * (g->K + 1)) * sizeof *g->lp);
    g->dlogits = malloc((size_t)V * sizeof *g->dlogits);
    g->seq = malloc((size_t)(g->K + 1) * sizeof *g->seq);
    if (!g->recent || !g->lp || !g->dlogits || !g->seq) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    LMX_TRY(lmx_sampler_init(&r->smp, o, (int)V));
    r->smp_ok = true;
    g->smp = &r->smp;
    g->device_greedy = lmx_device_greedy_usable(m, o, &r->smp);
    g->device_sample = lmx_device_sample_usable(m, o, &r->smp);
    if (g->draft) {
        lmx_generate_options od = *o;
        od.seed = o->seed ^ 0x9e3779b97f4a7c15ull; /* its own random stream */
        LMX_TRY(lmx_sampler_init(&r->dsmp, &od, (int)V));
        r->dsmp_ok = true;
        g->dsmp = &r->dsmp;
    }
    return LMX_OK;
}

lmx_status lmx_generate_stream(lmx_model *m, const int32_t *prompt, size_t n_prompt,
                               const lmx_generate_options *o, lmx_stream_fn cb, void *user) {
    lmx_generate_options def;
    if (!o) {
        lmx_generate_options_init(&def);
        o = &def;
    }
    LMX_TRY(validate(m, prompt, n_prompt, o));
    int64_t V = m->tf.hp.n_vocab;
    gen_res res;
    lmx_status s = res_init(&res, m, o);
    lmx_gen_src *g = &res.g;
    lmx_detok *dt = NULL;
    stop_text stxt = {NULL, 0, 0, 0};
    int32_t top_ids[64], toks[34];
    float top_vals[64];
    bool from_draft[34];
    if (!s && m->tok) s = lmx_detok_new(m->tok, &dt);

    double tic = lmx_time_s(), prompt_tps = 0;
    bool split = !s && split_last_token(g, o);
    mem_tally(m, "start", g->cache);
    /* mlx-lm's split: prefill all but the last prompt token (the cache may
     * already hold a prefix); else the whole prompt, in the loop's first round. */
    if (split && n_prompt > 1)
        s = lmx_cache_run(m, g->cache, prompt, n_prompt - 1, o->prefill_step_size, o->progress, o->progress_user,
                          true, g->lp);
    if (split && !s && g->draft && n_prompt > 1)
        s = lmx_cache_run(g->draft, g->dcache, prompt, n_prompt - 1, o->prefill_step_size, NULL, NULL, true,
                          g->dlogits);
    if (!s) {
        g->recent[g->n_recent++] = prompt[n_prompt - 1];
        g->tok = g->dy[0] = prompt[n_prompt - 1];
        g->n_dy = 1;
    }
    lmx_response r;
    memset(&r, 0, sizeof r);
    r.prompt_tokens = (int)n_prompt;
    r.text = "";
    bool stopped = false;
    int have = 0, at = 0;
    for (int n = 0; !s && n < o->max_tokens; n++) {
        if (at == have) {
            s = n == 0 && !split ? prefill_first(g, prompt, n_prompt, o, toks, from_draft, &have)
                : g->draft       ? lmx_spec_produce(g, o->max_tokens - n, toks, from_draft, &have)
                                 : plain_produce(g, toks, from_draft, &have);
            if (n == 0) mem_tally(m, "first token", g->cache);
            at = 0;
            if (s) break;
        }
        const float *logits = g->lp + (int64_t)at * V;
        int32_t next = toks[at];
        r.from_draft = from_draft[at++];
        if (n == 0) {
            double dt_s = lmx_time_s() - tic;
            prompt_tps = dt_s > 0 ? (double)n_prompt / dt_s : 0;
            tic = lmx_time_s();
            if (o->progress) o->progress(n_prompt, n_prompt, o->progress_user);
        }
        r.token = next;
        r.logprob = logits[next];
        r.draft_accepted = g->accepted;
        r.draft_proposed = g->proposed;
        if (o->top_logprobs > 0) {
            r.n_top = top_k_pairs(logits, (int)V, o->top_logprobs, top_ids, top_vals);
            r.top_ids = top_ids;
            r.top_logprobs = top_vals;
        }

        r.prompt_tps = prompt_tps;
        r.generation_tokens = n + 1;
        double el = lmx_time_s() - tic;
        r.generation_tps = el > 0 ? (n + 1) / el : 0;
        r.peak_memory_gb = (double)lmx_backend_mem_peak(m->backend) / 1e9;
        r.text = "";
        r.text_len = 0;
        if (is_eos(m, o, next)) {
            r.finish_reason = LMX_FINISH_STOP;
            break;
        }
        if (dt) s = lmx_detok_add(dt, next, &r.text, &r.text_len);
        if (!s && o->n_stop_strings) {
            s = stop_append(&stxt, r.text, r.text_len);
            if (!s) stopped = stop_scan(&stxt, o, false, &r.text, &r.text_len);
        }
        if (s) break;
        r.finish_reason = n + 1 == o->max_tokens ? LMX_FINISH_LENGTH : LMX_FINISH_NONE;
        if (stopped) r.finish_reason = LMX_FINISH_STOP;
        if (r.finish_reason != LMX_FINISH_NONE) break; /* text goes out with the final response */
        if (cb && cb(&r, user)) {
            s = lmx_err(LMX_ERR_ABORTED, "generation stopped by the callback");
            break;
        }
    }
    if (!s) {
        if (o->max_tokens == 0) r.finish_reason = LMX_FINISH_LENGTH;
        /* Final response: the last token's segment (unless EOS) + the detokenizer's remainder. */
        const char *seg = "";
        size_t seg_len = 0;
        size_t head = r.finish_reason != LMX_FINISH_STOP || stopped ? r.text_len : 0;
        char *final_text = malloc(head + 1);
        if (!final_text) s = lmx_err(LMX_ERR_NOMEM, "out of memory");
        if (!s) memcpy(final_text, r.text, head); /* copy before finish() reuses the buffer */
        if (!s && dt && !stopped) s = lmx_detok_finish(dt, &seg, &seg_len);
        if (!s && o->n_stop_strings && !stopped) { /* the remainder may still complete a stop string */
            s = stop_append(&stxt, seg, seg_len);
            if (!s && stop_scan(&stxt, o, true, &seg, &seg_len)) r.finish_reason = LMX_FINISH_STOP;
        }
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
    mem_tally(m, "end", g->cache);
    if (dt) lmx_detok_free(dt);
    res_free(&res);
    free(stxt.buf);
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
