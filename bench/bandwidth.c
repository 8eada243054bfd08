/* bandwidth.c - read-only memory stream probe: the ceiling for decode.
 *
 * Decode reads every weight byte once per token, so tokens/s x bytes/token
 * can never exceed what the cores can stream from DRAM. This allocates a
 * buffer of a few GiB (default 4), touches it, and times a read-only pass
 * (XOR-reduce of 64-bit words, 8 independent lanes so it vectorizes) split
 * into equal contiguous parts over 1..N threads. Prints GB/s (1e9 bytes/s)
 * for each thread count: best and median of the repetitions.
 *
 * usage: lmx_bandwidth [GiB=4] [reps=7] [max_threads=ncpu] [--json] */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    const uint64_t *p;
    size_t n;
    uint64_t out;
    pthread_barrier_t *bar;
} part;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static uint64_t reduce(const uint64_t *p, size_t n) {
    uint64_t a[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) a[j] ^= p[i + j];
    for (; i < n; i++) a[0] ^= p[i];
    return a[0] ^ a[1] ^ a[2] ^ a[3] ^ a[4] ^ a[5] ^ a[6] ^ a[7];
}

static void *run_part(void *v) {
    part *pt = v;
    pthread_barrier_wait(pt->bar);
    pt->out = reduce(pt->p, pt->n);
    return NULL;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    double gib = 4;
    int reps = 7, maxt = (int)sysconf(_SC_NPROCESSORS_ONLN);
    int json = 0, pos = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (pos == 0) gib = atof(argv[i]), pos++;
        else if (pos == 1) reps = atoi(argv[i]), pos++;
        else maxt = atoi(argv[i]);
    }
    if (gib <= 0 || reps <= 0 || maxt <= 0 || maxt > 256) {
        fprintf(stderr, "usage: lmx_bandwidth [GiB=4] [reps=7] [max_threads] [--json]\n");
        return 2;
    }
    size_t bytes = (size_t)(gib * 1073741824.0) & ~(size_t)4095;
    size_t n = bytes / 8;
    uint64_t *buf = NULL;
    if (posix_memalign((void **)&buf, 4096, bytes) != 0) {
        fprintf(stderr, "lmx_bandwidth: cannot allocate %.2f GiB\n", gib);
        return 1;
    }
    /* 2 MiB pages where the kernel gives them, as lmx maps weights: the
     * ceiling should be the best this machine delivers. */
    (void)madvise(buf, bytes, MADV_HUGEPAGE);
    for (size_t i = 0; i < n; i++) buf[i] = i * 0x9e3779b97f4a7c15ull; /* touch: real pages, not the zero page */
    uint64_t sink = 0;
    if (json) printf("{\"bytes\": %zu, \"results\": [", bytes);
    for (int t = 1; t <= maxt; t++) {
        double *gbs = malloc(sizeof(double) * (size_t)reps);
        pthread_t th[256];
        part pt[256];
        pthread_barrier_t bar;
        for (int r = 0; r < reps; r++) {
            pthread_barrier_init(&bar, NULL, (unsigned)t + 1);
            size_t per = (n / (size_t)t) & ~(size_t)7;
            for (int i = 0; i < t; i++) {
                pt[i].p = buf + per * (size_t)i;
                pt[i].n = i == t - 1 ? n - per * (size_t)i : per;
                pt[i].bar = &bar;
                pthread_create(&th[i], NULL, run_part, &pt[i]);
            }
            double t0 = now_s();
            pthread_barrier_wait(&bar);
            for (int i = 0; i < t; i++) {
                pthread_join(th[i], NULL);
                sink ^= pt[i].out;
            }
            gbs[r] = (double)bytes / (now_s() - t0) / 1e9;
            pthread_barrier_destroy(&bar);
        }
        qsort(gbs, (size_t)reps, sizeof *gbs, cmp_d);
        if (json)
            printf("%s{\"threads\": %d, \"best_gbs\": %.2f, \"median_gbs\": %.2f, \"min_gbs\": %.2f}", t > 1 ? ", " : "",
                   t, gbs[reps - 1], gbs[reps / 2], gbs[0]);
        else
            printf("threads=%d  read GB/s: best %.2f  median %.2f  min %.2f  (%.2f GiB x %d reps)\n", t, gbs[reps - 1],
                   gbs[reps / 2], gbs[0], gib, reps);
        free(gbs);
    }
    if (json) printf("], \"checksum\": %llu}\n", (unsigned long long)(sink & 1));
    else if (sink == 42) printf("\n"); /* keeps the reduction alive */
    free(buf);
    return 0;
}
