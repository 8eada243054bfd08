/* gpu_qr_test.h - what the repacked-weight device tests (test_cuda_q4r.c,
 * test_cuda_q6r.c) share: a CPU and two CUDA backends (gpu8 with int8 x),
 * random and poisoned host arrays, the relative error of a device result,
 * products on either side, and a byte check of a download. Each test is
 * its own program, so the definitions here are static. */
#ifndef LMX_TEST_GPU_QR_TEST_H
#define LMX_TEST_GPU_QR_TEST_H

#include "backend/cuda/cuda.h"
#include "core/backend.h"
#include "core/ops.h"
#include "gpu_quant_rand.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static lmx_backend *cpu, *gpu, *gpu8; /* gpu8: LMX_INT8_ACT on */
static lmx_exec cex, gex, gex8;
static uint64_t rng;
static int n_ok, n_bad;

static void die(const char *what) {
    fprintf(stderr, "FATAL %s: %s\n", what, lmx_last_error());
    exit(1);
}

static void check(bool ok, const char *what) {
    printf("%s %s\n", ok ? "ok  " : "FAIL", what);
    ok ? n_ok++ : n_bad++;
}

static lmx_array Hf(int64_t d0, int64_t d1) {
    int64_t sh[2] = {d0, d1};
    lmx_array a;
    if (lmx_array_alloc(&a, LMX_F32, 2, sh)) die("alloc");
    float *f = (float *)a.data;
    for (int64_t i = 0; i < d0 * d1; i++) f[i] = (float)gq_unif(&rng, -1, 1);
    return a;
}

static lmx_array Hpoison(int64_t d0, int64_t d1) {
    int64_t sh[2] = {d0, d1};
    lmx_array a;
    if (lmx_array_alloc(&a, LMX_F32, 2, sh)) die("alloc");
    memset(a.data, 0xff, lmx_array_nbytes(&a));
    return a;
}

/* ||g - r|| / ||r|| of f32 arrays, g on the device; NaN (unwritten) fails. */
static double rel_err(const lmx_array *r, const lmx_array *g, lmx_backend *b) {
    int64_t n = lmx_array_numel(r);
    float *gf = malloc((size_t)n * sizeof *gf);
    if (lmx_backend_download(b, gf, g->data, (size_t)n * sizeof *gf)) die("download");
    const float *rf = (const float *)r->data;
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(gf[i])) {
            free(gf);
            return INFINITY;
        }
        num += ((double)gf[i] - rf[i]) * ((double)gf[i] - rf[i]);
        den += (double)rf[i] * rf[i];
    }
    free(gf);
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static void cmp(const char *what, const lmx_array *r, const lmx_array *g, lmx_backend *b, double tol) {
    double e = rel_err(r, g, b);
    char line[200];
    snprintf(line, sizeof line, "%-66s rel %.2e (tol %.0e)", what, e, tol);
    check(e <= tol, line);
}

/* out = x·Wᵀ on backend b for device weight dw (a view or a whole array). */
static lmx_array mm(lmx_exec *ex, lmx_backend *b, const lmx_array *x, const lmx_array *dw) {
    lmx_array dx, out, h = Hpoison(x->shape[0], dw->shape[0]);
    if (lmx_array_to_backend(b, &dx, x) || lmx_array_to_backend(b, &out, &h)) die("upload");
    if (lmx_matmul_q(ex, &out, &dx, dw, NULL, NULL, NULL, 0)) die("matmul_q");
    lmx_array_release(&dx);
    lmx_array_release(&h);
    return out;
}

static lmx_array cpu_mm(const lmx_array *x, const lmx_array *w) {
    lmx_array out = Hpoison(x->shape[0], w->shape[0]);
    lmx_array none;
    memset(&none, 0, sizeof none);
    if (lmx_matmul_q(&cex, &out, x, w, NULL, gq_opt(&none), gq_opt(&none), 0)) die("cpu matmul_q");
    return out;
}

static bool bytes_back(lmx_backend *b, const void *dev, const void *host, size_t n) {
    uint8_t *got = malloc(n ? n : 1);
    if (lmx_backend_download(b, got, dev, n)) die("download");
    bool same = memcmp(got, host, n) == 0;
    free(got);
    return same;
}

/* Rows of y (an int8-x GEMV's results, on the host) against the exact
 * product on the CPU-quantized x (x̂ = d_b·q, lmx_xq's rounding) with the
 * CPU-dequantized W (wf [N, K]): |y - ŷ| <= γ_n·Σ|W|·|x̂| with n = terms +
 * 20 (terms: the f32 sums of exact integer dots a row, K/16 or K/32), and
 * against the f32 product with x's rounding Σ_b d_b/2·Σ|W| added. Returns
 * the rows outside; *worst: the largest |y - ŷ| over its bound. */
static int64_t int8_bound(const float *y, const float *wf, const float *xf, int64_t N, int64_t K, int64_t terms,
                          double *worst) {
    double *xh = malloc((size_t)K * sizeof *xh), *db = malloc((size_t)(K / 32) * sizeof *db);
    for (int64_t b = 0; b < K / 32; b++) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fabsf(xf[32 * b + j]) > amax ? fabsf(xf[32 * b + j]) : amax;
        volatile float d = amax / 127.0f, id = amax > 0 ? 127.0f / amax : 0.0f;
        db[b] = d;
        for (int j = 0; j < 32; j++) {
            volatile float v = xf[32 * b + j] * id;
            xh[32 * b + j] = (double)d * (id != 0.0f ? rintf(v) : 0.0f);
        }
    }
    int64_t bad = 0;
    double nn = (double)(terms + 20), u = 5.9604645e-8, g_n = nn * u / (1 - nn * u);
    *worst = 0;
    for (int64_t r = 0; r < N; r++) {
        double yq = 0, yf = 0, s1 = 0, sq = 0;
        for (int64_t k = 0; k < K; k++) {
            double wk = wf[r * K + k];
            yq += wk * xh[k], yf += wk * xf[k], s1 += fabs(wk * xh[k]), sq += db[k / 32] * 0.5 * fabs(wk);
        }
        double t1 = g_n * s1 + 1e-30, e1 = fabs(y[r] - yq), e2 = fabs(y[r] - yf);
        if (!(e1 <= t1) || !(e2 <= sq + t1)) bad++;
        if (e1 / t1 > *worst) *worst = e1 / t1;
    }
    free(xh), free(db);
    return bad;
}

#endif
