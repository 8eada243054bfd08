/* dtype_mlx.c - MLX packed weight rows and fp-mode scale bytes.
 *
 * A packed row is a little-endian bit stream: element j occupies bits
 * [j·bits, (j+1)·bits) counted from bit 0 of byte 0 (= LSB of uint32 word 0).
 * 3/5/6-bit elements straddle bytes and words. A block is 32 elements in
 * `bits` words (4·bits bytes). to_f32 yields the grid value; the per-group
 * scale (and affine bias) are applied by the kernels / src/quant. */
#include "core/dtype_quant.h"

#include <math.h>

static void unpack(const uint8_t *p, float *d, int64_t n, int bits) {
    unsigned mask = (1u << bits) - 1;
    int64_t nbytes = n * bits / 8;
    for (int64_t j = 0; j < n; j++) {
        int64_t off = j * bits, byte = off >> 3;
        unsigned v = p[byte];
        if ((off & 7) + bits > 8 && byte + 1 < nbytes) v |= (unsigned)p[byte + 1] << 8;
        d[j] = (float)((v >> (off & 7)) & mask);
    }
}

void lmx_mlx_q2_to_f32(const void *s, float *d, int64_t n) { unpack(s, d, n, 2); }
void lmx_mlx_q3_to_f32(const void *s, float *d, int64_t n) { unpack(s, d, n, 3); }
void lmx_mlx_q4_to_f32(const void *s, float *d, int64_t n) { unpack(s, d, n, 4); }
void lmx_mlx_q5_to_f32(const void *s, float *d, int64_t n) { unpack(s, d, n, 5); }
void lmx_mlx_q6_to_f32(const void *s, float *d, int64_t n) { unpack(s, d, n, 6); }
void lmx_mlx_q8_to_f32(const void *s, float *d, int64_t n) {
    const uint8_t *p = s;
    for (int64_t j = 0; j < n; j++) d[j] = (float)p[j];
}

static const float e2m1[16] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f,
                               -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

void lmx_mlx_fp4_to_f32(const void *s, float *d, int64_t n) {
    const uint8_t *p = s;
    for (int64_t j = 0; j < n; j++) d[j] = e2m1[(p[j >> 1] >> (4 * (j & 1))) & 15];
}

/* FP8 E4M3 ("fn": no infinities, 0x7f/0xff are NaN), bias 7. */
static float e4m3(uint8_t v) {
    int sign = v >> 7, e = (v >> 3) & 15, m = v & 7;
    float r;
    if (e == 15 && m == 7)
        r = NAN;
    else if (e == 0)
        r = ldexpf((float)m, -9); /* m/8 · 2^-6 */
    else
        r = ldexpf(1.0f + (float)m / 8.0f, e - 7);
    return sign ? -r : r;
}

void lmx_mlx_fp8_to_f32(const void *s, float *d, int64_t n) {
    const uint8_t *p = s;
    for (int64_t j = 0; j < n; j++) d[j] = e4m3(p[j]);
}

void lmx_e4m3_to_f32(const void *s, float *d, int64_t n) { lmx_mlx_fp8_to_f32(s, d, n); }

void lmx_e8m0_to_f32(const void *s, float *d, int64_t n) {
    const uint8_t *p = s;
    for (int64_t j = 0; j < n; j++) d[j] = p[j] == 0 ? ldexpf(1.0f, -127) : lmx_bf16_to_f32((uint16_t)(p[j] << 7));
}
