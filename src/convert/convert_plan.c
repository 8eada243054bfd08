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
    e->no_mode = false;
    if (p->recipe) {
        recipe_params(p, module, &e->bits);
        e->per_layer = true;
    } else if (p->model_type && !strcmp(p->model_type, "qwen3_moe") && ends_with(module, "mlp.gate")) {
        e->bits = 8; /* the model's quant_predicate: routers at 8 bits, group 64 */
        e->group = 64;
        e->per_layer = true;
        e->no_mode = true; /* the predicate returns {"group_size": 64, "bits": 8} */
        if (K % 64) e->quant = false;
    }
}

/* MoE experts as mlx-lm's sanitize stacks them: mixtral
 * "<pre>.block_sparse_moe.experts.<e>.w1|w2|w3.<kind>" → "<pre>.block_sparse_moe.switch_mlp.gate_proj|down_proj|
 * up_proj.<kind>", qwen3_moe "<pre>.mlp.experts.<e>.<proj>.<kind>" → "<pre>.mlp.switch_mlp.<proj>.<kind>".
 * True when nm is an expert tensor: *expert is its index, out the stacked name. */
static bool expert_name(const cv_plan *p, const char *nm, int *expert, char *out, size_t cap) {
    if (!p->model_type || (strcmp(p->model_type, "mixtral") && strcmp(p->model_type, "qwen3_moe"))) return false;
    const char *x = strstr(nm, ".experts.");
    if (!x) return false;
    const char *d = x + 9;
    char *end;
    long e = strtol(d, &end, 10);
    if (end == d || *end != '.' || e < 0 || e > 100000) return false;
    const char *proj = end + 1, *kind = strchr(proj, '.');
    if (!kind || strchr(kind + 1, '.')) return false;
    int pl = (int)(kind - proj);
    static const char *const mix[3][2] = {{"w1", "gate_proj"}, {"w2", "down_proj"}, {"w3", "up_proj"}};
    const char *mapped = NULL;
    if (!strcmp(p->model_type, "mixtral")) {
        for (int i = 0; i < 3; i++)
            if (pl == 2 && !strncmp(proj, mix[i][0], 2)) mapped = mix[i][1];
        if (!mapped) return false;
        pl = (int)strlen(mapped);
        proj = mapped;
    }
    *expert = (int)e;
    snprintf(out, cap, "%.*s.switch_mlp.%.*s%s", (int)(x - nm), nm, pl, proj, kind);
    return true;
}

/* Fills e (name, shape, sources) with every expert of the tensor t (expert 0). */
static lmx_status stack_experts(cv_plan *p, const lmx_st_tensor *t, const char *stacked, cv_entry *e) {
    const char *x = strstr(t->name, ".experts.0.");
    size_t cap = 16;
    e->stack = malloc(cap * sizeof *e->stack);
    if (!e->stack) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    for (int k = 0;; k++) {
        char n[600];
        snprintf(n, sizeof n, "%.*s.experts.%d.%s", (int)(x - t->name), t->name, k, x + 11);
        const lmx_st_tensor *u = lmx_st_set_find(p->st, n, NULL);
        if (!u) break;
        if (u->dtype != t->dtype || u->n_dims != t->n_dims || memcmp(u->shape, t->shape, sizeof u->shape) ||
            t->n_dims >= LMX_MAX_DIMS)
            return lmx_err(LMX_ERR_SHAPE, "%s: tensor '%s': dtype or shape differs from expert 0's", p->src, n);
        if ((size_t)k == cap) {
            const lmx_st_tensor **q = realloc(e->stack, (cap *= 2) * sizeof *q);
            if (!q) return lmx_err(LMX_ERR_NOMEM, "out of memory");
            e->stack = q;
        }
        e->stack[e->n_stack++] = u;
    }
    e->name = stacked;
    e->ndim = t->n_dims + 1;
    e->shape[0] = e->n_stack;
    memcpy(e->shape + 1, t->shape, (size_t)t->n_dims * sizeof *e->shape);
    return LMX_OK;
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
    p->e[p->n].stack = NULL;
    if (e->n_stack) {
        p->e[p->n].stack = malloc((size_t)e->n_stack * sizeof *e->stack);
        if (p->e[p->n].stack) memcpy(p->e[p->n].stack, e->stack, (size_t)e->n_stack * sizeof *e->stack);
        else p->e[p->n].n_stack = 0;
    }
    if (!p->e[p->n].name || (e->n_stack && !p->e[p->n].stack)) {
        p->n++;
        return lmx_err(LMX_ERR_NOMEM, "out of memory");
    }
    p->n++;
    return LMX_OK;
}

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const cv_entry *)a)->name, ((const cv_entry *)b)->name);
}

static lmx_status plan_tensor(cv_plan *p, cv_entry *ep);

lmx_status cv_plan_build(cv_plan *p) {
    size_t nt = lmx_st_set_n_tensors(p->st);
    bool have_down = false;
    for (size_t i = 0; i < nt; i++) {
        const lmx_st_tensor *t = lmx_st_set_tensor_at(p->st, i, NULL);
        char stacked[600];
        int expert;
        const char *nm = expert_name(p, t->name, &expert, stacked, sizeof stacked) ? stacked : t->name;
        if (strstr(nm, "down_proj")) {
            if (!have_down) { /* layer index position: first all-digit part */
                char tmp[600];
                snprintf(tmp, sizeof tmp, "%s", nm);
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
        char stacked[600];
        int expert;
        if (expert_name(p, nm, &expert, stacked, sizeof stacked)) {
            if (expert) continue; /* joined into expert 0's entry */
            lmx_status s = stack_experts(p, t, stacked, &e);
            if (!s) s = plan_tensor(p, &e);
            free(e.stack);
            LMX_TRY(s);
            continue;
        }
        LMX_TRY(plan_tensor(p, &e));
    }
    qsort(p->e, p->n, sizeof *p->e, cmp_entry);
    return LMX_OK;
}

/* Adds the output entries of one source tensor (e: name, src, shape, dtype set). */
static lmx_status plan_tensor(cv_plan *p, cv_entry *ep) {
    cv_entry e = *ep;
    const lmx_st_tensor *t = e.src;
    const char *nm = e.name;
    {
        const lmx_dtype_traits *tr = lmx_dtype_info(t->dtype);
        char module[512];
        bool is_weight = ends_with(nm, ".weight") && strlen(nm) - 7 < sizeof module;
        if (is_weight) snprintf(module, sizeof module, "%.*s", (int)(strlen(nm) - 7), nm);
        char sn[600];
        bool src_quant = is_weight && t->dtype == LMX_U32 &&
                         lmx_st_set_find(p->st, lmx_wname(sn, sizeof sn, "%s.scales", module), NULL);
        bool claimed = p->edit && p->edit->claims(p->edit->user, nm);
        if (claimed && (e.n_stack || (!src_quant && !tr->is_float)))
            return lmx_err(LMX_ERR_UNSUPPORTED, "%s: tensor '%s': %s tensors cannot be rewritten", p->src, nm,
                           e.n_stack ? "stacked expert" : tr->name);
        if (src_quant && e.n_stack)
            return lmx_err(LMX_ERR_UNSUPPORTED, "%s: tensor '%s': per-expert quantized weights cannot be stacked",
                           p->src, nm);
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
                /* mx.dequantize's own dtype when nothing casts: fp modes give bfloat16 */
                if (p->cast == LMX_DTYPE_INVALID && sc && !lmx_dtype_info(sc->dtype)->is_float && p->keep_dtype)
                    e.dtype = LMX_BF16;
                e.shape[e.ndim - 1] = -1; /* filled when loaded */
                e.edit = claimed;
                return add(p, &e);
            }
            if (claimed) { /* dequantized, rewritten and re-quantized with its own parameters */
                e.kind = CV_REQUANT_W;
                e.module = module;
                return add(p, &e);
            }
        }
        if (!p->dequantize && p->edit && (ends_with(nm, ".scales") || ends_with(nm, ".biases")) &&
            strlen(nm) - 7 < sizeof module) {
            snprintf(module, sizeof module, "%.*s", (int)(strlen(nm) - 7), nm);
            char w[600];
            const lmx_st_tensor *wt = lmx_st_set_find(p->st, lmx_wname(w, sizeof w, "%s.weight", module), NULL);
            if (wt && wt->dtype == LMX_U32 && p->edit->claims(p->edit->user, w)) {
                e.kind = ends_with(nm, ".scales") ? CV_REQUANT_S : CV_REQUANT_B;
                e.module = module;
                return add(p, &e);
            }
        }
        if (p->dequantize && (ends_with(nm, ".scales") || ends_with(nm, ".biases"))) {
            char w[600];
            snprintf(w, sizeof w, "%.*s.weight", (int)(strlen(nm) - 7), nm);
            const lmx_st_tensor *wt = lmx_st_set_find(p->st, w, NULL);
            if (wt && wt->dtype == LMX_U32) return LMX_OK; /* folded into the dequantized weight */
        }
        if (tr->is_float && p->cast != LMX_DTYPE_INVALID) e.dtype = p->cast;
        e.kind = CV_COPY;
        e.edit = claimed;
        if (is_weight && tr->is_float && (e.ndim == 2 || e.ndim == 3)) {
            module_quant(p, module, e.shape[e.ndim - 1], &e);
            if (e.quant) {
                e.module = module;
                lmx_dtype fdt = e.dtype; /* the weight's float dtype: scales/biases use it */
                int64_t K = e.shape[e.ndim - 1];
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
                return LMX_OK;
            }
        }
        return add(p, &e);
    }
}

void cv_plan_free(cv_plan *p) {
    for (size_t i = 0; i < p->n; i++) {
        free((char *)p->e[i].name);
        free((char *)p->e[i].module);
        free(p->e[i].stack);
    }
    free(p->e);
    p->e = NULL;
    p->n = p->cap = 0;
}
