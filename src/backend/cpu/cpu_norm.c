/* cpu_norm.c - RMSNorm and LayerNorm over the last dimension (f32 accumulation). */
#include "backend/cpu/cpu.h"

#include <math.h>

typedef struct {
    const lmx_node *n;
} norm_job;

/* Norm parameters (any float dtype) are converted to f32 a block at a time
 * on the stack: one to_f32 call per NB elements instead of one per element,
 * which cost more than the norm itself (~20 us per 2048-wide row). */
#define NB 256
static void params(const lmx_array *p, int64_t c0, int64_t n, float *out) {
    if (!p) return;
    lmx_dtype_info(p->dtype)->to_f32((const uint8_t *)p->data + lmx_dtype_bytes(p->dtype, c0), out, n);
}

/* Σ x² in double with eight partial sums (vectorizes; the order is fixed by
 * C alone, so every split of the rows gives the same result). */
static double sum_sq(const float *x, int64_t C) {
    double acc[8] = {0};
    int64_t c = 0;
    for (; c + 8 <= C; c += 8)
        for (int j = 0; j < 8; j++) acc[j] += (double)x[c + j] * x[c + j];
    double ss = 0;
    for (; c < C; c++) ss += (double)x[c] * x[c];
    for (int j = 0; j < 8; j++) ss += acc[j];
    return ss;
}

static void rms_task(int ith, int nth, void *arg) {
    const lmx_node *n = ((norm_job *)arg)->n;
    const lmx_array *x = n->src[0], *w = n->src[1];
    int64_t R = cpu_rows(x), C = cpu_cols(x), xs = cpu_row_stride(x), os = cpu_row_stride(n->out);
    float eps = n->fp[0];
    bool add_one = n->ip[0];
    int64_t lo, hi;
    lmx_split(R, ith, nth, &lo, &hi);
    float g[NB];
    for (int64_t r = lo; r < hi; r++) {
        const float *xr = (const float *)x->data + r * xs;
        float *o = (float *)n->out->data + r * os;
        float inv = 1.0f / sqrtf((float)(sum_sq(xr, C) / (double)C) + eps);
        for (int64_t c0 = 0; c0 < C; c0 += NB) {
            int64_t nb = C - c0 < NB ? C - c0 : NB;
            if (w) {
                params(w, c0, nb, g);
                if (add_one)
                    for (int64_t c = 0; c < nb; c++) g[c] += 1.0f;
            } else {
                for (int64_t c = 0; c < nb; c++) g[c] = add_one ? 2.0f : 1.0f;
            }
            for (int64_t c = 0; c < nb; c++) o[c0 + c] = xr[c0 + c] * inv * g[c];
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
    float wb[NB], bb[NB];
    for (int64_t r = lo; r < hi; r++) {
        const float *xr = (const float *)x->data + r * xs;
        float *o = (float *)n->out->data + r * os;
        double mean = 0, var = 0;
        for (int64_t c = 0; c < C; c++) mean += xr[c];
        mean /= (double)C;
        for (int64_t c = 0; c < C; c++) var += ((double)xr[c] - mean) * ((double)xr[c] - mean);
        var /= (double)C;
        float inv = (float)(1.0 / sqrt(var + eps));
        for (int64_t c0 = 0; c0 < C; c0 += NB) {
            int64_t nb = C - c0 < NB ? C - c0 : NB;
            params(w, c0, nb, wb);
            params(b, c0, nb, bb);
            for (int64_t c = 0; c < nb; c++) {
                float y = ((float)(xr[c0 + c] - mean)) * inv;
                if (w) y *= wb[c];
                if (b) y += bb[c];
                o[c0 + c] = y;
            }
        }
    }
}

lmx_status lmx_cpu_rms_norm(const lmx_node *n, lmx_pool *pool) {
    norm_job j = {n};
    lmx_cpu_run(pool, rms_task, &j, lmx_array_numel(n->out));
    return LMX_OK;
}

lmx_status lmx_cpu_layer_norm(const lmx_node *n, lmx_pool *pool) {
    norm_job j = {n};
    lmx_cpu_run(pool, ln_task, &j, lmx_array_numel(n->out));
    return LMX_OK;
}
