/* cli_prompt.c - prompt text shared by generate, chat and cache-prompt:
 * stdin and escapes as mlx-lm reads them, and chat-template rendering with
 * transformers' continue_final_message rule. */
#include "cli.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cli_unescape(char *s) {
    char *w = s;
    for (char *r = s; *r; r++) {
        if (r[0] == '\\' && (r[1] == 'n' || r[1] == 't')) {
            *w++ = r[1] == 'n' ? '\n' : '\t';
            r++;
        } else {
            *w++ = *r;
        }
    }
    *w = 0;
}

char *cli_read_stdin(void) {
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    size_t r;
    while (b && (r = fread(b + n, 1, cap - n - 1, stdin)) > 0) {
        n += r;
        if (n + 1 >= cap) {
            char *nb = realloc(b, cap *= 2);
            if (!nb) {
                free(b);
                return NULL;
            }
            b = nb;
        }
    }
    if (b) b[n] = 0;
    return b;
}

cJSON *cli_message(cJSON *msgs, const char *role, const char *content) {
    cJSON *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "role", role);
    cJSON_AddStringToObject(m, "content", content);
    cJSON_AddItemToArray(msgs, m);
    return m;
}

/* transformers' continue_final_message: cut the rendering right after the
 * last message's content (stripped; trailing spaces kept when the template
 * kept them). */
static int continue_final(const char *cmd, char *text, const char *content) {
    const char *b = content, *e = content + strlen(content);
    while (*b == ' ' || *b == '\n' || *b == '\t' || *b == '\r') b++;
    while (e > b && (e[-1] == ' ' || e[-1] == '\n' || e[-1] == '\t' || e[-1] == '\r')) e--;
    size_t sl = (size_t)(e - b);
    char *loc = NULL;
    for (char *p = text; *p; p++) /* rindex of the stripped content */
        if (!strncmp(p, b, sl)) loc = p;
    if (sl == 0) loc = text + strlen(text);
    if (!loc) {
        cli_fail(cmd, "continue_final_message: the final message does not appear in the rendered chat");
        return 1;
    }
    size_t lstripped = strlen(b);
    if (!strncmp(loc, b, lstripped))
        loc[lstripped] = 0;
    else
        loc[sl] = 0;
    return 0;
}

char *cli_render(const char *cmd, const lmx_tokenizer *tok, const cJSON *msgs, bool add_gen, bool cont,
                 const char *template_cfg) {
    char *js = cJSON_PrintUnformatted(msgs);
    char *text = NULL;
    lmx_status s = js ? lmx_apply_chat_template(tok, js, cont ? false : add_gen, template_cfg, &text) : LMX_ERR_NOMEM;
    free(js);
    if (s) {
        cli_lib_fail(cmd);
        return NULL;
    }
    if (cont) {
        const cJSON *last = cJSON_GetArrayItem(msgs, cJSON_GetArraySize(msgs) - 1);
        const cJSON *c = cJSON_GetObjectItem(last, "content");
        if (continue_final(cmd, text, cJSON_IsString(c) ? c->valuestring : "")) {
            lmx_free(text);
            return NULL;
        }
    }
    return text;
}
