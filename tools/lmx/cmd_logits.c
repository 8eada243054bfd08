/* cmd_logits.c - `lmx logits`: f32 logits of every position, as tensor
 * "logits" [T, vocab] in a safetensors file. Needs no tokenizer: this is the
 * numerical hook tests and users compare against reference implementations. */
#include "cli.h"
#include "io/safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cmd_logits(int argc, char **argv) {
    const char *cmd = "logits";
    cli_args a;
    cli_init(&a, argc, argv);
    const char *model = NULL, *tokens = NULL, *out = NULL;
    long long threads = 0;
    const char *f;
    while ((f = cli_next(&a))) {
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            printf("usage: lmx logits --model PATH --tokens 1,2,3 --out FILE.safetensors [--threads N]\n");
            return 0;
        } else if (!strcmp(f, "--model")) {
            model = cli_value(&a, f);
        } else if (!strcmp(f, "--tokens")) {
            tokens = cli_value(&a, f);
        } else if (!strcmp(f, "--out")) {
            out = cli_value(&a, f);
        } else if (!strcmp(f, "--threads")) {
            cli_int(&a, f, 1, 512, &threads);
        } else {
            return cli_unknown(cmd, f);
        }
        if (a.error) return 2;
    }
    if (!tokens || !out) {
        cli_fail(cmd, "--tokens and --out are required");
        return 2;
    }
    int32_t *ids;
    size_t n;
    if (!cli_ids(cmd, "--tokens", tokens, &ids, &n)) return 2;
    if (n == 0) {
        cli_fail(cmd, "--tokens: empty list");
        free(ids);
        return 2;
    }
    lmx_model *m;
    if (cli_load_model(model, threads, NULL, true, &m)) {
        free(ids);
        return cli_lib_fail(cmd);
    }
    int64_t V = lmx_model_vocab_size(m);
    float *lg = malloc(n * (size_t)V * sizeof *lg);
    int rc = 0;
    if (!lg) {
        cli_fail(cmd, "out of memory for %zu x %lld logits", n, (long long)V);
        rc = 1;
    } else if (lmx_logits(m, ids, n, lg)) {
        rc = cli_lib_fail(cmd);
    } else {
        int64_t shape[2] = {(int64_t)n, V};
        lmx_st_write_tensor t = {"logits", LMX_F32, 2, shape, lg, n * (size_t)V * sizeof(float)};
        if (lmx_st_write(out, &t, 1, NULL)) rc = cli_lib_fail(cmd);
    }
    free(lg);
    free(ids);
    lmx_model_free(m);
    return rc;
}
