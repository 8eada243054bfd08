/* gguf.c - GGUF v1/v2/v3 reader: mmap, strict validation, O(1) lookups.
 *
 * Parsing walks a bounds-checked cursor over the image. Every count is
 * compared with the bytes left before anything is allocated for it (a count
 * of n items needs at least n × the smallest encoding of one item), so a
 * lying header costs an error message, never a huge allocation. Failures read
 * "path: field: problem", e.g. "m.gguf: kv 'general.name': value: string
 * length 4096 past end of file". */
#include "io/gguf.h"

#include "io/io_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DEPTH 8 /* nesting of arrays inside arrays */

typedef struct gguf_kv {
    char *key; /* NUL-terminated copy */
    size_t key_len;
    lmx_gguf_type type;
    const uint8_t *val; /* scalar bytes in the image */
    lmx_gguf_str str;   /* STRING */
    lmx_gguf_type arr_type; /* ARRAY */
    uint64_t arr_len;
    const uint8_t *arr_data; /* first element */
    uint64_t *str_off;       /* ARRAY of STRING: offset of each element's length prefix */
} gguf_kv;

struct lmx_gguf {
    char *path;
    lmx_file_map *map; /* NULL when opened from memory */
    const uint8_t *data;
    size_t size;
    uint32_t version;
    gguf_kv *kv;
    int64_t n_kv;
    lmx_gguf_tensor *tensors;
    int64_t n_tensors;
    lmx_strmap kv_index, t_index;
    uint64_t alignment;
    uint64_t data_start;
};

/* ---- ggml type traits ----------------------------------------------------- */

typedef struct ggml_traits {
    const char *name;
    int64_t block; /* 0 = unknown */
    size_t size;
} ggml_traits;

/* Block layouts per the ggml spec (ggml-common.h): e.g. Q4_0 = f16 scale +
 * 32 nibbles = 18 bytes per 32 elements; K quants use 256-element blocks. */
static const ggml_traits ggml_types[] = {
    [0] = {"F32", 1, 4},        [1] = {"F16", 1, 2},        [2] = {"Q4_0", 32, 18},
    [3] = {"Q4_1", 32, 20},     [6] = {"Q5_0", 32, 22},     [7] = {"Q5_1", 32, 24},
    [8] = {"Q8_0", 32, 34},     [9] = {"Q8_1", 32, 36},     [10] = {"Q2_K", 256, 84},
    [11] = {"Q3_K", 256, 110},  [12] = {"Q4_K", 256, 144},  [13] = {"Q5_K", 256, 176},
    [14] = {"Q6_K", 256, 210},  [15] = {"Q8_K", 256, 292},  [16] = {"IQ2_XXS", 256, 66},
    [17] = {"IQ2_XS", 256, 74}, [18] = {"IQ3_XXS", 256, 98}, [19] = {"IQ1_S", 256, 50},
    [20] = {"IQ4_NL", 32, 18},  [21] = {"IQ3_S", 256, 110}, [22] = {"IQ2_S", 256, 82},
    [23] = {"IQ4_XS", 256, 136}, [24] = {"I8", 1, 1},       [25] = {"I16", 1, 2},
    [26] = {"I32", 1, 4},       [27] = {"I64", 1, 8},       [28] = {"F64", 1, 8},
    [29] = {"IQ1_M", 256, 56},  [30] = {"BF16", 1, 2},      [34] = {"TQ1_0", 256, 54},
    [35] = {"TQ2_0", 256, 66},  [39] = {"MXFP4", 32, 17},
};

bool lmx_ggml_type_info(uint32_t type, const char **name, int64_t *block, size_t *size) {
    if (type >= sizeof ggml_types / sizeof *ggml_types || ggml_types[type].block == 0) return false;
    if (name) *name = ggml_types[type].name;
    if (block) *block = ggml_types[type].block;
    if (size) *size = ggml_types[type].size;
    return true;
}

static const char *const value_type_names[] = {
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
    "bool", "string", "array", "uint64", "int64", "float64",
};

const char *lmx_gguf_type_name(lmx_gguf_type t) {
    return (unsigned)t < sizeof value_type_names / sizeof *value_type_names ? value_type_names[t] : "?";
}

/* Bytes of a fixed-size value type; 0 for string/array/unknown. */
static size_t scalar_size(uint32_t t) {
    switch (t) {
    case LMX_GGUF_UINT8: case LMX_GGUF_INT8: case LMX_GGUF_BOOL: return 1;
    case LMX_GGUF_UINT16: case LMX_GGUF_INT16: return 2;
    case LMX_GGUF_UINT32: case LMX_GGUF_INT32: case LMX_GGUF_FLOAT32: return 4;
    case LMX_GGUF_UINT64: case LMX_GGUF_INT64: case LMX_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

/* ---- cursor ---------------------------------------------------------------- */

typedef struct cursor {
    const uint8_t *p;
    size_t size, pos;
    size_t len_size; /* 4 in v1, 8 after */
    const char *path;
    const char *ctx; /* "kv 'general.name'", "tensor 'x'", "header" */
} cursor;

static size_t left(const cursor *c) { return c->size - c->pos; }

static uint64_t rd_le(const uint8_t *p, size_t n) {
    uint64_t v = 0;
    for (size_t i = n; i-- > 0;) v = (v << 8) | p[i];
    return v;
}

static lmx_status rd_uint(cursor *c, size_t n, uint64_t *v, const char *field) {
    if (left(c) < n)
        return lmx_err(LMX_ERR_FORMAT, "%s: %s: %s: truncated (needs %zu bytes at offset %zu, file is %zu bytes)",
                       c->path, c->ctx, field, n, c->pos, c->size);
    *v = rd_le(c->p + c->pos, n);
    c->pos += n;
    return LMX_OK;
}

static lmx_status rd_u32(cursor *c, uint32_t *v, const char *field) {
    uint64_t x = 0;
    LMX_TRY(rd_uint(c, 4, &x, field));
    *v = (uint32_t)x;
    return LMX_OK;
}

/* A length or count: u32 in v1, u64 in v2+. */
static lmx_status rd_len(cursor *c, uint64_t *v, const char *field) { return rd_uint(c, c->len_size, v, field); }

static lmx_status rd_str(cursor *c, lmx_gguf_str *s, const char *field) {
    uint64_t n = 0;
    LMX_TRY(rd_len(c, &n, field));
    if (n > left(c))
        return lmx_err(LMX_ERR_FORMAT, "%s: %s: %s: string length %llu past end of file (%zu bytes left)", c->path,
                       c->ctx, field, (unsigned long long)n, left(c));
    s->ptr = (const char *)c->p + c->pos;
    s->len = n;
    c->pos += (size_t)n;
    return LMX_OK;
}

/* Validates and skips one value of type t (the type field already read). For
 * a top-level array of strings, *str_off receives each element's offset. */
static lmx_status skip_value(cursor *c, uint32_t t, int depth, gguf_kv *kv) {
    size_t ss = scalar_size(t);
    if (ss) {
        if (left(c) < ss)
            return lmx_err(LMX_ERR_FORMAT, "%s: %s: value: truncated %s at offset %zu", c->path, c->ctx,
                           lmx_gguf_type_name((lmx_gguf_type)t), c->pos);
        if (kv) kv->val = c->p + c->pos;
        c->pos += ss;
        return LMX_OK;
    }
    if (t == LMX_GGUF_STRING) {
        lmx_gguf_str s;
        LMX_TRY(rd_str(c, &s, "value"));
        if (kv) kv->str = s;
        return LMX_OK;
    }
    if (t != LMX_GGUF_ARRAY)
        return lmx_err(LMX_ERR_FORMAT, "%s: %s: type: unknown value type %u", c->path, c->ctx, t);
    if (depth >= GGUF_MAX_DEPTH)
        return lmx_err(LMX_ERR_UNSUPPORTED, "%s: %s: value: arrays nested deeper than %d levels", c->path, c->ctx,
                       GGUF_MAX_DEPTH);
    uint32_t et = 0;
    uint64_t n = 0;
    LMX_TRY(rd_u32(c, &et, "array element type"));
    LMX_TRY(rd_len(c, &n, "array length"));
    size_t es = scalar_size(et);
    /* the smallest encoding of one element bounds the count */
    size_t min_el = es ? es
                  : et == LMX_GGUF_STRING ? c->len_size
                  : et == LMX_GGUF_ARRAY  ? 4 + c->len_size
                                          : 0;
    if (min_el == 0)
        return lmx_err(LMX_ERR_FORMAT, "%s: %s: array element type: unknown value type %u", c->path, c->ctx, et);
    if (n > left(c) / min_el)
        return lmx_err(LMX_ERR_FORMAT, "%s: %s: array length: %llu elements of %s past end of file (%zu bytes left)",
                       c->path, c->ctx, (unsigned long long)n, lmx_gguf_type_name((lmx_gguf_type)et), left(c));
    if (kv) {
        kv->arr_type = (lmx_gguf_type)et;
        kv->arr_len = n;
        kv->arr_data = c->p + c->pos;
    }
    if (es) {
        c->pos += (size_t)n * es;
        return LMX_OK;
    }
    if (et == LMX_GGUF_STRING) {
        if (kv && n) {
            kv->str_off = malloc((size_t)n * sizeof *kv->str_off);
            if (!kv->str_off) return lmx_err(LMX_ERR_NOMEM, "%s: %s: out of memory", c->path, c->ctx);
        }
        for (uint64_t j = 0; j < n; j++) {
            if (kv) kv->str_off[j] = c->pos;
            lmx_gguf_str s;
            LMX_TRY(rd_str(c, &s, "array element"));
        }
        return LMX_OK;
    }
    /* array of arrays: each element is itself (u32 element type, length,
     * elements), without a per-element type tag */
    for (uint64_t j = 0; j < n; j++) LMX_TRY(skip_value(c, LMX_GGUF_ARRAY, depth + 1, NULL));
    return LMX_OK;
}

/* ---- open ------------------------------------------------------------------ */

static void gguf_free(lmx_gguf *g) {
    if (!g) return;
    for (int64_t i = 0; i < g->n_kv; i++) {
        free(g->kv[i].key);
        free(g->kv[i].str_off);
    }
    free(g->kv);
    for (int64_t i = 0; i < g->n_tensors; i++) free(g->tensors[i].name);
    free(g->tensors);
    lmx_strmap_free(&g->kv_index);
    lmx_strmap_free(&g->t_index);
    if (g->map) lmx_file_map_release(g->map);
    free(g->path);
    free(g);
}

typedef struct tspan {
    uint64_t begin, end;
    int64_t idx;
} tspan;

static int tspan_cmp(const void *a, const void *b) {
    const tspan *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static lmx_status read_alignment(lmx_gguf *g) {
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    int64_t i = lmx_gguf_find_key(g, "general.alignment");
    if (i < 0) return LMX_OK;
    const gguf_kv *kv = &g->kv[i];
    int64_t v;
    if (!lmx_gguf_get_i64(g, "general.alignment", &v))
        return lmx_err(LMX_ERR_FORMAT, "%s: general.alignment: type %s, expected an integer", g->path,
                       lmx_gguf_type_name(kv->type));
    if (v <= 0 || v > (int64_t)UINT32_MAX || (v & (v - 1)) != 0)
        return lmx_err(LMX_ERR_FORMAT, "%s: general.alignment: %lld is not a non-zero power of two", g->path,
                       (long long)v);
    g->alignment = (uint64_t)v;
    return LMX_OK;
}

static lmx_status gguf_parse(lmx_gguf *g) {
    cursor c = {g->data, g->size, 0, 8, g->path, "header"};
    const char *path = g->path;
    if (g->size < 4 || memcmp(g->data, "GGUF", 4) != 0)
        return lmx_err(LMX_ERR_FORMAT, "%s: magic: not a GGUF file (no \"GGUF\" at offset 0)", path);
    c.pos = 4;
    LMX_TRY(rd_u32(&c, &g->version, "version"));
    if (g->version == 0) return lmx_err(LMX_ERR_FORMAT, "%s: version: 0 is not a GGUF version", path);
    if (g->version > 3) {
        uint32_t sw = __builtin_bswap32(g->version);
        if (sw >= 1 && sw <= 3)
            return lmx_err(LMX_ERR_UNSUPPORTED, "%s: version: big-endian GGUF (version %u) is not supported", path, sw);
        return lmx_err(LMX_ERR_UNSUPPORTED, "%s: version: %u not supported (lmx reads 1, 2 and 3)", path,
                       g->version);
    }
    c.len_size = g->version == 1 ? 4 : 8;
    uint64_t nt = 0, nkv = 0;
    LMX_TRY(rd_len(&c, &nt, "n_tensors"));
    LMX_TRY(rd_len(&c, &nkv, "n_kv"));
    /* smallest encodings: kv = key length + type + 1 byte; tensor info =
     * name length + n_dims + type + offset */
    size_t min_kv = c.len_size + 4 + 1, min_ti = c.len_size + 4 + 4 + 8;
    if (nkv > left(&c) / min_kv)
        return lmx_err(LMX_ERR_FORMAT, "%s: header: n_kv: %llu key/value pairs cannot fit in the %zu bytes left",
                       path, (unsigned long long)nkv, left(&c));
    if (nt > left(&c) / min_ti || nkv * min_kv + nt * min_ti > left(&c))
        return lmx_err(LMX_ERR_FORMAT, "%s: header: n_tensors: %llu tensor infos cannot fit in the %zu bytes left",
                       path, (unsigned long long)nt, left(&c));
    g->kv = calloc(nkv ? nkv : 1, sizeof *g->kv);
    g->tensors = calloc(nt ? nt : 1, sizeof *g->tensors);
    if (!g->kv || !g->tensors || !lmx_strmap_init(&g->kv_index, nkv) || !lmx_strmap_init(&g->t_index, nt))
        return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", path);

    /* key/value pairs */
    char ctx[200], qb[160];
    for (uint64_t i = 0; i < nkv; i++) {
        snprintf(ctx, sizeof ctx, "kv[%llu]", (unsigned long long)i);
        c.ctx = ctx;
        lmx_gguf_str key;
        LMX_TRY(rd_str(&c, &key, "key"));
        snprintf(ctx, sizeof ctx, "kv '%s'", lmx_io_printable(key.ptr, (size_t)key.len, qb, sizeof qb));
        if (memchr(key.ptr, 0, (size_t)key.len))
            return lmx_err(LMX_ERR_FORMAT, "%s: %s: key: contains a NUL byte", path, ctx);
        gguf_kv *kv = &g->kv[g->n_kv];
        kv->key = lmx_strndup(key.ptr, (size_t)key.len);
        if (!kv->key) return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", path);
        kv->key_len = (size_t)key.len;
        g->n_kv++;
        if (lmx_strmap_put(&g->kv_index, kv->key, kv->key_len, (int64_t)i) != -1)
            return lmx_err(LMX_ERR_FORMAT, "%s: %s: key: appears twice", path, ctx);
        uint32_t t = 0;
        LMX_TRY(rd_u32(&c, &t, "type"));
        if (t > LMX_GGUF_FLOAT64) return lmx_err(LMX_ERR_FORMAT, "%s: %s: type: unknown value type %u", path, ctx, t);
        kv->type = (lmx_gguf_type)t;
        LMX_TRY(skip_value(&c, t, 0, kv));
    }
    LMX_TRY(read_alignment(g));

    /* tensor infos */
    for (uint64_t i = 0; i < nt; i++) {
        snprintf(ctx, sizeof ctx, "tensor[%llu]", (unsigned long long)i);
        c.ctx = ctx;
        lmx_gguf_str name;
        LMX_TRY(rd_str(&c, &name, "name"));
        snprintf(ctx, sizeof ctx, "tensor '%s'", lmx_io_printable(name.ptr, (size_t)name.len, qb, sizeof qb));
        if (memchr(name.ptr, 0, (size_t)name.len))
            return lmx_err(LMX_ERR_FORMAT, "%s: %s: name: contains a NUL byte", path, ctx);
        lmx_gguf_tensor *t = &g->tensors[g->n_tensors];
        t->name = lmx_strndup(name.ptr, (size_t)name.len);
        if (!t->name) return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", path);
        g->n_tensors++;
        if (lmx_strmap_put(&g->t_index, t->name, (size_t)name.len, (int64_t)i) != -1)
            return lmx_err(LMX_ERR_FORMAT, "%s: %s: name: appears twice", path, ctx);
        uint32_t nd = 0;
        LMX_TRY(rd_u32(&c, &nd, "n_dims"));
        if (nd > 4) return lmx_err(LMX_ERR_FORMAT, "%s: %s: n_dims: %u exceeds the ggml limit of 4", path, ctx, nd);
        t->n_dims = (int)nd;
        for (int d = 0; d < 4; d++) t->ne[d] = 1;
        uint64_t numel = 1;
        for (uint32_t d = 0; d < nd; d++) {
            uint64_t v = 0;
            LMX_TRY(rd_len(&c, &v, "ne"));
            if (v > (uint64_t)INT64_MAX)
                return lmx_err(LMX_ERR_FORMAT, "%s: %s: ne[%u]: %llu is negative as int64", path, ctx, d,
                               (unsigned long long)v);
            if (__builtin_mul_overflow(numel, v, &numel) || numel > (uint64_t)INT64_MAX)
                return lmx_err(LMX_ERR_FORMAT, "%s: %s: ne: element count overflows int64", path, ctx);
            t->ne[d] = (int64_t)v;
        }
        LMX_TRY(rd_u32(&c, &t->ggml_type, "type"));
        const char *tn;
        int64_t block;
        size_t bsize;
        if (!lmx_ggml_type_info(t->ggml_type, &tn, &block, &bsize))
            return lmx_err(LMX_ERR_UNSUPPORTED, "%s: %s: type: unknown ggml type %u", path, ctx, t->ggml_type);
        if (t->ne[0] % block != 0)
            return lmx_err(LMX_ERR_FORMAT, "%s: %s: ne[0]: %lld is not a multiple of the %s block size %lld", path,
                           ctx, (long long)t->ne[0], tn, (long long)block);
        uint64_t bytes = 0;
        if (__builtin_mul_overflow(numel / (uint64_t)block, (uint64_t)bsize, &bytes))
            return lmx_err(LMX_ERR_FORMAT, "%s: %s: ne: byte size overflows", path, ctx);
        t->size = bytes;
        LMX_TRY(rd_uint(&c, 8, &t->offset, "offset"));
    }

    /* data section */
    uint64_t a = g->alignment;
    g->data_start = (c.pos + a - 1) / a * a;
    uint64_t data_size = g->data_start <= g->size ? g->size - g->data_start : 0;
    const uint8_t *data = g->data + (g->data_start <= g->size ? g->data_start : g->size);
    tspan *sp = calloc(nt ? nt : 1, sizeof *sp);
    if (!sp) return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", path);
    lmx_status st = LMX_OK;
    for (int64_t i = 0; i < g->n_tensors; i++) {
        lmx_gguf_tensor *t = &g->tensors[i];
        const char *qn = lmx_io_printable(t->name, strlen(t->name), qb, sizeof qb);
        if (t->offset % a != 0) {
            st = lmx_err(LMX_ERR_FORMAT, "%s: tensor '%s': offset: %llu is not a multiple of the alignment %llu",
                         path, qn, (unsigned long long)t->offset, (unsigned long long)a);
            break;
        }
        if (t->offset > data_size || t->size > data_size - t->offset) {
            st = lmx_err(LMX_ERR_FORMAT,
                         "%s: tensor '%s': offset: [%llu, +%llu bytes) past end of the data section (%llu bytes)",
                         path, qn, (unsigned long long)t->offset, (unsigned long long)t->size,
                         (unsigned long long)data_size);
            break;
        }
        t->data = data + t->offset;
        sp[i] = (tspan){t->offset, t->offset + t->size, i};
    }
    if (!st) {
        qsort(sp, (size_t)g->n_tensors, sizeof *sp, tspan_cmp);
        int64_t prev = -1;
        for (int64_t i = 0; i < g->n_tensors; i++) {
            if (sp[i].begin == sp[i].end) continue;
            if (prev >= 0 && sp[i].begin < sp[prev].end) {
                char b2[160];
                const char *n1 = g->tensors[sp[i].idx].name, *n2 = g->tensors[sp[prev].idx].name;
                st = lmx_err(LMX_ERR_FORMAT, "%s: tensor '%s': offset: data overlaps tensor '%s'", path,
                             lmx_io_printable(n1, strlen(n1), qb, sizeof qb),
                             lmx_io_printable(n2, strlen(n2), b2, sizeof b2));
                break;
            }
            prev = i;
        }
    }
    free(sp);
    return st;
}

lmx_status lmx_gguf_open_memory(const void *data, size_t size, const char *name, lmx_gguf **out) {
    *out = NULL;
    if (!data && size) return lmx_err(LMX_ERR_INVALID_ARG, "lmx_gguf_open_memory: NULL data");
    lmx_gguf *g = calloc(1, sizeof *g);
    if (!g) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    g->path = lmx_strdup(name ? name : "<memory>");
    if (!g->path) {
        free(g);
        return lmx_err(LMX_ERR_NOMEM, "out of memory");
    }
    g->data = data ? data : (const uint8_t *)"";
    g->size = size;
    lmx_status st = gguf_parse(g);
    if (st) {
        gguf_free(g);
        return st;
    }
    *out = g;
    return LMX_OK;
}

lmx_status lmx_gguf_open(const char *path, lmx_gguf **out) {
    *out = NULL;
    lmx_file_map *m;
    LMX_TRY(lmx_file_map_open(path, &m));
    lmx_gguf *g;
    lmx_status st = lmx_gguf_open_memory(m->data, m->size, path, &g);
    if (st) {
        lmx_file_map_release(m);
        return st;
    }
    g->map = m;
    *out = g;
    return LMX_OK;
}

void lmx_gguf_close(lmx_gguf *g) { gguf_free(g); }

uint32_t lmx_gguf_version(const lmx_gguf *g) { return g->version; }
lmx_file_map *lmx_gguf_map(const lmx_gguf *g) { return g->map; }
const char *lmx_gguf_path(const lmx_gguf *g) { return g->path; }
uint64_t lmx_gguf_alignment(const lmx_gguf *g) { return g->alignment; }
uint64_t lmx_gguf_data_offset(const lmx_gguf *g) { return g->data_start; }

/* ---- key/value access ------------------------------------------------------- */

int64_t lmx_gguf_n_kv(const lmx_gguf *g) { return g->n_kv; }

int64_t lmx_gguf_find_key(const lmx_gguf *g, const char *key) {
    if (!key) return -1;
    return lmx_strmap_get(&g->kv_index, key, strlen(key));
}

const char *lmx_gguf_key(const lmx_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_kv ? g->kv[i].key : NULL;
}

lmx_gguf_type lmx_gguf_kv_type(const lmx_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_kv ? g->kv[i].type : (lmx_gguf_type)-1;
}

static const gguf_kv *find_kv(const lmx_gguf *g, const char *key) {
    int64_t i = lmx_gguf_find_key(g, key);
    return i < 0 ? NULL : &g->kv[i];
}

bool lmx_gguf_get_i64(const lmx_gguf *g, const char *key, int64_t *out) {
    const gguf_kv *kv = find_kv(g, key);
    if (!kv) return false;
    uint64_t u;
    switch (kv->type) {
    case LMX_GGUF_UINT8: *out = kv->val[0]; return true;
    case LMX_GGUF_INT8: *out = (int8_t)kv->val[0]; return true;
    case LMX_GGUF_UINT16: *out = (uint16_t)rd_le(kv->val, 2); return true;
    case LMX_GGUF_INT16: *out = (int16_t)(uint16_t)rd_le(kv->val, 2); return true;
    case LMX_GGUF_UINT32: *out = (uint32_t)rd_le(kv->val, 4); return true;
    case LMX_GGUF_INT32: *out = (int32_t)(uint32_t)rd_le(kv->val, 4); return true;
    case LMX_GGUF_INT64: u = rd_le(kv->val, 8); memcpy(out, &u, 8); return true;
    case LMX_GGUF_UINT64:
        u = rd_le(kv->val, 8);
        if (u > (uint64_t)INT64_MAX) return false;
        *out = (int64_t)u;
        return true;
    default: return false;
    }
}

bool lmx_gguf_get_f32(const lmx_gguf *g, const char *key, float *out) {
    const gguf_kv *kv = find_kv(g, key);
    if (!kv) return false;
    if (kv->type == LMX_GGUF_FLOAT32) {
        uint32_t u = (uint32_t)rd_le(kv->val, 4);
        memcpy(out, &u, 4);
        return true;
    }
    if (kv->type == LMX_GGUF_FLOAT64) {
        uint64_t u = rd_le(kv->val, 8);
        double d;
        memcpy(&d, &u, 8);
        *out = (float)d;
        return true;
    }
    return false;
}

bool lmx_gguf_get_bool(const lmx_gguf *g, const char *key, bool *out) {
    const gguf_kv *kv = find_kv(g, key);
    if (!kv || kv->type != LMX_GGUF_BOOL) return false;
    *out = kv->val[0] != 0;
    return true;
}

bool lmx_gguf_get_str(const lmx_gguf *g, const char *key, lmx_gguf_str *out) {
    const gguf_kv *kv = find_kv(g, key);
    if (!kv || kv->type != LMX_GGUF_STRING) return false;
    *out = kv->str;
    return true;
}

bool lmx_gguf_arr_at(const lmx_gguf *g, int64_t i, lmx_gguf_type *elem_type, uint64_t *len) {
    if (i < 0 || i >= g->n_kv || g->kv[i].type != LMX_GGUF_ARRAY) return false;
    if (elem_type) *elem_type = g->kv[i].arr_type;
    if (len) *len = g->kv[i].arr_len;
    return true;
}

bool lmx_gguf_get_arr(const lmx_gguf *g, const char *key, lmx_gguf_type *elem_type, uint64_t *len) {
    return lmx_gguf_arr_at(g, lmx_gguf_find_key(g, key), elem_type, len);
}

const void *lmx_gguf_arr_data(const lmx_gguf *g, const char *key) {
    const gguf_kv *kv = find_kv(g, key);
    return kv && kv->type == LMX_GGUF_ARRAY ? kv->arr_data : NULL;
}

lmx_gguf_str lmx_gguf_arr_str_at(const lmx_gguf *g, int64_t i, uint64_t j) {
    lmx_gguf_str s = {NULL, 0};
    if (i < 0 || i >= g->n_kv) return s;
    const gguf_kv *kv = &g->kv[i];
    if (kv->type != LMX_GGUF_ARRAY || kv->arr_type != LMX_GGUF_STRING || j >= kv->arr_len) return s;
    size_t ls = g->version == 1 ? 4 : 8;
    const uint8_t *p = g->data + kv->str_off[j];
    s.len = rd_le(p, ls);
    s.ptr = (const char *)p + ls;
    return s;
}

lmx_gguf_str lmx_gguf_arr_str(const lmx_gguf *g, const char *key, uint64_t j) {
    return lmx_gguf_arr_str_at(g, lmx_gguf_find_key(g, key), j);
}

/* ---- tensors ------------------------------------------------------------------ */

int64_t lmx_gguf_n_tensors(const lmx_gguf *g) { return g->n_tensors; }

const lmx_gguf_tensor *lmx_gguf_tensor_at(const lmx_gguf *g, int64_t i) {
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const lmx_gguf_tensor *lmx_gguf_find_tensor(const lmx_gguf *g, const char *name) {
    if (!name) return NULL;
    int64_t i = lmx_strmap_get(&g->t_index, name, strlen(name));
    return i < 0 ? NULL : &g->tensors[i];
}
