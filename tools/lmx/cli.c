/* cli.c - flag parsing and error printing shared by the subcommands. */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void cli_init(cli_args *a, int argc, char **argv) {
    memset(a, 0, sizeof *a);
    a->argc = argc;
    a->argv = argv;
    a->cmd = argv[0];
    a->i = 1;
}

const char *cli_next(cli_args *a) {
    a->inline_val = NULL;
    if (a->i >= a->argc) return NULL;
    char *s = a->argv[a->i++];
    if (s[0] == '-' && s[1] == '-') {
        char *eq = strchr(s, '=');
        if (eq) {
            *eq = 0;
            a->inline_val = eq + 1;
        }
    }
    return s;
}

const char *cli_value(cli_args *a, const char *flag) {
    if (a->inline_val) return a->inline_val;
    if (a->i >= a->argc) {
        cli_fail(a->cmd, "%s: missing value", flag);
        a->error = true;
        return NULL;
    }
    return a->argv[a->i++];
}

bool cli_int(cli_args *a, const char *flag, long long lo, long long hi, long long *out) {
    const char *v = cli_value(a, flag);
    if (!v) return false;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end) {
        cli_fail(a->cmd, "%s: '%s' is not an integer", flag, v);
        a->error = true;
        return false;
    }
    if (x < lo || x > hi) {
        cli_fail(a->cmd, "%s: %lld is out of range [%lld, %lld]", flag, x, lo, hi);
        a->error = true;
        return false;
    }
    *out = x;
    return true;
}

bool cli_float(cli_args *a, const char *flag, double lo, double hi, double *out) {
    const char *v = cli_value(a, flag);
    if (!v) return false;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !isfinite(x)) {
        cli_fail(a->cmd, "%s: '%s' is not a number", flag, v);
        a->error = true;
        return false;
    }
    if (x < lo || x > hi) {
        cli_fail(a->cmd, "%s: %g is out of range [%g, %g]", flag, x, lo, hi);
        a->error = true;
        return false;
    }
    *out = x;
    return true;
}

bool cli_ids(const char *cmd, const char *flag, const char *s, int32_t **ids, size_t *n) {
    size_t cap = 16, k = 0;
    int32_t *v = malloc(cap * sizeof *v);
    const char *p = s;
    while (v && *p) {
        char *end;
        errno = 0;
        long long x = strtoll(p, &end, 10);
        if (errno || end == p || x < 0 || x > INT32_MAX) {
            cli_fail(cmd, "%s: bad token id list '%s'", flag, s);
            free(v);
            return false;
        }
        if (k == cap) {
            int32_t *nv = realloc(v, (cap *= 2) * sizeof *v);
            if (!nv) break;
            v = nv;
        }
        v[k++] = (int32_t)x;
        p = end;
        while (*p == ',' || *p == ' ') p++;
    }
    if (!v) return false;
    *ids = v;
    *n = k;
    return true;
}

void cli_fail(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "lmx %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

int cli_lib_fail(const char *cmd) {
    fprintf(stderr, "lmx %s: %s\n", cmd, lmx_last_error());
    return 1;
}

int cli_unknown(const char *cmd, const char *flag) {
    cli_fail(cmd, "unknown argument '%s' (see lmx %s --help)", flag, cmd);
    return 2;
}

const char *cli_default_model(void) {
    const char *env = getenv("LMX_DEFAULT_MODEL");
    if (env && *env) return env;
    return LMX_DEFAULT_MODEL_PATH;
}

bool cli_sampling_flag(cli_args *a, const char *f, lmx_generate_options *o) {
    long long iv;
    double dv;
    if (!strcmp(f, "--max-tokens") || !strcmp(f, "-m")) {
        if (cli_int(a, f, 0, 10000000, &iv)) o->max_tokens = (int)iv;
    } else if (!strcmp(f, "--temp")) {
        if (cli_float(a, f, 0, 1e6, &dv)) o->temp = (float)dv;
    } else if (!strcmp(f, "--top-p")) {
        if (cli_float(a, f, 0, 1, &dv)) o->top_p = (float)dv;
    } else if (!strcmp(f, "--top-k")) {
        if (cli_int(a, f, 0, 100000000, &iv)) o->top_k = (int)iv;
    } else if (!strcmp(f, "--min-p")) {
        if (cli_float(a, f, 0, 1, &dv)) o->min_p = (float)dv;
    } else if (!strcmp(f, "--min-tokens-to-keep")) {
        if (cli_int(a, f, 1, 100000000, &iv)) o->min_tokens_to_keep = (int)iv;
    } else if (!strcmp(f, "--repetition-penalty")) {
        if (cli_float(a, f, 0, 1e6, &dv)) o->repetition_penalty = (float)dv;
    } else if (!strcmp(f, "--repetition-context-size")) {
        if (cli_int(a, f, 1, 1000000, &iv)) o->repetition_context_size = (int)iv;
    } else if (!strcmp(f, "--presence-penalty")) {
        if (cli_float(a, f, -100, 100, &dv)) o->presence_penalty = (float)dv;
    } else if (!strcmp(f, "--frequency-penalty")) {
        if (cli_float(a, f, -100, 100, &dv)) o->frequency_penalty = (float)dv;
    } else if (!strcmp(f, "--xtc-probability")) {
        if (cli_float(a, f, 0, 1, &dv)) o->xtc_probability = (float)dv;
    } else if (!strcmp(f, "--xtc-threshold")) {
        if (cli_float(a, f, 0, 0.5, &dv)) o->xtc_threshold = (float)dv;
    } else if (!strcmp(f, "--seed")) {
        if (cli_int(a, f, 0, INT64_MAX, &iv)) {
            o->seed = (uint64_t)iv;
            o->has_seed = true;
        }
    } else if (!strcmp(f, "--prefill-step-size")) {
        if (cli_int(a, f, 1, 1 << 20, &iv)) o->prefill_step_size = (int)iv;
    } else {
        return false;
    }
    return true;
}

lmx_status cli_load_model(const char *model, long long threads, const char *device, bool no_tokenizer,
                          lmx_model **out) {
    return cli_load_model_adapters(model, NULL, threads, device, no_tokenizer, out);
}

lmx_status cli_load_model_adapters(const char *model, const char *adapter_path, long long threads, const char *device,
                                   bool no_tokenizer, lmx_model **out) {
    lmx_load_options lo;
    lmx_load_options_init(&lo);
    lo.n_threads = (int)threads;
    lo.no_tokenizer = no_tokenizer;
    lo.adapter_path = adapter_path;
    if (device) lo.device = device;
    return lmx_load(model ? model : cli_default_model(), &lo, out);
}
