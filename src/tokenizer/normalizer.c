/* normalizer.c - HF normalizers: NFC/NFD/NFKC/NFKD (utf8proc), Lowercase,
 * Prepend, Replace, Strip, StripAccents, Sequence. */
#include "tokenizer/tok_internal.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

void tok_norm_free(tok_norm *n) {
    if (!n) return;
    for (size_t i = 0; i < n->n_kids; i++) tok_norm_free(n->kids[i]);
    free(n->kids);
    free(n->str);
    tok_regex_free(&n->re);
    free(n);
}

/* Reads {"String": s} or {"Regex": r} into a compiled regex. */
static lmx_status parse_pattern(const cJSON *pat, const char *where, tok_regex *re) {
    const char *s = tok_jstr(pat, "String");
    if (s) return tok_regex_compile(re, s, strlen(s), true, where);
    s = tok_jstr(pat, "Regex");
    if (s) return tok_regex_compile(re, s, strlen(s), false, where);
    return lmx_err(LMX_ERR_FORMAT, "%s: pattern: expected {\"String\"} or {\"Regex\"}", where);
}

lmx_status tok_norm_parse(const cJSON *j, const char *path, tok_norm **out) {
    *out = NULL;
    if (!j || cJSON_IsNull(j)) return LMX_OK;
    const char *type = tok_jstr(j, "type");
    if (!type) return lmx_err(LMX_ERR_FORMAT, "%s: normalizer: missing \"type\"", path);
    tok_norm *n = calloc(1, sizeof *n);
    if (!n) return lmx_err(LMX_ERR_NOMEM, "%s: normalizer: out of memory", path);
    lmx_status st = LMX_OK;
    if (!strcmp(type, "NFC")) n->type = TN_NFC;
    else if (!strcmp(type, "NFD")) n->type = TN_NFD;
    else if (!strcmp(type, "NFKC")) n->type = TN_NFKC;
    else if (!strcmp(type, "NFKD")) n->type = TN_NFKD;
    else if (!strcmp(type, "Lowercase")) n->type = TN_LOWER;
    else if (!strcmp(type, "StripAccents")) n->type = TN_STRIP_ACCENTS;
    else if (!strcmp(type, "Prepend")) {
        n->type = TN_PREPEND;
        const char *p = tok_jstr(j, "prepend");
        if (!p) st = lmx_err(LMX_ERR_FORMAT, "%s: normalizer Prepend: missing \"prepend\"", path);
        else {
            n->str = lmx_strdup(p);
            n->str_len = strlen(p);
        }
    } else if (!strcmp(type, "Replace")) {
        n->type = TN_REPLACE;
        const char *c = tok_jstr(j, "content");
        if (!c) st = lmx_err(LMX_ERR_FORMAT, "%s: normalizer Replace: missing \"content\"", path);
        else {
            n->str = lmx_strdup(c);
            n->str_len = strlen(c);
            st = parse_pattern(cJSON_GetObjectItemCaseSensitive(j, "pattern"), path, &n->re);
        }
    } else if (!strcmp(type, "Strip")) {
        n->type = TN_STRIP;
        n->left = tok_jbool(j, "strip_left", 1);
        n->right = tok_jbool(j, "strip_right", 1);
    } else if (!strcmp(type, "Sequence")) {
        n->type = TN_SEQ;
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "normalizers");
        if (!cJSON_IsArray(arr)) st = lmx_err(LMX_ERR_FORMAT, "%s: normalizer Sequence: missing \"normalizers\"", path);
        else {
            int cnt = cJSON_GetArraySize(arr);
            n->kids = calloc((size_t)cnt + 1, sizeof *n->kids);
            const cJSON *e;
            cJSON_ArrayForEach(e, arr) {
                if (st != LMX_OK) break;
                tok_norm *k;
                st = tok_norm_parse(e, path, &k);
                if (st == LMX_OK && k) n->kids[n->n_kids++] = k;
            }
        }
    } else {
        st = lmx_err(LMX_ERR_UNSUPPORTED, "%s: normalizer type \"%s\" is not supported", path, type);
    }
    if (st != LMX_OK) {
        tok_norm_free(n);
        return st;
    }
    *out = n;
    return LMX_OK;
}

static bool is_ascii(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if ((uint8_t)s[i] >= 0x80) return false;
    return true;
}

/* Rust char::is_whitespace (Unicode White_Space). */
static bool is_ws(uint32_t c) {
    return (c >= 9 && c <= 13) || c == 32 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

static void apply_utf8proc(const char *s, size_t len, int opts, tok_sbuf *out) {
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, &dst,
                                      (utf8proc_option_t)(UTF8PROC_STABLE | opts));
    if (r < 0) tok_sbuf_put(out, s, len); /* cannot happen on valid UTF-8 */
    else tok_sbuf_put(out, dst, (size_t)r);
    free(dst);
}

static void apply_one(const tok_norm *n, const char *s, size_t len, tok_sbuf *out) {
    switch (n->type) {
    case TN_NFC:
    case TN_NFD:
    case TN_NFKC:
    case TN_NFKD: {
        if (is_ascii(s, len)) {
            tok_sbuf_put(out, s, len);
            return;
        }
        int o = n->type == TN_NFC    ? UTF8PROC_COMPOSE
                : n->type == TN_NFD  ? UTF8PROC_DECOMPOSE
                : n->type == TN_NFKC ? UTF8PROC_COMPOSE | UTF8PROC_COMPAT
                                     : UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
        apply_utf8proc(s, len, o, out);
        return;
    }
    case TN_LOWER:
    case TN_STRIP_ACCENTS:
        for (size_t i = 0; i < len;) {
            int k = tok_utf8_len((uint8_t)s[i]);
            uint32_t c = tok_utf8_decode((const uint8_t *)s + i, k);
            i += (size_t)k;
            if (n->type == TN_STRIP_ACCENTS) {
                if (utf8proc_category((utf8proc_int32_t)c) != UTF8PROC_CATEGORY_MN) tok_sbuf_put_cp(out, c);
            } else if (c == 0x130) {
                tok_sbuf_put(out, "i\xCC\x87", 3); /* full lowercase mapping of U+0130 */
            } else {
                tok_sbuf_put_cp(out, (uint32_t)utf8proc_tolower((utf8proc_int32_t)c));
            }
        }
        return;
    case TN_PREPEND:
        if (len) tok_sbuf_put(out, n->str, n->str_len);
        tok_sbuf_put(out, s, len);
        return;
    case TN_REPLACE: {
        pcre2_match_data *md = pcre2_match_data_create_from_pattern(n->re.code, NULL);
        size_t pos = 0, ms, me;
        while (md && tok_regex_next(&n->re, md, s, len, pos, &ms, &me)) {
            tok_sbuf_put(out, s + pos, ms - pos);
            tok_sbuf_put(out, n->str, n->str_len);
            pos = me;
        }
        tok_sbuf_put(out, s + pos, len - pos);
        if (md) pcre2_match_data_free(md);
        else out->oom = true;
        return;
    }
    case TN_STRIP: {
        size_t a = 0, b = len;
        while (n->left && a < b) {
            int k = tok_utf8_len((uint8_t)s[a]);
            if (!is_ws(tok_utf8_decode((const uint8_t *)s + a, k))) break;
            a += (size_t)k;
        }
        while (n->right && b > a) {
            size_t p = b - 1;
            while (p > a && ((uint8_t)s[p] & 0xC0) == 0x80) p--;
            if (!is_ws(tok_utf8_decode((const uint8_t *)s + p, (int)(b - p)))) break;
            b = p;
        }
        tok_sbuf_put(out, s + a, b - a);
        return;
    }
    case TN_SEQ: {
        tok_sbuf a = {0}, b = {0};
        tok_sbuf_put(&a, s, len);
        for (size_t i = 0; i < n->n_kids; i++) {
            b.n = 0;
            apply_one(n->kids[i], a.p, a.n, &b);
            tok_sbuf t = a;
            a = b;
            b = t;
        }
        tok_sbuf_put(out, a.p, a.n);
        if (a.oom || b.oom) out->oom = true;
        tok_sbuf_free(&a);
        tok_sbuf_free(&b);
        return;
    }
    case TN_BERT:
        tok_sbuf_put(out, s, len);
        return;
    }
}

void tok_norm_apply(const tok_norm *n, const char *s, size_t len, tok_sbuf *out) {
    out->n = 0;
    if (!n) tok_sbuf_put(out, s, len);
    else apply_one(n, s, len, out);
    tok_sbuf_put(out, "", 0);
}
