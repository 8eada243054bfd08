/* sampler.c - logits processors and the sampler, in mlx-lm's order (§8):
 * logit bias -> repetition -> presence -> frequency penalties -> logprobs ->
 * (temp 0: argmax) | top-p -> min-p -> XTC -> top-k -> categorical sample of
 * logprobs / temp. Filters see the untempered distribution; temperature is
 * applied after truncation, as mlx_lm.sample_utils does. */
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
        o->top_k < 0 || !(o->repetition_penalty >= 0) || o->repetition_context_size < 0 ||
        o->presence_context_size < 0 || o->frequency_context_size < 0 || !isfinite(o->presence_penalty) ||
        !isfinite(o->frequency_penalty))
        return lmx_err(LMX_ERR_INVALID_ARG, "sampling options out of range (temp %g, top_p %g, min_p %g, top_k %d)",
                       o->temp, o->top_p, o->min_p, o->top_k);
    if (!(o->xtc_probability >= 0 && o->xtc_probability <= 1) || !(o->xtc_threshold >= 0 && o->xtc_threshold <= 0.5))
        return lmx_err(LMX_ERR_INVALID_ARG, "xtc: probability must be in [0, 1] and threshold in [0, 0.5]");
    for (size_t i = 0; i < o->n_logit_bias; i++)
        if (o->logit_bias_ids[i] < 0 || o->logit_bias_ids[i] >= vocab || !isfinite(o->logit_bias_values[i]))
            return lmx_err(LMX_ERR_INVALID_ARG, "logit_bias: token %d is outside the vocabulary or its bias is not finite",
                           o->logit_bias_ids[i]);
    s->temp = o->temp;
    s->top_p = o->top_p;
    s->min_p = o->min_p;
    s->top_k = o->top_k;
    s->min_tokens_to_keep = o->min_tokens_to_keep > 0 ? o->min_tokens_to_keep : 1;
    s->repetition_penalty = o->repetition_penalty;
    s->repetition_context_size = o->repetition_context_size > 0 ? o->repetition_context_size : 20;
    s->presence_penalty = o->presence_penalty;
    s->presence_context_size = o->presence_context_size > 0 ? o->presence_context_size : 20;
    s->frequency_penalty = o->frequency_penalty;
    s->frequency_context_size = o->frequency_context_size > 0 ? o->frequency_context_size : 20;
    s->bias_ids = o->logit_bias_ids;
    s->bias_values = o->logit_bias_values;
    s->n_bias = o->n_logit_bias;
    s->xtc_probability = o->xtc_probability;
    s->xtc_threshold = o->xtc_threshold;
    s->xtc_special = o->xtc_special;
    s->n_xtc_special = o->n_xtc_special;
    s->vocab = vocab;
    uint64_t seed = o->has_seed ? o->seed : (uint64_t)(lmx_time_s() * 1e9);
    lmx_rng_seed(&s->rng, seed);
    s->work = malloc((size_t)vocab * sizeof *s->work);
    s->sorted = malloc((size_t)vocab * sizeof *s->sorted);
    s->seen = calloc((size_t)vocab, 1);
    /* room for one chunk of edits: a step with more (long windows, many biases) is listed chunk by chunk
     * (lmx_sampler_edits' from), so no context size makes this allocation large */
    s->ops_cap = 256;
    s->ops = malloc(s->ops_cap * sizeof *s->ops);
    if (!s->work || !s->sorted || !s->seen || !s->ops) {
        lmx_sampler_free(s);
        return lmx_err(LMX_ERR_NOMEM, "out of memory");
    }
    return LMX_OK;
}

void lmx_sampler_free(lmx_sampler *s) {
    free(s->work);
    free(s->sorted);
    free(s->seen);
    free(s->ops);
    s->work = NULL;
    s->sorted = NULL;
    s->seen = NULL;
    s->ops = NULL;
}

static size_t window_start(size_t n, int ctx) { return n > (size_t)ctx ? n - (size_t)ctx : 0; }

/* Edit number *n goes into s->ops when it lies in the chunk [from, from + ops_cap). */
static void put(lmx_sampler *s, size_t *n, size_t from, int32_t kind, int32_t id, float v) {
    if (*n >= from && *n - from < s->ops_cap) s->ops[*n - from] = (lmx_logit_op){kind, id, v};
    (*n)++;
}

size_t lmx_sampler_edits(lmx_sampler *s, const int32_t *recent, size_t n_recent, size_t from) {
    size_t n = 0;
    for (size_t i = 0; i < s->n_bias; i++) put(s, &n, from, LMX_LOGIT_ADD, s->bias_ids[i], s->bias_values[i]);
    /* Repetition and presence act once per distinct id (MLX's scatter
     * assignment), frequency once per occurrence (scatter-add). */
    if (s->repetition_penalty > 0 && s->repetition_penalty != 1.0f) {
        size_t w0 = window_start(n_recent, s->repetition_context_size);
        for (size_t i = w0; i < n_recent; i++) {
            int32_t t = recent[i];
            if (t < 0 || t >= s->vocab || s->seen[t]) continue;
            s->seen[t] = 1;
            put(s, &n, from, LMX_LOGIT_REPEAT, t, s->repetition_penalty);
        }
        for (size_t i = w0; i < n_recent; i++)
            if (recent[i] >= 0 && recent[i] < s->vocab) s->seen[recent[i]] = 0;
    }
    if (s->presence_penalty != 0) {
        size_t w0 = window_start(n_recent, s->presence_context_size);
        for (size_t i = w0; i < n_recent; i++) {
            int32_t t = recent[i];
            if (t < 0 || t >= s->vocab || s->seen[t]) continue;
            s->seen[t] = 1;
            put(s, &n, from, LMX_LOGIT_SUB, t, s->presence_penalty);
        }
        for (size_t i = w0; i < n_recent; i++)
            if (recent[i] >= 0 && recent[i] < s->vocab) s->seen[recent[i]] = 0;
    }
    if (s->frequency_penalty != 0) {
        for (size_t i = window_start(n_recent, s->frequency_context_size); i < n_recent; i++)
            if (recent[i] >= 0 && recent[i] < s->vocab) put(s, &n, from, LMX_LOGIT_SUB, recent[i], s->frequency_penalty);
    }
    return n;
}

void lmx_sampler_process(lmx_sampler *s, float *logits, const int32_t *recent, size_t n_recent) {
    for (size_t from = 0;; from += s->ops_cap) {
        size_t total = lmx_sampler_edits(s, recent, n_recent, from);
        for (size_t i = 0; from + i < total && i < s->ops_cap; i++)
            logits[s->ops[i].id] = lmx_logit_op_apply(logits[s->ops[i].id], &s->ops[i]);
        if (total <= from || total - from <= s->ops_cap) break;
    }
}

/* exp for x <= 0 (x - max), vectorisable: 2^(x·log2 e) split into an
 * integer power built in the exponent bits and a degree-6 polynomial on
 * [-0.5, 0.5]; relative error < 2e-7 near 0 and < 4e-6 down to -87 (the
 * float product x·log2 e), where terms no longer matter to a sum. The
 * libm expf call in this loop cost ~0.8 ms per token on a 128k vocabulary. */
static inline float exp_nonpos(float x) {
    if (x < -87.0f) x = -87.0f;
    float t = x * 1.44269504088896341f;
    int32_t k = (int32_t)(t - 0.5f); /* round to nearest for t <= 0 */
    float f = (t - (float)k) * 0.69314718055994531f;
    float p = 1.0f + f * (1.0f + f * (0.5f + f * (1.0f / 6 + f * (1.0f / 24 + f * (1.0f / 120 + f * (1.0f / 720))))));
    int32_t bits = (k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, 4);
    return p * scale;
}

void lmx_log_softmax(float *x, int n) {
    float mx = -INFINITY;
    for (int i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    float acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) acc[j] += exp_nonpos(x[i + j] - mx);
    double sum = 0;
    for (; i < n; i++) sum += exp_nonpos(x[i] - mx);
    for (int j = 0; j < 8; j++) sum += acc[j];
    float lse = mx + (float)log(sum);
    for (i = 0; i < n; i++) x[i] -= lse;
}

static int cmp_desc(const void *a, const void *b) {
    const lmx_scored *x = a, *y = b;
    if (x->v != y->v) return x->v < y->v ? 1 : -1;
    return x->i - y->i;
}

static bool is_xtc_special(const lmx_sampler *s, int32_t id) {
    for (size_t i = 0; i < s->n_xtc_special; i++)
        if (s->xtc_special[i] == id) return true;
    return false;
}

int32_t lmx_sampler_sample(lmx_sampler *s, const float *lp) {
    int V = s->vocab;
    if (s->temp == 0) {
        int32_t best = 0;
        for (int i = 1; i < V; i++)
            if (lp[i] > lp[best]) best = i;
        return best;
    }
    /* Candidates sorted by logprob, descending; a filter either cuts the
     * list (top-p, min-p, top-k keep a prefix) or removes entries (XTC). */
    for (int i = 0; i < V; i++) {
        s->sorted[i].v = lp[i];
        s->sorted[i].i = i;
    }
    qsort(s->sorted, (size_t)V, sizeof *s->sorted, cmp_desc);
    int keep = V;
    if (s->top_p > 0 && s->top_p < 1) {
        /* keep a token iff the mass of strictly more likely tokens < top_p·total */
        double total = 0, above = 0;
        for (int i = 0; i < V; i++) total += exp(s->sorted[i].v);
        int k = 0;
        while (k < V && above < s->top_p * total) above += exp(s->sorted[k++].v);
        float thr = s->sorted[k > 0 ? k - 1 : 0].v; /* ties with the threshold stay */
        while (k < V && s->sorted[k].v >= thr) k++;
        keep = k > 0 ? k : 1;
    }
    if (s->min_p > 0) {
        float thr = s->sorted[0].v + logf(s->min_p);
        int k = 0;
        while (k < keep && s->sorted[k].v >= thr) k++;
        if (k < s->min_tokens_to_keep) k = s->min_tokens_to_keep < keep ? s->min_tokens_to_keep : keep;
        keep = k;
    }
    if (s->xtc_probability > 0 && lmx_rng_uniform(&s->rng) <= s->xtc_probability) {
        /* remove every token above the threshold except the least likely of
         * them; "\n" and EOS are never removed */
        double lt = log(s->xtc_threshold);
        int above = 0;
        while (above < keep && s->sorted[above].v > lt) above++;
        if (above > 1) {
            int w = 0;
            for (int i = 0; i < keep; i++)
                if (i >= above - 1 || is_xtc_special(s, s->sorted[i].i)) s->sorted[w++] = s->sorted[i];
            keep = w;
        }
    }
    if (s->top_k > 0 && s->top_k < keep) keep = s->top_k;
    /* Categorical over the kept tokens with logits lp / temp. */
    double mx = s->sorted[0].v / s->temp, sum = 0;
    for (int i = 0; i < keep; i++) sum += (s->work[i] = (float)exp(s->sorted[i].v / s->temp - mx));
    double r = lmx_rng_uniform(&s->rng) * sum, acc = 0;
    for (int i = 0; i < keep; i++) {
        acc += s->work[i];
        if (r < acc) return s->sorted[i].i;
    }
    return s->sorted[keep - 1].i;
}
