/*
 * jinja_lexer.c - template source to tokens, following jinja2/lexer.py with
 * the environment transformers uses: trim_blocks=True, lstrip_blocks=True,
 * keep_trailing_newline=False, default delimiters.
 *
 * Whitespace rules reproduced here:
 *   "{%-" / "{{-" / "{#-": strip all whitespace before the tag;
 *   "-%}" / "-}}" / "-#}": strip all whitespace after the tag;
 *   "%}" and "#}" (trim_blocks): drop one "\n" right after ("+%}" keeps it);
 *   "{%" and "{#" (lstrip_blocks): drop spaces/tabs between the start of the
 *   line and the tag ("{%+" keeps them). A line also "starts" right after a
 *   tag whose match ended with "\n".
 * Inside tags, "%}"/"}}" only close the tag when brackets are balanced.
 */
#include "chat/jinja.h"

#include <stdlib.h>
#include <string.h>

typedef struct lx {
    jx_ctx *c;
    const char *s;
    size_t n;
    size_t *lines; /* offsets of line starts */
    size_t nlines;
    jtoks *out;
} lx;

static void lc(const lx *L, size_t pos, int *line, int *col) {
    size_t lo = 0, hi = L->nlines;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (L->lines[mid] <= pos) lo = mid;
        else hi = mid;
    }
    *line = (int)lo + 1;
    *col = (int)(pos - L->lines[lo]) + 1;
}

_Noreturn static void lfail(const lx *L, size_t pos, const char *msg, int ch) {
    int line, col;
    lc(L, pos, &line, &col);
    if (ch >= 0) jx_fail(L->c, line, col, msg, ch);
    jx_fail(L->c, line, col, "%s", msg);
}

static jtok *emit(lx *L, int type, size_t pos) {
    jtoks *t = L->out;
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        jtok *nv = jx_alloc(L->c, cap * sizeof *nv);
        if (t->n) memcpy(nv, t->v, t->n * sizeof *nv);
        t->v = nv;
        t->cap = cap;
    }
    jtok *k = &t->v[t->n++];
    memset(k, 0, sizeof *k);
    k->type = (uint8_t)type;
    lc(L, pos, &k->line, &k->col);
    return k;
}

/* Length of the Python whitespace character at s[i], 0 if none. */
static size_t ws_at(const lx *L, size_t i) {
    if (i >= L->n) return 0;
    size_t j = i;
    int32_t cp = ju_decode(L->s, L->n, &j);
    return ju_isspace(cp) ? j - i : 0;
}

static size_t skip_ws(const lx *L, size_t i) {
    size_t k;
    while ((k = ws_at(L, i)) > 0) i += k;
    return i;
}

/* End of text[a..b) after Python rstrip(). */
static size_t rstrip_text(const lx *L, size_t a, size_t b) {
    /* last non-whitespace end */
    size_t i = a, end = a;
    while (i < b) {
        size_t k = ws_at(L, i);
        if (k) i += k;
        else {
            ju_decode(L->s, L->n, &i);
            end = i;
        }
    }
    return end;
}

/* lstrip_blocks: returns the new end of text[a..b). */
static size_t lstrip_text(const lx *L, size_t a, size_t b, bool line_starting) {
    size_t l_pos = a;
    for (size_t i = b; i > a; i--)
        if (L->s[i - 1] == '\n') {
            l_pos = i;
            break;
        }
    if (l_pos == a && !line_starting) return b;
    if (l_pos >= b) return b; /* \s+ needs one character */
    if (skip_ws(L, l_pos) != b) return b;
    return l_pos;
}

static void emit_data(lx *L, size_t a, size_t b) {
    if (b <= a) return;
    jtok *t = emit(L, T_DATA, a);
    t->p = L->s + a;
    t->n = b - a;
}

static bool starts(const lx *L, size_t i, const char *w) {
    size_t k = strlen(w);
    return i + k <= L->n && !memcmp(L->s + i, w, k);
}

/* Matches "{%[-+]?\s*NAME\s*(-%}\s*|%})" (raw) or with block_suffix (endraw);
 * returns the end or 0. */
static size_t match_raw_tag(const lx *L, size_t i, const char *name, bool endraw, char *sign) {
    if (!starts(L, i, "{%")) return 0;
    i += 2;
    *sign = 0;
    if (i < L->n && (L->s[i] == '-' || L->s[i] == '+')) *sign = L->s[i++];
    i = skip_ws(L, i);
    if (!starts(L, i, name)) return 0;
    i = skip_ws(L, i + strlen(name));
    if (endraw && starts(L, i, "+%}")) return i + 3;
    if (starts(L, i, "-%}")) return skip_ws(L, i + 3);
    if (starts(L, i, "%}")) {
        i += 2;
        if (endraw && i < L->n && L->s[i] == '\n') i++;
        return i;
    }
    return 0;
}

static void decode_string(lx *L, jtok *t, size_t a, size_t b) {
    jbuf buf = {0};
    jx_ctx *c = L->c;
    size_t i = a;
    while (i < b) {
        char ch = L->s[i];
        if (ch != '\\' || i + 1 >= b) {
            jb_putc(c, &buf, ch);
            i++;
            continue;
        }
        char e = L->s[i + 1];
        i += 2;
        int32_t cp = -1;
        int hex = 0;
        switch (e) {
        case '\n': continue;
        case '\\': cp = '\\'; break;
        case '\'': cp = '\''; break;
        case '"': cp = '"'; break;
        case 'a': cp = 7; break;
        case 'b': cp = 8; break;
        case 'f': cp = 12; break;
        case 'n': cp = 10; break;
        case 'r': cp = 13; break;
        case 't': cp = 9; break;
        case 'v': cp = 11; break;
        case 'x': hex = 2; break;
        case 'u': hex = 4; break;
        case 'U': hex = 8; break;
        default:
            if (e >= '0' && e <= '7') {
                cp = e - '0';
                for (int k = 0; k < 2 && i < b && L->s[i] >= '0' && L->s[i] <= '7'; k++)
                    cp = cp * 8 + (L->s[i++] - '0');
            }
        }
        if (hex) {
            cp = 0;
            for (int k = 0; k < hex; k++) {
                char h = i < b ? L->s[i] : 0;
                int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                      : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
                if (d < 0) lfail(L, i, "truncated \\%cXX escape in string", e);
                cp = cp * 16 + d;
                i++;
            }
            if (cp > 0x10ffff) lfail(L, i, "illegal Unicode character in string", -1);
        }
        if (cp < 0) { /* unknown escape: kept as written */
            jb_putc(c, &buf, '\\');
            jb_putc(c, &buf, e);
            continue;
        }
        char u8[4];
        jb_put(c, &buf, u8, ju_encode(cp, u8));
    }
    t->p = buf.p ? buf.p : "";
    t->n = buf.n;
}

static bool isdig(char ch) { return ch >= '0' && ch <= '9'; }

/* (\d+_)*\d+ at i; returns end or i when absent. */
static size_t digits(const lx *L, size_t i) {
    size_t j = i;
    while (j < L->n && isdig(L->s[j])) {
        while (j < L->n && isdig(L->s[j])) j++;
        if (j + 1 < L->n && L->s[j] == '_' && isdig(L->s[j + 1])) j++;
    }
    return j;
}

static double parse_num(const char *s, size_t n, bool is_float, int base, int64_t *iv) {
    char buf[128];
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < sizeof buf; i++)
        if (s[i] != '_') buf[k++] = s[i];
    buf[k] = 0;
    if (is_float) return strtod(buf, NULL);
    *iv = (int64_t)strtoull(base == 10 ? buf : buf + 2, NULL, base);
    return 0;
}

static const char *const OPS[] = {"//", "**", "==", "!=", ">=", "<=", "+", "-", "/", "*", "%",
                                  "~", "[", "]", "(", ")", "{", "}", ">", "<", "=", ".", ":",
                                  "|", ",", ";"};

/* Tokenizes the inside of a {{ }} or {% %} tag starting at i; returns the
 * position after the end delimiter and sets *line_starting. */
static size_t lex_tag(lx *L, size_t i, bool block, bool *line_starting, size_t open_pos) {
    char stack[256];
    int depth = 0;
    for (;;) {
        if (i >= L->n) lfail(L, open_pos, block ? "unexpected end of template (unclosed '{%')"
                                                : "unexpected end of template (unclosed '{{')", -1);
        if (depth == 0) {
            size_t e = 0;
            if (block && starts(L, i, "+%}")) e = i + 3;
            else if (starts(L, i, block ? "-%}" : "-}}")) e = skip_ws(L, i + 3);
            else if (starts(L, i, block ? "%}" : "}}")) {
                e = i + 2;
                if (block && e < L->n && L->s[e] == '\n') e++;
            }
            if (e) {
                emit(L, block ? T_BLOCK_END : T_VAR_END, i);
                *line_starting = L->s[e - 1] == '\n';
                return e;
            }
        }
        size_t w = skip_ws(L, i);
        if (w != i) {
            i = w;
            continue;
        }
        char ch = L->s[i];
        /* float: (\d+_)*\d+ ( (\.digits)? e[+-]?digits | \.digits ) */
        if (isdig(ch) && !(i > 0 && L->s[i - 1] == '.')) {
            size_t j = digits(L, i), fe = 0;
            size_t k = j;
            if (k < L->n && L->s[k] == '.' && k + 1 < L->n && isdig(L->s[k + 1])) k = digits(L, k + 1);
            if (k < L->n && (L->s[k] == 'e' || L->s[k] == 'E')) {
                size_t m = k + 1;
                if (m < L->n && (L->s[m] == '+' || L->s[m] == '-')) m++;
                if (m < L->n && isdig(L->s[m])) fe = digits(L, m);
            }
            if (!fe && k != j) fe = k;
            if (fe) {
                jtok *t = emit(L, T_FLOAT, i);
                t->f = parse_num(L->s + i, fe - i, true, 10, NULL);
                i = fe;
                continue;
            }
        }
        if (isdig(ch)) {
            int base = 10;
            size_t j = i;
            if (ch == '0' && i + 1 < L->n && L->s[i + 1] && strchr("bBoOxX", L->s[i + 1])) {
                char p = (char)(L->s[i + 1] | 0x20);
                base = p == 'b' ? 2 : p == 'o' ? 8 : 16;
                j = i + 2;
                while (j < L->n && (L->s[j] == '_' || (base == 16 ? strchr("0123456789abcdefABCDEF", L->s[j]) != NULL
                                                                 : (L->s[j] >= '0' && L->s[j] < '0' + base))) && L->s[j])
                    j++;
            } else if (ch == '0') {
                j = i + 1;
                while (j + 1 < L->n && L->s[j] == '_' && L->s[j + 1] == '0') j += 2;
                while (j < L->n && L->s[j] == '0') j++;
            } else {
                j = digits(L, i);
            }
            jtok *t = emit(L, T_INT, i);
            parse_num(L->s + i, j - i, false, base, &t->i);
            i = j;
            continue;
        }
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_') {
            size_t j = i + 1;
            while (j < L->n && ((L->s[j] >= 'a' && L->s[j] <= 'z') || (L->s[j] >= 'A' && L->s[j] <= 'Z') ||
                                isdig(L->s[j]) || L->s[j] == '_'))
                j++;
            jtok *t = emit(L, T_NAME, i);
            t->p = L->s + i;
            t->n = j - i;
            i = j;
            continue;
        }
        if (ch == '\'' || ch == '"') {
            size_t j = i + 1;
            while (j < L->n && L->s[j] != ch) j += L->s[j] == '\\' ? 2 : 1;
            if (j >= L->n) lfail(L, i, "unexpected end of string", -1);
            jtok *t = emit(L, T_STRING, i);
            decode_string(L, t, i + 1, j);
            i = j + 1;
            continue;
        }
        size_t nops = sizeof OPS / sizeof *OPS, k;
        for (k = 0; k < nops; k++)
            if (starts(L, i, OPS[k])) break;
        if (k == nops) lfail(L, i, "unexpected char '%c'", (unsigned char)ch);
        const char *op = OPS[k];
        if (op[1] == 0 && strchr("([{", op[0])) {
            if (depth == (int)sizeof stack) lfail(L, i, "brackets nested too deeply", -1);
            stack[depth++] = op[0] == '(' ? ')' : op[0] == '[' ? ']' : '}';
        } else if (op[1] == 0 && strchr(")]}", op[0])) {
            if (depth == 0) lfail(L, i, "unexpected '%c'", op[0]);
            if (stack[depth - 1] != op[0]) lfail(L, i, "unexpected '%c'", op[0]);
            depth--;
        }
        jtok *t = emit(L, T_OP, i);
        t->p = L->s + i;
        t->n = strlen(op);
        i += t->n;
    }
}

void jx_lex(jx_ctx *c, const char *src, size_t n, jtoks *out) {
    /* newline normalization */
    char *s = jx_alloc(c, n + 1);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (src[i] == '\r') {
            s[m++] = '\n';
            if (i + 1 < n && src[i + 1] == '\n') i++;
        } else {
            s[m++] = src[i];
        }
    }
    if (m > 0 && s[m - 1] == '\n') m--;
    s[m] = 0;
    c->src = s;
    lx L = {.c = c, .s = s, .n = m, .out = out};
    size_t nl = 1;
    for (size_t i = 0; i < m; i++) nl += s[i] == '\n';
    L.lines = jx_alloc(c, nl * sizeof *L.lines);
    L.nlines = 0;
    L.lines[L.nlines++] = 0;
    for (size_t i = 0; i < m; i++)
        if (s[i] == '\n') L.lines[L.nlines++] = i + 1;

    size_t pos = 0;
    bool line_starting = true;
    while (pos < m) {
        size_t i = pos;
        while (i + 1 < m && !(s[i] == '{' && (s[i + 1] == '{' || s[i + 1] == '%' || s[i + 1] == '#'))) i++;
        if (i + 1 >= m) {
            emit_data(&L, pos, m);
            break;
        }
        char kind = s[i + 1], sign = 0, rsign = 0;
        size_t raw_end = kind == '%' ? match_raw_tag(&L, i, "raw", false, &rsign) : 0;
        if (i + 2 < m && (s[i + 2] == '-' || s[i + 2] == '+')) sign = s[i + 2];
        size_t tend = i;
        if (sign == '-') tend = rstrip_text(&L, pos, i);
        else if (sign != '+' && kind != '{') tend = lstrip_text(&L, pos, i, line_starting);
        emit_data(&L, pos, tend);
        if (raw_end) {
            /* raw block: find {% endraw %} */
            size_t j = raw_end, e = 0;
            char esign = 0;
            for (; j < m; j++)
                if (s[j] == '{' && (e = match_raw_tag(&L, j, "endraw", true, &esign)) != 0) break;
            if (!e) lfail(&L, i, "missing end of raw directive", -1);
            bool ls = s[raw_end - 1] == '\n';
            size_t dend = j;
            if (esign == '-') dend = rstrip_text(&L, raw_end, j);
            else if (esign != '+') dend = lstrip_text(&L, raw_end, j, ls);
            emit_data(&L, raw_end, dend);
            line_starting = s[e - 1] == '\n';
            pos = e;
            continue;
        }
        size_t after = i + 2 + (sign ? 1 : 0);
        if (kind == '#') {
            size_t j = after, e = 0;
            for (; j < m; j++) {
                if (starts(&L, j, "+#}")) e = j + 3;
                else if (starts(&L, j, "-#}")) e = skip_ws(&L, j + 3);
                else if (starts(&L, j, "#}")) e = j + 2 + (j + 2 < m && s[j + 2] == '\n');
                if (e) break;
            }
            if (!e) lfail(&L, i, "missing end of comment tag", -1);
            line_starting = s[e - 1] == '\n';
            pos = e;
            continue;
        }
        emit(&L, kind == '%' ? T_BLOCK_BEGIN : T_VAR_BEGIN, i);
        pos = lex_tag(&L, after, kind == '%', &line_starting, i);
    }
    jtok *eof = emit(&L, T_EOF, m);
    (void)eof;
}
