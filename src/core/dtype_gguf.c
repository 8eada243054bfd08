/* dtype_gguf.c - GGUF block formats: dequantizers for the legacy and K
 * quants, quantizers for Q4_0, Q4_1 and Q8_0.
 *
 * Block layouts (bytes, little-endian; "d"/"m" are f16):
 *   Q4_0  18: d, qs[16]            x = (nibble - 8)·d; low nibbles = first 16
 *   Q4_1  20: d, m, qs[16]         x = nibble·d + m
 *   Q5_0  22: d, qh[4], qs[16]     x = (nibble | bit<<4) - 16)·d
 *   Q5_1  24: d, m, qh[4], qs[16]  x = (nibble | bit<<4)·d + m
 *   Q8_0  34: d, qs[32] (int8)     x = q·d
 *   Q2_K  84: scales[16] (4-bit scale | 4-bit min), qs[64], d, dmin
 *   Q3_K 110: hmask[32], qs[64], scales[12] (16 × 6-bit, biased by 32), d
 *   Q4_K 144: d, dmin, scales[12] (8 × 6-bit scale + 6-bit min), qs[128]
 *   Q5_K 176: d, dmin, scales[12], qh[32], qs[128]
 *   Q6_K 210: ql[128], qh[64], scales[16] (int8), d
 * The arithmetic order (float, d·scale first) follows llama.cpp's reference
 * dequantizers so results are bit-identical to gguf-py's. */
#include "core/dtype_quant.h"

#include <math.h>

static float h2f(const uint8_t *p) { return lmx_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }
static void f2h(uint8_t *p, float f) {
    uint16_t h = lmx_f32_to_f16(f);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

void lmx_q4_0_to_f32(const void *s, float *d, int64_t n) {
    const uint8_t *b = s;
    for (int64_t i = 0; i < n / 32; i++, b += 18, d += 32) {
        float sc = h2f(b);
        for (int j = 0; j < 16; j++) {
            d[j] = (float)((b[2 + j] & 15) - 8) * sc;
            d[j + 16] = (float)((b[2 + j] >> 4) - 8) * sc;
        }
    }
}

void lmx_q4_1_to_f32(const void *s, float *d, int64_t n) {
    const uint8_t *b = s;
    for (int64_t i = 0; i < n / 32; i++, b += 20, d += 32) {
        float sc = h2f(b), m = h2f(b + 2);
        for (int j = 0; j < 16; j++) {
            d[j] = (float)(b[4 + j] & 15) * sc + m;
            d[j + 16] = (float)(b[4 + j] >> 4) * sc + m;
        }
    }
}

static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

void lmx_q5_0_to_f32(const void *s, float *d, int64_t n) {
    const uint8_t *b = s;
    for (int64_t i = 0; i < n / 32; i++, b += 22, d += 32) {
        float sc = h2f(b);
        uint32_t qh = rd32(b + 2);
        for (int j = 0; j < 16; j++) {
            int hi0 = (int)((qh >> j) << 4 & 0x10), hi1 = (int)((qh >> (j + 12)) & 0x10);
            d[j] = (float)(((b[6 + j] & 15) | hi0) - 16) * sc;
            d[j + 16] = (float)(((b[6 + j] >> 4) | hi1) - 16) * sc;
        }
    }
}

void lmx_q5_1_to_f32(const void *s, float *d, int64_t n) {
    const uint8_t *b = s;
    for (int64_t i = 0; i < n / 32; i++, b += 24, d += 32) {
        float sc = h2f(b), m = h2f(b + 2);
        uint32_t qh = rd32(b + 4);
        for (int j = 0; j < 16; j++) {
            int hi0 = (int)((qh >> j) << 4 & 0x10), hi1 = (int)((qh >> (j + 12)) & 0x10);
            d[j] = (float)((b[8 + j] & 15) | hi0) * sc + m;
            d[j + 16] = (float)((b[8 + j] >> 4) | hi1) * sc + m;
        }
    }
}

void lmx_q8_0_to_f32(const void *s, float *d, int64_t n) {
    const uint8_t *b = s;
    for (int64_t i = 0; i < n / 32; i++, b += 34, d += 32) {
        float sc = h2f(b);
        for (int j = 0; j < 32; j++) d[j] = (float)(int8_t)b[2 + j] * sc;
    }
}

void lmx_q2_k_to_f32(const void *s, float *d, int64_t n) {
    const uint8_t *b = s;
    for (int64_t i = 0; i < n / 256; i++, b += 84) {
        const uint8_t *sc = b, *q = b + 16;
        float dd = h2f(b + 80), dmin = h2f(b + 82);
        int is = 0;
        for (int half = 0; half < 2; half++, q += 32) {
            for (int shift = 0; shift < 8; shift += 2) {
                for (int k = 0; k < 2; k++) {
                    uint8_t v = sc[is++];
                    float dl = dd * (float)(v & 15), ml = dmin * (float)(v >> 4);
                    for (int l = 0; l < 16; l++) *d++ = dl * (float)((q[l + 16 * k] >> shift) & 3) - ml;
                }
            }
        }
    }
}

/* 16 signed 6-bit scales of Q3_K from 12 bytes: low nibbles from bytes 0..7,
 * high 2 bits from bytes 8..11. */
static void q3k_scales(const uint8_t *p, int8_t out[16]) {
    for (int j = 0; j < 16; j++) {
        int lo = j < 8 ? (p[j] & 15) : (p[j - 8] >> 4);
        int hi = (p[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
        out[j] = (int8_t)((lo | hi << 4) - 32);
    }
}

void lmx_q3_k_to_f32(const void *s, float *d, int64_t n) {
    const uint8_t *b = s;
    for (int64_t i = 0; i < n / 256; i++, b += 110) {
        const uint8_t *hm = b, *q = b + 32;
        int8_t sc[16];
        q3k_scales(b + 96, sc);
        float dall = h2f(b + 108);
        int is = 0;
        uint8_t m = 1;
        for (int half = 0; half < 2; half++, q += 32) {
            for (int shift = 0; shift < 8; shift += 2, m = (uint8_t)(m << 1)) {
                for (int k = 0; k < 2; k++) {
                    float dl = dall * (float)sc[is++];
                    for (int l = 0; l < 16; l++) {
                        int v = ((q[l + 16 * k] >> shift) & 3) - ((hm[l + 16 * k] & m) ? 0 : 4);
                        *d++ = dl * (float)v;
                    }
                }
            }
        }
    }
}

/* Scale and min j (0..7) of the Q4_K/Q5_K 12-byte packing. */
static void k4_scale_min(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 15) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

void lmx_q4_k_to_f32(const void *s, float *d, int64_t n) {
    const uint8_t *b = s;
    for (int64_t i = 0; i < n / 256; i++, b += 144) {
        float dd = h2f(b), dmin = h2f(b + 2);
        const uint8_t *scales = b + 4, *q = b + 16;
        for (int j = 0; j < 8; j += 2, q += 32) {
            uint8_t sc, m;
            k4_scale_min(j, scales, &sc, &m);
            float d1 = dd * (float)sc, m1 = dmin * (float)m;
            k4_scale_min(j + 1, scales, &sc, &m);
            float d2 = dd * (float)sc, m2 = dmin * (float)m;
            for (int l = 0; l < 32; l++) *d++ = d1 * (float)(q[l] & 15) - m1;
            for (int l = 0; l < 32; l++) *d++ = d2 * (float)(q[l] >> 4) - m2;
        }
    }
}

void lmx_q5_k_to_f32(const void *s, float *d, int64_t n) {
    const uint8_t *b = s;
    for (int64_t i = 0; i < n / 256; i++, b += 176) {
        float dd = h2f(b), dmin = h2f(b + 2);
        const uint8_t *scales = b + 4, *qh = b + 16, *ql = b + 48;
        uint8_t u1 = 1, u2 = 2;
        for (int j = 0; j < 8; j += 2, ql += 32, u1 = (uint8_t)(u1 << 2), u2 = (uint8_t)(u2 << 2)) {
            uint8_t sc, m;
            k4_scale_min(j, scales, &sc, &m);
            float d1 = dd * (float)sc, m1 = dmin * (float)m;
            k4_scale_min(j + 1, scales, &sc, &m);
            float d2 = dd * (float)sc, m2 = dmin * (float)m;
            for (int l = 0; l < 32; l++) *d++ = d1 * (float)((ql[l] & 15) + ((qh[l] & u1) ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++) *d++ = d2 * (float)((ql[l] >> 4) + ((qh[l] & u2) ? 16 : 0)) - m2;
        }
    }
}

void lmx_q6_k_to_f32(const void *s, float *d, int64_t n) {
    const uint8_t *b = s;
    for (int64_t i = 0; i < n / 256; i++, b += 210) {
        const uint8_t *ql = b, *qh = b + 128;
        const int8_t *sc = (const int8_t *)(b + 192);
        float dd = h2f(b + 208);
        for (int h = 0; h < 2; h++, ql += 64, qh += 32, sc += 8, d += 128) {
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                int q1 = ((ql[l] & 15) | ((qh[l] & 3) << 4)) - 32;
                int q2 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                d[l] = dd * (float)sc[is] * (float)q1;
                d[l + 32] = dd * (float)sc[is + 2] * (float)q2;
                d[l + 64] = dd * (float)sc[is + 4] * (float)q3;
                d[l + 96] = dd * (float)sc[is + 6] * (float)q4;
            }
        }
    }
}

/* Quantizers (llama.cpp's reference rounding). */
void lmx_q8_0_from_f32(const float *s, void *dst, int64_t n) {
    uint8_t *b = dst;
    for (int64_t i = 0; i < n / 32; i++, b += 34, s += 32) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(s[j]));
        float dd = amax / 127.0f, id = dd != 0 ? 1.0f / dd : 0.0f;
        f2h(b, dd);
        for (int j = 0; j < 32; j++) b[2 + j] = (uint8_t)(int8_t)roundf(s[j] * id);
    }
}

void lmx_q4_0_from_f32(const float *s, void *dst, int64_t n) {
    uint8_t *b = dst;
    for (int64_t i = 0; i < n / 32; i++, b += 18, s += 32) {
        float amax = 0, max = 0;
        for (int j = 0; j < 32; j++)
            if (fabsf(s[j]) > amax) {
                amax = fabsf(s[j]);
                max = s[j];
            }
        float dd = max / -8.0f, id = dd != 0 ? 1.0f / dd : 0.0f;
        f2h(b, dd);
        for (int j = 0; j < 16; j++) {
            int a = (int)(int8_t)(s[j] * id + 8.5f), c = (int)(int8_t)(s[j + 16] * id + 8.5f);
            a = a > 15 ? 15 : a;
            c = c > 15 ? 15 : c;
            b[2 + j] = (uint8_t)(a | c << 4);
        }
    }
}

void lmx_q4_1_from_f32(const float *s, void *dst, int64_t n) {
    uint8_t *b = dst;
    for (int64_t i = 0; i < n / 32; i++, b += 20, s += 32) {
        float mn = INFINITY, mx = -INFINITY;
        for (int j = 0; j < 32; j++) {
            mn = fminf(mn, s[j]);
            mx = fmaxf(mx, s[j]);
        }
        float dd = (mx - mn) / 15.0f, id = dd != 0 ? 1.0f / dd : 0.0f;
        f2h(b, dd);
        f2h(b + 2, mn);
        for (int j = 0; j < 16; j++) {
            int a = (int)(int8_t)((s[j] - mn) * id + 0.5f), c = (int)(int8_t)((s[j + 16] - mn) * id + 0.5f);
            a = a > 15 ? 15 : a;
            c = c > 15 ? 15 : c;
            b[4 + j] = (uint8_t)(a | c << 4);
        }
    }
}
