/* bpe.c - the BPE model (HF tokenizers semantics): characters -> vocab ids
 * (continuing_subword_prefix / end_of_word_suffix, byte_fallback, unk with
 * fuse_unk), then merges by rank through a min-heap over (rank, position),
 * with a small word cache. ignore_merges: a piece found whole in the vocab is
 * one token. */
#include "tokenizer/tok_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct sym {
    int32_t id;
    int32_t prev, next;
    int32_t len; /* 0 once merged into its left neighbour */
} sym;

typedef struct hent {
    int32_t rank, pos, new_id;
} hent;

static inline bool hless(const hent *a, const hent *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

typedef struct heap {
    hent *v;
    size_t n, cap;
    bool oom;
} heap;

static void heap_push(heap *h, hent e) {
    if (h->n == h->cap) {
        size_t cap = h->cap * 2;
        hent *v = malloc(cap * sizeof *v);
        if (!v) {
            h->oom = true;
            return;
        }
        memcpy(v, h->v, h->n * sizeof *v);
        if (h->cap > 64) free(h->v);
        h->v = v;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!hless(&e, &h->v[p])) break;
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i] = e;
}

static hent heap_pop(heap *h) {
    hent top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && hless(&h->v[c + 1], &h->v[c])) c++;
        if (!hless(&h->v[c], &last)) break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n) h->v[i] = last;
    return top;
}

static void try_pair(const lmx_tokenizer *t, const sym *s, int32_t a, heap *h) {
    if (a < 0 || s[a].next < 0) return;
    int32_t rank, merged;
    if (tok_pairmap_get(&t->merges, s[a].id, s[s[a].next].id, &rank, &merged))
        heap_push(h, (hent){rank, a, merged});
}

/* ---- cache ---------------------------------------------------------------------- */

static bool cache_get(const lmx_tokenizer *t, const char *s, size_t len, tok_ids *out) {
    if (!t->cache || len > TOK_CACHE_KEY || len == 0) return false;
    const tok_cache_slot *c = &t->cache[tok_hash(s, len) & (TOK_CACHE_SLOTS - 1)];
    lmx_tokenizer *mt = (lmx_tokenizer *)t;
    pthread_mutex_lock(&mt->cache_mu);
    bool hit = c->key_len == len && !memcmp(c->key, s, len);
    int32_t ids[TOK_CACHE_IDS];
    int n = c->n_ids;
    if (hit) memcpy(ids, c->ids, (size_t)n * sizeof *ids);
    pthread_mutex_unlock(&mt->cache_mu);
    if (hit)
        for (int i = 0; i < n; i++) tok_ids_push(out, ids[i]);
    return hit;
}

static void cache_put(const lmx_tokenizer *t, const char *s, size_t len, const int32_t *ids, size_t n) {
    if (!t->cache || len > TOK_CACHE_KEY || len == 0 || n > TOK_CACHE_IDS) return;
    lmx_tokenizer *mt = (lmx_tokenizer *)t;
    tok_cache_slot *c = &mt->cache[tok_hash(s, len) & (TOK_CACHE_SLOTS - 1)];
    pthread_mutex_lock(&mt->cache_mu);
    c->key_len = (uint8_t)len;
    memcpy(c->key, s, len);
    c->n_ids = (uint8_t)n;
    memcpy(c->ids, ids, n * sizeof *ids);
    pthread_mutex_unlock(&mt->cache_mu);
}

/* ---- encode --------------------------------------------------------------------- */

void tok_bpe_encode(const lmx_tokenizer *t, const char *s, size_t len, tok_ids *out) {
    if (!len) return;
    if (t->ignore_merges) {
        int32_t id = tok_strmap_get(&t->vocab, t, s, len);
        if (id >= 0) {
            tok_ids_push(out, id);
            return;
        }
    }
    if (cache_get(t, s, len, out)) return;

    sym sbuf[64];
    hent hbuf[64];
    sym *sy = sbuf;
    size_t cap = len + 1;
    if (cap > 64 && !(sy = malloc(cap * sizeof *sy))) {
        out->oom = true;
        return;
    }
    size_t ns = 0;
    size_t plen = t->cont_prefix ? strlen(t->cont_prefix) : 0, slen = t->eow_suffix ? strlen(t->eow_suffix) : 0;
    char tmp[64];
    for (size_t i = 0; i < len;) {
        size_t k = (size_t)tok_utf8_len((uint8_t)s[i]);
        if (i + k > len) k = len - i;
        const char *cs = s + i;
        size_t cl = k;
        bool last = i + k == len;
        if ((plen && i > 0) || (slen && last)) {
            size_t n = 0;
            if (plen && i > 0 && plen < 24) memcpy(tmp, t->cont_prefix, plen), n = plen;
            memcpy(tmp + n, s + i, k);
            n += k;
            if (slen && last && slen < 24) memcpy(tmp + n, t->eow_suffix, slen), n += slen;
            cs = tmp;
            cl = n;
        }
        int32_t id = tok_strmap_get(&t->vocab, t, cs, cl);
        if (id >= 0) {
            if (ns == cap) break;
            sy[ns++] = (sym){id, -1, -1, (int32_t)k};
        } else {
            bool done = false;
            if (t->byte_fallback) {
                bool all = true;
                for (size_t b = 0; b < k; b++)
                    if (t->byte_tok[(uint8_t)s[i + b]] < 0) all = false;
                if (all) {
                    if (ns + k > cap) { /* grow: a char of k bytes becomes k symbols */
                        size_t ncap = cap + len + 8;
                        sym *n2 = malloc(ncap * sizeof *n2);
                        if (!n2) break;
                        memcpy(n2, sy, ns * sizeof *sy);
                        if (sy != sbuf) free(sy);
                        sy = n2;
                        cap = ncap;
                    }
                    for (size_t b = 0; b < k; b++)
                        sy[ns++] = (sym){t->byte_tok[(uint8_t)s[i + b]], -1, -1, 1};
                    done = true;
                }
            }
            if (!done && t->unk >= 0) {
                if (t->fuse_unk && ns > 0 && sy[ns - 1].id == t->unk) sy[ns - 1].len += (int32_t)k;
                else if (ns < cap) sy[ns++] = (sym){t->unk, -1, -1, (int32_t)k};
            }
        }
        i += k;
    }
    for (size_t i = 0; i < ns; i++) {
        sy[i].prev = (int32_t)i - 1;
        sy[i].next = i + 1 < ns ? (int32_t)i + 1 : -1;
    }

    heap h = {hbuf, 0, 64, false};
    for (size_t i = 0; i + 1 < ns; i++) try_pair(t, sy, (int32_t)i, &h);
    while (h.n && !h.oom) {
        hent e = heap_pop(&h);
        sym *a = &sy[e.pos];
        if (a->len == 0 || a->next < 0) continue;
        sym *b = &sy[a->next];
        int32_t rank, merged;
        if (!tok_pairmap_get(&t->merges, a->id, b->id, &rank, &merged) || merged != e.new_id) continue;
        a->id = merged;
        a->len += b->len;
        b->len = 0;
        a->next = b->next;
        if (a->next >= 0) sy[a->next].prev = e.pos;
        try_pair(t, sy, a->prev, &h);
        try_pair(t, sy, e.pos, &h);
    }
    if (h.v != hbuf) free(h.v);

    size_t first = out->n;
    for (size_t i = 0; i < ns; i = sy[i].next < 0 ? ns : (size_t)sy[i].next) tok_ids_push(out, sy[i].id);
    if (!out->oom) cache_put(t, s, len, out->p + first, out->n - first);
    if (sy != sbuf) free(sy);
}
