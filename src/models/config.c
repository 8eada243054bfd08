/* config.c - config.json parsing with text_config nesting and typed getters. */
#include "models/config.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

lmx_status lmx_config_parse(const char *text, size_t len, const char *path, lmx_config **out) {
    *out = NULL;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        size_t off = end ? (size_t)(end - text) : 0;
        return lmx_err(LMX_ERR_FORMAT, "%s: invalid JSON near byte %zu", path, off);
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return lmx_err(LMX_ERR_FORMAT, "%s: top level is not a JSON object", path);
    }
    lmx_config *c = calloc(1, sizeof *c);
    if (!c) {
        cJSON_Delete(root);
        return lmx_err(LMX_ERR_NOMEM, "out of memory");
    }
    c->root = root;
    c->path = lmx_strdup(path);
    const cJSON *tc = cJSON_GetObjectItemCaseSensitive(root, "text_config");
    if (tc && cJSON_IsObject(tc)) c->text = tc;
    *out = c;
    return LMX_OK;
}

lmx_status lmx_config_load(const char *dir, lmx_config **out) {
    char *path = lmx_path_join(dir, "config.json");
    if (!path) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    char *text;
    size_t len;
    lmx_status s = lmx_read_file(path, &text, &len);
    if (s == LMX_OK) {
        s = lmx_config_parse(text, len, path, out);
        free(text);
    } else {
        s = lmx_err(LMX_ERR_NOT_FOUND, "%s: missing config.json (is this a model folder?)", dir);
    }
    free(path);
    return s;
}

void lmx_config_free(lmx_config *c) {
    if (!c) return;
    cJSON_Delete(c->root);
    free(c->path);
    free(c);
}

const cJSON *lmx_cfg_get(const lmx_config *c, const char *key) {
    const cJSON *v = NULL;
    if (c->text) v = cJSON_GetObjectItemCaseSensitive(c->text, key);
    if (!v) v = cJSON_GetObjectItemCaseSensitive(c->root, key);
    if (v && cJSON_IsNull(v)) return NULL;
    return v;
}

int64_t lmx_cfg_int(const lmx_config *c, const char *key, int64_t def, lmx_status *st) {
    const cJSON *v = lmx_cfg_get(c, key);
    if (!v) return def;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || fabs(v->valuedouble) > 9e15) {
        *st = lmx_err(LMX_ERR_FORMAT, "%s: %s: expected an integer", c->path, key);
        return def;
    }
    return (int64_t)v->valuedouble;
}

double lmx_cfg_num(const lmx_config *c, const char *key, double def, lmx_status *st) {
    const cJSON *v = lmx_cfg_get(c, key);
    if (!v) return def;
    if (!cJSON_IsNumber(v)) {
        *st = lmx_err(LMX_ERR_FORMAT, "%s: %s: expected a number", c->path, key);
        return def;
    }
    return v->valuedouble;
}

bool lmx_cfg_bool(const lmx_config *c, const char *key, bool def, lmx_status *st) {
    const cJSON *v = lmx_cfg_get(c, key);
    if (!v) return def;
    if (!cJSON_IsBool(v)) {
        *st = lmx_err(LMX_ERR_FORMAT, "%s: %s: expected true or false", c->path, key);
        return def;
    }
    return cJSON_IsTrue(v);
}

const char *lmx_cfg_str(const lmx_config *c, const char *key, const char *def) {
    const cJSON *v = lmx_cfg_get(c, key);
    return v && cJSON_IsString(v) ? v->valuestring : def;
}

static lmx_status ids_from_json(const cJSON *v, const char *path, int32_t **ids, size_t *n) {
    size_t cnt = cJSON_IsArray(v) ? (size_t)cJSON_GetArraySize(v) : 1;
    int32_t *out = malloc((cnt ? cnt : 1) * sizeof *out);
    if (!out) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    size_t k = 0;
    const cJSON *it = cJSON_IsArray(v) ? v->child : v;
    for (; it && k < cnt; it = cJSON_IsArray(v) ? it->next : NULL) {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble > INT32_MAX) {
            free(out);
            return lmx_err(LMX_ERR_FORMAT, "%s: eos_token_id: expected a token id or a list of them", path);
        }
        out[k++] = (int32_t)it->valuedouble;
    }
    *ids = out;
    *n = k;
    return LMX_OK;
}

lmx_status lmx_config_eos(const lmx_config *c, const char *dir, int32_t **ids, size_t *n) {
    *ids = NULL;
    *n = 0;
    char *gpath = dir ? lmx_path_join(dir, "generation_config.json") : NULL;
    if (gpath && lmx_file_exists(gpath)) {
        char *text;
        size_t len;
        lmx_status s = lmx_read_file(gpath, &text, &len);
        if (s != LMX_OK) {
            free(gpath);
            return s;
        }
        cJSON *g = cJSON_ParseWithLength(text, len);
        free(text);
        if (!g || !cJSON_IsObject(g)) {
            cJSON_Delete(g);
            s = lmx_err(LMX_ERR_FORMAT, "%s: invalid JSON", gpath);
            free(gpath);
            return s;
        }
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(g, "eos_token_id");
        if (e && !cJSON_IsNull(e)) s = ids_from_json(e, gpath, ids, n);
        cJSON_Delete(g);
        free(gpath);
        if (s != LMX_OK || *n) return s;
    } else {
        free(gpath);
    }
    const cJSON *e = lmx_cfg_get(c, "eos_token_id");
    if (e) return ids_from_json(e, c->path, ids, n);
    return LMX_OK;
}
