/* test_tokenizer_bad.c - bad input to the tokenizer and the tokenize /
 * detokenize CLI commands: malformed tokenizer.json, unknown component types,
 * invalid UTF-8 (replaced by U+FFFD), bad ids; small hand-made tokenizers for
 * the components the real files do not use. */
#include "testing.h"
#include "tokenizer/tok_internal.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmpdir[64];

static char *write_tmp(const char *name, const char *content) {
    char *p = lmx_path_join(tmpdir, name);
    FILE *f = fopen(p, "wb");
    fputs(content, f);
    fclose(f);
    return p;
}

/* A tiny BPE tokenizer.json; the %s slots take the normalizer, the
 * pre-tokenizer, the decoder and the post-processor. */
static char *tiny(const char *name, const char *norm, const char *pre, const char *dec, const char *post) {
    char buf[4096];
    snprintf(buf, sizeof buf,
             "{\"version\":\"1.0\",\"added_tokens\":[{\"id\":9,\"content\":\"<eos>\",\"special\":true,"
             "\"lstrip\":false,\"rstrip\":false,\"normalized\":false,\"single_word\":false},"
             "{\"id\":10,\"content\":\"[X]\",\"special\":false,\"lstrip\":true,\"rstrip\":true,"
             "\"normalized\":false,\"single_word\":false}],"
             "\"normalizer\":%s,\"pre_tokenizer\":%s,\"post_processor\":%s,\"decoder\":%s,"
             "\"model\":{\"type\":\"BPE\",\"unk_token\":\"?\",\"fuse_unk\":true,\"vocab\":{\"?\":0,\"a\":1,\"b\":2,"
             "\"ab\":3,\" \":4,\"c\":5,\"abc\":6,\"1\":7,\"2\":8},\"merges\":[\"a b\",\"ab c\"]}}",
             norm, pre, post, dec);
    return write_tmp(name, buf);
}

static void expect_ids(const lmx_tokenizer *t, const char *text, bool special, const int32_t *exp, size_t n) {
    int32_t *ids = NULL;
    size_t k = 0;
    CHECK_OK(lmx_tokenize(t, text, strlen(text), special, &ids, &k));
    bool same = k == n && (n == 0 || !memcmp(ids, exp, n * sizeof *ids));
    if (!same) {
        fprintf(stderr, "  \"%s\" ->", text);
        for (size_t i = 0; i < k; i++) fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "\n");
    }
    CHECK(same);
    lmx_free(ids);
}

static void test_malformed(void) {
    lmx_tokenizer *t = NULL;
    char *p = write_tmp("bad1.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [");
    CHECK_EQ_INT(lmx_tokenizer_load(p, &t), LMX_ERR_FORMAT);
    CHECK(t == NULL);
    CHECK(strstr(lmx_last_error(), "bad1.json") != NULL);
    free(p);
    p = write_tmp("bad2.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a zz\"]}}");
    CHECK_EQ_INT(lmx_tokenizer_load(p, &t), LMX_ERR_FORMAT);
    CHECK(strstr(lmx_last_error(), "merges") != NULL);
    free(p);
    p = write_tmp("bad3.json", "[1, 2, 3]");
    CHECK_EQ_INT(lmx_tokenizer_load(p, &t), LMX_ERR_FORMAT);
    free(p);
    p = write_tmp("bad4.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -4}, \"merges\": []}}");
    CHECK_EQ_INT(lmx_tokenizer_load(p, &t), LMX_ERR_FORMAT);
    free(p);
    CHECK_EQ_INT(lmx_tokenizer_load("/nonexistent/tokenizer.json", &t), LMX_ERR_NOT_FOUND);
    CHECK_EQ_INT(lmx_tokenizer_load(tmpdir, &t), LMX_ERR_NOT_FOUND); /* folder without tokenizer.json */
}

static void test_unknown_types(void) {
    lmx_tokenizer *t = NULL;
    char *p = tiny("u1.json", "{\"type\":\"Precompiled\"}", "null", "null", "null");
    CHECK_EQ_INT(lmx_tokenizer_load(p, &t), LMX_ERR_UNSUPPORTED);
    CHECK(strstr(lmx_last_error(), "Precompiled") && strstr(lmx_last_error(), "u1.json"));
    free(p);
    p = tiny("u2.json", "null", "{\"type\":\"UnicodeScripts\"}", "null", "null");
    CHECK_EQ_INT(lmx_tokenizer_load(p, &t), LMX_ERR_UNSUPPORTED);
    CHECK(strstr(lmx_last_error(), "UnicodeScripts") != NULL);
    free(p);
    p = tiny("u3.json", "null", "null", "{\"type\":\"CTC\"}", "null");
    CHECK_EQ_INT(lmx_tokenizer_load(p, &t), LMX_ERR_UNSUPPORTED);
    CHECK(strstr(lmx_last_error(), "CTC") != NULL);
    free(p);
    p = tiny("u4.json", "null", "null", "null", "{\"type\":\"Mystery\"}");
    CHECK_EQ_INT(lmx_tokenizer_load(p, &t), LMX_ERR_UNSUPPORTED);
    free(p);
    p = write_tmp("u5.json", "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}");
    CHECK_EQ_INT(lmx_tokenizer_load(p, &t), LMX_ERR_UNSUPPORTED);
    CHECK(strstr(lmx_last_error(), "Unigram") != NULL);
    free(p);
    p = tiny("u6.json", "null", "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(unclosed\"},\"behavior\":\"Isolated\"}",
             "null", "null");
    CHECK_EQ_INT(lmx_tokenizer_load(p, &t), LMX_ERR_FORMAT);
    free(p);
    CHECK(t == NULL);
}

static void test_components(void) {
    lmx_tokenizer *t = NULL;
    /* Lowercase + Strip; WhitespaceSplit; Fuse decoder; template post-processor */
    char *p = tiny("c1.json",
                   "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Lowercase\"},{\"type\":\"Strip\","
                   "\"strip_left\":true,\"strip_right\":true}]}",
                   "{\"type\":\"WhitespaceSplit\"}", "{\"type\":\"Fuse\"}",
                   "{\"type\":\"TemplateProcessing\",\"single\":[{\"Sequence\":{\"id\":\"A\",\"type_id\":0}},"
                   "{\"SpecialToken\":{\"id\":\"<eos>\",\"type_id\":0}}],\"special_tokens\":{\"<eos>\":"
                   "{\"id\":\"<eos>\",\"ids\":[9],\"tokens\":[\"<eos>\"]}}}");
    CHECK_OK(lmx_tokenizer_load(p, &t));
    free(p);
    if (t) {
        expect_ids(t, "  ABC ab  ", false, (const int32_t[]){6, 3}, 2);
        expect_ids(t, "  ABC ab  ", true, (const int32_t[]){6, 3, 9}, 3);
        expect_ids(t, "abc<eos>c", false, (const int32_t[]){6, 9, 5}, 3);
        /* unknown chars fuse into one unk; lstrip/rstrip eat the spaces */
        expect_ids(t, "xyz a  [X]  b", false, (const int32_t[]){0, 1, 10, 2}, 4);
        char *s;
        CHECK_OK(lmx_detokenize(t, (const int32_t[]){6, 3, 9}, 3, &s));
        CHECK_STR(s, "abcab<eos>");
        lmx_free(s);
        CHECK_EQ_INT(lmx_detokenize(t, (const int32_t[]){-1}, 1, &s), LMX_ERR_INVALID_ARG);
        CHECK_OK(lmx_detokenize(t, (const int32_t[]){1, 999999, 2}, 3, &s)); /* unknown id: "" */
        CHECK_STR(s, "ab");
        lmx_free(s);
        lmx_tokenizer_free(t);
    }
    /* Digits (individual) + Punctuation, Metaspace; Replace/Strip decoders */
    p = tiny("c2.json", "null",
             "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\",\"individual_digits\":true},"
             "{\"type\":\"Split\",\"pattern\":{\"String\":\"c\"},\"behavior\":\"MergedWithPrevious\"}]}",
             "{\"type\":\"Sequence\",\"decoders\":[{\"type\":\"Replace\",\"pattern\":{\"String\":\"ab\"},"
             "\"content\":\"AB\"},{\"type\":\"Fuse\"},{\"type\":\"Strip\",\"content\":\"c\",\"start\":0,\"stop\":1}]}",
             "null");
    CHECK_OK(lmx_tokenizer_load(p, &t));
    free(p);
    if (t) {
        expect_ids(t, "12abc", false, (const int32_t[]){7, 8, 6}, 3);
        expect_ids(t, "abcab", false, (const int32_t[]){6, 3}, 2);
        char *s;
        CHECK_OK(lmx_detokenize(t, (const int32_t[]){3, 5, 5}, 3, &s));
        CHECK_STR(s, "ABc");
        lmx_free(s);
        lmx_tokenizer_free(t);
    }
}

/* Documented behaviour: each maximal ill-formed UTF-8 subsequence becomes one
 * U+FFFD before encoding (Python's errors="replace"); nothing crashes. */
static void test_invalid_utf8(void) {
    char *dir = lmx_path_join(LMX_TEST_DATA, "tokenizers/llama.cpp-vocab/ggml-vocab-gpt-2.gguf");
    lmx_tokenizer *t = NULL;
    CHECK_OK(lmx_tokenizer_load(dir, &t));
    free(dir);
    if (!t) return;
    const char bad[] = "a\xff\xfe b\xe6\x97 c\xf0\x9f\x98";
    int32_t *ids, *ids2;
    size_t n, n2;
    CHECK_OK(lmx_tokenize(t, bad, sizeof bad - 1, false, &ids, &n));
    const char good[] = "a\xEF\xBF\xBD\xEF\xBF\xBD b\xEF\xBF\xBD c\xEF\xBF\xBD";
    CHECK_OK(lmx_tokenize(t, good, sizeof good - 1, false, &ids2, &n2));
    CHECK(n == n2 && !memcmp(ids, ids2, n * sizeof *ids));
    char *s;
    CHECK_OK(lmx_detokenize(t, ids, n, &s));
    CHECK_STR(s, good);
    lmx_free(s);
    lmx_free(ids);
    lmx_free(ids2);
    /* every byte value, alone and in runs */
    char buf[512];
    for (int i = 0; i < 256; i++) buf[i] = buf[256 + i] = (char)(255 - i);
    CHECK_OK(lmx_tokenize(t, buf, sizeof buf, true, &ids, &n));
    CHECK(n > 0);
    lmx_free(ids);
    CHECK_OK(lmx_tokenize(t, "", 0, false, &ids, &n));
    CHECK_EQ_INT(n, 0);
    lmx_free(ids);
    CHECK_EQ_INT(lmx_tokenize(t, NULL, 3, false, &ids, &n), LMX_ERR_INVALID_ARG);
    /* streaming: bytes of a split character are withheld until complete */
    lmx_detok *d;
    CHECK_OK(lmx_detok_new(t, &d));
    tok_bytelevel_init();
    char c1[4] = {0}, c2[4] = {0}, c3[4] = {0}; /* the byte-level pieces of E6 97 A5 (日) */
    memcpy(c1, tok_bytelevel_enc[0xE6], tok_bytelevel_enc_len[0xE6]);
    memcpy(c2, tok_bytelevel_enc[0x97], tok_bytelevel_enc_len[0x97]);
    memcpy(c3, tok_bytelevel_enc[0xA5], tok_bytelevel_enc_len[0xA5]);
    int32_t e1 = lmx_tokenizer_token_id(t, c1), e2 = lmx_tokenizer_token_id(t, c2), e3 = lmx_tokenizer_token_id(t, c3);
    CHECK(e1 >= 0 && e2 >= 0 && e3 >= 0);
    const char *seg;
    size_t len;
    CHECK_OK(lmx_detok_add(d, e1, &seg, &len));
    CHECK_EQ_INT(len, 0);
    CHECK_OK(lmx_detok_add(d, e2, &seg, &len));
    CHECK_EQ_INT(len, 0);
    CHECK_OK(lmx_detok_add(d, e3, &seg, &len));
    CHECK(len == 3 && !memcmp(seg, "\xE6\x97\xA5", 3));
    CHECK_OK(lmx_detok_add(d, e1, &seg, &len));
    CHECK_OK(lmx_detok_finish(d, &seg, &len));
    CHECK(len == 3 && !memcmp(seg, "\xEF\xBF\xBD", 3));
    CHECK_EQ_INT(lmx_detok_add(d, -5, &seg, &len), LMX_ERR_INVALID_ARG);
    lmx_detok_free(d);
    lmx_tokenizer_free(t);
}

static void test_bad_gguf(void) {
    lmx_tokenizer *t = NULL;
    /* a GGUF file without any tokenizer keys */
    char *p = write_tmp("notok.gguf", "GGUF");
    CHECK(lmx_tokenizer_load(p, &t) != LMX_OK);
    CHECK(t == NULL);
    free(p);
}

static void test_cli(void) {
    char out[4096];
    const char *gguf = LMX_TEST_DATA "/tokenizers/llama.cpp-vocab/ggml-vocab-gpt-2.gguf";
    CHECK_EQ_INT(t_sh(out, sizeof out, "%s tokenize --model %s --text 'Hello World!'", LMX_CLI, gguf), 0);
    CHECK_STR(out, "[15496, 2159, 0]\n");
    CHECK_EQ_INT(t_sh(out, sizeof out, "%s tokenize --model=%s --add-special-tokens --text ''", LMX_CLI, LMX_SOURCE_DIR "/models/stories260K.gguf"), 0);
    CHECK_STR(out, "[1]\n");
    char *jl = write_tmp("in.jsonl", "\"Hello World!\"\n\"a\\tb\"\n\n\"\"\n");
    CHECK_EQ_INT(t_sh(out, sizeof out, "%s tokenize --model %s --jsonl %s", LMX_CLI, gguf, jl), 0);
    CHECK_STR(out, "[15496, 2159, 0]\n[64, 197, 65]\n[]\n");
    free(jl);
    jl = write_tmp("bad.jsonl", "\"ok\"\nnot json\n");
    CHECK_EQ_INT(t_sh(out, sizeof out, "%s tokenize --model %s --jsonl %s 2>&1", LMX_CLI, gguf, jl), 1);
    CHECK(strstr(out, "line 2") != NULL);
    free(jl);
    CHECK_EQ_INT(t_sh(out, sizeof out, "%s detokenize --model %s --ids 15496,2159,0", LMX_CLI, gguf), 0);
    CHECK_STR(out, "Hello World!");
    CHECK_EQ_INT(t_sh(out, sizeof out, "%s tokenize --help", LMX_CLI), 0);
    CHECK(strstr(out, "--jsonl") != NULL);
    CHECK_EQ_INT(t_sh(out, sizeof out, "%s detokenize --help", LMX_CLI), 0);
    CHECK_EQ_INT(t_sh(out, sizeof out, "%s tokenize --model %s 2>&1", LMX_CLI, gguf), 2);
    CHECK_EQ_INT(t_sh(out, sizeof out, "%s tokenize --model /nonexistent --text x 2>&1", LMX_CLI), 1);
}

void run_tests(void) {
    strcpy(tmpdir, "/tmp/lmx_tokbad_XXXXXX");
    if (!mkdtemp(tmpdir)) return;
    TEST(test_malformed);
    TEST(test_unknown_types);
    TEST(test_components);
    TEST(test_invalid_utf8);
    TEST(test_bad_gguf);
    if (access(LMX_CLI, X_OK) == 0) TEST(test_cli);
    else t_skip("test_cli", "lmx binary not built");
    char out[16];
    t_sh(out, sizeof out, "rm -rf %s", tmpdir);
}
