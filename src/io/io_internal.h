/*
 * io_internal.h - helpers private to src/io.
 *
 * lmx_strmap: a fixed-capacity open-addressing string → index table, private to
 * src/io (safetensors tensor names, GGUF keys and tensor names, shard sets).
 *
 * Sized once for a known number of keys (capacity = power of two ≥ 2n), so an
 * insert never rehashes and a lookup touches ~1-2 slots. Keys are borrowed:
 * they must outlive the table. Keys are (pointer, length) pairs, so keys that
 * are not NUL-terminated (GGUF strings in the map) work too.
 */
#ifndef LMX_IO_INTERNAL_H
#define LMX_IO_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct lmx_strmap_slot {
    const char *key; /* NULL = empty */
    size_t len;
    uint64_t hash;
    int64_t val;
} lmx_strmap_slot;

typedef struct lmx_strmap {
    lmx_strmap_slot *slots;
    size_t cap; /* power of two */
    size_t n;
} lmx_strmap;

static inline uint64_t lmx_strmap_hash(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a 64 */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

/* false on out-of-memory. n_expected may be 0. */
static inline bool lmx_strmap_init(lmx_strmap *m, size_t n_expected) {
    size_t cap = 16;
    while (cap < 2 * n_expected + 1) {
        if (cap > SIZE_MAX / 4 / sizeof(lmx_strmap_slot)) return false;
        cap *= 2;
    }
    m->slots = calloc(cap, sizeof *m->slots);
    m->cap = cap;
    m->n = 0;
    return m->slots != NULL;
}

static inline void lmx_strmap_free(lmx_strmap *m) {
    free(m->slots);
    m->slots = NULL;
    m->cap = m->n = 0;
}

/* Value stored for key, or -1. */
static inline int64_t lmx_strmap_get(const lmx_strmap *m, const char *key, size_t len) {
    if (!m->slots) return -1;
    uint64_t h = lmx_strmap_hash(key, len);
    size_t mask = m->cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        const lmx_strmap_slot *s = &m->slots[i];
        if (!s->key) return -1;
        if (s->hash == h && s->len == len && memcmp(s->key, key, len) == 0) return s->val;
    }
}

/* Inserts key → val. Returns -1 when inserted; the existing value when the
 * key is already present (nothing changes); -2 when the table is full (only
 * if more keys are inserted than it was sized for). */
static inline int64_t lmx_strmap_put(lmx_strmap *m, const char *key, size_t len, int64_t val) {
    if (2 * (m->n + 1) > m->cap) return -2;
    uint64_t h = lmx_strmap_hash(key, len);
    size_t mask = m->cap - 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        lmx_strmap_slot *s = &m->slots[i];
        if (!s->key) {
            s->key = key;
            s->len = len;
            s->hash = h;
            s->val = val;
            m->n++;
            return -1;
        }
        if (s->hash == h && s->len == len && memcmp(s->key, key, len) == 0) return s->val;
    }
}

/* Writes a printable, single-line, truncated rendering of s[0..n) into buf
 * (control bytes and quotes as \xNN) for error messages; returns buf. */
static inline const char *lmx_io_printable(const char *s, size_t n, char *buf, size_t cap) {
    static const char hex[] = "0123456789abcdef";
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (k + 8 >= cap) {
            if (k + 4 <= cap) memcpy(buf + k, "...", 3), k += 3;
            break;
        }
        if (c < 0x20 || c == 0x7f || c == '\'') {
            buf[k++] = '\\';
            buf[k++] = 'x';
            buf[k++] = hex[c >> 4];
            buf[k++] = hex[c & 15];
        } else {
            buf[k++] = (char)c;
        }
    }
    buf[k] = 0;
    return buf;
}

#endif
