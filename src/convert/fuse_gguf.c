/* fuse_gguf.c - `lmx fuse --export-gguf`: mlx-lm's convert_to_gguf (gguf.py)
 * over a fused MLX folder: llama tensor names, q/k rows permuted into
 * llama.cpp's interleaved order, bfloat16 → float16, norms → float32, other
 * tensors in their own dtype; metadata and the vocabulary (HfVocab: every
 * token scored -1000, BYTE / CONTROL / NORMAL / USER_DEFINED types) as
 * mlx-lm writes them. general.name is "llama": mlx-lm's save_config has
 * already dropped _name_or_path from the config it passes on. */
#include "convert/fuse.h"

#include "io/gguf.h"
#include "io/shards.h"
#include "models/config.h"

#include <stdio.h>
#include <stdlib.h>

/* ---- tensors ------------------------------------------------------------------ */

static void replace_all(char *s, size_t cap, const char *from, const char *to) {
    char out[512];
    size_t o = 0, fl = strlen(from), tl = strlen(to);
    for (const char *p = s; *p && o + 1 < sizeof out;) {
        if (!strncmp(p, from, fl) && o + tl + 1 < sizeof out) {
            memcpy(out + o, to, tl);
            o += tl;
            p += fl;
        } else {
            out[o++] = *p++;
        }
    }
    out[o] = 0;
    size_t n = o < cap ? o : cap - 1;
    memcpy(s, out, n);
    s[n] = 0;
}

/* mlx-lm's translate_weight_names (the replacements in its order). */
static void gguf_name(const char *mlx, char *out, size_t cap) {
    static const char *const rep[][2] = {
        {"model.layers.", "blk."},           {"block_sparse_moe.gate", "ffn_gate_inp"},
        {"mlp.gate_proj", "ffn_gate"},       {"mlp.down_proj", "ffn_down"},
        {"mlp.up_proj", "ffn_up"},           {"self_attn.q_proj", "attn_q"},
        {"self_attn.k_proj", "attn_k"},      {"self_attn.v_proj", "attn_v"},
        {"self_attn.o_proj", "attn_output"}, {"input_layernorm", "attn_norm"},
        {"post_attention_layernorm", "ffn_norm"}, {"model.embed_tokens", "token_embd"},
        {"model.norm", "output_norm"},       {"lm_head", "output"},
    };
    snprintf(out, cap, "%s", mlx);
    for (size_t i = 0; i < sizeof rep / sizeof *rep; i++) replace_all(out, cap, rep[i][0], rep[i][1]);
}

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* permute_weights: rows of each head reordered from [2, half] to [half, 2]. */
static void permute_rows(const uint8_t *src, uint8_t *dst, int64_t rows, size_t row_bytes, int heads) {
    int64_t per = rows / heads, half = per / 2;
    for (int h = 0; h < heads; h++)
        for (int64_t i = 0; i < half; i++)
            for (int j = 0; j < 2; j++)
                memcpy(dst + (size_t)(h * per + i * 2 + j) * row_bytes, src + (size_t)(h * per + j * half + i) * row_bytes,
                       row_bytes);
}

/* ---- vocabulary --------------------------------------------------------------- */

typedef struct vocab {
    char **tok;
    int n_base, n;
    int32_t *type;
    float *score;
    int64_t bos, eos, unk;
} vocab;

static void vocab_free(vocab *v) {
    for (int i = 0; v->tok && i < v->n; i++) free(v->tok[i]);
    free(v->tok), free(v->type), free(v->score);
}

/* The id of a special-token entry of tokenizer_config.json ("<s>" or {"content": "<s>"}). */
static int64_t token_id(const vocab *v, const cJSON *e) {
    const char *s = cJSON_IsObject(e) ? cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e, "content"))
                                      : cJSON_GetStringValue(e);
    if (!s) return -1;
    for (int i = 0; i < v->n; i++)
        if (v->tok[i] && !strcmp(v->tok[i], s)) return i;
    return -1;
}

static bool is_byte_token(const char *s) {
    return strlen(s) == 6 && !strncmp(s, "<0x", 3) && s[5] == '>' && strchr("0123456789abcdefABCDEF", s[3]) &&
           strchr("0123456789abcdefABCDEF", s[4]) && s[3] && s[4];
}

static lmx_status load_json(const char *dir, const char *name, bool required, cJSON **out) {
    *out = NULL;
    char *p = lmx_path_join(dir, name), *txt = NULL;
    size_t n;
    lmx_status s = p ? LMX_OK : lmx_err(LMX_ERR_NOMEM, "out of memory");
    if (!s && !lmx_file_exists(p)) {
        if (required) s = lmx_err(LMX_ERR_NOT_FOUND, "%s: Tokenizer json not found", p);
    } else if (!s) {
        s = lmx_read_file(p, &txt, &n);
        if (!s && !(*out = cJSON_ParseWithLength(txt, n))) s = lmx_err(LMX_ERR_FORMAT, "%s: not valid JSON", p);
    }
    free(p), free(txt);
    return s;
}

static lmx_status read_vocab(const char *dir, vocab *v) {
    memset(v, 0, sizeof *v);
    v->bos = v->eos = v->unk = -1;
    cJSON *tj, *tc = NULL, *sm = NULL;
    LMX_TRY(load_json(dir, "tokenizer.json", true, &tj));
    lmx_status s = load_json(dir, "tokenizer_config.json", false, &tc);
    if (!s) s = load_json(dir, "special_tokens_map.json", false, &sm);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(tj, "model");
    const cJSON *mv = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(tj, "added_tokens");
    if (!s && !mv) s = lmx_err(LMX_ERR_FORMAT, "%s/tokenizer.json: model.vocab: missing", dir);
    int n_base = mv ? cJSON_GetArraySize(mv) : 0, max_added = -1;
    for (const cJSON *a = added ? added->child : NULL; a; a = a->next) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id");
        if (cJSON_IsNumber(id) && id->valueint > max_added) max_added = id->valueint;
    }
    int n = n_base > max_added + 1 ? n_base : max_added + 1;
    if (!s && (n <= 0 || n > 10000000)) s = lmx_err(LMX_ERR_FORMAT, "%s/tokenizer.json: vocabulary of %d", dir, n);
    if (!s) {
        v->tok = calloc((size_t)n, sizeof *v->tok);
        v->type = calloc((size_t)n, sizeof *v->type);
        v->score = calloc((size_t)n, sizeof *v->score);
        v->n = n;
        v->n_base = n_base;
        if (!v->tok || !v->type || !v->score) s = lmx_err(LMX_ERR_NOMEM, "out of memory");
    }
    /* model vocabulary: {token: id} (BPE, WordLevel, WordPiece) or [[token, score]] (Unigram) */
    int k = 0;
    for (const cJSON *e = mv ? mv->child : NULL; !s && e; e = e->next, k++) {
        const char *t = cJSON_IsArray(e) ? cJSON_GetStringValue(cJSON_GetArrayItem(e, 0)) : e->string;
        int id = cJSON_IsArray(e) ? k : cJSON_IsNumber(e) ? e->valueint : -1;
        if (!t || id < 0 || id >= n) s = lmx_err(LMX_ERR_FORMAT, "%s/tokenizer.json: model.vocab: bad entry %d", dir, k);
        else if (!(v->tok[id] = lmx_strdup(t))) s = lmx_err(LMX_ERR_NOMEM, "out of memory");
    }
    for (const cJSON *a = added ? added->child : NULL; !s && a; a = a->next) {
        const char *t = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(a, "content"));
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(a, "id");
        if (!t || !cJSON_IsNumber(id) || id->valueint < 0) continue;
        free(v->tok[id->valueint]);
        if (!(v->tok[id->valueint] = lmx_strdup(t))) s = lmx_err(LMX_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; !s && i < n; i++)
        if (!v->tok[i]) s = lmx_err(LMX_ERR_FORMAT, "%s/tokenizer.json: no token has id %d", dir, i);
    /* special tokens: transformers' all_special_ids */
    bool *special = s ? NULL : calloc((size_t)n, sizeof *special);
    if (!s && !special) s = lmx_err(LMX_ERR_NOMEM, "out of memory");
    static const char *const keys[] = {"bos_token", "eos_token", "unk_token", "sep_token",
                                       "pad_token", "cls_token", "mask_token"};
    const cJSON *srcs[2] = {sm, tc};
    for (int j = 0; !s && j < 2; j++) {
        if (!srcs[j]) continue;
        for (size_t q = 0; q < sizeof keys / sizeof *keys; q++) {
            int64_t id = token_id(v, cJSON_GetObjectItemCaseSensitive(srcs[j], keys[q]));
            if (id < 0) continue;
            special[id] = true;
            if (q == 0 && v->bos < 0) v->bos = id;
            if (q == 1 && v->eos < 0) v->eos = id;
            if (q == 2 && v->unk < 0) v->unk = id;
        }
        const cJSON *extra = cJSON_GetObjectItemCaseSensitive(srcs[j], "additional_special_tokens");
        for (const cJSON *e = cJSON_IsArray(extra) ? extra->child : NULL; e; e = e->next) {
            int64_t id = token_id(v, e);
            if (id >= 0) special[id] = true;
        }
    }
    for (int i = 0; !s && i < n; i++) {
        v->score[i] = -1000.0f;
        if (i >= n_base) v->type[i] = special[i] ? 3 : 4; /* CONTROL / USER_DEFINED */
        else v->type[i] = is_byte_token(v->tok[i]) ? 6 : special[i] ? 3 : 1; /* BYTE / CONTROL / NORMAL */
    }
    free(special);
    cJSON_Delete(tj), cJSON_Delete(tc), cJSON_Delete(sm);
    if (s) vocab_free(v);
    return s;
}

/* ---- metadata ------------------------------------------------------------------ */

typedef struct meta {
    lmx_gguf_write_kv kv[40];
    uint32_t u32[40];
    float f32[40];
    int n;
} meta;

static void kv_u32(meta *m, const char *key, uint32_t v) {
    m->u32[m->n] = v;
    m->kv[m->n] = (lmx_gguf_write_kv){key, LMX_GGUF_UINT32, 0, 0, &m->u32[m->n]};
    m->n++;
}
static void kv_f32(meta *m, const char *key, float v) {
    m->f32[m->n] = v;
    m->kv[m->n] = (lmx_gguf_write_kv){key, LMX_GGUF_FLOAT32, 0, 0, &m->f32[m->n]};
    m->n++;
}
static void kv_str(meta *m, const char *key, const char *v) {
    m->kv[m->n++] = (lmx_gguf_write_kv){key, LMX_GGUF_STRING, 0, strlen(v), v};
}

/* An integer config key as UINT32 when present (mlx-lm skips absent ones). */
static void cfg_u32(meta *m, const lmx_config *c, const char *key, const char *cfg_key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c->root, cfg_key);
    if (cJSON_IsNumber(v)) kv_u32(m, key, (uint32_t)v->valuedouble);
}

lmx_status lmx_fuse_export_gguf(const char *folder, const char *gguf_file) {
    lmx_config *c = NULL;
    lmx_st_set *st = NULL;
    vocab v = {0};
    bool have_vocab = false;
    lmx_status s = lmx_config_load(folder, &c);
    if (!s) s = lmx_st_set_open(folder, &st);
    if (!s) s = read_vocab(folder, &v);
    have_vocab = !s;
    const cJSON *root = c ? c->root : NULL;
    const cJSON *nh = cJSON_GetObjectItemCaseSensitive(root, "num_attention_heads");
    const cJSON *nkv = cJSON_GetObjectItemCaseSensitive(root, "num_key_value_heads");
    const cJSON *hid = cJSON_GetObjectItemCaseSensitive(root, "hidden_size");
    if (!s && !cJSON_IsNumber(nh)) s = lmx_err(LMX_ERR_FORMAT, "%s: num_attention_heads: missing", folder);
    int heads = nh ? nh->valueint : 0, kv_heads = cJSON_IsNumber(nkv) ? nkv->valueint : heads;
    /* metadata, in mlx-lm's dict order */
    meta m;
    m.n = 0;
    lmx_gguf_str *toks = NULL;
    if (!s) {
        kv_str(&m, "general.name", "llama");
        cfg_u32(&m, c, "llama.context_length", "max_position_embeddings");
        cfg_u32(&m, c, "llama.embedding_length", "hidden_size");
        cfg_u32(&m, c, "llama.block_count", "num_hidden_layers");
        cfg_u32(&m, c, "llama.feed_forward_length", "intermediate_size");
        if (cJSON_IsNumber(hid)) kv_u32(&m, "llama.rope.dimension_count", (uint32_t)(hid->valueint / heads));
        kv_u32(&m, "llama.attention.head_count", (uint32_t)heads);
        kv_u32(&m, "llama.attention.head_count_kv", (uint32_t)kv_heads);
        cfg_u32(&m, c, "llama.expert_count", "num_local_experts");
        cfg_u32(&m, c, "llama.expert_used_count", "num_experts_per_tok");
        const cJSON *eps = cJSON_GetObjectItemCaseSensitive(root, "rms_norm_eps");
        if (cJSON_IsNumber(eps)) kv_f32(&m, "llama.attention.layer_norm_rms_epsilon", (float)eps->valuedouble);
        const cJSON *theta = cJSON_GetObjectItemCaseSensitive(root, "rope_theta");
        if (cJSON_IsNumber(theta)) kv_f32(&m, "llama.rope.freq_base", (float)theta->valuedouble);
        const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
        const char *rtype = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(rs, "type"));
        const cJSON *rf = cJSON_GetObjectItemCaseSensitive(rs, "factor");
        if (rtype && !strcmp(rtype, "linear")) {
            kv_str(&m, "llama.rope.scaling.type", "linear");
            if (cJSON_IsNumber(rf)) kv_f32(&m, "llama.rope.scaling.factor", (float)rf->valuedouble);
        }
        kv_u32(&m, "general.file_type", 1);
        kv_u32(&m, "general.quantization_version", 1);
        kv_str(&m, "general.architecture", "llama");
        kv_u32(&m, "general.alignment", 32);
        kv_str(&m, "tokenizer.ggml.model", "llama");
        toks = malloc((size_t)v.n * sizeof *toks);
        if (!toks) s = lmx_err(LMX_ERR_NOMEM, "out of memory");
        for (int i = 0; !s && i < v.n; i++) toks[i] = (lmx_gguf_str){v.tok[i], strlen(v.tok[i])};
        m.kv[m.n++] = (lmx_gguf_write_kv){"tokenizer.ggml.tokens", LMX_GGUF_ARRAY, LMX_GGUF_STRING, (uint64_t)v.n, toks};
        m.kv[m.n++] = (lmx_gguf_write_kv){"tokenizer.ggml.scores", LMX_GGUF_ARRAY, LMX_GGUF_FLOAT32, (uint64_t)v.n, v.score};
        m.kv[m.n++] = (lmx_gguf_write_kv){"tokenizer.ggml.token_type", LMX_GGUF_ARRAY, LMX_GGUF_UINT32, (uint64_t)v.n,
                                          v.type};
        if (v.bos >= 0) kv_u32(&m, "tokenizer.ggml.bos_token_id", (uint32_t)v.bos);
        if (v.eos >= 0) kv_u32(&m, "tokenizer.ggml.eos_token_id", (uint32_t)v.eos);
        if (v.unk >= 0) kv_u32(&m, "tokenizer.ggml.unknown_token_id", (uint32_t)v.unk);
    }
    /* tensors */
    size_t nt = st ? lmx_st_set_n_tensors(st) : 0;
    lmx_gguf_write_tensor *wt = calloc(nt ? nt : 1, sizeof *wt);
    char (*names)[256] = calloc(nt ? nt : 1, sizeof *names);
    void **bufs = calloc(nt ? nt : 1, sizeof *bufs);
    if (!s && (!wt || !names || !bufs)) s = lmx_err(LMX_ERR_NOMEM, "out of memory");
    for (size_t i = 0; !s && i < nt; i++) {
        const lmx_st_tensor *t = lmx_st_set_tensor_at(st, i, NULL);
        const lmx_dtype_traits *tr = lmx_dtype_info(t->dtype);
        if (!tr->is_float || tr->is_quant || t->n_dims < 1 || t->n_dims > 4) {
            s = lmx_err(LMX_ERR_UNSUPPORTED, "%s: tensor '%s': %s cannot go into an f16 GGUF", folder, t->name, tr->name);
            break;
        }
        gguf_name(t->name, names[i], sizeof names[i]);
        int64_t n = 1;
        for (int d = 0; d < t->n_dims; d++) n *= t->shape[d];
        lmx_dtype out = t->dtype == LMX_BF16 ? LMX_F16 : strstr(names[i], "norm") ? LMX_F32 : t->dtype;
        if (out != LMX_F32 && out != LMX_F16) {
            s = lmx_err(LMX_ERR_UNSUPPORTED, "%s: tensor '%s': %s has no GGUF type here", folder, t->name, tr->name);
            break;
        }
        size_t bytes = lmx_dtype_bytes(out, n);
        uint8_t *conv = malloc(bytes ? bytes : 1), *perm = NULL;
        float *f = out == t->dtype ? NULL : malloc((size_t)(n ? n : 1) * sizeof *f);
        if (!conv || (out != t->dtype && !f)) {
            free(conv), free(f);
            s = lmx_err(LMX_ERR_NOMEM, "out of memory");
            break;
        }
        if (out == t->dtype) {
            memcpy(conv, t->data, bytes);
        } else {
            tr->to_f32(t->data, f, n);
            lmx_dtype_info(out)->from_f32(f, conv, n);
        }
        free(f);
        bool q = ends_with(t->name, "self_attn.q_proj.weight"), k = ends_with(t->name, "self_attn.k_proj.weight");
        if ((q || k) && t->n_dims == 2) {
            int h = q || heads == kv_heads ? heads : kv_heads;
            if (h <= 0 || t->shape[0] % (2 * h)) {
                free(conv);
                s = lmx_err(LMX_ERR_SHAPE, "%s: tensor '%s': %lld rows do not split into %d heads", folder, t->name,
                            (long long)t->shape[0], h);
                break;
            }
            perm = malloc(bytes);
            if (!perm) {
                free(conv);
                s = lmx_err(LMX_ERR_NOMEM, "out of memory");
                break;
            }
            permute_rows(conv, perm, t->shape[0], bytes / (size_t)t->shape[0], h);
            free(conv);
            conv = perm;
        }
        bufs[i] = conv;
        wt[i].name = names[i];
        wt[i].ggml_type = out == LMX_F32 ? LMX_GGML_F32 : LMX_GGML_F16;
        wt[i].n_dims = t->n_dims;
        for (int d = 0; d < t->n_dims; d++) wt[i].ne[d] = t->shape[t->n_dims - 1 - d];
        wt[i].data = conv;
        wt[i].size = bytes;
    }
    if (!s) s = lmx_gguf_write(gguf_file, m.kv, (size_t)m.n, wt, nt);
    for (size_t i = 0; bufs && i < nt; i++) free(bufs[i]);
    free(bufs), free(wt), free(names), free(toks);
    if (have_vocab) vocab_free(&v);
    lmx_st_set_close(st);
    lmx_config_free(c);
    return s;
}
