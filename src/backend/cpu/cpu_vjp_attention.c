/* cpu_vjp_attention.c - the attention vjp over whole [T, H, hd] blocks with
 * the SIMD attention leaves (cpu_simd.h), threads taking whole kv heads.
 *
 * Same recomputation as the reference (src/core/vjp_attention.c): for each
 * query step t the G = H/Hkv query heads sharing kv head kh are done at once
 *   s = scale·q·kᵀ (soft-capped), p = softmax(s)          attn_scores
 *   dp = dO·vᵀ,  ds = p·(1 - (s/cap)²)·(dp - Σ p·dp)·scale  attn_scores
 *   dq_t += ds·k                                           attn_av
 *   dv_j += Σ_g p_gj·dO_g,  dk_j += Σ_g ds_gj·q_g           attn_av, rows j
 * so each K/V row is read once per group, the rank-G updates of dk/dv run
 * as G-term sums per key row, and memory stays O(G·S) per thread. A kv head
 * is owned by one thread (its dk/dv rows are written by no one else), so
 * results do not depend on the thread count. */
#include "backend/cpu/cpu_vjp.h"

#include <math.h>

typedef struct {
    const lmx_simd_kernels *kt;
    const lmx_node *n;
    const float *g;
    float *dq, *dk, *dv;
    bool failed;
} av_job;

static void attn_vjp_task(int ith, int nth, void *arg) {
    av_job *job = arg;
    const lmx_simd_kernels *kt = job->kt;
    const lmx_node *n = job->n;
    const lmx_array *q = n->src[0], *k = n->src[1], *v = n->src[2];
    int64_t T = q->shape[0], H = q->shape[1], hd = q->shape[2], Hkv = k->shape[1], vd = v->shape[2];
    int64_t pos0 = n->ip[0], S = pos0 + T;
    int window = n->ip[1];
    float scale = n->fp[0], cap = n->fp[1];
    int G = (int)(H / Hkv);
    float *p = lmx_fast_scratch(0, G * S), *ds = lmx_fast_scratch(1, G * S), *sc = lmx_fast_scratch(2, G * S);
    float *pT = lmx_fast_scratch(3, S * G), *dsT = lmx_fast_scratch(4, S * G);
    if (!p || !ds || !sc || !pT || !dsT) {
        job->failed = true;
        return;
    }
    const float *qd = q->data, *kd = k->data, *vdat = v->data;
    int64_t qs0 = q->strides[0], qs1 = q->strides[1], ks0 = k->strides[0], ks1 = k->strides[1];
    int64_t vs0 = v->strides[0], vs1 = v->strides[1];
    for (int64_t kh = ith; kh < Hkv; kh += nth) {
        for (int64_t t = 0; t < T; t++) {
            int64_t pos = pos0 + t, j0 = 0;
            if (window > 0 && pos - window + 1 > 0) j0 = pos - window + 1;
            int64_t nj = pos - j0 + 1;
            const float *q0 = qd + t * qs0 + kh * G * qs1, *k0 = kd + j0 * ks0 + kh * ks1;
            const float *v0 = vdat + j0 * vs0 + kh * vs1, *g0 = job->g + t * (H * vd) + kh * G * vd;
            kt->attn_scores(q0, G, qs1, k0, ks0, nj, hd, scale, p, nj);
            kt->attn_scores(g0, G, vd, v0, vs0, nj, vd, 1.0f, ds, nj); /* dp */
            for (int gi = 0; gi < G; gi++) {
                float *pg = p + gi * nj, *dg = ds + gi * nj, *sg = sc + gi * nj, mx = -INFINITY;
                for (int64_t j = 0; j < nj; j++) {
                    float s = cap > 0 ? cap * tanhf(pg[j] / cap) : pg[j];
                    sg[j] = s;
                    mx = s > mx ? s : mx;
                }
                double sum = 0, pdp = 0;
                for (int64_t j = 0; j < nj; j++) sum += (pg[j] = expf(sg[j] - mx));
                for (int64_t j = 0; j < nj; j++) {
                    pg[j] = (float)(pg[j] / sum);
                    pdp += (double)pg[j] * dg[j];
                }
                for (int64_t j = 0; j < nj; j++) {
                    float pc = cap > 0 ? pg[j] * (1.0f - (sg[j] / cap) * (sg[j] / cap)) : pg[j];
                    dg[j] = pc * (float)(dg[j] - pdp) * scale;
                    pT[j * G + gi] = pg[j];
                    dsT[j * G + gi] = dg[j];
                }
            }
            if (job->dq) kt->attn_av(ds, G, nj, k0, ks0, nj, hd, job->dq + (t * H + kh * G) * hd, hd);
            if (job->dv) kt->attn_av(pT, (int)nj, G, g0, vd, G, vd, job->dv + (j0 * Hkv + kh) * vd, Hkv * vd);
            if (job->dk) kt->attn_av(dsT, (int)nj, G, q0, qs1, G, hd, job->dk + (j0 * Hkv + kh) * hd, Hkv * hd);
        }
    }
}

static bool handled(const lmx_node *n) {
    const lmx_array *q = n->src[0], *k = n->src[1], *v = n->src[2];
    if (q->dtype != LMX_F32 || k->dtype != LMX_F32 || v->dtype != LMX_F32) return false;
    if (q->ndim != 3 || k->ndim != 3 || v->ndim != 3) return false;
    if (q->strides[2] != 1 || k->strides[2] != 1 || v->strides[2] != 1) return false;
    if (k->shape[1] <= 0 || q->shape[1] % k->shape[1] || k->shape[2] != q->shape[2]) return false;
    return k->shape[0] >= n->ip[0] + q->shape[0] && v->shape[0] >= n->ip[0] + q->shape[0];
}

lmx_status lmx_fast_vjp_attention_with(const lmx_simd_kernels *k, const lmx_node *n, const lmx_array *dout,
                                       lmx_array *dsrc[], lmx_pool *pool) {
    if (!k || !handled(n)) return lmx_vjp_attention(n, dout, dsrc);
    av_job job = {k, n, dout->data, dsrc[0] ? dsrc[0]->data : NULL, dsrc[1] ? dsrc[1]->data : NULL,
                  dsrc[2] ? dsrc[2]->data : NULL, false};
    lmx_pool_run(pool, attn_vjp_task, &job);
    return job.failed ? lmx_err(LMX_ERR_NOMEM, "attention vjp: out of memory") : LMX_OK;
}

lmx_status lmx_fast_vjp_attention(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool) {
    return lmx_fast_vjp_attention_with(lmx_simd(), n, dout, dsrc, pool);
}
