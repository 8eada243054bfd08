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
    "  --prefill-step-size N     prompt chunk size (default 2048; with --prompts-file also the\n"
    "                            prompt tokens per batched step)\n"
    "  --prefill-response TEXT   start of the assistant's answer (template continued, no generation prompt)\n"
    "  --max-kv-size N           rotating KV cache of N tokens (keeps the first 4)\n"
    "  --kv-bits B               quantize the KV cache to B bits (2,3,4,5,6,8)\n"
    "  --kv-group-size G         KV quantization group size (default 64)\n"
    "  --quantized-kv-start N    quantize once the cache holds N tokens (default 5000)\n"
    "  --prompt-cache-file FILE  continue from a saved prompt cache (lmx/mlx_lm cache-prompt)\n"
    "  --prompts-file FILE       one prompt per line (text, JSON string or {\"prompt\": ...}),\n"
    "                            generated together with continuous batching\n"
    "  --batch-size N            sequences decoded together with --prompts-file (default 32)\n"
    "  --adapter-path PATH       LoRA/DoRA/full adapters (mlx_lm.lora's folder); runs on the CPU\n"
    "  --draft-model PATH        speculative decoding with this draft model (same vocabulary)\n"
    "  --num-draft-tokens N      tokens the draft proposes per step (default 3)\n"
    "  --threads N               CPU threads (default: one per core)\n"
    "  --device cpu|cuda|auto    (default auto: cuda when a GPU is present)\n";

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
        if (r->draft_proposed > 0)
            printf("Draft acceptance: %d of %d tokens (%.1f%%)\n", r->draft_accepted, r->draft_proposed,
                   100.0 * r->draft_accepted / r->draft_proposed);
    } else if (r->finish_reason != LMX_FINISH_NONE) {
        printf("\n");
    }
    return 0;
}

static bool parse_bool(const char *v) { return strcasecmp(v, "false") && strcasecmp(v, "f"); }

/* Builds the prompt's token ids as mlx_lm.generate does: the chat template
 * when the tokenizer has one ([system] + user [+ assistant prefill,
 * continued]); with a prompt cache only the text from the user message's
 * position on (found by rendering "<query>" in its place) is encoded. */
static int build_prompt(const char *cmd, const lmx_tokenizer *tok, const char *prompt, const char *system,
                        const char *prefill, bool ignore_template, const char *template_cfg, bool cached,
                        int32_t **ids, size_t *n) {
    if (ignore_template || !lmx_tokenizer_has_chat_template(tok))
        return lmx_tokenize(tok, prompt, strlen(prompt), true, ids, n) ? cli_lib_fail(cmd) : 0;
    cJSON *msgs = cJSON_CreateArray();
    if (system) cli_message(msgs, "system", system);
    cJSON *last = cli_message(msgs, "user", prompt);
    if (prefill) last = cli_message(msgs, "assistant", prefill);
    char *text = cli_render(cmd, tok, msgs, !prefill, prefill != NULL, template_cfg), *test = NULL;
    int rc = text ? 0 : 1;
    const char *from = text;
    if (!rc && cached) {
        cJSON_ReplaceItemInObject(last, "content", cJSON_CreateString("<query>"));
        test = cli_render(cmd, tok, msgs, !prefill, prefill != NULL, NULL);
        const char *q = test ? strstr(test, "<query>") : NULL;
        if (test && !q) cli_fail(cmd, "the chat template does not show the user message ('<query>' not rendered)");
        if (!q) rc = 1;
        else if ((size_t)(q - test) <= strlen(text)) from = text + (q - test);
    }
    cJSON_Delete(msgs);
    if (!rc && lmx_tokenize(tok, from, strlen(from), false, ids, n)) rc = cli_lib_fail(cmd);
    lmx_free(text);
    lmx_free(test);
    return rc;
}

typedef struct {
    const char *cmd;
    const lmx_tokenizer *tok;
    const char *system, *prefill, *template_cfg;
    bool ignore_template;
} prompt_ctx;

static int build_one(const char *text, int32_t **ids, size_t *n, void *user) {
    prompt_ctx *c = user;
    return build_prompt(c->cmd, c->tok, text, c->system, c->prefill, c->ignore_template, c->template_cfg, false, ids,
                        n);
}

int cmd_generate(int argc, char **argv) {
    const char *cmd = "generate";
    cli_args a;
    cli_init(&a, argc, argv);
    const char *model = NULL, *prompt_arg = "hello", *system = NULL, *template_cfg = NULL, *device = NULL, *adapter_path = NULL;
    const char *prefill = NULL, *cache_file = NULL, *draft_path = NULL, *prompts_file = NULL;
    long long batch_size = 32;
    bool kv_bits_given = false;
    bool ignore_template = false, verbose = true;
    lmx_generate_options o;
    lmx_generate_options_init(&o);
    o.num_draft_tokens = 3; /* mlx_lm.generate's CLI default */
    long long threads = 0;
    const char *extra[64];
    int n_extra = 0;
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
        } else if (!strcmp(f, "--prompt") || !strcmp(f, "-p")) {
            prompt_arg = cli_value(&a, f);
        } else if (!strcmp(f, "--system-prompt")) {
            system = cli_value(&a, f);
        } else if (!strcmp(f, "--ignore-chat-template")) {
            ignore_template = true;
        } else if (!strcmp(f, "--chat-template-config")) {
            template_cfg = cli_value(&a, f);
        } else if (!strcmp(f, "--verbose")) {
            const char *v = cli_value(&a, f);
            if (v) verbose = parse_bool(v);
        } else if (!strcmp(f, "--prefill-response")) {
            prefill = cli_value(&a, f);
        } else if (!strcmp(f, "--prompts-file")) {
            prompts_file = cli_value(&a, f);
        } else if (!strcmp(f, "--batch-size")) {
            cli_int(&a, f, 1, 4096, &batch_size);
        } else if (!strcmp(f, "--draft-model")) {
            draft_path = cli_value(&a, f);
        } else if (!strcmp(f, "--adapter-path")) {
            adapter_path = cli_value(&a, f);
        } else if (!strcmp(f, "--num-draft-tokens")) {
            if (cli_int(&a, f, 1, 32, &iv)) o.num_draft_tokens = (int)iv;
        } else if (!strcmp(f, "--prompt-cache-file")) {
            cache_file = cli_value(&a, f);
        } else if (!strcmp(f, "--max-kv-size")) {
            if (cli_int(&a, f, 5, 1 << 30, &iv)) o.max_kv_size = (int)iv;
        } else if (!strcmp(f, "--kv-bits")) {
            kv_bits_given = true;
            if (cli_int(&a, f, 2, 8, &iv)) o.kv_bits = (int)iv;
        } else if (!strcmp(f, "--kv-group-size")) {
            if (cli_int(&a, f, 32, 128, &iv)) o.kv_group_size = (int)iv;
        } else if (!strcmp(f, "--quantized-kv-start")) {
            if (cli_int(&a, f, 0, 1 << 30, &iv)) o.quantized_kv_start = (int)iv;
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
    if (prompts_file && (cache_file || draft_path)) {
        cli_fail(cmd, "--prompts-file does not combine with --prompt-cache-file or --draft-model");
        return 2;
    }
    /* A prompt cache names its model; another --model is an error (mlx-lm). */
    char *cache_model = NULL;
    if (cache_file) {
        lmx_status ms = lmx_cache_file_metadata(cache_file, "model", &cache_model);
        if (ms && ms != LMX_ERR_NOT_FOUND) return cli_lib_fail(cmd);
        if (!cache_model || !*cache_model) { /* a cache saved without a model name: nothing to compare */
        } else if (!model) {
            model = cache_model;
        } else if (strcmp(model, cache_model)) {
            cli_fail(cmd, "Providing a different model (%s) than that used to create the prompt cache (%s) is an error.",
                     model, cache_model);
            lmx_free(cache_model);
            return 1;
        }
    }
    if (!model) model = cli_default_model();
    lmx_model *m;
    if (cli_load_model_adapters(model, adapter_path, threads, device, false, &m)) {
        lmx_free(cache_model);
        return cli_lib_fail(cmd);
    }
    const lmx_tokenizer *tok = lmx_model_tokenizer(m);
    int rc = 0;
    lmx_cache *cache = NULL;
    lmx_model *draft = NULL;
    char *prompt = NULL;
    int32_t *ids = NULL, extra_ids[64];
    size_t n_ids = 0;
    if (draft_path) {
        if (cli_load_model(draft_path, threads, device, true, &draft)) {
            rc = cli_lib_fail(cmd);
            goto done;
        }
        if (lmx_model_vocab_size(draft) != lmx_model_vocab_size(m)) {
            cli_fail(cmd, "Draft model tokenizer does not match model tokenizer (%d vs %d tokens).",
                     lmx_model_vocab_size(draft), lmx_model_vocab_size(m));
            rc = 1;
            goto done;
        }
        o.draft_model = draft;
    }
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
    if (cache_file) {
        if (lmx_cache_load(m, cache_file, &cache)) {
            rc = cli_lib_fail(cmd);
            goto done;
        }
        lmx_cache_options co;
        lmx_cache_get_options(cache, &co);
        if (co.kv_bits && ((kv_bits_given && o.kv_bits != co.kv_bits) || o.kv_group_size != co.kv_group_size)) {
            cli_fail(cmd, "--kv-bits/--kv-group-size (%d/%d) do not match the kv cache loaded from "
                          "--prompt-cache-file (%d/%d)", kv_bits_given ? o.kv_bits : co.kv_bits, o.kv_group_size,
                     co.kv_bits, co.kv_group_size);
            rc = 1;
            goto done;
        }
        if (!co.kv_bits && o.kv_bits &&
            lmx_cache_set_kv_bits(cache, o.kv_bits, o.kv_group_size, o.quantized_kv_start)) {
            rc = cli_lib_fail(cmd);
            goto done;
        }
        o.cache = cache;
    }
    if (prompts_file) {
        prompt_ctx pc = {cmd, tok, system, prefill, template_cfg, ignore_template};
        rc = cli_generate_batch(cmd, m, prompts_file, &o, (int)batch_size, verbose, build_one, &pc);
        goto done;
    }
    prompt = !strcmp(prompt_arg, "-") ? cli_read_stdin() : strdup(prompt_arg);
    if (!prompt) {
        cli_fail(cmd, "out of memory");
        rc = 1;
        goto done;
    }
    if (strcmp(prompt_arg, "-")) cli_unescape(prompt); /* mlx-lm: escapes in --prompt only, not stdin */
    rc = build_prompt(cmd, tok, prompt, system, prefill, ignore_template, template_cfg, cache != NULL, &ids, &n_ids);
    if (rc) goto done;
    gen_state g = {verbose, 0};
    if (verbose) printf("==========\n");
    if (lmx_generate_stream(m, ids, n_ids, &o, on_text, &g)) rc = cli_lib_fail(cmd);
done:
    lmx_free(ids);
    free(prompt);
    lmx_cache_free(cache);
    lmx_model_free(draft);
    lmx_model_free(m);
    lmx_free(cache_model);
    return rc;
}
