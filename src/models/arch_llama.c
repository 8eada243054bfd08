/* arch_llama.c - llama (Llama 2/3, CodeLlama), mistral and mixtral.
 * HF semantics: q/k/v/o with optional attention_bias, SwiGLU MLP with
 * optional mlp_bias; mistral/mixtral apply sliding_window to every layer. */
#include "models/arch.h"

const lmx_arch_names lmx_names_llama = {
    .embed = "model.embed_tokens", .final_norm = "model.norm", .lm_head = "lm_head",
    .attn_norm = "input_layernorm", .q = "self_attn.q_proj", .k = "self_attn.k_proj",
    .v = "self_attn.v_proj", .o = "self_attn.o_proj", .q_norm = "self_attn.q_norm",
    .k_norm = "self_attn.k_norm", .ffn_norm = "post_attention_layernorm", .gate = "mlp.gate_proj",
    .up = "mlp.up_proj", .down = "mlp.down_proj",
};

static lmx_status llama_hp(const lmx_config *c, lmx_hparams *hp) {
    (void)c;
    (void)hp;
    return LMX_OK; /* attention/mlp biases load when present in the file */
}

static lmx_status mistral_hp(const lmx_config *c, lmx_hparams *hp) {
    return lmx_windows_from_config(c, hp, true);
}

static const lmx_arch_names mixtral_names = {
    .embed = "model.embed_tokens", .final_norm = "model.norm", .lm_head = "lm_head",
    .attn_norm = "input_layernorm", .q = "self_attn.q_proj", .k = "self_attn.k_proj",
    .v = "self_attn.v_proj", .o = "self_attn.o_proj", .ffn_norm = "post_attention_layernorm",
    .router = "block_sparse_moe.gate", .exp_gate = "block_sparse_moe.experts.%d.w1",
    .exp_up = "block_sparse_moe.experts.%d.w3", .exp_down = "block_sparse_moe.experts.%d.w2",
    .stacked_gate = "block_sparse_moe.switch_mlp.gate_proj",
    .stacked_up = "block_sparse_moe.switch_mlp.up_proj",
    .stacked_down = "block_sparse_moe.switch_mlp.down_proj",
};

static lmx_status mixtral_hp(const lmx_config *c, lmx_hparams *hp) {
    lmx_status st = LMX_OK;
    hp->n_expert = (int)lmx_cfg_int(c, "num_local_experts", 8, &st);
    hp->n_expert_used = (int)lmx_cfg_int(c, "num_experts_per_tok", 2, &st);
    hp->n_ff_expert = hp->n_ff;
    hp->norm_topk_prob = true;
    if (st) return st;
    return lmx_windows_from_config(c, hp, true);
}

const lmx_arch lmx_arch_llama = {"llama", llama_hp, &lmx_names_llama, NULL};
const lmx_arch lmx_arch_mistral = {"mistral", mistral_hp, &lmx_names_llama, NULL};
const lmx_arch lmx_arch_mixtral = {"mixtral", mixtral_hp, &mixtral_names, NULL};
