/*
 * dtype.h - the dtype trait table.
 *
 * Every element type lmx stores is one row of lmx_dtype_traits: its name in
 * safetensors, bytes per block, elements per block, and row converters to and
 * from f32. Quantized formats (MLX affine, GGUF blocks) join as more rows in
 * the quantization issue; code that walks rows uses block/size, never
 * sizeof(float).
 */
#ifndef LMX_CORE_DTYPE_H
#define LMX_CORE_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define LMX_MAX_DIMS 4

typedef enum lmx_dtype {
    LMX_F32 = 0,
    LMX_F16,
    LMX_BF16,
    LMX_F64,
    LMX_I8,
    LMX_I16,
    LMX_I32,
    LMX_I64,
    LMX_U8,
    LMX_U16,
    LMX_U32,
    LMX_U64,
    LMX_BOOL,
    /* GGUF block quants: self-contained blocks (scales inside), to_f32 gives
     * the weights. Layouts as llama.cpp's ggml-common.h. */
    LMX_Q4_0,
    LMX_Q4_1,
    LMX_Q5_0,
    LMX_Q5_1,
    LMX_Q8_0,
    LMX_Q2_K,
    LMX_Q3_K,
    LMX_Q4_K,
    LMX_Q5_K,
    LMX_Q6_K,
    /* MLX packed weights (safetensors U32 reinterpreted; shape = unpacked
     * [.., out, in]). Blocks of 32 elements in `bits` uint32 words, LSB first.
     * to_f32 gives the grid values (affine: q in [0, 2^bits); fp modes: the
     * E2M1/E4M3 element values); w = scale·v (+ bias) per group, with scales
     * (and affine biases) passed beside the weight (dtype needs_scales). */
    LMX_MLX_Q2,
    LMX_MLX_Q3,
    LMX_MLX_Q4,
    LMX_MLX_Q5,
    LMX_MLX_Q6,
    LMX_MLX_Q8,
    LMX_MLX_FP4, /* mxfp4/nvfp4 elements: E2M1 codes, 8 per uint32 */
    LMX_MLX_FP8, /* mxfp8 elements: E4M3 bytes, 4 per uint32 */
    /* Scale bytes of the fp modes (safetensors U8 reinterpreted). */
    LMX_E8M0, /* 2^(s-127); s == 0 reads as 2^-127 as MLX does */
    LMX_E4M3, /* FP8 E4M3 (nvfp4 scales) */
    LMX_DTYPE_COUNT,
    LMX_DTYPE_INVALID = -1,
} lmx_dtype;

typedef void (*lmx_to_f32_fn)(const void *src, float *dst, int64_t n);
typedef void (*lmx_from_f32_fn)(const float *src, void *dst, int64_t n);

typedef struct lmx_dtype_traits {
    const char *name;      /* "float32", as MLX names it */
    const char *st_name;   /* "F32", as safetensors names it */
    size_t size;           /* bytes per block */
    int64_t block;         /* elements per block (1 for plain types) */
    bool is_float;
    lmx_to_f32_fn to_f32;     /* NULL when not convertible */
    lmx_from_f32_fn from_f32; /* NULL when not convertible */
    bool is_quant;            /* a block-quantized row (GGUF or MLX) */
    bool needs_scales;        /* MLX packed: to_f32 gives grid values, see above */
    int bits;                 /* MLX packed: bits per element; 0 otherwise */
} lmx_dtype_traits;

const lmx_dtype_traits *lmx_dtype_info(lmx_dtype t);
lmx_dtype lmx_dtype_from_st_name(const char *st_name); /* LMX_DTYPE_INVALID if unknown */
/* Bytes for n elements (n must be a multiple of the block). */
size_t lmx_dtype_bytes(lmx_dtype t, int64_t n);
/* The row for a ggml type number (F32/F16/BF16 and the GGUF quants above),
 * LMX_DTYPE_INVALID for any other. */
lmx_dtype lmx_dtype_from_ggml(uint32_t ggml_type);
/* The MLX packed row for bits (2,3,4,5,6,8), LMX_DTYPE_INVALID otherwise. */
lmx_dtype lmx_dtype_mlx_affine(int bits);

/* Scalar conversions. bf16 rounds to nearest even, NaN stays NaN. */
static inline float lmx_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline uint16_t lmx_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}
float lmx_f16_to_f32(uint16_t h);
uint16_t lmx_f32_to_f16(float f);

#endif
