/* cpu_vjp_norm.c - RMSNorm and LayerNorm vjps, threaded.
 *
 * Each row's dx is the reference's arithmetic (src/core/vjp.c: f32 inputs,
 * f64 row sums) on rows split over threads; the weight/bias gradients are
 * sums over rows, done in a second pass with columns split over threads
 * and rows in order, so every element equals the reference bit for bit.
 * Inputs are read in place (f32 rows, contiguous or row-strided). */
#include "backend/cpu/cpu_vjp.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct {
    const lmx_node *n;
    const float *x, *w, *g; /* w: f32 weight or NULL */
    int64_t R, C, xs;
    double *stat;           /* per row: rms: inv; layer: mean, inv */
    float *dx, *dw, *db;
    lmx_vjp_chunks ch;      /* rows, then columns */
} norm_job;

static void rms_rows(int ith, int nth, void *arg) {
    norm_job *j = arg;
    int64_t lo, hi, C = j->C;
    bool add_one = j->n->ip[0];
    float eps = j->n->fp[0];
    (void)ith, (void)nth;
    while (lmx_vjp_chunks_next(&j->ch, &lo, &hi))
    for (int64_t r = lo; r < hi; r++) {
        const float *xr = j->x + r * j->xs, *gr = j->g + r * C;
        double ss = 0, dot = 0;
        for (int64_t c = 0; c < C; c++) ss += (double)xr[c] * xr[c];
        double inv = 1.0 / sqrt(ss / (double)C + eps);
        j->stat[r] = inv;
        if (!j->dx) continue;
        for (int64_t c = 0; c < C; c++) {
            double gc = (j->w ? j->w[c] : 1.0) + (add_one ? 1.0 : 0.0);
            dot += (double)gr[c] * gc * xr[c];
        }
        float *dx = j->dx + r * C;
        for (int64_t c = 0; c < C; c++) {
            double gc = (j->w ? j->w[c] : 1.0) + (add_one ? 1.0 : 0.0);
            dx[c] += (float)(inv * gr[c] * gc - xr[c] * inv * inv * inv * dot / (double)C);
        }
    }
}

static void rms_cols(int ith, int nth, void *arg) {
    norm_job *j = arg;
    int64_t lo, hi;
    (void)ith, (void)nth;
    while (lmx_vjp_chunks_next(&j->ch, &lo, &hi))
    for (int64_t r = 0; r < j->R; r++) {
        const float *xr = j->x + r * j->xs, *gr = j->g + r * j->C;
        double inv = j->stat[r];
        for (int64_t c = lo; c < hi; c++) j->dw[c] += (float)(gr[c] * xr[c] * inv);
    }
}

static void ln_rows(int ith, int nth, void *arg) {
    norm_job *j = arg;
    int64_t lo, hi, C = j->C;
    (void)ith, (void)nth;
    while (lmx_vjp_chunks_next(&j->ch, &lo, &hi))
    for (int64_t r = lo; r < hi; r++) {
        const float *xr = j->x + r * j->xs, *gr = j->g + r * C;
        double mean = 0, var = 0;
        for (int64_t c = 0; c < C; c++) mean += xr[c];
        mean /= (double)C;
        for (int64_t c = 0; c < C; c++) var += (xr[c] - mean) * (xr[c] - mean);
        var /= (double)C;
        double inv = 1.0 / sqrt(var + j->n->fp[0]), m1 = 0, m2 = 0;
        j->stat[2 * r] = mean;
        j->stat[2 * r + 1] = inv;
        if (!j->dx) continue;
        for (int64_t c = 0; c < C; c++) {
            double dh = gr[c] * (j->w ? j->w[c] : 1.0), xh = (xr[c] - mean) * inv;
            m1 += dh;
            m2 += dh * xh;
        }
        m1 /= (double)C;
        m2 /= (double)C;
        float *dx = j->dx + r * C;
        for (int64_t c = 0; c < C; c++) {
            double dh = gr[c] * (j->w ? j->w[c] : 1.0), xh = (xr[c] - mean) * inv;
            dx[c] += (float)(inv * (dh - m1 - xh * m2));
        }
    }
}

static void ln_cols(int ith, int nth, void *arg) {
    norm_job *j = arg;
    int64_t lo, hi;
    (void)ith, (void)nth;
    while (lmx_vjp_chunks_next(&j->ch, &lo, &hi))
    for (int64_t r = 0; r < j->R; r++) {
        const float *xr = j->x + r * j->xs, *gr = j->g + r * j->C;
        double mean = j->stat[2 * r], inv = j->stat[2 * r + 1];
        for (int64_t c = lo; c < hi; c++) {
            double xh = (xr[c] - mean) * inv;
            if (j->dw) j->dw[c] += (float)(gr[c] * xh);
            if (j->db) j->db[c] += gr[c];
        }
    }
}

/* MLX-layout files place tensors at any byte offset (lmx convert output sits
 * at 2 mod 4), so an mmapped f32 weight may be unaligned: those take the
 * reference path, which reads through memcpy-safe dense copies. */
static bool f32_vec(const lmx_array *a) {
    return !a || (a->dtype == LMX_F32 && lmx_array_is_contiguous(a) && ((uintptr_t)a->data & 3) == 0);
}

static lmx_status run_norm(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool, bool layer) {
    const lmx_array *x = n->src[0], *w = n->src[1], *b = layer ? n->src[2] : NULL;
    norm_job j = {.n = n, .g = dout->data};
    if (!lmx_vjp_rows_f32(x, &j.R, &j.C, &j.xs) || !f32_vec(w) || !f32_vec(b))
        return layer ? lmx_vjp_layer_norm(n, dout, dsrc) : lmx_vjp_rms_norm(n, dout, dsrc);
    j.x = x->data;
    j.w = w ? w->data : NULL;
    j.dx = dsrc[0] ? dsrc[0]->data : NULL;
    j.dw = w && dsrc[1] ? dsrc[1]->data : NULL;
    j.db = b && dsrc[2] ? dsrc[2]->data : NULL;
    if (!(j.stat = malloc((size_t)(j.R ? j.R : 1) * 2 * sizeof *j.stat)))
        return lmx_err(LMX_ERR_NOMEM, "norm vjp: out of memory");
    double work = 2.0 * (double)j.R * j.C;
    lmx_vjp_chunks_init(&j.ch, j.R, pool, 8, 1);
    lmx_vjp_pool_run(pool, layer ? ln_rows : rms_rows, &j, work);
    if (j.dw || j.db) { /* column chunks of >= 16 floats: no cache line shared by two threads */
        lmx_vjp_chunks_init(&j.ch, j.C, pool, 4, 16);
        lmx_vjp_pool_run(pool, layer ? ln_cols : rms_cols, &j, work);
    }
    free(j.stat);
    return LMX_OK;
}

lmx_status lmx_fast_vjp_rms_norm(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool) {
    return run_norm(n, dout, dsrc, pool, false);
}

lmx_status lmx_fast_vjp_layer_norm(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool) {
    return run_norm(n, dout, dsrc, pool, true);
}
