/* simd_avx2.c - the AVX2 + FMA + F16C kernel table (compiled with those flags
 * only for this file, chosen at run time by cpu_features.c).
 *
 * Same shapes as the AVX-512 table at half the width: matvec over 4 weight
 * rows with two accumulators each (8 of 16 ymm), GEMM tile 6 x 16 (12 ymm
 * accumulators + 2 B + 1 broadcast = 15 of 16 registers). K tails are scalar
 * (AVX2 has no 16-bit masked loads). */
#include "backend/cpu/cpu_qdot.h"

#include <immintrin.h>

#define MR 6
#define NR 16

static inline __attribute__((always_inline)) __m256 ld(const int dt, const void *w, int64_t i) {
    if (dt == LMX_BF16)
        return _mm256_castsi256_ps(
            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i))), 16));
    if (dt == LMX_F16) return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i)));
    return _mm256_loadu_ps((const float *)w + i);
}

static inline __attribute__((always_inline)) float ld1(const int dt, const void *w, int64_t i) {
    if (dt == LMX_BF16) return lmx_bf16_to_f32(((const uint16_t *)w)[i]);
    if (dt == LMX_F16) return _cvtsh_ss(((const uint16_t *)w)[i]);
    return ((const float *)w)[i];
}

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline __attribute__((always_inline)) void mv_impl(const int dt, const void *w, int64_t K, int64_t r0,
                                                          int64_t r1, const float *x, int64_t xs, int64_t M,
                                                          float *y, int64_t ys) {
    const size_t es = dt == LMX_F32 ? 4 : 2;
    const uint8_t *base = w;
    int64_t K16 = K & ~(int64_t)15;
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        const void *wr[4];
        for (int i = 0; i < 4; i++) wr[i] = base + (size_t)(r + i) * K * es;
        for (int64_t m = 0; m < M; m++) {
            const float *xm = x + m * xs;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
            for (int64_t k = 0; k < K16; k += 16) {
                __m256 x0 = _mm256_loadu_ps(xm + k), x1 = _mm256_loadu_ps(xm + k + 8);
                a0 = _mm256_fmadd_ps(ld(dt, wr[0], k), x0, a0);
                b0 = _mm256_fmadd_ps(ld(dt, wr[0], k + 8), x1, b0);
                a1 = _mm256_fmadd_ps(ld(dt, wr[1], k), x0, a1);
                b1 = _mm256_fmadd_ps(ld(dt, wr[1], k + 8), x1, b1);
                a2 = _mm256_fmadd_ps(ld(dt, wr[2], k), x0, a2);
                b2 = _mm256_fmadd_ps(ld(dt, wr[2], k + 8), x1, b2);
                a3 = _mm256_fmadd_ps(ld(dt, wr[3], k), x0, a3);
                b3 = _mm256_fmadd_ps(ld(dt, wr[3], k + 8), x1, b3);
            }
            float s[4] = {hsum(_mm256_add_ps(a0, b0)), hsum(_mm256_add_ps(a1, b1)), hsum(_mm256_add_ps(a2, b2)),
                          hsum(_mm256_add_ps(a3, b3))};
            for (int i = 0; i < 4; i++) {
                float t = 0;
                for (int64_t k = K16; k < K; k++) t += ld1(dt, wr[i], k) * xm[k];
                y[m * ys + r + i] = s[i] + t;
            }
        }
    }
    for (; r < r1; r++) {
        const void *w0 = base + (size_t)r * K * es;
        for (int64_t m = 0; m < M; m++) {
            const float *xm = x + m * xs;
            __m256 a0 = _mm256_setzero_ps(), b0 = a0;
            for (int64_t k = 0; k < K16; k += 16) {
                a0 = _mm256_fmadd_ps(ld(dt, w0, k), _mm256_loadu_ps(xm + k), a0);
                b0 = _mm256_fmadd_ps(ld(dt, w0, k + 8), _mm256_loadu_ps(xm + k + 8), b0);
            }
            float t = 0;
            for (int64_t k = K16; k < K; k++) t += ld1(dt, w0, k) * xm[k];
            y[m * ys + r] = hsum(_mm256_add_ps(a0, b0)) + t;
        }
    }
}

static void y_matvec(lmx_dtype wt, const void *w, int64_t K, int64_t r0, int64_t r1, const float *x, int64_t xs,
                     int64_t M, float *y, int64_t ys) {
    switch (wt) {
    case LMX_BF16: mv_impl(LMX_BF16, w, K, r0, r1, x, xs, M, y, ys); break;
    case LMX_F16: mv_impl(LMX_F16, w, K, r0, r1, x, xs, M, y, ys); break;
    default: mv_impl(LMX_F32, w, K, r0, r1, x, xs, M, y, ys); break;
    }
}

static inline __attribute__((always_inline)) void pack_impl(const int dt, const void *w, int64_t K, int64_t n0,
                                                            int nr, int64_t k0, int64_t kc, float *B) {
    const size_t es = dt == LMX_F32 ? 4 : 2;
    const uint8_t *base = w;
    float tmp[8];
    for (int j = 0; j < NR; j++) {
        if (j >= nr) {
            for (int64_t k = 0; k < kc; k++) B[k * NR + j] = 0;
            continue;
        }
        const void *row = base + ((size_t)(n0 + j) * K + k0) * es;
        int64_t k = 0;
        for (; k + 8 <= kc; k += 8) {
            _mm256_storeu_ps(tmp, ld(dt, row, k));
            for (int t = 0; t < 8; t++) B[(k + t) * NR + j] = tmp[t];
        }
        for (; k < kc; k++) B[k * NR + j] = ld1(dt, row, k);
    }
}

static void y_pack_b(lmx_dtype wt, const void *w, int64_t K, int64_t n0, int nr, int64_t k0, int64_t kc, float *B) {
    switch (wt) {
    case LMX_BF16: pack_impl(LMX_BF16, w, K, n0, nr, k0, kc, B); break;
    case LMX_F16: pack_impl(LMX_F16, w, K, n0, nr, k0, kc, B); break;
    default: pack_impl(LMX_F32, w, K, n0, nr, k0, kc, B); break;
    }
}

static void y_gemm_tile(int64_t kc, const float *A, const float *B, float *C, int64_t cs, int mr, int nr,
                        bool accumulate) {
    __m256 c[MR][2];
    for (int i = 0; i < MR; i++) c[i][0] = c[i][1] = _mm256_setzero_ps();
    for (int64_t k = 0; k < kc; k++) {
        __m256 b0 = _mm256_load_ps(B + k * NR), b1 = _mm256_load_ps(B + k * NR + 8);
        const float *a = A + k * MR;
        for (int i = 0; i < MR; i++) {
            __m256 ai = _mm256_broadcast_ss(a + i);
            c[i][0] = _mm256_fmadd_ps(ai, b0, c[i][0]);
            c[i][1] = _mm256_fmadd_ps(ai, b1, c[i][1]);
        }
    }
    for (int i = 0; i < MR; i++) {
        if (i >= mr) break;
        float *ci = C + i * cs;
        if (nr == NR) {
            if (accumulate) {
                c[i][0] = _mm256_add_ps(c[i][0], _mm256_loadu_ps(ci));
                c[i][1] = _mm256_add_ps(c[i][1], _mm256_loadu_ps(ci + 8));
            }
            _mm256_storeu_ps(ci, c[i][0]);
            _mm256_storeu_ps(ci + 8, c[i][1]);
        } else {
            float t[NR];
            _mm256_storeu_ps(t, c[i][0]);
            _mm256_storeu_ps(t + 8, c[i][1]);
            for (int j = 0; j < nr; j++) ci[j] = accumulate ? ci[j] + t[j] : t[j];
        }
    }
}

static inline float dot(const float *a, const float *b, int64_t n) {
    __m256 s = _mm256_setzero_ps();
    int64_t d = 0;
    for (; d + 8 <= n; d += 8) s = _mm256_fmadd_ps(_mm256_loadu_ps(a + d), _mm256_loadu_ps(b + d), s);
    float t = hsum(s);
    for (; d < n; d++) t += a[d] * b[d];
    return t;
}

/* Decode attention streams K and V rows of one kv head, Hkv·hd floats apart,
 * from DRAM: both kernels walk the rows once, in order, and prefetch the row
 * ATTN_PF ahead (see simd_avx512.c). */
#define ATTN_PF 16

static inline void prefetch_row(const float *r, int64_t len) {
    for (int64_t i = 0; i < len; i += 16) _mm_prefetch((const char *)(r + i), _MM_HINT_T0);
}

/* [Σa0, Σa1, Σa2, Σa3] of four 8-lane vectors. */
static inline __m128 reduce4(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
    __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
}

/* Four keys at a time, their dot products reduced together; feature tails
 * (hd not a multiple of 8) are scalar. */
static void y_attn_scores(const float *q, int G, int64_t qs, const float *k, int64_t ks, int64_t n, int64_t hd,
                          float scale, float *s, int64_t ss) {
    const int64_t hd8 = hd & ~(int64_t)7;
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const float *k0 = k + j * ks, *k1 = k0 + ks, *k2 = k1 + ks, *k3 = k2 + ks;
        for (int r = 0; r < 4; r++)
            if (j + ATTN_PF + r < n) prefetch_row(k + (j + ATTN_PF + r) * ks, hd);
        for (int g = 0; g < G; g++) {
            const float *qg = q + g * qs;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t d = 0; d < hd8; d += 8) {
                __m256 qv = _mm256_loadu_ps(qg + d);
                a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + d), a0);
                a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k1 + d), a1);
                a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k2 + d), a2);
                a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k3 + d), a3);
            }
            float t[4];
            _mm_storeu_ps(t, reduce4(a0, a1, a2, a3));
            for (int64_t d = hd8; d < hd; d++) {
                t[0] += qg[d] * k0[d], t[1] += qg[d] * k1[d];
                t[2] += qg[d] * k2[d], t[3] += qg[d] * k3[d];
            }
            for (int r = 0; r < 4; r++) s[g * ss + j + r] = t[r] * scale;
        }
    }
    for (; j < n; j++) {
        const float *kj = k + j * ks;
        for (int g = 0; g < G; g++) s[g * ss + j] = dot(q + g * qs, kj, hd) * scale;
    }
}

/* acc[g][d0 .. d0+32) += Σ_j p[g][j] · v[j][d0 ..] for GN (1..2) heads, d0 +
 * 32 <= vd: 8 accumulators in registers while the rows stream past once, in
 * order (each element summed over j in order, as the reference does). */
static inline __attribute__((always_inline)) void av_tile(const int GN, const float *p, int64_t ps, const float *v,
                                                           int64_t vs, int64_t n, int64_t d0, float *acc,
                                                           int64_t as) {
    __m256 a[2][4];
    for (int g = 0; g < GN; g++)
        for (int c = 0; c < 4; c++) a[g][c] = _mm256_loadu_ps(acc + g * as + d0 + 8 * c);
    for (int64_t j = 0; j < n; j++) {
        const float *vr = v + j * vs + d0;
        if (j + ATTN_PF < n) prefetch_row(vr + ATTN_PF * vs, 32);
        __m256 x[4];
        for (int c = 0; c < 4; c++) x[c] = _mm256_loadu_ps(vr + 8 * c);
        for (int g = 0; g < GN; g++) {
            __m256 b = _mm256_broadcast_ss(p + g * ps + j);
            for (int c = 0; c < 4; c++) a[g][c] = _mm256_fmadd_ps(b, x[c], a[g][c]);
        }
    }
    for (int g = 0; g < GN; g++)
        for (int c = 0; c < 4; c++) _mm256_storeu_ps(acc + g * as + d0 + 8 * c, a[g][c]);
}

static void y_attn_av(const float *p, int G, int64_t ps, const float *v, int64_t vs, int64_t n, int64_t vd,
                      float *acc, int64_t as) {
    const int64_t vd32 = vd & ~(int64_t)31, vd8 = vd & ~(int64_t)7;
    for (int g0 = 0; g0 < G; g0 += 2) {
        const float *pg = p + g0 * ps;
        float *ag = acc + g0 * as;
        for (int64_t d0 = 0; d0 < vd32; d0 += 32) {
            if (G - g0 >= 2)
                av_tile(2, pg, ps, v, vs, n, d0, ag, as);
            else
                av_tile(1, pg, ps, v, vs, n, d0, ag, as);
        }
    }
    /* features past the last 32-wide tile: 8 at a time, then scalar */
    for (int g = 0; g < G; g++) {
        const float *pg = p + g * ps;
        float *a = acc + g * as;
        for (int64_t d = vd32; d < vd8; d += 8) {
            __m256 a0 = _mm256_loadu_ps(a + d);
            for (int64_t j = 0; j < n; j++)
                a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(pg + j), _mm256_loadu_ps(v + j * vs + d), a0);
            _mm256_storeu_ps(a + d, a0);
        }
        for (int64_t d = vd8; d < vd; d++) {
            float t = a[d];
            for (int64_t j = 0; j < n; j++) t += pg[j] * v[j * vs + d];
            a[d] = t;
        }
    }
}

const lmx_simd_kernels lmx_simd_avx2 = {
    .name = "avx2",
    .isa = LMX_ISA_AVX2,
    .mr = MR,
    .nr = NR,
    .matvec = y_matvec,
    .pack_b = y_pack_b,
    .gemm_tile = y_gemm_tile,
    .quantize_x = lmx_qx_quantize_avx2,
    .matvec_qx = lmx_qx_matvec_avx2,
    .qmr = LMX_QX_AVX2_MR,
    .qnr = LMX_QX_AVX2_NR,
    .pack_qx = lmx_qx_pack_avx2,
    .gemm_qx = lmx_qx_gemm_avx2,
    .attn_scores = y_attn_scores,
    .attn_av = y_attn_av,
};
