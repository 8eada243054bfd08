/* convert_plan.c - what `lmx convert` writes: the output tensors (sorted),
 * which modules are quantized with which parameters (mlx-lm's rules and
 * mixed recipes), and the config's quantization entries. */
#include "convert/convert_internal.h"

#include <stdio.h>
#include <stdlib.h>

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* mlx-lm's mixed_quant_predicate_builder (convert.py). */
static void recipe_params(const cv_plan *p, const char *module, int *bits) {
    const char *r = p->recipe;
    int low = r[6] - '0', high = !strcmp(r, "mixed_3_4") ? 4 : 6;
    int idx = 0, part = 0;
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s", module);
    for (char *tok = strtok(tmp, "."); tok; tok = strtok(NULL, "."), part++)
        if (part == p->layer_location) idx = atoi(tok);
    int n = p->n_layers;
    bool more = idx < n / 8 || idx >= 7 * n / 8 || (idx - n / 8) % 3 == 2;
    if ((strstr(module, "v_proj") || strstr(module, "v_a_proj") || strstr(module, "v_b_proj")) && more)
        *bits = high;
    else if (strstr(module, "down_proj") && more)
        *bits = high;
    else if (strstr(module, "lm_head"))
        *bits = high;
    else
        *bits = low;
}

/* Decides quantization of module (weight shape last dim K). */
static void module_quant(cv_plan *p, const char *module, int64_t K, cv_entry *e) {
    e->quant = false;
    if (!p->quantize) return;
    if (K % p->group || K % 32) return; /* mlx-lm skips rows the group does not divide */
    e->quant = true;
    e->mode = p->mode;
    e->bits = p->bits;
    e->group = p->group;
    e->per_layer = false;
    if (p->recipe) {
        recipe_params(p, module, &e->bits);
        e->per_layer = true;
    } else if (p->model_type && !strcmp(p->model_type, "qwen3_moe") && ends_with(module, "mlp.gate")) {
        e->bits = 8; /* the model's quant_predicate: routers at 8 bits, group 64 */
        e->group = 64;
        e->per_layer = true;
        if (K % 64) e->quant = false;
    }
}

static lmx_status add(cv_plan *p, const cv_entry *e) {
    if (p->n == p->cap) {
        size_t c = p->cap ? p->cap * 2 : 256;
        cv_entry *q = realloc(p->e, c * sizeof *q);
        if (!q) return lmx_err(LMX_ERR_NOMEM, "out of memory");
        p->e = q;
        p->cap = c;
    }
    p->e[p->n] = *e;
    p->e[p->n].name = lmx_strdup(e->name);
    p->e[p->n].module = e->module ? lmx_strdup(e->module) : NULL;
    if (!p->e[p->n].name) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    p->n++;
    return LMX_OK;
}

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const cv_entry *)a)->name, ((const cv_entry *)b)->name);
}

lmx_status cv_plan_build(cv_plan *p) {
    size_t nt = lmx_st_set_n_tensors(p->st);
    bool have_down = false;
    for (size_t i = 0; i < nt; i++) {
        const lmx_st_tensor *t = lmx_st_set_tensor_at(p->st, i, NULL);
        if (strstr(t->name, "down_proj")) {
            if (!have_down) { /* layer index position: first all-digit part */
                char tmp[512];
                snprintf(tmp, sizeof tmp, "%s", t->name);
                int part = 0;
                p->layer_location = 0;
                for (char *tok = strtok(tmp, "."); tok; tok = strtok(NULL, "."), part++)
                    if (strspn(tok, "0123456789") == strlen(tok)) {
                        p->layer_location = part;
                        break;
                    }
            }
            have_down = true;
        }
    }
    if (p->recipe && !have_down)
        return lmx_err(LMX_ERR_UNSUPPORTED, "%s: --quant-predicate %s: the model has no down_proj layers", p->src,
                       p->recipe);
    for (size_t i = 0; i < nt; i++) {
        const lmx_st_file *f;
        const lmx_st_tensor *t = lmx_st_set_tensor_at(p->st, i, &f);
        const char *nm = t->name;
        if (ends_with(nm, "rotary_emb.inv_freq")) continue;
        if (p->tied && (!strcmp(nm, "lm_head.weight") || !strcmp(nm, "language_model.lm_head.weight"))) continue;
        cv_entry e;
        memset(&e, 0, sizeof e);
        e.src = t;
        e.name = nm;
        e.ndim = t->n_dims;
        memcpy(e.shape, t->shape, sizeof e.shape);
        e.dtype = t->dtype;
        const lmx_dtype_traits *tr = lmx_dtype_info(t->dtype);
        char module[512];
        bool is_weight = ends_with(nm, ".weight") && strlen(nm) - 7 < sizeof module;
        if (is_weight) snprintf(module, sizeof module, "%.*s", (int)(strlen(nm) - 7), nm);
        char sn[600];
        bool src_quant = is_weight && t->dtype == LMX_U32 &&
                         lmx_st_set_find(p->st, lmx_wname(sn, sizeof sn, "%s.scales", module), NULL);
        if (src_quant) {
            if (p->quantize)
                return lmx_err(LMX_ERR_UNSUPPORTED, "%s: tensor '%s': the model is already quantized (use -d first)",
                               p->src, nm);
            if (p->dequantize) {
                e.kind = CV_DEQUANT;
                e.module = module;
                e.dtype = p->cast != LMX_DTYPE_INVALID ? p->cast : LMX_F16;
                /* the scales' dtype is the original weight dtype (affine) */
                const lmx_st_tensor *sc = lmx_st_set_find(p->st, sn, NULL);
                if (p->cast == LMX_DTYPE_INVALID && sc && lmx_dtype_info(sc->dtype)->is_float) e.dtype = sc->dtype;
                e.shape[e.ndim - 1] = -1; /* filled when loaded */
                LMX_TRY(add(p, &e));
                continue;
            }
        }
        if (p->dequantize && (ends_with(nm, ".scales") || ends_with(nm, ".biases"))) {
            char w[600];
            snprintf(w, sizeof w, "%.*s.weight", (int)(strlen(nm) - 7), nm);
            const lmx_st_tensor *wt = lmx_st_set_find(p->st, w, NULL);
            if (wt && wt->dtype == LMX_U32) continue; /* folded into the dequantized weight */
        }
        if (tr->is_float && p->cast != LMX_DTYPE_INVALID) e.dtype = p->cast;
        e.kind = CV_COPY;
        if (is_weight && tr->is_float && (t->n_dims == 2 || t->n_dims == 3)) {
            module_quant(p, module, t->shape[t->n_dims - 1], &e);
            if (e.quant) {
                e.module = module;
                lmx_dtype fdt = e.dtype; /* the weight's float dtype: scales/biases use it */
                int64_t K = t->shape[t->n_dims - 1];
                cv_entry w = e;
                w.kind = CV_QUANT_W;
                w.dtype = LMX_U32;
                w.shape[w.ndim - 1] = K * e.bits / 32;
                w.fdt = fdt;
                LMX_TRY(add(p, &w));
                cv_entry s = e;
                s.kind = CV_QUANT_S;
                s.shape[s.ndim - 1] = K / e.group;
                s.dtype = e.mode == LMX_QMODE_AFFINE ? fdt : LMX_U8;
                s.fdt = fdt;
                char sname[600];
                snprintf(sname, sizeof sname, "%s.scales", module);
                s.name = sname;
                LMX_TRY(add(p, &s));
                if (e.mode == LMX_QMODE_AFFINE) {
                    cv_entry b = s;
                    b.kind = CV_QUANT_B;
                    char bname[600];
                    snprintf(bname, sizeof bname, "%s.biases", module);
                    b.name = bname;
                    LMX_TRY(add(p, &b));
                }
                continue;
            }
        }
        LMX_TRY(add(p, &e));
    }
    qsort(p->e, p->n, sizeof *p->e, cmp_entry);
    return LMX_OK;
}

void cv_plan_free(cv_plan *p) {
    for (size_t i = 0; i < p->n; i++) {
        free((char *)p->e[i].name);
        free((char *)p->e[i].module);
    }
    free(p->e);
    p->e = NULL;
    p->n = p->cap = 0;
}
