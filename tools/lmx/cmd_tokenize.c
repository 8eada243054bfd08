/* cmd_tokenize.c - `lmx tokenize` and `lmx detokenize`.
 *
 *   lmx tokenize --model PATH [--add-special-tokens] (--text STR | --jsonl FILE)
 *     prints the ids as one JSON array per line ("[1, 2, 3]"); with --jsonl,
 *     each non-empty input line must be one JSON string and gives one output
 *     line; a malformed line stops with "line N: ..." and exit code 1.
 *   lmx detokenize --model PATH --ids 1,2,3
 *     prints the decoded text exactly, with no newline added.
 * --model takes a model folder (tokenizer.json inside), a tokenizer.json file
 * or a .gguf file; without it the default model is used. */
#include "cli.h"
#include "tokenizer/tokenizer.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void print_ids(const int32_t *ids, size_t n) {
    putchar('[');
    for (size_t i = 0; i < n; i++) printf(i ? ", %d" : "%d", ids[i]);
    fputs("]\n", stdout);
}

static int encode_print(const char *cmd, const lmx_tokenizer *t, const char *text, size_t len, bool special) {
    int32_t *ids;
    size_t n;
    if (lmx_tokenize(t, text, len, special, &ids, &n) != LMX_OK) return cli_lib_fail(cmd);
    print_ids(ids, n);
    lmx_free(ids);
    return 0;
}

static int run_jsonl(const char *cmd, const lmx_tokenizer *t, const char *path, bool special) {
    FILE *f = !strcmp(path, "-") ? stdin : fopen(path, "rb");
    if (!f) {
        cli_fail(cmd, "--jsonl: cannot open '%s'", path);
        return 1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long lineno = 0;
    int rc = 0;
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        if (len == 0) continue;
        cJSON *j = cJSON_ParseWithLength(line, (size_t)len);
        if (!cJSON_IsString(j)) {
            cli_fail(cmd, "%s: line %ld: expected one JSON string", path, lineno);
            cJSON_Delete(j);
            rc = 1;
            break;
        }
        rc = encode_print(cmd, t, j->valuestring, strlen(j->valuestring), special);
        cJSON_Delete(j);
        if (rc) break;
    }
    free(line);
    if (f != stdin) fclose(f);
    fflush(stdout);
    return rc;
}

int cmd_tokenize(int argc, char **argv) {
    const char *cmd = "tokenize";
    cli_args a;
    cli_init(&a, argc, argv);
    const char *model = NULL, *text = NULL, *jsonl = NULL;
    bool special = false;
    const char *f;
    while ((f = cli_next(&a))) {
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            printf("usage: lmx tokenize --model PATH [--add-special-tokens] (--text STR | --jsonl FILE)\n\n"
                   "Prints the token ids of STR as a JSON array, or, with --jsonl, one array per\n"
                   "line of FILE (each line one JSON string; empty lines are skipped; '-' = stdin).\n"
                   "Special tokens written in the text are recognised. --add-special-tokens adds\n"
                   "BOS/EOS as the tokenizer is configured. PATH: a model folder, a tokenizer.json\n"
                   "or a .gguf file.\n");
            return 0;
        } else if (!strcmp(f, "--model")) {
            model = cli_value(&a, f);
        } else if (!strcmp(f, "--text")) {
            text = cli_value(&a, f);
        } else if (!strcmp(f, "--jsonl")) {
            jsonl = cli_value(&a, f);
        } else if (!strcmp(f, "--add-special-tokens")) {
            special = true;
        } else {
            return cli_unknown(cmd, f);
        }
        if (a.error) return 2;
    }
    if (!text == !jsonl) {
        cli_fail(cmd, "give exactly one of --text and --jsonl");
        return 2;
    }
    lmx_tokenizer *t;
    if (lmx_tokenizer_load(model ? model : cli_default_model(), &t) != LMX_OK) return cli_lib_fail(cmd);
    int rc = text ? encode_print(cmd, t, text, strlen(text), special) : run_jsonl(cmd, t, jsonl, special);
    lmx_tokenizer_free(t);
    return rc;
}

int cmd_detokenize(int argc, char **argv) {
    const char *cmd = "detokenize";
    cli_args a;
    cli_init(&a, argc, argv);
    const char *model = NULL, *ids_s = NULL;
    const char *f;
    while ((f = cli_next(&a))) {
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            printf("usage: lmx detokenize --model PATH --ids 1,2,3\n\n"
                   "Prints the decoded text exactly (special tokens kept, no newline added).\n"
                   "PATH: a model folder, a tokenizer.json or a .gguf file.\n");
            return 0;
        } else if (!strcmp(f, "--model")) {
            model = cli_value(&a, f);
        } else if (!strcmp(f, "--ids")) {
            ids_s = cli_value(&a, f);
        } else {
            return cli_unknown(cmd, f);
        }
        if (a.error) return 2;
    }
    if (!ids_s) {
        cli_fail(cmd, "--ids is required");
        return 2;
    }
    int32_t *ids;
    size_t n;
    if (!cli_ids(cmd, "--ids", ids_s, &ids, &n)) return 2;
    lmx_tokenizer *t;
    if (lmx_tokenizer_load(model ? model : cli_default_model(), &t) != LMX_OK) {
        free(ids);
        return cli_lib_fail(cmd);
    }
    /* the streaming decoder hands out lengths, so NUL bytes survive */
    lmx_detok *d = NULL;
    int rc = 0;
    if (lmx_detok_new(t, &d) != LMX_OK) rc = cli_lib_fail(cmd);
    for (size_t i = 0; !rc && i <= n; i++) {
        const char *seg;
        size_t len;
        lmx_status st = i < n ? lmx_detok_add(d, ids[i], &seg, &len) : lmx_detok_finish(d, &seg, &len);
        if (st != LMX_OK) rc = cli_lib_fail(cmd);
        else fwrite(seg, 1, len, stdout);
    }
    fflush(stdout);
    lmx_detok_free(d);
    lmx_tokenizer_free(t);
    free(ids);
    return rc;
}
