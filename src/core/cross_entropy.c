/* cross_entropy.c - the masked mean cross-entropy as an op of the table
 * (LMX_OP_CROSS_ENTROPY): the constructor lmx_cross_entropy (validation,
 * the target range check, dispatch to the backend's kernel), the row code
 * the CPU kernel runs on its pool (cross_entropy.h) and the reference vjp.
 *
 * loss[1] = Σ_t m_t·(logsumexp(logits_t) − logits_t[targets_t]) / Σ_t m_t
 * (0 when Σ m = 0); d logits_t = dout·m_t/Σm·(softmax(logits_t) − onehot).
 * Rows in f64 (row_lse); the CUDA kernels are in cuda_cross_entropy.cu. */
#include "core/cross_entropy.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static lmx_status ce_check(const lmx_array *loss, const lmx_array *logits, const lmx_array *targets,
                           const lmx_array *mask, const int32_t *tg) {
    if (logits->ndim != 2 || logits->dtype != LMX_F32 || !lmx_array_is_contiguous(logits) ||
        targets->dtype != LMX_I32 || lmx_array_numel(targets) != logits->shape[0] || loss->dtype != LMX_F32 ||
        lmx_array_numel(loss) != 1 || (mask && (mask->dtype != LMX_F32 || lmx_array_numel(mask) != logits->shape[0])))
        return lmx_err(LMX_ERR_SHAPE, "cross_entropy: needs logits f32 [T, V], targets i32 [T], mask f32 [T], loss f32 [1]");
    for (int64_t t = 0; t < logits->shape[0]; t++)
        if (tg[t] < 0 || tg[t] >= logits->shape[1])
            return lmx_err(LMX_ERR_INVALID_ARG, "cross_entropy: target %d out of range [0, %lld)", tg[t],
                           (long long)logits->shape[1]);
    return LMX_OK;
}

static double row_lse(const float *x, int64_t V) {
    float mx = -INFINITY;
    for (int64_t v = 0; v < V; v++) mx = x[v] > mx ? x[v] : mx;
    double s = 0;
    for (int64_t v = 0; v < V; v++) s += exp((double)x[v] - mx);
    return mx + log(s);
}

typedef struct {
    const float *logits, *m;
    const int32_t *tg;
    int64_t T, V;
    double *row;  /* forward: w·(lse - logit[target]) per row */
    float *d;     /* vjp: d logits */
    double scale; /* vjp: d loss / Σm */
} ce_job;

static void ce_fwd_rows(int ith, int nth, void *arg) {
    ce_job *j = arg;
    int64_t lo, hi;
    lmx_split(j->T, ith, nth, &lo, &hi);
    for (int64_t t = lo; t < hi; t++) {
        double w = j->m ? j->m[t] : 1.0;
        const float *x = j->logits + t * j->V;
        j->row[t] = w == 0 ? 0 : w * (row_lse(x, j->V) - x[j->tg[t]]);
    }
}

static void ce_vjp_rows(int ith, int nth, void *arg) {
    ce_job *j = arg;
    int64_t lo, hi, V = j->V;
    lmx_split(j->T, ith, nth, &lo, &hi);
    for (int64_t t = lo; t < hi; t++) {
        double w = (j->m ? j->m[t] : 1.0) * j->scale;
        if (w == 0) continue;
        const float *x = j->logits + t * V;
        float *d = j->d + t * V;
        double lse = row_lse(x, V);
        for (int64_t v = 0; v < V; v++) d[v] += (float)(w * exp((double)x[v] - lse));
        d[j->tg[t]] -= (float)w;
    }
}

static void run_rows(lmx_pool *pool, lmx_pool_fn fn, ce_job *j) {
    if (pool)
        lmx_pool_run(pool, fn, j);
    else
        fn(0, 1, j);
}

lmx_status lmx_ce_forward(const lmx_node *n, lmx_pool *pool) {
    const lmx_array *logits = n->src[0], *mask = n->src[2];
    int64_t T = logits->shape[0];
    const float *m = mask ? mask->data : NULL;
    ce_job j = {.logits = logits->data, .m = m, .tg = n->src[1]->data, .T = T, .V = logits->shape[1]};
    if (!(j.row = malloc((size_t)(T ? T : 1) * sizeof *j.row)))
        return lmx_err(LMX_ERR_NOMEM, "cross_entropy: out of memory");
    run_rows(pool, ce_fwd_rows, &j);
    double sum = 0, msum = 0;
    for (int64_t t = 0; t < T; t++) {
        double w = m ? m[t] : 1.0;
        if (w == 0) continue;
        sum += j.row[t];
        msum += w;
    }
    free(j.row);
    *(float *)n->out->data = msum > 0 ? (float)(sum / msum) : 0.0f;
    return LMX_OK;
}

lmx_status lmx_ce_vjp(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool) {
    const lmx_array *logits = n->src[0], *mask = n->src[2];
    if (!dsrc[0]) return LMX_OK;
    int64_t T = logits->shape[0];
    const float *m = mask ? mask->data : NULL;
    double msum = 0;
    for (int64_t t = 0; t < T; t++) msum += m ? m[t] : 1.0;
    if (msum == 0) return LMX_OK;
    ce_job j = {.logits = logits->data, .m = m, .tg = n->src[1]->data, .T = T, .V = logits->shape[1],
                .d = dsrc[0]->data, .scale = ((const float *)dout->data)[0] / msum};
    run_rows(pool, ce_vjp_rows, &j);
    return LMX_OK;
}

lmx_status lmx_vjp_cross_entropy(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[]) {
    return lmx_ce_vjp(n, dout, dsrc, NULL);
}

/* The device backend holding a's memory, or NULL (host memory). */
static lmx_backend *device_of(const lmx_array *a) {
    return a->buf && a->buf->kind == LMX_BUFFER_DEVICE ? (lmx_backend *)a->buf->dev_owner : NULL;
}

lmx_status lmx_cross_entropy(lmx_exec *ex, lmx_array *loss, const lmx_array *logits, const lmx_array *targets,
                             const lmx_array *mask) {
    /* the range check reads the targets on the host: T·4 bytes come back
     * from a device (one synchronisation per loss) */
    int64_t T = lmx_array_numel(targets);
    lmx_backend *dev = device_of(targets);
    if (dev != device_of(logits) || dev != device_of(loss) || (mask && device_of(mask) != dev))
        return lmx_err(LMX_ERR_INVALID_ARG, "cross_entropy: loss, logits, targets and mask must be in the same memory");
    int32_t *host = NULL;
    if (dev && targets->dtype == LMX_I32 && lmx_array_is_contiguous(targets)) {
        if (!(host = malloc((size_t)(T ? T : 1) * sizeof *host)))
            return lmx_err(LMX_ERR_NOMEM, "cross_entropy: out of memory");
        lmx_status st = lmx_array_download(dev, targets, host);
        if (st) {
            free(host);
            return st;
        }
    } else if (dev) {
        return lmx_err(LMX_ERR_SHAPE, "cross_entropy: device targets must be contiguous i32");
    }
    lmx_status st = ce_check(loss, logits, targets, mask, host ? host : (const int32_t *)targets->data);
    free(host);
    if (st) return st;
    lmx_node n;
    memset(&n, 0, sizeof n);
    n.op = LMX_OP_CROSS_ENTROPY;
    n.out = loss;
    n.src[0] = logits;
    n.src[1] = targets;
    n.src[2] = mask;
    if (!ex) { /* host arrays, this thread, nothing recorded */
        if (dev) return lmx_err(LMX_ERR_INVALID_ARG, "cross_entropy: device arrays need an lmx_exec");
        return lmx_ce_forward(&n, NULL);
    }
    if (!dev && !lmx_backend_is_host(ex->backend))
        return lmx_err(LMX_ERR_INVALID_ARG, "cross_entropy: host arrays given to the %s backend", ex->backend->name);
    if (dev && dev != ex->backend)
        return lmx_err(LMX_ERR_INVALID_ARG, "cross_entropy: arrays of %s given to the %s backend", dev->name,
                       ex->backend->name);
    return lmx_exec_node(ex, &n);
}
