/* loader.c - fetches a family's tensors by its names table and checks shapes. */
#include "models/arch.h"

#include <stdio.h>
#include <stdlib.h>

#define W(buf, ...) lmx_wname(buf, sizeof buf, __VA_ARGS__)

/* Loads "<prefix><name>.weight" (+ optional ".bias") with an expected shape. */
static lmx_status get(const struct lmx_weights_src *w, const char *prefix, const char *name, int nd,
                      int64_t d0, int64_t d1, bool required, lmx_array *out, lmx_array *bias) {
    char nm[512];
    int64_t sh[2] = {d0, d1};
    if (!name) {
        if (required) return lmx_err(LMX_ERR_INTERNAL, "no tensor name for a required weight");
        return LMX_OK;
    }
    LMX_TRY(lmx_weights_get(w, W(nm, "%s%s.weight", prefix, name), nd, sh, required, out));
    if (bias) LMX_TRY(lmx_weights_get(w, W(nm, "%s%s.bias", prefix, name), 1, sh, false, bias));
    return LMX_OK;
}

/* Loads the module "<prefix><name>" (weight [d0, d1], optional bias) in any
 * storage format. */
static lmx_status getl(const struct lmx_weights_src *w, const char *prefix, const char *name, int64_t d0,
                       int64_t d1, bool required, bool want_bias, lmx_linear *out) {
    char nm[512];
    int64_t sh[2] = {d0, d1};
    memset(out, 0, sizeof *out);
    if (!name) {
        if (required) return lmx_err(LMX_ERR_INTERNAL, "no tensor name for a required weight");
        return LMX_OK;
    }
    return lmx_weights_get_linear(w, W(nm, "%s%s", prefix, name), 2, sh, required, want_bias, out);
}

static lmx_status load_experts(const lmx_arch_names *nm, const struct lmx_weights_src *w, const char *pre,
                               const lmx_hparams *hp, lmx_layer *L) {
    int E = hp->n_expert;
    int64_t D = hp->n_embd, Fe = hp->n_ff_expert;
    L->exp_gate = calloc((size_t)E, sizeof(lmx_linear));
    L->exp_up = calloc((size_t)E, sizeof(lmx_linear));
    L->exp_down = calloc((size_t)E, sizeof(lmx_linear));
    if (!L->exp_gate || !L->exp_up || !L->exp_down) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    char n[512];
    /* MLX layout: one stacked [E, out, in] module per projection. */
    if (nm->stacked_gate && lmx_weights_has(w, W(n, "%s%s.weight", pre, nm->stacked_gate))) {
        const char *names[3] = {nm->stacked_gate, nm->stacked_up, nm->stacked_down};
        lmx_linear *dst[3] = {L->exp_gate, L->exp_up, L->exp_down};
        int64_t shapes[3][3] = {{E, Fe, D}, {E, Fe, D}, {E, D, Fe}};
        for (int p = 0; p < 3; p++) {
            lmx_linear all;
            LMX_TRY(lmx_weights_get_linear(w, W(n, "%s%s", pre, names[p]), 3, shapes[p], true, false, &all));
            lmx_status s = LMX_OK;
            for (int e = 0; e < E && !s; e++) s = lmx_linear_expert(&dst[p][e], &all, e);
            lmx_linear_release(&all);
            LMX_TRY(s);
        }
        return LMX_OK;
    }
    for (int e = 0; e < E; e++) {
        char g[256], u[256], d[256];
        snprintf(g, sizeof g, nm->exp_gate, e);
        snprintf(u, sizeof u, nm->exp_up, e);
        snprintf(d, sizeof d, nm->exp_down, e);
        LMX_TRY(getl(w, pre, g, Fe, D, true, false, &L->exp_gate[e]));
        LMX_TRY(getl(w, pre, u, Fe, D, true, false, &L->exp_up[e]));
        LMX_TRY(getl(w, pre, d, D, Fe, true, false, &L->exp_down[e]));
    }
    return LMX_OK;
}

lmx_status lmx_transformer_load_tensors(const lmx_arch *arch, const lmx_config *c,
                                        const struct lmx_weights_src *w, lmx_transformer *m) {
    const lmx_hparams *hp = &m->hp;
    const lmx_arch_names *nm = arch->names;
    int64_t D = hp->n_embd, V = hp->n_vocab, H = hp->n_head, Hkv = hp->n_kv_head, hd = hp->head_dim, F = hp->n_ff;
    bool ln = hp->norm == LMX_NORM_LAYER;
    LMX_TRY(getl(w, "", nm->embed, V, D, true, false, &m->tok_embd));
    LMX_TRY(get(w, "", nm->final_norm, 1, D, 0, true, &m->out_norm, ln ? &m->out_norm_b : NULL));
    if (!hp->tied) LMX_TRY(getl(w, "", nm->lm_head, V, D, false, true, &m->lm_head));
    if (lmx_array_empty(&m->lm_head.w)) /* tied, or the file dropped lm_head */
        lmx_linear_share(&m->lm_head, &m->tok_embd);
    m->layers = calloc((size_t)hp->n_layer, sizeof *m->layers);
    if (!m->layers) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    for (int l = 0; l < hp->n_layer; l++) {
        lmx_layer *L = &m->layers[l];
        char pre[64];
        snprintf(pre, sizeof pre, "model.layers.%d.", l);
        LMX_TRY(get(w, pre, nm->attn_norm, 1, D, 0, true, &L->attn_norm, ln ? &L->attn_norm_b : NULL));
        if (nm->qkv_fused) {
            lmx_linear qkv;
            LMX_TRY(getl(w, pre, nm->qkv_fused, (H + 2 * Hkv) * hd, D, true, true, &qkv));
            lmx_status s = lmx_linear_rows(&L->wq, &qkv, 0, H * hd);
            if (!s) s = lmx_linear_rows(&L->wk, &qkv, H * hd, Hkv * hd);
            if (!s) s = lmx_linear_rows(&L->wv, &qkv, (H + Hkv) * hd, Hkv * hd);
            lmx_linear_release(&qkv);
            LMX_TRY(s);
        } else {
            LMX_TRY(getl(w, pre, nm->q, H * hd, D, true, true, &L->wq));
            LMX_TRY(getl(w, pre, nm->k, Hkv * hd, D, true, true, &L->wk));
            LMX_TRY(getl(w, pre, nm->v, Hkv * hd, D, true, true, &L->wv));
        }
        LMX_TRY(getl(w, pre, nm->o, D, H * hd, true, true, &L->wo));
        if (hp->qk_norm) {
            LMX_TRY(get(w, pre, nm->q_norm, 1, hd, 0, true, &L->q_norm, NULL));
            LMX_TRY(get(w, pre, nm->k_norm, 1, hd, 0, true, &L->k_norm, NULL));
        }
        if (hp->sandwich_norm) {
            LMX_TRY(get(w, pre, nm->post_attn_norm, 1, D, 0, true, &L->post_attn_norm, NULL));
            LMX_TRY(get(w, pre, nm->post_ffn_norm, 1, D, 0, true, &L->post_ffn_norm, NULL));
        }
        if (!hp->parallel_block)
            LMX_TRY(get(w, pre, nm->ffn_norm, 1, D, 0, true, &L->ffn_norm, ln ? &L->ffn_norm_b : NULL));
        bool moe = hp->n_expert > 0 && (!arch->layer_is_moe || arch->layer_is_moe(c, hp, l));
        if (moe) {
            LMX_TRY(getl(w, pre, nm->router, hp->n_expert, D, true, false, &L->router));
            LMX_TRY(load_experts(nm, w, pre, hp, L));
        } else if (nm->gate_up_fused) {
            lmx_linear gu;
            LMX_TRY(getl(w, pre, nm->gate_up_fused, 2 * F, D, true, false, &gu));
            lmx_status s = lmx_linear_rows(&L->w_gate, &gu, 0, F);
            if (!s) s = lmx_linear_rows(&L->w_up, &gu, F, F);
            lmx_linear_release(&gu);
            LMX_TRY(s);
        } else {
            if (hp->mlp_gated) LMX_TRY(getl(w, pre, nm->gate, F, D, true, true, &L->w_gate));
            LMX_TRY(getl(w, pre, nm->up, F, D, true, true, &L->w_up));
        }
        if (!moe) LMX_TRY(getl(w, pre, nm->down, D, F, true, true, &L->w_down));
    }
    if (w->st) LMX_TRY(lmx_weights_check_quant_overrides(w));
    return LMX_OK;
}

lmx_status lmx_transformer_load_hf(const char *dir, const lmx_config *c, const struct lmx_weights_src *w,
                                   lmx_transformer *m) {
    (void)dir;
    memset(m, 0, sizeof *m);
    const char *mt = lmx_cfg_str(c, "model_type", NULL);
    if (!mt) return lmx_err(LMX_ERR_FORMAT, "%s: model_type: missing", c->path);
    const lmx_arch *arch = lmx_arch_find(mt);
    if (!arch) return lmx_err(LMX_ERR_UNSUPPORTED, "%s: model_type: '%s' is not supported", c->path, mt);
    lmx_status s = lmx_hparams_common(c, &m->hp);
    if (!s) s = arch->hparams(c, &m->hp);
    if (!s && (m->hp.n_expert > 256 || m->hp.n_expert_used > 64 || m->hp.n_expert_used > m->hp.n_expert))
        s = lmx_err(LMX_ERR_UNSUPPORTED, "%s: %d experts with %d active is beyond lmx's limits", c->path,
                    m->hp.n_expert, m->hp.n_expert_used);
    if (!s) s = lmx_transformer_load_tensors(arch, c, w, m);
    if (s) lmx_transformer_free(m);
    return s;
}
