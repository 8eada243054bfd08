/* adapters.c - which modules of a model get an adapter (mlx-lm's
 * linear_to_lora_layers), their initialisation, and attaching them. The
 * MLX module paths come from each family's names table (arch_*.c), which
 * holds the HF names: the same paths mlx-lm's models use for these families. */
#include "models/adapters.h"

#include "models/arch.h"
#include "quant/quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One Linear module: the model's linear(s) it feeds and their first rows. */
typedef struct amod {
    char path[160]; /* full MLX path (prefix included) */
    const char *rel; /* path inside the block; NULL for a model-level module */
    int layer;
    lmx_linear *t[4];
    int64_t r0[4];
    int nt;
} amod;

typedef struct modlist {
    amod *v;
    int n, cap;
} modlist;

static lmx_status push(modlist *ml, const amod *m) {
    if (ml->n == ml->cap) {
        int c = ml->cap ? 2 * ml->cap : 64;
        amod *nv = realloc(ml->v, (size_t)c * sizeof *nv);
        if (!nv) return lmx_err(LMX_ERR_NOMEM, "adapters: out of memory");
        ml->v = nv;
        ml->cap = c;
    }
    ml->v[ml->n++] = *m;
    return LMX_OK;
}

/* Adds module rel of layer l over up to three (possibly row-split) linears. */
static lmx_status add_mod(modlist *ml, const char *prefix, int l, const char *rel, lmx_linear *a, lmx_linear *b,
                          lmx_linear *c) {
    if (!rel || !a || lmx_array_empty(&a->w)) return LMX_OK;
    amod m;
    memset(&m, 0, sizeof m);
    snprintf(m.path, sizeof m.path, "%smodel.layers.%d.%s", prefix, l, rel);
    m.rel = rel;
    m.layer = l;
    lmx_linear *t[3] = {a, b, c};
    int64_t row = 0;
    for (int i = 0; i < 3 && t[i]; i++) {
        m.t[m.nt] = t[i];
        m.r0[m.nt++] = row;
        row += t[i]->w.shape[0];
    }
    return push(ml, &m);
}

/* Every Linear module of the model (blocks in order, then lm_head). */
static lmx_status list_modules(lmx_transformer *m, const char *prefix, modlist *ml) {
    const lmx_arch *arch = lmx_arch_find(m->hp.arch);
    if (!arch) return lmx_err(LMX_ERR_UNSUPPORTED, "adapters: model_type '%s' has no module table", m->hp.arch);
    const lmx_arch_names *nm = arch->names;
    for (int l = 0; l < m->hp.n_layer; l++) {
        lmx_layer *L = &m->layers[l];
        if (nm->qkv_fused) {
            LMX_TRY(add_mod(ml, prefix, l, nm->qkv_fused, &L->wq, &L->wk, &L->wv));
        } else {
            LMX_TRY(add_mod(ml, prefix, l, nm->q, &L->wq, NULL, NULL));
            LMX_TRY(add_mod(ml, prefix, l, nm->k, &L->wk, NULL, NULL));
            LMX_TRY(add_mod(ml, prefix, l, nm->v, &L->wv, NULL, NULL));
        }
        LMX_TRY(add_mod(ml, prefix, l, nm->o, &L->wo, NULL, NULL));
        if (nm->gate_up_fused) {
            LMX_TRY(add_mod(ml, prefix, l, nm->gate_up_fused, &L->w_gate, &L->w_up, NULL));
        } else {
            if (m->hp.mlp_gated) LMX_TRY(add_mod(ml, prefix, l, nm->gate, &L->w_gate, NULL, NULL));
            LMX_TRY(add_mod(ml, prefix, l, nm->up, &L->w_up, NULL, NULL));
        }
        LMX_TRY(add_mod(ml, prefix, l, nm->down, &L->w_down, NULL, NULL));
    }
    /* A tied head is the embedding (mlx-lm: embed_tokens.as_linear), no module. */
    if (!m->hp.tied && !lmx_array_empty(&m->lm_head.w) && m->lm_head.w.data != m->tok_embd.w.data) {
        amod h;
        memset(&h, 0, sizeof h);
        snprintf(h.path, sizeof h.path, "%slm_head", prefix);
        h.layer = -1;
        h.t[0] = &m->lm_head;
        h.nt = 1;
        LMX_TRY(push(ml, &h));
    }
    return LMX_OK;
}

/* ---- entries ------------------------------------------------------------------ */

static lmx_status grow(lmx_adapters *ad, int *cap) {
    if (ad->n < *cap) return LMX_OK;
    int c = *cap ? 2 * *cap : 64;
    lmx_adapter_entry *ne = realloc(ad->e, (size_t)c * sizeof *ne);
    if (!ne) return lmx_err(LMX_ERR_NOMEM, "adapters: out of memory");
    ad->e = ne;
    *cap = c;
    return LMX_OK;
}

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t name_hash(const char *s) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ULL;
    return h;
}

lmx_dtype lmx_linear_float_dtype(const lmx_linear *l) {
    const lmx_dtype_traits *tr = lmx_dtype_info(l->w.dtype);
    if (!lmx_array_empty(&l->scales)) {
        const lmx_dtype_traits *st = lmx_dtype_info(l->scales.dtype);
        return st->is_float ? l->scales.dtype : LMX_BF16;
    }
    return tr->is_quant ? LMX_F32 : l->w.dtype;
}

lmx_status lmx_linear_weight_f32(const lmx_linear *l, float *out) {
    if (lmx_array_empty(&l->scales)) return lmx_array_to_f32(&l->w, out);
    const lmx_dtype_traits *wt = lmx_dtype_info(l->w.dtype);
    lmx_qmode mode = l->scales.dtype == LMX_E4M3   ? LMX_QMODE_NVFP4
                     : l->scales.dtype == LMX_E8M0 ? (wt->bits == 8 ? LMX_QMODE_MXFP8 : LMX_QMODE_MXFP4)
                                                   : LMX_QMODE_AFFINE;
    lmx_dtype dt = lmx_linear_float_dtype(l);
    int64_t n = lmx_array_numel(&l->w);
    void *tmp = malloc(lmx_dtype_bytes(dt, n));
    if (!tmp) return lmx_err(LMX_ERR_NOMEM, "adapters: out of memory");
    lmx_status s = lmx_dequantize(mode, wt->bits, l->group_size, dt, l->w.data, l->scales.data,
                                  lmx_array_empty(&l->biases) ? NULL : l->biases.data, n, tmp);
    if (!s) lmx_dtype_info(dt)->to_f32(tmp, out, n);
    free(tmp);
    return s;
}

static lmx_adapter_entry *new_entry(lmx_adapters *ad, const char *name, int layer);

/* lmx_linear_weight_f32 of a linear whose arrays may be in device memory
 * (a model moved to a GPU before its adapters were made). */
static lmx_status weight_f32_any(const lmx_linear *l, float *out) {
    lmx_linear hl = *l; /* its three arrays are replaced (and owned) below */
    memset(&hl.w, 0, sizeof hl.w);
    memset(&hl.scales, 0, sizeof hl.scales);
    memset(&hl.biases, 0, sizeof hl.biases);
    lmx_status st = lmx_array_to_host(&l->w, &hl.w);
    if (!st) st = lmx_array_to_host(&l->scales, &hl.scales);
    if (!st) st = lmx_array_to_host(&l->biases, &hl.biases);
    if (!st) st = lmx_linear_weight_f32(&hl, out);
    lmx_array_release(&hl.w);
    lmx_array_release(&hl.scales);
    lmx_array_release(&hl.biases);
    return st;
}

/* A LoRA/DoRA entry for module md. */
static lmx_status init_lora(lmx_adapters *ad, const amod *md, uint64_t seed, lmx_adapter_entry *e) {
    const lmx_adapter_config *c = &ad->cfg;
    int64_t in = md->t[0]->w.shape[1], out = 0;
    for (int i = 0; i < md->nt; i++) {
        if (md->t[i]->w.ndim != 2 || md->t[i]->w.shape[1] != in)
            return lmx_err(LMX_ERR_SHAPE, "adapters: module '%s': row views disagree on the input size", md->path);
        out += md->t[i]->w.shape[0];
    }
    int64_t sa[2] = {c->rank, in}, sb[2] = {out, c->rank};
    LMX_TRY(lmx_array_alloc(&e->lora.a, LMX_F32, 2, sa));
    LMX_TRY(lmx_array_alloc(&e->lora.b, LMX_F32, 2, sb)); /* zeros */
    e->lora.scale = c->scale;
    e->lora.dropout = c->dropout;
    float bound = 1.0f / sqrtf((float)in), *a = e->lora.a.data;
    uint64_t st = seed ^ name_hash(md->path);
    for (int64_t i = 0; i < c->rank * in; i++) {
        float u = (float)(splitmix64(&st) >> 40) * (1.0f / 16777216.0f); /* [0, 1) */
        a[i] = -bound + 2.0f * bound * u;
    }
    if (c->type != LMX_FT_DORA) return LMX_OK;
    int64_t sm[1] = {out};
    LMX_TRY(lmx_array_alloc(&e->lora.m, LMX_F32, 1, sm));
    float *m = e->lora.m.data;
    for (int i = 0; i < md->nt; i++) {
        int64_t rows = md->t[i]->w.shape[0];
        float *w = malloc((size_t)(rows * in) * sizeof *w);
        if (!w) return lmx_err(LMX_ERR_NOMEM, "adapters: out of memory");
        lmx_status s = weight_f32_any(md->t[i], w);
        for (int64_t r = 0; !s && r < rows; r++) {
            double acc = 0;
            for (int64_t k = 0; k < in; k++) acc += (double)w[r * in + k] * w[r * in + k];
            m[md->r0[i] + r] = (float)sqrt(acc);
        }
        free(w);
        if (s) return lmx_err_prefix(s, "adapters: module '%s': ", md->path);
    }
    return LMX_OK;
}

static lmx_status add_lora(lmx_adapters *ad, int *cap, const amod *md, uint64_t seed) {
    for (int i = 0; i < ad->n; i++)
        if (!strcmp(ad->e[i].name, md->path)) return LMX_OK; /* matched twice (relative and full key) */
    for (int i = 0; i < md->nt; i++)
        if (lmx_dtype_info(md->t[i]->w.dtype)->is_quant && lmx_array_empty(&md->t[i]->scales))
            return lmx_err(LMX_ERR_UNSUPPORTED, "adapters: module '%s': GGUF block weights cannot take adapters",
                           md->path);
    LMX_TRY(grow(ad, cap));
    lmx_adapter_entry *e = new_entry(ad, md->path, md->layer);
    e->n_targets = md->nt;
    for (int i = 0; i < md->nt; i++) {
        e->targets[i] = md->t[i];
        e->rows[i] = md->r0[i];
    }
    e->file_dtype = LMX_F32;
    return init_lora(ad, md, seed, e);
}

/* a's elements as f32 into out; an array in device memory (a model moved
 * to a GPU before its adapters were made) is downloaded first. */
static lmx_status to_f32_any(const lmx_array *a, float *out) {
    lmx_array h;
    LMX_TRY(lmx_array_to_host(a, &h));
    lmx_status st = lmx_array_to_f32(&h, out);
    lmx_array_release(&h);
    return st;
}

/* f32 copy of arrays p[0..np) stacked by rows (row blocks of one tensor). */
static lmx_status copy_rows(const char *name, lmx_array *const *p, int np, lmx_array *dst) {
    int64_t rows = 0;
    for (int i = 0; i < np; i++) {
        const lmx_dtype_traits *tr = lmx_dtype_info(p[i]->dtype);
        if (tr->is_quant || !tr->is_float)
            return lmx_err(LMX_ERR_UNSUPPORTED,
                           "adapters: full fine-tuning of '%s': quantized weights cannot be trained (%s)", name,
                           tr->name);
        if (!lmx_array_is_contiguous(p[i]) || p[i]->ndim != p[0]->ndim || p[i]->dtype != p[0]->dtype ||
            (p[i]->ndim == 2 && p[i]->shape[1] != p[0]->shape[1]))
            return lmx_err(LMX_ERR_SHAPE, "adapters: full fine-tuning of '%s': row blocks disagree", name);
        rows += p[i]->shape[0];
    }
    int64_t shape[2] = {rows, p[0]->ndim == 2 ? p[0]->shape[1] : 0};
    LMX_TRY(lmx_array_alloc(dst, LMX_F32, p[0]->ndim, shape));
    float *d = dst->data;
    for (int i = 0; i < np; i++) {
        LMX_TRY(to_f32_any(p[i], d));
        d += lmx_array_numel(p[i]);
    }
    return LMX_OK;
}

static lmx_adapter_entry *new_entry(lmx_adapters *ad, const char *name, int layer) {
    lmx_adapter_entry *e = &ad->e[ad->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->name, sizeof e->name, "%s", name);
    e->layer = layer;
    return e;
}

/* Full fine-tuning of a Linear module: weight (and bias) rows of its targets. */
static lmx_status add_full_linear(lmx_adapters *ad, int *cap, const amod *md) {
    lmx_array *w[4], *b[4];
    int nb = 0;
    for (int i = 0; i < md->nt; i++) {
        w[i] = &md->t[i]->w;
        if (!lmx_array_empty(&md->t[i]->b)) b[nb++] = &md->t[i]->b;
    }
    if (nb && nb != md->nt)
        return lmx_err(LMX_ERR_SHAPE, "adapters: '%s': some row views have a bias, some not", md->path);
    LMX_TRY(grow(ad, cap));
    lmx_adapter_entry *e = new_entry(ad, md->path, md->layer);
    e->n_targets = md->nt;
    for (int i = 0; i < md->nt; i++) {
        e->targets[i] = md->t[i];
        e->rows[i] = md->r0[i];
    }
    e->file_dtype = w[0]->dtype;
    LMX_TRY(copy_rows(md->path, w, md->nt, &e->full));
    if (nb) LMX_TRY(copy_rows(md->path, b, nb, &e->full_bias));
    return LMX_OK;
}

/* Full fine-tuning of a norm (weight, and a LayerNorm's bias). */
static lmx_status add_full_norm(lmx_adapters *ad, int *cap, const char *name, int layer, lmx_array *w, lmx_array *b) {
    if (!name || lmx_array_empty(w)) return LMX_OK;
    char path[sizeof ad->e[0].name];
    snprintf(path, sizeof path, "%smodel.layers.%d.%s", ad->prefix, layer, name);
    LMX_TRY(grow(ad, cap));
    lmx_adapter_entry *e = new_entry(ad, path, layer);
    e->param = w;
    e->file_dtype = w->dtype;
    LMX_TRY(copy_rows(path, &w, 1, &e->full));
    if (b && !lmx_array_empty(b)) {
        if (b->dtype != w->dtype) return lmx_err(LMX_ERR_UNSUPPORTED, "adapters: '%s': weight and bias dtypes differ", path);
        e->param_bias = b;
        LMX_TRY(copy_rows(path, &b, 1, &e->full_bias));
    }
    return LMX_OK;
}

/* Every module of block l for full fine-tuning (mlx-lm: the block's
 * trainable parameters: norms, weights, biases). */
static lmx_status add_block_params(lmx_adapters *ad, int *cap, const modlist *ml, int l) {
    lmx_transformer *m = ad->model;
    const lmx_arch_names *nm = lmx_arch_find(m->hp.arch)->names;
    lmx_layer *L = &m->layers[l];
    LMX_TRY(add_full_norm(ad, cap, nm->attn_norm, l, &L->attn_norm, &L->attn_norm_b));
    LMX_TRY(add_full_norm(ad, cap, nm->q_norm, l, &L->q_norm, NULL));
    LMX_TRY(add_full_norm(ad, cap, nm->k_norm, l, &L->k_norm, NULL));
    LMX_TRY(add_full_norm(ad, cap, nm->post_attn_norm, l, &L->post_attn_norm, NULL));
    LMX_TRY(add_full_norm(ad, cap, nm->ffn_norm, l, &L->ffn_norm, &L->ffn_norm_b));
    LMX_TRY(add_full_norm(ad, cap, nm->post_ffn_norm, l, &L->post_ffn_norm, NULL));
    for (int k = 0; k < ml->n; k++)
        if (ml->v[k].layer == l) LMX_TRY(add_full_linear(ad, cap, &ml->v[k]));
    return LMX_OK;
}

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const lmx_adapter_entry *)a)->name, ((const lmx_adapter_entry *)b)->name);
}

static bool key_listed(const lmx_adapter_config *c, const char *k) {
    if (!c->keys) return true; /* default: every Linear of a block */
    for (int i = 0; i < c->n_keys; i++)
        if (!strcmp(c->keys[i], k)) return true;
    return false;
}

/* LoRA/DoRA: mlx-lm matches keys against each adapted block's relative
 * paths, then against the model's full paths (any block, lm_head). */
static lmx_status choose_lora(lmx_adapters *ad, int *cap, const modlist *ml, int first, uint64_t seed) {
    const lmx_adapter_config *c = &ad->cfg;
    for (int i = 0; c->keys && i < c->n_keys; i++) {
        const char *k = c->keys[i];
        bool hit = false;
        for (int j = 0; j < ml->n && !hit; j++)
            hit = (ml->v[j].rel && !strcmp(ml->v[j].rel, k)) || !strcmp(ml->v[j].path, k);
        if (hit) continue;
        char emb[64];
        snprintf(emb, sizeof emb, "%smodel.embed_tokens", ad->prefix);
        if (!strcmp(k, emb))
            return lmx_err(LMX_ERR_UNSUPPORTED, "adapter config: lora_parameters.keys: '%s': embedding adapters are "
                           "not supported", k);
        char some[256] = "";
        for (int j = 0, nshown = 0; j < ml->n && nshown < 8; j++)
            if (ml->v[j].layer == 0) {
                size_t u = strlen(some);
                snprintf(some + u, sizeof some - u, "%s%s", nshown++ ? ", " : "", ml->v[j].rel);
            }
        return lmx_err(LMX_ERR_NOT_FOUND, "adapter config: lora_parameters.keys: '%s' names no Linear module of "
                       "this %s model (a block has: %s)", k, ad->model->hp.arch, some);
    }
    for (int j = 0; j < ml->n; j++) {
        const amod *md = &ml->v[j];
        if (md->rel && md->layer >= first && key_listed(c, md->rel)) LMX_TRY(add_lora(ad, cap, md, seed));
    }
    for (int j = 0; c->keys && j < ml->n; j++)
        if (key_listed(c, ml->v[j].path)) LMX_TRY(add_lora(ad, cap, &ml->v[j], seed));
    return LMX_OK;
}

static lmx_status check_config(const lmx_adapter_config *c) {
    if (c->type != LMX_FT_LORA && c->type != LMX_FT_DORA && c->type != LMX_FT_FULL)
        return lmx_err(LMX_ERR_INVALID_ARG, "adapter config: fine_tune_type: %d is not lora, dora or full", c->type);
    if (c->type == LMX_FT_FULL) return LMX_OK;
    if (c->rank < 1 || c->rank > 65536)
        return lmx_err(LMX_ERR_INVALID_ARG, "adapter config: lora_parameters.rank: %d is out of range", c->rank);
    if (!isfinite(c->scale))
        return lmx_err(LMX_ERR_INVALID_ARG, "adapter config: lora_parameters.scale: not a finite number");
    if (!(c->dropout >= 0 && c->dropout < 1))
        return lmx_err(LMX_ERR_INVALID_ARG, "adapter config: lora_parameters.dropout: %g is not in [0, 1)",
                       (double)c->dropout);
    return LMX_OK;
}

const char *lmx_adapters_prefix(const lmx_config *model_cfg) {
    if (!model_cfg) return "";
    const char *mt = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(model_cfg->root, "model_type"));
    return mt && !strcmp(mt, "gemma3") ? "language_model." : "";
}

lmx_status lmx_adapters_create(lmx_transformer *m, const lmx_adapter_config *cfg, uint64_t seed,
                               lmx_adapters **out) {
    return lmx_adapters_create_ex(m, "", cfg, seed, out);
}

/* Builds the per-target views of fused entries (after sorting: nothing may
 * point into an entry before its address is final). */
static lmx_status make_views(lmx_adapters *ad) {
    for (int i = 0; i < ad->n; i++) {
        lmx_adapter_entry *e = &ad->e[i];
        if (ad->cfg.type == LMX_FT_FULL || e->n_targets < 2) continue;
        for (int t = 0; t < e->n_targets; t++) {
            lmx_lora *v = &e->views[t];
            int64_t rows = e->targets[t]->w.shape[0];
            v->a = e->lora.a;
            lmx_array_retain(&v->a);
            LMX_TRY(lmx_array_rows(&v->b, &e->lora.b, e->rows[t], rows));
            if (!lmx_array_empty(&e->lora.m)) LMX_TRY(lmx_array_rows(&v->m, &e->lora.m, e->rows[t], rows));
            v->scale = e->lora.scale;
            v->dropout = e->lora.dropout;
        }
    }
    return LMX_OK;
}

lmx_status lmx_adapters_to_backend(lmx_adapters *ad, lmx_backend *b) {
    if (!ad || lmx_backend_is_host(b)) return LMX_OK;
    if (ad->cfg.type == LMX_FT_FULL)
        return lmx_err(LMX_ERR_UNSUPPORTED, "adapters: full fine-tuned weights on %s are not supported (lmx fuse them)",
                       b->name);
    for (int i = 0; i < ad->n; i++) {
        lmx_adapter_entry *e = &ad->e[i];
        bool dora = !lmx_array_empty(&e->lora.m);
        lmx_array *up[] = {&e->lora.a, &e->lora.b, &e->lora.dora_f, &e->views[0].dora_f, &e->views[1].dora_f,
                           &e->views[2].dora_f, &e->views[3].dora_f};
        for (size_t k = 0; k < sizeof up / sizeof *up; k++) {
            if (lmx_array_empty(up[k])) continue;
            lmx_array d;
            LMX_TRY(lmx_array_to_backend(b, &d, up[k]));
            lmx_array_release(up[k]);
            *up[k] = d;
        }
        if (dora && (e->n_targets < 2 ? lmx_array_empty(&e->lora.dora_f) : lmx_array_empty(&e->views[0].dora_f)))
            return lmx_err(LMX_ERR_UNSUPPORTED, "adapters: %s: DoRA on %s needs its frozen row factors", e->name,
                           b->name);
        if (ad->cfg.type == LMX_FT_FULL || e->n_targets < 2) continue;
        for (int t = 0; t < e->n_targets; t++) { /* fused rows: views of the device a and b */
            lmx_lora *v = &e->views[t];
            lmx_array_release(&v->a);
            lmx_array_release(&v->b);
            v->a = e->lora.a;
            lmx_array_retain(&v->a);
            LMX_TRY(lmx_array_rows(&v->b, &e->lora.b, e->rows[t], e->targets[t]->w.shape[0]));
        }
    }
    return lmx_backend_sync(b);
}

lmx_status lmx_adapters_create_ex(lmx_transformer *m, const char *prefix, const lmx_adapter_config *cfg,
                                  uint64_t seed, lmx_adapters **out) {
    *out = NULL;
    LMX_TRY(check_config(cfg));
    if (m->hp.n_expert > 0)
        return lmx_err(LMX_ERR_UNSUPPORTED, "adapters: %s is a mixture-of-experts model; adapters on MoE models are "
                       "not supported yet", m->hp.arch);
    lmx_adapters *ad = calloc(1, sizeof *ad);
    if (!ad) return lmx_err(LMX_ERR_NOMEM, "adapters: out of memory");
    ad->model = m;
    snprintf(ad->prefix, sizeof ad->prefix, "%s", prefix ? prefix : "");
    modlist ml = {0};
    int cap = 0, n_layer = m->hp.n_layer;
    int first = cfg->num_layers <= 0 || cfg->num_layers >= n_layer ? 0 : n_layer - cfg->num_layers;
    lmx_status s = lmx_adapter_config_copy(&ad->cfg, cfg);
    if (!s) s = list_modules(m, ad->prefix, &ml);
    if (!s && cfg->type == LMX_FT_FULL)
        for (int l = first; l < n_layer && !s; l++) s = add_block_params(ad, &cap, &ml, l);
    else if (!s)
        s = choose_lora(ad, &cap, &ml, first, seed);
    free(ml.v);
    if (!s && ad->n == 0)
        s = lmx_err(LMX_ERR_NOT_FOUND, "adapters: the configuration selects no module of this %s model", m->hp.arch);
    if (!s) {
        qsort(ad->e, (size_t)ad->n, sizeof *ad->e, cmp_entry);
        s = make_views(ad);
    }
    if (s) {
        lmx_adapters_free(ad);
        return s;
    }
    lmx_adapters_attach(ad);
    *out = ad;
    return LMX_OK;
}

/* ---- attach / detach ------------------------------------------------------------ */

/* *slot (the model's array) moves to *saved; a view of `rows` rows of src
 * from row r0 takes its place, with the model array's shape. */
static void swap_in(lmx_array *slot, lmx_array *saved, const lmx_array *src, int64_t r0) {
    if (lmx_array_empty(slot) || lmx_array_empty(src)) return;
    int64_t row_elems = src->ndim == 2 ? src->shape[1] : 1;
    lmx_array v;
    if (lmx_array_view(&v, src, r0 * row_elems, slot->ndim, slot->shape) != LMX_OK) return; /* checked at creation */
    *saved = *slot; /* the model's reference moves to saved */
    *slot = v;
}

static void swap_out(lmx_array *slot, lmx_array *saved) {
    if (lmx_array_empty(saved)) return;
    lmx_array_release(slot);
    *slot = *saved;
    memset(saved, 0, sizeof *saved);
}

void lmx_adapters_attach(lmx_adapters *ad) {
    if (!ad || ad->attached) return;
    for (int i = 0; i < ad->n; i++) {
        lmx_adapter_entry *e = &ad->e[i];
        if (ad->cfg.type != LMX_FT_FULL) {
            for (int t = 0; t < e->n_targets; t++) e->targets[t]->lora = e->n_targets == 1 ? &e->lora : &e->views[t];
        } else if (e->param) {
            swap_in(e->param, &e->saved_w[0], &e->full, 0);
            if (e->param_bias) swap_in(e->param_bias, &e->saved_b[0], &e->full_bias, 0);
        } else {
            for (int t = 0; t < e->n_targets; t++) {
                swap_in(&e->targets[t]->w, &e->saved_w[t], &e->full, e->rows[t]);
                swap_in(&e->targets[t]->b, &e->saved_b[t], &e->full_bias, e->rows[t]);
            }
        }
    }
    ad->attached = true;
}

void lmx_adapters_detach(lmx_adapters *ad) {
    if (!ad || !ad->attached) return;
    for (int i = 0; i < ad->n; i++) {
        lmx_adapter_entry *e = &ad->e[i];
        if (ad->cfg.type != LMX_FT_FULL) {
            for (int t = 0; t < e->n_targets; t++) e->targets[t]->lora = NULL;
        } else if (e->param) {
            swap_out(e->param, &e->saved_w[0]);
            if (e->param_bias) swap_out(e->param_bias, &e->saved_b[0]);
        } else {
            for (int t = 0; t < e->n_targets; t++) {
                swap_out(&e->targets[t]->w, &e->saved_w[t]);
                swap_out(&e->targets[t]->b, &e->saved_b[t]);
            }
        }
    }
    ad->attached = false;
}

void lmx_adapters_free(lmx_adapters *ad) {
    if (!ad) return;
    lmx_adapters_detach(ad);
    for (int i = 0; i < ad->n; i++) {
        lmx_adapter_entry *e = &ad->e[i];
        lmx_array_release(&e->lora.a);
        lmx_array_release(&e->lora.b);
        lmx_array_release(&e->lora.m);
        lmx_array_release(&e->lora.dora_f);
        lmx_array_release(&e->full);
        lmx_array_release(&e->full_bias);
        for (int t = 0; t < 4; t++) {
            lmx_array_release(&e->views[t].a);
            lmx_array_release(&e->views[t].b);
            lmx_array_release(&e->views[t].m);
            lmx_array_release(&e->views[t].dora_f);
        }
    }
    free(ad->e);
    lmx_adapter_config_free(&ad->cfg);
    free(ad);
}

lmx_adapter_entry *lmx_adapters_find(const lmx_adapters *ad, const char *name) {
    int lo = 0, hi = ad->n - 1; /* sorted by name */
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(ad->e[mid].name, name);
        if (!c) return &ad->e[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

int64_t lmx_adapters_n_params(const lmx_adapters *ad) {
    int64_t n = 0;
    for (int i = 0; i < ad->n; i++) {
        const lmx_adapter_entry *e = &ad->e[i];
        if (ad->cfg.type == LMX_FT_FULL) {
            n += lmx_array_numel(&e->full);
            if (!lmx_array_empty(&e->full_bias)) n += lmx_array_numel(&e->full_bias);
        } else {
            n += lmx_array_numel(&e->lora.a) + lmx_array_numel(&e->lora.b);
            if (!lmx_array_empty(&e->lora.m)) n += lmx_array_numel(&e->lora.m);
        }
    }
    return n;
}
