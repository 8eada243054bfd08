/* jinja_tests.c - Jinja's built-in tests (`x is defined`, `x is string`, ...),
 * with Python's type rules: bool is a number, `integer` excludes bool,
 * strings/lists/dicts (and Undefined) are sequences and iterables. */
#include "chat/jinja.h"

#include <math.h>
#include <string.h>

static const char *const TESTS[] = {
    "defined", "undefined", "none", "boolean", "false", "true", "integer", "float", "number",
    "string", "mapping", "sequence", "iterable", "callable", "sameas", "escaped", "equalto", "eq",
    "==", "ne", "!=", "lt", "<", "lessthan", "le", "<=", "gt", ">", "greaterthan", "ge", ">=",
    "in", "odd", "even", "divisibleby", "lower", "upper", "filter", "test", NULL};

bool jx_has_test(const char *name) {
    for (int i = 0; TESTS[i]; i++)
        if (!strcmp(TESTS[i], name)) return true;
    return false;
}

static int64_t int_of(jx_ctx *c, const jnode *at, jv v, const char *test) {
    if (v.t == JV_INT) return v.u.i;
    if (v.t == JV_BOOL) return v.u.b;
    if (v.t == JV_FLOAT && v.u.f == floor(v.u.f) && fabs(v.u.f) < 9e18) return (int64_t)v.u.f;
    if (v.t == JV_UNDEF) jv_undef_fail(c, at, v);
    jx_failn(c, at, "test '%s' needs an integer, got %s", test, jv_typename(v));
}

static bool same_case(jx_ctx *c, jv v, int mode) {
    jstr *s = jv_tostr(c, v);
    jstr *t = jx_str_case(c, s, mode);
    bool any = false;
    for (size_t i = 0; i < s->len; i++) {
        char ch = s->s[i];
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (unsigned char)ch >= 0x80) any = true;
    }
    return any && t->len == s->len && !memcmp(t->s, s->s, s->len) && jx_str_case(c, s, 1 - mode)->len == s->len &&
           memcmp(jx_str_case(c, s, 1 - mode)->s, s->s, s->len) != 0;
}

bool jx_test(jx_ctx *c, const jnode *at, const char *name, jv v, jargs *a) {
    jv o = ja_get(a, 0, NULL);
    if (!strcmp(name, "defined")) return v.t != JV_UNDEF;
    if (!strcmp(name, "undefined")) return v.t == JV_UNDEF;
    if (!strcmp(name, "none")) return v.t == JV_NONE;
    if (!strcmp(name, "boolean")) return v.t == JV_BOOL;
    if (!strcmp(name, "false")) return v.t == JV_BOOL && !v.u.b;
    if (!strcmp(name, "true")) return v.t == JV_BOOL && v.u.b;
    if (!strcmp(name, "integer")) return v.t == JV_INT;
    if (!strcmp(name, "float")) return v.t == JV_FLOAT;
    if (!strcmp(name, "number")) return v.t == JV_INT || v.t == JV_FLOAT || v.t == JV_BOOL;
    if (!strcmp(name, "string")) return v.t == JV_STR;
    if (!strcmp(name, "mapping")) return v.t == JV_DICT;
    if (!strcmp(name, "sequence")) return v.t == JV_STR || v.t == JV_LIST || v.t == JV_DICT || v.t == JV_UNDEF;
    if (!strcmp(name, "iterable"))
        return v.t == JV_STR || v.t == JV_LIST || v.t == JV_DICT || v.t == JV_UNDEF || v.t == JV_LOOP;
    if (!strcmp(name, "callable")) return v.t == JV_FUNC;
    if (!strcmp(name, "escaped")) return false;
    if (!strcmp(name, "sameas")) {
        if (v.t != o.t) return false;
        switch (v.t) {
        case JV_NONE:
        case JV_UNDEF: return true;
        case JV_BOOL: return v.u.b == o.u.b;
        case JV_INT: return v.u.i == o.u.i && v.u.i >= -5 && v.u.i <= 256; /* CPython small ints */
        case JV_STR: return v.u.s == o.u.s;
        case JV_LIST: return v.u.l == o.u.l;
        case JV_DICT:
        case JV_NS: return v.u.d == o.u.d;
        case JV_FUNC: return v.u.fn == o.u.fn;
        default: return false;
        }
    }
    if (!strcmp(name, "equalto") || !strcmp(name, "eq") || !strcmp(name, "==")) return jv_equal(v, o);
    if (!strcmp(name, "ne") || !strcmp(name, "!=")) return !jv_equal(v, o);
    if (!strcmp(name, "lt") || !strcmp(name, "<") || !strcmp(name, "lessthan")) return jv_compare(c, at, v, o) < 0;
    if (!strcmp(name, "le") || !strcmp(name, "<=")) return jv_compare(c, at, v, o) <= 0;
    if (!strcmp(name, "gt") || !strcmp(name, ">") || !strcmp(name, "greaterthan")) return jv_compare(c, at, v, o) > 0;
    if (!strcmp(name, "ge") || !strcmp(name, ">=")) return jv_compare(c, at, v, o) >= 0;
    if (!strcmp(name, "in")) {
        if (o.t == JV_STR) {
            if (v.t != JV_STR) jx_failn(c, at, "'in <string>' requires string as left operand, not %s", jv_typename(v));
            return jx_memmem(o.u.s->s, o.u.s->len, v.u.s->s, v.u.s->len) != NULL;
        }
        if (o.t == JV_DICT) return jd_get(o.u.d, v) != NULL;
        jlist *l = jv_iter(c, at, o);
        for (size_t i = 0; i < l->n; i++)
            if (jv_equal(l->v[i], v)) return true;
        return false;
    }
    if (!strcmp(name, "odd")) return (int_of(c, at, v, name) % 2 + 2) % 2 == 1;
    if (!strcmp(name, "even")) return int_of(c, at, v, name) % 2 == 0;
    if (!strcmp(name, "divisibleby")) {
        int64_t d = int_of(c, at, o, name);
        if (d == 0) jx_failn(c, at, "integer division or modulo by zero");
        return int_of(c, at, v, name) % d == 0;
    }
    if (!strcmp(name, "lower")) return same_case(c, v, 0);
    if (!strcmp(name, "upper")) return same_case(c, v, 1);
    if (!strcmp(name, "filter")) return v.t == JV_STR && jx_has_filter(v.u.s->s);
    if (!strcmp(name, "test")) return v.t == JV_STR && jx_has_test(v.u.s->s);
    jx_failn(c, at, "no test named '%s'", name);
}
