/*
 * test_simd_kernels.c - every fast CPU kernel against the reference kernel.
 *
 * For each SIMD table this CPU can run (generic always; avx2 and avx512
 * where cpuid says so) the fast matmul (matvec and blocked GEMM; f32, f16,
 * bf16, GGUF Q8_0/Q4_0/Q6_K and MLX affine 4/8-bit
 * weights), attention
 * and RoPE drivers run on random inputs of odd sizes (tails of every vector
 * width, K > KC, M > MC, GQA groups, windows, soft-capping) with the output
 * poisoned with NaN first, so an element that is never written fails.
 *
 * Tolerances (float reassociation only; both sides compute in f32):
 *   matmul:    |fast - ref| <= 1e-5 * sum_k |x_k * w_k| + 1e-30
 *   attention: |fast - ref| <= 1e-5 * max|v| (softmax weights sum to 1)
 *   rope:      bitwise equal (same operations per element)
 * Results must also be bitwise identical for 1 and 2 threads.
 *
 * GGUF Q8_0/Q4_0/Q6_K weights run with int8 activations (cpu_qdot.c; the
 * generic table only for decode, its prefill stays f32) and Q4_K: x is
 * rounded to x^_k = d_b q_k per 32-block b (d_b = max|x|/127), so the bound
 * is derived, not fitted (u = 2^-24, γ_n = n u / (1 - n u)). Write each
 * weight as w_k = a_k - c_k, a_k = s_k·code_k the part multiplied by x^
 * (s_k its block scale) and c_k the part multiplied by the exact x (Q4_K's
 * dmin·m of the sub-block; 0 for the others). Then
 *   (a) vs the f32 reference:
 *       |fast - ref| <= Σ_b d_b (0.5 + 2.3e-5) Σ_(k in b) |a_k|      (rounding of x)
 *                     + γ_(K/16+10) · Σ_k |s_k| (umax + off) |x^_k|   (kernel's f32 part)
 *                     + γ_(K/16+42) · Σ_k |c_k x_k|                   (Q4_K's min term)
 *                     + γ_(K+1) · Σ_k |w_k x_k|                       (reference's f32 part)
 *       where off is the unsigned offset and umax the largest unsigned code
 *       (Q4_0 15/8, Q8_0 255/128, Q6_K 63/32, Q4_K 15/0): the kernels' partial
 *       sums are over u = code + off, not the code;
 *   (b) vs the same dot with the declared rounding, computed here in double:
 *       |fast - (Σ a_k x^_k - Σ c_k x_k)| <= the kernel's f32 parts above,
 *       so a kernel that rounds x differently, or scales a block wrongly,
 *       fails even where (a) would still hold;
 *   and every table's quantize_x gives exactly this test's q and d.
 */
#include "testing.h"

#include "backend/cpu/cpu_simd.h"
#include "core/ops.h"
#include "lmx.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x1234567887654321ull;
static float frand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static lmx_pool *pool1, *pool2;

static void fill(lmx_array *a) {
    int64_t n = lmx_array_numel(a);
    if (lmx_dtype_info(a->dtype)->needs_scales) { /* MLX packed: any bytes are valid codes */
        uint8_t *b = a->data;
        for (size_t i = 0; i < lmx_array_nbytes(a); i++) b[i] = (uint8_t)(frand() * 127.0f + 128.0f);
        return;
    }
    if (a->dtype == LMX_Q6_K || a->dtype == LMX_Q4_K) { /* no quantizer: random codes, finite scales */
        uint8_t *b = a->data;
        for (size_t i = 0; i < lmx_array_nbytes(a); i++) b[i] = (uint8_t)(frand() * 127.0f + 128.0f);
        for (int64_t blk = 0; blk < n / 256; blk++) {
            uint16_t h = lmx_f32_to_f16(0.01f * frand()), h2 = lmx_f32_to_f16(0.01f * frand());
            if (a->dtype == LMX_Q6_K) {
                memcpy(b + blk * 210 + 208, &h, 2);
            } else { /* Q4_K: d, dmin */
                memcpy(b + blk * 144, &h, 2);
                memcpy(b + blk * 144 + 2, &h2, 2);
            }
        }
        return;
    }
    float *tmp = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) tmp[i] = frand();
    if (a->dtype == LMX_F32)
        memcpy(a->data, tmp, (size_t)n * sizeof(float));
    else
        lmx_dtype_info(a->dtype)->from_f32(tmp, a->data, n);
    free(tmp);
}

static void poison(lmx_array *a) {
    float *p = a->data;
    for (int64_t i = 0; i < lmx_array_numel(a); i++) p[i] = NAN;
}

/* The int8 activation rounding as cpu_qdot.c declares it, written
 * independently (nearbyintf instead of the library's magic constant). */
static void ref_quantize(const float *x, int64_t K, int8_t *q, float *d) {
    for (int64_t b = 0; b < K / 32; b++) {
        float amax = 0;
        bool bad = false;
        for (int j = 0; j < 32; j++) {
            amax = fmaxf(amax, fabsf(x[32 * b + j]));
            bad |= !isfinite(x[32 * b + j]);
        }
        float id = amax > 0 && !bad ? 127.0f / amax : 0.0f;
        d[b] = bad ? NAN : amax / 127.0f;
        for (int j = 0; j < 32; j++) q[32 * b + j] = (int8_t)(id != 0.0f ? nearbyintf(x[32 * b + j] * id) : 0.0f);
    }
}

static double gamma_n(double n) { return n * 0x1p-24 / (1 - n * 0x1p-24); }

static float f16_of(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return lmx_f16_to_f32(h);
}

/* Every weight element as w = a - c, a the part the kernels multiply by the
 * rounded x (a = s·code with the block scale s), c the part they multiply by
 * the exact x (Q4_K's dmin·m; 0 for the others): a, c and |s| per element.
 * wf holds the reference's dequantized weights. */
static void weight_parts(const lmx_array *w, const float *wf, double *a, double *c, double *s) {
    const uint8_t *p = w->data;
    int64_t n = lmx_array_numel(w);
    for (int64_t e = 0; e < n; e++) {
        c[e] = 0, a[e] = wf[e];
        if (w->dtype == LMX_Q6_K) {
            const uint8_t *b = p + (e / 256) * 210;
            s[e] = fabs((double)f16_of(b + 208) * ((const int8_t *)(b + 192))[(e % 256) / 16]);
        } else if (w->dtype == LMX_Q4_K) { /* layout as lmx_q4_k_to_f32 */
            const uint8_t *b = p + (e / 256) * 144, *sc = b + 4;
            int j = (int)(e % 256) / 32, l = (int)(e % 32);
            int scj = j < 4 ? sc[j] & 63 : (sc[j + 4] & 15) | ((sc[j - 4] >> 6) << 4);
            int mj = j < 4 ? sc[j + 4] & 63 : (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
            int code = j % 2 ? b[16 + 32 * (j / 2) + l] >> 4 : b[16 + 32 * (j / 2) + l] & 15;
            s[e] = fabs((double)f16_of(b) * scj);
            a[e] = (double)f16_of(b) * scj * code;
            c[e] = (double)f16_of(b + 2) * mj;
        } else {
            s[e] = fabs((double)f16_of(p + (e / 32) * (w->dtype == LMX_Q8_0 ? 34 : 18)));
        }
    }
}

/* Whether table k runs this matmul with int8 activations (decode: M < 4,
 * the matvec; prefill: the table's int8 GEMM, where it has one). */
static bool int8_path(const lmx_simd_kernels *k, lmx_dtype wt, int64_t M) {
    if (!k->quantize_x || !lmx_int8_activations()) return false;
    if (!(wt == LMX_Q8_0 || wt == LMX_Q4_0 || wt == LMX_Q6_K || wt == LMX_Q4_K)) return false;
    return M < 4 ? k->matvec_qx != NULL : k->gemm_qx != NULL;
}

static lmx_array arr(lmx_dtype dt, int ndim, int64_t d0, int64_t d1, int64_t d2) {
    lmx_array a;
    int64_t sh[3] = {d0, d1, d2};
    CHECK_OK(lmx_array_alloc(&a, dt, ndim, sh));
    return a;
}

/* One matmul case; xpad > 0 makes x a column view of a wider array. */
/* group > 0: MLX affine weights with bf16 scales/biases of that group. */
static void matmul_case_g(const lmx_simd_kernels *k, lmx_dtype wt, int64_t M, int64_t N, int64_t K, bool bias,
                          int64_t xpad, int group) {
    lmx_array xw = arr(LMX_F32, 2, M, K + xpad, 0), w = arr(wt, 2, N, K, 0), b = arr(LMX_BF16, 1, N, 0, 0);
    lmx_array sc = {0}, bi = {0};
    if (group > 0) {
        sc = arr(LMX_BF16, 2, N, K / group, 0), bi = arr(LMX_BF16, 2, N, K / group, 0);
        fill(&sc), fill(&bi);
        for (int64_t i = 0; i < N * (K / group); i++) { /* scales ~ range/15, biases ~ -8 scales */
            uint16_t *s16 = sc.data, *b16 = bi.data;
            float sv = 0.02f * lmx_bf16_to_f32(s16[i]);
            s16[i] = lmx_f32_to_bf16(sv);
            b16[i] = lmx_f32_to_bf16(-8.0f * sv + 0.01f * lmx_bf16_to_f32(b16[i]));
        }
    }
    lmx_array o_ref = arr(LMX_F32, 2, M, N, 0), o1 = arr(LMX_F32, 2, M, N, 0), o2 = arr(LMX_F32, 2, M, N, 0);
    fill(&xw), fill(&w), fill(&b);
    lmx_array x;
    lmx_array_cols(&x, &xw, xpad, K);
    poison(&o_ref), poison(&o1), poison(&o2);
    lmx_node n = {.op = LMX_OP_MATMUL, .out = &o_ref, .src = {&x, &w, bias ? &b : NULL}};
    if (group > 0) {
        n.src[3] = &sc;
        n.src[4] = &bi;
        n.ip[0] = group;
    }
    CHECK_OK(lmx_cpu_matmul(&n, pool1));
    n.out = &o1;
    CHECK_OK(lmx_fast_matmul_with(k, &n, pool1));
    n.out = &o2;
    CHECK_OK(lmx_fast_matmul_with(k, &n, pool2));
    /* Bound: f32 reassociation error of a K-term sum. */
    float *wf = malloc((size_t)(N * K + 2 * K) * sizeof(float));
    if (group > 0)
        for (int64_t r = 0; r < N; r++) lmx_cpu_dequant_row(&w, r, &sc, &bi, group, wf + r * K, wf + N * K);
    else
        CHECK_OK(lmx_array_to_f32(&w, wf));
    int bad = 0;
    const float *r = o_ref.data, *f1 = o1.data, *f2 = o2.data;
    const bool q8 = int8_path(k, wt, M);
    int8_t *xq = q8 ? malloc((size_t)K) : NULL;
    float *xd = q8 ? malloc((size_t)(K / 32) * sizeof(float)) : NULL;
    double *wa = q8 ? malloc((size_t)(N * K) * 3 * sizeof(double)) : NULL, *wc = wa ? wa + N * K : NULL,
           *ws = wa ? wa + 2 * N * K : NULL;
    const double cu = wt == LMX_Q4_0 ? 15 + 8 : wt == LMX_Q8_0 ? 255 + 128 : wt == LMX_Q4_K ? 15 : 63 + 32; /* umax + off */
    if (q8) weight_parts(&w, wf, wa, wc, ws);
    for (int64_t m = 0; m < M && bad < 3; m++) {
        const float *xr = (const float *)x.data + m * x.strides[0];
        if (q8) ref_quantize(xr, K, xq, xd);
        for (int64_t j = 0; j < N && bad < 3; j++) {
            double mag = 0;
            for (int64_t kk = 0; kk < K; kk++) mag += fabs((double)xr[kk] * wf[j * K + kk]);
            double tol = 1e-5 * mag + 1e-30;
            float a = f1[m * N + j], e = r[m * N + j];
            if (q8) {
                double rnd = 0, magu = 0, magc = 0, sim = 0;
                for (int64_t kk = 0; kk < K; kk++) {
                    double xh = (double)xd[kk / 32] * xq[kk];
                    rnd += (double)xd[kk / 32] * (0.5 + 2.3e-5) * fabs(wa[j * K + kk]);
                    magu += ws[j * K + kk] * cu * fabs(xh);
                    magc += fabs(wc[j * K + kk] * xr[kk]);
                    sim += wa[j * K + kk] * xh - wc[j * K + kk] * xr[kk];
                }
                /* the bias is added to the f32 dot: one more rounding */
                double bj = bias ? lmx_bf16_to_f32(((const uint16_t *)b.data)[j]) : 0.0;
                sim += bj;
                /* Q4_K's Σx per block is an f32 sum of 32: +32 in that term */
                double tk = gamma_n((double)K / 16 + 10) * magu + gamma_n((double)K / 16 + 42) * magc +
                            0x1p-23 * (fabs(sim) + fabs(bj)) + 1e-30;
                if (!(fabs((double)a - sim) <= tk)) {
                    CHECK_MSG(0, "%s int8 matmul %s M=%lld N=%lld K=%lld: [%lld,%lld] %.9g vs x^-dot %.9g (tol %g)",
                              k->name, lmx_dtype_info(wt)->name, (long long)M, (long long)N, (long long)K, (long long)m,
                              (long long)j, a, sim, tk);
                    bad++;
                }
                tol = rnd + tk + gamma_n((double)K + 1) * mag;
            }
            if (!(fabs((double)a - e) <= tol)) {
                CHECK_MSG(0, "%s matmul %s M=%lld N=%lld K=%lld bias=%d: [%lld,%lld] %g vs ref %g (tol %g)", k->name,
                          lmx_dtype_info(wt)->name, (long long)M, (long long)N, (long long)K, bias, (long long)m,
                          (long long)j, a, e, tol);
                bad++;
            }
            if (memcmp(&f1[m * N + j], &f2[m * N + j], 4) != 0) {
                CHECK_MSG(0, "%s matmul M=%lld N=%lld K=%lld: 1 vs 2 threads differ at [%lld,%lld]", k->name,
                          (long long)M, (long long)N, (long long)K, (long long)m, (long long)j);
                bad++;
            }
        }
    }
    free(wf), free(xq), free(xd), free(wa);
    lmx_array *all[] = {&xw, &w, &b, &o_ref, &o1, &o2, &sc, &bi};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) lmx_array_release(all[i]);
}

static void matmul_case(const lmx_simd_kernels *k, lmx_dtype wt, int64_t M, int64_t N, int64_t K, bool bias,
                        int64_t xpad) {
    matmul_case_g(k, wt, M, N, K, bias, xpad, 0);
}

static void each_isa(void (*fn)(const lmx_simd_kernels *)) {
    for (int i = 0; i < LMX_ISA_COUNT; i++) {
        const lmx_simd_kernels *k = lmx_simd_for((lmx_isa)i);
        if (!k) {
            printf("  (%s: not supported on this CPU, skipped)\n", lmx_isa_name((lmx_isa)i));
            continue;
        }
        fn(k);
    }
}

static void matmul_all(const lmx_simd_kernels *k) {
    static const int64_t shapes[][3] = {
        {1, 1, 1},   {1, 37, 67},  {1, 64, 128}, {2, 9, 33},   {3, 33, 300}, {4, 31, 17},
        {5, 45, 257}, {13, 70, 520}, {12, 32, 256}, {25, 97, 64}, {530, 7, 19}, {1, 130, 2048},
    };
    lmx_dtype dts[] = {LMX_F32, LMX_F16, LMX_BF16};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (int d = 0; d < 3; d++)
            matmul_case(k, dts[d], shapes[s][0], shapes[s][1], shapes[s][2], (s + d) % 2 == 1, s % 3 == 2 ? 5 : 0);
    /* GGUF blocks: K a multiple of 32; decode (quantized matvec) and GEMM. */
    /* Also the int8 GEMM's tails: K past its 512-column panels, M past 512
     * rows, odd row/column tiles. */
    static const int64_t qshapes[][3] = {{1, 1, 32},    {1, 37, 96}, {2, 9, 64},    {3, 33, 320},
                                         {5, 45, 256},  {13, 70, 544}, {1, 130, 2048}, {20, 70, 1056},
                                         {530, 9, 64}, {7, 33, 96}};
    lmx_dtype qts[] = {LMX_Q8_0, LMX_Q4_0};
    for (size_t s = 0; s < sizeof qshapes / sizeof *qshapes; s++)
        for (int d = 0; d < 2; d++)
            matmul_case(k, qts[d], qshapes[s][0], qshapes[s][1], qshapes[s][2], (s + d) % 2 == 1, s % 3 == 2 ? 5 : 0);
    /* Q6_K: 256-element super-blocks (the lm_head of llama-quantize's Q4_0). */
    matmul_case(k, LMX_Q6_K, 1, 7, 256, false, 0);
    matmul_case(k, LMX_Q6_K, 2, 35, 768, true, 3);
    matmul_case(k, LMX_Q6_K, 6, 33, 512, false, 0);
    matmul_case(k, LMX_Q6_K, 9, 40, 1280, true, 0);
    matmul_case(k, LMX_Q6_K, 3, 5, 1024, false, 2);
    /* Q4_K (Q4_K_M files): decode, and the GEMM past its 512-column panels */
    matmul_case(k, LMX_Q4_K, 1, 7, 256, false, 0);
    matmul_case(k, LMX_Q4_K, 2, 35, 768, true, 3);
    matmul_case(k, LMX_Q4_K, 3, 9, 2048, false, 0);
    matmul_case(k, LMX_Q4_K, 6, 33, 512, true, 0);
    matmul_case(k, LMX_Q4_K, 13, 40, 1280, false, 5);
    /* MLX affine 4/8-bit, groups 32/64/128, decode and GEMM. */
    lmx_dtype mts[] = {LMX_MLX_Q4, LMX_MLX_Q8};
    for (int d = 0; d < 2; d++) {
        matmul_case_g(k, mts[d], 1, 9, 64, false, 0, 64);
        matmul_case_g(k, mts[d], 2, 37, 256, true, 3, 32);
        matmul_case_g(k, mts[d], 1, 130, 2048, false, 0, 64);
        matmul_case_g(k, mts[d], 7, 41, 384, true, 0, 128);
        matmul_case_g(k, mts[d], 13, 20, 128, false, 5, 64);
    }
}

static void test_matmul(void) { each_isa(matmul_all); }

/* Every table's quantize_x equals the declared rounding: q, d, Σq exactly;
 * Σx within its f32 summation error. Blocks of mixed scale, a zero block,
 * exact ties (x·id = k + 0.5) and a NaN / an Inf block. */
static void quantize_all(const lmx_simd_kernels *k) {
    if (!k->quantize_x) return;
    enum { K = 32 * 8 };
    float x[K];
    for (int i = 0; i < K; i++) x[i] = frand() * (i < 64 ? 1e-3f : 3.0f);
    for (int i = 64; i < 96; i++) x[i] = 0;
    for (int i = 96; i < 128; i++) x[i] = (float)(i - 112) + 0.5f; /* amax 15.5: id = 127/15.5 */
    x[96] = 127.0f;                                                 /* ... now amax 127: id = 1, ties at k + 0.5 */
    x[130] = NAN;
    x[200] = INFINITY;
    int8_t q[K], rq[K];
    float d[K / 32], rd[K / 32], sum[K / 32];
    int32_t s32[K / 32];
    int16_t s16[K / 16];
    k->quantize_x(x, K, q, d, sum, s32, s16);
    ref_quantize(x, K, rq, rd);
    CHECK_MSG(memcmp(q, rq, K) == 0, "%s quantize_x: q differs from the declared rounding", k->name);
    for (int b = 0; b < K / 32; b++) {
        CHECK_MSG(memcmp(&d[b], &rd[b], 4) == 0 || (isnan(d[b]) && isnan(rd[b])), "%s quantize_x: d[%d] %g vs %g",
                  k->name, b, d[b], rd[b]);
        int32_t t0 = 0, t1 = 0;
        double sx = 0, ax = 0;
        for (int j = 0; j < 16; j++) t0 += rq[32 * b + j], t1 += rq[32 * b + 16 + j];
        for (int j = 0; j < 32; j++) sx += x[32 * b + j], ax += fabs(x[32 * b + j]);
        CHECK_MSG(s32[b] == t0 + t1 && s16[2 * b] == t0 && s16[2 * b + 1] == t1, "%s quantize_x: block sums of %d",
                  k->name, b);
        if (isfinite(sx)) CHECK_MSG(fabs(sum[b] - sx) <= gamma_n(32) * ax, "%s quantize_x: sum[%d]", k->name, b);
        if (b == 4 || b == 6) CHECK_MSG(isnan(d[b]), "%s quantize_x: block %d holds NaN/Inf but d = %g", k->name, b, d[b]);
    }
}

/* A NaN in x makes its whole output row NaN on the int8 path, as in the
 * reference (decode and GEMM). */
static void nan_rows(const lmx_simd_kernels *k) {
    for (int64_t M = 1; M <= 6; M += 5) {
        if (!int8_path(k, LMX_Q4_0, M)) continue;
        lmx_array x = arr(LMX_F32, 2, M, 64, 0), w = arr(LMX_Q4_0, 2, 40, 64, 0), o = arr(LMX_F32, 2, M, 40, 0);
        fill(&x), fill(&w);
        ((float *)x.data)[(M - 1) * 64 + 37] = NAN;
        lmx_node n = {.op = LMX_OP_MATMUL, .out = &o, .src = {&x, &w}};
        CHECK_OK(lmx_fast_matmul_with(k, &n, pool2));
        const float *y = o.data;
        for (int64_t j = 0; j < 40; j++) {
            CHECK_MSG(isnan(y[(M - 1) * 40 + j]), "%s M=%lld: output %lld of the NaN row is %g", k->name, (long long)M,
                      (long long)j, y[(M - 1) * 40 + j]);
            if (M > 1) CHECK_MSG(isfinite(y[j]), "%s: a clean row got %g", k->name, y[j]);
        }
        lmx_array_release(&x), lmx_array_release(&w), lmx_array_release(&o);
    }
}

static void test_int8_activations(void) {
    each_isa(quantize_all);
    each_isa(nan_rows);
}

static void attn_case(const lmx_simd_kernels *k, int64_t T, int64_t H, int64_t Hkv, int64_t hd, int64_t pos0,
                      int window, float softcap) {
    int64_t cap = pos0 + T + 3;
    lmx_array q = arr(LMX_F32, 3, T, H, hd), kc = arr(LMX_F32, 3, cap, Hkv, hd), vc = arr(LMX_F32, 3, cap, Hkv, hd);
    lmx_array o_ref = arr(LMX_F32, 2, T, H * hd, 0), o1 = arr(LMX_F32, 2, T, H * hd, 0), o2 = arr(LMX_F32, 2, T, H * hd, 0);
    fill(&q), fill(&kc), fill(&vc);
    /* Scale q up so the softmax is peaked, not uniform. */
    for (int64_t i = 0; i < lmx_array_numel(&q); i++) ((float *)q.data)[i] *= 3.0f;
    poison(&o_ref), poison(&o1), poison(&o2);
    lmx_node n = {.op = LMX_OP_ATTENTION, .out = &o_ref, .src = {&q, &kc, &vc}};
    n.ip[0] = (int32_t)pos0;
    n.ip[1] = window;
    n.fp[0] = 1.0f / sqrtf((float)hd);
    n.fp[1] = softcap;
    CHECK_OK(lmx_cpu_attention(&n, pool1));
    n.out = &o1;
    CHECK_OK(lmx_fast_attention_with(k, &n, pool1));
    n.out = &o2;
    CHECK_OK(lmx_fast_attention_with(k, &n, pool2));
    const float *r = o_ref.data, *f1 = o1.data, *f2 = o2.data;
    int bad = 0;
    for (int64_t i = 0; i < T * H * hd && bad < 3; i++) {
        if (!(fabsf(f1[i] - r[i]) <= 1e-5f)) {
            CHECK_MSG(0, "%s attention T=%lld H=%lld Hkv=%lld hd=%lld pos0=%lld win=%d cap=%g: [%lld] %g vs ref %g",
                      k->name, (long long)T, (long long)H, (long long)Hkv, (long long)hd, (long long)pos0, window,
                      softcap, (long long)i, f1[i], r[i]);
            bad++;
        }
        if (memcmp(&f1[i], &f2[i], 4) != 0) {
            CHECK_MSG(0, "%s attention: 1 vs 2 threads differ at %lld", k->name, (long long)i);
            bad++;
        }
    }
    lmx_array *all[] = {&q, &kc, &vc, &o_ref, &o1, &o2};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) lmx_array_release(all[i]);
}

static void attn_all(const lmx_simd_kernels *k) {
    attn_case(k, 1, 4, 4, 16, 0, 0, 0);
    attn_case(k, 1, 32, 8, 64, 200, 0, 0);   /* llama-1b decode shape */
    attn_case(k, 1, 6, 2, 24, 37, 0, 0);     /* head dim with a vector tail */
    attn_case(k, 7, 6, 3, 40, 5, 0, 0);      /* prefill continuing a cache */
    attn_case(k, 19, 4, 1, 33, 0, 8, 0);     /* sliding window, MQA */
    attn_case(k, 5, 8, 4, 64, 11, 0, 30.0f); /* soft-capping */
    attn_case(k, 1, 32, 4, 128, 300, 0, 0);  /* G=8, hd 128: two tiles of heads and of features */
    attn_case(k, 2, 10, 2, 80, 40, 0, 0);    /* G=5 (a 1-head tile), a partial feature tile */
    attn_case(k, 1, 8, 1, 256, 70, 0, 0);    /* hd 256, MQA */
}

static void test_attention(void) { each_isa(attn_all); }

/* The vector exp of the softmax against libm expf: relative 4e-7 (about 3
 * ulp: expf and the polynomial are each within ~1 ulp, and x - mx rounds
 * the same way in both), exact 0 below expf's underflow, NaN kept, and the
 * returned sum equal to the f64 sum of the outputs within 1e-6. */
static void exp_all(const lmx_simd_kernels *k) {
    if (!k->softmax_exp) return;
    enum { N = 1003 };
    static float s[N], x[N];
    uint64_t st = 42;
    for (int i = 0; i < N; i++) {
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = -100.0f * (float)((st >> 40) & 0xffffff) / 16777216.0f; /* [-100, 0] */
    }
    x[0] = 0.0f, x[1] = -87.0f, x[2] = -88.0f, x[3] = -1e-8f, x[4] = -INFINITY, x[5] = NAN;
    const float mx = 0.5f;
    for (int i = 0; i < N; i++) s[i] = x[i] + mx;
    float sum = k->softmax_exp(s, N, mx);
    double ref_sum = 0;
    int bad = 0;
    for (int i = 0; i < N && bad < 3; i++) {
        float ref = expf((x[i] + mx) - mx);
        if (isnan(ref) ? !isnan(s[i]) : !(fabsf(s[i] - ref) <= 4e-7f * ref || (ref == 0 && s[i] == 0) ||
                                          (ref < 1e-37f && s[i] < 1e-37f))) {
            CHECK_MSG(0, "%s softmax_exp(%g) = %.9g, expf %.9g", k->name, (double)x[i], (double)s[i], (double)ref);
            bad++;
        }
        if (!isnan(s[i])) ref_sum += s[i];
    }
    CHECK(isnan(sum)); /* the NaN at x[5] reaches the sum */
    s[5] = 0.0f;
    for (int i = 0; i < N; i++) s[i] = x[i] + mx;
    s[5] = mx - 1.0f;
    ref_sum = 0;
    sum = k->softmax_exp(s, N, mx);
    for (int i = 0; i < N; i++) ref_sum += s[i];
    CHECK_MSG(fabs(sum - ref_sum) <= 1e-6 * ref_sum, "%s softmax_exp sum %.9g vs %.9g", k->name, (double)sum, ref_sum);
}

static void test_softmax_exp(void) { each_isa(exp_all); }

/* SiLU(a)·b through the table against the reference act kernel: relative
 * 1e-6 (the vector exp is within 2 ulp of expf, then the same division and
 * product), with NaN, ±Inf and both overflow ends as the reference gives
 * them; one row of the MLP width (columns split) and several rows, 1 and 2
 * threads bit-identical. */
static void act_case(const lmx_simd_kernels *k, int64_t R, int64_t C, bool gated) {
    lmx_array a = arr(LMX_F32, 2, R, C, 0), b = arr(LMX_F32, 2, R, C, 0);
    lmx_array o_ref = arr(LMX_F32, 2, R, C, 0), o1 = arr(LMX_F32, 2, R, C, 0), o2 = arr(LMX_F32, 2, R, C, 0);
    fill(&a), fill(&b);
    float *ad = a.data;
    for (int64_t i = 0; i < R * C; i++) ad[i] *= 12.0f; /* [-12, 12]: both tails of the sigmoid */
    const float special[] = {0.0f, -0.0f, 88.0f, -88.0f, 89.5f, -89.5f, 100.0f, -100.0f, -1e-30f, INFINITY, -INFINITY, NAN};
    for (size_t i = 0; i < sizeof special / sizeof *special && (int64_t)i < R * C; i++) ad[i * 7 % (R * C)] = special[i];
    poison(&o_ref), poison(&o1), poison(&o2);
    lmx_node n = {.op = LMX_OP_ACT, .out = &o_ref, .src = {&a, gated ? &b : NULL}};
    n.ip[0] = LMX_ACT_SILU;
    CHECK_OK(lmx_cpu_act(&n, pool1));
    n.out = &o1;
    CHECK_OK(lmx_fast_act_with(k, &n, pool1));
    n.out = &o2;
    CHECK_OK(lmx_fast_act_with(k, &n, pool2));
    const float *r = o_ref.data, *f1 = o1.data, *f2 = o2.data;
    int bad = 0;
    for (int64_t i = 0; i < R * C && bad < 3; i++) {
        bool ok = isnan(r[i]) ? isnan(f1[i]) : (f1[i] == r[i] || fabsf(f1[i] - r[i]) <= 1e-6f * fabsf(r[i]));
        if (!ok || memcmp(&f1[i], &f2[i], 4) != 0) {
            CHECK_MSG(0, "%s silu R=%lld C=%lld gated=%d: [%lld] a=%g: %.9g (2 threads %.9g) vs ref %.9g", k->name,
                      (long long)R, (long long)C, gated, (long long)i, (double)ad[i], (double)f1[i], (double)f2[i],
                      (double)r[i]);
            bad++;
        }
    }
    lmx_array *all[] = {&a, &b, &o_ref, &o1, &o2};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) lmx_array_release(all[i]);
}

static void act_all(const lmx_simd_kernels *k) {
    act_case(k, 1, 8192, true); /* decode: one row, columns split */
    act_case(k, 5, 300, true);  /* rows split, a vector tail */
    act_case(k, 3, 37, false);  /* plain SiLU */
}

static void test_act(void) { each_isa(act_all); }

static void rope_case(int64_t T, int64_t H, int64_t hd, int dims, bool trad, int64_t pos0, bool in_place) {
    lmx_array x = arr(LMX_F32, 3, T, H, hd), x2 = arr(LMX_F32, 3, T, H, hd), inv = arr(LMX_F32, 1, dims / 2, 0, 0);
    lmx_array o_ref = arr(LMX_F32, 3, T, H, hd), o1 = arr(LMX_F32, 3, T, H, hd);
    fill(&x);
    memcpy(x2.data, x.data, lmx_array_nbytes(&x));
    for (int i = 0; i < dims / 2; i++) ((float *)inv.data)[i] = powf(10000.0f, -2.0f * i / dims);
    poison(&o_ref), poison(&o1);
    lmx_node n = {.op = LMX_OP_ROPE, .out = &o_ref, .src = {&x, &inv}};
    n.ip[0] = (int32_t)pos0;
    n.ip[1] = dims;
    n.ip[2] = trad;
    n.fp[0] = 1.25f;
    CHECK_OK(lmx_cpu_rope(&n, pool1));
    if (in_place) {
        n.src[0] = &x2;
        n.out = &x2;
    } else {
        n.out = &o1;
    }
    CHECK_OK(lmx_fast_rope(&n, pool2));
    const lmx_array *got = in_place ? &x2 : &o1;
    CHECK_MSG(memcmp(got->data, o_ref.data, lmx_array_nbytes(&o_ref)) == 0,
              "rope T=%lld H=%lld hd=%lld dims=%d trad=%d: not bitwise equal to the reference", (long long)T,
              (long long)H, (long long)hd, dims, trad);
    lmx_array *all[] = {&x, &x2, &inv, &o_ref, &o1};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) lmx_array_release(all[i]);
}

static void test_rope(void) {
    rope_case(1, 40, 64, 64, false, 517, false);
    rope_case(9, 5, 64, 64, true, 3, true);
    rope_case(4, 3, 80, 32, false, 0, false); /* partial rotary */
}

static void test_dispatch(void) {
    CHECK(lmx_simd_for(LMX_ISA_GENERIC) == &lmx_simd_generic);
    lmx_isa best = lmx_cpu_isa_detected();
    printf("  detected %s; in use: %s\n", lmx_isa_name(best), lmx_simd() ? lmx_simd()->name : "reference");
    for (int i = 0; i <= (int)best; i++) CHECK(lmx_simd_for((lmx_isa)i) != NULL);
    for (int i = (int)best + 1; i < LMX_ISA_COUNT; i++) CHECK(lmx_simd_for((lmx_isa)i) == NULL);
    const char *env = getenv("LMX_CPU");
    if (env && lmx_simd()) CHECK(!strcmp(env, lmx_simd()->name) || (int)lmx_simd()->isa == (int)best);
}

void run_tests(void) {
    if (lmx_pool_create(1, &pool1) != LMX_OK || lmx_pool_create(2, &pool2) != LMX_OK) {
        CHECK(0);
        return;
    }
    TEST(test_dispatch);
    TEST(test_matmul);
    TEST(test_int8_activations);
    TEST(test_attention);
    TEST(test_softmax_exp);
    TEST(test_act);
    TEST(test_rope);
    lmx_pool_free(pool1);
    lmx_pool_free(pool2);
}
