/* ops.c - validation for each op constructor, then dispatch to the backend. */
#include "core/ops.h"
#include "core/tape.h"

#include <stdio.h>

const lmx_op_def lmx_op_defs[LMX_OP_COUNT] = {
    [LMX_OP_GET_ROWS] = {"get_rows", 2, 4, lmx_vjp_get_rows},
    [LMX_OP_MATMUL] = {"matmul", 2, 5, lmx_vjp_matmul},
    [LMX_OP_RMS_NORM] = {"rms_norm", 1, 2, lmx_vjp_rms_norm},
    [LMX_OP_LAYER_NORM] = {"layer_norm", 1, 3, lmx_vjp_layer_norm},
    [LMX_OP_ROPE] = {"rope", 2, 2, lmx_vjp_rope},
    [LMX_OP_ATTENTION] = {"attention", 3, 3, lmx_vjp_attention},
    [LMX_OP_ADD] = {"add", 2, 2, lmx_vjp_binary},
    [LMX_OP_MUL] = {"mul", 2, 2, lmx_vjp_binary},
    [LMX_OP_SCALE] = {"scale", 1, 1, lmx_vjp_unary},
    [LMX_OP_ACT] = {"act", 1, 2, lmx_vjp_unary},
    [LMX_OP_SOFTCAP] = {"softcap", 1, 1, lmx_vjp_unary},
    [LMX_OP_COPY] = {"copy", 1, 1, lmx_vjp_unary},
    [LMX_OP_SOFTMAX] = {"softmax", 1, 1, lmx_vjp_softmax},
    [LMX_OP_CROSS_ENTROPY] = {"cross_entropy", 2, 3, lmx_vjp_cross_entropy},
    [LMX_OP_ADD_RMS_NORM] = {"add_rms_norm", 2, 3, NULL},
    [LMX_OP_ROPE_KV] = {"rope_kv", 5, 5, NULL},
    [LMX_OP_MATMUL_ACC] = {"matmul_acc", 2, 2, lmx_vjp_matmul},
};

static lmx_status shape_err(const char *op, const char *what, const lmx_array *a, const lmx_array *b) {
    char sa[64], sb[64];
    return lmx_err(LMX_ERR_SHAPE, "%s: %s: %s vs %s", op, what, lmx_shape_str(a, sa, sizeof sa),
                   b ? lmx_shape_str(b, sb, sizeof sb) : "-");
}

static int64_t rows_of(const lmx_array *a) { return a->ndim ? lmx_array_numel(a) / a->shape[a->ndim - 1] : 1; }
static int64_t cols_of(const lmx_array *a) { return a->ndim ? a->shape[a->ndim - 1] : 1; }

static lmx_node node(lmx_op op, lmx_array *out, const lmx_array *a, const lmx_array *b, const lmx_array *c) {
    lmx_node n;
    memset(&n, 0, sizeof n);
    n.op = op;
    n.out = out;
    n.src[0] = a;
    n.src[1] = b;
    n.src[2] = c;
    return n;
}

/* Checks the scales/biases of a quantized 2-D weight w [N, K]. */
static lmx_status check_qparams(const char *op, const lmx_array *w, const lmx_array *scales,
                                const lmx_array *biases, int group) {
    const lmx_dtype_traits *wt = lmx_dtype_info(w->dtype);
    if (!wt->needs_scales) {
        if (scales || biases) return shape_err(op, "scales given for a self-contained weight dtype", w, scales);
        return LMX_OK;
    }
    if (!scales) return lmx_err(LMX_ERR_SHAPE, "%s: weight of dtype %s needs scales", op, wt->name);
    if (group <= 0 || w->shape[1] % group || scales->ndim != 2 || scales->shape[0] != w->shape[0] ||
        scales->shape[1] != w->shape[1] / group || !lmx_array_is_contiguous(scales))
        return shape_err(op, "scales vs weight/group", scales, w);
    if (biases && (biases->ndim != 2 || biases->shape[0] != scales->shape[0] ||
                   biases->shape[1] != scales->shape[1] || !lmx_array_is_contiguous(biases)))
        return shape_err(op, "biases vs scales", biases, scales);
    return LMX_OK;
}

lmx_status lmx_get_rows_q(lmx_exec *ex, lmx_array *out, const lmx_array *table, const lmx_array *ids,
                          const lmx_array *scales, const lmx_array *biases, int group_size) {
    if (table->ndim != 2 || ids->dtype != LMX_I32 || out->dtype != LMX_F32 ||
        lmx_array_numel(ids) != rows_of(out) || cols_of(out) != table->shape[1])
        return shape_err("get_rows", "table/ids/out", table, out);
    LMX_TRY(check_qparams("get_rows", table, scales, biases, group_size));
    lmx_node n = node(LMX_OP_GET_ROWS, out, table, ids, scales);
    n.src[3] = biases;
    n.ip[0] = group_size;
    return lmx_exec_node(ex, &n);
}

lmx_status lmx_get_rows(lmx_exec *ex, lmx_array *out, const lmx_array *table, const lmx_array *ids) {
    return lmx_get_rows_q(ex, out, table, ids, NULL, NULL, 0);
}

lmx_status lmx_matmul_q(lmx_exec *ex, lmx_array *out, const lmx_array *x, const lmx_array *w,
                        const lmx_array *bias, const lmx_array *scales, const lmx_array *biases,
                        int group_size) {
    if (w->ndim != 2 || cols_of(x) != w->shape[1] || rows_of(out) != rows_of(x) ||
        cols_of(out) != w->shape[0] || x->dtype != LMX_F32 || out->dtype != LMX_F32)
        return shape_err("matmul", "x vs w", x, w);
    if (bias && lmx_array_numel(bias) != w->shape[0]) return shape_err("matmul", "bias", bias, w);
    LMX_TRY(check_qparams("matmul", w, scales, biases, group_size));
    lmx_node n = node(LMX_OP_MATMUL, out, x, w, bias);
    n.src[3] = scales;
    n.src[4] = biases;
    n.ip[0] = group_size;
    return lmx_exec_node(ex, &n);
}

lmx_status lmx_matmul(lmx_exec *ex, lmx_array *out, const lmx_array *x, const lmx_array *w,
                      const lmx_array *bias) {
    return lmx_matmul_q(ex, out, x, w, bias, NULL, NULL, 0);
}

lmx_status lmx_matmul_acc(lmx_exec *ex, lmx_array *out, const lmx_array *x, const lmx_array *w, float scale) {
    if (w->ndim != 2 || w->dtype != LMX_F32 || cols_of(x) != w->shape[1] || rows_of(out) != rows_of(x) ||
        cols_of(out) != w->shape[0] || x->dtype != LMX_F32 || out->dtype != LMX_F32 ||
        !lmx_array_is_contiguous(out))
        return shape_err("matmul_acc", "x vs w (f32, out contiguous)", x, w);
    lmx_node n = node(LMX_OP_MATMUL_ACC, out, x, w, NULL);
    n.fp[0] = scale;
    return lmx_exec_node(ex, &n);
}

lmx_status lmx_rms_norm(lmx_exec *ex, lmx_array *out, const lmx_array *x, const lmx_array *w,
                        float eps, bool add_one) {
    if (lmx_array_numel(out) != lmx_array_numel(x) || (w && lmx_array_numel(w) != cols_of(x)))
        return shape_err("rms_norm", "x vs weight", x, w);
    lmx_node n = node(LMX_OP_RMS_NORM, out, x, w, NULL);
    n.fp[0] = eps;
    n.ip[0] = add_one;
    return lmx_exec_node(ex, &n);
}

lmx_status lmx_layer_norm(lmx_exec *ex, lmx_array *out, const lmx_array *x, const lmx_array *w,
                          const lmx_array *b, float eps) {
    if (lmx_array_numel(out) != lmx_array_numel(x) || (w && lmx_array_numel(w) != cols_of(x)) ||
        (b && lmx_array_numel(b) != cols_of(x)))
        return shape_err("layer_norm", "x vs weight", x, w);
    lmx_node n = node(LMX_OP_LAYER_NORM, out, x, w, b);
    n.fp[0] = eps;
    return lmx_exec_node(ex, &n);
}

lmx_status lmx_rope_rows(lmx_exec *ex, lmx_array *out, const lmx_array *x, const lmx_array *inv_freq,
                         int64_t pos0, int64_t period, int dims, bool traditional, float mscale) {
    if (x->ndim != 3 || dims <= 0 || dims > x->shape[2] || dims % 2 || period < 0 || period > INT32_MAX ||
        lmx_array_numel(inv_freq) != dims / 2 || lmx_array_numel(out) != lmx_array_numel(x))
        return shape_err("rope", "x vs inv_freq", x, inv_freq);
    lmx_node n = node(LMX_OP_ROPE, out, x, inv_freq, NULL);
    n.ip[0] = (int32_t)pos0;
    n.ip[1] = dims;
    n.ip[2] = traditional;
    n.ip[3] = (int32_t)period;
    n.fp[0] = mscale;
    return lmx_exec_node(ex, &n);
}

lmx_status lmx_rope(lmx_exec *ex, lmx_array *out, const lmx_array *x, const lmx_array *inv_freq,
                    int64_t pos0, int dims, bool traditional, float mscale) {
    return lmx_rope_rows(ex, out, x, inv_freq, pos0, 0, dims, traditional, mscale);
}

lmx_status lmx_add_rms_norm(lmx_exec *ex, lmx_array *out, lmx_array *x, const lmx_array *d, const lmx_array *w,
                            float eps, bool add_one) {
    if (lmx_array_numel(out) != lmx_array_numel(x) || lmx_array_numel(d) != lmx_array_numel(x) ||
        rows_of(d) != rows_of(x) || (w && lmx_array_numel(w) != cols_of(x)))
        return shape_err("add_rms_norm", "x vs d", x, d);
    lmx_node n = node(LMX_OP_ADD_RMS_NORM, out, x, d, w);
    n.fp[0] = eps;
    n.ip[0] = add_one;
    return lmx_exec_node(ex, &n);
}

lmx_status lmx_rope_kv(lmx_exec *ex, lmx_array *q, lmx_array *k, const lmx_array *v, const lmx_array *inv_freq,
                       int64_t pos0, int dims, bool traditional, float mscale, lmx_array *kc, lmx_array *vc) {
    if (q->ndim != 3 || k->ndim != 3 || dims <= 0 || dims > q->shape[2] || dims % 2 || k->shape[2] != q->shape[2] ||
        k->shape[0] != q->shape[0] || lmx_array_numel(inv_freq) != dims / 2 ||
        lmx_array_numel(v) != lmx_array_numel(k) || rows_of(v) != k->shape[0] ||
        lmx_array_numel(kc) != lmx_array_numel(k) || lmx_array_numel(vc) != lmx_array_numel(v) ||
        rows_of(kc) != k->shape[0] || rows_of(vc) != k->shape[0] || kc->dtype != vc->dtype ||
        !lmx_array_is_contiguous(q) || !lmx_array_is_contiguous(k) || !lmx_array_is_contiguous(v))
        return shape_err("rope_kv", "q vs k", q, k);
    lmx_node n = node(LMX_OP_ROPE_KV, kc, q, k, v);
    n.src[3] = inv_freq;
    n.src[4] = vc;
    n.ip[0] = (int32_t)pos0;
    n.ip[1] = dims;
    n.ip[2] = traditional;
    n.fp[0] = mscale;
    return lmx_exec_node(ex, &n);
}

lmx_status lmx_attention_rows(lmx_exec *ex, lmx_array *out, const lmx_array *q, const lmx_array *k,
                              const lmx_array *v, int rows, int64_t pos0, float scale, float softcap, int window) {
    if (rows < 1 || q->ndim != 3 || k->ndim != 3 || v->ndim != 3 || q->shape[0] % rows || k->shape[0] % rows ||
        k->shape[2] != q->shape[2] || k->shape[1] == 0 || q->shape[1] % k->shape[1] || v->shape[1] != k->shape[1] ||
        pos0 + q->shape[0] / rows > k->shape[0] / rows || v->shape[0] != k->shape[0] ||
        rows_of(out) != q->shape[0] || cols_of(out) != q->shape[1] * v->shape[2])
        return shape_err("attention", "q vs k cache (per row)", q, k);
    lmx_node n = node(LMX_OP_ATTENTION, out, q, k, v);
    n.ip[0] = (int32_t)pos0;
    n.ip[1] = window;
    n.ip[2] = rows > 1 ? rows : 0;
    n.fp[0] = scale;
    n.fp[1] = softcap;
    return lmx_exec_node(ex, &n);
}

lmx_status lmx_attention(lmx_exec *ex, lmx_array *out, const lmx_array *q, const lmx_array *k,
                         const lmx_array *v, int64_t pos0, float scale, float softcap, int window) {
    return lmx_attention_rows(ex, out, q, k, v, 1, pos0, scale, softcap, window);
}

static lmx_status binary(lmx_exec *ex, lmx_op op, const char *name, lmx_array *out,
                         const lmx_array *a, const lmx_array *b) {
    int64_t na = lmx_array_numel(a), nb = lmx_array_numel(b);
    if (lmx_array_numel(out) != na || (nb != na && nb != cols_of(a)))
        return shape_err(name, "a vs b", a, b);
    lmx_node n = node(op, out, a, b, NULL);
    return lmx_exec_node(ex, &n);
}

lmx_status lmx_add(lmx_exec *ex, lmx_array *out, const lmx_array *a, const lmx_array *b) {
    return binary(ex, LMX_OP_ADD, "add", out, a, b);
}

lmx_status lmx_mul(lmx_exec *ex, lmx_array *out, const lmx_array *a, const lmx_array *b) {
    return binary(ex, LMX_OP_MUL, "mul", out, a, b);
}

lmx_status lmx_scale(lmx_exec *ex, lmx_array *out, const lmx_array *a, float s) {
    if (lmx_array_numel(out) != lmx_array_numel(a)) return shape_err("scale", "a vs out", a, out);
    lmx_node n = node(LMX_OP_SCALE, out, a, NULL, NULL);
    n.fp[0] = s;
    return lmx_exec_node(ex, &n);
}

lmx_status lmx_act(lmx_exec *ex, lmx_array *out, const lmx_array *a, const lmx_array *b, lmx_act_kind act) {
    if (a->ndim != 2 || rows_of(out) != a->shape[0] || cols_of(out) != a->shape[1] ||
        (b && (b->ndim != 2 || b->shape[0] != a->shape[0] || b->shape[1] != a->shape[1])))
        return shape_err("act", "a vs b", a, b);
    lmx_node n = node(LMX_OP_ACT, out, a, b, NULL);
    n.ip[0] = act;
    return lmx_exec_node(ex, &n);
}

lmx_status lmx_softcap(lmx_exec *ex, lmx_array *out, const lmx_array *a, float cap) {
    if (lmx_array_numel(out) != lmx_array_numel(a) || !(cap > 0)) return shape_err("softcap", "a vs out", a, out);
    lmx_node n = node(LMX_OP_SOFTCAP, out, a, NULL, NULL);
    n.fp[0] = cap;
    return lmx_exec_node(ex, &n);
}

lmx_status lmx_copy(lmx_exec *ex, lmx_array *out, const lmx_array *a) {
    if (rows_of(out) != rows_of(a) || cols_of(out) != cols_of(a)) return shape_err("copy", "a vs out", a, out);
    lmx_node n = node(LMX_OP_COPY, out, a, NULL, NULL);
    return lmx_exec_node(ex, &n);
}

lmx_status lmx_softmax(lmx_exec *ex, lmx_array *out, const lmx_array *a) {
    if (lmx_array_numel(out) != lmx_array_numel(a) || a->dtype != LMX_F32) return shape_err("softmax", "a vs out", a, out);
    lmx_node n = node(LMX_OP_SOFTMAX, out, a, NULL, NULL);
    return lmx_exec_node(ex, &n);
}

void lmx_array_cols(lmx_array *dst, const lmx_array *src, int64_t c0, int64_t n) {
    *dst = *src;
    dst->buf = NULL; /* borrowed view: valid while src lives */
    dst->ndim = 2;
    dst->shape[0] = src->ndim == 2 ? src->shape[0] : lmx_array_numel(src) / src->shape[src->ndim - 1];
    dst->shape[1] = n;
    dst->strides[0] = src->strides[src->ndim - 2 < 0 ? 0 : src->ndim - 2];
    dst->strides[1] = 1;
    dst->data = (uint8_t *)src->data + lmx_dtype_bytes(src->dtype, c0);
}

lmx_status lmx_exec_node(lmx_exec *ex, const lmx_node *n) {
    lmx_backend *b = ex->backend;
    lmx_kernel_fn k = b->kernels[n->op];
    if (!k || (b->supports && !b->supports(b, n)))
        return lmx_err(LMX_ERR_UNSUPPORTED, "%s: op %s not supported for these dtypes", b->name,
                       lmx_op_defs[n->op].name);
    LMX_TRY(k(n, b->pool));
    return ex->tape ? lmx_tape_record_on(ex->tape, b, n) : LMX_OK;
}
