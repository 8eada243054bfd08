/* rope.c - RoPE inverse frequencies for every scaling type, as HF computes them.
 *
 * Config forms accepted: transformers 5 `rope_parameters` (flat, or nested
 * per layer type {"full_attention": {...}, "sliding_attention": {...}}) and
 * the older `rope_theta` + `rope_scaling` ({"type"|"rope_type": ...}). */
#include "models/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static double pnum(const cJSON *p, const char *k, double def) {
    const cJSON *v = p ? cJSON_GetObjectItemCaseSensitive(p, k) : NULL;
    return v && cJSON_IsNumber(v) ? v->valuedouble : def;
}

static lmx_status factor_list(const lmx_config *c, const cJSON *p, const char *k, int half, float **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(p, k);
    if (!v || !cJSON_IsArray(v) || cJSON_GetArraySize(v) != half)
        return lmx_err(LMX_ERR_FORMAT, "%s: rope_scaling.%s: expected a list of %d numbers", c->path, k, half);
    float *f = malloc((size_t)half * sizeof *f);
    if (!f) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    int i = 0;
    for (const cJSON *e = v->child; e; e = e->next, i++) {
        if (!cJSON_IsNumber(e)) {
            free(f);
            return lmx_err(LMX_ERR_FORMAT, "%s: rope_scaling.%s[%d]: not a number", c->path, k, i);
        }
        f[i] = (float)e->valuedouble;
    }
    *out = f;
    return LMX_OK;
}

lmx_status lmx_rope_params(const lmx_config *c, const char *kind, int head_dim, double default_base,
                           lmx_rope_cfg *r) {
    memset(r, 0, sizeof *r);
    lmx_status st = LMX_OK;
    const cJSON *p = lmx_cfg_get(c, "rope_parameters");
    if (p && cJSON_IsObject(p) && !cJSON_GetObjectItemCaseSensitive(p, "rope_type") &&
        !cJSON_GetObjectItemCaseSensitive(p, "rope_theta") && kind)
        p = cJSON_GetObjectItemCaseSensitive(p, kind);
    bool v5 = p && cJSON_IsObject(p);
    if (!v5) p = lmx_cfg_get(c, "rope_scaling");
    if (p && !cJSON_IsObject(p)) p = NULL;

    r->base = v5 ? pnum(p, "rope_theta", default_base) : lmx_cfg_num(c, "rope_theta", default_base, &st);
    double prf = lmx_cfg_num(c, "partial_rotary_factor", pnum(p, "partial_rotary_factor", 1.0), &st);
    r->dims = (int)(head_dim * prf);
    r->dims -= r->dims % 2;
    r->max_pos = (int)lmx_cfg_int(c, "max_position_embeddings", 2048, &st);
    r->orig_max_pos = (int)pnum(p, "original_max_position_embeddings",
                                (double)lmx_cfg_int(c, "original_max_position_embeddings", r->max_pos, &st));
    r->factor = pnum(p, "factor", 1.0);
    r->attn_factor = 1.0f;
    const cJSON *t = p ? cJSON_GetObjectItemCaseSensitive(p, "rope_type") : NULL;
    if (!t && p) t = cJSON_GetObjectItemCaseSensitive(p, "type");
    const char *type = t && cJSON_IsString(t) ? t->valuestring : "default";
    if (!strcmp(type, "default") || !strcmp(type, "mrope")) {
        r->type = LMX_ROPE_DEFAULT;
    } else if (!strcmp(type, "linear")) {
        r->type = LMX_ROPE_LINEAR;
    } else if (!strcmp(type, "dynamic")) {
        r->type = LMX_ROPE_DYNAMIC;
    } else if (!strcmp(type, "llama3")) {
        r->type = LMX_ROPE_LLAMA3;
        r->low_freq_factor = pnum(p, "low_freq_factor", 1.0);
        r->high_freq_factor = pnum(p, "high_freq_factor", 4.0);
        r->orig_max_pos = (int)pnum(p, "original_max_position_embeddings", 8192);
    } else if (!strcmp(type, "longrope") || !strcmp(type, "su")) {
        r->type = LMX_ROPE_LONGROPE;
        LMX_TRY(factor_list(c, p, "short_factor", r->dims / 2, &r->short_factor));
        LMX_TRY(factor_list(c, p, "long_factor", r->dims / 2, &r->long_factor));
        double factor = (double)r->max_pos / r->orig_max_pos;
        double af = pnum(p, "attention_factor", -1);
        if (af < 0) af = factor <= 1.0 ? 1.0 : sqrt(1 + log(factor) / log((double)r->orig_max_pos));
        r->attn_factor = (float)af;
    } else if (!strcmp(type, "yarn")) {
        r->type = LMX_ROPE_YARN;
        r->beta_fast = pnum(p, "beta_fast", 32);
        r->beta_slow = pnum(p, "beta_slow", 1);
        r->mscale = pnum(p, "mscale", 0);
        r->mscale_all_dim = pnum(p, "mscale_all_dim", 0);
        r->orig_max_pos = (int)pnum(p, "original_max_position_embeddings", r->max_pos);
        double af = pnum(p, "attention_factor", -1);
#define YARN_G(s, m) ((s) <= 1 ? 1.0 : 0.1 * (m) * log(s) + 1.0)
        if (af < 0)
            af = (r->mscale && r->mscale_all_dim) ? YARN_G(r->factor, r->mscale) / YARN_G(r->factor, r->mscale_all_dim)
                                                  : YARN_G(r->factor, 1.0);
#undef YARN_G
        r->attn_factor = (float)af;
    } else {
        return lmx_err(LMX_ERR_UNSUPPORTED, "%s: rope type '%s' is not supported", c->path, type);
    }
    if (r->dims <= 0 || r->dims > head_dim) return lmx_err(LMX_ERR_FORMAT, "%s: partial_rotary_factor gives %d rotary dims", c->path, r->dims);
    return st;
}

lmx_status lmx_rope_from_config(const lmx_config *c, int head_dim, double default_base, lmx_rope_cfg *r) {
    return lmx_rope_params(c, "full_attention", head_dim, default_base, r);
}

void lmx_rope_inv_freq(const lmx_rope_cfg *r, int64_t seq_len, float *out, float *mscale) {
    int dims = r->dims, half = dims / 2;
    double base = r->base;
    *mscale = r->attn_factor;
    if (r->type == LMX_ROPE_DYNAMIC && seq_len > r->max_pos)
        base = base * pow(r->factor * (double)seq_len / r->max_pos - (r->factor - 1), (double)dims / (dims - 2));
    for (int i = 0; i < half; i++) {
        double f = 1.0 / pow(base, (double)(2 * i) / dims);
        switch (r->type) {
        case LMX_ROPE_LINEAR: f /= r->factor; break;
        case LMX_ROPE_LLAMA3: {
            double lo_wl = r->orig_max_pos / r->low_freq_factor, hi_wl = r->orig_max_pos / r->high_freq_factor;
            double wl = 2 * M_PI / f;
            if (wl > lo_wl) {
                f = f / r->factor;
            } else if (wl >= hi_wl) {
                double s = (r->orig_max_pos / wl - r->low_freq_factor) / (r->high_freq_factor - r->low_freq_factor);
                f = (1 - s) * f / r->factor + s * f;
            }
            break;
        }
        case LMX_ROPE_LONGROPE: {
            const float *ext = seq_len > r->orig_max_pos ? r->long_factor : r->short_factor;
            f = 1.0 / (ext[i] * pow(base, (double)(2 * i) / dims));
            break;
        }
        case LMX_ROPE_YARN: {
            double cd_fast = dims * log(r->orig_max_pos / (r->beta_fast * 2 * M_PI)) / (2 * log(base));
            double cd_slow = dims * log(r->orig_max_pos / (r->beta_slow * 2 * M_PI)) / (2 * log(base));
            double low = floor(cd_fast), high = ceil(cd_slow);
            if (low < 0) low = 0;
            if (high > dims - 1) high = dims - 1;
            if (low == high) high += 0.001;
            double ramp = (i - low) / (high - low);
            ramp = ramp < 0 ? 0 : ramp > 1 ? 1 : ramp;
            double extra = 1 - ramp;
            f = (f / r->factor) * (1 - extra) + f * extra;
            break;
        }
        default: break;
        }
        out[i] = (float)f;
    }
}

void lmx_rope_free(lmx_rope_cfg *r) {
    free(r->short_factor);
    free(r->long_factor);
    r->short_factor = r->long_factor = NULL;
}
