/* test_safetensors.c - safetensors reader/writer: round trip, real files and
 * every malformed-header case, generated here from a valid image. */
#include "io/safetensors.h"
#include "testing.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_dir[64];

static const char *tmpdir(void) {
    if (!g_dir[0]) {
        strcpy(g_dir, "/tmp/lmx_test_st_XXXXXX");
        if (!mkdtemp(g_dir)) g_dir[0] = 0;
    }
    return g_dir;
}

static char *tmp_path(const char *name) {
    static char buf[4][256];
    static int k;
    char *p = buf[k++ & 3];
    snprintf(p, 256, "%s/%s", tmpdir(), name);
    return p;
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return;
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

/* An image: u64 header length, the JSON, then data_len bytes 0..255. */
static uint8_t *make_st(const char *json, size_t data_len, size_t *n_out) {
    size_t hl = strlen(json);
    uint8_t *b = malloc(8 + hl + data_len + 1);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, json, hl);
    for (size_t i = 0; i < data_len; i++) b[8 + hl + i] = (uint8_t)i;
    *n_out = 8 + hl + data_len;
    return b;
}

static bool one_line(const char *s) { return strchr(s, '\n') == NULL; }

/* Opens buf (from memory and from a file); checks the status and that the
 * message names the path and contains `field`. */
static void expect_err_buf(int line, const uint8_t *buf, size_t n, lmx_status want, const char *field) {
    const char *path = tmp_path("bad.safetensors");
    write_file(path, buf, n);
    lmx_st_file *f = (lmx_st_file *)1;
    lmx_status s = lmx_st_open(path, &f);
    const char *msg = lmx_last_error();
    CHECK_MSG(s == want, "line %d: status %s, want %s (%s)", line, lmx_status_str(s), lmx_status_str(want), msg);
    if (want != LMX_OK) {
        CHECK_MSG(f == NULL, "line %d: out not NULL on failure", line);
        CHECK_MSG(strstr(msg, path) != NULL, "line %d: message lacks the path: %s", line, msg);
        CHECK_MSG(strstr(msg, field) != NULL, "line %d: message lacks '%s': %s", line, field, msg);
        CHECK_MSG(one_line(msg), "line %d: message has a newline", line);
    }
    if (s == LMX_OK) lmx_st_close(f);
    /* the memory entry point gives the same answer */
    s = lmx_st_open_memory(buf, n, "mem.safetensors", &f);
    CHECK_MSG(s == want, "line %d (memory): status %s, want %s", line, lmx_status_str(s), lmx_status_str(want));
    if (want != LMX_OK)
        CHECK_MSG(strstr(lmx_last_error(), "mem.safetensors") != NULL, "line %d: %s", line, lmx_last_error());
    if (s == LMX_OK) lmx_st_close(f);
    unlink(path);
}

static void expect_err_json(int line, const char *json, size_t data_len, lmx_status want, const char *field) {
    size_t n;
    uint8_t *b = make_st(json, data_len, &n);
    expect_err_buf(line, b, n, want, field);
    free(b);
}

#define BAD(json, dlen, st, field) expect_err_json(__LINE__, json, dlen, st, field)

/* ---- round trip -------------------------------------------------------- */

static float g_a[6] = {1, 2, 3, 4, 5, 6};
static uint16_t g_b[4] = {0x3f80, 0x4000, 0xbf80, 0x0000};
static int32_t g_c = -7;

static void write_valid(const char *path) {
    int64_t sa[2] = {2, 3}, sb[1] = {4}, sz[2] = {0, 5};
    lmx_st_write_tensor ts[] = {
        {"model.a.weight", LMX_F32, 2, sa, g_a, sizeof g_a},
        {"b \"quoted\"\n", LMX_BF16, 1, sb, g_b, sizeof g_b},
        {"scalar", LMX_I32, 0, NULL, &g_c, 4},
        {"empty", LMX_F16, 2, sz, NULL, 0},
    };
    const char *meta[] = {"format", "mlx", "note", "tab\there", NULL};
    CHECK_OK(lmx_st_write(path, ts, 4, meta));
}

static void test_round_trip(void) {
    const char *path = tmp_path("ok.safetensors");
    write_valid(path);
    lmx_st_file *f;
    CHECK_OK(lmx_st_open(path, &f));
    if (!f) return;
    CHECK_EQ_INT(lmx_st_n_tensors(f), 4);
    CHECK_STR(lmx_st_path(f), path);
    CHECK(lmx_st_map(f) != NULL);
    const lmx_st_tensor *a = lmx_st_find(f, "model.a.weight");
    CHECK(a && a->dtype == LMX_F32 && a->n_dims == 2 && a->shape[0] == 2 && a->shape[1] == 3 && a->size == 24);
    CHECK(a && memcmp(a->data, g_a, 24) == 0);
    const lmx_st_tensor *b = lmx_st_find(f, "b \"quoted\"\n");
    CHECK(b && b->dtype == LMX_BF16 && b->n_dims == 1 && b->shape[0] == 4 && memcmp(b->data, g_b, 8) == 0);
    const lmx_st_tensor *c = lmx_st_find(f, "scalar");
    CHECK(c && c->n_dims == 0 && c->size == 4 && memcmp(c->data, &g_c, 4) == 0);
    const lmx_st_tensor *e = lmx_st_find(f, "empty");
    CHECK(e && e->size == 0 && e->shape[0] == 0 && e->shape[1] == 5);
    CHECK(lmx_st_find(f, "missing") == NULL);
    CHECK_STR(lmx_st_tensor_at(f, 0)->name, "model.a.weight"); /* header order kept */
    CHECK_STR(lmx_st_tensor_at(f, 2)->name, "scalar");
    CHECK(lmx_st_tensor_at(f, 4) == NULL);
    CHECK_STR(lmx_st_metadata(f, "format"), "mlx");
    CHECK_STR(lmx_st_metadata(f, "note"), "tab\there");
    CHECK(lmx_st_metadata(f, "nope") == NULL);
    CHECK_EQ_INT(lmx_st_n_metadata(f), 2);
    const char *k, *v;
    CHECK(lmx_st_metadata_at(f, 1, &k, &v) && strcmp(k, "note") == 0);
    /* the header is padded with spaces to 8 bytes, data follows at once */
    const uint8_t *raw = lmx_st_map(f)->data;
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | raw[i];
    CHECK_EQ_INT(hl % 8, 0);
    CHECK_EQ_INT(lmx_st_data_offset(f), 8 + hl);
    CHECK_EQ_INT(lmx_st_map(f)->size, 8 + hl + 24 + 8 + 4);
    CHECK(memcmp(raw + 8, "{\"__metadata__\":{\"format\":\"mlx\"", 31) == 0);
    lmx_st_close(f);
    unlink(path);
}

static void test_writer_errors(void) {
    const char *path = tmp_path("w.safetensors");
    int64_t s2[1] = {2};
    float d[2] = {0, 1};
    lmx_st_write_tensor dup[] = {{"x", LMX_F32, 1, s2, d, 8}, {"x", LMX_F32, 1, s2, d, 8}};
    CHECK(lmx_st_write(path, dup, 2, NULL) == LMX_ERR_INVALID_ARG);
    CHECK(strstr(lmx_last_error(), "'x'") != NULL);
    lmx_st_write_tensor badsize[] = {{"x", LMX_F32, 1, s2, d, 4}};
    CHECK(lmx_st_write(path, badsize, 1, NULL) == LMX_ERR_INVALID_ARG);
    lmx_st_write_tensor reserved[] = {{"__metadata__", LMX_F32, 1, s2, d, 8}};
    CHECK(lmx_st_write(path, reserved, 1, NULL) == LMX_ERR_INVALID_ARG);
    CHECK(access(path, F_OK) != 0); /* nothing written */

    /* streaming writer: chunked data, byte count enforced */
    lmx_st_write_tensor ts[] = {{"x", LMX_F32, 1, s2, NULL, 8}, {"y", LMX_F32, 1, s2, NULL, 8}};
    lmx_st_writer *w;
    CHECK_OK(lmx_st_writer_open(path, ts, 2, NULL, &w));
    CHECK_OK(lmx_st_writer_write(w, d, 8));
    CHECK_OK(lmx_st_writer_write(w, d, 3));
    CHECK(lmx_st_writer_finish(w) == LMX_ERR_INVALID_ARG); /* 5 bytes short */
    CHECK(access(path, F_OK) != 0);
    CHECK_OK(lmx_st_writer_open(path, ts, 2, NULL, &w));
    CHECK(lmx_st_writer_write(w, d, 8) == LMX_OK && lmx_st_writer_write(w, d, 4) == LMX_OK);
    CHECK(lmx_st_writer_write(w, d, 8) == LMX_ERR_INVALID_ARG); /* too many */
    CHECK_OK(lmx_st_writer_write(w, (const char *)d + 4, 4));
    CHECK_OK(lmx_st_writer_finish(w));
    lmx_st_file *f;
    CHECK_OK(lmx_st_open(path, &f));
    if (f) {
        const lmx_st_tensor *y = lmx_st_find(f, "y");
        CHECK(y && memcmp(y->data, d, 8) == 0);
        lmx_st_close(f);
    }
    CHECK_OK(lmx_st_writer_open(path, ts, 2, NULL, &w));
    lmx_st_writer_abort(w);
    unlink(path);
    /* no temp files left behind */
    char out[256];
    t_sh(out, sizeof out, "ls -a '%s' | grep -c tmp", tmpdir());
    CHECK_STR(out, "0\n");
}

/* ---- real files ---------------------------------------------------------- */

static void test_real_file(void) {
    const char *path = LMX_TEST_DATA "/hf/llama/model.safetensors";
    if (access(path, R_OK) != 0) {
        path = "/work/shared/data/models/stories260K/derived/hf/model.safetensors";
        if (access(path, R_OK) != 0) {
            t_skip("test_real_file", "no reference-written safetensors file present");
            return;
        }
    }
    lmx_st_file *f;
    CHECK_OK(lmx_st_open(path, &f));
    if (!f) return;
    CHECK(lmx_st_n_tensors(f) > 0);
    size_t total = 0;
    for (size_t i = 0; i < lmx_st_n_tensors(f); i++) {
        const lmx_st_tensor *t = lmx_st_tensor_at(f, i);
        CHECK(lmx_st_find(f, t->name) == t);
        total += t->size;
    }
    /* the reference writer packs the data section with no gaps */
    CHECK_EQ_INT(lmx_st_data_offset(f) + total, lmx_st_map(f)->size);
    lmx_st_close(f);
}

/* ---- malformed input ----------------------------------------------------- */

static void test_truncated(void) {
    const char *path = tmp_path("ok.safetensors");
    write_valid(path);
    FILE *fp = fopen(path, "rb");
    uint8_t buf[4096];
    size_t n = fp ? fread(buf, 1, sizeof buf, fp) : 0;
    if (fp) fclose(fp);
    CHECK(n > 100);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | buf[i];
    size_t cuts[] = {0, 1, 7, 8, 9, 8 + hl / 2, 8 + hl - 1, n - 1, n - 20};
    const char *fields[] = {"length", "length", "length", "past end", "past end",
                            "past end", "past end", "data_offsets", "data_offsets"};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) expect_err_buf(__LINE__, buf, cuts[i], LMX_ERR_FORMAT, fields[i]);
    /* every cut point inside the file fails cleanly */
    for (size_t c = 0; c < n; c++) {
        lmx_st_file *f;
        lmx_status s = lmx_st_open_memory(buf, c, "cut", &f);
        CHECK_MSG(s == LMX_ERR_FORMAT, "cut at %zu: %s", c, lmx_status_str(s));
        if (!s) lmx_st_close(f);
    }
    unlink(path);
}

static void test_header_length(void) {
    size_t n;
    uint8_t *b = make_st("{}", 0, &n);
    uint64_t big[] = {n - 7, 1ull << 63, UINT64_MAX, 3ull << 40};
    for (size_t i = 0; i < 4; i++) {
        for (int k = 0; k < 8; k++) b[k] = (uint8_t)(big[i] >> (8 * k));
        expect_err_buf(__LINE__, b, n, LMX_ERR_FORMAT, "header: length");
    }
    free(b);
    BAD("{}", 0, LMX_OK, "");                           /* empty header is fine */
    BAD(" ", 0, LMX_ERR_FORMAT, "header: length 1");      /* too small */
}

static void test_bad_json(void) {
    BAD("{\"a\": ", 0, LMX_ERR_FORMAT, "header: invalid JSON");
    BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", 4, LMX_ERR_FORMAT, "invalid JSON");
    BAD("[1, 2]  ", 0, LMX_ERR_FORMAT, "header: JSON is not an object");
    BAD("\"str\"", 0, LMX_ERR_FORMAT, "not an object");
    BAD("{}xx", 0, LMX_ERR_FORMAT, "header: trailing bytes");
    BAD("{}  \n ", 0, LMX_OK, "");
    BAD("{\"a\": 3}", 0, LMX_ERR_FORMAT, "tensor 'a': not a JSON object");
    char nul[] = "{}\0  ";
    size_t n;
    uint8_t *b = make_st("{}xxx", 0, &n);
    memcpy(b + 8, nul, 5);
    expect_err_buf(__LINE__, b, n, LMX_ERR_FORMAT, "header: trailing bytes");
    free(b);
}

#define T1(body) "{\"t\":{" body "}}"

static void test_bad_fields(void) {
    /* dtype */
    BAD(T1("\"shape\":[1],\"data_offsets\":[0,4]"), 4, LMX_ERR_FORMAT, "tensor 't': dtype: missing");
    BAD(T1("\"dtype\":3,\"shape\":[1],\"data_offsets\":[0,4]"), 4, LMX_ERR_FORMAT, "tensor 't': dtype: not a string");
    BAD(T1("\"dtype\":\"XYZ\",\"shape\":[1],\"data_offsets\":[0,4]"), 4, LMX_ERR_FORMAT, "tensor 't': dtype: unknown dtype 'XYZ'");
    BAD(T1("\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]"), 1, LMX_ERR_UNSUPPORTED, "tensor 't': dtype");
    /* shape */
    BAD(T1("\"dtype\":\"F32\",\"data_offsets\":[0,4]"), 4, LMX_ERR_FORMAT, "tensor 't': shape: missing");
    BAD(T1("\"dtype\":\"F32\",\"shape\":7,\"data_offsets\":[0,4]"), 4, LMX_ERR_FORMAT, "shape: not an array");
    BAD(T1("\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]"), 4, LMX_ERR_FORMAT, "shape: dimension 0 is negative");
    BAD(T1("\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]"), 4, LMX_ERR_FORMAT, "shape: dimension 0 is not an integer");
    BAD(T1("\"dtype\":\"F32\",\"shape\":[1,1e300],\"data_offsets\":[0,4]"), 4, LMX_ERR_FORMAT, "shape: dimension 1 is too large");
    BAD(T1("\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,4]"), 4, LMX_ERR_FORMAT, "shape: dimension 0 is not a number");
    BAD(T1("\"dtype\":\"F32\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,4]"), 4, LMX_ERR_UNSUPPORTED, "shape: 5 dimensions");
    BAD(T1("\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,4]"), 4,
        LMX_ERR_FORMAT, "tensor 't': shape: element count overflows");
    BAD(T1("\"dtype\":\"F32\",\"shape\":[1,1,1,1],\"data_offsets\":[0,4]"), 4, LMX_OK, "");
    BAD(T1("\"dtype\":\"F32\",\"shape\":[0,9007199254740992],\"data_offsets\":[0,0]"), 0, LMX_OK, "");
    /* data_offsets */
    BAD(T1("\"dtype\":\"F32\",\"shape\":[1]"), 4, LMX_ERR_FORMAT, "tensor 't': data_offsets: missing");
    BAD(T1("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]"), 8, LMX_ERR_FORMAT, "data_offsets: not an array of two");
    BAD(T1("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{}"), 4, LMX_ERR_FORMAT, "data_offsets: not an array");
    BAD(T1("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]"), 4, LMX_ERR_FORMAT, "data_offsets: begin is negative");
    BAD(T1("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.5]"), 8, LMX_ERR_FORMAT, "data_offsets: end is not an integer");
    BAD(T1("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]"), 8, LMX_ERR_FORMAT, "data_offsets: begin 8 after end 4");
    BAD(T1("\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]"), 8, LMX_ERR_FORMAT, "data_offsets: end 16 past data size 8");
    BAD(T1("\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,1e30]"), 8, LMX_ERR_FORMAT, "data_offsets: end is too large");
    /* shape × dtype != span */
    BAD(T1("\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]"), 8, LMX_ERR_FORMAT, "tensor 't': data_offsets: span of 4 bytes but shape × F32 needs 8");
    BAD(T1("\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,4]"), 8, LMX_ERR_FORMAT, "needs 8 bytes");
    /* overlaps and duplicates */
    BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
        "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, LMX_ERR_FORMAT, "overlaps tensor");
    BAD("{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]},"
        "\"a\":{\"dtype\":\"U8\",\"shape\":[5],\"data_offsets\":[0,5]}}", 12, LMX_ERR_FORMAT, "data_offsets: [4, 12) overlaps tensor 'a'");
    BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
        "\"b\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
        "\"c\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12, LMX_OK, "");
    BAD("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
        "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, LMX_ERR_FORMAT, "tensor 'a': name: appears twice");
    /* metadata */
    BAD("{\"__metadata__\":{\"k\":1}}", 0, LMX_ERR_FORMAT, "__metadata__: key 'k': value is not a string");
    BAD("{\"__metadata__\":[]}", 0, LMX_ERR_FORMAT, "__metadata__: not a JSON object");
    /* names with control characters stay on one line */
    BAD("{\"a\\nb\":{\"dtype\":\"F32\"}}", 0, LMX_ERR_FORMAT, "tensor 'a\\x0ab': shape: missing");
}

void run_tests(void) {
    TEST(test_round_trip);
    TEST(test_writer_errors);
    TEST(test_real_file);
    TEST(test_truncated);
    TEST(test_header_length);
    TEST(test_bad_json);
    TEST(test_bad_fields);
    if (g_dir[0]) rmdir(g_dir);
}
