/* lora.c - host helpers for LoRA/DoRA adapters (models/lora.h): dequantized
 * weight rows, DoRA's per-row magnitude factor, and adapter allocation. */
#include "models/lora.h"

#include <math.h>
#include <stdlib.h>

/* One row of w in f32: the dtype's to_f32, then for MLX packed rows
 * scale·v (+ bias) per group - the same expression, in the same f32 order,
 * as the CPU reference kernel (backend/cpu/cpu_quant.c), so a fused weight
 * built from it matches what the quantized matmul computes. */
static lmx_status dequant_row(const lmx_linear *l, int64_t r, float *out, float *sb) {
    const lmx_array *w = &l->w;
    int64_t K = w->shape[1];
    const lmx_dtype_traits *wt = lmx_dtype_info(w->dtype);
    if (!wt->to_f32) return lmx_err(LMX_ERR_UNSUPPORTED, "lora: weight dtype %s cannot be dequantized", wt->name);
    if (wt->block == 1 && w->strides[1] != 1)
        return lmx_err(LMX_ERR_UNSUPPORTED, "lora: column-strided weight");
    wt->to_f32((const uint8_t *)w->data + lmx_dtype_bytes(w->dtype, r * w->strides[0]), out, K);
    if (!wt->needs_scales) return LMX_OK;
    const lmx_array *sc = &l->scales, *bi = &l->biases;
    int group = l->group_size;
    if (lmx_array_empty(sc) || group <= 0 || K % group)
        return lmx_err(LMX_ERR_SHAPE, "lora: quantized weight without scales/group");
    int64_t G = K / group;
    lmx_dtype_info(sc->dtype)->to_f32((const uint8_t *)sc->data + lmx_dtype_bytes(sc->dtype, r * sc->strides[0]), sb,
                                      G);
    bool has_b = !lmx_array_empty(bi);
    if (has_b)
        lmx_dtype_info(bi->dtype)->to_f32((const uint8_t *)bi->data + lmx_dtype_bytes(bi->dtype, r * bi->strides[0]),
                                          sb + G, G);
    for (int64_t g = 0; g < G; g++) {
        float s = sb[g], b = has_b ? sb[G + g] : 0.0f;
        float *o = out + g * group;
        if (has_b)
            for (int j = 0; j < group; j++) o[j] = s * o[j] + b;
        else
            for (int j = 0; j < group; j++) o[j] = s * o[j];
    }
    return LMX_OK;
}

lmx_status lmx_linear_dequant_rows(const lmx_linear *l, int64_t r0, int64_t n, float *out) {
    const lmx_array *w = &l->w;
    if (w->ndim != 2 || r0 < 0 || n < 0 || r0 + n > w->shape[0])
        return lmx_err(LMX_ERR_SHAPE, "lora: rows [%lld, %lld) of a weight with %lld rows", (long long)r0,
                       (long long)(r0 + n), (long long)(w->ndim == 2 ? w->shape[0] : -1));
    int64_t K = w->shape[1];
    float *sb = malloc((size_t)(2 * K + 2) * sizeof *sb);
    if (!sb) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    lmx_status st = LMX_OK;
    for (int64_t r = 0; r < n && !st; r++) st = dequant_row(l, r0 + r, out + r * K, sb);
    free(sb);
    return st;
}

static bool is_f32_2d(const lmx_array *a, int64_t d0, int64_t d1) {
    return a->dtype == LMX_F32 && a->ndim == 2 && a->shape[0] == d0 && a->shape[1] == d1 && a->strides[1] == 1;
}

lmx_status lmx_lora_dora_norms(const lmx_linear *l, const lmx_lora *lo, float *norm) {
    const lmx_array *w = &l->w;
    int64_t N = w->shape[0], K = w->shape[1], R = lo->a.shape[0];
    if (!is_f32_2d(&lo->a, R, K) || !is_f32_2d(&lo->b, N, R))
        return lmx_err(LMX_ERR_SHAPE, "dora: a must be f32 [r, %lld], b [%lld, r]", (long long)K, (long long)N);
    float *row = malloc((size_t)(3 * K + 2) * sizeof *row);
    if (!row) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    const float *A = lo->a.data, *B = lo->b.data;
    int64_t as = lo->a.strides[0], bs = lo->b.strides[0];
    lmx_status st = LMX_OK;
    for (int64_t j = 0; j < N && !st; j++) {
        st = dequant_row(l, j, row, row + K);
        if (st) break;
        double ss = 0;
        for (int64_t k = 0; k < K; k++) {
            /* (scale·bᵀ)·aᵀ as mlx-lm forms it: scale multiplies b first */
            float d = 0;
            for (int64_t r = 0; r < R; r++) d += (lo->scale * B[j * bs + r]) * A[r * as + k];
            double v = (double)(row[k] + d);
            ss += v * v;
        }
        norm[j] = (float)sqrt(ss);
    }
    free(row);
    return st;
}

lmx_status lmx_lora_dora_factor(const lmx_linear *l, const lmx_lora *lo, float *f) {
    int64_t N = l->w.shape[0];
    if (lo->m.dtype != LMX_F32 || lmx_array_numel(&lo->m) != N || !lmx_array_is_contiguous(&lo->m))
        return lmx_err(LMX_ERR_SHAPE, "dora: m must be f32 [%lld]", (long long)N);
    LMX_TRY(lmx_lora_dora_norms(l, lo, f));
    const float *M = lo->m.data;
    for (int64_t j = 0; j < N; j++) f[j] = M[j] / f[j];
    return LMX_OK;
}

lmx_status lmx_lora_alloc(lmx_lora *lo, int r, int64_t in, int64_t out, bool dora, float scale, float dropout) {
    memset(lo, 0, sizeof *lo);
    if (r <= 0 || in <= 0 || out <= 0) return lmx_err(LMX_ERR_INVALID_ARG, "lora: rank %d for [%lld, %lld]", r,
                                                      (long long)out, (long long)in);
    int64_t sa[2] = {r, in}, sb[2] = {out, r}, sm[1] = {out};
    lmx_status st = lmx_array_alloc(&lo->a, LMX_F32, 2, sa);
    if (!st) st = lmx_array_alloc(&lo->b, LMX_F32, 2, sb);
    if (!st && dora) st = lmx_array_alloc(&lo->m, LMX_F32, 1, sm);
    if (st) {
        lmx_lora_release(lo);
        return st;
    }
    lo->scale = scale;
    lo->dropout = dropout;
    return LMX_OK;
}

void lmx_lora_release(lmx_lora *lo) {
    lmx_array_release(&lo->a);
    lmx_array_release(&lo->b);
    lmx_array_release(&lo->m);
    lmx_array_release(&lo->dora_f);
}

lmx_status lmx_lora_freeze_dora(const lmx_linear *l, lmx_lora *lo) {
    lmx_array_release(&lo->dora_f);
    if (lmx_array_empty(&lo->m)) return LMX_OK;
    int64_t n[1] = {l->w.shape[0]};
    LMX_TRY(lmx_array_alloc(&lo->dora_f, LMX_F32, 1, n));
    lmx_status st = lmx_lora_dora_factor(l, lo, lo->dora_f.data);
    if (st) lmx_array_release(&lo->dora_f);
    return st;
}
