/*
 * train_config.h - the `lmx lora` configuration with mlx_lm.lora 0.32.2's
 * semantics (MLX-LM-SPEC §1.4, §5):
 *
 *   1. flags parsed like its argparse parser (same names, `--flag=value`,
 *      unambiguous prefixes, -c for --config, argparse's error wording);
 *   2. `-c FILE`: a YAML file whose keys fill every setting the command line
 *      left None (PyYAML SafeLoader typing plus mlx-lm's "1e-5 is a float"
 *      resolver); keys mlx-lm does not know are kept (and written to
 *      adapter_config.json) as mlx-lm keeps them - lmx lists them in
 *      unknown_keys so the CLI can warn;
 *   3. CONFIG_DEFAULTS for whatever is still None;
 *   4. validation: one-line errors naming the field (mlx-lm accepts some
 *      absurd values and fails later or never; lmx refuses batch_size < 1,
 *      iters < 0, rank < 1, ... up front).
 *
 * The merged namespace is kept as Python-typed values (`ns`) so that
 * adapter_config.json is byte-identical to mlx-lm's save_config(vars(args))
 * (top-level keys sorted, indent 4, float repr, ensure_ascii); the typed
 * fields below are read from it.
 */
#ifndef LMX_TRAIN_TRAIN_CONFIG_H
#define LMX_TRAIN_TRAIN_CONFIG_H

#include "base/base.h"
#include "models/lora.h"
#include "train/optim.h"
#include "train/pyvalue.h"

typedef struct lmx_train_config {
    lmx_pyval *ns; /* vars(args): every key, Python-typed */

    /* typed views of ns (strings point into ns; NULL where ns holds None) */
    const char *model, *data, *adapter_path, *resume_adapter_file, *config, *report_to, *project_name;
    bool train, test, mask_prompt, grad_checkpoint, trust_remote_code;
    lmx_ft_type fine_tune_type;
    lmx_optim_config optim;   /* optimizer + optimizer_config.<optimizer> kwargs */
    int num_layers;           /* <= 0: every layer (model.layers[-max(n, 0):]) */
    int batch_size, iters, val_batches, steps_per_report, steps_per_eval, save_every, test_batches;
    int max_seq_length, grad_accumulation_steps;
    double learning_rate;
    uint32_t seed;
    int64_t clear_cache_threshold; /* accepted, unused by lmx */
    lmx_schedule schedule;    /* CONSTANT when lr_schedule is None */
    bool has_schedule;
    struct {
        int rank;
        double scale, dropout;
        char **keys; /* NULL = every linear/embedding of the trained blocks */
        int n_keys;
    } lora;
    /* YAML-only data keys (None -> mlx-lm's defaults) */
    const char *prompt_feature, *completion_feature, *chat_feature, *text_feature;
    char **unknown_keys; /* YAML keys mlx-lm does not read */
    int n_unknown_keys;
} lmx_train_config;

/* argv[0..argc) = the arguments after `lora`. -h/--help is not handled here
 * (the CLI prints lmx_train_config_usage()). On failure cfg is left empty. */
lmx_status lmx_train_config_from_args(int argc, char **argv, lmx_train_config *cfg);
/* The same from an already-parsed YAML text (tests, programmatic use):
 * cli_argv may be NULL. yaml_text NULL = no config file. */
lmx_status lmx_train_config_build(int argc, char **argv, const char *yaml_text, const char *yaml_name,
                                  lmx_train_config *cfg);
void lmx_train_config_free(lmx_train_config *cfg);
const char *lmx_train_config_usage(void);

/* mlx-lm's layer check: how many trailing blocks to adapt for a model with
 * n_layers, or the "Requested to train N layers but the model only has M
 * layers." error. */
lmx_status lmx_train_config_layers(const lmx_train_config *cfg, int n_layers, int *out);

/* The adapter settings as models/lora.h describes them (for
 * lmx_adapters_create). keys are borrowed from cfg: out lives no longer
 * than cfg and is not passed to lmx_adapter_config_free. */
void lmx_train_config_adapter_config(const lmx_train_config *cfg, lmx_adapter_config *out);

/* adapter_config.json exactly as mlx_lm.lora writes it when training starts
 * (full fine-tuning first sets lora_parameters to None), written atomically
 * to <adapter_path>/adapter_config.json (the folder is created). */
lmx_status lmx_train_config_save(const lmx_train_config *cfg, const char *adapter_dir);
/* The same text, caller frees (tests). */
char *lmx_train_config_json(const lmx_train_config *cfg);

/* ---- internals shared by the train_config*.c files ---------------------- */

/* argparse: fills a dict with every dest (None where not given). */
lmx_status lmx_train_args_parse(int argc, char **argv, lmx_pyval *ns);
/* YAML text -> a Python dict as yaml.load(f, mlx-lm's SafeLoader) gives. */
lmx_status lmx_yaml_to_py(const char *text, size_t len, const char *name, lmx_pyval **out);

#endif
