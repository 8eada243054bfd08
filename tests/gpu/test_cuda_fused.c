/* test_cuda_fused.c - the fused decode-step ops and the GQA decode
 * attention kernel on CUDA (src/backend/cuda/cuda_fused.cu,
 * cuda_attention_gqa.cu):
 *
 * 1. add_rms_norm and rope_kv on CUDA against the CPU's (the plain kernels
 *    in sequence; LMX_CPU=reference): rel RMS <= 1e-5 (rope: sincosf vs the
 *    host's sin/cos), every written element finite, the untouched ones
 *    still poisoned. Both the written source (x; q, k) and the outputs.
 *    The k cache in bf16/f16: one ulp of the dtype (4e-3 / 5e-4), since
 *    rounding the rotated value can go either way (seen: f16 2.6e-5 once).
 * 2. The same ops on CUDA against the plain CUDA ops in sequence
 *    (add + rms_norm; rope + rope + copy + copy): bit-identical (memcmp),
 *    since the fused kernels repeat the plain kernels' arithmetic. And
 *    add_rms_norm with out == d (a device scratch may alias them; not yet
 *    run on a GPU when written).
 * 3. Decode attention at the shapes the GQA kernel takes (hd 64/128, G =
 *    1..8, f32/bf16/f16 caches, window, soft-cap, S up to 4096, T = 1..3)
 *    against the CPU reference: 1e-5 (test_cuda_ops' bound).
 * Fresh random inputs (seed printed; LMX_TEST_SEED=n repeats one).
 * Exits 77 when no CUDA device answers. */
#include "backend/cuda/cuda.h"
#include "core/ops.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static lmx_backend *cpu, *gpu;
static lmx_exec cex, gex;
static uint64_t rng;
static int n_ok, n_bad;

static double urand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}
static void die(const char *what) {
    fprintf(stderr, "FATAL %s: %s\n", what, lmx_last_error());
    exit(1);
}
static lmx_array H(lmx_dtype dt, int ndim, int64_t d0, int64_t d1, int64_t d2, double amp) {
    int64_t sh[3] = {d0, d1, d2};
    lmx_array a;
    if (lmx_array_alloc(&a, dt, ndim, sh)) die("alloc");
    int64_t n = lmx_array_numel(&a);
    float *f = malloc((size_t)n * sizeof *f);
    for (int64_t i = 0; i < n; i++) f[i] = (float)((2 * urand() - 1) * amp);
    lmx_dtype_info(dt)->from_f32(f, a.data, n);
    free(f);
    return a;
}
static lmx_array HP(lmx_dtype dt, int ndim, int64_t d0, int64_t d1, int64_t d2) {
    int64_t sh[3] = {d0, d1, d2};
    lmx_array a;
    if (lmx_array_alloc(&a, dt, ndim, sh)) die("alloc");
    memset(a.data, 0xff, lmx_array_nbytes(&a));
    return a;
}
static lmx_array D(const lmx_array *h) {
    lmx_array d;
    if (lmx_array_to_backend(gpu, &d, h)) die("upload");
    return d;
}
static void rel(lmx_array *a) { lmx_array_release(a); }
static void run(lmx_status s, const char *what) {
    if (s) {
        printf("FAIL %s: %s\n", what, lmx_last_error());
        n_bad++;
    }
}

/* host reference r vs device array g: rel RMS over the elements r wrote */
static void cmp(const char *what, const lmx_array *r, const lmx_array *g, double tol) {
    int64_t n = lmx_array_numel(r);
    size_t bytes = lmx_array_nbytes(r);
    void *gb = malloc(bytes);
    float *rf = malloc((size_t)n * sizeof *rf), *gf = malloc((size_t)n * sizeof *gf);
    if (lmx_backend_download(gpu, gb, g->data, bytes)) die("download");
    lmx_dtype_info(r->dtype)->to_f32(r->data, rf, n);
    lmx_dtype_info(r->dtype)->to_f32(gb, gf, n);
    double num = 0, den = 0;
    int64_t bad = 0, used = 0;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(rf[i])) {
            bad += !isnan(gf[i]);
            continue;
        }
        used++;
        if (!isfinite(gf[i])) {
            bad++;
            continue;
        }
        double d = (double)gf[i] - rf[i];
        num += d * d;
        den += (double)rf[i] * rf[i];
    }
    double e = den > 0 ? sqrt(num / den) : sqrt(num);
    bool ok = !bad && used > 0 && e <= tol;
    printf("%s %-62s rel %.2e (tol %.0e)%s\n", ok ? "ok  " : "FAIL", what, e, tol, bad ? " non-finite/stray" : "");
    ok ? n_ok++ : n_bad++;
    free(gb), free(rf), free(gf);
}

/* two device arrays bit for bit */
static void same(const char *what, const lmx_array *a, const lmx_array *b) {
    size_t bytes = lmx_array_nbytes(a);
    void *x = malloc(bytes), *y = malloc(bytes);
    if (lmx_backend_download(gpu, x, a->data, bytes) || lmx_backend_download(gpu, y, b->data, bytes)) die("download");
    bool ok = !memcmp(x, y, bytes);
    printf("%s %-62s %s\n", ok ? "ok  " : "FAIL", what, ok ? "bit-identical" : "DIFFERENT bits");
    ok ? n_ok++ : n_bad++;
    free(x), free(y);
}

static const lmx_dtype FL[3] = {LMX_F32, LMX_BF16, LMX_F16};
static const char *dn(lmx_dtype t) { return lmx_dtype_info(t)->name; }

static void t_add_rms_norm(void) {
    static const int64_t Cs[] = {2048, 4096, 896, 64};
    for (int ci = 0; ci < 4; ci++)
        for (int wi = 0; wi < 3; wi++) {
            int64_t R = ci == 2 ? 5 : 1, C = Cs[ci];
            int add_one = wi == 2;
            lmx_array x = H(LMX_F32, 2, R, C, 0, 3), d = H(LMX_F32, 2, R, C, 0, 3), w = H(FL[wi], 1, C, 0, 0, 1);
            lmx_array oc = HP(LMX_F32, 2, R, C, 0), dx = D(&x), dx2 = D(&x), dd = D(&d), dw = D(&w), og = D(&oc),
                      og2 = D(&oc);
            run(lmx_add_rms_norm(&cex, &oc, &x, &d, &w, 1e-5f, add_one), "add_rms_norm cpu");
            run(lmx_add_rms_norm(&gex, &og, &dx, &dd, &dw, 1e-5f, add_one), "add_rms_norm cuda");
            run(lmx_add(&gex, &dx2, &dx2, &dd), "add cuda");
            run(lmx_rms_norm(&gex, &og2, &dx2, &dw, 1e-5f, add_one), "rms_norm cuda");
            char what[128];
            snprintf(what, sizeof what, "add_rms_norm [%lld,%lld] w %s add_one=%d: out", (long long)R, (long long)C,
                     dn(FL[wi]), add_one);
            cmp(what, &oc, &og, 1e-5);
            snprintf(what, sizeof what, "add_rms_norm [%lld,%lld] w %s: x += d", (long long)R, (long long)C, dn(FL[wi]));
            cmp(what, &x, &dx, 1e-6);
            snprintf(what, sizeof what, "add_rms_norm [%lld,%lld] vs add + rms_norm on cuda", (long long)R, (long long)C);
            same(what, &og, &og2);
            rel(&x), rel(&d), rel(&w), rel(&oc), rel(&dx), rel(&dx2), rel(&dd), rel(&dw), rel(&og), rel(&og2);
        }
    /* out == d: a device scratch may let the residual's buffer take the norm's output */
    lmx_array x = H(LMX_F32, 2, 3, 2048, 0, 3), d = H(LMX_F32, 2, 3, 2048, 0, 3), w = H(LMX_BF16, 1, 2048, 0, 0, 1);
    lmx_array dx = D(&x), dd = D(&d), dw = D(&w);
    run(lmx_add_rms_norm(&cex, &d, &x, &d, &w, 1e-5f, false), "add_rms_norm out == d cpu");
    run(lmx_add_rms_norm(&gex, &dd, &dx, &dd, &dw, 1e-5f, false), "add_rms_norm out == d cuda");
    cmp("add_rms_norm [3,2048] out == d: out", &d, &dd, 1e-5);
    cmp("add_rms_norm [3,2048] out == d: x += d", &x, &dx, 1e-6);
    rel(&x), rel(&d), rel(&w), rel(&dx), rel(&dd), rel(&dw);
}

static void t_rope_kv(void) {
    struct {
        int64_t T, H, Hkv, hd;
        int dims, trad;
        int64_t pos0;
    } cs[] = {{1, 32, 8, 128, 128, 0, 639}, {1, 32, 8, 64, 64, 0, 17},  {3, 8, 2, 128, 64, 1, 3000},
              {1, 14, 2, 64, 32, 0, 5},     {2, 4, 4, 128, 128, 1, 0}};
    for (size_t c = 0; c < sizeof cs / sizeof *cs; c++)
        for (int di = 0; di < 3; di++) {
            int64_t T = cs[c].T, Hh = cs[c].H, Hkv = cs[c].Hkv, hd = cs[c].hd, W = Hkv * hd;
            int dims = cs[c].dims, trad = cs[c].trad;
            float ms = dims < hd ? 1.1f : 1.0f;
            lmx_array q = H(LMX_F32, 3, T, Hh, hd, 2), k = H(LMX_F32, 3, T, Hkv, hd, 2), v = H(LMX_F32, 2, T, W, 0, 2);
            lmx_array inv = H(LMX_F32, 1, dims / 2, 0, 0, 0);
            for (int i = 0; i < dims / 2; i++) ((float *)inv.data)[i] = powf(10000.0f, -2.0f * i / dims);
            /* cache rows [T, W] inside a larger poisoned cache: rows 2.. of 2 + T + 1 */
            lmx_array kcache = HP(FL[di], 2, T + 3, W, 0), vcache = HP(FL[di], 2, T + 3, W, 0);
            lmx_array dq = D(&q), dk = D(&k), dv = D(&v), dinv = D(&inv), dkc = D(&kcache), dvc = D(&vcache);
            lmx_array dq2 = D(&q), dk2 = D(&k), dkc2 = D(&kcache), dvc2 = D(&vcache);
            lmx_array hk = kcache, hv = vcache, gk = dkc, gv = dvc, gk2 = dkc2, gv2 = dvc2;
            lmx_array *rows[6] = {&hk, &hv, &gk, &gv, &gk2, &gv2};
            for (int i = 0; i < 6; i++) {
                rows[i]->buf = NULL;
                rows[i]->shape[0] = T;
                rows[i]->data = (uint8_t *)rows[i]->data + lmx_dtype_bytes(FL[di], 2 * W);
            }
            int64_t p0 = cs[c].pos0;
            run(lmx_rope_kv(&cex, &q, &k, &v, &inv, p0, dims, trad, ms, &hk, &hv), "rope_kv cpu");
            run(lmx_rope_kv(&gex, &dq, &dk, &dv, &dinv, p0, dims, trad, ms, &gk, &gv), "rope_kv cuda");
            /* the plain sequence on cuda */
            lmx_array k2;
            memset(&k2, 0, sizeof k2);
            k2.data = dk2.data;
            int64_t sh[2] = {T, W};
            lmx_array_set_contiguous(&k2, LMX_F32, 2, sh);
            run(lmx_rope(&gex, &dq2, &dq2, &dinv, p0, dims, trad, ms), "rope q cuda");
            run(lmx_rope(&gex, &dk2, &dk2, &dinv, p0, dims, trad, ms), "rope k cuda");
            run(lmx_copy(&gex, &gk2, &k2), "copy k cuda");
            run(lmx_copy(&gex, &gv2, &dv), "copy v cuda");
            char what[128], tag[96];
            snprintf(tag, sizeof tag, "T=%lld H=%lld/%lld hd=%lld dims=%d%s pos0=%lld %s", (long long)T, (long long)Hh,
                     (long long)Hkv, (long long)hd, dims, trad ? " trad" : "", (long long)p0, dn(FL[di]));
            snprintf(what, sizeof what, "rope_kv %s: q", tag);
            cmp(what, &q, &dq, 1e-5);
            snprintf(what, sizeof what, "rope_kv %s: k", tag);
            cmp(what, &k, &dk, 1e-5);
            /* a 16-bit cache row: sincosf vs the host's angles (~1e-7) can move a value across a
             * rounding boundary, one ulp (bf16 3.9e-3, f16 4.9e-4 relative); exactness is the
             * memcmp against the plain CUDA ops below */
            snprintf(what, sizeof what, "rope_kv %s: k cache", tag);
            cmp(what, &kcache, &dkc, FL[di] == LMX_F32 ? 1e-5 : FL[di] == LMX_BF16 ? 4e-3 : 5e-4);
            snprintf(what, sizeof what, "rope_kv %s: v cache", tag);
            cmp(what, &vcache, &dvc, 1e-6);
            snprintf(what, sizeof what, "rope_kv %s vs plain cuda", tag);
            same(what, &dq, &dq2);
            same(what, &dkc, &dkc2);
            same(what, &dvc, &dvc2);
            rel(&q), rel(&k), rel(&v), rel(&inv), rel(&kcache), rel(&vcache), rel(&dq), rel(&dk), rel(&dv);
            rel(&dinv), rel(&dkc), rel(&dvc), rel(&dq2), rel(&dk2), rel(&dkc2), rel(&dvc2);
        }
}

static void t_attention(void) {
    struct {
        int64_t T, pos0, S, H, Hkv, hd;
        int window;
        float cap;
    } cs[] = {
        {1, 639, 640, 32, 8, 128, 0, 0}, {1, 639, 640, 32, 8, 64, 0, 0},   {1, 4095, 4096, 32, 8, 64, 0, 0},
        {1, 511, 512, 28, 4, 128, 0, 0}, {1, 100, 101, 8, 8, 64, 0, 0},    {1, 1000, 1200, 64, 8, 128, 0, 30.0f},
        {2, 300, 302, 16, 2, 128, 64, 0}, {3, 0, 3, 4, 1, 64, 0, 0},       {1, 2047, 2048, 24, 8, 64, 100, 0},
        {1, 5, 6, 32, 8, 128, 0, 0},
    };
    for (size_t c = 0; c < sizeof cs / sizeof *cs; c++)
        for (int di = 0; di < 3; di++) {
            int64_t T = cs[c].T, Hh = cs[c].H, Hkv = cs[c].Hkv, hd = cs[c].hd, S = cs[c].S;
            lmx_array q = H(LMX_F32, 3, T, Hh, hd, 1), k = H(FL[di], 3, S, Hkv, hd, 1), v = H(FL[di], 3, S, Hkv, hd, 1);
            lmx_array oc = HP(LMX_F32, 2, T, Hh * hd, 0), dq = D(&q), dk = D(&k), dv = D(&v), og = D(&oc);
            float scale = 2.0f / sqrtf((float)hd);
            run(lmx_attention(&cex, &oc, &q, &k, &v, cs[c].pos0, scale, cs[c].cap, cs[c].window), "attention cpu");
            run(lmx_attention(&gex, &og, &dq, &dk, &dv, cs[c].pos0, scale, cs[c].cap, cs[c].window), "attention cuda");
            char what[128];
            snprintf(what, sizeof what, "attention T=%lld pos0=%lld H=%lld/%lld hd=%lld kv %s%s%s", (long long)T,
                     (long long)cs[c].pos0, (long long)Hh, (long long)Hkv, (long long)hd, dn(FL[di]),
                     cs[c].window ? " window" : "", cs[c].cap > 0 ? " softcap" : "");
            cmp(what, &oc, &og, 1e-5);
            rel(&q), rel(&k), rel(&v), rel(&oc), rel(&dq), rel(&dk), rel(&dv), rel(&og);
        }
}

int main(void) {
    char why[256];
    if (lmx_cuda_device_count(why, sizeof why) <= 0) {
        printf("SKIP test_cuda_fused: %s\n", why);
        return 77;
    }
    const char *seed = getenv("LMX_TEST_SEED");
    rng = seed ? strtoull(seed, NULL, 10) : (uint64_t)time(NULL) * 2654435761u;
    if (!rng) rng = 1;
    printf("seed: %llu\n", (unsigned long long)rng);
    setenv("LMX_CPU", "reference", 0);
    if (lmx_backend_create("cpu", 0, &cpu) || lmx_backend_create("cuda", 0, &gpu)) die("backend");
    cex.backend = cpu;
    gex.backend = gpu;
    t_add_rms_norm();
    t_rope_kv();
    t_attention();
    lmx_backend_free(gpu);
    lmx_backend_free(cpu);
    printf("%d passed, %d failed\n", n_ok, n_bad);
    return n_bad ? 1 : 0;
}
