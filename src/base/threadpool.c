/* threadpool.c - a persistent pool of worker threads.
 *
 * Workers wait on a condition variable for a generation counter to change,
 * run fn(ith, nth, arg), and report back. The calling thread is worker 0,
 * so a pool of 1 runs everything inline with no synchronisation at all. */
#include "base.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

struct lmx_pool {
    int n;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    uint64_t generation;
    int pending;
    bool quit;
    lmx_pool_fn fn;
    void *arg;
};

typedef struct {
    lmx_pool *pool;
    int ith;
} worker_arg;

static void *worker_main(void *p) {
    worker_arg wa = *(worker_arg *)p;
    free(p);
    lmx_pool *pool = wa.pool;
    uint64_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&pool->mu);
        while (pool->generation == seen && !pool->quit) pthread_cond_wait(&pool->wake, &pool->mu);
        if (pool->quit) {
            pthread_mutex_unlock(&pool->mu);
            return NULL;
        }
        seen = pool->generation;
        lmx_pool_fn fn = pool->fn;
        void *arg = pool->arg;
        pthread_mutex_unlock(&pool->mu);

        fn(wa.ith, pool->n, arg);

        pthread_mutex_lock(&pool->mu);
        if (--pool->pending == 0) pthread_cond_signal(&pool->done);
        pthread_mutex_unlock(&pool->mu);
    }
}

int lmx_cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

lmx_status lmx_pool_create(int n_threads, lmx_pool **out) {
    *out = NULL;
    if (n_threads <= 0) n_threads = lmx_cpu_count();
    if (n_threads > 512) return lmx_err(LMX_ERR_INVALID_ARG, "threads: %d is too many", n_threads);
    lmx_pool *p = calloc(1, sizeof *p);
    if (!p) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    p->n = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    p->threads = calloc((size_t)n_threads, sizeof *p->threads);
    if (!p->threads) {
        free(p);
        return lmx_err(LMX_ERR_NOMEM, "out of memory");
    }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa) break;
        wa->pool = p;
        wa->ith = i;
        if (pthread_create(&p->threads[i], NULL, worker_main, wa) != 0) {
            free(wa);
            p->n = i; /* run with the threads we got */
            break;
        }
    }
    *out = p;
    return LMX_OK;
}

void lmx_pool_free(lmx_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->quit = true;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    free(p->threads);
    free(p);
}

int lmx_pool_size(const lmx_pool *p) { return p ? p->n : 1; }

void lmx_pool_run(lmx_pool *p, lmx_pool_fn fn, void *arg) {
    if (!p || p->n == 1) {
        fn(0, 1, arg);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->arg = arg;
    p->pending = p->n - 1;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);

    fn(0, p->n, arg);

    pthread_mutex_lock(&p->mu);
    while (p->pending > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}

static lmx_pool *default_pool;
static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static void default_init(void) {
    if (lmx_pool_create(0, &default_pool) != LMX_OK) default_pool = NULL;
}

lmx_pool *lmx_pool_default(void) {
    pthread_once(&default_once, default_init);
    return default_pool;
}
