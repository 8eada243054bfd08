/* memory.c - aligned allocation and small string helpers. */
#include "base.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

void *lmx_aligned_alloc(size_t size) {
    if (size == 0) size = LMX_ALIGN;
    void *p = NULL;
    if (posix_memalign(&p, LMX_ALIGN, size) != 0) {
        lmx_err(LMX_ERR_NOMEM, "out of memory allocating %zu bytes", size);
        return NULL;
    }
    return p;
}

void lmx_aligned_free(void *p) { free(p); }

char *lmx_strdup(const char *s) { return s ? lmx_strndup(s, strlen(s)) : NULL; }

char *lmx_strndup(const char *s, size_t n) {
    char *r = malloc(n + 1);
    if (!r) return NULL;
    memcpy(r, s, n);
    r[n] = 0;
    return r;
}

void lmx_free(void *p) { free(p); }

/* Thread scratch: one key whose destructor frees a thread's buffers when a
 * pool worker exits (thread-local pointers alone would leak them). */
typedef struct {
    float *buf[LMX_SCRATCH_SLOTS];
    int64_t cap[LMX_SCRATCH_SLOTS];
} thread_scratch;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_destroy(void *p) {
    thread_scratch *ts = p;
    for (int i = 0; i < LMX_SCRATCH_SLOTS; i++) lmx_aligned_free(ts->buf[i]);
    free(ts);
}

static void scratch_key_init(void) { pthread_key_create(&scratch_key, scratch_destroy); }

float *lmx_thread_scratch(int slot, int64_t n) {
    if (slot < 0 || slot >= LMX_SCRATCH_SLOTS || n < 0) return NULL;
    pthread_once(&scratch_once, scratch_key_init);
    thread_scratch *ts = pthread_getspecific(scratch_key);
    if (!ts) {
        ts = calloc(1, sizeof *ts);
        if (!ts || pthread_setspecific(scratch_key, ts) != 0) {
            free(ts);
            return NULL;
        }
    }
    if (n > ts->cap[slot] || !ts->buf[slot]) {
        lmx_aligned_free(ts->buf[slot]);
        int64_t cap = n + n / 4 + 64;
        ts->buf[slot] = lmx_aligned_alloc((size_t)cap * sizeof(float));
        ts->cap[slot] = ts->buf[slot] ? cap : 0;
    }
    return ts->buf[slot];
}
