/* test_cuda_q4r.c - the repacked GGUF Q4_0 device layout (cuda_qgemv_q4r.cu).
 *
 * A Q4_0 weight with K % 256 == 0 is repacked on upload (by default where
 * the backend's decode takes int8 x; this test sets LMX_CUDA_Q4_REPACK=1,
 * so the f32-x backend's uploads are repacked too). Checks, on fresh random weights (seed printed;
 * LMX_TEST_SEED=n repeats one):
 * - download gives back the uploaded bytes exactly: a whole weight, a row
 *   view, and a byte range that cuts rows at both ends;
 * - a fused group as transformer_device.c builds it (one allocation, members
 *   uploaded at byte offsets, relayout once, row views): each member's
 *   matmul (M = 1 int8 x, M = 1 f32 x, M = 3) and get_rows equal the CPU
 *   reference on the member's own host weight (int8 x: against the same
 *   GEMV on an unrepacked upload, which test_cuda_ops bounds against the
 *   CPU's int8 format);
 * - prefill (M = 64: dequantized tiles) on the repacked layout;
 * - the file layout (LMX_CUDA_Q4_REPACK=0) still takes the old kernels;
 * - the MLX 4-bit int8-x GEMV (default with LMX_INT8_ACT; forced here by LMX_CUDA_MLX_INT8=1) within its bound.
 * - x quantized inside the int8-x GEMVs (LMX_CUDA_XQ_FUSE, Q4_0 and MLX 4-bit)
 *   bit-identical to the separate quantize kernel, zero/subnormal/inf blocks too.
 * Tolerances as test_cuda_ops: 1e-5 for f32 GEMVs/tiles, 1e-6 get_rows.
 * Exits 77 (ctest: skipped) when no CUDA device answers. */
#include "backend/cuda/cuda.h"
#include "core/backend.h"
#include "core/ops.h"
#include "gpu_qr_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const gq_spec Q4 = {LMX_Q4_0, 0, LMX_F32, false, "gguf q4_0"};

static lmx_array mm_q(lmx_exec *ex, lmx_backend *b, const lmx_array *x, const lmx_array *dw, const lmx_array *sc,
                      const lmx_array *bi, int group) {
    lmx_array dx, out, h = Hpoison(x->shape[0], dw->shape[0]);
    if (lmx_array_to_backend(b, &dx, x) || lmx_array_to_backend(b, &out, &h)) die("upload");
    if (lmx_matmul_q(ex, &out, &dx, dw, NULL, sc, bi, group)) die("matmul_q");
    lmx_array_release(&dx);
    lmx_array_release(&h);
    return out;
}

/* Whole weight, a row view, a cut range: the uploaded bytes come back. */
static void t_roundtrip(void) {
    int64_t N = 37, K = 768;
    size_t rb = 18 * (size_t)K / 32;
    lmx_array w, sc, bi, dw, v;
    if (gq_make(&rng, &Q4, N, K, &w, &sc, &bi)) die("quant alloc");
    if (lmx_array_to_backend(gpu, &dw, &w)) die("upload");
    check(bytes_back(gpu, dw.data, w.data, lmx_array_nbytes(&w)), "q4_0 [37,768] download == upload (whole)");
    if (lmx_array_rows(&v, &dw, 5, 11)) die("rows");
    uint8_t *hv = malloc(11 * rb);
    if (lmx_array_download(gpu, &v, hv)) die("download view");
    check(memcmp(hv, (uint8_t *)w.data + 5 * rb, 11 * rb) == 0, "q4_0 row view [5, 16) download == upload");
    free(hv);
    size_t a = 3 * rb + 7, n = 4 * rb + 100; /* starts and ends inside rows */
    check(bytes_back(gpu, (uint8_t *)dw.data + a, (uint8_t *)w.data + a, n), "q4_0 cut byte range download == upload");
    lmx_array_release(&v);
    lmx_array_release(&dw);
    lmx_array_release(&w);
}

/* A fused group as transformer_device.c's up_group makes it. */
static void t_fused(int64_t K) {
    int64_t Ns[3] = {256, 64, 96}, NT = 416;
    lmx_array w[3], sc, bi, cat, views[3];
    int64_t sh[2] = {NT, K};
    if (lmx_array_alloc_on(gpu, &cat, LMX_Q4_0, 2, sh)) die("alloc");
    size_t off = 0;
    int64_t r0 = 0;
    for (int i = 0; i < 3; i++) {
        if (gq_make(&rng, &Q4, Ns[i], K, &w[i], &sc, &bi)) die("quant alloc");
        size_t bytes = lmx_array_nbytes(&w[i]);
        if (lmx_backend_upload(gpu, (uint8_t *)cat.data + off, w[i].data, bytes)) die("upload");
        if (lmx_array_rows(&views[i], &cat, r0, Ns[i])) die("rows");
        off += bytes;
        r0 += Ns[i];
    }
    if (lmx_backend_relayout(gpu, &cat)) die("relayout");
    /* the same group on the int8 backend, for M = 1 int8 x */
    lmx_array cat8, views8[3];
    if (lmx_array_alloc_on(gpu8, &cat8, LMX_Q4_0, 2, sh)) die("alloc");
    off = 0, r0 = 0;
    for (int i = 0; i < 3; i++) {
        size_t bytes = lmx_array_nbytes(&w[i]);
        if (lmx_backend_upload(gpu8, (uint8_t *)cat8.data + off, w[i].data, bytes)) die("upload");
        if (lmx_array_rows(&views8[i], &cat8, r0, Ns[i])) die("rows");
        off += bytes, r0 += Ns[i];
    }
    if (lmx_backend_relayout(gpu8, &cat8)) die("relayout");
    /* unrepacked uploads of each member: the old int8 kernel, a reference for the new one */
    setenv("LMX_CUDA_Q4_REPACK", "0", 1);
    lmx_array plain8[3];
    for (int i = 0; i < 3; i++)
        if (lmx_array_to_backend(gpu8, &plain8[i], &w[i])) die("upload");
    setenv("LMX_CUDA_Q4_REPACK", "1", 1);
    char what[128];
    for (int i = 0; i < 3; i++) {
        lmx_array x1 = Hf(1, K), x3 = Hf(3, K), x64 = Hf(64, K);
        lmx_array c1 = cpu_mm(&x1, &w[i]), c3 = cpu_mm(&x3, &w[i]), c64 = cpu_mm(&x64, &w[i]);
        lmx_array g1 = mm(&gex, gpu, &x1, &views[i]), g3 = mm(&gex, gpu, &x3, &views[i]);
        lmx_array g64 = mm(&gex, gpu, &x64, &views[i]);
        lmx_array n1 = mm(&gex8, gpu8, &x1, &views8[i]), o1 = mm(&gex8, gpu8, &x1, &plain8[i]);
        snprintf(what, sizeof what, "fused view %d [%lld,%lld] M=1 f32 x == cpu", i, (long long)Ns[i], (long long)K);
        cmp(what, &c1, &g1, gpu, 1e-5);
        snprintf(what, sizeof what, "fused view %d [%lld,%lld] M=3 == cpu", i, (long long)Ns[i], (long long)K);
        cmp(what, &c3, &g3, gpu, 1e-5);
        snprintf(what, sizeof what, "fused view %d [%lld,%lld] M=64 (tiles) == cpu", i, (long long)Ns[i], (long long)K);
        cmp(what, &c64, &g64, gpu, 1e-5);
        /* int8 x: same quantized x, same exact block dots; only f32 summation order differs */
        lmx_array ho = Hpoison(1, Ns[i]);
        if (lmx_array_download(gpu8, &o1, ho.data)) die("download");
        snprintf(what, sizeof what, "fused view %d [%lld,%lld] M=1 int8 x == file-layout int8 kernel", i,
                 (long long)Ns[i], (long long)K);
        cmp(what, &ho, &n1, gpu8, 1e-6);
        snprintf(what, sizeof what, "fused view %d [%lld,%lld] M=1 int8 x vs cpu f32", i, (long long)Ns[i],
                 (long long)K);
        cmp(what, &c1, &n1, gpu8, 2e-2); /* x rounded to 8 bits: ~0.5/127 relative per element */
        lmx_array *all[] = {&x1, &x3, &x64, &c1, &c3, &c64, &g1, &g3, &g64, &n1, &o1, &ho};
        for (size_t k = 0; k < sizeof all / sizeof *all; k++) lmx_array_release(all[k]);
        /* get_rows through the view (embedding-table path) */
        int64_t ish[1] = {5};
        lmx_array ids, dids, oc = Hpoison(5, K), og, hog = Hpoison(5, K);
        if (lmx_array_alloc(&ids, LMX_I32, 1, ish)) die("alloc");
        for (int r = 0; r < 5; r++) ((int32_t *)ids.data)[r] = (int32_t)(gq_next(&rng) % (uint64_t)Ns[i]);
        if (lmx_array_to_backend(gpu, &dids, &ids) || lmx_array_to_backend(gpu, &og, &hog)) die("upload");
        if (lmx_get_rows_q(&cex, &oc, &w[i], &ids, NULL, NULL, 0) ||
            lmx_get_rows_q(&gex, &og, &views[i], &dids, NULL, NULL, 0))
            die("get_rows_q");
        snprintf(what, sizeof what, "fused view %d get_rows x5 == cpu", i);
        cmp(what, &oc, &og, gpu, 1e-6);
        lmx_array *gr[] = {&ids, &dids, &oc, &og, &hog};
        for (size_t k = 0; k < sizeof gr / sizeof *gr; k++) lmx_array_release(gr[k]);
        size_t rb = lmx_array_nbytes(&w[i]);
        uint8_t *back = malloc(rb);
        if (lmx_array_download(gpu, &views[i], back)) die("download");
        snprintf(what, sizeof what, "fused view %d download == member's file bytes", i);
        check(memcmp(back, w[i].data, rb) == 0, what);
        free(back);
    }
    for (int i = 0; i < 3; i++) {
        lmx_array_release(&views[i]);
        lmx_array_release(&views8[i]);
        lmx_array_release(&plain8[i]);
        lmx_array_release(&w[i]);
    }
    lmx_array_release(&cat);
    lmx_array_release(&cat8);
}

/* MLX 4-bit with int8 x (LMX_CUDA_MLX_INT8=1, set before the first MLX
 * GEMV of this process): against the exact product on the CPU-quantized x
 * (x̂ = d_b·q, lmx_xq's rounding), with W dequantized by the CPU (get_rows:
 * fl(s·q) + b, within 2 ulp of s·q + b): |y - ŷ| <= γ_{K/32+20}·Σ|W|·|x̂|;
 * and against the f32 product with x's rounding added, Σ_b d_b/2·Σ|W|. */
static void t_mlx_int8(int64_t N, int64_t K) {
    const gq_spec q = {LMX_MLX_Q4, 64, LMX_BF16, true, "mlx 4-bit g64"};
    lmx_array w, sc, bi, dw, dsc, dbi, x = Hf(1, K);
    if (gq_make(&rng, &q, N, K, &w, &sc, &bi)) die("quant alloc");
    if (lmx_array_to_backend(gpu8, &dw, &w) || lmx_array_to_backend(gpu8, &dsc, &sc) ||
        lmx_array_to_backend(gpu8, &dbi, &bi))
        die("upload");
    lmx_array g = mm_q(&gex8, gpu8, &x, &dw, &dsc, &dbi, 64);
    float *y = malloc((size_t)N * sizeof *y);
    if (lmx_backend_download(gpu8, y, g.data, (size_t)N * sizeof *y)) die("download");
    /* W rows on the host through the CPU's get_rows (the reference decoder) */
    int64_t ish[1] = {N};
    lmx_array ids, W = Hpoison(N, K);
    if (lmx_array_alloc(&ids, LMX_I32, 1, ish)) die("alloc");
    for (int64_t r = 0; r < N; r++) ((int32_t *)ids.data)[r] = (int32_t)r;
    if (lmx_get_rows_q(&cex, &W, &w, &ids, &sc, &bi, 64)) die("get_rows_q");
    const float *xf = (const float *)x.data, *wf = (const float *)W.data;
    double worst = 0;
    int64_t bad = int8_bound(y, wf, xf, N, K, K / 32, &worst);
    char what[128];
    snprintf(what, sizeof what, "mlx 4-bit g64 bf16 int8 x M=1 N=%lld K=%lld (worst %.2f of the f32 bound)",
             (long long)N, (long long)K, worst);
    check(bad == 0, what);
    free(y);
    lmx_array *all[] = {&w, &sc, &bi, &dw, &dsc, &dbi, &x, &g, &ids, &W};
    for (size_t k = 0; k < sizeof all / sizeof *all; k++) lmx_array_release(all[k]);
}

/* LMX_CUDA_XQ_FUSE: the int8-x GEMVs quantizing x in their own prologue
 * (cuda_qgemv_q4r.cu) give the same bits as the separate quantizer
 * (LMX_CUDA_XQ_FUSE=0): same int8 x and block sums, same dots and sums.
 * x holds a zero block, a block of one nonzero element, subnormals, and
 * (nonfinite) an inf element (its block's d is NaN, q 0). kmax: the
 * switch's value for the fused run ("1": the default limit). */
static void t_xq_fuse(bool mlx, int64_t N, int64_t K, const char *kmax, bool nonfinite) {
    const gq_spec q = {LMX_MLX_Q4, 64, LMX_BF16, true, "mlx 4-bit g64"};
    lmx_array w, sc, bi, dw, dsc, dbi, x = Hf(1, K);
    float *xf = (float *)x.data;
    for (int j = 0; j < 32; j++) xf[32 + j] = 0.0f, xf[64 + j] = j == 7 ? -3.5f : 0.0f;
    for (int j = 0; j < 32 && K >= 256; j++) xf[128 + j] = (float)(j - 16) * 1e-40f;
    if (nonfinite) xf[K - 5] = INFINITY;
    if (gq_make(&rng, mlx ? &q : &Q4, N, K, &w, &sc, &bi)) die("quant alloc");
    if (lmx_array_to_backend(gpu8, &dw, &w)) die("upload");
    if (mlx && (lmx_array_to_backend(gpu8, &dsc, &sc) || lmx_array_to_backend(gpu8, &dbi, &bi))) die("upload");
    lmx_array y[2];
    for (int f = 0; f < 2; f++) {
        setenv("LMX_CUDA_XQ_FUSE", f ? kmax : "0", 1);
        y[f] = mlx ? mm_q(&gex8, gpu8, &x, &dw, &dsc, &dbi, 64) : mm(&gex8, gpu8, &x, &dw);
    }
    unsetenv("LMX_CUDA_XQ_FUSE");
    size_t nb = (size_t)N * sizeof(float);
    float *h0 = malloc(nb), *h1 = malloc(nb);
    if (lmx_backend_download(gpu8, h0, y[0].data, nb) || lmx_backend_download(gpu8, h1, y[1].data, nb))
        die("download");
    bool finite = true;
    for (int64_t r = 0; r < N; r++) finite = finite && isfinite(h0[r]);
    char what[160];
    snprintf(what, sizeof what, "%s int8 x M=1 N=%lld K=%lld%s: x quantized in the GEMV (XQ_FUSE=%s) == separate",
             mlx ? "mlx 4-bit" : "q4_0", (long long)N, (long long)K, nonfinite ? " (inf in x)" : "", kmax);
    check(memcmp(h0, h1, nb) == 0 && finite != nonfinite, what);
    free(h0), free(h1);
    lmx_array *all[] = {&w, &sc, &bi, &dw, &x, &y[0], &y[1]};
    for (size_t k = 0; k < sizeof all / sizeof *all; k++) lmx_array_release(all[k]);
    if (mlx) lmx_array_release(&dsc), lmx_array_release(&dbi);
}

int main(void) {
    char why[256];
    if (lmx_cuda_device_count(why, sizeof why) <= 0) {
        printf("SKIP test_cuda_q4r: %s\n", why);
        return 77;
    }
    const char *seed = getenv("LMX_TEST_SEED");
    rng = seed ? strtoull(seed, NULL, 10) : (uint64_t)time(NULL) * 2654435761u;
    if (!rng) rng = 1;
    setenv("LMX_CUDA_Q4_REPACK", "1", 1); /* also on the f32-x backend (unset: only where int8 x is on) */
    setenv("LMX_CPU", "reference", 0);
    setenv("LMX_CUDA_EXACT", "1", 0); /* prefill tiles in the hi+lo mode: the M = 64 cases compare with f32 at 1e-5 */
    setenv("LMX_INT8_ACT", "0", 1);
    if (lmx_backend_create("cpu", 0, &cpu) || lmx_backend_create("cuda", 0, &gpu)) die("backend");
    setenv("LMX_INT8_ACT", "1", 1);
    setenv("LMX_CUDA_MLX_INT8", "1", 1); /* read at the first MLX GEMV: t_mlx_int8 */
    if (lmx_backend_create("cuda", 0, &gpu8)) die("backend");
    cex.backend = cpu, gex.backend = gpu, gex8.backend = gpu8;
    printf("seed: %llu\n", (unsigned long long)rng);
    t_roundtrip();
    t_fused(768);
    t_fused(4096);
    t_mlx_int8(300, 768);
    t_mlx_int8(4096, 4096);
    const int64_t xs[][2] = {{300, 768}, {100, 256}, {4096, 2048}, {2048, 8192}, {8192, 2048}, {64, 16384}};
    for (size_t i = 0; i < sizeof xs / sizeof *xs; i++)
        for (int mlx = 0; mlx < 2; mlx++) t_xq_fuse(mlx, xs[i][0], xs[i][1], xs[i][1] > 2048 ? "32768" : "1", false);
    t_xq_fuse(false, 512, 2048, "1", true);
    t_xq_fuse(true, 512, 2048, "1", true);
    lmx_backend_free(gpu8);
    lmx_backend_free(gpu);
    lmx_backend_free(cpu);
    printf("%d passed, %d failed\n", n_ok, n_bad);
    return n_bad ? 1 : 0;
}
