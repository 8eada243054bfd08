/* fuzz_config.c - libFuzzer target: config.json parsing.
 * Input = config.json text. It goes through lmx_config_parse (text_config
 * nesting included) and the typed getters the model families use; a generic
 * walk and re-print of the cJSON tree covers the parser itself. (The RoPE
 * scaling reader in models/rope.c is a good next consumer to add once
 * models/model.h settles.) */
#include "models/config.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <string.h>

static size_t walk(const cJSON *j, int depth) {
    size_t n = 1;
    if (cJSON_IsString(j)) n += strlen(j->valuestring);
    if (j->string) n += strlen(j->string);
    for (const cJSON *c = j->child; c && depth < 2000; c = c->next) n += walk(c, depth + 1);
    return n;
}

static const char *const int_keys[] = {
    "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
    "vocab_size", "head_dim", "max_position_embeddings", "sliding_window", "num_experts_per_tok",
    "num_local_experts", "bos_token_id", "eos_token_id",
};
static const char *const num_keys[] = {
    "rms_norm_eps", "rope_theta", "partial_rotary_factor", "attn_logit_softcapping",
    "final_logit_softcapping", "query_pre_attn_scalar", "layer_norm_eps",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cJSON *j = cJSON_ParseWithLength((const char *)data, size);
    volatile size_t sink = 0;
    if (j) {
        sink += walk(j, 0);
        char *s = cJSON_PrintUnformatted(j);
        if (s) sink += strlen(s);
        cJSON_free(s);
        cJSON_Delete(j);
    }
    lmx_config *c;
    if (lmx_config_parse((const char *)data, size, "fuzz/config.json", &c) != LMX_OK) {
        if (strchr(lmx_last_error(), '\n')) __builtin_trap();
        return 0;
    }
    lmx_status st = LMX_OK;
    for (size_t i = 0; i < sizeof int_keys / sizeof *int_keys; i++) sink += (size_t)lmx_cfg_int(c, int_keys[i], 0, &st);
    for (size_t i = 0; i < sizeof num_keys / sizeof *num_keys; i++) sink += (size_t)(lmx_cfg_num(c, num_keys[i], 0, &st) > 0);
    sink += lmx_cfg_bool(c, "tie_word_embeddings", false, &st);
    const char *mt = lmx_cfg_str(c, "model_type", "");
    sink += strlen(mt);
    (void)lmx_cfg_get(c, "rope_scaling");
    (void)sink;
    lmx_config_free(c);
    return 0;
}
