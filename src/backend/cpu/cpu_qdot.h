/*
 * cpu_qdot.h - the int8-activation kernels shared by the SIMD tables.
 *
 * GGUF block weights (Q8_0, Q4_0, Q6_K) are multiplied by activations that
 * were quantized once per matmul to int8 blocks of 32 (lmx_xq, cpu_simd.h),
 * so every product is an 8-bit integer dot (AVX-512 VNNI vpdpbusd, AVX2
 * vpmaddubsw) and floats appear once per block. This is what llama.cpp does
 * for these types (its Q8_0/Q8_K activation blocks); the numerics differ from
 * the f32 reference by the rounding of x, bounded in cpu_qdot.c.
 *
 * Both integer instructions take one unsigned and one signed byte operand.
 * The weights are the unsigned side, as u = w + off in [0, 255] (off: Q4_0 8,
 * Q8_0 128, Q6_K 32), and the activations the signed side; the offset comes
 * back out through the block sums of q: Σ w·q = Σ u·q - off·Σ q.
 *
 * Packed GEMM panel (pack_qx / gemm_qx): for each group of 4 columns k of
 * [k0, k0+kc), QNR weight rows × 4 bytes u (B[(k/4)·QNR·4 + j·4 + k%4]), so
 * one 4-byte broadcast of x times one vector of B is a vpdpbusd; the weight
 * scale of each sub-block (lmx_qx_sub columns) per row in Bs[(k/sub)·QNR + j];
 * for Q4_K the sub-block mins dmin·m follow at Bs[(kc/sub)·QNR + (k/sub)·QNR + j]
 * and the tile subtracts min·Σx (the f32 block sums of x).
 * Rows past nr are zero (u = 0, scale 0).
 */
#ifndef LMX_BACKEND_CPU_QDOT_H
#define LMX_BACKEND_CPU_QDOT_H

#include "backend/cpu/cpu_simd.h"

/* The weight types with int8-activation kernels: decode (matvec_qx) and
 * prefill (pack_qx / gemm_qx). */
static inline bool lmx_qx_type(lmx_dtype t) {
    return t == LMX_Q8_0 || t == LMX_Q4_0 || t == LMX_Q6_K || t == LMX_Q4_K;
}
static inline bool lmx_qx_gemm_type(lmx_dtype t) { return lmx_qx_type(t); }
/* u = w + off (see above); Q4_K's codes are unsigned already (its mins are
 * a separate term). */
static inline int lmx_qx_offset(lmx_dtype t) {
    return t == LMX_Q4_0 ? 8 : t == LMX_Q6_K ? 32 : t == LMX_Q8_0 ? 128 : 0;
}
/* Columns sharing one weight scale: Q6_K has 16-element sub-blocks. */
static inline int lmx_qx_sub(lmx_dtype t) { return t == LMX_Q6_K ? 16 : 32; }

/* Q4_K sub-block j's 6-bit scale and min, as llama.cpp's get_scale_min_k4. */
static inline void lmx_qx_k4_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 15) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* corr[m·(K/sub) + s] = -off · Σq over sub-block s of x row m, for the
 * GEMM's accumulator start (gemm_qx). Rows [m0, m1). */
void lmx_qx_corr(const lmx_xq *x, int64_t m0, int64_t m1, lmx_dtype wt, int32_t *corr);

/* Per-ISA entry points (qdot_avx2.c, qdot_avx512.c); the generic ones are in
 * cpu_qdot.c. */
void lmx_qx_quantize_generic(const float *x, int64_t K, int8_t *q, float *d, float *sum, int32_t *s32, int16_t *s16);
void lmx_qx_matvec_generic(lmx_dtype wt, const void *w, int64_t K, int64_t r0, int64_t r1, const lmx_xq *x, int64_t M,
                           float *y, int64_t ys);
#ifdef LMX_SIMD_X86
void lmx_qx_quantize_avx2(const float *x, int64_t K, int8_t *q, float *d, float *sum, int32_t *s32, int16_t *s16);
void lmx_qx_matvec_avx2(lmx_dtype wt, const void *w, int64_t K, int64_t r0, int64_t r1, const lmx_xq *x, int64_t M,
                        float *y, int64_t ys);
void lmx_qx_gemm_avx2(lmx_dtype wt, int64_t kc, const lmx_xq *x, int64_t m0, int64_t k0, const int32_t *corr,
                      const uint8_t *B, const float *Bs, float *C, int64_t cs, int mr, int nr, bool accumulate);
void lmx_qx_pack_avx2(lmx_dtype wt, const void *w, int64_t K, int64_t n0, int nr, int64_t k0, int64_t kc, uint8_t *B,
                      float *Bs);
void lmx_qx_quantize_avx512(const float *x, int64_t K, int8_t *q, float *d, float *sum, int32_t *s32, int16_t *s16);
void lmx_qx_matvec_avx512(lmx_dtype wt, const void *w, int64_t K, int64_t r0, int64_t r1, const lmx_xq *x, int64_t M,
                          float *y, int64_t ys);
void lmx_qx_gemm_avx512(lmx_dtype wt, int64_t kc, const lmx_xq *x, int64_t m0, int64_t k0, const int32_t *corr,
                        const uint8_t *B, const float *Bs, float *C, int64_t cs, int mr, int nr, bool accumulate);
void lmx_qx_pack_avx512(lmx_dtype wt, const void *w, int64_t K, int64_t n0, int nr, int64_t k0, int64_t kc,
                        uint8_t *B, float *Bs);
#define LMX_QX_AVX2_MR 4
#define LMX_QX_AVX2_NR 8
#define LMX_QX_AVX512_MR 6
#define LMX_QX_AVX512_NR 32
#endif

#if defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
#include <immintrin.h>
/* Q4_K super-block b: ds[j] = d·sc_j·dx_j for its 8 x-blocks, and
 * *accm += dmin·m_j·Σx_j (lane j). The 6-bit scales and mins are unpacked
 * as llama.cpp's get_scale_min_k4 (lmx_q4_k_to_f32), four at a time. */
static inline void lmx_qx_q4k_scales(const uint8_t *b, const float *dx, const float *xs, float *ds, __m256 *accm) {
    uint32_t u[4];
    uint16_t h[2];
    memcpy(u, b + 4, 12);
    memcpy(h, b, 4);
    u[3] = ((u[2] >> 4) & 0x0f0f0f0fu) | (((u[1] >> 6) & 0x03030303u) << 4); /* mins 4-7 */
    const uint32_t m03 = u[1] & 0x3f3f3f3fu;                                  /* mins 0-3 */
    u[1] = (u[2] & 0x0f0f0f0fu) | (((u[0] >> 6) & 0x03030303u) << 4);         /* scales 4-7 */
    u[2] = m03;
    u[0] &= 0x3f3f3f3fu; /* scales 0-3 */
    __m256 sc = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)u)));
    __m256 mn = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(u + 2))));
    _mm256_storeu_ps(ds, _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(h[0])), sc), _mm256_loadu_ps(dx)));
    *accm = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(h[1])), mn), _mm256_loadu_ps(xs), *accm);
}
#endif

#endif
