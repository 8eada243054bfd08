/*
 * jinja_methods.c - Python methods templates call on values: str (strip,
 * split, startswith, replace, format, ...), dict (items, keys, values, get)
 * and list (index, count). Mutating methods (list.append, dict.update, ...)
 * are refused exactly as transformers' ImmutableSandboxedEnvironment does:
 * the attribute is an Undefined that fails when called.
 */
#include "chat/jinja.h"

#include <string.h>
#include <utf8proc.h>

/* ---- argument helpers ------------------------------------------------------------------ */

jv ja_get(jargs *a, int i, const char *kw) {
    if (i >= 0 && i < a->npos) return a->pos[i];
    if (kw)
        for (int k = 0; k < a->nkw; k++)
            if (!strcmp(a->kwn[k]->s, kw)) return a->kw[k];
    return jv_undef(NULL);
}

void ja_check(jx_ctx *c, const jnode *at, const char *fn, jargs *a, int max_pos, const char *const *kws) {
    if (a->npos > max_pos) jx_failn(c, at, "%s() takes at most %d positional argument%s (%d given)", fn, max_pos, max_pos == 1 ? "" : "s", a->npos);
    for (int k = 0; k < a->nkw; k++) {
        bool ok = false;
        for (int i = 0; kws && kws[i]; i++)
            if (!strcmp(kws[i], a->kwn[k]->s)) ok = true;
        if (!ok) jx_failn(c, at, "%s() got an unexpected keyword argument '%s'", fn, a->kwn[k]->s);
    }
}

static jstr *need_str(jx_ctx *c, const jnode *at, jv v, const char *what) {
    if (v.t == JV_STR) return v.u.s;
    if (v.t == JV_UNDEF && v.u.s) jv_undef_fail(c, at, v);
    jx_failn(c, at, "%s must be str, not %s", what, jv_typename(v));
}

static int64_t need_int(jx_ctx *c, const jnode *at, jv v, int64_t dflt, const char *what) {
    if (v.t == JV_UNDEF || v.t == JV_NONE) return dflt;
    if (v.t == JV_INT) return v.u.i;
    if (v.t == JV_BOOL) return v.u.b;
    jx_failn(c, at, "%s must be an integer, not %s", what, jv_typename(v));
}

/* ---- string helpers -------------------------------------------------------------------- */

static bool in_set(const jstr *set, int32_t cp) {
    size_t i = 0;
    while (i < set->len)
        if (ju_decode(set->s, set->len, &i) == cp) return true;
    return false;
}

jv jx_str_strip(jx_ctx *c, jstr *s, jv chars, bool left, bool right) {
    const jstr *set = chars.t == JV_STR ? chars.u.s : NULL;
    size_t a = 0, b = s->len, i = 0;
    if (left) {
        while (i < s->len) {
            size_t st = i;
            int32_t cp = ju_decode(s->s, s->len, &i);
            if (set ? !in_set(set, cp) : !ju_isspace(cp)) {
                i = st;
                break;
            }
        }
        a = i;
    }
    if (right) {
        size_t end = a;
        i = a;
        while (i < s->len) {
            int32_t cp = ju_decode(s->s, s->len, &i);
            if (set ? !in_set(set, cp) : !ju_isspace(cp)) end = i;
        }
        b = end;
    }
    if (a == 0 && b == s->len) return jv_strv(s);
    return jv_str(c, s->s + a, b - a);
}

static bool cased(int32_t cp) {
    return utf8proc_toupper(cp) != cp || utf8proc_tolower(cp) != cp || utf8proc_totitle(cp) != cp;
}

static void put_cp(jx_ctx *c, jbuf *b, int32_t cp) {
    char u8[4];
    jb_put(c, b, u8, ju_encode(cp, u8));
}

/* mode: 0 lower, 1 upper, 2 Python str.title, 3 capitalize, 4 Jinja's title filter */
jstr *jx_str_case(jx_ctx *c, jstr *s, int mode) {
    jbuf b = {0};
    size_t i = 0;
    bool prev_cased = false, word_start = true, first = true;
    while (i < s->len) {
        int32_t cp = ju_decode(s->s, s->len, &i);
        int32_t r = cp;
        if (cp > 0x10ffff) r = cp;
        else if (mode == 0) r = utf8proc_tolower(cp);
        else if (mode == 1) r = utf8proc_toupper(cp);
        else if (mode == 2) {
            r = prev_cased ? utf8proc_tolower(cp) : utf8proc_totitle(cp);
            prev_cased = cased(cp);
        } else if (mode == 3) {
            r = first ? utf8proc_totitle(cp) : utf8proc_tolower(cp);
        } else {
            bool sep = cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<' || ju_isspace(cp);
            r = word_start ? utf8proc_toupper(cp) : utf8proc_tolower(cp);
            word_start = sep;
        }
        first = false;
        put_cp(c, &b, r);
    }
    return jb_str(c, &b);
}

jv jx_str_replace(jx_ctx *c, jstr *s, jstr *old, jstr *new_, int64_t count) {
    jbuf b = {0};
    if (old->len == 0) { /* Python inserts new between every character */
        size_t i = 0;
        int64_t k = 0;
        if (count < 0 || k < count) {
            jb_put(c, &b, new_->s, new_->len);
            k++;
        }
        while (i < s->len) {
            size_t st = i;
            ju_decode(s->s, s->len, &i);
            jb_put(c, &b, s->s + st, i - st);
            if (count < 0 || k < count) {
                jb_put(c, &b, new_->s, new_->len);
                k++;
            }
        }
        return jv_strv(jb_str(c, &b));
    }
    size_t i = 0;
    int64_t k = 0;
    while (i <= s->len) {
        const char *p = (count < 0 || k < count) ? jx_memmem(s->s + i, s->len - i, old->s, old->len) : NULL;
        if (!p) {
            jb_put(c, &b, s->s + i, s->len - i);
            break;
        }
        jb_put(c, &b, s->s + i, (size_t)(p - (s->s + i)));
        jb_put(c, &b, new_->s, new_->len);
        i = (size_t)(p - s->s) + old->len;
        k++;
    }
    return jv_strv(jb_str(c, &b));
}

static jv str_split(jx_ctx *c, const jnode *at, jstr *s, jv sepv, int64_t maxsplit, bool right) {
    jlist *l = jl_new(c, 0);
    if (sepv.t == JV_NONE || sepv.t == JV_UNDEF) {
        /* whitespace runs; leading/trailing whitespace ignored */
        size_t n = s->len;
        size_t *st = jx_alloc(c, (n + 1) * sizeof *st), *en = jx_alloc(c, (n + 1) * sizeof *en);
        size_t nw = 0, i = 0;
        bool in = false;
        while (i < n) {
            size_t p = i;
            int32_t cp = ju_decode(s->s, n, &i);
            if (ju_isspace(cp)) {
                if (in) en[nw++] = p;
                in = false;
            } else if (!in) {
                st[nw] = p;
                in = true;
            }
        }
        if (in) en[nw++] = n;
        if (maxsplit < 0 || (size_t)maxsplit >= nw) {
            for (size_t k = 0; k < nw; k++) jl_push(c, l, jv_str(c, s->s + st[k], en[k] - st[k]));
        } else if (!right) {
            for (int64_t k = 0; k < maxsplit; k++) jl_push(c, l, jv_str(c, s->s + st[k], en[k] - st[k]));
            jl_push(c, l, jv_str(c, s->s + st[maxsplit], n - st[maxsplit]));
        } else {
            size_t first = nw - (size_t)maxsplit;
            jl_push(c, l, jv_str(c, s->s, en[first - 1]));
            for (size_t k = first; k < nw; k++) jl_push(c, l, jv_str(c, s->s + st[k], en[k] - st[k]));
        }
        return jv_listv(l);
    }
    jstr *sep = need_str(c, at, sepv, "separator");
    if (sep->len == 0) jx_failn(c, at, "empty separator");
    /* find all occurrences left to right */
    size_t cap = 8, np = 0, *pos = jx_alloc(c, cap * sizeof *pos);
    size_t i = 0;
    const char *p;
    while ((p = jx_memmem(s->s + i, s->len - i, sep->s, sep->len)) != NULL) {
        if (np == cap) {
            size_t *n2 = jx_alloc(c, cap * 2 * sizeof *n2);
            memcpy(n2, pos, np * sizeof *pos);
            pos = n2;
            cap *= 2;
        }
        pos[np++] = (size_t)(p - s->s);
        i = pos[np - 1] + sep->len;
    }
    size_t use = maxsplit < 0 || (size_t)maxsplit >= np ? np : (size_t)maxsplit;
    size_t from = right ? np - use : 0;
    size_t prev = 0;
    for (size_t k = from; k < from + use; k++) {
        jl_push(c, l, jv_str(c, s->s + prev, pos[k] - prev));
        prev = pos[k] + sep->len;
    }
    if (right && use) { /* right split: the first piece holds everything before */
        jlist *r = jl_new(c, use + 1);
        size_t firstpos = pos[from];
        jl_push(c, r, jv_str(c, s->s, firstpos));
        size_t pv = firstpos + sep->len;
        for (size_t k = from + 1; k < np; k++) {
            jl_push(c, r, jv_str(c, s->s + pv, pos[k] - pv));
            pv = pos[k] + sep->len;
        }
        jl_push(c, r, jv_str(c, s->s + pv, s->len - pv));
        return jv_listv(r);
    }
    jl_push(c, l, jv_str(c, s->s + prev, s->len - prev));
    return jv_listv(l);
}

static bool affix(jx_ctx *c, const jnode *at, jstr *s, jv x, bool end) {
    if (x.t == JV_LIST && x.u.l->tuple) {
        for (size_t i = 0; i < x.u.l->n; i++)
            if (affix(c, at, s, x.u.l->v[i], end)) return true;
        return false;
    }
    jstr *p = need_str(c, at, x, end ? "endswith first arg" : "startswith first arg");
    if (p->len > s->len) return false;
    return !memcmp(s->s + (end ? s->len - p->len : 0), p->s, p->len);
}

/* Code-point index of byte offset. */
static int64_t cp_index(const jstr *s, size_t byte) { return (int64_t)ju_len(s->s, byte); }

static jv str_find(jx_ctx *c, const jnode *at, jstr *s, jargs *a, int kind) {
    /* kind: 0 find, 1 rfind, 2 index, 3 rindex, 4 count */
    jstr *sub = need_str(c, at, ja_get(a, 0, NULL), "substring");
    if (kind == 4) {
        if (sub->len == 0) return jv_int((int64_t)ju_len(s->s, s->len) + 1);
        int64_t k = 0;
        size_t i = 0;
        const char *p;
        while ((p = jx_memmem(s->s + i, s->len - i, sub->s, sub->len)) != NULL) {
            k++;
            i = (size_t)(p - s->s) + sub->len;
        }
        return jv_int(k);
    }
    const char *best = NULL;
    if (kind == 1 || kind == 3) {
        for (size_t i = s->len + 1; i-- > 0;)
            if (i + sub->len <= s->len && !memcmp(s->s + i, sub->s, sub->len)) {
                best = s->s + i;
                break;
            }
    } else {
        best = jx_memmem(s->s, s->len, sub->s, sub->len);
    }
    if (!best) {
        if (kind >= 2) jx_failn(c, at, "substring not found");
        return jv_int(-1);
    }
    return jv_int(cp_index(s, (size_t)(best - s->s)));
}

/* ---- method table ------------------------------------------------------------------------ */

static jv m_str(jx_ctx *c, const jnode *at, jv self, jargs *a);
static jv m_dict(jx_ctx *c, const jnode *at, jv self, jargs *a);
static jv m_list(jx_ctx *c, const jnode *at, jv self, jargs *a);

/* The bound method carries the receiver in a 2-list [receiver, name]. */
static jv bind(jx_ctx *c, const char *name, jbuiltin_fn fn, jv self) {
    jlist *pair = jl_new(c, 2);
    jl_push(c, pair, self);
    jl_push(c, pair, jv_cstr(c, name));
    return jv_func(c, name, fn, jv_listv(pair));
}

static const char *const STR_METHODS[] = {
    "strip", "lstrip", "rstrip", "split", "rsplit", "startswith", "endswith", "upper", "lower",
    "title", "capitalize", "replace", "find", "rfind", "index", "rindex", "count", "format", "join",
    "isdigit", "isalpha", "isalnum", "isspace", "islower", "isupper", "removeprefix",
    "removesuffix", "splitlines", "swapcase", NULL};
static const char *const DICT_METHODS[] = {"items", "keys", "values", "get", "copy", NULL};
static const char *const DICT_UNSAFE[] = {"pop", "popitem", "setdefault", "update", "clear", NULL};
static const char *const LIST_METHODS[] = {"index", "count", "copy", NULL};
static const char *const LIST_UNSAFE[] = {"append", "extend", "insert", "pop", "remove", "reverse", "sort", "clear", NULL};

static const char *find_name(const char *const *tab, const char *name) {
    for (int i = 0; tab[i]; i++)
        if (!strcmp(tab[i], name)) return tab[i];
    return NULL;
}

jv jx_method(jx_ctx *c, const jnode *at, jv obj, jstr *name) {
    const char *m;
    (void)at;
    const char *const *unsafe = obj.t == JV_DICT ? DICT_UNSAFE : obj.t == JV_LIST && !obj.u.l->tuple ? LIST_UNSAFE : NULL;
    if (unsafe && find_name(unsafe, name->s)) {
        jbuf b = {0};
        jb_printf(c, &b, "access to attribute '%s' of '%s' object is unsafe.", name->s, jv_typename(obj));
        return jv_undef(jb_str(c, &b));
    }
    if (obj.t == JV_STR && (m = find_name(STR_METHODS, name->s))) return bind(c, m, m_str, obj);
    if (obj.t == JV_DICT && (m = find_name(DICT_METHODS, name->s))) return bind(c, m, m_dict, obj);
    if (obj.t == JV_LIST && (m = find_name(LIST_METHODS, name->s))) return bind(c, m, m_list, obj);
    return jv_undef(NULL);
}

static bool all_cp(jstr *s, int kind) {
    if (!s->len) return false;
    size_t i = 0;
    bool any_cased = false;
    while (i < s->len) {
        int32_t cp = ju_decode(s->s, s->len, &i);
        utf8proc_category_t cat = cp <= 0x10ffff ? utf8proc_category(cp) : UTF8PROC_CATEGORY_CN;
        bool letter = cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO;
        bool digit = cat == UTF8PROC_CATEGORY_ND;
        switch (kind) {
        case 0: if (!digit) return false; break;
        case 1: if (!letter) return false; break;
        case 2: if (!letter && !digit && cat != UTF8PROC_CATEGORY_NL && cat != UTF8PROC_CATEGORY_NO) return false; break;
        case 3: if (!ju_isspace(cp)) return false; break;
        case 4:
            if (cat == UTF8PROC_CATEGORY_LU || cat == UTF8PROC_CATEGORY_LT) return false;
            if (cat == UTF8PROC_CATEGORY_LL) any_cased = true;
            break;
        case 5:
            if (cat == UTF8PROC_CATEGORY_LL || cat == UTF8PROC_CATEGORY_LT) return false;
            if (cat == UTF8PROC_CATEGORY_LU) any_cased = true;
            break;
        }
    }
    return kind >= 4 ? any_cased : true;
}

static jv m_str(jx_ctx *c, const jnode *at, jv self, jargs *a) {
    jstr *s = self.u.l->v[0].u.s;
    const char *name = self.u.l->v[1].u.s->s;
    if (!strcmp(name, "strip") || !strcmp(name, "lstrip") || !strcmp(name, "rstrip")) {
        jv ch = ja_get(a, 0, "chars");
        if (ch.t != JV_UNDEF && ch.t != JV_NONE) need_str(c, at, ch, "strip arg");
        return jx_str_strip(c, s, ch, name[0] != 'r', name[0] != 'l');
    }
    if (!strcmp(name, "split") || !strcmp(name, "rsplit"))
        return str_split(c, at, s, ja_get(a, 0, "sep"), need_int(c, at, ja_get(a, 1, "maxsplit"), -1, "maxsplit"), name[0] == 'r');
    if (!strcmp(name, "startswith") || !strcmp(name, "endswith")) {
        jv x = ja_get(a, 0, NULL);
        return jv_bool(affix(c, at, s, x, name[0] == 'e'));
    }
    if (!strcmp(name, "upper")) return jv_strv(jx_str_case(c, s, 1));
    if (!strcmp(name, "lower")) return jv_strv(jx_str_case(c, s, 0));
    if (!strcmp(name, "title")) return jv_strv(jx_str_case(c, s, 2));
    if (!strcmp(name, "capitalize")) return jv_strv(jx_str_case(c, s, 3));
    if (!strcmp(name, "swapcase")) {
        jbuf b = {0};
        size_t i = 0;
        while (i < s->len) {
            int32_t cp = ju_decode(s->s, s->len, &i);
            int32_t u = utf8proc_toupper(cp);
            put_cp(c, &b, u != cp ? u : utf8proc_tolower(cp));
        }
        return jv_strv(jb_str(c, &b));
    }
    if (!strcmp(name, "replace"))
        return jx_str_replace(c, s, need_str(c, at, ja_get(a, 0, NULL), "replace arg 1"),
                              need_str(c, at, ja_get(a, 1, NULL), "replace arg 2"),
                              need_int(c, at, ja_get(a, 2, "count"), -1, "count"));
    if (!strcmp(name, "find")) return str_find(c, at, s, a, 0);
    if (!strcmp(name, "rfind")) return str_find(c, at, s, a, 1);
    if (!strcmp(name, "index")) return str_find(c, at, s, a, 2);
    if (!strcmp(name, "rindex")) return str_find(c, at, s, a, 3);
    if (!strcmp(name, "count")) return str_find(c, at, s, a, 4);
    if (!strcmp(name, "format")) return jx_pyformat(c, at, s, a);
    if (!strcmp(name, "join")) {
        jlist *l = jv_iter(c, at, ja_get(a, 0, NULL));
        jbuf b = {0};
        for (size_t i = 0; i < l->n; i++) {
            if (i) jb_put(c, &b, s->s, s->len);
            jstr *x = need_str(c, at, l->v[i], "sequence item");
            jb_put(c, &b, x->s, x->len);
        }
        return jv_strv(jb_str(c, &b));
    }
    if (!strcmp(name, "isdigit")) return jv_bool(all_cp(s, 0));
    if (!strcmp(name, "isalpha")) return jv_bool(all_cp(s, 1));
    if (!strcmp(name, "isalnum")) return jv_bool(all_cp(s, 2));
    if (!strcmp(name, "isspace")) return jv_bool(all_cp(s, 3));
    if (!strcmp(name, "islower")) return jv_bool(all_cp(s, 4));
    if (!strcmp(name, "isupper")) return jv_bool(all_cp(s, 5));
    if (!strcmp(name, "removeprefix") || !strcmp(name, "removesuffix")) {
        jstr *p = need_str(c, at, ja_get(a, 0, NULL), name);
        bool pre = name[6] == 'p';
        if (p->len <= s->len && !memcmp(s->s + (pre ? 0 : s->len - p->len), p->s, p->len))
            return jv_str(c, s->s + (pre ? p->len : 0), s->len - p->len);
        return jv_strv(s);
    }
    if (!strcmp(name, "splitlines")) {
        bool keep = jv_truthy(ja_get(a, 0, "keepends"));
        jlist *l = jl_new(c, 0);
        size_t i = 0, st = 0;
        while (i < s->len) {
            size_t p = i;
            int32_t cp = ju_decode(s->s, s->len, &i);
            bool nl = cp == '\n' || cp == '\r' || cp == 0x0b || cp == 0x0c || (cp >= 0x1c && cp <= 0x1e) ||
                      cp == 0x85 || cp == 0x2028 || cp == 0x2029;
            if (!nl) continue;
            if (cp == '\r' && i < s->len && s->s[i] == '\n') i++;
            jl_push(c, l, jv_str(c, s->s + st, (keep ? i : p) - st));
            st = i;
        }
        if (st < s->len) jl_push(c, l, jv_str(c, s->s + st, s->len - st));
        return jv_listv(l);
    }
    jx_failn(c, at, "str has no method '%s'", name);
}

static jv m_dict(jx_ctx *c, const jnode *at, jv self, jargs *a) {
    jdict *d = self.u.l->v[0].u.d;
    const char *name = self.u.l->v[1].u.s->s;
    if (!strcmp(name, "get")) {
        jv *v = jd_get(d, ja_get(a, 0, NULL));
        if (v) return *v;
        jv dflt = ja_get(a, 1, NULL);
        return dflt.t == JV_UNDEF ? jv_none() : dflt;
    }
    if (!strcmp(name, "copy")) {
        jdict *n = jd_new(c);
        for (size_t i = 0; i < d->n; i++) jd_set(c, n, d->k[i], d->v[i]);
        return jv_dictv(n);
    }
    jlist *l = jl_new(c, d->n);
    for (size_t i = 0; i < d->n; i++) {
        if (name[0] == 'k') jl_push(c, l, d->k[i]);
        else if (name[0] == 'v') jl_push(c, l, d->v[i]);
        else {
            jlist *t = jl_new(c, 2);
            t->tuple = true;
            jl_push(c, t, d->k[i]);
            jl_push(c, t, d->v[i]);
            jl_push(c, l, jv_listv(t));
        }
    }
    (void)at;
    return jv_listv(l);
}

static jv m_list(jx_ctx *c, const jnode *at, jv self, jargs *a) {
    jlist *l = self.u.l->v[0].u.l;
    const char *name = self.u.l->v[1].u.s->s;
    if (!strcmp(name, "copy")) {
        jlist *n = jl_new(c, l->n);
        for (size_t i = 0; i < l->n; i++) jl_push(c, n, l->v[i]);
        return jv_listv(n);
    }
    jv x = ja_get(a, 0, NULL);
    int64_t k = 0;
    for (size_t i = 0; i < l->n; i++)
        if (jv_equal(l->v[i], x)) {
            if (name[0] == 'i') return jv_int((int64_t)i);
            k++;
        }
    if (name[0] == 'i') jx_failn(c, at, "value is not in list");
    return jv_int(k);
}
