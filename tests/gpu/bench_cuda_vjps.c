/* bench_cuda_vjps.c - times each CUDA vjp at llama-1b training shapes (B·T = 2048 rows, D 2048, F 8192,
 * H 32/8, hd 64, V 128256; mean of 5 after a warm-up, synchronised wall clock) on uninitialised device arrays.
 * `bench_cuda_vjps` times the default precision (bf16 operands), `LMX_CUDA_EXACT=1 bench_cuda_vjps` the exact
 * one. Not a test: numbers for bench/RESULTS.md (test_cuda_vjps checks the same vjps' results). */
#include "backend/cuda/cuda.h"
#include "core/ops.h"
#include "core/tape.h"
#include "gpu_quant_rand.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static lmx_backend *gpu;
static lmx_exec gex;
static uint64_t rng = 1;

static void die(const char *what) {
    fprintf(stderr, "FATAL %s: %s\n", what, lmx_last_error());
    exit(1);
}

static lmx_node node(lmx_op op, lmx_array *out, const lmx_array *a, const lmx_array *b, const lmx_array *c) {
    lmx_node n;
    memset(&n, 0, sizeof n);
    n.op = op;
    n.out = out;
    n.src[0] = a;
    n.src[1] = b;
    n.src[2] = c;
    return n;
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static lmx_array DZ(lmx_dtype dt, int ndim, int64_t d0, int64_t d1, int64_t d2) {
    int64_t sh[3] = {d0, d1, d2};
    lmx_array a;
    if (lmx_array_alloc_on(gpu, &a, dt, ndim, sh)) die("device alloc");
    return a;
}

/* Times the vjp of device node n (dsrc for the sources in want). */
static void bench(const char *what, lmx_node *n, unsigned want) {
    lmx_array g = DZ(LMX_F32, n->out->ndim, n->out->shape[0], n->out->shape[1], n->out->shape[2]);
    lmx_array d[LMX_MAX_SRC];
    lmx_array *dp[LMX_MAX_SRC] = {0};
    for (int i = 0; i < LMX_MAX_SRC; i++)
        if (want >> i & 1) {
            const lmx_array *s = n->src[i];
            d[i] = DZ(LMX_F32, s->ndim, s->shape[0], s->shape[1], s->shape[2]);
            dp[i] = &d[i];
        }
    lmx_status st = gpu->vjps[n->op](n, &g, dp, gpu->pool);
    if (!st) st = lmx_backend_sync(gpu);
    double t0 = now_ms();
    for (int it = 0; it < 5 && !st; it++) st = gpu->vjps[n->op](n, &g, dp, gpu->pool);
    if (!st) st = lmx_backend_sync(gpu);
    double ms = (now_ms() - t0) / 5;
    if (st)
        printf("bench %-60s error: %s\n", what, lmx_last_error());
    else
        printf("bench %-60s %8.3f ms\n", what, ms);
    for (int i = 0; i < LMX_MAX_SRC; i++)
        if (dp[i]) lmx_array_release(&d[i]);
    lmx_array_release(&g);
}

static void run_bench(void) {
    const int64_t M = 2048, D = 2048, F = 8192, V = 128256, H = 32, Hkv = 8, hd = 64;
    lmx_array x = DZ(LMX_F32, 2, M, F, 0), o = DZ(LMX_F32, 2, M, V, 0);
    lmx_array xd = x;
    xd.shape[1] = D;
    xd.strides[0] = D;
    struct { const char *name; int64_t N, K; lmx_dtype dt; unsigned want; } mm[] = {
        {"matmul dx bf16 W [2048,2048] (q/o proj)", D, D, LMX_BF16, 1},
        {"matmul dx bf16 W [8192,2048] (gate/up)", F, D, LMX_BF16, 1},
        {"matmul dx bf16 W [2048,8192] (down)", D, F, LMX_BF16, 1},
        {"matmul dx bf16 W [128256,2048] (lm_head)", V, D, LMX_BF16, 1},
        {"matmul dx f32 W [8192,2048]", F, D, LMX_F32, 1},
        {"matmul dx+dW f32 lora a [8,2048]", 8, D, LMX_F32, 3},
        {"matmul dx+dW f32 lora b [2048,8]", D, 8, LMX_F32, 3},
        {"matmul dx+dW f32 lora a [8,8192] (down)", 8, F, LMX_F32, 3},
        {"matmul dx+dW f32 lora b [8192,8] (gate/up)", F, 8, LMX_F32, 3},
        {"matmul dx+dW+db f32 W [2048,2048] (full ft)", D, D, LMX_F32, 7},
    };
    for (size_t i = 0; i < sizeof mm / sizeof *mm; i++) {
        lmx_array w = DZ(mm[i].dt, 2, mm[i].N, mm[i].K, 0), b = DZ(LMX_F32, 1, mm[i].N, 0, 0);
        lmx_array xi = x, oi = o;
        xi.shape[1] = mm[i].K;
        xi.strides[0] = mm[i].K;
        oi.shape[1] = mm[i].N;
        oi.strides[0] = mm[i].N;
        lmx_node n = node(LMX_OP_MATMUL, &oi, &xi, &w, mm[i].want & 4 ? &b : NULL);
        bench(mm[i].name, &n, mm[i].want);
        lmx_array_release(&w);
        lmx_array_release(&b);
    }
    {
        const gq_spec q4 = {LMX_MLX_Q4, 64, LMX_BF16, true, "mlx q4"};
        lmx_array w, sc, bi, dw, dsc, dbi;
        if (gq_make(&rng, &q4, F, D, &w, &sc, &bi)) die("quant alloc");
        if (lmx_array_to_backend(gpu, &dw, &w) || lmx_array_to_backend(gpu, &dsc, &sc) ||
            lmx_array_to_backend(gpu, &dbi, &bi))
            die("upload");
        lmx_array oi = o;
        oi.shape[1] = F;
        oi.strides[0] = F;
        lmx_node n = node(LMX_OP_MATMUL, &oi, &xd, &dw, NULL);
        n.src[3] = &dsc;
        n.src[4] = &dbi;
        n.ip[0] = 64;
        bench("matmul dx mlx 4-bit g64 W [8192,2048]", &n, 1);
        lmx_array_release(&w), lmx_array_release(&sc), lmx_array_release(&bi);
        lmx_array_release(&dw), lmx_array_release(&dsc), lmx_array_release(&dbi);
    }
    {
        lmx_array w = DZ(LMX_BF16, 1, D, 0, 0), oi = o;
        oi.shape[1] = D;
        oi.strides[0] = D;
        lmx_node n = node(LMX_OP_RMS_NORM, &oi, &xd, &w, NULL);
        n.fp[0] = 1e-5f;
        bench("rms_norm dx [2048,2048] (bf16 w, frozen)", &n, 1);
        lmx_array wf = DZ(LMX_F32, 1, D, 0, 0);
        n.src[1] = &wf;
        bench("rms_norm dx+dw [2048,2048] (f32 w)", &n, 3);
        lmx_array_release(&w);
        lmx_array_release(&wf);
    }
    {
        lmx_array f = DZ(LMX_F32, 1, hd / 2, 0, 0), q3 = x, o3 = o;
        q3.ndim = o3.ndim = 3;
        q3.shape[0] = o3.shape[0] = M;
        q3.shape[1] = o3.shape[1] = H;
        q3.shape[2] = o3.shape[2] = hd;
        q3.strides[0] = o3.strides[0] = H * hd;
        q3.strides[1] = o3.strides[1] = hd;
        q3.strides[2] = o3.strides[2] = 1;
        lmx_node n = node(LMX_OP_ROPE, &o3, &q3, &f, NULL);
        n.ip[1] = (int)hd;
        n.fp[0] = 1.0f;
        bench("rope dx [2048,32,64]", &n, 1);
        lmx_array_release(&f);
        /* attention: batch rows of T tokens (training: per batch row) */
        int64_t Ts[2] = {512, 2048};
        for (int ti = 0; ti < 2; ti++) {
            int64_t T = Ts[ti];
            lmx_array q = DZ(LMX_F32, 3, T, H, hd), k = DZ(LMX_F32, 3, T, Hkv, hd), v = DZ(LMX_F32, 3, T, Hkv, hd);
            lmx_array ao = DZ(LMX_F32, 3, T, H, hd);
            lmx_node an = node(LMX_OP_ATTENTION, &ao, &q, &k, &v);
            an.fp[0] = 0.125f;
            char s[96];
            snprintf(s, sizeof s, "attention dq,dk,dv T=%lld H32/8 hd64 (x%lld rows = 2048 tokens)", (long long)T,
                     (long long)(M / T));
            bench(s, &an, 7);
            lmx_array_release(&q), lmx_array_release(&k), lmx_array_release(&v), lmx_array_release(&ao);
        }
    }
    {
        lmx_array a = DZ(LMX_F32, 2, M, F, 0), b = DZ(LMX_F32, 2, M, F, 0), oi = o;
        oi.shape[1] = F;
        oi.strides[0] = F;
        lmx_node n = node(LMX_OP_ACT, &oi, &a, &b, NULL);
        bench("act silu gated [2048,8192] (d gate, d up)", &n, 3);
        lmx_array ad = xd, bd = xd, od = o;
        od.shape[1] = D;
        od.strides[0] = D;
        lmx_node m = node(LMX_OP_ADD, &od, &ad, &bd, NULL);
        bench("add [2048,2048] (both)", &m, 3);
        lmx_array_release(&a);
        lmx_array_release(&b);
    }
    {
        lmx_array tg = DZ(LMX_I32, 1, M, 0, 0), ms = DZ(LMX_F32, 1, M, 0, 0), l = DZ(LMX_F32, 1, 1, 0, 0);
        lmx_node n = node(LMX_OP_CROSS_ENTROPY, &l, &o, &tg, &ms);
        lmx_status st = lmx_exec_node(&gex, &n);
        if (!st) st = lmx_backend_sync(gpu);
        double t0 = now_ms();
        for (int it = 0; it < 5 && !st; it++) st = lmx_exec_node(&gex, &n);
        if (!st) st = lmx_backend_sync(gpu);
        printf("bench %-60s %8.3f ms\n", "cross_entropy forward [2048,128256]", st ? -1.0 : (now_ms() - t0) / 5);
        bench("cross_entropy vjp [2048,128256]", &n, 1);
        lmx_array_release(&tg), lmx_array_release(&ms), lmx_array_release(&l);
    }
    lmx_array_release(&x);
    lmx_array_release(&o);
}

int main(void) {
    char why[256];
    if (lmx_cuda_device_count(why, sizeof why) <= 0) {
        printf("no CUDA device: %s\n", why);
        return 1;
    }
    if (lmx_backend_create("cuda", 0, &gpu)) die("backend");
    gex.backend = gpu;
    char info[256];
    if (lmx_cuda_device_info(info, sizeof info)) die("device info");
    const char *ex = getenv("LMX_CUDA_EXACT");
    printf("device: %s\nprecision: %s\n", info, ex && !strcmp(ex, "1") ? "exact (LMX_CUDA_EXACT=1)" : "default (bf16 operands)");
    run_bench();
    lmx_backend_free(gpu);
    return 0;
}
