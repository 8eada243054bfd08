/*
 * safetensors.h - safetensors reader, memory-mapped, zero copy, strict.
 *
 * Layout: u64 little-endian header length N, N bytes of JSON
 *   { "name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
 *     "__metadata__": {"k": "v", ...} }
 * then the data section; offsets are relative to its start.
 *
 * Checked at open: N within the file and below 100 MB, valid JSON object,
 * known dtype, shape entries non-negative integers, shape × dtype size ==
 * end − begin (no overflow), begin ≤ end ≤ data size, spans do not overlap.
 * Failures: LMX_ERR_FORMAT "path: tensor 'name': field: problem".
 */
#ifndef LMX_IO_SAFETENSORS_H
#define LMX_IO_SAFETENSORS_H

#include "base/base.h"
#include "core/dtype.h"

typedef struct lmx_st_tensor {
    char *name;
    lmx_dtype dtype;
    int n_dims;
    int64_t shape[LMX_MAX_DIMS]; /* row-major, shape[n_dims-1] innermost */
    const uint8_t *data;         /* into the map */
    size_t size;                 /* bytes */
} lmx_st_tensor;

typedef struct lmx_st_file lmx_st_file;

lmx_status lmx_st_open(const char *path, lmx_st_file **out);
void lmx_st_close(lmx_st_file *f);

lmx_file_map *lmx_st_map(const lmx_st_file *f); /* borrowed */
const char *lmx_st_path(const lmx_st_file *f);
size_t lmx_st_n_tensors(const lmx_st_file *f);
const lmx_st_tensor *lmx_st_tensor_at(const lmx_st_file *f, size_t i);
const lmx_st_tensor *lmx_st_find(const lmx_st_file *f, const char *name);
/* "__metadata__" string value, or NULL. */
const char *lmx_st_metadata(const lmx_st_file *f, const char *key);

/* ---- additions (io engineer) --------------------------------------------- */

/* Parses a safetensors image already in memory (fuzzing, tests, embedded
 * data). data must outlive the file; name stands for the path in messages
 * (NULL: "<memory>"). lmx_st_map() returns NULL for such a file.
 * lmx_st_open() maps the file and runs exactly this parser. */
lmx_status lmx_st_open_memory(const void *data, size_t size, const char *name, lmx_st_file **out);
/* "__metadata__" entries in file order; key and value strings owned by f. */
size_t lmx_st_n_metadata(const lmx_st_file *f);
bool lmx_st_metadata_at(const lmx_st_file *f, size_t i, const char **key, const char **value);
/* Offset of the data section from the start of the file (8 + header). */
size_t lmx_st_data_offset(const lmx_st_file *f);

/* Writing (used by convert, adapters and tests): tensors are written in the
 * given order, header padded with spaces to 8 bytes as the reference writer
 * does, through lmx_atomic_write. */
typedef struct lmx_st_write_tensor {
    const char *name;
    lmx_dtype dtype;
    int n_dims;
    const int64_t *shape;
    const void *data;
    size_t size;
} lmx_st_write_tensor;

lmx_status lmx_st_write(const char *path, const lmx_st_write_tensor *tensors, size_t n,
                        const char *const *meta_kv /* k,v,k,v,...,NULL */);

/* Streaming writer for outputs too big to hold twice: the header is built from
 * the tensor list (its data/… fields are ignored), then the tensors' bytes are
 * appended in order with lmx_st_writer_write (any chunking), into a temp file
 * in the same folder; lmx_st_writer_finish checks the byte count, fsyncs and
 * renames it onto path, and frees w (also on failure). lmx_st_writer_abort
 * removes the temp file and frees w. */
typedef struct lmx_st_writer lmx_st_writer;
lmx_status lmx_st_writer_open(const char *path, const lmx_st_write_tensor *tensors, size_t n,
                              const char *const *meta_kv, lmx_st_writer **out);
/* The same with mx.save_safetensors' header layout (byte-identical files for
 * the same tensors): fields data_offsets, dtype, shape; no padding. The
 * caller gives tensors sorted by name and the metadata MLX would write
 * (none: "__metadata__":null, as MLX writes it). */
lmx_status lmx_st_writer_open_mlx(const char *path, const lmx_st_write_tensor *tensors, size_t n,
                                  const char *const *meta_kv, lmx_st_writer **out);
lmx_status lmx_st_writer_write(lmx_st_writer *w, const void *data, size_t size);
lmx_status lmx_st_writer_finish(lmx_st_writer *w);
void lmx_st_writer_abort(lmx_st_writer *w);

#endif
