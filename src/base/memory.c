/* memory.c - aligned allocation and small string helpers. */
#include "base.h"

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
