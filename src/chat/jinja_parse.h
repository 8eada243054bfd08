/* jinja_parse.h - the parser's token cursor and node helpers (jinja_parser.c). */
#ifndef LMX_JINJA_PARSE_H
#define LMX_JINJA_PARSE_H

#include "chat/jinja.h"

#include <stdio.h>
#include <string.h>

typedef struct ps {
    jx_ctx *c;
    const jtok *t;
    size_t i, n;
    int loop_depth;
} ps;

typedef struct nvec {
    jnode **v;
    int n, cap;
} nvec;

static inline void nv_push(ps *P, nvec *v, jnode *x) {
    if (v->n == v->cap) {
        int cap = v->cap ? v->cap * 2 : 8;
        jnode **nv = jx_alloc(P->c, (size_t)cap * sizeof *nv);
        if (v->n) memcpy(nv, v->v, (size_t)v->n * sizeof *nv);
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = x;
}

static inline const jtok *cur(ps *P) { return &P->t[P->i]; }
static inline const jtok *peek(ps *P, int k) {
    size_t j = P->i + (size_t)k;
    return &P->t[j < P->n ? j : P->n - 1];
}
static inline void adv(ps *P) {
    if (P->i + 1 < P->n) P->i++;
}

static inline bool tok_is(const jtok *t, int type, const char *s) {
    if (t->type != type) return false;
    if (!s) return true;
    size_t k = strlen(s);
    return t->n == k && !memcmp(t->p, s, k);
}
static inline bool is_op(ps *P, const char *s) { return tok_is(cur(P), T_OP, s); }
static inline bool is_name(ps *P, const char *s) { return tok_is(cur(P), T_NAME, s); }

static inline const char *tok_desc(const jtok *t, char *buf, size_t cap) {
    switch (t->type) {
    case T_EOF: return "end of template";
    case T_DATA: return "template data";
    case T_VAR_BEGIN: return "'{{'";
    case T_VAR_END: return "end of print statement";
    case T_BLOCK_BEGIN: return "'{%'";
    case T_BLOCK_END: return "end of statement block";
    case T_STRING: return "string";
    case T_INT: return "integer";
    case T_FLOAT: return "float";
    default: break;
    }
    int k = t->n > 40 ? 40 : (int)t->n;
    snprintf(buf, cap, "'%.*s'", k, t->p);
    return buf;
}

_Noreturn static inline void pfail(ps *P, const char *what) {
    char b[64];
    const jtok *t = cur(P);
    jx_fail(P->c, t->line, t->col, "%s, got %s", what, tok_desc(t, b, sizeof b));
}

static inline void expect_op(ps *P, const char *s) {
    if (!is_op(P, s)) {
        char w[48];
        snprintf(w, sizeof w, "expected '%s'", s);
        pfail(P, w);
    }
    adv(P);
}

static inline jstr *expect_name(ps *P) {
    if (cur(P)->type != T_NAME) pfail(P, "expected a name");
    jstr *s = js_new(P->c, cur(P)->p, cur(P)->n);
    adv(P);
    return s;
}

static inline void expect_block_end(ps *P) {
    if (cur(P)->type != T_BLOCK_END) pfail(P, "expected end of statement block");
    adv(P);
}

static inline jnode *mk(ps *P, int kind, const jtok *at) {
    jnode *n = jx_alloc(P->c, sizeof *n);
    n->kind = (uint8_t)kind;
    n->line = at->line;
    n->col = at->col;
    return n;
}

#endif /* LMX_JINJA_PARSE_H */
