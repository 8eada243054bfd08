/* cpu_qdot.c - the int8 activation format, its portable kernels, and the
 * pieces every table shares (offset corrections, block unpacking).
 * The portable table has no int8 GEMM: with the baseline ISA (SSE2 has no
 * byte multiply-add) -O3 made it 4-8x slower than the f32 GEMM, so its
 * prefill keeps the f32 path; its decode is int8 (cpu_fast_qmatmul.c).
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

/* f16 -> f32, exact, inline (the per-block scale of the portable kernels). */
static inline float f16_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, em = h & 0x7fffu, u;
    float f;
    if (em >= 0x7c00u) { /* Inf / NaN */
        u = sign | 0x7f800000u | ((em & 0x3ffu) << 13);
    } else if (em >= 0x0400u) { /* normal: rebias the exponent by 127 - 15 */
        u = sign | ((em << 13) + 0x38000000u);
    } else { /* subnormal (or zero): em · 2^-24, exact in f32 */
        f = (float)em * 0x1p-24f;
        memcpy(&u, &f, 4);
        u |= sign;
    }
    memcpy(&f, &u, 4);
    return f;
}

/* One weight block (32 elements; Q6_K 256) as u = w + off in natural element
 * order and its sub-block scales (1; Q6_K 16, = d·sc). */
static void unpack_block(lmx_dtype wt, const uint8_t *b, uint8_t *u, float *scale) {
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

/* Integer dot of one 32-block of Q4_0 / Q8_0 weights with q (signed values
 * directly: no offset is needed without the unsigned-operand instructions);
 * written so that -O3 vectorizes it with the baseline ISA. */
static inline int32_t dot_q40(const uint8_t *qs, const int8_t *q) {
    int32_t d = 0;
    for (int j = 0; j < 16; j++) d += ((qs[j] & 15) - 8) * q[j] + ((qs[j] >> 4) - 8) * q[j + 16];
    return d;
}

static inline int32_t dot_q80(const int8_t *w, const int8_t *q) {
    int32_t d = 0;
    for (int j = 0; j < 32; j++) d += w[j] * q[j];
    return d;
}

/* y = Σ over blocks of scale·dx·(integer block dot), one block at a time. */
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
            const int16_t *s16 = x->s16 + m * (K / 16);
            float acc = 0;
            if (wt == LMX_Q4_0 || wt == LMX_Q8_0) {
                for (int64_t b = 0; b < K / 32; b++) {
                    const uint8_t *bp = row + (size_t)b * tr->size;
                    int32_t dot = wt == LMX_Q4_0 ? dot_q40(bp + 2, q + 32 * b)
                                                 : dot_q80((const int8_t *)(bp + 2), q + 32 * b);
                    acc += f16_at(bp) * dx[b] * (float)dot;
                }
            } else if (wt == LMX_Q4_K) { /* d·sc_j·Σ q·q^ - dmin·m_j·Σx per 32-element sub-block j */
                const float *xs = x->sum + m * (K / 32);
                for (int64_t b = 0; b < K / 32; b++) {
                    const uint8_t *bp = row + (size_t)(b / 8) * 144;
                    const int j = (int)(b % 8);
                    const uint8_t *qs = bp + 16 + 32 * (j / 2);
                    uint8_t scj, mj;
                    lmx_qx_k4_scale_min(j, bp + 4, &scj, &mj);
                    int32_t dot = 0;
                    for (int l = 0; l < 32; l++) dot += (j % 2 ? qs[l] >> 4 : qs[l] & 15) * q[32 * b + l];
                    acc += f16_at(bp) * (float)scj * dx[b] * (float)dot - f16_at(bp + 2) * (float)mj * xs[b];
                }
            } else { /* Q6_K: unpacked per super-block, 16-element sub-blocks */
                for (int64_t k = 0; k < K; k += blk) {
                    unpack_block(wt, row + (size_t)(k / blk) * tr->size, u, sc);
                    for (int64_t s = 0; s < blk / sub; s++) {
                        int64_t k1 = k + s * sub;
                        int32_t dot = 0;
                        for (int64_t t = 0; t < sub; t++) dot += (int32_t)u[s * sub + t] * q[k1 + t];
                        dot -= (int32_t)off * s16[k1 / 16];
                        acc += sc[s] * dx[k1 / 32] * (float)dot;
                    }
                }
            }
            y[m * ys + r] = acc;
        }
    }
}
