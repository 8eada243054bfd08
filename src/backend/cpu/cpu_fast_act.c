/* cpu_fast_act.c - SiLU (times the gate's partner, as the gated MLP asks)
 * through the SIMD table's vector exp; other activations, strided rows and
 * tables without silu_mul go to the reference kernel. Decode has one row of
 * the MLP width, so its columns are split over the threads. */
#include "backend/cpu/cpu_simd.h"

typedef struct {
    const lmx_simd_kernels *k;
    const lmx_node *n;
} act_job;

static void act_task(int ith, int nth, void *arg) {
    const act_job *job = arg;
    const lmx_node *n = job->n;
    const lmx_array *a = n->src[0], *b = n->src[1];
    const int64_t R = cpu_rows(a), C = cpu_cols(a);
    int64_t lo = 0, hi = R, c0 = 0, c1 = C;
    if (R < nth)
        lmx_split(C, ith, nth, &c0, &c1);
    else
        lmx_split(R, ith, nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++)
        job->k->silu_mul((const float *)a->data + r * C + c0, b ? (const float *)b->data + r * C + c0 : NULL,
                         (float *)n->out->data + r * C + c0, c1 - c0);
}

static bool handled(const lmx_simd_kernels *k, const lmx_node *n) {
    const lmx_array *a = n->src[0], *b = n->src[1];
    if (!k || !k->silu_mul || n->ip[0] != LMX_ACT_SILU) return false;
    if (a->dtype != LMX_F32 || n->out->dtype != LMX_F32 || !lmx_array_is_contiguous(a) ||
        !lmx_array_is_contiguous(n->out))
        return false;
    return !b || (b->dtype == LMX_F32 && lmx_array_is_contiguous(b) && lmx_array_numel(b) == lmx_array_numel(a));
}

lmx_status lmx_fast_act_with(const lmx_simd_kernels *k, const lmx_node *n, lmx_pool *pool) {
    if (!handled(k, n)) return lmx_cpu_act(n, pool);
    act_job job = {k, n};
    lmx_cpu_run(pool, act_task, &job, lmx_array_numel(n->out));
    return LMX_OK;
}

lmx_status lmx_fast_act(const lmx_node *n, lmx_pool *pool) { return lmx_fast_act_with(lmx_simd(), n, pool); }
