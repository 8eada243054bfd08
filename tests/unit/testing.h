/*
 * testing.h - a tiny test harness for lmx's C tests.
 *
 * A test file defines `void run_tests(void)` that calls TEST(fn) for each case;
 * CHECK* record failures without stopping the case; the harness main() prints
 * "N passed, N failed" and exits non-zero on any failure. Data paths:
 * LMX_TEST_DATA (tests/data), LMX_SOURCE_DIR, LMX_CLI (path of the lmx binary).
 */
#ifndef LMX_TESTING_H
#define LMX_TESTING_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

extern int t_failed_checks;
void t_run(const char *name, void (*fn)(void));
void t_skip(const char *name, const char *why);
void run_tests(void);

#define TEST(fn) t_run(#fn, fn)

#define CHECK(cond)                                                              \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
            t_failed_checks++;                                                   \
        }                                                                        \
    } while (0)

#define CHECK_MSG(cond, ...)                                                     \
    do {                                                                         \
        if (!(cond)) {                                                           \
            fprintf(stderr, "  %s:%d: ", __FILE__, __LINE__);                    \
            fprintf(stderr, __VA_ARGS__);                                        \
            fprintf(stderr, "\n");                                               \
            t_failed_checks++;                                                   \
        }                                                                        \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                       \
    do {                                                                         \
        long long _a = (long long)(a), _b = (long long)(b);                      \
        if (_a != _b) {                                                          \
            fprintf(stderr, "  %s:%d: %s == %lld, expected %lld\n", __FILE__, __LINE__, #a, _a, _b); \
            t_failed_checks++;                                                   \
        }                                                                        \
    } while (0)

#define CHECK_STR(a, b)                                                          \
    do {                                                                         \
        const char *_a = (a), *_b = (b);                                         \
        if (!_a || !_b || strcmp(_a, _b) != 0) {                                 \
            fprintf(stderr, "  %s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, #a, \
                    _a ? _a : "(null)", _b ? _b : "(null)");                     \
            t_failed_checks++;                                                   \
        }                                                                        \
    } while (0)

/* Status check: prints lmx_last_error() on failure. */
#define CHECK_OK(expr)                                                           \
    do {                                                                         \
        lmx_status _s = (expr);                                                  \
        if (_s != LMX_OK) {                                                      \
            fprintf(stderr, "  %s:%d: %s -> %s: %s\n", __FILE__, __LINE__, #expr, \
                    lmx_status_str(_s), lmx_last_error());                        \
            t_failed_checks++;                                                   \
        }                                                                        \
    } while (0)

/* Runs a shell command, returns its exit status; output captured into buf. */
int t_sh(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Reproducible random data (xorshift64 state *s): uniform in [-1, 1), and a
 * contiguous f32 array of shape [d0], [d0, d1] or [d0, d1, d2] (ndim) filled
 * with t_frand(s)·amp (the allocation is CHECKed; release it). */
struct lmx_array;
float t_frand(uint64_t *s);
struct lmx_array t_rand_f32(uint64_t *s, int ndim, int64_t d0, int64_t d1, int64_t d2, float amp);
/* A 1-D i32 array holding v[0..n). */
struct lmx_array t_i32(int n, const int32_t *v);

#endif
