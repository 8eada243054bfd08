/* cpu_qdot.c - the int8 activation format, its portable kernels, and the
 * pieces every table shares (offset corrections, block unpacking, packing).
 *
 * Format (lmx_xq): per block b of 32 activations, amax = max|x_k|,
 *   d_b = fl(amax / 127),  id = fl(127 / amax) (0 when amax = 0),
 *   q_k = round-to-nearest-even(fl(x_k · id))  in [-127, 127].
 * Every table computes exactly these q and d (the same f32 operations; the
 * SIMD conversions round to nearest even like the magic-constant rounding
 * below), so only the float summation order differs between tables.
 * A block with a NaN or Inf (its f32 sum is not finite) gets d = NaN and
 * q = 0, so its outputs are NaN, as the f32 reference's are.
 *
 * Error bound, per output y = Σ_k w_k·x_k (w the dequantized weights):
 * with u = 2^-24, fl(x·id) = x·id·(1+δ3), d·id = (1+δ1)(1+δ2)/..., so
 *   |x_k - d_b·q_k| <= d_b·|fl(x·id) - q_k| + |x_k|·3.0001u <= d_b/2 + 381u·d_b
 * (|x_k| <= amax = 127·d_b·(1+u)); hence
 *   |Σ w_k (x_k - d_b q_k)| <= Σ_b d_b·(0.5 + 2.3e-5)·Σ_{k in b} |w_k|.
 * The integer block dots are exact (|Σ u·q| <= 32·255·127 < 2^24, so the
 * int -> f32 conversion is exact too); each block adds two f32 products and
 * one f32 sum, so the float part adds at most γ_(K/32+O(1))·Σ|w_k·d_b q_k|.
 * tests/unit/test_simd_kernels.c asserts both parts on every table. */
#include "backend/cpu/cpu_qdot.h"

#include <math.h>

/* Round to nearest even for |v| < 2^22 with two f32 additions (the default
 * rounding mode; no -ffast-math in this project). */
static inline int32_t rne(float v) {
    const float magic = 12582912.0f; /* 1.5·2^23 */
    return (int32_t)((v + magic) - magic);
}

void lmx_qx_quantize_generic(const float *x, int64_t K, int8_t *q, float *d, float *sum, int32_t *s32,
                             int16_t *s16) {
    for (int64_t b = 0; b < K / 32; b++) {
        const float *xb = x + 32 * b;
        float amax = 0, s = 0;
        for (int j = 0; j < 32; j++) {
            float a = fabsf(xb[j]);
            amax = a > amax ? a : amax;
            s += xb[j];
        }
        float db = amax / 127.0f, id = amax > 0 ? 127.0f / amax : 0.0f;
        if (!isfinite(s)) db = NAN, id = 0.0f;
        int32_t h[2] = {0, 0};
        for (int j = 0; j < 32; j++) {
            int32_t v = id != 0.0f ? rne(xb[j] * id) : 0;
            q[32 * b + j] = (int8_t)v;
            h[j / 16] += v;
        }
        d[b] = db;
        sum[b] = s;
        s32[b] = h[0] + h[1];
        s16[2 * b] = (int16_t)h[0], s16[2 * b + 1] = (int16_t)h[1];
    }
}

void lmx_qx_corr(const lmx_xq *x, int64_t m0, int64_t m1, lmx_dtype wt, int32_t *corr) {
    const int64_t K = x->K, off = lmx_qx_offset(wt);
    if (lmx_qx_sub(wt) == 16) {
        for (int64_t m = m0; m < m1; m++)
            for (int64_t s = 0; s < K / 16; s++) corr[m * (K / 16) + s] = (int32_t)(-off * x->s16[m * (K / 16) + s]);
    } else {
        for (int64_t m = m0; m < m1; m++)
            for (int64_t s = 0; s < K / 32; s++) corr[m * (K / 32) + s] = (int32_t)(-off * x->s32[m * (K / 32) + s]);
    }
}

static inline float f16_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return lmx_f16_to_f32(h);
}

void lmx_qx_unpack_block(lmx_dtype wt, const uint8_t *b, uint8_t *u, float *scale) {
    if (wt == LMX_Q4_0) {
        scale[0] = f16_at(b);
        for (int j = 0; j < 16; j++) u[j] = b[2 + j] & 15, u[j + 16] = b[2 + j] >> 4;
    } else if (wt == LMX_Q8_0) {
        scale[0] = f16_at(b);
        for (int j = 0; j < 32; j++) u[j] = (uint8_t)(b[2 + j] ^ 0x80); /* (int8)w + 128 */
    } else { /* Q6_K, as lmx_q6_k_to_f32 */
        const int8_t *sc = (const int8_t *)(b + 192);
        float dd = f16_at(b + 208);
        for (int i = 0; i < 16; i++) scale[i] = dd * (float)sc[i];
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = b + 64 * h, *qh = b + 128 + 32 * h;
            uint8_t *y = u + 128 * h;
            for (int l = 0; l < 32; l++) {
                y[l] = (uint8_t)((ql[l] & 15) | ((qh[l] & 3) << 4));
                y[l + 32] = (uint8_t)((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4));
                y[l + 64] = (uint8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
                y[l + 96] = (uint8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4));
            }
        }
    }
}

void lmx_qx_pack_any(int qnr, lmx_dtype wt, const void *w, int64_t K, int64_t n0, int nr, int64_t k0, int64_t kc,
                     uint8_t *B, float *Bs) {
    const lmx_dtype_traits *tr = lmx_dtype_info(wt);
    const int64_t blk = tr->block, sub = lmx_qx_sub(wt);
    const size_t rb = lmx_dtype_bytes(wt, K);
    uint8_t u[256];
    float sc[16];
    for (int j = 0; j < qnr; j++) {
        if (j >= nr) {
            for (int64_t k = 0; k < kc; k++) B[(k / 4) * qnr * 4 + j * 4 + k % 4] = 0;
            for (int64_t s = 0; s < kc / sub; s++) Bs[s * qnr + j] = 0;
            continue;
        }
        const uint8_t *row = (const uint8_t *)w + (size_t)(n0 + j) * rb;
        for (int64_t k = 0; k < kc; k += blk) {
            lmx_qx_unpack_block(wt, row + (size_t)((k0 + k) / blk) * tr->size, u, sc);
            for (int64_t t = 0; t < blk; t++) B[((k + t) / 4) * qnr * 4 + j * 4 + t % 4] = u[t];
            for (int64_t s = 0; s < blk / sub; s++) Bs[(k / sub + s) * qnr + j] = sc[s];
        }
    }
}

/* y = Σ over blocks of scale·dx·(Σ u·q - off·Σq), one block at a time. */
void lmx_qx_matvec_generic(lmx_dtype wt, const void *w, int64_t K, int64_t r0, int64_t r1, const lmx_xq *x, int64_t M,
                        float *y, int64_t ys) {
    const lmx_dtype_traits *tr = lmx_dtype_info(wt);
    const int64_t blk = tr->block, sub = lmx_qx_sub(wt), off = lmx_qx_offset(wt);
    const size_t rb = lmx_dtype_bytes(wt, K);
    uint8_t u[256];
    float sc[16];
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *row = (const uint8_t *)w + (size_t)r * rb;
        for (int64_t m = 0; m < M; m++) {
            const int8_t *q = x->q + m * x->qrs;
            const float *dx = x->d + m * (K / 32);
            const int32_t *s32 = x->s32 + m * (K / 32);
            const int16_t *s16 = x->s16 + m * (K / 16);
            float acc = 0;
            for (int64_t k = 0; k < K; k += blk) {
                lmx_qx_unpack_block(wt, row + (size_t)(k / blk) * tr->size, u, sc);
                for (int64_t s = 0; s < blk / sub; s++) {
                    int64_t k1 = k + s * sub;
                    int32_t dot = 0;
                    for (int64_t t = 0; t < sub; t++) dot += (int32_t)u[s * sub + t] * q[k1 + t];
                    dot -= (int32_t)off * (sub == 16 ? s16[k1 / 16] : s32[k1 / 32]);
                    acc += sc[s] * dx[k1 / 32] * (float)dot;
                }
            }
            y[m * ys + r] = acc;
        }
    }
}

void lmx_qx_pack_generic(lmx_dtype wt, const void *w, int64_t K, int64_t n0, int nr, int64_t k0, int64_t kc, uint8_t *B,
                      float *Bs) {
    lmx_qx_pack_any(LMX_QX_GENERIC_NR, wt, w, K, n0, nr, k0, kc, B, Bs);
}

void lmx_qx_gemm_generic(lmx_dtype wt, int64_t kc, const lmx_xq *x, int64_t m0, int64_t k0, const int32_t *corr,
                      const uint8_t *B, const float *Bs, float *C, int64_t cs, int mr, int nr, bool accumulate) {
    const int64_t K = x->K, sub = lmx_qx_sub(wt), ns = K / sub;
    float acc[LMX_QX_GENERIC_MR][LMX_QX_GENERIC_NR] = {{0}};
    for (int i = 0; i < mr; i++) {
        const int8_t *q = x->q + (m0 + i) * x->qrs + k0;
        const float *dx = x->d + (m0 + i) * (K / 32) + k0 / 32;
        const int32_t *cr = corr + (m0 + i) * ns + k0 / sub;
        for (int64_t s = 0; s < kc / sub; s++) {
            int32_t dot[LMX_QX_GENERIC_NR];
            for (int j = 0; j < LMX_QX_GENERIC_NR; j++) dot[j] = cr[s];
            for (int64_t k = s * sub; k < (s + 1) * sub; k++) {
                const uint8_t *b = B + (k / 4) * LMX_QX_GENERIC_NR * 4 + k % 4;
                for (int j = 0; j < LMX_QX_GENERIC_NR; j++) dot[j] += (int32_t)b[4 * j] * q[k];
            }
            float dxs = dx[s * sub / 32];
            for (int j = 0; j < LMX_QX_GENERIC_NR; j++) acc[i][j] += Bs[s * LMX_QX_GENERIC_NR + j] * dxs * (float)dot[j];
        }
    }
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++) C[i * cs + j] = accumulate ? C[i * cs + j] + acc[i][j] : acc[i][j];
}
