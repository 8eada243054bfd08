/* testing.c - the harness main(): runs run_tests() and prints the summary. */
#include "testing.h"

#include "core/array.h"

#include <stdarg.h>
#include <stdlib.h>
#include <sys/wait.h>

int t_failed_checks;
static int n_pass, n_fail, n_skip;

void t_run(const char *name, void (*fn)(void)) {
    int before = t_failed_checks;
    fn();
    if (t_failed_checks == before) {
        n_pass++;
        printf("PASS %s\n", name);
    } else {
        n_fail++;
        printf("FAIL %s\n", name);
    }
    fflush(stdout);
}

void t_skip(const char *name, const char *why) {
    n_skip++;
    printf("SKIP %s: %s\n", name, why);
}

int t_sh(char *buf, size_t cap, const char *fmt, ...) {
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t n = 0;
    if (buf && cap) {
        size_t r;
        while (n + 1 < cap && (r = fread(buf + n, 1, cap - 1 - n, p)) > 0) n += r;
        buf[n] = 0;
    }
    char sink[4096];
    while (fread(sink, 1, sizeof sink, p) > 0) {
    }
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int main(void) {
    run_tests();
    printf("%d passed, %d failed, %d skipped\n", n_pass, n_fail, n_skip);
    return n_fail ? 1 : 0;
}

float t_frand(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return (float)((*s >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
}

lmx_array t_rand_f32(uint64_t *s, int ndim, int64_t d0, int64_t d1, int64_t d2, float amp) {
    int64_t sh[3] = {d0, d1, d2};
    lmx_array a = {0};
    CHECK_OK(lmx_array_alloc(&a, LMX_F32, ndim, sh));
    for (int64_t i = 0; i < lmx_array_numel(&a); i++) ((float *)a.data)[i] = t_frand(s) * amp;
    return a;
}

lmx_array t_i32(int n, const int32_t *v) {
    int64_t sh[1] = {n};
    lmx_array a = {0};
    CHECK_OK(lmx_array_alloc(&a, LMX_I32, 1, sh));
    if (a.data) memcpy(a.data, v, (size_t)n * 4);
    return a;
}
