/* spm.c - SentencePiece BPE by scores (GGUF tokenizer.ggml.model = "llama"),
 * following llama.cpp's llm_tokenizer_spm: one symbol per UTF-8 character,
 * repeatedly merge the adjacent pair whose concatenation is the vocab token
 * with the highest score (ties: leftmost), then emit each symbol's id or, when
 * the symbol is not in the vocab, its bytes as <0xXX> tokens.
 * The caller has already escaped spaces to U+2581 and added the prefix. */
#include "tokenizer/tok_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct ssym {
    int32_t start, n; /* byte range; n = 0 once merged */
    int32_t prev, next;
} ssym;

typedef struct bigram {
    float score;
    int32_t left, right;
    int32_t size;
} bigram;

static inline bool bbetter(const bigram *a, const bigram *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

typedef struct bheap {
    bigram *v;
    size_t n, cap;
    bool oom;
} bheap;

static void bpush(bheap *h, bigram e) {
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        bigram *v = realloc(h->v, cap * sizeof *v);
        if (!v) {
            h->oom = true;
            return;
        }
        h->v = v;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!bbetter(&e, &h->v[p])) break;
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i] = e;
}

static bigram bpop(bheap *h) {
    bigram top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && bbetter(&h->v[c + 1], &h->v[c])) c++;
        if (!bbetter(&h->v[c], &last)) break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n) h->v[i] = last;
    return top;
}

static void try_bigram(const lmx_tokenizer *t, const char *s, const ssym *sy, int32_t l, int32_t r,
                       bheap *h) {
    if (l < 0 || r < 0) return;
    int32_t id = tok_strmap_get(&t->vocab, t, s + sy[l].start, (size_t)(sy[l].n + sy[r].n));
    if (id < 0) return;
    bpush(h, (bigram){t->scores ? t->scores[id] : 0.0f, l, r, sy[l].n + sy[r].n});
}

void tok_spm_encode(const lmx_tokenizer *t, const char *s, size_t len, tok_ids *out) {
    if (!len) return;
    ssym *sy = malloc(len * sizeof *sy);
    if (!sy) {
        out->oom = true;
        return;
    }
    int32_t ns = 0;
    for (size_t i = 0; i < len;) {
        size_t k = (size_t)tok_utf8_len((uint8_t)s[i]);
        if (i + k > len) k = len - i;
        sy[ns] = (ssym){(int32_t)i, (int32_t)k, ns - 1, -1};
        if (ns > 0) sy[ns - 1].next = ns;
        ns++;
        i += k;
    }
    bheap h = {0};
    for (int32_t i = 1; i < ns; i++) try_bigram(t, s, sy, i - 1, i, &h);
    while (h.n && !h.oom) {
        bigram b = bpop(&h);
        ssym *l = &sy[b.left], *r = &sy[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size) continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) sy[r->next].prev = b.left;
        try_bigram(t, s, sy, l->prev, b.left, &h);
        try_bigram(t, s, sy, b.left, l->next, &h);
    }
    free(h.v);
    for (int32_t i = 0; i >= 0 && i < ns; i = sy[i].next) {
        if (sy[i].n == 0) continue;
        int32_t id = tok_strmap_get(&t->vocab, t, s + sy[i].start, (size_t)sy[i].n);
        if (id >= 0) {
            tok_ids_push(out, id);
            continue;
        }
        for (int32_t k = 0; k < sy[i].n; k++) {
            uint8_t byte = (uint8_t)s[sy[i].start + k];
            int32_t bid = t->byte_tok[byte];
            if (bid < 0) bid = tok_strmap_get(&t->vocab, t, (const char *)&byte, 1);
            if (bid < 0) bid = t->unk;
            if (bid >= 0) tok_ids_push(out, bid);
        }
    }
    free(sy);
}
