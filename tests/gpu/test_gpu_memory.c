/*
 * test_gpu_memory.c - GPU memory does not grow over 1,000 generations
 * (issue 6). One model on the CUDA device generates from prompts of a fixed
 * cycle of lengths (so every scratch size is reached in the first cycle),
 * greedy and sampled, with and without a reused prompt cache. After the
 * warm-up (the first 100 generations: every prompt length, both cache modes,
 * and the KV cache's growth steps), neither the backend's peak (our
 * allocator; a leak of one buffer per generation would raise it within the
 * next 900) nor the memory the driver reports in use (cudaMemGetInfo: cuBLAS
 * workspaces, graphs, anything outside our allocator) may grow: the bound is
 * 0 bytes for the peak and 2 MiB for the driver figure (its pool granularity).
 * Every rise of the peak is printed with its generation number.
 *
 *   test_gpu_memory [MODEL] [GENERATIONS]   (default models/stories260K.gguf, 1000)
 * Exit 77 (skipped) when no CUDA device answers.
 */
#include <lmx.h>
#include <cuda_runtime_api.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    double peak_gb;
    int tokens;
} run_stats;

static int on_token(const lmx_response *r, void *user) {
    run_stats *s = user;
    s->peak_gb = r->peak_memory_gb;
    s->tokens = r->generation_tokens;
    return 0;
}

static size_t used_bytes(void) {
    size_t free_b = 0, total_b = 0;
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) return 0;
    return total_b - free_b;
}

int main(int argc, char **argv) {
    const char *path = argc > 1 ? argv[1] : "models/stories260K.gguf";
    int n_gen = argc > 2 ? atoi(argv[2]) : 1000;
    int dev_count = 0;
    if (cudaGetDeviceCount(&dev_count) != cudaSuccess || dev_count == 0) {
        printf("SKIP: no CUDA device answers\n");
        return 77;
    }
    lmx_load_options lo;
    lmx_load_options_init(&lo);
    lo.device = "cuda";
    lmx_model *m;
    if (lmx_load(path, &lo, &m) != LMX_OK) {
        fprintf(stderr, "FAIL: load %s: %s\n", path, lmx_last_error());
        return 1;
    }
    static const int lens[] = {1, 7, 33, 2, 120, 5};
    enum { CYCLE = sizeof lens / sizeof *lens };
    int32_t prompt[128];
    lmx_cache *cache = NULL;
    if (lmx_cache_new(m, NULL, &cache) != LMX_OK) {
        fprintf(stderr, "FAIL: cache: %s\n", lmx_last_error());
        return 1;
    }
    double peak_after_cycle = 0, peak_seen = 0;
    size_t used_after_cycle = 0;
    const int warmup = n_gen > 200 ? 100 : n_gen / 2;
    int vocab = lmx_model_vocab_size(m), fails = 0;
    for (int i = 0; i < n_gen; i++) {
        int n = lens[i % CYCLE];
        for (int t = 0; t < n; t++) prompt[t] = (int32_t)((i * 131 + t * 17) % (vocab - 3) + 3);
        lmx_generate_options o;
        lmx_generate_options_init(&o);
        o.max_tokens = 8;
        o.temp = (i & 1) ? 0.8f : 0.0f;
        o.seed = (uint64_t)i;
        o.ignore_eos = true;
        if ((i / CYCLE) & 1) { /* every other cycle: through one reused prompt cache */
            lmx_cache_trim(cache, lmx_cache_length(cache));
            o.cache = cache;
        }
        run_stats s = {0, 0};
        if (lmx_generate_stream(m, prompt, (size_t)n, &o, on_token, &s) != LMX_OK || s.tokens != 8) {
            fprintf(stderr, "FAIL: generation %d: %s\n", i, lmx_last_error());
            fails++;
            break;
        }
        if (s.peak_gb > peak_seen) {
            printf("generation %d: backend peak %.6f GB\n", i, s.peak_gb);
            peak_seen = s.peak_gb;
        }
        if (i == warmup - 1) {
            peak_after_cycle = s.peak_gb;
            used_after_cycle = used_bytes();
        }
        if (i == n_gen - 1) {
            size_t used = used_bytes();
            printf("after %d generations: peak %.6f GB (after warm-up %.6f GB), driver in use %.1f MiB "
                   "(after warm-up %.1f MiB)\n", n_gen, s.peak_gb, peak_after_cycle, used / 1048576.0,
                   used_after_cycle / 1048576.0);
            if (s.peak_gb > peak_after_cycle) {
                fprintf(stderr, "FAIL: backend peak grew\n");
                fails++;
            }
            if (used > used_after_cycle + (2u << 20)) {
                fprintf(stderr, "FAIL: driver memory in use grew by %zu bytes\n", used - used_after_cycle);
                fails++;
            }
        }
    }
    lmx_cache_free(cache);
    lmx_model_free(m);
    printf("%s: %d generations\n", fails ? "FAILED" : "ok", n_gen);
    return fails ? 1 : 0;
}
