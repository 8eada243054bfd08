/*
 * tokenizer.h - the tokenizer as the rest of lmx sees it.
 *
 * A tokenizer comes from a Hugging Face tokenizer.json (plus the
 * tokenizer_config.json / chat_template.jinja beside it) or from the
 * tokenizer.ggml.* keys of a GGUF file. Encoding and decoding go through the
 * public functions of lmx.h (lmx_tokenize, lmx_detokenize, ...); this header
 * adds the accessors the chat-template engine and the generator need, and the
 * streaming detokenizer (MLX-LM-SPEC §9).
 *
 * A loaded tokenizer is immutable apart from an internal, mutex-guarded word
 * cache, so one tokenizer may be used from several threads at once.
 */
#ifndef LMX_TOKENIZER_H
#define LMX_TOKENIZER_H

#include "lmx.h"
#include "io/gguf.h"

lmx_status lmx_tokenizer_from_gguf(const lmx_gguf *g, lmx_tokenizer **out);
/* dir: folder with tokenizer.json (+tokenizer_config.json); path may also be a
 * tokenizer.json or .gguf file (that's lmx_tokenizer_load, public). */
const char *lmx_tokenizer_chat_template(const lmx_tokenizer *t, const char *name); /* name NULL = default; NULL if none */
const char *lmx_tokenizer_bos_str(const lmx_tokenizer *t); /* "" if none */
const char *lmx_tokenizer_eos_str(const lmx_tokenizer *t);
const char *lmx_tokenizer_piece(const lmx_tokenizer *t, int32_t id); /* raw vocab string or NULL */

typedef struct lmx_detok lmx_detok;
lmx_status lmx_detok_new(const lmx_tokenizer *t, lmx_detok **out);
/* Adds one id; *seg and *seg_len receive the newly completed text (may be empty),
 * valid until the next call. */
lmx_status lmx_detok_add(lmx_detok *d, int32_t id, const char **seg, size_t *seg_len);
/* Flushes whatever is left (final segment). */
lmx_status lmx_detok_finish(lmx_detok *d, const char **seg, size_t *seg_len);
void lmx_detok_free(lmx_detok *d);

#endif
