/* cmd_generate.c - `lmx generate`: mlx_lm.generate's flags, output and stats. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

static const char *usage_text =
    "usage: lmx generate [--model PATH] [--prompt TEXT|-] [options]\n"
    "\n"
    "  --model PATH              model folder (HF/MLX safetensors) or .gguf file\n"
    "                            (default: the bundled stories260K model)\n"
    "  -p, --prompt TEXT         prompt; '-' reads stdin; \\n and \\t are unescaped (default \"hello\")\n"
    "  -m, --max-tokens N        tokens to generate (default 100)\n"
    "  --temp T                  sampling temperature, 0 = greedy (default 0.0)\n"
    "  --top-p P                 nucleus sampling mass (default 1.0 = off)\n"
    "  --top-k K                 keep the K most likely tokens (default 0 = off)\n"
    "  --min-p P                 min-p filter (default 0.0 = off)\n"
    "  --min-tokens-to-keep N    tokens min-p always keeps (default 1)\n"
    "  --repetition-penalty R    penalise the last --repetition-context-size tokens (default off)\n"
    "  --repetition-context-size N  (default 20)\n"
    "  --presence-penalty P      subtract P once from recent tokens' logits (default off)\n"
    "  --frequency-penalty P     subtract P per recent occurrence (default off)\n"
    "  --xtc-probability P       chance per step of XTC sampling (default 0.0)\n"
    "  --xtc-threshold T         XTC probability threshold in [0, 0.5] (default 0.1)\n"
    "  --seed S                  random seed\n"
    "  --system-prompt TEXT      system message for the chat template\n"
    "  --ignore-chat-template    encode the raw prompt (with BOS)\n"
    "  --chat-template-config J  JSON object of extra template variables\n"
    "  --extra-eos-token T...    extra stop tokens (strings or ids)\n"
    "  --verbose BOOL            print separators and stats (default True)\n"
    "  --prefill-step-size N     prompt chunk size (default 2048)\n"
    "  --threads N               CPU threads (default: one per core)\n"
    "  --device cpu|cuda         (default cpu)\n";

/* mlx-lm turns the two-character escapes \n and \t into real characters. */
static void unescape(char *s) {
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

static char *read_stdin(void) {
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

typedef struct {
    bool verbose;
    size_t total;
} gen_state;

static int on_text(const lmx_response *r, void *user) {
    gen_state *g = user;
    if (r->text_len) {
        fwrite(r->text, 1, r->text_len, stdout);
        fflush(stdout);
        g->total += r->text_len;
    }
    if (r->finish_reason != LMX_FINISH_NONE && g->verbose) {
        printf("\n==========\n");
        if (g->total == 0) {
            printf("No text generated for this prompt\n");
            return 0;
        }
        printf("Prompt: %d tokens, %.3f tokens-per-sec\n", r->prompt_tokens, r->prompt_tps);
        printf("Generation: %d tokens, %.3f tokens-per-sec\n", r->generation_tokens, r->generation_tps);
        printf("Peak memory: %.3f GB\n", r->peak_memory_gb);
    } else if (r->finish_reason != LMX_FINISH_NONE) {
        printf("\n");
    }
    return 0;
}

static bool parse_bool(const char *v) { return strcasecmp(v, "false") && strcasecmp(v, "f"); }

/* Builds the prompt's token ids: chat template when the tokenizer has one. */
static int build_prompt(const char *cmd, const lmx_tokenizer *tok, const char *prompt, const char *system,
                        bool ignore_template, const char *template_cfg, int32_t **ids, size_t *n) {
    if (ignore_template || !lmx_tokenizer_has_chat_template(tok))
        return lmx_tokenize(tok, prompt, strlen(prompt), true, ids, n) ? cli_lib_fail(cmd) : 0;
    cJSON *msgs = cJSON_CreateArray();
    if (system) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "system");
        cJSON_AddStringToObject(m, "content", system);
        cJSON_AddItemToArray(msgs, m);
    }
    cJSON *u = cJSON_CreateObject();
    cJSON_AddStringToObject(u, "role", "user");
    cJSON_AddStringToObject(u, "content", prompt);
    cJSON_AddItemToArray(msgs, u);
    char *js = cJSON_PrintUnformatted(msgs);
    cJSON_Delete(msgs);
    char *text = NULL;
    lmx_status s = js ? lmx_apply_chat_template(tok, js, true, template_cfg, &text) : LMX_ERR_NOMEM;
    free(js);
    if (s) return cli_lib_fail(cmd);
    s = lmx_tokenize(tok, text, strlen(text), false, ids, n);
    lmx_free(text);
    return s ? cli_lib_fail(cmd) : 0;
}

int cmd_generate(int argc, char **argv) {
    const char *cmd = "generate";
    cli_args a;
    cli_init(&a, argc, argv);
    const char *model = NULL, *prompt_arg = "hello", *system = NULL, *template_cfg = NULL, *device = "cpu";
    bool ignore_template = false, verbose = true;
    lmx_generate_options o;
    lmx_generate_options_init(&o);
    long long threads = 0;
    const char *extra[64];
    int n_extra = 0;
    const char *f;
    while ((f = cli_next(&a))) {
        long long iv;
        double dv;
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            fputs(usage_text, stdout);
            return 0;
        } else if (!strcmp(f, "--model")) {
            model = cli_value(&a, f);
        } else if (!strcmp(f, "--prompt") || !strcmp(f, "-p")) {
            prompt_arg = cli_value(&a, f);
        } else if (!strcmp(f, "--max-tokens") || !strcmp(f, "-m")) {
            if (cli_int(&a, f, 0, 10000000, &iv)) o.max_tokens = (int)iv;
        } else if (!strcmp(f, "--temp")) {
            if (cli_float(&a, f, 0, 1e6, &dv)) o.temp = (float)dv;
        } else if (!strcmp(f, "--top-p")) {
            if (cli_float(&a, f, 0, 1, &dv)) o.top_p = (float)dv;
        } else if (!strcmp(f, "--top-k")) {
            if (cli_int(&a, f, 0, 100000000, &iv)) o.top_k = (int)iv;
        } else if (!strcmp(f, "--min-p")) {
            if (cli_float(&a, f, 0, 1, &dv)) o.min_p = (float)dv;
        } else if (!strcmp(f, "--min-tokens-to-keep")) {
            if (cli_int(&a, f, 1, 100000000, &iv)) o.min_tokens_to_keep = (int)iv;
        } else if (!strcmp(f, "--repetition-penalty")) {
            if (cli_float(&a, f, 0, 1e6, &dv)) o.repetition_penalty = (float)dv;
        } else if (!strcmp(f, "--repetition-context-size")) {
            if (cli_int(&a, f, 1, 1000000, &iv)) o.repetition_context_size = (int)iv;
        } else if (!strcmp(f, "--presence-penalty")) {
            if (cli_float(&a, f, -100, 100, &dv)) o.presence_penalty = (float)dv;
        } else if (!strcmp(f, "--frequency-penalty")) {
            if (cli_float(&a, f, -100, 100, &dv)) o.frequency_penalty = (float)dv;
        } else if (!strcmp(f, "--xtc-probability")) {
            if (cli_float(&a, f, 0, 1, &dv)) o.xtc_probability = (float)dv;
        } else if (!strcmp(f, "--xtc-threshold")) {
            if (cli_float(&a, f, 0, 0.5, &dv)) o.xtc_threshold = (float)dv;
        } else if (!strcmp(f, "--seed")) {
            if (cli_int(&a, f, 0, INT64_MAX, &iv)) {
                o.seed = (uint64_t)iv;
                o.has_seed = true;
            }
        } else if (!strcmp(f, "--system-prompt")) {
            system = cli_value(&a, f);
        } else if (!strcmp(f, "--ignore-chat-template")) {
            ignore_template = true;
        } else if (!strcmp(f, "--chat-template-config")) {
            template_cfg = cli_value(&a, f);
        } else if (!strcmp(f, "--verbose")) {
            const char *v = cli_value(&a, f);
            if (v) verbose = parse_bool(v);
        } else if (!strcmp(f, "--prefill-step-size")) {
            if (cli_int(&a, f, 1, 1 << 20, &iv)) o.prefill_step_size = (int)iv;
        } else if (!strcmp(f, "--threads")) {
            cli_int(&a, f, 1, 512, &threads);
        } else if (!strcmp(f, "--device")) {
            device = cli_value(&a, f);
        } else if (!strcmp(f, "--extra-eos-token")) {
            while (a.i < a.argc && a.argv[a.i][0] != '-' && n_extra < 64) extra[n_extra++] = a.argv[a.i++];
            if (n_extra == 0) {
                cli_fail(cmd, "--extra-eos-token: missing value");
                return 2;
            }
        } else {
            return cli_unknown(cmd, f);
        }
        if (a.error) return 2;
    }
    if (template_cfg) {
        cJSON *j = cJSON_Parse(template_cfg);
        bool ok = j && cJSON_IsObject(j);
        cJSON_Delete(j);
        if (!ok) {
            cli_fail(cmd, "--chat-template-config: not a JSON object");
            return 2;
        }
    }
    if (!model) model = cli_default_model();
    lmx_load_options lo;
    lmx_load_options_init(&lo);
    lo.n_threads = (int)threads;
    lo.device = device;
    lmx_model *m;
    if (lmx_load(model, &lo, &m)) return cli_lib_fail(cmd);
    const lmx_tokenizer *tok = lmx_model_tokenizer(m);
    int rc = 0;
    char *prompt = NULL;
    int32_t *ids = NULL, extra_ids[64];
    size_t n_ids = 0;
    if (!tok) {
        cli_fail(cmd, "%s: model has no tokenizer (tokenizer.json or GGUF vocabulary)", model);
        rc = 1;
        goto done;
    }
    for (int i = 0; i < n_extra; i++) {
        char *end;
        long v = strtol(extra[i], &end, 10);
        int32_t id = (*end == 0 && end != extra[i]) ? (int32_t)v : lmx_tokenizer_token_id(tok, extra[i]);
        if (id < 0 || id >= lmx_model_vocab_size(m)) {
            cli_fail(cmd, "--extra-eos-token: '%s' is not a token of this model", extra[i]);
            rc = 2;
            goto done;
        }
        extra_ids[i] = id;
    }
    o.extra_eos = extra_ids;
    o.n_extra_eos = (size_t)n_extra;
    /* XTC never removes "\n" or the end of text (mlx_lm.generate passes the same). */
    int32_t *nl_ids = NULL, xtc_special[80];
    size_t n_nl = 0, n_special = 0;
    if (lmx_tokenize(tok, "\n", 1, false, &nl_ids, &n_nl) == LMX_OK)
        for (size_t i = 0; i < n_nl && n_special < 8; i++) xtc_special[n_special++] = nl_ids[i];
    lmx_free(nl_ids);
    if (lmx_tokenizer_eos(tok) >= 0) xtc_special[n_special++] = lmx_tokenizer_eos(tok);
    for (int i = 0; i < n_extra; i++) xtc_special[n_special++] = extra_ids[i];
    o.xtc_special = xtc_special;
    o.n_xtc_special = n_special;
    prompt = !strcmp(prompt_arg, "-") ? read_stdin() : strdup(prompt_arg);
    if (!prompt) {
        cli_fail(cmd, "out of memory");
        rc = 1;
        goto done;
    }
    unescape(prompt);
    rc = build_prompt(cmd, tok, prompt, system, ignore_template, template_cfg, &ids, &n_ids);
    if (rc) goto done;
    gen_state g = {verbose, 0};
    if (verbose) printf("==========\n");
    if (lmx_generate_stream(m, ids, n_ids, &o, on_text, &g)) rc = cli_lib_fail(cmd);
done:
    lmx_free(ids);
    free(prompt);
    lmx_model_free(m);
    return rc;
}
