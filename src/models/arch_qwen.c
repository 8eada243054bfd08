/* arch_qwen.c - qwen2 (q/k/v bias), qwen3 (QK-norm) and qwen3_moe.
 * Sliding windows apply only where layer_types says so (use_sliding_window). */
#include "models/arch.h"

static const lmx_arch_names qwen3_moe_names = {
    .embed = "model.embed_tokens", .final_norm = "model.norm", .lm_head = "lm_head",
    .attn_norm = "input_layernorm", .q = "self_attn.q_proj", .k = "self_attn.k_proj",
    .v = "self_attn.v_proj", .o = "self_attn.o_proj", .q_norm = "self_attn.q_norm",
    .k_norm = "self_attn.k_norm", .ffn_norm = "post_attention_layernorm", .gate = "mlp.gate_proj",
    .up = "mlp.up_proj", .down = "mlp.down_proj", .router = "mlp.gate",
    .exp_gate = "mlp.experts.%d.gate_proj", .exp_up = "mlp.experts.%d.up_proj",
    .exp_down = "mlp.experts.%d.down_proj", .stacked_gate = "mlp.switch_mlp.gate_proj",
    .stacked_up = "mlp.switch_mlp.up_proj", .stacked_down = "mlp.switch_mlp.down_proj",
};

static lmx_status qwen2_hp(const lmx_config *c, lmx_hparams *hp) {
    lmx_status st = LMX_OK;
    bool use_sw = lmx_cfg_bool(c, "use_sliding_window", false, &st);
    if (st) return st;
    if (!use_sw)
        for (int l = 0; l < hp->n_layer; l++) hp->window[l] = 0;
    return LMX_OK;
}

static lmx_status qwen3_hp(const lmx_config *c, lmx_hparams *hp) {
    hp->qk_norm = true;
    return qwen2_hp(c, hp);
}

static lmx_status qwen3_moe_hp(const lmx_config *c, lmx_hparams *hp) {
    lmx_status st = LMX_OK;
    hp->n_expert = (int)lmx_cfg_int(c, "num_experts", 0, &st);
    hp->n_expert_used = (int)lmx_cfg_int(c, "num_experts_per_tok", 0, &st);
    hp->n_ff_expert = (int)lmx_cfg_int(c, "moe_intermediate_size", 0, &st);
    hp->norm_topk_prob = lmx_cfg_bool(c, "norm_topk_prob", false, &st);
    if (st) return st;
    if (hp->n_expert > 0 && (hp->n_expert_used <= 0 || hp->n_ff_expert <= 0))
        return lmx_err(LMX_ERR_FORMAT, "%s: num_experts_per_tok / moe_intermediate_size missing", c->path);
    return qwen3_hp(c, hp);
}

/* HF Qwen3MoeDecoderLayer: experts unless the layer is in mlp_only_layers or
 * falls between decoder_sparse_step strides. */
static bool qwen3_moe_layer(const lmx_config *c, const lmx_hparams *hp, int l) {
    lmx_status st = LMX_OK;
    const cJSON *only = lmx_cfg_get(c, "mlp_only_layers");
    if (only && cJSON_IsArray(only))
        for (const cJSON *e = only->child; e; e = e->next)
            if (cJSON_IsNumber(e) && (int)e->valuedouble == l) return false;
    int64_t step = lmx_cfg_int(c, "decoder_sparse_step", 1, &st);
    return hp->n_expert > 0 && step > 0 && (l + 1) % step == 0;
}

const lmx_arch lmx_arch_qwen2 = {"qwen2", qwen2_hp, &lmx_names_llama, NULL};
const lmx_arch lmx_arch_qwen3 = {"qwen3", qwen3_hp, &lmx_names_llama, NULL};
const lmx_arch lmx_arch_qwen3_moe = {"qwen3_moe", qwen3_moe_hp, &qwen3_moe_names, qwen3_moe_layer};
