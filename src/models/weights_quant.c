/* weights_quant.c - Linear/Embedding modules in float, GGUF or MLX-quantized
 * storage, and the config.json "quantization" rules of mlx-lm (§4a):
 *   quantized iff the config has an entry for the module (dict: its params,
 *   false: not) or "<module>.scales" exists (global params); old configs
 *   without "mode" are affine; HF-style "quantization_config" is read when
 *   "quantization" is absent. */
#include "models/model.h"
#include "models/weights.h"

#include <stdio.h>
#include <stdlib.h>

typedef enum { QM_AFFINE, QM_MXFP4, QM_NVFP4, QM_MXFP8 } qmode;

typedef struct {
    bool on;
    int bits, group;
    qmode mode;
} qparams;

static const cJSON *quant_obj(const lmx_config *c) {
    if (!c) return NULL;
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(c->root, "quantization");
    if (!cJSON_IsObject(q)) q = cJSON_GetObjectItemCaseSensitive(c->root, "quantization_config");
    return cJSON_IsObject(q) ? q : NULL;
}

static bool is_param_key(const char *k) {
    return !strcmp(k, "group_size") || !strcmp(k, "bits") || !strcmp(k, "mode") || !strcmp(k, "quant_method");
}

/* Reads group_size/bits/mode of obj over defaults in *p. */
static lmx_status read_params(const lmx_config *c, const char *where, const cJSON *obj, qparams *p) {
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(obj, "group_size");
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(obj, "bits");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(obj, "mode");
    if (g && !cJSON_IsNumber(g)) return lmx_err(LMX_ERR_FORMAT, "%s: %s.group_size: not a number", c->path, where);
    if (b && !cJSON_IsNumber(b)) return lmx_err(LMX_ERR_FORMAT, "%s: %s.bits: not a number", c->path, where);
    if (g) p->group = g->valueint;
    if (b) p->bits = b->valueint;
    if (m) {
        const char *s = cJSON_GetStringValue(m);
        if (!s) return lmx_err(LMX_ERR_FORMAT, "%s: %s.mode: not a string", c->path, where);
        if (!strcmp(s, "affine")) p->mode = QM_AFFINE;
        else if (!strcmp(s, "mxfp4")) p->mode = QM_MXFP4;
        else if (!strcmp(s, "nvfp4")) p->mode = QM_NVFP4;
        else if (!strcmp(s, "mxfp8")) p->mode = QM_MXFP8;
        else return lmx_err(LMX_ERR_UNSUPPORTED, "%s: %s.mode: '%s' is not supported", c->path, where, s);
    }
    return LMX_OK;
}

/* Decides whether module is quantized and with which params. */
static lmx_status module_params(const struct lmx_weights_src *w, const char *module, qparams *p) {
    memset(p, 0, sizeof *p);
    p->bits = 4;
    p->group = 64;
    p->mode = QM_AFFINE;
    const cJSON *q = quant_obj(w->cfg);
    char nm[512];
    bool has_scales = w->st && lmx_weights_has(w, lmx_wname(nm, sizeof nm, "%s.scales", module));
    if (!q) {
        if (has_scales) return lmx_err(LMX_ERR_FORMAT, "%s: tensor '%s.scales' exists but config.json has no quantization",
                                        w->path, module);
        return LMX_OK;
    }
    LMX_TRY(read_params(w->cfg, "quantization", q, p));
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(q, module);
    if (!e) e = cJSON_GetObjectItemCaseSensitive(q, lmx_wname(nm, sizeof nm, "language_model.%s", module));
    if (cJSON_IsFalse(e)) return LMX_OK;
    if (cJSON_IsObject(e)) {
        char where[600];
        snprintf(where, sizeof where, "quantization.%s", module);
        LMX_TRY(read_params(w->cfg, where, e, p));
        p->on = true;
        return LMX_OK;
    }
    p->on = has_scales;
    return LMX_OK;
}

lmx_status lmx_weights_check_quant_overrides(const struct lmx_weights_src *w) {
    const cJSON *q = quant_obj(w->cfg);
    if (!q) return LMX_OK;
    for (const cJSON *e = q->child; e; e = e->next) {
        if (!e->string || is_param_key(e->string) || !(cJSON_IsObject(e) || cJSON_IsFalse(e))) continue;
        char nm[512];
        if (!lmx_weights_has(w, lmx_wname(nm, sizeof nm, "%s.weight", e->string)))
            return lmx_err(LMX_ERR_FORMAT, "%s: quantization.%s: names no module of the model (no tensor '%s')",
                           w->cfg->path, e->string, nm);
    }
    return LMX_OK;
}

static const char *mode_name(qmode m) {
    static const char *n[] = {"affine", "mxfp4", "nvfp4", "mxfp8"};
    return n[m];
}

/* Reinterprets the packed U32 weight and checks scales/biases. */
static lmx_status load_packed(const struct lmx_weights_src *w, const char *module, int ndim, const int64_t *expect,
                              const qparams *p, lmx_linear *out) {
    char nm[512];
    lmx_array raw;
    LMX_TRY(lmx_weights_get_raw(w, lmx_wname(nm, sizeof nm, "%s.weight", module), true, &raw));
    lmx_status st = LMX_OK;
    lmx_dtype dt;
    if (p->mode == QM_AFFINE) {
        dt = lmx_dtype_mlx_affine(p->bits);
        if (dt == LMX_DTYPE_INVALID)
            st = lmx_err(LMX_ERR_UNSUPPORTED, "%s: tensor '%s': bits: %d is not supported (2, 3, 4, 5, 6 or 8)",
                         w->path, nm, p->bits);
    } else {
        int want_bits = p->mode == QM_MXFP8 ? 8 : 4, want_group = p->mode == QM_NVFP4 ? 16 : 32;
        dt = p->mode == QM_MXFP8 ? LMX_MLX_FP8 : LMX_MLX_FP4;
        if (p->bits != want_bits || p->group != want_group)
            st = lmx_err(LMX_ERR_UNSUPPORTED, "%s: tensor '%s': %s needs bits %d and group size %d, config has %d/%d",
                         w->path, nm, mode_name(p->mode), want_bits, want_group, p->bits, p->group);
    }
    if (!st && (p->group <= 0 || p->group > 4096))
        st = lmx_err(LMX_ERR_UNSUPPORTED, "%s: tensor '%s': group_size: %d is not supported", w->path, nm, p->group);
    if (!st && raw.dtype != LMX_U32)
        st = lmx_err(LMX_ERR_FORMAT, "%s: tensor '%s': quantized (%s, %d bits) but stored as %s, not U32", w->path, nm,
                     mode_name(p->mode), p->bits, lmx_dtype_info(raw.dtype)->st_name);
    if (!st && raw.ndim != ndim)
        st = lmx_err(LMX_ERR_SHAPE, "%s: tensor '%s': %d dimensions, expected %d", w->path, nm, raw.ndim, ndim);
    int64_t shape[LMX_MAX_DIMS];
    if (!st) {
        memcpy(shape, raw.shape, sizeof shape);
        int64_t pw = raw.shape[ndim - 1], K = expect[ndim - 1];
        if (K < 0) K = pw * 32 / p->bits;
        if (pw * 32 != K * p->bits)
            st = lmx_err(LMX_ERR_SHAPE, "%s: tensor '%s': packed width %lld is inconsistent with %d bits for %lld inputs "
                         "(expected %lld)", w->path, nm, (long long)pw, p->bits, (long long)K, (long long)(K * p->bits / 32));
        else if (K % p->group || K % 32)
            st = lmx_err(LMX_ERR_SHAPE, "%s: tensor '%s': group size %d does not divide the row of %lld", w->path, nm,
                         p->group, (long long)K);
        shape[ndim - 1] = K;
        for (int i = 0; !st && i < ndim - 1; i++)
            if (expect[i] >= 0 && expect[i] != shape[i])
                st = lmx_err(LMX_ERR_SHAPE, "%s: tensor '%s': dimension %d is %lld, expected %lld", w->path, nm, i,
                             (long long)shape[i], (long long)expect[i]);
    }
    if (st) {
        lmx_array_release(&raw);
        return st;
    }
    /* The same bytes, seen as the unpacked shape of an MLX dtype row. */
    raw.dtype = dt;
    int64_t stride = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        raw.shape[i] = shape[i];
        raw.strides[i] = stride;
        stride *= shape[i];
    }
    out->w = raw;
    out->group_size = p->group;
    int64_t sshape[LMX_MAX_DIMS];
    memcpy(sshape, shape, sizeof sshape);
    sshape[ndim - 1] = shape[ndim - 1] / p->group;
    const char *parts[2] = {"scales", "biases"};
    lmx_array *dst[2] = {&out->scales, &out->biases};
    for (int k = 0; k < (p->mode == QM_AFFINE ? 2 : 1); k++) {
        lmx_wname(nm, sizeof nm, "%s.%s", module, parts[k]);
        LMX_TRY(lmx_weights_get_raw(w, nm, false, dst[k]));
        lmx_array *a = dst[k];
        if (lmx_array_empty(a))
            return lmx_err(LMX_ERR_NOT_FOUND, "%s: missing tensor '%s' of quantized module '%s'", w->path, nm, module);
        bool ok = a->ndim == ndim;
        for (int i = 0; ok && i < ndim; i++) ok = a->shape[i] == sshape[i];
        if (!ok) {
            char got[64];
            return lmx_err(LMX_ERR_SHAPE, "%s: tensor '%s': shape %s, expected [.., %lld, %lld] (group size %d)", w->path,
                           nm, lmx_shape_str(a, got, sizeof got), (long long)sshape[ndim - 2],
                           (long long)sshape[ndim - 1], p->group);
        }
        if (p->mode == QM_AFFINE) {
            if (!lmx_dtype_info(a->dtype)->is_float)
                return lmx_err(LMX_ERR_FORMAT, "%s: tensor '%s': dtype %s, expected a float type", w->path, nm,
                               lmx_dtype_info(a->dtype)->st_name);
        } else {
            if (a->dtype != LMX_U8)
                return lmx_err(LMX_ERR_FORMAT, "%s: tensor '%s': dtype %s, expected U8", w->path, nm,
                               lmx_dtype_info(a->dtype)->st_name);
            a->dtype = p->mode == QM_NVFP4 ? LMX_E4M3 : LMX_E8M0;
        }
    }
    return LMX_OK;
}

lmx_status lmx_weights_get_linear(const struct lmx_weights_src *w, const char *module, int ndim,
                                  const int64_t *expect, bool required, bool want_bias, lmx_linear *out) {
    memset(out, 0, sizeof *out);
    char nm[512];
    lmx_wname(nm, sizeof nm, "%s.weight", module);
    if (!lmx_weights_has(w, nm)) {
        if (!required) return LMX_OK;
        return lmx_err(LMX_ERR_NOT_FOUND, "%s: missing tensor '%s'", w->path, nm);
    }
    qparams p = {0};
    if (w->st) LMX_TRY(module_params(w, module, &p));
    lmx_status st;
    if (p.on)
        st = load_packed(w, module, ndim, expect, &p, out);
    else
        st = lmx_weights_get(w, nm, ndim, expect, true, &out->w);
    if (!st && want_bias) {
        int64_t bs[1] = {expect[ndim - 2]};
        st = lmx_weights_get(w, lmx_wname(nm, sizeof nm, "%s.bias", module), 1, bs, false, &out->b);
    }
    if (st) lmx_linear_release(out);
    return st;
}
