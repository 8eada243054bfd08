/* cmd_cache_prompt.c - `lmx cache-prompt` (mlx_lm.cache_prompt): runs a
 * prompt through the model once and saves the KV cache, for
 * `lmx generate --prompt-cache-file` to continue from. */
#include "cli.h"

#include "base/base.h" /* lmx_time_s, lmx_peak_rss_bytes */

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *usage_text =
    "usage: lmx cache-prompt --prompt TEXT|- --prompt-cache-file FILE [options]\n"
    "\n"
    "  --model PATH              model folder or .gguf (default: the bundled stories260K)\n"
    "  --prompt TEXT             prompt to cache; '-' reads stdin (required)\n"
    "  --prompt-cache-file FILE  where to save the cache (.safetensors, required)\n"
    "  --max-kv-size N           rotating KV cache of N tokens (keeps the first 4)\n"
    "  --kv-bits B               quantize the KV cache to B bits (2,3,4,5,6,8)\n"
    "  --kv-group-size G         KV quantization group size (default 64)\n"
    "  --quantized-kv-start N    quantize once the cache holds N tokens (default 5000)\n"
    "  --eos-token T             recorded in the tokenizer_config metadata\n"
    "  --prefill-step-size N     prompt chunk size (default 2048)\n"
    "  --adapter-path PATH       LoRA/DoRA/full adapters (mlx_lm.lora's folder); runs on the CPU\n"
    "  --threads N               CPU threads (default: one per core)\n"
    "  --device cpu|cuda|auto    (default auto: cuda when a GPU is present)\n";

typedef struct {
    double t0;
    size_t max_len;
} progress_state;

/* mlx_lm.cache_prompt's progress line, rewritten in place. */
static void on_progress(size_t done, size_t total, void *user) {
    (void)total;
    progress_state *p = user;
    double el = lmx_time_s() - p->t0;
    char msg[128];
    int n = snprintf(msg, sizeof msg, "\rProcessed %6zu tokens (%6.2f tok/s)", done, el > 0 ? done / el : 0.0);
    if ((size_t)n > p->max_len) p->max_len = (size_t)n;
    printf("%s%*s", msg, (int)(p->max_len - (size_t)n), "");
    fflush(stdout);
}

int cmd_cache_prompt(int argc, char **argv) {
    const char *cmd = "cache-prompt";
    cli_args a;
    cli_init(&a, argc, argv);
    const char *model = NULL, *prompt_arg = NULL, *file = NULL, *device = NULL, *eos = NULL, *adapter_path = NULL;
    lmx_cache_options co;
    lmx_cache_options_init(&co);
    long long threads = 0, step = 2048;
    const char *f;
    while ((f = cli_next(&a))) {
        long long iv;
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            fputs(usage_text, stdout);
            return 0;
        } else if (!strcmp(f, "--model")) {
            model = cli_value(&a, f);
        } else if (!strcmp(f, "--prompt") || !strcmp(f, "-p")) {
            prompt_arg = cli_value(&a, f);
        } else if (!strcmp(f, "--prompt-cache-file")) {
            file = cli_value(&a, f);
        } else if (!strcmp(f, "--max-kv-size")) {
            if (cli_int(&a, f, 5, 1 << 30, &iv)) co.max_kv_size = (int)iv;
        } else if (!strcmp(f, "--kv-bits")) {
            if (cli_int(&a, f, 2, 8, &iv)) co.kv_bits = (int)iv;
        } else if (!strcmp(f, "--kv-group-size")) {
            if (cli_int(&a, f, 32, 128, &iv)) co.kv_group_size = (int)iv;
        } else if (!strcmp(f, "--quantized-kv-start")) {
            if (cli_int(&a, f, 0, 1 << 30, &iv)) co.quantized_kv_start = (int)iv;
        } else if (!strcmp(f, "--eos-token")) {
            eos = cli_value(&a, f);
        } else if (!strcmp(f, "--adapter-path")) {
            adapter_path = cli_value(&a, f);
        } else if (!strcmp(f, "--prefill-step-size")) {
            cli_int(&a, f, 1, 1 << 20, &step);
        } else if (!strcmp(f, "--threads")) {
            cli_int(&a, f, 1, 512, &threads);
        } else if (!strcmp(f, "--device")) {
            device = cli_value(&a, f);
        } else {
            return cli_unknown(cmd, f);
        }
        if (a.error) return 2;
    }
    if (!file || !prompt_arg) {
        cli_fail(cmd, "--prompt and --prompt-cache-file are required (see lmx cache-prompt --help)");
        return 2;
    }
    if (!model) model = cli_default_model();
    lmx_model *m;
    if (cli_load_model_adapters(model, adapter_path, threads, device, false, &m)) return cli_lib_fail(cmd);
    const lmx_tokenizer *tok = lmx_model_tokenizer(m);
    int rc = 0;
    char *prompt = NULL, *text = NULL, *tc = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    lmx_cache *c = NULL;
    cJSON *msgs = NULL;
    if (!tok) {
        cli_fail(cmd, "%s: model has no tokenizer", model);
        rc = 1;
        goto done;
    }
    prompt = !strcmp(prompt_arg, "-") ? cli_read_stdin() : strdup(prompt_arg);
    if (!prompt) {
        cli_fail(cmd, "out of memory");
        rc = 1;
        goto done;
    }
    if (lmx_tokenizer_has_chat_template(tok)) {
        /* one user message, continued (no generation prompt): mlx_lm.cache_prompt */
        msgs = cJSON_CreateArray();
        cli_message(msgs, "user", prompt);
        text = cli_render(cmd, tok, msgs, false, true, NULL);
        if (!text || lmx_tokenize(tok, text, strlen(text), false, &ids, &n_ids)) rc = text ? cli_lib_fail(cmd) : 1;
    } else if (lmx_tokenize(tok, prompt, strlen(prompt), true, &ids, &n_ids)) {
        rc = cli_lib_fail(cmd);
    }
    if (rc) goto done;
    if (n_ids == 0) {
        cli_fail(cmd, "the prompt encodes to no tokens");
        rc = 1;
        goto done;
    }
    if (lmx_cache_new(m, &co, &c)) {
        rc = cli_lib_fail(cmd);
        goto done;
    }
    lmx_generate_options o;
    lmx_generate_options_init(&o);
    o.prefill_step_size = (int)step;
    progress_state ps = {lmx_time_s(), 0};
    o.progress = on_progress;
    o.progress_user = &ps;
    on_progress(0, n_ids, &ps);
    if (lmx_cache_prefill(m, c, ids, n_ids, &o)) {
        printf("\n");
        rc = cli_lib_fail(cmd);
        goto done;
    }
    printf("\nPeak memory: %.3f GB\nSaving...\n", (double)lmx_peak_rss_bytes() / 1e9);
    fflush(stdout);
    /* json.dumps(tokenizer_config) as mlx_lm.cache_prompt writes it */
    cJSON *cfg = cJSON_CreateObject();
    cJSON_AddFalseToObject(cfg, "trust_remote_code");
    if (eos) cJSON_AddStringToObject(cfg, "eos_token", eos);
    char *raw = cJSON_PrintUnformatted(cfg);
    cJSON_Delete(cfg);
    size_t cap = raw ? 2 * strlen(raw) + 1 : 1;
    tc = calloc(cap, 1);
    for (size_t i = 0, w = 0; raw && tc && raw[i]; i++) { /* ", " and ": " separators, outside strings */
        tc[w++] = raw[i];
        if ((raw[i] == ',' || raw[i] == ':') && raw[i + 1] != ' ') {
            bool in_str = false;
            for (size_t j = 0; j < i; j++)
                if (raw[j] == '"' && (j == 0 || raw[j - 1] != '\\')) in_str = !in_str;
            if (!in_str) tc[w++] = ' ';
        }
    }
    free(raw);
    const char *meta[] = {"model", model, "tokenizer_config", tc ? tc : "{}", NULL};
    if (lmx_cache_save(c, file, meta)) rc = cli_lib_fail(cmd);
done:
    cJSON_Delete(msgs);
    free(tc);
    lmx_free(text);
    lmx_free(ids);
    free(prompt);
    lmx_cache_free(c);
    lmx_model_free(m);
    return rc;
}
