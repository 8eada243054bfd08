/* vjp_attention.c - the vjp of causal attention (GQA, sliding window,
 * soft-capping), recomputing the softmax of each (t, h) row:
 *   s_j = cap·tanh(u_j/cap) (or u_j), u_j = scale·q·k_j;  p = softmax(s);
 *   dv_j += p_j·dO;  ds_j = p_j (dO·v_j - Σ p·(dO·v));  du = ds·(1 - (s/cap)²);
 *   dq += scale·du·k_j;  dk_j += scale·du·q. */
#include "core/op_rows.h"
#include "core/tape.h"

#include <math.h>
#include <stdlib.h>

static lmx_status row_vjp(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], void *ctx) {
    (void)ctx;
    return lmx_vjp_attention(n, dout, dsrc);
}

lmx_status lmx_vjp_attention(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[]) {
    if (lmx_attn_rows(n) > 1) return lmx_attn_rows_vjp(n, dout, dsrc, row_vjp, NULL); /* core/op_rows.h */
    const lmx_array *q = n->src[0], *k = n->src[1], *v = n->src[2];
    int64_t T = q->shape[0], H = q->shape[1], hd = q->shape[2], Hkv = k->shape[1], vd = v->shape[2];
    int64_t pos0 = n->ip[0], S = pos0 + T, group = H / Hkv;
    int window = n->ip[1];
    float scale = n->fp[0], cap = n->fp[1];
    float *Q = NULL, *K = NULL, *V = NULL, *p = NULL, *dp = NULL;
    lmx_status st = lmx_vjp_dense(q, &Q);
    if (!st) st = lmx_vjp_dense(k, &K);
    if (!st) st = lmx_vjp_dense(v, &V);
    if (!st) {
        p = malloc((size_t)S * sizeof *p);
        dp = malloc((size_t)S * sizeof *dp);
        if (!p || !dp) st = lmx_err(LMX_ERR_NOMEM, "attention vjp: out of memory");
    }
    const float *g = dout->data;
    float *dq = dsrc[0] ? dsrc[0]->data : NULL, *dk = dsrc[1] ? dsrc[1]->data : NULL;
    float *dv = dsrc[2] ? dsrc[2]->data : NULL;
    for (int64_t r = 0; r < T * H && !st; r++) {
        int64_t t = r / H, h = r % H, kh = h / group, pos = pos0 + t;
        const float *qr = Q + r * hd, *go = g + t * (H * vd) + h * vd;
        int64_t j0 = 0;
        if (window > 0 && pos - window + 1 > 0) j0 = pos - window + 1;
        float mx = -INFINITY;
        for (int64_t j = j0; j <= pos; j++) {
            const float *kr = K + (j * Hkv + kh) * hd;
            float s = 0;
            for (int64_t d = 0; d < hd; d++) s += qr[d] * kr[d];
            s *= scale;
            if (cap > 0) s = cap * tanhf(s / cap);
            p[j] = s;
            mx = s > mx ? s : mx;
        }
        double sum = 0, pdp = 0;
        for (int64_t j = j0; j <= pos; j++) {
            float s = p[j];
            p[j] = expf(s - mx);
            dp[j] = s; /* keep the capped score for the tanh derivative */
            sum += p[j];
        }
        for (int64_t j = j0; j <= pos; j++) {
            float s = dp[j];
            p[j] = (float)(p[j] / sum);
            const float *vr = V + (j * Hkv + kh) * vd;
            float d0 = 0;
            for (int64_t d = 0; d < vd; d++) d0 += go[d] * vr[d];
            dp[j] = d0;
            pdp += (double)p[j] * d0;
            if (dv) {
                float *dvr = dv + (j * Hkv + kh) * vd;
                for (int64_t d = 0; d < vd; d++) dvr[d] += p[j] * go[d];
            }
            /* p is not needed again: fold the tanh derivative into it, so
             * du_j = p_j·(1 - (s_j/cap)²)·(dp_j - Σ p·dp) below */
            if (cap > 0) p[j] = p[j] * (1.0f - (s / cap) * (s / cap));
        }
        for (int64_t j = j0; j <= pos; j++) {
            float du = p[j] * (float)(dp[j] - pdp) * scale;
            const float *kr = K + (j * Hkv + kh) * hd;
            if (dq)
                for (int64_t d = 0; d < hd; d++) dq[r * hd + d] += du * kr[d];
            if (dk) {
                float *dkr = dk + (j * Hkv + kh) * hd;
                for (int64_t d = 0; d < hd; d++) dkr[d] += du * qr[d];
            }
        }
    }
    free(Q);
    free(K);
    free(V);
    free(p);
    free(dp);
    return st;
}
