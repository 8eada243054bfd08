/*
 * shards.h - the safetensors files of one model folder, as one tensor set.
 *
 * Discovery: model.safetensors.index.json (weight_map) when present, else
 * every model*.safetensors (sorted), else every *.safetensors except
 * adapter*.safetensors (and hidden files). Names are unique across shards
 * (duplicates are a format error); lookups are hashed.
 *
 * With an index: its weight_map must be an object of file names (plain names
 * inside the folder: no absolute paths, no ".." parts); a named file that is
 * absent gives LMX_ERR_NOT_FOUND, a listed tensor absent from its file (or
 * found in another) LMX_ERR_FORMAT. Tensors a shard holds beyond its
 * weight_map entries are kept. A folder without safetensors files gives
 * LMX_ERR_NOT_FOUND.
 */
#ifndef LMX_IO_SHARDS_H
#define LMX_IO_SHARDS_H

#include "io/safetensors.h"

typedef struct lmx_st_set lmx_st_set;

lmx_status lmx_st_set_open(const char *dir, lmx_st_set **out);
void lmx_st_set_close(lmx_st_set *s);

size_t lmx_st_set_n_tensors(const lmx_st_set *s);
/* i-th tensor over all shards; *file receives the shard it lives in. */
const lmx_st_tensor *lmx_st_set_tensor_at(const lmx_st_set *s, size_t i, const lmx_st_file **file);
/* NULL when absent. *file (optional) receives the shard. */
const lmx_st_tensor *lmx_st_set_find(const lmx_st_set *s, const char *name, const lmx_st_file **file);

/* ---- additions (io engineer) --------------------------------------------- */

/* A set over explicit files (tests, adapters): same duplicate checks. */
lmx_status lmx_st_set_open_files(const char *const *paths, size_t n, lmx_st_set **out);
size_t lmx_st_set_n_files(const lmx_st_set *s);
const lmx_st_file *lmx_st_set_file(const lmx_st_set *s, size_t i);
/* True when the set came from model.safetensors.index.json. */
bool lmx_st_set_has_index(const lmx_st_set *s);

#endif
