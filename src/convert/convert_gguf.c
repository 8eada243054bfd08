/* convert_gguf.c - a llama.cpp GGUF (llama/mistral, qwen2, qwen3) as a
 * Hugging Face folder, the input `lmx convert` then treats like any other:
 *   config.json      synthesized from the "<arch>.*" metadata (as
 *                    arch_gguf.c reads it) and the tokenizer ids;
 *   model.safetensors HF tensor names; F32/F16/BF16 tensors copied, block
 *                    quants dequantized to F32 with the dtype rows; llama
 *                    q/k rows (and biases) un-permuted from llama.cpp's
 *                    interleaved order back to HF's rotate_half order
 *                    (HF row h·d + j·d/2 + i = GGUF row h·d + 2i + j);
 *   tokenizer files  convert_gguf_tok.c.
 * torch_dtype: the embedding's float type, float16 for a quantized one. */
#include "convert/convert_internal.h"
#include "io/gguf.h"

#include <stdio.h>
#include <stdlib.h>

static bool key_i(const lmx_gguf *g, const char *arch, const char *k, int64_t *v) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, k);
    return lmx_gguf_get_i64(g, key, v);
}

/* The shortest decimal that reads back as the same f32 (Python's repr of
 * the value HF configs carry, e.g. 1e-05 rather than 9.99999974e-06). */
static double short_f32(float f) {
    char b[32];
    for (int p = 1; p < 10; p++) {
        snprintf(b, sizeof b, "%.*g", p, (double)f);
        if ((float)strtod(b, NULL) == f) return strtod(b, NULL);
    }
    return (double)f;
}

static bool key_f(const lmx_gguf *g, const char *arch, const char *k, float *v) {
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, k);
    return lmx_gguf_get_f32(g, key, v);
}

/* llama.cpp name -> HF name; false for a tensor lmx does not convert. */
static bool hf_name(const char *gg, char *out, size_t cap) {
    static const char *const top[][2] = {{"token_embd", "model.embed_tokens"}, {"output_norm", "model.norm"},
                                         {"output", "lm_head"}};
    static const char *const layer[][2] = {
        {"attn_norm", "input_layernorm"}, {"attn_q", "self_attn.q_proj"},     {"attn_k", "self_attn.k_proj"},
        {"attn_v", "self_attn.v_proj"},   {"attn_output", "self_attn.o_proj"}, {"attn_q_norm", "self_attn.q_norm"},
        {"attn_k_norm", "self_attn.k_norm"}, {"ffn_norm", "post_attention_layernorm"}, {"ffn_gate", "mlp.gate_proj"},
        {"ffn_up", "mlp.up_proj"},        {"ffn_down", "mlp.down_proj"},
    };
    const char *dot = strrchr(gg, '.');
    if (!dot || (strcmp(dot, ".weight") && strcmp(dot, ".bias"))) return false;
    int base = (int)(dot - gg);
    for (size_t i = 0; i < sizeof top / sizeof *top; i++)
        if ((int)strlen(top[i][0]) == base && !strncmp(gg, top[i][0], (size_t)base)) {
            snprintf(out, cap, "%s%s", top[i][1], dot);
            return true;
        }
    int li, used = 0;
    if (sscanf(gg, "blk.%d.%n", &li, &used) != 1 || used == 0) return false;
    const char *rest = gg + used;
    int rl = (int)(dot - rest);
    for (size_t i = 0; i < sizeof layer / sizeof *layer; i++)
        if ((int)strlen(layer[i][0]) == rl && !strncmp(rest, layer[i][0], (size_t)rl)) {
            snprintf(out, cap, "model.layers.%d.%s%s", li, layer[i][1], dot);
            return true;
        }
    return false;
}

typedef struct {
    const lmx_gguf_tensor *t;
    char name[160];
    lmx_dtype src, dst;
    int64_t shape[4];
    int ndim;
    int permute_heads; /* > 0: un-permute rows with this many heads */
} gt;

static lmx_status tensor_bytes(const gt *x, uint8_t **out, size_t *n_out) {
    int64_t rows = 1, cols = x->shape[x->ndim - 1];
    for (int i = 0; i < x->ndim - 1; i++) rows *= x->shape[i];
    size_t rb = lmx_dtype_bytes(x->dst, cols), bytes = rb * (size_t)rows;
    uint8_t *b = malloc(bytes ? bytes : 1);
    if (!b) return lmx_err(LMX_ERR_NOMEM, "convert: out of memory for '%s'", x->t->name);
    if (x->src == x->dst) memcpy(b, x->t->data, bytes);
    else lmx_dtype_info(x->src)->to_f32(x->t->data, (float *)b, rows * cols);
    if (x->permute_heads > 0) {
        /* 1-D (bias): one element per "row" */
        int64_t n = x->ndim == 1 ? cols : rows;
        size_t es = x->ndim == 1 ? lmx_dtype_bytes(x->dst, 1) : rb;
        int64_t hd = n / x->permute_heads;
        uint8_t *c = malloc(bytes ? bytes : 1);
        if (!c) {
            free(b);
            return lmx_err(LMX_ERR_NOMEM, "convert: out of memory for '%s'", x->t->name);
        }
        for (int64_t h = 0; h < x->permute_heads; h++)
            for (int64_t i = 0; i < hd / 2; i++)
                for (int64_t j = 0; j < 2; j++)
                    memcpy(c + (size_t)(h * hd + j * (hd / 2) + i) * es, b + (size_t)(h * hd + 2 * i + j) * es, es);
        free(b);
        b = c;
    }
    *out = b;
    *n_out = bytes;
    return LMX_OK;
}

static lmx_status write_tensors(const lmx_gguf *g, const char *dir, int n_head, int n_kv, bool permute,
                                lmx_dtype *emb_dtype) {
    const char *path = lmx_gguf_path(g);
    int64_t nt = lmx_gguf_n_tensors(g);
    gt *xs = calloc((size_t)(nt ? nt : 1), sizeof *xs);
    lmx_st_write_tensor *ws = calloc((size_t)(nt ? nt : 1), sizeof *ws);
    lmx_status s = xs && ws ? LMX_OK : lmx_err(LMX_ERR_NOMEM, "out of memory");
    size_t n = 0;
    for (int64_t i = 0; i < nt && !s; i++) {
        gt *x = &xs[n];
        x->t = lmx_gguf_tensor_at(g, i);
        if (!strcmp(x->t->name, "rope_freqs.weight")) {
            s = lmx_err(LMX_ERR_UNSUPPORTED, "%s: tensor 'rope_freqs.weight' (llama3 RoPE scaling) cannot be converted yet", path);
            break;
        }
        if (!hf_name(x->t->name, x->name, sizeof x->name)) {
            s = lmx_err(LMX_ERR_UNSUPPORTED, "%s: tensor '%s' has no Hugging Face name lmx knows", path, x->t->name);
            break;
        }
        x->src = lmx_dtype_from_ggml(x->t->ggml_type);
        if (x->src == LMX_DTYPE_INVALID || !lmx_dtype_info(x->src)->to_f32) {
            s = lmx_err(LMX_ERR_UNSUPPORTED, "%s: tensor '%s': ggml type %u cannot be dequantized", path, x->t->name,
                        x->t->ggml_type);
            break;
        }
        x->dst = lmx_dtype_info(x->src)->is_quant ? LMX_F32 : x->src;
        x->ndim = x->t->n_dims;
        for (int d = 0; d < x->ndim; d++) x->shape[d] = x->t->ne[x->ndim - 1 - d];
        if (!strcmp(x->t->name, "token_embd.weight")) *emb_dtype = x->src;
        if (permute && (strstr(x->name, "self_attn.q_proj.") || strstr(x->name, "self_attn.k_proj."))) {
            x->permute_heads = strstr(x->name, "q_proj") ? n_head : n_kv;
            int64_t rows = x->shape[0];
            if (rows % (2 * x->permute_heads)) {
                s = lmx_err(LMX_ERR_SHAPE, "%s: tensor '%s': %lld rows do not split into %d heads of pairs", path,
                            x->t->name, (long long)rows, x->permute_heads);
                break;
            }
        }
        int64_t numel = 1;
        for (int d = 0; d < x->ndim; d++) numel *= x->shape[d];
        ws[n] = (lmx_st_write_tensor){x->name, x->dst, x->ndim, x->shape, NULL, lmx_dtype_bytes(x->dst, numel)};
        n++;
    }
    char *p = s ? NULL : lmx_path_join(dir, "model.safetensors");
    lmx_st_writer *w = NULL;
    if (!s && !p) s = lmx_err(LMX_ERR_NOMEM, "out of memory");
    static const char *const meta[] = {"format", "pt", NULL};
    if (!s) s = lmx_st_writer_open(p, ws, n, meta, &w);
    for (size_t i = 0; i < n && !s; i++) {
        uint8_t *b = NULL;
        size_t nb = 0;
        s = tensor_bytes(&xs[i], &b, &nb);
        if (!s) s = lmx_st_writer_write(w, b, nb);
        free(b);
    }
    if (w) s = s ? (lmx_st_writer_abort(w), s) : lmx_st_writer_finish(w);
    free(p), free(xs), free(ws);
    return s;
}

lmx_status cv_gguf_to_folder(const char *gguf_path, const char *dir) {
    lmx_gguf *g;
    LMX_TRY(lmx_gguf_open(gguf_path, &g));
    lmx_gguf_str as;
    char arch[32] = "";
    if (lmx_gguf_get_str(g, "general.architecture", &as) && as.len < sizeof arch) {
        memcpy(arch, as.ptr, as.len);
        arch[as.len] = 0;
    }
    const char *mt = !strcmp(arch, "llama") || !strcmp(arch, "mistral") ? "llama"
                     : !strcmp(arch, "qwen2")                           ? "qwen2"
                     : !strcmp(arch, "qwen3")                           ? "qwen3"
                                                                        : NULL;
    lmx_status s = LMX_OK;
    if (!mt) s = lmx_err(LMX_ERR_UNSUPPORTED, "%s: general.architecture '%s': converting it is not supported", gguf_path, arch);
    int64_t D = 0, L = 0, H = 0, F = 0, Hkv, hd, ctx, v;
    if (!s && !(key_i(g, arch, "embedding_length", &D) && key_i(g, arch, "block_count", &L) &&
                key_i(g, arch, "attention.head_count", &H) && key_i(g, arch, "feed_forward_length", &F) && H > 0))
        s = lmx_err(LMX_ERR_FORMAT, "%s: %s.embedding_length/block_count/attention.head_count/feed_forward_length missing",
                    gguf_path, arch);
    cJSON *c = cJSON_CreateObject();
    lmx_dtype emb = LMX_F32;
    if (!s) {
        Hkv = key_i(g, arch, "attention.head_count_kv", &v) ? v : H;
        hd = key_i(g, arch, "attention.key_length", &v) ? v : D / H;
        ctx = key_i(g, arch, "context_length", &v) ? v : 2048;
        float eps = 1e-5f, theta = 10000.0f, lin = 0;
        key_f(g, arch, "attention.layer_norm_rms_epsilon", &eps);
        key_f(g, arch, "rope.freq_base", &theta);
        const lmx_gguf_tensor *et = lmx_gguf_find_tensor(g, "token_embd.weight");
        bool tied = lmx_gguf_find_tensor(g, "output.weight") == NULL;
        static const char *const archs[][2] = {{"llama", "LlamaForCausalLM"}, {"qwen2", "Qwen2ForCausalLM"},
                                               {"qwen3", "Qwen3ForCausalLM"}};
        cJSON *a = cJSON_AddArrayToObject(c, "architectures");
        for (int i = 0; i < 3; i++)
            if (!strcmp(mt, archs[i][0])) cJSON_AddItemToArray(a, cJSON_CreateString(archs[i][1]));
        cJSON_AddStringToObject(c, "model_type", mt);
        cJSON_AddNumberToObject(c, "hidden_size", (double)D);
        cJSON_AddNumberToObject(c, "intermediate_size", (double)F);
        cJSON_AddNumberToObject(c, "num_hidden_layers", (double)L);
        cJSON_AddNumberToObject(c, "num_attention_heads", (double)H);
        cJSON_AddNumberToObject(c, "num_key_value_heads", (double)Hkv);
        cJSON_AddNumberToObject(c, "head_dim", (double)hd);
        cJSON_AddNumberToObject(c, "vocab_size", et && et->n_dims == 2 ? (double)et->ne[1] : 0);
        cJSON_AddNumberToObject(c, "max_position_embeddings", (double)ctx);
        cJSON_AddNumberToObject(c, "rms_norm_eps", short_f32(eps));
        cJSON_AddNumberToObject(c, "rope_theta", short_f32(theta));
        if (key_f(g, arch, "rope.scale_linear", &lin) && lin > 0 && lin != 1.0f) {
            cJSON *r = cJSON_AddObjectToObject(c, "rope_scaling");
            cJSON_AddStringToObject(r, "type", "linear");
            cJSON_AddNumberToObject(r, "factor", short_f32(lin));
        }
        cJSON_AddStringToObject(c, "hidden_act", "silu");
        cJSON_AddBoolToObject(c, "tie_word_embeddings", tied);
        cJSON_AddBoolToObject(c, "attention_bias", lmx_gguf_find_tensor(g, "blk.0.attn_q.bias") != NULL);
        cJSON_AddBoolToObject(c, "mlp_bias", false);
        if (lmx_gguf_get_i64(g, "tokenizer.ggml.bos_token_id", &v)) cJSON_AddNumberToObject(c, "bos_token_id", (double)v);
        if (lmx_gguf_get_i64(g, "tokenizer.ggml.eos_token_id", &v)) cJSON_AddNumberToObject(c, "eos_token_id", (double)v);
        s = write_tensors(g, dir, (int)H, (int)Hkv, !strcmp(mt, "llama"), &emb);
    }
    if (!s) {
        cJSON_AddStringToObject(c, "torch_dtype", emb == LMX_F32 ? "float32" : emb == LMX_BF16 ? "bfloat16" : "float16");
        char *text = lmx_pyjson_dump(c, true), *p = lmx_path_join(dir, "config.json");
        s = text && p ? lmx_atomic_write(p, text, strlen(text)) : lmx_err(LMX_ERR_NOMEM, "out of memory");
        free(text), free(p);
    }
    cJSON_Delete(c);
    if (!s) s = cv_gguf_tokenizer(g, dir);
    lmx_gguf_close(g);
    return s;
}
