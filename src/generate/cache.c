/* cache.c - lmx_cache: the public handle over a model's KV cache
 * (models/kv_cache.c), its options and the chunked prefill. Files are
 * prompt_cache.c. */
#include "generate/engine.h"

#include <stdlib.h>

void lmx_cache_options_init(lmx_cache_options *o) {
    memset(o, 0, sizeof *o);
    o->kv_group_size = 64;
    o->quantized_kv_start = 5000;
}

/* Rotating caches keep 4 sink tokens (mlx-lm's make_prompt_cache). */
#define LMX_KV_KEEP 4

lmx_status lmx_cache_new(lmx_model *m, const lmx_cache_options *o, lmx_cache **out) {
    *out = NULL;
    lmx_cache_options def;
    if (!o) {
        lmx_cache_options_init(&def);
        o = &def;
    }
    if (o->max_kv_size < 0) return lmx_err(LMX_ERR_INVALID_ARG, "max_kv_size: %d is negative", o->max_kv_size);
    if (o->max_kv_size > 0 && o->max_kv_size <= LMX_KV_KEEP)
        return lmx_err(LMX_ERR_INVALID_ARG, "max_kv_size: %d must exceed the %d kept tokens", o->max_kv_size,
                       LMX_KV_KEEP);
    if (o->kv_bits && o->quantized_kv_start < 0)
        return lmx_err(LMX_ERR_INVALID_ARG, "quantized_kv_start: %d is negative", o->quantized_kv_start);
    lmx_cache *c = calloc(1, sizeof *c);
    if (!c) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    c->model = m;
    c->opts = *o;
    const lmx_hparams *hp = &m->tf.hp;
    lmx_kv_config cfg = {o->max_kv_size, LMX_KV_KEEP, o->kv_bits, o->kv_group_size, o->quantized_kv_start};
    lmx_status s = lmx_kv_cache_init(&c->kv, m->backend, hp->n_layer, hp->n_kv_head, hp->head_dim, &cfg);
    if (s) {
        free(c);
        return s;
    }
    *out = c;
    return LMX_OK;
}

void lmx_cache_free(lmx_cache *c) {
    if (!c) return;
    lmx_kv_cache_free(&c->kv);
    for (size_t i = 0; i < 2 * c->n_meta; i++) free(c->meta[i]);
    free(c->meta);
    free(c);
}

size_t lmx_cache_length(const lmx_cache *c) { return (size_t)c->kv.offset; }

static size_t array_bytes(const lmx_array *a) {
    return lmx_array_empty(a) ? 0 : lmx_dtype_bytes(a->dtype, lmx_array_numel(a));
}

size_t lmx_cache_nbytes(const lmx_cache *c) {
    const lmx_kv_cache *kv = &c->kv;
    size_t total = array_bytes(&kv->deq_k) + array_bytes(&kv->deq_v) + array_bytes(&kv->tmp);
    for (int l = 0; l < kv->n_layer; l++) {
        if (kv->k) total += array_bytes(&kv->k[l]) + array_bytes(&kv->v[l]);
        if (kv->kq && kv->kq[l]) { /* packed codes plus f32 scales and biases, keys and values */
            size_t rows = (size_t)kv->capacity * (size_t)kv->n_kv_head;
            total += 2 * rows * ((size_t)kv->head_dim * (size_t)kv->kv_bits / 32 * 4 +
                                 2 * (size_t)(kv->head_dim / kv->group_size) * sizeof(float));
        }
    }
    return total;
}
bool lmx_cache_trimmable(const lmx_cache *c) { return lmx_kv_trimmable(&c->kv); }

size_t lmx_cache_trim(lmx_cache *c, size_t n) {
    if (n > (size_t)INT64_MAX) n = (size_t)INT64_MAX;
    return (size_t)lmx_kv_trim(&c->kv, (int64_t)n);
}

const char *lmx_cache_metadata(const lmx_cache *c, const char *key) {
    for (size_t i = 0; i < c->n_meta; i++)
        if (!strcmp(c->meta[2 * i], key)) return c->meta[2 * i + 1];
    return NULL;
}

void lmx_cache_get_options(const lmx_cache *c, lmx_cache_options *o) { *o = c->opts; }

lmx_status lmx_cache_check(const lmx_model *m, const lmx_cache *c) {
    if (c->model != m)
        return lmx_err(LMX_ERR_INVALID_ARG, "cache: made for another model instance (caches are bound to their model)");
    return LMX_OK;
}

lmx_status lmx_cache_run(lmx_model *m, lmx_cache *c, const int32_t *tokens, size_t n, int step,
                         void (*progress)(size_t, size_t, void *), void *user, bool last_progress, float *logits) {
    LMX_TRY(lmx_cache_check(m, c));
    if (step <= 0) step = 2048;
    for (size_t i = 0; i < n; i += (size_t)step) {
        int64_t T = (int64_t)(n - i) < step ? (int64_t)(n - i) : step;
        bool last = i + (size_t)T == n;
        LMX_TRY(lmx_transformer_forward(&m->ex, &m->tf, &c->kv, &m->scratch, tokens + i, T, false,
                                        last ? logits : NULL));
        if (progress && (!last || last_progress)) progress(i + (size_t)T, n, user);
    }
    return LMX_OK;
}

static lmx_status check_ids(const lmx_model *m, const int32_t *ids, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->tf.hp.n_vocab)
            return lmx_err(LMX_ERR_INVALID_ARG, "token %zu: id %d is outside the vocabulary [0, %d)", i, ids[i],
                           m->tf.hp.n_vocab);
    return LMX_OK;
}

lmx_status lmx_cache_prefill(lmx_model *m, lmx_cache *c, const int32_t *tokens, size_t n,
                             const lmx_generate_options *o) {
    LMX_TRY(check_ids(m, tokens, n));
    return lmx_cache_run(m, c, tokens, n, o ? o->prefill_step_size : 2048, o ? o->progress : NULL,
                         o ? o->progress_user : NULL, true, NULL);
}

lmx_status lmx_cache_prefill_logits(lmx_model *m, lmx_cache *c, const int32_t *tokens, size_t n, float *logits) {
    if (n == 0) return lmx_err(LMX_ERR_INVALID_ARG, "prefill: no tokens");
    LMX_TRY(check_ids(m, tokens, n));
    return lmx_cache_run(m, c, tokens, n, 2048, NULL, NULL, true, logits);
}

lmx_status lmx_cache_set_kv_bits(lmx_cache *c, int kv_bits, int kv_group_size, int quantized_kv_start) {
    if (kv_bits == 0) return LMX_OK;
    if (c->kv.kind != LMX_KV_STANDARD || c->kv.kv_bits)
        return lmx_err(LMX_ERR_INVALID_ARG, "kv_bits: only a float, unbounded cache can be switched to quantized");
    if (quantized_kv_start < 0) return lmx_err(LMX_ERR_INVALID_ARG, "quantized_kv_start: %d is negative", quantized_kv_start);
    lmx_kv_cache probe;
    lmx_kv_config cfg = {0, 0, kv_bits, kv_group_size, quantized_kv_start};
    LMX_TRY(lmx_kv_cache_init(&probe, NULL, 1, c->kv.n_kv_head, c->kv.head_dim, &cfg)); /* validates */
    lmx_kv_cache_free(&probe);
    if (c->kv.backend) return lmx_err(LMX_ERR_UNSUPPORTED, "kv_bits: a quantized KV cache is host-only so far");
    c->kv.kv_bits = kv_bits;
    c->kv.group_size = kv_group_size;
    c->kv.quantized_start = quantized_kv_start;
    c->opts.kv_bits = kv_bits;
    c->opts.kv_group_size = kv_group_size;
    c->opts.quantized_kv_start = quantized_kv_start;
    if (c->kv.offset >= quantized_kv_start) return lmx_kv_quantize_now(&c->kv);
    return LMX_OK;
}
