/* sampler_device.c - greedy decoding with the logits left on the device.
 *
 * On CUDA a plain greedy step downloads 20 bytes (the device's argmax,
 * runner-up and log-sum-exp: backend/cuda/cuda_sample.cu) instead of the
 * V-float logits row, and skips the host's log-softmax over it. The token
 * must be the one the host pipeline picks, so the device's answer is used
 * only when lmx_greedy_pick_exact proves it; otherwise (a near tie, a
 * non-finite logit) the row comes back and the host pipeline runs as usual.
 *
 * The logits processors (logit bias, repetition / presence / frequency
 * penalties) edit the device's row first: lmx_sampler_edits lists the
 * host's operations and lmx_cuda_logits_edit applies them in order with the
 * same f32 rounding, so the row is the host's bit for bit.
 *
 * Sampled decoding (temperature > 0 with top-p / min-p / top-k, no XTC)
 * runs the same pipeline on the device (cuda_sample_topp.cu) with the
 * uniform the host's generator draws, so the random stream advances as on
 * the host; the device sums the host's terms in another order, so its token
 * is the host's except where the draw falls within rounding of a boundary
 * between two tokens (measured in tests/gpu/test_device_sampler.c), and a
 * seed repeats its stream on the device. LMX_DEVICE_SAMPLER=host keeps
 * sampled decoding on the host (greedy stays on the device). */
#include "backend/cuda/cuda.h"
#include "generate/engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* CUDA, the switch not "0", and no processor or output that needs the row. */
static bool device_pick_usable(const lmx_model *m, const lmx_generate_options *o) {
    if (lmx_backend_is_host(m->backend) || !m->backend->name || strcmp(m->backend->name, "cuda")) return false;
    const char *env = getenv("LMX_DEVICE_SAMPLER"); /* "0": the host pipeline (A/B timing, a safety switch) */
    if (env && !strcmp(env, "0")) return false;
    /* logit bias and penalties are edits of the device's row (lmx_cuda_logits_edit) */
    return o->top_logprobs <= 0 && !o->draft_model;
}

bool lmx_sampler_has_edits(const lmx_sampler *s) {
    bool repetition = s->repetition_penalty > 0 && s->repetition_penalty != 1.0f;
    return s->n_bias || repetition || s->presence_penalty != 0 || s->frequency_penalty != 0;
}

/* The step's logits processors applied to the device's row (the host's
 * edits, the host's bits); *processed: the row is no longer raw logits. */
static lmx_status device_edits(lmx_model *m, lmx_sampler *s, const int32_t *recent, size_t n_recent,
                               const lmx_array *lg, bool *processed) {
    *processed = false;
    if (!lmx_sampler_has_edits(s)) return LMX_OK;
    for (size_t from = 0;; from += s->ops_cap) { /* chunk by chunk, in order (lmx_sampler_edits) */
        size_t total = lmx_sampler_edits(s, recent, n_recent, from);
        if (total > from)
            LMX_TRY(lmx_cuda_logits_edit(m->backend, lg, s->ops, total - from < s->ops_cap ? total - from : s->ops_cap));
        if (total <= from || total - from <= s->ops_cap) break;
    }
    *processed = true;
    return LMX_OK;
}

bool lmx_device_greedy_usable(const lmx_model *m, const lmx_generate_options *o, const lmx_sampler *s) {
    return s->temp == 0 && device_pick_usable(m, o);
}

bool lmx_device_sample_usable(const lmx_model *m, const lmx_generate_options *o, const lmx_sampler *s) {
    const char *env = getenv("LMX_DEVICE_SAMPLER");
    if (env && !strcmp(env, "host")) return false;
    return s->temp > 0 && isfinite(s->temp) && s->xtc_probability <= 0 && device_pick_usable(m, o);
}

lmx_status lmx_device_sample(lmx_model *m, lmx_sampler *s, const int32_t *recent, size_t n_recent, int32_t *tok,
                             float *logprobs, bool *decided, bool *processed) {
    *decided = false;
    lmx_array lg;
    LMX_TRY(lmx_scratch_logits(m->scratch, 1, &lg));
    LMX_TRY(device_edits(m, s, recent, n_recent, &lg, processed));
    lmx_rng before = s->rng; /* the host pipeline draws again if the device declines */
    double u = lmx_rng_uniform(&s->rng);
    int32_t id = -1;
    float lp = 0;
    LMX_TRY(lmx_cuda_sample(m->backend, &lg, s->temp, s->top_p, s->top_k, s->min_p, s->min_tokens_to_keep, u, &id,
                            &lp));
    if (id >= 0 && id < m->tf.hp.n_vocab) {
        *tok = id;
        logprobs[id] = lp;
        *decided = true;
        return LMX_OK;
    }
    s->rng = before;
    return lmx_array_download(m->backend, &lg, logprobs);
}

/* The host takes argmax_i fl(x_i - L), L its log-sum-exp (>= max, and
 * L - max <= log V). fl() is monotone, so only logits within a rounding
 * step of max can tie with it. Every |x_i - L| that matters is below
 * B = (lse - max) + 1 < 2^e (the +1 covers the gap between the device's
 * lse and the host's L, ~1e-5), where one f32 step is at most 2^(e-24);
 * a runner-up more than delta = 2^(e-21) (8 steps) below max therefore
 * rounds strictly below fl(max - L), and the device's index (the first
 * maximum, as the host's loop keeps) is the host's. */
bool lmx_greedy_pick_exact(float max, float second, float lse, int n_nonfinite) {
    if (n_nonfinite != 0 || !isfinite(max) || !isfinite(lse)) return false;
    double span = (double)lse - max;
    if (!(span >= 0 && span < 64)) return false;
    int e;
    frexp(span + 1.0, &e);
    double delta = ldexp(1.0, e - 21);
    return (double)max - (double)second > delta; /* second = -inf (V = 1) passes */
}

lmx_status lmx_device_greedy_finish(lmx_model *m, const lmx_cuda_pick *p, int32_t *tok, float *logprobs,
                                    bool *decided) {
    *decided = false;
    if (p->id >= 0 && p->id < m->tf.hp.n_vocab && lmx_greedy_pick_exact(p->max, p->second, p->lse, p->n_nonfinite)) {
        *tok = p->id;
        logprobs[p->id] = p->max - p->lse;
        *decided = true;
        return LMX_OK;
    }
    lmx_array lg;
    LMX_TRY(lmx_scratch_logits(m->scratch, 1, &lg));
    return lmx_array_download(m->backend, &lg, logprobs);
}

lmx_status lmx_device_greedy(lmx_model *m, lmx_sampler *s, const int32_t *recent, size_t n_recent, int32_t *tok,
                             float *logprobs, bool *decided, bool *processed) {
    *decided = false;
    lmx_array lg;
    LMX_TRY(lmx_scratch_logits(m->scratch, 1, &lg));
    *processed = false;
    if (s) LMX_TRY(device_edits(m, s, recent, n_recent, &lg, processed));
    lmx_cuda_pick p;
    LMX_TRY(lmx_cuda_greedy(m->backend, &lg, &p));
    return lmx_device_greedy_finish(m, &p, tok, logprobs, decided);
}
