/* cpu_fast_qmatmul.c - out[M,N] = x[M,K] · w[N,K]ᵀ + b for GGUF block
 * weights (Q8_0, Q4_0, Q6_K, Q4_K) through the int8-activation kernels
 * (cpu_qdot.h): x is quantized once per matmul (rows split over the pool when
 * there are many), then
 * - decode (M < LMX_QX_MIN_M): the table's matvec_qx over ranges of weight
 *   rows that threads claim as the f32 matvec does (cpu_claim.h);
 * - prefill: each claimed panel of qnr weight rows is packed once per KCQ
 *   columns (u8 + scales, L1-resident) and reused by every qmr-row tile of x.
 * Every output is computed by one thread in an order fixed by K, so results
 * do not depend on the thread count. */
#include "backend/cpu/cpu_claim.h"
#include "backend/cpu/cpu_qdot.h"

#include <stdatomic.h>

#define LMX_QX_MIN_M 4
#define KCQ 512 /* packed panel: KCQ x 32 bytes = 16 KiB + scales, inside L1 */
#define MCQ 512 /* rows of x per pass over a panel: MCQ x KCQ bytes in L2 */

typedef struct {
    const lmx_simd_kernels *k;
    const lmx_node *n;
    lmx_xq xq;
    int32_t *corr;
    _Atomic bool failed;
    _Atomic int64_t next; /* prefill: next panel */
    lmx_row_claim rows;   /* decode: weight rows (cpu_claim.h) */
} qx_job;

static bool qx_handled(const lmx_simd_kernels *k, const lmx_node *n) {
    const lmx_array *x = n->src[0], *w = n->src[1];
    if (!k->quantize_x || !lmx_int8_activations() || !lmx_qx_type(w->dtype) || n->src[3] || n->src[4]) return false;
    if (cpu_rows(x) < LMX_QX_MIN_M ? !k->matvec_qx : !(k->gemm_qx && k->pack_qx && lmx_qx_gemm_type(w->dtype)))
        return false;
    if (w->ndim != 2 || !lmx_array_is_contiguous(w) || w->shape[1] % lmx_dtype_info(w->dtype)->block) return false;
    if (x->dtype != LMX_F32 || n->out->dtype != LMX_F32 || x->ndim < 1) return false;
    return x->strides[x->ndim - 1] == 1 && n->out->strides[n->out->ndim - 1] == 1 && x->shape[x->ndim - 1] == w->shape[1];
}

static size_t up64(size_t b) { return (b + 63) & ~(size_t)63; }

/* The quantized rows and corrections live in one buffer of the calling
 * thread (scratch slot 4), shared read-only with the workers. */
static bool qx_alloc(qx_job *job, int64_t M, int64_t K, bool gemm) {
    const int64_t nb = K / 32, sub = lmx_qx_sub(job->n->src[1]->dtype);
    /* GEMM tiles read qmr rows at once: rows K bytes apart (K a multiple of
     * 4 KiB for most models) would share L1 sets, so the stride is padded
     * by one cache line. */
    const int64_t qrs = gemm ? K + 64 : K;
    size_t sz[6] = {up64((size_t)(M * qrs)), up64((size_t)(M * nb) * 4), up64((size_t)(M * nb) * 4),
                    up64((size_t)(M * nb) * 4), up64((size_t)(M * (K / 16)) * 2),
                    gemm ? up64((size_t)(M * (K / sub)) * 4) : 0};
    size_t total = 0;
    for (int i = 0; i < 6; i++) total += sz[i];
    uint8_t *p = (uint8_t *)lmx_fast_scratch(4, (int64_t)(total / 4));
    if (!p) return false;
    job->xq.K = K;
    job->xq.qrs = qrs;
    job->xq.q = (int8_t *)p, p += sz[0];
    job->xq.d = (float *)p, p += sz[1];
    job->xq.sum = (float *)p, p += sz[2];
    job->xq.s32 = (int32_t *)p, p += sz[3];
    job->xq.s16 = (int16_t *)p, p += sz[4];
    job->corr = gemm ? (int32_t *)p : NULL;
    return true;
}

static void quantize_rows(qx_job *job, int64_t lo, int64_t hi) {
    const lmx_array *x = job->n->src[0];
    const int64_t K = job->xq.K, nb = K / 32, xs = cpu_row_stride(x);
    for (int64_t m = lo; m < hi; m++)
        job->k->quantize_x((const float *)x->data + m * xs, K, job->xq.q + m * job->xq.qrs, job->xq.d + m * nb,
                           job->xq.sum + m * nb, job->xq.s32 + m * nb, job->xq.s16 + m * (K / 16));
    if (job->corr) lmx_qx_corr(&job->xq, lo, hi, job->n->src[1]->dtype, job->corr);
}

static void quantize_task(int ith, int nth, void *arg) {
    qx_job *job = arg;
    int64_t lo, hi;
    lmx_split(cpu_rows(job->n->src[0]), ith, nth, &lo, &hi);
    quantize_rows(job, lo, hi);
}

static void matvec_task(int ith, int nth, void *arg) {
    qx_job *job = arg;
    const lmx_node *n = job->n;
    const lmx_array *x = n->src[0], *w = n->src[1];
    const int64_t M = cpu_rows(x), K = w->shape[1], os = cpu_row_stride(n->out);
    float *out = n->out->data;
    (void)ith, (void)nth;
    int64_t lo, hi;
    while (lmx_row_claim_next(&job->rows, &lo, &hi)) {
        job->k->matvec_qx(w->dtype, w->data, K, lo, hi, &job->xq, M, out, os);
        if (!lmx_fast_add_bias(n->src[2], out, os, M, lo, hi)) job->failed = true;
    }
}

static void gemm_task(int ith, int nth, void *arg) {
    qx_job *job = arg;
    const lmx_simd_kernels *kt = job->k;
    const lmx_node *n = job->n;
    const lmx_array *x = n->src[0], *w = n->src[1];
    const int64_t M = cpu_rows(x), K = w->shape[1], N = w->shape[0], os = cpu_row_stride(n->out);
    const int QMR = kt->qmr, QNR = kt->qnr;
    (void)ith, (void)nth;
    uint8_t *B = (uint8_t *)lmx_fast_scratch(0, (int64_t)KCQ * QNR / 4);
    float *Bs = lmx_fast_scratch(1, (int64_t)(KCQ / 16) * QNR); /* Q6_K scales; Q4_K scales + mins */
    if (!B || !Bs) {
        job->failed = true;
        return;
    }
    float *out = n->out->data;
    const int64_t panels = (N + QNR - 1) / QNR;
    for (;;) {
        int64_t p = atomic_fetch_add_explicit(&job->next, 1, memory_order_relaxed);
        if (p >= panels) break;
        int64_t n0 = p * QNR;
        int nr = N - n0 < QNR ? (int)(N - n0) : QNR;
        for (int64_t mb = 0; mb < M; mb += MCQ) {
            int64_t mc = M - mb < MCQ ? M - mb : MCQ;
            for (int64_t k0 = 0; k0 < K; k0 += KCQ) {
                int64_t kc = K - k0 < KCQ ? K - k0 : KCQ;
                kt->pack_qx(w->dtype, w->data, K, n0, nr, k0, kc, B, Bs);
                for (int64_t m0 = mb; m0 < mb + mc; m0 += QMR) {
                    int mr = mb + mc - m0 < QMR ? (int)(mb + mc - m0) : QMR;
                    kt->gemm_qx(w->dtype, kc, &job->xq, m0, k0, job->corr, B, Bs, out + m0 * os + n0, os, mr, nr,
                                k0 > 0);
                }
            }
        }
        if (!lmx_fast_add_bias(n->src[2], out, os, M, n0, n0 + nr)) job->failed = true;
    }
}

bool lmx_fast_qmatmul(const lmx_simd_kernels *k, const lmx_node *n, lmx_pool *pool, lmx_status *st) {
    if (!qx_handled(k, n)) return false;
    qx_job job = {.k = k, .n = n};
    atomic_init(&job.failed, false);
    atomic_init(&job.next, 0);
    const int64_t M = cpu_rows(n->src[0]), K = n->src[1]->shape[1], N = n->src[1]->shape[0];
    const bool gemm = M >= LMX_QX_MIN_M;
    if (!qx_alloc(&job, M, K, gemm)) {
        *st = lmx_err(LMX_ERR_NOMEM, "matmul: out of memory for int8 activations");
        return true;
    }
    if (M * K >= 65536)
        lmx_pool_run(pool, quantize_task, &job);
    else
        quantize_rows(&job, 0, M);
    lmx_row_claim_init(&job.rows, N, lmx_pool_size(pool), 16);
    lmx_pool_run(pool, gemm ? gemm_task : matvec_task, &job);
    *st = job.failed ? lmx_err(LMX_ERR_NOMEM, "matmul: out of memory") : LMX_OK;
    return true;
}
