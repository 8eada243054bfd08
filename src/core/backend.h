/*
 * backend.h - the interface a compute backend implements.
 *
 * A backend is a table of kernels (one per lmx_op, NULL = unsupported), an
 * optional supports() refinement (e.g. dtypes), and the thread pool or
 * stream it runs on. The core never includes a backend's headers; the one
 * file that knows which backends exist is src/backend/registry.c.
 */
#ifndef LMX_CORE_BACKEND_H
#define LMX_CORE_BACKEND_H

#include "core/op.h"

struct lmx_backend;
struct lmx_optim_step_args; /* core/optim_step.h */
struct lmx_dora_norm_args;  /* core/dora_norm.h */

/* Device memory of a backend whose arrays live outside host memory (CUDA).
 * Every entry returns lmx_status with a message; none exits. alloc returns
 * zeroed memory. Copies are ordered with the backend's kernels (one stream);
 * download returns when the bytes are on the host. NULL ops = host memory. */
typedef struct lmx_buffer_ops {
    bool host_visible; /* kernels take plain host pointers (CPU) */
    lmx_status (*alloc)(struct lmx_backend *b, size_t bytes, void **out);
    void (*free)(struct lmx_backend *b, void *p);
    lmx_status (*upload)(struct lmx_backend *b, void *dst, const void *src, size_t bytes);
    lmx_status (*download)(struct lmx_backend *b, void *dst, const void *src, size_t bytes);
    lmx_status (*sync)(struct lmx_backend *b); /* waits for all queued work */
    size_t (*mem_peak)(const struct lmx_backend *b); /* optional: peak device bytes */
    /* optional: zeroes bytes at p, queued with the kernels (else a SCALE by 0) */
    lmx_status (*zero)(struct lmx_backend *b, void *p, size_t bytes);
    /* optional profiling marks (core/tape.c, LMX_TAPE_PROFILE=events): mark
     * records point `slot` (0..8191) after the queued work; mark_ms gives
     * the milliseconds between two recorded points (waits for z; < 0:
     * unknown). Device time without a synchronisation per node. */
    lmx_status (*mark)(struct lmx_backend *b, int slot);
    double (*mark_ms)(struct lmx_backend *b, int a, int z);
    /* optional: called once after the bytes of device array a (a whole
     * allocation: a weight, or a fused group of weights) are uploaded. The
     * backend may re-lay its rows out in place for faster kernels (CUDA:
     * GGUF Q4_0 with 16-byte aligned nibbles, cuda_qgemv_q4r.cu) as long as
     * every row keeps its offset and size (row views stay valid), its
     * kernels read the new layout and download gives back the stored one. */
    lmx_status (*relayout)(struct lmx_backend *b, const lmx_array *a);
} lmx_buffer_ops;


typedef struct lmx_backend {
    const char *name;
    const lmx_kernel_fn *kernels;                       /* [LMX_OP_COUNT] */
    bool (*supports)(const struct lmx_backend *b, const lmx_node *n); /* optional */
    lmx_pool *pool; /* CPU: the thread pool; CUDA: its context (passed to kernels) */
    void *ctx;
    const lmx_buffer_ops *buffers;               /* NULL: host memory */
    void (*destroy)(struct lmx_backend *b);      /* NULL: the CPU backend's teardown */
    /* Optional fast vjps, indexed by op (NULL, or a NULL entry: the reference
     * vjp of lmx_op_defs); the tape runs them for the nodes recorded on this
     * backend (core/tape.h), called with the backend's pool. Host backends
     * (the CPU: src/backend/cpu/cpu_vjp*.c) get host arrays. A device
     * backend (CUDA: src/backend/cuda/cuda_vjp*.cu) gets its own memory: the
     * node's forward arrays (views as the forward used them), dout dense f32
     * and the zeroed dense f32 dsrc[i] it adds into, all device arrays; a
     * NULL entry or LMX_ERR_UNSUPPORTED fails backward (no host fallback). */
    const lmx_vjp_kernel_fn *vjps;
    /* Optional (with vjps): the sources whose dsrc the backend's vjp of n
     * can write whole (bit j for src[j]). When the tape has no running sum
     * for such a source it hands the vjp uninitialised memory with
     * n->fresh bit j set instead of a zeroed array to add into: no memset,
     * and no read of zeros. */
    uint32_t (*vjp_overwrites)(const struct lmx_backend *b, const lmx_node *n);
    /* Optional (device backends): one optimizer update over flat f32 arrays
     * in the backend's memory (core/optim_step.h); NULL: the trainer
     * downloads gradients and updates on the host. */
    lmx_status (*optim_step)(struct lmx_backend *b, const struct lmx_optim_step_args *a);
    /* Optional (device backends): DoRA's inverse row norms of a frozen
     * weight plus scale·b·a, in the backend's memory (core/dora_norm.h);
     * NULL: the trainer downloads the arrays and computes them on the host. */
    lmx_status (*dora_norms)(struct lmx_backend *b, const struct lmx_dora_norm_args *a);
} lmx_backend;

/* Peak memory to report (mlx-lm's peak_memory): the device's peak for a
 * device backend, else the process's peak resident set. Bytes. */
size_t lmx_backend_mem_peak(const lmx_backend *b);

/* Execution context: which backend runs ops, and (optionally) a tape that
 * records every executed node for autograd or graph capture. */
typedef struct lmx_tape lmx_tape;
typedef struct lmx_exec {
    lmx_backend *backend;
    lmx_tape *tape; /* NULL: nothing recorded */
} lmx_exec;

lmx_status lmx_exec_node(lmx_exec *ex, const lmx_node *n);

/* array_device.c: memory on a backend (host malloc/memcpy when the backend
 * has no buffer ops or host-visible ones). A device array keeps a pointer to
 * its backend: free the arrays before the backend. */
bool lmx_backend_is_host(const lmx_backend *b);
lmx_status lmx_backend_alloc(lmx_backend *b, size_t bytes, void **out);
void lmx_backend_free_mem(lmx_backend *b, void *p);
lmx_status lmx_backend_upload(lmx_backend *b, void *dst, const void *src, size_t bytes);
lmx_status lmx_backend_download(lmx_backend *b, void *dst, const void *src, size_t bytes);
lmx_status lmx_backend_sync(lmx_backend *b);
/* The buffer op relayout for a freshly uploaded device array (no-op when the
 * backend has none). lmx_array_to_backend calls it itself. */
lmx_status lmx_backend_relayout(lmx_backend *b, const lmx_array *a);
/* A zeroed contiguous array in b's memory (lmx_array_alloc on the host). */
lmx_status lmx_array_alloc_on(lmx_backend *b, lmx_array *a, lmx_dtype dt, int ndim, const int64_t *shape);
/* dst = a contiguous copy of host array src in b's memory (weights upload);
 * on a host backend dst is another reference to src (no copy). */
lmx_status lmx_array_to_backend(lmx_backend *b, lmx_array *dst, const lmx_array *src);
/* Copies the bytes of contiguous array a (in b's memory) to host dst. */
lmx_status lmx_array_download(lmx_backend *b, const lmx_array *a, void *dst);
/* *h = a contiguous host copy of a (same dtype and shape) when a lives in a
 * device backend's memory; otherwise *h = a new reference to a itself.
 * Release *h either way (an empty a gives an empty *h). */
lmx_status lmx_array_to_host(const lmx_array *a, lmx_array *h);

/* registry.c */
lmx_status lmx_backend_create(const char *name, int n_threads, lmx_backend **out);
void lmx_backend_free(lmx_backend *b);

#endif
