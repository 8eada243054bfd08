/* convert_gguf_tok.c - tokenizer.json + tokenizer_config.json from a GGUF's
 * tokenizer.ggml.* keys, for `lmx convert --hf-path model.gguf`.
 *
 * "llama" (SentencePiece BPE): the form transformers' LlamaConverter
 * writes (legacy): normalizer Prepend("▁") (when add_space_prefix) +
 * Replace(" ", "▁"), no pre-tokenizer, a BPE model with byte_fallback,
 * fuse_unk and unk "<unk>", the decoder Replace("▁", " ") + ByteFallback +
 * Fuse (+ Strip(1 left)), a TemplateProcessing post-processor adding BOS
 * (and EOS) as add_bos_token/add_eos_token say. Merges by generate_merges
 * with scores (transformers' tokenization_utils_base): for each distinct
 * piece in id order, every split into two vocabulary pieces at a code-point
 * boundary (ordered by the halves' ids), then all merges stably sorted by
 * (piece score, left length, right length) descending — llama.cpp's "highest
 * score first" rule as BPE ranks. Control tokens (type 3) become special
 * added tokens, user-defined ones (type 4) plain added tokens.
 * "gpt2" (byte-level BPE) vocabularies are not converted yet: no tokenizer
 * file is written for them (nor for a GGUF without a vocabulary). */
#include "convert/convert_internal.h"
#include "io/gguf.h"

#include <stdio.h>
#include <stdlib.h>

typedef struct {
    const char *p;
    size_t n;
} sv;

typedef struct {
    int32_t *slot; /* ids, -1 empty */
    size_t cap;
    const sv *pieces;
} smap;

static uint64_t hash(const char *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
    return h;
}

static int32_t smap_get(const smap *m, const char *p, size_t n) {
    for (size_t i = hash(p, n) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        int32_t id = m->slot[i];
        if (id < 0) return -1;
        if (m->pieces[id].n == n && !memcmp(m->pieces[id].p, p, n)) return id;
    }
}

/* Later duplicates replace earlier ones (Python dict semantics). */
static void smap_put(smap *m, int32_t id) {
    const sv *s = &m->pieces[id];
    for (size_t i = hash(s->p, s->n) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        int32_t o = m->slot[i];
        if (o < 0 || (m->pieces[o].n == s->n && !memcmp(m->pieces[o].p, s->p, s->n))) {
            m->slot[i] = id;
            return;
        }
    }
}

typedef struct {
    int32_t l, r;
    float score;
    int ll, lr; /* code points */
    size_t seq;
} merge;

static int cps(const char *p, size_t n) {
    int c = 0;
    for (size_t i = 0; i < n; i++) c += ((uint8_t)p[i] & 0xC0) != 0x80;
    return c;
}

static int cmp_merge(const void *a, const void *b) {
    const merge *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    if (x->ll != y->ll) return x->ll > y->ll ? -1 : 1;
    if (x->lr != y->lr) return x->lr > y->lr ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int cmp_local(const void *a, const void *b) {
    const merge *x = a, *y = b;
    if (x->l != y->l) return x->l < y->l ? -1 : 1;
    return (x->r > y->r) - (x->r < y->r);
}

static cJSON *str_n(const sv *s) {
    char *t = malloc(s->n + 1);
    if (!t) return NULL;
    memcpy(t, s->p, s->n);
    t[s->n] = 0;
    cJSON *j = cJSON_CreateString(t);
    free(t);
    return j;
}

static cJSON *parse(const char *json) { return cJSON_Parse(json); }

static lmx_status spm_json(const lmx_gguf *g, const sv *pc, const float *sc, const int32_t *ty, int32_t n,
                           cJSON *root) {
    smap m = {NULL, 16, pc};
    while (m.cap < (size_t)n * 2) m.cap *= 2;
    m.slot = malloc(m.cap * sizeof *m.slot);
    bool *seen = calloc((size_t)n, 1);
    size_t cap = 1024, nm = 0;
    merge *ms = malloc(cap * sizeof *ms);
    if (!m.slot || !seen || !ms) {
        free(m.slot), free(seen), free(ms);
        return lmx_err(LMX_ERR_NOMEM, "convert: out of memory for the tokenizer");
    }
    memset(m.slot, 0xff, m.cap * sizeof *m.slot);
    for (int32_t i = 0; i < n; i++) smap_put(&m, i);
    lmx_status s = LMX_OK;
    for (int32_t i = 0; i < n && !s; i++) {
        int32_t last = smap_get(&m, pc[i].p, pc[i].n);
        if (seen[last]) continue;
        seen[last] = true;
        float score = last < 3 ? 0.0f : sc[last]; /* LlamaConverter: ids 0-2 score 0 */
        size_t first = nm;
        for (size_t k = 1; k < pc[i].n; k++) {
            if (((uint8_t)pc[i].p[k] & 0xC0) == 0x80) continue;
            int32_t l = smap_get(&m, pc[i].p, k), r = smap_get(&m, pc[i].p + k, pc[i].n - k);
            if (l < 0 || r < 0) continue;
            if (nm == cap) {
                merge *q = realloc(ms, (cap *= 2) * sizeof *ms);
                if (!q) {
                    s = lmx_err(LMX_ERR_NOMEM, "convert: out of memory for the tokenizer");
                    break;
                }
                ms = q;
            }
            ms[nm++] = (merge){l, r, score, cps(pc[i].p, k), cps(pc[i].p + k, pc[i].n - k), 0};
        }
        qsort(ms + first, nm - first, sizeof *ms, cmp_local);
    }
    for (size_t i = 0; i < nm; i++) ms[i].seq = i;
    if (!s) qsort(ms, nm, sizeof *ms, cmp_merge);
    /* model */
    cJSON *model = cJSON_AddObjectToObject(root, "model"), *vocab = cJSON_CreateObject(),
          *merges = cJSON_CreateArray();
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    int64_t unk = 0;
    lmx_gguf_get_i64(g, "tokenizer.ggml.unknown_token_id", &unk);
    if (unk >= 0 && unk < n) cJSON_AddItemToObject(model, "unk_token", str_n(&pc[unk]));
    else cJSON_AddNullToObject(model, "unk_token");
    cJSON_AddNullToObject(model, "continuing_subword_prefix");
    cJSON_AddNullToObject(model, "end_of_word_suffix");
    cJSON_AddBoolToObject(model, "fuse_unk", true);
    cJSON_AddBoolToObject(model, "byte_fallback", true);
    cJSON_AddBoolToObject(model, "ignore_merges", false);
    for (int32_t i = 0; i < n && !s; i++) {
        if (smap_get(&m, pc[i].p, pc[i].n) != i) continue; /* a later duplicate holds the piece */
        char *k = malloc(pc[i].n + 1);
        if (!k) {
            s = lmx_err(LMX_ERR_NOMEM, "out of memory");
            break;
        }
        memcpy(k, pc[i].p, pc[i].n);
        k[pc[i].n] = 0;
        cJSON_AddItemToObject(vocab, k, cJSON_CreateNumber(i));
        free(k);
    }
    cJSON_AddItemToObject(model, "vocab", vocab);
    for (size_t i = 0; i < nm && !s; i++) {
        cJSON *pair = cJSON_CreateArray();
        cJSON_AddItemToArray(pair, str_n(&pc[ms[i].l]));
        cJSON_AddItemToArray(pair, str_n(&pc[ms[i].r]));
        cJSON_AddItemToArray(merges, pair);
    }
    cJSON_AddItemToObject(model, "merges", merges);
    /* added tokens */
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    for (int32_t i = 0; i < n && ty; i++) {
        if (ty[i] != 3 && ty[i] != 4) continue;
        cJSON *a = cJSON_CreateObject();
        cJSON_AddNumberToObject(a, "id", i);
        cJSON_AddItemToObject(a, "content", str_n(&pc[i]));
        cJSON_AddBoolToObject(a, "single_word", false);
        cJSON_AddBoolToObject(a, "lstrip", false);
        cJSON_AddBoolToObject(a, "rstrip", false);
        cJSON_AddBoolToObject(a, "normalized", false);
        cJSON_AddBoolToObject(a, "special", ty[i] == 3);
        cJSON_AddItemToArray(added, a);
    }
    free(m.slot), free(seen), free(ms);
    return s;
}

static bool flag(const lmx_gguf *g, const char *key, bool dflt) {
    bool b;
    return lmx_gguf_get_bool(g, key, &b) ? b : dflt;
}

/* post_processor for BOS/EOS and tokenizer_config.json's token fields. */
static lmx_status specials(const lmx_gguf *g, const sv *pc, int32_t n, cJSON *root, cJSON *tc) {
    int64_t bos = -1, eos = -1, unk = 0; /* llama.cpp's SPM default unk id */
    lmx_gguf_get_i64(g, "tokenizer.ggml.bos_token_id", &bos);
    lmx_gguf_get_i64(g, "tokenizer.ggml.eos_token_id", &eos);
    lmx_gguf_get_i64(g, "tokenizer.ggml.unknown_token_id", &unk);
    bool add_bos = flag(g, "tokenizer.ggml.add_bos_token", true) && bos >= 0 && bos < n;
    bool add_eos = flag(g, "tokenizer.ggml.add_eos_token", false) && eos >= 0 && eos < n;
    cJSON *pp = cJSON_AddObjectToObject(root, "post_processor");
    cJSON_AddStringToObject(pp, "type", "TemplateProcessing");
    cJSON *single = cJSON_AddArrayToObject(pp, "single"), *pair = cJSON_AddArrayToObject(pp, "pair");
    cJSON *spt = cJSON_AddObjectToObject(pp, "special_tokens");
    for (int part = 0; part < 2; part++) {
        cJSON *arr = part ? pair : single;
        const char *seqs[2] = {"A", "B"};
        for (int q = 0; q <= part; q++) {
            for (int k = 0; k < 2; k++) {
                bool on = k == 0 ? add_bos : add_eos;
                int64_t id = k == 0 ? bos : eos;
                if (k == 1) { /* the sequence between BOS and EOS */
                    cJSON *sq = cJSON_CreateObject(), *in = cJSON_AddObjectToObject(sq, "Sequence");
                    cJSON_AddStringToObject(in, "id", seqs[q]);
                    cJSON_AddNumberToObject(in, "type_id", q);
                    cJSON_AddItemToArray(arr, sq);
                }
                if (!on) continue;
                cJSON *st = cJSON_CreateObject(), *in = cJSON_AddObjectToObject(st, "SpecialToken");
                cJSON_AddItemToObject(in, "id", str_n(&pc[id]));
                cJSON_AddNumberToObject(in, "type_id", q);
                cJSON_AddItemToArray(arr, st);
            }
        }
    }
    for (int k = 0; k < 2; k++) {
        int64_t id = k ? eos : bos;
        if (!(k ? add_eos : add_bos)) continue;
        cJSON *e = cJSON_CreateObject();
        cJSON_AddItemToObject(e, "id", str_n(&pc[id]));
        cJSON *ids = cJSON_AddArrayToObject(e, "ids"), *toks = cJSON_AddArrayToObject(e, "tokens");
        cJSON_AddItemToArray(ids, cJSON_CreateNumber((double)id));
        cJSON_AddItemToArray(toks, str_n(&pc[id]));
        cJSON *name = str_n(&pc[id]);
        if (name && !cJSON_GetObjectItemCaseSensitive(spt, name->valuestring))
            cJSON_AddItemToObject(spt, name->valuestring, e);
        else
            cJSON_Delete(e);
        cJSON_Delete(name);
    }
    cJSON_AddBoolToObject(tc, "add_bos_token", add_bos);
    cJSON_AddBoolToObject(tc, "add_eos_token", add_eos);
    const char *names[3] = {"bos_token", "eos_token", "unk_token"};
    int64_t ids[3] = {bos, eos, unk};
    for (int k = 0; k < 3; k++)
        if (ids[k] >= 0 && ids[k] < n) cJSON_AddItemToObject(tc, names[k], str_n(&pc[ids[k]]));
    return LMX_OK;
}

static lmx_status write_json(const char *dir, const char *name, const cJSON *j, bool pretty) {
    char *text = pretty ? lmx_pyjson_dump(j, false) : cJSON_PrintUnformatted(j), *p = lmx_path_join(dir, name);
    lmx_status s = text && p ? lmx_atomic_write(p, text, strlen(text)) : lmx_err(LMX_ERR_NOMEM, "out of memory");
    free(text), free(p);
    return s;
}

lmx_status cv_gguf_tokenizer(const lmx_gguf *g, const char *dir) {
    lmx_gguf_str model;
    if (!lmx_gguf_get_str(g, "tokenizer.ggml.model", &model)) return LMX_OK;
    if (model.len != 5 || memcmp(model.ptr, "llama", 5)) return LMX_OK; /* gpt2 etc.: see the header */
    const char *path = lmx_gguf_path(g);
    lmx_gguf_type et;
    uint64_t n, m;
    if (!lmx_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n) || et != LMX_GGUF_STRING || n == 0 || n >= (1u << 26))
        return lmx_err(LMX_ERR_FORMAT, "%s: tokenizer.ggml.tokens: missing or not a string array", path);
    sv *pc = malloc(n * sizeof *pc);
    float *sc = calloc(n, sizeof *sc);
    int32_t *ty = NULL;
    if (!pc || !sc) {
        free(pc), free(sc);
        return lmx_err(LMX_ERR_NOMEM, "out of memory");
    }
    for (uint64_t i = 0; i < n; i++) {
        lmx_gguf_str s = lmx_gguf_arr_str(g, "tokenizer.ggml.tokens", i);
        pc[i] = (sv){s.ptr, (size_t)s.len};
    }
    if (lmx_gguf_get_arr(g, "tokenizer.ggml.scores", &et, &m) && et == LMX_GGUF_FLOAT32 && m == n)
        memcpy(sc, lmx_gguf_arr_data(g, "tokenizer.ggml.scores"), n * sizeof *sc);
    if (lmx_gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &m) && et == LMX_GGUF_INT32 && m == n &&
        (ty = malloc(n * sizeof *ty)))
        memcpy(ty, lmx_gguf_arr_data(g, "tokenizer.ggml.token_type"), n * sizeof *ty);
    bool prefix = flag(g, "tokenizer.ggml.add_space_prefix", true);
    cJSON *root = cJSON_CreateObject(), *tc = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    lmx_status s = spm_json(g, pc, sc, ty, (int32_t)n, root);
    cJSON_AddItemToObject(root, "normalizer",
                          parse(prefix ? "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\",\"prepend\":"
                                         "\"\\u2581\"},{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},"
                                         "\"content\":\"\\u2581\"}]}"
                                       : "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Replace\",\"pattern\":"
                                         "{\"String\":\" \"},\"content\":\"\\u2581\"}]}"));
    cJSON_AddNullToObject(root, "pre_tokenizer");
    if (!s) s = specials(g, pc, (int32_t)n, root, tc);
    cJSON_AddItemToObject(root, "decoder",
                          parse(prefix ? "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":"
                                         "{\"String\":\"\\u2581\"},\"content\":\" \"},{\"type\":\"ByteFallback\"},"
                                         "{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\" \",\"start\":1,"
                                         "\"stop\":0}]}"
                                       : "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":"
                                         "{\"String\":\"\\u2581\"},\"content\":\" \"},{\"type\":\"ByteFallback\"},"
                                         "{\"type\":\"Fuse\"}]}"));
    /* transformers keeps tokenizer.json as written for PreTrainedTokenizerFast */
    cJSON_AddStringToObject(tc, "tokenizer_class", "PreTrainedTokenizerFast");
    cJSON_AddBoolToObject(tc, "clean_up_tokenization_spaces", false);
    lmx_gguf_str tmpl;
    if (lmx_gguf_get_str(g, "tokenizer.chat_template", &tmpl)) {
        sv t = {tmpl.ptr, (size_t)tmpl.len};
        cJSON_AddItemToObject(tc, "chat_template", str_n(&t));
    }
    if (!s) s = write_json(dir, "tokenizer.json", root, false);
    if (!s) s = write_json(dir, "tokenizer_config.json", tc, true);
    cJSON_Delete(root), cJSON_Delete(tc);
    free(pc), free(sc), free(ty);
    return s;
}
