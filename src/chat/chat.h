/*
 * chat.h - the chat-template engine's internal API (below lmx.h's
 * lmx_apply_chat_template). Renders Hugging Face Jinja chat templates the
 * way transformers does (see docs/CHAT_TEMPLATES.md): same whitespace
 * control, Python value printing, tojson, undefined semantics and globals.
 * Usable without a tokenizer, which is how the tests and `lmx chat-template
 * --template FILE` drive it.
 */
#ifndef LMX_CHAT_H
#define LMX_CHAT_H

#include "lmx.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Resource caps of one render; zero fields take the defaults
 * (256 MiB of arena, 50M evaluation steps). Exceeding one is LMX_ERR_TEMPLATE. */
typedef struct lmx_chat_limits {
    size_t max_bytes;
    uint64_t max_steps;
} lmx_chat_limits;

/* Renders template_src with the variables of vars_json (a JSON object, or
 * NULL for none). *out is caller-owned (lmx_free). Errors: LMX_ERR_TEMPLATE
 * ("template:LINE:COL: problem") for syntax and runtime errors including
 * raise_exception(msg); LMX_ERR_INVALID_ARG for malformed vars_json. */
lmx_status lmx_chat_render(const char *template_src, const char *vars_json, char **out);
lmx_status lmx_chat_render_ex(const char *template_src, size_t template_len, const char *vars_json,
                              const lmx_chat_limits *limits, char **out);

/* What lmx_apply_chat_template feeds a template, tokenizer-free. */
typedef struct lmx_chat_inputs {
    const char *messages_json;  /* JSON array of message objects (non-empty) */
    const char *extra_json;     /* NULL or a JSON object; every key becomes a variable
                                   ("tools", "enable_thinking", "date_string", ...) */
    bool add_generation_prompt;
    const char *bos_token;      /* NULL: `bos_token` is undefined in the template */
    const char *eos_token;      /* NULL: `eos_token` is undefined */
    bool thinking_default;      /* true: enable_thinking = true unless extra_json sets it */
} lmx_chat_inputs;

/* transformers' apply_chat_template(tokenize=False) semantics: message keys
 * whose value is null are dropped; reasoning given as "reasoning_content",
 * "thinking" or "reasoning" is copied to "reasoning_content" and "thinking";
 * variables are messages, tools (extra "tools" or none), documents (none),
 * add_generation_prompt, bos_token, eos_token, enable_thinking (see above),
 * then every key of extra_json (overriding). */
lmx_status lmx_chat_apply_template(const char *template_src, const lmx_chat_inputs *in, char **out);

/* lmx_apply_chat_template with another template source (mlx-lm's
 * --chat-template): the tokenizer still supplies BOS/EOS and the
 * enable_thinking default. template_src NULL = the tokenizer's own. */
lmx_status lmx_chat_apply_template_tok(const lmx_tokenizer *t, const char *template_src,
                                       const char *messages_json, bool add_generation_prompt,
                                       const char *extra_json, char **out);

#endif /* LMX_CHAT_H */
