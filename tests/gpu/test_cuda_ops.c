/* test_cuda_ops.c - every CUDA kernel against the CPU reference kernel.
 *
 * Fresh random inputs each run (seed printed; LMX_TEST_SEED=n repeats one),
 * outputs poisoned with NaN bytes on both sides before the op: an element
 * the CPU writes but the GPU leaves NaN fails, so do non-finite results.
 * Error = ||gpu - cpu|| / ||cpu|| over the written elements. Tolerances:
 * 1e-5 everywhere (bf16/f16 GEMMs split x into two halves: LMX_CUDA_EXACT=1
 * is set here; the backend's default rounds x once and needs ~1e-2, which
 * the model goldens bound).
 * The CPU side runs the plain-C reference kernels (LMX_CPU=reference is set
 * before the backend starts, unless the caller set LMX_CPU).
 *
 * Quantized weights (every GGUF block format, MLX affine 2..8-bit at groups
 * 32/64/128 with f32/f16/bf16 scales, mxfp4/nvfp4/mxfp8): random packed bytes
 * (tests/gpu/gpu_quant_rand.h), rows that are and are not 16-byte aligned.
 * matmul at M <= 8 (the packed-weight GEMVs) and M > 8 (dequantized bf16
 * hi + lo tiles through cuBLAS): 1e-5, f32 accumulation of exactly
 * dequantized weights in another order (GEMV: ~1e-7), resp. weights and x
 * each carried to 16 bits (simulated ~3e-6). get_rows of quantized tables:
 * 1e-6 (the decoders round as the host converters do: expected 0).
 * MLX 4/8-bit, Q4_0 and Q6_K decode run through the default kernels and
 * again on backends started with LMX_CUDA_QGEMV=staged / old / r4 / r8.
 * Q4_0 with K % 256 == 0 uploaded to an int8-x backend runs in the repacked
 * device layout (cuda_qgemv_q4r.cu; its own checks, f32 x and M <= 8 too:
 * test_cuda_q4r.c); the int8 cases run once more on the file layout
 * (LMX_CUDA_Q4_REPACK=0). The f32-x backend here keeps the file layout.
 * Greedy pick (lmx_cuda_greedy): id, max, runner-up and non-finite count
 * exact, log-sum-exp within 2e-5 + 4e-7·|lse| (see greedy_case).
 * Exits 77 (ctest: skipped) with the reason when no CUDA device answers. */
#include "backend/cuda/cuda.h"
#include "core/ops.h"
#include "gpu_quant_rand.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static lmx_backend *cpu, *gpu;
static lmx_exec cex, gex;
static uint64_t rng;
static int n_ok, n_bad;

static double urand(void) { return (double)(gq_next(&rng) >> 11) / 9007199254740992.0; }

static void die(const char *what) {
    fprintf(stderr, "FATAL %s: %s\n", what, lmx_last_error());
    exit(1);
}

/* Host array of dtype dt with uniform values in [-amp, amp]. */
static lmx_array H(lmx_dtype dt, int ndim, int64_t d0, int64_t d1, int64_t d2, double amp) {
    int64_t sh[3] = {d0, d1, d2};
    lmx_array a;
    if (lmx_array_alloc(&a, dt, ndim, sh)) die("alloc");
    int64_t n = lmx_array_numel(&a);
    if (dt == LMX_I32) return a;
    float *f = malloc((size_t)n * sizeof *f);
    for (int64_t i = 0; i < n; i++) f[i] = (float)((2 * urand() - 1) * amp);
    lmx_dtype_info(dt)->from_f32(f, a.data, n);
    free(f);
    return a;
}

/* Poisoned (all bytes 0xFF = NaN for f32/bf16/f16) host array. */
static lmx_array HP(lmx_dtype dt, int ndim, int64_t d0, int64_t d1, int64_t d2) {
    int64_t sh[3] = {d0, d1, d2};
    lmx_array a;
    if (lmx_array_alloc(&a, dt, ndim, sh)) die("alloc");
    memset(a.data, 0xff, lmx_array_nbytes(&a));
    return a;
}

/* Device copy of a host array (poison travels with it). */
static lmx_array D(const lmx_array *h) {
    lmx_array d;
    if (lmx_array_to_backend(gpu, &d, h)) die("upload");
    return d;
}

/* Compares host reference r with device array g (same layout, whole buffers). */
static void cmp(const char *what, const lmx_array *r, const lmx_array *g, double tol) {
    int64_t n = lmx_array_numel(r);
    size_t bytes = lmx_array_nbytes(r);
    void *gb = malloc(bytes);
    float *rf = malloc((size_t)n * sizeof *rf), *gf = malloc((size_t)n * sizeof *gf);
    if (lmx_backend_download(gpu, gb, g->data, bytes)) die("download");
    const lmx_dtype_traits *t = lmx_dtype_info(r->dtype);
    if (r->dtype == LMX_I32) {
        for (int64_t i = 0; i < n; i++) {
            rf[i] = (float)((const int32_t *)r->data)[i];
            gf[i] = (float)((const int32_t *)gb)[i];
        }
    } else {
        t->to_f32(r->data, rf, n);
        t->to_f32(gb, gf, n);
    }
    double num = 0, den = 0;
    int64_t unwritten = 0, bad = 0, used = 0;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(rf[i]) && r->dtype != LMX_I32) { /* not written by the reference: must stay poisoned */
            if (!isnan(gf[i])) bad++;
            continue;
        }
        used++;
        if (!isfinite(gf[i])) {
            unwritten++;
            continue;
        }
        double d = (double)gf[i] - rf[i];
        num += d * d;
        den += (double)rf[i] * rf[i];
    }
    double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    bool ok = unwritten == 0 && bad == 0 && used > 0 && rel <= tol;
    printf("%s %-58s rel %.2e (tol %.0e)", ok ? "ok  " : "FAIL", what, rel, tol);
    if (unwritten || bad) printf(" non-finite/unwritten %lld, stray writes %lld", (long long)unwritten, (long long)bad);
    printf("\n");
    ok ? n_ok++ : n_bad++;
    free(gb);
    free(rf);
    free(gf);
}

static void run2(lmx_status a, lmx_status b, const char *what) {
    if (a) {
        fprintf(stderr, "%s (cpu): %s\n", what, lmx_last_error());
        n_bad++;
    }
    if (b) {
        printf("FAIL %s (cuda): %s\n", what, lmx_last_error());
        n_bad++;
    }
}

static void rel(lmx_array *a) { lmx_array_release(a); }

static const char *dn(lmx_dtype t) { return lmx_dtype_info(t)->name; }
static const lmx_dtype FL[3] = {LMX_F32, LMX_BF16, LMX_F16};

/* ---- cases ------------------------------------------------------------- */

static void t_get_rows(void) {
    for (int i = 0; i < 3; i++) {
        lmx_array tab = H(FL[i], 2, 1000, 384, 0, 1), ids = H(LMX_I32, 1, 7, 0, 0, 0);
        for (int r = 0; r < 7; r++) ((int32_t *)ids.data)[r] = (int32_t)(urand() * 1000);
        lmx_array oc = HP(LMX_F32, 2, 7, 384, 0), dt = D(&tab), di = D(&ids), og = D(&oc);
        run2(lmx_get_rows(&cex, &oc, &tab, &ids), lmx_get_rows(&gex, &og, &dt, &di), "get_rows");
        char w[96];
        snprintf(w, sizeof w, "get_rows %s [1000,384] x7", dn(FL[i]));
        cmp(w, &oc, &og, 1e-6);
        rel(&tab), rel(&ids), rel(&oc), rel(&dt), rel(&di), rel(&og);
    }
}

static void t_matmul(void) {
    static const int64_t shapes[][2] = {{256, 512}, {1000, 4096}, {37, 100}, {2048, 2048}, {512, 2048}};
    static const int64_t Ms[] = {1, 3, 8, 9, 64};
    for (int wi = 0; wi < 3; wi++)
        for (int s = 0; s < 5; s++)
            for (int mi = 0; mi < 5; mi++)
                for (int strided = 0; strided < 2; strided++) {
                    int64_t N = shapes[s][0], K = shapes[s][1], M = Ms[mi];
                    if (strided && (s != 0 || (M != 3 && M != 64))) continue;
                    bool bias = (s + mi) % 2 == 1;
                    int64_t xw = strided ? K + 64 : K;
                    lmx_array xf = H(LMX_F32, 2, M, xw, 0, 1), w = H(FL[wi], 2, N, K, 0, 1.0 / sqrt((double)K));
                    lmx_array b = H(LMX_BF16, 1, N, 0, 0, 1), x;
                    lmx_array_cols(&x, &xf, strided ? 32 : 0, K);
                    lmx_array oc = HP(LMX_F32, 2, M, N, 0), dx = D(&xf), dw = D(&w), db = D(&b), og = D(&oc), gx;
                    lmx_array_cols(&gx, &dx, strided ? 32 : 0, K);
                    run2(lmx_matmul(&cex, &oc, &x, &w, bias ? &b : NULL),
                         lmx_matmul(&gex, &og, &gx, &dw, bias ? &db : NULL), "matmul");
                    char what[96];
                    snprintf(what, sizeof what, "matmul w %s M=%lld N=%lld K=%lld%s%s", dn(FL[wi]), (long long)M,
                             (long long)N, (long long)K, bias ? " +bias" : "", strided ? " strided x" : "");
                    double tol = 1e-5; /* GEMMs split x into hi + lo halves: f32-level */
                    cmp(what, &oc, &og, tol);
                    rel(&xf), rel(&w), rel(&b), rel(&oc), rel(&dx), rel(&dw), rel(&db), rel(&og);
                }
}

static void t_norms(void) {
    for (int i = 0; i < 3; i++)
        for (int add_one = 0; add_one < 2; add_one++) {
            int64_t C = i == 0 ? 4096 : i == 1 ? 896 : 64;
            lmx_array x = H(LMX_F32, 2, 5, C, 0, 3), w = H(FL[i], 1, C, 0, 0, 1);
            lmx_array oc = HP(LMX_F32, 2, 5, C, 0), dx = D(&x), dw = D(&w), og = D(&oc);
            run2(lmx_rms_norm(&cex, &oc, &x, &w, 1e-6f, add_one), lmx_rms_norm(&gex, &og, &dx, &dw, 1e-6f, add_one),
                 "rms_norm");
            char what[96];
            snprintf(what, sizeof what, "rms_norm [5,%lld] w %s add_one=%d", (long long)C, dn(FL[i]), add_one);
            cmp(what, &oc, &og, 1e-5);
            /* in place on both sides */
            run2(lmx_rms_norm(&cex, &x, &x, &w, 1e-5f, add_one), lmx_rms_norm(&gex, &dx, &dx, &dw, 1e-5f, add_one),
                 "rms_norm in place");
            snprintf(what, sizeof what, "rms_norm in place [5,%lld] w %s", (long long)C, dn(FL[i]));
            cmp(what, &x, &dx, 1e-5);
            lmx_array b = H(FL[i], 1, C, 0, 0, 1), db = D(&b);
            run2(lmx_layer_norm(&cex, &oc, &x, add_one ? &w : NULL, &b, 1e-5f),
                 lmx_layer_norm(&gex, &og, &dx, add_one ? &dw : NULL, &db, 1e-5f), "layer_norm");
            snprintf(what, sizeof what, "layer_norm [5,%lld] %s%s +b", (long long)C, add_one ? "w " : "", dn(FL[i]));
            cmp(what, &oc, &og, 1e-5);
            rel(&x), rel(&w), rel(&oc), rel(&dx), rel(&dw), rel(&og), rel(&b), rel(&db);
        }
}

static void t_rope(void) {
    for (int trad = 0; trad < 2; trad++)
        for (int partial = 0; partial < 2; partial++)
            for (int inplace = 0; inplace < 2; inplace++) {
                int64_t T = 6, Hh = 4, hd = 128;
                int dims = partial ? 64 : 128;
                float ms = partial ? 1.2f : 1.0f;
                int64_t pos0 = inplace ? 3000 : 17;
                lmx_array x = H(LMX_F32, 3, T, Hh, hd, 2), inv = H(LMX_F32, 1, dims / 2, 0, 0, 0);
                for (int k = 0; k < dims / 2; k++) ((float *)inv.data)[k] = powf(10000.0f, -2.0f * k / dims);
                lmx_array dx = D(&x), dinv = D(&inv), oc, og;
                if (inplace) {
                    oc = x;
                    og = dx;
                } else {
                    oc = HP(LMX_F32, 3, T, Hh, hd);
                    og = D(&oc);
                }
                run2(lmx_rope(&cex, &oc, &x, &inv, pos0, dims, trad, ms), lmx_rope(&gex, &og, &dx, &dinv, pos0, dims, trad, ms),
                     "rope");
                char what[96];
                snprintf(what, sizeof what, "rope [6,4,128] dims=%d %s pos0=%lld mscale=%.1f%s", dims,
                         trad ? "traditional" : "rotate_half", (long long)pos0, ms, inplace ? " in place" : "");
                cmp(what, &oc, &og, 1e-5);
                if (!inplace) rel(&oc), rel(&og);
                rel(&x), rel(&inv), rel(&dx), rel(&dinv);
            }
}

static void t_attention(void) {
    struct {
        int64_t T, pos0, S, H, Hkv, hd;
        int window;
        float cap;
    } cs[] = {
        {1, 299, 300, 8, 2, 64, 0, 0},      {1, 2999, 4096, 32, 8, 128, 0, 0}, {40, 0, 64, 8, 2, 64, 0, 0},
        {7, 100, 128, 4, 4, 128, 16, 0},    {1, 500, 512, 8, 4, 256, 0, 50.0f}, {33, 20, 64, 6, 2, 80, 8, 30.0f},
        {128, 0, 128, 16, 4, 64, 0, 0},     {48, 100, 160, 8, 2, 128, 16, 30.0f}, {200, 0, 256, 4, 1, 128, 0, 0},
        {17, 3, 20, 2, 2, 64, 0, 0},         {1, 20000, 20001, 8, 2, 64, 0, 0},  {3, 700, 703, 16, 1, 128, 0, 0},
        /* prefill shapes of the tensor-core kernel: a partial last query tile, a window inside a long range */
        {300, 44, 344, 8, 2, 128, 0, 0},     {161, 7, 168, 4, 2, 64, 50, 0},   {512, 0, 512, 8, 2, 128, 0, 0},
    };
    for (size_t c = 0; c < sizeof cs / sizeof *cs; c++)
        for (int di = 0; di < 3; di++) {
            int64_t T = cs[c].T, Hh = cs[c].H, Hkv = cs[c].Hkv, hd = cs[c].hd, S = cs[c].S;
            lmx_array q = H(LMX_F32, 3, T, Hh, hd, 1), k = H(FL[di], 3, S, Hkv, hd, 1), v = H(FL[di], 3, S, Hkv, hd, 1);
            lmx_array oc = HP(LMX_F32, 2, T, Hh * hd, 0), dq = D(&q), dk = D(&k), dv = D(&v), og = D(&oc);
            float scale = 1.0f / sqrtf((float)hd) * 2.0f;
            run2(lmx_attention(&cex, &oc, &q, &k, &v, cs[c].pos0, scale, cs[c].cap, cs[c].window),
                 lmx_attention(&gex, &og, &dq, &dk, &dv, cs[c].pos0, scale, cs[c].cap, cs[c].window), "attention");
            char what[112];
            snprintf(what, sizeof what, "attention T=%lld pos0=%lld H=%lld/%lld hd=%lld kv %s%s%s", (long long)T,
                     (long long)cs[c].pos0, (long long)Hh, (long long)Hkv, (long long)hd, dn(FL[di]),
                     cs[c].window ? " window" : "", cs[c].cap > 0 ? " softcap" : "");
            cmp(what, &oc, &og, 1e-5);
            rel(&q), rel(&k), rel(&v), rel(&oc), rel(&dq), rel(&dk), rel(&dv), rel(&og);
        }
}

static void t_elementwise(void) {
    for (int i = 0; i < 3; i++)
        for (int bc = 0; bc < 2; bc++)
            for (int op = 0; op < 2; op++) {
                lmx_array a = H(LMX_F32, 2, 7, 300, 0, 2), b = bc ? H(FL[i], 1, 300, 0, 0, 2) : H(FL[i], 2, 7, 300, 0, 2);
                lmx_array oc = HP(LMX_F32, 2, 7, 300, 0), da = D(&a), db = D(&b), og = D(&oc);
                run2(op ? lmx_mul(&cex, &oc, &a, &b) : lmx_add(&cex, &oc, &a, &b),
                     op ? lmx_mul(&gex, &og, &da, &db) : lmx_add(&gex, &og, &da, &db), "add/mul");
                char what[96];
                snprintf(what, sizeof what, "%s f32 + %s%s", op ? "mul" : "add", dn(FL[i]), bc ? " (row broadcast)" : "");
                cmp(what, &oc, &og, 1e-6);
                rel(&a), rel(&b), rel(&oc), rel(&da), rel(&db), rel(&og);
            }
    lmx_array a = H(LMX_F32, 2, 9, 1000, 0, 8), oc = HP(LMX_F32, 2, 9, 1000, 0), da = D(&a), og = D(&oc);
    run2(lmx_scale(&cex, &oc, &a, 0.37f), lmx_scale(&gex, &og, &da, 0.37f), "scale");
    cmp("scale [9,1000]", &oc, &og, 1e-6);
    run2(lmx_softcap(&cex, &oc, &a, 5.0f), lmx_softcap(&gex, &og, &da, 5.0f), "softcap");
    cmp("softcap [9,1000] c=5", &oc, &og, 1e-6);
    run2(lmx_softmax(&cex, &oc, &a), lmx_softmax(&gex, &og, &da), "softmax");
    cmp("softmax [9,1000]", &oc, &og, 1e-5);
    rel(&a), rel(&oc), rel(&da), rel(&og);
    static const char *acts[] = {"silu", "gelu_erf", "gelu_tanh", "relu"};
    for (int act = 0; act < 4; act++)
        for (int gated = 0; gated < 2; gated++) {
            /* gate and up as column views of one fused [R, 2F] output */
            int64_t R = 5, F = 700;
            lmx_array gu = H(LMX_F32, 2, R, 2 * F, 0, 4), dgu = D(&gu), g1, u1, g2, u2;
            lmx_array_cols(&g1, &gu, 0, F);
            lmx_array_cols(&u1, &gu, F, F);
            lmx_array_cols(&g2, &dgu, 0, F);
            lmx_array_cols(&u2, &dgu, F, F);
            lmx_array oc2 = HP(LMX_F32, 2, R, F, 0), og2 = D(&oc2);
            run2(lmx_act(&cex, &oc2, &g1, gated ? &u1 : NULL, act), lmx_act(&gex, &og2, &g2, gated ? &u2 : NULL, act),
                 "act");
            char what[96];
            snprintf(what, sizeof what, "act %s%s (column views)", acts[act], gated ? " gated" : "");
            cmp(what, &oc2, &og2, 1e-5);
            rel(&gu), rel(&dgu), rel(&oc2), rel(&og2);
        }
}

static void t_copy(void) {
    /* into strided destination rows (a KV cache slot of a wider row) */
    for (int si = 0; si < 3; si++)
        for (int di = 0; di < 3; di++) {
            lmx_array src = H(FL[si], 2, 6, 256, 0, 3), dst = HP(FL[di], 2, 6, 512, 0);
            lmx_array ds = D(&src), dd = D(&dst), vc, vg;
            lmx_array_cols(&vc, &dst, 128, 256);
            lmx_array_cols(&vg, &dd, 128, 256);
            run2(lmx_copy(&cex, &vc, &src), lmx_copy(&gex, &vg, &ds), "copy");
            char what[96];
            snprintf(what, sizeof what, "copy %s -> %s (strided destination rows)", dn(FL[si]), dn(FL[di]));
            cmp(what, &dst, &dd, 1e-7);
            rel(&src), rel(&dst), rel(&ds), rel(&dd);
        }
    lmx_array src = H(LMX_I32, 2, 4, 33, 0, 0);
    for (int i = 0; i < 4 * 33; i++) ((int32_t *)src.data)[i] = (int32_t)(urand() * 1e6);
    /* the CPU backend copies float rows only: the reference is the source */
    lmx_array dst = H(LMX_I32, 2, 4, 33, 0, 0), ds = D(&src), dd = D(&dst);
    run2(LMX_OK, lmx_copy(&gex, &dd, &ds), "copy i32");
    cmp("copy int32 -> int32 (reference: the source)", &src, &dd, 0);
    rel(&src), rel(&dst), rel(&ds), rel(&dd);
}

/* ---- quantized weights ------------------------------------------------------ */

static const gq_spec QSPECS[] = {
    {LMX_Q4_0, 0, LMX_F32, false, "gguf q4_0"},
    {LMX_Q4_1, 0, LMX_F32, false, "gguf q4_1"},
    {LMX_Q5_0, 0, LMX_F32, false, "gguf q5_0"},
    {LMX_Q5_1, 0, LMX_F32, false, "gguf q5_1"},
    {LMX_Q8_0, 0, LMX_F32, false, "gguf q8_0"},
    {LMX_Q2_K, 0, LMX_F32, false, "gguf q2_K"},
    {LMX_Q3_K, 0, LMX_F32, false, "gguf q3_K"},
    {LMX_Q4_K, 0, LMX_F32, false, "gguf q4_K"},
    {LMX_Q5_K, 0, LMX_F32, false, "gguf q5_K"},
    {LMX_Q6_K, 0, LMX_F32, false, "gguf q6_K"},
    {LMX_MLX_Q4, 32, LMX_BF16, true, "mlx 4-bit g32 bf16"},
    {LMX_MLX_Q4, 64, LMX_F16, true, "mlx 4-bit g64 f16"},
    {LMX_MLX_Q4, 128, LMX_F32, true, "mlx 4-bit g128 f32"},
    {LMX_MLX_Q8, 32, LMX_F16, true, "mlx 8-bit g32 f16"},
    {LMX_MLX_Q8, 64, LMX_BF16, true, "mlx 8-bit g64 bf16"},
    {LMX_MLX_Q8, 128, LMX_F32, true, "mlx 8-bit g128 f32"},
    {LMX_MLX_Q2, 64, LMX_BF16, true, "mlx 2-bit g64 bf16"},
    {LMX_MLX_Q3, 32, LMX_F16, true, "mlx 3-bit g32 f16"},
    {LMX_MLX_Q5, 128, LMX_BF16, true, "mlx 5-bit g128 bf16"},
    {LMX_MLX_Q6, 64, LMX_F32, true, "mlx 6-bit g64 f32"},
    {LMX_MLX_FP4, 32, LMX_E8M0, false, "mxfp4 g32"},
    {LMX_MLX_FP4, 16, LMX_E4M3, false, "nvfp4 g16"},
    {LMX_MLX_FP8, 32, LMX_E8M0, false, "mxfp8 g32"},
};
#define N_QSPECS (sizeof QSPECS / sizeof *QSPECS)

/* Shapes: a wide one, one whose GGUF K-quant / 3-bit rows are not 16-byte
 * aligned (768 = 3 super-blocks), and for 32-wide units K = 96 (Q4_0 rows of
 * 54 bytes) where the group divides it. */
static bool qshape_ok(const gq_spec *q, int64_t K) {
    const lmx_dtype_traits *t = lmx_dtype_info(q->dt);
    return K % t->block == 0 && (!q->group || K % q->group == 0);
}

static void q_matmul_case(const gq_spec *q, int64_t M, int64_t N, int64_t K, bool bias, bool strided, const char *tag) {
    lmx_array w, sc, bi;
    if (gq_make(&rng, q, N, K, &w, &sc, &bi)) die("quant alloc");
    int64_t xw = strided ? K + 64 : K;
    lmx_array xf = H(LMX_F32, 2, M, xw, 0, 1), b = H(LMX_BF16, 1, N, 0, 0, 1), x, gx;
    lmx_array_cols(&x, &xf, strided ? 32 : 0, K);
    lmx_array oc = HP(LMX_F32, 2, M, N, 0), dx = D(&xf), dw = D(&w), db = D(&b), og = D(&oc), dsc, dbi;
    memset(&dsc, 0, sizeof dsc);
    memset(&dbi, 0, sizeof dbi);
    if (!lmx_array_empty(&sc)) dsc = D(&sc);
    if (!lmx_array_empty(&bi)) dbi = D(&bi);
    lmx_array_cols(&gx, &dx, strided ? 32 : 0, K);
    run2(lmx_matmul_q(&cex, &oc, &x, &w, bias ? &b : NULL, gq_opt(&sc), gq_opt(&bi), q->group),
         lmx_matmul_q(&gex, &og, &gx, &dw, bias ? &db : NULL, gq_opt(&dsc), gq_opt(&dbi), q->group), "matmul_q");
    char what[112];
    snprintf(what, sizeof what, "matmul %s%s M=%lld N=%lld K=%lld%s%s", q->label, tag, (long long)M, (long long)N,
             (long long)K, bias ? " +bias" : "", strided ? " strided x" : "");
    cmp(what, &oc, &og, 1e-5);
    lmx_array *all[] = {&w, &sc, &bi, &xf, &b, &oc, &dx, &dw, &db, &og, &dsc, &dbi};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) rel(all[i]);
}

static void t_quant_matmul(void) {
    static const int64_t shapes[][2] = {{256, 4096}, {37, 768}, {19, 96}};
    static const int64_t Ms[] = {1, 3, 8, 9, 64};
    for (size_t qi = 0; qi < N_QSPECS; qi++)
        for (int s = 0; s < 3; s++) {
            if (!qshape_ok(&QSPECS[qi], shapes[s][1])) continue;
            for (int mi = 0; mi < 5; mi++) {
                if (s > 0 && (Ms[mi] == 3 || Ms[mi] == 9)) continue;
                q_matmul_case(&QSPECS[qi], Ms[mi], shapes[s][0], shapes[s][1], (qi + s + mi) % 2 == 1, false, "");
            }
        }
    q_matmul_case(&QSPECS[11], 3, 256, 4096, true, true, "");
    q_matmul_case(&QSPECS[0], 3, 37, 768, false, true, "");
}

/* M = 1 on a second backend (LMX_CUDA_QGEMV=staged|old|r4|r8,
 * read when it starts): MLX 4/8-bit, and with gguf also Q4_0 / Q6_K (the lane-mapped
 * kernels of cuda_qgemv_gguf.cu at both row counts, or the staged kernel). */
static void t_quant_matmul_on(lmx_backend *b, const char *tag, bool gguf) {
    lmx_backend *keep = gpu;
    gpu = b;
    gex.backend = b;
    for (size_t qi = 0; qi < N_QSPECS; qi++) {
        lmx_dtype dt = QSPECS[qi].dt;
        bool mlx = dt == LMX_MLX_Q4 || dt == LMX_MLX_Q8;
        if (!mlx && !(gguf && (dt == LMX_Q4_0 || dt == LMX_Q6_K))) continue;
        q_matmul_case(&QSPECS[qi], 1, 256, 4096, false, false, tag);
        q_matmul_case(&QSPECS[qi], 1, 37, 768, true, false, tag);
        if (mlx) q_matmul_case(&QSPECS[qi], 8, 37, 768, true, false, tag);
    }
    gpu = keep;
    gex.backend = keep;
}

/* Shapes the decode kernels split differently: many row groups per block
 * (x staged once per block, MLX), a K that is not a whole warp round. */
static void t_quant_matmul_wide(void) {
    for (size_t qi = 0; qi < N_QSPECS; qi++) {
        lmx_dtype dt = QSPECS[qi].dt;
        if (dt != LMX_MLX_Q4 && dt != LMX_MLX_Q8 && dt != LMX_Q4_0 && dt != LMX_Q6_K) continue;
        if (qshape_ok(&QSPECS[qi], 1024)) q_matmul_case(&QSPECS[qi], 1, 20000, 1024, qi % 2 == 0, false, " wide");
        if (qshape_ok(&QSPECS[qi], 1280)) q_matmul_case(&QSPECS[qi], 1, 99, 1280, true, false, "");
    }
}

/* M = 1 with x quantized to int8 (GGUF Q4_0 / Q8_0, LMX_INT8_ACT on) on
 * backend b, against the CPU's int8 format (cpu_qdot.c) computed here with
 * the same f32 operations: per block amax, d = amax/127, q = rne(x·127/amax).
 * The block dots Σ w·q are exact in double (w = d_w·n exactly), so
 * y_q = Σ_b d_b·Σ w·q is the exact result on that quantized x; the device's
 * f32 part may differ by γ_n·Σ_b |d_b|·Σ|w·q|, n = K/32 + 16 (lane partials,
 * warp and split-K sums, bias). Against the f32 product the CPU test's bound
 * (test_simd_kernels.c) adds Σ_b d_b·(0.5 + 2.3e-5)·Σ|w|. */
static void int8_case(lmx_dtype dt, int64_t N, int64_t K, bool bias, const char *tag) {
    const gq_spec q = {dt, 0, LMX_F32, false, dt == LMX_Q4_0 ? "gguf q4_0" : "gguf q8_0"};
    lmx_array w, sc, bi;
    if (gq_make(&rng, &q, N, K, &w, &sc, &bi)) die("quant alloc");
    lmx_array x = H(LMX_F32, 2, 1, K, 0, 1), b = H(LMX_BF16, 1, N, 0, 0, 1);
    lmx_array og = HP(LMX_F32, 2, 1, N, 0), dx = D(&x), dw = D(&w), db = D(&b), dog = D(&og);
    if (lmx_matmul_q(&gex, &dog, &dx, &dw, bias ? &db : NULL, NULL, NULL, 0)) die("matmul_q int8");
    float *y = malloc((size_t)N * sizeof *y), *wf = malloc((size_t)K * sizeof *wf), bf[1];
    float *qx = malloc((size_t)K * sizeof *qx), *dxb = malloc((size_t)(K / 32) * sizeof *dxb);
    if (lmx_backend_download(gpu, y, dog.data, (size_t)N * sizeof *y)) die("download");
    const float *xf = (const float *)x.data;
    for (int64_t blk = 0; blk < K / 32; blk++) { /* cpu_qdot.c's lmx_qx_quantize_generic, f32 */
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fabsf(xf[32 * blk + j]) > amax ? fabsf(xf[32 * blk + j]) : amax;
        volatile float db0 = amax / 127.0f, id = amax > 0 ? 127.0f / amax : 0.0f;
        dxb[blk] = db0;
        for (int j = 0; j < 32; j++) {
            volatile float v = xf[32 * blk + j] * id;
            qx[32 * blk + j] = id != 0.0f ? rintf(v) : 0.0f;
        }
    }
    size_t rb = lmx_dtype_bytes(dt, K);
    int64_t bad = 0;
    double worst = 0;
    for (int64_t r = 0; r < N; r++) {
        lmx_dtype_info(dt)->to_f32((const uint8_t *)w.data + (size_t)r * rb, wf, K);
        double yq = 0, yf = 0, s1 = 0, sq = 0;
        for (int64_t blk = 0; blk < K / 32; blk++) {
            double dot = 0, aw = 0, aq = 0;
            for (int j = 0; j < 32; j++) {
                int64_t k = 32 * blk + j;
                dot += (double)wf[k] * qx[k];
                aq += fabs((double)wf[k] * qx[k]); /* bounds every lane's partial dot */
                aw += fabs(wf[k]);
                yf += (double)wf[k] * xf[k];
            }
            yq += dxb[blk] * dot;
            s1 += fabs(dxb[blk]) * aq;
            sq += dxb[blk] * (0.5 + 2.3e-5) * aw;
        }
        if (bias) {
            lmx_dtype_info(LMX_BF16)->to_f32((const uint8_t *)b.data + 2 * r, bf, 1);
            yq += bf[0], yf += bf[0], s1 += fabs(bf[0]);
        }
        double n = (double)(K / 32 + 16), tf = n * 5.9604645e-8 / (1 - n * 5.9604645e-8) * s1 + 1e-30;
        double e1 = fabs(y[r] - yq), e2 = fabs(y[r] - yf);
        if (!(e1 <= tf) || !(e2 <= sq + tf)) bad++;
        if (e1 / tf > worst) worst = e1 / tf;
    }
    char what[128];
    snprintf(what, sizeof what, "matmul %s int8 x%s M=1 N=%lld K=%lld%s (worst %.2f of the f32 bound)", q.label, tag,
             (long long)N, (long long)K, bias ? " +bias" : "", worst);
    printf("%s %s\n", bad ? "FAIL" : "ok  ", what);
    bad ? n_bad++ : n_ok++;
    free(y), free(wf), free(qx), free(dxb);
    lmx_array *all[] = {&w, &sc, &bi, &x, &b, &og, &dx, &dw, &db, &dog};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) rel(all[i]);
}

static void t_int8_gemv_on(lmx_backend *b, const char *tag) {
    lmx_backend *keep = gpu;
    gpu = b;
    gex.backend = b;
    static const int64_t shapes[][2] = {{256, 4096}, {37, 768}, {19, 96}, {20000, 1024}, {99, 1280}};
    for (int t = 0; t < 2; t++)
        for (int s = 0; s < 5; s++) int8_case(t ? LMX_Q8_0 : LMX_Q4_0, shapes[s][0], shapes[s][1], s % 2 == 1, tag);
    gpu = keep;
    gex.backend = keep;
}

static void t_quant_get_rows(void) {
    for (size_t qi = 0; qi < N_QSPECS; qi++) {
        const gq_spec *q = &QSPECS[qi];
        int64_t V = 300, K = 768;
        lmx_array w, sc, bi;
        if (gq_make(&rng, q, V, K, &w, &sc, &bi)) die("quant alloc");
        lmx_array ids = H(LMX_I32, 1, 7, 0, 0, 0);
        for (int r = 0; r < 7; r++) ((int32_t *)ids.data)[r] = r == 6 ? ((int32_t *)ids.data)[0] : (int32_t)(urand() * V);
        lmx_array oc = HP(LMX_F32, 2, 7, K, 0), dw = D(&w), di = D(&ids), og = D(&oc), dsc, dbi;
        memset(&dsc, 0, sizeof dsc);
        memset(&dbi, 0, sizeof dbi);
        if (!lmx_array_empty(&sc)) dsc = D(&sc);
        if (!lmx_array_empty(&bi)) dbi = D(&bi);
        run2(lmx_get_rows_q(&cex, &oc, &w, &ids, gq_opt(&sc), gq_opt(&bi), q->group),
             lmx_get_rows_q(&gex, &og, &dw, &di, gq_opt(&dsc), gq_opt(&dbi), q->group), "get_rows_q");
        char what[112];
        snprintf(what, sizeof what, "get_rows %s [300,768] x7", q->label);
        cmp(what, &oc, &og, 1e-6);
        lmx_array *all[] = {&w, &sc, &bi, &ids, &oc, &dw, &di, &og, &dsc, &dbi};
        for (size_t i = 0; i < sizeof all / sizeof *all; i++) rel(all[i]);
    }
}

/* A decode-like sequence captured as one CUDA graph and replayed must match
 * the eager run (kernels queue no host synchronisation). */
static void t_graph(void) {
    int64_t D0 = 1024, N = 3072;
    lmx_array x = H(LMX_F32, 2, 1, D0, 0, 1), w = H(LMX_BF16, 2, N, D0, 0, 0.03), nw = H(LMX_BF16, 1, D0, 0, 0, 1);
    lmx_array dx = D(&x), dw = D(&w), dnw = D(&nw);
    lmx_array h = HP(LMX_F32, 2, 1, D0, 0), y = HP(LMX_F32, 2, 1, N, 0), a = HP(LMX_F32, 2, 1, N / 2, 0);
    lmx_array dh = D(&h), dy = D(&y), da = D(&a), dy2 = D(&y), da2 = D(&a), g, u;
    lmx_array_cols(&g, &dy, 0, N / 2);
    lmx_array_cols(&u, &dy, N / 2, N / 2);
    if (lmx_rms_norm(&gex, &dh, &dx, &dnw, 1e-5f, false) || lmx_matmul(&gex, &dy, &dh, &dw, NULL) ||
        lmx_act(&gex, &da, &g, &u, LMX_ACT_SILU))
        die("eager");
    lmx_array_cols(&g, &dy2, 0, N / 2);
    lmx_array_cols(&u, &dy2, N / 2, N / 2);
    lmx_status s = lmx_cuda_graph_begin(gpu);
    if (!s) s = lmx_rms_norm(&gex, &dh, &dx, &dnw, 1e-5f, false);
    if (!s) s = lmx_matmul(&gex, &dy2, &dh, &dw, NULL);
    if (!s) s = lmx_act(&gex, &da2, &g, &u, LMX_ACT_SILU);
    lmx_status e = lmx_cuda_graph_end(gpu, 0);
    if (!s) s = e;
    for (int i = 0; i < 3 && !s; i++) s = lmx_cuda_graph_launch(gpu, 0);
    if (s) {
        printf("FAIL graph capture: %s\n", lmx_last_error());
        n_bad++;
    } else {
        lmx_array ref = HP(LMX_F32, 2, 1, N / 2, 0);
        if (lmx_array_download(gpu, &da, ref.data)) die("download");
        cmp("graph replay of rms_norm+matmul+act == eager", &ref, &da2, 0);
        rel(&ref);
    }
    lmx_array *all[] = {&x, &w, &nw, &dx, &dw, &dnw, &h, &y, &a, &dh, &dy, &da, &dy2, &da2};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) rel(all[i]);
}

/* ---- greedy pick (cuda_sample.cu) ----------------------------------------- */

/* CPU reference of one row of lmx_cuda_greedy: over the finite values, the
 * first index of the max, the max at any other index, log sum exp (double). */
static void greedy_ref(const float *x, int64_t V, lmx_cuda_pick *p) {
    int64_t id = -1;
    int nf = 0;
    for (int64_t i = 0; i < V; i++) {
        if (!isfinite(x[i])) {
            nf++;
            continue;
        }
        if (id < 0 || x[i] > x[id]) id = i;
    }
    double second = -INFINITY, sum = 0;
    for (int64_t i = 0; id >= 0 && i < V; i++) {
        if (!isfinite(x[i])) continue;
        if (i != id && x[i] > second) second = x[i];
        sum += exp((double)x[i] - x[id]);
    }
    p->id = (int32_t)id;
    p->n_nonfinite = nf;
    p->max = id >= 0 ? x[id] : -INFINITY;
    p->second = (float)second;
    p->lse = id >= 0 ? (float)(x[id] + log(sum)) : -INFINITY;
}

/* Rows of x [R, V] through the device; id, max, second and the non-finite
 * count must equal the reference exactly; lse within 2e-5 + 4e-7·|lse|:
 * each thread sums <= 126 terms in f32 and 10 merge levels follow, a
 * relative error of the sum <= ~8e-6 (log: the same, absolute), plus the
 * f32 rounding of lse itself. */
static void greedy_case(const char *what, const float *x, int64_t R, int64_t V) {
    lmx_array h;
    int64_t sh[2] = {R, V};
    if (lmx_array_alloc(&h, LMX_F32, 2, sh)) die("alloc");
    memcpy(h.data, x, (size_t)(R * V) * sizeof *x);
    lmx_array d = D(&h);
    lmx_cuda_pick got[4];
    memset(got, 0xff, sizeof got); /* poison: every field must be written */
    lmx_status s = lmx_cuda_greedy(gpu, &d, got);
    bool ok = s == LMX_OK;
    double worst = 0;
    for (int64_t r = 0; r < R && ok; r++) {
        lmx_cuda_pick want;
        greedy_ref(x + r * V, V, &want);
        double dl = fabs((double)got[r].lse - want.lse);
        if (dl > worst || isnan(dl)) worst = dl;
        bool same = got[r].id == want.id && got[r].n_nonfinite == want.n_nonfinite &&
                    !memcmp(&got[r].max, &want.max, 4) && !memcmp(&got[r].second, &want.second, 4) &&
                    dl <= 2e-5 + 4e-7 * fabs(want.lse);
        if (!same)
            printf("     row %lld: id %d/%d nonfinite %d/%d max %.9g/%.9g second %.9g/%.9g lse %.9g/%.9g\n",
                   (long long)r, got[r].id, want.id, got[r].n_nonfinite, want.n_nonfinite, got[r].max, want.max,
                   got[r].second, want.second, got[r].lse, want.lse);
        ok = ok && same;
    }
    printf("%s greedy %-51s lse |d| %.2e (tol 2e-5 + 4e-7|lse|)", ok ? "ok  " : "FAIL", what, worst);
    if (s) printf(" %s", lmx_last_error());
    printf("\n");
    ok ? n_ok++ : n_bad++;
    rel(&h);
    rel(&d);
}

static void t_greedy(void) {
    static const int64_t vocabs[] = {1, 7, 1023, 1024, 1025, 4097, 4099, 32000, 128256, 151936};
    char what[96];
    for (size_t vi = 0; vi < sizeof vocabs / sizeof *vocabs; vi++) {
        int64_t V = vocabs[vi], R = V > 1000 ? 3 : 2;
        float *x = malloc((size_t)(R * V) * sizeof *x);
        for (int64_t i = 0; i < R * V; i++) x[i] = (float)((urand() + urand() + urand() - 1.5) * 6);
        snprintf(what, sizeof what, "random V=%lld R=%lld", (long long)V, (long long)R);
        greedy_case(what, x, R, V);
        if (V >= 8) {
            /* ties: the max at several indices, in different threads, warps,
             * and in one thread's later stride; the lowest index must win */
            int64_t at[5] = {V - 1, V / 2, 1024 + 5 < V ? 1024 + 5 : V - 2, 5, 37 < V ? 37 : 6};
            for (int64_t r = 0; r < R; r++)
                for (int j = 0; j < 5 - (int)r; j++) x[r * V + at[j]] = 40.0f;
            snprintf(what, sizeof what, "ties V=%lld", (long long)V);
            greedy_case(what, x, R, V);
            /* a near tie one f32 step apart, the smaller one first; the max at 0 / at V-1 */
            for (int64_t i = 0; i < R * V; i++) x[i] = (float)((urand() - 0.5) * 4);
            x[3] = nextafterf(41.0f, 0.0f);
            x[V - 2] = 41.0f;
            x[V + 0] = 50.0f;
            x[(R - 1) * V + V - 1] = 60.0f;
            snprintf(what, sizeof what, "near tie, max first/last V=%lld", (long long)V);
            greedy_case(what, x, R, V);
            /* NaN and infinities are counted and skipped */
            x[V / 3] = NAN;
            x[V / 4] = INFINITY;
            x[V + 1] = -INFINITY;
            snprintf(what, sizeof what, "non-finite V=%lld", (long long)V);
            greedy_case(what, x, R, V);
            /* a flat row: every index ties, lse = x + log V */
            for (int64_t i = 0; i < V; i++) x[i] = -3.5f;
            snprintf(what, sizeof what, "flat V=%lld", (long long)V);
            greedy_case(what, x, 1, V);
        }
        free(x);
    }
    /* refusals, not crashes: bf16 logits, a host backend */
    lmx_array hb = H(LMX_BF16, 2, 1, 64, 0, 1), db = D(&hb);
    lmx_cuda_pick p;
    bool refused = lmx_cuda_greedy(gpu, &db, &p) != LMX_OK && lmx_cuda_greedy(cpu, &hb, &p) != LMX_OK;
    printf("%s greedy refuses bf16 logits and a host backend\n", refused ? "ok  " : "FAIL");
    refused ? n_ok++ : n_bad++;
    rel(&hb);
    rel(&db);
    /* time per call at V = 128256 (launch + kernel + 20-byte read back), informational */
    int64_t V = 128256, sh[2] = {1, V};
    lmx_array h, d;
    if (lmx_array_alloc(&h, LMX_F32, 2, sh)) die("alloc");
    for (int64_t i = 0; i < V; i++) ((float *)h.data)[i] = (float)urand();
    d = D(&h);
    struct timespec t0, t1;
    for (int i = 0; i < 10; i++) (void)lmx_cuda_greedy(gpu, &d, &p);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 200; i++) (void)lmx_cuda_greedy(gpu, &d, &p);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double per_call = ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / 200 / 1e3;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 200; i++) (void)lmx_backend_download(gpu, &p, d.data, sizeof p);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("     greedy pick V=128256: %.1f us per call (launch + kernel + read back, mean of 200); "
           "the 20-byte read back + sync alone: %.1f us\n",
           per_call, ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / 200 / 1e3);
    rel(&h);
    rel(&d);
}

int main(void) {
    char why[256];
    if (lmx_cuda_device_count(why, sizeof why) <= 0) {
        printf("SKIP test_cuda_ops: %s\n", why);
        return 77;
    }
    const char *seed = getenv("LMX_TEST_SEED");
    rng = seed ? strtoull(seed, NULL, 10) : (uint64_t)time(NULL) * 2654435761u;
    if (!rng) rng = 1;
    setenv("LMX_CPU", "reference", 0); /* the oracle: plain-C kernels (read when the CPU backend starts) */
    /* the 1e-5 bounds are the exact (bf16 hi + lo) mode's; the default rounds
     * x to bf16 once (~1e-2), which the model goldens bound instead */
    setenv("LMX_CUDA_EXACT", "1", 0);
    const char *ia = getenv("LMX_INT8_ACT");
    setenv("LMX_INT8_ACT", "0", 1); /* the f32-x kernels against the f32 oracle; int8 x: t_int8_gemv_on */
    if (lmx_backend_create("cpu", 0, &cpu) || lmx_backend_create("cuda", 0, &gpu)) die("backend");
    cex.backend = cpu;
    gex.backend = gpu;
    char info[256];
    if (lmx_cuda_device_info(info, sizeof info)) die("device info");
    printf("device: %s\nseed: %llu\n", info, (unsigned long long)rng);
    size_t base = lmx_cuda_mem_in_use(gpu);
    /* "quant" / "greedy": those cases alone (for the sanitizers) */
    const char *only = getenv("LMX_TEST_ONLY");
    if (only && !strcmp(only, "greedy")) {
        t_greedy();
        lmx_backend_free(gpu);
        lmx_backend_free(cpu);
        printf("%d passed, %d failed\n", n_ok, n_bad);
        return n_bad ? 1 : 0;
    }
    if (!only || strcmp(only, "quant")) {
        t_get_rows();
        t_matmul();
        t_norms();
        t_rope();
        t_attention();
        t_elementwise();
        t_copy();
        t_graph();
        t_greedy();
    }
    t_quant_get_rows();
    t_quant_matmul();
    size_t after = lmx_cuda_mem_in_use(gpu);
    bool mem_ok = after <= base + (64u << 20); /* scratch may have grown; arrays are all freed */
    printf("%s device memory: %zu bytes held at start, %zu after all cases (peak %zu)\n", mem_ok ? "ok  " : "FAIL",
           base, after, lmx_cuda_mem_peak(gpu));
    mem_ok ? n_ok++ : n_bad++;
    t_quant_matmul_wide();
    const char *qg = getenv("LMX_CUDA_QGEMV");
    static const char *const modes[][2] = {
        {"staged", " [staged]"}, {"old", " [old]"}, {"r4", " [r4]"}, {"r8", " [r8]"}};
    for (int i = 0; i < 4; i++) {
        setenv("LMX_CUDA_QGEMV", modes[i][0], 1);
        lmx_backend *other;
        if (lmx_backend_create("cuda", 0, &other)) die("second backend");
        t_quant_matmul_on(other, modes[i][1], true);
        lmx_backend_free(other);
    }
    setenv("LMX_INT8_ACT", "1", 1);
    for (int i = 0; i < 3; i++) { /* i = 2: Q4_0 uploaded in the file layout (cuda_qgemv_q8act.cu) */
        if (i == 1) setenv("LMX_CUDA_QGEMV", "r8", 1);
        else unsetenv("LMX_CUDA_QGEMV");
        if (i == 2) setenv("LMX_CUDA_Q4_REPACK", "0", 1); /* read at each upload */
        lmx_backend *other;
        if (lmx_backend_create("cuda", 0, &other)) die("int8 backend");
        t_int8_gemv_on(other, i == 1 ? " [r8]" : i == 2 ? " [file layout]" : "");
        lmx_backend_free(other);
    }
    unsetenv("LMX_CUDA_Q4_REPACK");
    if (ia) setenv("LMX_INT8_ACT", ia, 1);
    else unsetenv("LMX_INT8_ACT");
    if (qg) setenv("LMX_CUDA_QGEMV", qg, 1);
    else unsetenv("LMX_CUDA_QGEMV");
    lmx_backend_free(gpu);
    lmx_backend_free(cpu);
    printf("%d passed, %d failed\n", n_ok, n_bad);
    return n_bad ? 1 : 0;
}
