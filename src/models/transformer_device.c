/* transformer_device.c - moves a loaded model's weights onto a device
 * backend once, after loading: every tensor of the model is copied into
 * backend memory and the host view (of the file mapping) is released.
 * Tensors that share bytes (a tied lm_head, repeated views) share one device
 * copy. Quantized weights (MLX packed with their scales/biases, GGUF blocks)
 * go up as they are stored; before any upload every quantized linear is
 * shown to the backend's supports() as the op it will run (matmul; get_rows
 * for the embedding table), so a format the device lacks fails the load up
 * front (and `--device auto` picks the CPU) without a wasted upload. */
#include "models/model.h"

#include <stdlib.h>

typedef struct {
    const void *host;
    size_t bytes;
    lmx_array dev;
} up_entry;

typedef struct {
    lmx_backend *b;
    up_entry *e;
    size_t n, cap;
    lmx_status st;
} uploader;

static void up(uploader *u, lmx_array *a) {
    if (u->st || lmx_array_empty(a)) return;
    if (a->buf && a->buf->kind == LMX_BUFFER_DEVICE) return; /* a fused group's view, already up */
    size_t bytes = lmx_array_nbytes(a);
    for (size_t i = 0; i < u->n; i++)
        if (u->e[i].host == a->data && u->e[i].bytes == bytes && u->e[i].dev.dtype == a->dtype) {
            lmx_array dev = u->e[i].dev;
            lmx_array_retain(&dev);
            memcpy(dev.shape, a->shape, sizeof dev.shape);
            memcpy(dev.strides, a->strides, sizeof dev.strides);
            dev.ndim = a->ndim;
            lmx_array_release(a);
            *a = dev;
            return;
        }
    if (u->n == u->cap) {
        size_t nc = u->cap ? 2 * u->cap : 256;
        up_entry *ne = realloc(u->e, nc * sizeof *ne);
        if (!ne) {
            u->st = lmx_err(LMX_ERR_NOMEM, "out of memory");
            return;
        }
        u->e = ne;
        u->cap = nc;
    }
    lmx_array dev;
    u->st = lmx_array_to_backend(u->b, &dev, a);
    if (u->st) return;
    u->e[u->n].host = a->data;
    u->e[u->n].bytes = bytes;
    u->e[u->n].dev = dev; /* borrowed: the model holds the reference */
    u->n++;
    lmx_array_release(a);
    *a = dev;
}

static void up_lin(uploader *u, lmx_linear *l) {
    up(u, &l->w);
    up(u, &l->b);
    up(u, &l->scales);
    up(u, &l->biases);
}

/* ---- fused groups: q|k|v and gate|up rows in one device allocation ---------
 * A decode step then runs one GEMV per group (transformer.c, fused_rows):
 * fewer launches, and the small k/v matrices stop paying a whole launch's
 * ramp-up. Each member becomes a row view of the concatenation, so every
 * other path (prefill, batches) sees the same linears as before. */

/* Component c (0 w, 1 b, 2 scales, 3 biases) of a linear. */
static lmx_array *comp(lmx_linear *l, int c) {
    return c == 0 ? &l->w : c == 1 ? &l->b : c == 2 ? &l->scales : &l->biases;
}

static bool fusable(lmx_linear **ls, int n) {
    for (int i = 0; i < n; i++) {
        if (ls[i]->lora || ls[i]->group_size != ls[0]->group_size) return false;
        for (int c = 0; c < 4; c++) {
            lmx_array *a = comp(ls[i], c), *a0 = comp(ls[0], c);
            if (lmx_array_empty(a) != lmx_array_empty(a0)) return false;
            if (lmx_array_empty(a)) continue;
            if (a->dtype != a0->dtype || a->ndim != a0->ndim || a->ndim < 1 || a->ndim > 2 ||
                !lmx_array_is_contiguous(a) || (a->buf && a->buf->kind == LMX_BUFFER_DEVICE))
                return false;
            if (a->ndim == 2 && a->shape[1] != a0->shape[1]) return false;
        }
    }
    return true;
}

static void up_group(uploader *u, lmx_linear **ls, int n) {
    if (u->st || !fusable(ls, n)) return;
    for (int c = 0; c < 4 && !u->st; c++) {
        lmx_array *a0 = comp(ls[0], c);
        if (lmx_array_empty(a0)) continue;
        int64_t shape[2] = {0, a0->ndim == 2 ? a0->shape[1] : 1};
        for (int i = 0; i < n; i++) shape[0] += comp(ls[i], c)->shape[0];
        lmx_array cat;
        u->st = lmx_array_alloc_on(u->b, &cat, a0->dtype, a0->ndim, shape);
        if (u->st) return;
        int64_t r0 = 0;
        size_t off = 0;
        for (int i = 0; i < n && !u->st; i++) {
            lmx_array *a = comp(ls[i], c), v;
            size_t bytes = lmx_array_nbytes(a);
            u->st = lmx_backend_upload(u->b, (uint8_t *)cat.data + off, a->data, bytes);
            if (!u->st) u->st = lmx_array_rows(&v, &cat, r0, a->shape[0]);
            if (u->st) break;
            lmx_array_release(a);
            *a = v;
            r0 += v.shape[0];
            off += bytes;
        }
        if (!u->st) u->st = lmx_backend_relayout(u->b, &cat); /* once, over the whole group */
        lmx_array_release(&cat); /* the views hold it */
    }
}

static void up_fused(uploader *u, lmx_transformer *m) {
    const char *env = getenv("LMX_CUDA_FUSE"); /* "0": q, k, v, gate, up uploaded apart (A/B timing) */
    if (env && !strcmp(env, "0")) return;
    for (int l = 0; l < m->hp.n_layer && m->layers && !u->st; l++) {
        lmx_layer *L = &m->layers[l];
        lmx_linear *qkv[3] = {&L->wq, &L->wk, &L->wv}, *gu[2] = {&L->w_gate, &L->w_up};
        up_group(u, qkv, 3);
        if (m->hp.mlp_gated && m->hp.n_expert == 0) up_group(u, gu, 2);
    }
}

/* Calls fn on every linear and plain tensor of m. */
static void walk(lmx_transformer *m, void (*lin)(uploader *, lmx_linear *), void (*arr)(uploader *, lmx_array *),
                 uploader *u) {
    lin(u, &m->tok_embd);
    arr(u, &m->out_norm);
    arr(u, &m->out_norm_b);
    lin(u, &m->lm_head);
    for (int l = 0; l < m->hp.n_layer && m->layers; l++) {
        lmx_layer *L = &m->layers[l];
        lmx_array *all[] = {&L->attn_norm, &L->attn_norm_b, &L->q_norm, &L->k_norm, &L->post_attn_norm,
                            &L->ffn_norm, &L->ffn_norm_b, &L->post_ffn_norm};
        for (size_t i = 0; i < sizeof all / sizeof *all; i++) arr(u, all[i]);
        lmx_linear *lins[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down, &L->router};
        for (size_t i = 0; i < sizeof lins / sizeof *lins; i++) lin(u, lins[i]);
        for (int e = 0; e < m->hp.n_expert; e++) {
            if (L->exp_gate) lin(u, &L->exp_gate[e]);
            if (L->exp_up) lin(u, &L->exp_up[e]);
            if (L->exp_down) lin(u, &L->exp_down[e]);
        }
    }
}

static void check_arr(uploader *u, lmx_array *a) {
    if (u->st || lmx_array_empty(a)) return;
    const lmx_dtype_traits *t = lmx_dtype_info(a->dtype);
    if (t->is_quant || t->needs_scales)
        u->st = lmx_err(LMX_ERR_UNSUPPORTED, "device %s: a plain tensor of dtype %s has no kernels on this device",
                        u->b->name, t->name);
}

static const lmx_array *opt_arr(const lmx_array *a) { return lmx_array_empty(a) ? NULL : a; }

/* Asks the backend whether it runs a quantized linear as op (stand-in f32
 * activations of one row; supports() reads dtypes and shapes only). */
static void check_quant_op(uploader *u, const lmx_linear *l, lmx_op op) {
    if (u->st || lmx_array_empty(&l->w)) return;
    const lmx_dtype_traits *t = lmx_dtype_info(l->w.dtype);
    if (!t->is_quant && !t->needs_scales) return;
    int64_t K = l->w.shape[l->w.ndim - 1], N = l->w.shape[0];
    lmx_array x, out, ids;
    memset(&x, 0, sizeof x);
    memset(&out, 0, sizeof out);
    memset(&ids, 0, sizeof ids);
    int64_t sx[2] = {1, K}, so[2] = {1, op == LMX_OP_MATMUL ? N : K}, si[1] = {1};
    lmx_array_set_contiguous(&x, LMX_F32, 2, sx);
    lmx_array_set_contiguous(&out, LMX_F32, 2, so);
    lmx_array_set_contiguous(&ids, LMX_I32, 1, si);
    lmx_node n;
    memset(&n, 0, sizeof n);
    n.op = op;
    n.out = &out;
    n.ip[0] = l->group_size;
    if (op == LMX_OP_MATMUL) {
        const lmx_array *src[5] = {&x, &l->w, opt_arr(&l->b), opt_arr(&l->scales), opt_arr(&l->biases)};
        memcpy(n.src, src, sizeof src);
    } else {
        const lmx_array *src[4] = {&l->w, &ids, opt_arr(&l->scales), opt_arr(&l->biases)};
        memcpy(n.src, src, sizeof src);
    }
    if (!u->b->kernels[op] || (u->b->supports && !u->b->supports(u->b, &n)))
        u->st = lmx_err(LMX_ERR_UNSUPPORTED, "device %s: no %s kernel for weights of dtype %s [%lld, %lld] (group %d)",
                        u->b->name, lmx_op_defs[op].name, t->name, (long long)N, (long long)K, l->group_size);
}

static void check_lin(uploader *u, lmx_linear *l) {
    check_quant_op(u, l, LMX_OP_MATMUL);
    check_arr(u, &l->b);
}

static void check_embedding(uploader *u, lmx_linear *l) {
    check_quant_op(u, l, LMX_OP_GET_ROWS);
    check_arr(u, &l->b);
}

lmx_status lmx_transformer_to_backend(lmx_backend *b, lmx_transformer *m) {
    if (lmx_backend_is_host(b)) return LMX_OK;
    uploader u = {b, NULL, 0, 0, LMX_OK};
    check_embedding(&u, &m->tok_embd);
    walk(m, check_lin, check_arr, &u);
    if (!u.st) up_fused(&u, m);
    if (!u.st) walk(m, up_lin, up, &u);
    if (!u.st) u.st = lmx_backend_sync(b);
    free(u.e);
    return u.st;
}
