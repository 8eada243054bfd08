/* cpu_vjp_attention.c - the attention vjp over whole [T, H, hd] blocks as
 * small GEMMs (lmx_vjp_gemm) per query head, threads taking whole kv heads.
 *
 * Same recomputation as the reference (src/core/vjp_attention.c), for each
 * query head h (kv head kh) and a block of up to TB query rows at a time:
 *   S  = scale·Q_h·K_khᵀ (soft-capped), P = softmax(S) per row   GEMM, rows
 *   dP = dO_h·V_khᵀ,  dS = P·(1 - (S/cap)²)·(dP - Σ P·dP)·scale   GEMM, rows
 *   dQ_h += dS·K_kh,  dK_kh += dSᵀ·Q_h,  dV_kh += Pᵀ·dO_h           GEMMs
 * Masked entries (future keys, outside the window) of P and dS are zero;
 * a block only spans the keys its rows can see, so the causal triangle
 * costs about half the full square. Threads claim kv heads (a head's G
 * query heads and its dK/dV rows are done by one thread), so results do
 * not depend on the thread count. Memory: two TB x S f32 blocks per thread. */
#include "backend/cpu/cpu_vjp.h"
#include "core/op_rows.h"

#include <math.h>
#include <string.h>

#define TB 48 /* query rows per block: a multiple of every table's MR (12, 6, 4) */

typedef struct {
    const lmx_simd_kernels *kt;
    const lmx_node *n;
    const float *g;
    float *dq, *dk, *dv;
    bool failed;
    lmx_vjp_chunks ch; /* kv heads */
} av_job;

/* exp(x) for x <= 0, vectorisable (the same polynomial as the sampler's
 * log-softmax, src/generate/sampler.c): 2^(x·log2 e) as an exponent-bit
 * power times a degree-6 polynomial on [-ln2/2, ln2/2]; relative error
 * < 2e-7 near 0 and < 1e-6 down to x = -20 (the rounding of x·log2 e).
 * libm's expf per score was a third of this vjp at small head sizes. */
static inline float exp_nonpos(float x) {
    if (!(x >= -87.0f)) x = -87.0f; /* also NaN: the int conversion below must see a number */
    float t = x * 1.44269504088896341f;
    int32_t k = (int32_t)(t - 0.5f); /* round to nearest for t <= 0 */
    float f = (t - (float)k) * 0.69314718055994531f;
    float p = 1.0f + f * (1.0f + f * (0.5f + f * (1.0f / 6 + f * (1.0f / 24 + f * (1.0f / 120 + f * (1.0f / 720))))));
    int32_t bits = (k + 127) << 23;
    float sc;
    memcpy(&sc, &bits, 4);
    return p * sc;
}

/* One query row over its n visible keys: on entry p = q·k (unscaled) and
 * d = dO·v; on exit p = softmax(s) with s = scale·q·k (soft-capped) and
 * d = p·(1 - (s/cap)²)·(dO·v - Σ p·dO·v)·scale. Sums in f32 with 8
 * partial accumulators (vectorised; the reference sums in f64 in order:
 * covered by the attention tolerance of test_grad.c). */
static void softmax_grad_row(float *p, float *d, float *xs, int64_t n, float scale, float cap) {
    float acc[8], sum = 0, pdp = 0, mx = -INFINITY;
    int64_t j;
    for (j = 0; j < n; j++) xs[j] = p[j] * scale;
    if (cap > 0)
        for (j = 0; j < n; j++) xs[j] = cap * tanhf(xs[j] / cap);
    for (int l = 0; l < 8; l++) acc[l] = -INFINITY;
    for (j = 0; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++) acc[l] = xs[j + l] > acc[l] ? xs[j + l] : acc[l];
    for (; j < n; j++) mx = xs[j] > mx ? xs[j] : mx;
    for (int l = 0; l < 8; l++) mx = acc[l] > mx ? acc[l] : mx, acc[l] = 0;
    for (j = 0; j < n; j++) p[j] = exp_nonpos(xs[j] - mx);
    for (j = 0; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++) acc[l] += p[j + l];
    for (; j < n; j++) sum += p[j];
    for (int l = 0; l < 8; l++) sum += acc[l], acc[l] = 0;
    float inv = 1.0f / sum;
    for (j = 0; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++) {
            p[j + l] *= inv;
            acc[l] += p[j + l] * d[j + l];
        }
    for (; j < n; j++) {
        p[j] *= inv;
        pdp += p[j] * d[j];
    }
    for (int l = 0; l < 8; l++) pdp += acc[l];
    if (cap > 0)
        for (j = 0; j < n; j++) d[j] = p[j] * (1.0f - (xs[j] / cap) * (xs[j] / cap)) * (d[j] - pdp) * scale;
    else
        for (j = 0; j < n; j++) d[j] = p[j] * (d[j] - pdp) * scale;
}

/* One block: rows [t0, t1) of query head h, keys [jlo, jhi). P, dS: nt x ns
 * blocks; xs: ns floats (a row's capped scores). */
static bool attn_block(const av_job *job, int64_t h, int64_t t0, int64_t t1, int64_t jlo, int64_t jhi, float *P,
                       float *dS, float *xs) {
    const lmx_node *n = job->n;
    const lmx_array *q = n->src[0], *k = n->src[1], *v = n->src[2];
    int64_t H = q->shape[1], hd = q->shape[2], Hkv = k->shape[1], vd = v->shape[2], kh = h / (H / Hkv);
    int64_t pos0 = n->ip[0], nt = t1 - t0, ns = jhi - jlo;
    int window = n->ip[1];
    float scale = n->fp[0], cap = n->fp[1];
    const float *qh = (const float *)q->data + t0 * q->strides[0] + h * q->strides[1];
    const float *kk = (const float *)k->data + jlo * k->strides[0] + kh * k->strides[1];
    const float *vv = (const float *)v->data + jlo * v->strides[0] + kh * v->strides[1];
    const float *gh = job->g + t0 * (H * vd) + h * vd;
    lmx_vjp_gemm s = {.kt = job->kt, .M = nt, .N = ns, .K = hd, .a = qh, .ars = q->strides[0], .acs = 1, .b = kk,
                      .bdt = LMX_F32, .brs = k->strides[0], .btrans = true, .c = P, .crs = ns, .overwrite = true};
    lmx_vjp_gemm dp = {.kt = job->kt, .M = nt, .N = ns, .K = vd, .a = gh, .ars = H * vd, .acs = 1, .b = vv,
                       .bdt = LMX_F32, .brs = v->strides[0], .btrans = true, .c = dS, .crs = ns, .overwrite = true};
    if (!lmx_vjp_gemm_serial(&s) || !lmx_vjp_gemm_serial(&dp)) return false;
    for (int64_t i = 0; i < nt; i++) {
        int64_t pos = pos0 + t0 + i, j0 = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
        int64_t a = j0 - jlo, b = pos - jlo + 1; /* the row's visible keys in the block */
        float *p = P + i * ns, *d = dS + i * ns;
        softmax_grad_row(p + a, d + a, xs, b - a, scale, cap);
        for (int64_t j = 0; j < a; j++) p[j] = d[j] = 0;
        for (int64_t j = b; j < ns; j++) p[j] = d[j] = 0;
    }
    bool ok = true;
    if (job->dq) {
        lmx_vjp_gemm g = {.kt = job->kt, .M = nt, .N = hd, .K = ns, .a = dS, .ars = ns, .acs = 1, .b = kk,
                          .bdt = LMX_F32, .brs = k->strides[0], .c = job->dq + t0 * (H * hd) + h * hd, .crs = H * hd};
        ok = ok && lmx_vjp_gemm_serial(&g);
    }
    if (job->dk) {
        lmx_vjp_gemm g = {.kt = job->kt, .M = ns, .N = hd, .K = nt, .a = dS, .ars = 1, .acs = ns, .b = qh,
                          .bdt = LMX_F32, .brs = q->strides[0], .c = job->dk + jlo * (Hkv * hd) + kh * hd,
                          .crs = Hkv * hd};
        ok = ok && lmx_vjp_gemm_serial(&g);
    }
    if (job->dv) {
        lmx_vjp_gemm g = {.kt = job->kt, .M = ns, .N = vd, .K = nt, .a = P, .ars = 1, .acs = ns, .b = gh,
                          .bdt = LMX_F32, .brs = H * vd, .c = job->dv + jlo * (Hkv * vd) + kh * vd, .crs = Hkv * vd};
        ok = ok && lmx_vjp_gemm_serial(&g);
    }
    return ok;
}

static void attn_vjp_task(int ith, int nth, void *arg) {
    av_job *job = arg;
    const lmx_node *n = job->n;
    const lmx_array *q = n->src[0], *k = n->src[1];
    int64_t T = q->shape[0], H = q->shape[1], Hkv = k->shape[1], G = H / Hkv, pos0 = n->ip[0], S = pos0 + T;
    int window = n->ip[1];
    float *P = lmx_fast_scratch(3, TB * S), *dS = lmx_fast_scratch(4, TB * S), *xs = lmx_fast_scratch(5, S);
    if (!P || !dS || !xs) {
        job->failed = true;
        return;
    }
    int64_t lo, hi;
    (void)ith, (void)nth;
    while (lmx_vjp_chunks_next(&job->ch, &lo, &hi))
    for (int64_t kh = lo; kh < hi; kh++)
        for (int64_t h = kh * G; h < (kh + 1) * G; h++)
            for (int64_t t0 = 0; t0 < T; t0 += TB) {
                int64_t t1 = t0 + TB < T ? t0 + TB : T, jlo = 0;
                if (window > 0 && pos0 + t0 - window + 1 > 0) jlo = pos0 + t0 - window + 1;
                if (!attn_block(job, h, t0, t1, jlo, pos0 + t1, P, dS, xs)) {
                    job->failed = true;
                    return;
                }
            }
}

static bool handled(const lmx_node *n) {
    const lmx_array *q = n->src[0], *k = n->src[1], *v = n->src[2];
    if (q->dtype != LMX_F32 || k->dtype != LMX_F32 || v->dtype != LMX_F32) return false;
    if (q->ndim != 3 || k->ndim != 3 || v->ndim != 3) return false;
    if (q->strides[2] != 1 || k->strides[2] != 1 || v->strides[2] != 1) return false;
    if (((uintptr_t)q->data | (uintptr_t)k->data | (uintptr_t)v->data) & 3) return false; /* see rows_f32 */
    if (k->shape[1] <= 0 || q->shape[1] % k->shape[1] || k->shape[2] != q->shape[2]) return false;
    return k->shape[0] >= n->ip[0] + q->shape[0] && v->shape[0] >= n->ip[0] + q->shape[0];
}

typedef struct {
    const lmx_simd_kernels *k;
    lmx_pool *pool;
} row_ctx;

static lmx_status row_vjp(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], void *ctx) {
    const row_ctx *c = ctx;
    return lmx_fast_vjp_attention_with(c->k, n, dout, dsrc, c->pool);
}

lmx_status lmx_fast_vjp_attention_with(const lmx_simd_kernels *k, const lmx_node *n, const lmx_array *dout,
                                       lmx_array *dsrc[], lmx_pool *pool) {
    if (lmx_attn_rows(n) > 1) { /* batch rows one after another (core/op_rows.h) */
        row_ctx c = {k, pool};
        return lmx_attn_rows_vjp(n, dout, dsrc, row_vjp, &c);
    }
    if (!k || !handled(n)) return lmx_vjp_attention(n, dout, dsrc);
    av_job job = {k, n, dout->data, dsrc[0] ? dsrc[0]->data : NULL, dsrc[1] ? dsrc[1]->data : NULL,
                  dsrc[2] ? dsrc[2]->data : NULL, false, {0}};
    const lmx_array *q = n->src[0];
    /* chunks of kv heads whose slice of a dk/dv row fills a cache line (16 floats): with small heads,
       single ones would put two threads' writes in every line */
    int64_t hd = q->shape[2] < n->src[2]->shape[2] ? q->shape[2] : n->src[2]->shape[2];
    lmx_vjp_chunks_init(&job.ch, n->src[1]->shape[1], pool, 4, hd >= 16 ? 1 : (16 + hd - 1) / hd);
    double T = (double)q->shape[0], S = T + n->ip[0];
    lmx_vjp_pool_run(pool, attn_vjp_task, &job, T * S * (double)q->shape[1] * (q->shape[2] / 4.0 + 10.0));
    return job.failed ? lmx_err(LMX_ERR_NOMEM, "attention vjp: out of memory") : LMX_OK;
}

lmx_status lmx_fast_vjp_attention(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool) {
    return lmx_fast_vjp_attention_with(lmx_simd(), n, dout, dsrc, pool);
}
