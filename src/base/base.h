/*
 * base.h - the bottom layer: errors, memory, files, threads, clocks.
 * Depends only on libc and pthreads. Everything above includes this.
 *
 * defines: lmx_err (set the thread's error, return the status), aligned
 * allocation, lmx_file_map (read-only mmap), lmx_read_file, lmx_atomic_write,
 * lmx_pool (persistent thread pool), lmx_time_s, lmx_peak_rss_bytes.
 */
#ifndef LMX_BASE_H
#define LMX_BASE_H

#include "lmx.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- errors -------------------------------------------------------------- */

/* Records a one-line message for lmx_last_error() and returns s, so that
 * failure paths read `return lmx_err(LMX_ERR_FORMAT, "%s: ...", path);`. */
lmx_status lmx_err(lmx_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prefixes the current message with "context: " (keeps the status). */
lmx_status lmx_err_prefix(lmx_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void lmx_err_clear(void);

#define LMX_TRY(expr)                       \
    do {                                    \
        lmx_status _st = (expr);            \
        if (_st != LMX_OK) return _st;      \
    } while (0)

/* ---- memory --------------------------------------------------------------- */

#define LMX_ALIGN 64
/* 64-byte aligned allocation; NULL (and an error set) on failure or size 0. */
void *lmx_aligned_alloc(size_t size);
void lmx_aligned_free(void *p);
/* Overflow-checked a*b; false on overflow. */
static inline bool lmx_mul_ok(size_t a, size_t b, size_t *out) {
    return !__builtin_mul_overflow(a, b, out);
}
char *lmx_strdup(const char *s);
/* Per-thread scratch buffer `slot` (0..7) of at least n floats, 64-byte
 * aligned, grown on demand and reused: kernels stay allocation-free in steady
 * state. Freed when the thread exits (pool workers) or stays reachable for
 * the main thread. NULL on allocation failure. */
#define LMX_SCRATCH_SLOTS 8
float *lmx_thread_scratch(int slot, int64_t n);
char *lmx_strndup(const char *s, size_t n);

/* ---- files ---------------------------------------------------------------- */

/* A read-only memory map of a whole file. Refcounted: arrays viewing weights
 * hold a reference so the map outlives the loader. */
typedef struct lmx_file_map {
    const uint8_t *data;
    size_t size;
    char *path;
    int refcount;
} lmx_file_map;

lmx_status lmx_file_map_open(const char *path, lmx_file_map **out);
void lmx_file_map_retain(lmx_file_map *m);
void lmx_file_map_release(lmx_file_map *m);

/* Reads a whole file into a NUL-terminated heap buffer (caller frees). */
lmx_status lmx_read_file(const char *path, char **data, size_t *size);
bool lmx_file_exists(const char *path);
bool lmx_is_dir(const char *path);
/* Joins dir and name into a heap string (caller frees). */
char *lmx_path_join(const char *dir, const char *name);

/* Writes data to path via a temp file in the same folder + fsync + rename,
 * so a failure never leaves a half-written file at path. */
lmx_status lmx_atomic_write(const char *path, const void *data, size_t size);

/* ---- threads -------------------------------------------------------------- */

/* A persistent pool: workers spin briefly on an atomic counter between jobs,
 * then sleep on a condition variable, so a decode step costs no thread
 * creation, allocation or lock per op (threadpool.c). fn(ith, nth, arg) runs
 * once per thread (ith in [0, nth)); the caller's thread is worker 0. */
typedef void (*lmx_pool_fn)(int ith, int nth, void *arg);
typedef struct lmx_pool lmx_pool;

lmx_status lmx_pool_create(int n_threads, lmx_pool **out);
void lmx_pool_free(lmx_pool *p);
int lmx_pool_size(const lmx_pool *p);
void lmx_pool_run(lmx_pool *p, lmx_pool_fn fn, void *arg);
/* The documented default pool (one thread per core), created on first use. */
lmx_pool *lmx_pool_default(void);
int lmx_cpu_count(void);

/* Splits [0, n) into nth near-equal chunks; chunk ith is [*lo, *hi). */
static inline void lmx_split(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi) {
    int64_t per = (n + nth - 1) / nth;
    *lo = per * ith;
    *hi = *lo + per;
    if (*lo > n) *lo = n;
    if (*hi > n) *hi = n;
}

/* ---- clocks and memory use ----------------------------------------------- */

double lmx_time_s(void); /* monotonic seconds */
size_t lmx_peak_rss_bytes(void);

#endif /* LMX_BASE_H */
