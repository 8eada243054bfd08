/* tape_cache.c - recycled device memory for training (core/tape.h).
 *
 * A training step on a device allocates thousands of arrays (every
 * activation, and each node's dout and dsrc in backward) and frees them all
 * at the tape reset. Through the backend's own alloc/free each of those is a
 * device malloc, a memset and a stream synchronisation (and a free that
 * synchronises again), which starves the GPU between kernels. Here a freed
 * block goes back to a per-backend free list keyed by its exact size and the
 * next request of that size takes it; it is zeroed on the stream by the
 * backend's queued memset (buffer op zero), else by its SCALE by 0 (queued,
 * no synchronisation; the block held finite values - activations or
 * gradients - so 0·x is 0). Stream order makes the
 * reuse safe: every use of the old array was queued before the new one.
 * Blocks that no step asked for in the last two trims are freed, so shapes
 * that change from batch to batch do not pile up. Host backends allocate as
 * lmx_array_alloc_on does. */
#include "core/tape.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    void *p;
    size_t bytes;
    int64_t stamp; /* trim round of the last use */
} block;

typedef struct cache {
    lmx_backend *b;
    block *idle;
    int nidle, icap;
    block *live; /* handed out (size lookup at free) */
    int nlive, lcap;
    int64_t round;
    bool closing; /* trimmed with all: returned blocks are freed, the cache goes when none is live */
    struct cache *next;
} cache;

static cache *caches;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

static cache *find(lmx_backend *b, bool make) {
    for (cache *c = caches; c; c = c->next)
        if (c->b == b) return c;
    if (!make) return NULL;
    cache *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->b = b;
    c->next = caches;
    caches = c;
    return c;
}

static void unlink_cache(cache *c) {
    for (cache **pp = &caches; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    free(c->idle);
    free(c->live);
    free(c);
}

static bool push(block **v, int *n, int *cap, block x) {
    if (*n == *cap) {
        int nc = *cap ? 2 * *cap : 256;
        block *q = realloc(*v, (size_t)nc * sizeof *q);
        if (!q) return false;
        *v = q;
        *cap = nc;
    }
    (*v)[(*n)++] = x;
    return true;
}

/* dev_free of a recycled buffer: owner is the backend. */
static void give_back(void *owner, void *data) {
    lmx_backend *b = owner;
    pthread_mutex_lock(&mu);
    cache *c = find(b, false);
    int i = -1;
    for (int k = c ? c->nlive - 1 : -1; k >= 0; k--) /* recent blocks go first: search from the end */
        if (c->live[k].p == data) {
            i = k;
            break;
        }
    bool kept = false;
    if (i >= 0) {
        block x = c->live[i];
        c->live[i] = c->live[--c->nlive];
        x.stamp = c->round;
        kept = !c->closing && push(&c->idle, &c->nidle, &c->icap, x);
        if (c->closing && c->nlive == 0 && c->nidle == 0) unlink_cache(c);
    }
    pthread_mutex_unlock(&mu);
    if (!kept) lmx_backend_free_mem(b, data);
}

static lmx_status zero(lmx_backend *b, void *p, size_t bytes) {
    int64_t n = (int64_t)(bytes / sizeof(float));
    if (n == 0) return LMX_OK;
    if (b->buffers && b->buffers->zero) return b->buffers->zero(b, p, bytes); /* a write, no read */
    lmx_array v;
    memset(&v, 0, sizeof v);
    int64_t sh[2] = {1, n};
    lmx_array_set_contiguous(&v, LMX_F32, 2, sh);
    v.data = p;
    lmx_node nd;
    memset(&nd, 0, sizeof nd);
    nd.op = LMX_OP_SCALE;
    nd.out = &v;
    nd.src[0] = &v;
    nd.fp[0] = 0.0f;
    lmx_exec ex = {b, NULL};
    return lmx_exec_node(&ex, &nd);
}

static lmx_status alloc_on(lmx_backend *b, lmx_array *a, int ndim, const int64_t *shape, bool zeroed);

lmx_status lmx_tape_alloc_on(lmx_backend *b, lmx_array *a, int ndim, const int64_t *shape) {
    return alloc_on(b, a, ndim, shape, true);
}

lmx_status lmx_tape_alloc_out_on(lmx_backend *b, lmx_array *a, int ndim, const int64_t *shape) {
    return alloc_on(b, a, ndim, shape, false);
}

static lmx_status alloc_on(lmx_backend *b, lmx_array *a, int ndim, const int64_t *shape, bool zeroed) {
    if (lmx_backend_is_host(b)) return lmx_array_alloc_on(b, a, LMX_F32, ndim, shape);
    memset(a, 0, sizeof *a);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    size_t bytes = (size_t)(n > 0 ? n : 1) * sizeof(float);
    lmx_buffer *buf = calloc(1, sizeof *buf);
    if (!buf) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    void *p = NULL;
    pthread_mutex_lock(&mu);
    cache *c = find(b, true);
    if (c) c->closing = false;
    for (int k = 0; c && k < c->nidle; k++)
        if (c->idle[k].bytes == bytes) {
            p = c->idle[k].p;
            c->idle[k] = c->idle[--c->nidle];
            break;
        }
    pthread_mutex_unlock(&mu);
    lmx_status st = LMX_OK;
    if (!p) st = lmx_backend_alloc(b, bytes, &p); /* zeroed */
    else if (zeroed) st = zero(b, p, bytes);
    pthread_mutex_lock(&mu);
    if (!st && (!c || !push(&c->live, &c->nlive, &c->lcap, (block){p, bytes, 0})))
        st = lmx_err(LMX_ERR_NOMEM, "out of memory");
    pthread_mutex_unlock(&mu);
    if (st) {
        if (p) lmx_backend_free_mem(b, p);
        free(buf);
        return st;
    }
    buf->data = p;
    buf->size = bytes;
    buf->refcount = 1;
    buf->kind = LMX_BUFFER_DEVICE;
    buf->dev_free = give_back;
    buf->dev_owner = b;
    a->buf = buf;
    a->data = p;
    lmx_array_set_contiguous(a, LMX_F32, ndim, shape);
    return LMX_OK;
}

void lmx_tape_cache_trim(lmx_backend *b, bool all) {
    pthread_mutex_lock(&mu);
    cache *c = find(b, false);
    block *drop = NULL;
    int nd = 0, dcap = 0;
    if (c) {
        c->round++;
        for (int k = 0; k < c->nidle;) {
            if (all || c->round - c->idle[k].stamp >= 2) {
                if (!push(&drop, &nd, &dcap, c->idle[k])) break;
                c->idle[k] = c->idle[--c->nidle];
            } else {
                k++;
            }
        }
        if (all) c->closing = true;
        if (all && c->nlive == 0 && c->nidle == 0) unlink_cache(c);
    }
    pthread_mutex_unlock(&mu);
    for (int k = 0; k < nd; k++) lmx_backend_free_mem(b, drop[k].p);
    free(drop);
}
