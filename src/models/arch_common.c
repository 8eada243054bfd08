/* arch_common.c - hyperparameters every family shares, and the family registry. */
#include "models/arch.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const lmx_arch *const families[] = {
    &lmx_arch_llama, &lmx_arch_mistral, &lmx_arch_mixtral, &lmx_arch_qwen2, &lmx_arch_qwen3,
    &lmx_arch_qwen3_moe, &lmx_arch_phi3, &lmx_arch_phi, &lmx_arch_gemma, &lmx_arch_gemma2,
    &lmx_arch_gemma3, &lmx_arch_starcoder2,
};

const lmx_arch *lmx_arch_find(const char *model_type) {
    for (size_t i = 0; i < sizeof families / sizeof *families; i++)
        if (!strcmp(families[i]->model_type, model_type)) return families[i];
    if (!strcmp(model_type, "gemma3_text")) return &lmx_arch_gemma3;
    if (!strcmp(model_type, "codellama")) return &lmx_arch_llama;
    return NULL;
}

lmx_act_kind lmx_act_from_name(const char *name, bool *ok) {
    *ok = true;
    if (!strcmp(name, "silu") || !strcmp(name, "swish")) return LMX_ACT_SILU;
    if (!strcmp(name, "gelu") || !strcmp(name, "gelu_exact")) return LMX_ACT_GELU_ERF;
    if (!strcmp(name, "gelu_new") || !strcmp(name, "gelu_pytorch_tanh") || !strcmp(name, "gelu_fast") ||
        !strcmp(name, "gelu_approx"))
        return LMX_ACT_GELU_TANH;
    if (!strcmp(name, "relu")) return LMX_ACT_RELU;
    *ok = false;
    return LMX_ACT_SILU;
}

lmx_status lmx_windows_from_config(const lmx_config *c, lmx_hparams *hp, bool all_layers) {
    lmx_status st = LMX_OK;
    int64_t sw = lmx_cfg_int(c, "sliding_window", 0, &st);
    if (st) return st;
    const cJSON *lt = lmx_cfg_get(c, "layer_types");
    if (lt && cJSON_IsArray(lt)) {
        if (cJSON_GetArraySize(lt) != hp->n_layer)
            return lmx_err(LMX_ERR_FORMAT, "%s: layer_types: %d entries for %d layers", c->path,
                           cJSON_GetArraySize(lt), hp->n_layer);
        int l = 0;
        for (const cJSON *e = lt->child; e; e = e->next, l++) {
            bool sliding = cJSON_IsString(e) && !strcmp(e->valuestring, "sliding_attention");
            hp->window[l] = sliding ? (int)sw : 0;
            hp->rope_idx[l] = sliding ? 1 : 0;
        }
        return LMX_OK;
    }
    for (int l = 0; l < hp->n_layer; l++) hp->window[l] = all_layers ? (int)sw : 0;
    return LMX_OK;
}

lmx_status lmx_hparams_common(const lmx_config *c, lmx_hparams *hp) {
    lmx_status st = LMX_OK;
    hp->n_embd = (int)lmx_cfg_int(c, "hidden_size", 0, &st);
    hp->n_layer = (int)lmx_cfg_int(c, "num_hidden_layers", 0, &st);
    hp->n_head = (int)lmx_cfg_int(c, "num_attention_heads", 0, &st);
    hp->n_kv_head = (int)lmx_cfg_int(c, "num_key_value_heads", hp->n_head, &st);
    hp->n_vocab = (int)lmx_cfg_int(c, "vocab_size", 0, &st);
    hp->n_ff = (int)lmx_cfg_int(c, "intermediate_size", 0, &st);
    hp->n_ctx = (int)lmx_cfg_int(c, "max_position_embeddings", 4096, &st);
    if (st) return st;
    const char *req[] = {"hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"};
    int vals[] = {hp->n_embd, hp->n_layer, hp->n_head, hp->n_vocab};
    for (int i = 0; i < 4; i++)
        if (vals[i] <= 0) return lmx_err(LMX_ERR_FORMAT, "%s: %s: missing or not positive", c->path, req[i]);
    if (hp->n_layer > LMX_MAX_LAYERS)
        return lmx_err(LMX_ERR_UNSUPPORTED, "%s: num_hidden_layers: %d exceeds %d", c->path, hp->n_layer, LMX_MAX_LAYERS);
    if (hp->n_kv_head <= 0 || hp->n_head % hp->n_kv_head)
        return lmx_err(LMX_ERR_FORMAT, "%s: num_key_value_heads: %d does not divide %d heads", c->path,
                       hp->n_kv_head, hp->n_head);
    hp->head_dim = (int)lmx_cfg_int(c, "head_dim", hp->n_embd / hp->n_head, &st);
    if (st) return st;
    if (hp->head_dim <= 0 || hp->head_dim % 2 || hp->head_dim > 1024)
        return lmx_err(LMX_ERR_FORMAT, "%s: head_dim: %d is not a valid head size", c->path, hp->head_dim);
    const char *eps_keys[] = {"rms_norm_eps", "layer_norm_eps", "norm_epsilon", "layer_norm_epsilon"};
    hp->norm_eps = 1e-5f;
    for (int i = 0; i < 4; i++)
        if (lmx_cfg_get(c, eps_keys[i])) {
            hp->norm_eps = (float)lmx_cfg_num(c, eps_keys[i], 1e-5, &st);
            break;
        }
    hp->norm = LMX_NORM_RMS;
    hp->mlp_gated = true;
    const char *act = lmx_cfg_str(c, "hidden_activation", NULL);
    if (!act) act = lmx_cfg_str(c, "hidden_act", "silu");
    bool ok;
    hp->act = lmx_act_from_name(act, &ok);
    if (!ok) return lmx_err(LMX_ERR_UNSUPPORTED, "%s: hidden_act: '%s' is not supported", c->path, act);
    hp->attn_scale = 1.0f / sqrtf((float)hp->head_dim);
    hp->embed_scale = 1.0f;
    hp->tied = lmx_cfg_bool(c, "tie_word_embeddings", false, &st);
    hp->bos_id = (int)lmx_cfg_int(c, "bos_token_id", -1, &st);
    if (st) return st;
    LMX_TRY(lmx_rope_params(c, "full_attention", hp->head_dim, 10000.0, &hp->rope[0]));
    LMX_TRY(lmx_windows_from_config(c, hp, false));
    /* A second rope for sliding layers, when the config nests one. */
    const cJSON *rp = lmx_cfg_get(c, "rope_parameters");
    if (rp && cJSON_GetObjectItemCaseSensitive(rp, "sliding_attention"))
        LMX_TRY(lmx_rope_params(c, "sliding_attention", hp->head_dim, 10000.0, &hp->rope[1]));
    else
        LMX_TRY(lmx_rope_params(c, "full_attention", hp->head_dim, 10000.0, &hp->rope[1]));
    snprintf(hp->arch, sizeof hp->arch, "%s", lmx_cfg_str(c, "model_type", "?"));
    return LMX_OK;
}
