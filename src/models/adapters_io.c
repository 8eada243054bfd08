/* adapters_io.c - adapter folders as mlx-lm reads and writes them
 * (MLX-LM-SPEC §4c): adapter_config.json, adapters.safetensors with
 * <module>.lora_a [in, r], <module>.lora_b [r, out], <module>.m [out]
 * (DoRA) or plain tensors (full), and NNNNNNN_adapters.safetensors
 * checkpoints. mlx-lm's load_adapters rejects tensors that are not adapter
 * parameters of the model or whose shapes differ; lmx also rejects missing
 * LoRA/DoRA tensors (mlx-lm would keep their random initialisation). */
#include "models/adapters.h"

#include "io/safetensors.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

/* ---- adapter_config.json ---------------------------------------------------- */

void lmx_adapter_config_free(lmx_adapter_config *cfg) {
    for (int i = 0; i < cfg->n_keys; i++) free(cfg->keys[i]);
    free(cfg->keys);
    cfg->keys = NULL;
    cfg->n_keys = 0;
}

lmx_status lmx_adapter_config_copy(lmx_adapter_config *dst, const lmx_adapter_config *src) {
    *dst = *src;
    dst->keys = NULL;
    dst->n_keys = 0;
    if (!src->keys) return LMX_OK;
    dst->keys = calloc((size_t)(src->n_keys ? src->n_keys : 1), sizeof *dst->keys);
    if (!dst->keys) return lmx_err(LMX_ERR_NOMEM, "adapters: out of memory");
    for (int i = 0; i < src->n_keys; i++, dst->n_keys++)
        if (!(dst->keys[i] = lmx_strdup(src->keys[i]))) return lmx_err(LMX_ERR_NOMEM, "adapters: out of memory");
    return LMX_OK;
}

static lmx_status int_field(const char *path, const cJSON *o, const char *key, const char *where, bool required,
                            int64_t def, int64_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) {
        if (required) return lmx_err(LMX_ERR_FORMAT, "%s: %s%s: missing", path, where, key);
        *out = def;
        return LMX_OK;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || fabs(v->valuedouble) > 1e9)
        return lmx_err(LMX_ERR_FORMAT, "%s: %s%s: not an integer", path, where, key);
    *out = (int64_t)v->valuedouble;
    return LMX_OK;
}

static lmx_status num_field(const char *path, const cJSON *o, const char *key, const char *where, double *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) return lmx_err(LMX_ERR_FORMAT, "%s: %s%s: missing", path, where, key);
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return lmx_err(LMX_ERR_FORMAT, "%s: %s%s: not a number", path, where, key);
    *out = v->valuedouble;
    return LMX_OK;
}

static lmx_status parse_lora_params(const char *path, const cJSON *lp, lmx_adapter_config *cfg) {
    const char *w = "lora_parameters.";
    if (!cJSON_IsObject(lp)) return lmx_err(LMX_ERR_FORMAT, "%s: lora_parameters: missing or not an object", path);
    int64_t rank;
    double scale = 0, dropout = 0;
    LMX_TRY(int_field(path, lp, "rank", w, true, 0, &rank));
    if (!cJSON_GetObjectItemCaseSensitive(lp, "scale") && cJSON_GetObjectItemCaseSensitive(lp, "alpha"))
        return lmx_err(LMX_ERR_FORMAT, "%s: lora_parameters.scale: missing (found 'alpha': mlx-lm's LoRA config uses "
                       "'scale')", path);
    LMX_TRY(num_field(path, lp, "scale", w, &scale));
    LMX_TRY(num_field(path, lp, "dropout", w, &dropout));
    if (rank < 1 || rank > 65536) return lmx_err(LMX_ERR_FORMAT, "%s: lora_parameters.rank: %lld is out of range", path,
                                                 (long long)rank);
    if (!(dropout >= 0 && dropout < 1))
        return lmx_err(LMX_ERR_FORMAT, "%s: lora_parameters.dropout: %g is not in [0, 1)", path, dropout);
    cfg->rank = (int)rank;
    cfg->scale = (float)scale;
    cfg->dropout = (float)dropout;
    const cJSON *keys = cJSON_GetObjectItemCaseSensitive(lp, "keys");
    if (!keys || cJSON_IsNull(keys)) return LMX_OK;
    if (!cJSON_IsArray(keys)) return lmx_err(LMX_ERR_FORMAT, "%s: lora_parameters.keys: not a list", path);
    int n = cJSON_GetArraySize(keys);
    cfg->keys = calloc((size_t)(n ? n : 1), sizeof *cfg->keys);
    if (!cfg->keys) return lmx_err(LMX_ERR_NOMEM, "adapters: out of memory");
    int i = 0;
    for (const cJSON *k = keys->child; k; k = k->next, i++) {
        if (!cJSON_IsString(k)) return lmx_err(LMX_ERR_FORMAT, "%s: lora_parameters.keys[%d]: not a string", path, i);
        if (!(cfg->keys[cfg->n_keys++] = lmx_strdup(k->valuestring)))
            return lmx_err(LMX_ERR_NOMEM, "adapters: out of memory");
    }
    return LMX_OK;
}

lmx_status lmx_adapter_config_parse(const char *text, size_t len, const char *path, lmx_adapter_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root) return lmx_err(LMX_ERR_FORMAT, "%s: not valid JSON", path);
    lmx_status s = LMX_OK;
    if (!cJSON_IsObject(root)) s = lmx_err(LMX_ERR_FORMAT, "%s: not a JSON object", path);
    const cJSON *ft = cJSON_GetObjectItemCaseSensitive(root, "fine_tune_type");
    const char *type = ft && !cJSON_IsNull(ft) ? cJSON_GetStringValue(ft) : "lora";
    if (!s && !type) s = lmx_err(LMX_ERR_FORMAT, "%s: fine_tune_type: not a string", path);
    if (!s) {
        if (!strcmp(type, "lora")) cfg->type = LMX_FT_LORA;
        else if (!strcmp(type, "dora")) cfg->type = LMX_FT_DORA;
        else if (!strcmp(type, "full")) cfg->type = LMX_FT_FULL;
        else s = lmx_err(LMX_ERR_FORMAT, "%s: fine_tune_type: '%s' is not lora, dora or full", path, type);
    }
    int64_t nl = 0;
    if (!s) {
        /* very old mlx-lm configs call it lora_layers */
        const char *key = cJSON_GetObjectItemCaseSensitive(root, "num_layers") ? "num_layers" : "lora_layers";
        s = int_field(path, root, cJSON_GetObjectItemCaseSensitive(root, key) ? key : "num_layers", "", true, 0, &nl);
    }
    if (!s) cfg->num_layers = nl < 0 ? -1 : (int)nl;
    if (!s && cfg->type != LMX_FT_FULL) s = parse_lora_params(path, cJSON_GetObjectItemCaseSensitive(root, "lora_parameters"), cfg);
    cJSON_Delete(root);
    if (s) lmx_adapter_config_free(cfg);
    return s;
}

lmx_status lmx_adapter_config_read(const char *path, lmx_adapter_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    if (!lmx_file_exists(path)) return lmx_err(LMX_ERR_NOT_FOUND, "%s: no such adapter config", path);
    char *text;
    size_t n;
    LMX_TRY(lmx_read_file(path, &text, &n));
    lmx_status s = lmx_adapter_config_parse(text, n, path, cfg);
    free(text);
    return s;
}

/* ---- adapters.safetensors: reading ------------------------------------------- */

typedef enum { P_A, P_B, P_M, P_FULL, P_FULL_BIAS } part;

/* The entry and part a tensor name stands for; NULL when none. */
static lmx_adapter_entry *resolve(const lmx_adapters *ad, const char *name, part *p) {
    const char *dot = strrchr(name, '.');
    if (!dot || (size_t)(dot - name) >= sizeof ad->e[0].name) return NULL;
    const char *leaf = dot + 1;
    char mod[sizeof ad->e[0].name];
    snprintf(mod, sizeof mod, "%.*s", (int)(dot - name), name);
    if (ad->cfg.type == LMX_FT_FULL) {
        lmx_adapter_entry *e = lmx_adapters_find(ad, mod);
        if (e && !strcmp(leaf, "weight")) *p = P_FULL;
        else if (e && !strcmp(leaf, "bias") && !lmx_array_empty(&e->full_bias)) *p = P_FULL_BIAS;
        else return NULL;
        return e;
    }
    if (!strcmp(leaf, "lora_a")) *p = P_A;
    else if (!strcmp(leaf, "lora_b")) *p = P_B;
    else if (!strcmp(leaf, "m") && ad->cfg.type == LMX_FT_DORA) *p = P_M;
    else return NULL;
    return lmx_adapters_find(ad, mod);
}

/* The shape the file must hold for (e, p): lora_a [in, r], lora_b [r, out]. */
static int file_shape(const lmx_adapter_entry *e, part p, int64_t *sh) {
    const lmx_array *a = p == P_A ? &e->lora.a : p == P_B ? &e->lora.b : p == P_M ? &e->lora.m
                         : p == P_FULL ? &e->full : &e->full_bias;
    if (p == P_A || p == P_B) {
        sh[0] = a->shape[1];
        sh[1] = a->shape[0];
        return 2;
    }
    memcpy(sh, a->shape, (size_t)a->ndim * sizeof *sh);
    return a->ndim;
}

static const char *tuple_str(const int64_t *sh, int nd, char *buf, size_t cap) {
    size_t k = (size_t)snprintf(buf, cap, "(");
    for (int i = 0; i < nd && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)sh[i]);
    if (k < cap) snprintf(buf + k, cap - k, nd == 1 ? ",)" : ")");
    return buf;
}

static lmx_status check_tensor(const lmx_adapters *ad, const char *file, const lmx_st_tensor *t) {
    part p;
    lmx_adapter_entry *e = resolve(ad, t->name, &p);
    if (!e)
        return lmx_err(LMX_ERR_FORMAT, "%s: tensor '%s': not an adapter parameter in the model (%s, %d layers)", file,
                       t->name, ad->cfg.type == LMX_FT_FULL ? "full" : ad->cfg.type == LMX_FT_DORA ? "dora" : "lora",
                       ad->cfg.num_layers);
    if (t->dtype != LMX_F32 && t->dtype != LMX_BF16 && t->dtype != LMX_F16)
        return lmx_err(LMX_ERR_FORMAT, "%s: tensor '%s': dtype %s, expected F32, BF16 or F16", file, t->name,
                       lmx_dtype_info(t->dtype)->st_name);
    int64_t want[LMX_MAX_DIMS];
    int nd = file_shape(e, p, want);
    bool ok = nd == t->n_dims;
    for (int i = 0; ok && i < nd; i++) ok = want[i] == t->shape[i];
    if (!ok) {
        char a[96], b[96];
        return lmx_err(LMX_ERR_SHAPE, "%s: tensor '%s': adapter shape %s does not match model parameter shape %s", file,
                       t->name, tuple_str(t->shape, t->n_dims, a, sizeof a), tuple_str(want, nd, b, sizeof b));
    }
    return LMX_OK;
}

/* Copies a checked tensor into its entry (f32; lora_a/lora_b transposed). */
static lmx_status store_tensor(lmx_adapters *ad, const lmx_st_tensor *t) {
    part p;
    lmx_adapter_entry *e = resolve(ad, t->name, &p);
    int64_t n = 1;
    for (int i = 0; i < t->n_dims; i++) n *= t->shape[i];
    float *f = malloc((size_t)(n ? n : 1) * sizeof *f);
    if (!f) return lmx_err(LMX_ERR_NOMEM, "adapters: out of memory");
    lmx_dtype_info(t->dtype)->to_f32(t->data, f, n);
    if (p == P_A || p == P_B) {
        lmx_array *dst = p == P_A ? &e->lora.a : &e->lora.b; /* [R, C] from the file's [C, R] */
        int64_t R = dst->shape[0], C = dst->shape[1];
        float *d = dst->data;
        for (int64_t r = 0; r < R; r++)
            for (int64_t c = 0; c < C; c++) d[r * C + c] = f[c * R + r];
    } else {
        memcpy(p == P_M ? e->lora.m.data : p == P_FULL ? e->full.data : e->full_bias.data, f, (size_t)n * sizeof *f);
    }
    free(f);
    return LMX_OK;
}

lmx_status lmx_adapters_read_weights(lmx_adapters *ad, const char *file) {
    if (!lmx_file_exists(file)) return lmx_err(LMX_ERR_NOT_FOUND, "%s: no such adapter weights file", file);
    lmx_st_file *f;
    LMX_TRY(lmx_st_open(file, &f));
    size_t nt = lmx_st_n_tensors(f);
    lmx_status s = LMX_OK;
    /* Validate everything first: a bad file leaves the set untouched. */
    for (size_t i = 0; i < nt && !s; i++) s = check_tensor(ad, file, lmx_st_tensor_at(f, i));
    if (!s && ad->cfg.type != LMX_FT_FULL) {
        int per = ad->cfg.type == LMX_FT_DORA ? 3 : 2;
        static const char *const leaf[3] = {"lora_a", "lora_b", "m"};
        for (int i = 0; i < ad->n && !s; i++)
            for (int k = 0; k < per && !s; k++) {
                char nm[200];
                snprintf(nm, sizeof nm, "%s.%s", ad->e[i].name, leaf[k]);
                if (!lmx_st_find(f, nm))
                    s = lmx_err(LMX_ERR_NOT_FOUND, "%s: tensor '%s' is missing (the config adapts module '%s')", file,
                                nm, ad->e[i].name);
            }
    }
    for (size_t i = 0; i < nt && !s; i++) s = store_tensor(ad, lmx_st_tensor_at(f, i));
    lmx_st_close(f);
    return s;
}

lmx_status lmx_adapters_load(lmx_transformer *m, const char *path, lmx_adapters **out) {
    return lmx_adapters_load_ex(m, "", path, out);
}

lmx_status lmx_adapters_load_ex(lmx_transformer *m, const char *prefix, const char *path, lmx_adapters **out) {
    *out = NULL;
    if (!path || !*path) return lmx_err(LMX_ERR_INVALID_ARG, "adapter path: empty");
    char *dir = NULL, *weights = NULL, *cfgp = NULL;
    lmx_status s = LMX_OK;
    if (lmx_is_dir(path)) {
        dir = lmx_strdup(path);
        weights = lmx_path_join(path, "adapters.safetensors");
    } else if (lmx_file_exists(path)) {
        const char *slash = strrchr(path, '/');
        dir = slash ? strndup(path, (size_t)(slash - path)) : lmx_strdup(".");
        weights = lmx_strdup(path);
    } else {
        return lmx_err(LMX_ERR_NOT_FOUND, "%s: the adapter path does not exist", path);
    }
    cfgp = dir ? lmx_path_join(dir, "adapter_config.json") : NULL;
    if (!dir || !weights || !cfgp) s = lmx_err(LMX_ERR_NOMEM, "adapters: out of memory");
    lmx_adapter_config cfg = {0};
    if (!s) s = lmx_adapter_config_read(cfgp, &cfg);
    if (!s && !lmx_file_exists(weights)) s = lmx_err(LMX_ERR_NOT_FOUND, "%s: no such adapter weights file", weights);
    lmx_adapters *ad = NULL;
    if (!s) {
        s = lmx_adapters_create_ex(m, prefix, &cfg, 0, &ad);
        if (s && s != LMX_ERR_NOMEM) lmx_err_prefix(s, "%s: ", cfgp);
    }
    if (!s) s = lmx_adapters_read_weights(ad, weights);
    /* A loaded DoRA set is fixed for generation: its row factors once, not per token. */
    for (int i = 0; ad && !s && i < ad->n; i++) {
        lmx_adapter_entry *e = &ad->e[i];
        for (int t = 0; t < e->n_targets && !s && !lmx_array_empty(&e->lora.m); t++)
            s = lmx_lora_freeze_dora(e->targets[t], e->n_targets == 1 ? &e->lora : &e->views[t]);
    }
    lmx_adapter_config_free(&cfg);
    free(dir), free(weights), free(cfgp);
    if (s) {
        lmx_adapters_free(ad);
        return s;
    }
    *out = ad;
    return LMX_OK;
}

/* ---- writing ------------------------------------------------------------------ */

typedef struct {
    char name[200];
    const lmx_adapter_entry *e;
    part p;
    int64_t shape[2];
    int nd;
    lmx_dtype dt;
} out_tensor;

static int cmp_out(const void *a, const void *b) {
    return strcmp(((const out_tensor *)a)->name, ((const out_tensor *)b)->name);
}

/* The bytes of one output tensor (malloc'ed). */
static lmx_status tensor_bytes(const out_tensor *o, void **out, size_t *n_out) {
    const lmx_adapter_entry *e = o->e;
    int64_t n = 1;
    for (int i = 0; i < o->nd; i++) n *= o->shape[i];
    size_t bytes = lmx_dtype_bytes(o->dt, n);
    void *buf = malloc(bytes ? bytes : 1);
    if (!buf) return lmx_err(LMX_ERR_NOMEM, "adapters: out of memory");
    if (o->p == P_A || o->p == P_B) {
        const lmx_array *src = o->p == P_A ? &e->lora.a : &e->lora.b;
        int64_t R = src->shape[0], C = src->shape[1];
        const float *s = src->data;
        float *d = buf;
        for (int64_t r = 0; r < R; r++)
            for (int64_t c = 0; c < C; c++) d[c * R + r] = s[r * C + c];
    } else if (o->p == P_M) {
        memcpy(buf, e->lora.m.data, bytes);
    } else {
        lmx_dtype_info(o->dt)->from_f32(o->p == P_FULL ? e->full.data : e->full_bias.data, buf, n);
    }
    *out = buf;
    *n_out = bytes;
    return LMX_OK;
}

lmx_status lmx_adapters_save_file(const lmx_adapters *ad, const char *file) {
    bool full = ad->cfg.type == LMX_FT_FULL;
    size_t n = 0, cap = (size_t)ad->n * 3;
    out_tensor *ot = calloc(cap ? cap : 1, sizeof *ot);
    lmx_st_write_tensor *wt = calloc(cap ? cap : 1, sizeof *wt);
    lmx_status s = !ot || !wt ? lmx_err(LMX_ERR_NOMEM, "adapters: out of memory") : LMX_OK;
    static const char *const leaf[5] = {".lora_a", ".lora_b", ".m", ".weight", ".bias"};
    for (int i = 0; i < ad->n && !s; i++) {
        const lmx_adapter_entry *e = &ad->e[i];
        part parts[3];
        int np = 0;
        if (full) {
            parts[np++] = P_FULL;
            if (!lmx_array_empty(&e->full_bias)) parts[np++] = P_FULL_BIAS;
        } else {
            parts[np++] = P_A;
            parts[np++] = P_B;
            if (ad->cfg.type == LMX_FT_DORA) parts[np++] = P_M;
        }
        for (int j = 0; j < np; j++) {
            out_tensor *o = &ot[n++];
            o->e = e;
            o->p = parts[j];
            snprintf(o->name, sizeof o->name, "%s%s", e->name, leaf[parts[j]]);
            o->nd = file_shape(e, o->p, o->shape);
            o->dt = full ? e->file_dtype : LMX_F32;
        }
    }
    if (!s) {
        qsort(ot, n, sizeof *ot, cmp_out); /* MLX writes the header keys sorted */
        for (size_t k = 0; k < n; k++) {
            int64_t cnt = 1;
            for (int i = 0; i < ot[k].nd; i++) cnt *= ot[k].shape[i];
            wt[k] = (lmx_st_write_tensor){ot[k].name, ot[k].dt, ot[k].nd, ot[k].shape, NULL,
                                          lmx_dtype_bytes(ot[k].dt, cnt)};
        }
    }
    lmx_st_writer *w = NULL;
    if (!s) s = lmx_st_writer_open_mlx(file, wt, n, NULL, &w);
    for (size_t k = 0; k < n && !s; k++) {
        void *buf = NULL;
        size_t bytes = 0;
        s = tensor_bytes(&ot[k], &buf, &bytes);
        if (!s) {
            s = lmx_st_writer_write(w, buf, bytes);
            free(buf);
        }
    }
    if (w) s = s ? (lmx_st_writer_abort(w), s) : lmx_st_writer_finish(w);
    free(ot), free(wt);
    return s;
}

/* mkdir -p */
static lmx_status make_dirs(const char *dir) {
    if (!*dir) return lmx_err(LMX_ERR_INVALID_ARG, "adapter path: empty");
    char *p = lmx_strdup(dir);
    if (!p) return lmx_err(LMX_ERR_NOMEM, "adapters: out of memory");
    for (char *q = p + 1;; q++) {
        bool end = *q == 0;
        if (*q == '/' || end) {
            *q = 0;
            if (mkdir(p, 0755) != 0 && errno != EEXIST) {
                lmx_status s = lmx_err(LMX_ERR_IO, "%s: cannot create the folder: %s", p, strerror(errno));
                free(p);
                return s;
            }
            if (end) break;
            *q = '/';
        }
    }
    free(p);
    if (!lmx_is_dir(dir)) return lmx_err(LMX_ERR_IO, "%s: exists and is not a folder", dir);
    return LMX_OK;
}

lmx_status lmx_adapters_save(const lmx_adapters *ad, const char *dir, int64_t iteration) {
    LMX_TRY(make_dirs(dir));
    char *p = lmx_path_join(dir, "adapters.safetensors");
    if (!p) return lmx_err(LMX_ERR_NOMEM, "adapters: out of memory");
    lmx_status s = lmx_adapters_save_file(ad, p);
    free(p);
    if (s || iteration < 0) return s;
    char name[64];
    snprintf(name, sizeof name, "%07lld_adapters.safetensors", (long long)iteration);
    p = lmx_path_join(dir, name);
    if (!p) return lmx_err(LMX_ERR_NOMEM, "adapters: out of memory");
    s = lmx_adapters_save_file(ad, p);
    free(p);
    return s;
}
