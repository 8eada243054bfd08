/* cpu_matmul.c - out[M,N] = x[M,K] · w[N,K]ᵀ + b, weights in any float dtype.
 *
 * Threads split the N output features so each reads a disjoint slab of the
 * weight matrix (decode is weight-bandwidth bound). A weight row is converted
 * to f32 once and reused for all M rows of x. */
#include "backend/cpu/cpu.h"

#include <stdlib.h>

float lmx_cpu_dot_f32(const float *a, const float *b, int64_t n) {
    /* 16 independent partial sums: lets the compiler vectorise without
     * -ffast-math and keeps the summation order fixed. */
    float acc[16] = {0};
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int j = 0; j < 16; j++) acc[j] += a[i + j] * b[i + j];
    float s = 0;
    for (; i < n; i++) s += a[i] * b[i];
    for (int j = 0; j < 16; j++) s += acc[j];
    return s;
}

float *lmx_cpu_scratch(int64_t n) { return lmx_thread_scratch(0, n); }

typedef struct {
    const lmx_node *n;
    bool failed;
} mm_job;

static void matmul_task(int ith, int nth, void *arg) {
    mm_job *job = arg;
    const lmx_node *nd = job->n;
    const lmx_array *x = nd->src[0], *w = nd->src[1], *b = nd->src[2];
    lmx_array *out = nd->out;
    int64_t M = cpu_rows(x), K = w->shape[1], N = w->shape[0];
    int64_t xs = cpu_row_stride(x), os = cpu_row_stride(out);
    const lmx_array *sc = nd->src[3], *qb = nd->src[4];
    int group = nd->ip[0];
    size_t wrow = lmx_dtype_bytes(w->dtype, K);
    int64_t lo, hi;
    lmx_split(N, ith, nth, &lo, &hi);
    float *tmp = w->dtype == LMX_F32 ? NULL : lmx_cpu_scratch(lmx_cpu_dequant_scratch(w, sc ? group : 0));
    if (w->dtype != LMX_F32 && !tmp) {
        job->failed = true;
        return;
    }
    float bias_buf = 0;
    for (int64_t j = lo; j < hi; j++) {
        const uint8_t *wr = (const uint8_t *)w->data + (size_t)j * wrow;
        const float *wf;
        if (w->dtype == LMX_F32) {
            wf = (const float *)wr;
        } else {
            lmx_cpu_dequant_row(w, j, sc, qb, group, tmp, tmp + K);
            wf = tmp;
        }
        if (b) {
            const lmx_dtype_traits *bt = lmx_dtype_info(b->dtype);
            bt->to_f32((const uint8_t *)b->data + lmx_dtype_bytes(b->dtype, j), &bias_buf, 1);
        }
        for (int64_t m = 0; m < M; m++) {
            const float *xr = (const float *)x->data + m * xs;
            ((float *)out->data)[m * os + j] = lmx_cpu_dot_f32(xr, wf, K) + bias_buf;
        }
    }
}

lmx_status lmx_cpu_matmul(const lmx_node *n, lmx_pool *pool) {
    if (!lmx_array_is_contiguous(n->src[1]))
        return lmx_err(LMX_ERR_UNSUPPORTED, "matmul: weight must be contiguous");
    mm_job job = {n, false};
    lmx_pool_run(pool, matmul_task, &job);
    return job.failed ? lmx_err(LMX_ERR_NOMEM, "matmul: out of memory") : LMX_OK;
}
