/* linear.c - lmx_linear: a projection or embedding table in any storage
 * format, with views over row ranges and experts (fused qkv / gate_up, MLX
 * stacked experts) that carry the quantization scales along. */
#include "models/model.h"

void lmx_linear_release(lmx_linear *l) {
    lmx_array_release(&l->w);
    lmx_array_release(&l->b);
    lmx_array_release(&l->scales);
    lmx_array_release(&l->biases);
    l->group_size = 0;
}

static lmx_status rows_opt(lmx_array *dst, const lmx_array *src, int64_t r0, int64_t n) {
    if (lmx_array_empty(src)) return LMX_OK;
    return lmx_array_rows(dst, src, r0, n);
}

lmx_status lmx_linear_rows(lmx_linear *dst, const lmx_linear *src, int64_t r0, int64_t n) {
    memset(dst, 0, sizeof *dst);
    dst->group_size = src->group_size;
    lmx_status s = lmx_array_rows(&dst->w, &src->w, r0, n);
    if (!s) s = rows_opt(&dst->b, &src->b, r0, n);
    if (!s) s = rows_opt(&dst->scales, &src->scales, r0, n);
    if (!s) s = rows_opt(&dst->biases, &src->biases, r0, n);
    if (s) lmx_linear_release(dst);
    return s;
}

void lmx_linear_share(lmx_linear *dst, const lmx_linear *src) {
    *dst = *src;
    lmx_array_retain(&dst->w);
    lmx_array_retain(&dst->b);
    lmx_array_retain(&dst->scales);
    lmx_array_retain(&dst->biases);
}

/* Expert e of a stacked [E, out, in] module, as a 2-D [out, in] linear. */
static lmx_status view2(lmx_array *dst, const lmx_array *src, int64_t e) {
    if (lmx_array_empty(src)) return LMX_OK;
    int64_t sh[2] = {src->shape[1], src->shape[2]};
    return lmx_array_view(dst, src, e * sh[0] * sh[1], 2, sh);
}

lmx_status lmx_linear_expert(lmx_linear *dst, const lmx_linear *src, int64_t e) {
    memset(dst, 0, sizeof *dst);
    dst->group_size = src->group_size;
    lmx_status s = view2(&dst->w, &src->w, e);
    if (!s) s = view2(&dst->scales, &src->scales, e);
    if (!s) s = view2(&dst->biases, &src->biases, e);
    if (s) lmx_linear_release(dst);
    return s;
}
