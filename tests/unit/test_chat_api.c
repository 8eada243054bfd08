/*
 * test_chat_api.c - the public chat-template path with real tokenizers:
 * lmx_tokenizer_load on a model folder (tokenizer.json + tokenizer_config.json)
 * then lmx_apply_chat_template, compared byte for byte with transformers'
 * renders (tests/data/chat/golden/<name>.json, made by
 * tests/fixtures/make_chat_fixtures.py). Covers the template lookup, bos/eos
 * strings, enable_thinking's default and extra variables from a JSON object.
 */
#include "testing.h"

#include "lmx.h"

#include <cjson/cJSON.h>
#include <stdlib.h>

static char tmp[256];

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    size_t r = fread(b, 1, (size_t)n, f);
    b[r] = 0;
    fclose(f);
    return b;
}

static void check_model(const char *name) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", tmp, name);
    int rc = t_sh(NULL, 0, "mkdir -p %s && gzip -dc %s/tokenizers/%s/tokenizer.json.gz > %s/tokenizer.json && "
                 "cp %s/tokenizers/%s/tokenizer_config.json %s/", dir, LMX_TEST_DATA, name, dir, LMX_TEST_DATA, name, dir);
    CHECK_EQ_INT(rc, 0);
    lmx_tokenizer *tok;
    CHECK_OK(lmx_tokenizer_load(dir, &tok));
    if (t_failed_checks) return;
    CHECK(lmx_tokenizer_has_chat_template(tok));
    char gpath[512];
    snprintf(gpath, sizeof gpath, "%s/chat/golden/%s.json", LMX_TEST_DATA, name);
    char *g = slurp(gpath);
    CHECK(g != NULL);
    cJSON *root = cJSON_Parse(g);
    free(g);
    const cJSON *cases = cJSON_GetObjectItem(root, "cases");
    int n_ok = 0, n_err = 0;
    for (const cJSON *c = cases ? cases->child : NULL; c; c = c->next) {
        const char *cname = cJSON_GetObjectItem(c, "name")->valuestring;
        const char *msgs = cJSON_GetObjectItem(c, "messages_json")->valuestring;
        bool agp = cJSON_IsTrue(cJSON_GetObjectItem(c, "add_generation_prompt"));
        const cJSON *ex = cJSON_GetObjectItem(c, "extra_json");
        const char *extra = ex && cJSON_IsString(ex) ? ex->valuestring : NULL;
        const cJSON *want = cJSON_GetObjectItem(c, "expected");
        char *out = NULL;
        lmx_status s = lmx_apply_chat_template(tok, msgs, agp, extra, &out);
        if (want && cJSON_IsString(want)) {
            CHECK_MSG(s == LMX_OK, "%s/%s: %s", name, cname, lmx_last_error());
            if (s == LMX_OK) {
                CHECK_MSG(strcmp(out, want->valuestring) == 0, "%s/%s: render differs:\n--- got\n%s\n--- want\n%s", name,
                          cname, out, want->valuestring);
                n_ok++;
            }
        } else {
            CHECK_MSG(s == LMX_ERR_TEMPLATE, "%s/%s: expected a template error, got %s", name, cname, lmx_status_str(s));
            n_err++;
        }
        lmx_free(out);
    }
    printf("  %s: %d renders identical, %d expected errors\n", name, n_ok, n_err);
    CHECK(n_ok > 10);
    cJSON_Delete(root);
    lmx_tokenizer_free(tok);
}

static void llama3(void) { check_model("llama3"); }
static void qwen3(void) { check_model("qwen3"); }

/* Models without a template: has_chat_template false, apply fails cleanly. */
static void no_template(void) {
    lmx_tokenizer *tok;
    CHECK_OK(lmx_tokenizer_load(LMX_SOURCE_DIR "/models/stories260K.gguf", &tok));
    if (t_failed_checks) return;
    CHECK(!lmx_tokenizer_has_chat_template(tok));
    char *out = NULL;
    CHECK(lmx_apply_chat_template(tok, "[{\"role\":\"user\",\"content\":\"hi\"}]", true, NULL, &out) != LMX_OK);
    CHECK(out == NULL);
    lmx_tokenizer_free(tok);
}

void run_tests(void) {
    snprintf(tmp, sizeof tmp, "/tmp/lmx_chat_api_XXXXXX");
    if (!mkdtemp(tmp)) {
        t_skip("chat_api", "no temp dir");
        return;
    }
    TEST(llama3);
    TEST(qwen3);
    TEST(no_template);
    t_sh(NULL, 0, "rm -rf '%s'", tmp);
}
