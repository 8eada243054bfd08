/*
 * train_config_yaml.c - a YAML configuration as PyYAML's SafeLoader with
 * mlx-lm's extra float resolver reads it (mlx_lm/lora.py): libyaml events
 * -> Python-typed values. Plain scalars resolve as yaml.resolver does, in
 * its order: bool (yes/no/true/false/on/off), float (YAML 1.1 forms plus
 * mlx-lm's "1e-5"-style ones), int (0b/0o-style 0-prefixed octal/0x/
 * sexagesimal/underscores), null (~, null, empty); anything else, and every
 * quoted or block scalar, is a string. Explicit !!str/!!int/!!float/!!bool/
 * !!null tags are honoured; anchors and aliases are copied.
 */
#include "train/train_config.h"

#include <ctype.h>
#include <math.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

typedef struct {
    yaml_parser_t p;
    const char *name;
    struct {
        char *name;
        lmx_pyval *v;
    } anchors[64];
    int n_anchors;
    regex_t re_bool, re_float, re_int, re_null;
} yreader;

static lmx_status yerr(yreader *r, const char *what) {
    if (r->p.error != YAML_NO_ERROR)
        return lmx_err(LMX_ERR_FORMAT, "%s:%zu:%zu: YAML %s%s%s", r->name, r->p.problem_mark.line + 1,
                       r->p.problem_mark.column + 1, r->p.problem ? r->p.problem : "error",
                       r->p.context ? " " : "", r->p.context ? r->p.context : "");
    return lmx_err(LMX_ERR_FORMAT, "%s: %s", r->name, what);
}

/* yaml.resolver.Resolver's implicit patterns; mlx-lm adds the second float
 * alternative set (an exponent without a dot, an optional exponent sign). */
static bool compile_patterns(yreader *r) {
    const char *b = "^(yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$";
    const char *f = "^([-+]?([0-9][0-9_]*)\\.[0-9_]*([eE][-+][0-9]+)?|\\.[0-9_]+([eE][-+][0-9]+)?"
                    "|[-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\\.[0-9_]*|[-+]?\\.(inf|Inf|INF)|\\.(nan|NaN|NAN)"
                    "|[-+]?([0-9][0-9_]*)\\.[0-9_]*([eE][-+]?[0-9]+)?|[-+]?([0-9][0-9_]*)([eE][-+]?[0-9]+)"
                    "|\\.[0-9_]+([eE][-+][0-9]+)?)$";
    const char *i = "^([-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+"
                    "|[-+]?[1-9][0-9_]*(:[0-5]?[0-9])+)$";
    const char *n = "^(~|null|Null|NULL|)$";
    return regcomp(&r->re_bool, b, REG_EXTENDED | REG_NOSUB) == 0 && regcomp(&r->re_float, f, REG_EXTENDED | REG_NOSUB) == 0 &&
           regcomp(&r->re_int, i, REG_EXTENDED | REG_NOSUB) == 0 && regcomp(&r->re_null, n, REG_EXTENDED | REG_NOSUB) == 0;
}

static bool matches(const regex_t *re, const char *s) { return regexec(re, s, 0, NULL, 0) == 0; }

/* value with '_' removed, as the constructors do */
static void strip_underscores(const char *s, char *out, size_t cap) {
    size_t o = 0;
    for (; *s && o + 1 < cap; s++)
        if (*s != '_') out[o++] = *s;
    out[o] = 0;
}

/* "1:20:30" base 60, as construct_yaml_int/float */
static double sexagesimal(const char *s) {
    double v = 0;
    char *end;
    for (;;) {
        v = v * 60 + strtod(s, &end);
        if (*end != ':') return v;
        s = end + 1;
    }
}

static lmx_pyval *make_int(const char *text) {
    char v[128];
    strip_underscores(text, v, sizeof v);
    const char *s = v;
    int sign = 1;
    if (*s == '-' || *s == '+') sign = *s++ == '-' ? -1 : 1;
    int64_t x;
    if (strcmp(s, "0") == 0) x = 0;
    else if (strncmp(s, "0b", 2) == 0) x = strtoll(s + 2, NULL, 2);
    else if (strncmp(s, "0x", 2) == 0) x = strtoll(s + 2, NULL, 16);
    else if (s[0] == '0') x = strtoll(s, NULL, 8);
    else if (strchr(s, ':')) x = (int64_t)sexagesimal(s);
    else x = strtoll(s, NULL, 10);
    return lmx_py_int(sign * x);
}

static lmx_pyval *make_float(const char *text) {
    char v[128];
    strip_underscores(text, v, sizeof v);
    for (char *c = v; *c; c++) *c = (char)tolower((unsigned char)*c);
    const char *s = v;
    double sign = 1;
    if (*s == '-' || *s == '+') sign = *s++ == '-' ? -1 : 1;
    if (strcmp(s, ".inf") == 0) return lmx_py_float(sign * INFINITY);
    if (strcmp(s, ".nan") == 0) return lmx_py_float(NAN);
    if (strchr(s, ':')) return lmx_py_float(sign * sexagesimal(s));
    return lmx_py_float(sign * strtod(s, NULL));
}

static lmx_pyval *make_bool(const char *s) {
    char c = (char)tolower((unsigned char)s[0]);
    return lmx_py_bool(c == 'y' || c == 't' || (c == 'o' && tolower((unsigned char)s[1]) == 'n'));
}

static lmx_status scalar(yreader *r, const yaml_event_t *e, lmx_pyval **out) {
    const char *text = (const char *)e->data.scalar.value;
    const char *tag = (const char *)e->data.scalar.tag;
    if (tag && strcmp(tag, "!") != 0) {
        const char *base = "tag:yaml.org,2002:";
        const char *t = strncmp(tag, base, strlen(base)) == 0 ? tag + strlen(base) : tag;
        if (strcmp(t, "str") == 0) *out = lmx_py_str(text);
        else if (strcmp(t, "int") == 0 && matches(&r->re_int, text)) *out = make_int(text);
        else if (strcmp(t, "float") == 0 && (matches(&r->re_float, text) || matches(&r->re_int, text))) *out = make_float(text);
        else if (strcmp(t, "bool") == 0 && matches(&r->re_bool, text)) *out = make_bool(text);
        else if (strcmp(t, "null") == 0) *out = lmx_py_none();
        else
            return lmx_err(LMX_ERR_FORMAT, "%s:%zu: unsupported YAML tag %s for '%s'", r->name, e->start_mark.line + 1, tag, text);
    } else if (!e->data.scalar.plain_implicit) { /* quoted or block without a tag ("!" keeps it implicit, as PyYAML) */
        *out = lmx_py_str(text);
    } else if (matches(&r->re_bool, text)) {
        *out = make_bool(text);
    } else if (matches(&r->re_float, text)) {
        *out = make_float(text);
    } else if (matches(&r->re_int, text)) {
        *out = make_int(text);
    } else if (matches(&r->re_null, text)) {
        *out = lmx_py_none();
    } else {
        *out = lmx_py_str(text);
    }
    return *out ? LMX_OK : lmx_err(LMX_ERR_NOMEM, "%s: out of memory", r->name);
}

static lmx_status remember(yreader *r, const yaml_char_t *anchor, const lmx_pyval *v) {
    if (!anchor) return LMX_OK;
    if (r->n_anchors == (int)(sizeof r->anchors / sizeof *r->anchors))
        return lmx_err(LMX_ERR_UNSUPPORTED, "%s: more than 64 YAML anchors", r->name);
    r->anchors[r->n_anchors].name = strdup((const char *)anchor);
    r->anchors[r->n_anchors].v = lmx_py_copy(v);
    if (!r->anchors[r->n_anchors].name || !r->anchors[r->n_anchors].v) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    r->n_anchors++;
    return LMX_OK;
}

static lmx_status node(yreader *r, yaml_event_t *e, lmx_pyval **out, int depth);

static lmx_status next_event(yreader *r, yaml_event_t *e) {
    if (!yaml_parser_parse(&r->p, e)) return yerr(r, "YAML parse error");
    return LMX_OK;
}

/* Reads the node starting with event e (consumed here). */
static lmx_status node(yreader *r, yaml_event_t *e, lmx_pyval **out, int depth) {
    *out = NULL;
    if (depth > 64) return lmx_err(LMX_ERR_FORMAT, "%s: YAML nested too deeply", r->name);
    lmx_status s = LMX_OK;
    if (e->type == YAML_ALIAS_EVENT) {
        for (int k = r->n_anchors - 1; k >= 0; k--)
            if (strcmp(r->anchors[k].name, (const char *)e->data.alias.anchor) == 0) *out = lmx_py_copy(r->anchors[k].v);
        if (!*out) s = lmx_err(LMX_ERR_FORMAT, "%s: unknown YAML alias *%s", r->name, e->data.alias.anchor);
        yaml_event_delete(e);
        return s;
    }
    if (e->type == YAML_SCALAR_EVENT) {
        s = scalar(r, e, out);
        if (s == LMX_OK) s = remember(r, e->data.scalar.anchor, *out);
        yaml_event_delete(e);
        return s;
    }
    bool seq = e->type == YAML_SEQUENCE_START_EVENT;
    if (!seq && e->type != YAML_MAPPING_START_EVENT) {
        yaml_event_delete(e);
        return lmx_err(LMX_ERR_FORMAT, "%s: unexpected YAML event", r->name);
    }
    yaml_char_t *anchor = seq ? e->data.sequence_start.anchor : e->data.mapping_start.anchor;
    char *anchor_copy = anchor ? strdup((const char *)anchor) : NULL;
    yaml_event_delete(e);
    lmx_pyval *c = seq ? lmx_py_list() : lmx_py_dict();
    if (!c) s = lmx_err(LMX_ERR_NOMEM, "out of memory");
    yaml_event_t ev;
    while (s == LMX_OK && (s = next_event(r, &ev)) == LMX_OK) {
        if (ev.type == YAML_SEQUENCE_END_EVENT || ev.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&ev);
            break;
        }
        lmx_pyval *item;
        if (seq) {
            if ((s = node(r, &ev, &item, depth + 1)) == LMX_OK && !lmx_py_list_append(c, item))
                s = lmx_err(LMX_ERR_NOMEM, "out of memory");
            continue;
        }
        size_t line = ev.start_mark.line + 1;
        lmx_pyval *key;
        if ((s = node(r, &ev, &key, depth + 1)) != LMX_OK) break;
        char kbuf[64];
        const char *ks = NULL;
        if (key->type == LMX_PY_STR) ks = key->s;
        else if (key->type == LMX_PY_INT) snprintf(kbuf, sizeof kbuf, "%lld", (long long)key->i), ks = kbuf;
        else if (key->type == LMX_PY_BOOL) ks = key->b ? "true" : "false";
        else if (key->type == LMX_PY_NONE) ks = "null";
        else if (key->type == LMX_PY_FLOAT) lmx_py_float_repr(key->f, kbuf, sizeof kbuf), ks = kbuf;
        if (!ks) {
            lmx_py_free(key);
            s = lmx_err(LMX_ERR_FORMAT, "%s:%zu: a YAML key must be a scalar", r->name, line);
            break;
        }
        if ((s = next_event(r, &ev)) == LMX_OK && (s = node(r, &ev, &item, depth + 1)) == LMX_OK &&
            !lmx_py_dict_set(c, ks, item))
            s = lmx_err(LMX_ERR_NOMEM, "out of memory");
        lmx_py_free(key);
    }
    if (s == LMX_OK && anchor_copy) s = remember(r, (const yaml_char_t *)anchor_copy, c);
    free(anchor_copy);
    if (s != LMX_OK) {
        lmx_py_free(c);
        return s;
    }
    *out = c;
    return LMX_OK;
}

lmx_status lmx_yaml_to_py(const char *text, size_t len, const char *name, lmx_pyval **out) {
    *out = NULL;
    yreader *r = calloc(1, sizeof *r);
    if (!r) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    r->name = name ? name : "config";
    lmx_status s = LMX_OK;
    if (!compile_patterns(r)) s = lmx_err(LMX_ERR_INTERNAL, "YAML resolver patterns failed to compile");
    if (s == LMX_OK && !yaml_parser_initialize(&r->p)) s = lmx_err(LMX_ERR_NOMEM, "out of memory");
    lmx_pyval *doc = NULL;
    if (s == LMX_OK) {
        yaml_parser_set_input_string(&r->p, (const unsigned char *)text, len);
        yaml_event_t e;
        int docs = 0;
        while (s == LMX_OK && (s = next_event(r, &e)) == LMX_OK) {
            yaml_event_type_t t = e.type;
            if (t == YAML_STREAM_END_EVENT) {
                yaml_event_delete(&e);
                break;
            }
            if (t == YAML_DOCUMENT_START_EVENT && ++docs > 1) {
                yaml_event_delete(&e);
                s = lmx_err(LMX_ERR_FORMAT, "%s: expected a single YAML document", r->name);
                break;
            }
            if (t == YAML_SCALAR_EVENT || t == YAML_SEQUENCE_START_EVENT || t == YAML_MAPPING_START_EVENT ||
                t == YAML_ALIAS_EVENT) {
                s = node(r, &e, &doc, 0);
                continue;
            }
            yaml_event_delete(&e);
        }
        yaml_parser_delete(&r->p);
    }
    for (int k = 0; k < r->n_anchors; k++) {
        free(r->anchors[k].name);
        lmx_py_free(r->anchors[k].v);
    }
    regfree(&r->re_bool);
    regfree(&r->re_float);
    regfree(&r->re_int);
    regfree(&r->re_null);
    free(r);
    if (s != LMX_OK) {
        lmx_py_free(doc);
        return s;
    }
    *out = doc ? doc : lmx_py_none();
    return LMX_OK;
}
