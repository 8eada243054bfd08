/*
 * test_dataset.c - src/train/dataset.c + dataset_batches.c against mlx-lm
 * 0.32.2 (tests/data/train/dataset_expected.json, made by
 * tests/fixtures/make_dataset_fixtures.py from mlx-lm's own load_dataset,
 * CacheDataset, iterate_batches and train()).
 *
 * Exact comparisons (no tolerance: all integers): every example's token ids
 * and mask offset for chat / completions / text data (stories260K's chat
 * tokenizer and Qwen3's) and Qwen3 tool-call chats, with and without
 * --mask-prompt; the key count mlx-lm sorts by; the batches a
 * real train() run pulls, in order, with validation passes interleaved on
 * the same numpy generator (tokens [B, T] incl. padding width, offsets,
 * truncated lengths); iterate_batches over three epochs. Error cases: the
 * message names file:line where there is one and carries mlx-lm's wording.
 */
#include "testing.h"

#include "train/dataset.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <unistd.h>

static cJSON *doc;
static char tmp[256];
static lmx_tokenizer *tok_stories, *tok_qwen;

static const lmx_tokenizer *tokenizer(const char *name) {
    return strcmp(name, "qwen3") == 0 ? tok_qwen : tok_stories;
}

static void setup(void) {
    char *text = NULL;
    size_t n = 0;
    CHECK_OK(lmx_read_file(LMX_TEST_DATA "/train/dataset_expected.json", &text, &n));
    doc = text ? cJSON_Parse(text) : NULL;
    free(text);
    CHECK(doc != NULL);
    CHECK_OK(lmx_tokenizer_load(LMX_TEST_DATA "/stories260K/chat", &tok_stories));
    int rc = t_sh(NULL, 0, "mkdir -p %s/qwen3 && gzip -dc %s/tokenizers/qwen3/tokenizer.json.gz > %s/qwen3/tokenizer.json && "
                 "cp %s/tokenizers/qwen3/tokenizer_config.json %s/qwen3/", tmp, LMX_TEST_DATA, tmp, LMX_TEST_DATA, tmp);
    CHECK_EQ_INT(rc, 0);
    char dir[512];
    snprintf(dir, sizeof dir, "%s/qwen3", tmp);
    CHECK_OK(lmx_tokenizer_load(dir, &tok_qwen));
}

static void data_dir(char *buf, size_t cap, const char *name) {
    snprintf(buf, cap, "%s/train/dataset/%s", LMX_TEST_DATA, name);
}

static void compare_split(lmx_dataset *d, const cJSON *want, const char *label) {
    if (!want || cJSON_IsNull(want)) {
        CHECK_MSG(d == NULL, "%s: mlx-lm has no such split", label);
        return;
    }
    CHECK_MSG(d != NULL, "%s: split missing", label);
    if (!d) return;
    CHECK_EQ_INT(lmx_dataset_size(d), cJSON_GetArraySize(want));
    int64_t i = 0;
    for (const cJSON *ex = want->child; ex && i < lmx_dataset_size(d); ex = ex->next, i++) {
        const int32_t *ids;
        int64_t n, off;
        lmx_status s = lmx_dataset_example(d, i, &ids, &n, &off);
        CHECK_MSG(s == LMX_OK, "%s[%lld]: %s", label, (long long)i, lmx_last_error());
        if (s != LMX_OK) continue;
        const cJSON *wt = cJSON_GetObjectItem(ex, "tokens");
        bool same = n == cJSON_GetArraySize(wt);
        int64_t k = 0;
        for (const cJSON *t = wt->child; t && same; t = t->next, k++) same = ids[k] == t->valueint;
        CHECK_MSG(same, "%s[%lld]: token ids differ (%lld vs %d tokens)", label, (long long)i, (long long)n,
                  cJSON_GetArraySize(wt));
        CHECK_MSG(off == cJSON_GetObjectItem(ex, "offset")->valueint, "%s[%lld]: offset %lld, mlx-lm %d", label,
                  (long long)i, (long long)off, cJSON_GetObjectItem(ex, "offset")->valueint);
        CHECK_EQ_INT(lmx_dataset_item_len(d, i), cJSON_GetObjectItem(ex, "nkeys")->valueint);
    }
}

static void examples(void) {
    int n_sets = 0, n_examples = 0;
    for (const cJSON *e = cJSON_GetObjectItem(doc, "datasets")->child; e; e = e->next) {
        const char *name = cJSON_GetObjectItem(e, "name")->valuestring;
        bool mask = cJSON_IsTrue(cJSON_GetObjectItem(e, "mask_prompt"));
        char dir[512], label[128];
        data_dir(dir, sizeof dir, name);
        lmx_data_options o;
        lmx_data_options_init(&o);
        o.mask_prompt = mask;
        lmx_data_splits sp;
        lmx_status s = lmx_data_load_dir(dir, tokenizer(cJSON_GetObjectItem(e, "tokenizer")->valuestring), &o, true, false, &sp);
        const cJSON *err = cJSON_GetObjectItem(e, "error");
        if (err) {
            CHECK_MSG(s == LMX_ERR_INVALID_ARG, "%s mask=%d: expected an error", name, mask);
            CHECK_MSG(strstr(lmx_last_error(), "Prompt masking not supported for text dataset.") != NULL, "%s",
                      lmx_last_error());
            continue;
        }
        CHECK_MSG(s == LMX_OK, "%s: %s", name, lmx_last_error());
        if (s != LMX_OK) continue;
        const char *splits[3] = {"train", "valid", "test"};
        lmx_dataset *ds[3] = {sp.train, sp.valid, sp.test};
        for (int k = 0; k < 3; k++) {
            snprintf(label, sizeof label, "%s(%s)%s/%s", name, cJSON_GetObjectItem(e, "tokenizer")->valuestring,
                     mask ? "+mask" : "", splits[k]);
            compare_split(ds[k], cJSON_GetObjectItem(e, splits[k]), label);
            n_examples += (int)lmx_dataset_size(ds[k]);
        }
        n_sets++;
        lmx_data_splits_free(&sp);
    }
    CHECK_EQ_INT(n_sets, 10);
    printf("  %d data sets, %d examples identical\n", n_sets, n_examples);
}

static bool same_batch(const lmx_batch *b, const cJSON *ev, const char *label, int idx) {
    const cJSON *rows = cJSON_GetObjectItem(ev, "tokens"), *lens = cJSON_GetObjectItem(ev, "lengths");
    bool ok = b->B == cJSON_GetArraySize(rows) && b->T == cJSON_GetArraySize(rows->child);
    int r = 0;
    for (const cJSON *row = rows->child; row && ok; row = row->next, r++) {
        int c = 0;
        for (const cJSON *x = row->child; x && ok; x = x->next, c++) ok = b->tokens[(size_t)r * b->T + c] == x->valueint;
    }
    r = 0;
    for (const cJSON *l = lens->child; l && ok; l = l->next, r++)
        ok = b->offsets[r] == cJSON_GetArrayItem(l, 0)->valueint && b->lengths[r] == cJSON_GetArrayItem(l, 1)->valueint;
    CHECK_MSG(ok, "%s: batch %d differs (got B=%d T=%d, group %lld)", label, idx, b->B, b->T, (long long)b->batch_index);
    return ok;
}

/* The CLI's loop as mlx-lm's train() runs it: the train batch of iteration
 * `it` is taken first, then (it == 1, every steps_per_eval, last) a
 * validation pass over val_batches batches (-1: all) on the same generator. */
static void train_runs(void) {
    int n_runs = 0, n_batches = 0;
    for (const cJSON *r = cJSON_GetObjectItem(doc, "runs")->child; r; r = r->next, n_runs++) {
        const char *name = cJSON_GetObjectItem(r, "name")->valuestring;
        int seed = cJSON_GetObjectItem(r, "seed")->valueint, bs = cJSON_GetObjectItem(r, "batch_size")->valueint;
        int iters = cJSON_GetObjectItem(r, "iters")->valueint, spe = cJSON_GetObjectItem(r, "steps_per_eval")->valueint;
        int vb = cJSON_GetObjectItem(r, "val_batches")->valueint, msl = cJSON_GetObjectItem(r, "max_seq_length")->valueint;
        char dir[512];
        data_dir(dir, sizeof dir, name);
        lmx_data_options o;
        lmx_data_options_init(&o);
        o.mask_prompt = cJSON_IsTrue(cJSON_GetObjectItem(r, "mask_prompt"));
        lmx_data_splits sp;
        CHECK_OK(lmx_data_load_dir(dir, tok_stories, &o, true, false, &sp));
        if (t_failed_checks) return;
        lmx_np_rng rng;
        CHECK(lmx_np_seed(&rng, (uint64_t)seed));
        lmx_batches *train;
        CHECK_OK(lmx_batches_create(sp.train, bs, msl, true, &rng, &train));
        const cJSON *ev = cJSON_GetObjectItem(r, "events")->child;
        int idx = 0;
        bool truncated_seen = false;
        for (int it = 1; it <= iters && ev; it++) {
            lmx_batch b;
            bool done;
            CHECK_OK(lmx_batches_next(train, &b, &done));
            CHECK(!done);
            CHECK_STR(cJSON_GetObjectItem(ev, "split")->valuestring, "train");
            char warn[256];
            truncated_seen |= lmx_batch_truncation_warning(&b, warn, sizeof warn);
            if (!same_batch(&b, ev, name, idx)) break;
            ev = ev->next, idx++;
            if (sp.valid && (it == 1 || it % spe == 0 || it == iters)) {
                lmx_batches *val;
                CHECK_OK(lmx_batches_create(sp.valid, bs, msl, false, &rng, &val));
                for (int k = 0; vb < 0 || k < vb; k++) {
                    CHECK_OK(lmx_batches_next(val, &b, &done));
                    if (done) break;
                    CHECK(ev != NULL);
                    if (!ev) break;
                    CHECK_STR(cJSON_GetObjectItem(ev, "split")->valuestring, "valid");
                    same_batch(&b, ev, name, idx);
                    ev = ev->next, idx++;
                }
                lmx_batches_free(val);
            }
        }
        CHECK_MSG(ev == NULL, "%s: mlx-lm pulled more batches", name);
        CHECK_EQ_INT(idx, cJSON_GetArraySize(cJSON_GetObjectItem(r, "events")));
        if (msl < 64) CHECK(truncated_seen); /* these runs include longer examples */
        n_batches += idx;
        lmx_batches_free(train);
        lmx_data_splits_free(&sp);
    }
    CHECK_EQ_INT(n_runs, 3);
    printf("  %d train() runs, %d batches identical\n", n_runs, n_batches);
}

static void iterate_epochs(void) {
    for (const cJSON *r = cJSON_GetObjectItem(doc, "iterate")->child; r; r = r->next) {
        char dir[512];
        data_dir(dir, sizeof dir, cJSON_GetObjectItem(r, "name")->valuestring);
        lmx_data_options o;
        lmx_data_options_init(&o);
        o.mask_prompt = cJSON_IsTrue(cJSON_GetObjectItem(r, "mask_prompt"));
        lmx_data_splits sp;
        CHECK_OK(lmx_data_load_dir(dir, tok_qwen, &o, true, false, &sp));
        if (t_failed_checks) return;
        lmx_np_rng rng;
        CHECK(lmx_np_seed(&rng, (uint64_t)cJSON_GetObjectItem(r, "seed")->valueint));
        lmx_batches *it;
        CHECK_OK(lmx_batches_create(sp.train, cJSON_GetObjectItem(r, "batch_size")->valueint,
                                    cJSON_GetObjectItem(r, "max_seq_length")->valueint, true, &rng, &it));
        int idx = 0;
        for (const cJSON *ev = cJSON_GetObjectItem(r, "batches")->child; ev; ev = ev->next, idx++) {
            lmx_batch b;
            bool done;
            CHECK_OK(lmx_batches_next(it, &b, &done));
            if (!same_batch(&b, ev, "tools", idx)) break;
        }
        CHECK_EQ_INT(idx, 9);
        lmx_batches_free(it);
        lmx_data_splits_free(&sp);
    }
}

/* Writes files into a fresh folder under tmp and loads it. */
static lmx_status load_case(const char *name, const char *train, const char *valid, bool mask, bool want_test,
                            lmx_data_splits *sp) {
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/%s", tmp, name);
    t_sh(NULL, 0, "mkdir -p '%s'", dir);
    const char *names[2] = {"train.jsonl", "valid.jsonl"};
    const char *texts[2] = {train, valid};
    for (int k = 0; k < 2; k++) {
        if (!texts[k]) continue;
        snprintf(path, sizeof path, "%s/%s", dir, names[k]);
        FILE *f = fopen(path, "wb");
        fputs(texts[k], f);
        fclose(f);
    }
    lmx_data_options o;
    lmx_data_options_init(&o);
    o.mask_prompt = mask;
    return lmx_data_load_dir(dir, tok_stories, &o, true, want_test, sp);
}

static void expect_error(lmx_status s, lmx_status want, const char *needle, const char *mlx_key) {
    CHECK_MSG(s == want, "expected %s, got %s (%s)", lmx_status_str(want), lmx_status_str(s), lmx_last_error());
    CHECK_MSG(strstr(lmx_last_error(), needle) != NULL, "message '%s' lacks '%s'", lmx_last_error(), needle);
    CHECK(strchr(lmx_last_error(), '\n') == NULL); /* one line */
    const cJSON *m = cJSON_GetObjectItem(cJSON_GetObjectItem(doc, "errors"), mlx_key);
    CHECK_MSG(cJSON_IsString(m), "mlx-lm raised nothing for %s", mlx_key);
}

static void errors(void) {
    lmx_data_splits sp;
    expect_error(load_case("malformed", "{\"text\": \"a\"}\n{\"text\": \"b\"\n{\"text\": \"c\"}\n", NULL, false, false, &sp),
                 LMX_ERR_FORMAT, "train.jsonl:2: malformed JSON", "malformed_line");
    expect_error(load_case("blank", "{\"text\": \"a\"}\n\n{\"text\": \"c\"}\n", NULL, false, false, &sp), LMX_ERR_FORMAT,
                 "train.jsonl:2: an empty line", "blank_line");
    expect_error(load_case("empty", "", NULL, false, false, &sp), LMX_ERR_FORMAT, "train.jsonl: empty file", "empty_file");
    expect_error(load_case("keys", "{\"question\": \"a\", \"answer\": \"b\"}\n", NULL, false, false, &sp), LMX_ERR_FORMAT,
                 "train.jsonl:1: unsupported data format", "wrong_keys");
    expect_error(load_case("masktext", "{\"text\": \"a\"}\n", NULL, true, false, &sp), LMX_ERR_INVALID_ARG,
                 "Prompt masking not supported for text dataset.", "mask_prompt_text");
    expect_error(load_case("notrain", NULL, "{\"text\": \"a\"}\n", false, false, &sp), LMX_ERR_NOT_FOUND,
                 "Training set not found or empty.", "missing_train");
    expect_error(load_case("notest", "{\"text\": \"a\"}\n", NULL, false, true, &sp), LMX_ERR_NOT_FOUND,
                 "Test set not found or empty.", "missing_test");
    expect_error(load_case("valid_bad", "{\"text\": \"a\"}\n", "[1, 2]\n", false, false, &sp), LMX_ERR_FORMAT,
                 "valid.jsonl:1: each line must be a JSON object", "malformed_line");
    /* a CRLF file with no trailing newline is fine; no valid split is not an error */
    CHECK_OK(load_case("crlf", "{\"text\": \"a b\"}\r\n{\"text\": \"c\"}", NULL, false, false, &sp));
    CHECK(sp.valid == NULL && sp.test == NULL && lmx_dataset_size(sp.train) == 2);

    /* too few examples: an error when the first batch is taken, as mlx-lm's generator raises */
    lmx_np_rng rng;
    CHECK(lmx_np_seed(&rng, 0));
    lmx_batches *it;
    CHECK_OK(lmx_batches_create(sp.train, 4, 2048, true, &rng, &it));
    lmx_batch b;
    bool done;
    expect_error(lmx_batches_next(it, &b, &done), LMX_ERR_INVALID_ARG,
                 "Dataset must have at least batch_size=4 examples but only has 2.", "too_few_examples");
    lmx_batches_free(it);
    lmx_data_splits_free(&sp);

    /* a later record without the first record's key fails when it is tokenized, naming its line */
    CHECK_OK(load_case("laterkey", "{\"text\": \"a\"}\n{\"txt\": \"b\"}\n", NULL, false, false, &sp));
    const int32_t *ids;
    int64_t n, off;
    CHECK_OK(lmx_dataset_example(sp.train, 0, &ids, &n, &off));
    expect_error(lmx_dataset_example(sp.train, 1, &ids, &n, &off), LMX_ERR_FORMAT, "train.jsonl:2: missing key \"text\"",
                 "wrong_keys");
    lmx_data_splits_free(&sp);

    /* --mask-prompt on a one-message chat: the template of no messages (transformers' error) */
    CHECK_OK(load_case("onemsg", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n", NULL, true, false, &sp));
    expect_error(lmx_dataset_example(sp.train, 0, &ids, &n, &off), LMX_ERR_INVALID_ARG,
                 "train.jsonl:1: Cannot apply chat template to an empty conversation", "wrong_keys");
    lmx_data_splits_free(&sp);

    char dir[512];
    snprintf(dir, sizeof dir, "%s/no_such_folder", tmp);
    lmx_data_options o;
    lmx_data_options_init(&o);
    CHECK(lmx_data_load_dir(dir, tok_stories, &o, true, false, &sp) == LMX_ERR_NOT_FOUND);
}

/* Text examples: EOS appended unless already last; features renamed. */
static void text_eos_and_features(void) {
    lmx_data_splits sp;
    /* the default "text" key is absent: unsupported format with the defaults */
    CHECK(load_case("eos", "{\"body\": \"a b</s>\"}\n{\"body\": \"a b\"}\n", NULL, false, false, &sp) == LMX_ERR_FORMAT);
    char path[600];
    snprintf(path, sizeof path, "%s/eos/train.jsonl", tmp);
    lmx_data_options o;
    lmx_data_options_init(&o);
    o.text_feature = "body";
    lmx_dataset *d;
    CHECK_OK(lmx_dataset_load(path, tok_stories, &o, &d));
    if (!d) return;
    CHECK_EQ_INT(lmx_dataset_format(d), LMX_DATA_TEXT);
    const int32_t *a, *b;
    int64_t na, nb, off;
    CHECK_OK(lmx_dataset_example(d, 0, &a, &na, &off));
    CHECK_OK(lmx_dataset_example(d, 1, &b, &nb, &off));
    CHECK_EQ_INT(na, nb); /* "a b</s>" already ends with EOS; "a b" gets it appended */
    CHECK_EQ_INT(a[na - 1], lmx_tokenizer_eos(tok_stories));
    CHECK_EQ_INT(b[nb - 1], lmx_tokenizer_eos(tok_stories));
    lmx_dataset_free(d);
}

void run_tests(void) {
    snprintf(tmp, sizeof tmp, "/tmp/lmx_dataset_XXXXXX");
    if (!mkdtemp(tmp)) {
        t_skip("dataset", "mkdtemp failed");
        return;
    }
    TEST(setup);
    if (t_failed_checks == 0) {
        TEST(examples);
        TEST(train_runs);
        TEST(iterate_epochs);
        TEST(errors);
        TEST(text_eos_and_features);
    }
    cJSON_Delete(doc);
    lmx_tokenizer_free(tok_stories);
    lmx_tokenizer_free(tok_qwen);
    t_sh(NULL, 0, "rm -rf '%s'", tmp);
}
