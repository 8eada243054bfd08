/* cpu_vjp_elementwise.c - vjps of the element-wise ops, RoPE and softmax,
 * threaded over rows (column sums over columns), plus the CPU backend's
 * vjp table.
 *
 * Every element is computed with the reference's arithmetic (src/core/
 * vjp.c) - so the results are equal bit for bit - but inputs are read in
 * place (f32 rows, contiguous or a row-strided column view such as one half
 * of a fused gate_up output) instead of through dense copies, SiLU's two
 * expf per element are one, and RoPE's cos/sin are computed once per
 * position instead of once per head. Other dtypes go to the reference. */
#include "backend/cpu/cpu_vjp.h"
#include "core/op_rows.h"

#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

bool lmx_vjp_rows_f32(const lmx_array *a, int64_t *R, int64_t *C, int64_t *rs) {
    /* f32 at a 4-byte aligned address: an mmapped weight may sit at any offset (reference path) */
    if (a->dtype != LMX_F32 || a->ndim < 1 || ((uintptr_t)a->data & 3)) return false;
    *C = a->shape[a->ndim - 1];
    *R = *C ? lmx_array_numel(a) / *C : 0;
    if (lmx_array_is_contiguous(a)) {
        *rs = *C;
        return true;
    }
    if (a->ndim != 2 || a->strides[1] != 1) return false;
    *rs = a->strides[0];
    return true;
}

static double serial_ns = 20000.0; /* below ~20 us of work, one thread */

void lmx_vjp_set_serial_ns(double ns) { serial_ns = ns; }

bool lmx_vjp_inline(double work) { return work < serial_ns; }

void lmx_vjp_pool_run(lmx_pool *pool, lmx_pool_fn fn, void *job, double work) {
    if (lmx_vjp_inline(work))
        fn(0, 1, job);
    else
        lmx_pool_run(pool, fn, job);
}

void lmx_vjp_chunks_init(lmx_vjp_chunks *c, int64_t n, const lmx_pool *pool, int per_thread, int64_t min_chunk) {
    int64_t want = (int64_t)lmx_pool_size(pool) * per_thread, ch = want > 0 ? (n + want - 1) / want : n;
    c->n = n;
    c->chunk = ch < min_chunk ? min_chunk : ch < 1 ? 1 : ch;
    atomic_init(&c->next, 0);
}

bool lmx_vjp_chunks_next(lmx_vjp_chunks *c, int64_t *lo, int64_t *hi) {
    int64_t i = atomic_fetch_add_explicit(&c->next, 1, memory_order_relaxed);
    if (i * c->chunk >= c->n) return false;
    *lo = i * c->chunk;
    *hi = *lo + c->chunk < c->n ? *lo + c->chunk : c->n;
    return true;
}

/* ---- SCALE, SOFTCAP, ACT, COPY -------------------------------------------- */

typedef struct {
    const lmx_node *n;
    const float *g, *a, *b; /* a/b: NULL when not read */
    int64_t R, C, as, bs;
    float *da, *db;
    lmx_vjp_chunks ch; /* rows */
} un_job;

static void unary_rows(int ith, int nth, void *arg) {
    un_job *j = arg;
    const lmx_node *n = j->n;
    int64_t lo, hi, C = j->C;
    int act = n->ip[0];
    (void)ith, (void)nth;
    while (lmx_vjp_chunks_next(&j->ch, &lo, &hi))
    for (int64_t r = lo; r < hi; r++) {
        const float *g = j->g + r * C, *a = j->a ? j->a + r * j->as : NULL, *b = j->b ? j->b + r * j->bs : NULL;
        float *da = j->da ? j->da + r * C : NULL, *db = j->db ? j->db + r * C : NULL;
        switch (n->op) {
        case LMX_OP_SCALE:
            for (int64_t c = 0; c < C && da; c++) da[c] += g[c] * n->fp[0];
            break;
        case LMX_OP_COPY:
            for (int64_t c = 0; c < C && da; c++) da[c] += g[c];
            break;
        case LMX_OP_SOFTCAP:
            for (int64_t c = 0; c < C && da; c++) {
                float t = tanhf(a[c] / n->fp[0]);
                da[c] += g[c] * (1.0f - t * t);
            }
            break;
        default:
            if (act == LMX_ACT_SILU) { /* act_f and act_df of vjp.c sharing one expf */
                for (int64_t c = 0; c < C; c++) {
                    float x = a[c], e = expf(-x), s = 1.0f / (1.0f + e);
                    if (da) da[c] += g[c] * (s * (1.0f + x * (1.0f - s))) * (b ? b[c] : 1.0f);
                    if (db) db[c] += g[c] * (x / (1.0f + e));
                }
            } else {
                for (int64_t c = 0; c < C; c++) {
                    if (da) da[c] += g[c] * lmx_vjp_act_grad(a[c], act) * (b ? b[c] : 1.0f);
                    if (db) db[c] += g[c] * lmx_vjp_act(a[c], act);
                }
            }
        }
    }
}

lmx_status lmx_fast_vjp_unary(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool) {
    const lmx_array *a = n->src[0], *b = n->op == LMX_OP_ACT ? n->src[1] : NULL;
    un_job j = {.n = n, .g = dout->data};
    bool reads_a = n->op == LMX_OP_SOFTCAP || n->op == LMX_OP_ACT;
    int64_t R = 0, C = 0;
    if (reads_a) {
        if (!lmx_vjp_rows_f32(a, &j.R, &j.C, &j.as)) return lmx_vjp_unary(n, dout, dsrc);
        j.a = a->data;
    } else {
        j.C = a->ndim ? a->shape[a->ndim - 1] : 1;
        j.R = j.C ? lmx_array_numel(a) / j.C : 0;
    }
    if (b) {
        if (!lmx_vjp_rows_f32(b, &R, &C, &j.bs) || R != j.R || C != j.C) return lmx_vjp_unary(n, dout, dsrc);
        j.b = b->data;
    }
    j.da = dsrc[0] ? dsrc[0]->data : NULL;
    j.db = b && dsrc[1] ? dsrc[1]->data : NULL;
    lmx_vjp_chunks_init(&j.ch, j.R, pool, 8, 4);
    lmx_vjp_pool_run(pool, unary_rows, &j, (double)j.R * j.C * (reads_a ? 8.0 : 0.5));
    return LMX_OK;
}

/* ---- ADD, MUL (b the same shape or one row broadcast) --------------------- */

typedef struct {
    bool mul, bcast;
    const float *g, *a, *b; /* a/b: NULL when not read */
    int64_t R, C, as, bs;
    float *da, *db;
    lmx_vjp_chunks ch; /* rows, or columns for the broadcast row's sum */
} bin_job;

static void binary_rows(int ith, int nth, void *arg) {
    bin_job *j = arg;
    int64_t lo, hi, C = j->C;
    (void)ith, (void)nth;
    while (lmx_vjp_chunks_next(&j->ch, &lo, &hi))
    for (int64_t r = lo; r < hi; r++) {
        const float *g = j->g + r * C;
        if (j->da) {
            float *da = j->da + r * C;
            const float *b = j->mul ? j->b + (j->bcast ? 0 : r * j->bs) : NULL;
            for (int64_t c = 0; c < C; c++) da[c] += j->mul ? g[c] * b[c] : g[c];
        }
        if (j->db && !j->bcast) {
            float *db = j->db + r * C;
            const float *a = j->mul ? j->a + r * j->as : NULL;
            for (int64_t c = 0; c < C; c++) db[c] += j->mul ? g[c] * a[c] : g[c];
        }
    }
}

/* The broadcast row's gradient: a sum over rows, in row order per column. */
static void binary_bcast_cols(int ith, int nth, void *arg) {
    bin_job *j = arg;
    int64_t lo, hi, C = j->C;
    (void)ith, (void)nth;
    while (lmx_vjp_chunks_next(&j->ch, &lo, &hi))
        for (int64_t r = 0; r < j->R; r++) {
            const float *g = j->g + r * C, *a = j->mul ? j->a + r * j->as : NULL;
            for (int64_t c = lo; c < hi; c++) j->db[c] += j->mul ? g[c] * a[c] : g[c];
        }
}

lmx_status lmx_fast_vjp_binary(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool) {
    const lmx_array *a = n->src[0], *b = n->src[1];
    bin_job j = {.mul = n->op == LMX_OP_MUL, .g = dout->data};
    j.bcast = lmx_array_numel(b) != lmx_array_numel(a);
    int64_t R, C;
    if (!lmx_vjp_rows_f32(a, &j.R, &j.C, &j.as) || !lmx_vjp_rows_f32(b, &R, &C, &j.bs) || C != j.C ||
        R != (j.bcast ? 1 : j.R))
        return lmx_vjp_binary(n, dout, dsrc);
    j.a = a->data;
    j.b = b->data;
    j.da = dsrc[0] ? dsrc[0]->data : NULL;
    j.db = dsrc[1] ? dsrc[1]->data : NULL;
    double work = 0.5 * (double)j.R * j.C;
    if (j.da || (j.db && !j.bcast)) {
        lmx_vjp_chunks_init(&j.ch, j.R, pool, 8, 4);
        lmx_vjp_pool_run(pool, binary_rows, &j, work);
    }
    if (j.db && j.bcast) { /* column chunks of >= 16 floats: no cache line shared by two threads */
        lmx_vjp_chunks_init(&j.ch, j.C, pool, 4, 16);
        lmx_vjp_pool_run(pool, binary_bcast_cols, &j, work);
    }
    return LMX_OK;
}

/* ---- RoPE: the inverse rotation (reads only inv_freq) --------------------- */

typedef struct {
    const lmx_node *n;
    const float *g, *inv_freq;
    float *dx;
    int64_t T, H, hd;
    bool failed;
    lmx_vjp_chunks ch; /* positions */
} rope_job;

static void rope_rows(int ith, int nth, void *arg) {
    rope_job *j = arg;
    const lmx_node *n = j->n;
    int64_t lo, hi, H = j->H, hd = j->hd;
    int dims = n->ip[1], half = dims / 2;
    bool trad = n->ip[2];
    float ms = n->fp[0];
    float *cs = lmx_fast_scratch(0, 2 * (int64_t)half);
    if (!cs) {
        j->failed = true;
        return;
    }
    (void)ith, (void)nth;
    while (lmx_vjp_chunks_next(&j->ch, &lo, &hi))
    for (int64_t t = lo; t < hi; t++) {
        float pos = (float)lmx_rope_pos(n, t);
        for (int i = 0; i < half; i++) {
            float th = pos * j->inv_freq[i];
            cs[2 * i] = cosf(th) * ms;
            cs[2 * i + 1] = sinf(th) * ms;
        }
        for (int64_t h = 0; h < H; h++) {
            const float *g = j->g + (t * H + h) * hd;
            float *dx = j->dx + (t * H + h) * hd;
            for (int i = 0; i < half; i++) {
                float c = cs[2 * i], s = cs[2 * i + 1];
                int a = trad ? 2 * i : i, b = trad ? 2 * i + 1 : i + half;
                dx[a] += g[a] * c + g[b] * s;
                dx[b] += g[b] * c - g[a] * s;
            }
            for (int64_t i = dims; i < hd; i++) dx[i] += g[i];
        }
    }
}

lmx_status lmx_fast_vjp_rope(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool) {
    if (!dsrc[0]) return LMX_OK;
    const lmx_array *x = n->src[0], *f = n->src[1];
    if (f->dtype != LMX_F32 || !lmx_array_is_contiguous(f) || x->ndim != 3) return lmx_vjp_rope(n, dout, dsrc);
    rope_job j = {n, dout->data, f->data, dsrc[0]->data, x->shape[0], x->shape[1], x->shape[2], false, {0}};
    lmx_vjp_chunks_init(&j.ch, j.T, pool, 8, 1);
    lmx_vjp_pool_run(pool, rope_rows, &j, (double)j.T * (j.H * j.hd + 20.0 * n->ip[1]));
    return j.failed ? lmx_err(LMX_ERR_NOMEM, "rope vjp: out of memory") : LMX_OK;
}

/* ---- softmax: y recomputed per row, da = y·(g - Σ g·y) --------------------- */

typedef struct {
    const float *a, *g;
    float *da;
    int64_t R, C, as;
    bool failed;
    lmx_vjp_chunks ch; /* rows */
} sm_job;

static void softmax_rows(int ith, int nth, void *arg) {
    sm_job *j = arg;
    int64_t lo, hi, C = j->C;
    float *y = lmx_fast_scratch(0, C);
    if (!y) {
        j->failed = true;
        return;
    }
    (void)ith, (void)nth;
    while (lmx_vjp_chunks_next(&j->ch, &lo, &hi))
    for (int64_t r = lo; r < hi; r++) {
        const float *ar = j->a + r * j->as, *gr = j->g + r * C;
        float mx = -INFINITY;
        double sum = 0, dot = 0;
        for (int64_t c = 0; c < C; c++) mx = ar[c] > mx ? ar[c] : mx;
        for (int64_t c = 0; c < C; c++) sum += (y[c] = expf(ar[c] - mx));
        for (int64_t c = 0; c < C; c++) {
            y[c] = (float)(y[c] / sum);
            dot += (double)gr[c] * y[c];
        }
        float *da = j->da + r * C;
        for (int64_t c = 0; c < C; c++) da[c] += y[c] * (float)(gr[c] - dot);
    }
}

lmx_status lmx_fast_vjp_softmax(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool) {
    if (!dsrc[0]) return LMX_OK;
    sm_job j = {.g = dout->data, .da = dsrc[0]->data};
    if (!lmx_vjp_rows_f32(n->src[0], &j.R, &j.C, &j.as)) return lmx_vjp_softmax(n, dout, dsrc);
    j.a = n->src[0]->data;
    lmx_vjp_chunks_init(&j.ch, j.R, pool, 8, 1);
    lmx_vjp_pool_run(pool, softmax_rows, &j, 8.0 * (double)j.R * j.C);
    return j.failed ? lmx_err(LMX_ERR_NOMEM, "softmax vjp: out of memory") : LMX_OK;
}

/* ---- the table ------------------------------------------------------------ */

/* GET_ROWS keeps the reference (the embedding is frozen in fine-tuning). */
static const lmx_vjp_kernel_fn cpu_vjps[LMX_OP_COUNT] = {
    [LMX_OP_MATMUL] = lmx_fast_vjp_matmul,
    [LMX_OP_MATMUL_ACC] = lmx_fast_vjp_matmul_acc,
    [LMX_OP_RMS_NORM] = lmx_fast_vjp_rms_norm,
    [LMX_OP_LAYER_NORM] = lmx_fast_vjp_layer_norm,
    [LMX_OP_ROPE] = lmx_fast_vjp_rope,
    [LMX_OP_ATTENTION] = lmx_fast_vjp_attention,
    [LMX_OP_ADD] = lmx_fast_vjp_binary,
    [LMX_OP_MUL] = lmx_fast_vjp_binary,
    [LMX_OP_SCALE] = lmx_fast_vjp_unary,
    [LMX_OP_ACT] = lmx_fast_vjp_unary,
    [LMX_OP_SOFTCAP] = lmx_fast_vjp_unary,
    [LMX_OP_COPY] = lmx_fast_vjp_unary,
    [LMX_OP_SOFTMAX] = lmx_fast_vjp_softmax,
    [LMX_OP_CROSS_ENTROPY] = lmx_fast_vjp_cross_entropy,
};

const lmx_vjp_kernel_fn *lmx_cpu_vjps(void) { return lmx_simd() ? cpu_vjps : NULL; }
