/* qdot_avx512.c - int8-activation kernels for the AVX-512 table (compiled
 * with F/BW/VL/DQ + VNNI; the table is chosen only when cpuid reports all of
 * them, see cpu_features.c). Format and error bound: cpu_qdot.c.
 *
 * Decode (matvec), Q4_0 / Q8_0: 4 weight rows per pass share each 64-byte
 * load of x; two blocks of a row fill one 512-bit vpdpbusd of u = w + off
 * (unsigned) against q (signed). The accumulator starts at -off·Σq/8 per lane,
 * so the eight lanes of a block sum to Σ w·q; then one convert and one FMA by
 * [d_w·d_x of block b ×8, of block b+1 ×8]. The two f16 scales come from one
 * load + vpermw. The next four rows are prefetched (the weights are 4 KiB file
 * pages, see simd_avx512.c). These are compute-bound near the per-core DRAM
 * rate (~1.1 ns per block-row), so every shuffle saved counts: measured
 * alternatives (one block per 256-bit op; scales converted in a per-row
 * prologue) were 10-20% slower.
 * Q6_K: one row at a time, two 32-blocks per 512-bit vpmaddubsw (u <= 63, so
 * pairs fit int16) then vpmaddwd by the four sub-block scales; the -32 offset
 * is one vpmaddwd of the 16 scales by the 16 half-block sums per super-block.
 *
 * Prefill (gemm_qx): a 6 x 32 register tile over the packed panel
 * (cpu_qdot.h): per 4 columns, 2 loads of B and 6 4-byte broadcasts of x feed
 * 12 vpdpbusd; after each sub-block the int32 sums are converted and scaled
 * by Bs·d_x into f32 accumulators. The panel is packed by unpacking 64 columns
 * of 16 rows and transposing 16 x 16 dwords in registers. */
#include "backend/cpu/cpu_qdot.h"

#include <immintrin.h>
#include <math.h>

static inline float f16_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

static inline float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

void lmx_qx_quantize_avx512(const float *x, int64_t K, int8_t *q, float *d, float *sum, int32_t *s32,
                            int16_t *s16) {
    const __m512i absm = _mm512_set1_epi32(0x7fffffff), expm = _mm512_set1_epi32(0x7f800000);
    for (int64_t b = 0; b < K / 32; b++) {
        __m512 v0 = _mm512_loadu_ps(x + 32 * b), v1 = _mm512_loadu_ps(x + 32 * b + 16);
        __m512i i0 = _mm512_castps_si512(v0), i1 = _mm512_castps_si512(v1);
        __mmask16 bad = _mm512_cmpeq_epi32_mask(_mm512_and_si512(i0, expm), expm) |
                        _mm512_cmpeq_epi32_mask(_mm512_and_si512(i1, expm), expm);
        __m512 a = _mm512_max_ps(_mm512_castsi512_ps(_mm512_and_si512(i0, absm)),
                                 _mm512_castsi512_ps(_mm512_and_si512(i1, absm)));
        float amax = _mm512_reduce_max_ps(a);
        float db = amax / 127.0f, id = amax > 0 ? 127.0f / amax : 0.0f;
        if (bad) db = NAN, id = 0.0f;
        sum[b] = _mm512_reduce_add_ps(_mm512_add_ps(v0, v1));
        d[b] = db;
        __m512i q0 = _mm512_setzero_si512(), q1 = q0;
        if (id != 0.0f) {
            __m512 idv = _mm512_set1_ps(id);
            q0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, idv)); /* MXCSR default: nearest even */
            q1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, idv));
        }
        _mm_storeu_si128((__m128i *)(q + 32 * b), _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(q + 32 * b + 16), _mm512_cvtepi32_epi8(q1));
        int32_t h0 = _mm512_reduce_add_epi32(q0), h1 = _mm512_reduce_add_epi32(q1);
        s32[b] = h0 + h1;
        s16[2 * b] = (int16_t)h0, s16[2 * b + 1] = (int16_t)h1;
    }
}

/* ---- decode: Q4_0 / Q8_0 ---- */

/* 32 unsigned weights of a block in element order. Q4_0: 16 bytes, low
 * nibbles are elements 0-15, high nibbles 16-31. Q8_0: int8 + 128. */
static inline __attribute__((always_inline)) __m256i block_u(const int dt, const uint8_t *qs) {
    if (dt == LMX_Q4_0) {
        __m128i v = _mm_loadu_si128((const __m128i *)qs);
        __m256i t = _mm256_inserti128_si256(_mm256_castsi128_si256(v), _mm_srli_epi16(v, 4), 1);
        return _mm256_and_si256(t, _mm256_set1_epi8(15));
    }
    return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)qs), _mm256_set1_epi8((char)0x80));
}

/* 64 unsigned weights of blocks b, b+1 (o = b's offset) in element order,
 * and their two f16 scales as 8 + 8 floats. Q4_0: 128-bit lanes [qs_b,
 * qs_b, qs_b1, qs_b1], odd lanes shifted by 4, low nibbles kept. Scales:
 * one 64-byte load holds d_b (word 0) and d_b1 (word 9 / 17); vpermw
 * spreads them over 8 words each. */
static inline __attribute__((always_inline)) __m512i pair_u(const int dt, const uint8_t *blk) {
    if (dt == LMX_Q4_0) {
        __m256i a = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(blk + 2)));
        __m256i c = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(blk + 20)));
        __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(a), c, 1);
        z = _mm512_srlv_epi16(z, _mm512_setr_epi64(0, 0, 0x0004000400040004ll, 0x0004000400040004ll, 0, 0,
                                                   0x0004000400040004ll, 0x0004000400040004ll));
        return _mm512_and_si512(z, _mm512_set1_epi8(15));
    }
    __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(blk + 2))),
                                   _mm256_loadu_si256((const __m256i *)(blk + 36)), 1);
    return _mm512_xor_si512(z, _mm512_set1_epi8((char)0x80));
}

static inline __attribute__((always_inline)) __m512 pair_d(const int dt, const uint8_t *blk) {
    const short j = dt == LMX_Q4_0 ? 9 : 17;
    const __m256i idx = _mm256_setr_epi16(0, 0, 0, 0, 0, 0, 0, 0, j, j, j, j, j, j, j, j);
    __m256i v = dt == LMX_Q4_0 ? _mm256_loadu_si256((const __m256i *)blk)
                               : _mm512_castsi512_si256(_mm512_permutexvar_epi16(
                                     _mm512_castsi256_si512(idx), _mm512_loadu_si512((const void *)blk)));
    if (dt == LMX_Q4_0) v = _mm256_permutexvar_epi16(idx, v);
    return _mm512_cvtph_ps(v);
}

static inline __attribute__((always_inline)) void mv_q40_q80(const int dt, const uint8_t *w, int64_t K, int64_t r0,
                                                              int64_t r1, const lmx_xq *x, int64_t M, float *y,
                                                              int64_t ys) {
    const size_t bs = dt == LMX_Q8_0 ? 34 : 18;
    const int64_t nb = K / 32;
    const size_t rb = (size_t)nb * bs;
    const int offs = dt == LMX_Q8_0 ? 4 : 0; /* off / 8 lanes = 1 << offs */
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        const uint8_t *w0 = w + (size_t)r * rb, *w1 = w0 + rb, *w2 = w1 + rb, *w3 = w2 + rb, *pf = w3 + rb;
        for (int64_t m = 0; m < M; m++) {
            const int8_t *q = x->q + m * x->qrs;
            const float *dx = x->d + m * nb;
            const int32_t *s32 = x->s32 + m * nb;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            __m512 z0 = _mm512_setzero_ps(), z1 = z0, z2 = z0, z3 = z0;
            const __m512i lanes01 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
            int64_t b = 0;
            for (; b + 2 <= nb; b += 2) { /* two blocks per 512-bit vector */
                const size_t o = (size_t)b * bs;
                if (m == 0) { /* the same pair of the next 4 rows (36 or 68 bytes: 1 or 2 lines), into
                                 L2: ~2.5% faster decode than into L1 (llama-1b Q8_0, session 4) */
                    for (int i = 0; i < 4; i++) {
                        _mm_prefetch((const char *)pf + i * rb + o, _MM_HINT_T1);
                        if (dt == LMX_Q8_0) _mm_prefetch((const char *)pf + i * rb + o + 64, _MM_HINT_T1);
                    }
                }
                __m512i xv = _mm512_loadu_si512((const void *)(q + 32 * b));
                __m512i sq = _mm512_permutexvar_epi32(lanes01, _mm512_castsi128_si512(_mm_loadl_epi64((const __m128i *)(s32 + b))));
                __m512i init = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(sq, offs));
                __m512 dv = _mm512_permutexvar_ps(lanes01, _mm512_castps128_ps512(_mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)(dx + b)))));
                __m512i d0 = _mm512_dpbusd_epi32(init, pair_u(dt, w0 + o), xv);
                __m512i d1 = _mm512_dpbusd_epi32(init, pair_u(dt, w1 + o), xv);
                __m512i d2 = _mm512_dpbusd_epi32(init, pair_u(dt, w2 + o), xv);
                __m512i d3 = _mm512_dpbusd_epi32(init, pair_u(dt, w3 + o), xv);
                z0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d0), _mm512_mul_ps(pair_d(dt, w0 + o), dv), z0);
                z1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d1), _mm512_mul_ps(pair_d(dt, w1 + o), dv), z1);
                z2 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d2), _mm512_mul_ps(pair_d(dt, w2 + o), dv), z2);
                z3 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d3), _mm512_mul_ps(pair_d(dt, w3 + o), dv), z3);
            }
            a0 = _mm256_add_ps(_mm512_castps512_ps256(z0), _mm512_extractf32x8_ps(z0, 1));
            a1 = _mm256_add_ps(_mm512_castps512_ps256(z1), _mm512_extractf32x8_ps(z1, 1));
            a2 = _mm256_add_ps(_mm512_castps512_ps256(z2), _mm512_extractf32x8_ps(z2, 1));
            a3 = _mm256_add_ps(_mm512_castps512_ps256(z3), _mm512_extractf32x8_ps(z3, 1));
            for (; b < nb; b++) {
                const size_t o = (size_t)b * bs;
                if (m == 0) {
                    _mm_prefetch((const char *)pf + o, _MM_HINT_T1);
                    _mm_prefetch((const char *)pf + rb + o, _MM_HINT_T1);
                    _mm_prefetch((const char *)pf + 2 * rb + o, _MM_HINT_T1);
                    _mm_prefetch((const char *)pf + 3 * rb + o, _MM_HINT_T1);
                }
                __m256i xv = _mm256_loadu_si256((const __m256i *)(q + 32 * b));
                __m256i init = _mm256_set1_epi32(-s32[b] * (1 << offs));
                float db = dx[b];
                __m256i d0 = _mm256_dpbusd_epi32(init, block_u(dt, w0 + o + 2), xv);
                __m256i d1 = _mm256_dpbusd_epi32(init, block_u(dt, w1 + o + 2), xv);
                __m256i d2 = _mm256_dpbusd_epi32(init, block_u(dt, w2 + o + 2), xv);
                __m256i d3 = _mm256_dpbusd_epi32(init, block_u(dt, w3 + o + 2), xv);
                a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d0), _mm256_set1_ps(f16_at(w0 + o) * db), a0);
                a1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d1), _mm256_set1_ps(f16_at(w1 + o) * db), a1);
                a2 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d2), _mm256_set1_ps(f16_at(w2 + o) * db), a2);
                a3 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d3), _mm256_set1_ps(f16_at(w3 + o) * db), a3);
            }
            float *ym = y + m * ys + r;
            ym[0] = hsum256(a0), ym[1] = hsum256(a1), ym[2] = hsum256(a2), ym[3] = hsum256(a3);
        }
    }
    for (; r < r1; r++) {
        const uint8_t *w0 = w + (size_t)r * rb;
        for (int64_t m = 0; m < M; m++) {
            const int8_t *q = x->q + m * x->qrs;
            const float *dx = x->d + m * nb;
            const int32_t *s32 = x->s32 + m * nb;
            __m256 a0 = _mm256_setzero_ps();
            for (int64_t b = 0; b < nb; b++) {
                const size_t o = (size_t)b * bs;
                __m256i xv = _mm256_loadu_si256((const __m256i *)(q + 32 * b));
                __m256i d0 = _mm256_dpbusd_epi32(_mm256_set1_epi32(-s32[b] * (1 << offs)), block_u(dt, w0 + o + 2), xv);
                a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d0), _mm256_set1_ps(f16_at(w0 + o) * dx[b]), a0);
            }
            y[m * ys + r] = hsum256(a0);
        }
    }
}

/* ---- decode: Q6_K ---- */

/* One row: per half super-block (128 elements = x-blocks 4h..4h+3), one
 * 64-byte load of ql and a broadcast of the 32 qh bytes give the 6-bit codes
 * of two x-blocks per 512-bit vector (u01: low nibbles + qh bits 0-1 / 2-3;
 * u23: high nibbles + bits 4-5 / 6-7; the per-half shift counts differ). */
static inline float q6k_row_qx(const uint8_t *b, int64_t nb, const int8_t *q, const float *dx, const int16_t *s16,
                               const uint8_t *pf) {
    const __m512i m4 = _mm512_set1_epi8(0x0f), m30 = _mm512_set1_epi8(0x30);
    const __m512i shl01 = _mm512_setr_epi64(0x0004000400040004ll, 0x0004000400040004ll, 0x0004000400040004ll,
                                            0x0004000400040004ll, 0x0002000200020002ll, 0x0002000200020002ll,
                                            0x0002000200020002ll, 0x0002000200020002ll);
    const __m512i shr23 = _mm512_setr_epi64(0, 0, 0, 0, 0x0002000200020002ll, 0x0002000200020002ll,
                                            0x0002000200020002ll, 0x0002000200020002ll);
    const __m512i lanes01 = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    __m512 acc = _mm512_setzero_ps();
    __m256 accc = _mm256_setzero_ps();
    for (int64_t i = 0; i < nb; i++, b += 210, q += 256, dx += 8, s16 += 16) {
        for (int c = 0; c < 210; c += 64) _mm_prefetch((const char *)pf + i * 210 + c, _MM_HINT_T0);
        __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b + 192)));
        __m512i scz = _mm512_castsi256_si512(sc16);
        __m256 dv = _mm256_mul_ps(_mm256_set1_ps(f16_at(b + 208)), _mm256_loadu_ps(dx));
        /* lane j: Σ over x-block j of sc·Σq (the -32 offset, applied below) */
        __m256i cj = _mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)s16));
        accc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(cj), dv, accc);
        __m512 dvz = _mm512_castps256_ps512(dv);
        for (int h = 0; h < 2; h++) {
            __m512i L = _mm512_loadu_si512((const void *)(b + 64 * h));
            __m512i H = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b + 128 + 32 * h)));
            __m512i u01 = _mm512_or_si512(_mm512_and_si512(L, m4), _mm512_and_si512(_mm512_sllv_epi16(H, shl01), m30));
            __m512i u23 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(L, 4), m4),
                                          _mm512_and_si512(_mm512_srlv_epi16(H, shr23), m30));
            for (int t = 0; t < 2; t++) {
                const int j = 4 * h + 2 * t; /* x-blocks j, j+1: sub-blocks 2j .. 2j+3 */
                const __m512i idx = _mm512_setr_epi32(
                    (2 * j) * 0x10001, (2 * j) * 0x10001, (2 * j) * 0x10001, (2 * j) * 0x10001, (2 * j + 1) * 0x10001,
                    (2 * j + 1) * 0x10001, (2 * j + 1) * 0x10001, (2 * j + 1) * 0x10001, (2 * j + 2) * 0x10001,
                    (2 * j + 2) * 0x10001, (2 * j + 2) * 0x10001, (2 * j + 2) * 0x10001, (2 * j + 3) * 0x10001,
                    (2 * j + 3) * 0x10001, (2 * j + 3) * 0x10001, (2 * j + 3) * 0x10001);
                __m512i p = _mm512_maddubs_epi16(t ? u23 : u01, _mm512_loadu_si512((const void *)(q + 32 * j)));
                __m512i sv = _mm512_madd_epi16(p, _mm512_permutexvar_epi16(idx, scz));
                __m512 dj = _mm512_permutexvar_ps(_mm512_add_epi32(lanes01, _mm512_set1_epi32(j)), dvz);
                acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sv), dj, acc);
            }
        }
    }
    return _mm512_reduce_add_ps(acc) - 32.0f * hsum256(accc);
}

/* Q4_K (144-byte super-blocks of 256: f16 d, f16 dmin, 12 bytes of 6-bit
 * scales and mins, 128 bytes of nibbles; w = d·sc_j·q - dmin·m_j on 32-element
 * sub-block j, the x-block j): Σ w·x = d·sc_j·Σ q·x^ - dmin·m_j·Σ x, the last
 * with the exact f32 block sums of x. q <= 15 is the unsigned operand as is. */
static inline float q4k_row_qx(const uint8_t *b, int64_t nb, const int8_t *q, const float *dx, const float *xs,
                               const uint8_t *pf) {
    const __m256i m4 = _mm256_set1_epi8(15);
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0, accm = acc0;
    for (int64_t i = 0; i < nb; i++, b += 144, q += 256, dx += 8, xs += 8) {
        for (int c = 0; c < 144; c += 64) _mm_prefetch((const char *)pf + i * 144 + c, _MM_HINT_T0);
        float ds[8];
        lmx_qx_q4k_scales(b, dx, xs, ds, &accm);
        for (int c = 0; c < 4; c++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(b + 16 + 32 * c));
            __m256i d0 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_and_si256(v, m4),
                                             _mm256_loadu_si256((const __m256i *)(q + 64 * c)));
            __m256i d1 = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_and_si256(_mm256_srli_epi16(v, 4), m4),
                                             _mm256_loadu_si256((const __m256i *)(q + 64 * c + 32)));
            acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d0), _mm256_set1_ps(ds[2 * c]), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d1), _mm256_set1_ps(ds[2 * c + 1]), acc1);
        }
    }
    return hsum256(_mm256_add_ps(acc0, acc1)) - hsum256(accm);
}

void lmx_qx_matvec_avx512(lmx_dtype wt, const void *w, int64_t K, int64_t r0, int64_t r1, const lmx_xq *x, int64_t M,
                          float *y, int64_t ys) {
    if (wt == LMX_Q4_K) {
        const int64_t nb = K / 256;
        const size_t rb = (size_t)nb * 144;
        for (int64_t r = r0; r < r1; r++) {
            const uint8_t *row = (const uint8_t *)w + r * rb;
            for (int64_t m = 0; m < M; m++)
                y[m * ys + r] = q4k_row_qx(row, nb, x->q + m * x->qrs, x->d + m * (K / 32), x->sum + m * (K / 32), row + rb);
        }
    } else if (wt == LMX_Q6_K) {
        const int64_t nb = K / 256;
        const size_t rb = (size_t)nb * 210;
        for (int64_t r = r0; r < r1; r++) {
            const uint8_t *row = (const uint8_t *)w + r * rb;
            for (int64_t m = 0; m < M; m++)
                y[m * ys + r] = q6k_row_qx(row, nb, x->q + m * x->qrs, x->d + m * (K / 32), x->s16 + m * (K / 16), row + rb);
        }
    } else if (wt == LMX_Q8_0) {
        mv_q40_q80(LMX_Q8_0, w, K, r0, r1, x, M, y, ys);
    } else {
        mv_q40_q80(LMX_Q4_0, w, K, r0, r1, x, M, y, ys);
    }
}

/* ---- prefill: packed-panel GEMM tile ---- */

#define QMR LMX_QX_AVX512_MR
#define QNR LMX_QX_AVX512_NR

/* 64 unsigned weights (u = w + off) of one row from column k (a multiple of
 * 64 inside the row, or of 32 when half: then the upper 32 bytes are zero). */
static inline __attribute__((always_inline)) __m512i unpack64(const int dt, const uint8_t *row, int64_t k, bool half) {
    if (dt == LMX_Q4_0) {
        const uint8_t *b = row + (k / 32) * 18 + 2;
        __m128i lo = _mm_loadu_si128((const __m128i *)b), hi = half ? lo : _mm_loadu_si128((const __m128i *)(b + 18));
        /* 128-bit lanes [qs_b, qs_b, qs_b1, qs_b1], the odd lanes shifted by 4: low nibbles then high */
        __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set_m128i(lo, lo)), _mm256_set_m128i(hi, hi), 1);
        z = _mm512_srlv_epi16(z, _mm512_setr_epi64(0, 0, 0x0004000400040004ll, 0x0004000400040004ll, 0, 0,
                                                   0x0004000400040004ll, 0x0004000400040004ll));
        z = _mm512_and_si512(z, _mm512_set1_epi8(15));
        return half ? _mm512_zextsi256_si512(_mm512_castsi512_si256(z)) : z;
    }
    if (dt == LMX_Q8_0) {
        const uint8_t *b = row + (k / 32) * 34 + 2;
        __m256i lo = _mm256_loadu_si256((const __m256i *)b);
        __m256i hi = half ? _mm256_set1_epi8((char)0x80) : _mm256_loadu_si256((const __m256i *)(b + 34));
        __m512i z = _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1), _mm512_set1_epi8((char)0x80));
        return z;
    }
    if (dt == LMX_Q4_K) { /* columns [k, k+64): sub-blocks j, j+1 = low, high nibbles of 32 bytes */
        __m256i v = _mm256_loadu_si256((const __m256i *)(row + (k / 256) * 144 + 16 + (k % 256) / 2));
        const __m256i m4 = _mm256_set1_epi8(15);
        return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_and_si256(v, m4)),
                                  _mm256_and_si256(_mm256_srli_epi16(v, 4), m4), 1);
    }
    /* Q6_K: columns [k, k+64) are x-blocks t, t+1 (t = k%256/32, even) of
     * half t/4 of the super-block; see q6k_row_qx. */
    const uint8_t *b = row + (k / 256) * 210;
    const int t = (int)(k % 256) / 32, h = t / 4;
    const __m256i m4 = _mm256_set1_epi8(0x0f), m30 = _mm256_set1_epi8(0x30);
    __m256i L0 = _mm256_loadu_si256((const __m256i *)(b + 64 * h));
    __m256i L1 = _mm256_loadu_si256((const __m256i *)(b + 64 * h + 32));
    __m256i H = _mm256_loadu_si256((const __m256i *)(b + 128 + 32 * h));
    __m256i u0, u1;
    if (t % 4 == 0) {
        u0 = _mm256_or_si256(_mm256_and_si256(L0, m4), _mm256_and_si256(_mm256_slli_epi16(H, 4), m30));
        u1 = _mm256_or_si256(_mm256_and_si256(L1, m4), _mm256_and_si256(_mm256_slli_epi16(H, 2), m30));
    } else {
        u0 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(L0, 4), m4), _mm256_and_si256(H, m30));
        u1 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(L1, 4), m4),
                             _mm256_and_si256(_mm256_srli_epi16(H, 2), m30));
    }
    return _mm512_inserti64x4(_mm512_castsi256_si512(u0), u1, 1);
}

/* r[i] lane j -> r[j] lane i for 16 x 16 dwords. */
static inline void transpose16_epi32(__m512i r[16]) {
    __m512i t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int b = 0; b < 4; b++) {
        __m512i g0 = r[b], g1 = r[4 + b], g2 = r[8 + b], g3 = r[12 + b];
        __m512i u0 = _mm512_shuffle_i32x4(g0, g1, 0x44), u1 = _mm512_shuffle_i32x4(g0, g1, 0xee);
        __m512i u2 = _mm512_shuffle_i32x4(g2, g3, 0x44), u3 = _mm512_shuffle_i32x4(g2, g3, 0xee);
        t[b] = _mm512_shuffle_i32x4(u0, u2, 0x88);
        t[4 + b] = _mm512_shuffle_i32x4(u0, u2, 0xdd);
        t[8 + b] = _mm512_shuffle_i32x4(u1, u3, 0x88);
        t[12 + b] = _mm512_shuffle_i32x4(u1, u3, 0xdd);
    }
    for (int i = 0; i < 16; i++) r[i] = t[i];
}

/* Each 64 columns of 16 rows: unpacked (16 x 16 dwords of 4 weights) and
 * transposed in registers, so every store is 16 rows' 4-byte groups of one
 * column group: a full 64-byte line of B. */
static inline __attribute__((always_inline)) void pack_impl(const int dt, const uint8_t *w, int64_t K, int64_t n0,
                                                            int nr, int64_t k0, int64_t kc, uint8_t *B, float *Bs) {
    const size_t rb = lmx_dtype_bytes((lmx_dtype)dt, K);
    for (int h = 0; h < QNR; h += 16) {
        for (int64_t k = 0; k < kc; k += 64) {
            const bool half = kc - k < 64;
            __m512i r[16];
            for (int j = 0; j < 16; j++)
                r[j] = h + j < nr ? unpack64(dt, w + (size_t)(n0 + h + j) * rb, k0 + k, half) : _mm512_setzero_si512();
            transpose16_epi32(r);
            for (int c = 0; c < (half ? 8 : 16); c++) _mm512_store_si512((void *)(B + ((k / 4 + c) * QNR + h) * 4), r[c]);
        }
    }
    const int sub = dt == LMX_Q6_K ? 16 : 32;
    for (int j = 0; j < QNR; j++) {
        const uint8_t *row = w + (size_t)(n0 + j) * rb;
        for (int64_t s = 0; s < kc / sub; s++) {
            float v = 0;
            if (j < nr) {
                int64_t k = k0 + s * sub;
                if (dt == LMX_Q6_K) {
                    const uint8_t *b = row + (k / 256) * 210;
                    v = f16_at(b + 208) * (float)((const int8_t *)(b + 192))[(k % 256) / 16];
                } else if (dt == LMX_Q4_K) {
                    const uint8_t *b = row + (k / 256) * 144;
                    uint8_t scj, mj;
                    lmx_qx_k4_scale_min((int)(k % 256) / 32, b + 4, &scj, &mj);
                    v = f16_at(b) * (float)scj;
                    Bs[(kc / sub + s) * QNR + j] = j < nr ? f16_at(b + 2) * (float)mj : 0.0f;
                } else {
                    v = f16_at(row + (k / 32) * (dt == LMX_Q8_0 ? 34 : 18));
                }
            } else if (dt == LMX_Q4_K) {
                Bs[(kc / sub + s) * QNR + j] = 0;
            }
            Bs[s * QNR + j] = v;
        }
    }
}

void lmx_qx_pack_avx512(lmx_dtype wt, const void *w, int64_t K, int64_t n0, int nr, int64_t k0, int64_t kc,
                        uint8_t *B, float *Bs) {
    if (wt == LMX_Q4_0)
        pack_impl(LMX_Q4_0, w, K, n0, nr, k0, kc, B, Bs);
    else if (wt == LMX_Q8_0)
        pack_impl(LMX_Q8_0, w, K, n0, nr, k0, kc, B, Bs);
    else if (wt == LMX_Q4_K)
        pack_impl(LMX_Q4_K, w, K, n0, nr, k0, kc, B, Bs);
    else
        pack_impl(LMX_Q6_K, w, K, n0, nr, k0, kc, B, Bs);
}

static inline __attribute__((always_inline)) void gemm_impl(const int SUB, const bool MINS, int64_t kc,
                                                            const lmx_xq *x, int64_t m0,
                                                            int64_t k0, const int32_t *corr, const uint8_t *B,
                                                            const float *Bs, float *C, int64_t cs, int mr, int nr,
                                                            bool accumulate) {
    const int64_t K = x->K, ns = K / SUB;
    const int8_t *xr[QMR];
    const float *dxr[QMR], *sxr[QMR];
    const int32_t *cr[QMR];
    for (int i = 0; i < QMR; i++) { /* rows past mr repeat row 0: computed, never stored */
        int64_t m = m0 + (i < mr ? i : 0);
        xr[i] = x->q + m * x->qrs + k0;
        dxr[i] = x->d + m * (K / 32) + k0 / 32;
        sxr[i] = x->sum + m * (K / 32) + k0 / 32;
        cr[i] = corr + m * ns + k0 / SUB;
    }
    __m512 f[QMR][2];
    for (int i = 0; i < QMR; i++) f[i][0] = f[i][1] = _mm512_setzero_ps();
    for (int64_t s = 0; s < kc / SUB; s++) {
        __m512i a[QMR][2];
        for (int i = 0; i < QMR; i++) a[i][0] = a[i][1] = _mm512_set1_epi32(cr[i][s]);
        const uint8_t *bp = B + s * SUB * QNR;
        for (int kk = 0; kk < SUB / 4; kk++, bp += 4 * QNR) {
            __m512i b0 = _mm512_load_si512((const void *)bp), b1 = _mm512_load_si512((const void *)(bp + 64));
            for (int i = 0; i < QMR; i++) {
                int32_t xv;
                memcpy(&xv, xr[i] + s * SUB + 4 * kk, 4);
                __m512i xb = _mm512_set1_epi32(xv);
                a[i][0] = _mm512_dpbusd_epi32(a[i][0], b0, xb);
                a[i][1] = _mm512_dpbusd_epi32(a[i][1], b1, xb);
            }
        }
        __m512 sc0 = _mm512_loadu_ps(Bs + s * QNR), sc1 = _mm512_loadu_ps(Bs + s * QNR + 16);
        for (int i = 0; i < QMR; i++) {
            __m512 dv = _mm512_set1_ps(dxr[i][s * SUB / 32]);
            f[i][0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a[i][0]), _mm512_mul_ps(sc0, dv), f[i][0]);
            f[i][1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a[i][1]), _mm512_mul_ps(sc1, dv), f[i][1]);
        }
        if (MINS) { /* Q4_K: - dmin·m_j · Σx_j (SUB = 32: sub-block = x-block) */
            const float *bm = Bs + (kc / SUB + s) * QNR;
            __m512 mn0 = _mm512_loadu_ps(bm), mn1 = _mm512_loadu_ps(bm + 16);
            for (int i = 0; i < QMR; i++) {
                __m512 sx = _mm512_set1_ps(sxr[i][s]);
                f[i][0] = _mm512_fnmadd_ps(mn0, sx, f[i][0]);
                f[i][1] = _mm512_fnmadd_ps(mn1, sx, f[i][1]);
            }
        }
    }
    __mmask16 k0m = nr >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << nr) - 1u);
    __mmask16 k1m = nr >= 32 ? (__mmask16)0xffff : nr > 16 ? (__mmask16)((1u << (nr - 16)) - 1u) : 0;
    for (int i = 0; i < QMR; i++) {
        if (i >= mr) break;
        float *ci = C + i * cs;
        if (accumulate) {
            f[i][0] = _mm512_add_ps(f[i][0], _mm512_maskz_loadu_ps(k0m, ci));
            f[i][1] = _mm512_add_ps(f[i][1], _mm512_maskz_loadu_ps(k1m, ci + 16));
        }
        _mm512_mask_storeu_ps(ci, k0m, f[i][0]);
        _mm512_mask_storeu_ps(ci + 16, k1m, f[i][1]);
    }
}

void lmx_qx_gemm_avx512(lmx_dtype wt, int64_t kc, const lmx_xq *x, int64_t m0, int64_t k0, const int32_t *corr,
                        const uint8_t *B, const float *Bs, float *C, int64_t cs, int mr, int nr, bool accumulate) {
    if (lmx_qx_sub(wt) == 16)
        gemm_impl(16, false, kc, x, m0, k0, corr, B, Bs, C, cs, mr, nr, accumulate);
    else if (wt == LMX_Q4_K)
        gemm_impl(32, true, kc, x, m0, k0, corr, B, Bs, C, cs, mr, nr, accumulate);
    else
        gemm_impl(32, false, kc, x, m0, k0, corr, B, Bs, C, cs, mr, nr, accumulate);
}
