/*
 * test_quant.c - quantizers and dequantizers against their references.
 *
 * tests/data/quant/ (tests/fixtures/make_quant_fixtures.py):
 *   mlx_affine.safetensors: mlx.core.quantize/dequantize of a [6, 256] matrix
 *     (random rows, an all-equal row, a zero row, zeros + outlier) for every
 *     bits × group size in f16, bf16 and f32, and the fp modes. lmx's
 *     quantizer must produce identical bytes (packed, scales, biases) and its
 *     dequantizer identical bytes.
 *   gguf_blocks.safetensors: gguf-py's dequantize of every listed GGUF type
 *     (bit-identical floats), and its quantize for Q4_0/Q4_1/Q8_0.
 * Also: the reference matmul kernel on MLX packed / GGUF weights equals a
 * matmul on the dequantized floats.
 */
#include "testing.h"
#include "quant/np_random.h"

#include "core/ops.h"
#include "io/safetensors.h"
#include "lmx.h"
#include "quant/quant.h"

#include <stdlib.h>

static lmx_st_file *open_golden(const char *name) {
    char p[1024];
    snprintf(p, sizeof p, "%s/quant/%s", LMX_TEST_DATA, name);
    lmx_st_file *f = NULL;
    CHECK_OK(lmx_st_open(p, &f));
    return f;
}

static const lmx_st_tensor *need(lmx_st_file *f, const char *fmt, const char *a, int b, int c) {
    char k[128];
    snprintf(k, sizeof k, fmt, a, b, c);
    const lmx_st_tensor *t = lmx_st_find(f, k);
    CHECK_MSG(t != NULL, "golden tensor %s missing", k);
    return t;
}

static int first_diff(const void *a, const void *b, size_t n) {
    const uint8_t *x = a, *y = b;
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i]) return (int)i;
    return -1;
}

static void test_mlx_affine_bit_exact(void) {
    lmx_st_file *f = open_golden("mlx_affine.safetensors");
    if (!f) return;
    const char *dts[] = {"float16", "bfloat16", "float32"};
    lmx_dtype dtv[] = {LMX_F16, LMX_BF16, LMX_F32};
    int checked = 0;
    for (int d = 0; d < 3; d++) {
        const lmx_st_tensor *w = need(f, "w.%s", dts[d], 0, 0);
        if (!w) continue;
        int64_t n = w->shape[0] * w->shape[1];
        size_t es = lmx_dtype_info(dtv[d])->size;
        static const int bits[] = {2, 3, 4, 5, 6, 8}, groups[] = {32, 64, 128};
        for (int bi = 0; bi < 6; bi++)
            for (int gi = 0; gi < 3; gi++) {
                int b = bits[bi], g = groups[gi];
                const lmx_st_tensor *wq = need(f, "%s.b%d.g%d.wq", dts[d], b, g);
                const lmx_st_tensor *sc = need(f, "%s.b%d.g%d.scales", dts[d], b, g);
                const lmx_st_tensor *bs = need(f, "%s.b%d.g%d.biases", dts[d], b, g);
                const lmx_st_tensor *dq = need(f, "%s.b%d.g%d.deq", dts[d], b, g);
                if (!wq || !sc || !bs || !dq) continue;
                size_t pn = (size_t)(n * b / 8), sn = (size_t)(n / g) * es;
                uint8_t *p = calloc(1, pn), *s = calloc(1, sn), *bb = calloc(1, sn), *o = calloc(1, (size_t)n * es);
                CHECK_OK(lmx_quantize(LMX_QMODE_AFFINE, b, g, dtv[d], w->data, n, p, s, bb));
                CHECK_EQ_INT(wq->size, pn);
                int e1 = first_diff(p, wq->data, pn), e2 = first_diff(s, sc->data, sn), e3 = first_diff(bb, bs->data, sn);
                CHECK_MSG(e1 < 0 && e2 < 0 && e3 < 0, "%s b%d g%d: packed/scales/biases differ at byte %d/%d/%d",
                          dts[d], b, g, e1, e2, e3);
                /* dequantize the golden quantization */
                CHECK_OK(lmx_dequantize(LMX_QMODE_AFFINE, b, g, dtv[d], wq->data, sc->data, bs->data, n, o));
                int e4 = first_diff(o, dq->data, (size_t)n * es);
                CHECK_MSG(e4 < 0, "%s b%d g%d: dequantized bytes differ at %d", dts[d], b, g, e4);
                free(p), free(s), free(bb), free(o);
                checked++;
            }
        static const char *modes[] = {"mxfp4", "nvfp4", "mxfp8"};
        for (int mi = 0; mi < 3; mi++) {
            char k[64];
            snprintf(k, sizeof k, "%s.%s.wq", dts[d], modes[mi]);
            const lmx_st_tensor *wq = lmx_st_find(f, k);
            if (!wq) continue; /* the MLX that made the goldens lacked this mode */
            snprintf(k, sizeof k, "%s.%s.scales", dts[d], modes[mi]);
            const lmx_st_tensor *sc = lmx_st_find(f, k);
            snprintf(k, sizeof k, "%s.%s.deq", dts[d], modes[mi]);
            const lmx_st_tensor *dq = lmx_st_find(f, k);
            lmx_qmode m;
            CHECK(lmx_qmode_parse(modes[mi], &m));
            int g, b;
            lmx_qmode_defaults(m, &g, &b);
            size_t pn = (size_t)(n * b / 8);
            uint8_t *p = calloc(1, pn), *s = calloc(1, (size_t)(n / g)), *o = calloc(1, (size_t)n * es);
            CHECK_OK(lmx_quantize(m, b, g, dtv[d], w->data, n, p, s, NULL));
            int e1 = first_diff(p, wq->data, pn), e2 = first_diff(s, sc->data, (size_t)(n / g));
            CHECK_MSG(e1 < 0 && e2 < 0, "%s %s: packed/scales differ at byte %d/%d", dts[d], modes[mi], e1, e2);
            CHECK_OK(lmx_dequantize(m, b, g, dtv[d], wq->data, sc->data, NULL, n, o));
            int e3 = first_diff(o, dq->data, (size_t)n * es);
            CHECK_MSG(e3 < 0, "%s %s: dequantized bytes differ at %d", dts[d], modes[mi], e3);
            free(p), free(s), free(o);
            checked++;
        }
    }
    printf("  %d MLX quantization cases byte-identical\n", checked);
    CHECK(checked >= 54);
    lmx_st_close(f);
}

static void test_gguf_dequant(void) {
    lmx_st_file *f = open_golden("gguf_blocks.safetensors");
    if (!f) return;
    static const struct {
        const char *name;
        lmx_dtype dt;
    } types[] = {{"Q4_0", LMX_Q4_0}, {"Q4_1", LMX_Q4_1}, {"Q5_0", LMX_Q5_0}, {"Q5_1", LMX_Q5_1},
                 {"Q8_0", LMX_Q8_0}, {"Q2_K", LMX_Q2_K}, {"Q3_K", LMX_Q3_K}, {"Q4_K", LMX_Q4_K},
                 {"Q5_K", LMX_Q5_K}, {"Q6_K", LMX_Q6_K}};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        const lmx_st_tensor *raw = need(f, "%s.raw", types[i].name, 0, 0);
        const lmx_st_tensor *deq = need(f, "%s.deq", types[i].name, 0, 0);
        if (!raw || !deq) continue;
        const lmx_dtype_traits *t = lmx_dtype_info(types[i].dt);
        int64_t n = deq->shape[0];
        CHECK_EQ_INT(raw->size, lmx_dtype_bytes(types[i].dt, n));
        float *o = malloc((size_t)n * sizeof *o);
        t->to_f32(raw->data, o, n);
        int e = first_diff(o, deq->data, (size_t)n * 4);
        CHECK_MSG(e < 0, "%s: dequantized floats differ at element %d", types[i].name, e / 4);
        char k[32];
        snprintf(k, sizeof k, "%s.src", types[i].name);
        const lmx_st_tensor *src = lmx_st_find(f, k);
        if (src && t->from_f32) {
            uint8_t *q = calloc(1, raw->size);
            t->from_f32((const float *)src->data, q, n);
            int e2 = first_diff(q, raw->data, raw->size);
            CHECK_MSG(e2 < 0, "%s: quantized bytes differ from gguf-py at byte %d", types[i].name, e2);
            free(q);
        }
        free(o);
    }
    lmx_st_close(f);
}

/* The CPU matmul on packed weights equals the matmul on the dequantized
 * f32 weights (up to summation order: f32 weights may take a SIMD kernel). */
static void test_matmul_packed(void) {
    lmx_backend *be;
    CHECK_OK(lmx_backend_create("cpu", 2, &be));
    if (t_failed_checks) return;
    lmx_exec ex = {be, NULL};
    enum { N = 8, K = 128, M = 3 };
    float w[N * K], x[M * K];
    for (int i = 0; i < N * K; i++) w[i] = sinf((float)i * 0.37f) * (1 + (i % 7));
    for (int i = 0; i < M * K; i++) x[i] = cosf((float)i * 0.11f);
    int bits[] = {2, 3, 4, 5, 6, 8};
    for (int bi = 0; bi < 6; bi++) {
        int b = bits[bi], g = 32;
        lmx_array wq, sc, bs, wd, xa, o1, o2;
        int64_t shw[2] = {N, K}, shs[2] = {N, K / g}, shx[2] = {M, K}, sho[2] = {M, N};
        CHECK_OK(lmx_array_alloc(&wq, lmx_dtype_mlx_affine(b), 2, shw));
        CHECK_OK(lmx_array_alloc(&sc, LMX_F32, 2, shs));
        CHECK_OK(lmx_array_alloc(&bs, LMX_F32, 2, shs));
        CHECK_OK(lmx_array_alloc(&wd, LMX_F32, 2, shw));
        CHECK_OK(lmx_array_alloc(&xa, LMX_F32, 2, shx));
        CHECK_OK(lmx_array_alloc(&o1, LMX_F32, 2, sho));
        CHECK_OK(lmx_array_alloc(&o2, LMX_F32, 2, sho));
        memcpy(xa.data, x, sizeof x);
        CHECK_OK(lmx_quantize(LMX_QMODE_AFFINE, b, g, LMX_F32, w, N * K, wq.data, sc.data, bs.data));
        CHECK_OK(lmx_dequantize(LMX_QMODE_AFFINE, b, g, LMX_F32, wq.data, sc.data, bs.data, N * K, wd.data));
        CHECK_OK(lmx_matmul_q(&ex, &o1, &xa, &wq, NULL, &sc, &bs, g));
        CHECK_OK(lmx_matmul(&ex, &o2, &xa, &wd, NULL));
        const float *a1 = o1.data, *a2 = o2.data;
        double md = 0, mr = 0;
        for (int i = 0; i < M * N; i++) {
            md = fmax(md, fabs((double)a1[i] - a2[i]));
            mr = fmax(mr, fabs((double)a2[i]));
        }
        CHECK_MSG(md <= 1e-5 * mr, "bits %d: packed matmul differs by %g (max %g)", b, md, mr);
        /* missing scales and a wrong scales shape are refused */
        CHECK(lmx_matmul_q(&ex, &o1, &xa, &wq, NULL, NULL, NULL, g) == LMX_ERR_SHAPE);
        CHECK(lmx_matmul_q(&ex, &o1, &xa, &wq, NULL, &sc, &bs, 64) == LMX_ERR_SHAPE);
        lmx_array *all[] = {&wq, &sc, &bs, &wd, &xa, &o1, &o2};
        for (int i = 0; i < 7; i++) lmx_array_release(all[i]);
    }
    lmx_backend_free(be);
}

static void test_bad_params(void) {
    uint8_t buf[256];
    float w[64] = {0};
    CHECK(lmx_quantize(LMX_QMODE_AFFINE, 7, 32, LMX_F32, w, 64, buf, buf, buf) == LMX_ERR_UNSUPPORTED);
    CHECK(lmx_quantize(LMX_QMODE_AFFINE, 4, 48, LMX_F32, w, 64, buf, buf, buf) == LMX_ERR_UNSUPPORTED);
    CHECK(lmx_quantize(LMX_QMODE_AFFINE, 4, 64, LMX_F32, w, 32, buf, buf, buf) == LMX_ERR_SHAPE);
    CHECK(lmx_quantize(LMX_QMODE_MXFP4, 8, 32, LMX_F32, w, 64, buf, buf, NULL) == LMX_ERR_UNSUPPORTED);
    CHECK(lmx_quant_check(LMX_QMODE_AFFINE, 4, 64, 96, "t") == LMX_ERR_SHAPE);
    CHECK(strstr(lmx_last_error(), "does not divide") != NULL);
}

/* np.random.seed(seed); np.random.permutation(n) (numpy 1.x/2.x legacy
 * RandomState; values printed by numpy). */
static void test_np_permutation(void) {
    static const struct {
        uint64_t seed;
        size_t n;
        size_t first[8];
        long check; /* sum(p[i]·i) mod 1000003 */
    } cases[] = {
        {123, 10, {4, 0, 7, 5, 8, 3, 1, 6}, 214},
        {123, 1000, {131, 203, 50, 585, 138, 632, 328, 461}, 981290},
        {0, 7, {6, 2, 1, 3, 0, 5, 4}, 62},
        {4294967295u, 33, {24, 15, 19, 3, 21, 2, 28, 30}, 8417},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        size_t *p = malloc(cases[c].n * sizeof *p);
        CHECK(p && lmx_np_permutation(cases[c].seed, cases[c].n, p));
        if (!p) return;
        long sum = 0;
        for (size_t i = 0; i < cases[c].n; i++) sum = (long)((sum + (long)(p[i] * i)) % 1000003);
        size_t k = cases[c].n < 8 ? cases[c].n : 8;
        CHECK_MSG(!memcmp(p, cases[c].first, k * sizeof *p) && sum == cases[c].check, "seed %llu n %zu",
                  (unsigned long long)cases[c].seed, cases[c].n);
        free(p);
    }
    size_t q[2];
    CHECK(!lmx_np_permutation(1ull << 32, 2, q));
}

void run_tests(void) {
    TEST(test_mlx_affine_bit_exact);
    TEST(test_gguf_dequant);
    TEST(test_np_permutation);
    TEST(test_matmul_packed);
    TEST(test_bad_params);
}
