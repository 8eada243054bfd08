/* train_forward.c - the recorded training forward over a batch of B rows.
 *
 * It mirrors forward_core() in models/transformer.c op for op (same kernels,
 * same order), with three differences: every activation is a fresh array
 * (the tape must see inputs that are never overwritten), there is no KV
 * cache (each row attends causally over its own Ti positions, RoPE at
 * positions 0..Ti-1), and the adapted linears run as separate recorded ops
 * (LoRA/DoRA, dropout as a MUL by a fixed mask, full fine-tuning through
 * the trainable copies), so their gradients come out of the tape. */
#include "train/train_internal.h"

#include "core/dora_norm.h"

#include <math.h>
#include <stdlib.h>

/* ---- the forward state: arrays owned until the block ends, sticky error ---- */

typedef struct fwd {
    lmx_exec *ex;
    const lmx_train_batch *b;
    lmx_array **own; /* malloc'ed arrays (stable addresses), released at the end */
    int n, cap;
    lmx_status st;
    lmx_array dummy; /* handed out after an error; never used by an op */
} fwd;

#define RUN(f, call)                  \
    do {                              \
        if (!(f)->st) (f)->st = (call); \
    } while (0)

static lmx_array *keep(fwd *f) {
    if (f->st) return &f->dummy;
    if (f->n == f->cap) {
        int nc = f->cap ? 2 * f->cap : 64;
        lmx_array **p = realloc(f->own, (size_t)nc * sizeof *p);
        if (!p) {
            f->st = lmx_err(LMX_ERR_NOMEM, "train: out of memory");
            return &f->dummy;
        }
        f->own = p;
        f->cap = nc;
    }
    lmx_array *a = calloc(1, sizeof *a);
    if (!a) {
        f->st = lmx_err(LMX_ERR_NOMEM, "train: out of memory");
        return &f->dummy;
    }
    f->own[f->n++] = a;
    return a;
}

/* A fresh f32 array [r, c] (c == 0: 1-D [r]) in the backend's memory for
 * an op to write whole: not zeroed on a device (recycled blocks; every
 * caller below fills all of it - the attention output by one node over
 * its B rows). */
static lmx_array *fresh(fwd *f, int64_t r, int64_t c) {
    lmx_array *a = keep(f);
    int64_t sh[2] = {r, c};
    RUN(f, lmx_tape_alloc_out_on(f->ex->backend, a, c ? 2 : 1, sh));
    return a;
}

static bool on_device(const fwd *f) { return !lmx_backend_is_host(f->ex->backend); }

/* The dropout mask of (li, slot) into mask ([n] f32, backend memory): drawn
 * on the host, uploaded on a device. */
static lmx_status dropout_fill(fwd *f, lmx_array *mask, int64_t n, float p, int li, int slot) {
    if (!on_device(f)) {
        lmx_train_dropout_mask(mask->data, n, p, f->b->dropout_key, li, slot);
        return LMX_OK;
    }
    float *h = malloc((size_t)n * sizeof *h);
    if (!h) return lmx_err(LMX_ERR_NOMEM, "train: out of memory");
    lmx_train_dropout_mask(h, n, p, f->b->dropout_key, li, slot);
    /* an upload has read h when it returns (backend.h: staged or pageable copy) */
    lmx_status st = lmx_backend_upload(f->ex->backend, mask->data, h, (size_t)n * sizeof *h);
    free(h);
    return st;
}

/* A contiguous view of src (a reference on its buffer, like the tape takes). */
static lmx_array *view(fwd *f, const lmx_array *src, int64_t off, int ndim, int64_t d0, int64_t d1, int64_t d2) {
    lmx_array *a = keep(f);
    int64_t sh[3] = {d0, d1, d2};
    RUN(f, lmx_array_view(a, src, off, ndim, sh));
    return a;
}

static void fwd_end(fwd *f) {
    for (int i = 0; i < f->n; i++) {
        lmx_array_release(f->own[i]);
        free(f->own[i]);
    }
    free(f->own);
    f->own = NULL;
    f->n = f->cap = 0;
}

/* *out = a new reference to a (the caller's result outlives the block). */
static void hand_out(fwd *f, const lmx_array *a, lmx_array *out) {
    memset(out, 0, sizeof *out);
    if (f->st) return;
    *out = *a;
    lmx_array_retain(out);
}

static const lmx_array *opt(const lmx_array *a) { return lmx_array_empty(a) ? NULL : a; }
static int64_t rows(const lmx_array *a) { return lmx_array_numel(a) / a->shape[a->ndim - 1]; }

/* ---- dropout masks: a pure function of (key, layer, module) ------------- */

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void lmx_train_dropout_mask(float *m, int64_t n, float p, uint64_t key, int li, int slot) {
    uint64_t s = key ^ ((uint64_t)(li + 1) * 0xD1B54A32D192ED03ull) ^ ((uint64_t)(slot + 1) * 0xABC98388FB8FAC03ull);
    float keep_v = 1.0f / (1.0f - p);
    for (int64_t i = 0; i < n; i++) {
        double u = (double)(splitmix(&s) >> 11) * (1.0 / 9007199254740992.0);
        m[i] = u >= p ? keep_v : 0.0f;
    }
}

/* ---- DoRA norms ---------------------------------------------------------- */

void lmx_dora_cache_clear(lmx_dora_cache *c) {
    if (!c) return;
    for (int i = 0; i < c->n; i++) free(c->norm[i]);
    free(c->norm);
    free(c->key);
    memset(c, 0, sizeof *c);
}

static lmx_status dora_norms(lmx_dora_cache *c, const lmx_linear *l, const lmx_lora *lo, float *out) {
    int64_t N = l->w.shape[0];
    for (int i = 0; c && i < c->n; i++)
        if (c->key[i] == lo->b.data) {
            memcpy(out, c->norm[i], (size_t)N * sizeof *out);
            return LMX_OK;
        }
    LMX_TRY(lmx_lora_dora_norms(l, lo, out));
    if (!c) return LMX_OK;
    if (c->n == c->cap) {
        int nc = c->cap ? 2 * c->cap : 32;
        const void **k = realloc(c->key, (size_t)nc * sizeof *k);
        if (!k) return lmx_err(LMX_ERR_NOMEM, "out of memory");
        c->key = k;
        float **v = realloc(c->norm, (size_t)nc * sizeof *v);
        if (!v) return lmx_err(LMX_ERR_NOMEM, "out of memory");
        c->norm = v;
        c->cap = nc;
    }
    float *keep_n = malloc((size_t)N * sizeof *keep_n);
    if (!keep_n) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    memcpy(keep_n, out, (size_t)N * sizeof *out);
    c->key[c->n] = lo->b.data;
    c->norm[c->n++] = keep_n;
    return LMX_OK;
}

/* inv = 1/‖W + s·b·a‖ per row, all in the device backend's memory: the
 * backend's kernel (lmx_backend.dora_norms, recomputed at a checkpointed
 * re-run: it is deterministic), or else W, a and b downloaded and the
 * host's norms uploaded (a backend without the kernel; the host's exact
 * arithmetic). */
static lmx_status dora_inv_device(lmx_backend *be, const lmx_linear *l, const lmx_lora *lo, lmx_array *inv) {
    if (be->dora_norms) {
        lmx_dora_norm_args a = {&l->w, &l->scales, &l->biases, l->group_size, &lo->a, &lo->b, lo->scale, inv};
        return be->dora_norms(be, &a);
    }
    int64_t N = l->w.shape[0];
    lmx_array h[5]; /* host copies of w, scales, biases, a, b */
    const lmx_array *src[5] = {&l->w, &l->scales, &l->biases, &lo->a, &lo->b};
    memset(h, 0, sizeof h);
    float *norm = malloc((size_t)(N ? N : 1) * sizeof *norm);
    lmx_status st = norm ? LMX_OK : lmx_err(LMX_ERR_NOMEM, "out of memory");
    for (int i = 0; i < 5 && !st; i++) st = lmx_array_to_host(src[i], &h[i]);
    if (!st) {
        lmx_linear hl = *l;
        lmx_lora hlo = *lo;
        hl.w = h[0];
        hl.scales = h[1];
        hl.biases = h[2];
        hlo.a = h[3];
        hlo.b = h[4];
        st = lmx_lora_dora_norms(&hl, &hlo, norm);
    }
    for (int64_t j = 0; !st && j < N; j++) norm[j] = 1.0f / norm[j];
    if (!st) st = lmx_backend_upload(be, inv->data, norm, (size_t)N * sizeof *norm);
    if (!st) st = lmx_backend_sync(be); /* the upload reads norm, freed below */
    for (int i = 0; i < 5; i++) lmx_array_release(&h[i]);
    free(norm);
    return st;
}

/* ---- layers ---------------------------------------------------------------- */

/* y = x·Wᵀ + b, or its LoRA / DoRA form (models/lora.h), recorded as
 * separate ops so a, b and m get gradients; li/slot name the module for
 * its dropout mask. */
static lmx_array *tlinear(fwd *f, int li, int slot, const lmx_array *x, const lmx_linear *l0) {
    const lmx_linear l = *l0;
    const lmx_lora *lo = l0->lora;
    int64_t M = rows(x), N = l.w.shape[0], K = l.w.shape[1];
    bool dora = lo && !lmx_array_empty(&lo->m);
    lmx_array *base = fresh(f, M, N);
    RUN(f, lmx_matmul_q(f->ex, base, x, &l.w, dora ? NULL : opt(&l.b), opt(&l.scales), opt(&l.biases),
                        l.group_size));
    if (!lo || f->st) return base;
    const lmx_array *xd = x;
    if (f->b->dropout && lo->dropout > 0) {
        if (!(lo->dropout < 1)) {
            f->st = lmx_err(LMX_ERR_INVALID_ARG, "lora: dropout %g must be in [0, 1)", (double)lo->dropout);
            return base;
        }
        lmx_array *mask = fresh(f, M, K), *xm = fresh(f, M, K);
        RUN(f, dropout_fill(f, mask, M * K, lo->dropout, li, slot));
        RUN(f, lmx_mul(f->ex, xm, x, mask));
        xd = xm;
    }
    int64_t R = lo->a.shape[0];
    lmx_array *t = fresh(f, M, R);
    RUN(f, lmx_matmul(f->ex, t, xd, &lo->a, NULL));
    if (on_device(f) && !dora) {
        /* y = base + scale·(t·bᵀ) accumulated straight onto base by one
         * node (LMX_OP_MATMUL_ACC, the scale inside it) instead of a [M, N]
         * product array, a scale and an add; base may be written over: no
         * vjp reads it (the matmul's needs x and W), and the tape passes
         * y's gradient on to it */
        RUN(f, lmx_matmul_acc(f->ex, base, t, &lo->b, lo->scale));
        return base;
    }
    lmx_array *y = fresh(f, M, N), *u = fresh(f, M, N), *us = fresh(f, M, N);
    RUN(f, lmx_matmul(f->ex, u, t, &lo->b, NULL));
    RUN(f, lmx_scale(f->ex, us, u, lo->scale));
    RUN(f, lmx_add(f->ex, y, base, us));
    if (!dora) return y;
    /* f = m · (1/‖W + s·b·a‖): the norm is a constant (stop_gradient) */
    lmx_array *inv = fresh(f, N, 0), *fac = fresh(f, N, 0), *yd = fresh(f, M, N);
    if (on_device(f)) {
        RUN(f, dora_inv_device(f->ex->backend, &l, lo, inv));
    } else {
        RUN(f, dora_norms(f->b->dora, &l, lo, f->st ? NULL : inv->data));
        if (!f->st)
            for (int64_t j = 0; j < N; j++) ((float *)inv->data)[j] = 1.0f / ((float *)inv->data)[j];
    }
    RUN(f, lmx_mul(f->ex, fac, &lo->m, inv));
    RUN(f, lmx_mul(f->ex, yd, y, fac));
    if (lmx_array_empty(&l.b)) return yd;
    lmx_array *yb = fresh(f, M, N);
    RUN(f, lmx_add(f->ex, yb, yd, &l.b));
    return yb;
}

static lmx_array *tnorm(fwd *f, const lmx_array *x, const lmx_array *w, const lmx_array *b) {
    const lmx_hparams *hp = &f->b->tm->m->hp;
    lmx_array *out = fresh(f, rows(x), x->shape[x->ndim - 1]);
    if (hp->norm == LMX_NORM_LAYER)
        RUN(f, lmx_layer_norm(f->ex, out, x, opt(w), b ? opt(b) : NULL, hp->norm_eps));
    else
        RUN(f, lmx_rms_norm(f->ex, out, x, opt(w), hp->norm_eps, hp->norm_add_one));
    return out;
}

static lmx_array *add(fwd *f, const lmx_array *a, const lmx_array *b) {
    lmx_array *out = fresh(f, rows(a), a->shape[a->ndim - 1]);
    RUN(f, lmx_add(f->ex, out, a, b));
    return out;
}

/* Module slot for the dropout stream: the first projection of the layer that
 * shares this adapter's `a` (fused qkv / gate_up rows are one module). */
static int slot_of(const lmx_layer *L, const lmx_linear *l) {
    const lmx_linear *all[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
    for (int i = 0; i < 7; i++)
        if (all[i] == l || (l->lora && all[i]->lora && all[i]->lora->a.data == l->lora->a.data)) return i;
    return 7;
}

static lmx_array *attention(fwd *f, int li, const lmx_array *h) {
    const lmx_train_batch *b = f->b;
    const lmx_hparams *hp = &b->tm->m->hp;
    const lmx_layer *L = &b->tm->m->layers[li];
    int64_t H = hp->n_head, Hkv = hp->n_kv_head, hd = hp->head_dim, Ti = b->Ti, M = (int64_t)b->B * Ti;
    lmx_array *q = tlinear(f, li, slot_of(L, &L->wq), h, &L->wq);
    lmx_array *k = tlinear(f, li, slot_of(L, &L->wk), h, &L->wk);
    lmx_array *v = tlinear(f, li, slot_of(L, &L->wv), h, &L->wv);
    if (hp->qk_norm) {
        lmx_array *qn = fresh(f, M * H, hd), *kn = fresh(f, M * Hkv, hd);
        RUN(f, lmx_rms_norm(f->ex, qn, view(f, q, 0, 2, M * H, hd, 0), &L->q_norm, hp->norm_eps,
                            hp->norm_add_one));
        RUN(f, lmx_rms_norm(f->ex, kn, view(f, k, 0, 2, M * Hkv, hd, 0), &L->k_norm, hp->norm_eps,
                            hp->norm_add_one));
        q = qn;
        k = kn;
    }
    int ri = hp->rope_idx[li];
    const lmx_rope_cfg *r = &hp->rope[ri];
    /* All B rows in three nodes: RoPE with period Ti (each row restarts at
     * position 0) and attention over B rows (a row sees only its own keys):
     * the same per-row arithmetic as one node per row, without per-row
     * views whose gradients the tape would gather (core/op_rows.h). */
    lmx_array *qr = fresh(f, M, H * hd), *kr = fresh(f, M, Hkv * hd), *attn = fresh(f, M, H * hd);
    lmx_array *q3 = view(f, q, 0, 3, M, H, hd), *k3 = view(f, k, 0, 3, M, Hkv, hd);
    lmx_array *qo = view(f, qr, 0, 3, M, H, hd), *ko = view(f, kr, 0, 3, M, Hkv, hd);
    RUN(f, lmx_rope_rows(f->ex, qo, q3, &b->inv_freq[ri], 0, Ti, r->dims, r->traditional, b->mscale[ri]));
    RUN(f, lmx_rope_rows(f->ex, ko, k3, &b->inv_freq[ri], 0, Ti, r->dims, r->traditional, b->mscale[ri]));
    lmx_array *v3 = view(f, v, 0, 3, M, Hkv, hd);
    RUN(f, lmx_attention_rows(f->ex, attn, qo, ko, v3, b->B, 0, hp->attn_scale, hp->attn_softcap, hp->window[li]));
    return tlinear(f, li, slot_of(L, &L->wo), attn, &L->wo);
}

static lmx_array *mlp(fwd *f, int li, const lmx_array *h) {
    const lmx_hparams *hp = &f->b->tm->m->hp;
    const lmx_layer *L = &f->b->tm->m->layers[li];
    lmx_array *up = tlinear(f, li, slot_of(L, &L->w_up), h, &L->w_up);
    lmx_array *act = fresh(f, rows(h), hp->n_ff);
    if (hp->mlp_gated) {
        lmx_array *gate = tlinear(f, li, slot_of(L, &L->w_gate), h, &L->w_gate);
        RUN(f, lmx_act(f->ex, act, gate, up, hp->act));
    } else {
        RUN(f, lmx_act(f->ex, act, up, NULL, hp->act));
    }
    return tlinear(f, li, slot_of(L, &L->w_down), act, &L->w_down);
}

lmx_status lmx_train_block(lmx_exec *ex, const lmx_train_batch *b, int li, const lmx_array *x, lmx_array *y) {
    fwd f = {.ex = ex, .b = b};
    const lmx_hparams *hp = &b->tm->m->hp;
    const lmx_layer *L = &b->tm->m->layers[li];
    lmx_array *h = tnorm(&f, x, &L->attn_norm, &L->attn_norm_b);
    lmx_array *o = attention(&f, li, h), *out;
    if (hp->sandwich_norm) o = tnorm(&f, o, &L->post_attn_norm, NULL);
    if (hp->parallel_block) {
        lmx_array *mo = mlp(&f, li, h);
        out = add(&f, add(&f, x, o), mo);
    } else {
        lmx_array *x1 = add(&f, x, o);
        lmx_array *mo = mlp(&f, li, tnorm(&f, x1, &L->ffn_norm, &L->ffn_norm_b));
        if (hp->sandwich_norm) mo = tnorm(&f, mo, &L->post_ffn_norm, NULL);
        out = add(&f, x1, mo);
    }
    hand_out(&f, out, y);
    fwd_end(&f);
    return f.st;
}

lmx_status lmx_train_embed(lmx_exec *ex, const lmx_train_batch *b, lmx_array *x) {
    lmx_exec ex0 = {ex->backend, NULL};
    fwd f = {.ex = &ex0, .b = b};
    const lmx_transformer *m = b->tm->m;
    const lmx_linear *E = &m->tok_embd;
    lmx_array *e = fresh(&f, (int64_t)b->B * b->Ti, m->hp.n_embd);
    RUN(&f, lmx_get_rows_q(&ex0, e, &E->w, &b->ids, opt(&E->scales), opt(&E->biases), E->group_size));
    if (m->hp.embed_scale != 1.0f) {
        lmx_array *s = fresh(&f, (int64_t)b->B * b->Ti, m->hp.n_embd);
        RUN(&f, lmx_scale(&ex0, s, e, m->hp.embed_scale));
        e = s;
    }
    hand_out(&f, e, x);
    fwd_end(&f);
    return f.st;
}

lmx_status lmx_train_head(lmx_exec *ex, const lmx_train_batch *b, const lmx_array *x, lmx_array *logits) {
    fwd f = {.ex = ex, .b = b};
    const lmx_transformer *m = b->tm->m;
    lmx_array *h = tnorm(&f, x, &m->out_norm, &m->out_norm_b);
    lmx_array *lg = tlinear(&f, m->hp.n_layer, 0, h, &m->lm_head);
    if (m->hp.final_softcap > 0) {
        lmx_array *c = fresh(&f, rows(lg), m->hp.n_vocab);
        RUN(&f, lmx_softcap(ex, c, lg, m->hp.final_softcap));
        lg = c;
    }
    hand_out(&f, lg, logits);
    fwd_end(&f);
    return f.st;
}

lmx_status lmx_train_forward(lmx_exec *ex, const lmx_train_batch *b, lmx_array *logits) {
    lmx_exec ex0 = {ex->backend, NULL};
    const lmx_train_model *tm = b->tm;
    lmx_array x = {0};
    LMX_TRY(lmx_train_embed(ex, b, &x));
    lmx_status st = LMX_OK;
    for (int li = 0; li < tm->m->hp.n_layer && !st; li++) {
        lmx_array y = {0};
        st = lmx_train_block(li >= tm->first_layer ? ex : &ex0, b, li, &x, &y);
        lmx_array_release(&x);
        x = y;
    }
    if (!st) st = lmx_train_head(ex, b, &x, logits);
    lmx_array_release(&x);
    return st;
}

lmx_status lmx_train_loss(lmx_exec *ex, const lmx_train_batch *b, const lmx_array *logits, lmx_array *loss) {
    int64_t one = 1;
    LMX_TRY(lmx_tape_alloc_on(ex->backend, loss, 1, &one));
    lmx_status st = lmx_cross_entropy(ex, loss, logits, &b->targets, &b->mask);
    if (st) lmx_array_release(loss);
    return st;
}

/* ---- setup -------------------------------------------------------------- */

/* Layer index of a linear or array inside m (n_layer: outside the blocks). */
static int layer_of(const lmx_transformer *m, const void *p) {
    for (int li = 0; li < m->hp.n_layer; li++) {
        const lmx_layer *L = &m->layers[li];
        if ((const char *)p >= (const char *)L && (const char *)p < (const char *)(L + 1)) return li;
    }
    return m->hp.n_layer;
}

static bool host_array(const lmx_array *a) { return !a->buf || a->buf->kind != LMX_BUFFER_DEVICE; }

lmx_status lmx_train_model_init(lmx_train_model *tm, const lmx_transformer *m, const lmx_adapters *ad) {
    memset(tm, 0, sizeof *tm);
    tm->m = m;
    tm->ad = ad;
    tm->first_layer = m->hp.n_layer;
    if (m->hp.n_expert > 0)
        return lmx_err(LMX_ERR_UNSUPPORTED, "train: mixture-of-experts models (%s) cannot be fine-tuned yet",
                       m->hp.arch);
    if (m->tok_embd.lora) return lmx_err(LMX_ERR_UNSUPPORTED, "train: adapters on the embedding are not supported");
    for (int li = 0; li < m->hp.n_layer; li++) {
        const lmx_layer *L = &m->layers[li];
        const lmx_linear *all[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (int i = 0; i < 7; i++)
            if (all[i]->lora && li < tm->first_layer) tm->first_layer = li;
    }
    for (int i = 0; ad && i < ad->n; i++) {
        const lmx_adapter_entry *e = &ad->e[i];
        int li = e->param ? layer_of(m, e->param) : e->n_targets ? layer_of(m, e->targets[0]) : m->hp.n_layer;
        if (li < tm->first_layer) tm->first_layer = li;
        const lmx_array *tr[] = {&e->lora.a, &e->lora.b, &e->lora.m, &e->full, &e->full_bias};
        for (int j = 0; j < 5; j++) {
            if (lmx_array_empty(tr[j])) continue;
            if (tr[j]->dtype != LMX_F32 || !lmx_array_is_contiguous(tr[j]) || !host_array(tr[j]))
                return lmx_err(LMX_ERR_INVALID_ARG, "train: %s: trainable arrays must be contiguous f32 in host memory",
                               e->name);
        }
    }
    return LMX_OK;
}

lmx_status lmx_train_batch_init(lmx_train_batch *b, const lmx_train_model *tm, const int32_t *tokens, int B, int T,
                                const int32_t *offsets, const int32_t *lengths) {
    memset(b, 0, sizeof *b);
    b->tm = tm;
    if (B <= 0 || T < 2) return lmx_err(LMX_ERR_INVALID_ARG, "train: a batch needs B >= 1 rows of T >= 2 tokens");
    const lmx_hparams *hp = &tm->m->hp;
    int Ti = T - 1;
    b->B = B;
    b->Ti = Ti;
    int64_t n = (int64_t)B * Ti, sh[1] = {n};
    lmx_status st = lmx_array_alloc(&b->ids, LMX_I32, 1, sh);
    if (!st) st = lmx_array_alloc(&b->targets, LMX_I32, 1, sh);
    if (!st) st = lmx_array_alloc(&b->mask, LMX_F32, 1, sh);
    for (int r = 0; r < B && !st; r++) {
        for (int t = 0; t < T; t++)
            if (tokens[(int64_t)r * T + t] < 0 || tokens[(int64_t)r * T + t] >= hp->n_vocab)
                st = lmx_err(LMX_ERR_INVALID_ARG, "train: row %d position %d: token id %d outside [0, %d)", r, t,
                             tokens[(int64_t)r * T + t], hp->n_vocab);
        for (int t = 0; t < Ti && !st; t++) {
            int64_t i = (int64_t)r * Ti + t;
            ((int32_t *)b->ids.data)[i] = tokens[(int64_t)r * T + t];
            ((int32_t *)b->targets.data)[i] = tokens[(int64_t)r * T + t + 1];
            int s = t + 1; /* mlx-lm: steps = arange(1, Ti + 1) */
            bool on = (!offsets || s >= offsets[r]) && (!lengths || s <= lengths[r]);
            ((float *)b->mask.data)[i] = on ? 1.0f : 0.0f;
            b->ntoks += on;
        }
    }
    bool used[2] = {false, false};
    for (int l = 0; l < hp->n_layer; l++) used[hp->rope_idx[l] & 1] = true;
    for (int i = 0; i < 2 && !st; i++) {
        if (!used[i]) continue;
        int64_t half[1] = {hp->rope[i].dims / 2};
        st = lmx_array_alloc(&b->inv_freq[i], LMX_F32, 1, half);
        if (!st) lmx_rope_inv_freq(&hp->rope[i], Ti, b->inv_freq[i].data, &b->mscale[i]);
    }
    if (st) lmx_train_batch_free(b);
    return st;
}

lmx_status lmx_train_batch_to_backend(lmx_train_batch *b, lmx_backend *be) {
    if (lmx_backend_is_host(be)) return LMX_OK;
    lmx_array *all[] = {&b->ids, &b->targets, &b->mask, &b->inv_freq[0], &b->inv_freq[1]};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
        if (lmx_array_empty(all[i])) continue;
        lmx_array d;
        LMX_TRY(lmx_array_to_backend(be, &d, all[i]));
        lmx_array_release(all[i]);
        *all[i] = d;
    }
    return lmx_backend_sync(be); /* the uploads read host memory that goes now */
}

void lmx_train_batch_free(lmx_train_batch *b) {
    lmx_array_release(&b->ids);
    lmx_array_release(&b->targets);
    lmx_array_release(&b->mask);
    lmx_array_release(&b->inv_freq[0]);
    lmx_array_release(&b->inv_freq[1]);
}

/* Whether a's memory lies inside one of the adapters' trainable arrays (a
 * full fine-tune swaps views of its copies into the model). */
static bool trainable_mem(const lmx_train_model *tm, const lmx_array *a) {
    for (int i = 0; tm->ad && i < tm->ad->n; i++) {
        const lmx_adapter_entry *e = &tm->ad->e[i];
        const lmx_array *all[] = {&e->lora.a, &e->lora.b, &e->lora.m, &e->full, &e->full_bias};
        for (int j = 0; j < 5; j++) {
            const uint8_t *p = all[j]->data, *q = a->data;
            if (p && q >= p && q < p + lmx_array_nbytes(all[j])) return true;
        }
    }
    return false;
}

static lmx_status freeze(lmx_tape *t, const lmx_train_model *tm, const lmx_array *a) {
    if (lmx_array_empty(a) || trainable_mem(tm, a)) return LMX_OK;
    return lmx_tape_freeze(t, a);
}

lmx_status lmx_train_freeze(lmx_tape *t, const lmx_train_model *tm) {
    const lmx_transformer *m = tm->m;
    const lmx_array *top[] = {&m->tok_embd.w, &m->out_norm, &m->out_norm_b, &m->lm_head.w, &m->lm_head.b};
    for (size_t i = 0; i < sizeof top / sizeof *top; i++) LMX_TRY(freeze(t, tm, top[i]));
    for (int li = 0; li < m->hp.n_layer; li++) {
        const lmx_layer *L = &m->layers[li];
        const lmx_array *arr[] = {&L->attn_norm, &L->attn_norm_b, &L->q_norm, &L->k_norm, &L->post_attn_norm,
                                  &L->ffn_norm, &L->ffn_norm_b, &L->post_ffn_norm};
        for (size_t i = 0; i < sizeof arr / sizeof *arr; i++) LMX_TRY(freeze(t, tm, arr[i]));
        const lmx_linear *lin[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof lin / sizeof *lin; i++) {
            LMX_TRY(freeze(t, tm, &lin[i]->w));
            LMX_TRY(freeze(t, tm, &lin[i]->b));
        }
    }
    return LMX_OK;
}

lmx_status lmx_train_params(const lmx_adapters *ad, lmx_array ***out, int *n) {
    *out = NULL;
    *n = 0;
    int cap = ad ? 5 * ad->n : 0;
    lmx_array **p = malloc((size_t)(cap ? cap : 1) * sizeof *p);
    if (!p) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    int k = 0;
    for (int i = 0; ad && i < ad->n; i++) {
        lmx_adapter_entry *e = &ad->e[i];
        lmx_array *all[] = {&e->lora.a, &e->lora.b, &e->lora.m, &e->full, &e->full_bias};
        for (int j = 0; j < 5; j++)
            if (!lmx_array_empty(all[j])) p[k++] = all[j];
    }
    *out = p;
    *n = k;
    return LMX_OK;
}
