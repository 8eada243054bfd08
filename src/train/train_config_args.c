/*
 * train_config_args.c - `lmx lora` flags parsed as mlx_lm.lora's argparse
 * parser (Python 3.11 argparse) parses them: every dest present (None when
 * not given, except clear_cache_threshold = 0 and trust_remote_code =
 * False, argparse defaults that a YAML file therefore cannot override),
 * `--opt value` / `--opt=value`, unambiguous prefixes ("--learn"), `-c FILE`
 * / `-cFILE`, a value that looks like an option refused ("expected one
 * argument") unless it is a negative number, Python's int()/float() rules,
 * choices, and the unrecognized arguments listed together.
 */
#include "train/train_config.h"

#include <ctype.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { A_STR, A_INT, A_FLOAT, A_TRUE, A_SIZE, A_CHOICE } arg_kind;

typedef struct {
    const char *flag, *dest;
    arg_kind kind;
    const char *choices; /* A_CHOICE: comma-separated */
} arg_def;

/* In add_argument order (ambiguity messages list them in this order). */
static const arg_def ARGS[] = {
    {"--model", "model", A_STR, NULL},
    {"--train", "train", A_TRUE, NULL},
    {"--data", "data", A_STR, NULL},
    {"--fine-tune-type", "fine_tune_type", A_CHOICE, "lora,dora,full"},
    {"--optimizer", "optimizer", A_CHOICE, "adam,adamw,muon,sgd,adafactor"},
    {"--mask-prompt", "mask_prompt", A_TRUE, NULL},
    {"--num-layers", "num_layers", A_INT, NULL},
    {"--batch-size", "batch_size", A_INT, NULL},
    {"--iters", "iters", A_INT, NULL},
    {"--val-batches", "val_batches", A_INT, NULL},
    {"--learning-rate", "learning_rate", A_FLOAT, NULL},
    {"--steps-per-report", "steps_per_report", A_INT, NULL},
    {"--steps-per-eval", "steps_per_eval", A_INT, NULL},
    {"--grad-accumulation-steps", "grad_accumulation_steps", A_INT, NULL},
    {"--resume-adapter-file", "resume_adapter_file", A_STR, NULL},
    {"--adapter-path", "adapter_path", A_STR, NULL},
    {"--save-every", "save_every", A_INT, NULL},
    {"--test", "test", A_TRUE, NULL},
    {"--test-batches", "test_batches", A_INT, NULL},
    {"--max-seq-length", "max_seq_length", A_INT, NULL},
    {"--config", "config", A_STR, NULL},
    {"--grad-checkpoint", "grad_checkpoint", A_TRUE, NULL},
    {"--clear-cache-threshold", "clear_cache_threshold", A_SIZE, NULL},
    {"--report-to", "report_to", A_STR, NULL},
    {"--project-name", "project_name", A_STR, NULL},
    {"--seed", "seed", A_INT, NULL},
    {"--trust-remote-code", "trust_remote_code", A_TRUE, NULL},
};
#define N_ARGS ((int)(sizeof ARGS / sizeof *ARGS))

/* int(): surrounding whitespace, a sign, digits with single underscores
 * between them. */
static bool py_int(const char *s, int64_t *out) {
    while (isspace((unsigned char)*s)) s++;
    bool neg = false;
    if (*s == '+' || *s == '-') neg = *s++ == '-';
    if (!isdigit((unsigned char)*s)) return false;
    int64_t v = 0;
    for (; *s; s++) {
        if (*s == '_' && isdigit((unsigned char)s[1]) && isdigit((unsigned char)s[-1])) continue;
        if (!isdigit((unsigned char)*s)) break;
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, *s - '0', &v)) return false;
    }
    while (isspace((unsigned char)*s)) s++;
    if (*s) return false;
    *out = neg ? -v : v;
    return true;
}

/* float(): decimal forms (underscores between digits), inf/infinity/nan. */
static bool py_float(const char *s, double *out) {
    char buf[256];
    size_t o = 0;
    while (isspace((unsigned char)*s)) s++;
    for (const char *p = s; *p && o + 1 < sizeof buf; p++) {
        if (*p == '_' && p > s && isdigit((unsigned char)p[-1]) && isdigit((unsigned char)p[1])) continue;
        if (*p == 'x' || *p == 'X' || *p == 'p' || *p == 'P') return false; /* no hex floats in Python's float() */
        buf[o++] = *p;
    }
    while (o && isspace((unsigned char)buf[o - 1])) o--;
    buf[o] = 0;
    if (!o) return false;
    char *end;
    double v = strtod(buf, &end);
    if (*end) return false;
    const char *q = buf + (buf[0] == '+' || buf[0] == '-');
    if (isalpha((unsigned char)*q) && strcasecmp(q, "inf") != 0 && strcasecmp(q, "infinity") != 0 && strcasecmp(q, "nan") != 0)
        return false;
    *out = v;
    return true;
}

/* mlx_lm.utils._parse_size: leading digits and dots as a Decimal, then a
 * unit among "", M, G, MB, GB (case-insensitive, stripped). */
static bool parse_size(const char *x, int64_t *out) {
    size_t split = 0;
    while (x[split] && (isdigit((unsigned char)x[split]) || x[split] == '.')) split++;
    char digits[64];
    if (split == 0 || split >= sizeof digits) return false;
    memcpy(digits, x, split);
    digits[split] = 0;
    if (strchr(digits, '.') != strrchr(digits, '.') || strcmp(digits, ".") == 0) return false;
    const char *u = x + split;
    while (isspace((unsigned char)*u)) u++;
    char unit[8] = {0};
    size_t n = 0;
    while (u[n] && n < sizeof unit - 1) unit[n] = (char)toupper((unsigned char)u[n]), n++;
    while (n && isspace((unsigned char)unit[n - 1])) unit[--n] = 0;
    if (u[n] && !isspace((unsigned char)u[n])) return false;
    double mult = strcmp(unit, "") == 0 ? 1 : (strcmp(unit, "M") == 0 || strcmp(unit, "MB") == 0) ? 1e6
                : (strcmp(unit, "G") == 0 || strcmp(unit, "GB") == 0) ? 1e9 : -1;
    if (mult < 0) return false;
    /* int(Decimal * mult) truncates toward zero; integral parts are exact */
    char *dot = strchr(digits, '.');
    int64_t ip = strtoll(digits, NULL, 10), m = (int64_t)mult, frac = 0;
    if (dot) {
        int64_t scale = 1;
        for (const char *p = dot + 1; *p && scale < m; p++) frac = frac * 10 + (*p - '0'), scale *= 10;
        frac = frac * (m / scale);
    }
    *out = ip * m + frac;
    return true;
}

static bool looks_negative_number(const char *s) {
    regex_t re;
    if (regcomp(&re, "^-[0-9]+$|^-[0-9]*\\.[0-9]+$", REG_EXTENDED | REG_NOSUB) != 0) return false;
    bool m = regexec(&re, s, 0, NULL, 0) == 0;
    regfree(&re);
    return m;
}

/* argparse's classification of a value candidate: an option-like string
 * ('-x...' that is not a negative number, '-' alone, or containing a space)
 * cannot be an option's argument. */
static bool is_option_like(const char *s) {
    if (s[0] != '-' || s[1] == 0) return false;
    if (looks_negative_number(s)) return false;
    if (strchr(s, ' ')) return false;
    return true;
}

static int config_index(void) {
    for (int k = 0; k < N_ARGS; k++)
        if (strcmp(ARGS[k].dest, "config") == 0) return k;
    return -1;
}

enum { FIND_NONE = -1, FIND_AMBIGUOUS = -2, FIND_HELP = -3 };

/* Exact match, then unique prefix of a --long option, in argparse's
 * option order (-h/--help first). */
static int find_arg(const char *opt, char *amb, size_t cap) {
    if (strcmp(opt, "-h") == 0 || strcmp(opt, "--help") == 0) return FIND_HELP;
    if (strcmp(opt, "-c") == 0) return config_index();
    for (int k = 0; k < N_ARGS; k++)
        if (strcmp(opt, ARGS[k].flag) == 0) return k;
    if (strncmp(opt, "--", 2) != 0 || opt[2] == 0) return FIND_NONE;
    int found = FIND_NONE, n = 0;
    size_t len = strlen(opt), o = 0;
    amb[0] = 0;
    if (strncmp(opt, "--help", len) == 0) {
        found = FIND_HELP;
        o += (size_t)snprintf(amb, cap, "--help");
        n++;
    }
    for (int k = 0; k < N_ARGS; k++) {
        if (strncmp(opt, ARGS[k].flag, len) == 0) {
            found = k;
            o += (size_t)snprintf(amb + o, o < cap ? cap - o : 0, "%s%s", n ? ", " : "", ARGS[k].flag);
            n++;
        }
    }
    return n > 1 ? FIND_AMBIGUOUS : found;
}

static lmx_status set_value(lmx_pyval *ns, const arg_def *a, const char *v) {
    lmx_pyval *x = NULL;
    int64_t i;
    double f;
    switch (a->kind) {
    case A_STR: x = lmx_py_str(v); break;
    case A_INT:
        if (!py_int(v, &i)) return lmx_err(LMX_ERR_INVALID_ARG, "lora: argument %s: invalid int value: '%s'", a->flag, v);
        x = lmx_py_int(i);
        break;
    case A_FLOAT:
        if (!py_float(v, &f)) return lmx_err(LMX_ERR_INVALID_ARG, "lora: argument %s: invalid float value: '%s'", a->flag, v);
        x = lmx_py_float(f);
        break;
    case A_SIZE:
        if (!parse_size(v, &i))
            return lmx_err(LMX_ERR_INVALID_ARG, "lora: argument %s: invalid _parse_size value: '%s'", a->flag, v);
        x = lmx_py_int(i);
        break;
    case A_CHOICE: {
        size_t n = strlen(v);
        const char *c = a->choices;
        bool ok = false;
        while (*c && !ok) {
            size_t cl = strcspn(c, ",");
            ok = cl == n && strncmp(c, v, n) == 0;
            c += cl + (c[cl] == ',');
        }
        if (!ok) {
            char list[128];
            size_t o = 0;
            for (c = a->choices; *c;) {
                size_t cl = strcspn(c, ",");
                o += (size_t)snprintf(list + o, sizeof list - o, "%s'%.*s'", o ? ", " : "", (int)cl, c);
                c += cl + (c[cl] == ',');
            }
            return lmx_err(LMX_ERR_INVALID_ARG, "lora: argument %s: invalid choice: '%s' (choose from %s)", a->flag, v, list);
        }
        x = lmx_py_str(v);
        break;
    }
    case A_TRUE: x = lmx_py_bool(true); break;
    }
    if (!x || !lmx_py_dict_set(ns, a->dest, x)) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    return LMX_OK;
}

lmx_status lmx_train_args_parse(int argc, char **argv, lmx_pyval *ns) {
    for (int k = 0; k < N_ARGS; k++) {
        lmx_pyval *d = ARGS[k].kind == A_SIZE ? lmx_py_int(0)
                     : strcmp(ARGS[k].dest, "trust_remote_code") == 0 ? lmx_py_bool(false) : lmx_py_none();
        if (!lmx_py_dict_set(ns, ARGS[k].dest, d)) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    }
    char extras[512] = "";
    size_t eo = 0;
    bool only_positional = false;
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        if (only_positional || !is_option_like(s)) {
            if (!only_positional && strcmp(s, "--") == 0) {
                only_positional = true;
                continue;
            }
            eo += (size_t)snprintf(extras + eo, eo < sizeof extras ? sizeof extras - eo : 0, "%s%s", eo ? " " : "", s);
            continue;
        }
        if (strcmp(s, "--") == 0) {
            only_positional = true;
            continue;
        }
        char opt[128];
        const char *explicit_arg = NULL;
        const char *eq = strchr(s, '=');
        size_t ol = eq ? (size_t)(eq - s) : strlen(s);
        if (ol >= sizeof opt) ol = sizeof opt - 1;
        memcpy(opt, s, ol);
        opt[ol] = 0;
        if (eq) explicit_arg = eq + 1;
        if (!eq && s[0] == '-' && s[1] == 'c' && s[2]) { /* -cFILE */
            strcpy(opt, "-c");
            explicit_arg = s + 2;
        }
        char amb[512];
        int k = find_arg(opt, amb, sizeof amb);
        if (k == FIND_AMBIGUOUS) return lmx_err(LMX_ERR_INVALID_ARG, "lora: ambiguous option: %s could match %s", opt, amb);
        if (k == FIND_HELP) return lmx_err(LMX_ERR_ABORTED, "lora: help requested");
        if (k < 0) {
            eo += (size_t)snprintf(extras + eo, eo < sizeof extras ? sizeof extras - eo : 0, "%s%s", eo ? " " : "", s);
            continue;
        }
        const arg_def *a = &ARGS[k];
        const char *shown = k == config_index() ? "-c/--config" : a->flag;
        if (a->kind == A_TRUE) {
            if (explicit_arg)
                return lmx_err(LMX_ERR_INVALID_ARG, "lora: argument %s: ignored explicit argument '%s'", shown, explicit_arg);
            LMX_TRY(set_value(ns, a, NULL));
            continue;
        }
        const char *v = explicit_arg;
        if (!v) {
            if (i + 1 >= argc || is_option_like(argv[i + 1]) || strcmp(argv[i + 1], "--") == 0)
                return lmx_err(LMX_ERR_INVALID_ARG, "lora: argument %s: expected one argument", shown);
            v = argv[++i];
        }
        LMX_TRY(set_value(ns, a, v));
    }
    if (eo) return lmx_err(LMX_ERR_INVALID_ARG, "lora: unrecognized arguments: %s", extras);
    return LMX_OK;
}
