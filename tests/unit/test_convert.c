/*
 * test_convert.c - `lmx convert` round trips and bad quantized folders.
 *
 * Round trip: convert -q an HF fixture (4-bit, 8-bit, a mixed recipe, a tied
 * model, 3-bit g32), then convert -d the result back to f32; the quantized
 * model (packed kernels) and the dequantized one (plain f32) must give the
 * same logits within 1e-4 of max|logit|. Folder layout per §4b is checked
 * (index, sorted config with quantization + quantization_config).
 * Bad input: bits 7, a group size that does not divide the row, scales of
 * the wrong shape, packed width inconsistent with bits, an override naming
 * a missing module, an existing destination; kill -9 mid-convert never
 * leaves a partial destination.
 * GGUF → MLX folder: models/stories260K.gguf converted; the folder's logits
 * equal the GGUF's (1e-5 of max|logit|; q/k rows un-permuted for HF's
 * rotate_half RoPE), greedy text identical, its tokenizer.json (SPM as BPE
 * with score-ordered merges) encodes the five TinyStories samples and the
 * recorded llama2.c prompt encodings exactly as the GGUF vocabulary does;
 * lmx_count_parameters equals mlx-lm's get_total_parameters.
 */
#include "testing.h"

#include "lmx.h"
#include "convert/convert.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

static char tmpdir[256];

static const int32_t toks[] = {5, 17, 99, 3, 200, 42, 7, 128, 64, 250, 11, 33};
#define NT (sizeof toks / sizeof *toks)

static float *logits_of(const char *path, int *V) {
    lmx_load_options lo;
    lmx_load_options_init(&lo);
    lo.no_tokenizer = true;
    lmx_model *m;
    lmx_status s = lmx_load(path, &lo, &m);
    CHECK_OK(s);
    if (s) return NULL;
    *V = lmx_model_vocab_size(m);
    float *lg = malloc(NT * (size_t)*V * sizeof *lg);
    CHECK_OK(lmx_logits(m, toks, NT, lg));
    lmx_model_free(m);
    return lg;
}

static int run_cli(char *out, size_t cap, const char *args) {
    return t_sh(out, cap, "%s convert %s 2>&1", LMX_CLI, args);
}

static void roundtrip(const char *fixture, const char *qflags, const char *tag) {
    char q[512], d[512], out[4096], args[2048];
    snprintf(q, sizeof q, "%s/%s_q", tmpdir, tag);
    snprintf(d, sizeof d, "%s/%s_d", tmpdir, tag);
    snprintf(args, sizeof args, "--hf-path %s/hf/%s --mlx-path %s -q %s", LMX_TEST_DATA, fixture, q, qflags);
    int rc = run_cli(out, sizeof out, args);
    CHECK_MSG(rc == 0, "%s: convert failed: %s", tag, out);
    if (rc) return;
    CHECK_MSG(strstr(out, "Quantized model with ") && strstr(out, " bits per weight."), "%s: no bpw line: %s", tag, out);
    snprintf(args, sizeof args, "--hf-path %s --mlx-path %s -d --dtype float32", q, d);
    rc = run_cli(out, sizeof out, args);
    CHECK_MSG(rc == 0, "%s: dequantize failed: %s", tag, out);
    if (rc) return;
    int V1 = 0, V2 = 0;
    float *a = logits_of(q, &V1), *b = logits_of(d, &V2);
    if (a && b && V1 == V2) {
        double md = 0, mr = 0;
        for (size_t i = 0; i < NT * (size_t)V1; i++) {
            md = fmax(md, fabs((double)a[i] - b[i]));
            mr = fmax(mr, fabs((double)b[i]));
        }
        printf("  %-12s %-40s max|d| %.3g of max|logit| %.3g\n", tag, qflags, md, mr);
        CHECK_MSG(md <= 1e-4 * mr, "%s: quantized vs dequantized logits differ by %g", tag, md);
    }
    free(a), free(b);
    /* layout */
    char p[600];
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", q);
    char *idx = NULL;
    size_t n;
    FILE *f = fopen(p, "rb");
    CHECK_MSG(f != NULL, "%s: no index", tag);
    if (f) {
        idx = calloc(1, 1 << 20);
        n = fread(idx, 1, (1 << 20) - 1, f);
        fclose(f);
        CHECK(n > 0 && strstr(idx, "\"total_size\": ") && strstr(idx, "\"total_parameters\": "));
        free(idx);
    }
    snprintf(p, sizeof p, "%s/config.json", q);
    f = fopen(p, "rb");
    if (f) {
        char *c = calloc(1, 1 << 20);
        n = fread(c, 1, (1 << 20) - 1, f);
        fclose(f);
        CHECK(strstr(c, "\"quantization\": {") && strstr(c, "\"quantization_config\": {"));
        CHECK(strncmp(c, "{\n    \"", 7) == 0);
        free(c);
    }
}

static void test_roundtrip_llama(void) {
    roundtrip("llama", "", "llama_q4");
    roundtrip("llama", "--q-bits 8 --q-group-size 32", "llama_q8");
    roundtrip("llama", "--q-bits 3 --q-group-size 32", "llama_q3");
    roundtrip("llama", "--quant-predicate mixed_3_6 --q-group-size 32", "llama_mix");
}

static void test_roundtrip_tied_and_others(void) {
    roundtrip("llama_tied", "--q-group-size 32", "tied_q4");
    roundtrip("qwen3", "--q-bits 6 --q-group-size 32", "qwen3_q6");
    roundtrip("phi3", "--q-bits 5 --q-group-size 32", "phi3_q5");
    roundtrip("qwen3_moe", "--q-group-size 32", "moe_q4");
}

/* A copy of a converted folder with config.json's quantization replaced. */
static void variant(const char *src, const char *dst, const char *sed) {
    char out[2048];
    int rc = t_sh(out, sizeof out, "rm -rf %s && cp -r %s %s && sed -i '%s' %s/config.json", dst, src, dst, sed, dst);
    CHECK_MSG(rc == 0, "variant: %s", out);
}

static void expect_load_error(const char *path, lmx_status want, const char *needle) {
    lmx_load_options lo;
    lmx_load_options_init(&lo);
    lo.no_tokenizer = true;
    lmx_model *m = NULL;
    lmx_status s = lmx_load(path, &lo, &m);
    CHECK_MSG(s == want && strstr(lmx_last_error(), needle), "%s: got %s '%s', want %s containing '%s'", path,
              lmx_status_str(s), lmx_last_error(), lmx_status_str(want), needle);
    if (!s) lmx_model_free(m);
}

static void test_bad_quantized_folders(void) {
    char q[512], v[512], out[4096], args[1024];
    snprintf(q, sizeof q, "%s/bad_src", tmpdir);
    snprintf(args, sizeof args, "--hf-path %s/hf/llama --mlx-path %s -q --q-group-size 64", LMX_TEST_DATA, q);
    CHECK_MSG(run_cli(out, sizeof out, args) == 0, "%s", out);
    snprintf(v, sizeof v, "%s/bad_bits", tmpdir);
    variant(q, v, "s/\"bits\": 4/\"bits\": 7/g");
    expect_load_error(v, LMX_ERR_UNSUPPORTED, "bits: 7 is not supported");
    snprintf(v, sizeof v, "%s/bad_group", tmpdir);
    variant(q, v, "s/\"group_size\": 64/\"group_size\": 48/g");
    expect_load_error(v, LMX_ERR_SHAPE, "does not divide the row");
    snprintf(v, sizeof v, "%s/bad_scales", tmpdir);
    variant(q, v, "s/\"group_size\": 64/\"group_size\": 32/g");
    expect_load_error(v, LMX_ERR_SHAPE, "scales': shape");
    snprintf(v, sizeof v, "%s/bad_width", tmpdir);
    variant(q, v, "s/\"bits\": 4/\"bits\": 8/g");
    expect_load_error(v, LMX_ERR_SHAPE, "packed width");
    snprintf(v, sizeof v, "%s/bad_override", tmpdir);
    variant(q, v, "s/\"mode\": \"affine\"/\"mode\": \"affine\", \"model.layers.9.mlp.up_proj\": false/");
    expect_load_error(v, LMX_ERR_FORMAT, "quantization.model.layers.9.mlp.up_proj: names no module");
    /* a per-layer false override on an unquantized module is honoured: the
     * float source with a quantization block that excludes q_proj loads. */
    snprintf(v, sizeof v, "%s/false_override", tmpdir);
    char sed[512];
    snprintf(sed, sizeof sed, "s/^{/{\"quantization\": {\"group_size\": 64, \"bits\": 4, "
                              "\"model.layers.0.self_attn.q_proj\": false},/");
    char src[512];
    snprintf(src, sizeof src, "%s/hf/llama", LMX_TEST_DATA);
    variant(src, v, sed);
    int V1, V2;
    float *a = logits_of(v, &V1), *b = logits_of(src, &V2);
    CHECK(a && b && V1 == V2 && !memcmp(a, b, NT * (size_t)V1 * sizeof *a));
    free(a), free(b);
    /* existing destination is refused and left alone */
    snprintf(args, sizeof args, "--hf-path %s/hf/llama --mlx-path %s -q", LMX_TEST_DATA, q);
    CHECK(run_cli(out, sizeof out, args) != 0 && strstr(out, "already exists"));
    /* unsupported CLI values */
    snprintf(args, sizeof args, "--hf-path %s/hf/llama --mlx-path %s/x1 -q --q-bits 7", LMX_TEST_DATA, tmpdir);
    CHECK(run_cli(out, sizeof out, args) != 0 && strstr(out, "bits: 7"));
    snprintf(args, sizeof args, "--hf-path %s/hf/phi --mlx-path %s/x2 -q --quant-predicate mixed_2_6", LMX_TEST_DATA,
             tmpdir);
    CHECK(run_cli(out, sizeof out, args) != 0 && strstr(out, "down_proj"));
}

/* kill -9 at increasing delays: dst is either absent or complete. */
static void test_kill9_leaves_no_dst(void) {
    int killed_mid = 0;
    for (int k = 0; k < 12; k++) {
        char dst[512];
        snprintf(dst, sizeof dst, "%s/killed%d", tmpdir, k);
        pid_t pid = fork();
        if (pid == 0) {
            int fd = open("/dev/null", 1);
            dup2(fd, 1), dup2(fd, 2);
            char src[512];
            snprintf(src, sizeof src, "%s/stories260K/hf", LMX_TEST_DATA);
            execl(LMX_CLI, LMX_CLI, "convert", "--hf-path", src, "--mlx-path", dst, "-q", "--q-bits", "3",
                  "--q-group-size", "32", (char *)NULL);
            _exit(127);
        }
        usleep((useconds_t)(k * 1500));
        kill(pid, SIGKILL);
        int st;
        waitpid(pid, &st, 0);
        struct stat sb;
        bool exists = stat(dst, &sb) == 0;
        if (WIFSIGNALED(st) && !exists) killed_mid++;
        if (exists) {
            char p[600];
            snprintf(p, sizeof p, "%s/config.json", dst);
            CHECK_MSG(stat(p, &sb) == 0, "%s exists but is incomplete", dst);
            snprintf(p, sizeof p, "%s/model.safetensors.index.json", dst);
            CHECK_MSG(stat(p, &sb) == 0, "%s exists but is incomplete", dst);
        }
    }
    printf("  %d of 12 runs killed before finishing; no partial destination\n", killed_mid);
    CHECK(killed_mid > 0);
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *b = calloc(1, 1 << 16);
    size_t n = b ? fread(b, 1, (1 << 16) - 1, f) : 0;
    (void)n;
    fclose(f);
    return b;
}

static void test_gguf_to_folder(void) {
    char dst[512], q[512], args[2048], out[4096];
    const char *gguf = LMX_SOURCE_DIR "/models/stories260K.gguf";
    snprintf(dst, sizeof dst, "%s/from_gguf", tmpdir);
    snprintf(args, sizeof args, "--hf-path %s --mlx-path %s", gguf, dst);
    int rc = run_cli(out, sizeof out, args);
    CHECK_MSG(rc == 0 && strstr(out, "Using dtype: float32"), "%s", out);
    if (rc) return;
    int V1 = 0, V2 = 0;
    float *a = logits_of(gguf, &V1), *b = logits_of(dst, &V2);
    CHECK(a && b && V1 == V2);
    if (a && b && V1 == V2) {
        double md = 0, mr = 0;
        for (size_t i = 0; i < NT * (size_t)V1; i++) {
            md = fmax(md, fabs((double)a[i] - b[i]));
            mr = fmax(mr, fabs((double)a[i]));
        }
        printf("  GGUF vs converted folder: max|d| %.3g of max|logit| %.3g\n", md, mr);
        CHECK_MSG(md <= 1e-5 * mr, "logits differ by %g", md);
    }
    free(a), free(b);
    char g1[4096], g2[4096];
    t_sh(g1, sizeof g1, "%s generate --model %s --prompt 'Once upon a time' --max-tokens 64 --temp 0 2>/dev/null | head -3",
         LMX_CLI, gguf);
    t_sh(g2, sizeof g2, "%s generate --model %s --prompt 'Once upon a time' --max-tokens 64 --temp 0 2>/dev/null | head -3",
         LMX_CLI, dst);
    CHECK_MSG(strlen(g1) > 40 && !strcmp(g1, g2), "greedy text differs:\n%s\n---\n%s", g1, g2);
    /* tokenizer.json vs the GGUF vocabulary */
    lmx_tokenizer *tg = NULL, *tj = NULL;
    char tjp[600];
    snprintf(tjp, sizeof tjp, "%s/tokenizer.json", dst);
    CHECK_OK(lmx_tokenizer_load(gguf, &tg));
    CHECK_OK(lmx_tokenizer_load(dst, &tj));
    char *text = read_text(LMX_TEST_DATA "/text/tinystories_sample.txt");
    const char *extra[] = {"Once upon a time", "Hello world", "Lily and Ben are friends. They like to play in the park.",
                           "", "  two  spaces\tand\nnewline \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80 <s> </s>"};
    static const int32_t hello[] = {1, 346, 306, 414, 263, 304, 341};
    int n_cmp = 0, n_same = 0;
    for (char *p = text, *e; tg && tj && text && p; p = e ? e + 13 : NULL) {
        e = strstr(p, "<|endoftext|>");
        size_t n = e ? (size_t)(e - p) : strlen(p);
        int32_t *x = NULL, *y = NULL;
        size_t nx = 0, ny = 0;
        CHECK_OK(lmx_tokenize(tg, p, n, true, &x, &nx));
        CHECK_OK(lmx_tokenize(tj, p, n, true, &y, &ny));
        n_cmp++;
        n_same += nx == ny && x && y && !memcmp(x, y, nx * sizeof *x);
        lmx_free(x), lmx_free(y);
    }
    for (size_t k = 0; tg && tj && k < sizeof extra / sizeof *extra; k++) {
        int32_t *x = NULL, *y = NULL;
        size_t nx = 0, ny = 0;
        CHECK_OK(lmx_tokenize(tg, extra[k], strlen(extra[k]), true, &x, &nx));
        CHECK_OK(lmx_tokenize(tj, extra[k], strlen(extra[k]), true, &y, &ny));
        n_cmp++;
        bool same = nx == ny && x && y && !memcmp(x, y, nx * sizeof *x);
        n_same += same;
        CHECK_MSG(same, "'%s' encodes differently", extra[k]);
        if (k == 1) CHECK(ny == 7 && !memcmp(y, hello, sizeof hello));
        char *d1 = NULL, *d2 = NULL;
        CHECK_OK(lmx_detokenize(tg, x, nx, &d1));
        CHECK_OK(lmx_detokenize(tj, y, ny, &d2));
        CHECK_MSG(d1 && d2 && !strcmp(d1, d2), "decode differs: '%s' vs '%s'", d1, d2);
        lmx_free(d1), lmx_free(d2), lmx_free(x), lmx_free(y);
    }
    printf("  tokenizer.json vs GGUF vocabulary: %d of %d texts encode identically\n", n_same, n_cmp);
    CHECK(n_cmp >= 10 && n_same == n_cmp);
    free(text);
    lmx_tokenizer_free(tg);
    lmx_tokenizer_free(tj);
    /* quantizing straight from the GGUF, and a file that is not one */
    snprintf(q, sizeof q, "%s/from_gguf_q8", tmpdir);
    snprintf(args, sizeof args, "--hf-path %s --mlx-path %s -q --q-bits 8 --q-group-size 32", gguf, q);
    CHECK_MSG(run_cli(out, sizeof out, args) == 0 && strstr(out, "bits per weight"), "%s", out);
    a = logits_of(q, &V1);
    CHECK(a != NULL);
    free(a);
    /* parameter counts as mlx-lm's get_total_parameters gives them (printed by mlx-lm 0.32.2):
     * quantized weights unpacked, a tied lm_head once */
    uint64_t np = 0;
    CHECK(lmx_count_parameters(dst, &np) == LMX_OK && np == 292800);
    CHECK(lmx_count_parameters(q, &np) == LMX_OK && np == 292800);
    CHECK(lmx_count_parameters(gguf, &np) == LMX_OK && np == 292800);
    CHECK(lmx_count_parameters(LMX_TEST_DATA "/stories260K/hf", &np) == LMX_OK && np == 260032);
    snprintf(args, sizeof args, "--hf-path %s/text/tinystories_sample.txt --mlx-path %s/notgguf", LMX_TEST_DATA, tmpdir);
    CHECK(run_cli(out, sizeof out, args) != 0 && strstr(out, "GGUF"));
    struct stat sb;
    snprintf(q, sizeof q, "%s/notgguf", tmpdir);
    CHECK(stat(q, &sb) != 0);
}

void run_tests(void) {
    /* The round trips check a format property (quantize -> dequantize gives
     * the same model) at 1e-4 of the logits; under LMX_DEVICE=cuda the
     * default rounds prefill activations to bf16 for quantized weights only
     * (docs/CUDA.md), which is device precision, bounded in golden.c. */
    setenv("LMX_CUDA_EXACT", "1", 0);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/lmx_test_convert_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        t_skip("all", "cannot create a temp folder");
        return;
    }
    TEST(test_roundtrip_llama);
    TEST(test_roundtrip_tied_and_others);
    TEST(test_bad_quantized_folders);
    TEST(test_kill9_leaves_no_dst);
    TEST(test_gguf_to_folder);
    char out[256];
    t_sh(out, sizeof out, "rm -rf %s", tmpdir);
}
