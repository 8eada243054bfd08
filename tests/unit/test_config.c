/*
 * test_config.c - config.json semantics: text_config nesting with
 * language_model.-prefixed weights (multimodal wrappers), EOS ids from
 * generation_config.json replacing config.json's, unknown keys ignored.
 */
#include "testing.h"

#include "io/safetensors.h"
#include "lmx.h"
#include "models/config.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <sys/stat.h>

static char tmp[256];

static void write_file(const char *dir, const char *name, const char *text) {
    char p[600];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
}

/* Rewrites tests/data/hf/gemma3_text as a gemma3 multimodal wrapper: config
 * under text_config, tensors renamed with `prefix`. Logits must not change. */
static void wrapped(const char *prefix, const char *sub) {
    char dir[512], src[600];
    snprintf(dir, sizeof dir, "%s/%s", tmp, sub);
    mkdir(dir, 0755);
    snprintf(src, sizeof src, "%s/hf/gemma3_text/config.json", LMX_TEST_DATA);
    FILE *f = fopen(src, "rb");
    char *text = calloc(1, 1 << 16);
    size_t n = fread(text, 1, (1 << 16) - 1, f);
    fclose(f);
    text[n] = 0;
    cJSON *inner = cJSON_Parse(text);
    free(text);
    cJSON *outer = cJSON_CreateObject();
    cJSON_AddStringToObject(outer, "model_type", "gemma3");
    cJSON_AddItemToObject(outer, "text_config", inner);
    cJSON_AddItemToObject(outer, "vision_config", cJSON_CreateObject());
    cJSON_AddNumberToObject(outer, "some_unknown_key", 42);
    char *js = cJSON_Print(outer);
    write_file(dir, "config.json", js);
    free(js);
    cJSON_Delete(outer);

    lmx_st_file *in;
    snprintf(src, sizeof src, "%s/hf/gemma3_text/model.safetensors", LMX_TEST_DATA);
    CHECK_OK(lmx_st_open(src, &in));
    size_t nt = lmx_st_n_tensors(in);
    lmx_st_write_tensor *ts = calloc(nt, sizeof *ts);
    char (*names)[256] = calloc(nt, sizeof *names);
    for (size_t i = 0; i < nt; i++) {
        const lmx_st_tensor *t = lmx_st_tensor_at(in, i);
        const char *base = t->name;
        if (!strncmp(prefix, "model.", 6) && !strncmp(base, "model.", 6)) base += 6;
        snprintf(names[i], sizeof names[i], "%s%s", prefix, base);
        ts[i] = (lmx_st_write_tensor){names[i], t->dtype, t->n_dims, t->shape, t->data, t->size};
    }
    snprintf(src, sizeof src, "%s/model.safetensors", dir);
    CHECK_OK(lmx_st_write(src, ts, nt, NULL));
    free(ts);
    free(names);
    lmx_st_close(in);

    lmx_load_options lo;
    lmx_load_options_init(&lo);
    lo.no_tokenizer = true;
    lmx_model *a, *b;
    char orig[512];
    snprintf(orig, sizeof orig, "%s/hf/gemma3_text", LMX_TEST_DATA);
    CHECK_OK(lmx_load(orig, &lo, &a));
    CHECK_OK(lmx_load(dir, &lo, &b));
    if (t_failed_checks) return;
    int32_t toks[5] = {5, 17, 200, 3, 99};
    int V = lmx_model_vocab_size(a);
    float *la = malloc(5 * (size_t)V * 4), *lb = malloc(5 * (size_t)V * 4);
    CHECK_OK(lmx_logits(a, toks, 5, la));
    CHECK_OK(lmx_logits(b, toks, 5, lb));
    CHECK(memcmp(la, lb, 5 * (size_t)V * 4) == 0);
    CHECK_STR(lmx_model_type(b), "gemma3_text"); /* the text model inside the wrapper */
    free(la);
    free(lb);
    lmx_model_free(a);
    lmx_model_free(b);
}

static void text_config_mlx_prefix(void) { wrapped("language_model.", "wrap_mlx"); }
static void text_config_v5_prefix(void) { wrapped("model.language_model.", "wrap_v5"); }

static void eos_override(void) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/eos", tmp);
    mkdir(dir, 0755);
    lmx_config *c;
    const char *cfg = "{\"model_type\": \"llama\", \"eos_token_id\": 2, \"unknown\": [1, {\"x\": null}]}";
    CHECK_OK(lmx_config_parse(cfg, strlen(cfg), "config.json", &c));
    int32_t *ids;
    size_t n;
    CHECK_OK(lmx_config_eos(c, dir, &ids, &n)); /* no generation_config: config's */
    CHECK(n == 1 && ids[0] == 2);
    free(ids);
    write_file(dir, "generation_config.json", "{\"eos_token_id\": [128001, 128009]}");
    CHECK_OK(lmx_config_eos(c, dir, &ids, &n)); /* generation_config replaces it */
    CHECK(n == 2 && ids[0] == 128001 && ids[1] == 128009);
    free(ids);
    write_file(dir, "generation_config.json", "{\"eos_token_id\": \"two\"}");
    CHECK(lmx_config_eos(c, dir, &ids, &n) == LMX_ERR_FORMAT);
    CHECK(strstr(lmx_last_error(), "generation_config.json") != NULL);
    write_file(dir, "generation_config.json", "{not json");
    CHECK(lmx_config_eos(c, dir, &ids, &n) == LMX_ERR_FORMAT);
    lmx_config_free(c);
}

static void typed_getters(void) {
    lmx_config *c;
    const char *cfg = "{\"a\": 3, \"b\": 2.5, \"c\": true, \"d\": \"x\", \"text_config\": {\"a\": 7}}";
    CHECK_OK(lmx_config_parse(cfg, strlen(cfg), "config.json", &c));
    lmx_status st = LMX_OK;
    CHECK_EQ_INT(lmx_cfg_int(c, "a", 0, &st), 7); /* text_config wins */
    CHECK(lmx_cfg_num(c, "b", 0, &st) == 2.5);
    CHECK(lmx_cfg_bool(c, "c", false, &st));
    CHECK_EQ_INT(lmx_cfg_int(c, "missing", 11, &st), 11);
    CHECK(st == LMX_OK);
    lmx_cfg_int(c, "b", 0, &st);
    CHECK(st == LMX_ERR_FORMAT);
    lmx_config_free(c);
    CHECK(lmx_config_parse("[1,2]", 5, "config.json", &c) == LMX_ERR_FORMAT);
    CHECK(lmx_config_parse("", 0, "config.json", &c) == LMX_ERR_FORMAT);
}

void run_tests(void) {
    snprintf(tmp, sizeof tmp, "/tmp/lmx_config_XXXXXX");
    if (!mkdtemp(tmp)) {
        t_skip("config", "no temp dir");
        return;
    }
    TEST(text_config_mlx_prefix);
    TEST(text_config_v5_prefix);
    TEST(eos_override);
    TEST(typed_getters);
    t_sh(NULL, 0, "rm -rf '%s'", tmp);
}
