/* tokenizer_bench.c - tokenization throughput of lmx on one text file.
 * usage: tokenizer_bench TOKENIZER TEXTFILE [REPEATS]
 * Prints the load time, then the best of REPEATS (default 5) encodes of the
 * whole file as one string (single thread). */
#define _POSIX_C_SOURCE 200809L
#include "lmx.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s TOKENIZER TEXTFILE [REPEATS]\n", argv[0]);
        return 2;
    }
    int reps = argc > 3 ? atoi(argv[3]) : 5;
    FILE *f = fopen(argv[2], "rb");
    if (!f) {
        perror(argv[2]);
        return 1;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)size + 1);
    if (!text || fread(text, 1, (size_t)size, f) != (size_t)size) return 1;
    fclose(f);
    double t0 = now();
    lmx_tokenizer *t;
    if (lmx_tokenizer_load(argv[1], &t) != LMX_OK) {
        fprintf(stderr, "%s\n", lmx_last_error());
        return 1;
    }
    printf("lmx load: %.1f ms\n", (now() - t0) * 1e3);
    double best = 1e30;
    size_t n = 0;
    for (int r = 0; r < reps; r++) {
        int32_t *ids;
        t0 = now();
        if (lmx_tokenize(t, text, (size_t)size, false, &ids, &n) != LMX_OK) return 1;
        double dt = now() - t0;
        if (dt < best) best = dt;
        lmx_free(ids);
    }
    printf("lmx encode: %ld bytes -> %zu tokens, best of %d: %.1f ms = %.2f MB/s, %.0f tokens/s\n", size, n, reps,
           best * 1e3, (double)size / best / 1e6, (double)n / best);
    lmx_tokenizer_free(t);
    free(text);
    return 0;
}
