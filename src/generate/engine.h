/*
 * engine.h - the loaded model behind the public lmx_model handle, and the
 * pieces of generation (sampler, logits processors).
 */
#ifndef LMX_GENERATE_ENGINE_H
#define LMX_GENERATE_ENGINE_H

#include "core/logit_op.h"
#include "models/arch.h"
#include "models/decode_graph.h"
#include "tokenizer/tokenizer.h"

struct lmx_model {
    char *path;
    lmx_config *cfg;   /* NULL for GGUF */
    lmx_st_set *st;    /* folder weights */
    lmx_gguf *gguf;    /* GGUF file */
    struct lmx_weights_src wsrc;
    lmx_transformer tf;
    lmx_tokenizer *tok; /* NULL when the model folder has none */
    lmx_backend *backend;
    lmx_exec ex;
    lmx_scratch *scratch;
    lmx_decode_graph dgraph; /* greedy decode steps as one CUDA graph (models/decode_graph.c) */
    struct lmx_adapters *adapters; /* attached adapters (models/adapters.h), or NULL */
    int32_t *eos; /* stop ids: generation_config > config > tokenizer */
    size_t n_eos;
};

/* cache.c: the public KV cache handle. */
struct lmx_cache {
    const lmx_model *model; /* the model it was made for */
    lmx_kv_cache kv;
    lmx_cache_options opts;
    char **meta; /* user metadata of a loaded file: key, value, ... */
    size_t n_meta;
};

/* Checks that c belongs to m. */
lmx_status lmx_cache_check(const lmx_model *m, const lmx_cache *c);
/* Runs tokens[0..n) through the model into c in chunks of step; the last
 * token's logits (V floats) into logits, or, when logits is NULL, left in
 * the model's step scratch (where a device greedy pick reads them).
 * progress(done, n) after each chunk; after the last one only when
 * last_progress (generation reports n of n with its first token). */
lmx_status lmx_cache_run(lmx_model *m, lmx_cache *c, const int32_t *tokens, size_t n, int step,
                         void (*progress)(size_t, size_t, void *), void *user, bool last_progress, float *logits);

/* The decoding loop's token source (generate.c): one token per target
 * forward pass, or a speculative round (speculative.c) of up to K+1. */
typedef struct lmx_gen_src {
    lmx_model *m, *draft;
    lmx_cache *cache, *dcache;
    struct lmx_sampler *smp, *dsmp;
    int32_t *recent; /* last prompt token + generated (the processors' context) */
    size_t n_recent;
    int32_t tok;     /* the target's next input */
    int32_t dy[2];   /* the draft's next inputs */
    int n_dy, K;
    float *lp;       /* (K+1) × V: processed logprobs of the tokens produced */
    float *dlogits;  /* V */
    int32_t *seq;    /* K+1 */
    int accepted, proposed;
    bool device_greedy; /* plain steps pick on the device (sampler_device.c) */
    bool device_sample; /* plain steps draw on the device (sampler_device.c) */
} lmx_gen_src;

/* Up to max_left next tokens (count >= 1): ids, their logprobs in g->lp rows. */
lmx_status lmx_spec_produce(lmx_gen_src *g, int max_left, int32_t *toks, bool *from_draft, int *count);

/* sampler.c ---------------------------------------------------------------- */

/* xoshiro256** state: fast, good quality, reproducible from a 64-bit seed. */
typedef struct lmx_rng {
    uint64_t s[4];
} lmx_rng;
void lmx_rng_seed(lmx_rng *r, uint64_t seed);
double lmx_rng_uniform(lmx_rng *r); /* [0, 1) */

typedef struct lmx_scored {
    float v;
    int32_t i;
} lmx_scored;

typedef struct lmx_sampler {
    float temp, top_p, min_p;
    int top_k, min_tokens_to_keep;
    float repetition_penalty, presence_penalty, frequency_penalty;
    int repetition_context_size, presence_context_size, frequency_context_size;
    const int32_t *bias_ids;
    const float *bias_values;
    size_t n_bias;
    float xtc_probability, xtc_threshold;
    const int32_t *xtc_special;
    size_t n_xtc_special;
    uint8_t *seen; /* V flags, scratch for the penalties */
    lmx_logit_op *ops; /* the processors' edits of one step (lmx_sampler_edits) */
    size_t ops_cap;
    lmx_rng rng;
    float *work;   /* V floats */
    lmx_scored *sorted; /* V pairs */
    int vocab;
} lmx_sampler;

lmx_status lmx_sampler_init(lmx_sampler *s, const lmx_generate_options *o, int vocab);
void lmx_sampler_free(lmx_sampler *s);
/* Applies the logits processors in mlx-lm's order to logits (in place),
 * given the recent tokens (last prompt token + generated). */
void lmx_sampler_process(lmx_sampler *s, float *logits, const int32_t *recent, size_t n_recent);
/* The same processors as a list of edits (core/logit_op.h) in the order
 * lmx_sampler_process applies them: edits [from, from + s->ops_cap) go into
 * s->ops; returns how many edits the step makes in all (a caller walks the
 * chunks from 0 in steps of ops_cap). */
size_t lmx_sampler_edits(lmx_sampler *s, const int32_t *recent, size_t n_recent, size_t from);
/* logits -> logprobs in place (logits - logsumexp). */
void lmx_log_softmax(float *x, int n);
/* Picks the next token from logprobs (temp 0 = argmax). */
int32_t lmx_sampler_sample(lmx_sampler *s, const float *logprobs);

/* sampler_device.c: greedy decoding with the logits left on the device. */

/* True when m runs on CUDA, LMX_DEVICE_SAMPLER is not "0", and nothing
 * needs the whole distribution on the host: temperature 0, no top_logprobs,
 * no draft model (logit bias and penalties edit the device's row). */
bool lmx_device_greedy_usable(const lmx_model *m, const lmx_generate_options *o, const lmx_sampler *s);
/* True when the host pipeline (log-softmax, then the first index of the
 * largest logprob) must pick the logit max's index too: finite row and the
 * runner-up (the largest logit at any other index) further below max than
 * f32 rounding of x - logsumexp can close; lse is log sum exp of the row,
 * within 1e-4. */
bool lmx_greedy_pick_exact(float max, float second, float lse, int n_nonfinite);
/* After a step run with logits == NULL: s's logits processors over recent
 * applied to the model's step scratch row (s NULL: none; *processed says
 * whether any were), then the device's greedy pick into *tok and
 * logprobs[*tok] (*decided = true), or, when lmx_greedy_pick_exact says no,
 * the whole row downloaded into logprobs (V floats, logits - processed
 * already when *processed) for the host pipeline (*decided = false). */
lmx_status lmx_device_greedy(lmx_model *m, lmx_sampler *s, const int32_t *recent, size_t n_recent, int32_t *tok,
                             float *logprobs, bool *decided, bool *processed);
/* Whether s has logits processors (bias, penalties) to apply. */
bool lmx_sampler_has_edits(const lmx_sampler *s);
/* Sampled decoding on the device (temperature > 0, top-p / min-p / top-k,
 * no XTC, same conditions otherwise; LMX_DEVICE_SAMPLER=host: off), after a
 * step run with logits == NULL: s's logits processors (as
 * lmx_device_greedy), one uniform from s's generator, the token
 * and logprobs[*tok] (*decided = true); a row the device declines
 * (non-finite values) comes back into logprobs with the generator as it
 * was (*decided = false). */
bool lmx_device_sample_usable(const lmx_model *m, const lmx_generate_options *o, const lmx_sampler *s);
lmx_status lmx_device_sample(lmx_model *m, lmx_sampler *s, const int32_t *recent, size_t n_recent, int32_t *tok,
                             float *logprobs, bool *decided, bool *processed);
/* The second half of lmx_device_greedy for a pick already read back (a
 * decode graph's): the token, or the logits row downloaded into logprobs. */
lmx_status lmx_device_greedy_finish(lmx_model *m, const lmx_cuda_pick *p, int32_t *tok, float *logprobs,
                                    bool *decided);

#endif
