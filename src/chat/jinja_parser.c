/*
 * jinja_parser.c - tokens to AST, a recursive-descent port of jinja2/parser.py.
 *
 * Expression precedence (loosest first), as Jinja: conditional `a if c else b`,
 * `or`, `and`, `not`, comparisons (== != < <= > >= in, not in), + -, ~,
 * * / // %, **, unary - +, then postfix (.attr [item] (call)) and filters /
 * tests (| name, is name) which bind to the unary operand:
 * `'a' + b | trim` is `'a' + (b | trim)`.
 * Statements: if/elif/else, for (target, `if` filter, else), set (incl.
 * ns.attr and block set), macro, call, filter, with, break/continue,
 * generation (transformers' extension; renders its body).
 */
#include "chat/jinja_parse.h"

#include <stdio.h>
#include <string.h>

static jnode *parse_expr(ps *P, bool with_cond);
static jnode *parse_tuple(ps *P, bool simplified, bool with_cond, const char *extra_end, bool explicit_parens);
static jnode *parse_unary(ps *P, bool with_filter);
static jnode *parse_postfix(ps *P, jnode *n);
static jnode *parse_primary(ps *P);

/* ---- expressions ---------------------------------------------------------------- */

static jnode *parse_primary(ps *P) {
    const jtok *t = cur(P);
    jnode *n;
    switch (t->type) {
    case T_NAME:
        n = mk(P, N_CONST, t);
        if (tok_is(t, T_NAME, "true") || tok_is(t, T_NAME, "True")) n->val = jv_bool(true);
        else if (tok_is(t, T_NAME, "false") || tok_is(t, T_NAME, "False")) n->val = jv_bool(false);
        else if (tok_is(t, T_NAME, "none") || tok_is(t, T_NAME, "None")) n->val = jv_none();
        else {
            n->kind = N_NAME;
            n->name = js_new(P->c, t->p, t->n);
        }
        adv(P);
        return n;
    case T_STRING: {
        n = mk(P, N_CONST, t);
        jbuf b = {0};
        jb_put(P->c, &b, t->p, t->n);
        adv(P);
        while (cur(P)->type == T_STRING) {
            jb_put(P->c, &b, cur(P)->p, cur(P)->n);
            adv(P);
        }
        n->val = jv_strv(jb_str(P->c, &b));
        return n;
    }
    case T_INT:
        n = mk(P, N_CONST, t);
        n->val = jv_int(t->i);
        adv(P);
        return n;
    case T_FLOAT:
        n = mk(P, N_CONST, t);
        n->val = jv_float(t->f);
        adv(P);
        return n;
    case T_OP:
        if (is_op(P, "(")) {
            adv(P);
            n = parse_tuple(P, false, true, NULL, true);
            expect_op(P, ")");
            return n;
        }
        if (is_op(P, "[")) {
            n = mk(P, N_LIST, t);
            adv(P);
            nvec v = {0};
            while (!is_op(P, "]")) {
                if (v.n) expect_op(P, ",");
                if (is_op(P, "]")) break;
                nv_push(P, &v, parse_expr(P, true));
            }
            expect_op(P, "]");
            n->args = v.v;
            n->nargs = v.n;
            return n;
        }
        if (is_op(P, "{")) {
            n = mk(P, N_DICT, t);
            adv(P);
            nvec k = {0}, v = {0};
            while (!is_op(P, "}")) {
                if (k.n) expect_op(P, ",");
                if (is_op(P, "}")) break;
                nv_push(P, &k, parse_expr(P, true));
                expect_op(P, ":");
                nv_push(P, &v, parse_expr(P, true));
            }
            expect_op(P, "}");
            n->args = k.v;
            n->kwv = v.v;
            n->nargs = k.n;
            return n;
        }
        break;
    default: break;
    }
    pfail(P, "unexpected token in expression");
}

static void parse_call_args(ps *P, jnode *n) {
    expect_op(P, "(");
    nvec a = {0}, kv = {0};
    jstr **kn = NULL;
    int nk = 0, kcap = 0;
    bool first = true;
    while (!is_op(P, ")")) {
        if (!first) {
            expect_op(P, ",");
            if (is_op(P, ")")) break;
        }
        first = false;
        if (is_op(P, "*") || is_op(P, "**")) pfail(P, "*args/**kwargs in calls are not supported");
        if (cur(P)->type == T_NAME && tok_is(peek(P, 1), T_OP, "=")) {
            if (nk == kcap) {
                kcap = kcap ? kcap * 2 : 4;
                jstr **nn = jx_alloc(P->c, (size_t)kcap * sizeof *nn);
                if (nk) memcpy(nn, kn, (size_t)nk * sizeof *nn);
                kn = nn;
            }
            kn[nk++] = expect_name(P);
            adv(P);
            nv_push(P, &kv, parse_expr(P, true));
        } else {
            if (nk) pfail(P, "positional argument follows keyword argument");
            nv_push(P, &a, parse_expr(P, true));
        }
    }
    expect_op(P, ")");
    n->args = a.v;
    n->nargs = a.n;
    n->kwn = kn;
    n->kwv = kv.v;
    n->nkw = nk;
}

static jstr *dotted_name(ps *P) {
    jstr *s = expect_name(P);
    while (is_op(P, ".") && peek(P, 1)->type == T_NAME) {
        adv(P);
        jstr *t = expect_name(P);
        jbuf b = {0};
        jb_put(P->c, &b, s->s, s->len);
        jb_putc(P->c, &b, '.');
        jb_put(P->c, &b, t->s, t->len);
        s = jb_str(P->c, &b);
    }
    return s;
}

static jnode *parse_filter(ps *P, jnode *value) {
    const jtok *t = cur(P);
    jnode *n = mk(P, N_FILTER, t);
    n->a = value;
    n->name = dotted_name(P);
    if (!jx_has_filter(n->name->s)) jx_fail(P->c, t->line, t->col, "no filter named '%s'", n->name->s);
    if (is_op(P, "(")) parse_call_args(P, n);
    return n;
}

static jnode *parse_subscribed(ps *P) {
    const jtok *t = cur(P);
    jnode *parts[3] = {0};
    if (is_op(P, ":")) {
        adv(P);
    } else {
        jnode *e = parse_expr(P, true);
        if (!is_op(P, ":")) return e;
        adv(P);
        parts[0] = e;
    }
    if (!is_op(P, ":") && !is_op(P, "]") && !is_op(P, ",")) parts[1] = parse_expr(P, true);
    if (is_op(P, ":")) {
        adv(P);
        if (!is_op(P, "]") && !is_op(P, ",")) parts[2] = parse_expr(P, true);
    }
    jnode *n = mk(P, N_SLICE, t);
    n->args = jx_alloc(P->c, 3 * sizeof *n->args);
    memcpy(n->args, parts, sizeof parts);
    n->nargs = 3;
    return n;
}

static jnode *parse_postfix(ps *P, jnode *n) {
    for (;;) {
        const jtok *t = cur(P);
        if (is_op(P, ".")) {
            adv(P);
            if (cur(P)->type == T_NAME) {
                jnode *g = mk(P, N_GETATTR, t);
                g->a = n;
                g->name = expect_name(P);
                n = g;
            } else if (cur(P)->type == T_INT) {
                jnode *g = mk(P, N_GETITEM, t);
                g->a = n;
                g->b = mk(P, N_CONST, cur(P));
                g->b->val = jv_int(cur(P)->i);
                adv(P);
                n = g;
            } else {
                pfail(P, "expected a name after '.'");
            }
        } else if (is_op(P, "[")) {
            adv(P);
            nvec v = {0};
            while (!is_op(P, "]")) {
                if (v.n) {
                    expect_op(P, ",");
                    if (is_op(P, "]")) break;
                }
                nv_push(P, &v, parse_subscribed(P));
            }
            expect_op(P, "]");
            if (v.n == 0) pfail(P, "expected a subscript");
            jnode *g = mk(P, N_GETITEM, t);
            g->a = n;
            if (v.n == 1) {
                g->b = v.v[0];
            } else {
                g->b = mk(P, N_TUPLE, t);
                g->b->args = v.v;
                g->b->nargs = v.n;
            }
            n = g;
        } else if (is_op(P, "(")) {
            jnode *call = mk(P, N_CALL, t);
            call->a = n;
            parse_call_args(P, call);
            n = call;
        } else {
            return n;
        }
    }
}

static jnode *parse_filter_expr(ps *P, jnode *n) {
    for (;;) {
        if (is_op(P, "|")) {
            adv(P);
            n = parse_filter(P, n);
        } else if (is_name(P, "is")) {
            const jtok *t = cur(P);
            adv(P);
            bool neg = false;
            if (is_name(P, "not")) {
                neg = true;
                adv(P);
            }
            jnode *tn = mk(P, N_TEST, t);
            tn->a = n;
            const jtok *nt = cur(P);
            tn->name = dotted_name(P);
            if (!jx_has_test(tn->name->s)) jx_fail(P->c, nt->line, nt->col, "no test named '%s'", tn->name->s);
            const jtok *c = cur(P);
            if (is_op(P, "(")) {
                parse_call_args(P, tn);
            } else if ((c->type == T_NAME || c->type == T_STRING || c->type == T_INT ||
                        c->type == T_FLOAT || is_op(P, "[") || is_op(P, "{")) &&
                       !is_name(P, "else") && !is_name(P, "or") && !is_name(P, "and")) {
                if (is_name(P, "is")) pfail(P, "you cannot chain multiple tests with is");
                jnode *arg = parse_postfix(P, parse_primary(P));
                tn->args = jx_alloc(P->c, sizeof *tn->args);
                tn->args[0] = arg;
                tn->nargs = 1;
            }
            if (neg) {
                jnode *nn = mk(P, N_NOT, t);
                nn->a = tn;
                tn = nn;
            }
            n = tn;
        } else if (is_op(P, "(")) {
            jnode *call = mk(P, N_CALL, cur(P));
            call->a = n;
            parse_call_args(P, call);
            n = call;
        } else {
            return n;
        }
    }
}

static jnode *parse_unary(ps *P, bool with_filter) {
    const jtok *t = cur(P);
    jnode *n;
    if (is_op(P, "-") || is_op(P, "+")) {
        n = mk(P, is_op(P, "-") ? N_NEG : N_POS, t);
        adv(P);
        if (++P->c->depth > P->c->max_depth) pfail(P, "expression nested too deeply");
        n->a = parse_unary(P, false);
        P->c->depth--;
    } else {
        n = parse_primary(P);
    }
    n = parse_postfix(P, n);
    if (with_filter) n = parse_filter_expr(P, n);
    return n;
}

static jnode *binop(ps *P, const jtok *t, int op, jnode *a, jnode *b) {
    jnode *n = mk(P, N_BINOP, t);
    n->op = (uint8_t)op;
    n->a = a;
    n->b = b;
    return n;
}

static jnode *parse_pow(ps *P) {
    jnode *l = parse_unary(P, true);
    while (is_op(P, "**")) {
        const jtok *t = cur(P);
        adv(P);
        l = binop(P, t, OP_POW, l, parse_unary(P, true));
    }
    return l;
}

static jnode *parse_math2(ps *P) {
    jnode *l = parse_pow(P);
    for (;;) {
        const jtok *t = cur(P);
        int op = is_op(P, "*") ? OP_MUL : is_op(P, "/") ? OP_DIV : is_op(P, "//") ? OP_FLOORDIV
               : is_op(P, "%") ? OP_MOD : 0;
        if (!op) return l;
        adv(P);
        l = binop(P, t, op, l, parse_pow(P));
    }
}

static jnode *parse_concat(ps *P) {
    const jtok *t = cur(P);
    jnode *first = parse_math2(P);
    if (!is_op(P, "~")) return first;
    nvec v = {0};
    nv_push(P, &v, first);
    while (is_op(P, "~")) {
        adv(P);
        nv_push(P, &v, parse_math2(P));
    }
    jnode *n = mk(P, N_CONCAT, t);
    n->args = v.v;
    n->nargs = v.n;
    return n;
}

static jnode *parse_math1(ps *P) {
    jnode *l = parse_concat(P);
    for (;;) {
        const jtok *t = cur(P);
        int op = is_op(P, "+") ? OP_ADD : is_op(P, "-") ? OP_SUB : 0;
        if (!op) return l;
        adv(P);
        l = binop(P, t, op, l, parse_concat(P));
    }
}

static jnode *parse_compare(ps *P) {
    const jtok *t0 = cur(P);
    jnode *first = parse_math1(P);
    nvec v = {0};
    uint8_t ops[64];
    for (;;) {
        int op = is_op(P, "==") ? OP_EQ : is_op(P, "!=") ? OP_NE : is_op(P, "<") ? OP_LT
               : is_op(P, "<=") ? OP_LE : is_op(P, ">") ? OP_GT : is_op(P, ">=") ? OP_GE
               : is_name(P, "in") ? OP_IN : 0;
        if (!op && is_name(P, "not") && tok_is(peek(P, 1), T_NAME, "in")) {
            adv(P);
            op = OP_NOTIN;
        }
        if (!op) break;
        if (v.n == (int)sizeof ops) pfail(P, "comparison chain too long");
        adv(P);
        ops[v.n] = (uint8_t)op;
        nv_push(P, &v, parse_math1(P));
    }
    if (!v.n) return first;
    jnode *n = mk(P, N_COMPARE, t0);
    n->a = first;
    n->args = v.v;
    n->nargs = v.n;
    n->ops = jx_alloc(P->c, (size_t)v.n);
    memcpy(n->ops, ops, (size_t)v.n);
    return n;
}

static jnode *parse_not(ps *P) {
    if (is_name(P, "not")) {
        jnode *n = mk(P, N_NOT, cur(P));
        adv(P);
        if (++P->c->depth > P->c->max_depth) pfail(P, "expression nested too deeply");
        n->a = parse_not(P);
        P->c->depth--;
        return n;
    }
    return parse_compare(P);
}

static jnode *parse_and(ps *P) {
    jnode *l = parse_not(P);
    while (is_name(P, "and")) {
        jnode *n = mk(P, N_AND, cur(P));
        adv(P);
        n->a = l;
        n->b = parse_not(P);
        l = n;
    }
    return l;
}

static jnode *parse_or(ps *P) {
    jnode *l = parse_and(P);
    while (is_name(P, "or")) {
        jnode *n = mk(P, N_OR, cur(P));
        adv(P);
        n->a = l;
        n->b = parse_and(P);
        l = n;
    }
    return l;
}

static jnode *parse_expr(ps *P, bool with_cond) {
    if (++P->c->depth > P->c->max_depth) pfail(P, "expression nested too deeply");
    jnode *e = parse_or(P);
    while (with_cond && is_name(P, "if")) {
        jnode *n = mk(P, N_COND, cur(P));
        adv(P);
        n->b = e;
        n->a = parse_or(P);
        if (is_name(P, "else")) {
            adv(P);
            n->c = parse_expr(P, true);
        }
        e = n;
    }
    P->c->depth--;
    return e;
}

static bool tuple_end(ps *P, const char *extra_end) {
    const jtok *t = cur(P);
    if (t->type == T_VAR_END || t->type == T_BLOCK_END || t->type == T_EOF || is_op(P, ")")) return true;
    return extra_end && is_name(P, extra_end);
}

static jnode *parse_tuple(ps *P, bool simplified, bool with_cond, const char *extra_end, bool explicit_parens) {
    const jtok *t = cur(P);
    nvec v = {0};
    bool is_tuple = false;
    for (;;) {
        if (v.n) expect_op(P, ",");
        if (tuple_end(P, extra_end)) break;
        nv_push(P, &v, simplified ? parse_primary(P) : parse_expr(P, with_cond));
        if (is_op(P, ",")) is_tuple = true;
        else break;
    }
    if (!is_tuple) {
        if (v.n) return v.v[0];
        if (!explicit_parens) pfail(P, "expected an expression");
    }
    jnode *n = mk(P, N_TUPLE, t);
    n->args = v.v;
    n->nargs = v.n;
    return n;
}

/* ---- statements -------------------------------------------------------------------- */

static void parse_body(ps *P, nvec *body, const char *const *ends, const char *what);

static jnode *parse_target(ps *P, bool with_ns, const char *extra_end) {
    const jtok *t = cur(P);
    if (with_ns && t->type == T_NAME && tok_is(peek(P, 1), T_OP, ".") && peek(P, 2)->type == T_NAME) {
        jnode *n = mk(P, N_GETATTR, t);
        n->a = mk(P, N_NAME, t);
        n->a->name = expect_name(P);
        adv(P);
        n->name = expect_name(P);
        return n;
    }
    jnode *n = parse_tuple(P, true, false, extra_end, false);
    if (n->kind == N_NAME) return n;
    if (n->kind == N_TUPLE) {
        for (int i = 0; i < n->nargs; i++)
            if (n->args[i]->kind != N_NAME) goto bad;
        return n;
    }
bad:
    jx_fail(P->c, t->line, t->col, "can't assign to %s", n->kind == N_CONST ? "a literal" : "this expression");
}

static void parse_params(ps *P, jnode *n) {
    expect_op(P, "(");
    nvec defs = {0};
    jstr *names[64];
    int k = 0;
    while (!is_op(P, ")")) {
        if (k) expect_op(P, ",");
        if (k == 64) pfail(P, "too many parameters");
        names[k] = expect_name(P);
        jnode *d = NULL;
        if (is_op(P, "=")) {
            adv(P);
            d = parse_expr(P, true);
        } else if (defs.n && defs.v[defs.n - 1]) {
            pfail(P, "non-default argument follows default argument");
        }
        nv_push(P, &defs, d);
        k++;
    }
    expect_op(P, ")");
    n->kwn = jx_alloc(P->c, (size_t)(k ? k : 1) * sizeof *n->kwn);
    memcpy(n->kwn, names, (size_t)k * sizeof *names);
    n->kwv = defs.v;
    n->nkw = k;
}

static const char *const END_FOR[] = {"endfor", "else", NULL};
static const char *const END_FOR2[] = {"endfor", NULL};
static const char *const END_IF[] = {"elif", "else", "endif", NULL};
static const char *const END_IF2[] = {"endif", NULL};

static void set_body(jnode *n, nvec *v) {
    n->body = v->v;
    n->nbody = v->n;
}

static jnode *parse_if(ps *P, const jtok *t) {
    jnode *n = mk(P, N_IF, t);
    n->a = parse_tuple(P, false, false, NULL, false);
    expect_block_end(P);
    nvec body = {0};
    parse_body(P, &body, END_IF, "'elif', 'else' or 'endif'");
    set_body(n, &body);
    const jtok *e = cur(P);
    if (is_name(P, "elif")) {
        adv(P);
        jnode *sub = parse_if(P, e);
        n->orelse = jx_alloc(P->c, sizeof *n->orelse);
        n->orelse[0] = sub;
        n->norelse = 1;
        return n; /* the nested if consumed endif */
    }
    if (is_name(P, "else")) {
        adv(P);
        expect_block_end(P);
        nvec els = {0};
        parse_body(P, &els, END_IF2, "'endif'");
        n->orelse = els.v;
        n->norelse = els.n;
    }
    adv(P); /* endif */
    expect_block_end(P);
    return n;
}

static jnode *parse_end_simple(ps *P, jnode *n, const char *endname) {
    const char *ends[] = {endname, NULL};
    char what[40];
    snprintf(what, sizeof what, "'%s'", endname);
    expect_block_end(P);
    nvec body = {0};
    parse_body(P, &body, ends, what);
    set_body(n, &body);
    adv(P);
    if (n->kind == N_MACRO && cur(P)->type == T_NAME) adv(P); /* {% endmacro name %} */
    expect_block_end(P);
    return n;
}

static jnode *parse_statement(ps *P) {
    const jtok *t = cur(P);
    if (t->type != T_NAME) pfail(P, "expected a tag name");
    jnode *n;
    if (is_name(P, "if")) {
        adv(P);
        return parse_if(P, t);
    }
    if (is_name(P, "for")) {
        adv(P);
        n = mk(P, N_FOR, t);
        n->a = parse_target(P, false, "in");
        if (!is_name(P, "in")) pfail(P, "expected 'in'");
        adv(P);
        n->b = parse_tuple(P, false, false, "recursive", false);
        if (is_name(P, "if")) {
            adv(P);
            n->c = parse_expr(P, true);
        }
        if (is_name(P, "recursive")) pfail(P, "recursive loops are not supported");
        expect_block_end(P);
        nvec body = {0};
        P->loop_depth++;
        parse_body(P, &body, END_FOR, "'endfor' or 'else'");
        P->loop_depth--;
        set_body(n, &body);
        if (is_name(P, "else")) {
            adv(P);
            expect_block_end(P);
            nvec els = {0};
            parse_body(P, &els, END_FOR2, "'endfor'");
            n->orelse = els.v;
            n->norelse = els.n;
        }
        adv(P);
        expect_block_end(P);
        return n;
    }
    if (is_name(P, "set")) {
        adv(P);
        jnode *target = parse_target(P, true, NULL);
        if (is_op(P, "=")) {
            adv(P);
            n = mk(P, N_SET, t);
            n->a = target;
            n->b = parse_tuple(P, false, true, NULL, false);
            expect_block_end(P);
            return n;
        }
        n = mk(P, N_SETBLOCK, t);
        n->a = target;
        while (is_op(P, "|")) {
            adv(P);
            n->c = parse_filter(P, n->c);
        }
        return parse_end_simple(P, n, "endset");
    }
    if (is_name(P, "macro")) {
        adv(P);
        n = mk(P, N_MACRO, t);
        n->name = expect_name(P);
        parse_params(P, n);
        int save = P->loop_depth;
        P->loop_depth = 0;
        parse_end_simple(P, n, "endmacro");
        P->loop_depth = save;
        return n;
    }
    if (is_name(P, "call")) {
        adv(P);
        n = mk(P, N_CALLBLOCK, t);
        if (is_op(P, "(")) parse_params(P, n);
        n->a = parse_expr(P, true);
        if (n->a->kind != N_CALL) jx_fail(P->c, t->line, t->col, "expected a call expression");
        return parse_end_simple(P, n, "endcall");
    }
    if (is_name(P, "filter")) {
        adv(P);
        n = mk(P, N_FILTERBLOCK, t);
        n->c = parse_filter(P, NULL);
        while (is_op(P, "|")) {
            adv(P);
            n->c = parse_filter(P, n->c);
        }
        return parse_end_simple(P, n, "endfilter");
    }
    if (is_name(P, "with")) {
        adv(P);
        n = mk(P, N_WITH, t);
        nvec vals = {0};
        jstr *names[64];
        int k = 0;
        while (cur(P)->type != T_BLOCK_END) {
            if (k) expect_op(P, ",");
            if (k == 64) pfail(P, "too many assignments");
            names[k++] = expect_name(P);
            expect_op(P, "=");
            nv_push(P, &vals, parse_expr(P, true));
        }
        n->kwn = jx_alloc(P->c, (size_t)(k ? k : 1) * sizeof *n->kwn);
        memcpy(n->kwn, names, (size_t)k * sizeof *names);
        n->kwv = vals.v;
        n->nkw = k;
        return parse_end_simple(P, n, "endwith");
    }
    if (is_name(P, "generation")) {
        adv(P);
        n = mk(P, N_SCOPE, t);
        return parse_end_simple(P, n, "endgeneration");
    }
    if (is_name(P, "break") || is_name(P, "continue")) {
        if (!P->loop_depth) {
            char b[64];
            jx_fail(P->c, t->line, t->col, "%s outside of a loop", tok_desc(t, b, sizeof b));
        }
        n = mk(P, is_name(P, "break") ? N_BREAK : N_CONTINUE, t);
        adv(P);
        expect_block_end(P);
        return n;
    }
    char b[64];
    jx_fail(P->c, t->line, t->col, "unknown tag %s", tok_desc(t, b, sizeof b));
}

/* Parses until a {% NAME %} with NAME in ends (left at NAME), or EOF when ends is NULL. */
static void parse_body(ps *P, nvec *body, const char *const *ends, const char *what) {
    if (++P->c->depth > P->c->max_depth) pfail(P, "blocks nested too deeply");
    for (;;) {
        const jtok *t = cur(P);
        if (t->type == T_EOF) {
            if (!ends) break;
            char w[96];
            snprintf(w, sizeof w, "unexpected end of template, expected %s", what);
            pfail(P, w);
        }
        if (t->type == T_DATA) {
            jnode *n = mk(P, N_DATA, t);
            n->val = jv_str(P->c, t->p, t->n);
            nv_push(P, body, n);
            adv(P);
        } else if (t->type == T_VAR_BEGIN) {
            adv(P);
            jnode *n = mk(P, N_OUTPUT, t);
            n->a = parse_tuple(P, false, true, NULL, false);
            if (cur(P)->type != T_VAR_END) pfail(P, "expected end of print statement");
            adv(P);
            nv_push(P, body, n);
        } else if (t->type == T_BLOCK_BEGIN) {
            adv(P);
            if (ends)
                for (int i = 0; ends[i]; i++)
                    if (is_name(P, ends[i])) {
                        P->c->depth--;
                        return;
                    }
            nv_push(P, body, parse_statement(P));
        } else {
            pfail(P, "unexpected token");
        }
    }
    P->c->depth--;
}

jnode *jx_parse(jx_ctx *c, const jtoks *toks) {
    ps P = {.c = c, .t = toks->v, .n = toks->n};
    nvec body = {0};
    parse_body(&P, &body, NULL, NULL);
    jnode *root = jx_alloc(c, sizeof *root);
    root->kind = N_SCOPE;
    root->line = 1;
    root->col = 1;
    set_body(root, &body);
    return root;
}
