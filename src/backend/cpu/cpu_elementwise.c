/* cpu_elementwise.c - embedding rows, binary/unary elementwise ops, copy, softmax. */
#include "backend/cpu/cpu.h"

#include <math.h>

typedef struct {
    const lmx_node *n;
} ew_job;

static void run(lmx_pool *pool, lmx_pool_fn fn, const lmx_node *n) {
    ew_job j = {n};
    lmx_cpu_run(pool, fn, &j, lmx_array_numel(n->out));
}

static void get_rows_task(int ith, int nth, void *arg) {
    const lmx_node *n = ((ew_job *)arg)->n;
    const lmx_array *tab = n->src[0];
    const int32_t *ids = n->src[1]->data;
    int64_t R = lmx_array_numel(n->src[1]), D = tab->shape[1], V = tab->shape[0];
    const lmx_array *sc = n->src[2], *qb = n->src[3];
    int group = n->ip[0];
    float *sb = sc ? lmx_cpu_scratch(2 * (D / group)) : NULL;
    if (sc && !sb) return;
    int64_t lo, hi;
    lmx_split(R, ith, nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        float *o = (float *)n->out->data + r * D;
        int64_t id = ids[r];
        if (id < 0 || id >= V) { /* checked by callers; never read out of bounds */
            for (int64_t d = 0; d < D; d++) o[d] = 0;
            continue;
        }
        lmx_cpu_dequant_row(tab, id, sc, qb, group, o, sb);
    }
}

lmx_status lmx_cpu_get_rows(const lmx_node *n, lmx_pool *pool) {
    const int32_t *ids = n->src[1]->data;
    int64_t R = lmx_array_numel(n->src[1]);
    for (int64_t r = 0; r < R; r++)
        if (ids[r] < 0 || ids[r] >= n->src[0]->shape[0])
            return lmx_err(LMX_ERR_INVALID_ARG, "token id %d out of range [0, %lld)", ids[r],
                           (long long)n->src[0]->shape[0]);
    run(pool, get_rows_task, n);
    return LMX_OK;
}

/* Binary ops: a and out are 2-D row views; b is the same shape or one row. */
static void binary_task(int ith, int nth, void *arg) {
    const lmx_node *n = ((ew_job *)arg)->n;
    const lmx_array *a = n->src[0], *b = n->src[1];
    int64_t R = cpu_rows(a), C = cpu_cols(a);
    int64_t as = cpu_row_stride(a), os = cpu_row_stride(n->out);
    bool bcast = lmx_array_numel(b) != lmx_array_numel(a);
    int64_t bs = bcast ? 0 : cpu_row_stride(b);
    float *bconv = NULL;
    if (b->dtype != LMX_F32) {
        bconv = lmx_cpu_scratch(C);
        if (!bconv) return;
    }
    int64_t lo, hi;
    lmx_split(R, ith, nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        const float *ar = (const float *)a->data + r * as;
        const float *br;
        if (bconv) {
            lmx_dtype_info(b->dtype)->to_f32((const uint8_t *)b->data + lmx_dtype_bytes(b->dtype, r * bs), bconv, C);
            br = bconv;
        } else {
            br = (const float *)b->data + r * bs;
        }
        float *o = (float *)n->out->data + r * os;
        if (n->op == LMX_OP_ADD)
            for (int64_t c = 0; c < C; c++) o[c] = ar[c] + br[c];
        else
            for (int64_t c = 0; c < C; c++) o[c] = ar[c] * br[c];
    }
}

lmx_status lmx_cpu_add(const lmx_node *n, lmx_pool *pool) {
    run(pool, binary_task, n);
    return LMX_OK;
}
lmx_status lmx_cpu_mul(const lmx_node *n, lmx_pool *pool) {
    run(pool, binary_task, n);
    return LMX_OK;
}

static inline float act_f(float x, int act) {
    switch (act) {
    case LMX_ACT_SILU: return x / (1.0f + expf(-x));
    case LMX_ACT_GELU_ERF: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case LMX_ACT_GELU_TANH:
        return 0.5f * x * (1.0f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
    case LMX_ACT_RELU: return x > 0 ? x : 0;
    }
    return x;
}

static void unary_task(int ith, int nth, void *arg) {
    const lmx_node *n = ((ew_job *)arg)->n;
    const lmx_array *a = n->src[0], *b = n->op == LMX_OP_ACT ? n->src[1] : NULL;
    int64_t R = cpu_rows(a), C = cpu_cols(a);
    int64_t as = cpu_row_stride(a), os = cpu_row_stride(n->out), bs = b ? cpu_row_stride(b) : 0;
    /* Fewer rows than threads (decode: one row of the MLP width) splits the
     * columns instead, so that every thread takes part. */
    int64_t lo = 0, hi = R, c0 = 0, c1 = C;
    if (R < nth)
        lmx_split(C, ith, nth, &c0, &c1);
    else
        lmx_split(R, ith, nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        const float *ar = (const float *)a->data + r * as;
        float *o = (float *)n->out->data + r * os;
        switch (n->op) {
        case LMX_OP_SCALE:
            for (int64_t c = c0; c < c1; c++) o[c] = ar[c] * n->fp[0];
            break;
        case LMX_OP_SOFTCAP:
            for (int64_t c = c0; c < c1; c++) o[c] = n->fp[0] * tanhf(ar[c] / n->fp[0]);
            break;
        default: {
            const float *br = b ? (const float *)b->data + r * bs : NULL;
            for (int64_t c = c0; c < c1; c++) o[c] = act_f(ar[c], n->ip[0]) * (br ? br[c] : 1.0f);
        }
        }
    }
}

lmx_status lmx_cpu_scale(const lmx_node *n, lmx_pool *pool) {
    run(pool, unary_task, n);
    return LMX_OK;
}
lmx_status lmx_cpu_softcap(const lmx_node *n, lmx_pool *pool) {
    run(pool, unary_task, n);
    return LMX_OK;
}
lmx_status lmx_cpu_act(const lmx_node *n, lmx_pool *pool) {
    if ((n->src[1] && n->src[1]->dtype != LMX_F32) || n->src[0]->dtype != LMX_F32)
        return lmx_err(LMX_ERR_UNSUPPORTED, "act: inputs must be f32");
    run(pool, unary_task, n);
    return LMX_OK;
}

static void copy_task(int ith, int nth, void *arg) {
    const lmx_node *n = ((ew_job *)arg)->n;
    const lmx_array *a = n->src[0];
    lmx_array *o = n->out;
    int64_t R = cpu_rows(a), C = cpu_cols(a), as = cpu_row_stride(a), os = cpu_row_stride(o);
    const lmx_dtype_traits *ta = lmx_dtype_info(a->dtype), *to = lmx_dtype_info(o->dtype);
    float *tmp = a->dtype == LMX_F32 ? NULL : lmx_cpu_scratch(C);
    int64_t lo, hi;
    lmx_split(R, ith, nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        const uint8_t *src = (const uint8_t *)a->data + lmx_dtype_bytes(a->dtype, r * as);
        uint8_t *dst = (uint8_t *)o->data + lmx_dtype_bytes(o->dtype, r * os);
        if (a->dtype == o->dtype) {
            memcpy(dst, src, lmx_dtype_bytes(a->dtype, C));
            continue;
        }
        const float *f = (const float *)src;
        if (tmp) {
            ta->to_f32(src, tmp, C);
            f = tmp;
        }
        to->from_f32(f, dst, C);
    }
}

lmx_status lmx_cpu_copy(const lmx_node *n, lmx_pool *pool) {
    run(pool, copy_task, n);
    return LMX_OK;
}

static void softmax_task(int ith, int nth, void *arg) {
    const lmx_node *n = ((ew_job *)arg)->n;
    const lmx_array *a = n->src[0];
    int64_t R = cpu_rows(a), C = cpu_cols(a), as = cpu_row_stride(a), os = cpu_row_stride(n->out);
    int64_t lo, hi;
    lmx_split(R, ith, nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        const float *ar = (const float *)a->data + r * as;
        float *o = (float *)n->out->data + r * os;
        float mx = -INFINITY, sum = 0;
        for (int64_t c = 0; c < C; c++) mx = ar[c] > mx ? ar[c] : mx;
        for (int64_t c = 0; c < C; c++) sum += (o[c] = expf(ar[c] - mx));
        for (int64_t c = 0; c < C; c++) o[c] /= sum;
    }
}

lmx_status lmx_cpu_softmax(const lmx_node *n, lmx_pool *pool) {
    run(pool, softmax_task, n);
    return LMX_OK;
}
