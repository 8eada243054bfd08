/* simd_generic.c - the portable kernel table: plain C11, no intrinsics.
 *
 * Written so that -O3 auto-vectorizes it with the baseline ISA (SSE2 on
 * x86-64, NEON on arm64): fixed-width partial sums (no -ffast-math needed) and
 * rows converted to f32 in small chunks that stay in L1. This is what runs on
 * CPUs without AVX2 and what LMX_CPU=generic forces. */
#include "backend/cpu/cpu_qdot.h"

#define CH 256 /* conversion chunk: 1 KiB of f32, stays in L1 */

static void to_f32(lmx_dtype wt, const void *src, float *dst, int64_t n) {
    if (wt == LMX_BF16) {
        const uint16_t *s = src;
        for (int64_t i = 0; i < n; i++) {
            uint32_t u = (uint32_t)s[i] << 16;
            memcpy(&dst[i], &u, 4);
        }
    } else if (wt == LMX_F16) {
        const uint16_t *s = src;
        for (int64_t i = 0; i < n; i++) dst[i] = lmx_f16_to_f32(s[i]);
    } else {
        memcpy(dst, src, (size_t)n * sizeof(float));
    }
}

static inline const uint8_t *row_ptr(lmx_dtype wt, const void *w, int64_t K, int64_t r, int64_t k0) {
    size_t es = wt == LMX_F32 ? 4 : 2;
    return (const uint8_t *)w + ((size_t)r * (size_t)K + (size_t)k0) * es;
}

static void g_matvec(lmx_dtype wt, const void *w, int64_t K, int64_t r0, int64_t r1, const float *x, int64_t xs,
                     int64_t M, float *y, int64_t ys) {
    float buf[CH];
    for (int64_t r = r0; r < r1; r++) {
        for (int64_t m = 0; m < M; m++) {
            const float *xm = x + m * xs;
            float acc[16] = {0};
            float tail = 0;
            for (int64_t k0 = 0; k0 < K; k0 += CH) {
                int64_t n = K - k0 < CH ? K - k0 : CH;
                const float *wf;
                if (wt == LMX_F32) {
                    wf = (const float *)row_ptr(wt, w, K, r, k0);
                } else {
                    to_f32(wt, row_ptr(wt, w, K, r, k0), buf, n);
                    wf = buf;
                }
                int64_t i = 0;
                for (; i + 16 <= n; i += 16)
                    for (int j = 0; j < 16; j++) acc[j] += xm[k0 + i + j] * wf[i + j];
                for (; i < n; i++) tail += xm[k0 + i] * wf[i];
            }
            float s = tail;
            for (int j = 0; j < 16; j++) s += acc[j];
            y[m * ys + r] = s;
        }
    }
}

#define G_MR 4
#define G_NR 8 /* 4 x 8 floats = 8 SSE accumulators: fits the 16 xmm registers */

static void g_pack_b(lmx_dtype wt, const void *w, int64_t K, int64_t n0, int nr, int64_t k0, int64_t kc, float *B) {
    float buf[CH];
    for (int j = 0; j < G_NR; j++) {
        if (j >= nr) {
            for (int64_t k = 0; k < kc; k++) B[k * G_NR + j] = 0;
            continue;
        }
        for (int64_t c = 0; c < kc; c += CH) {
            int64_t n = kc - c < CH ? kc - c : CH;
            to_f32(wt, row_ptr(wt, w, K, n0 + j, k0 + c), buf, n);
            for (int64_t k = 0; k < n; k++) B[(c + k) * G_NR + j] = buf[k];
        }
    }
}

static void g_gemm_tile(int64_t kc, const float *A, const float *B, float *C, int64_t cs, int mr, int nr,
                        bool accumulate) {
    float acc[G_MR][G_NR] = {{0}};
    for (int64_t k = 0; k < kc; k++) {
        const float *b = B + k * G_NR, *a = A + k * G_MR;
        for (int i = 0; i < G_MR; i++) {
            float ai = a[i];
            for (int j = 0; j < G_NR; j++) acc[i][j] += ai * b[j];
        }
    }
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) C[i * cs + j] = accumulate ? C[i * cs + j] + acc[i][j] : acc[i][j];
}

static void g_attn_scores(const float *q, int G, int64_t qs, const float *k, int64_t ks, int64_t n, int64_t hd,
                          float scale, float *s, int64_t ss) {
    for (int64_t j = 0; j < n; j++) {
        const float *kj = k + j * ks;
        for (int g = 0; g < G; g++) s[g * ss + j] = lmx_cpu_dot_f32(q + g * qs, kj, hd) * scale;
    }
}

static void g_attn_av(const float *p, int G, int64_t ps, const float *v, int64_t vs, int64_t n, int64_t vd,
                      float *acc, int64_t as) {
    for (int64_t j = 0; j < n; j++) {
        const float *vj = v + j * vs;
        for (int g = 0; g < G; g++) {
            float pj = p[g * ps + j];
            float *a = acc + g * as;
            for (int64_t d = 0; d < vd; d++) a[d] += pj * vj[d];
        }
    }
}

const lmx_simd_kernels lmx_simd_generic = {
    .name = "generic",
    .isa = LMX_ISA_GENERIC,
    .mr = G_MR,
    .nr = G_NR,
    .matvec = g_matvec,
    .pack_b = g_pack_b,
    .gemm_tile = g_gemm_tile,
    .quantize_x = lmx_qx_quantize_generic,
    .matvec_qx = lmx_qx_matvec_generic, /* no int8 GEMM: see cpu_qdot.c */
    .attn_scores = g_attn_scores,
    .attn_av = g_attn_av,
};
