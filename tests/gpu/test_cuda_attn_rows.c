/* test_cuda_attn_rows.c - attention over batch rows (lmx_attention_rows) and
 * RoPE with a period (lmx_rope_rows) on CUDA against the CPU.
 *
 * Each attention case: R sequences end to end (q [R·T, H, hd], k/v
 * [R·S, Hkv, hd]), random inputs, the node run on two CUDA backends - exact
 * (LMX_CUDA_EXACT=1: bf16 hi + lo tensor-core forward, SGEMM vjp looped over
 * rows) and the default precision (bf16 operands: the tensor-core forward and
 * vjp take all rows in one launch) - against the CPU forward and the
 * reference vjp (core/vjp_attention.c) on the same inputs. Gradients are
 * pre-filled with 0.5 on both sides (the vjps add into dsrc; a vjp that
 * overwrote would be off by 0.5 everywhere); the rope vjp runs again on a
 * NaN-filled dsrc with n->fresh set (it declares itself in vjp_overwrites).
 * Also: the batched forward on CUDA equals a loop of single-row nodes bit
 * for bit (same kernels, same per-row arithmetic). Fresh seed per run (printed; LMX_TEST_SEED=n repeats).
 *
 * Tolerances, as test_cuda_vjps.c states them for these paths:
 *  - exact: forward rel 2e-5 / max 2e-4 (the hi + lo products drop lo·lo,
 *    ~2^-16 of a product); SGEMM vjp rel 2e-5 / max 2e-4;
 *  - default: rel (L2) 1e-2, max 2e-2 of max|ref| (q·scale, k, v, dO, P,
 *    dS each rounded to bf16 once: ~3e-3 expected), as the bf16 goldens;
 *  - rope: rel 1e-5 / max 1e-4 (sincosf vs cosf/sinf, f32).
 * Exits 77 (ctest: skipped) with the reason when no CUDA device answers. */
#include "backend/cuda/cuda.h"
#include "core/ops.h"
#include "core/tape.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static lmx_backend *cpu;
static uint64_t rng;
static int n_ok, n_bad;

static double urand(void) { /* xorshift64*, uniform in [0, 1) */
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return (double)((rng * 0x2545F4914F6CDD1Dull) >> 11) / 9007199254740992.0;
}

static void die(const char *what) {
    fprintf(stderr, "FATAL %s: %s\n", what, lmx_last_error());
    exit(1);
}

static lmx_array host(int ndim, int64_t d0, int64_t d1, int64_t d2, double amp) {
    int64_t sh[3] = {d0, d1, d2};
    lmx_array a;
    if (lmx_array_alloc(&a, LMX_F32, ndim, sh)) die("alloc");
    for (int64_t i = 0; i < lmx_array_numel(&a); i++) ((float *)a.data)[i] = (float)((2 * urand() - 1) * amp);
    return a;
}

static lmx_array up(lmx_backend *b, const lmx_array *h) {
    lmx_array d;
    if (lmx_array_to_backend(b, &d, h)) die("upload");
    return d;
}

static float *down(lmx_backend *b, const lmx_array *d) {
    size_t n = (size_t)lmx_array_numel(d);
    float *f = malloc(n * sizeof *f);
    if (!f || lmx_backend_download(b, f, d->data, n * sizeof *f)) die("download");
    return f;
}

/* rel = ||got - ref|| / ||ref||, max = max|got - ref| / max|ref| over (x - off). */
static void compare(const char *what, const float *got, const float *ref, int64_t n, double off, double tol,
                    double tol_max) {
    double num = 0, den = 0, mx = 0, mref = 0;
    int64_t nonfin = 0;
    for (int64_t j = 0; j < n; j++) {
        double r = ref[j] - off, d = (double)got[j] - off;
        if (!isfinite(d)) nonfin++;
        num += (d - r) * (d - r);
        den += r * r;
        mx = fabs(d - r) > mx ? fabs(d - r) : mx;
        mref = fabs(r) > mref ? fabs(r) : mref;
    }
    double rel = den > 0 ? sqrt(num / den) : sqrt(num), mxr = mref > 0 ? mx / mref : mx;
    bool ok = nonfin == 0 && rel <= tol && mxr <= tol_max && den > 0;
    printf("%s %-66s rel %.2e max %.2e (tol %.0e/%.0e)%s\n", ok ? "ok  " : "FAIL", what, rel, mxr, tol, tol_max,
           den > 0 ? "" : " (reference all zero)");
    ok ? n_ok++ : n_bad++;
}

typedef struct {
    int R;
    int64_t T, pos0, extra, H, Hkv, hd;
    int window;
    float cap;
    double amp;
} acase;

static lmx_array rows_of(const lmx_array *a, int64_t r0, int64_t n) {
    lmx_array v = *a;
    v.buf = NULL;
    v.shape[0] = n;
    v.data = (float *)a->data + r0 * a->strides[0];
    return v;
}

/* One case on one CUDA backend g: forward vs the CPU, batched vs per-row on g, vjp vs the reference. */
static void attn_case(lmx_backend *g, const char *prec, const acase *c, double ft, double fm, double vt, double vm) {
    int64_t S = c->pos0 + c->T + c->extra, RT = c->R * c->T, RS = c->R * S, H = c->H, hd = c->hd;
    float scale = 1.0f / sqrtf((float)hd);
    lmx_array q = host(3, RT, H, hd, c->amp), k = host(3, RS, c->Hkv, hd, c->amp), v = host(3, RS, c->Hkv, hd, 1);
    lmx_array dout = host(2, RT, H * hd, 0, 1), oh = host(2, RT, H * hd, 0, 0);
    lmx_array qd = up(g, &q), kd = up(g, &k), vd = up(g, &v), gd = up(g, &dout), od, od2;
    int64_t osh[2] = {RT, H * hd};
    if (lmx_array_alloc_on(g, &od, LMX_F32, 2, osh) || lmx_array_alloc_on(g, &od2, LMX_F32, 2, osh)) die("alloc");
    char w[160];
    snprintf(w, sizeof w, "%s R%d T%lld pos0 %lld S%lld H%lld/%lld hd%lld win %d cap %g", prec, c->R, (long long)c->T,
             (long long)c->pos0, (long long)S, (long long)H, (long long)c->Hkv, (long long)hd, c->window, c->cap);
    lmx_exec gx = {g, NULL}, cx = {cpu, NULL};
    if (lmx_attention_rows(&cx, &oh, &q, &k, &v, c->R, c->pos0, scale, c->cap, c->window)) die("cpu forward");
    lmx_status st = lmx_attention_rows(&gx, &od, &qd, &kd, &vd, c->R, c->pos0, scale, c->cap, c->window);
    for (int r = 0; r < c->R && !st; r++) {
        lmx_array qr = rows_of(&qd, r * c->T, c->T), kr = rows_of(&kd, r * S, S), vr = rows_of(&vd, r * S, S);
        lmx_array orr = rows_of(&od2, r * c->T, c->T);
        st = lmx_attention(&gx, &orr, &qr, &kr, &vr, c->pos0, scale, c->cap, c->window);
    }
    if (st) {
        printf("FAIL %s: forward: %s\n", w, lmx_last_error());
        n_bad++;
    } else {
        float *f1 = down(g, &od), *f2 = down(g, &od2);
        char s[200];
        snprintf(s, sizeof s, "fwd %s", w);
        compare(s, f1, oh.data, RT * H * hd, 0, ft, fm);
        bool same = !memcmp(f1, f2, (size_t)(RT * H * hd) * sizeof *f1);
        printf("%s fwd batched == per-row loop bit for bit: %s\n", same ? "ok  " : "FAIL", w);
        same ? n_ok++ : n_bad++;
        free(f1);
        free(f2);
    }
    /* vjps, gradients pre-filled with 0.5 */
    lmx_array hg[3] = {host(3, RT, H, hd, 0), host(3, RS, c->Hkv, hd, 0), host(3, RS, c->Hkv, hd, 0)}, dg[3];
    lmx_array *hp[LMX_MAX_SRC] = {0}, *dp[LMX_MAX_SRC] = {0};
    for (int i = 0; i < 3; i++) {
        for (int64_t j = 0; j < lmx_array_numel(&hg[i]); j++) ((float *)hg[i].data)[j] = 0.5f;
        dg[i] = up(g, &hg[i]);
        hp[i] = &hg[i];
        dp[i] = &dg[i];
    }
    lmx_node hn = {.op = LMX_OP_ATTENTION, .out = &oh, .src = {&q, &k, &v}};
    hn.ip[0] = (int32_t)c->pos0;
    hn.ip[1] = c->window;
    hn.ip[2] = c->R;
    hn.fp[0] = scale;
    hn.fp[1] = c->cap;
    lmx_node dn = hn;
    dn.out = &od;
    dn.src[0] = &qd;
    dn.src[1] = &kd;
    dn.src[2] = &vd;
    if (lmx_vjp_attention(&hn, &dout, hp)) die("reference vjp");
    st = g->vjps && g->vjps[LMX_OP_ATTENTION] ? g->vjps[LMX_OP_ATTENTION](&dn, &gd, dp, g->pool)
                                              : lmx_err(LMX_ERR_UNSUPPORTED, "no cuda attention vjp");
    if (st) {
        printf("FAIL %s: vjp: %s\n", w, lmx_last_error());
        n_bad++;
    }
    for (int i = 0; i < 3 && !st; i++) {
        float *f = down(g, &dg[i]);
        char s[200];
        snprintf(s, sizeof s, "vjp d%c %s", "qkv"[i], w);
        compare(s, f, hg[i].data, lmx_array_numel(&hg[i]), 0.5, vt, vm);
        free(f);
    }
    lmx_array *all[] = {&q, &k, &v, &dout, &oh, &qd, &kd, &vd, &gd, &od, &od2, &hg[0], &hg[1], &hg[2], &dg[0], &dg[1],
                        &dg[2]};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) lmx_array_release(all[i]);
}

static void rope_case(lmx_backend *g, int R, int64_t P, int64_t H, int64_t hd, int dims, int trad) {
    lmx_array x = host(3, R * P, H, hd, 1), oh = host(3, R * P, H, hd, 0), dout = host(3, R * P, H, hd, 1);
    lmx_array f = host(1, dims / 2, 0, 0, 0);
    for (int i = 0; i < dims / 2; i++) ((float *)f.data)[i] = powf(10000.0f, -2.0f * (float)i / (float)dims);
    lmx_array xd = up(g, &x), fd = up(g, &f), gd = up(g, &dout), od;
    if (lmx_array_alloc_on(g, &od, LMX_F32, 3, x.shape)) die("alloc");
    char w[160];
    snprintf(w, sizeof w, "rope period R%d P%lld H%lld hd%lld dims %d%s", R, (long long)P, (long long)H,
             (long long)hd, dims, trad ? " trad" : "");
    lmx_exec gx = {g, NULL}, cx = {cpu, NULL};
    if (lmx_rope_rows(&cx, &oh, &x, &f, 3, P, dims, trad, 1.1f)) die("cpu rope");
    if (lmx_rope_rows(&gx, &od, &xd, &fd, 3, P, dims, trad, 1.1f)) {
        printf("FAIL %s: forward: %s\n", w, lmx_last_error());
        n_bad++;
    } else {
        float *o = down(g, &od);
        char s[200];
        snprintf(s, sizeof s, "fwd %s", w);
        compare(s, o, oh.data, lmx_array_numel(&x), 0, 1e-5, 1e-4);
        free(o);
    }
    lmx_array hgx = host(3, R * P, H, hd, 0);
    for (int64_t j = 0; j < lmx_array_numel(&hgx); j++) ((float *)hgx.data)[j] = 0.5f;
    lmx_array dgx = up(g, &hgx);
    lmx_node hn = {.op = LMX_OP_ROPE, .out = &oh, .src = {&x, &f}, .ip = {3, dims, trad, (int32_t)P}, .fp = {1.1f}};
    lmx_node dn = hn;
    dn.out = &od;
    dn.src[0] = &xd;
    dn.src[1] = &fd;
    lmx_array *hp[LMX_MAX_SRC] = {&hgx}, *dp[LMX_MAX_SRC] = {&dgx};
    if (lmx_vjp_rope(&hn, &dout, hp)) die("reference rope vjp");
    if (g->vjps[LMX_OP_ROPE](&dn, &gd, dp, g->pool)) {
        printf("FAIL %s: vjp: %s\n", w, lmx_last_error());
        n_bad++;
    } else {
        float *o = down(g, &dgx);
        char s[200];
        snprintf(s, sizeof s, "vjp %s", w);
        compare(s, o, hgx.data, lmx_array_numel(&x), 0.5, 1e-5, 1e-4);
        free(o);
    }
    /* a fresh dsrc (lmx_backend.vjp_overwrites, as the tape hands it out): NaN-filled, written whole */
    if (g->vjp_overwrites && (g->vjp_overwrites(g, &dn) & 1)) {
        int64_t n = lmx_array_numel(&x);
        float *ref = malloc((size_t)n * sizeof *ref);
        if (!ref) die("alloc");
        for (int64_t j = 0; j < n; j++) {
            ref[j] = ((float *)hgx.data)[j] - 0.5f;
            ((float *)hgx.data)[j] = NAN;
        }
        lmx_array dfx = up(g, &hgx);
        lmx_array *fp[LMX_MAX_SRC] = {&dfx};
        dn.fresh = 1;
        if (g->vjps[LMX_OP_ROPE](&dn, &gd, fp, g->pool)) {
            printf("FAIL %s: vjp (fresh dsrc): %s\n", w, lmx_last_error());
            n_bad++;
        } else {
            float *o = down(g, &dfx);
            char s[200];
            snprintf(s, sizeof s, "vjp fresh %s", w);
            compare(s, o, ref, n, 0, 1e-5, 1e-4);
            free(o);
        }
        free(ref);
        lmx_array_release(&dfx);
    }
    lmx_array *all[] = {&x, &oh, &dout, &f, &xd, &fd, &gd, &od, &hgx, &dgx};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) lmx_array_release(all[i]);
}

int main(void) {
    char why[256];
    if (lmx_cuda_device_count(why, sizeof why) <= 0) {
        printf("SKIP test_cuda_attn_rows: %s\n", why);
        return 77;
    }
    const char *seed = getenv("LMX_TEST_SEED");
    rng = seed ? strtoull(seed, NULL, 10) : (uint64_t)time(NULL) * 2654435761u;
    if (!rng) rng = 1;
    lmx_backend *exact = NULL, *fast = NULL;
    setenv("LMX_CUDA_EXACT", "1", 1);
    if (lmx_backend_create("cuda", 0, &exact)) die("backend (exact)");
    setenv("LMX_CUDA_EXACT", "0", 1);
    if (lmx_backend_create("cuda", 0, &fast)) die("backend (bf16)");
    if (lmx_backend_create("cpu", 0, &cpu)) die("backend (cpu)");
    char info[256];
    if (lmx_cuda_device_info(info, sizeof info)) die("device info");
    printf("device: %s\nseed: %llu\n", info, (unsigned long long)rng);
    const acase cs[] = {
        {4, 512, 0, 0, 32, 8, 64, 0, 0, 1},    /* llama-1b training: B 4 x T 512 */
        {3, 100, 0, 0, 4, 2, 128, 0, 0, 3},    /* T not a multiple of the tiles, hd 128, sharp softmax */
        {2, 77, 5, 3, 8, 2, 64, 24, 0, 1},     /* pos0, longer key rows, window */
        {3, 37, 9, 0, 4, 1, 128, 0, 0, 1},     /* hd 128 with pos0 */
        {2, 50, 0, 0, 4, 2, 64, 0, 30.0f, 1},  /* soft-cap: the vjp loops over rows on the SGEMM path */
        {3, 9, 0, 0, 4, 1, 64, 0, 0, 1},       /* T < 16: the decode kernels, row by row */
        {2, 33, 0, 0, 4, 2, 40, 6, 0, 1},      /* hd 40: no tensor-core kernel */
    };
    for (size_t i = 0; i < sizeof cs / sizeof *cs; i++) {
        attn_case(exact, "exact", &cs[i], 2e-5, 2e-4, 2e-5, 2e-4);
        attn_case(fast, "bf16", &cs[i], 1e-2, 2e-2, 1e-2, 2e-2);
    }
    rope_case(fast, 4, 512, 8, 64, 64, 0);
    rope_case(fast, 3, 7, 3, 10, 6, 1);
    rope_case(fast, 2, 33, 4, 24, 16, 0);
    lmx_backend_free(exact);
    lmx_backend_free(fast);
    lmx_backend_free(cpu);
    printf("%d passed, %d failed\n", n_ok, n_bad);
    return n_bad ? 1 : 0;
}
