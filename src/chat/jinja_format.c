/*
 * jinja_format.c - Python string formatting (str.format and printf-style `%`)
 * and the template globals: range, namespace, dict, raise_exception,
 * strftime_now (transformers' additions to Jinja's globals).
 */
#include "chat/jinja.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- format spec ([[fill]align][sign][#][0][width][,][.prec][type]) ---------------- */

typedef struct fspec {
    char fill[5];
    char align, sign, type, group;
    bool alt, zero;
    int width, prec;
} fspec;

static void parse_spec(jx_ctx *c, const jnode *at, const char *s, size_t n, fspec *f) {
    memset(f, 0, sizeof *f);
    f->prec = -1;
    strcpy(f->fill, " ");
    size_t i = 0;
    size_t k = 0;
    if (n) ju_decode(s, n, &k);
    if (k < n && strchr("<>=^", s[k]) && s[k]) {
        memcpy(f->fill, s, k);
        f->fill[k] = 0;
        f->align = s[k];
        i = k + 1;
    } else if (n && strchr("<>=^", s[0]) && s[0]) {
        f->align = s[0];
        i = 1;
    }
    if (i < n && (s[i] == '+' || s[i] == '-' || s[i] == ' ')) f->sign = s[i++];
    if (i < n && s[i] == '#') {
        f->alt = true;
        i++;
    }
    if (i < n && s[i] == '0') {
        f->zero = true;
        i++;
    }
    while (i < n && s[i] >= '0' && s[i] <= '9' && f->width < 100000) f->width = f->width * 10 + (s[i++] - '0');
    if (i < n && (s[i] == ',' || s[i] == '_')) f->group = s[i++];
    if (i < n && s[i] == '.') {
        i++;
        f->prec = 0;
        while (i < n && s[i] >= '0' && s[i] <= '9' && f->prec < 1000) f->prec = f->prec * 10 + (s[i++] - '0');
    }
    if (i < n) f->type = s[i++];
    if (i != n) jx_failn(c, at, "Invalid format specifier");
}

static void pad_out(jx_ctx *c, jbuf *out, const char *body, size_t blen, const char *sign, const fspec *f, char dflt_align) {
    char align = f->align ? f->align : (f->zero ? '=' : dflt_align);
    const char *fill = f->zero && !f->align ? "0" : f->fill;
    int64_t len = (int64_t)ju_len(body, blen) + (int64_t)strlen(sign);
    int64_t pad = f->width > len ? f->width - len : 0, left = 0, right = 0;
    if (align == '<') right = pad;
    else if (align == '^') {
        left = pad / 2;
        right = pad - left;
    } else left = pad;
    if (align == '=') {
        jb_puts(c, out, sign);
        for (int64_t i = 0; i < left; i++) jb_puts(c, out, fill);
        jb_put(c, out, body, blen);
        return;
    }
    for (int64_t i = 0; i < left; i++) jb_puts(c, out, fill);
    jb_puts(c, out, sign);
    jb_put(c, out, body, blen);
    for (int64_t i = 0; i < right; i++) jb_puts(c, out, fill);
}

static void group_digits(jx_ctx *c, jbuf *b, const char *d, char sep) {
    size_t n = strlen(d), intlen = strcspn(d, ".eE");
    for (size_t i = 0; i < intlen; i++) {
        if (i && (intlen - i) % 3 == 0) jb_putc(c, b, sep);
        jb_putc(c, b, d[i]);
    }
    jb_put(c, b, d + intlen, n - intlen);
}

static void format_value(jx_ctx *c, const jnode *at, jbuf *out, jv v, const char *spec, size_t sn) {
    fspec f;
    parse_spec(c, at, spec, sn, &f);
    if (sn == 0 || ((v.t == JV_STR || v.t == JV_NONE || v.t == JV_LIST || v.t == JV_DICT) && (!f.type || f.type == 's'))) {
        jstr *s = jv_tostr(c, v);
        size_t blen = s->len;
        if (f.prec >= 0) { /* truncate to prec code points */
            size_t i = 0;
            for (int k = 0; k < f.prec && i < s->len; k++) ju_decode(s->s, s->len, &i);
            blen = i;
        }
        if (sn == 0) jb_put(c, out, s->s, s->len);
        else pad_out(c, out, s->s, blen, "", &f, '<');
        return;
    }
    if (v.t != JV_INT && v.t != JV_FLOAT && v.t != JV_BOOL)
        jx_failn(c, at, "Unknown format code '%c' for object of type '%s'", f.type ? f.type : 's', jv_typename(v));
    char t = f.type;
    bool isint = v.t != JV_FLOAT && (!t || strchr("dxXobcn", t));
    char num[512];
    double x = v.t == JV_FLOAT ? v.u.f : v.t == JV_INT ? (double)v.u.i : v.u.b;
    bool neg;
    if (isint) {
        int64_t i = v.t == JV_INT ? v.u.i : v.u.b;
        neg = i < 0;
        uint64_t u = neg ? (uint64_t)0 - (uint64_t)i : (uint64_t)i;
        if (t == 'c') {
            char u8[5] = {0};
            ju_encode((int32_t)(u & 0x1fffff), u8);
            pad_out(c, out, u8, strlen(u8), "", &f, '<');
            return;
        }
        if (t == 'x' || t == 'X') snprintf(num, sizeof num, t == 'x' ? "%s%llx" : "%s%llX", f.alt ? (t == 'x' ? "0x" : "0X") : "", (unsigned long long)u);
        else if (t == 'o') snprintf(num, sizeof num, "%s%llo", f.alt ? "0o" : "", (unsigned long long)u);
        else if (t == 'b') {
            char bits[70];
            int k = 0;
            do {
                bits[k++] = (char)('0' + (u & 1));
                u >>= 1;
            } while (u);
            int p = snprintf(num, sizeof num, "%s", f.alt ? "0b" : "");
            while (k) num[p++] = bits[--k];
            num[p] = 0;
        } else snprintf(num, sizeof num, "%llu", (unsigned long long)u);
    } else {
        neg = signbit(x);
        double ax = fabs(x);
        int prec = f.prec >= 0 ? f.prec : 6;
        if (!t) {
            if (f.prec < 0) jx_float_repr(ax, num, sizeof num);
            else snprintf(num, sizeof num, "%.*g", prec ? prec : 1, ax);
        } else if (t == '%') {
            snprintf(num, sizeof num, "%.*f%%", prec, ax * 100);
        } else if (strchr("fFeEgG", t)) {
            char fmt[16];
            snprintf(fmt, sizeof fmt, "%%%s.*%c", f.alt ? "#" : "", t);
            snprintf(num, sizeof num, fmt, prec, ax);
        } else {
            jx_failn(c, at, "Unknown format code '%c' for object of type 'float'", t);
        }
    }
    jbuf body = {0};
    if (f.group) group_digits(c, &body, num, f.group);
    else jb_puts(c, &body, num);
    const char *sign = neg ? "-" : f.sign == '+' ? "+" : f.sign == ' ' ? " " : "";
    pad_out(c, out, body.p, body.n, sign, &f, '>');
}

jv jx_pyformat(jx_ctx *c, const jnode *at, jstr *fmt, jargs *a) {
    jbuf out = {0};
    const char *s = fmt->s;
    size_t n = fmt->len, i = 0;
    int autoidx = 0;
    while (i < n) {
        char ch = s[i];
        if (ch == '}' ) {
            if (i + 1 < n && s[i + 1] == '}') i++;
            else jx_failn(c, at, "Single '}' encountered in format string");
            jb_putc(c, &out, '}');
            i++;
            continue;
        }
        if (ch != '{') {
            jb_putc(c, &out, ch);
            i++;
            continue;
        }
        if (i + 1 < n && s[i + 1] == '{') {
            jb_putc(c, &out, '{');
            i += 2;
            continue;
        }
        size_t j = i + 1;
        while (j < n && s[j] != '}') j++;
        if (j >= n) jx_failn(c, at, "Single '{' encountered in format string");
        const char *f = s + i + 1;
        size_t fl = j - i - 1;
        size_t fe = 0;
        while (fe < fl && f[fe] != '!' && f[fe] != ':' && f[fe] != '.' && f[fe] != '[') fe++;
        jv v;
        if (fe == 0) {
            v = ja_get(a, autoidx++, NULL);
        } else if (f[0] >= '0' && f[0] <= '9') {
            v = ja_get(a, atoi(f), NULL);
        } else {
            char name[128];
            snprintf(name, sizeof name, "%.*s", (int)(fe < 127 ? fe : 127), f);
            v = ja_get(a, -1, name);
        }
        if (v.t == JV_UNDEF) jx_failn(c, at, "format: replacement field '%.*s' has no argument", (int)fl, f);
        while (fe < fl && (f[fe] == '.' || f[fe] == '[')) {
            size_t k = fe + 1;
            if (f[fe] == '.') {
                while (k < fl && f[k] != '.' && f[k] != '[' && f[k] != '!' && f[k] != ':') k++;
                v = jx_getattr(c, at, v, js_new(c, f + fe + 1, k - fe - 1));
                fe = k;
            } else {
                while (k < fl && f[k] != ']') k++;
                bool dig = k > fe + 1;
                for (size_t q = fe + 1; q < k; q++)
                    if (f[q] < '0' || f[q] > '9') dig = false;
                jv key = dig ? jv_int(atoll(f + fe + 1)) : jv_str(c, f + fe + 1, k - fe - 1);
                v = jx_getitem(c, at, v, key);
                fe = k + 1;
            }
        }
        if (fe < fl && f[fe] == '!') {
            char conv = fe + 1 < fl ? f[fe + 1] : 0;
            if (conv == 'r' || conv == 'a') {
                jbuf r = {0};
                jv_repr_to(c, &r, v);
                v = jv_strv(jb_str(c, &r));
            } else if (conv == 's') {
                v = jv_strv(jv_tostr(c, v));
            } else {
                jx_failn(c, at, "Unknown conversion specifier");
            }
            fe += 2;
        }
        const char *spec = "";
        size_t sn = 0;
        if (fe < fl && f[fe] == ':') {
            spec = f + fe + 1;
            sn = fl - fe - 1;
        }
        format_value(c, at, &out, v, spec, sn);
        i = j + 1;
    }
    return jv_strv(jb_str(c, &out));
}

jv jx_printf(jx_ctx *c, const jnode *at, jstr *fmt, jv args) {
    jbuf out = {0};
    bool tuple = args.t == JV_LIST && args.u.l->tuple;
    size_t argi = 0, nargs = tuple ? args.u.l->n : 1;
    bool used_map = false;
    const char *s = fmt->s;
    size_t n = fmt->len, i = 0;
    while (i < n) {
        if (s[i] != '%') {
            jb_putc(c, &out, s[i++]);
            continue;
        }
        i++;
        if (i < n && s[i] == '%') {
            jb_putc(c, &out, '%');
            i++;
            continue;
        }
        jv v;
        if (i < n && s[i] == '(') {
            size_t k = i + 1;
            while (k < n && s[k] != ')') k++;
            if (k >= n || args.t != JV_DICT) jx_failn(c, at, "format requires a mapping");
            jv *p = jd_get(args.u.d, jv_str(c, s + i + 1, k - i - 1));
            if (!p) jx_failn(c, at, "format: key '%.*s' not found", (int)(k - i - 1), s + i + 1);
            v = *p;
            used_map = true;
            i = k + 1;
        } else {
            if (argi >= nargs) jx_failn(c, at, "not enough arguments for format string");
            v = tuple ? args.u.l->v[argi] : args;
            argi++;
        }
        char flags[8] = {0};
        int nf = 0;
        while (i < n && strchr("-+ #0", s[i]) && s[i] && nf < 7) flags[nf++] = s[i++];
        int width = 0, prec = -1;
        while (i < n && s[i] >= '0' && s[i] <= '9' && width < 100000) width = width * 10 + (s[i++] - '0');
        if (i < n && s[i] == '.') {
            i++;
            prec = 0;
            while (i < n && s[i] >= '0' && s[i] <= '9' && prec < 1000) prec = prec * 10 + (s[i++] - '0');
        }
        if (i >= n) jx_failn(c, at, "incomplete format");
        char t = s[i++];
        if (t == 's' || t == 'r' || t == 'a') {
            jstr *x;
            if (t == 's') x = jv_tostr(c, v);
            else {
                jbuf r = {0};
                jv_repr_to(c, &r, v);
                x = jb_str(c, &r);
            }
            fspec f = {.fill = " ", .width = width};
            size_t blen = x->len, q = 0;
            if (prec >= 0) {
                for (int k = 0; k < prec && q < x->len; k++) ju_decode(x->s, x->len, &q);
                blen = q;
            }
            f.align = strchr(flags, '-') ? '<' : '>';
            pad_out(c, &out, x->s, blen, "", &f, '>');
            continue;
        }
        if (!strchr("diouxXeEfFgGc", t)) jx_failn(c, at, "unsupported format character '%c'", t);
        if (v.t != JV_INT && v.t != JV_FLOAT && v.t != JV_BOOL)
            jx_failn(c, at, "%%%c format: a real number is required, not %s", t, jv_typename(v));
        char cf[32], num[600];
        double x = v.t == JV_FLOAT ? v.u.f : v.t == JV_INT ? (double)v.u.i : v.u.b;
        if (strchr("diouxXc", t)) {
            long long iv = v.t == JV_FLOAT ? (long long)x : v.t == JV_INT ? v.u.i : v.u.b;
            if (t == 'c') {
                char u8[5] = {0};
                ju_encode((int32_t)(iv & 0x1fffff), u8);
                jb_puts(c, &out, u8);
                continue;
            }
            snprintf(cf, sizeof cf, "%%%s%d.%dll%c", flags, width, prec < 0 ? 1 : prec, t == 'i' || t == 'u' ? 'd' : t);
            snprintf(num, sizeof num, cf, iv);
        } else {
            snprintf(cf, sizeof cf, "%%%s%d.%d%c", flags, width, prec < 0 ? 6 : prec, t);
            snprintf(num, sizeof num, cf, x);
        }
        jb_puts(c, &out, num);
    }
    if (!used_map && tuple && argi < nargs) jx_failn(c, at, "not all arguments converted during string formatting");
    return jv_strv(jb_str(c, &out));
}

/* ---- globals ---------------------------------------------------------------------------- */

static jv g_range(jx_ctx *c, const jnode *at, jv self, jargs *a) {
    int64_t v[3] = {0, 0, 1};
    if (a->nkw) jx_failn(c, at, "range() takes no keyword arguments");
    if (a->npos < 1 || a->npos > 3) jx_failn(c, at, "range expected 1 to 3 arguments, got %d", a->npos);
    for (int i = 0; i < a->npos; i++) {
        jv x = a->pos[i];
        if (x.t == JV_UNDEF) jv_undef_fail(c, at, x);
        if (x.t != JV_INT && x.t != JV_BOOL) jx_failn(c, at, "'%s' object cannot be interpreted as an integer", jv_typename(x));
        int64_t k = x.t == JV_INT ? x.u.i : x.u.b;
        if (a->npos == 1) v[1] = k;
        else v[i] = k;
    }
    if (v[2] == 0) jx_failn(c, at, "range() arg 3 must not be zero");
    jlist *l = jl_new(c, 0);
    for (int64_t i = v[0]; v[2] > 0 ? i < v[1] : i > v[1]; i += v[2]) {
        if (l->n >= 100000) jx_failn(c, at, "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
        jl_push(c, l, jv_int(i));
        if ((v[2] > 0 && i > INT64_MAX - v[2]) || (v[2] < 0 && i < INT64_MIN - v[2])) break;
    }
    (void)self;
    return jv_listv(l);
}

static jdict *dict_from_args(jx_ctx *c, const jnode *at, jargs *a, const char *fn) {
    jdict *d = jd_new(c);
    if (a->npos > 1) jx_failn(c, at, "%s expected at most 1 positional argument, got %d", fn, a->npos);
    if (a->npos == 1) {
        jv src = a->pos[0];
        if (src.t == JV_DICT || src.t == JV_NS) {
            for (size_t i = 0; i < src.u.d->n; i++) jd_set(c, d, src.u.d->k[i], src.u.d->v[i]);
        } else {
            jlist *l = jv_iter(c, at, src);
            for (size_t i = 0; i < l->n; i++) {
                jlist *pair = jv_iter(c, at, l->v[i]);
                if (pair->n != 2) jx_failn(c, at, "%s: sequence element #%zu has length %zu; 2 is required", fn, i, pair->n);
                jd_set(c, d, pair->v[0], pair->v[1]);
            }
        }
    }
    for (int i = 0; i < a->nkw; i++) jd_set(c, d, jv_strv(a->kwn[i]), a->kw[i]);
    return d;
}

static jv g_namespace(jx_ctx *c, const jnode *at, jv self, jargs *a) {
    jdict *d = dict_from_args(c, at, a, "namespace");
    for (size_t i = 0; i < d->n; i++)
        if (d->k[i].t == JV_STR && d->k[i].u.s->s[0] == '_')
            jx_failn(c, at, "chat templates cannot store underscore-prefixed attributes on a namespace, but got '%s'", d->k[i].u.s->s);
    jv v = {.t = JV_NS};
    v.u.d = d;
    (void)self;
    return v;
}

static jv g_dict(jx_ctx *c, const jnode *at, jv self, jargs *a) {
    (void)self;
    return jv_dictv(dict_from_args(c, at, a, "dict"));
}

static jv g_raise(jx_ctx *c, const jnode *at, jv self, jargs *a) {
    jv m = ja_get(a, 0, "message");
    (void)self;
    jx_failn(c, at, "%s", jv_tostr(c, m)->s);
}

static jv g_strftime(jx_ctx *c, const jnode *at, jv self, jargs *a) {
    jv f = ja_get(a, 0, "format");
    if (f.t != JV_STR) jx_failn(c, at, "strftime_now() argument must be str, not %s", jv_typename(f));
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    char buf[1024];
    size_t n = f.u.s->len ? strftime(buf, sizeof buf, f.u.s->s, &tm) : 0;
    (void)self;
    return jv_str(c, buf, n);
}

void jx_add_globals(jx_ctx *c, jdict *g) {
    jv none = jv_none();
    jd_set(c, g, jv_cstr(c, "range"), jv_func(c, "range", g_range, none));
    jd_set(c, g, jv_cstr(c, "namespace"), jv_func(c, "namespace", g_namespace, none));
    jd_set(c, g, jv_cstr(c, "dict"), jv_func(c, "dict", g_dict, none));
    jd_set(c, g, jv_cstr(c, "raise_exception"), jv_func(c, "raise_exception", g_raise, none));
    jd_set(c, g, jv_cstr(c, "strftime_now"), jv_func(c, "strftime_now", g_strftime, none));
}
