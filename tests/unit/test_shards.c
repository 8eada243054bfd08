/* test_shards.c - multi-file safetensors sets: index json, globbing, errors. */
#include "io/shards.h"
#include "testing.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char g_dir[64];

/* A fresh empty folder for each case. */
static const char *fresh_dir(void) {
    char out[16];
    if (g_dir[0]) t_sh(out, sizeof out, "rm -rf '%s'", g_dir);
    strcpy(g_dir, "/tmp/lmx_test_shards_XXXXXX");
    if (!mkdtemp(g_dir)) g_dir[0] = 0;
    return g_dir;
}

static char *in_dir(const char *name) {
    static char buf[4][256];
    static int k;
    char *p = buf[k++ & 3];
    snprintf(p, 256, "%s/%s", g_dir, name);
    return p;
}

static const float g_v[4] = {1, 2, 3, 4};

/* Writes a shard holding the given tensor names (each F32 [4]). */
static void shard(const char *file, const char *const *names, size_t n) {
    int64_t shape[1] = {4};
    lmx_st_write_tensor ts[8];
    for (size_t i = 0; i < n; i++) ts[i] = (lmx_st_write_tensor){names[i], LMX_F32, 1, shape, g_v, sizeof g_v};
    CHECK_OK(lmx_st_write(in_dir(file), ts, n, NULL));
}

static void text(const char *file, const char *s) {
    FILE *f = fopen(in_dir(file), "w");
    if (!f) return;
    fputs(s, f);
    fclose(f);
}

static void expect_fail(int line, lmx_status want, const char *needle) {
    lmx_st_set *s = (lmx_st_set *)1;
    lmx_status st = lmx_st_set_open(g_dir, &s);
    CHECK_MSG(st == want, "line %d: %s, want %s (%s)", line, lmx_status_str(st), lmx_status_str(want),
              lmx_last_error());
    CHECK_MSG(s == NULL, "line %d: out not NULL", line);
    CHECK_MSG(strstr(lmx_last_error(), needle) != NULL, "line %d: message lacks '%s': %s", line, needle,
              lmx_last_error());
    if (st == LMX_OK && s) lmx_st_set_close(s);
}
#define EXPECT_FAIL(st, needle) expect_fail(__LINE__, st, needle)

static const char *const A[] = {"model.embed.weight", "layers.0.w"};
static const char *const B[] = {"layers.1.w", "lm_head.weight"};

#define INDEX                                                                                     \
    "{\"metadata\":{\"total_size\":64},\"weight_map\":{"                                          \
    "\"model.embed.weight\":\"model-00001-of-00002.safetensors\","                                \
    "\"layers.0.w\":\"model-00001-of-00002.safetensors\","                                        \
    "\"layers.1.w\":\"model-00002-of-00002.safetensors\","                                        \
    "\"lm_head.weight\":\"model-00002-of-00002.safetensors\"}}"

static void test_index(void) {
    fresh_dir();
    shard("model-00001-of-00002.safetensors", A, 2);
    shard("model-00002-of-00002.safetensors", B, 2);
    shard("adapters.safetensors", A, 1); /* ignored */
    text("model.safetensors.index.json", INDEX);
    lmx_st_set *s;
    CHECK_OK(lmx_st_set_open(g_dir, &s));
    if (!s) return;
    CHECK(lmx_st_set_has_index(s));
    CHECK_EQ_INT(lmx_st_set_n_files(s), 2);
    CHECK_EQ_INT(lmx_st_set_n_tensors(s), 4);
    const lmx_st_file *f = NULL;
    const lmx_st_tensor *t = lmx_st_set_find(s, "lm_head.weight", &f);
    CHECK(t && f && strstr(lmx_st_path(f), "model-00002-of-00002") && memcmp(t->data, g_v, 16) == 0);
    CHECK(lmx_st_set_find(s, "layers.0.w", NULL) != NULL);
    CHECK(lmx_st_set_find(s, "nope", &f) == NULL);
    int seen = 0;
    for (size_t i = 0; i < lmx_st_set_n_tensors(s); i++) {
        const lmx_st_tensor *ti = lmx_st_set_tensor_at(s, i, &f);
        CHECK(ti && f && lmx_st_set_find(s, ti->name, NULL) == ti);
        seen++;
    }
    CHECK_EQ_INT(seen, 4);
    CHECK(lmx_st_set_tensor_at(s, 4, NULL) == NULL);
    lmx_st_set_close(s);
}

static void test_glob(void) {
    fresh_dir();
    shard("model-00002-of-00002.safetensors", B, 2);
    shard("model-00001-of-00002.safetensors", A, 2);
    shard("consolidated.safetensors", A, 2); /* not model*: ignored when model* exist */
    text("config.json", "{}");
    lmx_st_set *s;
    CHECK_OK(lmx_st_set_open(g_dir, &s));
    if (s) {
        CHECK(!lmx_st_set_has_index(s));
        CHECK_EQ_INT(lmx_st_set_n_files(s), 2);
        CHECK(strstr(lmx_st_path(lmx_st_set_file(s, 0)), "model-00001") != NULL); /* sorted */
        CHECK_STR(lmx_st_set_tensor_at(s, 0, NULL)->name, "model.embed.weight");
        lmx_st_set_close(s);
    }
    /* no model*: every other *.safetensors except adapters */
    fresh_dir();
    shard("weights.safetensors", A, 2);
    shard("adapter_model.safetensors", B, 2);
    shard("adapters.safetensors", B, 2);
    CHECK_OK(lmx_st_set_open(g_dir, &s));
    if (s) {
        CHECK_EQ_INT(lmx_st_set_n_files(s), 1);
        CHECK(lmx_st_set_find(s, "lm_head.weight", NULL) == NULL);
        lmx_st_set_close(s);
    }
    /* explicit file list */
    const char *paths[2] = {in_dir("weights.safetensors"), in_dir("adapters.safetensors")};
    CHECK_OK(lmx_st_set_open_files(paths, 2, &s));
    if (s) {
        CHECK_EQ_INT(lmx_st_set_n_tensors(s), 4);
        lmx_st_set_close(s);
    }
}

static void test_errors(void) {
    fresh_dir();
    EXPECT_FAIL(LMX_ERR_NOT_FOUND, "no *.safetensors");
    lmx_st_set *s = (lmx_st_set *)1;
    CHECK(lmx_st_set_open("/nonexistent/folder", &s) == LMX_ERR_NOT_FOUND && s == NULL);

    /* duplicate names across shards */
    shard("model-1.safetensors", A, 2);
    shard("model-2.safetensors", A + 1, 1);
    EXPECT_FAIL(LMX_ERR_FORMAT, "tensor 'layers.0.w': name: also in");

    /* a bad shard's own error comes through with its path */
    fresh_dir();
    text("model.safetensors", "garbage!");
    EXPECT_FAIL(LMX_ERR_FORMAT, "model.safetensors: header: length");

    /* index naming a missing file */
    fresh_dir();
    shard("model-00001-of-00002.safetensors", A, 2);
    text("model.safetensors.index.json", INDEX);
    EXPECT_FAIL(LMX_ERR_NOT_FOUND, "weight_map: file 'model-00002-of-00002.safetensors' not found");

    /* index naming a tensor its file lacks */
    shard("model-00002-of-00002.safetensors", B, 1);
    EXPECT_FAIL(LMX_ERR_FORMAT, "weight_map: tensor 'lm_head.weight': not in model-00002-of-00002.safetensors");

    /* index placing a tensor in the wrong file */
    shard("model-00002-of-00002.safetensors", B, 2);
    text("model.safetensors.index.json",
         "{\"weight_map\":{\"layers.0.w\":\"model-00002-of-00002.safetensors\","
         "\"layers.1.w\":\"model-00001-of-00002.safetensors\"}}");
    EXPECT_FAIL(LMX_ERR_FORMAT, "tensor 'layers.0.w': listed in model-00002-of-00002.safetensors but found in");

    /* malformed index json */
    text("model.safetensors.index.json", "{\"weight_map\": [");
    EXPECT_FAIL(LMX_ERR_FORMAT, "model.safetensors.index.json: invalid JSON");
    text("model.safetensors.index.json", "{\"metadata\":{}}");
    EXPECT_FAIL(LMX_ERR_FORMAT, "index.json: weight_map: missing");
    text("model.safetensors.index.json", "{\"weight_map\":[]}");
    EXPECT_FAIL(LMX_ERR_FORMAT, "weight_map: not an object");
    text("model.safetensors.index.json", "{\"weight_map\":{\"x\":3}}");
    EXPECT_FAIL(LMX_ERR_FORMAT, "weight_map: tensor 'x': file name is not a string");
    text("model.safetensors.index.json", "{\"weight_map\":{\"x\":\"../../etc/passwd\"}}");
    EXPECT_FAIL(LMX_ERR_FORMAT, "leaves the folder");
    text("model.safetensors.index.json", "{\"weight_map\":{\"x\":\"/etc/passwd\"}}");
    EXPECT_FAIL(LMX_ERR_FORMAT, "leaves the folder");
    text("model.safetensors.index.json", "{\"weight_map\":{}}");
    EXPECT_FAIL(LMX_ERR_FORMAT, "weight_map: empty");
    char out[16];
    t_sh(out, sizeof out, "rm -rf '%s'", g_dir);
}

void run_tests(void) {
    TEST(test_index);
    TEST(test_glob);
    TEST(test_errors);
}
