/* test_cuda_lora.c - the CUDA LoRA factor kernels (src/backend/cuda/cuda_lora.cu) against the CPU backend.
 *
 * At the training shapes (M 2048 rows; the wide side K or N 512, 2048, 8192; rank 8 and 16) and small odd ones:
 *  - forward t = x·Aᵀ (MATMUL, f32 A [R, K]), x dense and row-strided (a column view of a wider array);
 *  - forward out += s·ts·Bᵀ (MATMUL_ACC, s 1 and 20), out random beforehand;
 *  - the vjps of both (dx/dts and dA/dB; s != 1 for MATMUL_ACC) in the add-into mode (dsrc pre-filled with 0.5,
 *    compared as dsrc - 0.5) and with dsrc[0] overwritten (pre-filled with NaN: every element must be written).
 * Error: max|gpu - ref| / max|ref| <= 1e-5 (f32 sums of up to 8192 products in another order, atomics' order:
 * ~1e-6 expected); the CPU side is the CPU backend's forward kernels and the reference vjps (core/vjp.c).
 * Run the file twice to cover the cuBLAS fallbacks: LMX_CUDA_LORA_FWD=sgemm LMX_CUDA_LORA_VJP=sgemm.
 *
 * LMX_LORA_BENCH=1: timings instead (each kernel at the training shapes, synchronised mean of 20 runs after a
 * warm-up): us and GB/s of the bytes each must move; the cuBLAS rows come from a second run with the switches.
 * Exits 77 (ctest: skipped) with the reason when no CUDA device answers. */
#include "backend/cuda/cuda.h"
#include "core/ops.h"
#include "core/tape.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* cuda_vjp_matmul.cu: the MATMUL / MATMUL_ACC vjp with dsrc[0] written whole (overwrite != 0) */
lmx_status lmx_cuda_vjp_matmul_ex(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool,
                                  int overwrite);

static lmx_backend *gpu, *cpu;
static lmx_exec gex, cex;
static uint64_t rng;
static int n_ok, n_bad;
#define TOL 1e-5

static void die(const char *what) {
    fprintf(stderr, "FATAL %s: %s\n", what, lmx_last_error());
    exit(1);
}

static float urand(void) { /* splitmix64, uniform in [-1, 1) */
    uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)((double)(z >> 11) / 9007199254740992.0 * 2 - 1);
}

/* a host array [d0, d1] uniform in [-1, 1] and its device copy */
typedef struct {
    lmx_array h, d;
} pair;

static pair mk(int64_t d0, int64_t d1) {
    pair p;
    int64_t sh[2] = {d0, d1};
    if (lmx_array_alloc(&p.h, LMX_F32, 2, sh)) die("alloc");
    float *f = p.h.data;
    for (int64_t i = 0; i < d0 * d1; i++) f[i] = urand();
    if (lmx_array_to_backend(gpu, &p.d, &p.h)) die("upload");
    return p;
}

static void drop(pair *p) {
    lmx_array_release(&p->h);
    lmx_array_release(&p->d);
}

/* columns [0, cols) of a 2-D array: a row-strided view */
static lmx_array colview(const lmx_array *a, int64_t cols) {
    lmx_array v = *a;
    v.shape[1] = cols;
    return v;
}

static float *download(const lmx_array *d) {
    size_t n = (size_t)lmx_array_numel(d);
    float *f = malloc(n * sizeof *f);
    if (lmx_backend_download(gpu, f, d->data, n * sizeof *f)) die("download");
    return f;
}

/* max|g - r| / max|r| over n values, offset subtracted from both (the add-into mode's pre-fill) */
static void compare(const char *what, const float *g, const float *r, int64_t n, float off) {
    double mx = 0, mref = 0;
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) {
        double a = (double)g[i] - off, b = (double)r[i] - off;
        if (!isfinite(a)) bad++;
        mx = fabs(a - b) > mx ? fabs(a - b) : mx;
        mref = fabs(b) > mref ? fabs(b) : mref;
    }
    double e = mref > 0 ? mx / mref : mx;
    bool ok = !bad && e <= TOL;
    printf("%s %-46s max err %.2e of max|ref| %.3g%s\n", ok ? "ok  " : "FAIL", what, e, mref,
           bad ? " (non-finite values)" : "");
    ok ? n_ok++ : n_bad++;
}

static lmx_node mnode(lmx_op op, lmx_array *out, const lmx_array *x, const lmx_array *w, float s) {
    lmx_node n;
    memset(&n, 0, sizeof n);
    n.op = op;
    n.out = out;
    n.src[0] = x;
    n.src[1] = w;
    n.fp[0] = s;
    return n;
}

/* ---- forward -------------------------------------------------------------------------------------------------- */

static void t_fwd_a(int64_t M, int64_t K, int R, int64_t pad) {
    pair x = mk(M, K + pad), a = mk(R, K);
    lmx_array xh = colview(&x.h, K), xd = colview(&x.d, K), oh, od;
    int64_t sh[2] = {M, R};
    if (lmx_array_alloc(&oh, LMX_F32, 2, sh) || lmx_array_alloc_on(gpu, &od, LMX_F32, 2, sh)) die("alloc");
    if (lmx_matmul(&cex, &oh, &xh, &a.h, NULL) || lmx_matmul(&gex, &od, &xd, &a.d, NULL)) die("matmul");
    float *g = download(&od);
    char what[96];
    snprintf(what, sizeof what, "t = x·Aᵀ M %lld K %lld r %d%s", (long long)M, (long long)K, R, pad ? " strided x" : "");
    compare(what, g, oh.data, M * R, 0);
    free(g);
    lmx_array_release(&oh), lmx_array_release(&od), drop(&x), drop(&a);
}

static void t_fwd_acc(int64_t M, int64_t N, int R, float s) {
    pair o = mk(M, N), t = mk(M, R), b = mk(N, R);
    if (lmx_matmul_acc(&cex, &o.h, &t.h, &b.h, s) || lmx_matmul_acc(&gex, &o.d, &t.d, &b.d, s)) die("matmul_acc");
    float *g = download(&o.d);
    char what[96];
    snprintf(what, sizeof what, "out += s·ts·Bᵀ M %lld N %lld r %d s %g", (long long)M, (long long)N, R, (double)s);
    compare(what, g, o.h.data, M * N, 0);
    free(g);
    drop(&o), drop(&t), drop(&b);
}

/* ---- vjps ----------------------------------------------------------------------------------------------------- */

static void fill(lmx_array *a, float v) {
    float *f = a->data;
    for (int64_t i = 0; i < lmx_array_numel(a); i++) f[i] = v;
}

/* a_side: MATMUL x [M, K] (pad: row-strided), A [R, K]; else MATMUL_ACC ts [M, R], B [N = K, R] with scale s.
 * overwrite: dsrc[0] from NaN, written whole; dsrc[1] always added into 0.5. */
static void t_vjp(bool a_side, int64_t M, int64_t K, int R, int64_t pad, float s, bool overwrite) {
    pair x, w;
    lmx_array xh, xd;
    int64_t N;
    if (a_side) {
        x = mk(M, K + pad), w = mk(R, K), N = R;
        xh = colview(&x.h, K), xd = colview(&x.d, K);
    } else {
        x = mk(M, R), w = mk(K, R), N = K;
        xh = x.h, xd = x.d;
    }
    lmx_op op = a_side ? LMX_OP_MATMUL : LMX_OP_MATMUL_ACC;
    lmx_array dummy = {0};
    lmx_node hn = mnode(op, &dummy, &xh, &w.h, a_side ? 0.f : s), dn = mnode(op, &dummy, &xd, &w.d, a_side ? 0.f : s);
    pair g = mk(M, N);
    lmx_array hd[2], dd[2];
    for (int i = 0; i < 2; i++) {
        const lmx_array *src = i ? &w.h : &xh;
        int64_t sh[2] = {src->shape[0], src->shape[1]};
        if (lmx_array_alloc(&hd[i], LMX_F32, 2, sh)) die("alloc");
        fill(&hd[i], i == 0 && overwrite ? NAN : 0.5f);
        if (lmx_array_to_backend(gpu, &dd[i], &hd[i])) die("upload");
        if (i == 0 && overwrite) fill(&hd[i], 0.f); /* the reference adds into zeros */
    }
    lmx_array *hp[LMX_MAX_SRC] = {&hd[0], &hd[1]}, *dp[LMX_MAX_SRC] = {&dd[0], &dd[1]};
    if (lmx_op_defs[op].vjp(&hn, &g.h, hp)) die("reference vjp");
    if (lmx_cuda_vjp_matmul_ex(&dn, &g.d, dp, gpu->pool, overwrite)) {
        printf("FAIL cuda vjp: %s\n", lmx_last_error());
        n_bad++;
    } else {
        for (int i = 0; i < 2; i++) {
            float *gv = download(&dd[i]);
            char what[128];
            snprintf(what, sizeof what, "%s M %lld %s %lld r %d%s%s s %g", i ? (a_side ? "dA" : "dB") : (a_side ? "dx" : "dts"),
                     (long long)M, a_side ? "K" : "N", (long long)K, R, pad ? " strided x" : "",
                     i == 0 && overwrite ? " overwrite" : "", (double)(a_side ? 1.f : s));
            compare(what, gv, hd[i].data, lmx_array_numel(&hd[i]), i == 0 && overwrite ? 0.f : 0.5f);
            free(gv);
        }
    }
    for (int i = 0; i < 2; i++) lmx_array_release(&hd[i]), lmx_array_release(&dd[i]);
    drop(&x), drop(&w), drop(&g);
}

/* ---- timings -------------------------------------------------------------------------------------------------- */

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec * 1e-6;
}

enum { B_FWD_A, B_FWD_ACC, B_VJP_A, B_VJP_B };

/* mean us of 20 synchronised runs of one kernel; bytes: what it must move at least */
static void bench_one(int kind, int64_t M, int64_t W, int R, bool overwrite) {
    bool a = kind == B_FWD_A || kind == B_VJP_A;
    pair x = a ? mk(M, W) : mk(M, R), w = a ? mk(R, W) : mk(W, R);
    int64_t N = a ? R : W, K = a ? W : R;
    pair o = mk(M, N), g = mk(M, N), dx = a ? mk(M, W) : mk(M, R), dw = mk(w.h.shape[0], w.h.shape[1]);
    lmx_node n = mnode(kind == B_FWD_A || kind == B_VJP_A ? LMX_OP_MATMUL : LMX_OP_MATMUL_ACC, &o.d, &x.d, &w.d, 20.f);
    lmx_array *dp[LMX_MAX_SRC] = {&dx.d, &dw.d};
    double bytes = kind == B_FWD_A ? 4.0 * M * K : kind == B_FWD_ACC ? 8.0 * M * N
                   : kind == B_VJP_A ? (overwrite ? 8.0 : 12.0) * M * K : 4.0 * M * N;
    lmx_status st = LMX_OK;
    double t0 = 0;
    for (int it = 0; it < 23 && !st; it++) {
        if (it == 3) {
            st = lmx_backend_sync(gpu);
            t0 = now_ms();
        }
        if (kind == B_FWD_A) st = lmx_matmul(&gex, &o.d, &x.d, &w.d, NULL);
        else if (kind == B_FWD_ACC) st = lmx_matmul_acc(&gex, &o.d, &x.d, &w.d, 1e-3f);
        else st = lmx_cuda_vjp_matmul_ex(&n, &g.d, dp, gpu->pool, overwrite);
    }
    if (!st) st = lmx_backend_sync(gpu);
    if (st) die("bench");
    double us = (now_ms() - t0) * 1e3 / 20;
    static const char *names[] = {"fwd t = x·Aᵀ", "fwd out += s·ts·Bᵀ", "vjp A side dx+dA", "vjp B side dts+dB"};
    printf("bench %-20s M %lld %s %5lld r %2d%s: %8.1f us %7.0f GB/s\n", names[kind], (long long)M, a ? "K" : "N",
           (long long)W, R, overwrite ? " overwrite" : "", us, bytes / us * 1e-3);
    drop(&x), drop(&w), drop(&o), drop(&g), drop(&dx), drop(&dw);
}

static void run_bench(void) {
    const char *f = getenv("LMX_CUDA_LORA_FWD"), *v = getenv("LMX_CUDA_LORA_VJP");
    printf("bench paths: forward %s, vjps %s\n", f && !strcmp(f, "sgemm") ? "cuBLAS" : "lora kernels",
           v && !strcmp(v, "sgemm") ? "cuBLAS" : "lora kernels");
    static const int64_t wide[] = {512, 2048, 8192};
    for (int R = 8; R <= 16; R += 8) {
        for (int i = 1; i < 3; i++) bench_one(B_FWD_A, 2048, wide[i], R, false);
        for (int i = 0; i < 3; i++) bench_one(B_FWD_ACC, 2048, wide[i], R, false);
        for (int i = 1; i < 3; i++) bench_one(B_VJP_A, 2048, wide[i], R, false);
        if (R == 8)
            for (int i = 1; i < 3; i++) bench_one(B_VJP_A, 2048, wide[i], R, true);
        for (int i = 0; i < 3; i++) bench_one(B_VJP_B, 2048, wide[i], R, false);
    }
}

int main(void) {
    char why[256];
    if (lmx_cuda_device_count(why, sizeof why) <= 0) {
        printf("SKIP test_cuda_lora: %s\n", why);
        return 77;
    }
    const char *seed = getenv("LMX_TEST_SEED");
    rng = seed ? strtoull(seed, NULL, 10) : (uint64_t)time(NULL) * 2654435761u;
    if (!rng) rng = 1;
    if (lmx_backend_create("cuda", 0, &gpu) || lmx_backend_create("cpu", 0, &cpu)) die("backend");
    gex.backend = gpu;
    cex.backend = cpu;
    char info[256];
    if (lmx_cuda_device_info(info, sizeof info)) die("device info");
    printf("device: %s\nseed: %llu\n", info, (unsigned long long)rng);
    const char *b = getenv("LMX_LORA_BENCH");
    if (b && *b && strcmp(b, "0")) {
        run_bench();
    } else {
        static const int64_t wide[] = {512, 2048, 8192};
        for (int R = 8; R <= 16; R += 8) {
            for (int i = 0; i < 3; i++) t_fwd_a(2048, wide[i], R, 0);
            t_fwd_a(2048, 2048, R, 2048 + 4); /* a column view of x | y, as a fused row */
            t_fwd_a(37, 2052, R, 0);          /* a partial column block and row group */
            for (int i = 0; i < 3; i++) t_fwd_acc(2048, wide[i], R, i == 1 ? 1.f : 20.f);
            t_fwd_acc(37, 1028, R, -0.5f);
            for (int i = 0; i < 3; i++)
                for (int ow = 0; ow < 2; ow++) {
                    t_vjp(true, 2048, wide[i], R, 0, 1.f, ow);
                    t_vjp(false, 2048, wide[i], R, 0, 20.f, ow);
                }
            t_vjp(true, 2048, 2048, R, 12, 1.f, false); /* strided x */
            t_vjp(true, 37, 2052, R, 0, 1.f, true);
            t_vjp(false, 37, 1028, R, 0, -0.5f, false);
            t_vjp(false, 37, 1028, R, 0, 3.f, true);
        }
        printf("%d passed, %d failed\n", n_ok, n_bad);
    }
    lmx_backend_free(gpu);
    lmx_backend_free(cpu);
    return n_bad ? 1 : 0;
}
