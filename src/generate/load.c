/* load.c - lmx_load: a model folder (config.json + safetensors) or a .gguf
 * file, its tokenizer and stop tokens, on the chosen backend. */
#include "generate/engine.h"
#include "models/adapters.h"

#include <stdlib.h>
#include <string.h>

void lmx_load_options_init(lmx_load_options *o) {
    memset(o, 0, sizeof *o);
    const char *env = getenv("LMX_DEVICE"); /* e.g. LMX_DEVICE=cuda ctest: the suite on the GPU */
    o->device = env && *env ? env : "auto"; /* cuda when a GPU answers, else cpu */
}

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static lmx_status add_eos(lmx_model *m, int32_t id) {
    for (size_t i = 0; i < m->n_eos; i++)
        if (m->eos[i] == id) return LMX_OK;
    int32_t *n = realloc(m->eos, (m->n_eos + 1) * sizeof *n);
    if (!n) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    m->eos = n;
    m->eos[m->n_eos++] = id;
    return LMX_OK;
}

static lmx_status load_folder(lmx_model *m, const char *dir, bool want_tok) {
    LMX_TRY(lmx_config_load(dir, &m->cfg));
    LMX_TRY(lmx_st_set_open(dir, &m->st));
    m->wsrc.path = m->path;
    m->wsrc.st = m->st;
    m->wsrc.cfg = m->cfg;
    LMX_TRY(lmx_transformer_load_hf(dir, m->cfg, &m->wsrc, &m->tf));
    LMX_TRY(lmx_config_eos(m->cfg, dir, &m->eos, &m->n_eos));
    if (want_tok) {
        char *tj = lmx_path_join(dir, "tokenizer.json");
        bool has = tj && lmx_file_exists(tj);
        free(tj);
        if (has) LMX_TRY(lmx_tokenizer_load(dir, &m->tok));
    }
    return LMX_OK;
}

static lmx_status load_gguf(lmx_model *m, const char *path, bool want_tok) {
    LMX_TRY(lmx_gguf_open(path, &m->gguf));
    m->wsrc.path = m->path;
    m->wsrc.gguf = m->gguf;
    LMX_TRY(lmx_transformer_load_gguf(m->gguf, &m->wsrc, &m->tf));
    int64_t eos;
    if (lmx_gguf_get_i64(m->gguf, "tokenizer.ggml.eos_token_id", &eos) && eos >= 0 && eos < INT32_MAX)
        LMX_TRY(add_eos(m, (int32_t)eos));
    if (want_tok && lmx_gguf_find_key(m->gguf, "tokenizer.ggml.model") >= 0)
        LMX_TRY(lmx_tokenizer_from_gguf(m->gguf, &m->tok));
    return LMX_OK;
}

lmx_status lmx_load(const char *path, const lmx_load_options *opts, lmx_model **out) {
    *out = NULL;
    lmx_load_options def;
    if (!opts) {
        lmx_load_options_init(&def);
        opts = &def;
    }
    if (!path || !*path) return lmx_err(LMX_ERR_INVALID_ARG, "model: empty path");
    if (opts->n_threads < 0 || opts->n_threads > 512)
        return lmx_err(LMX_ERR_INVALID_ARG, "threads: %d is out of range [0, 512]", opts->n_threads);
    lmx_model *m = calloc(1, sizeof *m);
    if (!m) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    m->path = lmx_strdup(path);
    lmx_status s;
    if (lmx_is_dir(path))
        s = load_folder(m, path, !opts->no_tokenizer);
    else if (ends_with(path, ".gguf") || lmx_file_exists(path))
        s = load_gguf(m, path, !opts->no_tokenizer);
    else
        s = lmx_err(LMX_ERR_NOT_FOUND, "%s: no such model folder or file", path);
    if (!s && m->n_eos == 0 && m->tok && lmx_tokenizer_eos(m->tok) >= 0) s = add_eos(m, lmx_tokenizer_eos(m->tok));
    if (!s && m->tok && lmx_tokenizer_vocab_size(m->tok) > m->tf.hp.n_vocab + 1024)
        s = lmx_err(LMX_ERR_FORMAT, "%s: tokenizer has %d tokens but the model only %d", path,
                    lmx_tokenizer_vocab_size(m->tok), m->tf.hp.n_vocab);
    const char *device = opts->device;
    if (!s && opts->adapter_path) {
        if (!m->cfg)
            s = lmx_err(LMX_ERR_UNSUPPORTED, "%s: adapters apply to model folders only (GGUF rows are permuted)", path);
        else
            s = lmx_adapters_load_ex(&m->tf, lmx_adapters_prefix(m->cfg), opts->adapter_path, &m->adapters);
        /* "auto": full fine-tuned sets swap host copies in (no device upload of them) */
        if (!s && m->adapters->cfg.type == LMX_FT_FULL && device && !strcmp(device, "auto")) device = "cpu";
    }
    if (!s) s = lmx_backend_create(device, opts->n_threads, &m->backend);
    if (!s) s = lmx_transformer_to_backend(m->backend, &m->tf); /* device: weights uploaded once */
    if (s == LMX_ERR_UNSUPPORTED && device && !strcmp(device, "auto") && m->backend) {
        /* "auto" means the best device that can run this model: formats the
         * GPU kernels lack yet (checked before any upload) run on the CPU. */
        lmx_backend_free(m->backend);
        m->backend = NULL;
        s = lmx_backend_create("cpu", opts->n_threads, &m->backend);
    }
    if (!s) s = lmx_adapters_to_backend(m->adapters, m->backend); /* LoRA/DoRA arrays, once */
    if (s) {
        lmx_model_free(m);
        return s;
    }
    m->ex.backend = m->backend;
    *out = m;
    return LMX_OK;
}

void lmx_model_free(lmx_model *m) {
    if (!m) return;
    lmx_adapters_free(m->adapters); /* detaches before the model's arrays go */
    lmx_transformer_free(&m->tf);
    lmx_scratch_free(m->scratch);
    lmx_decode_graph_free(&m->dgraph);
    if (m->tok) lmx_tokenizer_free(m->tok);
    lmx_backend_free(m->backend);
    lmx_st_set_close(m->st);
    if (m->gguf) lmx_gguf_close(m->gguf);
    lmx_config_free(m->cfg);
    free(m->eos);
    free(m->path);
    free(m);
}

int lmx_model_vocab_size(const lmx_model *m) { return m->tf.hp.n_vocab; }
int lmx_model_context_length(const lmx_model *m) { return m->tf.hp.n_ctx; }
const char *lmx_model_type(const lmx_model *m) { return m->tf.hp.arch; }
const lmx_tokenizer *lmx_model_tokenizer(const lmx_model *m) { return m->tok; }
