/* jinja_value.c - Python-like values: construction, truth, equality, order,
 * str()/repr(), iteration and len(). */
#include "chat/jinja.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

jstr *js_new(jx_ctx *c, const char *s, size_t n) {
    jstr *r = jx_alloc(c, sizeof *r + n + 1);
    r->len = n;
    if (n) memcpy(r->s, s, n);
    r->s[n] = 0;
    return r;
}

jstr *js_cstr(jx_ctx *c, const char *s) { return js_new(c, s, strlen(s)); }
jv jv_str(jx_ctx *c, const char *s, size_t n) { return jv_strv(js_new(c, s, n)); }
jv jv_cstr(jx_ctx *c, const char *s) { return jv_strv(js_cstr(c, s)); }

jlist *jl_new(jx_ctx *c, size_t cap) {
    jlist *l = jx_alloc(c, sizeof *l);
    if (cap) {
        l->v = jx_alloc(c, cap * sizeof *l->v);
        l->cap = cap;
    }
    return l;
}

void jl_push(jx_ctx *c, jlist *l, jv v) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 4;
        jv *nv = jx_alloc(c, cap * sizeof *nv);
        if (l->n) memcpy(nv, l->v, l->n * sizeof *nv);
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n++] = v;
}

jdict *jd_new(jx_ctx *c) { return jx_alloc(c, sizeof(jdict)); }

jv *jd_get(const jdict *d, jv key) {
    for (size_t i = 0; i < d->n; i++)
        if (jv_equal(d->k[i], key)) return &d->v[i];
    return NULL;
}

jv *jd_gets(const jdict *d, const char *key) {
    size_t n = strlen(key);
    for (size_t i = 0; i < d->n; i++)
        if (d->k[i].t == JV_STR && d->k[i].u.s->len == n && !memcmp(d->k[i].u.s->s, key, n))
            return &d->v[i];
    return NULL;
}

void jd_set(jx_ctx *c, jdict *d, jv key, jv val) {
    jv *p = jd_get(d, key);
    if (p) {
        *p = val;
        return;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 4;
        jv *nk = jx_alloc(c, cap * sizeof *nk), *nv = jx_alloc(c, cap * sizeof *nv);
        if (d->n) {
            memcpy(nk, d->k, d->n * sizeof *nk);
            memcpy(nv, d->v, d->n * sizeof *nv);
        }
        d->k = nk;
        d->v = nv;
        d->cap = cap;
    }
    d->k[d->n] = key;
    d->v[d->n++] = val;
}

jv jv_func(jx_ctx *c, const char *name, jbuiltin_fn fn, jv self) {
    jfunc *f = jx_alloc(c, sizeof *f);
    f->kind = JF_BUILTIN;
    f->name = name;
    f->fn = fn;
    f->self = self;
    jv v = {.t = JV_FUNC};
    v.u.fn = f;
    return v;
}

/* ---- truth, equality, order ------------------------------------------------------ */

bool jv_truthy(jv v) {
    switch (v.t) {
    case JV_UNDEF:
    case JV_NONE: return false;
    case JV_BOOL: return v.u.b;
    case JV_INT: return v.u.i != 0;
    case JV_FLOAT: return v.u.f != 0.0;
    case JV_STR: return v.u.s->len != 0;
    case JV_LIST: return v.u.l->n != 0;
    case JV_DICT: return v.u.d->n != 0;
    default: return true;
    }
}

static bool is_num(jv v) { return v.t == JV_BOOL || v.t == JV_INT || v.t == JV_FLOAT; }
static double num_f(jv v) {
    return v.t == JV_FLOAT ? v.u.f : v.t == JV_INT ? (double)v.u.i : (double)v.u.b;
}
static int64_t num_i(jv v) { return v.t == JV_INT ? v.u.i : (int64_t)v.u.b; }

bool jv_equal(jv a, jv b) {
    if (is_num(a) && is_num(b)) {
        if (a.t == JV_FLOAT || b.t == JV_FLOAT) return num_f(a) == num_f(b);
        return num_i(a) == num_i(b);
    }
    if (a.t != b.t) return false;
    switch (a.t) {
    case JV_UNDEF:
    case JV_NONE: return true;
    case JV_STR: return a.u.s->len == b.u.s->len && !memcmp(a.u.s->s, b.u.s->s, a.u.s->len);
    case JV_LIST:
        if (a.u.l->tuple != b.u.l->tuple || a.u.l->n != b.u.l->n) return false;
        for (size_t i = 0; i < a.u.l->n; i++)
            if (!jv_equal(a.u.l->v[i], b.u.l->v[i])) return false;
        return true;
    case JV_DICT:
        if (a.u.d->n != b.u.d->n) return false;
        for (size_t i = 0; i < a.u.d->n; i++) {
            jv *o = jd_get(b.u.d, a.u.d->k[i]);
            if (!o || !jv_equal(a.u.d->v[i], *o)) return false;
        }
        return true;
    case JV_NS: return a.u.d == b.u.d;
    case JV_FUNC: return a.u.fn == b.u.fn;
    case JV_LOOP: return a.u.lp == b.u.lp;
    default: return false;
    }
}

const char *jv_typename(jv v) {
    switch (v.t) {
    case JV_UNDEF: return "Undefined";
    case JV_NONE: return "NoneType";
    case JV_BOOL: return "bool";
    case JV_INT: return "int";
    case JV_FLOAT: return "float";
    case JV_STR: return "str";
    case JV_LIST: return v.u.l->tuple ? "tuple" : "list";
    case JV_DICT: return "dict";
    case JV_NS: return "Namespace";
    case JV_FUNC: return v.u.fn->kind == JF_MACRO ? "Macro" : "function";
    case JV_LOOP: return "LoopContext";
    default: return "object";
    }
}

_Noreturn void jv_undef_fail(jx_ctx *c, const jnode *at, jv v) {
    if (v.t == JV_UNDEF && v.u.s) jx_failn(c, at, "%s", v.u.s->s);
    jx_failn(c, at, "value is undefined");
}

int jv_compare(jx_ctx *c, const jnode *at, jv a, jv b) {
    if (a.t == JV_UNDEF) jv_undef_fail(c, at, a);
    if (b.t == JV_UNDEF) jv_undef_fail(c, at, b);
    if (is_num(a) && is_num(b)) {
        if (a.t == JV_FLOAT || b.t == JV_FLOAT) {
            double x = num_f(a), y = num_f(b);
            return x < y ? -1 : x > y ? 1 : 0;
        }
        int64_t x = num_i(a), y = num_i(b);
        return x < y ? -1 : x > y ? 1 : 0;
    }
    if (a.t == JV_STR && b.t == JV_STR) {
        size_t n = a.u.s->len < b.u.s->len ? a.u.s->len : b.u.s->len;
        int r = memcmp(a.u.s->s, b.u.s->s, n);
        if (r) return r < 0 ? -1 : 1;
        return a.u.s->len < b.u.s->len ? -1 : a.u.s->len > b.u.s->len ? 1 : 0;
    }
    if (a.t == JV_LIST && b.t == JV_LIST && a.u.l->tuple == b.u.l->tuple) {
        size_t n = a.u.l->n < b.u.l->n ? a.u.l->n : b.u.l->n;
        for (size_t i = 0; i < n; i++) {
            if (jv_equal(a.u.l->v[i], b.u.l->v[i])) continue;
            return jv_compare(c, at, a.u.l->v[i], b.u.l->v[i]);
        }
        return a.u.l->n < b.u.l->n ? -1 : a.u.l->n > b.u.l->n ? 1 : 0;
    }
    jx_failn(c, at, "'<' not supported between instances of '%s' and '%s'", jv_typename(a),
             jv_typename(b));
}

/* ---- str() and repr() ---------------------------------------------------------------- */

void jx_float_repr(double f, char *out, size_t cap) {
    if (isnan(f)) {
        snprintf(out, cap, "nan");
        return;
    }
    if (isinf(f)) {
        snprintf(out, cap, f < 0 ? "-inf" : "inf");
        return;
    }
    char buf[64];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*e", prec - 1, f);
        if (strtod(buf, NULL) == f) break;
    }
    /* buf = [-]d[.ddd]e[+-]XX : collect digits and exponent */
    char digits[32];
    int nd = 0, neg = 0;
    const char *p = buf;
    if (*p == '-') {
        neg = 1;
        p++;
    }
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9') digits[nd++] = *p;
    int e10 = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = 0;
    int decpt = e10 + 1; /* value = 0.DIGITS x 10^decpt */
    char res[64];
    int k = 0;
    if (neg) res[k++] = '-';
    if (decpt > 16 || decpt < -3) {
        res[k++] = digits[0];
        if (nd > 1) {
            res[k++] = '.';
            for (int i = 1; i < nd; i++) res[k++] = digits[i];
        }
        k += snprintf(res + k, sizeof res - (size_t)k, "e%c%02d", e10 < 0 ? '-' : '+',
                      e10 < 0 ? -e10 : e10);
    } else if (decpt <= 0) {
        res[k++] = '0';
        res[k++] = '.';
        for (int i = 0; i < -decpt; i++) res[k++] = '0';
        for (int i = 0; i < nd; i++) res[k++] = digits[i];
    } else if (decpt >= nd) {
        for (int i = 0; i < nd; i++) res[k++] = digits[i];
        for (int i = nd; i < decpt; i++) res[k++] = '0';
        res[k++] = '.';
        res[k++] = '0';
    } else {
        for (int i = 0; i < decpt; i++) res[k++] = digits[i];
        res[k++] = '.';
        for (int i = decpt; i < nd; i++) res[k++] = digits[i];
    }
    res[k] = 0;
    snprintf(out, cap, "%s", res);
}

static bool py_printable(int32_t cp) {
    if (cp == ' ') return true;
    if (cp < 0x20 || cp == 0x7f) return false;
    if (cp < 0x7f) return true;
    if (cp > 0x10ffff) return false;
    switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_CC:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO:
    case UTF8PROC_CATEGORY_CN:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
    case UTF8PROC_CATEGORY_ZS: return false;
    default: return true;
    }
}

static void str_repr(jx_ctx *c, jbuf *b, const jstr *s) {
    bool sq = memchr(s->s, '\'', s->len) != NULL, dq = memchr(s->s, '"', s->len) != NULL;
    char q = (sq && !dq) ? '"' : '\'';
    jb_putc(c, b, q);
    size_t i = 0;
    while (i < s->len) {
        size_t st = i;
        int32_t cp = ju_decode(s->s, s->len, &i);
        if (cp == q || cp == '\\') {
            jb_putc(c, b, '\\');
            jb_putc(c, b, (char)cp);
        } else if (cp == '\n') jb_puts(c, b, "\\n");
        else if (cp == '\r') jb_puts(c, b, "\\r");
        else if (cp == '\t') jb_puts(c, b, "\\t");
        else if (py_printable(cp)) jb_put(c, b, s->s + st, i - st);
        else if (cp < 0x100) jb_printf(c, b, "\\x%02x", (unsigned)cp);
        else if (cp < 0x10000) jb_printf(c, b, "\\u%04x", (unsigned)cp);
        else jb_printf(c, b, "\\U%08x", (unsigned)cp);
    }
    jb_putc(c, b, q);
}

static void dict_repr(jx_ctx *c, jbuf *b, const jdict *d) {
    jb_putc(c, b, '{');
    for (size_t i = 0; i < d->n; i++) {
        if (i) jb_puts(c, b, ", ");
        jv_repr_to(c, b, d->k[i]);
        jb_puts(c, b, ": ");
        jv_repr_to(c, b, d->v[i]);
    }
    jb_putc(c, b, '}');
}

void jv_repr_to(jx_ctx *c, jbuf *b, jv v) {
    if (++c->depth > c->max_depth) jx_fail(c, 0, 0, "value nested too deeply");
    switch (v.t) {
    case JV_UNDEF: jb_puts(c, b, "Undefined"); break;
    case JV_STR: str_repr(c, b, v.u.s); break;
    case JV_LIST: {
        const jlist *l = v.u.l;
        jb_putc(c, b, l->tuple ? '(' : '[');
        for (size_t i = 0; i < l->n; i++) {
            if (i) jb_puts(c, b, ", ");
            jv_repr_to(c, b, l->v[i]);
        }
        if (l->tuple && l->n == 1) jb_putc(c, b, ',');
        jb_putc(c, b, l->tuple ? ')' : ']');
        break;
    }
    case JV_DICT: dict_repr(c, b, v.u.d); break;
    default: jv_str_to(c, b, v); break;
    }
    c->depth--;
}

void jv_str_to(jx_ctx *c, jbuf *b, jv v) {
    char tmp[64];
    switch (v.t) {
    case JV_UNDEF: break;
    case JV_NONE: jb_puts(c, b, "None"); break;
    case JV_BOOL: jb_puts(c, b, v.u.b ? "True" : "False"); break;
    case JV_INT: jb_printf(c, b, "%lld", (long long)v.u.i); break;
    case JV_FLOAT:
        jx_float_repr(v.u.f, tmp, sizeof tmp);
        jb_puts(c, b, tmp);
        break;
    case JV_STR: jb_put(c, b, v.u.s->s, v.u.s->len); break;
    case JV_LIST:
    case JV_DICT: jv_repr_to(c, b, v); break;
    case JV_NS:
        jb_puts(c, b, "<Namespace ");
        dict_repr(c, b, v.u.d);
        jb_putc(c, b, '>');
        break;
    case JV_FUNC:
        if (v.u.fn->kind == JF_MACRO)
            jb_printf(c, b, "<Macro '%s'>", v.u.fn->name ? v.u.fn->name : "caller");
        else
            jb_printf(c, b, "<built-in function %s>", v.u.fn->name);
        break;
    case JV_LOOP:
        jb_printf(c, b, "<LoopContext %zu/%zu>", v.u.lp->i + 1, v.u.lp->items->n);
        break;
    default: break;
    }
}

jstr *jv_tostr(jx_ctx *c, jv v) {
    if (v.t == JV_STR) return v.u.s;
    jbuf b = {0};
    jv_str_to(c, &b, v);
    return jb_str(c, &b);
}

/* ---- iteration and len() ----------------------------------------------------------- */

jlist *jv_iter(jx_ctx *c, const jnode *at, jv v) {
    switch (v.t) {
    case JV_UNDEF: return jl_new(c, 0);
    case JV_LIST: return v.u.l;
    case JV_DICT: {
        jlist *l = jl_new(c, v.u.d->n);
        for (size_t i = 0; i < v.u.d->n; i++) jl_push(c, l, v.u.d->k[i]);
        return l;
    }
    case JV_STR: {
        jlist *l = jl_new(c, v.u.s->len);
        size_t i = 0;
        while (i < v.u.s->len) {
            size_t st = i;
            ju_decode(v.u.s->s, v.u.s->len, &i);
            jl_push(c, l, jv_str(c, v.u.s->s + st, i - st));
        }
        return l;
    }
    default: jx_failn(c, at, "'%s' object is not iterable", jv_typename(v));
    }
}

int64_t jv_len(jx_ctx *c, const jnode *at, jv v) {
    switch (v.t) {
    case JV_UNDEF: return 0;
    case JV_STR: return (int64_t)ju_len(v.u.s->s, v.u.s->len);
    case JV_LIST: return (int64_t)v.u.l->n;
    case JV_DICT: return (int64_t)v.u.d->n;
    case JV_LOOP: return (int64_t)v.u.lp->items->n;
    default: jx_failn(c, at, "object of type '%s' has no len()", jv_typename(v));
    }
}
