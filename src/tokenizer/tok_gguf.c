/* tok_gguf.c - builds a tokenizer from the tokenizer.ggml.* keys of a GGUF
 * file, with llama.cpp's semantics:
 *   model "llama": SentencePiece BPE by scores, byte fallback <0xXX>, a dummy
 *                  prefix space (tokenizer.ggml.add_space_prefix, default on),
 *                  BOS added by default;
 *   model "gpt2":  byte-level BPE by merge rank, pre-tokenizer regexes chosen
 *                  by tokenizer.ggml.pre as llama.cpp does.
 * Control (and unknown) tokens are special: matched in text only when special
 * tokens are parsed; user-defined tokens are always matched. */
#include "tokenizer/tok_internal.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

/* ---- pre-tokenizer regexes (from llama.cpp's llama-vocab.cpp) ---------------- */

#define RX_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define RX_LLAMA3                                                                              \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|" \
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RX_QWEN2                                                                               \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|" \
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

typedef struct pre_def {
    const char *names; /* '|'-separated tokenizer.ggml.pre values */
    const char *rx[6];
    bool ignore_merges;
} pre_def;

static const pre_def PRE_DEFS[] = {
    {"llama3|llama-v3|llama-bpe|falcon3|falcon-h1|pixtral|dbrx|smaug-bpe|chatglm-bpe|midm-2.0|lfm2",
     {RX_LLAMA3}, true},
    {"qwen2|deepseek-r1-qwen|megrez|stablelm2|hunyuan", {RX_QWEN2}, false},
    {"gpt-2|gpt2|mpt|olmo|jais|phi-2|jina-es|jina-de|gigachat|jina-v1-en|jina-v2-es|jina-v2-de|"
     "jina-v2-code|roberta-bpe|a.x-4.0|mellum",
     {RX_GPT2}, false},
    {"deepseek-coder", {"[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[一-龥ࠀ-一가-퟿]+", "\\p{N}"}, false},
    {"deepseek-llm",
     {"[\\r\\n]", "\\s?\\p{L}+", "\\s?[!-/:-~！-／：-～‘-‟　-。]+", "\\s+$", "[一-龥ࠀ-一가-퟿]+",
      "\\p{N}+"},
     false},
    {"deepseek-v3|hunyuan-dense",
     {"\\p{N}{1,3}", "[一-龥぀-ゟ゠-ヿ]+",
      "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| "
      "?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     false},
    {"falcon", {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RX_GPT2, "[0-9][0-9][0-9]"}, false},
    {"starcoder|refact|command-r|smollm|codeshell|exaone|minerva-7b", {"\\p{N}", RX_GPT2}, false},
    {"poro-chat|bloom|gpt3-finnish", {" ?[^(\\s|.,!?…。，、।۔،)]+"}, false},
    {"viking", {" ?[^(\\s|.,!?…。，、।۔،)]+", "\\p{N}"}, false},
    {"default", {"[\\p{P}\\$\\+<=>\\^~\\|]+", RX_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"}, false},
};

static const pre_def *find_pre(const char *name) {
    size_t n = strlen(name);
    for (size_t i = 0; i < sizeof PRE_DEFS / sizeof *PRE_DEFS; i++) {
        const char *p = PRE_DEFS[i].names;
        while (*p) {
            const char *e = strchr(p, '|');
            size_t l = e ? (size_t)(e - p) : strlen(p);
            if (l == n && !memcmp(p, name, n)) return &PRE_DEFS[i];
            p += l + (e ? 1 : 0);
        }
    }
    return NULL;
}

/* ---- helpers ------------------------------------------------------------------ */

static char *gguf_strdup(const lmx_gguf *g, const char *key) {
    lmx_gguf_str s;
    if (!lmx_gguf_get_str(g, key, &s)) return NULL;
    return lmx_strndup(s.ptr, (size_t)s.len);
}

static lmx_status dec_from_json(const char *json, const char *path, tok_dec **out) {
    cJSON *j = cJSON_Parse(json);
    if (!j) return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", path);
    lmx_status st = tok_dec_parse(j, path, out);
    cJSON_Delete(j);
    return st;
}

static lmx_status load_tokens(lmx_tokenizer *t, const lmx_gguf *g, const char *path) {
    lmx_gguf_type et;
    uint64_t n;
    if (!lmx_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n) || et != LMX_GGUF_STRING)
        return lmx_err(LMX_ERR_NOT_FOUND, "%s: tokenizer.ggml.tokens: missing or not a string array", path);
    if (n == 0 || n >= (1u << 26)) return lmx_err(LMX_ERR_FORMAT, "%s: tokenizer.ggml.tokens: bad length %llu", path, (unsigned long long)n);
    for (uint64_t i = 0; i < n; i++) {
        lmx_gguf_str s = lmx_gguf_arr_str(g, "tokenizer.ggml.tokens", i);
        LMX_TRY(tok_set_piece(t, (int32_t)i, s.ptr ? s.ptr : "", (size_t)s.len));
    }
    if (!tok_strmap_init(&t->vocab, (size_t)n)) return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", path);
    for (uint64_t i = 0; i < n; i++)
        if (t->piece_len[i] && !tok_strmap_put(&t->vocab, t, (int32_t)i)) return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", path);

    uint64_t m;
    if (lmx_gguf_get_arr(g, "tokenizer.ggml.scores", &et, &m)) {
        if (et != LMX_GGUF_FLOAT32 || m != n) return lmx_err(LMX_ERR_FORMAT, "%s: tokenizer.ggml.scores: expected %llu f32 values", path, (unsigned long long)n);
        t->scores = malloc(n * sizeof *t->scores);
        if (!t->scores) return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", path);
        memcpy(t->scores, lmx_gguf_arr_data(g, "tokenizer.ggml.scores"), n * sizeof *t->scores);
    }
    t->ttype = malloc(n);
    if (!t->ttype) return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", path);
    memset(t->ttype, TT_NORMAL, n);
    if (lmx_gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &m)) {
        if ((et != LMX_GGUF_INT32 && et != LMX_GGUF_UINT32) || m != n)
            return lmx_err(LMX_ERR_FORMAT, "%s: tokenizer.ggml.token_type: expected %llu i32 values", path, (unsigned long long)n);
        const uint8_t *d = lmx_gguf_arr_data(g, "tokenizer.ggml.token_type");
        for (uint64_t i = 0; i < n; i++) {
            int32_t v;
            memcpy(&v, d + 4 * i, 4);
            t->ttype[i] = (uint8_t)(v >= 1 && v <= 6 ? v : TT_NORMAL);
        }
    }
    /* control / unknown / user-defined tokens are matched in text */
    size_t n_add = 0;
    for (uint64_t i = 0; i < n; i++)
        if ((t->ttype[i] == TT_CONTROL || t->ttype[i] == TT_USER || t->ttype[i] == TT_UNKNOWN) && t->piece_len[i]) n_add++;
    t->added = calloc(n_add + 1, sizeof *t->added);
    if (!t->added || !tok_strmap_init(&t->added_map, n_add)) return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", path);
    for (uint64_t i = 0; i < n; i++) {
        uint8_t ty = t->ttype[i];
        if ((ty != TT_CONTROL && ty != TT_USER && ty != TT_UNKNOWN) || !t->piece_len[i]) continue;
        tok_added *a = &t->added[t->n_added++];
        a->id = (int32_t)i;
        a->content = t->pieces[i];
        a->len = t->piece_len[i];
        a->special = ty != TT_USER;
        tok_strmap_put(&t->added_map, t, (int32_t)i);
    }
    return LMX_OK;
}

static lmx_status load_merges(lmx_tokenizer *t, const lmx_gguf *g, const char *path) {
    lmx_gguf_type et;
    uint64_t n;
    if (!lmx_gguf_get_arr(g, "tokenizer.ggml.merges", &et, &n) || et != LMX_GGUF_STRING)
        return lmx_err(LMX_ERR_NOT_FOUND, "%s: tokenizer.ggml.merges: missing or not a string array", path);
    if (!tok_pairmap_init(&t->merges, (size_t)n)) return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", path);
    tok_sbuf buf = {0};
    for (uint64_t i = 0; i < n; i++) {
        lmx_gguf_str s = lmx_gguf_arr_str(g, "tokenizer.ggml.merges", i);
        const char *sp = s.len > 1 ? memchr(s.ptr + 1, ' ', (size_t)s.len - 1) : NULL;
        if (!sp) {
            tok_sbuf_free(&buf);
            return lmx_err(LMX_ERR_FORMAT, "%s: tokenizer.ggml.merges[%llu]: expected \"a b\"", path, (unsigned long long)i);
        }
        size_t la = (size_t)(sp - s.ptr), lb = (size_t)s.len - la - 1;
        int32_t a = tok_strmap_get(&t->vocab, t, s.ptr, la), b = tok_strmap_get(&t->vocab, t, sp + 1, lb);
        buf.n = 0;
        tok_sbuf_put(&buf, s.ptr, la);
        tok_sbuf_put(&buf, sp + 1, lb);
        int32_t m = buf.oom ? -1 : tok_strmap_get(&t->vocab, t, buf.p, buf.n);
        if (a >= 0 && b >= 0 && m >= 0) tok_pairmap_put(&t->merges, a, b, (int32_t)i, m);
    }
    tok_sbuf_free(&buf);
    return LMX_OK;
}

static int32_t get_id(const lmx_gguf *g, const char *key, int32_t dflt, int32_t n) {
    int64_t v;
    if (!lmx_gguf_get_i64(g, key, &v)) return dflt;
    return v >= 0 && v < n ? (int32_t)v : -1;
}

static int get_flag(const lmx_gguf *g, const char *key, int dflt) {
    bool b;
    return lmx_gguf_get_bool(g, key, &b) ? (int)b : dflt;
}

lmx_status lmx_tokenizer_from_gguf(const lmx_gguf *g, lmx_tokenizer **out) {
    if (!g || !out) return lmx_err(LMX_ERR_INVALID_ARG, "lmx_tokenizer_from_gguf: NULL argument");
    const char *path = lmx_gguf_path(g);
    if (!path) path = "gguf";
    char *model = gguf_strdup(g, "tokenizer.ggml.model");
    if (!model) return lmx_err(LMX_ERR_NOT_FOUND, "%s: tokenizer.ggml.model: missing (no vocabulary in this file)", path);
    lmx_tokenizer *t;
    lmx_status st = tok_new(path, &t);
    if (st != LMX_OK) {
        free(model);
        return st;
    }
    t->gguf = true;
    bool spm = !strcmp(model, "llama"), bpe = !strcmp(model, "gpt2");
    if (!spm && !bpe)
        st = lmx_err(LMX_ERR_UNSUPPORTED, "%s: tokenizer.ggml.model \"%s\" is not supported (llama, gpt2)", path, model);
    if (st == LMX_OK) st = load_tokens(t, g, path);
    int32_t n = t->n_vocab;
    if (st == LMX_OK && spm) {
        t->model = TM_SPM;
        t->spm_space_prefix = get_flag(g, "tokenizer.ggml.add_space_prefix", 1);
        t->bos = get_id(g, "tokenizer.ggml.bos_token_id", 1, n);
        t->eos = get_id(g, "tokenizer.ggml.eos_token_id", 2, n);
        t->unk = get_id(g, "tokenizer.ggml.unknown_token_id", 0, n);
        t->add_bos = get_flag(g, "tokenizer.ggml.add_bos_token", 1);
        t->add_eos = get_flag(g, "tokenizer.ggml.add_eos_token", 0);
        st = dec_from_json(t->spm_space_prefix
                               ? "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"\\u2581\"},"
                                 "\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\","
                                 "\"content\":\" \",\"start\":1,\"stop\":0}]}"
                               : "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"\\u2581\"},"
                                 "\"content\":\" \"},{\"type\":\"ByteFallback\"},{\"type\":\"Fuse\"}]}",
                           path, &t->decoder);
    } else if (st == LMX_OK && bpe) {
        t->model = TM_BPE;
        t->bos = get_id(g, "tokenizer.ggml.bos_token_id", -1, n);
        t->eos = get_id(g, "tokenizer.ggml.eos_token_id", -1, n);
        t->unk = get_id(g, "tokenizer.ggml.unknown_token_id", -1, n);
        t->add_bos = get_flag(g, "tokenizer.ggml.add_bos_token", 0);
        t->add_eos = get_flag(g, "tokenizer.ggml.add_eos_token", 0);
        char *pre = gguf_strdup(g, "tokenizer.ggml.pre");
        const pre_def *pd = find_pre(pre ? pre : "default");
        if (!pd) st = lmx_err(LMX_ERR_UNSUPPORTED, "%s: tokenizer.ggml.pre \"%s\" is not supported", path, pre);
        else {
            size_t k = 0;
            while (k < 6 && pd->rx[k]) k++;
            t->ignore_merges = pd->ignore_merges;
            st = tok_pretok_regex_list(pd->rx, k, path, &t->pretok);
        }
        free(pre);
        if (st == LMX_OK) st = load_merges(t, g, path);
        if (st == LMX_OK) st = dec_from_json("{\"type\":\"ByteLevel\"}", path, &t->decoder);
    }
    free(model);
    if (st == LMX_OK) {
        if (t->bos >= 0) t->bos_str = lmx_strdup(t->pieces[t->bos] ? t->pieces[t->bos] : "");
        if (t->eos >= 0) t->eos_str = lmx_strdup(t->pieces[t->eos] ? t->pieces[t->eos] : "");
        char *tmpl = gguf_strdup(g, "tokenizer.chat_template");
        if (tmpl) st = tok_add_chat_template(t, "default", tmpl);
        free(tmpl);
    }
    if (st == LMX_OK) st = tok_finish(t);
    if (st != LMX_OK) {
        lmx_tokenizer_free(t);
        return st;
    }
    *out = t;
    return LMX_OK;
}
