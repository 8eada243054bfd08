/*
 * pyvalue.c - the typed value tree of pyvalue.h and Python-exact JSON
 * output (json.dump with ensure_ascii=True; floats as repr; non-finite
 * floats tagged {"__float__": "NaN"} as mlx-lm's _encode_tagged_floats does
 * before dumping).
 */
#include "train/pyvalue.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static lmx_pyval *new_val(lmx_py_type t) {
    lmx_pyval *v = calloc(1, sizeof *v);
    if (v) v->type = t;
    return v;
}

lmx_pyval *lmx_py_none(void) { return new_val(LMX_PY_NONE); }
lmx_pyval *lmx_py_list(void) { return new_val(LMX_PY_LIST); }
lmx_pyval *lmx_py_dict(void) { return new_val(LMX_PY_DICT); }

lmx_pyval *lmx_py_bool(bool b) {
    lmx_pyval *v = new_val(LMX_PY_BOOL);
    if (v) v->b = b;
    return v;
}

lmx_pyval *lmx_py_int(int64_t i) {
    lmx_pyval *v = new_val(LMX_PY_INT);
    if (v) v->i = i;
    return v;
}

lmx_pyval *lmx_py_float(double f) {
    lmx_pyval *v = new_val(LMX_PY_FLOAT);
    if (v) v->f = f;
    return v;
}

lmx_pyval *lmx_py_str(const char *s) {
    lmx_pyval *v = new_val(LMX_PY_STR);
    if (v && !(v->s = strdup(s ? s : ""))) {
        free(v);
        return NULL;
    }
    return v;
}

void lmx_py_free(lmx_pyval *v) {
    if (!v) return;
    for (int k = 0; k < v->n; k++) {
        lmx_py_free(v->items[k]);
        if (v->keys) free(v->keys[k]);
    }
    free(v->items);
    free(v->keys);
    free(v->s);
    free(v);
}

static bool grow(lmx_pyval *c) {
    if (c->n < c->cap) return true;
    int nc = c->cap ? c->cap * 2 : 8;
    lmx_pyval **items = realloc(c->items, (size_t)nc * sizeof *items);
    if (!items) return false;
    c->items = items;
    if (c->type == LMX_PY_DICT) {
        char **keys = realloc(c->keys, (size_t)nc * sizeof *keys);
        if (!keys) return false;
        c->keys = keys;
    }
    c->cap = nc;
    return true;
}

bool lmx_py_list_append(lmx_pyval *l, lmx_pyval *item) {
    if (!l || !item || l->type != LMX_PY_LIST || !grow(l)) {
        lmx_py_free(item);
        return false;
    }
    l->items[l->n++] = item;
    return true;
}

static int find_key(const lmx_pyval *d, const char *key) {
    if (!d || d->type != LMX_PY_DICT) return -1;
    for (int k = 0; k < d->n; k++)
        if (strcmp(d->keys[k], key) == 0) return k;
    return -1;
}

bool lmx_py_dict_set(lmx_pyval *d, const char *key, lmx_pyval *v) {
    if (!d || !v || d->type != LMX_PY_DICT) {
        lmx_py_free(v);
        return false;
    }
    int k = find_key(d, key);
    if (k >= 0) {
        lmx_py_free(d->items[k]);
        d->items[k] = v;
        return true;
    }
    char *kc = strdup(key);
    if (!kc || !grow(d)) {
        free(kc);
        lmx_py_free(v);
        return false;
    }
    d->keys[d->n] = kc;
    d->items[d->n++] = v;
    return true;
}

lmx_pyval *lmx_py_dict_get(const lmx_pyval *d, const char *key) {
    int k = find_key(d, key);
    return k >= 0 ? d->items[k] : NULL;
}

bool lmx_py_dict_del(lmx_pyval *d, const char *key) {
    int k = find_key(d, key);
    if (k < 0) return false;
    lmx_py_free(d->items[k]);
    free(d->keys[k]);
    memmove(d->items + k, d->items + k + 1, (size_t)(d->n - k - 1) * sizeof *d->items);
    memmove(d->keys + k, d->keys + k + 1, (size_t)(d->n - k - 1) * sizeof *d->keys);
    d->n--;
    return true;
}

bool lmx_py_is_none(const lmx_pyval *v) { return !v || v->type == LMX_PY_NONE; }

lmx_pyval *lmx_py_copy(const lmx_pyval *v) {
    if (!v) return NULL;
    lmx_pyval *c;
    switch (v->type) {
    case LMX_PY_STR: return lmx_py_str(v->s);
    case LMX_PY_LIST:
    case LMX_PY_DICT:
        c = new_val(v->type);
        for (int k = 0; c && k < v->n; k++) {
            lmx_pyval *item = lmx_py_copy(v->items[k]);
            bool ok = v->type == LMX_PY_LIST ? lmx_py_list_append(c, item) : lmx_py_dict_set(c, v->keys[k], item);
            if (!ok) {
                lmx_py_free(c);
                return NULL;
            }
        }
        return c;
    default:
        c = new_val(v->type);
        if (c) *c = (lmx_pyval){.type = v->type, .b = v->b, .i = v->i, .f = v->f};
        return c;
    }
}

const char *lmx_py_type_name(lmx_py_type t) {
    static const char *const names[] = {"NoneType", "bool", "int", "float", "str", "list", "dict"};
    return (unsigned)t < sizeof names / sizeof *names ? names[t] : "?";
}

void lmx_py_float_repr(double f, char *buf, size_t cap) {
    if (isnan(f)) {
        snprintf(buf, cap, "nan");
        return;
    }
    if (isinf(f)) {
        snprintf(buf, cap, f < 0 ? "-inf" : "inf");
        return;
    }
    if (f == 0) {
        snprintf(buf, cap, signbit(f) ? "-0.0" : "0.0");
        return;
    }
    /* shortest %.*e that reads back as f: the digits Python's repr uses */
    char e[40];
    for (int p = 0; p < 17; p++) {
        snprintf(e, sizeof e, "%.*e", p, f);
        if (strtod(e, NULL) == f) break;
    }
    const char *s = e;
    bool neg = *s == '-';
    if (neg) s++;
    char digits[24];
    int nd = 0;
    for (; *s && *s != 'e'; s++)
        if (*s != '.') digits[nd++] = *s;
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = 0;
    int exp10 = atoi(s + 1), decpt = exp10 + 1; /* value = 0.DIGITS x 10^decpt */
    char out[64];
    int o = 0;
    if (neg) out[o++] = '-';
    if (decpt > -4 && decpt <= 16) { /* float_repr_style 'short': fixed notation */
        if (decpt <= 0) {
            o += snprintf(out + o, sizeof out - (size_t)o, "0.");
            for (int z = 0; z < -decpt; z++) out[o++] = '0';
            o += snprintf(out + o, sizeof out - (size_t)o, "%s", digits);
        } else {
            for (int k = 0; k < decpt; k++) out[o++] = k < nd ? digits[k] : '0';
            out[o++] = '.';
            if (decpt < nd)
                o += snprintf(out + o, sizeof out - (size_t)o, "%s", digits + decpt);
            else
                out[o++] = '0';
        }
        out[o] = 0;
    } else {
        out[o++] = digits[0];
        if (nd > 1) {
            out[o++] = '.';
            memcpy(out + o, digits + 1, (size_t)nd - 1);
            o += nd - 1;
        }
        snprintf(out + o, sizeof out - (size_t)o, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
    }
    snprintf(buf, cap, "%s", out);
}

/* ---- json.dumps ----------------------------------------------------------- */

typedef struct {
    char *p;
    size_t n, cap;
    bool oom;
} sbuf;

static void put(sbuf *b, const char *s, size_t len) {
    if (b->oom) return;
    if (b->n + len + 1 > b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 256;
        while (nc < b->n + len + 1) nc *= 2;
        char *p = realloc(b->p, nc);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = 0;
}

static void puts_(sbuf *b, const char *s) { put(b, s, strlen(s)); }

static void put_u16(sbuf *b, unsigned u) {
    char t[8];
    snprintf(t, sizeof t, "\\u%04x", u);
    put(b, t, 6);
}

/* Decodes one UTF-8 sequence; -1 for an invalid byte (consumes 1). */
static long utf8_next(const unsigned char **ps) {
    const unsigned char *s = *ps;
    unsigned c = s[0];
    int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0) {
        (*ps)++;
        return -1;
    }
    long cp = len == 1 ? c : len == 2 ? (c & 0x1f) : len == 3 ? (c & 0x0f) : (c & 0x07);
    for (int k = 1; k < len; k++) {
        if ((s[k] & 0xc0) != 0x80) {
            (*ps)++;
            return -1;
        }
        cp = (cp << 6) | (s[k] & 0x3f);
    }
    static const long min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
        (*ps)++;
        return -1;
    }
    *ps += len;
    return cp;
}

/* json's py_encode_basestring_ascii; an invalid byte is what Python's
 * surrogateescape makes of it: \udcXX. */
static void put_string(sbuf *b, const char *str) {
    puts_(b, "\"");
    const unsigned char *s = (const unsigned char *)str;
    while (*s) {
        unsigned char c = *s;
        const char *esc = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t"
                        : c == '\b' ? "\\b" : c == '\f' ? "\\f" : NULL;
        if (esc) {
            puts_(b, esc);
            s++;
        } else if (c >= 0x20 && c < 0x7f) {
            put(b, (const char *)s, 1);
            s++;
        } else if (c < 0x80) {
            put_u16(b, c);
            s++;
        } else {
            const unsigned char *at = s;
            long cp = utf8_next(&s);
            if (cp < 0) {
                put_u16(b, 0xdc00u + *at);
            } else if (cp >= 0x10000) {
                cp -= 0x10000;
                put_u16(b, 0xd800u + (unsigned)(cp >> 10));
                put_u16(b, 0xdc00u + (unsigned)(cp & 0x3ff));
            } else {
                put_u16(b, (unsigned)cp);
            }
        }
    }
    puts_(b, "\"");
}

static void newline(sbuf *b, int indent, int level) {
    if (indent < 0) return;
    puts_(b, "\n");
    for (int k = 0; k < indent * level; k++) puts_(b, " ");
}

static int cmp_key(const void *a, const void *b) { return strcmp(**(char *const *const *)a, **(char *const *const *)b); }

static void dump(sbuf *b, const lmx_pyval *v, int indent, int level, bool sort) {
    char t[64];
    switch (v->type) {
    case LMX_PY_NONE: puts_(b, "null"); return;
    case LMX_PY_BOOL: puts_(b, v->b ? "true" : "false"); return;
    case LMX_PY_INT:
        snprintf(t, sizeof t, "%lld", (long long)v->i);
        puts_(b, t);
        return;
    case LMX_PY_FLOAT:
        if (!isfinite(v->f)) { /* _encode_tagged_floats */
            puts_(b, "{");
            newline(b, indent, level + 1);
            puts_(b, "\"__float__\": ");
            puts_(b, isnan(v->f) ? "\"NaN\"" : v->f > 0 ? "\"Infinity\"" : "\"-Infinity\"");
            newline(b, indent, level);
            puts_(b, "}");
            return;
        }
        lmx_py_float_repr(v->f, t, sizeof t);
        puts_(b, t);
        return;
    case LMX_PY_STR: put_string(b, v->s); return;
    case LMX_PY_LIST:
    case LMX_PY_DICT: {
        bool dict = v->type == LMX_PY_DICT;
        if (v->n == 0) {
            puts_(b, dict ? "{}" : "[]");
            return;
        }
        int *order = malloc((size_t)v->n * sizeof *order);
        if (!order) {
            b->oom = true;
            return;
        }
        for (int k = 0; k < v->n; k++) order[k] = k;
        if (dict && sort) { /* sorted(config.items()): by key, code point order = UTF-8 byte order */
            char ***ptrs = malloc((size_t)v->n * sizeof *ptrs);
            if (ptrs) {
                for (int k = 0; k < v->n; k++) ptrs[k] = &v->keys[k];
                qsort(ptrs, (size_t)v->n, sizeof *ptrs, cmp_key);
                for (int k = 0; k < v->n; k++) order[k] = (int)(ptrs[k] - v->keys);
                free(ptrs);
            } else {
                b->oom = true;
            }
        }
        puts_(b, dict ? "{" : "[");
        for (int k = 0; k < v->n; k++) {
            if (k) puts_(b, indent < 0 ? ", " : ",");
            newline(b, indent, level + 1);
            if (dict) {
                put_string(b, v->keys[order[k]]);
                puts_(b, ": ");
            }
            dump(b, v->items[order[k]], indent, level + 1, false);
        }
        newline(b, indent, level);
        puts_(b, dict ? "}" : "]");
        free(order);
        return;
    }
    }
}

char *lmx_py_json_dumps(const lmx_pyval *v, int indent, bool sort_top) {
    sbuf b = {0};
    dump(&b, v, indent, 0, sort_top);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p ? b.p : strdup("");
}
