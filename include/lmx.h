/*
 * lmx.h - the one public header of liblmx.
 *
 * lmx loads Hugging Face / mlx-community model folders and GGUF files, tokenizes,
 * renders chat templates and generates text, in C, on the CPU (CUDA later).
 *
 * Conventions
 *   - Every object is an opaque handle with a paired create/free.
 *   - Actions return an lmx_status; results come back through out-pointers.
 *     On failure the out-pointer is left NULL/unchanged and lmx_last_error()
 *     holds a one-line message naming the file/field at fault.
 *   - Memory returned through a `char **` or `int32_t **` belongs to the caller
 *     and is released with lmx_free().
 *   - The library never exits or aborts on bad input.
 *
 * Minimal use:
 *
 *     lmx_model *m;
 *     if (lmx_load("path/to/model", NULL, &m) != LMX_OK) {
 *         fprintf(stderr, "%s\n", lmx_last_error()); return 1;
 *     }
 *     lmx_generate_options o; lmx_generate_options_init(&o);
 *     char *text;
 *     lmx_generate(m, "Once upon a time", &o, &text);
 *     puts(text); lmx_free(text); lmx_model_free(m);
 */
#ifndef LMX_H
#define LMX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status ------------------------------------------------------------- */

typedef enum lmx_status {
    LMX_OK = 0,
    LMX_ERR_INVALID_ARG = 1, /* a caller-supplied value is out of range */
    LMX_ERR_IO = 2,          /* a file could not be opened, read or written */
    LMX_ERR_FORMAT = 3,      /* a file's content is malformed or lies about itself */
    LMX_ERR_UNSUPPORTED = 4, /* valid input lmx does not handle (yet) */
    LMX_ERR_NOMEM = 5,
    LMX_ERR_NOT_FOUND = 6, /* a required file, tensor or key is missing */
    LMX_ERR_SHAPE = 7,     /* tensor shapes disagree */
    LMX_ERR_TEMPLATE = 8,  /* chat-template syntax or runtime error */
    LMX_ERR_ABORTED = 9,   /* the caller's callback asked to stop */
    LMX_ERR_INTERNAL = 10,
} lmx_status;

/* Short name of a status ("format error", ...). Static storage. */
const char *lmx_status_str(lmx_status s);
/* Message of the last failure on the calling thread (thread-local, like
 * errno; the only process-wide state lmx keeps besides the default thread
 * pool). Valid until the next failing call on this thread. */
const char *lmx_last_error(void);
/* Version string "MAJOR.MINOR.PATCH". */
const char *lmx_version(void);
/* Releases memory the library handed to the caller. */
void lmx_free(void *p);

/* ---- models ------------------------------------------------------------- */

typedef struct lmx_model lmx_model;
typedef struct lmx_tokenizer lmx_tokenizer;

typedef struct lmx_load_options {
    int n_threads;       /* 0 = one per core */
    const char *device;  /* "cpu" (default; $LMX_DEVICE overrides it), "cuda" or "auto" (cuda if a GPU answers) */
    bool no_tokenizer;   /* load weights only (e.g. for `lmx logits`) */
    /* LoRA / DoRA / full fine-tuning adapters to apply (mlx-lm's --adapter-path):
     * a folder with adapter_config.json + adapters.safetensors, or one
     * .safetensors checkpoint inside such a folder. NULL = none. Adapters run
     * on the CPU: device "auto" picks it, "cuda" is refused. Folder models only. */
    const char *adapter_path;
} lmx_load_options;

void lmx_load_options_init(lmx_load_options *o);

/* Loads a model from a folder (config.json + *.safetensors, HF or MLX layout)
 * or from a .gguf file. Weights are memory-mapped. opts may be NULL. */
lmx_status lmx_load(const char *path, const lmx_load_options *opts, lmx_model **out);
void lmx_model_free(lmx_model *m);

int lmx_model_vocab_size(const lmx_model *m);
int lmx_model_context_length(const lmx_model *m);
/* The architecture name after remapping ("llama", "qwen3", ...). Owned by m. */
const char *lmx_model_type(const lmx_model *m);
/* The model's tokenizer, or NULL when it has none. Owned by m. */
const lmx_tokenizer *lmx_model_tokenizer(const lmx_model *m);

/* Runs the model over tokens[0..n) from an empty cache and writes the f32
 * logits of every position into out[n * vocab]. */
lmx_status lmx_logits(lmx_model *m, const int32_t *tokens, size_t n, float *out);

/* ---- tokenizer ---------------------------------------------------------- */

/* path: a model folder, a tokenizer.json file or a .gguf file. */
lmx_status lmx_tokenizer_load(const char *path, lmx_tokenizer **out);
void lmx_tokenizer_free(lmx_tokenizer *t);

int lmx_tokenizer_vocab_size(const lmx_tokenizer *t);
int32_t lmx_tokenizer_bos(const lmx_tokenizer *t); /* -1 when none */
int32_t lmx_tokenizer_eos(const lmx_tokenizer *t); /* -1 when none */
/* Token id of a vocabulary string (added tokens included), -1 when absent. */
int32_t lmx_tokenizer_token_id(const lmx_tokenizer *t, const char *piece);

/* Encodes UTF-8 text. add_special: apply BOS/EOS/post-processor as the
 * tokenizer is configured. Special tokens written in the text are
 * recognised. Invalid UTF-8 bytes are replaced by U+FFFD before encoding.
 * *ids is caller-owned (lmx_free). */
lmx_status lmx_tokenize(const lmx_tokenizer *t, const char *text, size_t len, bool add_special,
                        int32_t **ids, size_t *n_ids);
/* Decodes ids to UTF-8 text (special tokens kept). *text is caller-owned. */
lmx_status lmx_detokenize(const lmx_tokenizer *t, const int32_t *ids, size_t n, char **text);

/* Renders the tokenizer's chat template.
 * messages_json: a JSON array of {"role":..., "content":...} objects.
 * extra_json: NULL or a JSON object of extra template variables (e.g.
 * {"enable_thinking": false}, "tools": [...]). *out is caller-owned. */
lmx_status lmx_apply_chat_template(const lmx_tokenizer *t, const char *messages_json,
                                   bool add_generation_prompt, const char *extra_json,
                                   char **out);
bool lmx_tokenizer_has_chat_template(const lmx_tokenizer *t);

/* ---- generation --------------------------------------------------------- */

typedef enum lmx_finish_reason {
    LMX_FINISH_NONE = 0,   /* more tokens follow */
    LMX_FINISH_STOP = 1,   /* an EOS token was sampled */
    LMX_FINISH_LENGTH = 2, /* max_tokens reached */
} lmx_finish_reason;

typedef struct lmx_generate_options {
    int max_tokens;              /* default 100 */
    float temp;                  /* 0 = greedy (default) */
    float top_p;                 /* 1.0 = off */
    int top_k;                   /* 0 = off */
    float min_p;                 /* 0 = off */
    int min_tokens_to_keep;      /* for min-p, default 1 */
    float repetition_penalty;    /* 0 or 1 = off; x<0 ? x·p : x/p on recent ids */
    int repetition_context_size; /* default 20 */
    float presence_penalty;      /* 0 = off; subtracted once per distinct recent id */
    int presence_context_size;   /* default 20 */
    float frequency_penalty;     /* 0 = off; subtracted per occurrence */
    int frequency_context_size;  /* default 20 */
    const int32_t *logit_bias_ids; /* additive bias per token id */
    const float *logit_bias_values;
    size_t n_logit_bias;
    float xtc_probability;       /* 0 = off: chance per step of applying XTC */
    float xtc_threshold;         /* default 0.1, in [0, 0.5] */
    const int32_t *xtc_special;  /* ids XTC never removes ("\n", EOS) */
    size_t n_xtc_special;
    uint64_t seed;
    bool has_seed;               /* false: seed from the clock */
    int prefill_step_size;       /* default 2048 */
    const int32_t *extra_eos;    /* extra stop token ids */
    size_t n_extra_eos;
    bool ignore_eos;             /* never stop on EOS (benchmarks, tests) */
    /* KV cache. cache: NULL = a fresh cache for this call, made with the four
     * fields below; else the caller's cache (borrowed), which the prompt
     * continues: only the new tokens are prefilled, and on return it holds the
     * prompt and every generated token except the last (as mlx-lm's). After a
     * failed call its contents are unspecified: free it and start a new one. */
    struct lmx_cache *cache;
    int max_kv_size;             /* 0 = unbounded; N = rotating cache of N tokens keeping 4 */
    int kv_bits;                 /* 0 = float; 2,3,4,5,6,8 = MLX affine quantized KV */
    int kv_group_size;           /* default 64 */
    int quantized_kv_start;      /* quantize once the cache holds this many tokens (default 5000) */
    /* Prompt progress, called after each prefill chunk (NULL = none). */
    void (*progress)(size_t processed, size_t total, void *user);
    void *progress_user;
    /* Stop strings: generation ends (finish STOP) when the text contains
     * one; the text up to it is returned, the string itself is not. */
    const char *const *stop_strings;
    size_t n_stop_strings;
    int top_logprobs;            /* 0 = off; else the k best ids/logprobs per response (k <= 64) */
    /* Speculative decoding (mlx-lm's speculative_generate_step): draft_model
     * (borrowed; same vocabulary) proposes num_draft_tokens tokens, the model
     * checks them in one forward pass and keeps the longest agreeing prefix.
     * Greedy output equals plain greedy decoding. draft_cache: NULL = a fresh
     * one; else the draft model's cache, holding the same prefix as cache. */
    struct lmx_model *draft_model;
    int num_draft_tokens;        /* default 2 (mlx-lm's API; its CLI uses 3); at most 32 */
    struct lmx_cache *draft_cache;
} lmx_generate_options;

void lmx_generate_options_init(lmx_generate_options *o);

/* One streamed step. text is the newly completed UTF-8 segment (may be
 * empty, never ends inside a UTF-8 sequence); valid only during the call. */
typedef struct lmx_response {
    const char *text;
    size_t text_len;
    int32_t token;
    float logprob; /* log-probability of token under the processed logits */
    int prompt_tokens;
    double prompt_tps;
    int generation_tokens;
    double generation_tps;
    double peak_memory_gb; /* peak resident set size, GB = bytes / 1e9 */
    lmx_finish_reason finish_reason;
    /* top_logprobs > 0: the n_top most likely ids of this step and their
     * log-probabilities (processed logits), best first; valid during the call. */
    const int32_t *top_ids;
    const float *top_logprobs;
    int n_top;
    bool from_draft;           /* speculative: the draft model proposed this token */
    int draft_accepted;        /* speculative, so far: draft tokens kept ... */
    int draft_proposed;        /* ... of those proposed */
} lmx_response;

/* Return non-zero to stop generation (lmx_generate_stream then returns
 * LMX_ERR_ABORTED). */
typedef int (*lmx_stream_fn)(const lmx_response *r, void *user);

/* Generates from a tokenized prompt, calling cb once per token and once more
 * with the finish reason and any remaining text. */
lmx_status lmx_generate_stream(lmx_model *m, const int32_t *prompt, size_t n_prompt,
                               const lmx_generate_options *o, lmx_stream_fn cb, void *user);

/* Batch callback: response r of prompt number `index` (responses of
 * different prompts interleave; each prompt's arrive in order). */
typedef int (*lmx_batch_fn)(size_t index, const lmx_response *r, void *user);

/* Generates for n tokenized prompts with continuous batching: at most
 * max_batch sequences run together, one forward pass per step over every
 * decoding sequence's next token and joiners' prompt chunks (at most
 * o->prefill_step_size prompt tokens per step); a finished sequence leaves
 * and the next prompt joins. Each sequence has its own KV cache and sampler
 * (seed o->seed + index), so at temperature 0 its tokens equal
 * lmx_generate_stream's on that prompt. r->prompt_tps: the prompt's tokens
 * over its share (by rows) of the passes it ran in. o->cache, draft_model,
 * stop_strings and top_logprobs are not supported here. */
lmx_status lmx_batch_generate(lmx_model *m, const int32_t *const *prompts, const size_t *n_prompts, size_t n,
                              const lmx_generate_options *o, int max_batch, lmx_batch_fn cb, void *user);

/* ---- KV cache / prompt cache -------------------------------------------- */

/* A model's KV cache: the attention state of every token processed so far
 * (mlx-lm's prompt cache). It persists across lmx_generate_stream calls
 * through lmx_generate_options.cache, can be trimmed, and saved to / loaded
 * from a safetensors file in mlx-lm's save_prompt_cache layout. A cache is
 * bound to the model it was made for and must be freed before it. */
typedef struct lmx_cache lmx_cache;

typedef struct lmx_cache_options {
    int max_kv_size;        /* 0 = unbounded (grows in 256-token steps); N = rotating, keeps 4 sink tokens */
    int kv_bits;            /* 0 = float; 2,3,4,5,6,8: MLX affine along head_dim */
    int kv_group_size;      /* default 64 */
    int quantized_kv_start; /* default 5000: stays float until it holds this many tokens */
} lmx_cache_options;

void lmx_cache_options_init(lmx_cache_options *o);
/* An empty cache for m (o may be NULL). Free with lmx_cache_free. */
lmx_status lmx_cache_new(lmx_model *m, const lmx_cache_options *o, lmx_cache **out);
void lmx_cache_free(lmx_cache *c);
/* Tokens processed so far (mlx-lm's offset). */
size_t lmx_cache_length(const lmx_cache *c);
/* Bytes the cache holds allocated now (capacity, not just the used rows). */
size_t lmx_cache_nbytes(const lmx_cache *c);
/* False for a rotating cache that has wrapped (mlx-lm's is_trimmable). */
bool lmx_cache_trimmable(const lmx_cache *c);
/* Forgets the last n tokens; returns how many were dropped (0 when not trimmable). */
size_t lmx_cache_trim(lmx_cache *c, size_t n);
/* Runs tokens through the model into the cache (all of them, in chunks of
 * o->prefill_step_size, calling o->progress; o may be NULL). */
lmx_status lmx_cache_prefill(lmx_model *m, lmx_cache *c, const int32_t *tokens, size_t n,
                             const lmx_generate_options *o);
/* The same plus the f32 logits of the last token (vocab floats). */
lmx_status lmx_cache_prefill_logits(lmx_model *m, lmx_cache *c, const int32_t *tokens, size_t n, float *logits);
/* Writes the cache atomically (temp file + rename) as mlx-lm's
 * save_prompt_cache does; meta_kv: NULL or {"key", "value", ..., NULL}
 * user metadata (mlx_lm.cache_prompt writes "model" and "tokenizer_config"). */
lmx_status lmx_cache_save(const lmx_cache *c, const char *path, const char *const *meta_kv);
/* Reads a prompt-cache file (written by lmx or mlx-lm) for model m. Refused
 * (LMX_ERR_FORMAT / LMX_ERR_SHAPE) when it is malformed or its layer count,
 * heads or head_dim differ from m's. */
lmx_status lmx_cache_load(lmx_model *m, const char *path, lmx_cache **out);
/* User metadata of a loaded cache ("model", ...), NULL when absent. Owned by c. */
const char *lmx_cache_metadata(const lmx_cache *c, const char *key);
/* The cache's settings (kv_bits 0 for float; max_kv_size 0 when unbounded). */
void lmx_cache_get_options(const lmx_cache *c, lmx_cache_options *o);
/* Turns on KV quantization for a float, unbounded cache (mlx-lm quantizes a
 * loaded KVCache once it holds quantized_kv_start tokens when --kv-bits is
 * given). LMX_ERR_INVALID_ARG for a rotating or already quantized cache. */
lmx_status lmx_cache_set_kv_bits(lmx_cache *c, int kv_bits, int kv_group_size, int quantized_kv_start);
/* User metadata `key` of a prompt-cache file without loading it (mlx-lm
 * takes the model path from it). *value caller-owned; LMX_ERR_NOT_FOUND when absent. */
lmx_status lmx_cache_file_metadata(const char *path, const char *key, char **value);

/* Encodes prompt (special tokens added) and returns the generated text. */
lmx_status lmx_generate(lmx_model *m, const char *prompt, const lmx_generate_options *o,
                        char **text);

#ifdef __cplusplus
}
#endif
#endif /* LMX_H */
