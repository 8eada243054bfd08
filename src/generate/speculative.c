/* speculative.c - one round of speculative decoding, as mlx-lm's
 * speculative_generate_step:
 *
 *   the draft proposes k = min(left, K) tokens d1..dk, one forward pass each;
 *   the model runs [y, d1..dk] in one pass and samples t0..tk, each row
 *   through the logits processors with the drafts before it as context;
 *   the longest prefix with t_i == d_(i+1) is kept, plus t_n (the model's own
 *   token at the first disagreement, or the bonus token) unless k reached
 *   `left`; both caches are trimmed by what was rejected.
 *
 * With temp 0 every kept token is the model's argmax given the true prefix,
 * so the output is plain greedy decoding's (up to the rounding of a k+1-row
 * pass vs single rows). */
#include "generate/engine.h"

static lmx_status trim_exact(lmx_cache *c, int64_t n) {
    if (n <= 0) return LMX_OK;
    if (lmx_kv_trim(&c->kv, n) != n)
        return lmx_err(LMX_ERR_UNSUPPORTED, "speculative decoding needs a trimmable KV cache "
                                            "(a rotating cache that wrapped is not)");
    return LMX_OK;
}

lmx_status lmx_spec_produce(lmx_gen_src *g, int max_left, int32_t *toks, bool *from_draft, int *count) {
    lmx_model *m = g->m, *dm = g->draft;
    int64_t V = m->tf.hp.n_vocab;
    int k = max_left < g->K ? max_left : g->K;
    int32_t *d = g->seq + 1; /* seq = [y, d1..dk] */
    /* Draft: k greedy-by-sampler steps. */
    for (int i = 0; i < k; i++) {
        LMX_TRY(lmx_transformer_forward(&dm->ex, &dm->tf, &g->dcache->kv, &dm->scratch, g->dy, g->n_dy, false,
                                        g->dlogits));
        for (int j = 0; j < i; j++) g->recent[g->n_recent + j] = d[j];
        lmx_sampler_process(g->dsmp, g->dlogits, g->recent, g->n_recent + (size_t)i);
        lmx_log_softmax(g->dlogits, (int)V);
        d[i] = lmx_sampler_sample(g->dsmp, g->dlogits);
        g->dy[0] = d[i];
        g->n_dy = 1;
    }
    /* Verify: all k+1 rows in one pass. */
    g->seq[0] = g->tok;
    LMX_TRY(lmx_transformer_forward(&m->ex, &m->tf, &g->cache->kv, &m->scratch, g->seq, k + 1, true, g->lp));
    int n = 0;
    int32_t t = 0;
    for (int i = 0; i <= k; i++) {
        float *row = g->lp + (int64_t)i * V;
        for (int j = 0; j < i; j++) g->recent[g->n_recent + j] = d[j];
        lmx_sampler_process(g->smp, row, g->recent, g->n_recent + (size_t)i);
        lmx_log_softmax(row, (int)V);
        t = lmx_sampler_sample(g->smp, row);
        toks[i] = t;
        from_draft[i] = i < k && t == d[i];
        if (i == k || t != d[i]) break;
        n++;
    }
    g->proposed += k;
    g->accepted += n;
    *count = n < max_left ? n + 1 : n; /* no bonus token past max_tokens */
    for (int i = 0; i < *count; i++) g->recent[g->n_recent++] = toks[i];
    /* Rewind what was rejected: the model holds y, d1..dk; the draft y', d1..d(k-1). */
    LMX_TRY(trim_exact(g->cache, k - n));
    LMX_TRY(trim_exact(g->dcache, k - n - 1 > 0 ? k - n - 1 : 0));
    g->tok = toks[n];
    if (n == k && k > 0) { /* dk was never fed to the draft */
        g->dy[0] = d[k - 1];
        g->dy[1] = toks[n];
        g->n_dy = 2;
    } else {
        g->dy[0] = toks[n];
        g->n_dy = 1;
    }
    return LMX_OK;
}
