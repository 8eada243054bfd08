/*
 * dtype_quant.h - converters of the quantized dtype rows (internal to core).
 *
 * dtype_gguf.c: GGUF block formats (llama.cpp reference semantics).
 * dtype_mlx.c:  MLX packed grids (affine q values, E2M1/E4M3 elements) and
 *               the fp-mode scale bytes (E8M0, E4M3).
 * All take n elements (a multiple of the block) and never read past
 * n / block blocks.
 */
#ifndef LMX_CORE_DTYPE_QUANT_H
#define LMX_CORE_DTYPE_QUANT_H

#include "core/dtype.h"

void lmx_q4_0_to_f32(const void *s, float *d, int64_t n);
void lmx_q4_1_to_f32(const void *s, float *d, int64_t n);
void lmx_q5_0_to_f32(const void *s, float *d, int64_t n);
void lmx_q5_1_to_f32(const void *s, float *d, int64_t n);
void lmx_q8_0_to_f32(const void *s, float *d, int64_t n);
void lmx_q2_k_to_f32(const void *s, float *d, int64_t n);
void lmx_q3_k_to_f32(const void *s, float *d, int64_t n);
void lmx_q4_k_to_f32(const void *s, float *d, int64_t n);
void lmx_q5_k_to_f32(const void *s, float *d, int64_t n);
void lmx_q6_k_to_f32(const void *s, float *d, int64_t n);
void lmx_q4_0_from_f32(const float *s, void *d, int64_t n);
void lmx_q4_1_from_f32(const float *s, void *d, int64_t n);
void lmx_q8_0_from_f32(const float *s, void *d, int64_t n);

void lmx_mlx_q2_to_f32(const void *s, float *d, int64_t n);
void lmx_mlx_q3_to_f32(const void *s, float *d, int64_t n);
void lmx_mlx_q4_to_f32(const void *s, float *d, int64_t n);
void lmx_mlx_q5_to_f32(const void *s, float *d, int64_t n);
void lmx_mlx_q6_to_f32(const void *s, float *d, int64_t n);
void lmx_mlx_q8_to_f32(const void *s, float *d, int64_t n);
void lmx_mlx_fp4_to_f32(const void *s, float *d, int64_t n);
void lmx_mlx_fp8_to_f32(const void *s, float *d, int64_t n);
void lmx_e8m0_to_f32(const void *s, float *d, int64_t n);
void lmx_e4m3_to_f32(const void *s, float *d, int64_t n);

#endif
