/* prompt_cache.c - prompt-cache files, as mlx-lm's save_prompt_cache /
 * load_prompt_cache (models/cache.py) write and read them.
 *
 * Written (mlx-lm >= 0.2x, what the installed reference writes):
 *   tensors  "i.0", "i.1"        keys, values of layer i, [1, Hkv, T, hd], post-RoPE
 *            "i.0.0/1/2", ...    QuantizedKVCache: packed U32, scales, biases
 *            "i.2", "i.3", ...   the state's scalars as I32 0-d arrays:
 *                                KVCache (offset), RotatingKVCache (offset, keep,
 *                                max_size, _idx), QuantizedKVCache (offset,
 *                                group_size, bits)
 *   metadata "0.<key>"           user metadata ("model", "tokenizer_config")
 *            "1.i"               class name of layer i
 *            "2.0" = "", "2.k.0" = tensor name, "2.k.1" = "scalar"
 * Also read: the older layout of MLX-LM-SPEC §4d ("0.i.k" meta state,
 * "1.<key>" user metadata, "2.i" class names, KVCache offset = T).
 * lmx keeps rows as [T, Hkv, hd]; files are transposed on the way. */
#include "generate/engine.h"

#include "io/safetensors.h"

#include <stdio.h>
#include <stdlib.h>

static const char *class_name(lmx_kv_kind k) {
    return k == LMX_KV_ROTATING ? "RotatingKVCache" : k == LMX_KV_QUANTIZED ? "QuantizedKVCache" : "KVCache";
}

/* [T, H, D] (row stride H·D) <-> [H, T, D], elements of `es` bytes. */
static void transpose_thd(void *dst, const void *src, int64_t T, int64_t H, int64_t D, size_t es, bool to_htd) {
    for (int64_t t = 0; t < T; t++)
        for (int64_t h = 0; h < H; h++) {
            size_t a = (size_t)((t * H + h) * D) * es, b = (size_t)((h * T + t) * D) * es;
            if (to_htd)
                memcpy((char *)dst + b, (const char *)src + a, (size_t)D * es);
            else
                memcpy((char *)dst + a, (const char *)src + b, (size_t)D * es);
        }
}

/* ---- save ------------------------------------------------------------------ */

typedef struct {
    lmx_st_write_tensor *t;
    char **names;
    void **bufs;
    int64_t (*shapes)[4];
    int32_t *scalars;
    size_t n, cap;
} tensor_list;

static lmx_status tl_add(tensor_list *l, char *name, lmx_dtype dt, int nd, const int64_t *shape, void *data,
                         bool own_data) {
    if (!name) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    if (l->n == l->cap) {
        size_t nc = l->cap ? 2 * l->cap : 32;
        void *a = realloc(l->t, nc * sizeof *l->t), *b = realloc(l->names, nc * sizeof *l->names);
        if (a) l->t = a;
        if (b) l->names = b;
        void *c = realloc(l->bufs, nc * sizeof *l->bufs), *d = realloc(l->shapes, nc * sizeof *l->shapes);
        if (c) l->bufs = c;
        if (d) l->shapes = d;
        if (!a || !b || !c || !d) {
            free(name);
            return lmx_err(LMX_ERR_NOMEM, "out of memory");
        }
        l->cap = nc;
    }
    size_t i = l->n++;
    l->names[i] = name;
    l->bufs[i] = own_data ? data : NULL;
    if (nd > 0) memcpy(l->shapes[i], shape, (size_t)nd * sizeof *shape);
    int64_t numel = 1;
    for (int d = 0; d < nd; d++) numel *= shape[d];
    l->t[i] = (lmx_st_write_tensor){name, dt, nd, l->shapes[i], data, lmx_dtype_bytes(dt, numel)};
    return LMX_OK;
}

static void tl_free(tensor_list *l) {
    for (size_t i = 0; i < l->n; i++) {
        free(l->names[i]);
        free(l->bufs[i]);
    }
    free(l->t);
    free(l->names);
    free(l->bufs);
    free(l->shapes);
    free(l->scalars);
}

static char *fmt(const char *f, int a, int b) {
    char buf[64];
    snprintf(buf, sizeof buf, f, a, b);
    return lmx_strdup(buf);
}

/* Rows [0, T) of a float layer array, transposed to [1, Hkv, T, hd] f32. */
static lmx_status float_rows(const lmx_cache *c, const lmx_array *a, int64_t T, float **out) {
    const lmx_kv_cache *kv = &c->kv;
    int64_t W = (int64_t)kv->n_kv_head * kv->head_dim;
    float *host = malloc((size_t)(kv->capacity * W + 1) * sizeof *host);
    float *t = malloc((size_t)(T * W + 1) * sizeof *t);
    lmx_status s = host && t ? LMX_OK : lmx_err(LMX_ERR_NOMEM, "out of memory");
    if (!s && T > 0) s = lmx_array_download(kv->backend, a, host);
    if (!s) transpose_thd(t, host, T, kv->n_kv_head, kv->head_dim, sizeof(float), true);
    free(host);
    if (s) {
        free(t);
        return s;
    }
    *out = t;
    return LMX_OK;
}

static lmx_status add_quant(tensor_list *l, const lmx_cache *c, int li, int which, int64_t T) {
    const lmx_kv_cache *kv = &c->kv;
    int64_t H = kv->n_kv_head, hd = kv->head_dim;
    const void *src[3] = {which ? kv->vq[li] : kv->kq[li], which ? kv->vs[li] : kv->ks[li],
                          which ? kv->vb[li] : kv->kb[li]};
    int64_t width[3] = {hd * kv->kv_bits / 32, hd / kv->group_size, hd / kv->group_size};
    for (int p = 0; p < 3; p++) {
        size_t bytes = (size_t)(T * H * width[p]) * 4;
        void *buf = malloc(bytes + 4);
        if (!buf) return lmx_err(LMX_ERR_NOMEM, "out of memory");
        transpose_thd(buf, src[p], T, H, width[p], 4, true);
        int64_t sh[4] = {1, H, T, width[p]};
        char nm[48];
        snprintf(nm, sizeof nm, "%d.%d.%d", li, which, p);
        LMX_TRY(tl_add(l, lmx_strdup(nm), p ? LMX_F32 : LMX_U32, 4, sh, buf, true));
    }
    return LMX_OK;
}

lmx_status lmx_cache_save(const lmx_cache *c, const char *path, const char *const *meta_kv) {
    const lmx_kv_cache *kv = &c->kv;
    tensor_list l = {0};
    int per_layer = kv->kind == LMX_KV_ROTATING ? 4 : kv->kind == LMX_KV_QUANTIZED ? 3 : 1;
    l.scalars = malloc((size_t)(kv->n_layer * per_layer + 1) * sizeof *l.scalars);
    size_t n_user = 0;
    while (meta_kv && meta_kv[2 * n_user]) {
        if (!meta_kv[2 * n_user + 1]) return lmx_err(LMX_ERR_INVALID_ARG, "cache save: metadata key without value");
        n_user++;
    }
    size_t n_meta = (n_user ? n_user : 1) + (size_t)kv->n_layer + 1 + 2 * (size_t)(kv->n_layer * per_layer);
    char **meta = calloc(2 * n_meta + 1, sizeof *meta);
    lmx_status s = l.scalars && meta ? LMX_OK : lmx_err(LMX_ERR_NOMEM, "out of memory");
    size_t nm = 0, ns = 0, nsl = 0;
#define META(k, v)                                                                  \
    do {                                                                            \
        meta[nm++] = (k);                                                           \
        meta[nm++] = (v);                                                           \
        if (!meta[nm - 2] || !meta[nm - 1]) s = lmx_err(LMX_ERR_NOMEM, "out of memory"); \
    } while (0)
    for (size_t i = 0; !s && i < n_user; i++) {
        char *k = malloc(strlen(meta_kv[2 * i]) + 3);
        if (k) sprintf(k, "0.%s", meta_kv[2 * i]);
        META(k, lmx_strdup(meta_kv[2 * i + 1]));
    }
    if (!s && !n_user) META(lmx_strdup("0.model"), lmx_strdup("")); /* mlx-lm needs a metadata dict */
    for (int i = 0; !s && i < kv->n_layer; i++) META(fmt("1.%d", i, 0), lmx_strdup(class_name(kv->kind)));
    if (!s) META(lmx_strdup("2.0"), lmx_strdup(""));
    int64_t T = kv->kind == LMX_KV_ROTATING ? kv->rows : kv->offset;
    int64_t sh4[4] = {1, kv->n_kv_head, T, kv->head_dim};
    for (int li = 0; !s && li < kv->n_layer; li++) {
        if (kv->kind == LMX_KV_QUANTIZED) {
            s = add_quant(&l, c, li, 0, T);
            if (!s) s = add_quant(&l, c, li, 1, T);
        } else {
            float *kb = NULL, *vb = NULL;
            s = float_rows(c, &kv->k[li], T, &kb);
            if (!s) s = tl_add(&l, fmt("%d.%d", li, 0), LMX_F32, 4, sh4, kb, true);
            if (!s) s = float_rows(c, &kv->v[li], T, &vb);
            if (!s) s = tl_add(&l, fmt("%d.%d", li, 1), LMX_F32, 4, sh4, vb, true);
        }
        int64_t vals[4] = {kv->offset, 0, 0, 0};
        if (kv->kind == LMX_KV_ROTATING) {
            vals[1] = kv->keep;
            vals[2] = kv->max_size;
            vals[3] = kv->idx;
        } else if (kv->kind == LMX_KV_QUANTIZED) {
            vals[1] = kv->group_size;
            vals[2] = kv->kv_bits;
        }
        for (int j = 0; !s && j < per_layer; j++) {
            if (vals[j] > INT32_MAX) s = lmx_err(LMX_ERR_UNSUPPORTED, "cache save: offset beyond int32");
            l.scalars[nsl] = (int32_t)vals[j];
            if (!s) s = tl_add(&l, fmt("%d.%d", li, 2 + j), LMX_I32, 0, NULL, &l.scalars[nsl++], false);
            ns++;
            if (!s) META(fmt("2.%d.0", (int)ns, 0), fmt("%d.%d", li, 2 + j));
            if (!s) META(fmt("2.%d.1", (int)ns, 0), lmx_strdup("scalar"));
        }
    }
#undef META
    if (!s) s = lmx_st_write(path, l.t, l.n, (const char *const *)meta);
    for (size_t i = 0; meta && i < nm; i++) free(meta[i]);
    free(meta);
    tl_free(&l);
    return s;
}

/* ---- load ------------------------------------------------------------------ */

typedef struct {
    const lmx_st_file *f;
    const char *path;
    bool old; /* MLX-LM-SPEC §4d layout */
} cache_file;

static const char *meta_of(const cache_file *cf, const char *fmt_, int a, int b) {
    char k[64];
    snprintf(k, sizeof k, fmt_, a, b);
    return lmx_st_metadata(cf->f, k);
}

/* Scalar j of layer li: an I32/I64 0-d tensor "li.(2+j)" (new layout) or the
 * string "0.li.j" (old layout). */
static lmx_status get_scalar(const cache_file *cf, int li, int j, int64_t *out) {
    if (cf->old) {
        const char *v = meta_of(cf, "0.%d.%d", li, j);
        char *end;
        if (!v || !*v) return lmx_err(LMX_ERR_FORMAT, "%s: layer %d: meta state %d missing", cf->path, li, j);
        long long x = strtoll(v, &end, 10);
        if (*end) return lmx_err(LMX_ERR_FORMAT, "%s: layer %d: meta state %d '%s' is not an integer", cf->path, li, j, v);
        *out = x;
        return LMX_OK;
    }
    char nm[48];
    snprintf(nm, sizeof nm, "%d.%d", li, 2 + j);
    const lmx_st_tensor *t = lmx_st_find(cf->f, nm);
    if (!t) return lmx_err(LMX_ERR_FORMAT, "%s: tensor '%s' (cache state) missing", cf->path, nm);
    if (t->n_dims > 1 || (t->n_dims == 1 && t->shape[0] != 1))
        return lmx_err(LMX_ERR_FORMAT, "%s: tensor '%s': not a scalar", cf->path, nm);
    if (t->dtype == LMX_I32) {
        int32_t v;
        memcpy(&v, t->data, 4);
        *out = v;
    } else if (t->dtype == LMX_I64) {
        memcpy(out, t->data, 8);
    } else {
        return lmx_err(LMX_ERR_FORMAT, "%s: tensor '%s': dtype is not int32/int64", cf->path, nm);
    }
    return LMX_OK;
}

/* A [1, H, T, width] tensor of dtype dt (floats: any float dtype). */
static lmx_status get_tensor(const cache_file *cf, const char *nm, int64_t H, int64_t width, bool packed,
                             const lmx_st_tensor **out) {
    const lmx_st_tensor *t = lmx_st_find(cf->f, nm);
    if (!t) return lmx_err(LMX_ERR_FORMAT, "%s: tensor '%s' missing", cf->path, nm);
    const lmx_dtype_traits *tr = lmx_dtype_info(t->dtype);
    bool ok_dt = packed ? t->dtype == LMX_U32 : (tr && tr->to_f32 && !tr->is_quant && t->dtype != LMX_I32);
    if (!ok_dt) return lmx_err(LMX_ERR_FORMAT, "%s: tensor '%s': unexpected dtype %s", cf->path, nm, tr ? tr->st_name : "?");
    if (t->n_dims != 4 || t->shape[0] != 1 || t->shape[1] != H || t->shape[3] != width)
        return lmx_err(LMX_ERR_SHAPE, "%s: tensor '%s': shape [%lld, %lld, %lld, %lld] does not fit this model "
                       "(want [1, %lld, T, %lld]): a cache of another model?", cf->path, nm,
                       (long long)t->shape[0], (long long)t->shape[1], (long long)t->shape[2],
                       (long long)t->shape[3], (long long)H, (long long)width);
    *out = t;
    return LMX_OK;
}

/* Fills rows [0, T) of a float layer array from a [1, H, T', hd] tensor. */
static lmx_status put_float(lmx_cache *c, lmx_array *dst, const lmx_st_tensor *t, int64_t T) {
    lmx_kv_cache *kv = &c->kv;
    int64_t H = kv->n_kv_head, hd = kv->head_dim, Tf = t->shape[2];
    float *f = malloc((size_t)(Tf * H * hd + 1) * sizeof *f), *r = malloc((size_t)(kv->capacity * H * hd + 1) * sizeof *r);
    lmx_status s = f && r ? LMX_OK : lmx_err(LMX_ERR_NOMEM, "out of memory");
    if (!s) lmx_dtype_info(t->dtype)->to_f32(t->data, f, Tf * H * hd);
    if (!s) {
        /* keep rows [0, T) of the [H, Tf, hd] file layout */
        for (int64_t h = 0; h < H; h++)
            for (int64_t j = 0; j < T; j++)
                memcpy(r + (j * H + h) * hd, f + (h * Tf + j) * hd, (size_t)hd * sizeof *f);
        if (lmx_backend_is_host(kv->backend) || !kv->backend)
            memcpy(dst->data, r, (size_t)(T * H * hd) * sizeof *r);
        else
            s = lmx_backend_upload(kv->backend, dst->data, r, (size_t)(T * H * hd) * sizeof *r);
    }
    free(f);
    free(r);
    return s;
}

static lmx_status put_quant(lmx_cache *c, const cache_file *cf, int li, int which, int64_t T) {
    lmx_kv_cache *kv = &c->kv;
    int64_t H = kv->n_kv_head, hd = kv->head_dim;
    int64_t width[3] = {hd * kv->kv_bits / 32, hd / kv->group_size, hd / kv->group_size};
    void *dst[3] = {which ? (void *)kv->vq[li] : (void *)kv->kq[li], which ? kv->vs[li] : kv->ks[li],
                    which ? kv->vb[li] : kv->kb[li]};
    for (int p = 0; p < 3; p++) {
        char nm[48];
        snprintf(nm, sizeof nm, "%d.%d.%d", li, which, p);
        const lmx_st_tensor *t;
        LMX_TRY(get_tensor(cf, nm, H, width[p], p == 0, &t));
        int64_t Tf = t->shape[2];
        if (Tf < T) return lmx_err(LMX_ERR_FORMAT, "%s: tensor '%s': %lld rows, offset %lld", cf->path, nm, (long long)Tf, (long long)T);
        float *f = NULL;
        const void *src = t->data;
        if (p > 0) { /* scales/biases in the model's dtype: f32 here */
            f = malloc((size_t)(Tf * H * width[p] + 1) * sizeof *f);
            if (!f) return lmx_err(LMX_ERR_NOMEM, "out of memory");
            lmx_dtype_info(t->dtype)->to_f32(t->data, f, Tf * H * width[p]);
            src = f;
        }
        for (int64_t h = 0; h < H; h++)
            for (int64_t j = 0; j < T; j++)
                memcpy((char *)dst[p] + (size_t)((j * H + h) * width[p]) * 4,
                       (const char *)src + (size_t)((h * Tf + j) * width[p]) * 4, (size_t)width[p] * 4);
        free(f);
    }
    return LMX_OK;
}

static lmx_status load_layers(lmx_model *m, const cache_file *cf, lmx_kv_kind kind, lmx_cache **out) {
    const lmx_hparams *hp = &m->tf.hp;
    int64_t H = hp->n_kv_head, hd = hp->head_dim;
    const lmx_st_tensor *k0;
    /* Layer 0 decides the settings; every layer must agree. */
    int64_t offset, a = 0, b = 0, idx = 0;
    LMX_TRY(get_scalar(cf, 0, 0, &offset));
    if (cf->old && kind == LMX_KV_ROTATING) { /* old meta: keep, max_size, offset, _idx */
        a = offset;
        LMX_TRY(get_scalar(cf, 0, 1, &b));
        LMX_TRY(get_scalar(cf, 0, 2, &offset));
        LMX_TRY(get_scalar(cf, 0, 3, &idx));
    } else if (kind != LMX_KV_STANDARD) {
        LMX_TRY(get_scalar(cf, 0, 1, &a));
        LMX_TRY(get_scalar(cf, 0, 2, &b));
        if (kind == LMX_KV_ROTATING) LMX_TRY(get_scalar(cf, 0, 3, &idx));
    }
    lmx_cache_options o;
    lmx_cache_options_init(&o);
    if (kind == LMX_KV_ROTATING) {
        if (b <= 0 || b > INT32_MAX || a < 0 || a >= b)
            return lmx_err(LMX_ERR_FORMAT, "%s: RotatingKVCache keep %lld / max_size %lld out of range", cf->path,
                           (long long)a, (long long)b);
        o.max_kv_size = (int)b;
    } else if (kind == LMX_KV_QUANTIZED) {
        if (a < 0 || a > 1024 || b < 0 || b > 32)
            return lmx_err(LMX_ERR_FORMAT, "%s: QuantizedKVCache group %lld / bits %lld out of range", cf->path,
                           (long long)a, (long long)b);
        o.kv_group_size = (int)a;
        o.kv_bits = (int)b;
        o.quantized_kv_start = 0;
    }
    lmx_cache *c = calloc(1, sizeof *c);
    if (!c) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    c->model = m;
    c->opts = o;
    lmx_kv_config cfg = {o.max_kv_size, a, o.kv_bits, o.kv_group_size, 0};
    lmx_status s = lmx_kv_cache_init(&c->kv, m->backend, hp->n_layer, (int)H, (int)hd, &cfg);
    if (s) {
        free(c);
        return s;
    }
    lmx_kv_cache *kv = &c->kv;
    int64_t rows = 0;
    char nm[48];
    snprintf(nm, sizeof nm, kind == LMX_KV_QUANTIZED ? "%d.0.0" : "%d.0", 0);
    s = get_tensor(cf, nm, H, kind == LMX_KV_QUANTIZED ? hd * o.kv_bits / 32 : hd, kind == LMX_KV_QUANTIZED, &k0);
    if (!s) {
        int64_t Tf = k0->shape[2];
        if (cf->old && kind == LMX_KV_STANDARD) offset = Tf;
        rows = kind == LMX_KV_ROTATING ? Tf : offset;
        bool bad = offset < 0 || (kind != LMX_KV_ROTATING && offset > Tf) ||
                   (kind == LMX_KV_ROTATING && (idx < 0 || idx > Tf || (idx < offset && idx < a)));
        if (bad)
            s = lmx_err(LMX_ERR_FORMAT, "%s: offset %lld does not fit the %lld stored rows", cf->path,
                        (long long)offset, (long long)Tf);
    }
    if (!s && kind == LMX_KV_QUANTIZED) s = lmx_kv_quantize_now(kv); /* kind -> quantized, storage empty */
    lmx_exec ex = {.backend = m->backend};
    if (!s) s = lmx_kv_reserve(&ex, kv, rows > 0 ? rows : 1);
    for (int li = 0; !s && li < hp->n_layer; li++) {
        int64_t off_l;
        s = cf->old ? LMX_OK : get_scalar(cf, li, 0, &off_l);
        if (!s && !cf->old && off_l != offset)
            s = lmx_err(LMX_ERR_UNSUPPORTED, "%s: layers hold different token counts", cf->path);
        for (int w = 0; !s && w < 2; w++) {
            if (kind == LMX_KV_QUANTIZED) {
                s = put_quant(c, cf, li, w, rows);
                continue;
            }
            const lmx_st_tensor *t;
            snprintf(nm, sizeof nm, "%d.%d", li, w);
            s = get_tensor(cf, nm, H, hd, false, &t);
            if (!s && t->shape[2] != k0->shape[2])
                s = lmx_err(LMX_ERR_FORMAT, "%s: tensor '%s': %lld rows, layer 0 has %lld", cf->path, nm,
                            (long long)t->shape[2], (long long)k0->shape[2]);
            if (!s) s = put_float(c, w ? &kv->v[li] : &kv->k[li], t, rows);
        }
    }
    if (s) {
        lmx_cache_free(c);
        return s;
    }
    kv->offset = offset;
    kv->rows = rows;
    kv->idx = idx;
    *out = c;
    return LMX_OK;
}

static lmx_status read_user_meta(lmx_cache *c, const cache_file *cf) {
    const char *prefix = cf->old ? "1." : "0.";
    size_t n = lmx_st_n_metadata(cf->f);
    c->meta = calloc(2 * n + 1, sizeof *c->meta);
    if (!c->meta) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const char *k, *v;
        if (!lmx_st_metadata_at(cf->f, i, &k, &v) || strncmp(k, prefix, 2)) continue;
        c->meta[2 * c->n_meta] = lmx_strdup(k + 2);
        c->meta[2 * c->n_meta + 1] = lmx_strdup(v);
        c->n_meta++;
        if (!c->meta[2 * c->n_meta - 2] || !c->meta[2 * c->n_meta - 1]) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    }
    return LMX_OK;
}

lmx_status lmx_cache_load(lmx_model *m, const char *path, lmx_cache **out) {
    *out = NULL;
    lmx_st_file *f;
    LMX_TRY(lmx_st_open(path, &f));
    cache_file cf = {f, path, false};
    /* New layout: "2.0" is the empty scalars marker and "1.i" class names;
     * old layout: "2.i" are the class names. */
    const char *c2 = lmx_st_metadata(f, "2.0");
    cf.old = c2 && *c2;
    const char *cls_fmt = cf.old ? "2.%d" : "1.%d";
    int n_layer = m->tf.hp.n_layer;
    lmx_status s = LMX_OK;
    lmx_kv_kind kind = LMX_KV_STANDARD;
    int count = 0;
    while (meta_of(&cf, cls_fmt, count, 0)) count++;
    if (count == 0) s = lmx_err(LMX_ERR_FORMAT, "%s: not a prompt cache (no cache class names in the metadata)", path);
    if (!s && count != n_layer)
        s = lmx_err(LMX_ERR_SHAPE, "%s: the cache has %d layers, the model %d: a cache of another model", path, count,
                    n_layer);
    for (int i = 0; !s && i < count; i++) {
        const char *cn = meta_of(&cf, cls_fmt, i, 0);
        lmx_kv_kind k = !strcmp(cn, "KVCache") ? LMX_KV_STANDARD
                        : !strcmp(cn, "RotatingKVCache") ? LMX_KV_ROTATING
                        : !strcmp(cn, "QuantizedKVCache") ? LMX_KV_QUANTIZED
                        : (lmx_kv_kind)-1;
        if ((int)k < 0) s = lmx_err(LMX_ERR_UNSUPPORTED, "%s: layer %d: cache class '%s' is not supported", path, i, cn);
        else if (i == 0) kind = k;
        else if (k != kind) s = lmx_err(LMX_ERR_UNSUPPORTED, "%s: layers mix cache classes", path);
    }
    lmx_cache *c = NULL;
    if (!s) s = load_layers(m, &cf, kind, &c);
    if (!s) s = read_user_meta(c, &cf);
    lmx_st_close(f);
    if (s) {
        lmx_cache_free(c);
        return s;
    }
    *out = c;
    return LMX_OK;
}

lmx_status lmx_cache_file_metadata(const char *path, const char *key, char **value) {
    *value = NULL;
    lmx_st_file *f;
    LMX_TRY(lmx_st_open(path, &f));
    const char *c2 = lmx_st_metadata(f, "2.0");
    char *k = malloc(strlen(key) + 3);
    lmx_status s = k ? LMX_OK : lmx_err(LMX_ERR_NOMEM, "out of memory");
    if (!s) {
        sprintf(k, "%s.%s", c2 && *c2 ? "1" : "0", key);
        const char *v = lmx_st_metadata(f, k);
        if (!v) s = lmx_err(LMX_ERR_NOT_FOUND, "%s: no metadata '%s'", path, key);
        else if (!(*value = lmx_strdup(v))) s = lmx_err(LMX_ERR_NOMEM, "out of memory");
    }
    free(k);
    lmx_st_close(f);
    return s;
}
