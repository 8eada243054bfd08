/* cmd_generate_batch.c - `lmx generate --prompts-file FILE`: every prompt of
 * a file through lmx_batch_generate (continuous batching), texts printed in
 * file order, then aggregate stats in mlx-lm batch_generate's format. */
#include "cli.h"

#include "base/base.h" /* lmx_time_s, lmx_peak_rss_bytes */

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char **text;
    size_t *len;
    int gen_tokens, prompt_tokens;
    double prompt_time;
    bool oom;
} batch_out;

static int on_batch(size_t i, const lmx_response *r, void *user) {
    batch_out *b = user;
    if (r->text_len) {
        char *n = realloc(b->text[i], b->len[i] + r->text_len + 1);
        if (!n) {
            b->oom = true;
            return 1;
        }
        memcpy(n + b->len[i], r->text, r->text_len);
        b->len[i] += r->text_len;
        n[b->len[i]] = 0;
        b->text[i] = n;
    }
    if (r->finish_reason != LMX_FINISH_NONE) {
        b->gen_tokens += r->generation_tokens;
        b->prompt_tokens += r->prompt_tokens;
        if (r->prompt_tps > 0) b->prompt_time += r->prompt_tokens / r->prompt_tps;
    }
    return 0;
}

/* One prompt per non-empty line: plain text, a JSON string, or a JSON
 * object with a "prompt" string (jsonl). */
static char *line_prompt(const char *cmd, const char *path, int lineno, char *line) {
    if (line[0] != '{' && line[0] != '"') return strdup(line);
    cJSON *j = cJSON_Parse(line);
    const cJSON *p = cJSON_IsObject(j) ? cJSON_GetObjectItemCaseSensitive(j, "prompt") : j;
    char *out = cJSON_IsString(p) ? strdup(p->valuestring) : NULL;
    if (!out)
        cli_fail(cmd, "%s:%d: %s", path, lineno,
                 !j ? "malformed JSON" : cJSON_IsObject(j) ? "no \"prompt\" string" : "not a string or object");
    cJSON_Delete(j);
    return out;
}

int cli_generate_batch(const char *cmd, lmx_model *m, const char *path, const lmx_generate_options *o, int batch,
                       bool verbose, cli_prompt_fn build, void *ctx) {
    char *data;
    size_t size;
    if (lmx_read_file(path, &data, &size)) return cli_lib_fail(cmd);
    size_t cap = 16, n = 0;
    int32_t **ids = malloc(cap * sizeof *ids);
    size_t *lens = malloc(cap * sizeof *lens);
    int rc = ids && lens ? 0 : 1;
    int lineno = 0;
    for (char *line = data, *next; !rc && line && *line; line = next) {
        lineno++;
        next = strchr(line, '\n');
        if (next) *next++ = 0;
        size_t l = strlen(line);
        if (l && line[l - 1] == '\r') line[--l] = 0;
        if (!l) continue;
        char *p = line_prompt(cmd, path, lineno, line);
        if (!p) {
            rc = 2;
            break;
        }
        if (n == cap) {
            cap *= 2;
            int32_t **ni = realloc(ids, cap * sizeof *ids);
            size_t *nl = realloc(lens, cap * sizeof *lens);
            if (ni) ids = ni;
            if (nl) lens = nl;
            if (!ni || !nl) rc = 1;
        }
        if (!rc) rc = build(p, &ids[n], &lens[n], ctx);
        if (!rc) n++;
        free(p);
    }
    free(data);
    if (!rc && n == 0) {
        cli_fail(cmd, "%s: no prompts", path);
        rc = 2;
    }
    batch_out b = {calloc(n + 1, sizeof(char *)), calloc(n + 1, sizeof(size_t)), 0, 0, 0, false};
    double t0 = lmx_time_s();
    if (!rc && (!b.text || !b.len)) rc = 1;
    if (!rc && lmx_batch_generate(m, (const int32_t *const *)ids, lens, n, o, batch, on_batch, &b)) rc = cli_lib_fail(cmd);
    double wall = lmx_time_s() - t0;
    for (size_t i = 0; !rc && i < n; i++) {
        if (verbose) printf("==========\n");
        printf("%s\n", b.text[i] ? b.text[i] : "");
    }
    if (!rc && verbose) {
        printf("==========\n");
        printf("[batch_generate] Prompt: %d tokens, %.3f tokens-per-sec\n", b.prompt_tokens,
               b.prompt_time > 0 ? b.prompt_tokens / b.prompt_time : 0.0);
        /* prompt_time: the prompt rows' share of the batched passes (batch.c) */
        double gen_time = wall - b.prompt_time;
        printf("[batch_generate] Generation: %d tokens, %.3f tokens-per-sec\n", b.gen_tokens,
               gen_time > 0 ? b.gen_tokens / gen_time : 0.0);
        printf("[batch_generate] Peak memory: %.3f GB\n", (double)lmx_peak_rss_bytes() / 1e9);
    }
    for (size_t i = 0; i < n; i++) {
        lmx_free(ids[i]);
        if (b.text) free(b.text[i]);
    }
    free(b.text);
    free(b.len);
    free(ids);
    free(lens);
    return rc;
}
