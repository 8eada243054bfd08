/* quant.c - mode names/defaults/checks, dispatch over the modes, and the fp
 * modes (mxfp4, nvfp4, mxfp8) as MLX's CPU quantizer computes them:
 *   scale = max|w| / (6 for fp4, 448 for fp8), stored as E8M0
 *   (ceil(log2), as MLX 0.32 does; the spec's round(log2) is older) for mx*, as FP8 E4M3 for nvfp4; elements = w / scale
 *   rounded to E2M1 (nearest, ties toward zero) or E4M3. */
#include "quant/quant.h"

#include <math.h>
#include <stdlib.h>

lmx_status lmx_quant_affine(int bits, int group, lmx_dtype wdt, const float *w, int64_t n, uint8_t *packed,
                            void *scales, void *biases);
void lmx_dequant_affine(int bits, int group, lmx_dtype wdt, const uint8_t *packed, const void *scales,
                        const void *biases, int64_t n, float *out);

static const char *names[] = {"affine", "mxfp4", "nvfp4", "mxfp8"};

bool lmx_qmode_parse(const char *name, lmx_qmode *out) {
    for (int i = 0; i < 4; i++)
        if (name && !strcmp(name, names[i])) {
            *out = (lmx_qmode)i;
            return true;
        }
    return false;
}

const char *lmx_qmode_name(lmx_qmode m) { return (unsigned)m < 4 ? names[m] : "?"; }

void lmx_qmode_defaults(lmx_qmode m, int *group, int *bits) {
    static const int g[] = {64, 32, 16, 32}, b[] = {4, 4, 4, 8};
    *group = g[m];
    *bits = b[m];
}

lmx_dtype lmx_quant_weight_dtype(lmx_qmode m, int bits) {
    if (m == LMX_QMODE_AFFINE) return lmx_dtype_mlx_affine(bits);
    return m == LMX_QMODE_MXFP8 ? LMX_MLX_FP8 : LMX_MLX_FP4;
}

lmx_status lmx_quant_check(lmx_qmode m, int bits, int group, int64_t row, const char *what) {
    if (m == LMX_QMODE_AFFINE) {
        if (lmx_dtype_mlx_affine(bits) == LMX_DTYPE_INVALID)
            return lmx_err(LMX_ERR_UNSUPPORTED, "%s: bits: %d is not supported (2, 3, 4, 5, 6 or 8)", what, bits);
        if (group != 32 && group != 64 && group != 128)
            return lmx_err(LMX_ERR_UNSUPPORTED, "%s: group size: %d is not supported (32, 64 or 128)", what, group);
    } else {
        int wb, wg;
        lmx_qmode_defaults(m, &wg, &wb);
        if (bits != wb || group != wg)
            return lmx_err(LMX_ERR_UNSUPPORTED, "%s: %s needs bits %d and group size %d (got %d, %d)", what,
                           names[m], wb, wg, bits, group);
    }
    if (row % group || row % 32)
        return lmx_err(LMX_ERR_SHAPE, "%s: group size %d does not divide the row of %lld", what, group, (long long)row);
    return LMX_OK;
}

/* ---- fp modes --------------------------------------------------------------- */

static uint8_t to_e8m0(float x) {
    if (!isfinite(x)) return 0xff;
    if (x < 0) return 0;
    if (x == 0) return 127; /* an all-zero group: scale 1 */
    int e = (int)ceilf(log2f(x)); /* the smallest power of two that keeps every element in range */
    e = e < -127 ? -127 : e > 127 ? 127 : e;
    return (uint8_t)(e + 127);
}

static uint8_t to_e2m1(float x) {
    if (isnan(x)) return 7;
    uint8_t sign = signbit(x) ? 8 : 0;
    x = fabsf(x);
    /* nearest E2M1 value, ties toward zero (what MLX 0.32's quantizer does) */
    uint8_t b = x > 5.0f ? 7 : x > 3.5f ? 6 : x > 2.5f ? 5 : x > 1.75f ? 4 : x > 1.25f ? 3 : x > 0.75f ? 2
              : x > 0.25f ? 1 : 0;
    return b ? (uint8_t)(b | sign) : 0; /* values that round to zero lose their sign, as in MLX */
}

/* f32 → FP8 E4M3 (round to nearest even, saturating at ±448, NaN → 0x7f). */
static uint8_t to_e4m3(float x) {
    if (isnan(x)) return 0x7f;
    uint8_t sign = signbit(x) ? 0x80 : 0;
    x = fabsf(x);
    if (x >= 448.0f) return sign | 0x7e;
    int e;
    frexpf(x, &e); /* x = f·2^e, f in [0.5, 1) */
    int ue = e - 1; /* x = 1.m · 2^ue */
    if (ue < -6) ue = -6; /* subnormal range: step 2^-9 */
    float step = ldexpf(1.0f, ue - 3);
    float q = rintf(x / step) * step;
    if (q >= 448.0f) return sign | 0x7e;
    if (q == 0) return sign;
    frexpf(q, &e);
    ue = e - 1;
    if (ue < -6) return sign | (uint8_t)(q / ldexpf(1.0f, -9)); /* subnormal */
    int man = (int)(q / ldexpf(1.0f, ue) * 8.0f) - 8;
    return sign | (uint8_t)((ue + 7) << 3) | (uint8_t)man;
}

static float cast_to(lmx_dtype dt, float v) {
    if (dt == LMX_F16) return lmx_f16_to_f32(lmx_f32_to_f16(v));
    if (dt == LMX_BF16) return lmx_bf16_to_f32(lmx_f32_to_bf16(v));
    return v;
}

/* Elements are w / scale computed in the weight dtype (rounded to it). */
static lmx_status quant_fp(lmx_qmode m, int group, lmx_dtype wdt, const float *w, int64_t n, uint8_t *packed, uint8_t *scales) {
    const lmx_dtype_traits *st = lmx_dtype_info(m == LMX_QMODE_NVFP4 ? LMX_E4M3 : LMX_E8M0);
    bool fp8 = m == LMX_QMODE_MXFP8;
    memset(packed, 0, (size_t)(fp8 ? n : n / 2));
    for (int64_t g = 0; g < n / group; g++) {
        const float *x = w + g * group;
        float amax = 0;
        for (int j = 0; j < group; j++) amax = fmaxf(amax, fabsf(x[j]));
        float s = amax / (fp8 ? 448.0f : 6.0f);
        scales[g] = m == LMX_QMODE_NVFP4 ? to_e4m3(s) : to_e8m0(s);
        st->to_f32(&scales[g], &s, 1);
        for (int j = 0; j < group; j++) {
            float v = s == 0 ? 0.0f : cast_to(wdt, x[j] / s);
            int64_t k = g * group + j;
            if (fp8)
                packed[k] = to_e4m3(v);
            else
                packed[k >> 1] |= (uint8_t)(to_e2m1(v) << (4 * (k & 1)));
        }
    }
    return LMX_OK;
}

/* ---- dispatch --------------------------------------------------------------- */

lmx_status lmx_quantize(lmx_qmode m, int bits, int group, lmx_dtype wdt, const void *w, int64_t n,
                        void *packed, void *scales, void *biases) {
    if (wdt != LMX_F32 && wdt != LMX_F16 && wdt != LMX_BF16)
        return lmx_err(LMX_ERR_UNSUPPORTED, "quantize: weights must be float32/float16/bfloat16");
    LMX_TRY(lmx_quant_check(m, bits, group, n, "quantize"));
    float *f = malloc((size_t)(n > 0 ? n : 1) * sizeof *f);
    if (!f) return lmx_err(LMX_ERR_NOMEM, "quantize: out of memory");
    lmx_dtype_info(wdt)->to_f32(w, f, n);
    lmx_status s = m == LMX_QMODE_AFFINE ? lmx_quant_affine(bits, group, wdt, f, n, packed, scales, biases)
                                         : quant_fp(m, group, wdt, f, n, packed, scales);
    free(f);
    return s;
}

lmx_status lmx_dequantize(lmx_qmode m, int bits, int group, lmx_dtype wdt, const void *packed,
                          const void *scales, const void *biases, int64_t n, void *out) {
    const lmx_dtype_traits *t = lmx_dtype_info(wdt);
    if (wdt != LMX_F32 && wdt != LMX_F16 && wdt != LMX_BF16)
        return lmx_err(LMX_ERR_UNSUPPORTED, "dequantize: output must be float32/float16/bfloat16");
    LMX_TRY(lmx_quant_check(m, bits, group, n, "dequantize"));
    float *f = malloc((size_t)(n > 0 ? n : 1) * sizeof *f);
    if (!f) return lmx_err(LMX_ERR_NOMEM, "dequantize: out of memory");
    if (m == LMX_QMODE_AFFINE) {
        lmx_dequant_affine(bits, group, wdt, packed, scales, biases, n, f);
    } else {
        lmx_dtype_info(lmx_quant_weight_dtype(m, bits))->to_f32(packed, f, n);
        const lmx_dtype_traits *st = lmx_dtype_info(m == LMX_QMODE_NVFP4 ? LMX_E4M3 : LMX_E8M0);
        for (int64_t g = 0; g < n / group; g++) {
            float s;
            st->to_f32((const uint8_t *)scales + g, &s, 1);
            for (int j = 0; j < group; j++) f[g * group + j] *= s;
        }
    }
    t->from_f32(f, out, n);
    free(f);
    return LMX_OK;
}
