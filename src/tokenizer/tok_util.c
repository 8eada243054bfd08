/* tok_util.c - buffers, UTF-8 helpers, hash maps, the byte-level alphabet and
 * PCRE2 wrappers used by the tokenizer. */
#include "tokenizer/tok_internal.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

/* ---- buffers ---------------------------------------------------------------- */

bool tok_sbuf_reserve(tok_sbuf *b, size_t extra) {
    if (b->oom) return false;
    if (b->n + extra + 1 <= b->cap) return true;
    size_t cap = b->cap ? b->cap * 2 : 64;
    while (cap < b->n + extra + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void tok_sbuf_put(tok_sbuf *b, const void *s, size_t n) {
    if (!tok_sbuf_reserve(b, n)) return;
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

void tok_sbuf_put_cp(tok_sbuf *b, uint32_t cp) {
    char u[4];
    int n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    tok_sbuf_put(b, u, (size_t)n);
}

void tok_sbuf_free(tok_sbuf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

void tok_ids_push(tok_ids *v, int32_t id) {
    if (v->oom) return;
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        int32_t *p = realloc(v->p, cap * sizeof *p);
        if (!p) {
            v->oom = true;
            return;
        }
        v->p = p;
        v->cap = cap;
    }
    v->p[v->n++] = id;
}

void tok_ids_free(tok_ids *v) {
    free(v->p);
    memset(v, 0, sizeof *v);
}

/* ---- UTF-8 ------------------------------------------------------------------- */

/* How many bytes of s (at most n) form the longest valid prefix of a sequence
 * (*complete set when it is a whole code point). */
static int utf8_scan(const uint8_t *s, size_t n, bool *complete) {
    uint8_t c = s[0];
    int need;
    uint8_t lo = 0x80, hi = 0xBF;
    *complete = false;
    if (c < 0x80) {
        *complete = true;
        return 1;
    } else if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else return 0; /* invalid lead */
    int k = 1;
    while (k < need && (size_t)k < n) {
        uint8_t d = s[k];
        if (k == 1 ? (d < lo || d > hi) : (d < 0x80 || d > 0xBF)) return k;
        k++;
    }
    *complete = k == need;
    return k;
}

int tok_utf8_valid_len(const uint8_t *s, size_t n) {
    if (!n) return 0;
    bool complete;
    int k = utf8_scan(s, n, &complete);
    return complete ? k : 0;
}

uint32_t tok_utf8_decode(const uint8_t *s, int len) {
    switch (len) {
    case 1: return s[0];
    case 2: return ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
    case 3: return ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    default:
        return ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
               ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    }
}

void tok_utf8_lossy(tok_sbuf *out, const uint8_t *s, size_t n) {
    size_t i = 0, run = 0; /* run: start of pending valid bytes */
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        bool complete;
        int k = utf8_scan(s + i, n - i, &complete);
        if (complete) {
            i += (size_t)k;
            continue;
        }
        tok_sbuf_put(out, s + run, i - run);
        tok_sbuf_put(out, "\xEF\xBF\xBD", 3);
        i += k ? (size_t)k : 1;
        run = i;
    }
    tok_sbuf_put(out, s + run, n - run);
}

size_t tok_utf8_stable_prefix(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        bool complete;
        int k = utf8_scan(s + i, n - i, &complete);
        if (!complete && k > 0 && i + (size_t)k == n) return i; /* truncated at the end */
        i += k ? (size_t)k : 1;
    }
    return n;
}

bool tok_utf8_is_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        bool complete;
        int k = utf8_scan(s + i, n - i, &complete);
        if (!complete) return false;
        i += (size_t)k;
    }
    return true;
}

/* ---- hashing ------------------------------------------------------------------ */

uint64_t tok_hash(const void *p, size_t n) {
    const uint8_t *s = p;
    uint64_t h = 0xcbf29ce484222325ull ^ (n * 0x9E3779B97F4A7C15ull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * 0x100000001b3ull;
    h ^= h >> 32;
    h *= 0x9E3779B97F4A7C15ull;
    return h ^ (h >> 29);
}

static uint32_t pow2_for(size_t expected) {
    size_t cap = 16;
    while (cap < expected * 2 + 2) cap *= 2;
    return (uint32_t)cap;
}

bool tok_strmap_init(tok_strmap *m, size_t expected) {
    uint32_t cap = pow2_for(expected);
    m->slots = calloc(cap, sizeof *m->slots);
    m->mask = cap - 1;
    m->count = 0;
    return m->slots != NULL;
}

void tok_strmap_free(tok_strmap *m) {
    free(m->slots);
    memset(m, 0, sizeof *m);
}

static void strmap_insert(tok_strmap *m, const char *s, uint32_t n, int32_t id) {
    uint32_t i = (uint32_t)tok_hash(s, n) & m->mask;
    while (m->slots[i].p) {
        if (m->slots[i].len == n && !memcmp(m->slots[i].p, s, n)) return;
        i = (i + 1) & m->mask;
    }
    m->slots[i] = (tok_strslot){s, n, id};
    m->count++;
}

static bool strmap_grow(tok_strmap *m) {
    tok_strmap n;
    if (!tok_strmap_init(&n, (size_t)m->count * 2)) return false;
    for (uint32_t i = 0; i <= m->mask; i++)
        if (m->slots[i].p) strmap_insert(&n, m->slots[i].p, m->slots[i].len, m->slots[i].id);
    free(m->slots);
    *m = n;
    return true;
}

bool tok_strmap_put(tok_strmap *m, const lmx_tokenizer *t, int32_t id) {
    if ((m->count + 1) * 2 > m->mask + 1 && !strmap_grow(m)) return false;
    if (!t->pieces[id]) return true;
    strmap_insert(m, t->pieces[id], t->piece_len[id], id);
    return true;
}

int32_t tok_strmap_get(const tok_strmap *m, const lmx_tokenizer *t, const char *s, size_t n) {
    (void)t;
    if (!m->slots) return -1;
    uint32_t i = (uint32_t)tok_hash(s, n) & m->mask;
    while (m->slots[i].p) {
        if (m->slots[i].len == n && !memcmp(m->slots[i].p, s, n)) return m->slots[i].id;
        i = (i + 1) & m->mask;
    }
    return -1;
}

void tok_strmap_prefetch(const tok_strmap *m, const char *s, size_t n) {
    if (m->slots) __builtin_prefetch(&m->slots[(uint32_t)tok_hash(s, n) & m->mask]);
}

bool tok_pairmap_init(tok_pairmap *m, size_t expected) {
    uint32_t cap = pow2_for(expected);
    m->slots = malloc(cap * sizeof *m->slots);
    m->mask = cap - 1;
    m->count = 0;
    if (!m->slots) return false;
    memset(m->slots, 0xFF, cap * sizeof *m->slots);
    return true;
}

void tok_pairmap_free(tok_pairmap *m) {
    free(m->slots);
    memset(m, 0, sizeof *m);
}

/* The table is sized for all merges up front; the first insert of a pair
 * wins (lowest rank), as in HF. */
void tok_pairmap_put(tok_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t merged) {
    if ((m->count + 1) * 2 > m->mask + 1) return; /* sized by the caller */
    uint64_t k = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint32_t i = tok_pair_slot(m, k);
    while (m->slots[i].key != UINT64_MAX) {
        if (m->slots[i].key == k) return;
        i = (i + 1) & m->mask;
    }
    m->slots[i] = (tok_pairslot){k, rank, merged};
    m->count++;
}

/* ---- byte-level alphabet --------------------------------------------------------- */

const char *tok_bytelevel_enc[256];
uint8_t tok_bytelevel_enc_len[256];
static char bl_storage[256][3];
static int16_t bl_dec[0x144];
static pthread_once_t bl_once = PTHREAD_ONCE_INIT;

static void bl_init(void) {
    int n = 0;
    for (int i = 0; i < 0x144; i++) bl_dec[i] = -1;
    for (int b = 0; b < 256; b++) {
        uint32_t cp;
        if ((b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)) cp = (uint32_t)b;
        else cp = 256 + (uint32_t)n++;
        bl_dec[cp] = (int16_t)b;
        if (cp < 0x80) {
            bl_storage[b][0] = (char)cp;
            tok_bytelevel_enc_len[b] = 1;
        } else {
            bl_storage[b][0] = (char)(0xC0 | (cp >> 6));
            bl_storage[b][1] = (char)(0x80 | (cp & 0x3F));
            tok_bytelevel_enc_len[b] = 2;
        }
        tok_bytelevel_enc[b] = bl_storage[b];
    }
}

void tok_bytelevel_init(void) { pthread_once(&bl_once, bl_init); }

int tok_bytelevel_dec(uint32_t cp) { return cp < 0x144 ? bl_dec[cp] : -1; }

/* ---- regex ------------------------------------------------------------------------ */

lmx_status tok_regex_compile(tok_regex *r, const char *pattern, size_t len, bool literal,
                             const char *where) {
    int err;
    PCRE2_SIZE off;
    uint32_t opts = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP);
    r->code = pcre2_compile((PCRE2_SPTR)pattern, len, opts, &err, &off, NULL);
    if (!r->code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return lmx_err(LMX_ERR_FORMAT, "%s: regex at offset %zu: %s", where, (size_t)off, (char *)msg);
    }
    pcre2_jit_compile(r->code, PCRE2_JIT_COMPLETE); /* falls back to the interpreter */
    r->src = lmx_strndup(pattern, len);
    return LMX_OK;
}

void tok_regex_free(tok_regex *r) {
    if (r->code) pcre2_code_free(r->code);
    free(r->src);
    memset(r, 0, sizeof *r);
}

bool tok_regex_next(const tok_regex *r, pcre2_match_data *md, const char *s, size_t n, size_t start,
                    size_t *ms, size_t *me) {
    while (start <= n) {
        int rc = pcre2_match(r->code, (PCRE2_SPTR)s, n, start, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
            rc = pcre2_match(r->code, (PCRE2_SPTR)s, n, start, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md,
                             NULL);
        if (rc < 0) return false;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        if (ov[1] > ov[0]) {
            *ms = ov[0];
            *me = ov[1];
            return true;
        }
        /* empty match: retry one character further */
        if (ov[0] >= n) return false;
        start = ov[0] + (size_t)tok_utf8_len((uint8_t)s[ov[0]]);
    }
    return false;
}

/* ---- cJSON helpers ----------------------------------------------------------------- */

const char *tok_jstr(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

int tok_jbool(const cJSON *o, const char *key, int dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v);
    return dflt;
}
