/* array.c - array lifetime, views and shape helpers. */
#include "core/array.h"

#include <stdio.h>
#include <stdlib.h>

void lmx_array_set_contiguous(lmx_array *a, lmx_dtype dt, int ndim, const int64_t *shape) {
    a->dtype = dt;
    a->ndim = ndim;
    int64_t st = 1;
    for (int i = LMX_MAX_DIMS - 1; i >= 0; i--) {
        a->shape[i] = i < ndim ? shape[i] : 1;
        a->strides[i] = i < ndim ? st : 0;
        if (i < ndim) st *= shape[i];
    }
}

static bool numel_ok(int ndim, const int64_t *shape, int64_t *n) {
    int64_t p = 1;
    if (ndim < 0 || ndim > LMX_MAX_DIMS) return false;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || __builtin_mul_overflow(p, shape[i], &p)) return false;
    }
    *n = p;
    return true;
}

lmx_status lmx_array_alloc(lmx_array *a, lmx_dtype dt, int ndim, const int64_t *shape) {
    memset(a, 0, sizeof *a);
    int64_t n;
    if (!numel_ok(ndim, shape, &n)) return lmx_err(LMX_ERR_INVALID_ARG, "array: bad shape");
    size_t bytes = lmx_dtype_bytes(dt, n);
    lmx_buffer *b = calloc(1, sizeof *b);
    if (!b) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    b->data = lmx_aligned_alloc(bytes);
    if (!b->data) {
        free(b);
        return LMX_ERR_NOMEM;
    }
    memset(b->data, 0, bytes);
    b->size = bytes;
    b->refcount = 1;
    b->kind = LMX_BUFFER_HEAP;
    a->buf = b;
    a->data = b->data;
    lmx_array_set_contiguous(a, dt, ndim, shape);
    return LMX_OK;
}

lmx_status lmx_array_from_map(lmx_array *a, lmx_file_map *map, const void *data, lmx_dtype dt,
                              int ndim, const int64_t *shape) {
    memset(a, 0, sizeof *a);
    int64_t n;
    if (!numel_ok(ndim, shape, &n)) return lmx_err(LMX_ERR_INVALID_ARG, "array: bad shape");
    lmx_buffer *b = calloc(1, sizeof *b);
    if (!b) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    b->data = (void *)data;
    b->size = lmx_dtype_bytes(dt, n);
    b->refcount = 1;
    b->kind = LMX_BUFFER_MAP;
    b->map = map;
    lmx_file_map_retain(map);
    a->buf = b;
    a->data = (void *)data;
    lmx_array_set_contiguous(a, dt, ndim, shape);
    return LMX_OK;
}

lmx_status lmx_array_view(lmx_array *dst, const lmx_array *src, int64_t elem_offset, int ndim,
                          const int64_t *shape) {
    int64_t n;
    if (!numel_ok(ndim, shape, &n) || elem_offset < 0 || elem_offset + n > lmx_array_numel(src) ||
        !lmx_array_is_contiguous(src))
        return lmx_err(LMX_ERR_SHAPE, "array view out of range");
    lmx_array v;
    memset(&v, 0, sizeof v);
    v.buf = src->buf;
    v.data = (uint8_t *)src->data + lmx_dtype_bytes(src->dtype, elem_offset);
    lmx_array_set_contiguous(&v, src->dtype, ndim, shape);
    if (v.buf) __atomic_add_fetch(&v.buf->refcount, 1, __ATOMIC_RELAXED);
    *dst = v;
    return LMX_OK;
}

lmx_status lmx_array_rows(lmx_array *dst, const lmx_array *src, int64_t r0, int64_t n) {
    if (src->ndim < 1 || r0 < 0 || n < 0 || r0 + n > src->shape[0])
        return lmx_err(LMX_ERR_SHAPE, "array rows [%lld, %lld) out of range",
                       (long long)r0, (long long)(r0 + n));
    int64_t shape[LMX_MAX_DIMS];
    memcpy(shape, src->shape, sizeof shape);
    shape[0] = n;
    int64_t row = src->ndim > 1 ? lmx_array_numel(src) / src->shape[0] : 1;
    return lmx_array_view(dst, src, r0 * row, src->ndim, shape);
}

void lmx_array_retain(lmx_array *a) {
    if (a->buf) __atomic_add_fetch(&a->buf->refcount, 1, __ATOMIC_RELAXED);
}

void lmx_array_release(lmx_array *a) {
    lmx_buffer *b = a->buf;
    if (b && __atomic_sub_fetch(&b->refcount, 1, __ATOMIC_ACQ_REL) == 0) {
        if (b->kind == LMX_BUFFER_HEAP)
            lmx_aligned_free(b->data);
        else if (b->kind == LMX_BUFFER_DEVICE)
            b->dev_free(b->dev_owner, b->data);
        else
            lmx_file_map_release(b->map);
        free(b);
    }
    memset(a, 0, sizeof *a);
}

int64_t lmx_array_numel(const lmx_array *a) {
    int64_t n = 1;
    for (int i = 0; i < a->ndim; i++) n *= a->shape[i];
    return n;
}

bool lmx_array_is_contiguous(const lmx_array *a) {
    int64_t st = 1;
    for (int i = a->ndim - 1; i >= 0; i--) {
        if (a->shape[i] != 1 && a->strides[i] != st) return false;
        st *= a->shape[i];
    }
    return true;
}

size_t lmx_array_nbytes(const lmx_array *a) { return lmx_dtype_bytes(a->dtype, lmx_array_numel(a)); }

const char *lmx_shape_str(const lmx_array *a, char *buf, size_t cap) {
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < a->ndim && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, i ? ", %lld" : "%lld", (long long)a->shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
    return buf;
}

lmx_status lmx_array_to_f32(const lmx_array *a, float *out) {
    const lmx_dtype_traits *tr = lmx_dtype_info(a->dtype);
    if (!tr || !tr->to_f32) return lmx_err(LMX_ERR_UNSUPPORTED, "cannot convert %s to float32", tr ? tr->name : "?");
    if (!lmx_array_is_contiguous(a)) return lmx_err(LMX_ERR_UNSUPPORTED, "to_f32: non-contiguous array");
    tr->to_f32(a->data, out, lmx_array_numel(a));
    return LMX_OK;
}
