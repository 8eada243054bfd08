/* transformer_device.c - moves a loaded model's weights onto a device
 * backend once, after loading: every tensor of the model is copied into
 * backend memory and the host view (of the file mapping) is released.
 * Tensors that share bytes (a tied lm_head, repeated views) share one device
 * copy. Quantized weights are refused up front (no device kernels yet), so a
 * failed load costs no upload. */
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
        u->st = lmx_err(LMX_ERR_UNSUPPORTED, "device %s: weights of dtype %s have no kernels on this device yet",
                        u->b->name, t->name);
}

static void check_lin(uploader *u, lmx_linear *l) {
    check_arr(u, &l->w);
    check_arr(u, &l->b);
}

lmx_status lmx_transformer_to_backend(lmx_backend *b, lmx_transformer *m) {
    if (lmx_backend_is_host(b)) return LMX_OK;
    uploader u = {b, NULL, 0, 0, LMX_OK};
    walk(m, check_lin, check_arr, &u);
    if (!u.st) walk(m, up_lin, up, &u);
    if (!u.st) u.st = lmx_backend_sync(b);
    free(u.e);
    return u.st;
}
