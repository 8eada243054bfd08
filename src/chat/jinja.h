/*
 * jinja.h - internals of lmx's Jinja2-subset template engine (chat templates).
 *
 * Pipeline: source -> jinja_lexer.c (tokens, with Jinja's whitespace control,
 * trim_blocks and lstrip_blocks as transformers configures them) ->
 * jinja_parser.c (AST) -> jinja_eval.c (render). Values (jinja_value.c) are
 * Python-like: none/bool/int/float/str/list/tuple/dict/namespace/callable and
 * Jinja's Undefined. Everything of one render lives in one arena (jx_ctx) that
 * is freed at the end, so errors unwind with longjmp without leaking: every
 * failure goes through jx_fail(), which records "template:LINE:COL: message"
 * and jumps back to the entry point (chat_render.c).
 *
 * defines: jv (value), jx_ctx (arena, limits, error), jnode (AST), the lexer,
 * parser, evaluator, filters/tests, methods and JSON entry points.
 */
#ifndef LMX_JINJA_H
#define LMX_JINJA_H

#include "base/base.h"

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- values -------------------------------------------------------------- */

typedef enum jv_type {
    JV_UNDEF = 0, /* Jinja's Undefined; u.s holds the error hint (may be NULL) */
    JV_NONE,
    JV_BOOL,
    JV_INT,
    JV_FLOAT,
    JV_STR,
    JV_LIST, /* also tuples (jlist.tuple) */
    JV_DICT,
    JV_NS,   /* namespace(): a dict with attribute assignment */
    JV_FUNC, /* macro, builtin function or bound method */
    JV_LOOP, /* the `loop` object of a for loop */
} jv_type;

typedef struct jstr {
    size_t len;
    char s[]; /* NUL-terminated */
} jstr;

typedef struct jv {
    uint8_t t;
    union {
        bool b;
        int64_t i;
        double f;
        jstr *s;
        struct jlist *l;
        struct jdict *d;
        struct jfunc *fn;
        struct jloop *lp;
    } u;
} jv;

typedef struct jlist {
    size_t n, cap;
    jv *v;
    bool tuple;
} jlist;

typedef struct jdict { /* insertion-ordered, linear lookup (templates are small) */
    size_t n, cap;
    jv *k, *v;
} jdict;

typedef struct jx_ctx jx_ctx;
typedef struct jnode jnode;
typedef struct jframe jframe;

/* Call arguments: positional then keyword. */
typedef struct jargs {
    int npos, nkw;
    jv *pos;
    jstr **kwn;
    jv *kw;
} jargs;

typedef jv (*jbuiltin_fn)(jx_ctx *c, const jnode *at, jv self, jargs *a);

typedef enum { JF_BUILTIN, JF_MACRO } jfunc_kind;
typedef struct jfunc {
    jfunc_kind kind;
    const char *name;
    jbuiltin_fn fn;      /* JF_BUILTIN */
    jv self;             /* bound object for methods */
    const jnode *macro;  /* JF_MACRO: N_MACRO or N_CALLBLOCK node */
    jframe *closure;     /* JF_MACRO: scope of definition */
    jv caller;           /* JF_MACRO: `caller` passed by {% call %} (JV_UNDEF if none) */
} jfunc;

typedef struct jloop {
    jlist *items;
    size_t i;
    int depth;
} jloop;

/* ---- context --------------------------------------------------------------- */

typedef struct jbuf {
    char *p;
    size_t n, cap;
} jbuf;

struct jx_ctx {
    jmp_buf *jb;
    lmx_status status;
    char msg[1024];
    struct jchunk *chunks;
    size_t used, limit;   /* arena bytes handed out, cap */
    uint64_t steps, max_steps;
    int depth, max_depth;
    jbuf *out;            /* current output buffer */
    jframe *globals;
    const jnode *cur;     /* node being evaluated (positions for limit errors) */
    const char *src;      /* normalized source (for positions) */
};

/* Records "template:LINE:COL: message" (line 0: "template: message") and
 * longjmps to the render entry point. */
_Noreturn void jx_fail(jx_ctx *c, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
_Noreturn void jx_failn(jx_ctx *c, const jnode *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void *jx_alloc(jx_ctx *c, size_t n); /* zeroed, never NULL (fails via jx_fail) */
void jx_free_all(jx_ctx *c);

void jb_put(jx_ctx *c, jbuf *b, const char *s, size_t n);
void jb_puts(jx_ctx *c, jbuf *b, const char *s);
void jb_putc(jx_ctx *c, jbuf *b, char ch);
void jb_printf(jx_ctx *c, jbuf *b, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
jstr *jb_str(jx_ctx *c, jbuf *b);

/* ---- value helpers (jinja_value.c) ---------------------------------------- */

static inline jv jv_undef(jstr *hint) { jv v = {.t = JV_UNDEF}; v.u.s = hint; return v; }
static inline jv jv_none(void) { jv v = {.t = JV_NONE}; return v; }
static inline jv jv_bool(bool b) { jv v = {.t = JV_BOOL}; v.u.b = b; return v; }
static inline jv jv_int(int64_t i) { jv v = {.t = JV_INT}; v.u.i = i; return v; }
static inline jv jv_float(double f) { jv v = {.t = JV_FLOAT}; v.u.f = f; return v; }
static inline jv jv_strv(jstr *s) { jv v = {.t = JV_STR}; v.u.s = s; return v; }
static inline jv jv_listv(jlist *l) { jv v = {.t = JV_LIST}; v.u.l = l; return v; }
static inline jv jv_dictv(jdict *d) { jv v = {.t = JV_DICT}; v.u.d = d; return v; }

jstr *js_new(jx_ctx *c, const char *s, size_t n);
jstr *js_cstr(jx_ctx *c, const char *s);
jv jv_str(jx_ctx *c, const char *s, size_t n);
jv jv_cstr(jx_ctx *c, const char *s);
jlist *jl_new(jx_ctx *c, size_t cap);
void jl_push(jx_ctx *c, jlist *l, jv v);
jdict *jd_new(jx_ctx *c);
jv *jd_get(const jdict *d, jv key);            /* NULL when absent */
jv *jd_gets(const jdict *d, const char *key);  /* string key */
void jd_set(jx_ctx *c, jdict *d, jv key, jv val);
jv jv_func(jx_ctx *c, const char *name, jbuiltin_fn fn, jv self);

bool jv_truthy(jv v);
bool jv_equal(jv a, jv b);
/* Python ordering; fails (TypeError) on incomparable types. */
int jv_compare(jx_ctx *c, const jnode *at, jv a, jv b);
const char *jv_typename(jv v);
/* Python str() / repr() appended to b. */
void jv_str_to(jx_ctx *c, jbuf *b, jv v);
void jv_repr_to(jx_ctx *c, jbuf *b, jv v);
jstr *jv_tostr(jx_ctx *c, jv v);          /* str(v); Undefined -> "" */
void jx_float_repr(double f, char *out, size_t cap); /* Python repr(float) */
/* Materializes an iterable as a list (str: chars, dict: keys, undefined: empty). */
jlist *jv_iter(jx_ctx *c, const jnode *at, jv v);
/* Python len(); fails on objects without one. */
int64_t jv_len(jx_ctx *c, const jnode *at, jv v);
/* Undefined in a strict position: fails with its hint. */
_Noreturn void jv_undef_fail(jx_ctx *c, const jnode *at, jv v);

/* UTF-8 helpers */
int32_t ju_decode(const char *s, size_t n, size_t *i); /* next code point, advances *i */
size_t ju_encode(int32_t cp, char *out);
size_t ju_len(const char *s, size_t n);               /* code points */
bool ju_isspace(int32_t cp);                           /* Python str.isspace */
const char *jx_memmem(const char *h, size_t hn, const char *n, size_t nn);

/* ---- AST ------------------------------------------------------------------ */

typedef enum jnode_kind {
    /* expressions */
    N_CONST, N_NAME, N_LIST, N_TUPLE, N_DICT, N_GETATTR, N_GETITEM, N_SLICE, N_CALL,
    N_FILTER, N_TEST, N_BINOP, N_NEG, N_POS, N_NOT, N_AND, N_OR, N_COMPARE, N_CONCAT,
    N_COND,
    /* statements */
    N_DATA, N_OUTPUT, N_IF, N_FOR, N_SET, N_SETBLOCK, N_MACRO, N_CALLBLOCK, N_BREAK,
    N_CONTINUE, N_FILTERBLOCK, N_SCOPE, N_WITH,
} jnode_kind;

typedef enum jop {
    OP_ADD = 1, OP_SUB, OP_MUL, OP_DIV, OP_FLOORDIV, OP_MOD, OP_POW,
    OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_NOTIN,
} jop;

struct jnode {
    uint8_t kind;
    uint8_t op;       /* jop; N_TEST: 1 = negated */
    int line, col;
    jnode *a, *b, *c; /* operands / target, iterable, condition */
    jstr *name;       /* identifier, attribute, filter/test/macro name */
    jv val;           /* N_CONST, N_DATA */
    jnode **args;     /* call/filter/test args, list items, dict keys, compare operands */
    int nargs;
    jstr **kwn;       /* keyword names (call); parameter names (macro) */
    jnode **kwv;      /* keyword values; parameter defaults (NULL = none); dict values */
    int nkw;
    uint8_t *ops;     /* N_COMPARE: operator per operand */
    jnode **body;
    int nbody;
    jnode **orelse;   /* else / elif chain */
    int norelse;
};

/* ---- stages --------------------------------------------------------------- */

typedef enum jtok_type {
    T_EOF, T_DATA, T_VAR_BEGIN, T_VAR_END, T_BLOCK_BEGIN, T_BLOCK_END, T_NAME, T_STRING,
    T_INT, T_FLOAT, T_OP,
} jtok_type;

typedef struct jtok {
    uint8_t type;
    int line, col;
    const char *p; /* T_NAME/T_OP: text in source; T_DATA/T_STRING: decoded value */
    size_t n;
    int64_t i;
    double f;
} jtok;

typedef struct jtoks {
    jtok *v;
    size_t n, cap;
} jtoks;

/* Normalizes newlines (\r\n, \r -> \n, one trailing newline dropped, as Jinja
 * does) and tokenizes. */
void jx_lex(jx_ctx *c, const char *src, size_t n, jtoks *out);
/* Parses tokens into an N_SCOPE node holding the template body. */
jnode *jx_parse(jx_ctx *c, const jtoks *toks);
/* Renders the template with the given root variables into c->out. */
void jx_render(jx_ctx *c, jnode *root, jdict *vars);

/* Evaluator services used by filters and methods (jinja_eval.c). */
jv jx_getattr(jx_ctx *c, const jnode *at, jv obj, jstr *name);
jv jx_getitem(jx_ctx *c, const jnode *at, jv obj, jv key);
jv jx_call(jx_ctx *c, const jnode *at, jv fn, jargs *a);

/* Filters and tests (jinja_filters.c, jinja_tests.c). */
jv jx_filter(jx_ctx *c, const jnode *at, const char *name, jv v, jargs *a);
bool jx_test(jx_ctx *c, const jnode *at, const char *name, jv v, jargs *a);
bool jx_has_filter(const char *name);
bool jx_has_test(const char *name);
/* Python methods of str/dict/list (jinja_methods.c); JV_UNDEF when none. */
jv jx_method(jx_ctx *c, const jnode *at, jv obj, jstr *name);
/* Globals: range, namespace, dict, raise_exception, strftime_now, ... */
void jx_add_globals(jx_ctx *c, jdict *g);
/* Argument helpers: fetch positional i or keyword name; JV_UNDEF if absent. */
jv ja_get(jargs *a, int i, const char *kw);
void ja_check(jx_ctx *c, const jnode *at, const char *fn, jargs *a, int max_pos, const char *const *kws);

/* JSON (jinja_json.c): parse text into values (ints stay ints); dump like
 * Python's json.dumps(ensure_ascii, indent, separators, sort_keys). */
jv jx_json_parse(jx_ctx *c, const char *text, size_t n, const char *what);
typedef struct jjson_opts {
    bool ensure_ascii, sort_keys;
    int indent;                /* -1: none */
    const char *indent_str;    /* when non-NULL, used instead of `indent` spaces */
    const char *item_sep, *key_sep;
} jjson_opts;
void jx_json_dump(jx_ctx *c, const jnode *at, jbuf *b, jv v, const jjson_opts *o);

/* Python string helpers shared by filters and methods (jinja_methods.c). */
jv jx_str_strip(jx_ctx *c, jstr *s, jv chars, bool left, bool right);
jstr *jx_str_case(jx_ctx *c, jstr *s, int mode); /* 0 lower 1 upper 2 title 3 capitalize */
jv jx_str_replace(jx_ctx *c, jstr *s, jstr *old, jstr *new_, int64_t count);
/* Formatting (jinja_format.c): Python's str.format and printf-style `%`
 * (args: a tuple for several values, a dict for %(name)s). */
jv jx_pyformat(jx_ctx *c, const jnode *at, jstr *fmt, jargs *a);
jv jx_printf(jx_ctx *c, const jnode *at, jstr *fmt, jv args);

#endif /* LMX_JINJA_H */
