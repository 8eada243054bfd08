/* dtype.c - rows of the dtype trait table and their converters. */
#include "core/dtype.h"

#include "core/dtype_quant.h"

static void f32_to_f32(const void *s, float *d, int64_t n) { memcpy(d, s, (size_t)n * 4); }
static void f32_from_f32(const float *s, void *d, int64_t n) { memcpy(d, s, (size_t)n * 4); }

static void f16_to_f32(const void *s, float *d, int64_t n) {
    const uint8_t *p = s;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        d[i] = lmx_f16_to_f32(h);
    }
}
static void f16_from_f32(const float *s, void *d, int64_t n) {
    uint8_t *p = d;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h = lmx_f32_to_f16(s[i]);
        memcpy(p + 2 * i, &h, 2);
    }
}
static void bf16_to_f32(const void *s, float *d, int64_t n) {
    const uint8_t *p = s;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        d[i] = lmx_bf16_to_f32(h);
    }
}
static void bf16_from_f32(const float *s, void *d, int64_t n) {
    uint8_t *p = d;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h = lmx_f32_to_bf16(s[i]);
        memcpy(p + 2 * i, &h, 2);
    }
}
static void f64_to_f32(const void *s, float *d, int64_t n) {
    const uint8_t *p = s;
    for (int64_t i = 0; i < n; i++) {
        double v;
        memcpy(&v, p + 8 * i, 8);
        d[i] = (float)v;
    }
}
static void i32_to_f32(const void *s, float *d, int64_t n) {
    const uint8_t *p = s;
    for (int64_t i = 0; i < n; i++) {
        int32_t v;
        memcpy(&v, p + 4 * i, 4);
        d[i] = (float)v;
    }
}

static const lmx_dtype_traits traits[LMX_DTYPE_COUNT] = {
    [LMX_F32] = {"float32", "F32", 4, 1, true, f32_to_f32, f32_from_f32},
    [LMX_F16] = {"float16", "F16", 2, 1, true, f16_to_f32, f16_from_f32},
    [LMX_BF16] = {"bfloat16", "BF16", 2, 1, true, bf16_to_f32, bf16_from_f32},
    [LMX_F64] = {"float64", "F64", 8, 1, true, f64_to_f32, NULL},
    [LMX_I8] = {"int8", "I8", 1, 1, false, NULL, NULL},
    [LMX_I16] = {"int16", "I16", 2, 1, false, NULL, NULL},
    [LMX_I32] = {"int32", "I32", 4, 1, false, i32_to_f32, NULL},
    [LMX_I64] = {"int64", "I64", 8, 1, false, NULL, NULL},
    [LMX_U8] = {"uint8", "U8", 1, 1, false, NULL, NULL},
    [LMX_U16] = {"uint16", "U16", 2, 1, false, NULL, NULL},
    [LMX_U32] = {"uint32", "U32", 4, 1, false, NULL, NULL},
    [LMX_U64] = {"uint64", "U64", 8, 1, false, NULL, NULL},
    [LMX_BOOL] = {"bool", "BOOL", 1, 1, false, NULL, NULL},
    /* GGUF blocks (st_name: not a safetensors dtype, "" never matches) */
    [LMX_Q4_0] = {"q4_0", "", 18, 32, false, lmx_q4_0_to_f32, lmx_q4_0_from_f32, true, false, 0},
    [LMX_Q4_1] = {"q4_1", "", 20, 32, false, lmx_q4_1_to_f32, lmx_q4_1_from_f32, true, false, 0},
    [LMX_Q5_0] = {"q5_0", "", 22, 32, false, lmx_q5_0_to_f32, NULL, true, false, 0},
    [LMX_Q5_1] = {"q5_1", "", 24, 32, false, lmx_q5_1_to_f32, NULL, true, false, 0},
    [LMX_Q8_0] = {"q8_0", "", 34, 32, false, lmx_q8_0_to_f32, lmx_q8_0_from_f32, true, false, 0},
    [LMX_Q2_K] = {"q2_k", "", 84, 256, false, lmx_q2_k_to_f32, NULL, true, false, 0},
    [LMX_Q3_K] = {"q3_k", "", 110, 256, false, lmx_q3_k_to_f32, NULL, true, false, 0},
    [LMX_Q4_K] = {"q4_k", "", 144, 256, false, lmx_q4_k_to_f32, NULL, true, false, 0},
    [LMX_Q5_K] = {"q5_k", "", 176, 256, false, lmx_q5_k_to_f32, NULL, true, false, 0},
    [LMX_Q6_K] = {"q6_k", "", 210, 256, false, lmx_q6_k_to_f32, NULL, true, false, 0},
    /* MLX packed: 32 elements in `bits` uint32 words */
    [LMX_MLX_Q2] = {"mlx_q2", "", 8, 32, false, lmx_mlx_q2_to_f32, NULL, true, true, 2},
    [LMX_MLX_Q3] = {"mlx_q3", "", 12, 32, false, lmx_mlx_q3_to_f32, NULL, true, true, 3},
    [LMX_MLX_Q4] = {"mlx_q4", "", 16, 32, false, lmx_mlx_q4_to_f32, NULL, true, true, 4},
    [LMX_MLX_Q5] = {"mlx_q5", "", 20, 32, false, lmx_mlx_q5_to_f32, NULL, true, true, 5},
    [LMX_MLX_Q6] = {"mlx_q6", "", 24, 32, false, lmx_mlx_q6_to_f32, NULL, true, true, 6},
    [LMX_MLX_Q8] = {"mlx_q8", "", 32, 32, false, lmx_mlx_q8_to_f32, NULL, true, true, 8},
    [LMX_MLX_FP4] = {"mlx_fp4", "", 16, 32, false, lmx_mlx_fp4_to_f32, NULL, true, true, 4},
    [LMX_MLX_FP8] = {"mlx_fp8", "", 32, 32, false, lmx_mlx_fp8_to_f32, NULL, true, true, 8},
    [LMX_E8M0] = {"e8m0", "", 1, 1, false, lmx_e8m0_to_f32, NULL, false, false, 0},
    [LMX_E4M3] = {"e4m3", "", 1, 1, false, lmx_e4m3_to_f32, NULL, false, false, 0},
};

const lmx_dtype_traits *lmx_dtype_info(lmx_dtype t) {
    if ((int)t < 0 || t >= LMX_DTYPE_COUNT) return NULL;
    return &traits[t];
}

lmx_dtype lmx_dtype_from_st_name(const char *st_name) {
    if (!st_name || !*st_name) return LMX_DTYPE_INVALID;
    for (int i = 0; i < LMX_DTYPE_COUNT; i++)
        if (strcmp(traits[i].st_name, st_name) == 0) return (lmx_dtype)i;
    return LMX_DTYPE_INVALID;
}

size_t lmx_dtype_bytes(lmx_dtype t, int64_t n) {
    const lmx_dtype_traits *tr = &traits[t];
    return (size_t)(n / tr->block) * tr->size;
}

lmx_dtype lmx_dtype_from_ggml(uint32_t t) {
    switch (t) {
    case 0: return LMX_F32;
    case 1: return LMX_F16;
    case 2: return LMX_Q4_0;
    case 3: return LMX_Q4_1;
    case 6: return LMX_Q5_0;
    case 7: return LMX_Q5_1;
    case 8: return LMX_Q8_0;
    case 10: return LMX_Q2_K;
    case 11: return LMX_Q3_K;
    case 12: return LMX_Q4_K;
    case 13: return LMX_Q5_K;
    case 14: return LMX_Q6_K;
    case 30: return LMX_BF16;
    default: return LMX_DTYPE_INVALID;
    }
}

lmx_dtype lmx_dtype_mlx_affine(int bits) {
    switch (bits) {
    case 2: return LMX_MLX_Q2;
    case 3: return LMX_MLX_Q3;
    case 4: return LMX_MLX_Q4;
    case 5: return LMX_MLX_Q5;
    case 6: return LMX_MLX_Q6;
    case 8: return LMX_MLX_Q8;
    default: return LMX_DTYPE_INVALID;
    }
}

/* IEEE half <-> single, handling subnormals, inf and NaN. */
float lmx_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t lmx_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint32_t sign = (u >> 16) & 0x8000;
    int32_t exp = (int32_t)((u >> 23) & 0xff) - 127 + 15;
    uint32_t man = u & 0x7fffff;
    if (((u >> 23) & 0xff) == 0xff) return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00);
    if (exp <= 0) {
        if (exp < -10) return (uint16_t)sign;
        man |= 0x800000;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half = 1u << (shift - 1);
        uint32_t r = man >> shift;
        uint32_t rem = man & ((1u << shift) - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = ((uint32_t)exp << 10) | (man >> 13);
    uint32_t rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++;
    return (uint16_t)(sign | r);
}
