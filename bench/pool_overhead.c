/* pool_overhead.c - what one lmx_pool_run costs when the work is empty.
 *
 * A decode step of llama-1b issues ~230 pool jobs; this measures the fixed
 * cost of each (publish, wake, run, join) for back-to-back jobs (the decode
 * case: workers still spinning) and for jobs spaced 1 ms apart (workers
 * asleep). Prints nanoseconds per job.
 *
 * usage: lmx_pool_overhead [threads=ncpu] [jobs=200000] */
#include "base/base.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static void empty(int ith, int nth, void *arg) {
    (void)ith, (void)nth;
    if (arg) __atomic_fetch_add((int *)arg, 1, __ATOMIC_RELAXED);
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 0;
    long jobs = argc > 2 ? atol(argv[2]) : 200000;
    lmx_pool *p;
    if (lmx_pool_create(threads, &p) != LMX_OK) {
        fprintf(stderr, "pool: %s\n", lmx_last_error());
        return 1;
    }
    int count = 0;
    for (int i = 0; i < 1000; i++) lmx_pool_run(p, empty, &count); /* warm */
    double t0 = lmx_time_s();
    for (long i = 0; i < jobs; i++) lmx_pool_run(p, empty, &count);
    double hot = (lmx_time_s() - t0) / (double)jobs * 1e9;
    int cold_n = 200;
    double cold = 0;
    for (int i = 0; i < cold_n; i++) {
        struct timespec ts = {0, 2000000}; /* 2 ms: past the spin budget, workers asleep */
        nanosleep(&ts, NULL);
        double a = lmx_time_s();
        lmx_pool_run(p, empty, &count);
        cold += lmx_time_s() - a;
    }
    printf("threads=%d  back-to-back: %.0f ns/job  after 2 ms idle: %.0f ns/job  (%ld + %d jobs, %d runs)\n",
           lmx_pool_size(p), hot, cold / cold_n * 1e9, jobs, cold_n, count);
    lmx_pool_free(p);
    return 0;
}
