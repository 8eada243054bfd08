/* arch_phi.c - phi3 (fused qkv and gate_up, partial rotary, longrope) and
 * phi (phi-2: one LayerNorm feeding attention and MLP in parallel). */
#include "models/arch.h"

static const lmx_arch_names phi3_names = {
    .embed = "model.embed_tokens", .final_norm = "model.norm", .lm_head = "lm_head",
    .attn_norm = "input_layernorm", .qkv_fused = "self_attn.qkv_proj", .o = "self_attn.o_proj",
    .ffn_norm = "post_attention_layernorm", .gate_up_fused = "mlp.gate_up_proj", .down = "mlp.down_proj",
};

static lmx_status phi3_hp(const lmx_config *c, lmx_hparams *hp) {
    return lmx_windows_from_config(c, hp, true);
}

static const lmx_arch_names phi_names = {
    .embed = "model.embed_tokens", .final_norm = "model.final_layernorm", .lm_head = "lm_head",
    .attn_norm = "input_layernorm", .q = "self_attn.q_proj", .k = "self_attn.k_proj",
    .v = "self_attn.v_proj", .o = "self_attn.dense", .up = "mlp.fc1", .down = "mlp.fc2",
};

static lmx_status phi_hp(const lmx_config *c, lmx_hparams *hp) {
    (void)c;
    hp->norm = LMX_NORM_LAYER;
    hp->parallel_block = true;
    hp->mlp_gated = false;
    return LMX_OK;
}

const lmx_arch lmx_arch_phi3 = {"phi3", phi3_hp, &phi3_names, NULL};
const lmx_arch lmx_arch_phi = {"phi", phi_hp, &phi_names, NULL};
