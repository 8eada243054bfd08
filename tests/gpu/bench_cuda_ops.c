/* bench_cuda_ops.c - kernel timings for bench/cuda-notes.md (not a test).
 *
 * Each measurement captures REPS calls into one CUDA graph (so launch gaps
 * are the graph's, not the host's), replays it a few times and reports the
 * median per call. Weight-streaming cases cycle through enough copies of
 * the weights (> 2x the 50 MB L2) that every call reads HBM. Inputs are
 * random (never zeros). Prints one line per case.
 *
 * bench_cuda_ops MODEL [STEPS]: times the model's forward pass alone on
 * CUDA (prefill of 512 tokens, then STEPS single-token steps including the
 * logits download, no sampling), to separate it from the generation loop.
 * BENCH_LOGITS=FILE writes the timed prefill's logits row (raw f32);
 * BENCH_DEVICE=cpu runs the same pass on the host, to compare against. */
#include "backend/cuda/cuda.h"
#include "core/ops.h"
#include "generate/engine.h"
#include "gpu_quant_rand.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REPS 50
#define ROUNDS 5

static lmx_backend *gpu;
static lmx_exec gex;
static uint64_t rng = 88172645463325252ull;

static void die(const char *what) {
    fprintf(stderr, "FATAL %s: %s\n", what, lmx_last_error());
    exit(1);
}

static lmx_array rnd(lmx_dtype dt, int ndim, int64_t d0, int64_t d1, int64_t d2, double amp) {
    int64_t sh[3] = {d0, d1, d2};
    lmx_array h, d;
    if (lmx_array_alloc(&h, dt, ndim, sh)) die("alloc");
    int64_t n = lmx_array_numel(&h);
    float *f = malloc((size_t)n * sizeof *f);
    for (int64_t i = 0; i < n; i++) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        f[i] = (float)(((double)(rng >> 11) / 9007199254740992.0 * 2 - 1) * amp);
    }
    lmx_dtype_info(dt)->from_f32(f, h.data, n);
    free(f);
    if (lmx_array_to_backend(gpu, &d, &h)) die("upload");
    lmx_array_release(&h);
    return d;
}

typedef lmx_status (*call_fn)(void *arg, int i);

static int cmpd(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median seconds per call of fn over REPS calls in one graph. */
static double time_graph(call_fn fn, void *arg) {
    for (int i = 0; i < 2; i++)
        if (fn(arg, i)) die("warm-up");
    if (lmx_backend_sync(gpu)) die("sync");
    lmx_status s = lmx_cuda_graph_begin(gpu);
    for (int i = 0; i < REPS && !s; i++) s = fn(arg, i);
    lmx_status e = lmx_cuda_graph_end(gpu, 1);
    if (s || e) die("capture");
    double t[ROUNDS];
    if (lmx_cuda_graph_launch(gpu, 1) || lmx_backend_sync(gpu)) die("replay");
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = lmx_time_s();
        if (lmx_cuda_graph_launch(gpu, 1) || lmx_backend_sync(gpu)) die("replay");
        t[r] = (lmx_time_s() - t0) / REPS;
    }
    qsort(t, ROUNDS, sizeof *t, cmpd);
    return t[ROUNDS / 2];
}

/* ---- matmul ---------------------------------------------------------------- */

typedef struct {
    lmx_array x, out, w[64], b;
    int nw;
} mm_arg;

static lmx_status mm_call(void *p, int i) {
    mm_arg *a = p;
    return lmx_matmul(&gex, &a->out, &a->x, &a->w[i % a->nw], NULL);
}

static void bench_matmul(const char *label, lmx_dtype dt, int64_t M, int64_t N, int64_t K) {
    mm_arg a;
    memset(&a, 0, sizeof a);
    size_t wbytes = lmx_dtype_bytes(dt, N * K);
    a.nw = (int)((200u << 20) / wbytes) + 1;
    if (a.nw > 64) a.nw = 64;
    if (M > 8) a.nw = 1; /* GEMMs are compute-bound */
    a.x = rnd(LMX_F32, 2, M, K, 0, 1);
    int64_t so[2] = {M, N};
    if (lmx_array_alloc_on(gpu, &a.out, LMX_F32, 2, so)) die("alloc");
    for (int i = 0; i < a.nw; i++) a.w[i] = rnd(dt, 2, N, K, 0, 0.02);
    double s = time_graph(mm_call, &a);
    double bytes = (double)wbytes + 4.0 * (double)(M * K + M * N);
    printf("matmul %-22s %-5s M=%-4lld N=%-6lld K=%-6lld %9.2f us  %7.1f GB/s  %7.1f TFLOP/s\n", label,
           lmx_dtype_info(dt)->name, (long long)M, (long long)N, (long long)K, s * 1e6, bytes / s / 1e9,
           2.0 * M * N * K / s / 1e12);
    lmx_array_release(&a.x);
    lmx_array_release(&a.out);
    for (int i = 0; i < a.nw; i++) lmx_array_release(&a.w[i]);
}

/* ---- quantized matmul -------------------------------------------------------- */

typedef struct {
    lmx_array x, out, w[64], sc[64], bi[64];
    int nw, group;
} mq_arg;

static lmx_status mq_call(void *p, int i) {
    mq_arg *a = p;
    int k = i % a->nw;
    return lmx_matmul_q(&gex, &a->out, &a->x, &a->w[k], NULL, gq_opt(&a->sc[k]), gq_opt(&a->bi[k]), a->group);
}

static lmx_array up_or_empty(const lmx_array *h) {
    lmx_array d;
    memset(&d, 0, sizeof d);
    if (!lmx_array_empty(h) && lmx_array_to_backend(gpu, &d, h)) die("upload");
    return d;
}

/* Bytes moved = packed weight + scales/biases + x + out; one host copy of the
 * weight uploaded nw times (> 200 MB together, so every call reads HBM). */
static void bench_matmul_q(const char *label, const gq_spec *q, int64_t M, int64_t N, int64_t K) {
    mq_arg a;
    memset(&a, 0, sizeof a);
    lmx_array hw, hs, hb;
    if (gq_make(&rng, q, N, K, &hw, &hs, &hb)) die("quant alloc");
    size_t wbytes = lmx_array_nbytes(&hw) + (lmx_array_empty(&hs) ? 0 : lmx_array_nbytes(&hs)) +
                    (lmx_array_empty(&hb) ? 0 : lmx_array_nbytes(&hb));
    a.nw = (int)((200u << 20) / wbytes) + 1;
    if (a.nw > 64) a.nw = 64;
    if (M > 8) a.nw = 1;
    a.group = q->group;
    a.x = rnd(LMX_F32, 2, M, K, 0, 1);
    int64_t so[2] = {M, N};
    if (lmx_array_alloc_on(gpu, &a.out, LMX_F32, 2, so)) die("alloc");
    for (int i = 0; i < a.nw; i++) {
        if (lmx_array_to_backend(gpu, &a.w[i], &hw)) die("upload");
        a.sc[i] = up_or_empty(&hs);
        a.bi[i] = up_or_empty(&hb);
    }
    double s = time_graph(mq_call, &a);
    double bytes = (double)wbytes + 4.0 * (double)(M * K + M * N);
    printf("matmul %-16s %-19s M=%-4lld N=%-6lld K=%-6lld %9.2f us  %7.1f GB/s  %5.1f%% of 3.1 TB/s  %7.1f TFLOP/s\n",
           label, q->label, (long long)M, (long long)N, (long long)K, s * 1e6, bytes / s / 1e9,
           bytes / s / 3.1e12 * 100, 2.0 * M * N * K / s / 1e12);
    lmx_array_release(&a.x);
    lmx_array_release(&a.out);
    for (int i = 0; i < a.nw; i++) lmx_array_release(&a.w[i]), lmx_array_release(&a.sc[i]), lmx_array_release(&a.bi[i]);
    lmx_array_release(&hw);
    lmx_array_release(&hs);
    lmx_array_release(&hb);
}

static const gq_spec BQ[] = {
    {LMX_MLX_Q4, 64, LMX_BF16, true, "mlx 4-bit g64"}, {LMX_MLX_Q8, 64, LMX_BF16, true, "mlx 8-bit g64"},
    {LMX_Q4_0, 0, LMX_F32, false, "gguf q4_0"},          {LMX_Q8_0, 0, LMX_F32, false, "gguf q8_0"},
    {LMX_Q4_K, 0, LMX_F32, false, "gguf q4_K"},          {LMX_Q6_K, 0, LMX_F32, false, "gguf q6_K"},
};

/* only != NULL: MLX 4/8-bit decode on a backend started with
 * LMX_CUDA_QGEMV=staged (through the staged kernel; with LMX_CUDA_QTILE_MB=128
 * also two prefill GEMMs on 128 MB dequantized tiles, not 32) or
 * LMX_CUDA_QGEMV=unfactored (w = s·q + b per weight), same shapes. */
static bool quant_decode_only; /* BENCH_OPS_ONLY=qdec: M = 1 rows alone */

static void bench_quant(const char *only) {
    const char *fmts = getenv("BENCH_QFMT"); /* e.g. "q4_0,q6_K,mlx 4-bit": formats whose label it contains */
    static const struct {
        const char *label;
        int64_t N, K;
    } sh[] = {{"1B q/o", 2048, 2048}, {"1B k/v", 512, 2048}, {"1B gate/up", 8192, 2048}, {"1B down", 2048, 8192},
              {"1B lm_head", 128256, 2048}, {"8B q/o", 4096, 4096}, {"8B k/v", 1024, 4096},
              {"8B gate/up", 14336, 4096}, {"8B down", 4096, 14336}, {"8B lm_head", 128256, 4096}};
    for (size_t f = 0; f < sizeof BQ / sizeof *BQ; f++) {
        if (only && BQ[f].dt != LMX_MLX_Q4 && BQ[f].dt != LMX_MLX_Q8) continue;
        if (fmts && !strstr(fmts, BQ[f].label + (BQ[f].label[0] == 'g' ? 5 : 0))) continue;
        const char *shp = getenv("BENCH_QSHAPE"); /* e.g. "8B gate/up": shapes whose label it contains (ncu) */
        for (size_t i = 0; i < sizeof sh / sizeof *sh; i++) {
            if (shp && !strstr(sh[i].label, shp)) continue;
            char l[64];
            snprintf(l, sizeof l, "%s%s", sh[i].label, only ? only : "");
            bench_matmul_q(l, &BQ[f], 1, sh[i].N, sh[i].K);
        }
    }
    if (only) {
        if (strstr(only, "staged")) {
            bench_matmul_q("gemm [128 MB tiles]", &BQ[0], 512, 4096, 4096);
            bench_matmul_q("gemm [128 MB tiles]", &BQ[0], 512, 14336, 4096);
        }
        return;
    }
    if (quant_decode_only) return;
    bench_matmul_q("8B q/o M=4", &BQ[0], 4, 4096, 4096);
    bench_matmul_q("8B q/o M=8", &BQ[0], 8, 4096, 4096);
    bench_matmul_q("8B q/o M=8", &BQ[2], 8, 4096, 4096);
    for (size_t f = 0; f < sizeof BQ / sizeof *BQ; f++) bench_matmul_q("gemm", &BQ[f], 512, 4096, 4096);
    bench_matmul_q("gemm", &BQ[0], 512, 14336, 4096);
}

/* ---- attention ------------------------------------------------------------- */

typedef struct {
    lmx_array q, k, v, out;
    int64_t pos0;
} at_arg;

static lmx_status at_call(void *p, int i) {
    at_arg *a = p;
    (void)i;
    return lmx_attention(&gex, &a->out, &a->q, &a->k, &a->v, a->pos0, 0.088f, 0, 0);
}

static void bench_attention(lmx_dtype dt, int64_t T, int64_t S, int64_t H, int64_t Hkv, int64_t hd) {
    at_arg a;
    a.q = rnd(LMX_F32, 3, T, H, hd, 1);
    a.k = rnd(dt, 3, S, Hkv, hd, 1);
    a.v = rnd(dt, 3, S, Hkv, hd, 1);
    a.pos0 = S - T;
    int64_t so[2] = {T, H * hd};
    if (lmx_array_alloc_on(gpu, &a.out, LMX_F32, 2, so)) die("alloc");
    double s = time_graph(at_call, &a);
    double bytes = 2.0 * (double)lmx_dtype_bytes(dt, S * Hkv * hd);
    double flops = 4.0 * H * hd * (double)(T == 1 ? S : T * (2 * S - T + 1) / 2);
    printf("attention %-5s T=%-4lld S=%-6lld H=%lld/%lld hd=%lld %9.2f us  %7.1f GB/s (KV once)  %6.1f TFLOP/s\n",
           lmx_dtype_info(dt)->name, (long long)T, (long long)S, (long long)H, (long long)Hkv, (long long)hd,
           s * 1e6, bytes / s / 1e9, flops / s / 1e12);
    lmx_array_release(&a.q);
    lmx_array_release(&a.k);
    lmx_array_release(&a.v);
    lmx_array_release(&a.out);
}

/* ---- copy (bandwidth ceiling) and small ops -------------------------------- */

typedef struct {
    lmx_array a, b, h, w[64]; /* h, w: ops 3-4 (a decode step's norms: bf16 weights, one set per layer) */
    int op;
} cp_arg;

static lmx_status cp_call(void *p, int i) {
    cp_arg *c = p;
    if (c->op == 0) return lmx_copy(&gex, &c->b, &c->a);
    if (c->op == 1) return lmx_rms_norm(&gex, &c->b, &c->a, NULL, 1e-5f, false);
    if (c->op == 3) return lmx_rms_norm(&gex, &c->h, &c->b, &c->w[i % 64], 1e-5f, false);
    if (c->op == 4) return lmx_add_rms_norm(&gex, &c->h, &c->b, &c->a, &c->w[i % 64], 1e-5f, false);
    return lmx_add(&gex, &c->b, &c->b, &c->a);
}

/* A decode step's norm of one row with a bf16 weight vector per call (64
 * of them, cycled, as a model's layers are): op 3 rms_norm, op 4 the fused
 * add + rms_norm (BENCH_OPS_ONLY=norm). */
static void bench_norm_w(const char *label, int op, int64_t C) {
    cp_arg c;
    c.op = op;
    c.a = rnd(LMX_F32, 2, 1, C, 0, 1e-3);
    c.b = rnd(LMX_F32, 2, 1, C, 0, 1);
    c.h = rnd(LMX_F32, 2, 1, C, 0, 1);
    for (int i = 0; i < 64; i++) c.w[i] = rnd(LMX_BF16, 1, C, 0, 0, 1);
    double s = time_graph(cp_call, &c);
    printf("%-12s [1, %lld] w bf16 %9.2f us\n", label, (long long)C, s * 1e6);
    lmx_array_release(&c.a);
    lmx_array_release(&c.b);
    lmx_array_release(&c.h);
    for (int i = 0; i < 64; i++) lmx_array_release(&c.w[i]);
}

static void bench_small(const char *label, int op, int64_t R, int64_t C) {
    cp_arg c;
    c.op = op;
    c.a = rnd(LMX_F32, 2, R, C, 0, 1);
    c.b = rnd(LMX_F32, 2, R, C, 0, 1);
    double s = time_graph(cp_call, &c);
    double bytes = (op == 2 ? 3.0 : 2.0) * 4.0 * (double)(R * C);
    printf("%-10s [%lld, %lld] %9.2f us  %7.1f GB/s\n", label, (long long)R, (long long)C, s * 1e6, bytes / s / 1e9);
    lmx_array_release(&c.a);
    lmx_array_release(&c.b);
}

/* The kernels of a 512-token prefill: per-layer GEMM shapes, quantized GEMMs,
 * attention; the 8192^3 GEMM is the card's cuBLAS rate when LMX_CUDA_FAST_GEMM=1
 * (one GEMM; two otherwise). */
static void bench_prefill(void) {
    static const struct {
        const char *label;
        int64_t N, K;
    } sh[] = {{"1B q/o", 2048, 2048}, {"1B k/v", 512, 2048}, {"1B gate/up", 8192, 2048}, {"1B down", 2048, 8192},
              {"8B q/o", 4096, 4096}, {"8B k/v", 1024, 4096}, {"8B gate/up", 14336, 4096}, {"8B down", 4096, 14336}};
    bench_matmul("gemm 8192^3", LMX_BF16, 8192, 8192, 8192);
    for (size_t i = 0; i < sizeof sh / sizeof *sh; i++) bench_matmul(sh[i].label, LMX_BF16, 512, sh[i].N, sh[i].K);
    const gq_spec *qs[2] = {&BQ[0], &BQ[2]}; /* MLX 4-bit g64, GGUF Q4_0 */
    for (int f = 0; f < 2; f++)
        for (size_t i = 0; i < sizeof sh / sizeof *sh; i++) bench_matmul_q(sh[i].label, qs[f], 512, sh[i].N, sh[i].K);
    bench_attention(LMX_F32, 512, 512, 32, 8, 128);
    bench_attention(LMX_F32, 512, 512, 32, 8, 64);
    bench_attention(LMX_F32, 2048, 2048, 32, 8, 128);
}

static int bench_model(const char *path, int steps) {
    lmx_load_options lo;
    lmx_load_options_init(&lo);
    const char *dev = getenv("BENCH_DEVICE"); /* cpu: the same pass on the host (for BENCH_LOGITS comparisons) */
    lo.device = dev && *dev ? dev : "cuda";
    lo.no_tokenizer = true;
    lmx_model *m;
    if (lmx_load(path, &lo, &m)) die("load");
    int V = m->tf.hp.n_vocab;
    float *logits = malloc((size_t)V * sizeof *logits);
    int32_t *toks = malloc(512 * sizeof *toks);
    for (int i = 0; i < 512; i++) toks[i] = (i * 7919) % V;
    int reps = strcmp(lo.device, "cuda") ? 1 : 2; /* the host pass has no warm-up to hide */
    for (int rep = 0; rep < reps; rep++) {
        lmx_kv_cache cache;
        const lmx_hparams *hp = &m->tf.hp;
        if (lmx_kv_cache_init(&cache, m->backend, hp->n_layer, hp->n_kv_head, hp->head_dim, NULL)) die("cache");
        double t0 = lmx_time_s();
        if (lmx_transformer_forward(&m->ex, &m->tf, &cache, &m->scratch, toks, 512, false, logits)) die("prefill");
        double t1 = lmx_time_s();
        const char *lp = getenv("BENCH_LOGITS"); /* the prefill's last-row logits, raw f32, to compare runs */
        if (rep == reps - 1 && lp) {
            FILE *f = fopen(lp, "wb");
            if (!f || fwrite(logits, sizeof *logits, (size_t)V, f) != (size_t)V) die("write logits");
            fclose(f);
        }
        int32_t tok = 1;
        for (int i = 0; i < steps; i++) {
            if (lmx_transformer_forward(&m->ex, &m->tf, &cache, &m->scratch, &tok, 1, false, logits)) die("step");
            tok = (tok * 31 + 7) % V;
        }
        double t2 = lmx_time_s();
        printf("forward %s: prefill 512 in %.2f ms (%.0f tok/s); %d steps %.3f ms/step (%.1f tok/s)%s\n", path,
               (t1 - t0) * 1e3, 512 / (t1 - t0), steps, (t2 - t1) * 1e3 / steps, steps / (t2 - t1),
               rep == reps - 1 ? "" : " [warm-up]");
        lmx_kv_cache_free(&cache);
    }
    if (!strcmp(lo.device, "cuda"))
        printf("device memory: %.1f MiB in use, peak %.1f MiB\n", (double)lmx_cuda_mem_in_use(m->backend) / (1 << 20),
               (double)lmx_cuda_mem_peak(m->backend) / (1 << 20));
    free(logits);
    free(toks);
    lmx_model_free(m);
    return 0;
}

int main(int argc, char **argv) {
    char why[256];
    if (lmx_cuda_device_count(why, sizeof why) <= 0) {
        printf("SKIP bench_cuda_ops: %s\n", why);
        return 77;
    }
    if (argc > 1) return bench_model(argv[1], argc > 2 ? atoi(argv[2]) : 128);
    if (lmx_backend_create("cuda", 0, &gpu)) die("backend");
    gex.backend = gpu;
    char info[256];
    if (lmx_cuda_device_info(info, sizeof info)) die("info");
    printf("device: %s\n", info);
    const char *only_q = getenv("BENCH_OPS_ONLY"); /* "quant": the quantized table alone (A/B of a kernel change) */
    quant_decode_only = only_q && !strcmp(only_q, "qdec");
    if (only_q && (!strcmp(only_q, "quant") || quant_decode_only)) {
        bench_quant(NULL);
        lmx_backend_free(gpu);
        return 0;
    }
    if (only_q && !strcmp(only_q, "norm")) { /* "norm": a decode step's RMSNorms, plain and fused with the add */
        for (int64_t C = 2048; C <= 4096; C *= 2) {
            bench_norm_w("rms_norm", 3, C);
            bench_norm_w("add_rms_norm", 4, C);
        }
        lmx_backend_free(gpu);
        return 0;
    }
    if (only_q && !strcmp(only_q, "attn")) { /* "attn": decode attention of 8B/1B at S = 512..4096 (LMX_CUDA_ATTN=old: A/B) */
        for (int hd = 128; hd >= 64; hd -= 64)
            for (int64_t S = 512; S <= 4096; S *= 2) bench_attention(LMX_F32, 1, S, 32, 8, hd);
        bench_attention(LMX_BF16, 1, 4096, 32, 8, 128);
        bench_attention(LMX_F32, 1, 640, 32, 8, 128);
        lmx_backend_free(gpu);
        return 0;
    }
    if (only_q && !strcmp(only_q, "prefill")) { /* "prefill": the pp512 kernels of 1B/8B (A/B through env switches) */
        bench_prefill();
        lmx_backend_free(gpu);
        return 0;
    }
    bench_small("copy", 0, 8192, 16384);
    bench_small("rms_norm", 1, 1, 4096);
    bench_small("add", 2, 1, 4096);
    static const struct {
        const char *label;
        int64_t N, K;
    } s1b[] = {{"1B q/o", 2048, 2048}, {"1B k/v", 512, 2048}, {"1B gate/up", 8192, 2048}, {"1B down", 2048, 8192},
               {"1B lm_head", 128256, 2048}, {"8B q/o", 4096, 4096}, {"8B k/v", 1024, 4096},
               {"8B gate/up", 14336, 4096}, {"8B down", 4096, 14336}, {"8B lm_head", 128256, 4096}};
    for (size_t i = 0; i < sizeof s1b / sizeof *s1b; i++) bench_matmul(s1b[i].label, LMX_BF16, 1, s1b[i].N, s1b[i].K);
    bench_matmul("8B q/o", LMX_F16, 1, 4096, 4096);
    bench_matmul("8B q/o", LMX_F32, 1, 4096, 4096);
    bench_matmul("8B gate/up M=4", LMX_BF16, 4, 14336, 4096);
    bench_matmul("8B q/o M=8", LMX_BF16, 8, 4096, 4096);
    bench_matmul("gemm", LMX_BF16, 512, 4096, 4096);
    bench_matmul("gemm", LMX_BF16, 512, 14336, 4096);
    bench_matmul("gemm", LMX_BF16, 2048, 8192, 8192);
    bench_matmul("gemm", LMX_F16, 512, 4096, 4096);
    bench_matmul("sgemm", LMX_F32, 512, 4096, 4096);
    bench_quant(NULL);
    bench_attention(LMX_F32, 1, 640, 32, 8, 128);
    bench_attention(LMX_F32, 1, 640, 32, 8, 64);
    bench_attention(LMX_F32, 1, 1024, 32, 8, 128);
    bench_attention(LMX_F32, 1, 4096, 32, 8, 128);
    bench_attention(LMX_BF16, 1, 4096, 32, 8, 128);
    bench_attention(LMX_F32, 1, 4096, 32, 8, 64);
    bench_attention(LMX_F32, 512, 512, 32, 8, 128);
    bench_attention(LMX_BF16, 512, 512, 32, 8, 64);
    printf("peak device memory %.1f MiB\n", (double)lmx_cuda_mem_peak(gpu) / (1 << 20));
    lmx_backend_free(gpu);
    setenv("LMX_CUDA_QGEMV", "staged", 1); /* read when a backend starts */
    setenv("LMX_CUDA_QTILE_MB", "128", 1);
    if (lmx_backend_create("cuda", 0, &gpu)) die("backend");
    gex.backend = gpu;
    bench_quant(" [staged]");
    lmx_backend_free(gpu);
    setenv("LMX_CUDA_QGEMV", "unfactored", 1);
    if (lmx_backend_create("cuda", 0, &gpu)) die("backend");
    gex.backend = gpu;
    bench_quant(" [unfactored]");
    lmx_backend_free(gpu);
    return 0;
}
