/*
 * op_rows.h - an ATTENTION node over several batch rows, as one node per row.
 *
 * lmx_attention_rows records one node for R sequences laid end to end
 * (q [R·T, H, hd], k/v [R·S, Hkv, hd], out [R·T, H·vd]; ip[2] = R). Kernels
 * that have no batched form (the CPU kernels and vjps, the CUDA fallbacks)
 * run the node row by row through these borrowed views: the same per-row
 * arithmetic as separate single-sequence nodes, so the results are bit for
 * bit those of a loop over rows.
 */
#ifndef LMX_CORE_OP_ROWS_H
#define LMX_CORE_OP_ROWS_H

#include "core/op.h"

#include <string.h>

/* Batch rows of an ATTENTION node (ip[2]; 0 and 1 mean one sequence). */
static inline int lmx_attn_rows(const lmx_node *n) { return n->ip[2] > 1 ? n->ip[2] : 1; }

/* Leading-dimension rows [r0, r0 + nr) of a, as a borrowed view (no reference
 * taken: valid while a lives). a may be strided; NULL stays NULL. */
static inline const lmx_array *lmx_rows_view(lmx_array *dst, const lmx_array *a, int64_t r0, int64_t nr) {
    if (!a) return NULL;
    *dst = *a;
    dst->buf = NULL;
    dst->shape[0] = nr;
    dst->data = (uint8_t *)a->data + lmx_dtype_bytes(a->dtype, r0 * a->strides[0]);
    return dst;
}

/* Row r of a batched ATTENTION node: views of q, k, v, out in v[0..3] and a
 * single-sequence node in *one (ip[2] = 0). */
static inline void lmx_attn_row_node(const lmx_node *n, int r, lmx_node *one, lmx_array v[4]) {
    int R = lmx_attn_rows(n);
    int64_t T = n->src[0]->shape[0] / R, S = n->src[1]->shape[0] / R;
    *one = *n;
    one->ip[2] = 0;
    one->src[0] = lmx_rows_view(&v[0], n->src[0], r * T, T);
    one->src[1] = lmx_rows_view(&v[1], n->src[1], r * S, S);
    one->src[2] = lmx_rows_view(&v[2], n->src[2], r * S, S);
    one->out = (lmx_array *)lmx_rows_view(&v[3], n->out, r * T, T);
}

/* Row r's gradients: dout rows and each dense dsrc[i] (q: T rows, k, v: S rows). */
static inline void lmx_attn_row_grads(const lmx_node *n, int r, const lmx_array *dout, lmx_array *const dsrc[],
                                      const lmx_array **dout_r, lmx_array *dsrc_r[], lmx_array g[4]) {
    int R = lmx_attn_rows(n);
    int64_t T = n->src[0]->shape[0] / R, S = n->src[1]->shape[0] / R;
    *dout_r = lmx_rows_view(&g[3], dout, r * T, T);
    for (int i = 0; i < 3; i++) {
        int64_t nr = i ? S : T;
        dsrc_r[i] = dsrc[i] ? (lmx_array *)lmx_rows_view(&g[i], dsrc[i], r * nr, nr) : NULL;
    }
    for (int i = 3; i < LMX_MAX_SRC; i++) dsrc_r[i] = NULL;
}

/* A per-row vjp (ctx: what the caller passes through). */
typedef lmx_status (*lmx_attn_row_vjp_fn)(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], void *ctx);

/* The vjp of a batched ATTENTION node as fn over its rows, one after another. */
static inline lmx_status lmx_attn_rows_vjp(const lmx_node *n, const lmx_array *dout, lmx_array *const dsrc[],
                                           lmx_attn_row_vjp_fn fn, void *ctx) {
    for (int r = 0; r < lmx_attn_rows(n); r++) {
        lmx_node one;
        lmx_array v[4], g[4], *dr[LMX_MAX_SRC];
        const lmx_array *gr;
        lmx_attn_row_node(n, r, &one, v);
        lmx_attn_row_grads(n, r, dout, dsrc, &gr, dr, g);
        lmx_status st = fn(&one, gr, dr, ctx);
        if (st) return st;
    }
    return LMX_OK;
}

/* Position of row t of a ROPE node: pos0 + t, or pos0 + t mod P with a
 * period P = ip[3] > 0 (batch rows of P tokens each, laid end to end). */
static inline int64_t lmx_rope_pos(const lmx_node *n, int64_t t) {
    return n->ip[0] + (n->ip[3] > 0 ? t % n->ip[3] : t);
}

#endif
