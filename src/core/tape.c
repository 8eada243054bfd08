/* tape.c - the autograd tape: recording executed nodes, reverse replay with
 * per-memory gradient accumulation, and the masked cross-entropy loss.
 *
 * Each record keeps the reference vjp (lmx_op_defs, plain C: the oracle)
 * and, when the node ran on a backend with fast vjps, that backend's vjp
 * and thread pool; backward uses the fast one unless the tape was told to
 * use the references (lmx_tape_set_reference, or LMX_VJP=reference). */
#include "core/tape.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct tape_rec {
    lmx_node n;
    lmx_array arr[1 + LMX_MAX_SRC]; /* out, src[0..]: retained copies */
    lmx_vjp_fn vjp;
    lmx_vjp_kernel_fn fast; /* NULL: the reference only */
    lmx_pool *pool;         /* fast's thread pool */
    bool custom; /* recorded outside the op table: only src[0] gets a gradient */
} tape_rec;

typedef struct grad_entry {
    lmx_array view; /* the array as its consumer saw it (address map only) */
    lmx_array grad; /* f32, contiguous, view's logical shape */
    int64_t left;   /* elements not yet consumed by a partial gather */
} grad_entry;

struct lmx_tape {
    tape_rec *recs;
    int n, cap;
    grad_entry *g;
    int ng, gcap;
    const void **frozen;
    int nf, fcap;
    bool reference; /* backward with the reference vjps only */
};

static bool env_reference;
static pthread_once_t env_once = PTHREAD_ONCE_INIT;
static void read_env(void) {
    const char *e = getenv("LMX_VJP");
    env_reference = e && !strcmp(e, "reference");
}

static lmx_status grow(void **p, int *cap, int need, size_t elem) {
    if (need <= *cap) return LMX_OK;
    int nc = *cap ? *cap * 2 : 64;
    while (nc < need) nc *= 2;
    void *q = realloc(*p, (size_t)nc * elem);
    if (!q) return lmx_err(LMX_ERR_NOMEM, "tape: out of memory");
    *p = q;
    *cap = nc;
    return LMX_OK;
}

lmx_status lmx_tape_create(lmx_tape **out) {
    *out = calloc(1, sizeof **out);
    if (!*out) return lmx_err(LMX_ERR_NOMEM, "tape: out of memory");
    pthread_once(&env_once, read_env);
    (*out)->reference = env_reference;
    return LMX_OK;
}

void lmx_tape_set_reference(lmx_tape *t, bool reference) { t->reference = reference; }

static void drop_grads(lmx_tape *t) {
    for (int i = 0; i < t->ng; i++) lmx_array_release(&t->g[i].grad);
    t->ng = 0;
}

void lmx_tape_reset(lmx_tape *t) {
    if (!t) return;
    for (int i = 0; i < t->n; i++)
        for (int j = 0; j < 1 + LMX_MAX_SRC; j++) lmx_array_release(&t->recs[i].arr[j]);
    t->n = 0;
    drop_grads(t);
}

void lmx_tape_free(lmx_tape *t) {
    if (!t) return;
    lmx_tape_reset(t);
    free(t->recs);
    free(t->g);
    free(t->frozen);
    free(t);
}

int lmx_tape_size(const lmx_tape *t) { return t ? t->n : 0; }

static lmx_status record(lmx_tape *t, const lmx_node *n, lmx_vjp_fn vjp, lmx_vjp_kernel_fn fast, lmx_pool *pool) {
    LMX_TRY(grow((void **)&t->recs, &t->cap, t->n + 1, sizeof *t->recs));
    tape_rec *r = &t->recs[t->n++];
    memset(r, 0, sizeof *r);
    r->n = *n;
    r->custom = vjp != NULL;
    r->vjp = vjp ? vjp : (n->op < LMX_OP_COUNT ? lmx_op_defs[n->op].vjp : NULL);
    r->fast = fast;
    r->pool = pool;
    r->arr[0] = *n->out;
    lmx_array_retain(&r->arr[0]);
    r->n.out = &r->arr[0];
    for (int i = 0; i < LMX_MAX_SRC; i++) {
        if (!n->src[i]) continue;
        r->arr[1 + i] = *n->src[i];
        lmx_array_retain(&r->arr[1 + i]);
        r->n.src[i] = &r->arr[1 + i];
    }
    return LMX_OK;
}

lmx_status lmx_tape_record(lmx_tape *t, const lmx_node *n, lmx_vjp_fn vjp) { return record(t, n, vjp, NULL, NULL); }

lmx_status lmx_tape_record_on(lmx_tape *t, lmx_backend *b, const lmx_node *n) {
    lmx_vjp_kernel_fn fast = b && b->vjps && n->op < LMX_OP_COUNT ? b->vjps[n->op] : NULL;
    return record(t, n, NULL, fast, fast ? b->pool : NULL);
}

lmx_status lmx_tape_freeze(lmx_tape *t, const lmx_array *a) {
    LMX_TRY(grow((void **)&t->frozen, &t->fcap, t->nf + 1, sizeof *t->frozen));
    t->frozen[t->nf++] = a->data;
    return LMX_OK;
}

static bool wants_grad(const lmx_tape *t, const tape_rec *r, int i) {
    const lmx_array *a = r->n.src[i];
    if (!a) return false;
    const lmx_dtype_traits *tr = lmx_dtype_info(a->dtype);
    if (!tr->is_float || tr->is_quant || tr->needs_scales || tr->block != 1) return false;
    if (r->custom) return i == 0;
    switch (r->n.op) {
    case LMX_OP_GET_ROWS: if (i != 0) return false; break;
    case LMX_OP_MATMUL: if (i > 2 || (i == 1 && r->n.src[3])) return false; break;
    case LMX_OP_ROPE: if (i != 0) return false; break;
    default: break;
    }
    for (int j = 0; j < t->nf; j++)
        if (t->frozen[j] == a->data) return false;
    return true;
}

static bool same_layout(const lmx_array *a, const lmx_array *b) {
    if (a->data != b->data || a->dtype != b->dtype || a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i] || (a->shape[i] > 1 && a->strides[i] != b->strides[i])) return false;
    return true;
}

static lmx_status alloc_like(lmx_array *g, const lmx_array *a) {
    int64_t one = 1;
    return a->ndim ? lmx_array_alloc(g, LMX_F32, a->ndim, a->shape) : lmx_array_alloc(g, LMX_F32, 1, &one);
}

/* Adds grad (contiguous f32 of view's shape) into the entry for view;
 * takes ownership of grad. */
static lmx_status accumulate(lmx_tape *t, const lmx_array *view, lmx_array *grad) {
    for (int i = 0; i < t->ng; i++) {
        if (!same_layout(&t->g[i].view, view)) continue;
        float *d = t->g[i].grad.data;
        const float *s = grad->data;
        for (int64_t j = 0, n = lmx_array_numel(grad); j < n; j++) d[j] += s[j];
        t->g[i].left = lmx_array_numel(grad); /* consumed parts may hold gradient again */
        lmx_array_release(grad);
        return LMX_OK;
    }
    lmx_status st = grow((void **)&t->g, &t->gcap, t->ng + 1, sizeof *t->g);
    if (st) {
        lmx_array_release(grad);
        return st;
    }
    t->g[t->ng].view = *view;
    t->g[t->ng].view.buf = NULL; /* not a reference */
    t->g[t->ng].grad = *grad;
    t->g[t->ng].left = lmx_array_numel(grad);
    t->ng++;
    memset(grad, 0, sizeof *grad);
    return LMX_OK;
}

/* Byte offset of logical element i of a (plain dtype). */
static int64_t elem_off(const lmx_array *a, int64_t i) {
    int64_t off = 0;
    for (int d = a->ndim - 1; d >= 0; d--) {
        off += (i % a->shape[d]) * a->strides[d];
        i /= a->shape[d];
    }
    return off * (int64_t)lmx_dtype_info(a->dtype)->size;
}

/* Logical index in out of the element at byte offset o, or -1 (out is
 * contiguous or a 2-D row-strided view). */
static int64_t out_index(const lmx_array *out, int64_t o, int64_t es) {
    if (o < 0 || o % es) return -1;
    o /= es;
    if (lmx_array_is_contiguous(out)) return o < lmx_array_numel(out) ? o : -1;
    if (out->ndim != 2 || out->strides[1] != 1) return -1;
    int64_t r = o / out->strides[0], c = o % out->strides[0];
    return r < out->shape[0] && c < out->shape[1] ? r * out->shape[1] + c : -1;
}

/* An entry that only partly overlaps out (both contiguous): a consumer
 * read a whole array that several nodes wrote in parts (row blocks of a
 * batched forward). The overlap is added to dout and zeroed in the entry
 * (consumed); the entry goes once nothing of it is left. */
static lmx_status gather_part(grad_entry *e, const lmx_array *out, lmx_array *dout, int64_t es) {
    const lmx_array *v = &e->view;
    if (!lmx_array_is_contiguous(v) || !lmx_array_is_contiguous(out)) return LMX_OK;
    intptr_t vs = (intptr_t)v->data, ve = vs + (intptr_t)(lmx_array_numel(v) * es);
    intptr_t os = (intptr_t)out->data, oe = os + (intptr_t)(lmx_array_numel(out) * es);
    intptr_t lo = vs > os ? vs : os, hi = ve < oe ? ve : oe;
    if (lo >= hi || (lo - vs) % es || (lo - os) % es) return LMX_OK;
    if (lmx_array_empty(dout)) LMX_TRY(alloc_like(dout, out));
    int64_t j0 = (int64_t)(lo - vs) / es, k0 = (int64_t)(lo - os) / es, cnt = (int64_t)(hi - lo) / es;
    float *d = (float *)dout->data + k0, *g = (float *)e->grad.data + j0;
    for (int64_t j = 0; j < cnt; j++) {
        d[j] += g[j];
        g[j] = 0;
    }
    e->left = e->left > cnt ? e->left - cnt : 0;
    return LMX_OK;
}

/* Collects (and consumes) every gradient entry whose memory lies inside
 * out's into dout (allocated on the first hit), and the overlapping part
 * of entries that cover more than out (gather_part). */
static lmx_status gather(lmx_tape *t, const lmx_array *out, lmx_array *dout) {
    const lmx_dtype_traits *tr = lmx_dtype_info(out->dtype);
    if (tr->block != 1) return LMX_OK;
    int64_t es = (int64_t)tr->size;
    for (int i = 0; i < t->ng;) {
        grad_entry *e = &t->g[i];
        const lmx_array *v = &e->view;
        int64_t n = lmx_array_numel(v);
        bool hit = true;
        if (v->dtype != out->dtype || n == 0) hit = false;
        /* addresses as integers: v and out may be unrelated objects */
        int64_t rel = (int64_t)((intptr_t)v->data - (intptr_t)out->data);
        int64_t k0 = hit ? out_index(out, rel + elem_off(v, 0), es) : -1;
        if (k0 < 0 || out_index(out, rel + elem_off(v, n - 1), es) < 0) {
            if (hit) LMX_TRY(gather_part(e, out, dout, es));
            if (e->left == 0) {
                lmx_array_release(&e->grad);
                t->g[i] = t->g[--t->ng];
            } else {
                i++;
            }
            continue;
        }
        if (lmx_array_empty(dout)) LMX_TRY(alloc_like(dout, out));
        float *d = dout->data;
        const float *g = e->grad.data;
        if (lmx_array_is_contiguous(v) && lmx_array_is_contiguous(out)) {
            for (int64_t j = 0; j < n; j++) d[k0 + j] += g[j];
        } else {
            for (int64_t j = 0; j < n; j++) {
                int64_t k = out_index(out, rel + elem_off(v, j), es);
                if (k >= 0) d[k] += g[j];
            }
        }
        lmx_array_release(&e->grad);
        t->g[i] = t->g[--t->ng];
    }
    return LMX_OK;
}

lmx_status lmx_tape_backward(lmx_tape *t, const lmx_array *y, const lmx_array *seed) {
    drop_grads(t);
    for (int i = 0; i < t->n; i++)
        for (int j = 0; j < 1 + LMX_MAX_SRC; j++)
            if (t->recs[i].arr[j].buf && t->recs[i].arr[j].buf->kind == LMX_BUFFER_DEVICE)
                return lmx_err(LMX_ERR_UNSUPPORTED, "tape: backward over device arrays is not supported yet");
    lmx_array g0 = {0};
    LMX_TRY(alloc_like(&g0, y));
    int64_t n = lmx_array_numel(y);
    if (seed) {
        if (lmx_array_numel(seed) != n) {
            lmx_array_release(&g0);
            return lmx_err(LMX_ERR_SHAPE, "tape: seed has %lld elements, y %lld", (long long)lmx_array_numel(seed),
                           (long long)n);
        }
        lmx_status st = lmx_array_to_f32(seed, g0.data);
        if (st) {
            lmx_array_release(&g0);
            return st;
        }
    } else {
        for (int64_t i = 0; i < n; i++) ((float *)g0.data)[i] = 1.0f;
    }
    LMX_TRY(accumulate(t, y, &g0));
    for (int i = t->n - 1; i >= 0; i--) {
        tape_rec *r = &t->recs[i];
        /* the node's pointers refer to r->arr, which moves when recs grows */
        r->n.out = &r->arr[0];
        for (int j = 0; j < LMX_MAX_SRC; j++)
            if (r->n.src[j]) r->n.src[j] = &r->arr[1 + j];
        lmx_array dout = {0};
        LMX_TRY(gather(t, r->n.out, &dout));
        if (lmx_array_empty(&dout)) continue;
        lmx_array ds[LMX_MAX_SRC];
        lmx_array *dp[LMX_MAX_SRC] = {0};
        memset(ds, 0, sizeof ds);
        lmx_status st = LMX_OK;
        bool any = false;
        for (int j = 0; j < LMX_MAX_SRC && !st; j++) {
            if (!wants_grad(t, r, j)) continue;
            st = alloc_like(&ds[j], r->n.src[j]);
            dp[j] = &ds[j];
            any = true;
        }
        if (!st && any && !r->vjp)
            st = lmx_err(LMX_ERR_UNSUPPORTED, "tape: op %s has no vjp",
                         r->n.op < LMX_OP_COUNT ? lmx_op_defs[r->n.op].name : "?");
        if (!st && any)
            st = r->fast && !t->reference ? r->fast(&r->n, &dout, dp, r->pool) : r->vjp(&r->n, &dout, dp);
        lmx_array_release(&dout);
        for (int j = 0; j < LMX_MAX_SRC; j++) {
            if (!dp[j]) continue;
            if (!st)
                st = accumulate(t, r->n.src[j], &ds[j]);
            else
                lmx_array_release(&ds[j]);
        }
        if (st) return st;
    }
    return LMX_OK;
}

const lmx_array *lmx_tape_grad(lmx_tape *t, const lmx_array *a) {
    /* Merges the entries of views inside a's memory (a leaf split into
     * column views, say) into one entry for a. */
    lmx_array g = {0};
    if (gather(t, a, &g) != LMX_OK || lmx_array_empty(&g)) return NULL;
    if (accumulate(t, a, &g) != LMX_OK) return NULL;
    for (int i = t->ng - 1; i >= 0; i--)
        if (same_layout(&t->g[i].view, a)) return &t->g[i].grad;
    return NULL;
}

/* ---- masked cross-entropy ---------------------------------------------- */

static lmx_status ce_check(const lmx_array *loss, const lmx_array *logits, const lmx_array *targets,
                           const lmx_array *mask) {
    if (logits->ndim != 2 || logits->dtype != LMX_F32 || !lmx_array_is_contiguous(logits) ||
        targets->dtype != LMX_I32 || lmx_array_numel(targets) != logits->shape[0] || loss->dtype != LMX_F32 ||
        lmx_array_numel(loss) != 1 || (mask && (mask->dtype != LMX_F32 || lmx_array_numel(mask) != logits->shape[0])))
        return lmx_err(LMX_ERR_SHAPE, "cross_entropy: needs logits f32 [T, V], targets i32 [T], mask f32 [T], loss f32 [1]");
    const int32_t *tg = targets->data;
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

/* Rows of the loss and of its vjp are independent: they run on the
 * backend's host pool when it has one (backend.h: a backend with vjps has
 * a host lmx_pool), each row with the same arithmetic as one thread, and
 * the loss is summed over rows in order afterwards, so the results do not
 * depend on the thread count. */
static lmx_pool *host_pool(const lmx_exec *ex) {
    return ex && ex->backend && ex->backend->vjps ? ex->backend->pool : NULL;
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

static lmx_status ce_vjp(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool) {
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

lmx_status lmx_cross_entropy(lmx_exec *ex, lmx_array *loss, const lmx_array *logits, const lmx_array *targets,
                             const lmx_array *mask) {
    LMX_TRY(ce_check(loss, logits, targets, mask));
    int64_t T = logits->shape[0];
    const float *m = mask ? mask->data : NULL;
    ce_job j = {.logits = logits->data, .m = m, .tg = targets->data, .T = T, .V = logits->shape[1]};
    if (!(j.row = malloc((size_t)(T ? T : 1) * sizeof *j.row)))
        return lmx_err(LMX_ERR_NOMEM, "cross_entropy: out of memory");
    lmx_pool *pool = host_pool(ex);
    run_rows(pool, ce_fwd_rows, &j);
    double sum = 0, msum = 0;
    for (int64_t t = 0; t < T; t++) {
        double w = m ? m[t] : 1.0;
        if (w == 0) continue;
        sum += j.row[t];
        msum += w;
    }
    free(j.row);
    *(float *)loss->data = msum > 0 ? (float)(sum / msum) : 0.0f;
    if (!ex || !ex->tape) return LMX_OK;
    lmx_node n;
    memset(&n, 0, sizeof n);
    n.op = LMX_OP_COUNT; /* not an op-table node */
    n.out = loss;
    n.src[0] = logits;
    n.src[1] = targets;
    n.src[2] = mask;
    return record(ex->tape, &n, lmx_vjp_cross_entropy, pool ? ce_vjp : NULL, pool);
}

lmx_status lmx_vjp_cross_entropy(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[]) {
    return ce_vjp(n, dout, dsrc, NULL);
}
