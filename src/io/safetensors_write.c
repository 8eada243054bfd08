/* safetensors_write.c - safetensors writer (whole and streaming).
 *
 * Output matches the reference writer's layout: u64 header length, compact
 * JSON ("__metadata__" first, then the tensors in the given order with
 * consecutive data_offsets), padded with spaces to a multiple of 8, then the
 * data. Written to a temp file in the same folder, fsynced and renamed, so a
 * failure never leaves a half-written file at path. */
#include "io/safetensors.h"

#include "io/io_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct lmx_st_writer {
    char *path, *tmp;
    FILE *fp;
    uint64_t total, written;
};

typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_u64(sbuf *b, uint64_t v) {
    char t[24];
    int k = snprintf(t, sizeof t, "%llu", (unsigned long long)v);
    sb_put(b, t, (size_t)k);
}

/* A JSON string literal (UTF-8 passed through, controls escaped). */
static void sb_json_str(sbuf *b, const char *s) {
    static const char hex[] = "0123456789abcdef";
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char e[7];
        if (*p == '"' || *p == '\\') {
            e[0] = '\\';
            e[1] = (char)*p;
            sb_put(b, e, 2);
        } else if (*p < 0x20) {
            memcpy(e, "\\u00", 4);
            e[4] = hex[*p >> 4];
            e[5] = hex[*p & 15];
            sb_put(b, e, 6);
        } else {
            sb_put(b, (const char *)p, 1);
        }
    }
    sb_put(b, "\"", 1);
}

/* Validates the tensor list and builds the padded header (8-byte length
 * prefix included) into *hdr; *total = bytes of the whole file. */
static lmx_status build_header(const char *path, const lmx_st_write_tensor *ts, size_t n,
                               const char *const *meta_kv, bool need_data, bool mlx, sbuf *hdr, uint64_t *total) {
    lmx_strmap names;
    if (!lmx_strmap_init(&names, n)) return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", path);
    sbuf b = {0};
    lmx_status st = LMX_OK;
    sb_put(&b, "        {", 9); /* length placeholder, then the JSON */
    bool first = true;
    if (meta_kv && meta_kv[0]) {
        sb_str(&b, "\"__metadata__\":{");
        for (size_t i = 0; meta_kv[i]; i += 2) {
            if (!meta_kv[i + 1]) {
                st = lmx_err(LMX_ERR_INVALID_ARG, "%s: __metadata__: key '%s' has no value", path, meta_kv[i]);
                goto fail;
            }
            if (i) sb_put(&b, ",", 1);
            sb_json_str(&b, meta_kv[i]);
            sb_put(&b, ":", 1);
            sb_json_str(&b, meta_kv[i + 1]);
        }
        sb_put(&b, "}", 1);
        first = false;
    } else if (mlx) { /* mx.save_safetensors without metadata writes null */
        sb_str(&b, "\"__metadata__\":null");
        first = false;
    }
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const lmx_st_write_tensor *t = &ts[i];
        if (!t->name || strcmp(t->name, "__metadata__") == 0) {
            st = lmx_err(LMX_ERR_INVALID_ARG, "%s: tensor %zu: name: missing or reserved", path, i);
            goto fail;
        }
        char qn[160];
        lmx_io_printable(t->name, strlen(t->name), qn, sizeof qn);
        const lmx_dtype_traits *tr = lmx_dtype_info(t->dtype);
        if (!tr) {
            st = lmx_err(LMX_ERR_INVALID_ARG, "%s: tensor '%s': dtype: invalid (%d)", path, qn, (int)t->dtype);
            goto fail;
        }
        if (t->n_dims < 0 || t->n_dims > LMX_MAX_DIMS || (t->n_dims > 0 && !t->shape)) {
            st = lmx_err(LMX_ERR_INVALID_ARG, "%s: tensor '%s': shape: %d dimensions", path, qn, t->n_dims);
            goto fail;
        }
        uint64_t numel = 1;
        for (int d = 0; d < t->n_dims; d++) {
            if (t->shape[d] < 0 || __builtin_mul_overflow(numel, (uint64_t)t->shape[d], &numel)) {
                st = lmx_err(LMX_ERR_INVALID_ARG, "%s: tensor '%s': shape: dimension %d invalid", path, qn, d);
                goto fail;
            }
        }
        uint64_t bytes = 0;
        if (numel % (uint64_t)tr->block ||
            __builtin_mul_overflow(numel / (uint64_t)tr->block, (uint64_t)tr->size, &bytes) ||
            bytes != (uint64_t)t->size) {
            st = lmx_err(LMX_ERR_INVALID_ARG, "%s: tensor '%s': size: %zu bytes given, shape × %s needs %llu", path,
                         qn, t->size, tr->st_name, (unsigned long long)bytes);
            goto fail;
        }
        if (need_data && t->size && !t->data) {
            st = lmx_err(LMX_ERR_INVALID_ARG, "%s: tensor '%s': data: NULL", path, qn);
            goto fail;
        }
        if (lmx_strmap_put(&names, t->name, strlen(t->name), (int64_t)i) != -1) {
            st = lmx_err(LMX_ERR_INVALID_ARG, "%s: tensor '%s': name: given twice", path, qn);
            goto fail;
        }
        if (!first) sb_put(&b, ",", 1);
        first = false;
        sb_json_str(&b, t->name);
        uint64_t end;
        if (__builtin_add_overflow(off, bytes, &end)) {
            st = lmx_err(LMX_ERR_INVALID_ARG, "%s: total size overflows", path);
            goto fail;
        }
        if (mlx) { /* MLX's field order: data_offsets, dtype, shape */
            sb_str(&b, ":{\"data_offsets\":[");
            sb_u64(&b, off);
            sb_put(&b, ",", 1);
            sb_u64(&b, end);
            sb_str(&b, "],\"dtype\":\"");
            sb_str(&b, tr->st_name);
            sb_str(&b, "\",\"shape\":[");
        } else {
            sb_str(&b, ":{\"dtype\":\"");
            sb_str(&b, tr->st_name);
            sb_str(&b, "\",\"shape\":[");
        }
        for (int d = 0; d < t->n_dims; d++) {
            if (d) sb_put(&b, ",", 1);
            sb_u64(&b, (uint64_t)t->shape[d]);
        }
        if (mlx) {
            sb_str(&b, "]}");
        } else {
            sb_str(&b, "],\"data_offsets\":[");
            sb_u64(&b, off);
            sb_put(&b, ",", 1);
            sb_u64(&b, end);
            sb_str(&b, "]}");
        }
        off = end;
    }
    sb_put(&b, "}", 1);
    if (!mlx)
        while ((b.n - 8) % 8) sb_put(&b, " ", 1);
    if (b.oom) {
        st = lmx_err(LMX_ERR_NOMEM, "%s: out of memory building the header", path);
        goto fail;
    }
    uint64_t hl = b.n - 8;
    for (int k = 0; k < 8; k++) b.p[k] = (char)(hl >> (8 * k));
    *total = b.n + off;
    *hdr = b;
    lmx_strmap_free(&names);
    return LMX_OK;
fail:
    free(b.p);
    lmx_strmap_free(&names);
    return st;
}

static void writer_free(lmx_st_writer *w) {
    if (!w) return;
    if (w->fp) fclose(w->fp);
    if (w->tmp) unlink(w->tmp);
    free(w->tmp);
    free(w->path);
    free(w);
}

static lmx_status writer_open(const char *path, const lmx_st_write_tensor *tensors, size_t n,
                              const char *const *meta_kv, bool need_data, bool mlx, lmx_st_writer **out) {
    *out = NULL;
    if (!path || (n && !tensors)) return lmx_err(LMX_ERR_INVALID_ARG, "lmx_st_write: NULL argument");
    sbuf hdr = {0};
    uint64_t total = 0;
    LMX_TRY(build_header(path, tensors, n, meta_kv, need_data, mlx, &hdr, &total));
    lmx_st_writer *w = calloc(1, sizeof *w);
    size_t pl = strlen(path);
    if (w) w->path = lmx_strdup(path);
    if (w) w->tmp = malloc(pl + 16);
    if (!w || !w->path || !w->tmp) {
        free(hdr.p);
        if (w) free(w->tmp), w->tmp = NULL;
        writer_free(w);
        return lmx_err(LMX_ERR_NOMEM, "out of memory");
    }
    snprintf(w->tmp, pl + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(w->tmp);
    if (fd < 0) {
        lmx_status st = lmx_err(LMX_ERR_IO, "%s: cannot create temp file: %s", path, strerror(errno));
        free(hdr.p);
        free(w->tmp);
        w->tmp = NULL;
        writer_free(w);
        return st;
    }
    fchmod(fd, 0644);
    w->fp = fdopen(fd, "wb");
    if (!w->fp) {
        close(fd);
        free(hdr.p);
        writer_free(w);
        return lmx_err(LMX_ERR_IO, "%s: fdopen failed: %s", path, strerror(errno));
    }
    setvbuf(w->fp, NULL, _IOFBF, 1 << 20);
    w->total = total;
    bool ok = fwrite(hdr.p, 1, hdr.n, w->fp) == hdr.n;
    w->written = hdr.n;
    free(hdr.p);
    if (!ok) {
        lmx_status st = lmx_err(LMX_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        writer_free(w);
        return st;
    }
    *out = w;
    return LMX_OK;
}

lmx_status lmx_st_writer_open(const char *path, const lmx_st_write_tensor *tensors, size_t n,
                              const char *const *meta_kv, lmx_st_writer **out) {
    return writer_open(path, tensors, n, meta_kv, false, false, out);
}

lmx_status lmx_st_writer_open_mlx(const char *path, const lmx_st_write_tensor *tensors, size_t n,
                                  const char *const *meta_kv, lmx_st_writer **out) {
    return writer_open(path, tensors, n, meta_kv, false, true, out);
}

lmx_status lmx_st_writer_write(lmx_st_writer *w, const void *data, size_t size) {
    if (!w || (size && !data)) return lmx_err(LMX_ERR_INVALID_ARG, "lmx_st_writer_write: NULL argument");
    if (size > w->total - w->written)
        return lmx_err(LMX_ERR_INVALID_ARG, "%s: data: %llu bytes more than the header describes", w->path,
                       (unsigned long long)(size - (w->total - w->written)));
    if (size && fwrite(data, 1, size, w->fp) != size)
        return lmx_err(LMX_ERR_IO, "%s: write failed: %s", w->path, strerror(errno));
    w->written += size;
    return LMX_OK;
}

lmx_status lmx_st_writer_finish(lmx_st_writer *w) {
    if (!w) return lmx_err(LMX_ERR_INVALID_ARG, "lmx_st_writer_finish: NULL writer");
    lmx_status st = LMX_OK;
    if (w->written != w->total) {
        st = lmx_err(LMX_ERR_INVALID_ARG, "%s: data: %llu of %llu bytes written", w->path,
                     (unsigned long long)w->written, (unsigned long long)w->total);
    } else {
        bool ok = fflush(w->fp) == 0 && fsync(fileno(w->fp)) == 0;
        ok = (fclose(w->fp) == 0) && ok;
        w->fp = NULL;
        if (ok) ok = rename(w->tmp, w->path) == 0;
        if (!ok) {
            st = lmx_err(LMX_ERR_IO, "%s: write failed: %s", w->path, strerror(errno));
        } else {
            free(w->tmp);
            w->tmp = NULL;
        }
    }
    writer_free(w);
    return st;
}

void lmx_st_writer_abort(lmx_st_writer *w) { writer_free(w); }

lmx_status lmx_st_write(const char *path, const lmx_st_write_tensor *tensors, size_t n,
                        const char *const *meta_kv) {
    lmx_st_writer *w;
    LMX_TRY(writer_open(path, tensors, n, meta_kv, true, false, &w));
    for (size_t i = 0; i < n; i++) {
        lmx_status st = lmx_st_writer_write(w, tensors[i].data, tensors[i].size);
        if (st) {
            writer_free(w);
            return st;
        }
    }
    return lmx_st_writer_finish(w);
}
