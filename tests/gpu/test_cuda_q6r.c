/* test_cuda_q6r.c - the repacked GGUF Q6_K device layout (cuda_qgemv_q6r.cu).
 *
 * A Q6_K weight with K % 2048 == 0 is repacked on upload (by default where
 * the backend's decode takes int8 x; this test sets LMX_CUDA_Q6_REPACK=1,
 * so the f32-x backend's uploads are repacked too). Checks, on fresh random
 * weights (seed printed; LMX_TEST_SEED=n repeats one):
 * - download gives back the uploaded bytes exactly: a whole weight, a row
 *   view, and a byte range that cuts rows at both ends;
 * - on a row view of a repacked weight (rows at an offset, as an lm_head
 *   slice or a fused group): M = 1 f32 x, M = 3, M = 64 (dequantized prefill
 *   tiles) and get_rows against the CPU reference (1e-5; get_rows 1e-6);
 *   M = 1 int8 x within the bound of the exact product on the CPU-quantized
 *   x (lmx_xq), and against the file layout's f32-x kernel (LMX_CUDA_Q6_REPACK=0
 *   upload) within x's rounding;
 * - a K that is not a multiple of 2048 stays in the file layout and is still
 *   right. Exits 77 (ctest: skipped) when no CUDA device answers. */
#include "backend/cuda/cuda.h"
#include "core/backend.h"
#include "core/ops.h"
#include "gpu_qr_test.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const gq_spec Q6 = {LMX_Q6_K, 0, LMX_F32, false, "gguf q6_K"};

/* Whole weight, a row view, a cut range: the uploaded bytes come back. */
static void t_roundtrip(int64_t K) {
    int64_t N = 37;
    size_t rb = 210 * (size_t)K / 256;
    lmx_array w, sc, bi, dw, v;
    char what[128];
    if (gq_make(&rng, &Q6, N, K, &w, &sc, &bi)) die("quant alloc");
    if (lmx_array_to_backend(gpu, &dw, &w)) die("upload");
    snprintf(what, sizeof what, "q6_K [37,%lld] download == upload (whole)", (long long)K);
    check(bytes_back(gpu, dw.data, w.data, lmx_array_nbytes(&w)), what);
    if (lmx_array_rows(&v, &dw, 5, 11)) die("rows");
    uint8_t *hv = malloc(11 * rb);
    if (lmx_array_download(gpu, &v, hv)) die("download view");
    snprintf(what, sizeof what, "q6_K [37,%lld] row view [5, 16) download == upload", (long long)K);
    check(memcmp(hv, (uint8_t *)w.data + 5 * rb, 11 * rb) == 0, what);
    free(hv);
    size_t a = 3 * rb + 7, n = 4 * rb + 100; /* starts and ends inside rows */
    snprintf(what, sizeof what, "q6_K [37,%lld] cut byte range download == upload", (long long)K);
    check(bytes_back(gpu, (uint8_t *)dw.data + a, (uint8_t *)w.data + a, n), what);
    lmx_array_release(&v);
    lmx_array_release(&dw);
    lmx_array_release(&w);
}

/* y (N, device, int8-x GEMV) against the exact product on the CPU-quantized
 * x (x̂ = d_b·q, lmx_xq's rounding) with W dequantized by the CPU (Wf):
 * |y - ŷ| <= γ_{K/16+20}·Σ|W|·|x̂| (f32 sums of exact integer sub-block
 * dots); and against the f32 product with x's rounding Σ_b d_b/2·Σ|W|. */
static void check_int8(const char *what, const lmx_array *yd, const float *wf, const float *xf, int64_t N, int64_t K) {
    float *y = malloc((size_t)N * sizeof *y);
    if (lmx_backend_download(gpu8, y, yd->data, (size_t)N * sizeof *y)) die("download");
    double worst = 0;
    int64_t bad = int8_bound(y, wf, xf, N, K, K / 16, &worst);
    char line[200];
    snprintf(line, sizeof line, "%s (worst %.2f of the f32 bound)", what, worst);
    check(bad == 0, line);
    free(y);
}

/* W [NT, K] uploaded whole; the cases run on rows [r0, r0 + N) of it. */
static void t_view(int64_t NT, int64_t r0, int64_t N, int64_t K) {
    lmx_array wt, sc, bi, dw, dw8, plain8, v, v8;
    if (gq_make(&rng, &Q6, NT, K, &wt, &sc, &bi)) die("quant alloc");
    if (lmx_array_to_backend(gpu, &dw, &wt) || lmx_array_to_backend(gpu8, &dw8, &wt)) die("upload");
    setenv("LMX_CUDA_Q6_REPACK", "0", 1); /* the file layout: the old kernels, a reference */
    if (lmx_array_to_backend(gpu8, &plain8, &wt)) die("upload");
    setenv("LMX_CUDA_Q6_REPACK", "1", 1);
    lmx_array pv;
    if (lmx_array_rows(&v, &dw, r0, N) || lmx_array_rows(&v8, &dw8, r0, N) || lmx_array_rows(&pv, &plain8, r0, N))
        die("rows");
    /* the host rows of the view, and their f32 values (CPU get_rows) */
    int64_t wsh[2] = {N, K};
    lmx_array w;
    if (lmx_array_alloc(&w, LMX_Q6_K, 2, wsh)) die("alloc");
    size_t rb = lmx_dtype_bytes(LMX_Q6_K, K);
    memcpy(w.data, (uint8_t *)wt.data + r0 * rb, (size_t)N * rb);
    int64_t ish[1] = {N};
    lmx_array ids, W = Hpoison(N, K);
    if (lmx_array_alloc(&ids, LMX_I32, 1, ish)) die("alloc");
    for (int64_t r = 0; r < N; r++) ((int32_t *)ids.data)[r] = (int32_t)r;
    if (lmx_get_rows_q(&cex, &W, &w, &ids, NULL, NULL, 0)) die("get_rows_q");

    char what[160], tag[64];
    snprintf(tag, sizeof tag, "view [%lld+%lld of %lld, %lld]", (long long)r0, (long long)N, (long long)NT,
             (long long)K);
    lmx_array x1 = Hf(1, K), x3 = Hf(3, K), x64 = Hf(64, K);
    lmx_array c1 = cpu_mm(&x1, &w), c3 = cpu_mm(&x3, &w), c64 = cpu_mm(&x64, &w);
    lmx_array g1 = mm(&gex, gpu, &x1, &v), g3 = mm(&gex, gpu, &x3, &v), g64 = mm(&gex, gpu, &x64, &v);
    lmx_array n1 = mm(&gex8, gpu8, &x1, &v8), o1 = mm(&gex8, gpu8, &x1, &pv);
    snprintf(what, sizeof what, "%s M=1 f32 x == cpu", tag);
    cmp(what, &c1, &g1, gpu, 1e-5);
    snprintf(what, sizeof what, "%s M=3 == cpu", tag);
    cmp(what, &c3, &g3, gpu, 1e-5);
    snprintf(what, sizeof what, "%s M=64 (tiles) == cpu", tag);
    cmp(what, &c64, &g64, gpu, 1e-5);
    if (K % 2048 == 0) {
        snprintf(what, sizeof what, "%s M=1 int8 x", tag);
        check_int8(what, &n1, (const float *)W.data, (const float *)x1.data, N, K);
    } else { /* not repacked: the int8 backend keeps the file layout's f32-x kernel */
        snprintf(what, sizeof what, "%s M=1 (file layout, f32 x) == cpu", tag);
        cmp(what, &c1, &n1, gpu8, 1e-5);
    }
    lmx_array ho = Hpoison(1, N);
    if (lmx_array_download(gpu8, &o1, ho.data)) die("download");
    snprintf(what, sizeof what, "%s M=1 int8 x vs file-layout f32 kernel", tag);
    cmp(what, &ho, &n1, gpu8, 2e-2); /* x rounded to 8 bits: ~0.5/127 relative per element */

    /* get_rows through the view (the tied-embedding path) */
    int64_t gsh[1] = {7};
    lmx_array gids, dids, oc = Hpoison(7, K), og, hog = Hpoison(7, K);
    if (lmx_array_alloc(&gids, LMX_I32, 1, gsh)) die("alloc");
    for (int r = 0; r < 7; r++) ((int32_t *)gids.data)[r] = (int32_t)(gq_next(&rng) % (uint64_t)N);
    ((int32_t *)gids.data)[0] = (int32_t)(N - 1);
    if (lmx_array_to_backend(gpu8, &dids, &gids) || lmx_array_to_backend(gpu8, &og, &hog)) die("upload");
    if (lmx_get_rows_q(&cex, &oc, &w, &gids, NULL, NULL, 0) || lmx_get_rows_q(&gex8, &og, &v8, &dids, NULL, NULL, 0))
        die("get_rows_q");
    snprintf(what, sizeof what, "%s get_rows x7 == cpu", tag);
    cmp(what, &oc, &og, gpu8, 1e-6);
    uint8_t *back = malloc((size_t)N * rb);
    if (lmx_array_download(gpu8, &v8, back)) die("download");
    snprintf(what, sizeof what, "%s download == file bytes", tag);
    check(memcmp(back, w.data, (size_t)N * rb) == 0, what);
    free(back);

    lmx_array *all[] = {&x1, &x3, &x64, &c1, &c3, &c64, &g1, &g3, &g64, &n1, &o1, &ho, &gids, &dids, &oc, &og,
                        &hog, &v, &v8, &pv, &dw, &dw8, &plain8, &w, &wt, &ids, &W};
    for (size_t k = 0; k < sizeof all / sizeof *all; k++) lmx_array_release(all[k]);
}

int main(void) {
    char why[256];
    if (lmx_cuda_device_count(why, sizeof why) <= 0) {
        printf("SKIP test_cuda_q6r: %s\n", why);
        return 77;
    }
    const char *seed = getenv("LMX_TEST_SEED");
    rng = seed ? strtoull(seed, NULL, 10) : (uint64_t)time(NULL) * 2654435761u;
    if (!rng) rng = 1;
    setenv("LMX_CUDA_Q6_REPACK", "1", 1); /* also on the f32-x backend (unset: only where int8 x is on) */
    setenv("LMX_CPU", "reference", 0);
    setenv("LMX_CUDA_EXACT", "1", 0); /* prefill tiles in the hi+lo mode: the M = 64 cases compare with f32 at 1e-5 */
    setenv("LMX_INT8_ACT", "0", 1);
    if (lmx_backend_create("cpu", 0, &cpu) || lmx_backend_create("cuda", 0, &gpu)) die("backend");
    setenv("LMX_INT8_ACT", "1", 1);
    if (lmx_backend_create("cuda", 0, &gpu8)) die("backend");
    cex.backend = cpu, gex.backend = gpu, gex8.backend = gpu8;
    printf("seed: %llu\n", (unsigned long long)rng);
    t_roundtrip(2048);
    t_roundtrip(4096);
    t_view(300, 7, 200, 2048);
    t_view(64, 0, 64, 4096);
    t_view(2100, 33, 2000, 6144);
    t_view(40, 3, 30, 1280); /* K % 2048 != 0: the file layout */
    lmx_backend_free(gpu8);
    lmx_backend_free(gpu);
    lmx_backend_free(cpu);
    printf("%d passed, %d failed\n", n_ok, n_bad);
    return n_bad ? 1 : 0;
}
