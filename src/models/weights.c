/* weights.c - tensor lookup by HF name over safetensors shards or GGUF. */
#include "models/weights.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

const char *lmx_wname(char *buf, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, cap, fmt, ap);
    va_end(ap);
    return buf;
}

/* HF name -> llama.cpp GGUF name. */
static bool gguf_name(const char *hf, char *out, size_t cap) {
    static const struct {
        const char *hf, *gg;
    } top[] = {
        {"model.embed_tokens.weight", "token_embd.weight"},
        {"model.norm.weight", "output_norm.weight"},
        {"model.norm.bias", "output_norm.bias"},
        {"lm_head.weight", "output.weight"},
        {"lm_head.bias", "output.bias"},
    };
    static const struct {
        const char *hf, *gg;
    } layer[] = {
        {"input_layernorm", "attn_norm"},
        {"self_attn.q_proj", "attn_q"},
        {"self_attn.k_proj", "attn_k"},
        {"self_attn.v_proj", "attn_v"},
        {"self_attn.o_proj", "attn_output"},
        {"self_attn.q_norm", "attn_q_norm"},
        {"self_attn.k_norm", "attn_k_norm"},
        {"post_attention_layernorm", "ffn_norm"},
        {"mlp.gate_proj", "ffn_gate"},
        {"mlp.up_proj", "ffn_up"},
        {"mlp.down_proj", "ffn_down"},
    };
    for (size_t i = 0; i < sizeof top / sizeof *top; i++)
        if (!strcmp(hf, top[i].hf)) {
            snprintf(out, cap, "%s", top[i].gg);
            return true;
        }
    int li, used = 0;
    if (sscanf(hf, "model.layers.%d.%n", &li, &used) == 1 && used > 0) {
        const char *rest = hf + used;
        for (size_t i = 0; i < sizeof layer / sizeof *layer; i++) {
            size_t n = strlen(layer[i].hf);
            if (!strncmp(rest, layer[i].hf, n) && rest[n] == '.') {
                snprintf(out, cap, "blk.%d.%s%s", li, layer[i].gg, rest + n);
                return true;
            }
        }
    }
    return false;
}

static const lmx_st_tensor *st_lookup(const struct lmx_weights_src *w, const char *name,
                                      const lmx_st_file **file) {
    const lmx_st_tensor *t = lmx_st_set_find(w->st, name, file);
    char alt[512];
    if (!t) { /* multimodal wrappers (MLX, transformers 4): language_model.model.* */
        snprintf(alt, sizeof alt, "language_model.%s", name);
        t = lmx_st_set_find(w->st, alt, file);
    }
    if (!t && !strncmp(name, "model.", 6)) { /* transformers 5: model.language_model.* */
        snprintf(alt, sizeof alt, "model.language_model.%s", name + 6);
        t = lmx_st_set_find(w->st, alt, file);
    }
    return t;
}

bool lmx_weights_has(const struct lmx_weights_src *w, const char *name) {
    if (w->st) return st_lookup(w, name, NULL) != NULL;
    char gn[512];
    return gguf_name(name, gn, sizeof gn) && lmx_gguf_find_tensor(w->gguf, gn);
}

static lmx_status weights_get(const struct lmx_weights_src *w, const char *name, int ndim,
                              const int64_t *expect, bool required, bool raw_ok, lmx_array *out) {
    memset(out, 0, sizeof *out);
    int64_t shape[LMX_MAX_DIMS];
    int nd;
    lmx_dtype dt;
    const void *data;
    lmx_file_map *map;
    if (w->st) {
        const lmx_st_file *f = NULL;
        const lmx_st_tensor *t = st_lookup(w, name, &f);
        if (!t) goto missing;
        nd = t->n_dims;
        memcpy(shape, t->shape, sizeof shape);
        dt = t->dtype;
        data = t->data;
        map = lmx_st_map(f);
    } else {
        char gn[512];
        const lmx_gguf_tensor *t = gguf_name(name, gn, sizeof gn) ? lmx_gguf_find_tensor(w->gguf, gn) : NULL;
        if (!t) goto missing;
        nd = t->n_dims;
        for (int i = 0; i < nd; i++) shape[i] = t->ne[nd - 1 - i];
        dt = lmx_dtype_from_ggml(t->ggml_type);
        if (dt == LMX_DTYPE_INVALID) {
            const char *tn = "?";
            int64_t blk;
            size_t bs;
            lmx_ggml_type_info(t->ggml_type, &tn, &blk, &bs);
            return lmx_err(LMX_ERR_UNSUPPORTED, "%s: tensor '%s': ggml type %s (%u) is not supported", w->path, gn,
                           tn, t->ggml_type);
        }
        if (nd < 1 || t->ne[0] % lmx_dtype_info(dt)->block)
            return lmx_err(LMX_ERR_FORMAT, "%s: tensor '%s': row of %lld elements is not a whole number of %s blocks",
                           w->path, gn, (long long)(nd ? t->ne[0] : 0), lmx_dtype_info(dt)->name);
        data = t->data;
        map = lmx_gguf_map(w->gguf);
    }
    if (expect) {
        bool ok = nd == ndim;
        for (int i = 0; ok && i < ndim; i++) ok = expect[i] < 0 || expect[i] == shape[i];
        if (!ok) {
            char got[96] = "[", want[96] = "[";
            for (int i = 0; i < nd; i++)
                snprintf(got + strlen(got), sizeof got - strlen(got), i ? ", %lld" : "%lld", (long long)shape[i]);
            for (int i = 0; i < ndim; i++)
                snprintf(want + strlen(want), sizeof want - strlen(want), i ? ", %lld" : "%lld", (long long)expect[i]);
            return lmx_err(LMX_ERR_SHAPE, "%s: tensor '%s': shape %s], expected %s]", w->path, name, got, want);
        }
    }
    if (!lmx_dtype_info(dt)->to_f32 || (raw_ok && dt == LMX_U32)) {
        if (raw_ok) return lmx_array_from_map(out, map, data, dt, nd, shape);
        return lmx_err(LMX_ERR_UNSUPPORTED, "%s: tensor '%s': dtype %s is not a float type", w->path, name,
                       lmx_dtype_info(dt)->name);
    }
    return lmx_array_from_map(out, map, data, dt, nd, shape);
missing:
    if (!required) return LMX_OK;
    return lmx_err(LMX_ERR_NOT_FOUND, "%s: missing tensor '%s'", w->path, name);
}

lmx_status lmx_weights_get(const struct lmx_weights_src *w, const char *name, int ndim,
                           const int64_t *expect, bool required, lmx_array *out) {
    return weights_get(w, name, ndim, expect, required, false, out);
}

lmx_status lmx_weights_get_raw(const struct lmx_weights_src *w, const char *name, bool required, lmx_array *out) {
    return weights_get(w, name, 0, NULL, required, true, out);
}
