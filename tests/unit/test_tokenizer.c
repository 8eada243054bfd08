/* test_tokenizer.c - lmx tokenizers against real references:
 *   - HF `tokenizers` goldens (tests/fixtures/make_tokenizer_fixtures.py) for
 *     llama3, qwen3, mistral, gemma3, gpt2: ids with/without special tokens and
 *     decoded text, byte for byte;
 *   - llama.cpp's vocab test vectors (add_special=false, parse_special=false)
 *     through the vocab GGUFs and through the llama3/qwen3 tokenizer.json;
 *   - ggml's prompt vectors; stories260K encodes;
 *   - the streaming detokenizer property over all of these ids.
 * The .gz tokenizers are unpacked into a temp folder once. */
#include "testing.h"
#include "tokenizer/tok_internal.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TOKDATA LMX_TEST_DATA "/tokenizers"

static char tmpdir[64];
static const char *NAMES[] = {"llama3", "qwen3", "mistral", "gemma3", "gpt2"};
#define N_NAMES 5
static lmx_tokenizer *toks[N_NAMES];

static lmx_tokenizer *by_name(const char *n) {
    for (int i = 0; i < N_NAMES; i++)
        if (!strcmp(NAMES[i], n)) return toks[i];
    return NULL;
}

static void setup(void) {
    strcpy(tmpdir, "/tmp/lmx_tok_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        exit(1);
    }
    for (int i = 0; i < N_NAMES; i++) {
        const char *n = NAMES[i];
        char out[256];
        int rc = t_sh(out, sizeof out,
                      "mkdir -p %s/%s && gzip -dc %s/%s/tokenizer.json.gz > %s/%s/tokenizer.json && "
                      "(if [ -f %s/%s/tokenizer_config.json.gz ]; then gzip -dc %s/%s/tokenizer_config.json.gz; "
                      "else cat %s/%s/tokenizer_config.json; fi) > %s/%s/tokenizer_config.json",
                      tmpdir, n, TOKDATA, n, tmpdir, n, TOKDATA, n, TOKDATA, n, TOKDATA, n, tmpdir, n);
        if (rc != 0) {
            fprintf(stderr, "unpacking %s failed\n", n);
            continue;
        }
        char dir[128];
        snprintf(dir, sizeof dir, "%s/%s", tmpdir, n);
        double t0 = lmx_time_s();
        if (lmx_tokenizer_load(dir, &toks[i]) != LMX_OK) fprintf(stderr, "load %s: %s\n", n, lmx_last_error());
        else printf("  loaded %s in %.0f ms\n", n, (lmx_time_s() - t0) * 1e3);
    }
}

static void teardown(void) {
    for (int i = 0; i < N_NAMES; i++) lmx_tokenizer_free(toks[i]);
    char out[16];
    if (tmpdir[0]) t_sh(out, sizeof out, "rm -rf %s", tmpdir);
}

/* ---- helpers ------------------------------------------------------------------ */

static size_t unhex(const char *h, char *out) {
    size_t n = 0;
    for (; h[0] && h[1]; h += 2) {
        unsigned v;
        sscanf(h, "%2x", &v);
        out[n++] = (char)v;
    }
    return n;
}

static bool ids_eq_json(const tok_ids *v, const cJSON *arr) {
    if (cJSON_GetArraySize(arr) != (int)v->n) return false;
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) if ((int32_t)e->valuedouble != v->p[i++]) return false;
    return true;
}

/* Streams ids through lmx_detok; checks concat == full decode and that no
 * segment ends inside a UTF-8 sequence. */
static void check_stream(const lmx_tokenizer *t, const int32_t *ids, size_t n, const char *what) {
    /* tok_decode keeps the length: the text may hold NUL bytes */
    tok_sbuf fb = {0};
    CHECK_OK(tok_decode(t, ids, n, &fb));
    const char *full = fb.p ? fb.p : "";
    size_t full_n = fb.n;
    lmx_detok *d;
    CHECK_OK(lmx_detok_new(t, &d));
    tok_sbuf acc = {0};
    bool seg_ok = true;
    for (size_t i = 0; i <= n; i++) {
        const char *seg;
        size_t len;
        lmx_status st = i < n ? lmx_detok_add(d, ids[i], &seg, &len) : lmx_detok_finish(d, &seg, &len);
        CHECK_OK(st);
        if (st != LMX_OK) break;
        if (!tok_utf8_is_valid((const uint8_t *)seg, len) && tok_utf8_is_valid((const uint8_t *)full, full_n))
            seg_ok = false;
        tok_sbuf_put(&acc, seg, len);
    }
    tok_sbuf_put(&acc, "", 0);
    CHECK_MSG(seg_ok, "%s: a streamed segment ends inside a UTF-8 sequence", what);
    CHECK_MSG(acc.n == full_n && !memcmp(acc.p, full, acc.n),
              "%s: streamed text differs from the full decode\n    stream: %.200s\n    full:   %.200s", what, acc.p, full);
    tok_sbuf_free(&acc);
    tok_sbuf_free(&fb);
    lmx_detok_free(d);
}

/* ---- HF goldens ----------------------------------------------------------------- */

static void run_golden(const char *name) {
    lmx_tokenizer *t = by_name(name);
    CHECK_MSG(t != NULL, "%s tokenizer did not load", name);
    if (!t) return;
    char path[256], *data;
    size_t size;
    snprintf(path, sizeof path, "%s/golden/%s.json", TOKDATA, name);
    CHECK_OK(lmx_read_file(path, &data, &size));
    cJSON *j = cJSON_Parse(data);
    free(data);
    CHECK(j != NULL);
    const cJSON *c;
    int k = 0, bad = 0;
    char *text = malloc(size), *exp = malloc(size);
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(j, "cases")) {
        size_t n = unhex(cJSON_GetObjectItem(c, "hex")->valuestring, text);
        size_t en = unhex(cJSON_GetObjectItem(c, "decoded_hex")->valuestring, exp);
        tok_ids a = {0}, b = {0};
        CHECK_OK(tok_encode(t, text, n, false, true, &a));
        CHECK_OK(tok_encode(t, text, n, true, true, &b));
        bool ok1 = ids_eq_json(&a, cJSON_GetObjectItem(c, "ids"));
        bool ok2 = ids_eq_json(&b, cJSON_GetObjectItem(c, "ids_special"));
        tok_sbuf db = {0};
        CHECK_OK(tok_decode(t, b.p, b.n, &db));
        const char *dec = db.p;
        bool ok3 = dec && db.n == en && !memcmp(dec, exp, en);
        if (!(ok1 && ok2 && ok3) && bad++ < 4) {
            fprintf(stderr, "  %s case %d (%.60s): ids %s, ids_special %s, decode %s\n", name, k, text,
                    ok1 ? "ok" : "DIFFER", ok2 ? "ok" : "DIFFER", ok3 ? "ok" : "DIFFER");
            if (!ok1) {
                fprintf(stderr, "    got:");
                for (size_t i = 0; i < a.n && i < 40; i++) fprintf(stderr, " %d", a.p[i]);
                fprintf(stderr, "\n    exp: %.300s\n", cJSON_PrintUnformatted(cJSON_GetObjectItem(c, "ids")));
            }
            if (!ok3) fprintf(stderr, "    dec: [%.200s]\n    exp: [%.*s]\n", dec ? dec : "", (int)(en < 200 ? en : 200), exp);
        }
        CHECK(ok1 && ok2 && ok3);
        char what[64];
        snprintf(what, sizeof what, "%s case %d", name, k);
        check_stream(t, b.p, b.n, what);
        tok_sbuf_free(&db);
        tok_ids_free(&a);
        tok_ids_free(&b);
        k++;
    }
    CHECK_MSG(k >= 40, "%s: only %d golden cases", name, k);
    free(text);
    free(exp);
    cJSON_Delete(j);
}

static void test_golden_llama3(void) { run_golden("llama3"); }
static void test_golden_qwen3(void) { run_golden("qwen3"); }
static void test_golden_mistral(void) { run_golden("mistral"); }
static void test_golden_gemma3(void) { run_golden("gemma3"); }
static void test_golden_gpt2(void) { run_golden("gpt2"); }

/* ---- llama.cpp vectors ---------------------------------------------------------- */

static void run_vectors(const lmx_tokenizer *t, const char *vocab) {
    CHECK(t != NULL);
    if (!t) return;
    char p[256], *inp, *outp;
    size_t ni, no;
    snprintf(p, sizeof p, "%s/llama.cpp-vocab/ggml-vocab-%s.gguf.inp", TOKDATA, vocab);
    CHECK_OK(lmx_read_file(p, &inp, &ni));
    snprintf(p, sizeof p, "%s/llama.cpp-vocab/ggml-vocab-%s.gguf.out", TOKDATA, vocab);
    CHECK_OK(lmx_read_file(p, &outp, &no));
    const char *sep = "\n__ggml_vocab_test__\n";
    char *s = inp, *o = outp;
    int pass = 0, fail = 0;
    for (char *e; (e = strstr(s, sep)) != NULL; s = e + strlen(sep)) {
        char *ol = strchr(o, '\n');
        if (!ol) break;
        *ol = 0;
        tok_ids ids = {0};
        CHECK_OK(tok_encode(t, s, (size_t)(e - s), false, false, &ids));
        char buf[16384];
        size_t k = 0;
        buf[0] = 0;
        for (size_t i = 0; i < ids.n && k < sizeof buf - 16; i++) k += (size_t)snprintf(buf + k, sizeof buf - k, "%s%d", i ? " " : "", ids.p[i]);
        const char *exp = o;
        while (*exp == ' ') exp++;
        if (strcmp(buf, exp)) {
            if (fail++ < 3) fprintf(stderr, "  %s: [%.*s]\n    got %s\n    exp %s\n", vocab, (int)(e - s), s, buf, exp);
        } else pass++;
        char what[64];
        snprintf(what, sizeof what, "%s vector %d", vocab, pass + fail);
        check_stream(t, ids.p, ids.n, what);
        tok_ids_free(&ids);
        o = ol + 1;
    }
    CHECK_MSG(fail == 0 && pass >= 40, "%s: %d passed, %d failed", vocab, pass, fail);
    free(inp);
    free(outp);
}

static void run_gguf_vectors(const char *vocab) {
    char p[256];
    snprintf(p, sizeof p, "%s/llama.cpp-vocab/ggml-vocab-%s.gguf", TOKDATA, vocab);
    lmx_tokenizer *t = NULL;
    CHECK_OK(lmx_tokenizer_load(p, &t));
    run_vectors(t, vocab);
    lmx_tokenizer_free(t);
}

static void test_vectors_llama_spm(void) { run_gguf_vectors("llama-spm"); }
static void test_vectors_phi3(void) { run_gguf_vectors("phi-3"); }
static void test_vectors_gpt2(void) { run_gguf_vectors("gpt-2"); }
static void test_vectors_mpt(void) { run_gguf_vectors("mpt"); }
static void test_vectors_deepseek_coder(void) { run_gguf_vectors("deepseek-coder"); }
static void test_vectors_llama_bpe_json(void) { run_vectors(by_name("llama3"), "llama-bpe"); }
static void test_vectors_qwen2_json(void) { run_vectors(by_name("qwen3"), "qwen2"); }
static void test_vectors_deepseek_r1_qwen_json(void) { run_vectors(by_name("qwen3"), "deepseek-r1-qwen"); }

/* ---- ggml prompt vectors ---------------------------------------------------------- */

static void run_prompts(const lmx_tokenizer *t, const char *file) {
    CHECK(t != NULL);
    if (!t) return;
    char p[256], *data;
    size_t size;
    snprintf(p, sizeof p, "%s/ggml-prompts/%s", TOKDATA, file);
    CHECK_OK(lmx_read_file(p, &data, &size));
    int pass = 0, fail = 0;
    for (char *line = data, *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (nl) *nl = 0;
        char *arrow = strstr(line, " => ");
        if (!arrow) continue;
        tok_ids ids = {0};
        CHECK_OK(tok_encode(t, line, (size_t)(arrow - line), false, false, &ids));
        char buf[8192];
        size_t k = 0;
        buf[0] = 0;
        for (size_t i = 0; i < ids.n && k < sizeof buf - 16; i++) k += (size_t)snprintf(buf + k, sizeof buf - k, "%s%d", i ? "," : "", ids.p[i]);
        if (strcmp(buf, arrow + 4)) {
            if (fail++ < 3) fprintf(stderr, "  %s: [%.*s]\n    got %s\n    exp %s\n", file, (int)(arrow - line), line, buf, arrow + 4);
        } else pass++;
        tok_ids_free(&ids);
    }
    CHECK_MSG(fail == 0 && pass >= 90, "%s: %d passed, %d failed", file, pass, fail);
    free(data);
}

static void test_prompts_gpt2_json(void) { run_prompts(by_name("gpt2"), "gpt-2.txt"); }

static void test_prompts_gguf(void) {
    lmx_tokenizer *t = NULL;
    CHECK_OK(lmx_tokenizer_load(TOKDATA "/llama.cpp-vocab/ggml-vocab-gpt-2.gguf", &t));
    run_prompts(t, "gpt-2.txt");
    lmx_tokenizer_free(t);
    t = NULL;
    CHECK_OK(lmx_tokenizer_load(TOKDATA "/llama.cpp-vocab/ggml-vocab-mpt.gguf", &t));
    run_prompts(t, "gpt-neox.txt");
    lmx_tokenizer_free(t);
}

/* ---- stories260K (GGUF llama vocab, BOS by default) ------------------------------- */

static void test_stories260k(void) {
    lmx_tokenizer *t = NULL;
    CHECK_OK(lmx_tokenizer_load(LMX_SOURCE_DIR "/models/stories260K.gguf", &t));
    if (!t) return;
    CHECK_EQ_INT(lmx_tokenizer_vocab_size(t), 512);
    CHECK_EQ_INT(lmx_tokenizer_bos(t), 1);
    CHECK_EQ_INT(lmx_tokenizer_eos(t), 2);
    char *data;
    size_t size;
    CHECK_OK(lmx_read_file(TOKDATA "/stories/ppl_tinystories_sample.json", &data, &size));
    cJSON *j = cJSON_Parse(data);
    free(data);
    const cJSON *e;
    int n = 0;
    cJSON_ArrayForEach(e, cJSON_GetObjectItem(j, "prompt_encodings_llama2c_style")) {
        int32_t *ids;
        size_t nid;
        CHECK_OK(lmx_tokenize(t, e->string, strlen(e->string), true, &ids, &nid));
        tok_ids v = {ids, nid, nid, false};
        CHECK_MSG(ids_eq_json(&v, e), "stories260K encode of \"%s\" differs", e->string);
        check_stream(t, ids, nid, e->string);
        char *txt;
        CHECK_OK(lmx_detokenize(t, ids + 1, nid - 1, &txt)); /* without BOS: the text itself */
        CHECK_STR(txt, e->string);
        lmx_free(txt);
        lmx_free(ids);
        n++;
    }
    CHECK_EQ_INT(n, 4);
    cJSON_Delete(j);

    /* per-story token counts of the perplexity set */
    CHECK_OK(lmx_read_file(TOKDATA "/stories/tinystories_sample.txt", &data, &size));
    static const int expect[] = {374, 330, 223};
    char *s = data;
    for (int k = 0; k < 3; k++) {
        char *e2 = strstr(s, "<|endoftext|>");
        if (!e2) break;
        while (s < e2 && (*s == '\n' || *s == ' ')) s++;
        char *end = e2;
        while (end > s && (end[-1] == '\n' || end[-1] == ' ')) end--;
        int32_t *ids;
        size_t nid;
        CHECK_OK(lmx_tokenize(t, s, (size_t)(end - s), true, &ids, &nid));
        CHECK_EQ_INT(nid, expect[k]);
        lmx_free(ids);
        s = e2 + strlen("<|endoftext|>");
    }
    free(data);
    lmx_tokenizer_free(t);
}

/* ---- accessors ---------------------------------------------------------------------- */

static void test_accessors(void) {
    lmx_tokenizer *l = by_name("llama3"), *q = by_name("qwen3"), *g = by_name("gemma3"), *m = by_name("mistral");
    if (!l || !q || !g || !m) {
        CHECK(0);
        return;
    }
    CHECK_EQ_INT(lmx_tokenizer_vocab_size(l), 128256);
    CHECK_EQ_INT(lmx_tokenizer_token_id(l, "<|eot_id|>"), 128009);
    CHECK_EQ_INT(lmx_tokenizer_token_id(l, "Hello"), 9906);
    CHECK_EQ_INT(lmx_tokenizer_token_id(l, "no such piece at all"), -1);
    CHECK_STR(lmx_tokenizer_piece(l, 128009), "<|eot_id|>");
    CHECK(lmx_tokenizer_piece(l, 1 << 20) == NULL);
    CHECK_STR(lmx_tokenizer_bos_str(l), "<|begin_of_text|>");
    CHECK_EQ_INT(lmx_tokenizer_bos(l), 128000);
    CHECK_STR(lmx_tokenizer_eos_str(q), "<|im_end|>");
    CHECK_STR(lmx_tokenizer_bos_str(q), "");
    CHECK_EQ_INT(lmx_tokenizer_bos(q), -1);
    CHECK_EQ_INT(lmx_tokenizer_bos(m), 1);
    CHECK(lmx_tokenizer_chat_template(l, NULL) != NULL);
    CHECK(lmx_tokenizer_chat_template(q, NULL) && strstr(lmx_tokenizer_chat_template(q, NULL), "<think>"));
    CHECK(lmx_tokenizer_chat_template(g, NULL) != NULL);
    CHECK(lmx_tokenizer_chat_template(m, NULL) == NULL);
    CHECK(lmx_tokenizer_chat_template(l, "no-such-name") == NULL);
    CHECK_STR(lmx_tokenizer_eos_str(g), "<end_of_turn>");
}

void run_tests(void) {
    setup();
    TEST(test_golden_llama3);
    TEST(test_golden_qwen3);
    TEST(test_golden_mistral);
    TEST(test_golden_gemma3);
    TEST(test_golden_gpt2);
    TEST(test_vectors_llama_spm);
    TEST(test_vectors_phi3);
    TEST(test_vectors_gpt2);
    TEST(test_vectors_mpt);
    TEST(test_vectors_deepseek_coder);
    TEST(test_vectors_llama_bpe_json);
    TEST(test_vectors_qwen2_json);
    TEST(test_vectors_deepseek_r1_qwen_json);
    TEST(test_prompts_gpt2_json);
    TEST(test_prompts_gguf);
    TEST(test_stories260k);
    TEST(test_accessors);
    teardown();
}
