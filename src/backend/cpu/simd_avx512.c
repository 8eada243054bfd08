/* simd_avx512.c - the AVX-512 kernel table (F/BW/VL/DQ; compiled with those
 * flags only for this file, chosen at run time by cpu_features.c).
 *
 * matvec: 4 weight rows per pass, two accumulators per row (8 FMA chains hide
 * the 4-cycle FMA latency), x re-read from L1; weights are widened to f32 in
 * registers (bf16: zero-extend + shift, f16: vcvtph2ps), so each weight byte
 * crosses the memory bus once and decode runs at the stream rate.
 * GEMM tile: 12 x 32 (24 zmm accumulators, 2 B loads and 12 broadcasts per
 * k), the register-blocked shape that keeps both FMA ports busy. */
#include "backend/cpu/cpu_qdot.h"

#include <immintrin.h>

#define MR 12
#define NR 32

static inline __attribute__((always_inline)) __m512 ld(const int dt, const void *w, int64_t i) {
    if (dt == LMX_BF16)
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i))), 16));
    if (dt == LMX_F16) return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i)));
    return _mm512_loadu_ps((const float *)w + i);
}

static inline __attribute__((always_inline)) __m512 ldm(const int dt, const void *w, int64_t i, __mmask16 m) {
    if (dt == LMX_BF16)
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, (const uint16_t *)w + i)), 16));
    if (dt == LMX_F16) return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)w + i));
    return _mm512_maskz_loadu_ps(m, (const float *)w + i);
}

static inline __mmask16 tail_mask(int64_t n) { return (__mmask16)((1u << n) - 1u); }

/* Software prefetch of the next 4-row block. Weights are file mappings in
 * 4 KiB pages, and the hardware streamers stop at every page boundary: with
 * K = 2048 bf16 a row is one page, so the 4 concurrent row streams would each
 * restart cold. Prefetching the same columns of the next 4 rows keeps a whole
 * block (16 KiB) in flight ahead of the loads. */
typedef struct {
    const char *p; /* first byte of the next block's first row */
    size_t row;    /* bytes per row */
} pf_rows;

static inline __attribute__((always_inline)) void pf_block(pf_rows nx, size_t off, bool two_lines) {
    for (int i = 0; i < 4; i++) {
        _mm_prefetch(nx.p + i * nx.row + off, _MM_HINT_T0);
        if (two_lines) _mm_prefetch(nx.p + i * nx.row + off + 64, _MM_HINT_T0);
    }
}

static inline __attribute__((always_inline)) void mv_impl(const int dt, const void *w, int64_t K, int64_t r0,
                                                          int64_t r1, const float *x, int64_t xs, int64_t M,
                                                          float *y, int64_t ys, const float *xp) {
    const size_t es = dt == LMX_F32 ? 4 : 2;
    const uint8_t *base = w;
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        const void *w0 = base + (size_t)r * K * es, *w1 = base + (size_t)(r + 1) * K * es;
        const void *w2 = base + (size_t)(r + 2) * K * es, *w3 = base + (size_t)(r + 3) * K * es;
        const pf_rows nx = {(const char *)w3 + K * es, (size_t)K * es};
        for (int64_t m = 0; m < M; m++) {
            const float *xm = x + m * xs;
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
            int64_t k = 0;
            if (dt == LMX_BF16) {
                /* 32 bf16 in one load; even elements are the low halves of
                 * the 32-bit lanes (shift up), odd ones the high halves
                 * (mask): 1 load + 2 ALU ops per 32 weights, against x split
                 * into even/odd halves by the caller (xp). */
                const float *xq = xp + m * K;
                const __m512i hi_mask = _mm512_set1_epi32((int)0xffff0000u);
                for (; k + 32 <= K; k += 32) {
                    if (m == 0) pf_block(nx, k * es, false);
                    __m512 xe = _mm512_loadu_ps(xq + k), xo = _mm512_loadu_ps(xq + k + 16);
                    __m512i v0 = _mm512_loadu_si512((const uint16_t *)w0 + k);
                    __m512i v1 = _mm512_loadu_si512((const uint16_t *)w1 + k);
                    __m512i v2 = _mm512_loadu_si512((const uint16_t *)w2 + k);
                    __m512i v3 = _mm512_loadu_si512((const uint16_t *)w3 + k);
                    a0 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v0, 16)), xe, a0);
                    b0 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v0, hi_mask)), xo, b0);
                    a1 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v1, 16)), xe, a1);
                    b1 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v1, hi_mask)), xo, b1);
                    a2 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v2, 16)), xe, a2);
                    b2 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v2, hi_mask)), xo, b2);
                    a3 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(v3, 16)), xe, a3);
                    b3 = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(v3, hi_mask)), xo, b3);
                }
            }
            for (; k + 32 <= K; k += 32) {
                if (m == 0) { /* next block of 4 rows, same columns: see pf_block */
                    pf_block(nx, k * es, dt == LMX_F32);
                }
                __m512 x0 = _mm512_loadu_ps(xm + k), x1 = _mm512_loadu_ps(xm + k + 16);
                a0 = _mm512_fmadd_ps(ld(dt, w0, k), x0, a0);
                b0 = _mm512_fmadd_ps(ld(dt, w0, k + 16), x1, b0);
                a1 = _mm512_fmadd_ps(ld(dt, w1, k), x0, a1);
                b1 = _mm512_fmadd_ps(ld(dt, w1, k + 16), x1, b1);
                a2 = _mm512_fmadd_ps(ld(dt, w2, k), x0, a2);
                b2 = _mm512_fmadd_ps(ld(dt, w2, k + 16), x1, b2);
                a3 = _mm512_fmadd_ps(ld(dt, w3, k), x0, a3);
                b3 = _mm512_fmadd_ps(ld(dt, w3, k + 16), x1, b3);
            }
            for (; k < K; k += 16) {
                __mmask16 mk = K - k >= 16 ? (__mmask16)0xffff : tail_mask(K - k);
                __m512 x0 = _mm512_maskz_loadu_ps(mk, xm + k);
                a0 = _mm512_fmadd_ps(ldm(dt, w0, k, mk), x0, a0);
                a1 = _mm512_fmadd_ps(ldm(dt, w1, k, mk), x0, a1);
                a2 = _mm512_fmadd_ps(ldm(dt, w2, k, mk), x0, a2);
                a3 = _mm512_fmadd_ps(ldm(dt, w3, k, mk), x0, a3);
            }
            float *ym = y + m * ys + r;
            ym[0] = _mm512_reduce_add_ps(_mm512_add_ps(a0, b0));
            ym[1] = _mm512_reduce_add_ps(_mm512_add_ps(a1, b1));
            ym[2] = _mm512_reduce_add_ps(_mm512_add_ps(a2, b2));
            ym[3] = _mm512_reduce_add_ps(_mm512_add_ps(a3, b3));
        }
    }
    for (; r < r1; r++) {
        const void *w0 = base + (size_t)r * K * es;
        for (int64_t m = 0; m < M; m++) {
            const float *xm = x + m * xs;
            __m512 a0 = _mm512_setzero_ps(), b0 = a0;
            int64_t k = 0;
            for (; k + 32 <= K; k += 32) {
                a0 = _mm512_fmadd_ps(ld(dt, w0, k), _mm512_loadu_ps(xm + k), a0);
                b0 = _mm512_fmadd_ps(ld(dt, w0, k + 16), _mm512_loadu_ps(xm + k + 16), b0);
            }
            for (; k < K; k += 16) {
                __mmask16 mk = K - k >= 16 ? (__mmask16)0xffff : tail_mask(K - k);
                a0 = _mm512_fmadd_ps(ldm(dt, w0, k, mk), _mm512_maskz_loadu_ps(mk, xm + k), a0);
            }
            y[m * ys + r] = _mm512_reduce_add_ps(_mm512_add_ps(a0, b0));
        }
    }
}

/* x rows split per 32-block into 16 even then 16 odd elements (xp rows of K). */
static void split_even_odd(const float *x, int64_t xs, int64_t M, int64_t K, float *xp) {
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i od = _mm512_add_epi32(ev, _mm512_set1_epi32(1));
    for (int64_t m = 0; m < M; m++)
        for (int64_t k = 0; k + 32 <= K; k += 32) {
            __m512 lo = _mm512_loadu_ps(x + m * xs + k), hi = _mm512_loadu_ps(x + m * xs + k + 16);
            _mm512_storeu_ps(xp + m * K + k, _mm512_permutex2var_ps(lo, ev, hi));
            _mm512_storeu_ps(xp + m * K + k + 16, _mm512_permutex2var_ps(lo, od, hi));
        }
}

static void z_matvec(lmx_dtype wt, const void *w, int64_t K, int64_t r0, int64_t r1, const float *x, int64_t xs,
                     int64_t M, float *y, int64_t ys) {
    switch (wt) {
    case LMX_BF16: {
        /* x rows split per 32-block into 16 even then 16 odd elements, for
         * the bf16 fast path (blocks past K & ~31 are not read). */
        float *xp = lmx_fast_scratch(2, M * K);
        if (!xp) { /* no memory: the generic table's plain loop needs none */
            lmx_simd_generic.matvec(wt, w, K, r0, r1, x, xs, M, y, ys);
            return;
        }
        split_even_odd(x, xs, M, K, xp);
        mv_impl(LMX_BF16, w, K, r0, r1, x, xs, M, y, ys, xp);
        break;
    }
    case LMX_F16: mv_impl(LMX_F16, w, K, r0, r1, x, xs, M, y, ys, NULL); break;
    default: mv_impl(LMX_F32, w, K, r0, r1, x, xs, M, y, ys, NULL); break;
    }
}

/* GGUF Q8_0 (f16 d, 32 x int8) and Q4_0 (f16 d, 16 bytes: low nibbles are
 * elements 0-15, high nibbles 16-31, value q - 8) against f32 x: each block
 * is widened to f32 in registers, dotted with x, and scaled by d once per
 * block. Two rows share every x load; the next two rows are prefetched (the
 * weights are 4 KiB file pages, see pf_block). Exact up to reassociation:
 * the (q - 8) offset is taken in integers. */
static inline float f16_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

static inline __attribute__((always_inline)) __m512 qblock(const int dt, const uint8_t *b, __m512 x0, __m512 x1) {
    __m512 lo, hi;
    if (dt == LMX_Q8_0) {
        lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 2))));
        hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(b + 18))));
    } else {
        __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(b + 2)));
        const __m512i eight = _mm512_set1_epi32(8), low4 = _mm512_set1_epi32(15);
        lo = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_and_si512(v, low4), eight));
        hi = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32(v, 4), eight));
    }
    return _mm512_fmadd_ps(hi, x1, _mm512_mul_ps(lo, x0));
}

static inline __attribute__((always_inline)) void mvq_impl(const int dt, const uint8_t *w, int64_t K, int64_t r0,
                                                           int64_t r1, const float *x, int64_t xs, int64_t M,
                                                           float *y, int64_t ys) {
    const size_t bs = dt == LMX_Q8_0 ? 34 : 18;
    const int64_t nb = K / 32;
    const size_t rb = (size_t)nb * bs;
    int64_t r = r0;
    for (; r + 2 <= r1; r += 2) {
        const uint8_t *wa = w + (size_t)r * rb, *wb = wa + rb, *pf = wb + rb;
        for (int64_t m = 0; m < M; m++) {
            const float *xm = x + m * xs;
            __m512 a0 = _mm512_setzero_ps(), a1 = a0;
            for (int64_t i = 0; i < nb; i++) {
                if (m == 0) {
                    _mm_prefetch((const char *)pf + i * bs, _MM_HINT_T0);
                    _mm_prefetch((const char *)pf + rb + i * bs, _MM_HINT_T0);
                }
                __m512 x0 = _mm512_loadu_ps(xm + 32 * i), x1 = _mm512_loadu_ps(xm + 32 * i + 16);
                const uint8_t *ba = wa + i * bs, *bb = wb + i * bs;
                a0 = _mm512_fmadd_ps(_mm512_set1_ps(f16_at(ba)), qblock(dt, ba, x0, x1), a0);
                a1 = _mm512_fmadd_ps(_mm512_set1_ps(f16_at(bb)), qblock(dt, bb, x0, x1), a1);
            }
            y[m * ys + r] = _mm512_reduce_add_ps(a0);
            y[m * ys + r + 1] = _mm512_reduce_add_ps(a1);
        }
    }
    for (; r < r1; r++) {
        const uint8_t *wa = w + (size_t)r * rb;
        for (int64_t m = 0; m < M; m++) {
            const float *xm = x + m * xs;
            __m512 a0 = _mm512_setzero_ps();
            for (int64_t i = 0; i < nb; i++) {
                __m512 x0 = _mm512_loadu_ps(xm + 32 * i), x1 = _mm512_loadu_ps(xm + 32 * i + 16);
                a0 = _mm512_fmadd_ps(_mm512_set1_ps(f16_at(wa + i * bs)), qblock(dt, wa + i * bs, x0, x1), a0);
            }
            y[m * ys + r] = _mm512_reduce_add_ps(a0);
        }
    }
}

/* GGUF Q6_K (256-element super-blocks of 210 bytes: ql[128] low nibbles,
 * qh[64] high 2-bit pairs, 16 int8 sub-scales, f16 d; value
 * d * sc[i/16] * (q - 32)), laid out as llama.cpp's dequantize_row_q6_K.
 * llama-quantize writes the tied embedding / lm_head of Q4_0 models in this
 * type, so it is the single largest matrix of a Q4_0 decode. One row at a
 * time; the next row is prefetched. */
static inline float q6k_row(const uint8_t *b, int64_t nb, const float *x, const uint8_t *pf) {
    const __m512i m4 = _mm512_set1_epi32(15), m2 = _mm512_set1_epi32(3), o32 = _mm512_set1_epi32(32);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; i++, b += 210, x += 256) {
        for (int c = 0; c < 210; c += 64) _mm_prefetch((const char *)pf + i * 210 + c, _MM_HINT_T0);
        const int8_t *sc = (const int8_t *)(b + 192);
        float d = f16_at(b + 208);
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = b + 64 * h, *qh = b + 128 + 32 * h;
            const int8_t *sh = sc + 8 * h;
            const float *xh = x + 128 * h;
            for (int l = 0; l < 32; l += 16) {
                int is = l / 16;
                __m512i a = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(ql + l)));
                __m512i bq = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(ql + l + 32)));
                __m512i hb = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(qh + l)));
                __m512i q1 = _mm512_or_si512(_mm512_and_si512(a, m4), _mm512_slli_epi32(_mm512_and_si512(hb, m2), 4));
                __m512i q2 = _mm512_or_si512(_mm512_and_si512(bq, m4),
                                             _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(hb, 2), m2), 4));
                __m512i q3 = _mm512_or_si512(_mm512_srli_epi32(a, 4),
                                             _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(hb, 4), m2), 4));
                __m512i q4 = _mm512_or_si512(_mm512_srli_epi32(bq, 4), _mm512_slli_epi32(_mm512_srli_epi32(hb, 6), 4));
                __m512 t1 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(q1, o32)), _mm512_loadu_ps(xh + l));
                __m512 t2 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(q2, o32)), _mm512_loadu_ps(xh + l + 32));
                __m512 t3 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(q3, o32)), _mm512_loadu_ps(xh + l + 64));
                __m512 t4 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(q4, o32)), _mm512_loadu_ps(xh + l + 96));
                acc = _mm512_fmadd_ps(_mm512_set1_ps(d * (float)sh[is]), t1, acc);
                acc = _mm512_fmadd_ps(_mm512_set1_ps(d * (float)sh[is + 2]), t2, acc);
                acc = _mm512_fmadd_ps(_mm512_set1_ps(d * (float)sh[is + 4]), t3, acc);
                acc = _mm512_fmadd_ps(_mm512_set1_ps(d * (float)sh[is + 6]), t4, acc);
            }
        }
    }
    return _mm512_reduce_add_ps(acc);
}

/* MLX affine rows. 8-bit: element j is byte j. 4-bit: byte i holds
 * elements 2i (low nibble) and 2i+1 (high nibble), so x is split into
 * even/odd halves per 32-block (as for bf16) and one byte load feeds both.
 * Each weight is rebuilt as fma(s, q, b) before the dot, like the reference
 * dequantizer (which rounds s*q and then +b: one rounding apart), so there is
 * no cancellation between a large s*sum(q x) and b*sum(x). */
static inline float param_at(lmx_dtype t, const void *p, int64_t i) {
    if (t == LMX_BF16) return lmx_bf16_to_f32(((const uint16_t *)p)[i]);
    if (t == LMX_F16) return _cvtsh_ss(((const uint16_t *)p)[i]);
    float f; /* MLX-layout files pack tensors without alignment: f32 scales may sit at any byte */
    memcpy(&f, (const char *)p + 4 * i, 4);
    return f;
}


static inline __attribute__((always_inline)) void mlx_impl(const int bits, const uint8_t *w, int64_t K, int64_t r0,
                                                           int64_t r1, const float *x, int64_t xs, int64_t M,
                                                           float *y, int64_t ys, lmx_dtype sdt, const void *scales,
                                                           const void *biases, int group) {
    const int64_t G = K / group;
    const size_t rb = (size_t)K * (size_t)bits / 8;
    const __m512i low4 = _mm512_set1_epi32(15);
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *wr = w + r * rb, *pf = wr + rb;
        for (int64_t m = 0; m < M; m++) {
            const float *xm = x + m * (bits == 4 ? K : xs);
            __m512 a0 = _mm512_setzero_ps(), a1 = a0;
            for (int64_t g = 0; g < G; g++) {
                __m512 sv = _mm512_set1_ps(param_at(sdt, scales, r * G + g));
                __m512 bv = _mm512_set1_ps(param_at(sdt, biases, r * G + g));
                for (int64_t k = g * group; k < (g + 1) * group; k += 32) {
                    const uint8_t *p = wr + k * bits / 8;
                    if (m == 0) _mm_prefetch((const char *)pf + k * bits / 8, _MM_HINT_T0);
                    __m512 q0, q1;
                    if (bits == 8) {
                        q0 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p)));
                        q1 = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + 16))));
                    } else {
                        __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
                        q0 = _mm512_cvtepi32_ps(_mm512_and_si512(v, low4));
                        q1 = _mm512_cvtepi32_ps(_mm512_srli_epi32(v, 4));
                    }
                    a0 = _mm512_fmadd_ps(_mm512_fmadd_ps(sv, q0, bv), _mm512_loadu_ps(xm + k), a0);
                    a1 = _mm512_fmadd_ps(_mm512_fmadd_ps(sv, q1, bv), _mm512_loadu_ps(xm + k + 16), a1);
                }
            }
            y[m * ys + r] = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
        }
    }
}

static void z_matvec_mlx(int bits, const void *w, int64_t K, int64_t r0, int64_t r1, const float *x, int64_t xs,
                         int64_t M, float *y, int64_t ys, lmx_dtype sdt, const void *scales, const void *biases,
                         int group) {
    if (bits == 8) {
        mlx_impl(8, w, K, r0, r1, x, xs, M, y, ys, sdt, scales, biases, group);
        return;
    }
    float *xp = lmx_fast_scratch(2, M * K);
    if (!xp) return; /* the driver checked this scratch before (see cpu_fast_matmul.c) */
    split_even_odd(x, xs, M, K, xp);
    mlx_impl(4, w, K, r0, r1, xp, xs, M, y, ys, sdt, scales, biases, group);
}

static void z_matvec_q(lmx_dtype wt, const void *w, int64_t K, int64_t r0, int64_t r1, const float *x, int64_t xs,
                       int64_t M, float *y, int64_t ys) {
    if (wt == LMX_Q6_K) {
        const int64_t nb = K / 256;
        const size_t rb = (size_t)nb * 210;
        for (int64_t r = r0; r < r1; r++)
            for (int64_t m = 0; m < M; m++)
                y[m * ys + r] = q6k_row((const uint8_t *)w + r * rb, nb, x + m * xs, (const uint8_t *)w + (r + 1) * rb);
    } else if (wt == LMX_Q8_0)
        mvq_impl(LMX_Q8_0, w, K, r0, r1, x, xs, M, y, ys);
    else
        mvq_impl(LMX_Q4_0, w, K, r0, r1, x, xs, M, y, ys);
}

/* B[k][32] from 32 weight rows: each row is widened 16 at a time and written
 * down a column; 16 x 16 blocks are transposed in registers first so every
 * store is a full 64-byte row of B. */
static inline void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i]), _mm512_castps_pd(t[i + 2])));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t[i + 1]), _mm512_castps_pd(t[i + 3])));
    }
    /* r[4a+b] now holds, per 128-bit lane L, rows 4a..4a+3 column 4L+b.
     * Gather lanes: first 128-bit lanes across groups of four rows. */
    for (int b = 0; b < 4; b++) {
        __m512 g0 = r[b], g1 = r[4 + b], g2 = r[8 + b], g3 = r[12 + b];
        __m512 u0 = _mm512_shuffle_f32x4(g0, g1, 0x44), u1 = _mm512_shuffle_f32x4(g0, g1, 0xee);
        __m512 u2 = _mm512_shuffle_f32x4(g2, g3, 0x44), u3 = _mm512_shuffle_f32x4(g2, g3, 0xee);
        t[b] = _mm512_shuffle_f32x4(u0, u2, 0x88);      /* lane 0 */
        t[4 + b] = _mm512_shuffle_f32x4(u0, u2, 0xdd);  /* lane 1 */
        t[8 + b] = _mm512_shuffle_f32x4(u1, u3, 0x88);  /* lane 2 */
        t[12 + b] = _mm512_shuffle_f32x4(u1, u3, 0xdd); /* lane 3 */
    }
    for (int i = 0; i < 16; i++) r[i] = t[i];
}

static inline __attribute__((always_inline)) void pack_impl(const int dt, const void *w, int64_t K, int64_t n0,
                                                            int nr, int64_t k0, int64_t kc, float *B) {
    const size_t es = dt == LMX_F32 ? 4 : 2;
    const uint8_t *base = w;
    for (int h = 0; h < NR; h += 16) {
        for (int64_t k = 0; k < kc; k += 16) {
            int64_t n = kc - k < 16 ? kc - k : 16;
            __mmask16 mk = n == 16 ? (__mmask16)0xffff : tail_mask(n);
            __m512 r[16];
            for (int j = 0; j < 16; j++) {
                if (h + j < nr)
                    r[j] = ldm(dt, base + ((size_t)(n0 + h + j) * K + k0) * es, k, mk);
                else
                    r[j] = _mm512_setzero_ps();
            }
            transpose16(r);
            for (int64_t t = 0; t < n; t++) _mm512_storeu_ps(B + (k + t) * NR + h, r[t]);
        }
    }
}

static void z_pack_b(lmx_dtype wt, const void *w, int64_t K, int64_t n0, int nr, int64_t k0, int64_t kc, float *B) {
    switch (wt) {
    case LMX_BF16: pack_impl(LMX_BF16, w, K, n0, nr, k0, kc, B); break;
    case LMX_F16: pack_impl(LMX_F16, w, K, n0, nr, k0, kc, B); break;
    default: pack_impl(LMX_F32, w, K, n0, nr, k0, kc, B); break;
    }
}

static void z_gemm_tile(int64_t kc, const float *A, const float *B, float *C, int64_t cs, int mr, int nr,
                        bool accumulate) {
    __m512 c[MR][2];
    for (int i = 0; i < MR; i++) c[i][0] = c[i][1] = _mm512_setzero_ps();
    for (int64_t k = 0; k < kc; k++) {
        __m512 b0 = _mm512_load_ps(B + k * NR), b1 = _mm512_load_ps(B + k * NR + 16);
        const float *a = A + k * MR;
        for (int i = 0; i < MR; i++) {
            __m512 ai = _mm512_set1_ps(a[i]);
            c[i][0] = _mm512_fmadd_ps(ai, b0, c[i][0]);
            c[i][1] = _mm512_fmadd_ps(ai, b1, c[i][1]);
        }
    }
    __mmask16 m0 = nr >= 16 ? (__mmask16)0xffff : tail_mask(nr);
    __mmask16 m1 = nr >= 32 ? (__mmask16)0xffff : nr > 16 ? tail_mask(nr - 16) : 0;
    for (int i = 0; i < MR; i++) {
        if (i >= mr) break;
        float *ci = C + i * cs;
        if (accumulate) {
            c[i][0] = _mm512_add_ps(c[i][0], _mm512_maskz_loadu_ps(m0, ci));
            c[i][1] = _mm512_add_ps(c[i][1], _mm512_maskz_loadu_ps(m1, ci + 16));
        }
        _mm512_mask_storeu_ps(ci, m0, c[i][0]);
        _mm512_mask_storeu_ps(ci + 16, m1, c[i][1]);
    }
}

static inline float dot(const float *a, const float *b, int64_t n) {
    __m512 s = _mm512_setzero_ps();
    for (int64_t d = 0; d < n; d += 16) {
        __mmask16 mk = n - d >= 16 ? (__mmask16)0xffff : tail_mask(n - d);
        s = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, a + d), _mm512_maskz_loadu_ps(mk, b + d), s);
    }
    return _mm512_reduce_add_ps(s);
}

/* Decode attention reads each K and V row once per token from DRAM: rows of
 * one kv head are Hkv·hd floats apart (2 KiB for llama-1b), so consecutive
 * rows sit on different pages and the hardware prefetchers barely help; the
 * loads then wait on DRAM latency one row at a time. Both kernels below walk
 * the rows in order and prefetch the row ATTN_PF ahead (a few hundred ns of
 * work at decode), which keeps enough lines in flight to stream. */
#define ATTN_PF 16

static inline void prefetch_row(const float *r, int64_t len) {
    for (int64_t i = 0; i < len; i += 16) _mm_prefetch((const char *)(r + i), _MM_HINT_T0);
}

/* The four sums of a0..a3 in one __m128 ([Σa0, Σa1, Σa2, Σa3]): a partial
 * transpose (unpack within 128-bit lanes, then across them) instead of four
 * full horizontal reductions. */
static inline __m128 reduce4(__m512 a0, __m512 a1, __m512 a2, __m512 a3) {
    __m512 t01 = _mm512_add_ps(_mm512_unpacklo_ps(a0, a1), _mm512_unpackhi_ps(a0, a1));
    __m512 t23 = _mm512_add_ps(_mm512_unpacklo_ps(a2, a3), _mm512_unpackhi_ps(a2, a3));
    __m512 u = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(t01), _mm512_castps_pd(t23))),
                             _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(t01), _mm512_castps_pd(t23))));
    u = _mm512_add_ps(u, _mm512_shuffle_f32x4(u, u, _MM_SHUFFLE(1, 0, 3, 2)));
    u = _mm512_add_ps(u, _mm512_shuffle_f32x4(u, u, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm512_castps512_ps128(u);
}

/* Four keys at a time: each q_g chunk is loaded once per four keys and the
 * four dot products reduce together (reduce4). */
static void z_attn_scores(const float *q, int G, int64_t qs, const float *k, int64_t ks, int64_t n, int64_t hd,
                          float scale, float *s, int64_t ss) {
    const __m128 sc = _mm_set1_ps(scale);
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
        const float *k0 = k + j * ks, *k1 = k0 + ks, *k2 = k1 + ks, *k3 = k2 + ks;
        for (int r = 0; r < 4; r++)
            if (j + ATTN_PF + r < n) prefetch_row(k + (j + ATTN_PF + r) * ks, hd);
        for (int g = 0; g < G; g++) {
            const float *qg = q + g * qs;
            __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int64_t d = 0; d < hd; d += 16) {
                __mmask16 mk = hd - d >= 16 ? (__mmask16)0xffff : tail_mask(hd - d);
                __m512 qv = _mm512_maskz_loadu_ps(mk, qg + d);
                a0 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(mk, k0 + d), a0);
                a1 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(mk, k1 + d), a1);
                a2 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(mk, k2 + d), a2);
                a3 = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(mk, k3 + d), a3);
            }
            _mm_storeu_ps(s + g * ss + j, _mm_mul_ps(reduce4(a0, a1, a2, a3), sc));
        }
    }
    for (; j < n; j++) {
        const float *kj = k + j * ks;
        for (int g = 0; g < G; g++) s[g * ss + j] = dot(q + g * qs, kj, hd) * scale;
    }
}

/* acc[g][d0 .. d0+64) += Σ_j p[g][j] · v[j][d0 ..] for GN (1..4) heads: up to
 * 16 accumulators stay in registers while the rows stream past once, in
 * order; GN is a constant in every inlined copy, so the loops unroll. Each
 * element is summed over j in order, as the reference does. */
static inline __attribute__((always_inline)) void av_tile(const int GN, const float *p, int64_t ps, const float *v,
                                                           int64_t vs, int64_t n, int64_t d0, int64_t vd, float *acc,
                                                           int64_t as) {
    __mmask16 mk[4];
    for (int c = 0; c < 4; c++) {
        int64_t left = vd - d0 - 16 * c;
        mk[c] = left >= 16 ? (__mmask16)0xffff : left > 0 ? tail_mask(left) : 0;
    }
    const int64_t span = vd - d0 < 64 ? vd - d0 : 64;
    __m512 a[4][4];
    for (int g = 0; g < GN; g++)
        for (int c = 0; c < 4; c++) a[g][c] = _mm512_maskz_loadu_ps(mk[c], acc + g * as + d0 + 16 * c);
    for (int64_t j = 0; j < n; j++) {
        const float *vr = v + j * vs + d0;
        if (j + ATTN_PF < n) prefetch_row(vr + ATTN_PF * vs, span);
        __m512 x[4];
        for (int c = 0; c < 4; c++) x[c] = _mm512_maskz_loadu_ps(mk[c], vr + 16 * c);
        for (int g = 0; g < GN; g++) {
            __m512 b = _mm512_set1_ps(p[g * ps + j]);
            for (int c = 0; c < 4; c++) a[g][c] = _mm512_fmadd_ps(b, x[c], a[g][c]);
        }
    }
    for (int g = 0; g < GN; g++)
        for (int c = 0; c < 4; c++) _mm512_mask_storeu_ps(acc + g * as + d0 + 16 * c, mk[c], a[g][c]);
}

static void z_attn_av(const float *p, int G, int64_t ps, const float *v, int64_t vs, int64_t n, int64_t vd,
                      float *acc, int64_t as) {
    for (int g0 = 0; g0 < G; g0 += 4) {
        const float *pg = p + g0 * ps;
        float *ag = acc + g0 * as;
        for (int64_t d0 = 0; d0 < vd; d0 += 64) {
            switch (G - g0 < 4 ? G - g0 : 4) {
            case 1: av_tile(1, pg, ps, v, vs, n, d0, vd, ag, as); break;
            case 2: av_tile(2, pg, ps, v, vs, n, d0, vd, ag, as); break;
            case 3: av_tile(3, pg, ps, v, vs, n, d0, vd, ag, as); break;
            default: av_tile(4, pg, ps, v, vs, n, d0, vd, ag, as); break;
            }
        }
    }
}

/* exp(x) for x ≤ 0 (a score minus the row max): x = n·ln2 + r, |r| ≤ ln2/2,
 * exp(r) by its degree-6 Taylor polynomial (relative error < 2e-8 there,
 * below f32 rounding), times 2^n by vscalefps; x < -87.3 gives 0 as expf's
 * underflow does. */
static inline __m512 exp_core(__m512 x) { /* x already clamped to [-87.3, 89] (or NaN) */
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x); /* ln2 split: hi exact in f32 */
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 y = _mm512_set1_ps(1.0f / 720);
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.0f / 120));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.0f / 24));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.0f / 6));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(0.5f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.0f));
    y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(y, n);
}

static inline __m512 exp_neg(__m512 x) {
    const __m512 lo = _mm512_set1_ps(-87.33654f);
    __mmask16 under = _mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ);
    x = _mm512_max_ps(lo, x); /* operand order keeps a NaN score NaN */
    return _mm512_maskz_mov_ps((__mmask16)~under, exp_core(x));
}

static float z_softmax_exp(float *s, int64_t n, float mx) {
    __m512 m = _mm512_set1_ps(mx), sum = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j += 16) {
        __mmask16 mk = n - j >= 16 ? (__mmask16)0xffff : tail_mask(n - j);
        __m512 e = exp_neg(_mm512_sub_ps(_mm512_maskz_loadu_ps(mk, s + j), m));
        e = _mm512_maskz_mov_ps(mk, e);
        _mm512_mask_storeu_ps(s + j, mk, e);
        sum = _mm512_add_ps(sum, e);
    }
    return _mm512_reduce_add_ps(sum);
}

/* exp(y) for any y: 2^n · e^r as in exp_neg; y ≥ 89 gives +Inf through
 * vscalefps (n ≥ 128), y < -87.3 the smallest normal, whose sum with 1 is 1
 * as expf's tiny results are; a NaN stays NaN (operand order of min/max). */
static inline __m512 exp_any(__m512 y) {
    y = _mm512_max_ps(_mm512_set1_ps(-87.33654f), y);
    return exp_core(_mm512_min_ps(_mm512_set1_ps(89.0f), y));
}

/* The reference's operations in its order: x / (1 + e^-x), then · b. */
static void z_silu_mul(const float *a, const float *b, float *o, int64_t n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t j = 0; j < n; j += 16) {
        __mmask16 mk = n - j >= 16 ? (__mmask16)0xffff : tail_mask(n - j);
        __m512 x = _mm512_maskz_loadu_ps(mk, a + j);
        __m512 e = exp_any(_mm512_sub_ps(_mm512_setzero_ps(), x));
        __m512 s = _mm512_div_ps(x, _mm512_add_ps(one, e));
        if (b) s = _mm512_mul_ps(s, _mm512_maskz_loadu_ps(mk, b + j));
        _mm512_mask_storeu_ps(o + j, mk, s);
    }
}

const lmx_simd_kernels lmx_simd_avx512 = {
    .name = "avx512",
    .isa = LMX_ISA_AVX512,
    .mr = MR,
    .nr = NR,
    .matvec = z_matvec,
    .matvec_q = z_matvec_q,
    .matvec_mlx = z_matvec_mlx,
    .pack_b = z_pack_b,
    .gemm_tile = z_gemm_tile,
    .quantize_x = lmx_qx_quantize_avx512,
    .matvec_qx = lmx_qx_matvec_avx512,
    .qmr = LMX_QX_AVX512_MR,
    .qnr = LMX_QX_AVX512_NR,
    .pack_qx = lmx_qx_pack_avx512,
    .gemm_qx = lmx_qx_gemm_avx512,
    .attn_scores = z_attn_scores,
    .attn_av = z_attn_av,
    .softmax_exp = z_softmax_exp,
    .silu_mul = z_silu_mul,
};
