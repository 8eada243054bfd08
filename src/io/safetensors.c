/* safetensors.c - safetensors reader: mmap, zero copy, strict header checks.
 *
 * Every failure names the file, the tensor and the field:
 *   "path: tensor 'name': data_offsets: end 10 past data size 8".
 * Header-level failures use "path: header: ...". */
#include "io/safetensors.h"

#include "io/io_internal.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ST_MAX_HEADER 100000000ull /* 100 MB, as the reference implementation */
#define ST_MAX_EXACT 9007199254740992.0 /* 2^53: larger JSON numbers lose precision */

struct lmx_st_file {
    char *path;
    lmx_file_map *map;   /* NULL when opened from memory */
    const uint8_t *data; /* whole file */
    size_t size;
    size_t data_start; /* 8 + header length */
    lmx_st_tensor *tensors;
    size_t n;
    lmx_strmap index;
    char **meta; /* key0, value0, key1, ... */
    size_t n_meta;
};

/* Safetensors dtype names that exist in the format but lmx does not handle. */
static const char *const st_known_unsupported[] = {
    "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64", "E8M0",
};

static uint64_t rd_u64le(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* A JSON number that is a non-negative integer ≤ 2^53; NULL or a problem. */
static const char *json_uint(const cJSON *x, uint64_t *out) {
    if (!cJSON_IsNumber(x)) return "is not a number";
    double d = x->valuedouble;
    if (d != d) return "is not a number";
    if (d < 0) return "is negative";
    if (d > ST_MAX_EXACT) return "is too large (above 2^53)";
    uint64_t u = (uint64_t)d;
    if ((double)u != d) return "is not an integer";
    *out = u;
    return NULL;
}

static void st_free(lmx_st_file *f) {
    if (!f) return;
    for (size_t i = 0; i < f->n; i++) free(f->tensors[i].name);
    free(f->tensors);
    for (size_t i = 0; i < 2 * f->n_meta; i++) free(f->meta[i]);
    free(f->meta);
    lmx_strmap_free(&f->index);
    if (f->map) lmx_file_map_release(f->map);
    free(f->path);
    free(f);
}

typedef struct span {
    uint64_t begin, end;
    size_t idx;
} span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static lmx_status parse_metadata(lmx_st_file *f, const cJSON *m) {
    const char *path = f->path;
    if (f->meta) return lmx_err(LMX_ERR_FORMAT, "%s: header: __metadata__: appears twice", path);
    if (cJSON_IsNull(m)) return LMX_OK; /* mx.save_safetensors without metadata writes null */
    if (!cJSON_IsObject(m))
        return lmx_err(LMX_ERR_FORMAT, "%s: header: __metadata__: not a JSON object", path);
    size_t n = 0;
    for (const cJSON *c = m->child; c; c = c->next) n++;
    f->meta = calloc(2 * n + 1, sizeof *f->meta);
    if (!f->meta) return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", path);
    for (const cJSON *c = m->child; c; c = c->next) {
        char nb[96];
        const char *k = c->string ? c->string : "";
        if (!cJSON_IsString(c))
            return lmx_err(LMX_ERR_FORMAT, "%s: header: __metadata__: key '%s': value is not a string",
                           path, lmx_io_printable(k, strlen(k), nb, sizeof nb));
        f->meta[2 * f->n_meta] = lmx_strdup(k);
        f->meta[2 * f->n_meta + 1] = lmx_strdup(c->valuestring);
        f->n_meta++;
        if (!f->meta[2 * f->n_meta - 2] || !f->meta[2 * f->n_meta - 1])
            return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", path);
    }
    return LMX_OK;
}

/* Validates one header entry into t (name already set). */
static lmx_status parse_entry(const lmx_st_file *f, const cJSON *e, const char *qn, uint64_t data_size,
                              lmx_st_tensor *t, span *sp) {
    const char *path = f->path;
    if (!cJSON_IsObject(e)) return lmx_err(LMX_ERR_FORMAT, "%s: tensor '%s': not a JSON object", path, qn);

    /* dtype */
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    if (!dt) return lmx_err(LMX_ERR_FORMAT, "%s: tensor '%s': dtype: missing", path, qn);
    if (!cJSON_IsString(dt)) return lmx_err(LMX_ERR_FORMAT, "%s: tensor '%s': dtype: not a string", path, qn);
    t->dtype = lmx_dtype_from_st_name(dt->valuestring);
    if (t->dtype == LMX_DTYPE_INVALID) {
        char db[64];
        const char *ds = lmx_io_printable(dt->valuestring, strlen(dt->valuestring), db, sizeof db);
        for (size_t i = 0; i < sizeof st_known_unsupported / sizeof *st_known_unsupported; i++)
            if (strcmp(dt->valuestring, st_known_unsupported[i]) == 0)
                return lmx_err(LMX_ERR_UNSUPPORTED, "%s: tensor '%s': dtype: %s is not supported by lmx",
                               path, qn, ds);
        return lmx_err(LMX_ERR_FORMAT, "%s: tensor '%s': dtype: unknown dtype '%s'", path, qn, ds);
    }

    /* shape */
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    if (!sh) return lmx_err(LMX_ERR_FORMAT, "%s: tensor '%s': shape: missing", path, qn);
    if (!cJSON_IsArray(sh)) return lmx_err(LMX_ERR_FORMAT, "%s: tensor '%s': shape: not an array", path, qn);
    int nd = 0;
    uint64_t numel = 1;
    bool overflow = false;
    for (const cJSON *d = sh->child; d; d = d->next, nd++) {
        uint64_t v;
        const char *why = json_uint(d, &v);
        if (why) return lmx_err(LMX_ERR_FORMAT, "%s: tensor '%s': shape: dimension %d %s", path, qn, nd, why);
        if (nd < LMX_MAX_DIMS) t->shape[nd] = (int64_t)v;
        if (__builtin_mul_overflow(numel, v, &numel)) overflow = true;
    }
    if (nd > LMX_MAX_DIMS)
        return lmx_err(LMX_ERR_UNSUPPORTED, "%s: tensor '%s': shape: %d dimensions (lmx supports at most %d)",
                       path, qn, nd, LMX_MAX_DIMS);
    t->n_dims = nd;
    if (overflow) numel = UINT64_MAX; /* reported as a size mismatch below */

    /* data_offsets */
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!off) return lmx_err(LMX_ERR_FORMAT, "%s: tensor '%s': data_offsets: missing", path, qn);
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2)
        return lmx_err(LMX_ERR_FORMAT, "%s: tensor '%s': data_offsets: not an array of two integers", path, qn);
    uint64_t be[2];
    int k = 0;
    for (const cJSON *d = off->child; d; d = d->next, k++) {
        const char *why = json_uint(d, &be[k]);
        if (why)
            return lmx_err(LMX_ERR_FORMAT, "%s: tensor '%s': data_offsets: %s %s", path, qn,
                           k == 0 ? "begin" : "end", why);
    }
    if (be[0] > be[1])
        return lmx_err(LMX_ERR_FORMAT, "%s: tensor '%s': data_offsets: begin %llu after end %llu", path, qn,
                       (unsigned long long)be[0], (unsigned long long)be[1]);
    if (be[1] > data_size)
        return lmx_err(LMX_ERR_FORMAT, "%s: tensor '%s': data_offsets: end %llu past data size %llu", path, qn,
                       (unsigned long long)be[1], (unsigned long long)data_size);

    /* shape × dtype == span */
    const lmx_dtype_traits *tr = lmx_dtype_info(t->dtype);
    uint64_t bytes;
    if (overflow || numel % (uint64_t)tr->block != 0 ||
        __builtin_mul_overflow(numel / (uint64_t)tr->block, (uint64_t)tr->size, &bytes)) {
        return lmx_err(LMX_ERR_FORMAT, "%s: tensor '%s': shape: element count overflows or is not a whole number of %s blocks",
                       path, qn, tr->st_name);
    }
    if (bytes != be[1] - be[0])
        return lmx_err(LMX_ERR_FORMAT,
                       "%s: tensor '%s': data_offsets: span of %llu bytes but shape × %s needs %llu bytes", path,
                       qn, (unsigned long long)(be[1] - be[0]), tr->st_name, (unsigned long long)bytes);
    t->data = f->data + f->data_start + be[0];
    t->size = (size_t)(be[1] - be[0]);
    sp->begin = be[0];
    sp->end = be[1];
    return LMX_OK;
}

static lmx_status st_parse(lmx_st_file *f) {
    const char *path = f->path;
    if (f->size < 8)
        return lmx_err(LMX_ERR_FORMAT, "%s: header: length: file is %zu bytes, too short for the 8-byte header length",
                       path, f->size);
    uint64_t hn = rd_u64le(f->data);
    if (hn > f->size - 8)
        return lmx_err(LMX_ERR_FORMAT, "%s: header: length %llu past end of file (%zu bytes)", path,
                       (unsigned long long)hn, f->size);
    if (hn > ST_MAX_HEADER)
        return lmx_err(LMX_ERR_FORMAT, "%s: header: length %llu above the 100 MB limit", path,
                       (unsigned long long)hn);
    if (hn < 2) return lmx_err(LMX_ERR_FORMAT, "%s: header: length %llu too small for a JSON object", path,
                               (unsigned long long)hn);
    f->data_start = 8 + (size_t)hn;
    uint64_t data_size = f->size - f->data_start;

    const char *js = (const char *)f->data + 8;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(js, (size_t)hn, &end, 0);
    if (!root) {
        size_t at = end && end >= js && end <= js + hn ? (size_t)(end - js) : 0;
        return lmx_err(LMX_ERR_FORMAT, "%s: header: invalid JSON near byte %zu", path, at);
    }
    lmx_status st = LMX_OK;
    span *spans = NULL;
    for (const char *p = end; p && p < js + hn; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            st = lmx_err(LMX_ERR_FORMAT, "%s: header: trailing bytes after the JSON object at byte %zu", path,
                         (size_t)(p - js));
            goto done;
        }
    }
    if (!cJSON_IsObject(root)) {
        st = lmx_err(LMX_ERR_FORMAT, "%s: header: JSON is not an object", path);
        goto done;
    }
    size_t cap = 0;
    for (const cJSON *c = root->child; c; c = c->next) cap++;
    f->tensors = calloc(cap ? cap : 1, sizeof *f->tensors);
    spans = calloc(cap ? cap : 1, sizeof *spans);
    if (!f->tensors || !spans || !lmx_strmap_init(&f->index, cap)) {
        st = lmx_err(LMX_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    for (const cJSON *c = root->child; c; c = c->next) {
        const char *name = c->string ? c->string : "";
        if (strcmp(name, "__metadata__") == 0) {
            st = parse_metadata(f, c);
            if (st) goto done;
            continue;
        }
        char qn[160];
        lmx_io_printable(name, strlen(name), qn, sizeof qn);
        lmx_st_tensor *t = &f->tensors[f->n];
        t->name = lmx_strdup(name);
        if (!t->name) {
            st = lmx_err(LMX_ERR_NOMEM, "%s: out of memory", path);
            goto done;
        }
        f->n++;
        st = parse_entry(f, c, qn, data_size, t, &spans[f->n - 1]);
        if (st) goto done;
        spans[f->n - 1].idx = f->n - 1;
        if (lmx_strmap_put(&f->index, t->name, strlen(t->name), (int64_t)(f->n - 1)) != -1) {
            st = lmx_err(LMX_ERR_FORMAT, "%s: tensor '%s': name: appears twice in the header", path, qn);
            goto done;
        }
    }
    /* No two non-empty spans may share a byte. */
    qsort(spans, f->n, sizeof *spans, span_cmp);
    size_t prev = SIZE_MAX;
    for (size_t i = 0; i < f->n; i++) {
        if (spans[i].begin == spans[i].end) continue;
        if (prev != SIZE_MAX && spans[i].begin < spans[prev].end) {
            char a[160], b[160];
            const char *na = f->tensors[spans[i].idx].name, *nb = f->tensors[spans[prev].idx].name;
            st = lmx_err(LMX_ERR_FORMAT,
                         "%s: tensor '%s': data_offsets: [%llu, %llu) overlaps tensor '%s' [%llu, %llu)", path,
                         lmx_io_printable(na, strlen(na), a, sizeof a), (unsigned long long)spans[i].begin,
                         (unsigned long long)spans[i].end, lmx_io_printable(nb, strlen(nb), b, sizeof b),
                         (unsigned long long)spans[prev].begin, (unsigned long long)spans[prev].end);
            goto done;
        }
        prev = i;
    }
done:
    free(spans);
    cJSON_Delete(root);
    return st;
}

lmx_status lmx_st_open_memory(const void *data, size_t size, const char *name, lmx_st_file **out) {
    *out = NULL;
    if (!data && size) return lmx_err(LMX_ERR_INVALID_ARG, "lmx_st_open_memory: NULL data");
    lmx_st_file *f = calloc(1, sizeof *f);
    if (!f) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    f->path = lmx_strdup(name ? name : "<memory>");
    if (!f->path) {
        free(f);
        return lmx_err(LMX_ERR_NOMEM, "out of memory");
    }
    f->data = data;
    f->size = size;
    lmx_status st = st_parse(f);
    if (st) {
        st_free(f);
        return st;
    }
    *out = f;
    return LMX_OK;
}

lmx_status lmx_st_open(const char *path, lmx_st_file **out) {
    *out = NULL;
    lmx_file_map *m;
    LMX_TRY(lmx_file_map_open(path, &m));
    lmx_st_file *f;
    lmx_status st = lmx_st_open_memory(m->data, m->size, path, &f);
    if (st) {
        lmx_file_map_release(m);
        return st;
    }
    f->map = m;
    *out = f;
    return LMX_OK;
}

void lmx_st_close(lmx_st_file *f) { st_free(f); }

lmx_file_map *lmx_st_map(const lmx_st_file *f) { return f->map; }
const char *lmx_st_path(const lmx_st_file *f) { return f->path; }
size_t lmx_st_n_tensors(const lmx_st_file *f) { return f->n; }
size_t lmx_st_data_offset(const lmx_st_file *f) { return f->data_start; }

const lmx_st_tensor *lmx_st_tensor_at(const lmx_st_file *f, size_t i) {
    return i < f->n ? &f->tensors[i] : NULL;
}

const lmx_st_tensor *lmx_st_find(const lmx_st_file *f, const char *name) {
    if (!name) return NULL;
    int64_t i = lmx_strmap_get(&f->index, name, strlen(name));
    return i < 0 ? NULL : &f->tensors[i];
}

const char *lmx_st_metadata(const lmx_st_file *f, const char *key) {
    for (size_t i = 0; key && i < f->n_meta; i++)
        if (strcmp(f->meta[2 * i], key) == 0) return f->meta[2 * i + 1];
    return NULL;
}

size_t lmx_st_n_metadata(const lmx_st_file *f) { return f->n_meta; }

bool lmx_st_metadata_at(const lmx_st_file *f, size_t i, const char **key, const char **value) {
    if (i >= f->n_meta) return false;
    if (key) *key = f->meta[2 * i];
    if (value) *value = f->meta[2 * i + 1];
    return true;
}
