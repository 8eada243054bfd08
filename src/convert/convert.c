/* convert.c - lmx_convert: plan (convert_plan.c), then shards written with
 * MLX's header layout into a temporary folder next to dst, the index,
 * config.json, the copied tokenizer/generation files and a model card, and
 * one rename at the end. */
#include "convert/convert_internal.h"
#include "models/model.h"

#include <dirent.h>
#include <fcntl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

void lmx_convert_options_init(lmx_convert_options *o) { memset(o, 0, sizeof *o); }

static lmx_dtype dtype_by_name(const char *s) {
    if (!s) return LMX_DTYPE_INVALID;
    if (!strcmp(s, "float16")) return LMX_F16;
    if (!strcmp(s, "bfloat16")) return LMX_BF16;
    if (!strcmp(s, "float32")) return LMX_F32;
    return LMX_DTYPE_INVALID;
}

/* One module's quantization, computed when its first part is written. */
typedef struct {
    char *module;
    uint8_t *wq, *scales, *biases;
    size_t wq_n, s_n;
} qcache;

static void qcache_clear(qcache *c) {
    free(c->module), free(c->wq), free(c->scales), free(c->biases);
    memset(c, 0, sizeof *c);
}

/* The source tensor (or the stacked experts) as bytes of dtype dt (cast
 * through f32 unless equal). */
static lmx_status cast_src(const cv_entry *e, lmx_dtype dt, uint8_t **out, size_t *n_out) {
    const lmx_st_tensor *t = e->src;
    int nsrc = e->n_stack ? e->n_stack : 1;
    int64_t n = 1;
    for (int i = 0; i < t->n_dims; i++) n *= t->shape[i];
    size_t one = lmx_dtype_bytes(dt, n), bytes = one * (size_t)nsrc;
    uint8_t *o = malloc(bytes ? bytes : 1);
    float *f = t->dtype == dt ? NULL : malloc((size_t)(n ? n : 1) * sizeof *f);
    const lmx_dtype_traits *a = lmx_dtype_info(t->dtype), *b = lmx_dtype_info(dt);
    if (!o || (t->dtype != dt && !f)) {
        free(o), free(f);
        return lmx_err(LMX_ERR_NOMEM, "convert: out of memory for '%s'", t->name);
    }
    if (t->dtype != dt && (!a->to_f32 || !b->from_f32)) {
        free(f), free(o);
        return lmx_err(LMX_ERR_UNSUPPORTED, "convert: tensor '%s': cannot cast %s to %s", t->name, a->name, b->name);
    }
    for (int k = 0; k < nsrc; k++) {
        const lmx_st_tensor *u = e->n_stack ? e->stack[k] : t;
        if (u->dtype == dt) {
            memcpy(o + one * (size_t)k, u->data, one);
        } else {
            a->to_f32(u->data, f, n);
            b->from_f32(f, o + one * (size_t)k, n);
        }
    }
    free(f);
    *out = o;
    *n_out = bytes;
    return LMX_OK;
}

static lmx_status quantize_module(const cv_entry *e, qcache *c) {
    if (c->module && !strcmp(c->module, e->module)) return LMX_OK;
    qcache_clear(c);
    uint8_t *w;
    size_t wn;
    LMX_TRY(cast_src(e, e->fdt, &w, &wn));
    int64_t n = 1;
    for (int i = 0; i < e->src->n_dims; i++) n *= e->src->shape[i];
    if (e->n_stack) n *= e->n_stack;
    c->wq_n = (size_t)(n * e->bits / 8);
    c->s_n = lmx_dtype_bytes(e->mode == LMX_QMODE_AFFINE ? e->fdt : LMX_U8, n / e->group);
    c->module = lmx_strdup(e->module);
    c->wq = malloc(c->wq_n);
    c->scales = malloc(c->s_n);
    c->biases = malloc(c->s_n);
    lmx_status s = !c->module || !c->wq || !c->scales || !c->biases ? lmx_err(LMX_ERR_NOMEM, "convert: out of memory")
                   : lmx_quantize(e->mode, e->bits, e->group, e->fdt, w, n, c->wq, c->scales,
                                  e->mode == LMX_QMODE_AFFINE ? c->biases : NULL);
    free(w);
    if (s) {
        lmx_err_prefix(s, "convert: module '%s': ", e->module);
        qcache_clear(c);
    }
    return s;
}

static lmx_status dequant_module(const cv_plan *p, const struct lmx_weights_src *ws, const cv_entry *e, uint8_t **out,
                                 size_t *n_out) {
    lmx_linear l;
    LMX_TRY(lmx_weights_get_linear(ws, e->module, e->ndim, (int64_t[4]){-1, -1, -1, -1}, true, false, &l));
    const lmx_dtype_traits *wt = lmx_dtype_info(l.w.dtype);
    lmx_qmode m = l.w.dtype == LMX_MLX_FP8 ? LMX_QMODE_MXFP8 : l.w.dtype == LMX_MLX_FP4
                  ? (l.group_size == 16 ? LMX_QMODE_NVFP4 : LMX_QMODE_MXFP4) : LMX_QMODE_AFFINE;
    int64_t n = lmx_array_numel(&l.w);
    size_t bytes = lmx_dtype_bytes(e->dtype, n);
    uint8_t *o = malloc(bytes);
    lmx_status s;
    if (!o) {
        s = lmx_err(LMX_ERR_NOMEM, "convert: out of memory");
    } else if (m == LMX_QMODE_AFFINE && l.scales.dtype != e->dtype) {
        /* dequantize in the scales' dtype, then cast */
        uint8_t *t = malloc(lmx_dtype_bytes(l.scales.dtype, n));
        float *f = malloc((size_t)n * sizeof *f);
        s = !t || !f ? lmx_err(LMX_ERR_NOMEM, "convert: out of memory")
                     : lmx_dequantize(m, wt->bits, l.group_size, l.scales.dtype, l.w.data, l.scales.data,
                                      l.biases.data, n, t);
        if (!s) {
            lmx_dtype_info(l.scales.dtype)->to_f32(t, f, n);
            lmx_dtype_info(e->dtype)->from_f32(f, o, n);
        }
        free(t), free(f);
    } else {
        s = lmx_dequantize(m, wt->bits, l.group_size, e->dtype, l.w.data, l.scales.data,
                           lmx_array_empty(&l.biases) ? NULL : l.biases.data, n, o);
    }
    lmx_linear_release(&l);
    (void)p;
    if (s) {
        free(o);
        return s;
    }
    *out = o;
    *n_out = bytes;
    return LMX_OK;
}

/* ---- edits (fuse) ------------------------------------------------------------ */

static lmx_status apply_edit(const cv_plan *p, const char *name, lmx_dtype dt, int ndim, const int64_t *shape,
                             void *data) {
    int64_t rows = shape[0], cols = ndim == 2 ? shape[1] : 1;
    lmx_status s = p->edit->apply(p->edit->user, name, dt, rows, cols, data);
    if (s) lmx_err_prefix(s, "%s: tensor '%s': ", p->src, name);
    return s;
}

/* A float tensor rewritten in its own dtype, then cast to the output's. */
static lmx_status edited_copy(const cv_plan *p, const cv_entry *e, uint8_t **out, size_t *n_out) {
    lmx_dtype sdt = e->src->dtype;
    LMX_TRY(cast_src(e, sdt, out, n_out));
    lmx_status s = apply_edit(p, e->name, sdt, e->ndim, e->shape, *out);
    if (!s && sdt != e->dtype) {
        int64_t n = (int64_t)(*n_out / lmx_dtype_bytes(sdt, 1));
        float *f = malloc((size_t)(n ? n : 1) * sizeof *f);
        uint8_t *o = malloc(lmx_dtype_bytes(e->dtype, n ? n : 1));
        if (!f || !o) {
            s = lmx_err(LMX_ERR_NOMEM, "convert: out of memory");
        } else {
            lmx_dtype_info(sdt)->to_f32(*out, f, n);
            lmx_dtype_info(e->dtype)->from_f32(f, o, n);
            free(*out);
            *out = o;
            *n_out = lmx_dtype_bytes(e->dtype, n);
            o = NULL;
        }
        free(f), free(o);
    }
    if (s) {
        free(*out);
        *out = NULL;
    }
    return s;
}

/* An MLX-quantized module rewritten by the edit: dequantized as mx.dequantize
 * does (affine: the scales' dtype; fp modes: bfloat16), rewritten, and
 * quantized again with the module's own mode, bits and group size (what
 * mlx-lm's fuse does through QuantizedLinear.from_linear). */
static lmx_status requant_module(const cv_plan *p, const struct lmx_weights_src *ws, const cv_entry *e, qcache *c) {
    if (c->module && !strcmp(c->module, e->module)) return LMX_OK;
    qcache_clear(c);
    lmx_linear l;
    LMX_TRY(lmx_weights_get_linear(ws, e->module, 2, (int64_t[2]){-1, -1}, true, false, &l));
    const lmx_dtype_traits *wt = lmx_dtype_info(l.w.dtype);
    lmx_qmode m = l.w.dtype == LMX_MLX_FP8 ? LMX_QMODE_MXFP8 : l.w.dtype == LMX_MLX_FP4
                  ? (l.group_size == 16 ? LMX_QMODE_NVFP4 : LMX_QMODE_MXFP4) : LMX_QMODE_AFFINE;
    bool affine = m == LMX_QMODE_AFFINE;
    lmx_dtype fdt = affine ? l.scales.dtype : LMX_BF16;
    int64_t n = lmx_array_numel(&l.w);
    uint8_t *w = malloc(lmx_dtype_bytes(fdt, n));
    c->module = lmx_strdup(e->module);
    c->wq_n = (size_t)(n * wt->bits / 8);
    c->s_n = lmx_dtype_bytes(affine ? fdt : LMX_U8, n / l.group_size);
    c->wq = malloc(c->wq_n);
    c->scales = malloc(c->s_n);
    c->biases = malloc(c->s_n);
    lmx_status s = !w || !c->module || !c->wq || !c->scales || !c->biases ? lmx_err(LMX_ERR_NOMEM, "convert: out of memory")
                   : lmx_dequantize(m, wt->bits, l.group_size, fdt, l.w.data, l.scales.data,
                                    affine ? l.biases.data : NULL, n, w);
    char name[600];
    snprintf(name, sizeof name, "%s.weight", e->module);
    if (!s) s = apply_edit(p, name, fdt, 2, l.w.shape, w);
    if (!s) s = lmx_quantize(m, wt->bits, l.group_size, fdt, w, n, c->wq, c->scales, affine ? c->biases : NULL);
    free(w);
    lmx_linear_release(&l);
    if (s) qcache_clear(c);
    return s;
}

static lmx_status resolve_dequant_shapes(cv_plan *p, const struct lmx_weights_src *ws) {
    for (size_t i = 0; i < p->n; i++) {
        cv_entry *e = &p->e[i];
        if (e->kind != CV_DEQUANT) continue;
        lmx_linear l;
        LMX_TRY(lmx_weights_get_linear(ws, e->module, e->ndim, (int64_t[4]){-1, -1, -1, -1}, true, false, &l));
        memcpy(e->shape, l.w.shape, sizeof e->shape);
        lmx_linear_release(&l);
    }
    return LMX_OK;
}

static uint64_t numel(const cv_entry *e) {
    uint64_t n = 1;
    for (int i = 0; i < e->ndim; i++) n *= (uint64_t)e->shape[i];
    return n;
}

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* Parameters of an entry as mlx-lm's get_total_parameters counts them: an
 * MLX-quantized module passed through (copied or re-quantized) counts its
 * unpacked weight and not its scales/biases. */
static uint64_t packed_params(const cv_plan *p, const struct lmx_weights_src *ws, const cv_entry *e) {
    size_t l = strlen(e->name);
    if (e->dtype != LMX_U32 && (ends_with(e->name, ".scales") || ends_with(e->name, ".biases")) && l < 600) {
        char w[600];
        snprintf(w, sizeof w, "%.*s.weight", (int)(l - 7), e->name);
        const lmx_st_tensor *t = lmx_st_set_find(p->st, w, NULL);
        if (t && t->dtype == LMX_U32) return 0;
    }
    if (e->dtype == LMX_U32 && ends_with(e->name, ".weight") && l < 600 && (e->kind == CV_COPY || e->kind == CV_REQUANT_W)) {
        char mod[600];
        snprintf(mod, sizeof mod, "%.*s", (int)(l - 7), e->name);
        lmx_linear lin;
        int64_t any[LMX_MAX_DIMS] = {-1, -1, -1, -1};
        if (lmx_weights_get_linear(ws, mod, e->ndim, any, true, false, &lin) == LMX_OK) {
            uint64_t n = (uint64_t)lmx_array_numel(&lin.w);
            lmx_linear_release(&lin);
            return n;
        }
    }
    return numel(e);
}

static lmx_status write_shard(const cv_plan *p, const struct lmx_weights_src *ws, const char *path, size_t a, size_t b,
                              qcache *qc, uint64_t *done, uint64_t total, const lmx_convert_options *o) {
    lmx_st_write_tensor *ts = calloc(b - a, sizeof *ts);
    if (!ts) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    for (size_t i = a; i < b; i++) {
        const cv_entry *e = &p->e[i];
        ts[i - a] = (lmx_st_write_tensor){e->name, e->dtype, e->ndim, e->shape, NULL, lmx_dtype_bytes(e->dtype, (int64_t)numel(e))};
    }
    static const char *const meta[] = {"format", "mlx", NULL};
    lmx_st_writer *w;
    lmx_status s = lmx_st_writer_open_mlx(path, ts, b - a, meta, &w);
    free(ts);
    if (s) return s;
    for (size_t i = a; i < b && !s; i++) {
        const cv_entry *e = &p->e[i];
        uint8_t *buf = NULL;
        size_t n = 0;
        switch (e->kind) {
        case CV_COPY:
            s = e->edit ? edited_copy(p, e, &buf, &n) : cast_src(e, e->dtype, &buf, &n);
            if (!s) s = lmx_st_writer_write(w, buf, n);
            break;
        case CV_DEQUANT:
            s = dequant_module(p, ws, e, &buf, &n);
            if (!s && e->edit) s = apply_edit(p, e->name, e->dtype, e->ndim, e->shape, buf);
            if (!s) s = lmx_st_writer_write(w, buf, n);
            break;
        case CV_REQUANT_W:
        case CV_REQUANT_S:
        case CV_REQUANT_B:
            s = requant_module(p, ws, e, qc);
            n = e->kind == CV_REQUANT_W ? qc->wq_n : qc->s_n;
            if (!s && n != lmx_dtype_bytes(e->dtype, (int64_t)numel(e)))
                s = lmx_err(LMX_ERR_INTERNAL, "convert: '%s': re-quantized size differs from the source's", e->name);
            if (!s)
                s = lmx_st_writer_write(w, e->kind == CV_REQUANT_W ? qc->wq : e->kind == CV_REQUANT_S ? qc->scales
                                                                                                     : qc->biases, n);
            break;
        default:
            s = quantize_module(e, qc);
            if (!s)
                s = e->kind == CV_QUANT_W ? lmx_st_writer_write(w, qc->wq, qc->wq_n)
                    : e->kind == CV_QUANT_S ? lmx_st_writer_write(w, qc->scales, qc->s_n)
                                            : lmx_st_writer_write(w, qc->biases, qc->s_n);
            n = lmx_dtype_bytes(e->dtype, (int64_t)numel(e));
        }
        free(buf);
        *done += n;
        if (!s && o->progress) o->progress(*done, total, o->user);
    }
    if (s) {
        lmx_st_writer_abort(w);
        return s;
    }
    return lmx_st_writer_finish(w);
}

/* ---- files ------------------------------------------------------------------ */

static lmx_status write_text(const char *dir, const char *name, const char *text) {
    char *p = lmx_path_join(dir, name);
    if (!p) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    lmx_status s = lmx_atomic_write(p, text, strlen(text));
    free(p);
    return s;
}

static lmx_status copy_file(const char *src_dir, const char *dst_dir, const char *name) {
    char *a = lmx_path_join(src_dir, name), *b = lmx_path_join(dst_dir, name);
    lmx_status s = LMX_OK;
    if (!a || !b) {
        s = lmx_err(LMX_ERR_NOMEM, "out of memory");
    } else if (lmx_file_exists(a) && !lmx_is_dir(a)) {
        char *data;
        size_t n;
        s = lmx_read_file(a, &data, &n);
        if (!s) {
            s = lmx_atomic_write(b, data, n);
            free(data);
        }
    }
    free(a), free(b);
    return s;
}

static bool copied_name(const char *n) {
    static const char *exact[] = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                                  "chat_template.jinja", "chat_template.json", "tokenizer.model", "added_tokens.json",
                                  "vocab.json", "merges.txt", "generation_config.json", "tiktoken.model"};
    for (size_t i = 0; i < sizeof exact / sizeof *exact; i++)
        if (!strcmp(n, exact[i])) return true;
    size_t l = strlen(n);
    return (l > 3 && !strcmp(n + l - 3, ".py")) || (l > 9 && !strcmp(n + l - 9, ".tiktoken"));
}

static lmx_status copy_side_files(const char *src, const char *dst) {
    DIR *d = opendir(src);
    if (!d) return lmx_err(LMX_ERR_IO, "%s: cannot list: %s", src, strerror(errno));
    lmx_status s = LMX_OK;
    struct dirent *de;
    while (!s && (de = readdir(d)))
        if (de->d_name[0] != '.' && copied_name(de->d_name)) s = copy_file(src, dst, de->d_name);
    closedir(d);
    return s;
}

static void rmtree(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)))
            if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
                char *p = lmx_path_join(dir, de->d_name);
                if (p) unlink(p);
                free(p);
            }
        closedir(d);
    }
    rmdir(dir);
}

/* config.json: the source config, sorted keys, quantization entries. */
static lmx_status write_config(const cv_plan *p, const char *dir) {
    cJSON *c = cJSON_Duplicate(p->cfg->root, 1);
    if (!c) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    cJSON_DeleteItemFromObjectCaseSensitive(c, "_name_or_path");
    cJSON_DeleteItemFromObjectCaseSensitive(c, "vision_config");
    if (p->dequantize || p->quantize) {
        cJSON_DeleteItemFromObjectCaseSensitive(c, "quantization");
        cJSON_DeleteItemFromObjectCaseSensitive(c, "quantization_config");
    } else if (cJSON_GetObjectItemCaseSensitive(c, "quantization")) { /* mlx-lm's save_config */
        cJSON_DeleteItemFromObjectCaseSensitive(c, "quantization_config");
        cJSON_AddItemToObject(c, "quantization_config",
                              cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(c, "quantization"), 1));
    }
    if (p->quantize) {
        cJSON *q = cJSON_CreateObject();
        cJSON_AddNumberToObject(q, "group_size", p->group);
        cJSON_AddNumberToObject(q, "bits", p->bits);
        cJSON_AddStringToObject(q, "mode", lmx_qmode_name(p->mode));
        for (size_t i = 0; i < p->n; i++) {
            const cv_entry *e = &p->e[i];
            if (e->kind != CV_QUANT_W || !e->per_layer) continue;
            cJSON *m = cJSON_CreateObject();
            cJSON_AddNumberToObject(m, "group_size", e->group);
            cJSON_AddNumberToObject(m, "bits", e->bits);
            if (!e->no_mode) cJSON_AddStringToObject(m, "mode", lmx_qmode_name(e->mode));
            cJSON_AddItemToObject(q, e->module, m);
        }
        cJSON_AddItemToObject(c, "quantization_config", cJSON_Duplicate(q, 1));
        cJSON_AddItemToObject(c, "quantization", q);
    }
    char *text = lmx_pyjson_dump(c, true);
    cJSON_Delete(c);
    if (!text) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    lmx_status s = write_text(dir, "config.json", text);
    free(text);
    return s;
}

static lmx_status write_index(const cv_plan *p, const char *dir, char **shard_of, uint64_t total_size,
                              uint64_t total_params) {
    cJSON *root = cJSON_CreateObject(), *meta = cJSON_CreateObject(), *wm = cJSON_CreateObject();
    cJSON_AddNumberToObject(meta, "total_size", (double)total_size);
    cJSON_AddNumberToObject(meta, "total_parameters", (double)total_params);
    cJSON_AddItemToObject(root, "metadata", meta);
    for (size_t i = 0; i < p->n; i++) cJSON_AddStringToObject(wm, p->e[i].name, shard_of[i]);
    cJSON_AddItemToObject(root, "weight_map", wm);
    char *text = lmx_pyjson_dump(root, false);
    cJSON_Delete(root);
    if (!text) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    lmx_status s = write_text(dir, "model.safetensors.index.json", text);
    free(text);
    return s;
}

/* ---- driver ------------------------------------------------------------------ */

static lmx_status run(cv_plan *p, const lmx_convert_options *o, const char *tmp, lmx_convert_result *r) {
    struct lmx_weights_src ws = {p->src, p->st, NULL, p->cfg};
    LMX_TRY(resolve_dequant_shapes(p, &ws));
    uint64_t total = 0, params = 0, max = o->max_shard_bytes ? o->max_shard_bytes : (uint64_t)5 << 30;
    for (size_t i = 0; i < p->n; i++) {
        const cv_entry *e = &p->e[i];
        total += lmx_dtype_bytes(e->dtype, (int64_t)numel(e));
        if (e->kind == CV_QUANT_W) params += numel(e) * 32 / (uint64_t)e->bits;
        else if (e->kind == CV_QUANT_S || e->kind == CV_QUANT_B || e->kind == CV_REQUANT_S || e->kind == CV_REQUANT_B) continue;
        else params += packed_params(p, &ws, e);
    }
    /* greedy shards: a new shard when the next tensor would pass the limit */
    size_t *starts = calloc(p->n + 1, sizeof *starts);
    char **shard_of = calloc(p->n ? p->n : 1, sizeof *shard_of);
    if (!starts || !shard_of) {
        free(starts), free(shard_of);
        return lmx_err(LMX_ERR_NOMEM, "out of memory");
    }
    int ns = 0;
    uint64_t cur = 0;
    for (size_t i = 0; i < p->n; i++) {
        uint64_t sz = lmx_dtype_bytes(p->e[i].dtype, (int64_t)numel(&p->e[i]));
        if (ns == 0 || cur + sz > max) {
            starts[ns++] = i;
            cur = 0;
        }
        cur += sz;
    }
    starts[ns] = p->n;
    char (*names)[64] = calloc((size_t)(ns ? ns : 1), sizeof *names);
    lmx_status s = names ? LMX_OK : lmx_err(LMX_ERR_NOMEM, "out of memory");
    qcache qc = {0};
    uint64_t done = 0;
    for (int k = 0; k < ns && !s; k++) {
        if (ns == 1)
            snprintf(names[k], sizeof names[k], "model.safetensors");
        else
            snprintf(names[k], sizeof names[k], "model-%05d-of-%05d.safetensors", k + 1, ns);
        for (size_t i = starts[k]; i < starts[k + 1]; i++) shard_of[i] = names[k];
        char *path = lmx_path_join(tmp, names[k]);
        s = path ? write_shard(p, &ws, path, starts[k], starts[k + 1], &qc, &done, total, o)
                 : lmx_err(LMX_ERR_NOMEM, "out of memory");
        free(path);
    }
    qcache_clear(&qc);
    if (!s) s = write_index(p, tmp, shard_of, total, params);
    free(starts), free(shard_of), free(names);
    LMX_TRY(s);
    LMX_TRY(write_config(p, tmp));
    LMX_TRY(copy_side_files(p->src, tmp));
    char card[1024];
    snprintf(card, sizeof card, "---\nlibrary_name: mlx\npipeline_tag: text-generation\ntags:\n- mlx\nbase_model: %s\n---\n",
             p->origin ? p->origin : p->src);
    LMX_TRY(write_text(tmp, "README.md", o->model_card ? o->model_card : card));
    r->total_size = total;
    r->total_params = params;
    r->bits_per_weight = params ? (double)total * 8.0 / (double)params : 0;
    r->n_shards = ns;
    return LMX_OK;
}

/* A hidden temporary folder beside dst (the final rename stays on one file
 * system): "<dir>/.<name>.<tag>-XXXXXX". NULL with the error set. */
static lmx_status temp_beside(const char *dst, const char *tag, char **out) {
    size_t n = strlen(dst) + strlen(tag) + 16;
    char *tmp = malloc(n);
    *out = NULL;
    if (!tmp) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    const char *slash = strrchr(dst, '/');
    if (slash)
        snprintf(tmp, n, "%.*s/.%s.%s-XXXXXX", (int)(slash - dst), dst, slash + 1, tag);
    else
        snprintf(tmp, n, ".%s.%s-XXXXXX", dst, tag);
    if (!mkdtemp(tmp)) {
        free(tmp);
        return lmx_err(LMX_ERR_IO, "%s: cannot create a temporary folder beside it: %s", dst, strerror(errno));
    }
    chmod(tmp, 0755);
    *out = tmp;
    return LMX_OK;
}

static lmx_status convert_folder(const lmx_convert_options *o, const char *src, const char *origin,
                                 lmx_convert_result *r);

lmx_status lmx_convert(const lmx_convert_options *o, lmx_convert_result *r) {
    memset(r, 0, sizeof *r);
    if (!o->src || !o->dst || !*o->dst) return lmx_err(LMX_ERR_INVALID_ARG, "convert: --hf-path and --mlx-path are required");
    struct stat sb;
    if (lstat(o->dst, &sb) == 0)
        return lmx_err(LMX_ERR_INVALID_ARG, "%s: already exists; delete it or choose another --mlx-path", o->dst);
    if (o->quantize && o->dequantize) return lmx_err(LMX_ERR_INVALID_ARG, "convert: choose either -q or -d, not both");
    if (o->edit && o->quantize) return lmx_err(LMX_ERR_INVALID_ARG, "convert: edits do not combine with -q");
    if (lmx_is_dir(o->src)) return convert_folder(o, o->src, NULL, r);
    if (stat(o->src, &sb) != 0)
        return lmx_err(LMX_ERR_NOT_FOUND, "%s: no such model folder or .gguf file", o->src);
    /* a GGUF file: written as an HF folder beside dst first (the weights
     * dequantized), converted from there, then removed */
    char *mid;
    LMX_TRY(temp_beside(o->dst, "lmx-gguf", &mid));
    lmx_status s = cv_gguf_to_folder(o->src, mid);
    if (!s) s = convert_folder(o, mid, o->src, r);
    rmtree(mid);
    free(mid);
    return s;
}

static lmx_status convert_folder(const lmx_convert_options *o, const char *src, const char *origin,
                                 lmx_convert_result *r) {
    cv_plan p;
    memset(&p, 0, sizeof p);
    p.src = src;
    p.origin = origin;
    p.quantize = o->quantize;
    p.dequantize = o->dequantize;
    p.recipe = o->recipe;
    p.mode = LMX_QMODE_AFFINE;
    if (o->q_mode && !lmx_qmode_parse(o->q_mode, &p.mode))
        return lmx_err(LMX_ERR_INVALID_ARG, "convert: --q-mode: '%s' is not affine, mxfp4, nvfp4 or mxfp8", o->q_mode);
    lmx_qmode_defaults(p.mode, &p.group, &p.bits);
    if (o->q_group) p.group = o->q_group;
    if (o->q_bits) p.bits = o->q_bits;
    if (o->recipe) {
        static const char *ok[] = {"mixed_2_6", "mixed_3_4", "mixed_3_6", "mixed_4_6"};
        bool found = false;
        for (int i = 0; i < 4; i++) found |= !strcmp(o->recipe, ok[i]);
        if (!found) return lmx_err(LMX_ERR_INVALID_ARG, "convert: --quant-predicate: unknown recipe '%s'", o->recipe);
        if (p.mode != LMX_QMODE_AFFINE)
            return lmx_err(LMX_ERR_INVALID_ARG, "convert: --quant-predicate works with affine quantization only");
    }
    if (o->quantize) LMX_TRY(lmx_quant_check(p.mode, p.bits, p.group, p.group * (p.group < 32 ? 2 : 1), "convert"));
    lmx_config *cfg = NULL;
    LMX_TRY(lmx_config_load(src, &cfg));
    p.cfg = cfg;
    p.model_type = lmx_cfg_str(cfg, "model_type", NULL);
    lmx_status st = LMX_OK;
    p.tied = lmx_cfg_bool(cfg, "tie_word_embeddings", false, &st);
    p.n_layers = (int)lmx_cfg_int(cfg, "num_hidden_layers", 0, &st);
    const char *dt = o->dtype;
    if (!dt) dt = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(cfg->root, "torch_dtype"));
    if (!dt && cfg->text) dt = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(cfg->text, "dtype"));
    p.cast = o->keep_dtype && !o->dtype ? LMX_DTYPE_INVALID : dtype_by_name(dt);
    p.edit = o->edit;
    p.keep_dtype = o->keep_dtype;
    if (o->dtype && p.cast == LMX_DTYPE_INVALID)
        st = lmx_err(LMX_ERR_INVALID_ARG, "convert: --dtype: '%s' is not float16, bfloat16 or float32", o->dtype);
    r->dtype = p.cast == LMX_F16 ? "float16" : p.cast == LMX_BF16 ? "bfloat16" : p.cast == LMX_F32 ? "float32" : NULL;
    if (!st) st = lmx_st_set_open(src, &p.st);
    if (!st) st = cv_plan_build(&p);
    char *tmp = NULL;
    if (!st) st = temp_beside(o->dst, "lmx-tmp", &tmp);
    if (!st) st = run(&p, o, tmp, r);
    if (!st && renameat2(AT_FDCWD, tmp, AT_FDCWD, o->dst, RENAME_NOREPLACE) != 0)
        st = lmx_err(LMX_ERR_IO, "%s: cannot rename the finished folder into place: %s", o->dst, strerror(errno));
    if (st && tmp) rmtree(tmp);
    free(tmp);
    cv_plan_free(&p);
    lmx_st_set_close(p.st);
    lmx_config_free(cfg);
    return st;
}
