/* fuzz_tokenize.c - libFuzzer target: encodes the input with a real tokenizer
 * (with and without special tokens), decodes the ids, streams them through
 * the detokenizer and checks that the streamed text equals the full decode.
 *
 * Tokenizer: $LMX_FUZZ_TOKENIZER (a tokenizer.json, model folder or .gguf),
 * else tests/data/tokenizers/llama.cpp-vocab/ggml-vocab-llama-spm.gguf
 * relative to the working directory (run from the repository root), else the
 * gpt-2 vocab GGUF. Build with -DLMX_FUZZ=ON (clang). */
#include "tokenizer/tok_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static lmx_tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *cands[] = {getenv("LMX_FUZZ_TOKENIZER"),
                           "tests/data/tokenizers/llama.cpp-vocab/ggml-vocab-llama-spm.gguf",
                           "tests/data/tokenizers/llama.cpp-vocab/ggml-vocab-gpt-2.gguf"};
    for (size_t i = 0; i < sizeof cands / sizeof *cands && !tok; i++)
        if (cands[i] && lmx_tokenizer_load(cands[i], &tok) != LMX_OK) tok = NULL;
    if (!tok) {
        fprintf(stderr, "fuzz_tokenize: no tokenizer (set LMX_FUZZ_TOKENIZER): %s\n", lmx_last_error());
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (int special = 0; special < 2; special++) {
        int32_t *ids = NULL;
        size_t n = 0;
        if (lmx_tokenize(tok, (const char *)data, size, special, &ids, &n) != LMX_OK) abort();
        tok_sbuf full = {0};
        if (tok_decode(tok, ids, n, &full) != LMX_OK) abort();
        lmx_detok *d;
        if (lmx_detok_new(tok, &d) != LMX_OK) abort();
        tok_sbuf acc = {0};
        for (size_t i = 0; i <= n; i++) {
            const char *seg;
            size_t len;
            lmx_status st = i < n ? lmx_detok_add(d, ids[i], &seg, &len) : lmx_detok_finish(d, &seg, &len);
            if (st != LMX_OK) abort();
            tok_sbuf_put(&acc, seg, len);
        }
        if (tok->detok != DETOK_NAIVE && (acc.n != full.n || memcmp(acc.p, full.p, acc.n))) abort();
        lmx_detok_free(d);
        tok_sbuf_free(&acc);
        tok_sbuf_free(&full);
        lmx_free(ids);
    }
    /* ids straight from the input bytes */
    if (size >= 4) {
        size_t n = size / 4;
        int32_t *ids = malloc(n * sizeof *ids);
        if (!ids) return 0;
        for (size_t i = 0; i < n; i++) {
            uint32_t v;
            memcpy(&v, data + 4 * i, 4);
            ids[i] = (int32_t)(v % (uint32_t)(lmx_tokenizer_vocab_size(tok) + 8));
        }
        char *text;
        if (lmx_detokenize(tok, ids, n, &text) != LMX_OK) abort();
        lmx_free(text);
        free(ids);
    }
    return 0;
}
