/* cmd_lora.c - `lmx lora`: mlx_lm.lora's run() / train_model() / train() /
 * evaluate_model() over the library's pieces: the configuration
 * (train/train_config.h), the data and its batches (train/dataset.h), the
 * adapters (models/adapters.h) and the trainer (train/trainer.h). Output is
 * mlx-lm's classic (<= 0.31) line format (MLX-LM-SPEC §5). --device picks
 * the backend as generate does (auto: CUDA when a GPU answers, the model's
 * formats have kernels there and the backend has vjps; --test of saved
 * adapters without training stays on the CPU). */
#include "cli.h"

#include "generate/engine.h"
#include "models/adapters.h"
#include "train/dataset.h"
#include "train/train_config.h"
#include "train/trainer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *CMD = "lora";

typedef struct {
    const lmx_train_config *cfg;
    lmx_trainer *t;
    lmx_np_rng rng; /* numpy's global generator: np.random.seed(args.seed) in run() */
    const lmx_backend *backend; /* for the peak memory report */
} lora_run;

/* Removes "--device X" / "--device=X" from argv (lmx's own flag; the rest
 * is mlx_lm.lora's command line). Returns the new argc; *dev = X or NULL. */
static int take_device(int argc, char **argv, const char **dev, bool *bad) {
    int k = 0;
    *dev = NULL;
    *bad = false;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--device")) {
            if (i + 1 >= argc) {
                *bad = true;
                continue;
            }
            *dev = argv[++i];
        } else if (!strncmp(argv[i], "--device=", 9)) {
            *dev = argv[i] + 9;
        } else {
            argv[k++] = argv[i];
        }
    }
    return k;
}

static void print_truncation(const lmx_batch *b) {
    char warn[256];
    if (lmx_batch_truncation_warning(b, warn, sizeof warn)) printf("%s\n", warn);
}

/* trainer.evaluate(): token-weighted mean loss over num_batches (-1: all)
 * batches of one pass, drawn from the shared generator. */
static lmx_status evaluate(lora_run *r, lmx_dataset *d, int num_batches, double *out) {
    lmx_batches *it;
    LMX_TRY(lmx_batches_create(d, r->cfg->batch_size, r->cfg->max_seq_length, false, &r->rng, &it));
    double sum = 0;
    int64_t ntok = 0;
    lmx_status s = LMX_OK;
    for (int k = 0; s == LMX_OK && (num_batches < 0 || k < num_batches); k++) {
        lmx_batch b;
        bool done;
        if ((s = lmx_batches_next(it, &b, &done)) != LMX_OK || done) break;
        print_truncation(&b);
        double ls;
        int64_t nt;
        if ((s = lmx_trainer_eval(r->t, b.tokens, b.B, b.T, b.offsets, b.lengths, &ls, &nt)) == LMX_OK) {
            sum += ls;
            ntok += nt;
        }
    }
    lmx_batches_free(it);
    *out = sum / (double)ntok; /* 0/0 = nan, as mlx-lm with no batches */
    return s;
}

static void path_join(char *out, size_t cap, const char *dir, const char *name) {
    size_t n = strlen(dir);
    snprintf(out, cap, "%s%s%s", dir, n && dir[n - 1] != '/' ? "/" : "", name);
}

/* trainer.train() with its classic report lines. */
static lmx_status train_loop(lora_run *r, lmx_adapters *ad, lmx_dataset *train, lmx_dataset *valid) {
    const lmx_train_config *c = r->cfg;
    char adapter_file[1024], ckpt[1100];
    path_join(adapter_file, sizeof adapter_file, c->adapter_path, "adapters.safetensors");
    lmx_batches *it;
    LMX_TRY(lmx_batches_create(train, c->batch_size, c->max_seq_length, true, &r->rng, &it));
    printf("Starting training..., iters: %d\n", c->iters);
    fflush(stdout);
    double losses = 0, train_time = 0;
    int64_t n_tokens = 0, trained_tokens = 0;
    int steps = 0;
    /* optimizer.learning_rate: the rate of the last update; schedule(0) before any */
    double last_lr = lmx_schedule_lr(c->has_schedule ? &c->schedule : NULL, c->learning_rate, 0);
    lmx_status s = LMX_OK;
    for (int i = 1; s == LMX_OK && i <= c->iters; i++) {
        double tic = lmx_time_s();
        lmx_batch b;
        bool done;
        if ((s = lmx_batches_next(it, &b, &done)) != LMX_OK) break;
        print_truncation(&b);
        if (valid && (i == 1 || i % c->steps_per_eval == 0 || i == c->iters)) {
            double vt = lmx_time_s(), val_loss;
            if ((s = evaluate(r, valid, c->val_batches, &val_loss)) != LMX_OK) break;
            printf("Iter %d: Val loss %.3f, Val took %.3fs\n", i, val_loss, lmx_time_s() - vt);
            fflush(stdout);
            tic = lmx_time_s();
        }
        double loss;
        int64_t toks;
        if ((s = lmx_trainer_accumulate(r->t, b.tokens, b.B, b.T, b.offsets, b.lengths, &loss, &toks)) != LMX_OK) break;
        if (i % c->grad_accumulation_steps == 0 && (s = lmx_trainer_update(r->t, &last_lr)) != LMX_OK) break;
        losses += loss;
        n_tokens += toks;
        steps++;
        train_time += lmx_time_s() - tic;
        if (i % c->steps_per_report == 0 || i == c->iters) {
            trained_tokens += n_tokens;
            printf("Iter %d: Train loss %.3f, Learning Rate %.3e, It/sec %.3f, Tokens/sec %.3f, Trained Tokens %lld, "
                   "Peak mem %.3f GB\n",
                   i, losses / steps, last_lr, c->steps_per_report / train_time, (double)n_tokens / train_time,
                   (long long)trained_tokens, (double)lmx_backend_mem_peak(r->backend) / 1e9);
            fflush(stdout);
            losses = 0;
            n_tokens = 0;
            steps = 0;
            train_time = 0;
        }
        if (i % c->save_every == 0) {
            if ((s = lmx_trainer_sync(r->t)) != LMX_OK) break; /* device-updated values to the adapter set */
            if ((s = lmx_adapters_save(ad, c->adapter_path, i)) != LMX_OK) break;
            snprintf(ckpt, sizeof ckpt, "%07d_adapters.safetensors", i);
            char full[1200];
            path_join(full, sizeof full, c->adapter_path, ckpt);
            printf("Iter %d: Saved adapter weights to %s and %s.\n", i, adapter_file, full);
            fflush(stdout);
        }
    }
    lmx_batches_free(it);
    if (s == LMX_OK) s = lmx_trainer_sync(r->t);
    if (s == LMX_OK && (s = lmx_adapters_save(ad, c->adapter_path, -1)) == LMX_OK)
        printf("Saved final weights to %s.\n", adapter_file);
    return s;
}

static lmx_status make_trainer(lora_run *r, lmx_model *m, lmx_adapters *ad) {
    const lmx_train_config *c = r->cfg;
    lmx_train_options o;
    lmx_train_options_init(&o);
    o.optim = c->optim;
    o.learning_rate = (float)c->learning_rate;
    if (c->has_schedule) o.schedule = c->schedule;
    o.grad_accumulation_steps = c->grad_accumulation_steps;
    o.grad_checkpoint = c->grad_checkpoint;
    o.seed = c->seed;
    return lmx_trainer_create(&m->ex, &m->tf, ad, &o, &r->t);
}

/* mlx_lm.lora.train_model */
static lmx_status train_model(lora_run *r, lmx_model *m, lmx_adapters **ad, lmx_data_splits *sp) {
    const lmx_train_config *c = r->cfg;
    int n_layers;
    LMX_TRY(lmx_train_config_layers(c, m->tf.hp.n_layer, &n_layers));
    lmx_adapter_config acfg;
    lmx_train_config_adapter_config(c, &acfg);
    LMX_TRY(lmx_adapters_create_ex(&m->tf, lmx_adapters_prefix(m->cfg), &acfg, c->seed, ad));
    if (c->resume_adapter_file) {
        printf("Loading fine-tuned weights from %s\n", c->resume_adapter_file);
        LMX_TRY(lmx_adapters_read_weights(*ad, c->resume_adapter_file));
    }
    LMX_TRY(make_trainer(r, m, *ad));
    int64_t trainable, total;
    lmx_trainer_param_counts(r->t, &trainable, &total);
    double tp = (double)trainable / 1e6, pp = (double)total / 1e6;
    printf("Trainable parameters: %.3f%% (%.3fM/%.3fM)\n", tp * 100 / pp, tp, pp);
    LMX_TRY(lmx_train_config_save(c, c->adapter_path));
    return train_loop(r, *ad, sp->train, sp->valid);
}

int cmd_lora(int argc, char **argv) {
    const char *device;
    bool bad_device;
    argc = 1 + take_device(argc - 1, argv + 1, &device, &bad_device);
    if (bad_device || (device && strcmp(device, "cpu") && strcmp(device, "cuda") && strcmp(device, "auto"))) {
        fprintf(stderr, "lmx lora: --device takes cpu, cuda or auto\n");
        return 2;
    }
    lmx_train_config cfg;
    lmx_status s = lmx_train_config_from_args(argc - 1, argv + 1, &cfg);
    if (s == LMX_ERR_ABORTED) {
        fputs(lmx_train_config_usage(), stdout);
        return 0;
    }
    if (s != LMX_OK) return s == LMX_ERR_INVALID_ARG ? (cli_lib_fail(CMD), 2) : cli_lib_fail(CMD);
    if (cfg.config) printf("Loading configuration file %s\n", cfg.config);
    for (int k = 0; k < cfg.n_unknown_keys; k++)
        fprintf(stderr, "lmx lora: warning: configuration key '%s' is not a setting (kept in adapter_config.json)\n",
                cfg.unknown_keys[k]);
    lora_run r = {.cfg = &cfg};
    lmx_np_seed(&r.rng, cfg.seed); /* the range was checked with the config */
    lmx_model *m = NULL;
    lmx_adapters *ad = NULL;
    lmx_data_splits sp = {0};
    int rc = 0;
    printf("Loading pretrained model\n");
    fflush(stdout);
    bool test_only = cfg.test && !cfg.train;
    const char *adapters = test_only && cfg.adapter_path[0] ? cfg.adapter_path : NULL;
    /* adapters loaded for --test: the CPU (see the file comment) */
    bool cpu_only = adapters != NULL;
    if (!device) device = getenv("LMX_DEVICE") && *getenv("LMX_DEVICE") ? getenv("LMX_DEVICE") : "auto";
    if (cpu_only && !strcmp(device, "cuda")) {
        s = lmx_err(LMX_ERR_UNSUPPORTED, "--device cuda: --test of saved adapters without --train runs on the CPU "
                                         "(use --device cpu)");
    } else {
        s = cli_load_model_adapters(cfg.model, adapters, 0, cpu_only ? "cpu" : device, false, &m);
        if (s == LMX_OK && !strcmp(device, "auto") && !m->backend->vjps && !lmx_backend_is_host(m->backend)) {
            lmx_model_free(m); /* a device without vjp kernels cannot train */
            m = NULL;
            s = cli_load_model_adapters(cfg.model, adapters, 0, "cpu", false, &m);
        }
    }
    if (s == LMX_OK) r.backend = m->backend;
    const lmx_tokenizer *tok = s == LMX_OK ? lmx_model_tokenizer(m) : NULL;
    if (s == LMX_OK && !tok) s = lmx_err(LMX_ERR_NOT_FOUND, "%s: the model has no tokenizer", cfg.model);
    if (s == LMX_OK) {
        printf("Loading datasets\n");
        lmx_data_options o;
        lmx_data_options_init(&o);
        o.mask_prompt = cfg.mask_prompt;
        if (cfg.prompt_feature) o.prompt_feature = cfg.prompt_feature;
        if (cfg.completion_feature) o.completion_feature = cfg.completion_feature;
        if (cfg.chat_feature) o.chat_feature = cfg.chat_feature;
        if (cfg.text_feature) o.text_feature = cfg.text_feature;
        s = lmx_data_load_dir(cfg.data, tok, &o, cfg.train, cfg.test, &sp);
        if (s == LMX_OK && cfg.train && !sp.valid) printf("%s\n", lmx_data_no_valid_warning);
    }
    if (s == LMX_OK && cfg.train) {
        printf("Training\n");
        fflush(stdout);
        s = train_model(&r, m, &ad, &sp);
    } else if (s == LMX_OK && test_only) {
        s = m->adapters ? make_trainer(&r, m, m->adapters)
                        : lmx_err(LMX_ERR_UNSUPPORTED, "--test without adapters (empty --adapter-path) is not supported yet");
    }
    if (s == LMX_OK && cfg.test) {
        printf("Testing\n");
        fflush(stdout);
        double loss;
        s = evaluate(&r, sp.test, cfg.test_batches, &loss);
        if (s == LMX_OK) printf("Test loss %.3f, Test ppl %.3f.\n", loss, exp(loss));
    }
    if (s != LMX_OK) rc = cli_lib_fail(CMD);
    lmx_trainer_free(r.t);
    lmx_adapters_free(ad);
    lmx_data_splits_free(&sp);
    lmx_model_free(m);
    lmx_train_config_free(&cfg);
    return rc;
}
