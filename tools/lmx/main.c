/* main.c - `lmx <command> [flags]`: dispatches to cmd_*.c. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} command;

static const command commands[] = {
    {"generate", cmd_generate, "generate text from a prompt (streams, mlx-lm stats)"},
    {"chat", cmd_chat, "interactive chat REPL (history in the KV cache; q quits, r resets, h helps)"},
    {"cache-prompt", cmd_cache_prompt, "prefill a prompt once and save its KV cache (mlx_lm.cache_prompt)"},
    {"logits", cmd_logits, "write the f32 logits of every position to a safetensors file"},
    {"tokenize", cmd_tokenize, "encode text (or a jsonl file of strings) to token ids"},
    {"detokenize", cmd_detokenize, "decode token ids to text"},
    {"chat-template", cmd_chat_template, "render a model's chat template over a messages file"},
    {"convert", cmd_convert, "convert/quantize a model folder to MLX format (mlx_lm.convert)"},
    {"fuse", cmd_fuse, "fuse LoRA/DoRA/full adapters into a model folder (mlx_lm.fuse)"},
    {"lora", cmd_lora, "LoRA/DoRA/full fine-tuning on jsonl data (mlx_lm.lora; CPU or CUDA)"},
    {"perplexity", cmd_perplexity, "perplexity of a model on a text or jsonl file (mlx_lm.perplexity)"},
    {"bench", cmd_bench, "benchmark prompt and generation speed (mlx_lm.benchmark's output)"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: lmx <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(f, "  %-14s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\n`lmx <command> --help` lists a command's options. `lmx --version` prints the version.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("lmx %s\n", lmx_version());
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "lmx: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
