/*
 * gguf.h - GGUF reader (versions 1, 2, 3), memory-mapped, strictly validated.
 *
 * Byte layout (little-endian):
 *   "GGUF" u32 version
 *   v1: u32 n_tensors, u32 n_kv; v2/v3: u64 n_tensors, u64 n_kv
 *   n_kv  × { string key; u32 type; value }          (string = len + bytes;
 *                                                     len is u32 in v1, u64 in v2+)
 *   n_tensors × { string name; u32 n_dims; n_dims × dim (u32 v1 / u64 v2+);
 *                 u32 ggml_type; u64 offset }
 *   padding to `general.alignment` (default 32), then tensor data; each
 *   tensor's offset is relative to the data start and aligned.
 * ne[0] is the innermost (fastest-varying) dimension, as in ggml.
 *
 * Every count, length and offset is checked against the file size before use;
 * a bad file gives LMX_ERR_FORMAT with "path: field: problem".
 */
#ifndef LMX_IO_GGUF_H
#define LMX_IO_GGUF_H

#include "base/base.h"

typedef enum lmx_gguf_type {
    LMX_GGUF_UINT8 = 0,
    LMX_GGUF_INT8 = 1,
    LMX_GGUF_UINT16 = 2,
    LMX_GGUF_INT16 = 3,
    LMX_GGUF_UINT32 = 4,
    LMX_GGUF_INT32 = 5,
    LMX_GGUF_FLOAT32 = 6,
    LMX_GGUF_BOOL = 7,
    LMX_GGUF_STRING = 8,
    LMX_GGUF_ARRAY = 9,
    LMX_GGUF_UINT64 = 10,
    LMX_GGUF_INT64 = 11,
    LMX_GGUF_FLOAT64 = 12,
} lmx_gguf_type;

/* ggml tensor types that lmx knows by number (quantized ones are read as
 * opaque blocks until the quantization issue lands). */
enum {
    LMX_GGML_F32 = 0, LMX_GGML_F16 = 1, LMX_GGML_Q4_0 = 2, LMX_GGML_Q4_1 = 3,
    LMX_GGML_Q5_0 = 6, LMX_GGML_Q5_1 = 7, LMX_GGML_Q8_0 = 8, LMX_GGML_Q8_1 = 9,
    LMX_GGML_Q2_K = 10, LMX_GGML_Q3_K = 11, LMX_GGML_Q4_K = 12, LMX_GGML_Q5_K = 13,
    LMX_GGML_Q6_K = 14, LMX_GGML_Q8_K = 15, LMX_GGML_I8 = 24, LMX_GGML_I16 = 25,
    LMX_GGML_I32 = 26, LMX_GGML_I64 = 27, LMX_GGML_F64 = 28, LMX_GGML_BF16 = 30,
};

typedef struct lmx_gguf_str {
    const char *ptr; /* points into the map: NOT NUL-terminated */
    uint64_t len;
} lmx_gguf_str;

typedef struct lmx_gguf_tensor {
    char *name;          /* NUL-terminated copy */
    uint32_t ggml_type;
    int n_dims;
    int64_t ne[4];       /* ne[0] innermost */
    uint64_t offset;     /* relative to the data section */
    uint64_t size;       /* bytes */
    const uint8_t *data; /* into the map */
} lmx_gguf_tensor;

typedef struct lmx_gguf lmx_gguf;

lmx_status lmx_gguf_open(const char *path, lmx_gguf **out);
void lmx_gguf_close(lmx_gguf *g);

uint32_t lmx_gguf_version(const lmx_gguf *g);
lmx_file_map *lmx_gguf_map(const lmx_gguf *g); /* borrowed; retain to keep */
const char *lmx_gguf_path(const lmx_gguf *g);

/* Key/value metadata. Index-based access; -1 when the key is absent. */
int64_t lmx_gguf_n_kv(const lmx_gguf *g);
int64_t lmx_gguf_find_key(const lmx_gguf *g, const char *key);
const char *lmx_gguf_key(const lmx_gguf *g, int64_t i); /* NUL-terminated */
lmx_gguf_type lmx_gguf_kv_type(const lmx_gguf *g, int64_t i);

/* Typed getters by key. Integers convert between widths when the value fits;
 * floats accept f32/f64. Return false when the key is absent or the type is
 * wrong (no error is set; callers decide whether absence is an error). */
bool lmx_gguf_get_i64(const lmx_gguf *g, const char *key, int64_t *out);
bool lmx_gguf_get_f32(const lmx_gguf *g, const char *key, float *out);
bool lmx_gguf_get_bool(const lmx_gguf *g, const char *key, bool *out);
bool lmx_gguf_get_str(const lmx_gguf *g, const char *key, lmx_gguf_str *out);

/* Arrays: element type, length, and element access. Numeric arrays are
 * returned as a pointer to the raw little-endian elements in the map (may be
 * unaligned: read with memcpy). */
bool lmx_gguf_get_arr(const lmx_gguf *g, const char *key, lmx_gguf_type *elem_type, uint64_t *len);
const void *lmx_gguf_arr_data(const lmx_gguf *g, const char *key);
/* String element j of a string array (validated at open time). */
lmx_gguf_str lmx_gguf_arr_str(const lmx_gguf *g, const char *key, uint64_t j);

/* Tensors. */
int64_t lmx_gguf_n_tensors(const lmx_gguf *g);
const lmx_gguf_tensor *lmx_gguf_tensor_at(const lmx_gguf *g, int64_t i);
const lmx_gguf_tensor *lmx_gguf_find_tensor(const lmx_gguf *g, const char *name);

/* ---- additions (io engineer) --------------------------------------------- */

/* Parses a GGUF image already in memory (fuzzing, tests). data must outlive
 * g; name stands for the path in messages (NULL: "<memory>"); lmx_gguf_map()
 * returns NULL for such a handle. lmx_gguf_open() maps the file and runs
 * exactly this parser. */
lmx_status lmx_gguf_open_memory(const void *data, size_t size, const char *name, lmx_gguf **out);
/* general.alignment (32 when absent) and the data section's offset in the file. */
uint64_t lmx_gguf_alignment(const lmx_gguf *g);
uint64_t lmx_gguf_data_offset(const lmx_gguf *g);
/* Index-based variants of the array getters (no key lookup): for a kv index i
 * from lmx_gguf_find_key. lmx_gguf_arr_str_at returns {NULL, 0} when i is not
 * a top-level string array or j is out of range. */
bool lmx_gguf_arr_at(const lmx_gguf *g, int64_t i, lmx_gguf_type *elem_type, uint64_t *len);
lmx_gguf_str lmx_gguf_arr_str_at(const lmx_gguf *g, int64_t i, uint64_t j);
/* The value type's name ("uint32", "string", ...), "?" when unknown. */
const char *lmx_gguf_type_name(lmx_gguf_type t);

/* ggml tensor-type traits: name ("Q4_K"), elements per block and bytes per
 * block. False for a type number lmx does not know (block/size untouched).
 * Known: every type of the ggml spec with a fixed block layout (F32 … BF16,
 * the legacy, K and IQ quants, TQ1_0/TQ2_0, MXFP4); the quantized ones are
 * opaque bytes until the quantization issue. */
bool lmx_ggml_type_info(uint32_t type, const char **name, int64_t *block, size_t *size);

/* ---- writing (gguf_write.c) ------------------------------------------------ */

/* One metadata value. data points to: a scalar's value (host = little-endian
 * layout, e.g. a uint32_t for UINT32, a uint8_t 0/1 for BOOL); a STRING's n
 * bytes; an ARRAY's n elements of arr_type (scalars packed, or n
 * lmx_gguf_str for STRING elements). Nested arrays are not written. */
typedef struct lmx_gguf_write_kv {
    const char *key;
    lmx_gguf_type type;
    lmx_gguf_type arr_type; /* ARRAY only */
    uint64_t n;             /* STRING: bytes; ARRAY: elements */
    const void *data;
} lmx_gguf_write_kv;

typedef struct lmx_gguf_write_tensor {
    const char *name;
    uint32_t ggml_type;
    int n_dims;       /* 1..4 */
    int64_t ne[4];    /* ne[0] innermost */
    const void *data; /* size bytes */
    size_t size;      /* must equal the size ne and the type imply */
} lmx_gguf_write_tensor;

/* Writes a GGUF v3 file: the kvs in order, then the tensor infos and data in
 * order, each tensor aligned to general.alignment (taken from kvs when given
 * there as UINT32, else 32). Via a temp file + fsync + rename. Bad arguments
 * (duplicate names/keys, size mismatch, unknown type) → LMX_ERR_INVALID_ARG. */
lmx_status lmx_gguf_write(const char *path, const lmx_gguf_write_kv *kvs, size_t n_kv,
                          const lmx_gguf_write_tensor *tensors, size_t n_tensors);

#endif
