/*
 * quant.h - MLX quantization: the affine quantizer/packer and dequantizer
 * (bit-exact with mlx.core.quantize / mlx.core.dequantize on the CPU), the
 * fp modes, and bits-per-weight bookkeeping. Depends only on core/base.
 *
 * Layout (MLX-LM-SPEC §4a): a row of n elements packs into n·bits/8 bytes
 * (LSB-first bit stream, little-endian uint32 words); scales (and affine
 * biases) hold one value per group of `group` consecutive elements, in the
 * weight's float dtype (affine) or as U8 E8M0/E4M3 bytes (fp modes).
 */
#ifndef LMX_QUANT_QUANT_H
#define LMX_QUANT_QUANT_H

#include "core/array.h"

typedef enum lmx_qmode {
    LMX_QMODE_AFFINE = 0,
    LMX_QMODE_MXFP4,
    LMX_QMODE_NVFP4,
    LMX_QMODE_MXFP8,
} lmx_qmode;

/* "affine" → LMX_QMODE_AFFINE; false for an unknown name. */
bool lmx_qmode_parse(const char *name, lmx_qmode *out);
const char *lmx_qmode_name(lmx_qmode m);
/* mlx-lm's defaults when --q-group-size / --q-bits are not given. */
void lmx_qmode_defaults(lmx_qmode m, int *group, int *bits);
/* Checks bits/group for a mode and a row length (LMX_ERR_UNSUPPORTED /
 * LMX_ERR_SHAPE with a message naming `what`). */
lmx_status lmx_quant_check(lmx_qmode m, int bits, int group, int64_t row, const char *what);
/* The dtype row of packed weights and of the scales for (mode, bits). */
lmx_dtype lmx_quant_weight_dtype(lmx_qmode m, int bits);

/* Quantizes n elements (n % group == 0, rows concatenated) of w in dtype wdt
 * (F32, F16 or BF16). packed: n·bits/8 bytes. scales (and biases, affine
 * only; NULL for fp modes): n/group values of wdt (affine) or bytes (fp). */
lmx_status lmx_quantize(lmx_qmode m, int bits, int group, lmx_dtype wdt, const void *w, int64_t n,
                        void *packed, void *scales, void *biases);
/* The inverse, written in dtype wdt with MLX's rounding (f16/bf16: the
 * product and the sum are each rounded to wdt, as mx.dequantize does). */
lmx_status lmx_dequantize(lmx_qmode m, int bits, int group, lmx_dtype wdt, const void *packed,
                          const void *scales, const void *biases, int64_t n, void *out);

#endif
