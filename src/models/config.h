/*
 * config.h - config.json / generation_config.json access.
 *
 * Lookups check a nested "text_config" object first (multimodal wrappers such
 * as gemma3 keep the language model's settings there), then the top level.
 * Unknown keys are ignored, as mlx-lm's ModelArgs.from_dict does.
 */
#ifndef LMX_MODELS_CONFIG_H
#define LMX_MODELS_CONFIG_H

#include "base/base.h"

#include <cjson/cJSON.h>

typedef struct lmx_config {
    cJSON *root;
    const cJSON *text; /* root["text_config"] or NULL */
    char *path;        /* config.json path, for messages */
} lmx_config;

/* Parses config.json text; path is only used in messages. */
lmx_status lmx_config_parse(const char *text, size_t len, const char *path, lmx_config **out);
lmx_status lmx_config_load(const char *dir, lmx_config **out);
void lmx_config_free(lmx_config *c);

const cJSON *lmx_cfg_get(const lmx_config *c, const char *key);
/* Typed getters with defaults. A present key of the wrong type is an error
 * reported through *st (left untouched on success). */
int64_t lmx_cfg_int(const lmx_config *c, const char *key, int64_t def, lmx_status *st);
double lmx_cfg_num(const lmx_config *c, const char *key, double def, lmx_status *st);
bool lmx_cfg_bool(const lmx_config *c, const char *key, bool def, lmx_status *st);
const char *lmx_cfg_str(const lmx_config *c, const char *key, const char *def);

/* EOS ids: generation_config.json's eos_token_id (int or list) replaces
 * config.json's; *n = 0 when neither has one. */
lmx_status lmx_config_eos(const lmx_config *c, const char *dir, int32_t **ids, size_t *n);

#endif
