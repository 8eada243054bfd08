/* threadpool.c - a persistent pool of worker threads, spin-then-sleep.
 *
 * A decode step runs a few hundred small ops back to back; a mutex/condvar
 * round trip per op (wake a sleeping thread: ~5-20 us) would cost as much as
 * the ops themselves. So a job is published with one atomic increment of a
 * generation counter, workers that finished a job spin on that counter for a
 * short while (LMX_POOL_SPIN_US) before they go to sleep on a condition
 * variable, and the caller waits for completion by spinning on an atomic
 * count. Nothing is allocated or locked per job while workers are awake; the
 * mutex is only taken to put a worker to sleep or to wake sleeping ones.
 *
 * Lost wake-ups: the caller bumps `generation` and then reads `sleepers`; a
 * worker increments `sleepers` under the mutex and then re-reads
 * `generation` before waiting (both seq_cst), so either the caller sees the
 * sleeper and broadcasts under the mutex, or the worker sees the new job.
 *
 * Claims: part i of a job (fn(i, n, arg)) is run by whoever first moves
 * claim[i] to the job's generation: normally worker i, which is spinning;
 * but when the caller has finished part 0 and worker i has not even started
 * (descheduled because other processes share the cores), the caller runs
 * part i itself instead of waiting a scheduler time slice for it. A part
 * computes the same outputs whichever thread runs it, so results do not
 * change; a decode step of ~250 jobs no longer costs ~250 wake-ups of a
 * preempted thread on a busy machine.
 *
 * The calling thread is worker 0, so a pool of 1 runs everything inline. */
#include "base.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define LMX_POOL_SPIN_US 300 /* > the gap between two ops of a decode step */

struct lmx_pool {
    int n;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t wake;
    _Atomic uint64_t generation;
    _Atomic uint64_t *claim; /* [n]: last generation whose part i was taken */
    _Atomic int pending;     /* parts of the current job not finished yet */
    _Atomic int sleepers;
    _Atomic bool quit;
    lmx_pool_fn fn; /* written before the release of `generation` */
    void *arg;
};

typedef struct {
    lmx_pool *pool;
    int ith;
} worker_arg;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec * 1e-3;
}

/* Spins until generation != seen or the spin budget is spent. */
static uint64_t spin_for_job(lmx_pool *p, uint64_t seen) {
    double t0 = 0;
    for (unsigned i = 0;; i++) {
        uint64_t g = atomic_load_explicit(&p->generation, memory_order_acquire);
        if (g != seen || atomic_load_explicit(&p->quit, memory_order_relaxed)) return g;
        cpu_relax();
        if ((i & 63) == 63) {
            double t = now_us();
            if (t0 == 0) t0 = t;
            else if (t - t0 > LMX_POOL_SPIN_US) return g;
        }
    }
}

/* Takes part i of job g; false when someone already has. fn/arg are read
 * only after a successful claim: the caller cannot publish job g+1 before
 * part i of job g is finished, so they still belong to job g. */
static bool try_claim(lmx_pool *p, int i, uint64_t g) {
    uint64_t c = atomic_load(&p->claim[i]);
    return c < g && atomic_compare_exchange_strong(&p->claim[i], &c, g);
}

static void *worker_main(void *v) {
    worker_arg wa = *(worker_arg *)v;
    free(v);
    lmx_pool *p = wa.pool;
    uint64_t seen = 0;
    for (;;) {
        uint64_t g = spin_for_job(p, seen);
        if (g == seen && !atomic_load(&p->quit)) {
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while ((g = atomic_load(&p->generation)) == seen && !atomic_load(&p->quit))
                pthread_cond_wait(&p->wake, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->quit)) return NULL;
        seen = g;
        if (!try_claim(p, wa.ith, g)) continue; /* the caller ran our part */
        p->fn(wa.ith, p->n, p->arg);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_release);
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
    atomic_init(&p->generation, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->quit, false);
    p->threads = calloc((size_t)n_threads, sizeof *p->threads);
    p->claim = calloc((size_t)n_threads, sizeof *p->claim);
    if (!p->threads || !p->claim) {
        free(p->threads);
        free(p->claim);
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->wake);
        free(p);
        return lmx_err(LMX_ERR_NOMEM, "out of memory");
    }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa) {
            p->n = i;
            break;
        }
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
    atomic_store(&p->quit, true);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    free(p->threads);
    free(p->claim);
    free(p);
}

int lmx_pool_size(const lmx_pool *p) { return p ? p->n : 1; }

void lmx_pool_run(lmx_pool *p, lmx_pool_fn fn, void *arg) {
    if (!p || p->n == 1) {
        fn(0, 1, arg);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    atomic_store_explicit(&p->pending, p->n - 1, memory_order_relaxed);
    uint64_t g = atomic_fetch_add(&p->generation, 1) + 1; /* seq_cst: publishes fn/arg, orders the read below */
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->wake);
        pthread_mutex_unlock(&p->mu);
    }

    fn(0, p->n, arg);
    for (int i = 1; i < p->n; i++) /* parts no worker has started yet */
        if (try_claim(p, i, g)) {
            fn(i, p->n, arg);
            atomic_fetch_sub_explicit(&p->pending, 1, memory_order_release);
        }

    /* Workers normally finish within microseconds of us; if one was
     * descheduled (other processes on the cores), yield instead of burning
     * the core it needs. */
    for (unsigned i = 0; atomic_load_explicit(&p->pending, memory_order_acquire) > 0; i++) {
        if (i < 20000)
            cpu_relax();
        else
            sched_yield();
    }
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
