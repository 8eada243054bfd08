/* cmd_perplexity.c - `lmx perplexity`: mlx_lm.perplexity over a local file.
 *
 * Samples: a .jsonl file's "text" fields, or a plain text file split at
 * lines "<|endoftext|>" (the whole file when there are none). Each sample
 * is encoded with special tokens and gets EOS appended unless it ends with
 * it (mlx-lm's text dataset); samples are taken in the order of
 * np.random.seed(--seed); np.random.permutation(n_samples) exactly as
 * mlx_lm.perplexity does (src/quant/np_random.c), their tokens concatenated
 * until num_samples × sequence_length, and cut into rows of sequence_length. Each row predicts
 * tokens 1..L-1 from 0..L-2; ppl = exp(mean loss), SE = ppl·std(loss)/√N. */
#include "cli.h"
#include "convert/convert.h"
#include "quant/np_random.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

typedef struct {
    char **s;
    size_t n, cap;
} strs;

static bool push(strs *v, const char *p, size_t n) {
    if (v->n == v->cap) {
        size_t c = v->cap ? v->cap * 2 : 64;
        char **q = realloc(v->s, c * sizeof *q);
        if (!q) return false;
        v->s = q;
        v->cap = c;
    }
    char *t = malloc(n + 1);
    if (!t) return false;
    memcpy(t, p, n);
    t[n] = 0;
    v->s[v->n++] = t;
    return true;
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) b[n] = 0, *len = (size_t)n;
    return b;
}

static bool load_samples(const char *cmd, const char *path, strs *out) {
    size_t len;
    char *d = slurp(path, &len);
    if (!d) {
        cli_fail(cmd, "--data: cannot read %s", path);
        return false;
    }
    size_t pl = strlen(path);
    bool jsonl = pl > 6 && !strcmp(path + pl - 6, ".jsonl");
    bool ok = true;
    int lineno = 0;
    for (char *line = d, *next; ok && line && *line; line = next) {
        lineno++;
        next = strchr(line, '\n');
        size_t n = next ? (size_t)(next - line) : strlen(line);
        if (next) *next++ = 0;
        if (jsonl) {
            if (strspn(line, " \t\r") == n) continue;
            cJSON *j = cJSON_Parse(line);
            const char *t = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(j, "text"));
            if (!t) {
                cli_fail(cmd, "--data: %s:%d: %s", path, lineno,
                         j ? "no \"text\" string in this object" : "not valid JSON");
                ok = false;
            } else {
                ok = push(out, t, strlen(t));
            }
            cJSON_Delete(j);
        } else {
            (void)n;
        }
    }
    free(d);
    if (jsonl || !ok) return ok;
    d = slurp(path, &len);
    if (!d) return false;
    const char *sep = "<|endoftext|>";
    char *p = d;
    while (ok) { /* split at separator lines; strip each story */
        char *s = strstr(p, sep);
        size_t n = s ? (size_t)(s - p) : strlen(p);
        while (n && strchr(" \t\r\n", *p)) p++, n--;
        while (n && strchr(" \t\r\n", p[n - 1])) n--;
        if (n) ok = push(out, p, n);
        if (!s) break;
        p = s + strlen(sep);
    }
    free(d);
    return ok;
}

int cmd_perplexity(int argc, char **argv) {
    const char *cmd = "perplexity";
    cli_args a;
    cli_init(&a, argc, argv);
    const char *model = NULL, *data = NULL, *tok_path = NULL;
    long long seq = 512, batch = 8, nsamples = 256, seed = 123, threads = 0;
    const char *f;
    while ((f = cli_next(&a))) {
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) {
            printf("usage: lmx perplexity --model PATH --data FILE(.txt|.jsonl) [--sequence-length 512]\n"
                   "                      [--batch-size 8] [--num-samples 256 (-1 all)] [--seed 123]\n"
                   "                      [--tokenizer PATH (when the model folder has none)] [--threads N]\n");
            return 0;
        } else if (!strcmp(f, "--model")) {
            model = cli_value(&a, f);
        } else if (!strcmp(f, "--data") || !strcmp(f, "--data-path")) {
            data = cli_value(&a, f);
        } else if (!strcmp(f, "--tokenizer")) {
            tok_path = cli_value(&a, f);
        } else if (!strcmp(f, "--sequence-length")) {
            cli_int(&a, f, 2, 1 << 20, &seq);
        } else if (!strcmp(f, "--batch-size")) {
            cli_int(&a, f, 1, 1 << 16, &batch);
        } else if (!strcmp(f, "--num-samples")) {
            cli_int(&a, f, -1, 1LL << 30, &nsamples);
        } else if (!strcmp(f, "--seed")) {
            cli_int(&a, f, 0, INT64_MAX, &seed);
        } else if (!strcmp(f, "--threads")) {
            cli_int(&a, f, 1, 512, &threads);
        } else {
            return cli_unknown(cmd, f);
        }
        if (a.error) return 2;
    }
    if (!data) {
        cli_fail(cmd, "--data is required");
        return 2;
    }
    if (!model) model = cli_default_model();
    printf("Loading model from %s...\n", model);
    lmx_model *m;
    if (cli_load_model(model, threads, NULL, false, &m)) return cli_lib_fail(cmd);
    lmx_tokenizer *own = NULL;
    const lmx_tokenizer *tok = lmx_model_tokenizer(m);
    if (tok_path) {
        if (lmx_tokenizer_load(tok_path, &own)) {
            lmx_model_free(m);
            return cli_lib_fail(cmd);
        }
        tok = own;
    }
    int rc = 0;
    strs samples = {0};
    int32_t *all = NULL;
    float *lg = NULL;
    double *losses = NULL;
    if (!tok) {
        cli_fail(cmd, "%s has no tokenizer; pass --tokenizer", model);
        rc = 1;
        goto done;
    }
    uint64_t n_params;
    if (lmx_count_parameters(model, &n_params) == LMX_OK)
        printf("Model loaded: %.1fM parameters\n", (double)n_params / 1e6);
    printf("\nLoading dataset...\n  Sequence length: %lld\n", seq);
    if (!load_samples(cmd, data, &samples)) {
        rc = 1;
        goto done;
    }
    {
        size_t *perm = malloc((samples.n ? samples.n : 1) * sizeof *perm);
        char **order = malloc((samples.n ? samples.n : 1) * sizeof *order);
        if (!perm || !order || !lmx_np_permutation((uint64_t)seed, samples.n, perm)) {
            free(perm), free(order);
            cli_fail(cmd, perm && order ? "--seed must be below 2^32 (numpy's limit)" : "out of memory");
            rc = 1;
            goto done;
        }
        for (size_t i = 0; i < samples.n; i++) order[i] = samples.s[perm[i]];
        memcpy(samples.s, order, samples.n * sizeof *order);
        free(perm), free(order);
    }
    size_t want = nsamples > 0 ? (size_t)(seq * nsamples) : SIZE_MAX, n_all = 0, cap = 0;
    int32_t eos = lmx_tokenizer_eos(tok);
    for (size_t i = 0; i < samples.n && n_all < want; i++) {
        int32_t *ids;
        size_t n;
        if (lmx_tokenize(tok, samples.s[i], strlen(samples.s[i]), true, &ids, &n)) {
            rc = cli_lib_fail(cmd);
            goto done;
        }
        if (n_all + n + 1 > cap) {
            cap = (n_all + n + 1) * 2;
            int32_t *q = realloc(all, cap * sizeof *q);
            if (!q) {
                lmx_free(ids);
                cli_fail(cmd, "out of memory");
                rc = 1;
                goto done;
            }
            all = q;
        }
        memcpy(all + n_all, ids, n * sizeof *ids);
        n_all += n;
        if (eos >= 0 && (n == 0 || ids[n - 1] != eos)) all[n_all++] = eos;
        lmx_free(ids);
    }
    size_t rows = n_all / (size_t)seq;
    if (nsamples > 0 && rows > (size_t)nsamples) rows = (size_t)nsamples;
    printf("  Loaded %zu samples\n", rows);
    if (rows == 0) {
        cli_fail(cmd, "%s has %zu tokens, fewer than one row of --sequence-length %lld", data, n_all, seq);
        rc = 1;
        goto done;
    }
    size_t V = (size_t)lmx_model_vocab_size(m), L = (size_t)seq - 1, N = rows * L;
    lg = malloc(L * V * sizeof *lg);
    losses = malloc(N * sizeof *losses);
    if (!lg || !losses) {
        cli_fail(cmd, "out of memory for %zu x %zu logits", L, V);
        rc = 1;
        goto done;
    }
    printf("\nEvaluating perplexity with batch size %lld...\n", batch);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    size_t nb = (rows + (size_t)batch - 1) / (size_t)batch;
    for (size_t r = 0; r < rows; r++) {
        const int32_t *row = all + r * (size_t)seq;
        if (lmx_logits(m, row, L, lg)) {
            rc = cli_lib_fail(cmd);
            goto done;
        }
        for (size_t t = 0; t < L; t++) {
            const float *x = lg + t * V;
            float mx = x[0];
            for (size_t v = 1; v < V; v++) mx = x[v] > mx ? x[v] : mx;
            double se = 0;
            for (size_t v = 0; v < V; v++) se += exp((double)x[v] - mx);
            losses[r * L + t] = log(se) + mx - x[row[t + 1]];
        }
        if ((r + 1) % (size_t)batch == 0 || r + 1 == rows)
            printf("  Processed %zu/%zu batches...\r", (r + (size_t)batch) / (size_t)batch, nb), fflush(stdout);
    }
    printf("\n");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    double mean = 0, var = 0;
    for (size_t i = 0; i < N; i++) mean += losses[i];
    mean /= (double)N;
    for (size_t i = 0; i < N; i++) var += (losses[i] - mean) * (losses[i] - mean);
    var = N > 1 ? var / (double)(N - 1) : 0;
    double ppl = exp(mean), se = ppl * sqrt(var) / sqrt((double)N);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("\n============================================================\n");
    printf("EVALUATION RESULTS\n");
    printf("============================================================\n");
    printf("Model: %s\n", model);
    printf("Perplexity: %.3f \u00b1 %.3f\n", ppl, se);
    printf("Evaluation time: %.2f seconds\n", secs);
    printf("Peak memory: %.2f GB\n", (double)ru.ru_maxrss * 1024.0 / 1e9);
    printf("Tokens per second: %.0f\n", secs > 0 ? (double)N / secs : 0.0);
    printf("\nDataset statistics:\n  Total samples: %zu\n  Total tokens: %zu\n", rows, rows * (size_t)seq);
done:
    for (size_t i = 0; i < samples.n; i++) free(samples.s[i]);
    free(samples.s);
    free(all), free(lg), free(losses);
    if (own) lmx_tokenizer_free(own);
    lmx_model_free(m);
    return rc;
}
