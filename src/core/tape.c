/* tape.c - the autograd tape: recording executed nodes, reverse replay with
 * per-memory gradient accumulation (the cross-entropy loss is an op:
 * core/cross_entropy.c).
 *
 * Each record keeps the reference vjp (lmx_op_defs, plain C: the oracle)
 * and, when the node ran on a backend with fast vjps, that backend's vjp
 * and thread pool; backward uses the fast one unless the tape was told to
 * use the references (lmx_tape_set_reference, or LMX_VJP=reference). */
#include "core/tape.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
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

/* LMX_TAPE_PROFILE=1: backward synchronises the node's backend around each
 * phase and sums seconds per op (matmuls split by a float-32 or other
 * weight: LoRA vs base), gathers, zeroed allocations and sums; printed to
 * stderr when a tape is freed. Process-wide (tapes of one run add up). */
static bool env_profile;
enum { PROF_GATHER = 2 * LMX_OP_COUNT, PROF_ALLOC, PROF_ACCUM, PROF_N };
static double prof_s[PROF_N], fwd_s[2 * LMX_OP_COUNT], fwd_last;
static int64_t prof_n[PROF_N], fwd_n[2 * LMX_OP_COUNT];

/* LMX_TAPE_PROFILE=events: on a backend with profiling marks
 * (lmx_buffer_ops.mark), the phases are timed between marks recorded with
 * the queued work instead (no synchronisation per node: the device's own
 * timeline, gaps where it waited for the host included), resolved when a
 * backward starts (the forward's) and ends (its own). */
static bool env_events;
/* LMX_TAPE_PROFILE=host: the same laps on the host's clock without any
 * synchronisation: where the host spends its time issuing a step (a step
 * whose issue time matches its device time is host-bound when this shows
 * the time in the host's own work, not in launches that wait for room). */
static bool env_host;
#define PROF_MARKS 8192 /* the backend's ring */
#define PROF_PENDING 4000
typedef struct {
    int k, slot;
} prof_mark;
static prof_mark fwd_m[PROF_PENDING], bwd_m[PROF_PENDING];
static int n_fwd_m, n_bwd_m, mark_next;

static void read_env(void) {
    const char *e = getenv("LMX_VJP");
    env_reference = e && !strcmp(e, "reference");
    const char *p = getenv("LMX_TAPE_PROFILE");
    env_profile = p && *p && strcmp(p, "0");
    env_events = p && !strcmp(p, "events");
    env_host = p && !strcmp(p, "host");
}

static bool can_mark(const lmx_backend *b) {
    return env_events && b && b->buffers && b->buffers->mark && b->buffers->mark_ms;
}

/* Records a point of category k (-1: an anchor) on b's queue. */
static void mark_point(lmx_backend *b, prof_mark *list, int *n, int k) {
    if (*n >= PROF_PENDING) return;
    int slot = mark_next++ % PROF_MARKS;
    if (b->buffers->mark(b, slot) != LMX_OK) return;
    list[(*n)++] = (prof_mark){k, slot};
}

/* Adds the time from each point to the next to the latter's category. */
static void mark_resolve(lmx_backend *b, prof_mark *list, int *n, double *s, int64_t *cnt) {
    for (int i = 1; i < *n; i++) {
        double ms = b->buffers->mark_ms(b, list[i - 1].slot, list[i].slot);
        if (ms >= 0 && list[i].k >= 0) {
            s[list[i].k] += 1e-3 * ms;
            cnt[list[i].k]++;
        }
    }
    *n = 0;
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

static void prof_print(void) {
    double all = 0;
    for (int k = 0; k < PROF_N; k++) all += prof_s[k];
    if (all <= 0) return;
    fprintf(stderr, "[tape profile] backward total %.1f ms:", 1e3 * all);
    for (int k = 0; k < PROF_N; k++) {
        if (!prof_n[k]) continue;
        const char *nm = k == PROF_GATHER ? "gather" : k == PROF_ALLOC ? "zeroed dsrc" : k == PROF_ACCUM ? "accumulate"
                                                                                            : lmx_op_defs[k / 2].name;
        fprintf(stderr, " %s%s %.1f ms (%lld)", nm, k < PROF_GATHER && k % 2 ? "[W!=f32]" : "", 1e3 * prof_s[k],
                (long long)prof_n[k]);
    }
    fprintf(stderr, "\n[tape profile] recorded forward (from one record to the next):");
    for (int k = 0; k < 2 * LMX_OP_COUNT; k++)
        if (fwd_n[k])
            fprintf(stderr, " %s%s %.1f ms (%lld)", lmx_op_defs[k / 2].name, k % 2 ? "[W!=f32]" : "", 1e3 * fwd_s[k],
                    (long long)fwd_n[k]);
    fprintf(stderr, "\n");
    memset(prof_s, 0, sizeof prof_s);
    memset(prof_n, 0, sizeof prof_n);
    memset(fwd_s, 0, sizeof fwd_s);
    memset(fwd_n, 0, sizeof fwd_n);
}

/* Seconds since the last call (0 when not profiling), after b's queued work. */
static double prof_lap(lmx_backend *b, double *last) {
    if (!env_profile) return 0;
    if (b && !env_host) (void)lmx_backend_sync(b);
    double now = lmx_time_s(), d = now - *last;
    *last = now;
    return d;
}

static void prof_add(int k, double s) {
    if (!env_profile) return;
    prof_s[k] += s;
    prof_n[k]++;
}

/* The end of a backward phase of category k. */
static void prof_point(lmx_backend *b, int k, double *last) {
    if (!env_profile) return;
    if (can_mark(b)) {
        mark_point(b, bwd_m, &n_bwd_m, k);
        return;
    }
    prof_add(k, prof_lap(b, last));
}

void lmx_tape_free(lmx_tape *t) {
    if (!t) return;
    if (env_profile) prof_print();
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
    if (env_profile && n->op < LMX_OP_COUNT && can_mark(b)) {
        mark_point(b, fwd_m, &n_fwd_m, 2 * n->op + (n->src[1] && n->src[1]->dtype != LMX_F32));
    } else if (env_profile && n->op < LMX_OP_COUNT) { /* the node just ran: the time since the last record */
        if (!lmx_backend_is_host(b) && !env_host) (void)lmx_backend_sync(b);
        double now = lmx_time_s();
        if (fwd_last > 0 && now - fwd_last < 1.0) {
            int k = 2 * n->op + (n->src[1] && n->src[1]->dtype != LMX_F32);
            fwd_s[k] += now - fwd_last;
            fwd_n[k]++;
        }
        fwd_last = now;
    }
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
    case LMX_OP_CROSS_ENTROPY: if (i != 0) return false; break; /* targets, mask: data */
    default: break;
    }
    for (int j = 0; j < t->nf; j++)
        if (t->frozen[j] == a->data) return false;
    return true;
}

/* ---- device memory ----------------------------------------------------------
 * A node recorded on a device backend has device arrays: its gradient
 * entries, the gathered dout and the zeroed dsrc live in that backend's
 * memory (lmx_array_alloc_on), and the host never reads them. The sums of
 * the gather/accumulate run on the device as the backend's own ADD (and
 * SCALE by 0, to consume a part) over 2-D row-strided f32 views, which
 * every backend's element-wise kernels take. */

/* The device backend holding a's memory, or NULL (host memory). */
static lmx_backend *dev_of(const lmx_array *a) {
    return a->buf && a->buf->kind == LMX_BUFFER_DEVICE ? (lmx_backend *)a->buf->dev_owner : NULL;
}

static void view2d(lmx_array *v, float *p, int64_t R, int64_t C, int64_t rs) {
    memset(v, 0, sizeof *v);
    v->dtype = LMX_F32;
    v->ndim = 2;
    v->shape[0] = R;
    v->shape[1] = C;
    v->strides[0] = rs;
    v->strides[1] = 1;
    v->data = p;
}

/* dst[r·drs + c] += src[r·srs + c] (r < R, c < C) on device b; with
 * consume, src is then zeroed. Not recorded. */
static lmx_status dev_add(lmx_backend *b, float *dst, int64_t drs, float *src, int64_t srs, int64_t R, int64_t C,
                          bool consume) {
    if (R <= 0 || C <= 0) return LMX_OK;
    lmx_array d, s;
    view2d(&d, dst, R, C, drs);
    view2d(&s, src, R, C, srs);
    lmx_exec ex = {b, NULL};
    lmx_node n;
    memset(&n, 0, sizeof n);
    n.op = LMX_OP_ADD;
    n.out = &d;
    n.src[0] = &d;
    n.src[1] = &s;
    lmx_status st = lmx_exec_node(&ex, &n);
    if (st || !consume) return st ? lmx_err_prefix(st, "tape: gradient sum on %s", b->name) : LMX_OK;
    memset(&n, 0, sizeof n);
    n.op = LMX_OP_SCALE;
    n.out = &s;
    n.src[0] = &s;
    n.fp[0] = 0.0f;
    st = lmx_exec_node(&ex, &n);
    return st ? lmx_err_prefix(st, "tape: gradient sum on %s", b->name) : LMX_OK;
}

static bool same_layout(const lmx_array *a, const lmx_array *b) {
    if (a->data != b->data || a->dtype != b->dtype || a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i] || (a->shape[i] > 1 && a->strides[i] != b->strides[i])) return false;
    return true;
}

/* An f32 array of a's logical shape in the memory a lives in: zeroed, or
 * (zeroed false) as the cache hands it out, for a dsrc the vjp writes whole. */
static lmx_status alloc_shaped(lmx_array *g, const lmx_array *a, bool zeroed) {
    int64_t one = 1;
    lmx_backend *b = dev_of(a);
    lmx_status (*alloc)(lmx_backend *, lmx_array *, int, const int64_t *) =
        zeroed ? lmx_tape_alloc_on : lmx_tape_alloc_out_on;
    return a->ndim ? alloc(b, g, a->ndim, a->shape) : alloc(b, g, 1, &one);
}

static lmx_status alloc_like(lmx_array *g, const lmx_array *a) { return alloc_shaped(g, a, true); }

/* On a device a gradient array may be shared: an ADD hands its dout to
 * both sources as it is (no zeroed copies and sums). A shared array is
 * never written: an entry that holds one gets a private copy first. */
static bool shared(const lmx_array *g) { return g->buf && g->buf->refcount > 1; }

static lmx_status privatize(lmx_array *g) {
    if (!shared(g)) return LMX_OK;
    lmx_backend *dev = dev_of(g);
    if (!dev) return lmx_err(LMX_ERR_INTERNAL, "tape: a shared host gradient");
    lmx_array c;
    LMX_TRY(alloc_like(&c, g));
    int64_t n = lmx_array_numel(g);
    lmx_status st = dev_add(dev, c.data, n, g->data, n, 1, n, false);
    if (st) {
        lmx_array_release(&c);
        return st;
    }
    lmx_array_release(g);
    *g = c;
    return LMX_OK;
}

/* Adds grad (contiguous f32 of view's shape) into the entry for view;
 * takes ownership of grad. */
static lmx_status accumulate(lmx_tape *t, const lmx_array *view, lmx_array *grad) {
    for (int i = 0; i < t->ng; i++) {
        if (!same_layout(&t->g[i].view, view)) continue;
        float *d = t->g[i].grad.data;
        float *s = grad->data;
        lmx_backend *dev = dev_of(&t->g[i].grad);
        int64_t n = lmx_array_numel(grad);
        if (dev) {
            lmx_status st;
            if (shared(&t->g[i].grad) && !shared(grad)) { /* sum into the private one, which becomes the entry */
                st = dev_add(dev, s, n, d, n, 1, n, false);
                if (!st) {
                    lmx_array_release(&t->g[i].grad);
                    t->g[i].grad = *grad;
                    memset(grad, 0, sizeof *grad);
                }
            } else {
                st = privatize(&t->g[i].grad);
                if (!st) st = dev_add(dev, t->g[i].grad.data, n, s, n, 1, n, false);
            }
            if (st) {
                lmx_array_release(grad);
                return st;
            }
        } else {
            for (int64_t j = 0; j < n; j++) d[j] += s[j];
        }
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

/* On a device, a node's vjp adds into the gradient entry of a source
 * directly when one of the same layout exists, whole (no part consumed):
 * that saves a zeroed array and a sum per consumer of a shared input (the
 * normed h read by q, k, v and their adapters). Distinct from the node's
 * dout: that came from the entries of its output's memory. */
static grad_entry *find_entry(lmx_tape *t, const lmx_array *a) {
    for (int i = 0; i < t->ng; i++)
        if (same_layout(&t->g[i].view, a) && t->g[i].left == lmx_array_numel(a) && dev_of(&t->g[i].grad) &&
            !shared(&t->g[i].grad))
            return &t->g[i];
    return NULL;
}

/* An ADD whose sources have out's shape (no broadcast row), all f32: each
 * source's gradient is dout itself. */
static bool passes_through(const tape_rec *r) {
    const lmx_array *o = r->n.out, *a = r->n.src[0], *b = r->n.src[1];
    if (r->custom || r->n.op != LMX_OP_ADD || !a || !b || o->dtype != LMX_F32) return false;
    for (int k = 0; k < 2; k++) {
        const lmx_array *s = k ? b : a;
        if (s->dtype != LMX_F32 || s->ndim != o->ndim) return false;
        for (int i = 0; i < o->ndim; i++)
            if (s->shape[i] != o->shape[i]) return false;
    }
    return true;
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
    LMX_TRY(privatize(&e->grad)); /* its consumed part is zeroed below */
    int64_t j0 = (int64_t)(lo - vs) / es, k0 = (int64_t)(lo - os) / es, cnt = (int64_t)(hi - lo) / es;
    float *d = (float *)dout->data + k0, *g = (float *)e->grad.data + j0;
    lmx_backend *dev = dev_of(&e->grad);
    if (dev) {
        LMX_TRY(dev_add(dev, d, cnt, g, cnt, 1, cnt, true));
        e->left = e->left > cnt ? e->left - cnt : 0;
        return LMX_OK;
    }
    for (int64_t j = 0; j < cnt; j++) {
        d[j] += g[j];
        g[j] = 0;
    }
    e->left = e->left > cnt ? e->left - cnt : 0;
    return LMX_OK;
}

/* dout += entry gradient g of view v (lying inside out at byte offset rel,
 * first element at dout index k0) on device b: v must map onto dout as
 * rows of unit-stride columns (a contiguous view, or a row-strided 2-D one
 * such as the column views of a fused output); anything else is refused. */
static lmx_status dev_gather(lmx_backend *b, const lmx_array *v, const lmx_array *out, int64_t rel, int64_t k0,
                             float *d, float *g, int64_t es) {
    int64_t n = lmx_array_numel(v);
    if (lmx_array_is_contiguous(v) && lmx_array_is_contiguous(out)) return dev_add(b, d + k0, n, g, n, 1, n, false);
    int nd = v->ndim;
    int64_t C = nd ? v->shape[nd - 1] : 1, R = C ? n / C : 0;
    bool ok = nd >= 1 && (C == 1 || v->strides[nd - 1] == 1);
    for (int i = 0; ok && i + 2 < nd; i++) /* leading dims collapse into rows */
        ok = v->shape[i] == 1 || v->strides[i] == v->strides[i + 1] * v->shape[i + 1];
    int64_t rs = C, kl = -1, kc = -1;
    if (ok && R > 1) rs = out_index(out, rel + elem_off(v, C), es) - k0;
    if (ok) {
        kl = out_index(out, rel + elem_off(v, n - 1), es);
        kc = out_index(out, rel + elem_off(v, C - 1), es);
    }
    if (!ok || rs < C || kl != k0 + (R - 1) * rs + C - 1 || kc != k0 + C - 1)
        return lmx_err(LMX_ERR_UNSUPPORTED, "tape: a gradient view of this layout cannot be summed on %s", b->name);
    return dev_add(b, d + k0, rs, g, C, R, C, false);
}

/* Collects (and consumes) every gradient entry whose memory lies inside
 * out's into dout (allocated on the first hit), and the overlapping part
 * of entries that cover more than out (gather_part). */
static lmx_status gather(lmx_tape *t, const lmx_array *out, lmx_array *dout) {
    const lmx_dtype_traits *tr = lmx_dtype_info(out->dtype);
    if (tr->block != 1) return LMX_OK;
    int64_t es = (int64_t)tr->size;
    /* The usual case: one entry, for out itself (its consumer read it
     * whole): that gradient becomes dout as it is, no copy (0 + g = g). */
    if (lmx_array_is_contiguous(out)) {
        intptr_t os = (intptr_t)out->data, oe = os + (intptr_t)(lmx_array_numel(out) * es);
        int hit = -1, nhit = 0;
        for (int i = 0; i < t->ng && nhit < 2; i++) {
            const lmx_array *v = &t->g[i].view;
            intptr_t vs = (intptr_t)v->data;
            if (vs >= oe || vs + (intptr_t)(lmx_array_numel(v) * (int64_t)lmx_dtype_info(v->dtype)->size) <= os)
                continue; /* no byte of v inside out */
            nhit++;
            hit = i;
        }
        const lmx_array *v = nhit == 1 ? &t->g[hit].view : NULL;
        /* out itself, or a contiguous reshape of all of it (q [T, H·hd] read as [T, H, hd]): the same elements
         * in the same order, so its gradient is out's as it lies */
        bool whole = v && t->g[hit].left == lmx_array_numel(out) &&
                     (same_layout(v, out) || (v->data == out->data && v->dtype == out->dtype &&
                                              lmx_array_numel(v) == lmx_array_numel(out) &&
                                              lmx_array_is_contiguous(v)));
        if (whole) {
            *dout = t->g[hit].grad;
            if (!same_layout(v, out)) lmx_array_set_contiguous(dout, LMX_F32, out->ndim, out->shape);
            t->g[hit] = t->g[--t->ng];
            return LMX_OK;
        }
    }
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
        lmx_backend *dev = dev_of(&e->grad);
        if (dev) {
            LMX_TRY(dev_gather(dev, v, out, rel, k0, d, e->grad.data, es));
        } else if (lmx_array_is_contiguous(v) && lmx_array_is_contiguous(out)) {
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

/* g0 (zeroed f32, y's shape, in y's memory) = seed, or ones. On a device
 * the seed is a device f32 array (a gradient the caller kept) or host data
 * that is uploaded. */
static lmx_status seed_grad(lmx_array *g0, const lmx_array *seed) {
    int64_t n = lmx_array_numel(g0);
    if (seed && lmx_array_numel(seed) != n)
        return lmx_err(LMX_ERR_SHAPE, "tape: seed has %lld elements, y %lld", (long long)lmx_array_numel(seed),
                       (long long)n);
    lmx_backend *dev = dev_of(g0);
    if (!dev) {
        if (seed) return lmx_array_to_f32(seed, g0->data);
        for (int64_t i = 0; i < n; i++) ((float *)g0->data)[i] = 1.0f;
        return LMX_OK;
    }
    if (seed && dev_of(seed)) {
        if (seed->dtype != LMX_F32 || !lmx_array_is_contiguous(seed))
            return lmx_err(LMX_ERR_UNSUPPORTED, "tape: a device seed must be contiguous f32");
        return dev_add(dev, g0->data, n, seed->data, n, 1, n, false);
    }
    float *h = malloc((size_t)(n ? n : 1) * sizeof *h);
    if (!h) return lmx_err(LMX_ERR_NOMEM, "tape: out of memory");
    lmx_status st = LMX_OK;
    if (seed)
        st = lmx_array_to_f32(seed, h);
    else
        for (int64_t i = 0; i < n; i++) h[i] = 1.0f;
    if (!st) st = lmx_backend_upload(dev, g0->data, h, (size_t)n * sizeof *h);
    if (!st) st = lmx_backend_sync(dev); /* h is freed next */
    free(h);
    return st;
}

/* Runs r's vjp. A node recorded on a device backend has only that
 * backend's vjp (the references read host memory). */
static lmx_status run_vjp(const lmx_tape *t, tape_rec *r, const lmx_array *dout, lmx_array *dp[]) {
    const char *name = r->n.op < LMX_OP_COUNT ? lmx_op_defs[r->n.op].name : "(custom node)";
    lmx_backend *dev = dev_of(&r->arr[0]);
    if (!dev) {
        if (!r->vjp && !r->fast) return lmx_err(LMX_ERR_UNSUPPORTED, "tape: op %s has no vjp", name);
        return r->fast && (!t->reference || !r->vjp) ? r->fast(&r->n, dout, dp, r->pool) : r->vjp(&r->n, dout, dp);
    }
    if (!r->fast)
        return lmx_err(LMX_ERR_UNSUPPORTED, "tape: op %s has no vjp on %s (the reference vjps read host memory)", name,
                       dev->name);
    if (t->reference)
        return lmx_err(LMX_ERR_UNSUPPORTED, "tape: LMX_VJP=reference: the reference vjps cannot run on %s memory",
                       dev->name);
    lmx_status st = r->fast(&r->n, dout, dp, r->pool);
    if (st == LMX_ERR_UNSUPPORTED)
        return lmx_err_prefix(st, "tape: the %s vjp on %s does not cover this node", name, dev->name);
    return st;
}

lmx_status lmx_tape_backward(lmx_tape *t, const lmx_array *y, const lmx_array *seed) {
    fwd_last = 0; /* the next forward's first record starts the clock again */
    drop_grads(t);
    lmx_array g0 = {0};
    LMX_TRY(alloc_like(&g0, y));
    lmx_status st = seed_grad(&g0, seed);
    if (st) {
        lmx_array_release(&g0);
        return st;
    }
    LMX_TRY(accumulate(t, y, &g0));
    double last = 0;
    lmx_backend *yb = dev_of(y);
    if (env_profile && can_mark(yb)) {
        mark_resolve(yb, fwd_m, &n_fwd_m, fwd_s, fwd_n);
        n_bwd_m = 0;
        mark_point(yb, bwd_m, &n_bwd_m, -1);
    } else {
        (void)prof_lap(yb, &last);
    }
    for (int i = t->n - 1; i >= 0; i--) {
        tape_rec *r = &t->recs[i];
        lmx_backend *pb = dev_of(&r->arr[0]);
        /* the node's pointers refer to r->arr, which moves when recs grows */
        r->n.out = &r->arr[0];
        for (int j = 0; j < LMX_MAX_SRC; j++)
            if (r->n.src[j]) r->n.src[j] = &r->arr[1 + j];
        lmx_array dout = {0};
        LMX_TRY(gather(t, r->n.out, &dout));
        prof_point(pb, PROF_GATHER, &last);
        if (lmx_array_empty(&dout)) continue;
        if (r->n.op == LMX_OP_MATMUL_ACC) { /* out = out_prev + x·wᵀ in place: out_prev's gradient is dout */
            lmx_array ref = dout;
            lmx_array_retain(&ref);
            st = accumulate(t, r->n.out, &ref);
            if (st) {
                lmx_array_release(&dout);
                return st;
            }
        }
        if (pb && passes_through(r)) { /* out = a + b: da = db = dout, shared */
            st = LMX_OK;
            for (int j = 0; j < 2 && !st; j++) {
                if (!wants_grad(t, r, j)) continue;
                lmx_array ref = dout;
                lmx_array_retain(&ref);
                st = accumulate(t, r->n.src[j], &ref);
            }
            lmx_array_release(&dout);
            prof_point(pb, PROF_ACCUM, &last);
            if (st) return st;
            continue;
        }
        lmx_array ds[LMX_MAX_SRC];
        lmx_array *dp[LMX_MAX_SRC] = {0};
        memset(ds, 0, sizeof ds);
        st = LMX_OK;
        bool any = false;
        bool direct[LMX_MAX_SRC] = {false};
        uint32_t ow = pb && pb->vjp_overwrites && !t->reference ? pb->vjp_overwrites(pb, &r->n) : 0;
        r->n.fresh = 0;
        for (int j = 0; j < LMX_MAX_SRC && !st; j++) {
            if (!wants_grad(t, r, j)) continue;
            any = true;
            grad_entry *e = pb ? find_entry(t, r->n.src[j]) : NULL;
            if (e) { /* the vjp adds into the running sum itself (device memory) */
                ds[j] = e->grad;
                direct[j] = true;
            } else if (ow >> j & 1) { /* the vjp writes it whole: not zeroed */
                st = alloc_shaped(&ds[j], r->n.src[j], false);
                r->n.fresh |= 1u << j;
            } else {
                st = alloc_like(&ds[j], r->n.src[j]);
            }
            dp[j] = &ds[j];
        }
        prof_point(pb, PROF_ALLOC, &last);
        if (!st && any) st = run_vjp(t, r, &dout, dp);
        r->n.fresh = 0;
        if (r->n.op < LMX_OP_COUNT)
            prof_point(pb, 2 * r->n.op + (r->n.src[1] && r->n.src[1]->dtype != LMX_F32), &last);
        lmx_array_release(&dout);
        for (int j = 0; j < LMX_MAX_SRC; j++) {
            if (!dp[j] || direct[j]) continue;
            if (!st)
                st = accumulate(t, r->n.src[j], &ds[j]);
            else
                lmx_array_release(&ds[j]);
        }
        prof_point(pb, PROF_ACCUM, &last);
        if (st) return st;
    }
    if (env_profile && can_mark(yb)) mark_resolve(yb, bwd_m, &n_bwd_m, prof_s, prof_n);
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
