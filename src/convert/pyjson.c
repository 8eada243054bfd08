/* pyjson.c - JSON text as Python's json.dump(obj, f, indent=4) writes it
 * (ensure_ascii escapes, ", "/": " separators, shortest round-trip floats),
 * so config.json and the index look like mlx-lm's. Integral numbers print as
 * integers (cJSON does not keep 10000.0 apart from 10000). */
#include "convert/convert.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct {
    char *p;
    size_t n, cap;
    bool oom;
} buf;

static void put(buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap * 2 : 1024;
        while (c < b->n + n + 1) c *= 2;
        char *q = realloc(b->p, c);
        if (!q) {
            b->oom = true;
            return;
        }
        b->p = q;
        b->cap = c;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void puts_(buf *b, const char *s) { put(b, s, strlen(s)); }

static void indent(buf *b, int level) {
    for (int i = 0; i < level * 4; i++) put(b, " ", 1);
}

/* Decodes one UTF-8 sequence; returns its length (1 for invalid bytes). */
static int utf8(const unsigned char *s, uint32_t *cp) {
    if (s[0] < 0x80) return *cp = s[0], 1;
    int n = (s[0] & 0xe0) == 0xc0 ? 2 : (s[0] & 0xf0) == 0xe0 ? 3 : (s[0] & 0xf8) == 0xf0 ? 4 : 0;
    if (!n) return *cp = 0xfffd, 1;
    uint32_t c = s[0] & (0x7f >> n);
    for (int i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) return *cp = 0xfffd, 1;
        c = c << 6 | (s[i] & 0x3f);
    }
    *cp = c;
    return n;
}

static void str(buf *b, const char *s) {
    put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p;) {
        uint32_t c;
        p += utf8(p, &c);
        char e[16];
        switch (c) {
        case '"': puts_(b, "\\\""); continue;
        case '\\': puts_(b, "\\\\"); continue;
        case '\n': puts_(b, "\\n"); continue;
        case '\r': puts_(b, "\\r"); continue;
        case '\t': puts_(b, "\\t"); continue;
        case '\b': puts_(b, "\\b"); continue;
        case '\f': puts_(b, "\\f"); continue;
        default: break;
        }
        if (c >= 0x20 && c < 0x7f) {
            char ch = (char)c;
            put(b, &ch, 1);
        } else if (c >= 0x10000) {
            c -= 0x10000;
            snprintf(e, sizeof e, "\\u%04x\\u%04x", 0xd800 + (c >> 10), 0xdc00 + (c & 0x3ff));
            puts_(b, e);
        } else {
            snprintf(e, sizeof e, "\\u%04x", c);
            puts_(b, e);
        }
    }
    put(b, "\"", 1);
}

static void num(buf *b, double v) {
    char t[40];
    if (isnan(v)) snprintf(t, sizeof t, "NaN");
    else if (isinf(v)) snprintf(t, sizeof t, v > 0 ? "Infinity" : "-Infinity");
    else if (v == floor(v) && fabs(v) < 9007199254740992.0) snprintf(t, sizeof t, "%.0f", v);
    else
        for (int p = 1; p <= 17; p++) {
            snprintf(t, sizeof t, "%.*g", p, v);
            if (strtod(t, NULL) == v) break;
        }
    puts_(b, t);
}

static void value(buf *b, const cJSON *v, int level, bool sort_top) {
    if (cJSON_IsObject(v) || cJSON_IsArray(v)) {
        bool obj = cJSON_IsObject(v);
        size_t n = 0;
        for (const cJSON *c = v->child; c; c = c->next) n++;
        if (!n) {
            puts_(b, obj ? "{}" : "[]");
            return;
        }
        const cJSON **items = malloc(n * sizeof *items);
        if (!items) {
            b->oom = true;
            return;
        }
        n = 0;
        for (const cJSON *c = v->child; c; c = c->next) items[n++] = c;
        if (obj && sort_top) /* insertion sort by key: configs are small */
            for (size_t i = 1; i < n; i++)
                for (size_t j = i; j > 0 && strcmp(items[j - 1]->string, items[j]->string) > 0; j--) {
                    const cJSON *t = items[j];
                    items[j] = items[j - 1];
                    items[j - 1] = t;
                }
        puts_(b, obj ? "{\n" : "[\n");
        for (size_t i = 0; i < n; i++) {
            indent(b, level + 1);
            if (obj) {
                str(b, items[i]->string);
                puts_(b, ": ");
            }
            value(b, items[i], level + 1, false);
            puts_(b, i + 1 < n ? ",\n" : "\n");
        }
        indent(b, level);
        puts_(b, obj ? "}" : "]");
        free(items);
    } else if (cJSON_IsString(v)) {
        str(b, v->valuestring);
    } else if (cJSON_IsNumber(v)) {
        num(b, v->valuedouble);
    } else if (cJSON_IsTrue(v)) {
        puts_(b, "true");
    } else if (cJSON_IsFalse(v)) {
        puts_(b, "false");
    } else {
        puts_(b, "null");
    }
}

char *lmx_pyjson_dump(const cJSON *v, bool sort_top_keys) {
    buf b = {0};
    value(&b, v, 0, sort_top_keys);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
