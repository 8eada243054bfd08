/*
 * dora_norm.h - the arguments of a backend's DoRA row norms
 * (lmx_backend.dora_norms, backend.h). DoRA rescales a linear's output by
 * m / ‖W + scale·b·a‖ per output row, the norm taken as a constant
 * (mlx-lm's stop_gradient). Training recomputes it every step from the
 * frozen weight and the current a, b; on a device that must not move W
 * through the host, so the backend computes it where W lives, with the
 * host's arithmetic (models/lora.c lmx_lora_dora_norms: d = Σ_r
 * (scale·b[j,r])·a[r,k] in f32, one rounding per operation, then
 * (w + d)² summed in double), and writes 1/‖·‖ in f32 (the factor the
 * forward multiplies by m).
 */
#ifndef LMX_CORE_DORA_NORM_H
#define LMX_CORE_DORA_NORM_H

#include "core/array.h"

typedef struct lmx_dora_norm_args {
    const lmx_array *w;       /* the frozen weight [N, K]: float or any quantized format */
    const lmx_array *scales;  /* MLX formats: [N, K/group]; else NULL or empty */
    const lmx_array *biases;  /* MLX affine: [N, K/group]; else NULL or empty */
    int group;                /* MLX group size (0 for the others) */
    const lmx_array *a;       /* f32 [R, K], rows contiguous */
    const lmx_array *b;       /* f32 [N, R], rows contiguous (a row view of a fused b is fine) */
    float scale;
    lmx_array *inv;           /* f32 [N], contiguous: out, 1 / ‖W_j + scale·b_j·a‖ */
} lmx_dora_norm_args;

#endif
