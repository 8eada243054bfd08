/* test_gguf.c - GGUF reader: v1/v2/v3 images built here, real files, and
 * every malformed-header case (mutations of a valid image). */
#include "io/gguf.h"
#include "testing.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- a little GGUF builder ----------------------------------------------- */

typedef struct gb {
    uint8_t *p;
    size_t n, cap;
    int version;
} gb;

static void gb_raw(gb *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 256;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void gb_uint(gb *b, uint64_t v, int bytes) {
    uint8_t t[8];
    for (int i = 0; i < bytes; i++) t[i] = (uint8_t)(v >> (8 * i));
    gb_raw(b, t, (size_t)bytes);
}
static void gb_u32(gb *b, uint32_t v) { gb_uint(b, v, 4); }
static void gb_u64(gb *b, uint64_t v) { gb_uint(b, v, 8); }
static void gb_len(gb *b, uint64_t v) { gb_uint(b, v, b->version == 1 ? 4 : 8); }
static void gb_str(gb *b, const char *s) {
    gb_len(b, strlen(s));
    gb_raw(b, s, strlen(s));
}
static void gb_key(gb *b, const char *k, uint32_t type) {
    gb_str(b, k);
    gb_u32(b, type);
}

/* Offsets of fields the malformed cases poke at. */
typedef struct layout {
    size_t n_tensors, n_kv, arch_len, ints_len, align_val, align_type;
    size_t t_name[3], t_ndims[3], t_ne0[3], t_type[3], t_off[3];
    size_t k1_key; /* first byte of the second key */
    size_t header_end, data_start;
} layout;

static const float T_A[8] = {1, 2, 3, 4, 5, 6, 7, 8};

/* A valid image: 12 kvs of every type (nested array included) and tensors
 * a (F32 [4,2]), b (Q8_0 [32]), c (F16 [8]). */
static gb build(int version, layout *L) {
    gb b = {0};
    b.version = version;
    layout l;
    memset(&l, 0, sizeof l);
    gb_raw(&b, "GGUF", 4);
    gb_u32(&b, (uint32_t)version);
    l.n_tensors = b.n;
    gb_len(&b, 3);
    l.n_kv = b.n;
    gb_len(&b, 12);
    gb_key(&b, "general.architecture", LMX_GGUF_STRING);
    l.arch_len = b.n;
    gb_str(&b, "llama");
    l.k1_key = b.n + (version == 1 ? 4 : 8);
    gb_key(&b, "general.alignment", LMX_GGUF_UINT32);
    l.align_type = b.n - 4;
    l.align_val = b.n;
    gb_u32(&b, 32);
    gb_key(&b, "t.u8", LMX_GGUF_UINT8);
    gb_uint(&b, 200, 1);
    gb_key(&b, "t.i16", LMX_GGUF_INT16);
    gb_uint(&b, (uint16_t)-3, 2);
    gb_key(&b, "t.f32", LMX_GGUF_FLOAT32);
    float f = 1.5f;
    gb_raw(&b, &f, 4);
    gb_key(&b, "t.f64", LMX_GGUF_FLOAT64);
    double d = -2.25;
    gb_raw(&b, &d, 8);
    gb_key(&b, "t.bool", LMX_GGUF_BOOL);
    gb_uint(&b, 1, 1);
    gb_key(&b, "t.u64", LMX_GGUF_UINT64);
    gb_u64(&b, 1ull << 40);
    gb_key(&b, "t.i64", LMX_GGUF_INT64);
    gb_u64(&b, (uint64_t)-5);
    gb_key(&b, "t.strs", LMX_GGUF_ARRAY);
    gb_u32(&b, LMX_GGUF_STRING);
    gb_len(&b, 3);
    gb_str(&b, "a");
    gb_str(&b, "bc");
    gb_str(&b, "");
    gb_key(&b, "t.ints", LMX_GGUF_ARRAY);
    gb_u32(&b, LMX_GGUF_INT32);
    l.ints_len = b.n;
    gb_len(&b, 3);
    for (int i = 1; i <= 3; i++) gb_u32(&b, (uint32_t)(i * 10));
    gb_key(&b, "t.nested", LMX_GGUF_ARRAY);
    gb_u32(&b, LMX_GGUF_ARRAY);
    gb_len(&b, 2);
    gb_u32(&b, LMX_GGUF_UINT8); /* [1, 2] */
    gb_len(&b, 2);
    gb_uint(&b, 1, 1);
    gb_uint(&b, 2, 1);
    gb_u32(&b, LMX_GGUF_STRING); /* ["x"] */
    gb_len(&b, 1);
    gb_str(&b, "x");
    /* tensors */
    const char *names[3] = {"a", "b", "c"};
    uint32_t types[3] = {LMX_GGML_F32, LMX_GGML_Q8_0, LMX_GGML_F16};
    int64_t ne0[3] = {4, 32, 8}, ne1[3] = {2, 1, 1};
    int nd[3] = {2, 1, 1};
    uint64_t offs[3] = {0, 32, 96};
    for (int i = 0; i < 3; i++) {
        l.t_name[i] = b.n + (version == 1 ? 4 : 8);
        gb_str(&b, names[i]);
        l.t_ndims[i] = b.n;
        gb_u32(&b, (uint32_t)nd[i]);
        l.t_ne0[i] = b.n;
        gb_len(&b, (uint64_t)ne0[i]);
        if (nd[i] > 1) gb_len(&b, (uint64_t)ne1[i]);
        l.t_type[i] = b.n;
        gb_u32(&b, types[i]);
        l.t_off[i] = b.n;
        gb_u64(&b, offs[i]);
    }
    l.header_end = b.n;
    while (b.n % 32) gb_uint(&b, 0, 1);
    l.data_start = b.n;
    gb_raw(&b, T_A, 32);
    for (int i = 0; i < 34; i++) gb_uint(&b, (uint64_t)i, 1); /* b */
    while (b.n < l.data_start + 96) gb_uint(&b, 0, 1);
    for (int i = 0; i < 8; i++) gb_uint(&b, 0x3c00, 2); /* c = 1.0 in f16 */
    if (L) *L = l;
    return b;
}

static void put(gb *b, size_t at, uint64_t v, int bytes) {
    for (int i = 0; i < bytes; i++) b->p[at + i] = (uint8_t)(v >> (8 * i));
}

static char g_dir[64];

static const char *tmp_path(const char *name) {
    static char p[256];
    if (!g_dir[0]) {
        strcpy(g_dir, "/tmp/lmx_test_gguf_XXXXXX");
        if (!mkdtemp(g_dir)) g_dir[0] = 0;
    }
    snprintf(p, sizeof p, "%s/%s", g_dir, name);
    return p;
}

/* Opens the image from a file and from memory; checks status and message. */
static void expect(int line, const uint8_t *p, size_t n, lmx_status want, const char *field) {
    const char *path = tmp_path("bad.gguf");
    FILE *f = fopen(path, "wb");
    if (f) {
        if (n) fwrite(p, 1, n, f);
        fclose(f);
    }
    lmx_gguf *g = (lmx_gguf *)1;
    lmx_status s = lmx_gguf_open(path, &g);
    const char *msg = lmx_last_error();
    CHECK_MSG(s == want, "line %d: status %s, want %s (%s)", line, lmx_status_str(s), lmx_status_str(want), msg);
    if (want != LMX_OK) {
        CHECK_MSG(g == NULL, "line %d: out not NULL on failure", line);
        CHECK_MSG(strstr(msg, path) != NULL, "line %d: message lacks the path: %s", line, msg);
        CHECK_MSG(strstr(msg, field) != NULL, "line %d: message lacks '%s': %s", line, field, msg);
        CHECK_MSG(strchr(msg, '\n') == NULL, "line %d: message has a newline", line);
    }
    if (s == LMX_OK) lmx_gguf_close(g);
    s = lmx_gguf_open_memory(p, n, "mem.gguf", &g);
    CHECK_MSG(s == want, "line %d (memory): status %s, want %s", line, lmx_status_str(s), lmx_status_str(want));
    if (s == LMX_OK) lmx_gguf_close(g);
    unlink(path);
}
#define EXPECT(b, st, field) expect(__LINE__, (b).p, (b).n, st, field)

/* ---- valid images ------------------------------------------------------------ */

static void check_valid(int version) {
    gb b = build(version, NULL);
    lmx_gguf *g;
    CHECK_OK(lmx_gguf_open_memory(b.p, b.n, "v.gguf", &g));
    if (!g) {
        free(b.p);
        return;
    }
    CHECK_EQ_INT(lmx_gguf_version(g), version);
    CHECK(lmx_gguf_map(g) == NULL);
    CHECK_EQ_INT(lmx_gguf_n_kv(g), 12);
    CHECK_EQ_INT(lmx_gguf_alignment(g), 32);
    lmx_gguf_str s;
    CHECK(lmx_gguf_get_str(g, "general.architecture", &s) && s.len == 5 && memcmp(s.ptr, "llama", 5) == 0);
    int64_t v;
    CHECK(lmx_gguf_get_i64(g, "t.u8", &v) && v == 200);
    CHECK(lmx_gguf_get_i64(g, "t.i16", &v) && v == -3);
    CHECK(lmx_gguf_get_i64(g, "t.u64", &v) && v == (int64_t)1 << 40);
    CHECK(lmx_gguf_get_i64(g, "t.i64", &v) && v == -5);
    CHECK(lmx_gguf_get_i64(g, "general.alignment", &v) && v == 32);
    CHECK(!lmx_gguf_get_i64(g, "t.f32", &v));
    CHECK(!lmx_gguf_get_i64(g, "nope", &v));
    float f;
    CHECK(lmx_gguf_get_f32(g, "t.f32", &f) && f == 1.5f);
    CHECK(lmx_gguf_get_f32(g, "t.f64", &f) && f == -2.25f);
    CHECK(!lmx_gguf_get_f32(g, "t.u8", &f));
    bool bo;
    CHECK(lmx_gguf_get_bool(g, "t.bool", &bo) && bo);
    CHECK(!lmx_gguf_get_str(g, "t.u8", &s));
    lmx_gguf_type et;
    uint64_t n;
    CHECK(lmx_gguf_get_arr(g, "t.strs", &et, &n) && et == LMX_GGUF_STRING && n == 3);
    s = lmx_gguf_arr_str(g, "t.strs", 1);
    CHECK(s.len == 2 && memcmp(s.ptr, "bc", 2) == 0);
    s = lmx_gguf_arr_str(g, "t.strs", 2);
    CHECK(s.len == 0 && s.ptr != NULL);
    CHECK(lmx_gguf_arr_str(g, "t.strs", 3).ptr == NULL);
    CHECK(lmx_gguf_arr_str(g, "t.ints", 0).ptr == NULL);
    CHECK(lmx_gguf_get_arr(g, "t.ints", &et, &n) && et == LMX_GGUF_INT32 && n == 3);
    const uint8_t *ints = lmx_gguf_arr_data(g, "t.ints");
    int32_t i2;
    memcpy(&i2, ints + 8, 4);
    CHECK_EQ_INT(i2, 30);
    CHECK(lmx_gguf_get_arr(g, "t.nested", &et, &n) && et == LMX_GGUF_ARRAY && n == 2);
    int64_t ki = lmx_gguf_find_key(g, "t.nested");
    CHECK(ki == 11 && strcmp(lmx_gguf_key(g, ki), "t.nested") == 0 && lmx_gguf_kv_type(g, ki) == LMX_GGUF_ARRAY);
    CHECK(lmx_gguf_find_key(g, "t.nest") == -1);
    CHECK_EQ_INT(lmx_gguf_n_tensors(g), 3);
    const lmx_gguf_tensor *a = lmx_gguf_find_tensor(g, "a");
    CHECK(a && a->ggml_type == LMX_GGML_F32 && a->n_dims == 2 && a->ne[0] == 4 && a->ne[1] == 2 && a->ne[2] == 1);
    CHECK(a && a->size == 32 && memcmp(a->data, T_A, 32) == 0);
    const lmx_gguf_tensor *tb = lmx_gguf_find_tensor(g, "b");
    CHECK(tb && tb->size == 34 && tb->offset == 32 && tb->data[33] == 33);
    const lmx_gguf_tensor *c = lmx_gguf_find_tensor(g, "c");
    CHECK(c && c->size == 16 && c->data == b.p + lmx_gguf_data_offset(g) + 96);
    CHECK(lmx_gguf_tensor_at(g, 2) == c && lmx_gguf_tensor_at(g, 3) == NULL);
    CHECK(lmx_gguf_find_tensor(g, "d") == NULL);
    lmx_gguf_close(g);
    free(b.p);
}

static void test_valid_v1(void) { check_valid(1); }
static void test_valid_v2(void) { check_valid(2); }
static void test_valid_v3(void) { check_valid(3); }

static void test_type_traits(void) {
    int64_t blk;
    size_t sz;
    const char *nm;
    struct { uint32_t t; int64_t blk; size_t sz; } want[] = {
        {LMX_GGML_F32, 1, 4},     {LMX_GGML_F16, 1, 2},     {LMX_GGML_BF16, 1, 2},    {LMX_GGML_Q4_0, 32, 18},
        {LMX_GGML_Q4_1, 32, 20},  {LMX_GGML_Q5_0, 32, 22},  {LMX_GGML_Q5_1, 32, 24},  {LMX_GGML_Q8_0, 32, 34},
        {LMX_GGML_Q2_K, 256, 84}, {LMX_GGML_Q3_K, 256, 110}, {LMX_GGML_Q4_K, 256, 144}, {LMX_GGML_Q5_K, 256, 176},
        {LMX_GGML_Q6_K, 256, 210}, {LMX_GGML_Q8_K, 256, 292}, {LMX_GGML_I8, 1, 1},     {LMX_GGML_I16, 1, 2},
        {LMX_GGML_I32, 1, 4},     {LMX_GGML_I64, 1, 8},     {LMX_GGML_F64, 1, 8},
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        CHECK_MSG(lmx_ggml_type_info(want[i].t, &nm, &blk, &sz) && blk == want[i].blk && sz == want[i].sz,
                  "ggml type %u", want[i].t);
    }
    CHECK(lmx_ggml_type_info(LMX_GGML_Q4_K, &nm, NULL, NULL) && strcmp(nm, "Q4_K") == 0);
    CHECK(!lmx_ggml_type_info(4, NULL, NULL, NULL)); /* removed Q4_2 */
    CHECK(!lmx_ggml_type_info(1000, NULL, NULL, NULL));
}

/* ---- malformed images --------------------------------------------------------- */

static void test_bad_header(void) {
    layout L;
    gb b = build(3, &L);
    gb m = {malloc(b.n), b.n, b.n, 3};
#define RESET() memcpy(m.p, b.p, b.n), m.n = b.n
    RESET();
    memcpy(m.p, "GGUG", 4);
    EXPECT(m, LMX_ERR_FORMAT, "magic");
    RESET();
    put(&m, 4, 0, 4);
    EXPECT(m, LMX_ERR_FORMAT, "version: 0");
    RESET();
    put(&m, 4, 4, 4);
    EXPECT(m, LMX_ERR_UNSUPPORTED, "version: 4");
    RESET();
    put(&m, 4, 0x03000000, 4);
    EXPECT(m, LMX_ERR_UNSUPPORTED, "big-endian");
    /* truncated at every 1/16th of the header, and in the data */
    for (int k = 0; k < 16; k++) {
        RESET();
        m.n = L.header_end * (size_t)k / 16;
        EXPECT(m, LMX_ERR_FORMAT, k == 0 ? "magic" : ": ");
    }
    for (size_t cut = 0; cut < b.n; cut++) { /* every cut point fails cleanly */
        lmx_gguf *g;
        lmx_status s = lmx_gguf_open_memory(b.p, cut, "cut", &g);
        CHECK_MSG(s == LMX_ERR_FORMAT, "cut at %zu: %s", cut, lmx_status_str(s));
        if (!s) lmx_gguf_close(g);
    }
    RESET();
    m.n = b.n - 1;
    EXPECT(m, LMX_ERR_FORMAT, "tensor 'c': offset");
    /* absurd counts and lengths */
    RESET();
    put(&m, L.n_kv, 1ull << 62, 8);
    EXPECT(m, LMX_ERR_FORMAT, "header: n_kv");
    RESET();
    put(&m, L.n_tensors, 1ull << 62, 8);
    EXPECT(m, LMX_ERR_FORMAT, "header: n_tensors");
    RESET();
    put(&m, L.n_tensors, UINT64_MAX, 8);
    EXPECT(m, LMX_ERR_FORMAT, "n_tensors");
    RESET();
    put(&m, L.arch_len, 1ull << 40, 8);
    EXPECT(m, LMX_ERR_FORMAT, "kv 'general.architecture': value: string length");
    RESET();
    put(&m, L.arch_len, UINT64_MAX, 8);
    EXPECT(m, LMX_ERR_FORMAT, "string length");
    RESET();
    put(&m, L.ints_len, 1ull << 60, 8);
    EXPECT(m, LMX_ERR_FORMAT, "kv 't.ints': array length");
    RESET();
    put(&m, L.ints_len - 4, 77, 4);
    EXPECT(m, LMX_ERR_FORMAT, "kv 't.ints': array element type: unknown value type 77");
    RESET();
    put(&m, L.align_type, 13, 4);
    EXPECT(m, LMX_ERR_FORMAT, "kv 'general.alignment': type: unknown value type 13");
    RESET();
    memcpy(m.p + L.k1_key, "t.u8\0\0\0\0\0\0\0\0\0\0\0\0\0", 17);
    EXPECT(m, LMX_ERR_FORMAT, "key: contains a NUL byte");
    free(m.p);
    free(b.p);
}

static void test_bad_alignment(void) {
    layout L;
    gb b = build(3, &L);
    uint32_t bad[] = {0, 3, 48, 0x80000001u};
    for (int i = 0; i < 4; i++) {
        put(&b, L.align_val, bad[i], 4);
        EXPECT(b, LMX_ERR_FORMAT, "general.alignment");
    }
    put(&b, L.align_val, 32, 4);
    put(&b, L.align_type, LMX_GGUF_FLOAT32, 4);
    EXPECT(b, LMX_ERR_FORMAT, "general.alignment: type float32");
    put(&b, L.align_type, LMX_GGUF_UINT32, 4);
    EXPECT(b, LMX_OK, "");
    /* a larger alignment the offsets do not respect */
    put(&b, L.align_val, 64, 4);
    EXPECT(b, LMX_ERR_FORMAT, "tensor 'b': offset: 32 is not a multiple of the alignment 64");
    free(b.p);
}

static void test_bad_tensors(void) {
    layout L;
    gb b = build(3, &L);
    gb m = {malloc(b.n), b.n, b.n, 3};
    RESET();
    put(&m, L.t_off[1], 33, 8);
    EXPECT(m, LMX_ERR_FORMAT, "tensor 'b': offset: 33 is not a multiple");
    RESET();
    put(&m, L.t_off[1], 1ull << 50, 8);
    EXPECT(m, LMX_ERR_FORMAT, "tensor 'b': offset: [1125899906842624");
    RESET();
    put(&m, L.t_off[2], UINT64_MAX - 31, 8);
    EXPECT(m, LMX_ERR_FORMAT, "tensor 'c': offset");
    RESET();
    put(&m, L.t_off[2], 32, 8);
    EXPECT(m, LMX_ERR_FORMAT, "overlaps tensor");
    RESET();
    put(&m, L.t_ndims[0], 5, 4);
    EXPECT(m, LMX_ERR_FORMAT, "tensor 'a': n_dims: 5");
    RESET();
    put(&m, L.t_ndims[0], 0xffffffffu, 4);
    EXPECT(m, LMX_ERR_FORMAT, "n_dims");
    RESET();
    put(&m, L.t_type[2], 200, 4);
    EXPECT(m, LMX_ERR_UNSUPPORTED, "tensor 'c': type: unknown ggml type 200");
    RESET();
    put(&m, L.t_type[2], 4, 4); /* Q4_2: removed from ggml */
    EXPECT(m, LMX_ERR_UNSUPPORTED, "tensor 'c': type");
    RESET();
    m.p[L.t_name[1]] = 'a';
    EXPECT(m, LMX_ERR_FORMAT, "tensor 'a': name: appears twice");
    RESET();
    put(&m, L.t_ne0[1], 31, 8);
    EXPECT(m, LMX_ERR_FORMAT, "tensor 'b': ne[0]: 31 is not a multiple of the Q8_0 block size 32");
    RESET();
    put(&m, L.t_ne0[0], 1ull << 63, 8);
    EXPECT(m, LMX_ERR_FORMAT, "tensor 'a': ne[0]");
    RESET();
    put(&m, L.t_ne0[0], 1ull << 40, 8);
    put(&m, L.t_ne0[0] + 8, 1ull << 40, 8);
    EXPECT(m, LMX_ERR_FORMAT, "tensor 'a': ne: element count overflows");
    RESET();
    put(&m, L.t_type[0], LMX_GGML_F64, 4); /* size doubles: now overlaps b */
    EXPECT(m, LMX_ERR_FORMAT, "overlaps");
    free(m.p);
    free(b.p);
}

static void test_bad_kvs(void) {
    /* duplicate keys */
    gb b = {0};
    b.version = 3;
    gb_raw(&b, "GGUF", 4);
    gb_u32(&b, 3);
    gb_u64(&b, 0);
    gb_u64(&b, 2);
    gb_key(&b, "k", LMX_GGUF_UINT8);
    gb_uint(&b, 1, 1);
    gb_key(&b, "k", LMX_GGUF_UINT8);
    gb_uint(&b, 2, 1);
    EXPECT(b, LMX_ERR_FORMAT, "kv 'k': key: appears twice");
    free(b.p);
    /* arrays nested 20 deep */
    b = (gb){0};
    b.version = 3;
    gb_raw(&b, "GGUF", 4);
    gb_u32(&b, 3);
    gb_u64(&b, 0);
    gb_u64(&b, 1);
    gb_key(&b, "deep", LMX_GGUF_ARRAY);
    for (int i = 0; i < 20; i++) {
        gb_u32(&b, LMX_GGUF_ARRAY);
        gb_u64(&b, 1);
    }
    gb_u32(&b, LMX_GGUF_UINT8);
    gb_u64(&b, 0);
    EXPECT(b, LMX_ERR_UNSUPPORTED, "kv 'deep': value: arrays nested deeper");
    free(b.p);
    /* an array of 2^40 empty arrays: bounded by the bytes left */
    b = (gb){0};
    b.version = 3;
    gb_raw(&b, "GGUF", 4);
    gb_u32(&b, 3);
    gb_u64(&b, 0);
    gb_u64(&b, 1);
    gb_key(&b, "many", LMX_GGUF_ARRAY);
    gb_u32(&b, LMX_GGUF_ARRAY);
    gb_u64(&b, 1ull << 40);
    for (int i = 0; i < 4; i++) gb_u64(&b, 0);
    EXPECT(b, LMX_ERR_FORMAT, "kv 'many': array length");
    free(b.p);
    /* v1 header with u32 counts that lie */
    b = (gb){0};
    b.version = 1;
    gb_raw(&b, "GGUF", 4);
    gb_u32(&b, 1);
    gb_u32(&b, 0);
    gb_u32(&b, 0xffffffffu);
    EXPECT(b, LMX_ERR_FORMAT, "n_kv");
    free(b.p);
    /* a GGUF with no tensors and no padding (vocab files) is valid */
    b = (gb){0};
    b.version = 3;
    gb_raw(&b, "GGUF", 4);
    gb_u32(&b, 3);
    gb_u64(&b, 0);
    gb_u64(&b, 1);
    gb_key(&b, "x", LMX_GGUF_STRING);
    gb_str(&b, "yz");
    EXPECT(b, LMX_OK, "");
    free(b.p);
}

/* ---- real files ---------------------------------------------------------------- */

static lmx_gguf *open_or_skip(const char *name, const char *path) {
    if (access(path, R_OK) != 0) {
        t_skip(name, "file not present");
        return NULL;
    }
    lmx_gguf *g = NULL;
    CHECK_OK(lmx_gguf_open(path, &g));
    return g;
}

static void test_stories_v3_v1(void) {
    lmx_gguf *g3 = open_or_skip("test_stories_v3_v1", LMX_SOURCE_DIR "/models/stories260K.gguf");
    lmx_gguf *g1 = open_or_skip("test_stories_v3_v1", LMX_TEST_DATA "/models/tinyllamas-stories-260k-f32.gguf");
    if (g3 && g1) {
        CHECK_EQ_INT(lmx_gguf_version(g3), 3);
        CHECK_EQ_INT(lmx_gguf_version(g1), 1);
        CHECK_EQ_INT(lmx_gguf_n_kv(g3), lmx_gguf_n_kv(g1));
        CHECK_EQ_INT(lmx_gguf_n_tensors(g3), 48);
        CHECK_EQ_INT(lmx_gguf_n_tensors(g1), 48);
        int64_t v;
        CHECK(lmx_gguf_get_i64(g1, "llama.embedding_length", &v) && v == 64);
        CHECK(lmx_gguf_get_i64(g3, "llama.block_count", &v) && v == 5);
        uint64_t n1 = 0, n3 = 0;
        lmx_gguf_type et;
        CHECK(lmx_gguf_get_arr(g1, "tokenizer.ggml.tokens", &et, &n1) && et == LMX_GGUF_STRING);
        CHECK(lmx_gguf_get_arr(g3, "tokenizer.ggml.tokens", &et, &n3) && n1 == 512 && n3 == 512);
        for (uint64_t j = 0; j < n1 && j < n3; j++) {
            lmx_gguf_str a = lmx_gguf_arr_str(g1, "tokenizer.ggml.tokens", j);
            lmx_gguf_str b = lmx_gguf_arr_str(g3, "tokenizer.ggml.tokens", j);
            CHECK_MSG(a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0, "token %llu", (unsigned long long)j);
        }
        for (int64_t i = 0; i < lmx_gguf_n_tensors(g3); i++) {
            const lmx_gguf_tensor *t3 = lmx_gguf_tensor_at(g3, i);
            const lmx_gguf_tensor *t1 = lmx_gguf_find_tensor(g1, t3->name);
            CHECK_MSG(t1 && t1->size == t3->size && t1->ggml_type == t3->ggml_type &&
                          memcmp(t1->ne, t3->ne, sizeof t1->ne) == 0 && memcmp(t1->data, t3->data, t1->size) == 0,
                      "tensor %s differs between v1 and v3", t3->name);
            CHECK(lmx_gguf_find_tensor(g3, t3->name) == t3);
        }
        const lmx_gguf_tensor *te = lmx_gguf_find_tensor(g3, "token_embd.weight");
        CHECK(te && te->ggml_type == LMX_GGML_F32 && te->ne[0] == 64 && te->ne[1] == 512);
        CHECK(lmx_gguf_map(g3) && lmx_gguf_map(g3)->size == 1185344);
    }
    lmx_gguf_close(g3);
    lmx_gguf_close(g1);
}

static void test_f16_model(void) {
    lmx_gguf *g = open_or_skip("test_f16_model", "/work/shared/data/models/llama-2-tiny-random/llama-2-tiny-random.gguf");
    if (!g) return;
    int n_f16 = 0;
    for (int64_t i = 0; i < lmx_gguf_n_tensors(g); i++) n_f16 += lmx_gguf_tensor_at(g, i)->ggml_type == LMX_GGML_F16;
    CHECK(n_f16 > 0);
    int64_t ft;
    CHECK(lmx_gguf_get_i64(g, "general.file_type", &ft) && ft == 1);
    lmx_gguf_close(g);
}

static void test_vocab_gguf(void) {
    lmx_gguf *g = open_or_skip("test_vocab_gguf", LMX_TEST_DATA "/tokenizers/ggml-vocab-phi-3.gguf");
    if (!g) return;
    CHECK_EQ_INT(lmx_gguf_n_tensors(g), 0);
    uint64_t n;
    lmx_gguf_type et;
    CHECK(lmx_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n) && et == LMX_GGUF_STRING && n == 32064);
    lmx_gguf_str s = lmx_gguf_arr_str(g, "tokenizer.ggml.tokens", 1);
    CHECK(s.len == 3 && memcmp(s.ptr, "<s>", 3) == 0);
    CHECK(lmx_gguf_get_arr(g, "tokenizer.ggml.scores", &et, &n) && et == LMX_GGUF_FLOAT32 && n == 32064);
    int64_t bos;
    CHECK(lmx_gguf_get_i64(g, "tokenizer.ggml.bos_token_id", &bos) && bos == 1);
    lmx_gguf_close(g);
}

static void test_writer_round_trip(void) {
    const char *path = tmp_path("w.gguf");
    uint32_t align = 64, blocks = 5;
    float eps = 1e-5f, scores[3] = {0.f, -1.f, -2.5f};
    uint8_t yes = 1;
    lmx_gguf_str toks[3] = {{"<s>", 3}, {"hi", 2}, {"", 0}};
    lmx_gguf_write_kv kvs[] = {
        {"general.architecture", LMX_GGUF_STRING, 0, 5, "llama"},
        {"general.alignment", LMX_GGUF_UINT32, 0, 0, &align},
        {"llama.block_count", LMX_GGUF_UINT32, 0, 0, &blocks},
        {"llama.attention.layer_norm_rms_epsilon", LMX_GGUF_FLOAT32, 0, 0, &eps},
        {"tokenizer.ggml.add_bos_token", LMX_GGUF_BOOL, 0, 0, &yes},
        {"tokenizer.ggml.tokens", LMX_GGUF_ARRAY, LMX_GGUF_STRING, 3, toks},
        {"tokenizer.ggml.scores", LMX_GGUF_ARRAY, LMX_GGUF_FLOAT32, 3, scores},
    };
    uint8_t q[2 * 18];
    for (int i = 0; i < 36; i++) q[i] = (uint8_t)(i * 7);
    uint16_t h[3] = {0x3c00, 0x4000, 0xc000};
    lmx_gguf_write_tensor ts[] = {
        {"token_embd.weight", LMX_GGML_F32, 2, {4, 2, 1, 1}, T_A, 32},
        {"blk.0.ffn_up.weight", LMX_GGML_Q4_0, 1, {64, 1, 1, 1}, q, 36},
        {"output_norm.weight", LMX_GGML_F16, 1, {3, 1, 1, 1}, h, 6},
    };
    CHECK_OK(lmx_gguf_write(path, kvs, 7, ts, 3));
    lmx_gguf *g = NULL;
    CHECK_OK(lmx_gguf_open(path, &g));
    if (g) {
        CHECK_EQ_INT(lmx_gguf_version(g), 3);
        CHECK_EQ_INT(lmx_gguf_alignment(g), 64);
        CHECK_EQ_INT(lmx_gguf_data_offset(g) % 64, 0);
        int64_t v;
        float f;
        bool b;
        lmx_gguf_str s;
        CHECK(lmx_gguf_get_i64(g, "llama.block_count", &v) && v == 5);
        CHECK(lmx_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &f) && f == eps);
        CHECK(lmx_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b) && b);
        CHECK(lmx_gguf_get_str(g, "general.architecture", &s) && s.len == 5 && !memcmp(s.ptr, "llama", 5));
        s = lmx_gguf_arr_str(g, "tokenizer.ggml.tokens", 1);
        CHECK(s.len == 2 && !memcmp(s.ptr, "hi", 2));
        CHECK(memcmp(lmx_gguf_arr_data(g, "tokenizer.ggml.scores"), scores, 12) == 0);
        for (int i = 0; i < 3; i++) {
            const lmx_gguf_tensor *t = lmx_gguf_tensor_at(g, i);
            CHECK(t && strcmp(t->name, ts[i].name) == 0 && t->ggml_type == ts[i].ggml_type &&
                  t->size == ts[i].size && t->offset % 64 == 0 && memcmp(t->data, ts[i].data, t->size) == 0);
        }
        lmx_gguf_close(g);
    }
    /* bad arguments leave no file */
    unlink(path);
    lmx_gguf_write_tensor dup[] = {ts[0], ts[0]};
    CHECK(lmx_gguf_write(path, kvs, 1, dup, 2) == LMX_ERR_INVALID_ARG);
    CHECK(strstr(lmx_last_error(), "token_embd.weight") != NULL);
    lmx_gguf_write_tensor badsize = ts[1];
    badsize.size = 35;
    CHECK(lmx_gguf_write(path, kvs, 1, &badsize, 1) == LMX_ERR_INVALID_ARG);
    lmx_gguf_write_kv dupk[] = {kvs[0], kvs[0]};
    CHECK(lmx_gguf_write(path, dupk, 2, NULL, 0) == LMX_ERR_INVALID_ARG);
    CHECK(access(path, F_OK) != 0);
}

static void test_open_errors(void) {
    lmx_gguf *g = (lmx_gguf *)1;
    CHECK(lmx_gguf_open("/nonexistent/x.gguf", &g) == LMX_ERR_IO && g == NULL);
    CHECK(strstr(lmx_last_error(), "/nonexistent/x.gguf") != NULL);
    CHECK(lmx_gguf_open_memory("", 0, "empty.gguf", &g) == LMX_ERR_FORMAT);
    CHECK(strstr(lmx_last_error(), "empty.gguf: magic") != NULL);
}

void run_tests(void) {
    TEST(test_valid_v1);
    TEST(test_valid_v2);
    TEST(test_valid_v3);
    TEST(test_type_traits);
    TEST(test_bad_header);
    TEST(test_bad_alignment);
    TEST(test_bad_tensors);
    TEST(test_bad_kvs);
    TEST(test_stories_v3_v1);
    TEST(test_f16_model);
    TEST(test_vocab_gguf);
    TEST(test_writer_round_trip);
    TEST(test_open_errors);
    if (g_dir[0]) rmdir(g_dir);
}
