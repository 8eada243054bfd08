/* cpu_attention.c - causal scaled-dot-product attention against a KV cache.
 *
 * q: [T, H, hd] at positions pos0..pos0+T-1; k, v: [S, Hkv, hd] cache rows
 * (f32/f16/bf16), row j holding position j. GQA: query head h reads kv head
 * h / (H / Hkv). Softmax in f32 with the max subtracted. Threads split the
 * (t, h) pairs. */
#include "backend/cpu/cpu.h"
#include "core/op_rows.h"

#include <math.h>

typedef struct {
    const lmx_node *n;
    bool failed;
} attn_job;

static void load_row(const lmx_array *a, int64_t row, int64_t head, float *dst, float *tmp) {
    int64_t hd = a->shape[2];
    const uint8_t *p = (const uint8_t *)a->data + lmx_dtype_bytes(a->dtype, row * a->strides[0] + head * a->strides[1]);
    (void)tmp;
    lmx_dtype_info(a->dtype)->to_f32(p, dst, hd);
}

static void attn_task(int ith, int nth, void *arg) {
    attn_job *job = arg;
    const lmx_node *n = job->n;
    const lmx_array *q = n->src[0], *k = n->src[1], *v = n->src[2];
    int64_t T = q->shape[0], H = q->shape[1], hd = q->shape[2], Hkv = k->shape[1], vd = v->shape[2];
    int64_t pos0 = n->ip[0];
    int window = n->ip[1];
    float scale = n->fp[0], cap = n->fp[1];
    int64_t S = pos0 + T, group = H / Hkv;
    float *buf = lmx_cpu_scratch(S + hd + vd + vd);
    if (!buf) {
        job->failed = true;
        return;
    }
    float *scores = buf, *krow = buf + S, *vrow = krow + hd, *acc = vrow + vd;
    int64_t lo, hi;
    lmx_split(T * H, ith, nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        int64_t t = r / H, h = r % H, kh = h / group, p = pos0 + t;
        const float *qr = (const float *)q->data + t * q->strides[0] + h * q->strides[1];
        int64_t j0 = 0;
        if (window > 0 && p - window + 1 > 0) j0 = p - window + 1;
        float mx = -INFINITY;
        for (int64_t j = j0; j <= p; j++) {
            load_row(k, j, kh, krow, NULL);
            float s = lmx_cpu_dot_f32(qr, krow, hd) * scale;
            if (cap > 0) s = cap * tanhf(s / cap);
            scores[j] = s;
            if (s > mx) mx = s;
        }
        float sum = 0;
        for (int64_t j = j0; j <= p; j++) {
            scores[j] = expf(scores[j] - mx);
            sum += scores[j];
        }
        for (int64_t d = 0; d < vd; d++) acc[d] = 0;
        for (int64_t j = j0; j <= p; j++) {
            load_row(v, j, kh, vrow, NULL);
            float w = scores[j] / sum;
            for (int64_t d = 0; d < vd; d++) acc[d] += w * vrow[d];
        }
        float *o = (float *)n->out->data + t * (H * vd) + h * vd;
        for (int64_t d = 0; d < vd; d++) o[d] = acc[d];
    }
}

lmx_status lmx_cpu_attention(const lmx_node *n, lmx_pool *pool) {
    if (lmx_attn_rows(n) > 1) { /* batch rows one after another (core/op_rows.h) */
        for (int r = 0; r < lmx_attn_rows(n); r++) {
            lmx_node one;
            lmx_array v[4];
            lmx_attn_row_node(n, r, &one, v);
            LMX_TRY(lmx_cpu_attention(&one, pool));
        }
        return LMX_OK;
    }
    if (n->src[0]->dtype != LMX_F32 || !lmx_array_is_contiguous(n->out))
        return lmx_err(LMX_ERR_UNSUPPORTED, "attention: q must be f32");
    attn_job job = {n, false};
    lmx_pool_run(pool, attn_task, &job);
    return job.failed ? lmx_err(LMX_ERR_NOMEM, "attention: out of memory") : LMX_OK;
}
