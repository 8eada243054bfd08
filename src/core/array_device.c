/* array_device.c - arrays and raw memory on a backend.
 *
 * A backend without buffer ops (or with host-visible ones) works on host
 * memory, so these fall back to lmx_aligned_alloc/memcpy. Device arrays are
 * LMX_BUFFER_DEVICE buffers freed through the backend's free op. */
#include "core/backend.h"

#include <stdlib.h>

bool lmx_backend_is_host(const lmx_backend *b) { return !b || !b->buffers || b->buffers->host_visible; }

lmx_status lmx_backend_alloc(lmx_backend *b, size_t bytes, void **out) {
    *out = NULL;
    if (b && b->buffers && b->buffers->alloc) return b->buffers->alloc(b, bytes, out);
    void *p = lmx_aligned_alloc(bytes ? bytes : 1);
    if (!p) return lmx_err(LMX_ERR_NOMEM, "out of memory (%zu bytes)", bytes);
    memset(p, 0, bytes);
    *out = p;
    return LMX_OK;
}

void lmx_backend_free_mem(lmx_backend *b, void *p) {
    if (!p) return;
    if (b && b->buffers && b->buffers->free)
        b->buffers->free(b, p);
    else
        lmx_aligned_free(p);
}

lmx_status lmx_backend_upload(lmx_backend *b, void *dst, const void *src, size_t bytes) {
    if (b && b->buffers && b->buffers->upload) return b->buffers->upload(b, dst, src, bytes);
    if (bytes) memcpy(dst, src, bytes);
    return LMX_OK;
}

lmx_status lmx_backend_download(lmx_backend *b, void *dst, const void *src, size_t bytes) {
    if (b && b->buffers && b->buffers->download) return b->buffers->download(b, dst, src, bytes);
    if (bytes) memcpy(dst, src, bytes);
    return LMX_OK;
}

lmx_status lmx_backend_sync(lmx_backend *b) {
    if (b && b->buffers && b->buffers->sync) return b->buffers->sync(b);
    return LMX_OK;
}

lmx_status lmx_backend_relayout(lmx_backend *b, const lmx_array *a) {
    if (b && b->buffers && b->buffers->relayout) return b->buffers->relayout(b, a);
    return LMX_OK;
}

static void dev_free(void *owner, void *data) { lmx_backend_free_mem(owner, data); }

lmx_status lmx_array_alloc_on(lmx_backend *b, lmx_array *a, lmx_dtype dt, int ndim, const int64_t *shape) {
    if (lmx_backend_is_host(b)) return lmx_array_alloc(a, dt, ndim, shape);
    memset(a, 0, sizeof *a);
    int64_t n = 1;
    if (ndim < 0 || ndim > LMX_MAX_DIMS) return lmx_err(LMX_ERR_INVALID_ARG, "array: bad shape");
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0 || __builtin_mul_overflow(n, shape[i], &n))
            return lmx_err(LMX_ERR_INVALID_ARG, "array: bad shape");
    size_t bytes = lmx_dtype_bytes(dt, n);
    lmx_buffer *buf = calloc(1, sizeof *buf);
    if (!buf) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    lmx_status s = lmx_backend_alloc(b, bytes ? bytes : 1, &buf->data);
    if (s) {
        free(buf);
        return s;
    }
    buf->size = bytes;
    buf->refcount = 1;
    buf->kind = LMX_BUFFER_DEVICE;
    buf->dev_free = dev_free;
    buf->dev_owner = b;
    a->buf = buf;
    a->data = buf->data;
    lmx_array_set_contiguous(a, dt, ndim, shape);
    return LMX_OK;
}

lmx_status lmx_array_to_backend(lmx_backend *b, lmx_array *dst, const lmx_array *src) {
    if (lmx_backend_is_host(b)) {
        *dst = *src;
        lmx_array_retain(dst);
        return LMX_OK;
    }
    if (!lmx_array_is_contiguous(src)) return lmx_err(LMX_ERR_UNSUPPORTED, "upload: array is not contiguous");
    LMX_TRY(lmx_array_alloc_on(b, dst, src->dtype, src->ndim, src->shape));
    lmx_status s = lmx_backend_upload(b, dst->data, src->data, lmx_array_nbytes(src));
    if (!s) s = lmx_backend_relayout(b, dst);
    if (s) lmx_array_release(dst);
    return s;
}

lmx_status lmx_array_download(lmx_backend *b, const lmx_array *a, void *dst) {
    if (!lmx_array_is_contiguous(a)) return lmx_err(LMX_ERR_UNSUPPORTED, "download: array is not contiguous");
    return lmx_backend_download(b, dst, a->data, lmx_array_nbytes(a));
}

lmx_status lmx_array_to_host(const lmx_array *a, lmx_array *h) {
    memset(h, 0, sizeof *h);
    if (lmx_array_empty(a)) return LMX_OK;
    if (!a->buf || a->buf->kind != LMX_BUFFER_DEVICE) {
        *h = *a;
        lmx_array_retain(h);
        return LMX_OK;
    }
    LMX_TRY(lmx_array_alloc(h, a->dtype, a->ndim, a->shape));
    lmx_status st = lmx_array_download((lmx_backend *)a->buf->dev_owner, a, h->data);
    if (st) lmx_array_release(h);
    return st;
}
