/* sampler.c - logits processors and the sampler, in mlx-lm's order (§8):
 * repetition penalty -> logprobs -> (temp 0: argmax) | top-p -> min-p ->
 * top-k -> categorical sample of logprobs / temp. Filters see the
 * untempered distribution; temperature is applied after truncation. */
#include "generate/engine.h"

#include <math.h>
#include <stdlib.h>

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void lmx_rng_seed(lmx_rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) { /* splitmix64 expands the seed */
        uint64_t z = (seed += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        r->s[i] = z ^ (z >> 31);
    }
}

double lmx_rng_uniform(lmx_rng *r) {
    uint64_t *s = r->s;
    uint64_t res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return (double)(res >> 11) * 0x1.0p-53;
}

lmx_status lmx_sampler_init(lmx_sampler *s, const lmx_generate_options *o, int vocab) {
    memset(s, 0, sizeof *s);
    if (!(o->temp >= 0) || !(o->top_p >= 0 && o->top_p <= 1) || !(o->min_p >= 0 && o->min_p <= 1) ||
        o->top_k < 0 || o->repetition_penalty < 0 || o->repetition_context_size < 0)
        return lmx_err(LMX_ERR_INVALID_ARG, "sampling options out of range (temp %g, top_p %g, min_p %g, top_k %d)",
                       o->temp, o->top_p, o->min_p, o->top_k);
    s->temp = o->temp;
    s->top_p = o->top_p;
    s->min_p = o->min_p;
    s->top_k = o->top_k;
    s->min_tokens_to_keep = o->min_tokens_to_keep > 0 ? o->min_tokens_to_keep : 1;
    s->repetition_penalty = o->repetition_penalty;
    s->repetition_context_size = o->repetition_context_size > 0 ? o->repetition_context_size : 20;
    s->vocab = vocab;
    uint64_t seed = o->has_seed ? o->seed : (uint64_t)(lmx_time_s() * 1e9);
    lmx_rng_seed(&s->rng, seed);
    s->work = malloc((size_t)vocab * sizeof *s->work);
    s->idx = malloc((size_t)vocab * sizeof *s->idx);
    s->sorted = malloc((size_t)vocab * sizeof *s->sorted);
    if (!s->work || !s->idx || !s->sorted) {
        lmx_sampler_free(s);
        return lmx_err(LMX_ERR_NOMEM, "out of memory");
    }
    return LMX_OK;
}

void lmx_sampler_free(lmx_sampler *s) {
    free(s->work);
    free(s->idx);
    free(s->sorted);
    s->work = NULL;
    s->idx = NULL;
    s->sorted = NULL;
}

void lmx_sampler_process(lmx_sampler *s, float *logits, const int32_t *recent, size_t n_recent) {
    if (s->repetition_penalty > 0 && s->repetition_penalty != 1.0f) {
        size_t from = n_recent > (size_t)s->repetition_context_size ? n_recent - (size_t)s->repetition_context_size : 0;
        for (size_t i = from; i < n_recent; i++) { /* duplicates penalised again, as mlx-lm */
            int32_t t = recent[i];
            if (t < 0 || t >= s->vocab) continue;
            logits[t] = logits[t] < 0 ? logits[t] * s->repetition_penalty : logits[t] / s->repetition_penalty;
        }
    }
}

void lmx_log_softmax(float *x, int n) {
    float mx = -INFINITY;
    for (int i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    double sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)(x[i] - mx));
    float lse = mx + (float)log(sum);
    for (int i = 0; i < n; i++) x[i] -= lse;
}

static int cmp_desc(const void *a, const void *b) {
    const lmx_scored *x = a, *y = b;
    if (x->v != y->v) return x->v < y->v ? 1 : -1;
    return x->i - y->i;
}

int32_t lmx_sampler_sample(lmx_sampler *s, const float *lp) {
    int V = s->vocab;
    if (s->temp == 0) {
        int32_t best = 0;
        for (int i = 1; i < V; i++)
            if (lp[i] > lp[best]) best = i;
        return best;
    }
    /* Sort token ids by logprob, descending; filters cut a prefix. */
    for (int i = 0; i < V; i++) {
        s->sorted[i].v = lp[i];
        s->sorted[i].i = i;
    }
    qsort(s->sorted, (size_t)V, sizeof *s->sorted, cmp_desc);
    for (int i = 0; i < V; i++) s->idx[i] = s->sorted[i].i;
    int keep = V;
    if (s->top_p > 0 && s->top_p < 1) {
        /* mlx-lm keeps tokens whose ascending cumulative mass > 1 - top_p,
         * i.e. the descending prefix whose mass before it is < top_p. */
        double total = 0, cum = 0;
        for (int i = 0; i < V; i++) total += exp(lp[s->idx[i]]);
        int k = 0;
        for (; k < keep; k++) {
            double asc_cum = total - cum; /* mass of this token and all less likely */
            if (!(asc_cum > 1.0 - s->top_p)) break;
            cum += exp(lp[s->idx[k]]);
        }
        keep = k > 0 ? k : 1;
    }
    if (s->min_p > 0) {
        float thr = lp[s->idx[0]] + logf(s->min_p);
        int k = 0;
        while (k < keep && lp[s->idx[k]] >= thr) k++;
        if (k < s->min_tokens_to_keep) k = s->min_tokens_to_keep < keep ? s->min_tokens_to_keep : keep;
        keep = k;
    }
    if (s->top_k > 0 && s->top_k < keep) keep = s->top_k;
    /* Categorical over the kept tokens with logits lp / temp. */
    double mx = lp[s->idx[0]] / s->temp, sum = 0;
    for (int i = 0; i < keep; i++) sum += (s->work[i] = (float)exp(lp[s->idx[i]] / s->temp - mx));
    double r = lmx_rng_uniform(&s->rng) * sum, acc = 0;
    for (int i = 0; i < keep; i++) {
        acc += s->work[i];
        if (r < acc) return s->idx[i];
    }
    return s->idx[keep - 1];
}
