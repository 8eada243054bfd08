/* tok_json.c - loads a Hugging Face tokenizer.json (BPE model) and, from the
 * same folder, tokenizer_config.json (add_bos_token, add_eos_token,
 * bos_token, eos_token, chat_template) and chat_template.jinja. */
#include "tokenizer/tok_internal.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static char *dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    if (!slash) return lmx_strdup(".");
    return lmx_strndup(path, (size_t)(slash - path) + (slash == path));
}

static lmx_status load_vocab(lmx_tokenizer *t, const cJSON *vocab, const char *path) {
    if (!cJSON_IsObject(vocab)) return lmx_err(LMX_ERR_FORMAT, "%s: model.vocab: expected an object", path);
    int n = cJSON_GetArraySize(vocab);
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble >= (1 << 26))
            return lmx_err(LMX_ERR_FORMAT, "%s: model.vocab: bad id for \"%s\"", path, e->string ? e->string : "?");
        LMX_TRY(tok_set_piece(t, (int32_t)e->valuedouble, e->string, strlen(e->string)));
    }
    if (!tok_strmap_init(&t->vocab, (size_t)n)) return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", path);
    cJSON_ArrayForEach(e, vocab) {
        int32_t id = (int32_t)e->valuedouble;
        /* a piece whose slot holds another string (clash with an added
         * token) is still findable through its own text */
        if (strcmp(t->pieces[id], e->string)) continue;
        if (!tok_strmap_put(&t->vocab, t, id)) return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", path);
    }
    return LMX_OK;
}

typedef struct merge_item {
    const char *a, *b;
    size_t la, lb;
    int32_t ia, ib;
    size_t moff, mlen; /* merged string in the batch buffer */
} merge_item;

#define MERGE_BATCH 64

/* Looks up a batch of merges with prefetching: vocab lookups are cache misses,
 * and this is most of the load time of a large tokenizer.json. */
static lmx_status merge_batch(lmx_tokenizer *t, merge_item *it, size_t n, int32_t rank0, tok_sbuf *buf,
                              const char *path) {
    size_t plen = t->cont_prefix ? strlen(t->cont_prefix) : 0;
    for (size_t i = 0; i < n; i++) {
        tok_strmap_prefetch(&t->vocab, it[i].a, it[i].la);
        tok_strmap_prefetch(&t->vocab, it[i].b, it[i].lb);
    }
    buf->n = 0;
    for (size_t i = 0; i < n; i++) {
        it[i].ia = tok_strmap_get(&t->vocab, t, it[i].a, it[i].la);
        it[i].ib = tok_strmap_get(&t->vocab, t, it[i].b, it[i].lb);
        if (it[i].ia < 0 || it[i].ib < 0)
            return lmx_err(LMX_ERR_FORMAT, "%s: model.merges[%d]: token not in the vocabulary", path, rank0 + (int32_t)i);
        size_t skip = plen && it[i].lb >= plen && !memcmp(it[i].b, t->cont_prefix, plen) ? plen : 0;
        it[i].moff = buf->n;
        tok_sbuf_put(buf, it[i].a, it[i].la);
        tok_sbuf_put(buf, it[i].b + skip, it[i].lb - skip);
        it[i].mlen = buf->n - it[i].moff;
    }
    if (buf->oom) return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", path);
    for (size_t i = 0; i < n; i++) {
        tok_strmap_prefetch(&t->vocab, buf->p + it[i].moff, it[i].mlen);
        uint64_t k = ((uint64_t)(uint32_t)it[i].ia << 32) | (uint32_t)it[i].ib;
        __builtin_prefetch(&t->merges.slots[tok_pair_slot(&t->merges, k)]);
    }
    for (size_t i = 0; i < n; i++) {
        int32_t m = tok_strmap_get(&t->vocab, t, buf->p + it[i].moff, it[i].mlen);
        if (m < 0)
            return lmx_err(LMX_ERR_FORMAT, "%s: model.merges[%d]: merged token not in the vocabulary", path, rank0 + (int32_t)i);
        tok_pairmap_put(&t->merges, it[i].ia, it[i].ib, rank0 + (int32_t)i, m);
    }
    return LMX_OK;
}

static lmx_status load_merges(lmx_tokenizer *t, const cJSON *merges, const char *path) {
    if (!merges || cJSON_IsNull(merges)) return LMX_OK;
    if (!cJSON_IsArray(merges)) return lmx_err(LMX_ERR_FORMAT, "%s: model.merges: expected an array", path);
    int n = cJSON_GetArraySize(merges);
    if (!tok_pairmap_init(&t->merges, (size_t)n)) return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", path);
    tok_sbuf buf = {0};
    merge_item it[MERGE_BATCH];
    size_t nb = 0;
    int32_t rank = 0;
    const cJSON *e;
    lmx_status st = LMX_OK;
    cJSON_ArrayForEach(e, merges) {
        merge_item *m = &it[nb];
        if (cJSON_IsString(e)) {
            const char *s = e->valuestring, *sp = s[0] ? strchr(s + 1, ' ') : NULL;
            if (!sp) {
                st = lmx_err(LMX_ERR_FORMAT, "%s: model.merges[%d]: expected \"a b\"", path, rank + (int32_t)nb);
                break;
            }
            m->a = s;
            m->la = (size_t)(sp - s);
            m->b = sp + 1;
            m->lb = strlen(m->b);
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
                   cJSON_IsString(e->child->next)) {
            m->a = e->child->valuestring;
            m->la = strlen(m->a);
            m->b = e->child->next->valuestring;
            m->lb = strlen(m->b);
        } else {
            st = lmx_err(LMX_ERR_FORMAT, "%s: model.merges[%d]: expected a string or a pair", path, rank + (int32_t)nb);
            break;
        }
        if (++nb == MERGE_BATCH) {
            if ((st = merge_batch(t, it, nb, rank, &buf, path)) != LMX_OK) break;
            rank += (int32_t)nb;
            nb = 0;
        }
    }
    if (st == LMX_OK && nb) st = merge_batch(t, it, nb, rank, &buf, path);
    tok_sbuf_free(&buf);
    return st;
}

static lmx_status load_added(lmx_tokenizer *t, const cJSON *arr, const char *path) {
    if (!arr || cJSON_IsNull(arr)) return LMX_OK;
    if (!cJSON_IsArray(arr)) return lmx_err(LMX_ERR_FORMAT, "%s: added_tokens: expected an array", path);
    int n = cJSON_GetArraySize(arr);
    t->added = calloc((size_t)n + 1, sizeof *t->added);
    if (!t->added || !tok_strmap_init(&t->added_map, (size_t)n))
        return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", path);
    const cJSON *e;
    tok_sbuf nb = {0};
    cJSON_ArrayForEach(e, arr) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        const char *content = tok_jstr(e, "content");
        if (!cJSON_IsNumber(id) || !content || !*content || id->valuedouble < 0 || id->valuedouble >= (1 << 26)) {
            tok_sbuf_free(&nb);
            return lmx_err(LMX_ERR_FORMAT, "%s: added_tokens[%zu]: needs \"id\" and a non-empty \"content\"", path, t->n_added);
        }
        int32_t i = (int32_t)id->valuedouble;
        size_t len = strlen(content);
        /* an added token replaces the model's string for its id */
        if (i < t->n_vocab && t->pieces[i] && (t->piece_len[i] != len || memcmp(t->pieces[i], content, len)))
            t->pieces[i] = NULL;
        LMX_TRY(tok_set_piece(t, i, content, len));
        tok_added *a = &t->added[t->n_added++];
        a->id = i;
        a->content = t->pieces[i];
        a->len = len;
        a->special = tok_jbool(e, "special", 0);
        a->lstrip = tok_jbool(e, "lstrip", 0);
        a->rstrip = tok_jbool(e, "rstrip", 0);
        a->single_word = tok_jbool(e, "single_word", 0);
        a->normalized = tok_jbool(e, "normalized", !a->special);
        if (a->normalized && t->normalizer) {
            tok_norm_apply(t->normalizer, content, len, &nb);
            a->norm_content = lmx_strndup(nb.p, nb.n);
        }
        if (a->normalized) t->has_norm_added = true;
        if (!tok_strmap_put(&t->added_map, t, i)) {
            tok_sbuf_free(&nb);
            return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", path);
        }
    }
    tok_sbuf_free(&nb);
    return LMX_OK;
}

static const char *token_str(const cJSON *v) {
    if (cJSON_IsString(v)) return v->valuestring;
    return tok_jstr(v, "content"); /* {"content": ..., "__type": "AddedToken"} */
}

static lmx_status load_config(lmx_tokenizer *t, const char *dir) {
    char *cfg_path = lmx_path_join(dir, "tokenizer_config.json");
    char *jinja_path = lmx_path_join(dir, "chat_template.jinja");
    lmx_status st = LMX_OK;
    if (!cfg_path || !jinja_path) st = lmx_err(LMX_ERR_NOMEM, "%s: out of memory", dir);
    if (st == LMX_OK && lmx_file_exists(cfg_path)) {
        char *data;
        size_t size;
        st = lmx_read_file(cfg_path, &data, &size);
        cJSON *j = st == LMX_OK ? cJSON_ParseWithLength(data, size) : NULL;
        if (st == LMX_OK && !j) st = lmx_err(LMX_ERR_FORMAT, "%s: not valid JSON", cfg_path);
        if (st == LMX_OK) {
            t->add_bos = tok_jbool(j, "add_bos_token", -1);
            t->add_eos = tok_jbool(j, "add_eos_token", -1);
            const char *b = token_str(cJSON_GetObjectItemCaseSensitive(j, "bos_token"));
            const char *e = token_str(cJSON_GetObjectItemCaseSensitive(j, "eos_token"));
            if (b) {
                t->bos_str = lmx_strdup(b);
                t->bos = lmx_tokenizer_token_id(t, b);
            }
            if (e) {
                t->eos_str = lmx_strdup(e);
                t->eos = lmx_tokenizer_token_id(t, e);
            }
            const cJSON *ct = cJSON_GetObjectItemCaseSensitive(j, "chat_template");
            if (cJSON_IsString(ct)) st = tok_add_chat_template(t, "default", ct->valuestring);
            else if (cJSON_IsArray(ct)) {
                const cJSON *x;
                cJSON_ArrayForEach(x, ct) {
                    const char *nm = tok_jstr(x, "name"), *tp = tok_jstr(x, "template");
                    if (!nm || !tp) {
                        st = lmx_err(LMX_ERR_FORMAT, "%s: chat_template: entries need \"name\" and \"template\"", cfg_path);
                        break;
                    }
                    if ((st = tok_add_chat_template(t, nm, tp)) != LMX_OK) break;
                }
            }
        }
        cJSON_Delete(j);
        if (data) free(data);
    }
    if (st == LMX_OK && lmx_file_exists(jinja_path)) {
        char *data;
        size_t size;
        st = lmx_read_file(jinja_path, &data, &size);
        if (st == LMX_OK) {
            /* the .jinja file takes precedence over the config's default */
            for (size_t i = 0; i < t->n_tmpl; i++)
                if (!strcmp(t->tmpl_names[i], "default")) t->tmpl_names[i][0] = '\0';
            st = tok_add_chat_template(t, "default", data);
            free(data);
        }
    }
    free(cfg_path);
    free(jinja_path);
    return st;
}

static lmx_status load_model(lmx_tokenizer *t, const cJSON *m, const char *path) {
    if (!cJSON_IsObject(m)) return lmx_err(LMX_ERR_FORMAT, "%s: model: missing or not an object", path);
    const char *type = tok_jstr(m, "type");
    if (!type) type = cJSON_GetObjectItemCaseSensitive(m, "merges") ? "BPE" : "?";
    if (strcmp(type, "BPE"))
        return lmx_err(LMX_ERR_UNSUPPORTED, "%s: model type \"%s\" is not supported (only BPE)", path, type);
    t->model = TM_BPE;
    t->byte_fallback = tok_jbool(m, "byte_fallback", 0);
    t->fuse_unk = tok_jbool(m, "fuse_unk", 0);
    t->ignore_merges = tok_jbool(m, "ignore_merges", 0);
    const char *p = tok_jstr(m, "continuing_subword_prefix"), *s = tok_jstr(m, "end_of_word_suffix");
    if (p && *p) t->cont_prefix = lmx_strdup(p);
    if (s && *s) t->eow_suffix = lmx_strdup(s);
    LMX_TRY(load_vocab(t, cJSON_GetObjectItemCaseSensitive(m, "vocab"), path));
    LMX_TRY(load_merges(t, cJSON_GetObjectItemCaseSensitive(m, "merges"), path));
    const char *unk = tok_jstr(m, "unk_token");
    if (unk) t->unk = tok_strmap_get(&t->vocab, t, unk, strlen(unk));
    return LMX_OK;
}

lmx_status tok_load_json(const char *path, lmx_tokenizer **out) {
    char *data;
    size_t size;
    LMX_TRY(lmx_read_file(path, &data, &size));
    cJSON *j = cJSON_ParseWithLength(data, size);
    free(data);
    if (!j) return lmx_err(LMX_ERR_FORMAT, "%s: not valid JSON", path);
    lmx_tokenizer *t;
    lmx_status st = tok_new(path, &t);
    if (st != LMX_OK) {
        cJSON_Delete(j);
        return st;
    }
    if (!cJSON_IsObject(j)) st = lmx_err(LMX_ERR_FORMAT, "%s: expected a JSON object", path);
    if (st == LMX_OK) st = load_model(t, cJSON_GetObjectItemCaseSensitive(j, "model"), path);
    if (st == LMX_OK) st = tok_norm_parse(cJSON_GetObjectItemCaseSensitive(j, "normalizer"), path, &t->normalizer);
    if (st == LMX_OK) st = tok_pretok_parse(cJSON_GetObjectItemCaseSensitive(j, "pre_tokenizer"), path, &t->pretok);
    if (st == LMX_OK) st = tok_dec_parse(cJSON_GetObjectItemCaseSensitive(j, "decoder"), path, &t->decoder);
    if (st == LMX_OK) st = load_added(t, cJSON_GetObjectItemCaseSensitive(j, "added_tokens"), path);
    if (st == LMX_OK) st = tok_post_parse(cJSON_GetObjectItemCaseSensitive(j, "post_processor"), path, t, &t->post);
    cJSON_Delete(j);
    char *dir = st == LMX_OK ? dir_of(path) : NULL;
    if (st == LMX_OK) st = dir ? load_config(t, dir) : lmx_err(LMX_ERR_NOMEM, "%s: out of memory", path);
    free(dir);
    if (st == LMX_OK) st = tok_finish(t);
    if (st != LMX_OK) {
        lmx_tokenizer_free(t);
        return st;
    }
    *out = t;
    return LMX_OK;
}
