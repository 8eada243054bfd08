/* cpu_norm.c - RMSNorm and LayerNorm over the last dimension (f32 accumulation). */
#include "backend/cpu/cpu.h"

#include <math.h>

typedef struct {
    const lmx_node *n;
} norm_job;

static float param(const lmx_array *p, int64_t i) {
    float v;
    lmx_dtype_info(p->dtype)->to_f32((const uint8_t *)p->data + lmx_dtype_bytes(p->dtype, i), &v, 1);
    return v;
}

static void rms_task(int ith, int nth, void *arg) {
    const lmx_node *n = ((norm_job *)arg)->n;
    const lmx_array *x = n->src[0], *w = n->src[1];
    int64_t R = cpu_rows(x), C = cpu_cols(x), xs = cpu_row_stride(x), os = cpu_row_stride(n->out);
    float eps = n->fp[0];
    bool add_one = n->ip[0];
    int64_t lo, hi;
    lmx_split(R, ith, nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        const float *xr = (const float *)x->data + r * xs;
        float *o = (float *)n->out->data + r * os;
        double ss = 0;
        for (int64_t c = 0; c < C; c++) ss += (double)xr[c] * xr[c];
        float inv = 1.0f / sqrtf((float)(ss / (double)C) + eps);
        for (int64_t c = 0; c < C; c++) {
            float g = w ? param(w, c) : 1.0f;
            if (add_one) g += 1.0f;
            o[c] = xr[c] * inv * g;
        }
    }
}

static void ln_task(int ith, int nth, void *arg) {
    const lmx_node *n = ((norm_job *)arg)->n;
    const lmx_array *x = n->src[0], *w = n->src[1], *b = n->src[2];
    int64_t R = cpu_rows(x), C = cpu_cols(x), xs = cpu_row_stride(x), os = cpu_row_stride(n->out);
    float eps = n->fp[0];
    int64_t lo, hi;
    lmx_split(R, ith, nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        const float *xr = (const float *)x->data + r * xs;
        float *o = (float *)n->out->data + r * os;
        double mean = 0, var = 0;
        for (int64_t c = 0; c < C; c++) mean += xr[c];
        mean /= (double)C;
        for (int64_t c = 0; c < C; c++) var += ((double)xr[c] - mean) * ((double)xr[c] - mean);
        var /= (double)C;
        float inv = (float)(1.0 / sqrt(var + eps));
        for (int64_t c = 0; c < C; c++) {
            float y = ((float)(xr[c] - mean)) * inv;
            if (w) y *= param(w, c);
            if (b) y += param(b, c);
            o[c] = y;
        }
    }
}

lmx_status lmx_cpu_rms_norm(const lmx_node *n, lmx_pool *pool) {
    norm_job j = {n};
    lmx_pool_run(pool, rms_task, &j);
    return LMX_OK;
}

lmx_status lmx_cpu_layer_norm(const lmx_node *n, lmx_pool *pool) {
    norm_job j = {n};
    lmx_pool_run(pool, ln_task, &j);
    return LMX_OK;
}
