/*
 * test_train_config.c - src/train/train_config*.c and pyvalue.c against
 * mlx-lm 0.32.2 (tests/data/train/config_expected.json, made by
 * tests/fixtures/make_train_config_fixtures.py through mlx_lm.lora.main and
 * mlx_lm.utils.save_config).
 *
 * Exact comparisons: adapter_config.json byte for byte for 5 flag/YAML
 * combinations (CLI > YAML > defaults, argparse-only defaults that YAML
 * cannot override, PyYAML typing incl. mlx-lm's float resolver, octal/hex/
 * sexagesimal ints, non-finite floats tagged, ensure_ascii escapes, Python
 * float repr); argparse's error text for 7 bad command lines. Then lmx's own
 * validation (one-line errors naming the field) and the typed fields.
 */
#include "testing.h"

#include "train/train_config.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <unistd.h>

static cJSON *doc;
static char tmp[256];

static char *conf_yaml(const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/train/config/%s", LMX_TEST_DATA, name);
    char *text = NULL;
    size_t n;
    CHECK_OK(lmx_read_file(path, &text, &n));
    return text;
}

static void mlx_cases(void) {
    char *text = NULL;
    size_t n;
    CHECK_OK(lmx_read_file(LMX_TEST_DATA "/train/config_expected.json", &text, &n));
    doc = cJSON_Parse(text);
    free(text);
    CHECK(doc != NULL);
    if (!doc) return;
    int n_json = 0, n_err = 0;
    for (const cJSON *c = cJSON_GetObjectItem(doc, "cases")->child; c; c = c->next) {
        const char *name = cJSON_GetObjectItem(c, "name")->valuestring;
        char *argv[32];
        int argc = 0;
        for (const cJSON *a = cJSON_GetObjectItem(c, "argv")->child; a && argc < 32; a = a->next) argv[argc++] = a->valuestring;
        const cJSON *y = cJSON_GetObjectItem(c, "yaml");
        char *yaml = cJSON_IsString(y) ? conf_yaml(y->valuestring) : NULL;
        lmx_train_config cfg;
        lmx_status s = lmx_train_config_build(argc, argv, yaml, "config.yaml", &cfg);
        free(yaml);
        const cJSON *want = cJSON_GetObjectItem(c, "json"), *err = cJSON_GetObjectItem(c, "error");
        if (want) {
            CHECK_MSG(s == LMX_OK, "%s: %s", name, lmx_last_error());
            if (s != LMX_OK) continue;
            char *got = lmx_train_config_json(&cfg);
            CHECK_MSG(got && strcmp(got, want->valuestring) == 0, "%s: adapter_config.json differs:\n--- lmx\n%s\n--- mlx-lm\n%s",
                      name, got ? got : "(null)", want->valuestring);
            free(got);
            lmx_train_config_free(&cfg);
            n_json++;
        } else {
            CHECK_MSG(s == LMX_ERR_INVALID_ARG, "%s: expected an error, got %s", name, lmx_status_str(s));
            const char *py = err->valuestring;
            /* mlx-lm dies with a KeyError on an unknown size unit; lmx reports it as argparse would a bad value */
            const char *needle = strncmp(py, "KeyError", 8) == 0 ? "invalid _parse_size value: '2TB'" : py;
            CHECK_MSG(strstr(lmx_last_error(), needle) != NULL, "%s: '%s' lacks '%s'", name, lmx_last_error(), needle);
            n_err++;
        }
    }
    CHECK_EQ_INT(n_json, 5);
    CHECK_EQ_INT(n_err, 8);
    printf("  %d adapter_config.json identical, %d argparse errors matched\n", n_json, n_err);
}

static void typed_fields(void) {
    char *yaml = conf_yaml("schedule_optimizer.yaml");
    char *argv[] = {"--config=config.yaml", "--iters", "50", "--seed", "42", "--learn", "3e-4"};
    lmx_train_config c;
    CHECK_OK(lmx_train_config_build(7, argv, yaml, "config.yaml", &c));
    free(yaml);
    if (t_failed_checks) return;
    CHECK(c.train && !c.test && c.fine_tune_type == LMX_FT_DORA);
    CHECK_EQ_INT(c.iters, 50);
    CHECK_EQ_INT(c.seed, 42);
    CHECK(c.learning_rate == 3e-4);
    CHECK_EQ_INT(c.batch_size, 2);
    CHECK_EQ_INT(c.num_layers, 8);
    CHECK(c.optim.kind == LMX_OPT_ADAMW && c.optim.beta1 == 0.9 && c.optim.beta2 == 0.98 && c.optim.eps == 1e-6 &&
          c.optim.weight_decay == 0.05 && c.optim.bias_correction);
    CHECK(c.has_schedule && c.schedule.kind == LMX_SCHED_COSINE && c.schedule.n_args == 3 && c.schedule.args[0] == 1e-5 &&
          c.schedule.args[1] == 1000 && c.schedule.args[2] == 1e-7 && c.schedule.warmup == 100 &&
          c.schedule.warmup_init == 1e-7);
    CHECK(c.lora.rank == 16 && c.lora.scale == 10 && c.lora.dropout == 0.05 && c.lora.n_keys == 4);
    CHECK_STR(c.lora.keys[3], "lm_head");
    CHECK_STR(c.prompt_feature, "question");
    CHECK_STR(c.completion_feature, "answer");
    CHECK(c.text_feature == NULL && c.resume_adapter_file == NULL);
    CHECK_STR(c.adapter_path, "out/adapters");
    CHECK_STR(c.config, "config.yaml");
    CHECK_EQ_INT(c.n_unknown_keys, 0);
    lmx_train_config_free(&c);

    yaml = conf_yaml("lora_config.yaml");
    char *argv2[] = {"-c", "config.yaml", "--batch-size", "2"};
    CHECK_OK(lmx_train_config_build(4, argv2, yaml, "config.yaml", &c));
    free(yaml);
    if (t_failed_checks) return;
    CHECK(c.optim.kind == LMX_OPT_ADAMW && c.optim.weight_decay == 0.01 && !c.optim.bias_correction);
    CHECK(!c.has_schedule && c.learning_rate == 1e-5 && c.max_seq_length == 2048 && c.test_batches == 100);
    CHECK(c.n_unknown_keys == 1 && strcmp(c.unknown_keys[0], "training_mode") == 0);
    int layers = 0;
    CHECK_OK(lmx_train_config_layers(&c, 24, &layers));
    CHECK_EQ_INT(layers, 16);
    CHECK(lmx_train_config_layers(&c, 8, &layers) == LMX_ERR_INVALID_ARG);
    CHECK(strstr(lmx_last_error(), "Requested to train 16 layers but the model only has 8 layers.") != NULL);
    lmx_train_config_free(&c);

    /* defaults alone: mlx-lm's CONFIG_DEFAULTS */
    char *argv3[] = {"--test", "--num-layers", "0"};
    CHECK_OK(lmx_train_config_build(3, argv3, NULL, NULL, &c));
    CHECK(c.optim.kind == LMX_OPT_ADAM && c.batch_size == 4 && c.iters == 1000 && c.val_batches == 25 &&
          c.steps_per_report == 10 && c.steps_per_eval == 200 && c.save_every == 100 && c.grad_accumulation_steps == 1 &&
          c.lora.rank == 8 && c.lora.scale == 20.0 && c.lora.dropout == 0.0 && c.lora.keys == NULL);
    CHECK_STR(c.model, "Qwen/Qwen3-0.6b");
    CHECK_OK(lmx_train_config_layers(&c, 5, &layers));
    CHECK_EQ_INT(layers, 5); /* model.layers[-max(0, 0):] = every layer */
    lmx_train_config_free(&c);
}

/* lmx's one-line validation errors: the field is named. */
static void expect_invalid(const char *yaml, int argc, char **argv, lmx_status want, const char *needle) {
    lmx_train_config c;
    lmx_status s = lmx_train_config_build(argc, argv, yaml, "bad.yaml", &c);
    CHECK_MSG(s == want, "%s: got %s (%s)", needle, lmx_status_str(s), s ? lmx_last_error() : "");
    if (s != LMX_OK) {
        CHECK_MSG(strstr(lmx_last_error(), needle) != NULL, "'%s' lacks '%s'", lmx_last_error(), needle);
        CHECK(strchr(lmx_last_error(), '\n') == NULL);
    } else {
        lmx_train_config_free(&c);
    }
}

static void validation(void) {
    char *tr[] = {"--train"};
    expect_invalid("batch_size: 0", 1, tr, LMX_ERR_INVALID_ARG, "batch_size: 0 is out of range");
    expect_invalid("iters: -1", 1, tr, LMX_ERR_INVALID_ARG, "iters: -1 is out of range");
    expect_invalid("iters: 100.0", 1, tr, LMX_ERR_INVALID_ARG, "iters: expected an integer, got float");
    expect_invalid("lora_parameters: {rank: 0, scale: 1, dropout: 0}", 1, tr, LMX_ERR_INVALID_ARG, "lora_parameters.rank");
    expect_invalid("lora_parameters: {rank: 4, scale: 1, dropout: 1.0}", 1, tr, LMX_ERR_INVALID_ARG,
                   "lora_parameters.dropout: The dropout probability 1 is not in [0, 1)");
    expect_invalid("lora_parameters: {rank: 4, alpha: 16, dropout: 0}", 1, tr, LMX_ERR_INVALID_ARG,
                   "LoRA config is missing required key 'scale'. Found 'alpha' instead");
    expect_invalid("lora_parameters: {rank: 4, scale: 2}", 1, tr, LMX_ERR_INVALID_ARG, "lora_parameters: missing key 'dropout'");
    expect_invalid("seed: -1", 1, tr, LMX_ERR_INVALID_ARG, "seed: -1 is out of range");
    expect_invalid("seed: 4294967296", 1, tr, LMX_ERR_INVALID_ARG, "seed: 4294967296 is out of range");
    expect_invalid("steps_per_report: 0", 1, tr, LMX_ERR_INVALID_ARG, "steps_per_report");
    expect_invalid("grad_accumulation_steps: 0", 1, tr, LMX_ERR_INVALID_ARG, "grad_accumulation_steps");
    expect_invalid("max_seq_length: 1", 1, tr, LMX_ERR_INVALID_ARG, "max_seq_length");
    expect_invalid("val_batches: -2", 1, tr, LMX_ERR_INVALID_ARG, "val_batches");
    expect_invalid("optimizer: muon", 1, tr, LMX_ERR_UNSUPPORTED, "muon");
    expect_invalid("optimizer: rmsprop", 1, tr, LMX_ERR_INVALID_ARG, "Unsupported optimizer: rmsprop");
    expect_invalid("optimizer_config: {adam: {momentum: 0.9}}", 1, tr, LMX_ERR_INVALID_ARG,
                   "unexpected keyword argument 'momentum'");
    expect_invalid("optimizer_config: {adam: {betas: [0.9, 1.5]}}", 1, tr, LMX_ERR_INVALID_ARG, "beta2");
    expect_invalid("fine_tune_type: qlora", 1, tr, LMX_ERR_INVALID_ARG, "fine_tune_type: Received unknown fine-tune-type qlora");
    expect_invalid("lr_schedule: {name: cosine, arguments: [1e-5, 10]}", 1, tr, LMX_ERR_INVALID_ARG, "lr_schedule.name");
    expect_invalid("lr_schedule: {name: cosine_decay, arguments: [1e-5, 0]}", 1, tr, LMX_ERR_INVALID_ARG,
                   "decay_steps must be greater than 0");
    expect_invalid("lr_schedule: {name: cosine_decay}", 1, tr, LMX_ERR_INVALID_ARG, "lr_schedule.arguments");
    expect_invalid("hf_dataset: {path: billsum}", 1, tr, LMX_ERR_UNSUPPORTED, "hf_dataset");
    expect_invalid("report_to: wandb", 1, tr, LMX_ERR_UNSUPPORTED, "report_to");
    expect_invalid("learning_rate: -1e-4", 1, tr, LMX_ERR_INVALID_ARG, "learning_rate");
    expect_invalid("model: [a, b]", 1, tr, LMX_ERR_INVALID_ARG, "model: expected a string, got list");
    expect_invalid("batch_size: 4", 0, NULL, LMX_ERR_INVALID_ARG, "Must provide at least one of --train or --test");
    expect_invalid("- a\n- b\n", 1, tr, LMX_ERR_FORMAT, "bad.yaml: the configuration must be a YAML mapping");
    expect_invalid("model: m\n  bad: [\n", 1, tr, LMX_ERR_FORMAT, "bad.yaml:2:");
    expect_invalid("a: 1\n---\nb: 2\n", 1, tr, LMX_ERR_FORMAT, "single YAML document");
    /* a full fine-tune does not read lora_parameters at all */
    expect_invalid("fine_tune_type: full\nlora_parameters: {rank: 0}", 1, tr, LMX_OK, "");
    char *help[] = {"--he"};
    expect_invalid(NULL, 1, help, LMX_ERR_ABORTED, "help");
    char *neg[] = {"--train", "--learning-rate=-1"};
    expect_invalid(NULL, 2, neg, LMX_ERR_INVALID_ARG, "learning_rate: -1 is not a finite rate");
}

static void save_and_from_args(void) {
    char dir[512], ypath[600];
    snprintf(dir, sizeof dir, "%s/run/adapters", tmp);
    snprintf(ypath, sizeof ypath, "%s/c.yaml", tmp);
    FILE *f = fopen(ypath, "w");
    fputs("train: true\nfine_tune_type: full\nnum_layers: 2\n", f);
    fclose(f);
    char *argv[] = {"-c", ypath, "--adapter-path", dir};
    lmx_train_config c;
    CHECK_OK(lmx_train_config_from_args(4, argv, &c));
    if (t_failed_checks) return;
    CHECK_STR(c.config, ypath);
    CHECK(c.fine_tune_type == LMX_FT_FULL && c.num_layers == 2);
    CHECK_OK(lmx_train_config_save(&c, c.adapter_path));
    char path[700], *text = NULL;
    size_t n;
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    CHECK_OK(lmx_read_file(path, &text, &n));
    char *want = lmx_train_config_json(&c);
    CHECK(text && want && strcmp(text, want) == 0);
    CHECK(text && strstr(text, "\"lora_parameters\": null,") != NULL);
    cJSON *j = text ? cJSON_Parse(text) : NULL; /* valid JSON the adapter loader reads */
    CHECK(j && cJSON_GetObjectItem(j, "num_layers")->valueint == 2);
    cJSON_Delete(j);
    free(text);
    free(want);
    lmx_train_config_free(&c);

    char *missing[] = {"--train", "-c", "/nonexistent/lmx.yaml"};
    CHECK(lmx_train_config_from_args(3, missing, &c) == LMX_ERR_IO);
    CHECK(strstr(lmx_last_error(), "-c/--config") != NULL);
}

static void float_repr(void) {
    const struct {
        double f;
        const char *want;
    } cases[] = {{1e-5, "1e-05"},   {20.0, "20.0"},     {0.1, "0.1"},         {1e16, "1e+16"},
                 {1e15, "1000000000000000.0"}, {0.0001, "0.0001"}, {2.5e-7, "2.5e-07"}, {-0.0, "-0.0"},
                 {123.456, "123.456"}, {1.7976931348623157e308, "1.7976931348623157e+308"}, {5e-324, "5e-324"},
                 {0.3, "0.3"},      {1.0 / 3, "0.3333333333333333"}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        char buf[64];
        lmx_py_float_repr(cases[k].f, buf, sizeof buf);
        CHECK_STR(buf, cases[k].want);
    }
}

void run_tests(void) {
    snprintf(tmp, sizeof tmp, "/tmp/lmx_train_config_XXXXXX");
    if (!mkdtemp(tmp)) {
        t_skip("train_config", "mkdtemp failed");
        return;
    }
    TEST(mlx_cases);
    TEST(typed_fields);
    TEST(validation);
    TEST(save_and_from_args);
    TEST(float_repr);
    cJSON_Delete(doc);
    t_sh(NULL, 0, "rm -rf '%s'", tmp);
}
