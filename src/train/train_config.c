/*
 * train_config.c - merging CLI > YAML > CONFIG_DEFAULTS as mlx_lm.lora.main
 * does, validating, and writing adapter_config.json as save_config does.
 * See train_config.h.
 */
#include "train/train_config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* mlx_lm.lora.CONFIG_DEFAULTS, in its order. */
static lmx_pyval *config_defaults(void) {
    lmx_pyval *d = lmx_py_dict();
    lmx_pyval *oc = lmx_py_dict(), *lp = lmx_py_dict();
    if (!d || !oc || !lp) goto fail;
    const char *opts[] = {"adam", "adamw", "muon", "sgd", "adafactor"};
    for (int k = 0; k < 5; k++)
        if (!lmx_py_dict_set(oc, opts[k], lmx_py_dict())) goto fail;
    if (!lmx_py_dict_set(lp, "rank", lmx_py_int(8)) || !lmx_py_dict_set(lp, "dropout", lmx_py_float(0.0)) ||
        !lmx_py_dict_set(lp, "scale", lmx_py_float(20.0)))
        goto fail;
    bool ok = lmx_py_dict_set(d, "model", lmx_py_str("Qwen/Qwen3-0.6b")) && lmx_py_dict_set(d, "train", lmx_py_bool(false)) &&
              lmx_py_dict_set(d, "fine_tune_type", lmx_py_str("lora")) && lmx_py_dict_set(d, "optimizer", lmx_py_str("adam")) &&
              lmx_py_dict_set(d, "optimizer_config", oc) && (oc = NULL, true) &&
              lmx_py_dict_set(d, "data", lmx_py_str("mlx-community/WikiSQL")) && lmx_py_dict_set(d, "seed", lmx_py_int(0)) &&
              lmx_py_dict_set(d, "num_layers", lmx_py_int(16)) && lmx_py_dict_set(d, "batch_size", lmx_py_int(4)) &&
              lmx_py_dict_set(d, "iters", lmx_py_int(1000)) && lmx_py_dict_set(d, "val_batches", lmx_py_int(25)) &&
              lmx_py_dict_set(d, "learning_rate", lmx_py_float(1e-5)) &&
              lmx_py_dict_set(d, "steps_per_report", lmx_py_int(10)) && lmx_py_dict_set(d, "steps_per_eval", lmx_py_int(200)) &&
              lmx_py_dict_set(d, "resume_adapter_file", lmx_py_none()) &&
              lmx_py_dict_set(d, "adapter_path", lmx_py_str("adapters")) && lmx_py_dict_set(d, "save_every", lmx_py_int(100)) &&
              lmx_py_dict_set(d, "test", lmx_py_bool(false)) && lmx_py_dict_set(d, "test_batches", lmx_py_int(500)) &&
              lmx_py_dict_set(d, "max_seq_length", lmx_py_int(2048)) && lmx_py_dict_set(d, "config", lmx_py_none()) &&
              lmx_py_dict_set(d, "grad_checkpoint", lmx_py_bool(false)) &&
              lmx_py_dict_set(d, "grad_accumulation_steps", lmx_py_int(1)) &&
              lmx_py_dict_set(d, "clear_cache_threshold", lmx_py_int(0)) && lmx_py_dict_set(d, "lr_schedule", lmx_py_none()) &&
              lmx_py_dict_set(d, "lora_parameters", lp) && (lp = NULL, true) &&
              lmx_py_dict_set(d, "mask_prompt", lmx_py_bool(false)) && lmx_py_dict_set(d, "report_to", lmx_py_none()) &&
              lmx_py_dict_set(d, "project_name", lmx_py_none()) && lmx_py_dict_set(d, "trust_remote_code", lmx_py_bool(false));
    if (ok) return d;
fail:
    lmx_py_free(d);
    lmx_py_free(oc);
    lmx_py_free(lp);
    return NULL;
}

/* Keys mlx_lm.lora / its dataset loader read; anything else from YAML is
 * carried along unused. */
static bool known_key(const char *k) {
    static const char *const known[] = {
        "model", "train", "data", "fine_tune_type", "optimizer", "optimizer_config", "mask_prompt", "num_layers",
        "batch_size", "iters", "val_batches", "learning_rate", "steps_per_report", "steps_per_eval",
        "grad_accumulation_steps", "resume_adapter_file", "adapter_path", "save_every", "test", "test_batches",
        "max_seq_length", "config", "grad_checkpoint", "clear_cache_threshold", "report_to", "project_name", "seed",
        "trust_remote_code", "lr_schedule", "lora_parameters", "hf_dataset", "prompt_feature", "completion_feature",
        "text_feature", "chat_feature"};
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        if (strcmp(k, known[i]) == 0) return true;
    return false;
}

void lmx_train_config_free(lmx_train_config *cfg) {
    if (!cfg) return;
    lmx_py_free(cfg->ns);
    for (int k = 0; k < cfg->lora.n_keys; k++) free(cfg->lora.keys[k]);
    free(cfg->lora.keys);
    for (int k = 0; k < cfg->n_unknown_keys; k++) free(cfg->unknown_keys[k]);
    free(cfg->unknown_keys);
    memset(cfg, 0, sizeof *cfg);
}

/* ---- typed reads ----------------------------------------------------------- */

static lmx_status want_str(const lmx_pyval *ns, const char *key, bool nullable, const char **out) {
    const lmx_pyval *v = lmx_py_dict_get(ns, key);
    if (lmx_py_is_none(v) && nullable) {
        *out = NULL;
        return LMX_OK;
    }
    if (!v || v->type != LMX_PY_STR)
        return lmx_err(LMX_ERR_INVALID_ARG, "%s: expected a string, got %s", key, lmx_py_type_name(v ? v->type : LMX_PY_NONE));
    *out = v->s;
    return LMX_OK;
}

static lmx_status want_int(const lmx_pyval *v, const char *key, int64_t lo, int64_t hi, int64_t *out) {
    if (!v || v->type != LMX_PY_INT)
        return lmx_err(LMX_ERR_INVALID_ARG, "%s: expected an integer, got %s", key, lmx_py_type_name(v ? v->type : LMX_PY_NONE));
    if (v->i < lo || v->i > hi)
        return lmx_err(LMX_ERR_INVALID_ARG, "%s: %lld is out of range (%lld..%lld)", key, (long long)v->i, (long long)lo,
                       (long long)hi);
    *out = v->i;
    return LMX_OK;
}

static lmx_status want_int_key(const lmx_pyval *ns, const char *key, int64_t lo, int64_t hi, int *out) {
    int64_t x = 0;
    LMX_TRY(want_int(lmx_py_dict_get(ns, key), key, lo, hi, &x));
    *out = (int)x;
    return LMX_OK;
}

static lmx_status want_num(const lmx_pyval *v, const char *key, double *out) {
    if (v && v->type == LMX_PY_INT) *out = (double)v->i;
    else if (v && v->type == LMX_PY_FLOAT) *out = v->f;
    else return lmx_err(LMX_ERR_INVALID_ARG, "%s: expected a number, got %s", key, lmx_py_type_name(v ? v->type : LMX_PY_NONE));
    return LMX_OK;
}

/* Python truthiness of a flag (YAML `train: true`, argparse True). */
static lmx_status want_flag(const lmx_pyval *ns, const char *key, bool *out) {
    const lmx_pyval *v = lmx_py_dict_get(ns, key);
    if (lmx_py_is_none(v)) *out = false;
    else if (v->type == LMX_PY_BOOL) *out = v->b;
    else if (v->type == LMX_PY_INT) *out = v->i != 0;
    else return lmx_err(LMX_ERR_INVALID_ARG, "%s: expected true or false, got %s", key, lmx_py_type_name(v->type));
    return LMX_OK;
}

static lmx_status read_optimizer(lmx_train_config *c) {
    const char *name = NULL;
    LMX_TRY(want_str(c->ns, "optimizer", false, &name));
    char lower[32];
    size_t n = 0;
    for (; name[n] && n + 1 < sizeof lower; n++) lower[n] = (char)((name[n] >= 'A' && name[n] <= 'Z') ? name[n] + 32 : name[n]);
    lower[n] = 0; /* optimizer_name = args.optimizer.lower() */
    lmx_opt_kind kind;
    if (lmx_opt_kind_parse(lower, &kind) != LMX_OK) {
        if (strcmp(lower, "muon") == 0 || strcmp(lower, "adafactor") == 0) return LMX_ERR_UNSUPPORTED;
        return lmx_err(LMX_ERR_INVALID_ARG, "optimizer: Unsupported optimizer: %s", lower);
    }
    lmx_optim_config_init(&c->optim, kind);
    const lmx_pyval *oc = lmx_py_dict_get(c->ns, "optimizer_config");
    if (!oc || oc->type != LMX_PY_DICT)
        return lmx_err(LMX_ERR_INVALID_ARG, "optimizer_config: expected a mapping of optimizer name to settings");
    const lmx_pyval *kw = lmx_py_dict_get(oc, lower);
    if (!kw) return lmx_optim_config_check(&c->optim);
    if (kw->type != LMX_PY_DICT) return lmx_err(LMX_ERR_INVALID_ARG, "optimizer_config.%s: expected a mapping", lower);
    for (int k = 0; k < kw->n; k++) {
        const lmx_pyval *v = kw->items[k];
        double vals[2];
        int nv = 0;
        char field[96];
        snprintf(field, sizeof field, "optimizer_config.%s.%s", lower, kw->keys[k]);
        if (v->type == LMX_PY_LIST) {
            for (int q = 0; q < v->n; q++) {
                if (nv == 2) return lmx_err(LMX_ERR_INVALID_ARG, "%s: too many values", field);
                LMX_TRY(want_num(v->items[q], field, &vals[nv++]));
            }
        } else if (v->type == LMX_PY_BOOL) {
            vals[nv++] = v->b;
        } else {
            LMX_TRY(want_num(v, field, &vals[nv++]));
        }
        LMX_TRY(lmx_optim_config_set(&c->optim, kw->keys[k], vals, nv));
    }
    return lmx_optim_config_check(&c->optim);
}

static lmx_status read_schedule(lmx_train_config *c) {
    const lmx_pyval *s = lmx_py_dict_get(c->ns, "lr_schedule");
    memset(&c->schedule, 0, sizeof c->schedule);
    c->has_schedule = !lmx_py_is_none(s);
    if (!c->has_schedule) return LMX_OK;
    if (s->type != LMX_PY_DICT) return lmx_err(LMX_ERR_INVALID_ARG, "lr_schedule: expected a mapping");
    const lmx_pyval *name = lmx_py_dict_get(s, "name"), *args = lmx_py_dict_get(s, "arguments");
    if (!name || name->type != LMX_PY_STR) return lmx_err(LMX_ERR_INVALID_ARG, "lr_schedule.name: missing or not a string");
    if (!args || args->type != LMX_PY_LIST) return lmx_err(LMX_ERR_INVALID_ARG, "lr_schedule.arguments: missing or not a list");
    LMX_TRY(lmx_sched_kind_parse(name->s, &c->schedule.kind));
    if (args->n > 3)
        return lmx_err(LMX_ERR_INVALID_ARG, "lr_schedule.arguments: %s() takes at most 3 arguments, %d given", name->s, args->n);
    for (int k = 0; k < args->n; k++) LMX_TRY(want_num(args->items[k], "lr_schedule.arguments", &c->schedule.args[k]));
    c->schedule.n_args = args->n;
    const lmx_pyval *w = lmx_py_dict_get(s, "warmup"), *wi = lmx_py_dict_get(s, "warmup_init");
    if (!lmx_py_is_none(w)) {
        int64_t x = 0;
        LMX_TRY(want_int(w, "lr_schedule.warmup", INT32_MIN, INT32_MAX, &x));
        c->schedule.warmup = (int)x;
    }
    if (!lmx_py_is_none(wi)) LMX_TRY(want_num(wi, "lr_schedule.warmup_init", &c->schedule.warmup_init));
    return lmx_schedule_check(&c->schedule);
}

static lmx_status read_lora(lmx_train_config *c) {
    const lmx_pyval *lp = lmx_py_dict_get(c->ns, "lora_parameters");
    if (!lp || lp->type != LMX_PY_DICT) return lmx_err(LMX_ERR_INVALID_ARG, "lora_parameters: expected a mapping");
    if (!lmx_py_dict_get(lp, "scale"))
        return lmx_err(LMX_ERR_INVALID_ARG, "lora_parameters: LoRA config is missing required key 'scale'.%s",
                       lmx_py_dict_get(lp, "alpha") ? " Found 'alpha' instead - mlx-lm's LoRA config uses 'scale', not "
                                                      "'alpha' (unlike some other LoRA frameworks). See LORA.md."
                                                    : "");
    const char *required[2] = {"rank", "dropout"};
    for (int k = 0; k < 2; k++)
        if (!lmx_py_dict_get(lp, required[k])) return lmx_err(LMX_ERR_INVALID_ARG, "lora_parameters: missing key '%s'", required[k]);
    int64_t rank = 0;
    LMX_TRY(want_int(lmx_py_dict_get(lp, "rank"), "lora_parameters.rank", 1, 1 << 20, &rank));
    c->lora.rank = (int)rank;
    LMX_TRY(want_num(lmx_py_dict_get(lp, "scale"), "lora_parameters.scale", &c->lora.scale));
    if (!isfinite(c->lora.scale)) return lmx_err(LMX_ERR_INVALID_ARG, "lora_parameters.scale: must be finite");
    LMX_TRY(want_num(lmx_py_dict_get(lp, "dropout"), "lora_parameters.dropout", &c->lora.dropout));
    if (!(c->lora.dropout >= 0 && c->lora.dropout < 1)) /* nn.Dropout's check */
        return lmx_err(LMX_ERR_INVALID_ARG, "lora_parameters.dropout: The dropout probability %g is not in [0, 1)", c->lora.dropout);
    const lmx_pyval *keys = lmx_py_dict_get(lp, "keys");
    if (lmx_py_is_none(keys)) return LMX_OK;
    if (keys->type != LMX_PY_LIST) return lmx_err(LMX_ERR_INVALID_ARG, "lora_parameters.keys: expected a list of module paths");
    c->lora.keys = calloc((size_t)(keys->n ? keys->n : 1), sizeof *c->lora.keys);
    if (!c->lora.keys) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    for (int k = 0; k < keys->n; k++) {
        if (keys->items[k]->type != LMX_PY_STR)
            return lmx_err(LMX_ERR_INVALID_ARG, "lora_parameters.keys[%d]: expected a string", k);
        if (!(c->lora.keys[c->lora.n_keys++] = strdup(keys->items[k]->s))) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    }
    return LMX_OK;
}

/* Everything after the merge: typed fields and range checks. */
static lmx_status extract(lmx_train_config *c) {
    lmx_pyval *ns = c->ns;
    if (!lmx_py_is_none(lmx_py_dict_get(ns, "hf_dataset")))
        return lmx_err(LMX_ERR_UNSUPPORTED, "hf_dataset: Hugging Face datasets are not supported; use --data with jsonl files");
    LMX_TRY(want_str(ns, "model", false, &c->model));
    LMX_TRY(want_str(ns, "data", false, &c->data));
    LMX_TRY(want_str(ns, "adapter_path", false, &c->adapter_path));
    LMX_TRY(want_str(ns, "resume_adapter_file", true, &c->resume_adapter_file));
    LMX_TRY(want_str(ns, "config", true, &c->config));
    LMX_TRY(want_str(ns, "report_to", true, &c->report_to));
    LMX_TRY(want_str(ns, "project_name", true, &c->project_name));
    const char *feat[4] = {"prompt_feature", "completion_feature", "chat_feature", "text_feature"};
    const char **dst[4] = {&c->prompt_feature, &c->completion_feature, &c->chat_feature, &c->text_feature};
    for (int k = 0; k < 4; k++) LMX_TRY(want_str(ns, feat[k], true, dst[k]));
    LMX_TRY(want_flag(ns, "train", &c->train));
    LMX_TRY(want_flag(ns, "test", &c->test));
    LMX_TRY(want_flag(ns, "mask_prompt", &c->mask_prompt));
    LMX_TRY(want_flag(ns, "grad_checkpoint", &c->grad_checkpoint));
    LMX_TRY(want_flag(ns, "trust_remote_code", &c->trust_remote_code));
    if (c->report_to)
        return lmx_err(LMX_ERR_UNSUPPORTED, "report_to: reporting to '%s' (wandb/swanlab) is not supported by lmx", c->report_to);
    const char *ft = NULL;
    LMX_TRY(want_str(ns, "fine_tune_type", false, &ft));
    if (strcmp(ft, "lora") == 0) c->fine_tune_type = LMX_FT_LORA;
    else if (strcmp(ft, "dora") == 0) c->fine_tune_type = LMX_FT_DORA;
    else if (strcmp(ft, "full") == 0) c->fine_tune_type = LMX_FT_FULL;
    else return lmx_err(LMX_ERR_INVALID_ARG, "fine_tune_type: Received unknown fine-tune-type %s (lora, dora, full)", ft);
    LMX_TRY(read_optimizer(c));
    LMX_TRY(want_int_key(ns, "num_layers", INT32_MIN, INT32_MAX, &c->num_layers));
    LMX_TRY(want_int_key(ns, "batch_size", 1, INT32_MAX, &c->batch_size));
    LMX_TRY(want_int_key(ns, "iters", 0, INT32_MAX, &c->iters));
    LMX_TRY(want_int_key(ns, "val_batches", -1, INT32_MAX, &c->val_batches));
    LMX_TRY(want_int_key(ns, "steps_per_report", 1, INT32_MAX, &c->steps_per_report));
    LMX_TRY(want_int_key(ns, "steps_per_eval", 1, INT32_MAX, &c->steps_per_eval));
    LMX_TRY(want_int_key(ns, "save_every", 1, INT32_MAX, &c->save_every));
    LMX_TRY(want_int_key(ns, "test_batches", -1, INT32_MAX, &c->test_batches));
    LMX_TRY(want_int_key(ns, "max_seq_length", 2, INT32_MAX, &c->max_seq_length));
    LMX_TRY(want_int_key(ns, "grad_accumulation_steps", 1, INT32_MAX, &c->grad_accumulation_steps));
    int64_t seed = 0, cct = 0;
    LMX_TRY(want_int(lmx_py_dict_get(ns, "seed"), "seed", 0, 0xffffffffLL, &seed)); /* np.random.seed's range */
    c->seed = (uint32_t)seed;
    LMX_TRY(want_int(lmx_py_dict_get(ns, "clear_cache_threshold"), "clear_cache_threshold", 0, INT64_MAX, &cct));
    c->clear_cache_threshold = cct;
    LMX_TRY(want_num(lmx_py_dict_get(ns, "learning_rate"), "learning_rate", &c->learning_rate));
    if (!isfinite(c->learning_rate) || c->learning_rate < 0)
        return lmx_err(LMX_ERR_INVALID_ARG, "learning_rate: %g is not a finite rate >= 0", c->learning_rate);
    LMX_TRY(read_schedule(c));
    if (c->fine_tune_type != LMX_FT_FULL) LMX_TRY(read_lora(c));
    if (!c->train && !c->test) return lmx_err(LMX_ERR_INVALID_ARG, "lora: Must provide at least one of --train or --test");
    for (int k = 0; k < ns->n; k++) {
        if (known_key(ns->keys[k])) continue;
        char **u = realloc(c->unknown_keys, (size_t)(c->n_unknown_keys + 1) * sizeof *u);
        if (!u) return lmx_err(LMX_ERR_NOMEM, "out of memory");
        c->unknown_keys = u;
        if (!(u[c->n_unknown_keys++] = strdup(ns->keys[k]))) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    }
    return LMX_OK;
}

lmx_status lmx_train_config_build(int argc, char **argv, const char *yaml_text, const char *yaml_name,
                                  lmx_train_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    lmx_pyval *ns = lmx_py_dict(), *yaml = NULL, *defaults = config_defaults();
    lmx_status s = ns && defaults ? LMX_OK : lmx_err(LMX_ERR_NOMEM, "out of memory");
    if (s == LMX_OK) s = lmx_train_args_parse(argc, argv, ns);
    if (s == LMX_OK && yaml_text) {
        const char *name = yaml_name ? yaml_name : "config";
        s = lmx_yaml_to_py(yaml_text, strlen(yaml_text), name, &yaml);
        if (s == LMX_OK && yaml->type != LMX_PY_DICT)
            s = lmx_err(LMX_ERR_FORMAT, "%s: the configuration must be a YAML mapping of settings", name);
        /* Prefer parameters from command-line arguments */
        for (int k = 0; s == LMX_OK && k < yaml->n; k++)
            if (lmx_py_is_none(lmx_py_dict_get(ns, yaml->keys[k])) &&
                !lmx_py_dict_set(ns, yaml->keys[k], lmx_py_copy(yaml->items[k])))
                s = lmx_err(LMX_ERR_NOMEM, "out of memory");
    }
    /* Update defaults for unspecified parameters */
    for (int k = 0; s == LMX_OK && k < defaults->n; k++)
        if (lmx_py_is_none(lmx_py_dict_get(ns, defaults->keys[k])) &&
            !lmx_py_dict_set(ns, defaults->keys[k], lmx_py_copy(defaults->items[k])))
            s = lmx_err(LMX_ERR_NOMEM, "out of memory");
    lmx_py_free(yaml);
    lmx_py_free(defaults);
    cfg->ns = ns;
    if (s == LMX_OK) s = extract(cfg);
    if (s != LMX_OK) lmx_train_config_free(cfg);
    return s;
}

lmx_status lmx_train_config_from_args(int argc, char **argv, lmx_train_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    lmx_pyval *ns = lmx_py_dict();
    if (!ns) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    lmx_status s = lmx_train_args_parse(argc, argv, ns);
    const lmx_pyval *cp = s == LMX_OK ? lmx_py_dict_get(ns, "config") : NULL;
    char *path = !lmx_py_is_none(cp) ? strdup(cp->s) : NULL;
    lmx_py_free(ns);
    if (s != LMX_OK) {
        free(path);
        return s;
    }
    char *text = NULL;
    size_t n = 0;
    if (path && (s = lmx_read_file(path, &text, &n)) != LMX_OK) {
        free(path);
        return lmx_err_prefix(s, "-c/--config");
    }
    s = lmx_train_config_build(argc, argv, text, path, cfg);
    free(text);
    free(path);
    return s;
}

lmx_status lmx_train_config_layers(const lmx_train_config *cfg, int n_layers, int *out) {
    if (cfg->num_layers > n_layers)
        return lmx_err(LMX_ERR_INVALID_ARG, "num_layers: Requested to train %d layers but the model only has %d layers.",
                       cfg->num_layers, n_layers);
    *out = cfg->num_layers > 0 ? cfg->num_layers : n_layers; /* model.layers[-max(num_layers, 0):] */
    return LMX_OK;
}

void lmx_train_config_adapter_config(const lmx_train_config *cfg, lmx_adapter_config *out) {
    memset(out, 0, sizeof *out);
    out->type = cfg->fine_tune_type;
    out->num_layers = cfg->num_layers;
    out->rank = cfg->lora.rank;
    out->scale = (float)cfg->lora.scale;
    out->dropout = (float)cfg->lora.dropout;
    out->keys = cfg->lora.keys;
    out->n_keys = cfg->lora.n_keys;
}

/* ---- adapter_config.json --------------------------------------------------- */

char *lmx_train_config_json(const lmx_train_config *cfg) {
    lmx_pyval *c = lmx_py_copy(cfg->ns);
    if (!c) return NULL;
    bool ok = true;
    if (cfg->fine_tune_type == LMX_FT_FULL) ok = lmx_py_dict_set(c, "lora_parameters", lmx_py_none()); /* train_model */
    /* save_config's clean-up */
    lmx_py_dict_del(c, "_name_or_path");
    lmx_py_dict_del(c, "vision_config");
    const lmx_pyval *q = lmx_py_dict_get(c, "quantization");
    if (ok && q) ok = lmx_py_dict_set(c, "quantization_config", lmx_py_copy(q));
    char *text = ok ? lmx_py_json_dumps(c, 4, true) : NULL;
    lmx_py_free(c);
    return text;
}

static lmx_status mkdir_p(const char *dir) {
    char *p = strdup(dir);
    if (!p) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s) continue;
        char c = *s;
        *s = 0;
        if (mkdir(p, 0755) != 0 && errno != EEXIST) {
            lmx_status st = lmx_err(LMX_ERR_IO, "%s: cannot create folder: %s", p, strerror(errno));
            free(p);
            return st;
        }
        *s = c;
        if (!c) break;
    }
    free(p);
    if (!lmx_is_dir(dir)) return lmx_err(LMX_ERR_IO, "%s: not a folder", dir);
    return LMX_OK;
}

lmx_status lmx_train_config_save(const lmx_train_config *cfg, const char *adapter_dir) {
    LMX_TRY(mkdir_p(adapter_dir));
    char *text = lmx_train_config_json(cfg);
    if (!text) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    char *path = lmx_path_join(adapter_dir, "adapter_config.json");
    lmx_status s = path ? lmx_atomic_write(path, text, strlen(text)) : lmx_err(LMX_ERR_NOMEM, "out of memory");
    free(path);
    free(text);
    return s;
}

const char *lmx_train_config_usage(void) {
    return "usage: lmx lora [-h] [--model MODEL] [--train] [--data DATA] [--fine-tune-type {lora,dora,full}]\n"
           "                [--optimizer {adam,adamw,muon,sgd,adafactor}] [--mask-prompt] [--num-layers NUM_LAYERS]\n"
           "                [--batch-size BATCH_SIZE] [--iters ITERS] [--val-batches VAL_BATCHES]\n"
           "                [--learning-rate LEARNING_RATE] [--steps-per-report STEPS_PER_REPORT]\n"
           "                [--steps-per-eval STEPS_PER_EVAL] [--grad-accumulation-steps GRAD_ACCUMULATION_STEPS]\n"
           "                [--resume-adapter-file RESUME_ADAPTER_FILE] [--adapter-path ADAPTER_PATH]\n"
           "                [--save-every SAVE_EVERY] [--test] [--test-batches TEST_BATCHES]\n"
           "                [--max-seq-length MAX_SEQ_LENGTH] [-c CONFIG] [--grad-checkpoint]\n"
           "                [--clear-cache-threshold CLEAR_CACHE_THRESHOLD] [--report-to REPORT_TO]\n"
           "                [--project-name PROJECT_NAME] [--seed SEED] [--trust-remote-code]\n"
           "                [--device {cpu,cuda,auto}]\n"
           "\n"
           "LoRA or QLoRA finetuning (mlx_lm.lora's flags and defaults; -c FILE reads a YAML config whose keys\n"
           "fill what the command line leaves unset; lora_parameters, lr_schedule and optimizer_config are\n"
           "YAML-only). muon/adafactor, --report-to and Hugging Face dataset names are not supported.\n"
           "--device (lmx only; default auto = cuda when a GPU answers and the backend has vjp kernels):\n"
           "LoRA/QLoRA, DoRA and full fine-tuning train on CUDA; --test of saved adapters alone runs on the CPU.\n";
}
