/*
 * jinja_eval.c - renders the AST: expression evaluation with Python semantics
 * and statement execution with Jinja's scoping.
 *
 * Scopes: a frame per template, per for-loop iteration (assignments inside a
 * loop body never leak out, which is why templates use namespace()), per
 * macro call, per block set / filter / with body. `if` opens no scope.
 * Undefined: reading a missing variable, attribute or item gives Undefined,
 * which prints as "", is false, iterates as empty and has length 0; using it
 * in arithmetic, calling it or taking its attribute fails (Jinja's default
 * Undefined).
 */
#include "chat/jinja.h"

#include <math.h>
#include <string.h>

struct jframe {
    jframe *parent;
    jdict *vars;
};

enum { FLOW_NEXT = 0, FLOW_BREAK = 1, FLOW_CONTINUE = 2 };

static jv eval(jx_ctx *c, jframe *f, const jnode *n);
static int exec_body(jx_ctx *c, jframe *f, jnode *const *body, int n);

static jframe *frame_new(jx_ctx *c, jframe *parent) {
    jframe *f = jx_alloc(c, sizeof *f);
    f->parent = parent;
    f->vars = jd_new(c);
    return f;
}

static void step(jx_ctx *c, const jnode *at) {
    c->cur = at;
    if (++c->steps > c->max_steps) jx_failn(c, at, "render exceeds the step limit (%llu)", (unsigned long long)c->max_steps);
}

static jv *lookup(jx_ctx *c, jframe *f, const jstr *name) {
    for (; f; f = f->parent) {
        jv *v = jd_gets(f->vars, name->s);
        if (v) return v;
    }
    return jd_gets(c->globals->vars, name->s);
}

static jv undef_hint(jx_ctx *c, const char *fmt, const char *a, const char *b) {
    jbuf buf = {0};
    jb_printf(c, &buf, fmt, a, b);
    return jv_undef(jb_str(c, &buf));
}

static const char *obj_desc(jv v) {
    switch (v.t) {
    case JV_NONE: return "None";
    case JV_DICT: return "dict object";
    case JV_LIST: return v.u.l->tuple ? "tuple object" : "list object";
    case JV_STR: return "str object";
    case JV_INT: return "int object";
    case JV_FLOAT: return "float object";
    case JV_BOOL: return "bool object";
    default: return jv_typename(v);
    }
}

static jv loop_attr(jx_ctx *c, const jnode *at, jloop *lp, const char *name);

jv jx_getattr(jx_ctx *c, const jnode *at, jv obj, jstr *name) {
    if (obj.t == JV_UNDEF) jv_undef_fail(c, at, obj);
    if (obj.t == JV_LOOP) return loop_attr(c, at, obj.u.lp, name->s);
    if (obj.t == JV_NS) {
        jv *v = jd_gets(obj.u.d, name->s);
        if (v) return *v;
    } else {
        jv m = jx_method(c, at, obj, name);
        if (m.t != JV_UNDEF || m.u.s) return m; /* a method, or a refused (unsafe) one */
        if (obj.t == JV_DICT) {
            jv *v = jd_gets(obj.u.d, name->s);
            if (v) return *v;
        }
    }
    return undef_hint(c, "'%s' has no attribute '%s'", obj_desc(obj), name->s);
}

static bool as_index(jv k, int64_t *i) {
    if (k.t == JV_INT) *i = k.u.i;
    else if (k.t == JV_BOOL) *i = k.u.b;
    else return false;
    return true;
}

/* Byte offsets of code points of s (n+1 entries). */
static size_t *cp_offsets(jx_ctx *c, const jstr *s, size_t *n) {
    size_t cnt = ju_len(s->s, s->len), i = 0, k = 0;
    size_t *o = jx_alloc(c, (cnt + 1) * sizeof *o);
    while (i < s->len) {
        o[k++] = i;
        ju_decode(s->s, s->len, &i);
    }
    o[k] = s->len;
    *n = cnt;
    return o;
}

jv jx_getitem(jx_ctx *c, const jnode *at, jv obj, jv key) {
    int64_t i;
    if (obj.t == JV_UNDEF) jv_undef_fail(c, at, obj);
    if (key.t == JV_UNDEF) jv_undef_fail(c, at, key);
    switch (obj.t) {
    case JV_DICT:
    case JV_NS: {
        jv *v = jd_get(obj.u.d, key);
        if (v) return *v;
        break;
    }
    case JV_LIST:
        if (as_index(key, &i)) {
            int64_t n = (int64_t)obj.u.l->n;
            if (i < 0) i += n;
            if (i >= 0 && i < n) return obj.u.l->v[i];
            return undef_hint(c, "%s object has no element %s", jv_typename(obj), "(index out of range)");
        }
        break;
    case JV_STR:
        if (as_index(key, &i)) {
            size_t n;
            size_t *o = cp_offsets(c, obj.u.s, &n);
            if (i < 0) i += (int64_t)n;
            if (i >= 0 && i < (int64_t)n) return jv_str(c, obj.u.s->s + o[i], o[i + 1] - o[i]);
            return undef_hint(c, "%s object has no element %s", "str", "(index out of range)");
        }
        break;
    case JV_LOOP:
        if (key.t == JV_STR) return loop_attr(c, at, obj.u.lp, key.u.s->s);
        break;
    default: break;
    }
    if (key.t == JV_STR) return jx_getattr(c, at, obj, key.u.s);
    jbuf b = {0};
    jv_repr_to(c, &b, key);
    return undef_hint(c, "'%s' has no element %s", obj_desc(obj), b.p);
}

static int64_t slice_arg(jx_ctx *c, const jnode *at, jv v, int64_t dflt) {
    int64_t i;
    if (v.t == JV_NONE) return dflt;
    if (!as_index(v, &i)) jx_failn(c, at, "slice indices must be integers or None");
    return i;
}

static jv do_slice(jx_ctx *c, const jnode *at, jv obj, jv s0, jv s1, jv s2) {
    if (obj.t == JV_UNDEF) jv_undef_fail(c, at, obj);
    int64_t step = slice_arg(c, at, s2, 1);
    if (step == 0) jx_failn(c, at, "slice step cannot be zero");
    size_t n = 0, *o = NULL;
    if (obj.t == JV_STR) o = cp_offsets(c, obj.u.s, &n);
    else if (obj.t == JV_LIST) n = obj.u.l->n;
    else jx_failn(c, at, "'%s' object is not subscriptable", jv_typename(obj));
    int64_t len = (int64_t)n;
    int64_t start = slice_arg(c, at, s0, step < 0 ? len - 1 : 0);
    int64_t stop = slice_arg(c, at, s1, step < 0 ? -len - 1 : len);
    /* PySlice_AdjustIndices */
    if (s0.t != JV_NONE) {
        if (start < 0) start = start + len < 0 ? (step < 0 ? -1 : 0) : start + len;
        else if (start >= len) start = step < 0 ? len - 1 : len;
    }
    if (s1.t != JV_NONE) {
        if (stop < 0) stop = stop + len < 0 ? (step < 0 ? -1 : 0) : stop + len;
        else if (stop >= len) stop = step < 0 ? len - 1 : len;
    } else if (step < 0) {
        stop = -1;
    }
    jbuf b = {0};
    jlist *l = obj.t == JV_LIST ? jl_new(c, 0) : NULL;
    if (l) l->tuple = obj.u.l->tuple;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) {
        if (l) jl_push(c, l, obj.u.l->v[i]);
        else jb_put(c, &b, obj.u.s->s + o[i], o[i + 1] - o[i]);
    }
    return l ? jv_listv(l) : jv_strv(jb_str(c, &b));
}

/* ---- loop object -------------------------------------------------------------------- */

static jv loop_cycle(jx_ctx *c, const jnode *at, jv self, jargs *a) {
    if (a->npos == 0) jx_failn(c, at, "no items for cycling given");
    return a->pos[self.u.lp->i % (size_t)a->npos];
}

static jv loop_attr(jx_ctx *c, const jnode *at, jloop *lp, const char *name) {
    int64_t i = (int64_t)lp->i, n = (int64_t)lp->items->n;
    if (!strcmp(name, "index")) return jv_int(i + 1);
    if (!strcmp(name, "index0")) return jv_int(i);
    if (!strcmp(name, "revindex")) return jv_int(n - i);
    if (!strcmp(name, "revindex0")) return jv_int(n - i - 1);
    if (!strcmp(name, "first")) return jv_bool(i == 0);
    if (!strcmp(name, "last")) return jv_bool(i == n - 1);
    if (!strcmp(name, "length")) return jv_int(n);
    if (!strcmp(name, "depth")) return jv_int(lp->depth);
    if (!strcmp(name, "depth0")) return jv_int(lp->depth - 1);
    if (!strcmp(name, "previtem"))
        return i > 0 ? lp->items->v[i - 1] : jv_undef(js_cstr(c, "there is no previous item"));
    if (!strcmp(name, "nextitem"))
        return i + 1 < n ? lp->items->v[i + 1] : jv_undef(js_cstr(c, "there is no next item"));
    if (!strcmp(name, "cycle")) {
        jv self = {.t = JV_LOOP};
        self.u.lp = lp;
        return jv_func(c, "cycle", loop_cycle, self);
    }
    (void)at;
    return undef_hint(c, "'%s' has no attribute '%s'", "LoopContext", name);
}

/* ---- operators ---------------------------------------------------------------------- */

static bool isnum(jv v) { return v.t == JV_INT || v.t == JV_FLOAT || v.t == JV_BOOL; }
static double fnum(jv v) { return v.t == JV_FLOAT ? v.u.f : v.t == JV_INT ? (double)v.u.i : v.u.b; }
static int64_t inum(jv v) { return v.t == JV_INT ? v.u.i : v.t == JV_BOOL ? v.u.b : (int64_t)0; }

static const char *OPSYM[] = {"", "+", "-", "*", "/", "//", "%", "**"};

_Noreturn static void op_fail(jx_ctx *c, const jnode *at, int op, jv a, jv b) {
    jx_failn(c, at, "unsupported operand type(s) for %s: '%s' and '%s'", OPSYM[op], jv_typename(a),
             jv_typename(b));
}

static jv repeat(jx_ctx *c, const jnode *at, jv seq, int64_t k) {
    if (k < 0) k = 0;
    size_t unit = seq.t == JV_STR ? seq.u.s->len : seq.u.l->n * sizeof(jv);
    if (unit && (uint64_t)k > (c->limit / unit)) jx_failn(c, at, "repetition result too large");
    if (seq.t == JV_STR) {
        jbuf b = {0};
        for (int64_t i = 0; i < k; i++) jb_put(c, &b, seq.u.s->s, seq.u.s->len);
        return jv_strv(jb_str(c, &b));
    }
    jlist *l = jl_new(c, 0);
    l->tuple = seq.u.l->tuple;
    for (int64_t i = 0; i < k; i++)
        for (size_t j = 0; j < seq.u.l->n; j++) jl_push(c, l, seq.u.l->v[j]);
    return jv_listv(l);
}

static jv binop(jx_ctx *c, const jnode *at, int op, jv a, jv b) {
    if (a.t == JV_UNDEF) jv_undef_fail(c, at, a);
    if (b.t == JV_UNDEF) jv_undef_fail(c, at, b);
    if (isnum(a) && isnum(b)) {
        bool fl = a.t == JV_FLOAT || b.t == JV_FLOAT;
        int64_t x = inum(a), y = inum(b), r;
        double fx = fnum(a), fy = fnum(b);
        switch (op) {
        case OP_ADD:
            if (fl) return jv_float(fx + fy);
            if (__builtin_add_overflow(x, y, &r)) jx_failn(c, at, "integer overflow");
            return jv_int(r);
        case OP_SUB:
            if (fl) return jv_float(fx - fy);
            if (__builtin_sub_overflow(x, y, &r)) jx_failn(c, at, "integer overflow");
            return jv_int(r);
        case OP_MUL:
            if (fl) return jv_float(fx * fy);
            if (__builtin_mul_overflow(x, y, &r)) jx_failn(c, at, "integer overflow");
            return jv_int(r);
        case OP_DIV:
            if (fy == 0) jx_failn(c, at, "division by zero");
            return jv_float(fx / fy);
        case OP_FLOORDIV:
        case OP_MOD:
            if (fl) {
                if (fy == 0) jx_failn(c, at, "float division by zero");
                double m = fmod(fx, fy), d = (fx - m) / fy;
                if (m != 0) {
                    if ((fy < 0) != (m < 0)) {
                        m += fy;
                        d -= 1.0;
                    }
                } else {
                    m = copysign(0.0, fy);
                }
                if (op == OP_MOD) return jv_float(m);
                if (d != 0) {
                    double fd = floor(d);
                    if (d - fd > 0.5) fd += 1.0;
                    return jv_float(fd);
                }
                return jv_float(copysign(0.0, fx / fy));
            }
            if (y == 0) jx_failn(c, at, "integer division or modulo by zero");
            if (x == INT64_MIN && y == -1) jx_failn(c, at, "integer overflow");
            {
                int64_t q = x / y, m = x % y;
                if (m != 0 && ((m < 0) != (y < 0))) {
                    q--;
                    m += y;
                }
                return jv_int(op == OP_MOD ? m : q);
            }
        case OP_POW:
            if (!fl && y >= 0) {
                int64_t acc = 1, base = x;
                for (int64_t e = y; e > 0; e >>= 1) {
                    if ((e & 1) && __builtin_mul_overflow(acc, base, &acc)) jx_failn(c, at, "integer overflow");
                    if (e > 1 && __builtin_mul_overflow(base, base, &base)) jx_failn(c, at, "integer overflow");
                }
                return jv_int(acc);
            }
            if (fx == 0 && fy < 0) jx_failn(c, at, "zero to a negative power");
            return jv_float(pow(fx, fy));
        default: break;
        }
    }
    if (op == OP_ADD && a.t == JV_STR && b.t == JV_STR) {
        jbuf buf = {0};
        jb_put(c, &buf, a.u.s->s, a.u.s->len);
        jb_put(c, &buf, b.u.s->s, b.u.s->len);
        return jv_strv(jb_str(c, &buf));
    }
    if (op == OP_ADD && a.t == JV_LIST && b.t == JV_LIST && a.u.l->tuple == b.u.l->tuple) {
        jlist *l = jl_new(c, a.u.l->n + b.u.l->n);
        l->tuple = a.u.l->tuple;
        for (size_t i = 0; i < a.u.l->n; i++) jl_push(c, l, a.u.l->v[i]);
        for (size_t i = 0; i < b.u.l->n; i++) jl_push(c, l, b.u.l->v[i]);
        return jv_listv(l);
    }
    if (op == OP_MUL && (a.t == JV_STR || a.t == JV_LIST) && (b.t == JV_INT || b.t == JV_BOOL))
        return repeat(c, at, a, inum(b));
    if (op == OP_MUL && (b.t == JV_STR || b.t == JV_LIST) && (a.t == JV_INT || a.t == JV_BOOL))
        return repeat(c, at, b, inum(a));
    if (op == OP_MOD && a.t == JV_STR) return jx_printf(c, at, a.u.s, b); /* printf-style */
    op_fail(c, at, op, a, b);
}

static bool contains(jx_ctx *c, const jnode *at, jv hay, jv needle) {
    switch (hay.t) {
    case JV_UNDEF: return false;
    case JV_STR:
        if (needle.t != JV_STR)
            jx_failn(c, at, "'in <string>' requires string as left operand, not %s", jv_typename(needle));
        if (needle.u.s->len == 0) return true;
        return jx_memmem(hay.u.s->s, hay.u.s->len, needle.u.s->s, needle.u.s->len) != NULL;
    case JV_LIST:
        for (size_t i = 0; i < hay.u.l->n; i++)
            if (jv_equal(hay.u.l->v[i], needle)) return true;
        return false;
    case JV_DICT:
    case JV_NS: return jd_get(hay.u.d, needle) != NULL;
    default: jx_failn(c, at, "argument of type '%s' is not iterable", jv_typename(hay));
    }
}

static bool compare(jx_ctx *c, const jnode *at, int op, jv a, jv b) {
    switch (op) {
    case OP_EQ: return jv_equal(a, b);
    case OP_NE: return !jv_equal(a, b);
    case OP_LT: return jv_compare(c, at, a, b) < 0;
    case OP_LE: return jv_compare(c, at, a, b) <= 0;
    case OP_GT: return jv_compare(c, at, a, b) > 0;
    case OP_GE: return jv_compare(c, at, a, b) >= 0;
    case OP_IN: return contains(c, at, b, a);
    case OP_NOTIN: return !contains(c, at, b, a);
    default: return false;
    }
}

/* ---- calls ---------------------------------------------------------------------------- */

static void eval_args(jx_ctx *c, jframe *f, const jnode *n, jargs *a, int extra_kw) {
    a->npos = n->nargs;
    a->pos = jx_alloc(c, (size_t)(n->nargs + 1) * sizeof(jv));
    for (int i = 0; i < n->nargs; i++) a->pos[i] = eval(c, f, n->args[i]);
    a->nkw = n->nkw;
    a->kwn = jx_alloc(c, (size_t)(n->nkw + extra_kw + 1) * sizeof(jstr *));
    a->kw = jx_alloc(c, (size_t)(n->nkw + extra_kw + 1) * sizeof(jv));
    for (int i = 0; i < n->nkw; i++) {
        a->kwn[i] = n->kwn[i];
        a->kw[i] = eval(c, f, n->kwv[i]);
    }
}

static jv call_macro(jx_ctx *c, const jnode *at, jfunc *fn, jargs *a) {
    const jnode *m = fn->macro;
    if (++c->depth > c->max_depth) jx_failn(c, at, "macro recursion too deep");
    jframe *f = frame_new(c, fn->closure);
    int np = m->nkw;
    jlist *varargs = jl_new(c, 0);
    varargs->tuple = true;
    jdict *kwargs = jd_new(c);
    jv caller = fn->caller;
    bool *set = jx_alloc(c, (size_t)(np + 1));
    for (int i = 0; i < a->npos; i++) {
        if (i < np) {
            jd_set(c, f->vars, jv_strv(m->kwn[i]), a->pos[i]);
            set[i] = true;
        } else {
            jl_push(c, varargs, a->pos[i]);
        }
    }
    for (int k = 0; k < a->nkw; k++) {
        int i;
        for (i = 0; i < np; i++)
            if (!strcmp(m->kwn[i]->s, a->kwn[k]->s)) break;
        if (i < np) {
            if (set[i]) jx_failn(c, at, "macro '%s' got multiple values for argument '%s'", fn->name ? fn->name : "caller", a->kwn[k]->s);
            jd_set(c, f->vars, jv_strv(m->kwn[i]), a->kw[k]);
            set[i] = true;
        } else if (!strcmp(a->kwn[k]->s, "caller") && m->kind == N_MACRO) {
            caller = a->kw[k];
        } else {
            jd_set(c, kwargs, jv_strv(a->kwn[k]), a->kw[k]);
        }
    }
    for (int i = 0; i < np; i++) {
        if (set[i]) continue;
        jv v = m->kwv[i] ? eval(c, f, m->kwv[i])
                         : undef_hint(c, "parameter '%s' was not provided%s", m->kwn[i]->s, "");
        jd_set(c, f->vars, jv_strv(m->kwn[i]), v);
    }
    jd_set(c, f->vars, jv_cstr(c, "varargs"), jv_listv(varargs));
    jd_set(c, f->vars, jv_cstr(c, "kwargs"), jv_dictv(kwargs));
    if (caller.t != JV_UNDEF) jd_set(c, f->vars, jv_cstr(c, "caller"), caller);
    jbuf *save = c->out, buf = {0};
    c->out = &buf;
    exec_body(c, f, m->body, m->nbody);
    c->out = save;
    c->depth--;
    return jv_strv(jb_str(c, &buf));
}

jv jx_call(jx_ctx *c, const jnode *at, jv fn, jargs *a) {
    if (fn.t == JV_UNDEF) jv_undef_fail(c, at, fn);
    if (fn.t != JV_FUNC) jx_failn(c, at, "'%s' object is not callable", jv_typename(fn));
    if (fn.u.fn->kind == JF_MACRO) return call_macro(c, at, fn.u.fn, a);
    return fn.u.fn->fn(c, at, fn.u.fn->self, a);
}

/* ---- expressions ------------------------------------------------------------------------- */

static jv apply_filters(jx_ctx *c, jframe *f, const jnode *n, jv v) {
    if (!n) return v;
    if (n->a) v = apply_filters(c, f, n->a, v);
    jargs a;
    eval_args(c, f, n, &a, 0);
    return jx_filter(c, n, n->name->s, v, &a);
}

static jv eval(jx_ctx *c, jframe *f, const jnode *n) {
    step(c, n);
    switch (n->kind) {
    case N_CONST: return n->val;
    case N_NAME: {
        jv *v = lookup(c, f, n->name);
        return v ? *v : undef_hint(c, "'%s' is undefined%s", n->name->s, "");
    }
    case N_LIST:
    case N_TUPLE: {
        jlist *l = jl_new(c, (size_t)n->nargs);
        l->tuple = n->kind == N_TUPLE;
        for (int i = 0; i < n->nargs; i++) jl_push(c, l, eval(c, f, n->args[i]));
        return jv_listv(l);
    }
    case N_DICT: {
        jdict *d = jd_new(c);
        for (int i = 0; i < n->nargs; i++) {
            jv k = eval(c, f, n->args[i]);
            if (k.t == JV_LIST && !k.u.l->tuple) jx_failn(c, n, "unhashable type: 'list'");
            if (k.t == JV_DICT) jx_failn(c, n, "unhashable type: 'dict'");
            jd_set(c, d, k, eval(c, f, n->kwv[i]));
        }
        return jv_dictv(d);
    }
    case N_GETATTR: return jx_getattr(c, n, eval(c, f, n->a), n->name);
    case N_GETITEM: {
        jv obj = eval(c, f, n->a);
        if (n->b->kind == N_SLICE) {
            jv s[3];
            for (int i = 0; i < 3; i++) s[i] = n->b->args[i] ? eval(c, f, n->b->args[i]) : jv_none();
            return do_slice(c, n, obj, s[0], s[1], s[2]);
        }
        return jx_getitem(c, n, obj, eval(c, f, n->b));
    }
    case N_SLICE: jx_failn(c, n, "slice outside of a subscript");
    case N_CALL: {
        jv fn = eval(c, f, n->a);
        jargs a;
        eval_args(c, f, n, &a, 0);
        return jx_call(c, n, fn, &a);
    }
    case N_FILTER: {
        jv v = eval(c, f, n->a);
        jargs a;
        eval_args(c, f, n, &a, 0);
        return jx_filter(c, n, n->name->s, v, &a);
    }
    case N_TEST: {
        jv v = eval(c, f, n->a);
        jargs a;
        eval_args(c, f, n, &a, 0);
        return jv_bool(jx_test(c, n, n->name->s, v, &a));
    }
    case N_BINOP: {
        jv a = eval(c, f, n->a);
        return binop(c, n, n->op, a, eval(c, f, n->b));
    }
    case N_NEG:
    case N_POS: {
        jv v = eval(c, f, n->a);
        if (v.t == JV_UNDEF) jv_undef_fail(c, n, v);
        if (v.t == JV_FLOAT) return jv_float(n->kind == N_NEG ? -v.u.f : v.u.f);
        if (v.t == JV_INT || v.t == JV_BOOL) {
            int64_t i = inum(v);
            if (n->kind == N_NEG && i == INT64_MIN) jx_failn(c, n, "integer overflow");
            return jv_int(n->kind == N_NEG ? -i : i);
        }
        jx_failn(c, n, "bad operand type for unary %s: '%s'", n->kind == N_NEG ? "-" : "+", jv_typename(v));
    }
    case N_NOT: return jv_bool(!jv_truthy(eval(c, f, n->a)));
    case N_AND: {
        jv a = eval(c, f, n->a);
        return jv_truthy(a) ? eval(c, f, n->b) : a;
    }
    case N_OR: {
        jv a = eval(c, f, n->a);
        return jv_truthy(a) ? a : eval(c, f, n->b);
    }
    case N_COMPARE: {
        jv a = eval(c, f, n->a);
        for (int i = 0; i < n->nargs; i++) {
            jv b = eval(c, f, n->args[i]);
            if (!compare(c, n, n->ops[i], a, b)) return jv_bool(false);
            a = b;
        }
        return jv_bool(true);
    }
    case N_CONCAT: {
        jbuf b = {0};
        for (int i = 0; i < n->nargs; i++) jv_str_to(c, &b, eval(c, f, n->args[i]));
        return jv_strv(jb_str(c, &b));
    }
    case N_COND:
        if (jv_truthy(eval(c, f, n->a))) return eval(c, f, n->b);
        return n->c ? eval(c, f, n->c) : jv_undef(js_cstr(c, "the inline if-expression evaluated to false and no else section was defined."));
    default: jx_failn(c, n, "statement used as an expression");
    }
}

/* ---- statements ------------------------------------------------------------------------------ */

static void assign(jx_ctx *c, jframe *f, const jnode *target, jv v) {
    if (target->kind == N_NAME) {
        jd_set(c, f->vars, jv_strv(target->name), v);
        return;
    }
    if (target->kind == N_GETATTR) {
        jv *ns = lookup(c, f, target->a->name);
        if (!ns || ns->t != JV_NS) jx_failn(c, target, "cannot assign attribute on non-namespace object");
        if (target->name->s[0] == '_')
            jx_failn(c, target, "chat templates cannot store underscore-prefixed attributes on a namespace");
        jd_set(c, ns->u.d, jv_strv(target->name), v);
        return;
    }
    /* tuple unpacking */
    jlist *l = jv_iter(c, target, v);
    if ((int)l->n != target->nargs)
        jx_failn(c, target, "%s values to unpack (expected %d, got %zu)", (int)l->n > target->nargs ? "too many" : "not enough", target->nargs, l->n);
    for (int i = 0; i < target->nargs; i++) assign(c, f, target->args[i], l->v[i]);
}

static jstr *render_sub(jx_ctx *c, jframe *f, jnode *const *body, int n) {
    jbuf *save = c->out, buf = {0};
    c->out = &buf;
    exec_body(c, f, body, n);
    c->out = save;
    return jb_str(c, &buf);
}

static int exec_for(jx_ctx *c, jframe *f, const jnode *n) {
    jlist *items = jv_iter(c, n->b, eval(c, f, n->b));
    if (n->c) {
        jlist *kept = jl_new(c, items->n);
        for (size_t i = 0; i < items->n; i++) {
            jframe *tf = frame_new(c, f);
            assign(c, tf, n->a, items->v[i]);
            if (jv_truthy(eval(c, tf, n->c))) jl_push(c, kept, items->v[i]);
        }
        items = kept;
    }
    if (items->n == 0) {
        exec_body(c, frame_new(c, f), n->orelse, n->norelse);
        return FLOW_NEXT;
    }
    jloop *lp = jx_alloc(c, sizeof *lp);
    lp->items = items;
    lp->depth = 1;
    jv lv = {.t = JV_LOOP};
    lv.u.lp = lp;
    for (size_t i = 0; i < items->n; i++) {
        lp->i = i;
        jframe *it = frame_new(c, f);
        assign(c, it, n->a, items->v[i]);
        jd_set(c, it->vars, jv_cstr(c, "loop"), lv);
        if (exec_body(c, it, n->body, n->nbody) == FLOW_BREAK) break;
    }
    return FLOW_NEXT;
}

static int exec_stmt(jx_ctx *c, jframe *f, const jnode *n) {
    step(c, n);
    switch (n->kind) {
    case N_DATA: jb_put(c, c->out, n->val.u.s->s, n->val.u.s->len); return FLOW_NEXT;
    case N_OUTPUT: jv_str_to(c, c->out, eval(c, f, n->a)); return FLOW_NEXT;
    case N_IF:
        if (jv_truthy(eval(c, f, n->a))) return exec_body(c, f, n->body, n->nbody);
        return exec_body(c, f, n->orelse, n->norelse);
    case N_FOR: return exec_for(c, f, n);
    case N_SET: assign(c, f, n->a, eval(c, f, n->b)); return FLOW_NEXT;
    case N_SETBLOCK: {
        jv v = jv_strv(render_sub(c, frame_new(c, f), n->body, n->nbody));
        assign(c, f, n->a, apply_filters(c, f, n->c, v));
        return FLOW_NEXT;
    }
    case N_FILTERBLOCK: {
        jv v = jv_strv(render_sub(c, frame_new(c, f), n->body, n->nbody));
        jv_str_to(c, c->out, apply_filters(c, f, n->c, v));
        return FLOW_NEXT;
    }
    case N_MACRO:
    case N_CALLBLOCK: {
        jfunc *fn = jx_alloc(c, sizeof *fn);
        fn->kind = JF_MACRO;
        fn->macro = n;
        fn->closure = f;
        fn->name = n->kind == N_MACRO ? n->name->s : NULL;
        jv fv = {.t = JV_FUNC};
        fv.u.fn = fn;
        if (n->kind == N_MACRO) {
            jd_set(c, f->vars, jv_strv(n->name), fv);
            return FLOW_NEXT;
        }
        const jnode *call = n->a;
        jv callee = eval(c, f, call->a);
        jargs a;
        eval_args(c, f, call, &a, 1);
        a.kwn[a.nkw] = js_cstr(c, "caller");
        a.kw[a.nkw++] = fv;
        jv_str_to(c, c->out, jx_call(c, call, callee, &a));
        return FLOW_NEXT;
    }
    case N_WITH: {
        jframe *w = frame_new(c, f);
        for (int i = 0; i < n->nkw; i++) jd_set(c, w->vars, jv_strv(n->kwn[i]), eval(c, f, n->kwv[i]));
        return exec_body(c, w, n->body, n->nbody);
    }
    case N_SCOPE: return exec_body(c, f, n->body, n->nbody);
    case N_BREAK: return FLOW_BREAK;
    case N_CONTINUE: return FLOW_CONTINUE;
    default: jx_failn(c, n, "expression used as a statement");
    }
}

static int exec_body(jx_ctx *c, jframe *f, jnode *const *body, int n) {
    if (++c->depth > c->max_depth) jx_failn(c, c->cur, "recursion too deep");
    for (int i = 0; i < n; i++) {
        int fl = exec_stmt(c, f, body[i]);
        if (fl != FLOW_NEXT) {
            c->depth--;
            return fl;
        }
    }
    c->depth--;
    return FLOW_NEXT;
}

void jx_render(jx_ctx *c, jnode *root, jdict *vars) {
    jframe *g = frame_new(c, NULL);
    jx_add_globals(c, g->vars);
    c->globals = g;
    jframe *f = frame_new(c, NULL);
    f->vars = vars;
    exec_body(c, f, root->body, root->nbody);
}
