/*
 * array.h - n-dimensional arrays over refcounted or memory-mapped buffers.
 *
 * An lmx_array is a small value (dtype, shape, strides, data pointer) plus a
 * reference on the buffer that owns the bytes. Views share the buffer and
 * take a reference; lmx_array_release drops it. Shapes are row-major as in
 * numpy/MLX: shape[ndim-1] is the innermost dimension; strides are in
 * elements. Weights view the file mapping directly (zero copy).
 */
#ifndef LMX_CORE_ARRAY_H
#define LMX_CORE_ARRAY_H

#include "base/base.h"
#include "core/dtype.h"

typedef enum lmx_buffer_kind {
    LMX_BUFFER_HEAP = 0, /* lmx_aligned_alloc'ed, freed with the last reference */
    LMX_BUFFER_MAP = 1,  /* bytes inside an lmx_file_map (read-only weights) */
    LMX_BUFFER_DEVICE = 2, /* backend memory (array_device.c), freed through dev_free */
} lmx_buffer_kind;

typedef struct lmx_buffer {
    void *data;
    size_t size;
    int refcount;
    lmx_buffer_kind kind;
    lmx_file_map *map; /* LMX_BUFFER_MAP: the mapping we hold a reference on */
    void (*dev_free)(void *owner, void *data); /* LMX_BUFFER_DEVICE */
    void *dev_owner;
} lmx_buffer;

typedef struct lmx_array {
    lmx_dtype dtype;
    int ndim;
    int64_t shape[LMX_MAX_DIMS];
    int64_t strides[LMX_MAX_DIMS]; /* elements */
    void *data;                    /* address of element [0,...,0] */
    lmx_buffer *buf;               /* owner; NULL for an empty array */
} lmx_array;

/* Allocates a zeroed contiguous array. */
lmx_status lmx_array_alloc(lmx_array *a, lmx_dtype dt, int ndim, const int64_t *shape);
/* Wraps bytes of a file mapping (no copy); takes a reference on the map. */
lmx_status lmx_array_from_map(lmx_array *a, lmx_file_map *map, const void *data, lmx_dtype dt,
                              int ndim, const int64_t *shape);
/* A contiguous view of src with a new shape (same element count) and an
 * element offset; takes a reference on src's buffer. */
lmx_status lmx_array_view(lmx_array *dst, const lmx_array *src, int64_t elem_offset, int ndim,
                          const int64_t *shape);
/* Rows [r0, r0+n) of a 2-D (or leading-dim) array, as a view. */
lmx_status lmx_array_rows(lmx_array *dst, const lmx_array *src, int64_t r0, int64_t n);
void lmx_array_retain(lmx_array *a);
void lmx_array_release(lmx_array *a); /* leaves *a empty */

/* Sets dtype, shape and row-major contiguous strides (data/buf untouched). */
void lmx_array_set_contiguous(lmx_array *a, lmx_dtype dt, int ndim, const int64_t *shape);
int64_t lmx_array_numel(const lmx_array *a);
bool lmx_array_is_contiguous(const lmx_array *a);
size_t lmx_array_nbytes(const lmx_array *a);
static inline bool lmx_array_empty(const lmx_array *a) { return a->data == NULL; }
/* "[2, 3]" into buf, for error messages. */
const char *lmx_shape_str(const lmx_array *a, char *buf, size_t cap);
/* Copies any float array into a contiguous f32 buffer of numel floats. */
lmx_status lmx_array_to_f32(const lmx_array *a, float *out);

#endif
