/*
 * cli.h - shared helpers for the lmx command-line tool.
 *
 * Each subcommand lives in its own cmd_<name>.c and exports
 * `int cmd_<name>(int argc, char **argv)` (argv[0] is the subcommand name),
 * registered in the table in main.c. The CLI is the only code that exits; it
 * talks to the library through include/lmx.h, plus internal headers only where
 * a command is a thin view of an internal module.
 *
 * Flag parsing: mlx-lm style long flags ("--max-tokens 10" and
 * "--max-tokens=10"). Numbers are range-checked; a bad value prints
 * "lmx <cmd>: --flag: <problem>" and returns exit code 2.
 */
#ifndef LMX_CLI_H
#define LMX_CLI_H

#include "lmx.h"

#include <stdbool.h>
#include <stdint.h>

/* Iterates argv. For each flag, cli_next() returns its name ("--temp"), and
 * cli_value() fetches its value (the next arg or the part after '='). */
typedef struct cli_args {
    int argc, i;
    char **argv;
    const char *cmd;
    const char *inline_val; /* value after '=' */
    bool error;
} cli_args;

void cli_init(cli_args *a, int argc, char **argv);
/* Returns the next flag or positional argument, NULL at the end. */
const char *cli_next(cli_args *a);
/* The value of the current flag; prints an error and returns NULL if missing. */
const char *cli_value(cli_args *a, const char *flag);
bool cli_int(cli_args *a, const char *flag, long long lo, long long hi, long long *out);
bool cli_float(cli_args *a, const char *flag, double lo, double hi, double *out);
/* The sampling and length flags shared by generate and chat (mlx-lm names):
 * --max-tokens/-m --temp --top-p --top-k --min-p --min-tokens-to-keep
 * --repetition-penalty --repetition-context-size --presence-penalty
 * --frequency-penalty --xtc-probability --xtc-threshold --seed
 * --prefill-step-size. Returns false when f is not one of them; range errors
 * set a->error. */
bool cli_sampling_flag(cli_args *a, const char *f, lmx_generate_options *o);
/* Loads a model with the common --threads / --device flags (device NULL =
 * the library default, "auto"); model NULL = the bundled default. Returns the
 * library status; the caller prints it with cli_lib_fail. */
lmx_status cli_load_model(const char *model, long long threads, const char *device, bool no_tokenizer,
                          lmx_model **out);
/* The same with --adapter-path (NULL = none): LoRA/DoRA/full adapters applied. */
lmx_status cli_load_model_adapters(const char *model, const char *adapter_path, long long threads, const char *device,
                                   bool no_tokenizer, lmx_model **out);
/* Parses "1,2,3" into a malloc'ed id array. */
bool cli_ids(const char *cmd, const char *flag, const char *s, int32_t **ids, size_t *n);

/* Prints "lmx <cmd>: <message>" to stderr. */
void cli_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints "lmx <cmd>: <lmx_last_error()>" and returns 1. */
int cli_lib_fail(const char *cmd);
/* Unknown flag: prints an error pointing at --help; returns 2. */
int cli_unknown(const char *cmd, const char *flag);

/* The model used when --model is absent: $LMX_DEFAULT_MODEL, else the
 * stories260K.gguf bundled in the source tree (models/). */
const char *cli_default_model(void);

/* cli_prompt.c: prompts as mlx-lm reads them. */
typedef struct cJSON cJSON;
/* Turns the two-character escapes \n and \t into real characters. */
void cli_unescape(char *s);
/* All of stdin, malloc'ed (NULL when out of memory). */
char *cli_read_stdin(void);
/* Appends {"role", "content"} to a JSON array; returns the new object. */
cJSON *cli_message(cJSON *msgs, const char *role, const char *content);
/* The tokenizer's chat template over msgs (add_generation_prompt, or
 * transformers' continue_final_message when cont); prints the error and
 * returns NULL on failure. Result freed with lmx_free. */
char *cli_render(const char *cmd, const lmx_tokenizer *tok, const cJSON *msgs, bool add_gen, bool cont,
                 const char *template_cfg);

/* cmd_generate_batch.c: `lmx generate --prompts-file`. build turns one
 * prompt's text into token ids (0 = ok; else an exit code, error printed). */
typedef int (*cli_prompt_fn)(const char *text, int32_t **ids, size_t *n, void *ctx);
int cli_generate_batch(const char *cmd, lmx_model *m, const char *path, const lmx_generate_options *o, int batch,
                       bool verbose, cli_prompt_fn build, void *ctx);

/* Subcommands. */
int cmd_generate(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_chat_template(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_cache_prompt(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_fuse(int argc, char **argv);
int cmd_lora(int argc, char **argv);

#endif
