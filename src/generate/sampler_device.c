/* sampler_device.c - greedy decoding with the logits left on the device.
 *
 * On CUDA a plain greedy step downloads 20 bytes (the device's argmax,
 * runner-up and log-sum-exp: backend/cuda/cuda_sample.cu) instead of the
 * V-float logits row, and skips the host's log-softmax over it. The token
 * must be the one the host pipeline picks, so the device's answer is used
 * only when lmx_greedy_pick_exact proves it; otherwise (a near tie, a
 * non-finite logit) the row comes back and the host pipeline runs as usual.
 *
 * Sampled decoding (temperature > 0) stays on the host: its draw walks the
 * whole vocabulary in sorted order, summing libm exp() in double over
 * logprobs whose log-sum-exp is itself a particular sequence of f32 sums;
 * a device version would pick the same token except at rare rounding
 * boundaries, not always, and the seeded streams are meant to repeat. */
#include "backend/cuda/cuda.h"
#include "generate/engine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

bool lmx_device_greedy_usable(const lmx_model *m, const lmx_generate_options *o, const lmx_sampler *s) {
    if (lmx_backend_is_host(m->backend) || !m->backend->name || strcmp(m->backend->name, "cuda")) return false;
    const char *env = getenv("LMX_DEVICE_SAMPLER"); /* "0": the host pipeline (A/B timing, a safety switch) */
    if (env && !strcmp(env, "0")) return false;
    if (s->temp != 0 || o->top_logprobs > 0 || o->draft_model) return false;
    bool repetition = s->repetition_penalty > 0 && s->repetition_penalty != 1.0f;
    return !s->n_bias && !repetition && s->presence_penalty == 0 && s->frequency_penalty == 0;
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

lmx_status lmx_device_greedy(lmx_model *m, int32_t *tok, float *logprobs, bool *decided) {
    *decided = false;
    lmx_array lg;
    LMX_TRY(lmx_scratch_logits(m->scratch, 1, &lg));
    lmx_cuda_pick p;
    LMX_TRY(lmx_cuda_greedy(m->backend, &lg, &p));
    return lmx_device_greedy_finish(m, &p, tok, logprobs, decided);
}
