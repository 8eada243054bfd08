/* kv_cache.c - standard, rotating and quantized KV caches (see kv_cache.h).
 *
 * Float rows move with lmx_copy on 2-D views, so the same code runs when the
 * rows live in device memory; the quantized flavour is host-only (its rows
 * are packed with quant/quant.c, bit-exact with mx.quantize). */
#include "models/kv_cache.h"

#include "quant/quant.h"

#include <stdlib.h>

static int64_t row_elems(const lmx_kv_cache *c) { return (int64_t)c->n_kv_head * c->head_dim; }
static int64_t qwords(const lmx_kv_cache *c) { return row_elems(c) * c->kv_bits / 32; }
static int64_t qgroups(const lmx_kv_cache *c) { return row_elems(c) / c->group_size; }

/* A borrowed 2-D view [n, Hkv·hd] of rows [r0, r0+n) of a cache array. */
static lmx_array rows_view(const lmx_array *a, int64_t r0, int64_t n, int64_t width) {
    lmx_array v;
    memset(&v, 0, sizeof v);
    v.dtype = a->dtype;
    v.ndim = 2;
    v.data = (float *)a->data + r0 * width;
    for (int i = 0; i < LMX_MAX_DIMS; i++) {
        v.shape[i] = 1;
        v.strides[i] = 0;
    }
    v.shape[0] = n;
    v.shape[1] = width;
    v.strides[0] = width;
    v.strides[1] = 1;
    return v;
}

/* The same rows as [n, Hkv, hd], what lmx_attention takes. */
static lmx_array rows_view3(const lmx_kv_cache *c, const lmx_array *a, int64_t n) {
    lmx_array v = rows_view(a, 0, n, row_elems(c));
    v.ndim = 3;
    v.shape[1] = c->n_kv_head;
    v.shape[2] = c->head_dim;
    v.strides[1] = c->head_dim;
    v.strides[2] = 1;
    return v;
}

lmx_status lmx_kv_cache_init(lmx_kv_cache *c, lmx_backend *b, int n_layer, int n_kv_head, int head_dim,
                             const lmx_kv_config *cfg) {
    memset(c, 0, sizeof *c);
    if (lmx_backend_is_host(b)) b = NULL;
    c->backend = b;
    c->n_layer = n_layer;
    c->n_kv_head = n_kv_head;
    c->head_dim = head_dim;
    if (cfg && cfg->max_size > 0) {
        if (cfg->keep < 0 || cfg->keep >= cfg->max_size)
            return lmx_err(LMX_ERR_INVALID_ARG, "max_kv_size: %lld must exceed the %lld kept tokens",
                           (long long)cfg->max_size, (long long)cfg->keep);
        if (cfg->kv_bits)
            return lmx_err(LMX_ERR_UNSUPPORTED, "a rotating KV cache (max_kv_size) cannot be quantized (kv_bits), "
                                                "as in mlx-lm");
        c->kind = LMX_KV_ROTATING;
        c->max_size = cfg->max_size;
        c->keep = cfg->keep;
    }
    if (cfg && cfg->kv_bits) {
        LMX_TRY(lmx_quant_check(LMX_QMODE_AFFINE, cfg->kv_bits, cfg->group_size, head_dim, "kv cache"));
        if (head_dim % cfg->group_size || (row_elems(c) * cfg->kv_bits) % 32)
            return lmx_err(LMX_ERR_SHAPE, "kv cache: group size %d does not divide head_dim %d", cfg->group_size,
                           head_dim);
        if (b) return lmx_err(LMX_ERR_UNSUPPORTED, "kv_bits: a quantized KV cache is host-only so far");
        if (cfg->quantized_start < 0) return lmx_err(LMX_ERR_INVALID_ARG, "quantized_kv_start: negative");
        c->kv_bits = cfg->kv_bits;
        c->group_size = cfg->group_size;
        c->quantized_start = cfg->quantized_start;
    }
    c->k = calloc((size_t)n_layer, sizeof *c->k);
    c->v = calloc((size_t)n_layer, sizeof *c->v);
    if (c->kv_bits) {
        void **all[] = {(void **)&c->kq, (void **)&c->vq, (void **)&c->ks, (void **)&c->kb, (void **)&c->vs,
                        (void **)&c->vb};
        for (size_t i = 0; i < 6; i++) *all[i] = calloc((size_t)n_layer, sizeof(void *));
        if (!c->kq || !c->vq || !c->ks || !c->kb || !c->vs || !c->vb) c->n_layer = 0;
    }
    if (!c->k || !c->v || !c->n_layer) {
        c->n_layer = n_layer;
        lmx_kv_cache_free(c);
        return lmx_err(LMX_ERR_NOMEM, "out of memory");
    }
    return LMX_OK;
}

void lmx_kv_cache_free(lmx_kv_cache *c) {
    for (int l = 0; l < c->n_layer; l++) {
        if (c->k) lmx_array_release(&c->k[l]);
        if (c->v) lmx_array_release(&c->v[l]);
        if (c->kq) free(c->kq[l]);
        if (c->vq) free(c->vq[l]);
        if (c->ks) free(c->ks[l]);
        if (c->kb) free(c->kb[l]);
        if (c->vs) free(c->vs[l]);
        if (c->vb) free(c->vb[l]);
    }
    free(c->k);
    free(c->v);
    free(c->kq);
    free(c->vq);
    free(c->ks);
    free(c->kb);
    free(c->vs);
    free(c->vb);
    lmx_array_release(&c->deq_k);
    lmx_array_release(&c->deq_v);
    lmx_array_release(&c->tmp);
    memset(c, 0, sizeof *c);
}

static lmx_status grow_float(lmx_exec *ex, lmx_kv_cache *c, lmx_array *a, int64_t cap, int64_t keep_rows) {
    lmx_array n;
    int64_t sh[3] = {cap, c->n_kv_head, c->head_dim};
    if (lmx_array_alloc_on(c->backend, &n, LMX_F32, 3, sh))
        return lmx_err(LMX_ERR_NOMEM, "KV cache: out of memory for %lld tokens", (long long)cap);
    if (keep_rows > 0 && !lmx_array_empty(a)) {
        lmx_array dst = rows_view(&n, 0, keep_rows, row_elems(c)), src = rows_view(a, 0, keep_rows, row_elems(c));
        lmx_status s = lmx_copy(ex, &dst, &src);
        if (s) {
            lmx_array_release(&n);
            return s;
        }
    }
    lmx_array_release(a);
    *a = n;
    return LMX_OK;
}

static lmx_status grow_host(void **p, size_t elem, int64_t per_row, int64_t cap) {
    void *n = realloc(*p, (size_t)(cap * per_row) * elem);
    if (!n) return lmx_err(LMX_ERR_NOMEM, "KV cache: out of memory for %lld tokens", (long long)cap);
    *p = n;
    return LMX_OK;
}

lmx_status lmx_kv_reserve(lmx_exec *ex, lmx_kv_cache *c, int64_t rows) {
    if (rows <= c->capacity) return LMX_OK;
    int64_t keep_rows = c->kind == LMX_KV_ROTATING ? c->rows : c->offset;
    if (keep_rows > c->capacity) keep_rows = c->capacity;
    for (int l = 0; l < c->n_layer; l++) {
        if (c->kind == LMX_KV_QUANTIZED) {
            LMX_TRY(grow_host((void **)&c->kq[l], 4, qwords(c), rows));
            LMX_TRY(grow_host((void **)&c->vq[l], 4, qwords(c), rows));
            LMX_TRY(grow_host((void **)&c->ks[l], 4, qgroups(c), rows));
            LMX_TRY(grow_host((void **)&c->kb[l], 4, qgroups(c), rows));
            LMX_TRY(grow_host((void **)&c->vs[l], 4, qgroups(c), rows));
            LMX_TRY(grow_host((void **)&c->vb[l], 4, qgroups(c), rows));
        } else {
            LMX_TRY(grow_float(ex, c, &c->k[l], rows, keep_rows));
            LMX_TRY(grow_float(ex, c, &c->v[l], rows, keep_rows));
        }
    }
    if (c->kind == LMX_KV_QUANTIZED) {
        LMX_TRY(grow_float(ex, c, &c->deq_k, rows, 0));
        LMX_TRY(grow_float(ex, c, &c->deq_v, rows, 0));
    }
    if (c->kind == LMX_KV_ROTATING) LMX_TRY(grow_float(ex, c, &c->tmp, rows, 0));
    c->capacity = rows;
    return LMX_OK;
}

/* Moves rows of every layer so that they read src[0..n) in order, through
 * the tmp array (the runs may overlap their destination). */
typedef struct {
    int64_t start, len;
} run;

static lmx_status gather_rows(lmx_exec *ex, lmx_kv_cache *c, const run *runs, int n_runs) {
    int64_t W = row_elems(c);
    for (int l = 0; l < c->n_layer; l++) {
        lmx_array *arrs[2] = {&c->k[l], &c->v[l]};
        for (int a = 0; a < 2; a++) {
            int64_t at = 0;
            for (int r = 0; r < n_runs; r++) {
                if (runs[r].len <= 0) continue;
                lmx_array dst = rows_view(&c->tmp, at, runs[r].len, W), src = rows_view(arrs[a], runs[r].start, runs[r].len, W);
                LMX_TRY(lmx_copy(ex, &dst, &src));
                at += runs[r].len;
            }
            if (at == 0) continue;
            lmx_array dst = rows_view(arrs[a], 0, at, W), src = rows_view(&c->tmp, 0, at, W);
            LMX_TRY(lmx_copy(ex, &dst, &src));
        }
    }
    return LMX_OK;
}

/* mlx-lm RotatingKVCache._update_concat: temporal order, trimmed to
 * max_size-1 rows (sinks kept), then the T new rows appended. */
static lmx_status rotating_concat(lmx_exec *ex, lmx_kv_cache *c, int64_t T) {
    int64_t kept = 0;
    if (c->rows > 0) {
        run order[3];
        int n = 0;
        int64_t L;
        if (c->idx == c->rows) {
            order[n++] = (run){0, c->rows};
            L = c->rows;
        } else if (c->idx < c->offset) {
            order[n++] = (run){0, c->keep};
            order[n++] = (run){c->idx, c->rows - c->idx};
            order[n++] = (run){c->keep, c->idx - c->keep};
            L = c->rows;
        } else {
            order[n++] = (run){0, c->idx};
            L = c->idx;
        }
        int64_t trim = L - c->max_size + 1;
        run fin[6];
        int nf = 0;
        if (trim > 0) { /* keep temporal [0, keep) and [keep + trim, L) */
            int64_t pos = 0;
            for (int i = 0; i < n; i++) {
                int64_t s = order[i].start, len = order[i].len;
                int64_t a = pos, b = pos + len; /* temporal span of this run */
                int64_t lo1 = 0, hi1 = c->keep, lo2 = c->keep + trim, hi2 = L;
                int64_t x0 = a > lo1 ? a : lo1, x1 = b < hi1 ? b : hi1;
                if (x1 > x0) fin[nf++] = (run){s + (x0 - a), x1 - x0};
                x0 = a > lo2 ? a : lo2;
                x1 = b < hi2 ? b : hi2;
                if (x1 > x0) fin[nf++] = (run){s + (x0 - a), x1 - x0};
                pos = b;
            }
            kept = L - trim;
        } else {
            for (int i = 0; i < n; i++) fin[nf++] = order[i];
            kept = L;
        }
        LMX_TRY(lmx_kv_reserve(ex, c, kept + T > c->capacity ? kept + T : c->capacity));
        bool identity = nf == 1 && fin[0].start == 0;
        if (!identity) LMX_TRY(gather_rows(ex, c, fin, nf));
    } else {
        LMX_TRY(lmx_kv_reserve(ex, c, T));
    }
    c->step_kept = kept;
    c->step_write = kept;
    c->step_concat = true;
    c->rows = kept + T;
    return LMX_OK;
}

/* mlx-lm RotatingKVCache._update_in_place (one token). */
static lmx_status rotating_in_place(lmx_exec *ex, lmx_kv_cache *c) {
    int64_t prev = c->offset;
    if (c->rows == 0 || (prev >= c->rows && c->rows < c->max_size)) {
        int64_t add = c->max_size - prev < LMX_KV_STEP ? c->max_size - prev : LMX_KV_STEP;
        if (add < 1) add = 1;
        LMX_TRY(lmx_kv_reserve(ex, c, c->rows + add));
        c->rows += add;
        c->idx = prev;
    }
    int64_t trim = c->rows - c->max_size;
    if (trim > 0) { /* drop rows [keep, keep + trim) */
        run fin[2] = {{0, c->keep}, {c->keep + trim, c->rows - c->keep - trim}};
        LMX_TRY(gather_rows(ex, c, fin, 2));
        c->rows = c->max_size;
        c->idx = c->max_size;
    }
    if (c->idx == c->max_size) c->idx = c->keep;
    c->step_write = c->idx;
    c->step_concat = false;
    return LMX_OK;
}

lmx_status lmx_kv_begin(lmx_exec *ex, lmx_kv_cache *c, int64_t T) {
    if (T <= 0) return lmx_err(LMX_ERR_INVALID_ARG, "kv cache: empty step");
    c->step_T = T;
    if (c->kind == LMX_KV_ROTATING) return T == 1 ? rotating_in_place(ex, c) : rotating_concat(ex, c, T);
    int64_t need = c->offset + T;
    if (need > c->capacity) /* mlx-lm: the used rows plus ceil(T/256) steps of 256 */
        LMX_TRY(lmx_kv_reserve(ex, c, c->offset + (T + LMX_KV_STEP - 1) / LMX_KV_STEP * LMX_KV_STEP));
    c->step_write = c->offset;
    return LMX_OK;
}

static lmx_status quantize_rows(lmx_kv_cache *c, int li, const float *k, const float *v, int64_t r0, int64_t n) {
    int64_t W = row_elems(c), QW = qwords(c), G = qgroups(c);
    LMX_TRY(lmx_quantize(LMX_QMODE_AFFINE, c->kv_bits, c->group_size, LMX_F32, k, n * W, c->kq[li] + r0 * QW,
                         c->ks[li] + r0 * G, c->kb[li] + r0 * G));
    return lmx_quantize(LMX_QMODE_AFFINE, c->kv_bits, c->group_size, LMX_F32, v, n * W, c->vq[li] + r0 * QW,
                        c->vs[li] + r0 * G, c->vb[li] + r0 * G);
}

lmx_status lmx_kv_rows(lmx_kv_cache *c, int li, lmx_array *K, lmx_array *V) {
    if (c->kind != LMX_KV_STANDARD || c->kv_bits || li < 0 || li >= c->n_layer)
        return lmx_err(LMX_ERR_INVALID_ARG, "kv rows: a standard cache's layer only");
    *K = rows_view(&c->k[li], c->step_write, c->step_T, row_elems(c));
    *V = rows_view(&c->v[li], c->step_write, c->step_T, row_elems(c));
    return LMX_OK;
}

lmx_status lmx_kv_store(lmx_exec *ex, lmx_kv_cache *c, int li, const lmx_array *k, const lmx_array *v,
                        int model_window, lmx_array *K, lmx_array *V, int64_t *pos0, int *window) {
    int64_t T = c->step_T, W = row_elems(c), r0 = c->step_write;
    if (c->kind == LMX_KV_QUANTIZED) {
        /* Attention over the dequantized rows: numerically mlx-lm's quantized
         * matmuls on the same packed data (f32 activations). */
        int64_t n = c->offset + T;
        LMX_TRY(quantize_rows(c, li, k->data, v->data, r0, T));
        LMX_TRY(lmx_dequantize(LMX_QMODE_AFFINE, c->kv_bits, c->group_size, LMX_F32, c->kq[li], c->ks[li], c->kb[li],
                               n * W, c->deq_k.data));
        LMX_TRY(lmx_dequantize(LMX_QMODE_AFFINE, c->kv_bits, c->group_size, LMX_F32, c->vq[li], c->vs[li], c->vb[li],
                               n * W, c->deq_v.data));
        *K = rows_view3(c, &c->deq_k, n);
        *V = rows_view3(c, &c->deq_v, n);
        *pos0 = c->offset;
        *window = model_window;
        return LMX_OK;
    }
    lmx_array dk = rows_view(&c->k[li], r0, T, W), dv = rows_view(&c->v[li], r0, T, W);
    if (k) LMX_TRY(lmx_copy(ex, &dk, k)); /* NULL: written through lmx_kv_rows */
    if (v) LMX_TRY(lmx_copy(ex, &dv, v));
    if (c->kind == LMX_KV_STANDARD) {
        *K = rows_view3(c, &c->k[li], c->offset + T);
        *V = rows_view3(c, &c->v[li], c->offset + T);
        *pos0 = c->offset;
        *window = model_window;
    } else if (c->step_concat) {
        /* Rows are temporal: query i sits at row kept+i and sees the
         * max_size rows up to it (mlx-lm's windowed causal mask). */
        *K = rows_view3(c, &c->k[li], c->rows);
        *V = rows_view3(c, &c->v[li], c->rows);
        *pos0 = c->step_kept;
        int w = (int)(c->max_size < INT32_MAX ? c->max_size : INT32_MAX);
        *window = model_window > 0 && model_window < w ? model_window : w;
    } else {
        /* One query sees every row in use (no mask, as in mlx-lm): the ring
         * is out of order, but attention does not care. */
        int64_t n = c->offset + 1 < c->rows ? c->offset + 1 : c->rows;
        *K = rows_view3(c, &c->k[li], n);
        *V = rows_view3(c, &c->v[li], n);
        *pos0 = n - 1;
        *window = 0;
    }
    return LMX_OK;
}

lmx_status lmx_kv_quantize_now(lmx_kv_cache *c) {
    if (c->kind != LMX_KV_STANDARD || !c->kv_bits) return LMX_OK;
    int64_t cap = c->capacity > c->offset ? c->capacity : c->offset;
    if (cap < 1) cap = 1;
    c->kind = LMX_KV_QUANTIZED;
    int64_t old_cap = c->capacity;
    c->capacity = 0;
    for (int l = 0; l < c->n_layer; l++) {
        LMX_TRY(grow_host((void **)&c->kq[l], 4, qwords(c), cap));
        LMX_TRY(grow_host((void **)&c->vq[l], 4, qwords(c), cap));
        LMX_TRY(grow_host((void **)&c->ks[l], 4, qgroups(c), cap));
        LMX_TRY(grow_host((void **)&c->kb[l], 4, qgroups(c), cap));
        LMX_TRY(grow_host((void **)&c->vs[l], 4, qgroups(c), cap));
        LMX_TRY(grow_host((void **)&c->vb[l], 4, qgroups(c), cap));
        if (c->offset > 0 && old_cap > 0) LMX_TRY(quantize_rows(c, l, c->k[l].data, c->v[l].data, 0, c->offset));
        lmx_array_release(&c->k[l]);
        lmx_array_release(&c->v[l]);
    }
    lmx_exec ex = {0};
    LMX_TRY(grow_float(&ex, c, &c->deq_k, cap, 0));
    LMX_TRY(grow_float(&ex, c, &c->deq_v, cap, 0));
    c->capacity = cap;
    return LMX_OK;
}

lmx_status lmx_kv_end(lmx_kv_cache *c) {
    c->offset += c->step_T;
    if (c->kind == LMX_KV_ROTATING)
        c->idx = c->step_concat ? c->rows : c->idx + 1;
    else
        c->rows = c->offset;
    c->step_T = 0;
    if (c->kind == LMX_KV_STANDARD && c->kv_bits && c->offset >= c->quantized_start) return lmx_kv_quantize_now(c);
    return LMX_OK;
}

bool lmx_kv_trimmable(const lmx_kv_cache *c) { return c->kind != LMX_KV_ROTATING || c->offset < c->max_size; }

int64_t lmx_kv_trim(lmx_kv_cache *c, int64_t n) {
    if (!lmx_kv_trimmable(c) || n <= 0) return 0;
    if (n > c->offset) n = c->offset;
    c->offset -= n;
    if (c->kind == LMX_KV_ROTATING)
        c->idx -= n;
    else
        c->rows = c->offset;
    return n;
}
