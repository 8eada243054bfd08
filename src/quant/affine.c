/* affine.c - the MLX affine quantizer (per group, float32 math):
 *   lo, hi = min, max; s = max((hi-lo)/(2^bits-1), 1e-7)
 *   the larger-magnitude extreme is the edge and becomes q = 0:
 *     |lo| > |hi|: edge = lo, scale = +s;  else edge = hi, scale = -s
 *   q0 = rint(edge/scale); q0 != 0: scale = edge/q0, bias = edge (0.0 is then
 *   exactly representable); q0 == 0: bias = 0
 *   q = clip(rint((w - bias)/scale), 0, 2^bits-1); scale, bias cast to wdt.
 * Packing is the LSB-first bit stream of dtype_mlx.c. */
#include "quant/quant.h"

#include <math.h>
#include <stdlib.h>

static float cast_to(lmx_dtype dt, float v) {
    if (dt == LMX_F16) return lmx_f16_to_f32(lmx_f32_to_f16(v));
    if (dt == LMX_BF16) return lmx_bf16_to_f32(lmx_f32_to_bf16(v));
    return v;
}

static void put_bits(uint8_t *p, int64_t j, int bits, unsigned v) {
    int64_t off = j * bits;
    unsigned w = v << (off & 7);
    p[off >> 3] |= (uint8_t)w;
    if ((off & 7) + bits > 8) p[(off >> 3) + 1] |= (uint8_t)(w >> 8);
}

lmx_status lmx_quant_affine(int bits, int group, lmx_dtype wdt, const float *w, int64_t n, uint8_t *packed,
                            void *scales, void *biases) {
    const lmx_dtype_traits *t = lmx_dtype_info(wdt);
    float n_bins = (float)((1 << bits) - 1), eps = 1e-7f;
    memset(packed, 0, (size_t)(n * bits / 8));
    for (int64_t g = 0; g < n / group; g++) {
        const float *x = w + g * group;
        float lo = INFINITY, hi = -INFINITY;
        for (int j = 0; j < group; j++) {
            hi = fmaxf(hi, x[j]);
            lo = fminf(lo, x[j]);
        }
        bool mask = fabsf(lo) > fabsf(hi);
        float scale = fmaxf((hi - lo) / n_bins, eps);
        scale = mask ? scale : -scale;
        float edge = mask ? lo : hi;
        float q0 = rintf(edge / scale), bias = 0;
        if (q0 != 0) {
            scale = edge / q0;
            bias = edge;
        }
        for (int j = 0; j < group; j++) {
            float q = rintf((x[j] - bias) / scale);
            q = fminf(fmaxf(q, 0.0f), n_bins);
            put_bits(packed, g * group + j, bits, (unsigned)q);
        }
        t->from_f32(&scale, (uint8_t *)scales + g * t->size, 1);
        t->from_f32(&bias, (uint8_t *)biases + g * t->size, 1);
    }
    return LMX_OK;
}

void lmx_dequant_affine(int bits, int group, lmx_dtype wdt, const uint8_t *packed, const void *scales,
                        const void *biases, int64_t n, float *out) {
    const lmx_dtype_traits *t = lmx_dtype_info(wdt);
    lmx_dtype_info(lmx_quant_weight_dtype(LMX_QMODE_AFFINE, bits))->to_f32(packed, out, n);
    for (int64_t g = 0; g < n / group; g++) {
        float s, b;
        t->to_f32((const uint8_t *)scales + g * t->size, &s, 1);
        t->to_f32((const uint8_t *)biases + g * t->size, &b, 1);
        for (int j = 0; j < group; j++) {
            float *o = out + g * group + j;
            *o = cast_to(wdt, cast_to(wdt, s * *o) + b);
        }
    }
}
