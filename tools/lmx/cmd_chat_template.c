/* cmd_chat_template.c - `lmx chat-template`: renders a chat template over a
 * messages file and prints the text exactly (no trailing newline added). */
#include "chat/chat.h"
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: lmx chat-template (--model PATH | --template FILE) --messages FILE.json\n"
            "                         [--add-generation-prompt] [--chat-template-config JSON]\n"
            "                         [--bos-token STR] [--eos-token STR]\n\n"
            "Renders the chat template as transformers' apply_chat_template(tokenize=False) does.\n"
            "  --model PATH               model folder, tokenizer.json or .gguf (its chat template)\n"
            "  --template FILE            a Jinja template file instead of the model's (with --model:\n"
            "                             the model's BOS/EOS and think-marker default still apply)\n"
            "  --messages FILE.json       a JSON array of {\"role\", \"content\", ...} messages\n"
            "  --add-generation-prompt    append the assistant turn header\n"
            "  --chat-template-config J   JSON object of extra variables (tools, enable_thinking, ...)\n"
            "  --bos-token/--eos-token    bos_token / eos_token for --template without --model\n");
}

static char *read_all(const char *cmd, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        cli_fail(cmd, "%s: cannot open", path);
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *b = malloc(cap);
    size_t r;
    while (b && (r = fread(b + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (cap - n - 1 == 0) {
            char *nb = realloc(b, cap *= 2);
            if (!nb) {
                free(b);
                b = NULL;
            }
            b = nb;
        }
    }
    fclose(f);
    if (!b) {
        cli_fail(cmd, "%s: out of memory", path);
        return NULL;
    }
    b[n] = 0;
    return b;
}

int cmd_chat_template(int argc, char **argv) {
    cli_args a;
    cli_init(&a, argc, argv);
    const char *model = NULL, *tfile = NULL, *mfile = NULL, *config = NULL, *bos = NULL, *eos = NULL, *f;
    bool agp = false;
    while ((f = cli_next(&a))) {
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(f, "--model")) model = cli_value(&a, f);
        else if (!strcmp(f, "--template")) tfile = cli_value(&a, f);
        else if (!strcmp(f, "--messages")) mfile = cli_value(&a, f);
        else if (!strcmp(f, "--chat-template-config")) config = cli_value(&a, f);
        else if (!strcmp(f, "--bos-token")) bos = cli_value(&a, f);
        else if (!strcmp(f, "--eos-token")) eos = cli_value(&a, f);
        else if (!strcmp(f, "--add-generation-prompt")) agp = true;
        else return cli_unknown(a.cmd, f);
        if (a.error) return 2;
    }
    if (!mfile) {
        cli_fail(a.cmd, "--messages is required");
        return 2;
    }
    if (!model && !tfile) model = cli_default_model();
    char *msgs = read_all(a.cmd, mfile);
    if (!msgs) return 1;
    char *tmpl = NULL, *out = NULL;
    lmx_tokenizer *tok = NULL;
    lmx_status s = LMX_OK;
    if (tfile && !(tmpl = read_all(a.cmd, tfile))) {
        free(msgs);
        return 1;
    }
    if (model && (s = lmx_tokenizer_load(model, &tok)) != LMX_OK) goto done;
    if (tmpl && tok) {
        s = lmx_chat_apply_template_tok(tok, tmpl, msgs, agp, config, &out);
    } else if (tmpl) {
        lmx_chat_inputs in = {.messages_json = msgs, .extra_json = config, .add_generation_prompt = agp,
                              .bos_token = bos, .eos_token = eos};
        s = lmx_chat_apply_template(tmpl, &in, &out);
    } else {
        s = lmx_apply_chat_template(tok, msgs, agp, config, &out);
    }
done:
    free(msgs);
    free(tmpl);
    if (tok) lmx_tokenizer_free(tok);
    if (s != LMX_OK) return cli_lib_fail(a.cmd);
    fwrite(out, 1, strlen(out), stdout);
    fflush(stdout);
    lmx_free(out);
    return 0;
}
