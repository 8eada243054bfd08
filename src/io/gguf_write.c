/* gguf_write.c - GGUF v3 writer (metadata, tensor infos, aligned data),
 * streamed into a temp file that is fsynced and renamed onto the target. */
#include "io/gguf.h"

#include "io/io_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct wr {
    FILE *fp;
    uint64_t pos;
    bool ok;
} wr;

static void w_raw(wr *w, const void *p, size_t n) {
    if (w->ok && n && fwrite(p, 1, n, w->fp) != n) w->ok = false;
    w->pos += n;
}
static void w_u32(wr *w, uint32_t v) {
    uint8_t b[4];
    for (int i = 0; i < 4; i++) b[i] = (uint8_t)(v >> (8 * i));
    w_raw(w, b, 4);
}
static void w_u64(wr *w, uint64_t v) {
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
    w_raw(w, b, 8);
}
static void w_str(wr *w, const void *p, uint64_t n) {
    w_u64(w, n);
    w_raw(w, p, (size_t)n);
}
static void w_pad(wr *w, uint64_t align) {
    static const uint8_t zeros[64];
    while (w->pos % align) {
        uint64_t k = align - w->pos % align;
        w_raw(w, zeros, k > sizeof zeros ? sizeof zeros : (size_t)k);
    }
}

static size_t value_size(lmx_gguf_type t) {
    switch (t) {
    case LMX_GGUF_UINT8: case LMX_GGUF_INT8: case LMX_GGUF_BOOL: return 1;
    case LMX_GGUF_UINT16: case LMX_GGUF_INT16: return 2;
    case LMX_GGUF_UINT32: case LMX_GGUF_INT32: case LMX_GGUF_FLOAT32: return 4;
    case LMX_GGUF_UINT64: case LMX_GGUF_INT64: case LMX_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

/* Checks arguments; returns the alignment to use. */
static lmx_status check_args(const char *path, const lmx_gguf_write_kv *kvs, size_t n_kv,
                             const lmx_gguf_write_tensor *ts, size_t n_t, uint64_t *align) {
    *align = 32;
    lmx_strmap seen;
    if (!lmx_strmap_init(&seen, n_kv > n_t ? n_kv : n_t)) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    lmx_status st = LMX_OK;
    for (size_t i = 0; i < n_kv && !st; i++) {
        const lmx_gguf_write_kv *kv = &kvs[i];
        if (!kv->key) {
            st = lmx_err(LMX_ERR_INVALID_ARG, "%s: kv %zu: key: NULL", path, i);
        } else if (lmx_strmap_put(&seen, kv->key, strlen(kv->key), (int64_t)i) != -1) {
            st = lmx_err(LMX_ERR_INVALID_ARG, "%s: kv '%s': key: given twice", path, kv->key);
        } else if (kv->type == LMX_GGUF_ARRAY) {
            if (!value_size(kv->arr_type) && kv->arr_type != LMX_GGUF_STRING)
                st = lmx_err(LMX_ERR_INVALID_ARG, "%s: kv '%s': array element type %d not writable", path, kv->key,
                             (int)kv->arr_type);
            else if (kv->n && !kv->data)
                st = lmx_err(LMX_ERR_INVALID_ARG, "%s: kv '%s': data: NULL", path, kv->key);
        } else if (kv->type == LMX_GGUF_STRING) {
            if (kv->n && !kv->data) st = lmx_err(LMX_ERR_INVALID_ARG, "%s: kv '%s': data: NULL", path, kv->key);
        } else if (!value_size(kv->type) || !kv->data) {
            st = lmx_err(LMX_ERR_INVALID_ARG, "%s: kv '%s': type %d or data invalid", path, kv->key, (int)kv->type);
        }
        if (!st && kv->key && strcmp(kv->key, "general.alignment") == 0) {
            uint32_t a = 0;
            if (kv->type == LMX_GGUF_UINT32) memcpy(&a, kv->data, 4);
            if (a == 0 || (a & (a - 1)))
                st = lmx_err(LMX_ERR_INVALID_ARG, "%s: general.alignment: must be a UINT32 power of two", path);
            *align = a;
        }
    }
    lmx_strmap_free(&seen);
    if (!st && !lmx_strmap_init(&seen, n_t)) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n_t && !st; i++) {
        const lmx_gguf_write_tensor *t = &ts[i];
        int64_t block;
        size_t bs;
        uint64_t numel = 1, bytes = 0;
        if (!t->name) {
            st = lmx_err(LMX_ERR_INVALID_ARG, "%s: tensor %zu: name: NULL", path, i);
            break;
        }
        if (lmx_strmap_put(&seen, t->name, strlen(t->name), (int64_t)i) != -1) {
            st = lmx_err(LMX_ERR_INVALID_ARG, "%s: tensor '%s': name: given twice", path, t->name);
            break;
        }
        if (!lmx_ggml_type_info(t->ggml_type, NULL, &block, &bs)) {
            st = lmx_err(LMX_ERR_INVALID_ARG, "%s: tensor '%s': type: unknown ggml type %u", path, t->name,
                         t->ggml_type);
            break;
        }
        if (t->n_dims < 1 || t->n_dims > 4) {
            st = lmx_err(LMX_ERR_INVALID_ARG, "%s: tensor '%s': n_dims: %d", path, t->name, t->n_dims);
            break;
        }
        bool bad = t->ne[0] % block != 0;
        for (int d = 0; d < t->n_dims && !bad; d++)
            bad = t->ne[d] < 0 || __builtin_mul_overflow(numel, (uint64_t)t->ne[d], &numel);
        if (bad || __builtin_mul_overflow(numel / (uint64_t)block, (uint64_t)bs, &bytes) || bytes != t->size ||
            (t->size && !t->data))
            st = lmx_err(LMX_ERR_INVALID_ARG, "%s: tensor '%s': size: %zu bytes given, ne and type need %llu", path,
                         t->name, t->size, (unsigned long long)bytes);
    }
    lmx_strmap_free(&seen);
    return st;
}

lmx_status lmx_gguf_write(const char *path, const lmx_gguf_write_kv *kvs, size_t n_kv,
                          const lmx_gguf_write_tensor *tensors, size_t n_tensors) {
    if (!path || (n_kv && !kvs) || (n_tensors && !tensors))
        return lmx_err(LMX_ERR_INVALID_ARG, "lmx_gguf_write: NULL argument");
    uint64_t align;
    LMX_TRY(check_args(path, kvs, n_kv, tensors, n_tensors, &align));
    size_t pl = strlen(path);
    char *tmp = malloc(pl + 16);
    if (!tmp) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    snprintf(tmp, pl + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        lmx_status st = lmx_err(LMX_ERR_IO, "%s: cannot create temp file: %s", path, strerror(errno));
        free(tmp);
        return st;
    }
    fchmod(fd, 0644);
    wr w = {fdopen(fd, "wb"), 0, true};
    if (!w.fp) {
        close(fd);
        unlink(tmp);
        free(tmp);
        return lmx_err(LMX_ERR_IO, "%s: fdopen failed", path);
    }
    setvbuf(w.fp, NULL, _IOFBF, 1 << 20);
    w_raw(&w, "GGUF", 4);
    w_u32(&w, 3);
    w_u64(&w, n_tensors);
    w_u64(&w, n_kv);
    for (size_t i = 0; i < n_kv; i++) {
        const lmx_gguf_write_kv *kv = &kvs[i];
        w_str(&w, kv->key, strlen(kv->key));
        w_u32(&w, (uint32_t)kv->type);
        if (kv->type == LMX_GGUF_STRING) {
            w_str(&w, kv->data, kv->n);
        } else if (kv->type == LMX_GGUF_ARRAY) {
            w_u32(&w, (uint32_t)kv->arr_type);
            w_u64(&w, kv->n);
            if (kv->arr_type == LMX_GGUF_STRING) {
                const lmx_gguf_str *ss = kv->data;
                for (uint64_t j = 0; j < kv->n; j++) w_str(&w, ss[j].ptr, ss[j].len);
            } else {
                w_raw(&w, kv->data, (size_t)kv->n * value_size(kv->arr_type));
            }
        } else {
            w_raw(&w, kv->data, value_size(kv->type));
        }
    }
    uint64_t off = 0;
    for (size_t i = 0; i < n_tensors; i++) {
        const lmx_gguf_write_tensor *t = &tensors[i];
        w_str(&w, t->name, strlen(t->name));
        w_u32(&w, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) w_u64(&w, (uint64_t)t->ne[d]);
        w_u32(&w, t->ggml_type);
        w_u64(&w, off);
        off = (off + t->size + align - 1) / align * align;
    }
    w_pad(&w, align);
    uint64_t data_start = w.pos;
    for (size_t i = 0; i < n_tensors; i++) {
        w_pad(&w, align); /* relative padding == absolute: data_start is aligned */
        w_raw(&w, tensors[i].data, tensors[i].size);
    }
    (void)data_start;
    bool ok = w.ok && fflush(w.fp) == 0 && fsync(fileno(w.fp)) == 0;
    ok = (fclose(w.fp) == 0) && ok;
    if (ok) ok = rename(tmp, path) == 0;
    lmx_status st = LMX_OK;
    if (!ok) {
        st = lmx_err(LMX_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        unlink(tmp);
    }
    free(tmp);
    return st;
}
