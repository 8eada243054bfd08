/* vjp.c - vector-Jacobian products of the op table (plain C, host memory).
 *
 * Each vjp reads the node's recorded inputs (any float dtype, strided views
 * allowed: converted to dense f32 first), the output gradient dout (dense
 * f32, out's shape) and adds into dsrc[i] (dense f32 of src[i]'s shape, or
 * NULL when that gradient is not wanted). Math in f32 with f64 row sums,
 * mirroring the reference kernels in src/backend/cpu. Attention lives in
 * vjp_attention.c. */
#include "core/act_math.h"
#include "core/op_rows.h"
#include "core/tape.h"

#include <math.h>
#include <stdlib.h>

lmx_status lmx_vjp_dense(const lmx_array *a, float **out) {
    int64_t n = lmx_array_numel(a);
    float *d = malloc((size_t)(n ? n : 1) * sizeof *d);
    if (!d) return lmx_err(LMX_ERR_NOMEM, "vjp: out of memory");
    const lmx_dtype_traits *tr = lmx_dtype_info(a->dtype);
    lmx_status st = LMX_OK;
    if (lmx_array_is_contiguous(a)) {
        st = lmx_array_to_f32(a, d);
    } else if (!tr->to_f32 || tr->block != 1) {
        st = lmx_err(LMX_ERR_UNSUPPORTED, "vjp: strided %s array", tr->name);
    } else {
        for (int64_t i = 0; i < n; i++) {
            int64_t off = 0, k = i;
            for (int dd = a->ndim - 1; dd >= 0; dd--) {
                off += (k % a->shape[dd]) * a->strides[dd];
                k /= a->shape[dd];
            }
            tr->to_f32((const uint8_t *)a->data + off * (int64_t)tr->size, d + i, 1);
        }
    }
    if (st) {
        free(d);
        return st;
    }
    *out = d;
    return LMX_OK;
}

static int64_t rows(const lmx_array *a) { return a->ndim ? lmx_array_numel(a) / a->shape[a->ndim - 1] : 1; }
static int64_t cols(const lmx_array *a) { return a->ndim ? a->shape[a->ndim - 1] : 1; }

/* w [N, K] as dense f32, MLX packed rows dequantized as scale·v (+ bias). */
static lmx_status dense_weight(const lmx_array *w, const lmx_array *sc, const lmx_array *qb, int group, float **out) {
    LMX_TRY(lmx_vjp_dense(w, out));
    if (!sc) return LMX_OK;
    float *s = NULL, *b = NULL;
    lmx_status st = lmx_vjp_dense(sc, &s);
    if (!st && qb) st = lmx_vjp_dense(qb, &b);
    if (st) {
        free(s);
        free(*out);
        return st;
    }
    int64_t N = w->shape[0], K = w->shape[1], G = K / group;
    for (int64_t r = 0; r < N; r++)
        for (int64_t g = 0; g < G; g++) {
            float *o = *out + r * K + g * group;
            for (int j = 0; j < group; j++) o[j] = s[r * G + g] * o[j] + (b ? b[r * G + g] : 0.0f);
        }
    free(s);
    free(b);
    return LMX_OK;
}

lmx_status lmx_vjp_get_rows(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[]) {
    if (!dsrc[0]) return LMX_OK;
    const int32_t *ids = n->src[1]->data;
    int64_t R = lmx_array_numel(n->src[1]), D = n->src[0]->shape[1];
    const float *g = dout->data;
    float *dt = dsrc[0]->data;
    for (int64_t r = 0; r < R; r++)
        for (int64_t d = 0; d < D; d++) dt[(int64_t)ids[r] * D + d] += g[r * D + d];
    return LMX_OK;
}

lmx_status lmx_vjp_matmul(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[]) {
    const lmx_array *x = n->src[0], *w = n->src[1];
    int64_t M = rows(x), K = w->shape[1], N = w->shape[0];
    const float *g = dout->data;
    /* MATMUL_ACC: out += s·x·wᵀ, so dx and dw take s (applied to dout first, as the unfused scale node's vjp) */
    float s = n->op == LMX_OP_MATMUL_ACC ? n->fp[0] : 1.0f;
    float *X = NULL, *W = NULL;
    lmx_status st = LMX_OK;
    if (dsrc[1]) st = lmx_vjp_dense(x, &X);
    if (!st && dsrc[0]) st = dense_weight(w, n->src[3], n->src[4], n->ip[0], &W);
    if (!st && dsrc[0]) {
        float *dx = dsrc[0]->data;
        for (int64_t m = 0; m < M; m++)
            for (int64_t j = 0; j < N; j++) {
                float gj = g[m * N + j] * s;
                const float *wr = W + j * K;
                for (int64_t k = 0; k < K; k++) dx[m * K + k] += gj * wr[k];
            }
    }
    if (!st && dsrc[1]) {
        float *dw = dsrc[1]->data;
        for (int64_t m = 0; m < M; m++)
            for (int64_t j = 0; j < N; j++) {
                float gj = g[m * N + j] * s;
                const float *xr = X + m * K;
                for (int64_t k = 0; k < K; k++) dw[j * K + k] += gj * xr[k];
            }
    }
    if (!st && dsrc[2]) {
        float *db = dsrc[2]->data;
        for (int64_t m = 0; m < M; m++)
            for (int64_t j = 0; j < N; j++) db[j] += g[m * N + j];
    }
    free(X);
    free(W);
    return st;
}

lmx_status lmx_vjp_rms_norm(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[]) {
    const lmx_array *x = n->src[0], *w = n->src[1];
    int64_t R = rows(x), C = cols(x);
    float eps = n->fp[0];
    bool add_one = n->ip[0];
    float *X = NULL, *Wt = NULL;
    LMX_TRY(lmx_vjp_dense(x, &X));
    lmx_status st = w ? lmx_vjp_dense(w, &Wt) : LMX_OK;
    const float *g = dout->data;
    for (int64_t r = 0; r < R && !st; r++) {
        const float *xr = X + r * C, *gr = g + r * C;
        double ss = 0, dot = 0;
        for (int64_t c = 0; c < C; c++) ss += (double)xr[c] * xr[c];
        double inv = 1.0 / sqrt(ss / (double)C + eps);
        for (int64_t c = 0; c < C; c++) {
            double gc = (Wt ? Wt[c] : 1.0) + (add_one ? 1.0 : 0.0);
            dot += (double)gr[c] * gc * xr[c];
        }
        if (dsrc[0]) {
            float *dx = (float *)dsrc[0]->data + r * C;
            for (int64_t c = 0; c < C; c++) {
                double gc = (Wt ? Wt[c] : 1.0) + (add_one ? 1.0 : 0.0);
                dx[c] += (float)(inv * gr[c] * gc - xr[c] * inv * inv * inv * dot / (double)C);
            }
        }
        if (w && dsrc[1]) {
            float *dw = dsrc[1]->data;
            for (int64_t c = 0; c < C; c++) dw[c] += (float)(gr[c] * xr[c] * inv);
        }
    }
    free(X);
    free(Wt);
    return st;
}

lmx_status lmx_vjp_layer_norm(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[]) {
    const lmx_array *x = n->src[0], *w = n->src[1], *b = n->src[2];
    int64_t R = rows(x), C = cols(x);
    float *X = NULL, *Wt = NULL;
    LMX_TRY(lmx_vjp_dense(x, &X));
    lmx_status st = w ? lmx_vjp_dense(w, &Wt) : LMX_OK;
    const float *g = dout->data;
    for (int64_t r = 0; r < R && !st; r++) {
        const float *xr = X + r * C, *gr = g + r * C;
        double mean = 0, var = 0;
        for (int64_t c = 0; c < C; c++) mean += xr[c];
        mean /= (double)C;
        for (int64_t c = 0; c < C; c++) var += (xr[c] - mean) * (xr[c] - mean);
        var /= (double)C;
        double inv = 1.0 / sqrt(var + n->fp[0]), m1 = 0, m2 = 0;
        for (int64_t c = 0; c < C; c++) {
            double dh = gr[c] * (Wt ? Wt[c] : 1.0), xh = (xr[c] - mean) * inv;
            m1 += dh;
            m2 += dh * xh;
        }
        m1 /= (double)C;
        m2 /= (double)C;
        for (int64_t c = 0; c < C; c++) {
            double dh = gr[c] * (Wt ? Wt[c] : 1.0), xh = (xr[c] - mean) * inv;
            if (dsrc[0]) ((float *)dsrc[0]->data)[r * C + c] += (float)(inv * (dh - m1 - xh * m2));
            if (w && dsrc[1]) ((float *)dsrc[1]->data)[c] += (float)(gr[c] * xh);
            if (b && dsrc[2]) ((float *)dsrc[2]->data)[c] += gr[c];
        }
    }
    free(X);
    free(Wt);
    return st;
}

/* The transpose of the rotation: rotate by -θ (same mscale). */
lmx_status lmx_vjp_rope(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[]) {
    if (!dsrc[0]) return LMX_OK;
    const lmx_array *x = n->src[0];
    float *inv_freq = NULL;
    LMX_TRY(lmx_vjp_dense(n->src[1], &inv_freq));
    int64_t T = x->shape[0], H = x->shape[1], hd = x->shape[2];
    int dims = n->ip[1], half = dims / 2;
    bool trad = n->ip[2];
    float ms = n->fp[0];
    for (int64_t r = 0; r < T * H; r++) {
        const float *g = (const float *)dout->data + r * hd;
        float *dx = (float *)dsrc[0]->data + r * hd;
        float pos = (float)lmx_rope_pos(n, r / H);
        for (int i = 0; i < half; i++) {
            float th = pos * inv_freq[i];
            float c = cosf(th) * ms, s = sinf(th) * ms;
            int a = trad ? 2 * i : i, b = trad ? 2 * i + 1 : i + half;
            dx[a] += g[a] * c + g[b] * s;
            dx[b] += g[b] * c - g[a] * s;
        }
        for (int64_t i = dims; i < hd; i++) dx[i] += g[i];
    }
    free(inv_freq);
    return LMX_OK;
}

/* ADD / MUL with b the same shape or one row broadcast over a's rows. */
lmx_status lmx_vjp_binary(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[]) {
    const lmx_array *a = n->src[0], *b = n->src[1];
    int64_t R = rows(a), C = cols(a);
    bool bcast = lmx_array_numel(b) != lmx_array_numel(a);
    const float *g = dout->data;
    float *A = NULL, *B = NULL;
    lmx_status st = LMX_OK;
    bool mul = n->op == LMX_OP_MUL;
    if (mul && dsrc[1]) st = lmx_vjp_dense(a, &A);
    if (!st && mul && dsrc[0]) st = lmx_vjp_dense(b, &B);
    for (int64_t r = 0; r < R && !st; r++)
        for (int64_t c = 0; c < C; c++) {
            int64_t i = r * C + c, j = bcast ? c : i;
            if (dsrc[0]) ((float *)dsrc[0]->data)[i] += mul ? g[i] * B[j] : g[i];
            if (dsrc[1]) ((float *)dsrc[1]->data)[j] += mul ? g[i] * A[i] : g[i];
        }
    free(A);
    free(B);
    return st;
}

float lmx_vjp_act(float x, int act) { return lmx_act_value(x, act); }

float lmx_vjp_act_grad(float x, int act) { return lmx_act_deriv(x, act); }

/* SCALE, SOFTCAP, ACT (gated when src[1] is given), COPY. */
lmx_status lmx_vjp_unary(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[]) {
    const lmx_array *a = n->src[0], *b = n->op == LMX_OP_ACT ? n->src[1] : NULL;
    int64_t N = lmx_array_numel(a);
    const float *g = dout->data;
    float *A = NULL, *B = NULL;
    lmx_status st = LMX_OK;
    if (n->op != LMX_OP_SCALE && n->op != LMX_OP_COPY) st = lmx_vjp_dense(a, &A);
    if (!st && b) st = lmx_vjp_dense(b, &B);
    for (int64_t i = 0; i < N && !st; i++) {
        float da;
        switch (n->op) {
        case LMX_OP_SCALE: da = g[i] * n->fp[0]; break;
        case LMX_OP_COPY: da = g[i]; break;
        case LMX_OP_SOFTCAP: {
            float t = tanhf(A[i] / n->fp[0]);
            da = g[i] * (1.0f - t * t);
            break;
        }
        default:
            da = g[i] * lmx_vjp_act_grad(A[i], n->ip[0]) * (B ? B[i] : 1.0f);
            if (B && dsrc[1]) ((float *)dsrc[1]->data)[i] += g[i] * lmx_vjp_act(A[i], n->ip[0]);
        }
        if (dsrc[0]) ((float *)dsrc[0]->data)[i] += da;
    }
    free(A);
    free(B);
    return st;
}

/* Recomputes y = softmax(a) per row; da = y·(g - Σ g·y). */
lmx_status lmx_vjp_softmax(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[]) {
    if (!dsrc[0]) return LMX_OK;
    const lmx_array *a = n->src[0];
    int64_t R = rows(a), C = cols(a);
    float *A = NULL;
    LMX_TRY(lmx_vjp_dense(a, &A));
    const float *g = dout->data;
    for (int64_t r = 0; r < R; r++) {
        float *y = A + r * C, mx = -INFINITY;
        const float *gr = g + r * C;
        double sum = 0, dot = 0;
        for (int64_t c = 0; c < C; c++) mx = y[c] > mx ? y[c] : mx;
        for (int64_t c = 0; c < C; c++) sum += (y[c] = expf(y[c] - mx));
        for (int64_t c = 0; c < C; c++) {
            y[c] = (float)(y[c] / sum);
            dot += (double)gr[c] * y[c];
        }
        float *da = (float *)dsrc[0]->data + r * C;
        for (int64_t c = 0; c < C; c++) da[c] += y[c] * (float)(gr[c] - dot);
    }
    free(A);
    return LMX_OK;
}
