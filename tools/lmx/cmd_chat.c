/* cmd_chat.c - `lmx chat` (mlx_lm.chat): an interactive REPL.
 *
 * As mlx-lm: one KV cache persists across turns and each turn templates only
 * the new messages ([system] + user, with the generation prompt) and
 * prefills them after what the cache holds; `q` quits, `r` resets (a new
 * cache), `h` prints help; a stats line follows each answer. Line editing and
 * history come from GNU readline when built with it and stdin is a terminal;
 * otherwise lines are read with fgets (pipes, scripts), and end of input
 * quits. A line ending in '\' continues on the next line (multi-line input). */
#include "cli.h"

#include "base/base.h" /* lmx_peak_rss_bytes */

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef LMX_HAVE_READLINE
#include <readline/history.h>
#include <readline/readline.h>
#endif

static const char *usage_text =
    "usage: lmx chat [--model PATH] [options]\n"
    "\n"
    "  --model PATH              model folder or .gguf (default: the bundled stories260K)\n"
    "  --system-prompt TEXT      system message, sent with every turn (as mlx_lm.chat)\n"
    "  -m, --max-tokens N        tokens per answer (default 256)\n"
    "  --temp T                  sampling temperature (default 0.0)\n"
    "  --top-p P                 nucleus sampling (default 1.0)\n"
    "  --xtc-probability P       (default 0.0)\n"
    "  --xtc-threshold T         (default 0.1)\n"
    "  --seed S                  (default 0)\n"
    "  --max-kv-size N           rotating KV cache of N tokens (keeps the first 4)\n"
    "  --prefill-step-size N     prompt chunk size (default 2048)\n"
    "  --adapter-path PATH       LoRA/DoRA/full adapters (mlx_lm.lora's folder); runs on the CPU\n"
    "  --threads N               CPU threads (default: one per core)\n"
    "  --device cpu|cuda|auto    (default auto: cuda when a GPU is present)\n"
    "\n"
    "At the prompt: q quits, r resets the conversation, h shows help; end a line\n"
    "with '\\' to continue it on the next one.\n";

static void say_help(void) { printf("  commands    q exit   r reset   h help\n"); }

/* One logical input line (continuations joined with '\n'), malloc'ed; NULL
 * at end of input. */
static char *read_line(bool tty) {
    char *acc = NULL;
    size_t len = 0;
    for (;;) {
        char *line = NULL;
        const char *prompt = !tty ? "" : acc ? "… " : "› ";
#ifdef LMX_HAVE_READLINE
        if (tty) {
            line = readline(prompt);
        } else
#endif
        {
            if (tty) {
                fputs(prompt, stdout);
                fflush(stdout);
            }
            size_t cap = 0;
            ssize_t n = getline(&line, &cap, stdin);
            if (n < 0) {
                free(line);
                line = NULL;
            } else if (n > 0 && line[n - 1] == '\n') {
                line[n - 1] = 0;
                if (n > 1 && line[n - 2] == '\r') line[n - 2] = 0;
            }
        }
        if (!line) return acc; /* EOF: what was gathered, or NULL */
        size_t l = strlen(line);
        bool more = l > 0 && line[l - 1] == '\\';
        if (more) line[--l] = 0;
        char *na = realloc(acc, len + l + 2);
        if (!na) {
            free(line);
            free(acc);
            return NULL;
        }
        acc = na;
        if (len) acc[len++] = '\n';
        memcpy(acc + len, line, l + 1);
        len += l;
        free(line);
        if (!more) break;
    }
#ifdef LMX_HAVE_READLINE
    if (tty && *acc) add_history(acc);
#endif
    return acc;
}

typedef struct {
    lmx_response last;
    bool got;
} turn_state;

static int on_text(const lmx_response *r, void *user) {
    turn_state *t = user;
    if (r->text_len) {
        fwrite(r->text, 1, r->text_len, stdout);
        fflush(stdout);
    }
    t->last = *r;
    t->got = true;
    return 0;
}

/* This turn's new tokens: the template over [system] + user with the
 * generation prompt (mlx_lm.chat), or the raw text (BOS on the first turn)
 * for a model without a chat template. */
static int turn_tokens(const lmx_tokenizer *tok, const char *system, const char *query, bool first,
                       int32_t **ids, size_t *n) {
    if (!lmx_tokenizer_has_chat_template(tok))
        return lmx_tokenize(tok, query, strlen(query), first, ids, n) ? cli_lib_fail("chat") : 0;
    cJSON *msgs = cJSON_CreateArray();
    if (system) cli_message(msgs, "system", system);
    cli_message(msgs, "user", query);
    char *text = cli_render("chat", tok, msgs, true, false, NULL);
    cJSON_Delete(msgs);
    if (!text) return 1;
    lmx_status s = lmx_tokenize(tok, text, strlen(text), false, ids, n);
    lmx_free(text);
    return s ? cli_lib_fail("chat") : 0;
}

int cmd_chat(int argc, char **argv) {
    const char *cmd = "chat";
    cli_args a;
    cli_init(&a, argc, argv);
    const char *model = NULL, *system = NULL, *device = NULL, *adapter_path = NULL;
    lmx_generate_options o;
    lmx_generate_options_init(&o);
    o.max_tokens = 256;
    o.has_seed = true; /* mlx_lm.chat seeds with 0 */
    lmx_cache_options co;
    lmx_cache_options_init(&co);
    long long threads = 0;
    const char *f;
    while ((f = cli_next(&a))) {
        long long iv;
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            fputs(usage_text, stdout);
            return 0;
        } else if (cli_sampling_flag(&a, f, &o)) {
            /* handled (range errors set a.error) */
        } else if (!strcmp(f, "--model")) {
            model = cli_value(&a, f);
        } else if (!strcmp(f, "--system-prompt")) {
            system = cli_value(&a, f);
        } else if (!strcmp(f, "--adapter-path")) {
            adapter_path = cli_value(&a, f);
        } else if (!strcmp(f, "--max-kv-size")) {
            if (cli_int(&a, f, 5, 1 << 30, &iv)) co.max_kv_size = (int)iv;
        } else if (!strcmp(f, "--threads")) {
            cli_int(&a, f, 1, 512, &threads);
        } else if (!strcmp(f, "--device")) {
            device = cli_value(&a, f);
        } else {
            return cli_unknown(cmd, f);
        }
        if (a.error) return 2;
    }
    if (!model) model = cli_default_model();
    lmx_model *m;
    if (cli_load_model_adapters(model, adapter_path, threads, device, false, &m)) return cli_lib_fail(cmd);
    const lmx_tokenizer *tok = lmx_model_tokenizer(m);
    if (!tok) {
        cli_fail(cmd, "%s: model has no tokenizer", model);
        lmx_model_free(m);
        return 1;
    }
    /* XTC never removes "\n" or EOS (mlx_lm.chat passes the same). */
    int32_t *nl = NULL, special[16];
    size_t n_nl = 0, n_special = 0;
    if (lmx_tokenize(tok, "\n", 1, false, &nl, &n_nl) == LMX_OK)
        for (size_t i = 0; i < n_nl && n_special < 8; i++) special[n_special++] = nl[i];
    lmx_free(nl);
    if (lmx_tokenizer_eos(tok) >= 0) special[n_special++] = lmx_tokenizer_eos(tok);
    o.xtc_special = special;
    o.n_xtc_special = n_special;

    bool tty = isatty(0);
    printf("lmx chat\n  model        %s\n  max tokens   %d\n", model, o.max_tokens);
    if (system) printf("  system       %.57s%s\n", system, strlen(system) > 60 ? "..." : "");
    say_help();
    fflush(stdout);
    lmx_cache *cache = NULL;
    int rc = 0;
    if (lmx_cache_new(m, &co, &cache)) rc = cli_lib_fail(cmd);
    char *q;
    while (!rc && (q = read_line(tty))) {
        if (!strcmp(q, "q")) {
            free(q);
            break;
        }
        if (!strcmp(q, "r")) {
            lmx_cache_free(cache);
            cache = NULL;
            if (lmx_cache_new(m, &co, &cache)) rc = cli_lib_fail(cmd);
            else printf("  reset context cleared\n");
        } else if (!strcmp(q, "h")) {
            say_help();
        } else if (*q) {
            int32_t *ids = NULL;
            size_t n = 0;
            if (turn_tokens(tok, system, q, lmx_cache_length(cache) == 0, &ids, &n) == 0 && n > 0) {
                turn_state t = {.got = false};
                o.cache = cache;
                lmx_status s = lmx_generate_stream(m, ids, n, &o, on_text, &t);
                printf("\n");
                if (s) {
                    /* e.g. a full context: report it, keep the session */
                    fprintf(stderr, "lmx chat: %s\n", lmx_last_error());
                } else if (t.got) {
                    printf("  %d tokens · %.1f tok/s · prompt %d tokens · %.1f tok/s · context %zu · peak %.2f GB\n",
                           t.last.generation_tokens, t.last.generation_tps, t.last.prompt_tokens, t.last.prompt_tps,
                           lmx_cache_length(cache), (double)lmx_peak_rss_bytes() / 1e9);
                }
            }
            lmx_free(ids);
        }
        fflush(stdout);
        free(q);
    }
    if (!rc) printf("bye\n");
    lmx_cache_free(cache);
    lmx_model_free(m);
    return rc;
}
