/*
 * test_models_hf.c - every architecture against Hugging Face transformers.
 *
 * Fixtures (tests/fixtures/make_hf_fixtures.py) are tiny random-weight models
 * with reference logits for 40 tokens and a 16-token greedy continuation.
 * Tolerance: max|Δlogit| ≤ 1e-4 · max|ref| for f32 weights. bf16 cases are
 * referenced against the same bf16 weights upcast to f32, so the same bound
 * applies (only storage is bf16; lmx computes in f32 as the reference did).
 * Greedy continuations must be identical.
 */
#include "testing.h"
#include "golden.h"

#include "io/safetensors.h"
#include "lmx.h"

#include <dirent.h>
#include <math.h>
#include <stdlib.h>

#define REL_TOL 1e-4

static void check_case(const char *dir, const char *name) {
    char gpath[1024];
    snprintf(gpath, sizeof gpath, "%s/golden.safetensors", dir);
    golden_check(dir, gpath, name, REL_TOL);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static char *cases[128];
static int n_cases;
static const char *current;

static void one_case(void) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/hf/%s", LMX_TEST_DATA, current);
    check_case(dir, current);
}

void run_tests(void) {
    char root[1024];
    snprintf(root, sizeof root, "%s/hf", LMX_TEST_DATA);
    DIR *d = opendir(root);
    if (!d) {
        t_skip("hf_fixtures", "tests/data/hf is missing");
        return;
    }
    struct dirent *e;
    while ((e = readdir(d)) && n_cases < 128)
        if (e->d_name[0] != '.') cases[n_cases++] = strdup(e->d_name);
    closedir(d);
    qsort(cases, (size_t)n_cases, sizeof *cases, cmp_str);
    for (int i = 0; i < n_cases; i++) {
        current = cases[i];
        char label[160];
        snprintf(label, sizeof label, "hf_%s", cases[i]);
        t_run(label, one_case);
        free(cases[i]);
    }
}
