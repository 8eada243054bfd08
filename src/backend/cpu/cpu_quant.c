/* cpu_quant.c - reference dequantization of one weight row, any dtype row:
 * plain floats and GGUF blocks through the dtype's to_f32; MLX packed rows
 * as scale·v (+ bias) per group, v the grid value from to_f32. This is the
 * oracle later SIMD/CUDA quantized kernels are tested against. */
#include "backend/cpu/cpu.h"

void lmx_cpu_dequant_row(const lmx_array *w, int64_t r, const lmx_array *scales, const lmx_array *biases,
                         int group, float *out, float *sb) {
    int64_t K = w->shape[w->ndim - 1];
    const lmx_dtype_traits *wt = lmx_dtype_info(w->dtype);
    wt->to_f32((const uint8_t *)w->data + (size_t)r * lmx_dtype_bytes(w->dtype, K), out, K);
    if (!scales) return;
    int64_t G = K / group;
    const lmx_dtype_traits *st = lmx_dtype_info(scales->dtype);
    st->to_f32((const uint8_t *)scales->data + lmx_dtype_bytes(scales->dtype, r * G), sb, G);
    if (biases) {
        const lmx_dtype_traits *bt = lmx_dtype_info(biases->dtype);
        bt->to_f32((const uint8_t *)biases->data + lmx_dtype_bytes(biases->dtype, r * G), sb + G, G);
    }
    for (int64_t g = 0; g < G; g++) {
        float s = sb[g], b = biases ? sb[G + g] : 0.0f;
        float *o = out + g * group;
        if (biases)
            for (int j = 0; j < group; j++) o[j] = s * o[j] + b;
        else
            for (int j = 0; j < group; j++) o[j] = s * o[j];
    }
}

int64_t lmx_cpu_dequant_scratch(const lmx_array *w, int group) {
    int64_t K = w->shape[w->ndim - 1];
    return K + (group > 0 ? 2 * (K / group) : 0);
}
