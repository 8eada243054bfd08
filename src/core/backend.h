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

typedef struct lmx_backend {
    const char *name;
    const lmx_kernel_fn *kernels;                       /* [LMX_OP_COUNT] */
    bool (*supports)(const struct lmx_backend *b, const lmx_node *n); /* optional */
    lmx_pool *pool;
    void *ctx;
} lmx_backend;

/* Execution context: which backend runs ops, and (optionally) a tape that
 * records every executed node for autograd or graph capture. */
typedef struct lmx_tape lmx_tape;
typedef struct lmx_exec {
    lmx_backend *backend;
    lmx_tape *tape; /* NULL: nothing recorded */
} lmx_exec;

lmx_status lmx_exec_node(lmx_exec *ex, const lmx_node *n);

/* registry.c */
lmx_status lmx_backend_create(const char *name, int n_threads, lmx_backend **out);
void lmx_backend_free(lmx_backend *b);

#endif
