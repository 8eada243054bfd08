/* qdot_avx2.c - int8-activation kernels for the AVX2 table (AVX2 + FMA +
 * F16C, no VNNI). Format and error bound: cpu_qdot.c.
 *
 * The integer dot is vpmaddubsw (unsigned x signed bytes -> int16 pair sums,
 * saturating) then vpmaddwd by 1 (-> int32). Pairs must fit int16: Q4_0
 * (u <= 15) and Q6_K (u <= 63) use u = w + off against q as on AVX-512;
 * Q8_0 (|w| <= 127, but u = w + 128 would reach 255·127·2 > 32767) uses
 * |w| against q with w's sign moved onto q (vpsignb), llama.cpp's trick.
 * Decode: 4 weight rows per pass share each block of x, as on AVX-512.
 * Prefill: a 4 x 8 tile over the packed panel (one ymm of B per 4 columns). */
#include "backend/cpu/cpu_qdot.h"

#include <immintrin.h>
#include <math.h>

static inline float f16_at(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline int32_t hsum_i(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

static inline float hmax(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

void lmx_qx_quantize_avx2(const float *x, int64_t K, int8_t *q, float *d, float *sum, int32_t *s32, int16_t *s16) {
    const __m256i absm = _mm256_set1_epi32(0x7fffffff), expm = _mm256_set1_epi32(0x7f800000);
    for (int64_t b = 0; b < K / 32; b++) {
        __m256 v[4];
        __m256 a = _mm256_setzero_ps(), s = a;
        __m256i bad = _mm256_setzero_si256();
        for (int i = 0; i < 4; i++) {
            v[i] = _mm256_loadu_ps(x + 32 * b + 8 * i);
            __m256i bits = _mm256_castps_si256(v[i]);
            bad = _mm256_or_si256(bad, _mm256_cmpeq_epi32(_mm256_and_si256(bits, expm), expm));
            a = _mm256_max_ps(a, _mm256_castsi256_ps(_mm256_and_si256(bits, absm)));
            s = _mm256_add_ps(s, v[i]);
        }
        float amax = hmax(a);
        float db = amax / 127.0f, id = amax > 0 ? 127.0f / amax : 0.0f;
        if (!_mm256_testz_si256(bad, bad)) db = NAN, id = 0.0f;
        sum[b] = hsum(s);
        d[b] = db;
        __m256i qi[4];
        for (int i = 0; i < 4; i++)
            qi[i] = id != 0.0f ? _mm256_cvtps_epi32(_mm256_mul_ps(v[i], _mm256_set1_ps(id))) : _mm256_setzero_si256();
        /* int32 -> int8 (values within [-127, 127]: no saturation); packs
         * interleave 128-bit lanes, the permute puts them back in order. */
        __m256i p16a = _mm256_packs_epi32(qi[0], qi[1]), p16b = _mm256_packs_epi32(qi[2], qi[3]);
        __m256i p8 = _mm256_packs_epi16(p16a, p16b);
        p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(q + 32 * b), p8);
        int32_t h0 = hsum_i(_mm256_add_epi32(qi[0], qi[1])), h1 = hsum_i(_mm256_add_epi32(qi[2], qi[3]));
        s32[b] = h0 + h1;
        s16[2 * b] = (int16_t)h0, s16[2 * b + 1] = (int16_t)h1;
    }
}

/* Σ over 32 bytes of u·q as 8 int32 lanes. */
static inline __m256i dot_uq(__m256i u, __m256i q) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, q), _mm256_set1_epi16(1));
}

/* Q4_0: u = w + 8, the accumulator starts at -8·Σq / 8 lanes = -Σq per lane.
 * Q8_0: |w| against sign(w)·q, no offset. */
static inline __attribute__((always_inline)) __m256i block_dot(const int dt, const uint8_t *qs, __m256i xv,
                                                               __m256i init) {
    if (dt == LMX_Q4_0) {
        __m128i v = _mm_loadu_si128((const __m128i *)qs);
        __m256i u = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(15));
        return _mm256_add_epi32(init, dot_uq(u, xv));
    }
    __m256i wv = _mm256_loadu_si256((const __m256i *)qs);
    return dot_uq(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(xv, wv));
}

static inline __attribute__((always_inline)) void mv_q40_q80(const int dt, const uint8_t *w, int64_t K, int64_t r0,
                                                              int64_t r1, const lmx_xq *x, int64_t M, float *y,
                                                              int64_t ys) {
    const size_t bs = dt == LMX_Q8_0 ? 34 : 18;
    const int64_t nb = K / 32;
    const size_t rb = (size_t)nb * bs;
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
        const uint8_t *wr[4] = {w + (size_t)r * rb, w + (size_t)(r + 1) * rb, w + (size_t)(r + 2) * rb,
                                w + (size_t)(r + 3) * rb};
        const uint8_t *pf = wr[3] + rb;
        for (int64_t m = 0; m < M; m++) {
            const int8_t *q = x->q + m * x->qrs;
            const float *dx = x->d + m * nb;
            const int32_t *s32 = x->s32 + m * nb;
            __m256 a[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
            for (int64_t b = 0; b < nb; b++) {
                const size_t o = (size_t)b * bs;
                if (m == 0)
                    for (int i = 0; i < 4; i++) _mm_prefetch((const char *)pf + i * rb + o, _MM_HINT_T0);
                __m256i xv = _mm256_loadu_si256((const __m256i *)(q + 32 * b));
                __m256i init = _mm256_set1_epi32(-s32[b]);
                for (int i = 0; i < 4; i++) {
                    __m256i dt32 = block_dot(dt, wr[i] + o + 2, xv, init);
                    a[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dt32), _mm256_set1_ps(f16_at(wr[i] + o) * dx[b]), a[i]);
                }
            }
            for (int i = 0; i < 4; i++) y[m * ys + r + i] = hsum(a[i]);
        }
    }
    for (; r < r1; r++) {
        const uint8_t *w0 = w + (size_t)r * rb;
        for (int64_t m = 0; m < M; m++) {
            const int8_t *q = x->q + m * x->qrs;
            __m256 a0 = _mm256_setzero_ps();
            for (int64_t b = 0; b < nb; b++) {
                const size_t o = (size_t)b * bs;
                __m256i xv = _mm256_loadu_si256((const __m256i *)(q + 32 * b));
                __m256i d0 = block_dot(dt, w0 + o + 2, xv, _mm256_set1_epi32(-x->s32[m * nb + b]));
                a0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d0), _mm256_set1_ps(f16_at(w0 + o) * x->d[m * nb + b]), a0);
            }
            y[m * ys + r] = hsum(a0);
        }
    }
}

/* Q6_K: as on AVX-512; the two sub-block scales of x-block j are picked
 * with vpshufb from the 8 int16 scales of its half broadcast to both lanes. */
static inline float q6k_row_qx(const uint8_t *b, int64_t nb, const int8_t *q, const float *dx, const int16_t *s16,
                               const uint8_t *pf) {
    const __m256i m4 = _mm256_set1_epi8(0x0f), m30 = _mm256_set1_epi8(0x30);
    __m256 acc = _mm256_setzero_ps(), accc = acc;
    for (int64_t i = 0; i < nb; i++, b += 210, q += 256, dx += 8, s16 += 16) {
        for (int c = 0; c < 210; c += 64) _mm_prefetch((const char *)pf + i * 210 + c, _MM_HINT_T0);
        __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b + 192)));
        __m256 dv = _mm256_mul_ps(_mm256_set1_ps(f16_at(b + 208)), _mm256_loadu_ps(dx));
        __m256i cj = _mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)s16));
        accc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(cj), dv, accc);
        float dvs[8];
        _mm256_storeu_ps(dvs, dv);
        for (int h = 0; h < 2; h++) {
            __m128i sh = h ? _mm256_extracti128_si256(sc16, 1) : _mm256_castsi256_si128(sc16);
            __m256i scb = _mm256_set_m128i(sh, sh); /* the 8 scales of this half in both lanes */
            __m256i L0 = _mm256_loadu_si256((const __m256i *)(b + 64 * h));
            __m256i L1 = _mm256_loadu_si256((const __m256i *)(b + 64 * h + 32));
            __m256i H = _mm256_loadu_si256((const __m256i *)(b + 128 + 32 * h));
            __m256i u[4];
            u[0] = _mm256_or_si256(_mm256_and_si256(L0, m4), _mm256_and_si256(_mm256_slli_epi16(H, 4), m30));
            u[1] = _mm256_or_si256(_mm256_and_si256(L1, m4), _mm256_and_si256(_mm256_slli_epi16(H, 2), m30));
            u[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(L0, 4), m4), _mm256_and_si256(H, m30));
            u[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(L1, 4), m4),
                                   _mm256_and_si256(_mm256_srli_epi16(H, 2), m30));
            for (int t = 0; t < 4; t++) {
                const char lo = (char)(4 * t), hi = (char)(4 * t + 2); /* bytes of words 2t, 2t+1 */
                const __m256i ctl = _mm256_setr_epi8(lo, lo + 1, lo, lo + 1, lo, lo + 1, lo, lo + 1, lo, lo + 1, lo,
                                                     lo + 1, lo, lo + 1, lo, lo + 1, hi, hi + 1, hi, hi + 1, hi, hi + 1,
                                                     hi, hi + 1, hi, hi + 1, hi, hi + 1, hi, hi + 1, hi, hi + 1);
                __m256i p = _mm256_maddubs_epi16(u[t], _mm256_loadu_si256((const __m256i *)(q + 32 * (4 * h + t))));
                __m256i s = _mm256_madd_epi16(p, _mm256_shuffle_epi8(scb, ctl));
                acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(dvs[4 * h + t]), acc);
            }
        }
    }
    return hsum(acc) - 32.0f * hsum(accc);
}

/* Q4_K: as on AVX-512 (qdot_avx512.c), u = q <= 15 against q^ directly. */
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
            __m256i d0 = dot_uq(_mm256_and_si256(v, m4), _mm256_loadu_si256((const __m256i *)(q + 64 * c)));
            __m256i d1 = dot_uq(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4),
                                _mm256_loadu_si256((const __m256i *)(q + 64 * c + 32)));
            acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d0), _mm256_set1_ps(ds[2 * c]), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d1), _mm256_set1_ps(ds[2 * c + 1]), acc1);
        }
    }
    return hsum(_mm256_add_ps(acc0, acc1)) - hsum(accm);
}

void lmx_qx_matvec_avx2(lmx_dtype wt, const void *w, int64_t K, int64_t r0, int64_t r1, const lmx_xq *x, int64_t M,
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

/* ---- prefill tile ---- */

#define QMR LMX_QX_AVX2_MR
#define QNR LMX_QX_AVX2_NR

/* 32 unsigned weights (u = w + off) of one row, columns [k, k+32). */
static inline __attribute__((always_inline)) __m256i unpack32(const int dt, const uint8_t *row, int64_t k) {
    if (dt == LMX_Q4_0) {
        __m128i v = _mm_loadu_si128((const __m128i *)(row + (k / 32) * 18 + 2));
        return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(v, 4), v), _mm256_set1_epi8(15));
    }
    if (dt == LMX_Q8_0)
        return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(row + (k / 32) * 34 + 2)),
                                _mm256_set1_epi8((char)0x80));
    if (dt == LMX_Q4_K) { /* sub-block j: low (j even) or high nibbles of 32 bytes */
        const int j = (int)(k % 256) / 32;
        __m256i v = _mm256_loadu_si256((const __m256i *)(row + (k / 256) * 144 + 16 + 32 * (j / 2)));
        return _mm256_and_si256(j % 2 ? _mm256_srli_epi16(v, 4) : v, _mm256_set1_epi8(15));
    }
    const uint8_t *b = row + (k / 256) * 210; /* Q6_K: x-block t of the super-block, see q6k_row_qx */
    const int t = (int)(k % 256) / 32, h = t / 4;
    const __m256i m4 = _mm256_set1_epi8(0x0f), m30 = _mm256_set1_epi8(0x30);
    __m256i L = _mm256_loadu_si256((const __m256i *)(b + 64 * h + (t % 2) * 32));
    __m256i H = _mm256_loadu_si256((const __m256i *)(b + 128 + 32 * h));
    switch (t % 4) {
    case 0: return _mm256_or_si256(_mm256_and_si256(L, m4), _mm256_and_si256(_mm256_slli_epi16(H, 4), m30));
    case 1: return _mm256_or_si256(_mm256_and_si256(L, m4), _mm256_and_si256(_mm256_slli_epi16(H, 2), m30));
    case 2: return _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(L, 4), m4), _mm256_and_si256(H, m30));
    default:
        return _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(L, 4), m4),
                               _mm256_and_si256(_mm256_srli_epi16(H, 2), m30));
    }
}

/* 8 rows x 32 columns: each row is 8 dwords of 4 weights; an 8 x 8 dword
 * transpose makes every store one column group of all 8 rows (32 bytes). */
static inline __attribute__((always_inline)) void pack_impl(const int dt, const uint8_t *w, int64_t K, int64_t n0,
                                                            int nr, int64_t k0, int64_t kc, uint8_t *B, float *Bs) {
    const size_t rb = lmx_dtype_bytes((lmx_dtype)dt, K);
    for (int64_t k = 0; k < kc; k += 32) {
        __m256i r[8], t[8];
        for (int j = 0; j < 8; j++) r[j] = j < nr ? unpack32(dt, w + (size_t)(n0 + j) * rb, k0 + k) : _mm256_setzero_si256();
        for (int j = 0; j < 8; j += 2) {
            t[j] = _mm256_unpacklo_epi32(r[j], r[j + 1]);
            t[j + 1] = _mm256_unpackhi_epi32(r[j], r[j + 1]);
        }
        for (int j = 0; j < 8; j += 4) {
            r[j] = _mm256_unpacklo_epi64(t[j], t[j + 2]);
            r[j + 1] = _mm256_unpackhi_epi64(t[j], t[j + 2]);
            r[j + 2] = _mm256_unpacklo_epi64(t[j + 1], t[j + 3]);
            r[j + 3] = _mm256_unpackhi_epi64(t[j + 1], t[j + 3]);
        }
        /* r[j] lane L now holds rows 0-3 (r[j]) / 4-7 (r[4+j]) of dword 4L + j */
        for (int j = 0; j < 4; j++) {
            __m256i lo = _mm256_permute2x128_si256(r[j], r[4 + j], 0x20), hi = _mm256_permute2x128_si256(r[j], r[4 + j], 0x31);
            _mm256_store_si256((__m256i *)(B + (k / 4 + j) * QNR * 4), lo);
            _mm256_store_si256((__m256i *)(B + (k / 4 + 4 + j) * QNR * 4), hi);
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
                } else if (dt == LMX_Q4_K) { /* scale, and the min after all scales */
                    const uint8_t *b = row + (k / 256) * 144;
                    uint8_t scj, mj;
                    lmx_qx_k4_scale_min((int)(k % 256) / 32, b + 4, &scj, &mj);
                    v = f16_at(b) * (float)scj;
                    Bs[(kc / sub + s) * QNR + j] = f16_at(b + 2) * (float)mj;
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

void lmx_qx_pack_avx2(lmx_dtype wt, const void *w, int64_t K, int64_t n0, int nr, int64_t k0, int64_t kc, uint8_t *B,
                      float *Bs) {
    if (wt == LMX_Q4_0)
        pack_impl(LMX_Q4_0, w, K, n0, nr, k0, kc, B, Bs);
    else if (wt == LMX_Q8_0)
        pack_impl(LMX_Q8_0, w, K, n0, nr, k0, kc, B, Bs);
    else if (wt == LMX_Q4_K)
        pack_impl(LMX_Q4_K, w, K, n0, nr, k0, kc, B, Bs);
    else
        pack_impl(LMX_Q6_K, w, K, n0, nr, k0, kc, B, Bs);
}

static inline __attribute__((always_inline)) void gemm_impl(const int dt, const int SUB, int64_t kc, const lmx_xq *x,
                                                            int64_t m0, int64_t k0, const int32_t *corr,
                                                            const uint8_t *B, const float *Bs, float *C, int64_t cs,
                                                            int mr, int nr, bool accumulate) {
    const int64_t K = x->K, ns = K / SUB;
    const int8_t *xr[QMR];
    const float *dxr[QMR], *sxr[QMR];
    const int32_t *cr[QMR];
    for (int i = 0; i < QMR; i++) {
        int64_t m = m0 + (i < mr ? i : 0);
        xr[i] = x->q + m * x->qrs + k0;
        dxr[i] = x->d + m * (K / 32) + k0 / 32;
        sxr[i] = x->sum + m * (K / 32) + k0 / 32;
        cr[i] = corr + m * ns + k0 / SUB;
    }
    __m256 f[QMR];
    for (int i = 0; i < QMR; i++) f[i] = _mm256_setzero_ps();
    for (int64_t s = 0; s < kc / SUB; s++) {
        __m256i a[QMR];
        for (int i = 0; i < QMR; i++) a[i] = dt == LMX_Q8_0 ? _mm256_setzero_si256() : _mm256_set1_epi32(cr[i][s]);
        const uint8_t *bp = B + s * SUB * QNR;
        for (int kk = 0; kk < SUB / 4; kk++, bp += 4 * QNR) {
            __m256i bu = _mm256_load_si256((const __m256i *)bp), bw = bu;
            if (dt == LMX_Q8_0) { /* packed as w + 128: back to w, then |w| and sign(w)·q */
                bw = _mm256_xor_si256(bu, _mm256_set1_epi8((char)0x80));
                bu = _mm256_sign_epi8(bw, bw);
            }
            for (int i = 0; i < QMR; i++) {
                int32_t xv;
                memcpy(&xv, xr[i] + s * SUB + 4 * kk, 4);
                __m256i xb = _mm256_set1_epi32(xv);
                if (dt == LMX_Q8_0) xb = _mm256_sign_epi8(xb, bw);
                a[i] = _mm256_add_epi32(a[i], dot_uq(bu, xb));
            }
        }
        __m256 sc = _mm256_loadu_ps(Bs + s * QNR);
        for (int i = 0; i < QMR; i++)
            f[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(a[i]), _mm256_mul_ps(sc, _mm256_set1_ps(dxr[i][s * SUB / 32])),
                                   f[i]);
        if (dt == LMX_Q4_K) { /* - dmin·m_j · Σx_j */
            __m256 mn = _mm256_loadu_ps(Bs + (kc / SUB + s) * QNR);
            for (int i = 0; i < QMR; i++) f[i] = _mm256_fnmadd_ps(mn, _mm256_set1_ps(sxr[i][s]), f[i]);
        }
    }
    for (int i = 0; i < mr; i++) {
        float *ci = C + i * cs;
        if (nr == QNR) {
            if (accumulate) f[i] = _mm256_add_ps(f[i], _mm256_loadu_ps(ci));
            _mm256_storeu_ps(ci, f[i]);
        } else {
            float t[QNR];
            _mm256_storeu_ps(t, f[i]);
            for (int j = 0; j < nr; j++) ci[j] = accumulate ? ci[j] + t[j] : t[j];
        }
    }
}

void lmx_qx_gemm_avx2(lmx_dtype wt, int64_t kc, const lmx_xq *x, int64_t m0, int64_t k0, const int32_t *corr,
                      const uint8_t *B, const float *Bs, float *C, int64_t cs, int mr, int nr, bool accumulate) {
    if (wt == LMX_Q6_K)
        gemm_impl(LMX_Q6_K, 16, kc, x, m0, k0, corr, B, Bs, C, cs, mr, nr, accumulate);
    else if (wt == LMX_Q4_K)
        gemm_impl(LMX_Q4_K, 32, kc, x, m0, k0, corr, B, Bs, C, cs, mr, nr, accumulate);
    else if (wt == LMX_Q8_0)
        gemm_impl(LMX_Q8_0, 32, kc, x, m0, k0, corr, B, Bs, C, cs, mr, nr, accumulate);
    else
        gemm_impl(LMX_Q4_0, 32, kc, x, m0, k0, corr, B, Bs, C, cs, mr, nr, accumulate);
}
