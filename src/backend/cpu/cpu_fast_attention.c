/* cpu_fast_attention.c - causal attention with the SIMD tables, f32 q/k/v.
 *
 * One work item is (query row t, kv head): the G = H/Hkv query heads that
 * share the kv head are done together, so every K and V row is loaded once
 * per group instead of once per head (GQA). Items are dealt round-robin to
 * the threads, which balances the causal triangle of prefill (item cost grows
 * with t) and gives each thread whole kv heads in decode. Softmax is f32 with
 * the max subtracted, probabilities normalised before V is summed, as the
 * reference does. Anything else (f16/bf16 caches, strided q) goes to the
 * reference kernel. */
#include "backend/cpu/cpu_simd.h"
#include "core/op_rows.h"

#include <math.h>

typedef struct {
    const lmx_simd_kernels *k;
    const lmx_node *n;
    bool failed;
} fa_job;

static bool handled(const lmx_node *n) {
    const lmx_array *q = n->src[0], *k = n->src[1], *v = n->src[2];
    if (q->dtype != LMX_F32 || k->dtype != LMX_F32 || v->dtype != LMX_F32 || n->out->dtype != LMX_F32) return false;
    if (!lmx_array_is_contiguous(q) || !lmx_array_is_contiguous(n->out)) return false;
    if (q->ndim != 3 || k->ndim != 3 || v->ndim != 3) return false;
    if (k->strides[2] != 1 || v->strides[2] != 1) return false;
    if (k->shape[1] <= 0 || q->shape[1] % k->shape[1] != 0) return false;
    return true;
}

static void attn_task(int ith, int nth, void *arg) {
    fa_job *job = arg;
    const lmx_simd_kernels *kt = job->k;
    const lmx_node *n = job->n;
    const lmx_array *q = n->src[0], *k = n->src[1], *v = n->src[2];
    int64_t T = q->shape[0], H = q->shape[1], hd = q->shape[2], Hkv = k->shape[1], vd = v->shape[2];
    int64_t pos0 = n->ip[0];
    int window = n->ip[1];
    float scale = n->fp[0], cap = n->fp[1];
    int64_t S = pos0 + T;
    int G = (int)(H / Hkv);
    float *s = lmx_fast_scratch(0, (int64_t)G * S);
    float *acc = lmx_fast_scratch(1, (int64_t)G * vd);
    if (!s || !acc) {
        job->failed = true;
        return;
    }
    const float *qd = q->data, *kd = k->data, *vdata = v->data;
    float *od = n->out->data;
    for (int64_t item = ith; item < T * Hkv; item += nth) {
        int64_t t = item / Hkv, kh = item % Hkv, p = pos0 + t;
        int64_t j0 = 0;
        if (window > 0 && p - window + 1 > 0) j0 = p - window + 1;
        int64_t nj = p - j0 + 1;
        const float *q0 = qd + t * q->strides[0] + kh * G * q->strides[1];
        kt->attn_scores(q0, G, q->strides[1], kd + j0 * k->strides[0] + kh * k->strides[1], k->strides[0], nj, hd,
                        scale, s, nj);
        for (int g = 0; g < G; g++) {
            float *sg = s + (int64_t)g * nj;
            if (cap > 0)
                for (int64_t j = 0; j < nj; j++) sg[j] = cap * tanhf(sg[j] / cap);
            float mx = -INFINITY, sum = 0;
            for (int64_t j = 0; j < nj; j++) mx = sg[j] > mx ? sg[j] : mx;
            if (kt->softmax_exp) {
                sum = kt->softmax_exp(sg, nj, mx);
            } else {
                for (int64_t j = 0; j < nj; j++) {
                    sg[j] = expf(sg[j] - mx);
                    sum += sg[j];
                }
            }
            for (int64_t j = 0; j < nj; j++) sg[j] = sg[j] / sum;
        }
        for (int64_t i = 0; i < G * vd; i++) acc[i] = 0;
        kt->attn_av(s, G, nj, vdata + j0 * v->strides[0] + kh * v->strides[1], v->strides[0], nj, vd, acc, vd);
        for (int g = 0; g < G; g++) {
            float *o = od + t * (H * vd) + (kh * G + g) * vd;
            for (int64_t d = 0; d < vd; d++) o[d] = acc[g * vd + d];
        }
    }
}

lmx_status lmx_fast_attention_with(const lmx_simd_kernels *k, const lmx_node *n, lmx_pool *pool) {
    if (lmx_attn_rows(n) > 1) { /* batch rows one after another (core/op_rows.h) */
        for (int r = 0; r < lmx_attn_rows(n); r++) {
            lmx_node one;
            lmx_array v[4];
            lmx_attn_row_node(n, r, &one, v);
            LMX_TRY(lmx_fast_attention_with(k, &one, pool));
        }
        return LMX_OK;
    }
    if (!k || !handled(n)) return lmx_cpu_attention(n, pool);
    fa_job job = {k, n, false};
    lmx_pool_run(pool, attn_task, &job);
    return job.failed ? lmx_err(LMX_ERR_NOMEM, "attention: out of memory") : LMX_OK;
}

lmx_status lmx_fast_attention(const lmx_node *n, lmx_pool *pool) {
    return lmx_fast_attention_with(lmx_simd(), n, pool);
}
