/*
 * chat_apply.c - lmx_apply_chat_template: the tokenizer's chat template with
 * its BOS/EOS strings, and mlx-lm's enable_thinking default (true when the
 * vocabulary has a pair of think markers: <think>/</think>,
 * <longcat_think>/</longcat_think> or Gemma 4's <|channel>/<channel|>).
 * When extra_json carries non-null "tools" and the tokenizer has a template
 * named "tool_use", that one is used, as transformers does.
 */
#include "chat/chat.h"
#include "base/base.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tokenizer.h"

static bool has_think_markers(const lmx_tokenizer *t) {
    static const char *const pairs[][2] = {
        {"<think>", "</think>"}, {"<longcat_think>", "</longcat_think>"}, {"<|channel>", "<channel|>"}};
    for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++)
        if (lmx_tokenizer_token_id(t, pairs[i][0]) >= 0 && lmx_tokenizer_token_id(t, pairs[i][1]) >= 0) return true;
    return false;
}

/* transformers leaves a missing special token out of the variables (undefined) */
static const char *nonempty(const char *s) { return s && *s ? s : NULL; }

static bool extra_has_tools(const char *extra_json) {
    if (!extra_json) return false;
    cJSON *x = cJSON_Parse(extra_json);
    const cJSON *tools = x ? cJSON_GetObjectItemCaseSensitive(x, "tools") : NULL;
    bool r = tools && !cJSON_IsNull(tools);
    cJSON_Delete(x);
    return r;
}

bool lmx_tokenizer_has_chat_template(const lmx_tokenizer *t) {
    if (!t) return false;
    return lmx_tokenizer_chat_template(t, NULL) != NULL;
}

lmx_status lmx_apply_chat_template(const lmx_tokenizer *t, const char *messages_json,
                                   bool add_generation_prompt, const char *extra_json, char **out) {
    return lmx_chat_apply_template_tok(t, NULL, messages_json, add_generation_prompt, extra_json, out);
}

lmx_status lmx_chat_apply_template_tok(const lmx_tokenizer *t, const char *template_src,
                                       const char *messages_json, bool add_generation_prompt,
                                       const char *extra_json, char **out) {
    if (!t || !messages_json || !out) return lmx_err(LMX_ERR_INVALID_ARG, "apply_chat_template: NULL argument");
    const char *tmpl = template_src;
    if (!tmpl && extra_has_tools(extra_json)) tmpl = lmx_tokenizer_chat_template(t, "tool_use");
    if (!tmpl) tmpl = lmx_tokenizer_chat_template(t, NULL);
    if (!tmpl)
        return lmx_err(LMX_ERR_NOT_FOUND, "the tokenizer has no chat template (no chat_template in "
                                          "tokenizer_config.json, chat_template.jinja or tokenizer.chat_template)");
    lmx_chat_inputs in = {
        .messages_json = messages_json,
        .extra_json = extra_json,
        .add_generation_prompt = add_generation_prompt,
        .bos_token = nonempty(lmx_tokenizer_bos_str(t)),
        .eos_token = nonempty(lmx_tokenizer_eos_str(t)),
        .thinking_default = has_think_markers(t),
    };
    return lmx_chat_apply_template(tmpl, &in, out);
}
