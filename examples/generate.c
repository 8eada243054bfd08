/*
 * generate.c - the smallest complete use of liblmx: load a model, stream a
 * completion, print it with the token count.
 *
 *   example_generate MODEL_PATH "prompt" [max_tokens]
 */
#include <lmx.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int on_token(const lmx_response *r, void *user) {
    int *count = user;
    fwrite(r->text, 1, r->text_len, stdout);
    fflush(stdout);
    *count = r->generation_tokens; /* the EOS that stops generation counts, as in mlx-lm */
    return 0; /* keep going */
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL_PATH PROMPT [MAX_TOKENS]\n", argv[0]);
        return 2;
    }
    lmx_model *model;
    if (lmx_load(argv[1], NULL, &model) != LMX_OK) {
        fprintf(stderr, "error: %s\n", lmx_last_error());
        return 1;
    }
    const lmx_tokenizer *tok = lmx_model_tokenizer(model);
    int32_t *ids = NULL;
    size_t n = 0;
    if (!tok || lmx_tokenize(tok, argv[2], strlen(argv[2]), true, &ids, &n) != LMX_OK) {
        fprintf(stderr, "error: %s\n", lmx_last_error());
        lmx_model_free(model);
        return 1;
    }
    lmx_generate_options opt;
    lmx_generate_options_init(&opt);
    opt.max_tokens = argc > 3 ? atoi(argv[3]) : 64;
    int count = 0;
    lmx_status s = lmx_generate_stream(model, ids, n, &opt, on_token, &count);
    printf("\n[%d tokens]\n", count);
    lmx_free(ids);
    lmx_model_free(model);
    if (s != LMX_OK) {
        fprintf(stderr, "error: %s\n", lmx_last_error());
        return 1;
    }
    return 0;
}
