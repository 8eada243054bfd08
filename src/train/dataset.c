/*
 * dataset.c - loading and tokenizing fine-tuning jsonl files the way
 * mlx_lm/tuner/datasets.py does (see dataset.h for the rules).
 *
 * Records are kept as their JSON text and parsed again when an example is
 * first tokenized: memory stays proportional to the file, and like mlx-lm's
 * CacheDataset an example that is never visited is never rendered.
 */
#include "train/dataset.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *json;   /* the line's text */
    int64_t line; /* 1-based, for messages */
    int64_t n_keys;
    int32_t *tokens; /* NULL until tokenized */
    int64_t n_tokens, offset;
} ds_record;

struct lmx_dataset {
    char *path;
    const lmx_tokenizer *tok;
    lmx_data_options opt;
    char *keys[4]; /* owned copies of the feature names */
    lmx_data_format format;
    ds_record *rec;
    int64_t n;
};

const char *const lmx_data_no_valid_warning =
    "Warning: Validation set not found or empty. Training will proceed without validation.";

void lmx_data_options_init(lmx_data_options *o) {
    memset(o, 0, sizeof *o);
    o->prompt_feature = "prompt";
    o->completion_feature = "completion";
    o->chat_feature = "messages";
    o->text_feature = "text";
}

int64_t lmx_dataset_size(const lmx_dataset *d) { return d ? d->n : 0; }
lmx_data_format lmx_dataset_format(const lmx_dataset *d) { return d->format; }
const char *lmx_dataset_path(const lmx_dataset *d) { return d->path; }
int64_t lmx_dataset_item_len(const lmx_dataset *d, int64_t i) { return d->rec[i].n_keys; }

void lmx_dataset_free(lmx_dataset *d) {
    if (!d) return;
    for (int64_t i = 0; i < d->n; i++) {
        free(d->rec[i].json);
        lmx_free(d->rec[i].tokens);
    }
    free(d->rec);
    for (int k = 0; k < 4; k++) free(d->keys[k]);
    free(d->path);
    free(d);
}

/* len(dict) of the record json.loads gives: duplicate keys collapse (the
 * last one wins in Python). */
static int64_t count_keys(const cJSON *obj) {
    int64_t n = 0;
    for (const cJSON *a = obj->child; a; a = a->next) {
        bool dup = false;
        for (const cJSON *b = a->next; b && !dup; b = b->next) dup = strcmp(a->string, b->string) == 0;
        n += !dup;
    }
    return n;
}

/* The value json.loads would keep for key: the last of duplicates. */
static const cJSON *get_key(const cJSON *obj, const char *key) {
    const cJSON *found = NULL;
    for (const cJSON *a = obj->child; a; a = a->next)
        if (strcmp(a->string, key) == 0) found = a;
    return found;
}

static lmx_status parse_line(const char *path, int64_t line, const char *text, cJSON **out) {
    const char *end = NULL;
    cJSON *j = cJSON_ParseWithOpts(text, &end, true);
    if (!j) {
        size_t col = end && end >= text ? (size_t)(end - text) + 1 : 1;
        const char *what = *text == 0 ? "an empty line (json.loads: Expecting value)" : "malformed JSON";
        return lmx_err(LMX_ERR_FORMAT, "%s:%lld: %s at column %zu", path, (long long)line, what, col);
    }
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return lmx_err(LMX_ERR_FORMAT, "%s:%lld: each line must be a JSON object", path, (long long)line);
    }
    *out = j;
    return LMX_OK;
}

static lmx_status add_record(lmx_dataset *d, int64_t *cap, const char *text, size_t len, int64_t line) {
    if (d->n == *cap) {
        int64_t nc = *cap ? *cap * 2 : 64;
        ds_record *r = realloc(d->rec, (size_t)nc * sizeof *r);
        if (!r) return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", d->path);
        d->rec = r;
        *cap = nc;
    }
    ds_record *r = &d->rec[d->n];
    memset(r, 0, sizeof *r);
    r->json = lmx_strndup(text, len);
    if (!r->json) return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", d->path);
    r->line = line;
    d->n++;
    cJSON *j;
    LMX_TRY(parse_line(d->path, line, r->json, &j));
    r->n_keys = count_keys(j);
    if (d->n == 1) { /* create_dataset: the first record decides the format */
        lmx_status s = LMX_OK;
        if (get_key(j, d->opt.prompt_feature) && get_key(j, d->opt.completion_feature)) {
            d->format = LMX_DATA_COMPLETIONS;
        } else if (get_key(j, d->opt.chat_feature)) {
            d->format = LMX_DATA_CHAT;
        } else if (get_key(j, d->opt.text_feature)) {
            d->format = LMX_DATA_TEXT;
            if (d->opt.mask_prompt)
                s = lmx_err(LMX_ERR_INVALID_ARG, "%s: Prompt masking not supported for text dataset.", d->path);
        } else {
            s = lmx_err(LMX_ERR_FORMAT,
                        "%s:%lld: unsupported data format: a record needs \"%s\"+\"%s\", \"%s\" or \"%s\" (see "
                        "https://github.com/ml-explore/mlx-lm/blob/main/mlx_lm/LORA.md#Data)",
                        d->path, (long long)line, d->opt.prompt_feature, d->opt.completion_feature, d->opt.chat_feature,
                        d->opt.text_feature);
        }
        cJSON_Delete(j);
        return s;
    }
    cJSON_Delete(j);
    return LMX_OK;
}

/* Python's text-mode line iteration: "\n", "\r\n" and a lone "\r" end a line. */
static lmx_status split_lines(lmx_dataset *d, const char *buf, size_t size) {
    int64_t cap = 0, line = 0;
    size_t i = 0;
    while (i < size) {
        size_t s = i;
        while (i < size && buf[i] != '\n' && buf[i] != '\r') i++;
        size_t e = i;
        if (i < size && buf[i] == '\r' && i + 1 < size && buf[i + 1] == '\n') i++;
        if (i < size) i++;
        LMX_TRY(add_record(d, &cap, buf + s, e - s, ++line));
    }
    return LMX_OK;
}

lmx_status lmx_dataset_load(const char *path, const lmx_tokenizer *tok, const lmx_data_options *o, lmx_dataset **out) {
    *out = NULL;
    if (!tok) return lmx_err(LMX_ERR_INVALID_ARG, "%s: a tokenizer is needed to read training data", path);
    lmx_data_options def;
    if (!o) {
        lmx_data_options_init(&def);
        o = &def;
    }
    lmx_dataset *d = calloc(1, sizeof *d);
    if (!d) return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", path);
    d->path = lmx_strdup(path);
    d->tok = tok;
    d->opt = *o;
    const char *names[4] = {o->prompt_feature, o->completion_feature, o->chat_feature, o->text_feature};
    const char *dflt[4] = {"prompt", "completion", "messages", "text"};
    for (int k = 0; k < 4; k++) d->keys[k] = lmx_strdup(names[k] ? names[k] : dflt[k]);
    d->opt.prompt_feature = d->keys[0];
    d->opt.completion_feature = d->keys[1];
    d->opt.chat_feature = d->keys[2];
    d->opt.text_feature = d->keys[3];
    char *buf = NULL;
    size_t size = 0;
    lmx_status s = lmx_read_file(path, &buf, &size);
    if (s == LMX_OK) s = split_lines(d, buf, size);
    free(buf);
    if (s == LMX_OK && d->n == 0) s = lmx_err(LMX_ERR_FORMAT, "%s: empty file (no records)", path);
    if (s != LMX_OK) {
        lmx_dataset_free(d);
        return s;
    }
    *out = d;
    return LMX_OK;
}

/* ---- tokenizing one example ---------------------------------------------- */

static lmx_status template_tokens(lmx_dataset *d, const ds_record *r, const cJSON *messages, const cJSON *tools,
                                  bool add_generation_prompt, int32_t **ids, size_t *n) {
    if (cJSON_GetArraySize(messages) == 0)
        return lmx_err(LMX_ERR_INVALID_ARG,
                       "%s:%lld: Cannot apply chat template to an empty conversation. Provide at least one message.",
                       d->path, (long long)r->line);
    char *msgs = cJSON_PrintUnformatted(messages);
    char *extra = NULL;
    if (tools && !cJSON_IsNull(tools)) {
        cJSON *x = cJSON_CreateObject();
        cJSON_AddItemToObject(x, "tools", cJSON_Duplicate(tools, true));
        extra = cJSON_PrintUnformatted(x);
        cJSON_Delete(x);
    }
    char *text = NULL;
    lmx_status s = msgs ? lmx_apply_chat_template(d->tok, msgs, add_generation_prompt, extra, &text)
                        : lmx_err(LMX_ERR_NOMEM, "out of memory");
    if (s == LMX_OK) s = lmx_tokenize(d->tok, text, strlen(text), false, ids, n);
    if (s != LMX_OK) lmx_err_prefix(s, "%s:%lld", d->path, (long long)r->line);
    free(msgs);
    free(extra);
    lmx_free(text);
    return s;
}

/* The chat template over messages (all of them, and for --mask-prompt all
 * but the last to find the offset). */
static lmx_status chat_example(lmx_dataset *d, ds_record *r, const cJSON *messages, const cJSON *tools,
                               bool gen_prompt_for_offset) {
    int32_t *ids = NULL;
    size_t n = 0;
    LMX_TRY(template_tokens(d, r, messages, tools, false, &ids, &n));
    int64_t offset = 0;
    if (d->opt.mask_prompt) {
        cJSON *head = cJSON_Duplicate(messages, true);
        cJSON_DeleteItemFromArray(head, cJSON_GetArraySize(head) - 1);
        int32_t *hids = NULL;
        size_t hn = 0;
        lmx_status s = template_tokens(d, r, head, tools, gen_prompt_for_offset, &hids, &hn);
        cJSON_Delete(head);
        if (s != LMX_OK) {
            lmx_free(ids);
            return s;
        }
        lmx_free(hids);
        offset = (int64_t)hn;
    }
    r->tokens = ids;
    r->n_tokens = (int64_t)n;
    r->offset = offset;
    return LMX_OK;
}

static lmx_status text_example(lmx_dataset *d, ds_record *r, const cJSON *text) {
    if (!cJSON_IsString(text))
        return lmx_err(LMX_ERR_FORMAT, "%s:%lld: \"%s\" must be a string", d->path, (long long)r->line, d->opt.text_feature);
    int32_t eos = lmx_tokenizer_eos(d->tok);
    if (eos < 0) return lmx_err(LMX_ERR_INVALID_ARG, "%s: the tokenizer has no EOS token to end text examples", d->path);
    int32_t *ids = NULL;
    size_t n = 0;
    lmx_status s = lmx_tokenize(d->tok, text->valuestring, strlen(text->valuestring), true, &ids, &n);
    if (s != LMX_OK) return lmx_err_prefix(s, "%s:%lld", d->path, (long long)r->line);
    if (n == 0) { /* mlx-lm fails on d[-1] here */
        lmx_free(ids);
        return lmx_err(LMX_ERR_FORMAT, "%s:%lld: the text encodes to no tokens", d->path, (long long)r->line);
    }
    if (ids[n - 1] != eos) {
        int32_t *g = realloc(ids, (n + 1) * sizeof *g);
        if (!g) {
            lmx_free(ids);
            return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", d->path);
        }
        ids = g;
        ids[n++] = eos;
    }
    r->tokens = ids;
    r->n_tokens = (int64_t)n;
    r->offset = 0;
    return LMX_OK;
}

static lmx_status missing(const lmx_dataset *d, const ds_record *r, const char *key) {
    return lmx_err(LMX_ERR_FORMAT, "%s:%lld: missing key \"%s\" (the first record's format)", d->path, (long long)r->line,
                   key);
}

static lmx_status process(lmx_dataset *d, ds_record *r) {
    cJSON *j;
    LMX_TRY(parse_line(d->path, r->line, r->json, &j));
    lmx_status s = LMX_OK;
    const cJSON *tools = get_key(j, "tools");
    if (d->format == LMX_DATA_TEXT) {
        const cJSON *t = get_key(j, d->opt.text_feature);
        s = t ? text_example(d, r, t) : missing(d, r, d->opt.text_feature);
    } else if (d->format == LMX_DATA_CHAT) {
        const cJSON *m = get_key(j, d->opt.chat_feature);
        if (!m) {
            s = missing(d, r, d->opt.chat_feature);
        } else if (!cJSON_IsArray(m) || cJSON_GetArraySize(m) == 0) {
            s = lmx_err(LMX_ERR_FORMAT, "%s:%lld: \"%s\" must be a non-empty list of messages", d->path, (long long)r->line,
                        d->opt.chat_feature);
        } else {
            /* add_generation_prompt = messages[-1].get("role") == "assistant" */
            const cJSON *last = cJSON_GetArrayItem(m, cJSON_GetArraySize(m) - 1);
            const cJSON *role = cJSON_IsObject(last) ? get_key(last, "role") : NULL;
            bool gen = cJSON_IsString(role) && strcmp(role->valuestring, "assistant") == 0;
            s = chat_example(d, r, m, tools, gen);
        }
    } else {
        const cJSON *p = get_key(j, d->opt.prompt_feature), *c = get_key(j, d->opt.completion_feature);
        if (!p || !c) {
            s = missing(d, r, !p ? d->opt.prompt_feature : d->opt.completion_feature);
        } else {
            cJSON *msgs = cJSON_CreateArray(), *u = cJSON_CreateObject(), *a = cJSON_CreateObject();
            cJSON_AddStringToObject(u, "role", "user");
            cJSON_AddItemToObject(u, "content", cJSON_Duplicate(p, true));
            cJSON_AddStringToObject(a, "role", "assistant");
            cJSON_AddItemToObject(a, "content", cJSON_Duplicate(c, true));
            cJSON_AddItemToArray(msgs, u);
            cJSON_AddItemToArray(msgs, a);
            s = chat_example(d, r, msgs, tools, true);
            cJSON_Delete(msgs);
        }
    }
    cJSON_Delete(j);
    return s;
}

lmx_status lmx_dataset_example(lmx_dataset *d, int64_t i, const int32_t **tokens, int64_t *n_tokens, int64_t *offset) {
    if (i < 0 || i >= d->n) return lmx_err(LMX_ERR_INVALID_ARG, "%s: example %lld out of range", d->path, (long long)i);
    ds_record *r = &d->rec[i];
    if (!r->tokens) LMX_TRY(process(d, r));
    *tokens = r->tokens;
    *n_tokens = r->n_tokens;
    if (offset) *offset = r->offset;
    return LMX_OK;
}

/* ---- the --data folder ---------------------------------------------------- */

void lmx_data_splits_free(lmx_data_splits *s) {
    lmx_dataset_free(s->train);
    lmx_dataset_free(s->valid);
    lmx_dataset_free(s->test);
    memset(s, 0, sizeof *s);
}

lmx_status lmx_data_load_dir(const char *dir, const lmx_tokenizer *tok, const lmx_data_options *o, bool want_train,
                             bool want_test, lmx_data_splits *out) {
    memset(out, 0, sizeof *out);
    if (!lmx_is_dir(dir))
        return lmx_err(LMX_ERR_NOT_FOUND,
                       "--data %s: no such folder (a folder with train.jsonl, valid.jsonl, test.jsonl; Hugging Face "
                       "dataset names are not supported)",
                       dir);
    const char *names[3] = {"train.jsonl", "valid.jsonl", "test.jsonl"};
    lmx_dataset **dst[3] = {&out->train, &out->valid, &out->test};
    for (int k = 0; k < 3; k++) {
        char *p = lmx_path_join(dir, names[k]);
        if (!p) return lmx_err(LMX_ERR_NOMEM, "out of memory");
        lmx_status s = lmx_file_exists(p) ? lmx_dataset_load(p, tok, o, dst[k]) : LMX_OK;
        free(p);
        if (s != LMX_OK) {
            lmx_data_splits_free(out);
            return s;
        }
    }
    if (want_train && !out->train) {
        lmx_data_splits_free(out);
        return lmx_err(LMX_ERR_NOT_FOUND,
                       "%s/train.jsonl: Training set not found or empty. Must provide training set for fine-tuning.", dir);
    }
    if (want_test && !out->test) {
        lmx_data_splits_free(out);
        return lmx_err(LMX_ERR_NOT_FOUND, "%s/test.jsonl: Test set not found or empty. Must provide test set for evaluation.",
                       dir);
    }
    return LMX_OK;
}
