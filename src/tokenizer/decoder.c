/* decoder.c - HF decoders over a list of token strings: ByteLevel, Metaspace,
 * Replace, ByteFallback, Fuse, Strip, WordPiece, Sequence. */
#include "tokenizer/tok_internal.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

void tok_dec_free(tok_dec *d) {
    if (!d) return;
    for (size_t i = 0; i < d->n_kids; i++) tok_dec_free(d->kids[i]);
    free(d->kids);
    free(d->pat);
    free(d->content);
    free(d->prefix);
    tok_regex_free(&d->re);
    free(d);
}

lmx_status tok_dec_parse(const cJSON *j, const char *path, tok_dec **out) {
    *out = NULL;
    if (!j || cJSON_IsNull(j)) return LMX_OK;
    const char *type = tok_jstr(j, "type");
    if (!type) return lmx_err(LMX_ERR_FORMAT, "%s: decoder: missing \"type\"", path);
    tok_dec *d = calloc(1, sizeof *d);
    if (!d) return lmx_err(LMX_ERR_NOMEM, "%s: decoder: out of memory", path);
    lmx_status st = LMX_OK;
    if (!strcmp(type, "ByteLevel")) {
        d->type = TD_BYTELEVEL;
        tok_bytelevel_init();
    } else if (!strcmp(type, "ByteFallback")) d->type = TD_BYTEFALLBACK;
    else if (!strcmp(type, "Fuse")) d->type = TD_FUSE;
    else if (!strcmp(type, "Metaspace")) {
        d->type = TD_METASPACE;
        const char *r = tok_jstr(j, "replacement");
        if (!r) r = "\xE2\x96\x81";
        d->repl_len = strlen(r);
        if (!d->repl_len || d->repl_len >= sizeof d->repl) st = lmx_err(LMX_ERR_FORMAT, "%s: Metaspace decoder: bad replacement", path);
        else memcpy(d->repl, r, d->repl_len);
        const char *ps = tok_jstr(j, "prepend_scheme");
        d->prepend = ps ? strcmp(ps, "never") != 0 : tok_jbool(j, "add_prefix_space", 1);
    } else if (!strcmp(type, "Replace")) {
        d->type = TD_REPLACE;
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(j, "pattern");
        const char *s = tok_jstr(pat, "String"), *r = tok_jstr(pat, "Regex"), *c = tok_jstr(j, "content");
        if (!c || (!s && !r)) st = lmx_err(LMX_ERR_FORMAT, "%s: Replace decoder: missing pattern or content", path);
        else {
            d->content = lmx_strdup(c);
            d->content_len = strlen(c);
            if (s) {
                d->pat = lmx_strdup(s);
                d->pat_len = strlen(s);
                if (!d->pat_len) st = lmx_err(LMX_ERR_FORMAT, "%s: Replace decoder: empty pattern", path);
            } else {
                d->has_re = true;
                st = tok_regex_compile(&d->re, r, strlen(r), false, path);
            }
        }
    } else if (!strcmp(type, "Strip")) {
        d->type = TD_STRIP;
        const char *c = tok_jstr(j, "content");
        d->strip_char = ' ';
        if (c && *c) d->strip_char = tok_utf8_decode((const uint8_t *)c, tok_utf8_len((uint8_t)c[0]));
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "start"), *b = cJSON_GetObjectItemCaseSensitive(j, "stop");
        d->strip_start = cJSON_IsNumber(a) ? a->valueint : 0;
        d->strip_stop = cJSON_IsNumber(b) ? b->valueint : 0;
    } else if (!strcmp(type, "WordPiece")) {
        d->type = TD_WORDPIECE;
        const char *p = tok_jstr(j, "prefix");
        d->prefix = lmx_strdup(p ? p : "##");
        d->cleanup = tok_jbool(j, "cleanup", 1);
    } else if (!strcmp(type, "Sequence")) {
        d->type = TD_SEQ;
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "decoders");
        if (!cJSON_IsArray(arr)) st = lmx_err(LMX_ERR_FORMAT, "%s: decoder Sequence: missing \"decoders\"", path);
        else {
            d->kids = calloc((size_t)cJSON_GetArraySize(arr) + 1, sizeof *d->kids);
            const cJSON *e;
            cJSON_ArrayForEach(e, arr) {
                if (st != LMX_OK) break;
                tok_dec *k;
                st = tok_dec_parse(e, path, &k);
                if (st == LMX_OK && k) d->kids[d->n_kids++] = k;
            }
        }
    } else {
        st = lmx_err(LMX_ERR_UNSUPPORTED, "%s: decoder type \"%s\" is not supported", path, type);
    }
    if (st != LMX_OK) {
        tok_dec_free(d);
        return st;
    }
    *out = d;
    return LMX_OK;
}

/* ---- string lists ------------------------------------------------------------- */

void tok_strs_free(tok_strs *s) {
    for (size_t i = 0; i < s->cap; i++) tok_sbuf_free(&s->v[i]);
    free(s->v);
    memset(s, 0, sizeof *s);
}

void tok_strs_push(tok_strs *s, const char *p, size_t n) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        tok_sbuf *v = realloc(s->v, cap * sizeof *v);
        if (!v) {
            s->oom = true;
            return;
        }
        memset(v + s->cap, 0, (cap - s->cap) * sizeof *v);
        s->v = v;
        s->cap = cap;
    }
    tok_sbuf *b = &s->v[s->n++];
    b->n = 0;
    tok_sbuf_put(b, p, n);
    if (b->oom) s->oom = true;
}

/* Replaces the list by one string made of out. */
static void set_single(tok_strs *s, tok_sbuf *out) {
    s->n = 0;
    tok_strs_push(s, out->p ? out->p : "", out->n);
    if (out->oom) s->oom = true;
}

static bool parse_byte_token(const tok_sbuf *b, uint8_t *out) {
    if (b->n != 6 || memcmp(b->p, "<0x", 3) || b->p[5] != '>') return false;
    unsigned v = 0;
    for (int i = 3; i < 5; i++) {
        char c = b->p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else return false;
    }
    *out = (uint8_t)v;
    return true;
}

static const char *find_bytes(const char *h, size_t hn, const char *n, size_t nn) {
    if (nn == 0 || hn < nn) return NULL;
    for (size_t i = 0; i + nn <= hn; i++) {
        const char *p = memchr(h + i, n[0], hn - nn + 1 - i);
        if (!p) return NULL;
        if (!memcmp(p, n, nn)) return p;
        i = (size_t)(p - h);
    }
    return NULL;
}

static void replace_in(const tok_dec *d, tok_sbuf *b) {
    tok_sbuf o = {0};
    const char *s = b->p ? b->p : "";
    size_t n = b->n, pos = 0;
    if (d->has_re) {
        pcre2_match_data *md = pcre2_match_data_create_from_pattern(d->re.code, NULL);
        size_t ms, me;
        while (md && tok_regex_next(&d->re, md, s, n, pos, &ms, &me)) {
            tok_sbuf_put(&o, s + pos, ms - pos);
            tok_sbuf_put(&o, d->content, d->content_len);
            pos = me;
        }
        if (md) pcre2_match_data_free(md);
    } else {
        const char *f;
        while (pos < n && (f = find_bytes(s + pos, n - pos, d->pat, d->pat_len))) {
            tok_sbuf_put(&o, s + pos, (size_t)(f - (s + pos)));
            tok_sbuf_put(&o, d->content, d->content_len);
            pos = (size_t)(f - s) + d->pat_len;
        }
    }
    tok_sbuf_put(&o, s + pos, n - pos);
    tok_sbuf_free(b);
    *b = o;
}

void tok_dec_apply(const tok_dec *d, tok_strs *s) {
    if (!d) {
        tok_sbuf o = {0};
        for (size_t i = 0; i < s->n; i++) tok_sbuf_put(&o, s->v[i].p, s->v[i].n);
        set_single(s, &o);
        tok_sbuf_free(&o);
        return;
    }
    switch (d->type) {
    case TD_SEQ:
        for (size_t i = 0; i < d->n_kids; i++) tok_dec_apply(d->kids[i], s);
        return;
    case TD_BYTELEVEL: {
        tok_sbuf raw = {0}, o = {0};
        for (size_t i = 0; i < s->n; i++) {
            const uint8_t *p = (const uint8_t *)s->v[i].p;
            size_t n = s->v[i].n, start = raw.n;
            bool ok = true;
            for (size_t k = 0; k < n;) {
                int l = tok_utf8_len(p[k]);
                if (k + (size_t)l > n) l = (int)(n - k);
                int b = tok_bytelevel_dec(tok_utf8_decode(p + k, l));
                if (b < 0) {
                    ok = false;
                    break;
                }
                tok_sbuf_putc(&raw, (char)b);
                k += (size_t)l;
            }
            if (!ok) {
                raw.n = start;
                tok_sbuf_put(&raw, p, n);
            }
        }
        tok_utf8_lossy(&o, (const uint8_t *)raw.p, raw.n);
        set_single(s, &o);
        tok_sbuf_free(&raw);
        tok_sbuf_free(&o);
        return;
    }
    case TD_METASPACE:
        for (size_t i = 0; i < s->n; i++) {
            tok_dec tmp = {.type = TD_REPLACE, .pat = (char *)d->repl, .pat_len = d->repl_len, .content = " ", .content_len = 1};
            replace_in(&tmp, &s->v[i]);
            if (i == 0 && d->prepend && s->v[0].n && s->v[0].p[0] == ' ') {
                memmove(s->v[0].p, s->v[0].p + 1, s->v[0].n - 1);
                s->v[0].n--;
            }
        }
        return;
    case TD_REPLACE:
        for (size_t i = 0; i < s->n; i++) replace_in(d, &s->v[i]);
        return;
    case TD_BYTEFALLBACK: {
        tok_strs o = {0};
        tok_sbuf bytes = {0};
        for (size_t i = 0; i <= s->n; i++) {
            uint8_t b;
            if (i < s->n && parse_byte_token(&s->v[i], &b)) {
                tok_sbuf_putc(&bytes, (char)b);
                continue;
            }
            if (bytes.n) {
                if (tok_utf8_is_valid((const uint8_t *)bytes.p, bytes.n)) tok_strs_push(&o, bytes.p, bytes.n);
                else
                    for (size_t k = 0; k < bytes.n; k++) tok_strs_push(&o, "\xEF\xBF\xBD", 3);
                bytes.n = 0;
            }
            if (i < s->n) tok_strs_push(&o, s->v[i].p, s->v[i].n);
        }
        tok_sbuf_free(&bytes);
        tok_strs_free(s);
        *s = o;
        return;
    }
    case TD_FUSE: {
        tok_sbuf o = {0};
        for (size_t i = 0; i < s->n; i++) tok_sbuf_put(&o, s->v[i].p, s->v[i].n);
        set_single(s, &o);
        tok_sbuf_free(&o);
        return;
    }
    case TD_STRIP:
        for (size_t i = 0; i < s->n; i++) {
            tok_sbuf *b = &s->v[i];
            size_t a = 0, e = b->n;
            for (int k = 0; k < d->strip_start && a < e; k++) {
                int l = tok_utf8_len((uint8_t)b->p[a]);
                if (a + (size_t)l > e || tok_utf8_decode((const uint8_t *)b->p + a, l) != d->strip_char) break;
                a += (size_t)l;
            }
            for (int k = 0; k < d->strip_stop && e > a; k++) {
                size_t p = e - 1;
                while (p > a && ((uint8_t)b->p[p] & 0xC0) == 0x80) p--;
                if (tok_utf8_decode((const uint8_t *)b->p + p, (int)(e - p)) != d->strip_char) break;
                e = p;
            }
            memmove(b->p, b->p + a, e - a);
            b->n = e - a;
        }
        return;
    case TD_WORDPIECE: {
        size_t pl = strlen(d->prefix);
        for (size_t i = 0; i < s->n; i++) {
            tok_sbuf *b = &s->v[i];
            if (i > 0) {
                if (b->n >= pl && !memcmp(b->p, d->prefix, pl)) {
                    memmove(b->p, b->p + pl, b->n - pl);
                    b->n -= pl;
                } else {
                    tok_sbuf o = {0};
                    tok_sbuf_putc(&o, ' ');
                    tok_sbuf_put(&o, b->p, b->n);
                    tok_sbuf_free(b);
                    *b = o;
                }
            }
        }
        return;
    }
    }
}
