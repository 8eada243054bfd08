/* cmd_bench.c - `lmx bench`: mlx_lm.benchmark's procedure and output.
 * Random prompt tokens (fixed seed), EOS disabled, one warm-up run, then
 * --num-trials timed runs; prints per-trial and average prompt/generation
 * tokens-per-second and peak memory, or one JSON object with --json. The JSON
 * also carries model_bytes (weight files on disk: what one decode step reads,
 * for bandwidth fractions), cpu_kernels (the SIMD table in use), and
 * kv_cache_bytes (the KV cache allocated for one trial) with
 * peak_memory_bound = (model_bytes + kv_cache_bytes) * 1.1 / 1e9, issue 5's
 * budget for the peak: weights, cache and 10% for everything else. */
#include "cli.h"

#include "backend/cpu/cpu_simd.h"

#include <dirent.h>
#include <sys/stat.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    double prompt_tps, generation_tps, peak_gb;
} bench_last;

static int on_resp(const lmx_response *r, void *u) {
    bench_last *b = u;
    b->prompt_tps = r->prompt_tps;
    b->generation_tps = r->generation_tps;
    b->peak_gb = r->peak_memory_gb;
    return 0;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* Bytes of weights: the file itself, or the *.safetensors of a folder. */
static long long model_bytes(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return 0;
    if (!S_ISDIR(st.st_mode)) return (long long)st.st_size;
    DIR *d = opendir(path);
    if (!d) return 0;
    long long total = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n < 12 || strcmp(e->d_name + n - 12, ".safetensors") != 0) continue;
        char full[4096];
        snprintf(full, sizeof full, "%s/%s", path, e->d_name);
        if (stat(full, &st) == 0) total += (long long)st.st_size;
    }
    closedir(d);
    return total;
}

int cmd_bench(int argc, char **argv) {
    const char *cmd = "bench";
    cli_args a;
    cli_init(&a, argc, argv);
    const char *model = NULL, *device = NULL, *adapter_path = NULL;
    long long p = 512, g = 128, b = 1, n = 5, threads = 0, step = 0;
    bool json = false;
    const char *f;
    while ((f = cli_next(&a))) {
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            printf("usage: lmx bench [--model PATH] [-p/--prompt-tokens 512] [-g/--generation-tokens 128]\n"
                   "                 [-b/--batch-size 1] [-n/--num-trials 5] [--threads N] [--device cpu|cuda|auto] [--json]\n"
                   "                 [--adapter-path PATH] [--prefill-step-size N]\n");
            return 0;
        } else if (!strcmp(f, "--model")) {
            model = cli_value(&a, f);
        } else if (!strcmp(f, "-p") || !strcmp(f, "--prompt-tokens")) {
            cli_int(&a, f, 1, 1 << 20, &p);
        } else if (!strcmp(f, "-g") || !strcmp(f, "--generation-tokens")) {
            cli_int(&a, f, 1, 1 << 20, &g);
        } else if (!strcmp(f, "-b") || !strcmp(f, "--batch-size")) {
            cli_int(&a, f, 1, 1, &b); /* batched decoding lands with the generation features */
        } else if (!strcmp(f, "-n") || !strcmp(f, "--num-trials")) {
            cli_int(&a, f, 1, 1000, &n);
        } else if (!strcmp(f, "--threads")) {
            cli_int(&a, f, 1, 512, &threads);
        } else if (!strcmp(f, "--device")) {
            device = cli_value(&a, f);
        } else if (!strcmp(f, "--json")) {
            json = true;
        } else if (!strcmp(f, "--adapter-path")) {
            adapter_path = cli_value(&a, f);
        } else if (!strcmp(f, "--prefill-step-size")) { /* trades prompt speed for peak memory */
            cli_int(&a, f, 1, 1 << 20, &step);
        } else {
            return cli_unknown(cmd, f);
        }
        if (a.error) return 2;
    }
    if (!model) model = cli_default_model();
    double t0 = now_s();
    lmx_model *m;
    if (cli_load_model_adapters(model, adapter_path, threads, device, true, &m)) return cli_lib_fail(cmd);
    double load_s = now_s() - t0;
    int V = lmx_model_vocab_size(m);
    int32_t *prompt = malloc((size_t)p * sizeof *prompt);
    uint64_t st = 0x9e3779b97f4a7c15ull;
    for (long long i = 0; i < p; i++) {
        st ^= st << 13, st ^= st >> 7, st ^= st << 17;
        prompt[i] = (int32_t)(st % (uint64_t)V);
    }
    lmx_generate_options o;
    lmx_generate_options_init(&o);
    o.max_tokens = (int)g;
    o.ignore_eos = true;
    if (step) o.prefill_step_size = (int)step;
    lmx_cache *cache;
    if (lmx_cache_new(m, NULL, &cache)) {
        free(prompt);
        lmx_model_free(m);
        return cli_lib_fail(cmd);
    }
    o.cache = cache; /* each run starts from it emptied: a fresh cache whose size we can read */
    size_t kv_bytes = 0;
    bench_last last;
    if (!json) printf("Load time: %.3f s\nRunning warmup..\n", load_s);
    if (lmx_generate_stream(m, prompt, (size_t)p, &o, on_resp, &last)) {
        free(prompt);
        lmx_cache_free(cache);
        lmx_model_free(m);
        return cli_lib_fail(cmd);
    }
    kv_bytes = lmx_cache_nbytes(cache);
    lmx_cache_trim(cache, lmx_cache_length(cache));
    if (!json) printf("Timing with prompt_tokens=%lld, generation_tokens=%lld, batch_size=%lld.\n", p, g, b);
    double sp = 0, sg = 0, sm = 0;
    if (json) {
        const lmx_simd_kernels *kt = lmx_simd();
        printf("{\"model\": \"%s\", \"prompt_tokens\": %lld, \"generation_tokens\": %lld, \"batch_size\": %lld, "
               "\"load_time_s\": %.4f, \"model_bytes\": %lld, \"threads\": %lld, \"cpu_kernels\": \"%s\", "
               "\"prefill_step_size\": %d, \"trials\": [",
               model, p, g, b, load_s, model_bytes(model), threads, kt ? kt->name : "reference", o.prefill_step_size);
    }
    for (long long i = 0; i < n; i++) {
        double tic = now_s();
        if (lmx_generate_stream(m, prompt, (size_t)p, &o, on_resp, &last)) {
            free(prompt);
            lmx_cache_free(cache);
            lmx_model_free(m);
            return cli_lib_fail(cmd);
        }
        double total = now_s() - tic;
        size_t kvb = lmx_cache_nbytes(cache);
        kv_bytes = kvb > kv_bytes ? kvb : kv_bytes;
        lmx_cache_trim(cache, lmx_cache_length(cache));
        sp += last.prompt_tps;
        sg += last.generation_tps;
        sm = last.peak_gb > sm ? last.peak_gb : sm;
        if (json)
            printf("%s{\"prompt_tps\": %.3f, \"generation_tps\": %.3f, \"peak_memory\": %.3f, \"total_time\": %.3f}",
                   i ? ", " : "", last.prompt_tps, last.generation_tps, last.peak_gb, total);
        else
            printf("Trial %lld:  prompt_tps=%.3f, generation_tps=%.3f, peak_memory=%.3f, total_time=%.3f\n", i + 1,
                   last.prompt_tps, last.generation_tps, last.peak_gb, total);
        fflush(stdout);
    }
    if (json) {
        double bound = ((double)model_bytes(model) + (double)kv_bytes) * 1.1 / 1e9;
        printf("], \"averages\": {\"prompt_tps\": %.3f, \"generation_tps\": %.3f, \"peak_memory\": %.3f}, "
               "\"kv_cache_bytes\": %zu, \"peak_memory_bound\": %.3f, \"peak_within_bound\": %s}\n",
               sp / n, sg / n, sm, kv_bytes, bound, sm <= bound ? "true" : "false");
    } else
        printf("Averages: prompt_tps=%.3f, generation_tps=%.3f, peak_memory=%.3f\n", sp / n, sg / n, sm);
    free(prompt);
    lmx_cache_free(cache);
    lmx_model_free(m);
    return 0;
}
