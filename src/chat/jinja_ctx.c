/* jinja_ctx.c - the per-render arena, error unwinding, output buffers, UTF-8. */
#include "chat/jinja.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct jchunk {
    struct jchunk *next;
    size_t used, cap;
    max_align_t data[];
} jchunk;

#define JX_CHUNK (64 * 1024)

static void fail_msg(jx_ctx *c, int line, int col, const char *fmt, va_list ap) {
    char m[900];
    vsnprintf(m, sizeof m, fmt, ap);
    if (line > 0)
        snprintf(c->msg, sizeof c->msg, "template:%d:%d: %s", line, col, m);
    else
        snprintf(c->msg, sizeof c->msg, "template: %s", m);
    if (c->status == LMX_OK) c->status = LMX_ERR_TEMPLATE;
}

_Noreturn void jx_fail(jx_ctx *c, int line, int col, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fail_msg(c, line, col, fmt, ap);
    va_end(ap);
    longjmp(*c->jb, 1);
}

_Noreturn void jx_failn(jx_ctx *c, const jnode *at, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fail_msg(c, at ? at->line : 0, at ? at->col : 0, fmt, ap);
    va_end(ap);
    longjmp(*c->jb, 1);
}

void *jx_alloc(jx_ctx *c, size_t n) {
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    if (c->used + n > c->limit || n > c->limit) {
        c->status = LMX_ERR_TEMPLATE;
        jx_failn(c, c->cur, "render exceeds the memory limit (%zu MB)", c->limit >> 20);
    }
    jchunk *k = c->chunks;
    if (!k || k->cap - k->used < n) {
        size_t cap = n > JX_CHUNK / 4 ? n : JX_CHUNK;
        k = malloc(sizeof *k + cap);
        if (!k) {
            c->status = LMX_ERR_NOMEM;
            jx_fail(c, 0, 0, "out of memory");
        }
        k->cap = cap;
        k->used = 0;
        if (cap == n && c->chunks) { /* big block: keep the current chunk on top */
            k->next = c->chunks->next;
            c->chunks->next = k;
        } else {
            k->next = c->chunks;
            c->chunks = k;
        }
    }
    void *p = (char *)k->data + k->used;
    k->used += n;
    c->used += n;
    memset(p, 0, n);
    return p;
}

void jx_free_all(jx_ctx *c) {
    jchunk *k = c->chunks;
    while (k) {
        jchunk *nx = k->next;
        free(k);
        k = nx;
    }
    c->chunks = NULL;
    c->used = 0;
}

/* ---- buffers ---------------------------------------------------------------- */

void jb_put(jx_ctx *c, jbuf *b, const char *s, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = jx_alloc(c, cap);
        if (b->n) memcpy(p, b->p, b->n);
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

void jb_puts(jx_ctx *c, jbuf *b, const char *s) { jb_put(c, b, s, strlen(s)); }
void jb_putc(jx_ctx *c, jbuf *b, char ch) { jb_put(c, b, &ch, 1); }

void jb_printf(jx_ctx *c, jbuf *b, const char *fmt, ...) {
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n < sizeof tmp) {
        jb_put(c, b, tmp, (size_t)n);
        return;
    }
    char *big = jx_alloc(c, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    jb_put(c, b, big, (size_t)n);
}

jstr *jb_str(jx_ctx *c, jbuf *b) { return js_new(c, b->p ? b->p : "", b->n); }

/* ---- UTF-8 ---------------------------------------------------------------------- */

/* Decodes one code point; invalid bytes decode as themselves (0x80..0xFF) so
 * that byte strings survive round trips. */
int32_t ju_decode(const char *s, size_t n, size_t *i) {
    const unsigned char *u = (const unsigned char *)s;
    size_t k = *i;
    unsigned char b = u[k];
    int len = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3 : (b >> 3) == 30 ? 4 : 0;
    if (len == 0 || k + (size_t)len > n) {
        *i = k + 1;
        return b;
    }
    int32_t cp = len == 1 ? b : len == 2 ? (b & 0x1f) : len == 3 ? (b & 0x0f) : (b & 0x07);
    for (int j = 1; j < len; j++) {
        if ((u[k + j] & 0xc0) != 0x80) {
            *i = k + 1;
            return b;
        }
        cp = (cp << 6) | (u[k + j] & 0x3f);
    }
    *i = k + (size_t)len;
    return cp;
}

size_t ju_encode(int32_t cp, char *o) {
    unsigned char *u = (unsigned char *)o;
    if (cp < 0x80) {
        u[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        u[0] = (unsigned char)(0xc0 | (cp >> 6));
        u[1] = (unsigned char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        u[0] = (unsigned char)(0xe0 | (cp >> 12));
        u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (unsigned char)(0x80 | (cp & 0x3f));
        return 3;
    }
    u[0] = (unsigned char)(0xf0 | (cp >> 18));
    u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
    u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
    u[3] = (unsigned char)(0x80 | (cp & 0x3f));
    return 4;
}

size_t ju_len(const char *s, size_t n) {
    size_t i = 0, k = 0;
    while (i < n) {
        ju_decode(s, n, &i);
        k++;
    }
    return k;
}

bool ju_isspace(int32_t cp) {
    if (cp == ' ' || (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x1f)) return true;
    if (cp < 0x85) return false;
    return cp == 0x85 || cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
}

const char *jx_memmem(const char *h, size_t hn, const char *n, size_t nn) {
    if (nn == 0) return h;
    if (nn > hn) return NULL;
    for (size_t i = 0; i + nn <= hn; i++)
        if (h[i] == n[0] && !memcmp(h + i, n, nn)) return h + i;
    return NULL;
}
