/* cpu_fast_rope.c - RoPE with the cos/sin table computed once per position.
 *
 * The reference evaluates cosf/sinf for every (row, head, pair); all heads of
 * a position share the angles, so this computes them once per position a
 * thread touches and reuses them across heads (40 heads for llama-1b q+k).
 * Same formulas, same float operations per element: results are bitwise
 * equal to the reference. */
#include "backend/cpu/cpu_simd.h"
#include "core/op_rows.h"

#include <math.h>

typedef struct {
    const lmx_node *n;
    bool failed;
} rope_job;

static void rope_task(int ith, int nth, void *arg) {
    rope_job *job = arg;
    const lmx_node *n = job->n;
    const lmx_array *x = n->src[0];
    const float *inv_freq = n->src[1]->data;
    int64_t T = x->shape[0], H = x->shape[1], hd = x->shape[2];
    int dims = n->ip[1], half = dims / 2;
    bool trad = n->ip[2];
    float ms = n->fp[0];
    float *cs = lmx_fast_scratch(2, 2 * (int64_t)(half > 0 ? half : 1));
    if (!cs) {
        job->failed = true;
        return;
    }
    float *sn = cs + half;
    int64_t lo, hi, cur_t = -1;
    lmx_split(T * H, ith, nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        int64_t t = r / H;
        if (t != cur_t) {
            float pos = (float)lmx_rope_pos(n, t);
            for (int i = 0; i < half; i++) {
                float th = pos * inv_freq[i];
                cs[i] = cosf(th) * ms;
                sn[i] = sinf(th) * ms;
            }
            cur_t = t;
        }
        const float *xi = (const float *)x->data + r * hd;
        float *o = (float *)n->out->data + r * hd;
        if (trad) {
            for (int i = 0; i < half; i++) {
                float x0 = xi[2 * i], x1 = xi[2 * i + 1];
                o[2 * i] = x0 * cs[i] - x1 * sn[i];
                o[2 * i + 1] = x1 * cs[i] + x0 * sn[i];
            }
        } else {
            for (int i = 0; i < half; i++) {
                float x0 = xi[i], x1 = xi[i + half];
                o[i] = x0 * cs[i] - x1 * sn[i];
                o[i + half] = x1 * cs[i] + x0 * sn[i];
            }
        }
        if (o != xi)
            for (int64_t i = dims; i < hd; i++) o[i] = xi[i];
    }
}

lmx_status lmx_fast_rope(const lmx_node *n, lmx_pool *pool) {
    if (!lmx_simd() || !lmx_array_is_contiguous(n->src[0]) || !lmx_array_is_contiguous(n->out) ||
        n->src[1]->dtype != LMX_F32 || n->src[0]->dtype != LMX_F32)
        return lmx_cpu_rope(n, pool);
    rope_job job = {n, false};
    lmx_cpu_run(pool, rope_task, &job, lmx_array_numel(n->out));
    return job.failed ? lmx_err(LMX_ERR_NOMEM, "rope: out of memory") : LMX_OK;
}
