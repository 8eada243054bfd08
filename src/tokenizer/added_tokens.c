/* added_tokens.c - matching added tokens in text before the model runs:
 * leftmost-longest match, with the lstrip / rstrip / single_word options of
 * HF AddedToken. Tokens are indexed by their first byte. */
#include "tokenizer/tok_internal.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

bool tok_is_ws(uint32_t c) {
    return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

static const char *content_of(const tok_added *a, size_t *len) {
    if (a->norm_content) {
        *len = strlen(a->norm_content);
        return a->norm_content;
    }
    *len = a->len;
    return a->content;
}

static int cmp_len_desc(const void *x, const void *y, void *ctx) {
    const tok_added *v = ctx;
    const tok_added *a = &v[*(const uint32_t *)x], *b = &v[*(const uint32_t *)y];
    size_t la, lb;
    content_of(a, &la);
    content_of(b, &lb);
    if (la != lb) return la > lb ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

/* qsort_r is not C11; a small merge sort with a context instead. */
static void sort_idx(uint32_t *v, uint32_t *tmp, size_t n, const tok_added *ctx) {
    if (n < 2) return;
    size_t h = n / 2;
    sort_idx(v, tmp, h, ctx);
    sort_idx(v + h, tmp, n - h, ctx);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) tmp[k++] = cmp_len_desc(&v[j], &v[i], (void *)ctx) < 0 ? v[j++] : v[i++];
    while (i < h) tmp[k++] = v[i++];
    while (j < n) tmp[k++] = v[j++];
    memcpy(v, tmp, n * sizeof *v);
}

lmx_status tok_added_build(lmx_tokenizer *t) {
    free(t->added_idx);
    t->added_idx = NULL;
    memset(t->added_first, 0, sizeof t->added_first);
    if (!t->n_added) return LMX_OK;
    uint32_t *idx = malloc(t->n_added * sizeof *idx), *tmp = malloc(t->n_added * sizeof *tmp);
    if (!idx || !tmp) {
        free(idx);
        free(tmp);
        return lmx_err(LMX_ERR_NOMEM, "%s: added tokens: out of memory", t->path);
    }
    /* counting sort by first byte, then length-descending inside a bucket */
    uint32_t count[257] = {0};
    for (size_t i = 0; i < t->n_added; i++) {
        size_t l;
        const char *c = content_of(&t->added[i], &l);
        count[l ? (uint8_t)c[0] : 0]++;
    }
    for (int b = 0; b < 256; b++) t->added_first[b + 1] = t->added_first[b] + count[b];
    uint32_t fill[256];
    memcpy(fill, t->added_first, sizeof fill);
    for (size_t i = 0; i < t->n_added; i++) {
        size_t l;
        const char *c = content_of(&t->added[i], &l);
        idx[fill[l ? (uint8_t)c[0] : 0]++] = (uint32_t)i;
    }
    for (int b = 0; b < 256; b++)
        sort_idx(idx + t->added_first[b], tmp, t->added_first[b + 1] - t->added_first[b], t->added);
    free(tmp);
    t->added_idx = idx;
    return LMX_OK;
}

static bool is_word_char(const char *s, size_t len, size_t at, bool before) {
    /* the character just before `at` (before) or at `at` */
    size_t p = at;
    if (before) {
        if (at == 0) return false;
        p = at - 1;
        while (p > 0 && ((uint8_t)s[p] & 0xC0) == 0x80) p--;
    } else if (at >= len) return false;
    int l = tok_utf8_len((uint8_t)s[p]);
    if (p + (size_t)l > len) return false;
    uint32_t c = tok_utf8_decode((const uint8_t *)s + p, l);
    if (c == '_') return true;
    utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
    return cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_NO && !(cat >= UTF8PROC_CATEGORY_MN && cat <= UTF8PROC_CATEGORY_ME);
}

static size_t ws_back(const char *s, size_t lo, size_t at) {
    while (at > lo) {
        size_t p = at - 1;
        while (p > lo && ((uint8_t)s[p] & 0xC0) == 0x80) p--;
        if (!tok_is_ws(tok_utf8_decode((const uint8_t *)s + p, (int)(at - p)))) break;
        at = p;
    }
    return at;
}

static size_t ws_fwd(const char *s, size_t len, size_t at) {
    while (at < len) {
        int l = tok_utf8_len((uint8_t)s[at]);
        if (at + (size_t)l > len || !tok_is_ws(tok_utf8_decode((const uint8_t *)s + at, l))) break;
        at += (size_t)l;
    }
    return at;
}

void tok_added_split(const lmx_tokenizer *t, bool normalized, bool parse_special, const char *s,
                     size_t len, size_t base_off, tok_text_fn emit_text, tok_id_fn emit_id, void *user) {
    size_t pos = 0, text_start = 0;
    if (!t->added_idx || (normalized && !t->has_norm_added)) {
        if (len) emit_text(user, s, len, base_off);
        return;
    }
    while (pos < len) {
        uint8_t b = (uint8_t)s[pos];
        const tok_added *hit = NULL;
        size_t hit_len = 0;
        for (uint32_t k = t->added_first[b]; k < t->added_first[b + 1]; k++) {
            const tok_added *a = &t->added[t->added_idx[k]];
            if (a->normalized != normalized) continue;
            if (!parse_special && a->special) continue;
            size_t l;
            const char *c = content_of(a, &l);
            if (l == 0 || l > len - pos || memcmp(c, s + pos, l)) continue;
            if (a->single_word && (is_word_char(s, len, pos, true) || is_word_char(s, len, pos + l, false)))
                continue;
            hit = a;
            hit_len = l;
            break;
        }
        if (!hit) {
            pos += (size_t)tok_utf8_len(b);
            continue;
        }
        size_t ms = pos, me = pos + hit_len;
        if (hit->lstrip) ms = ws_back(s, text_start, ms);
        if (hit->rstrip) me = ws_fwd(s, len, me);
        if (ms > text_start) emit_text(user, s + text_start, ms - text_start, base_off + text_start);
        emit_id(user, hit->id);
        pos = text_start = me;
    }
    if (len > text_start) emit_text(user, s + text_start, len - text_start, base_off + text_start);
}
