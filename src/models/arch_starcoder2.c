/* arch_starcoder2.c - starcoder2: LayerNorm with bias, biases on every
 * projection (use_bias), non-gated GELU MLP c_fc -> c_proj, tied by default. */
#include "models/arch.h"

static const lmx_arch_names starcoder2_names = {
    .embed = "model.embed_tokens", .final_norm = "model.norm", .lm_head = "lm_head",
    .attn_norm = "input_layernorm", .q = "self_attn.q_proj", .k = "self_attn.k_proj",
    .v = "self_attn.v_proj", .o = "self_attn.o_proj", .ffn_norm = "post_attention_layernorm",
    .up = "mlp.c_fc", .down = "mlp.c_proj",
};

static lmx_status starcoder2_hp(const lmx_config *c, lmx_hparams *hp) {
    lmx_status st = LMX_OK;
    hp->norm = LMX_NORM_LAYER;
    hp->mlp_gated = false;
    hp->tied = lmx_cfg_bool(c, "tie_word_embeddings", true, &st);
    if (st) return st;
    return lmx_windows_from_config(c, hp, true);
}

const lmx_arch lmx_arch_starcoder2 = {"starcoder2", starcoder2_hp, &starcoder2_names, NULL};
