/*
 * jinja_filters.c - Jinja's built-in filters as jinja2/filters.py defines
 * them, plus transformers' `tojson` (json.dumps with ensure_ascii=False, no
 * HTML escaping). `safe` is the identity: transformers renders without
 * autoescaping.
 */
#include "chat/jinja.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static jstr *sv(jx_ctx *c, jv v) { return jv_tostr(c, v); }

/* Jinja's make_attrgetter: "a.b.0" -> item-then-attribute lookups. */
static jv attr_get(jx_ctx *c, const jnode *at, jv obj, jstr *path) {
    const char *p = path->s;
    while (*p) {
        const char *dot = strchr(p, '.');
        size_t n = dot ? (size_t)(dot - p) : strlen(p);
        bool digits = n > 0;
        for (size_t i = 0; i < n; i++)
            if (p[i] < '0' || p[i] > '9') digits = false;
        jv key = digits ? jv_int(strtoll(p, NULL, 10)) : jv_str(c, p, n);
        if (obj.t == JV_UNDEF) return obj;
        obj = jx_getitem(c, at, obj, key);
        p += n + (dot ? 1 : 0);
        if (!dot) break;
    }
    return obj;
}

static jv need_attr(jx_ctx *c, const jnode *at, jargs *a, int i, const char *kw) {
    jv v = ja_get(a, i, kw);
    return v;
}

static double to_f(jv v) { return v.t == JV_FLOAT ? v.u.f : v.t == JV_INT ? (double)v.u.i : v.u.b; }
static bool isnum(jv v) { return v.t == JV_INT || v.t == JV_FLOAT || v.t == JV_BOOL; }

/* Python int(str, base) with whitespace, sign and underscores. */
static bool parse_int(const char *s, int base, int64_t *out) {
    while (*s && ju_isspace((unsigned char)*s)) s++;
    char buf[128];
    size_t k = 0;
    const char *e = s + strlen(s);
    while (e > s && ju_isspace((unsigned char)e[-1])) e--;
    if (e == s) return false;
    for (const char *p = s; p < e && k + 1 < sizeof buf; p++) {
        if (*p == '_') {
            if (p == s || p + 1 == e || p[1] == '_') return false;
            continue;
        }
        buf[k++] = *p;
    }
    buf[k] = 0;
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, base);
    if (errno || *end || end == buf) return false;
    *out = v;
    return true;
}

static bool parse_float(const char *s, double *out) {
    while (*s && ju_isspace((unsigned char)*s)) s++;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s) return false;
    while (*end && ju_isspace((unsigned char)*end)) end++;
    if (*end) return false;
    *out = v;
    return true;
}

static jv f_int(jx_ctx *c, jv v, jargs *a) {
    jv dflt = ja_get(a, 0, "default");
    if (dflt.t == JV_UNDEF) dflt = jv_int(0);
    jv bv = ja_get(a, 1, "base");
    int base = bv.t == JV_INT ? (int)bv.u.i : 10;
    int64_t i;
    double f;
    if (v.t == JV_INT) return v;
    if (v.t == JV_BOOL) return jv_int(v.u.b);
    if (v.t == JV_FLOAT && isfinite(v.u.f) && fabs(v.u.f) < 9.2e18) return jv_int((int64_t)v.u.f);
    if (v.t == JV_STR) {
        if (base >= 2 && base <= 36 && parse_int(v.u.s->s, base, &i)) return jv_int(i);
        if (parse_float(v.u.s->s, &f) && isfinite(f) && fabs(f) < 9.2e18) return jv_int((int64_t)f);
    }
    (void)c;
    return dflt;
}

static jv f_float(jx_ctx *c, jv v, jargs *a) {
    jv dflt = ja_get(a, 0, "default");
    if (dflt.t == JV_UNDEF) dflt = jv_float(0.0);
    double f;
    if (isnum(v)) return jv_float(to_f(v));
    if (v.t == JV_STR && parse_float(v.u.s->s, &f)) return jv_float(f);
    (void)c;
    return dflt;
}

static jv f_indent(jx_ctx *c, jv v, jargs *a) {
    jstr *s = sv(c, v);
    jv w = ja_get(a, 0, "width");
    jstr *ind;
    if (w.t == JV_STR) ind = w.u.s;
    else {
        int64_t n = w.t == JV_INT ? w.u.i : 4;
        jbuf b = {0};
        for (int64_t i = 0; i < n && i < 1000; i++) jb_putc(c, &b, ' ');
        ind = jb_str(c, &b);
    }
    bool first = jv_truthy(ja_get(a, 1, "first")), blank = jv_truthy(ja_get(a, 2, "blank"));
    /* s += "\n"; lines = s.splitlines() */
    jbuf t = {0};
    jb_put(c, &t, s->s, s->len);
    jb_putc(c, &t, '\n');
    jv m = jx_method(c, NULL, jv_strv(jb_str(c, &t)), js_cstr(c, "splitlines"));
    jargs none = {0};
    jlist *lines = jx_call(c, NULL, m, &none).u.l;
    jbuf b = {0};
    for (size_t i = 0; i < lines->n; i++) {
        jstr *ln = lines->v[i].u.s;
        if (i) jb_putc(c, &b, '\n');
        if (i && (blank || ln->len)) jb_put(c, &b, ind->s, ind->len);
        jb_put(c, &b, ln->s, ln->len);
    }
    if (first) {
        jbuf r = {0};
        jb_put(c, &r, ind->s, ind->len);
        jb_put(c, &r, b.p ? b.p : "", b.n);
        return jv_strv(jb_str(c, &r));
    }
    return jv_strv(jb_str(c, &b));
}

static jv f_tojson(jx_ctx *c, const jnode *at, jv v, jargs *a) {
    static const char *const kws[] = {"ensure_ascii", "indent", "separators", "sort_keys", NULL};
    ja_check(c, at, "tojson", a, 4, kws);
    jjson_opts o = {.indent = -1, .item_sep = ", ", .key_sep = ": "};
    o.ensure_ascii = jv_truthy(ja_get(a, 0, "ensure_ascii"));
    jv ind = ja_get(a, 1, "indent");
    if (ind.t == JV_INT) {
        o.indent = ind.u.i < 0 ? 0 : ind.u.i > 64 ? 64 : (int)ind.u.i;
        o.item_sep = ",";
    } else if (ind.t == JV_STR) {
        o.indent_str = ind.u.s->s;
        o.item_sep = ",";
    } else if (ind.t != JV_UNDEF && ind.t != JV_NONE) {
        jx_failn(c, at, "tojson: indent must be an int or a string");
    }
    jv sep = ja_get(a, 2, "separators");
    if (sep.t == JV_LIST && sep.u.l->n == 2 && sep.u.l->v[0].t == JV_STR && sep.u.l->v[1].t == JV_STR) {
        o.item_sep = sep.u.l->v[0].u.s->s;
        o.key_sep = sep.u.l->v[1].u.s->s;
    } else if (sep.t != JV_UNDEF && sep.t != JV_NONE) {
        jx_failn(c, at, "tojson: separators must be a pair of strings");
    }
    o.sort_keys = jv_truthy(ja_get(a, 3, "sort_keys"));
    jbuf b = {0};
    jx_json_dump(c, at, &b, v, &o);
    return jv_strv(jb_str(c, &b));
}

/* ---- sorting -------------------------------------------------------------------------- */

typedef struct skey {
    jv key, val;
} skey;

static jv sort_key(jx_ctx *c, const jnode *at, jv item, jv attr, bool cs) {
    jv k = attr.t == JV_STR ? attr_get(c, at, item, attr.u.s) : item;
    if (!cs && k.t == JV_STR) k = jv_strv(jx_str_case(c, k.u.s, 0));
    return k;
}

static void msort(jx_ctx *c, const jnode *at, skey *v, skey *tmp, size_t n, bool rev) {
    if (n < 2) return;
    size_t h = n / 2;
    msort(c, at, v, tmp, h, rev);
    msort(c, at, v + h, tmp, n - h, rev);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) {
        int r = jv_compare(c, at, v[j].key, v[i].key);
        if (rev ? r > 0 : r < 0) tmp[k++] = v[j++];
        else tmp[k++] = v[i++];
    }
    while (i < h) tmp[k++] = v[i++];
    while (j < n) tmp[k++] = v[j++];
    memcpy(v, tmp, n * sizeof *v);
}

static jlist *sorted(jx_ctx *c, const jnode *at, jlist *l, jv attr, bool cs, bool rev) {
    skey *v = jx_alloc(c, (l->n + 1) * sizeof *v), *tmp = jx_alloc(c, (l->n + 1) * sizeof *v);
    for (size_t i = 0; i < l->n; i++) {
        v[i].val = l->v[i];
        v[i].key = sort_key(c, at, l->v[i], attr, cs);
    }
    msort(c, at, v, tmp, l->n, rev);
    jlist *r = jl_new(c, l->n);
    for (size_t i = 0; i < l->n; i++) jl_push(c, r, v[i].val);
    return r;
}

/* select/reject/selectattr/rejectattr */
static jv select_items(jx_ctx *c, const jnode *at, jv v, jargs *a, bool attr, bool keep) {
    jlist *l = jv_iter(c, at, v), *r = jl_new(c, l->n);
    int off = 0;
    jv an = jv_undef(NULL);
    if (attr) {
        an = ja_get(a, 0, NULL);
        if (an.t != JV_STR) jx_failn(c, at, "%s: attribute name must be a string", keep ? "selectattr" : "rejectattr");
        off = 1;
    }
    jv tn = ja_get(a, off, NULL);
    jargs ta = {0};
    if (a->npos > off + 1) {
        ta.npos = a->npos - off - 1;
        ta.pos = a->pos + off + 1;
    }
    for (size_t i = 0; i < l->n; i++) {
        jv x = attr ? attr_get(c, at, l->v[i], an.u.s) : l->v[i];
        bool ok = tn.t == JV_UNDEF ? jv_truthy(x) : jx_test(c, at, sv(c, tn)->s, x, &ta);
        if (ok == keep) jl_push(c, r, l->v[i]);
    }
    return jv_listv(r);
}

static jv f_map(jx_ctx *c, const jnode *at, jv v, jargs *a) {
    jlist *l = jv_iter(c, at, v), *r = jl_new(c, l->n);
    jv attr = ja_get(a, -1, "attribute");
    if (attr.t != JV_UNDEF) {
        jv dflt = ja_get(a, -1, "default");
        for (size_t i = 0; i < l->n; i++) {
            jv x = attr_get(c, at, l->v[i], sv(c, attr));
            jl_push(c, r, x.t == JV_UNDEF && dflt.t != JV_UNDEF ? dflt : x);
        }
        return jv_listv(r);
    }
    jv fname = ja_get(a, 0, NULL);
    if (fname.t != JV_STR) jx_failn(c, at, "map requires a filter argument");
    jargs fa = {0};
    if (a->npos > 1) {
        fa.npos = a->npos - 1;
        fa.pos = a->pos + 1;
    }
    fa.nkw = a->nkw;
    fa.kwn = a->kwn;
    fa.kw = a->kw;
    for (size_t i = 0; i < l->n; i++) jl_push(c, r, jx_filter(c, at, fname.u.s->s, l->v[i], &fa));
    return jv_listv(r);
}

static jv f_unique(jx_ctx *c, const jnode *at, jv v, jargs *a) {
    bool cs = jv_truthy(ja_get(a, 0, "case_sensitive"));
    jv attr = ja_get(a, 1, "attribute");
    jlist *l = jv_iter(c, at, v), *r = jl_new(c, l->n), *seen = jl_new(c, l->n);
    for (size_t i = 0; i < l->n; i++) {
        jv k = sort_key(c, at, l->v[i], attr, cs);
        bool dup = false;
        for (size_t j = 0; j < seen->n && !dup; j++) dup = jv_equal(seen->v[j], k);
        if (dup) continue;
        jl_push(c, seen, k);
        jl_push(c, r, l->v[i]);
    }
    return jv_listv(r);
}

static jv f_minmax(jx_ctx *c, const jnode *at, jv v, jargs *a, bool mx) {
    bool cs = jv_truthy(ja_get(a, 0, "case_sensitive"));
    jv attr = ja_get(a, 1, "attribute");
    jlist *l = jv_iter(c, at, v);
    if (!l->n) return jv_undef(js_cstr(c, "No aggregated item, sequence was empty."));
    size_t best = 0;
    jv bk = sort_key(c, at, l->v[0], attr, cs);
    for (size_t i = 1; i < l->n; i++) {
        jv k = sort_key(c, at, l->v[i], attr, cs);
        int r = jv_compare(c, at, k, bk);
        if (mx ? r > 0 : r < 0) {
            best = i;
            bk = k;
        }
    }
    return l->v[best];
}

static jv f_join(jx_ctx *c, const jnode *at, jv v, jargs *a) {
    jv d = ja_get(a, 0, "d");
    jv attr = ja_get(a, 1, "attribute");
    jstr *sep = d.t == JV_UNDEF ? js_cstr(c, "") : sv(c, d);
    jlist *l = jv_iter(c, at, v);
    jbuf b = {0};
    for (size_t i = 0; i < l->n; i++) {
        if (i) jb_put(c, &b, sep->s, sep->len);
        jv x = attr.t == JV_STR ? attr_get(c, at, l->v[i], attr.u.s) : l->v[i];
        jv_str_to(c, &b, x);
    }
    return jv_strv(jb_str(c, &b));
}

static jv f_escape(jx_ctx *c, jv v) {
    jstr *s = sv(c, v);
    jbuf b = {0};
    for (size_t i = 0; i < s->len; i++) {
        switch (s->s[i]) {
        case '&': jb_puts(c, &b, "&amp;"); break;
        case '<': jb_puts(c, &b, "&lt;"); break;
        case '>': jb_puts(c, &b, "&gt;"); break;
        case '"': jb_puts(c, &b, "&#34;"); break;
        case '\'': jb_puts(c, &b, "&#39;"); break;
        default: jb_putc(c, &b, s->s[i]);
        }
    }
    return jv_strv(jb_str(c, &b));
}

static jv f_items(jx_ctx *c, const jnode *at, jv v) {
    if (v.t == JV_UNDEF) return jv_listv(jl_new(c, 0));
    if (v.t != JV_DICT) jx_failn(c, at, "Can only get item pairs from a mapping.");
    jv m = jx_method(c, at, v, js_cstr(c, "items"));
    jargs none = {0};
    return jx_call(c, at, m, &none);
}

static jv f_round(jx_ctx *c, const jnode *at, jv v, jargs *a) {
    if (!isnum(v)) jx_failn(c, at, "round: expected a number, got %s", jv_typename(v));
    jv pv = ja_get(a, 0, "precision"), mv = ja_get(a, 1, "method");
    int64_t prec = pv.t == JV_INT ? pv.u.i : 0;
    const char *method = mv.t == JV_STR ? mv.u.s->s : "common";
    double x = to_f(v), m = pow(10.0, (double)prec);
    if (!strcmp(method, "common")) {
        if (prec >= 0 && prec <= 40 && isfinite(x)) {
            char buf[400];
            snprintf(buf, sizeof buf, "%.*f", (int)prec, x); /* correctly rounded, half-even on ties */
            return jv_float(strtod(buf, NULL));
        }
        return jv_float(nearbyint(x * m) / m);
    }
    if (!strcmp(method, "floor")) return jv_float(floor(x * m) / m);
    if (!strcmp(method, "ceil")) return jv_float(ceil(x * m) / m);
    jx_failn(c, at, "method must be common, ceil or floor");
}

static const char *const FILTERS[] = {
    "abs", "attr", "capitalize", "center", "count", "d", "default", "dictsort", "e", "escape",
    "first", "float", "format", "indent", "int", "items", "join", "last", "length", "list",
    "lower", "map", "max", "min", "reject", "rejectattr", "replace", "reverse", "round", "safe",
    "select", "selectattr", "sort", "string", "sum", "title", "tojson", "trim", "unique", "upper",
    "wordcount", NULL};

bool jx_has_filter(const char *name) {
    for (int i = 0; FILTERS[i]; i++)
        if (!strcmp(FILTERS[i], name)) return true;
    return false;
}

jv jx_filter(jx_ctx *c, const jnode *at, const char *name, jv v, jargs *a) {
    if (!strcmp(name, "default") || !strcmp(name, "d")) {
        jv dflt = ja_get(a, 0, "default_value");
        bool boolean = jv_truthy(ja_get(a, 1, "boolean"));
        if (v.t == JV_UNDEF || (boolean && !jv_truthy(v))) return dflt.t == JV_UNDEF ? jv_cstr(c, "") : dflt;
        return v;
    }
    if (!strcmp(name, "length") || !strcmp(name, "count")) return jv_int(jv_len(c, at, v));
    if (!strcmp(name, "string")) return jv_strv(sv(c, v));
    if (!strcmp(name, "safe")) return v;
    if (!strcmp(name, "tojson")) return f_tojson(c, at, v, a);
    if (!strcmp(name, "items")) return f_items(c, at, v);
    if (!strcmp(name, "list")) {
        jlist *src = jv_iter(c, at, v), *l = jl_new(c, src->n);
        for (size_t i = 0; i < src->n; i++) jl_push(c, l, src->v[i]);
        return jv_listv(l);
    }
    if (!strcmp(name, "first") || !strcmp(name, "last")) {
        jlist *l = jv_iter(c, at, v);
        if (!l->n) return jv_undef(js_cstr(c, name[0] == 'f' ? "No first item, sequence was empty." : "No last item, sequence was empty."));
        return l->v[name[0] == 'f' ? 0 : l->n - 1];
    }
    if (!strcmp(name, "join")) return f_join(c, at, v, a);
    if (!strcmp(name, "map")) return f_map(c, at, v, a);
    if (!strcmp(name, "select")) return select_items(c, at, v, a, false, true);
    if (!strcmp(name, "reject")) return select_items(c, at, v, a, false, false);
    if (!strcmp(name, "selectattr")) return select_items(c, at, v, a, true, true);
    if (!strcmp(name, "rejectattr")) return select_items(c, at, v, a, true, false);
    if (!strcmp(name, "int")) return f_int(c, v, a);
    if (!strcmp(name, "float")) return f_float(c, v, a);
    if (!strcmp(name, "indent")) return f_indent(c, v, a);
    if (!strcmp(name, "unique")) return f_unique(c, at, v, a);
    if (!strcmp(name, "min") || !strcmp(name, "max")) return f_minmax(c, at, v, a, name[1] == 'a');
    if (!strcmp(name, "escape") || !strcmp(name, "e")) return f_escape(c, v);
    if (!strcmp(name, "round")) return f_round(c, at, v, a);
    if (!strcmp(name, "attr")) return jx_getattr(c, at, v, sv(c, ja_get(a, 0, "name")));
    if (!strcmp(name, "sort")) {
        bool rev = jv_truthy(ja_get(a, 0, "reverse")), cs = jv_truthy(ja_get(a, 1, "case_sensitive"));
        return jv_listv(sorted(c, at, jv_iter(c, at, v), ja_get(a, 2, "attribute"), cs, rev));
    }
    if (!strcmp(name, "dictsort")) {
        if (v.t != JV_DICT) jx_failn(c, at, "dictsort: expected a mapping");
        bool cs = jv_truthy(ja_get(a, 0, "case_sensitive"));
        jv by = ja_get(a, 1, "by");
        bool rev = jv_truthy(ja_get(a, 2, "reverse"));
        jlist *items = f_items(c, at, v).u.l;
        return jv_listv(sorted(c, at, items, jv_cstr(c, by.t == JV_STR && !strcmp(by.u.s->s, "value") ? "1" : "0"), cs, rev));
    }
    if (!strcmp(name, "reverse")) {
        if (v.t == JV_STR) {
            jlist *l = jv_iter(c, at, v);
            jbuf b = {0};
            for (size_t i = l->n; i-- > 0;) jb_put(c, &b, l->v[i].u.s->s, l->v[i].u.s->len);
            return jv_strv(jb_str(c, &b));
        }
        jlist *l = jv_iter(c, at, v), *r = jl_new(c, l->n);
        for (size_t i = l->n; i-- > 0;) jl_push(c, r, l->v[i]);
        return jv_listv(r);
    }
    if (!strcmp(name, "sum")) {
        jv attr = ja_get(a, 0, "attribute"), acc = ja_get(a, 1, "start");
        if (acc.t == JV_UNDEF) acc = jv_int(0);
        jlist *l = jv_iter(c, at, v);
        for (size_t i = 0; i < l->n; i++) {
            jv x = attr.t == JV_STR ? attr_get(c, at, l->v[i], attr.u.s) : l->v[i];
            if (!isnum(x) || !isnum(acc)) jx_failn(c, at, "sum: unsupported operand types");
            acc = (acc.t == JV_FLOAT || x.t == JV_FLOAT) ? jv_float(to_f(acc) + to_f(x))
                                                         : jv_int((int64_t)to_f(acc) + (int64_t)to_f(x));
        }
        return acc;
    }
    if (!strcmp(name, "abs")) {
        if (v.t == JV_INT) return jv_int(v.u.i < 0 ? -v.u.i : v.u.i);
        if (v.t == JV_BOOL) return jv_int(v.u.b);
        if (v.t == JV_FLOAT) return jv_float(fabs(v.u.f));
        jx_failn(c, at, "bad operand type for abs(): '%s'", jv_typename(v));
    }
    if (!strcmp(name, "format")) {
        jv args;
        if (a->nkw) {
            jdict *d = jd_new(c);
            for (int i = 0; i < a->nkw; i++) jd_set(c, d, jv_strv(a->kwn[i]), a->kw[i]);
            args = jv_dictv(d);
        } else {
            jlist *t = jl_new(c, (size_t)a->npos);
            t->tuple = true;
            for (int i = 0; i < a->npos; i++) jl_push(c, t, a->pos[i]);
            args = jv_listv(t);
        }
        return jx_printf(c, at, sv(c, v), args);
    }
    if (!strcmp(name, "wordcount")) {
        jv m = jx_method(c, at, jv_strv(sv(c, v)), js_cstr(c, "split"));
        jargs none = {0};
        return jv_int((int64_t)jx_call(c, at, m, &none).u.l->n);
    }
    if (!strcmp(name, "center")) {
        jstr *s = sv(c, v);
        jv w = ja_get(a, 0, "width");
        int64_t width = w.t == JV_INT ? w.u.i : 80, len = (int64_t)ju_len(s->s, s->len);
        if (width <= len) return jv_strv(s);
        int64_t pad = width - len, left = pad / 2 + (pad & width & 1);
        jbuf b = {0};
        for (int64_t i = 0; i < left; i++) jb_putc(c, &b, ' ');
        jb_put(c, &b, s->s, s->len);
        for (int64_t i = 0; i < pad - left; i++) jb_putc(c, &b, ' ');
        return jv_strv(jb_str(c, &b));
    }
    /* string filters */
    if (!strcmp(name, "trim")) {
        jv ch = ja_get(a, 0, "chars");
        return jx_str_strip(c, sv(c, v), ch.t == JV_STR ? ch : jv_none(), true, true);
    }
    if (!strcmp(name, "upper")) return jv_strv(jx_str_case(c, sv(c, v), 1));
    if (!strcmp(name, "lower")) return jv_strv(jx_str_case(c, sv(c, v), 0));
    if (!strcmp(name, "capitalize")) return jv_strv(jx_str_case(c, sv(c, v), 3));
    if (!strcmp(name, "title")) return jv_strv(jx_str_case(c, sv(c, v), 4));
    if (!strcmp(name, "replace")) {
        jv cnt = ja_get(a, 2, "count");
        return jx_str_replace(c, sv(c, v), sv(c, ja_get(a, 0, "old")), sv(c, ja_get(a, 1, "new")),
                              cnt.t == JV_INT ? cnt.u.i : -1);
    }
    (void)need_attr;
    jx_failn(c, at, "no filter named '%s'", name);
}
