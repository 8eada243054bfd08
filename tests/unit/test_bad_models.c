/*
 * test_bad_models.c - broken model folders give one clear error, never a crash.
 *
 * Each case builds a folder in a temp dir from the stories260K HF copy with
 * one thing wrong, then checks: lmx_load returns the right status, the
 * message names the file and the field/tensor, and `lmx generate` on it
 * exits non-zero with exactly one line on stderr.
 */
#include "testing.h"

#include "io/safetensors.h"
#include "lmx.h"

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *good_config =
    "{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 172, "
    "\"num_hidden_layers\": 5, \"num_attention_heads\": 8, \"num_key_value_heads\": 4, "
    "\"vocab_size\": 512, \"rms_norm_eps\": 1e-05, \"tie_word_embeddings\": true, \"head_dim\": 8}";

static char tmpdir[256];

static void write_text(const char *dir, const char *name, const char *text) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
}

/* Copies the stories260K tensors into dir/model.safetensors, skipping
 * `drop` and reshaping `bad_shape` (if given) to a wrong size. */
static void write_weights(const char *dir, const char *drop, const char *bad_shape) {
    lmx_st_file *src;
    CHECK_OK(lmx_st_open(LMX_TEST_DATA "/stories260K/hf/model.safetensors", &src));
    size_t n = lmx_st_n_tensors(src), k = 0;
    lmx_st_write_tensor *ts = calloc(n, sizeof *ts);
    int64_t(*shapes)[LMX_MAX_DIMS] = calloc(n, sizeof *shapes);
    for (size_t i = 0; i < n; i++) {
        const lmx_st_tensor *t = lmx_st_tensor_at(src, i);
        if (drop && !strcmp(t->name, drop)) continue;
        memcpy(shapes[k], t->shape, sizeof shapes[k]);
        ts[k].name = t->name;
        ts[k].dtype = t->dtype;
        ts[k].n_dims = t->n_dims;
        ts[k].data = t->data;
        ts[k].size = t->size;
        if (bad_shape && !strcmp(t->name, bad_shape)) { /* same bytes, transposed shape */
            int64_t tmp = shapes[k][0];
            shapes[k][0] = shapes[k][1];
            shapes[k][1] = tmp;
        }
        ts[k].shape = shapes[k];
        k++;
    }
    char p[512];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    CHECK_OK(lmx_st_write(p, ts, k, NULL));
    free(ts);
    free(shapes);
    lmx_st_close(src);
}

static void make_case(const char *name, char *dir, size_t cap) {
    snprintf(dir, cap, "%s/%s", tmpdir, name);
    mkdir(dir, 0755);
}

static void expect_fail(const char *dir, lmx_status want, const char *must_contain) {
    lmx_model *m = NULL;
    lmx_status s = lmx_load(dir, NULL, &m);
    CHECK_MSG(s == want, "%s: status %s, expected %s (%s)", dir, lmx_status_str(s), lmx_status_str(want),
              lmx_last_error());
    CHECK(m == NULL);
    CHECK_MSG(strstr(lmx_last_error(), must_contain) != NULL, "%s: message '%s' lacks '%s'", dir, lmx_last_error(),
              must_contain);
    CHECK_MSG(strchr(lmx_last_error(), '\n') == NULL, "message is not one line: %s", lmx_last_error());
    char out[4096];
    int rc = t_sh(out, sizeof out, "%s generate --model '%s' --prompt hi 2>&1 >/dev/null", LMX_CLI, dir);
    CHECK_MSG(rc == 1, "lmx generate exit %d on %s", rc, dir);
    size_t lines = 0;
    for (char *c = out; *c; c++) lines += *c == '\n';
    CHECK_MSG(lines == 1 && strncmp(out, "lmx generate: ", 14) == 0, "stderr not one 'lmx generate:' line: %s", out);
    if (m) lmx_model_free(m);
}

static void missing_config(void) {
    char d[512];
    make_case("noconfig", d, sizeof d);
    write_weights(d, NULL, NULL);
    expect_fail(d, LMX_ERR_NOT_FOUND, "config.json");
}

static void invalid_config_json(void) {
    char d[512];
    make_case("badjson", d, sizeof d);
    write_weights(d, NULL, NULL);
    write_text(d, "config.json", "{\"model_type\": \"llama\", \"hidden_size\": 64,,}");
    expect_fail(d, LMX_ERR_FORMAT, "config.json: invalid JSON");
}

static void unknown_model_type(void) {
    char d[512];
    make_case("unknown", d, sizeof d);
    write_weights(d, NULL, NULL);
    write_text(d, "config.json", "{\"model_type\": \"mamba9\", \"hidden_size\": 64}");
    expect_fail(d, LMX_ERR_UNSUPPORTED, "model_type: 'mamba9' is not supported");
}

static void wrong_type_in_config(void) {
    char d[512];
    make_case("badtype", d, sizeof d);
    write_weights(d, NULL, NULL);
    write_text(d, "config.json", "{\"model_type\": \"llama\", \"hidden_size\": \"64\", \"num_hidden_layers\": 5}");
    expect_fail(d, LMX_ERR_FORMAT, "hidden_size: expected an integer");
}

static void absurd_heads(void) {
    char d[512];
    make_case("heads", d, sizeof d);
    write_weights(d, NULL, NULL);
    write_text(d, "config.json",
               "{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 172, \"num_hidden_layers\": 5,"
               " \"num_attention_heads\": 8, \"num_key_value_heads\": 3, \"vocab_size\": 512}");
    expect_fail(d, LMX_ERR_FORMAT, "num_key_value_heads");
}

static void missing_tensor(void) {
    char d[512];
    make_case("missing", d, sizeof d);
    write_weights(d, "model.layers.2.mlp.up_proj.weight", NULL);
    write_text(d, "config.json", good_config);
    expect_fail(d, LMX_ERR_NOT_FOUND, "missing tensor 'model.layers.2.mlp.up_proj.weight'");
}

static void wrong_shape(void) {
    char d[512];
    make_case("shape", d, sizeof d);
    write_weights(d, NULL, "model.layers.1.self_attn.o_proj.weight");
    write_text(d, "config.json", good_config);
    /* o_proj is [64, 64]; transpose up_proj instead to break the shape */
    write_weights(d, NULL, "model.layers.1.mlp.down_proj.weight");
    expect_fail(d, LMX_ERR_SHAPE, "model.layers.1.mlp.down_proj.weight': shape [172, 64], expected [64, 172]");
}

static void truncated_weights(void) {
    char d[512];
    make_case("trunc", d, sizeof d);
    write_weights(d, NULL, NULL);
    write_text(d, "config.json", good_config);
    char p[600];
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    CHECK(truncate(p, 500000) == 0);
    expect_fail(d, LMX_ERR_FORMAT, "model.safetensors");
}

static void not_a_model(void) {
    lmx_model *m = NULL;
    CHECK(lmx_load("/nonexistent/model/dir", NULL, &m) == LMX_ERR_NOT_FOUND);
    CHECK(strstr(lmx_last_error(), "/nonexistent/model/dir") != NULL);
}

static void cli_absurd_flags(void) {
    char out[4096];
    int rc = t_sh(out, sizeof out, "%s generate --max-tokens -5 2>&1", LMX_CLI);
    CHECK_EQ_INT(rc, 2);
    CHECK(strstr(out, "--max-tokens") != NULL);
    rc = t_sh(out, sizeof out, "%s generate --temp abc 2>&1", LMX_CLI);
    CHECK_EQ_INT(rc, 2);
    rc = t_sh(out, sizeof out, "%s generate --top-p 7 2>&1", LMX_CLI);
    CHECK_EQ_INT(rc, 2);
    rc = t_sh(out, sizeof out, "%s generate --bogus 2>&1", LMX_CLI);
    CHECK_EQ_INT(rc, 2);
    rc = t_sh(out, sizeof out, "%s logits --tokens 1,99999 --out /tmp/x.safetensors 2>&1", LMX_CLI);
    CHECK_EQ_INT(rc, 1);
    CHECK(strstr(out, "outside the vocabulary") != NULL);
    rc = t_sh(out, sizeof out, "%s frobnicate 2>&1", LMX_CLI);
    CHECK_EQ_INT(rc, 2);
}

void run_tests(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lmx_bad_models_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        t_skip("bad_models", "cannot create a temp dir");
        return;
    }
    TEST(missing_config);
    TEST(invalid_config_json);
    TEST(unknown_model_type);
    TEST(wrong_type_in_config);
    TEST(absurd_heads);
    TEST(missing_tensor);
    TEST(wrong_shape);
    TEST(truncated_weights);
    TEST(not_a_model);
    TEST(cli_absurd_flags);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    t_sh(NULL, 0, "%s", cmd);
}
