/* arch_gemma.c - gemma, gemma2 and gemma3 / gemma3_text.
 * All: RMSNorm with (1 + w), embeddings × sqrt(hidden), tied head, GeGLU.
 * gemma2: sandwich norms, attention and final soft-capping,
 *   query_pre_attn_scalar, sliding window on alternate layers.
 * gemma3: sandwich norms, QK-norm, local layers with their own RoPE base. */
#include "models/arch.h"

#include <math.h>
#include <string.h>

static const lmx_arch_names gemma2_names = {
    .embed = "model.embed_tokens", .final_norm = "model.norm", .lm_head = "lm_head",
    .attn_norm = "input_layernorm", .q = "self_attn.q_proj", .k = "self_attn.k_proj",
    .v = "self_attn.v_proj", .o = "self_attn.o_proj", .q_norm = "self_attn.q_norm",
    .k_norm = "self_attn.k_norm", .post_attn_norm = "post_attention_layernorm",
    .ffn_norm = "pre_feedforward_layernorm", .post_ffn_norm = "post_feedforward_layernorm",
    .gate = "mlp.gate_proj", .up = "mlp.up_proj", .down = "mlp.down_proj",
};

static lmx_status gemma_hp(const lmx_config *c, lmx_hparams *hp) {
    (void)c;
    hp->norm_add_one = true;
    hp->embed_scale = sqrtf((float)hp->n_embd);
    hp->tied = true;
    return LMX_OK;
}

static lmx_status gemma2_hp(const lmx_config *c, lmx_hparams *hp) {
    lmx_status st = gemma_hp(c, hp);
    hp->sandwich_norm = true;
    hp->attn_softcap = (float)lmx_cfg_num(c, "attn_logit_softcapping", 0, &st);
    hp->final_softcap = (float)lmx_cfg_num(c, "final_logit_softcapping", 0, &st);
    double qs = lmx_cfg_num(c, "query_pre_attn_scalar", hp->head_dim, &st);
    if (st) return st;
    if (!(qs > 0)) return lmx_err(LMX_ERR_FORMAT, "%s: query_pre_attn_scalar: must be positive", c->path);
    hp->attn_scale = (float)(1.0 / sqrt(qs));
    if (!lmx_cfg_get(c, "layer_types")) { /* HF default: even layers slide */
        int64_t sw = lmx_cfg_int(c, "sliding_window", 4096, &st);
        for (int l = 0; l < hp->n_layer; l++) hp->window[l] = (l + 1) % 2 ? (int)sw : 0;
    }
    return st;
}

static lmx_status gemma3_hp(const lmx_config *c, lmx_hparams *hp) {
    lmx_status st = gemma2_hp(c, hp);
    if (st) return st;
    hp->qk_norm = true;
    if (!lmx_cfg_get(c, "layer_types")) { /* older configs: every Nth layer is global */
        int64_t pat = lmx_cfg_int(c, "sliding_window_pattern", 6, &st);
        int64_t sw = lmx_cfg_int(c, "sliding_window", 4096, &st);
        if (pat <= 0) pat = 6;
        for (int l = 0; l < hp->n_layer; l++) {
            bool global = (l + 1) % pat == 0;
            hp->window[l] = global ? 0 : (int)sw;
            hp->rope_idx[l] = global ? 0 : 1;
        }
    }
    /* Without nested rope_parameters, local layers use rope_local_base_freq
     * and no scaling. */
    const cJSON *rp = lmx_cfg_get(c, "rope_parameters");
    if (!(rp && cJSON_GetObjectItemCaseSensitive(rp, "sliding_attention"))) {
        lmx_rope_free(&hp->rope[1]);
        hp->rope[1] = hp->rope[0];
        hp->rope[1].short_factor = hp->rope[1].long_factor = NULL;
        hp->rope[1].type = LMX_ROPE_DEFAULT;
        hp->rope[1].factor = 1.0;
        hp->rope[1].attn_factor = 1.0f;
        hp->rope[1].base = lmx_cfg_num(c, "rope_local_base_freq", 10000.0, &st);
    }
    return st;
}

const lmx_arch lmx_arch_gemma = {"gemma", gemma_hp, &lmx_names_llama, NULL};
const lmx_arch lmx_arch_gemma2 = {"gemma2", gemma2_hp, &gemma2_names, NULL};
const lmx_arch lmx_arch_gemma3 = {"gemma3", gemma3_hp, &gemma2_names, NULL};
