/*
 * jinja_json.c - JSON text <-> template values.
 *
 * Parsing keeps what Python's json.loads keeps and cJSON loses: integers stay
 * integers ("5" vs "5.0" print differently), object key order, duplicate
 * keys (last value wins, first position), NaN/Infinity. Dumping reproduces
 * json.dumps(x, ensure_ascii=..., indent=..., separators=..., sort_keys=...)
 * byte for byte, which is what transformers' `tojson` filter calls.
 */
#include "chat/jinja.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct jp {
    jx_ctx *c;
    const char *s;
    size_t n, i;
    const char *what;
    int depth;
} jp;

_Noreturn static void jpfail(jp *P, const char *msg) {
    size_t line = 1, col = 1;
    for (size_t k = 0; k < P->i && k < P->n; k++) {
        if (P->s[k] == '\n') {
            line++;
            col = 1;
        } else {
            col++;
        }
    }
    snprintf(P->c->msg, sizeof P->c->msg, "%s: invalid JSON at line %zu column %zu: %s", P->what, line, col, msg);
    P->c->status = LMX_ERR_INVALID_ARG;
    longjmp(*P->c->jb, 1);
}

static void jws(jp *P) {
    while (P->i < P->n && (P->s[P->i] == ' ' || P->s[P->i] == '\t' || P->s[P->i] == '\n' || P->s[P->i] == '\r')) P->i++;
}

static bool jlit(jp *P, const char *w) {
    size_t k = strlen(w);
    if (P->i + k <= P->n && !memcmp(P->s + P->i, w, k)) {
        P->i += k;
        return true;
    }
    return false;
}

static int hex4(jp *P) {
    if (P->i + 4 > P->n) jpfail(P, "truncated \\u escape");
    int v = 0;
    for (int k = 0; k < 4; k++) {
        char h = P->s[P->i++];
        int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10 : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
        if (d < 0) jpfail(P, "invalid \\u escape");
        v = v * 16 + d;
    }
    return v;
}

static jstr *jstring(jp *P) {
    P->i++; /* opening quote */
    jbuf b = {0};
    for (;;) {
        if (P->i >= P->n) jpfail(P, "unterminated string");
        unsigned char ch = (unsigned char)P->s[P->i];
        if (ch == '"') {
            P->i++;
            break;
        }
        if (ch < 0x20) jpfail(P, "control character in string");
        if (ch != '\\') {
            size_t st = P->i;
            while (P->i < P->n && P->s[P->i] != '"' && P->s[P->i] != '\\' && (unsigned char)P->s[P->i] >= 0x20) P->i++;
            jb_put(P->c, &b, P->s + st, P->i - st);
            continue;
        }
        P->i++;
        if (P->i >= P->n) jpfail(P, "unterminated string");
        char e = P->s[P->i++];
        int32_t cp;
        switch (e) {
        case '"': cp = '"'; break;
        case '\\': cp = '\\'; break;
        case '/': cp = '/'; break;
        case 'b': cp = 8; break;
        case 'f': cp = 12; break;
        case 'n': cp = 10; break;
        case 'r': cp = 13; break;
        case 't': cp = 9; break;
        case 'u':
            cp = hex4(P);
            if (cp >= 0xd800 && cp < 0xdc00 && P->i + 6 <= P->n && P->s[P->i] == '\\' && P->s[P->i + 1] == 'u') {
                size_t save = P->i;
                P->i += 2;
                int lo = hex4(P);
                if (lo >= 0xdc00 && lo < 0xe000) cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                else P->i = save;
            }
            break;
        default: jpfail(P, "invalid escape");
        }
        char u8[4];
        jb_put(P->c, &b, u8, ju_encode(cp, u8));
    }
    return jb_str(P->c, &b);
}

static jv jvalue(jp *P) {
    jws(P);
    if (P->i >= P->n) jpfail(P, "unexpected end of input");
    if (++P->depth > 512) jpfail(P, "nested too deeply");
    char ch = P->s[P->i];
    jv r;
    if (ch == '{') {
        P->i++;
        jdict *d = jd_new(P->c);
        jws(P);
        if (P->i < P->n && P->s[P->i] == '}') {
            P->i++;
        } else {
            for (;;) {
                jws(P);
                if (P->i >= P->n || P->s[P->i] != '"') jpfail(P, "expected a string key");
                jstr *k = jstring(P);
                jws(P);
                if (P->i >= P->n || P->s[P->i] != ':') jpfail(P, "expected ':'");
                P->i++;
                jd_set(P->c, d, jv_strv(k), jvalue(P));
                jws(P);
                if (P->i < P->n && P->s[P->i] == ',') {
                    P->i++;
                    continue;
                }
                if (P->i < P->n && P->s[P->i] == '}') {
                    P->i++;
                    break;
                }
                jpfail(P, "expected ',' or '}'");
            }
        }
        r = jv_dictv(d);
    } else if (ch == '[') {
        P->i++;
        jlist *l = jl_new(P->c, 0);
        jws(P);
        if (P->i < P->n && P->s[P->i] == ']') {
            P->i++;
        } else {
            for (;;) {
                jl_push(P->c, l, jvalue(P));
                jws(P);
                if (P->i < P->n && P->s[P->i] == ',') {
                    P->i++;
                    continue;
                }
                if (P->i < P->n && P->s[P->i] == ']') {
                    P->i++;
                    break;
                }
                jpfail(P, "expected ',' or ']'");
            }
        }
        r = jv_listv(l);
    } else if (ch == '"') {
        r = jv_strv(jstring(P));
    } else if (jlit(P, "true")) {
        r = jv_bool(true);
    } else if (jlit(P, "false")) {
        r = jv_bool(false);
    } else if (jlit(P, "null")) {
        r = jv_none();
    } else if (jlit(P, "NaN")) {
        r = jv_float(NAN);
    } else if (jlit(P, "Infinity")) {
        r = jv_float(INFINITY);
    } else if (jlit(P, "-Infinity")) {
        r = jv_float(-INFINITY);
    } else if (ch == '-' || (ch >= '0' && ch <= '9')) {
        size_t st = P->i;
        bool isf = false;
        if (P->s[P->i] == '-') P->i++;
        if (P->i >= P->n || P->s[P->i] < '0' || P->s[P->i] > '9') jpfail(P, "invalid number");
        if (P->s[P->i] == '0') P->i++;
        else
            while (P->i < P->n && P->s[P->i] >= '0' && P->s[P->i] <= '9') P->i++;
        if (P->i + 1 < P->n && P->s[P->i] == '.' && P->s[P->i + 1] >= '0' && P->s[P->i + 1] <= '9') {
            isf = true;
            P->i++;
            while (P->i < P->n && P->s[P->i] >= '0' && P->s[P->i] <= '9') P->i++;
        }
        if (P->i < P->n && (P->s[P->i] == 'e' || P->s[P->i] == 'E')) {
            size_t save = P->i++;
            if (P->i < P->n && (P->s[P->i] == '+' || P->s[P->i] == '-')) P->i++;
            if (P->i < P->n && P->s[P->i] >= '0' && P->s[P->i] <= '9') {
                isf = true;
                while (P->i < P->n && P->s[P->i] >= '0' && P->s[P->i] <= '9') P->i++;
            } else {
                P->i = save;
            }
        }
        char buf[64];
        size_t k = P->i - st;
        if (k >= sizeof buf) { /* huge literal: float */
            char *tmp = jx_alloc(P->c, k + 1);
            memcpy(tmp, P->s + st, k);
            r = jv_float(strtod(tmp, NULL));
        } else {
            memcpy(buf, P->s + st, k);
            buf[k] = 0;
            if (!isf) {
                char *end;
                errno = 0;
                long long v = strtoll(buf, &end, 10);
                r = errno ? jv_float(strtod(buf, NULL)) : jv_int(v);
            } else {
                r = jv_float(strtod(buf, NULL));
            }
        }
    } else {
        jpfail(P, "unexpected character");
    }
    P->depth--;
    return r;
}

jv jx_json_parse(jx_ctx *c, const char *text, size_t n, const char *what) {
    jp P = {.c = c, .s = text, .n = n, .what = what};
    jv v = jvalue(&P);
    jws(&P);
    if (P.i != P.n) jpfail(&P, "extra data after the value");
    return v;
}

/* ---- dump ---------------------------------------------------------------------------- */

static void dump_str(jx_ctx *c, jbuf *b, const char *s, size_t n, bool ascii) {
    jb_putc(c, b, '"');
    size_t i = 0;
    while (i < n) {
        size_t st = i;
        int32_t cp = ju_decode(s, n, &i);
        switch (cp) {
        case '"': jb_puts(c, b, "\\\""); continue;
        case '\\': jb_puts(c, b, "\\\\"); continue;
        case '\n': jb_puts(c, b, "\\n"); continue;
        case '\r': jb_puts(c, b, "\\r"); continue;
        case '\t': jb_puts(c, b, "\\t"); continue;
        case '\b': jb_puts(c, b, "\\b"); continue;
        case '\f': jb_puts(c, b, "\\f"); continue;
        default: break;
        }
        if (cp < 0x20 || (ascii && cp > 0x7e)) {
            if (cp >= 0x10000) {
                int32_t v = cp - 0x10000;
                jb_printf(c, b, "\\u%04x\\u%04x", (unsigned)(0xd800 | (v >> 10)), (unsigned)(0xdc00 | (v & 0x3ff)));
            } else {
                jb_printf(c, b, "\\u%04x", (unsigned)cp);
            }
        } else {
            jb_put(c, b, s + st, i - st);
        }
    }
    jb_putc(c, b, '"');
}

static void dump_float(jx_ctx *c, jbuf *b, double f) {
    if (isnan(f)) jb_puts(c, b, "NaN");
    else if (isinf(f)) jb_puts(c, b, f < 0 ? "-Infinity" : "Infinity");
    else {
        char tmp[64];
        jx_float_repr(f, tmp, sizeof tmp);
        jb_puts(c, b, tmp);
    }
}

static void newline_indent(jx_ctx *c, jbuf *b, const jjson_opts *o, int level) {
    jb_putc(c, b, '\n');
    for (int i = 0; i < level; i++) {
        if (o->indent_str) jb_puts(c, b, o->indent_str);
        else
            for (int k = 0; k < o->indent; k++) jb_putc(c, b, ' ');
    }
}

static bool has_indent(const jjson_opts *o) { return o->indent_str || o->indent >= 0; }

static void dump_key(jx_ctx *c, const jnode *at, jbuf *b, jv k, const jjson_opts *o) {
    switch (k.t) {
    case JV_STR: dump_str(c, b, k.u.s->s, k.u.s->len, o->ensure_ascii); return;
    case JV_NONE: jb_puts(c, b, "\"null\""); return;
    case JV_BOOL: jb_puts(c, b, k.u.b ? "\"true\"" : "\"false\""); return;
    case JV_INT: jb_printf(c, b, "\"%lld\"", (long long)k.u.i); return;
    case JV_FLOAT: {
        jbuf t = {0};
        dump_float(c, &t, k.u.f);
        dump_str(c, b, t.p, t.n, false);
        return;
    }
    default: jx_failn(c, at, "keys must be str, int, float, bool or None, not %s", jv_typename(k));
    }
}

static int key_cmp(jx_ctx *c, const jnode *at, jv a, jv b) { return jv_compare(c, at, a, b); }

static void dump(jx_ctx *c, const jnode *at, jbuf *b, jv v, const jjson_opts *o, int level) {
    if (++c->depth > c->max_depth) jx_failn(c, at, "value nested too deeply for tojson");
    switch (v.t) {
    case JV_NONE: jb_puts(c, b, "null"); break;
    case JV_BOOL: jb_puts(c, b, v.u.b ? "true" : "false"); break;
    case JV_INT: jb_printf(c, b, "%lld", (long long)v.u.i); break;
    case JV_FLOAT: dump_float(c, b, v.u.f); break;
    case JV_STR: dump_str(c, b, v.u.s->s, v.u.s->len, o->ensure_ascii); break;
    case JV_LIST: {
        const jlist *l = v.u.l;
        if (!l->n) {
            jb_puts(c, b, "[]");
            break;
        }
        jb_putc(c, b, '[');
        for (size_t i = 0; i < l->n; i++) {
            if (i) jb_puts(c, b, o->item_sep);
            if (has_indent(o)) newline_indent(c, b, o, level + 1);
            dump(c, at, b, l->v[i], o, level + 1);
        }
        if (has_indent(o)) newline_indent(c, b, o, level);
        jb_putc(c, b, ']');
        break;
    }
    case JV_DICT: {
        const jdict *d = v.u.d;
        if (!d->n) {
            jb_puts(c, b, "{}");
            break;
        }
        size_t *ord = jx_alloc(c, d->n * sizeof *ord);
        for (size_t i = 0; i < d->n; i++) ord[i] = i;
        if (o->sort_keys) /* insertion sort: stable, small dicts */
            for (size_t i = 1; i < d->n; i++)
                for (size_t j = i; j > 0 && key_cmp(c, at, d->k[ord[j - 1]], d->k[ord[j]]) > 0; j--) {
                    size_t t = ord[j];
                    ord[j] = ord[j - 1];
                    ord[j - 1] = t;
                }
        jb_putc(c, b, '{');
        for (size_t i = 0; i < d->n; i++) {
            if (i) jb_puts(c, b, o->item_sep);
            if (has_indent(o)) newline_indent(c, b, o, level + 1);
            dump_key(c, at, b, d->k[ord[i]], o);
            jb_puts(c, b, o->key_sep);
            dump(c, at, b, d->v[ord[i]], o, level + 1);
        }
        if (has_indent(o)) newline_indent(c, b, o, level);
        jb_putc(c, b, '}');
        break;
    }
    default: jx_failn(c, at, "Object of type %s is not JSON serializable", jv_typename(v));
    }
    c->depth--;
}

void jx_json_dump(jx_ctx *c, const jnode *at, jbuf *b, jv v, const jjson_opts *o) { dump(c, at, b, v, o, 0); }
