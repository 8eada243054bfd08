/*
 * chat_render.c - entry points of the template engine: set up a render
 * context (arena + error jump), build the variables, lex, parse, render, and
 * hand the text back as a malloc'ed string.
 */
#include "chat/chat.h"
#include "chat/jinja.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_BYTES ((size_t)256 << 20)
#define DEFAULT_MAX_STEPS 50000000ull

typedef void (*build_fn)(jx_ctx *c, const void *arg, jdict *vars);

static lmx_status run(const char *src, size_t n, const lmx_chat_limits *lim, build_fn build,
                      const void *arg, char **out) {
    if (!src || !out) return lmx_err(LMX_ERR_INVALID_ARG, "chat template: NULL argument");
    jx_ctx *volatile c = calloc(1, sizeof *c);
    jmp_buf *volatile jb = malloc(sizeof *jb);
    if (!c || !jb) {
        free(c);
        free(jb);
        return lmx_err(LMX_ERR_NOMEM, "out of memory");
    }
    c->jb = jb;
    c->limit = lim && lim->max_bytes ? lim->max_bytes : DEFAULT_MAX_BYTES;
    c->max_steps = lim && lim->max_steps ? lim->max_steps : DEFAULT_MAX_STEPS;
    c->max_depth = 200;
    char *volatile result = NULL;
    if (setjmp(*jb) == 0) {
        jdict *vars = jd_new(c);
        build(c, arg, vars);
        jtoks toks = {0};
        jx_lex(c, src, n, &toks);
        jnode *root = jx_parse(c, &toks);
        jbuf buf = {0};
        c->out = &buf;
        jx_render(c, root, vars);
        result = malloc(buf.n + 1);
        if (!result) {
            c->status = LMX_ERR_NOMEM;
            snprintf(c->msg, sizeof c->msg, "out of memory");
        } else {
            if (buf.n) memcpy(result, buf.p, buf.n);
            result[buf.n] = 0;
        }
    }
    lmx_status st = c->status;
    if (st != LMX_OK) {
        lmx_err(st, "%s", c->msg);
        free(result);
    } else {
        *out = result;
    }
    jx_free_all(c);
    free(c);
    free(jb);
    return st;
}

/* ---- plain render -------------------------------------------------------------------- */

static void build_vars(jx_ctx *c, const void *arg, jdict *vars) {
    const char *json = arg;
    if (!json) return;
    jv v = jx_json_parse(c, json, strlen(json), "template variables");
    if (v.t != JV_DICT) {
        c->status = LMX_ERR_INVALID_ARG;
        snprintf(c->msg, sizeof c->msg, "template variables: expected a JSON object");
        longjmp(*c->jb, 1);
    }
    for (size_t i = 0; i < v.u.d->n; i++) jd_set(c, vars, v.u.d->k[i], v.u.d->v[i]);
}

lmx_status lmx_chat_render_ex(const char *template_src, size_t template_len, const char *vars_json,
                              const lmx_chat_limits *limits, char **out) {
    return run(template_src, template_len, limits, build_vars, vars_json, out);
}

lmx_status lmx_chat_render(const char *template_src, const char *vars_json, char **out) {
    if (!template_src) return lmx_err(LMX_ERR_INVALID_ARG, "chat template: NULL template");
    return run(template_src, strlen(template_src), NULL, build_vars, vars_json, out);
}

/* ---- transformers' apply_chat_template --------------------------------------------------- */

__attribute__((format(printf, 2, 3))) _Noreturn static void bad_input(jx_ctx *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    c->status = LMX_ERR_INVALID_ARG;
    vsnprintf(c->msg, sizeof c->msg, fmt, ap);
    va_end(ap);
    longjmp(*c->jb, 1);
}

/* _normalize_chat_messages + _alias_reasoning_fields */
static jv normalize_message(jx_ctx *c, jv m, size_t i) {
    if (m.t != JV_DICT) bad_input(c, "messages[%zu]: chat messages should be JSON objects", i);
    jdict *d = jd_new(c);
    for (size_t k = 0; k < m.u.d->n; k++)
        if (m.u.d->v[k].t != JV_NONE) jd_set(c, d, m.u.d->k[k], m.u.d->v[k]);
    static const char *const fields[] = {"reasoning_content", "thinking", "reasoning"};
    jv *reasoning = NULL;
    for (int f = 0; f < 3 && !reasoning; f++) reasoning = jd_gets(d, fields[f]);
    if (!reasoning) return jv_dictv(d);
    jv r = *reasoning;
    jdict *a = jd_new(c); /* {"thinking": r, **message, "reasoning_content": r} */
    jd_set(c, a, jv_cstr(c, "thinking"), r);
    for (size_t k = 0; k < d->n; k++) jd_set(c, a, d->k[k], d->v[k]);
    jd_set(c, a, jv_cstr(c, "reasoning_content"), r);
    return jv_dictv(a);
}

static void build_chat(jx_ctx *c, const void *arg, jdict *vars) {
    const lmx_chat_inputs *in = arg;
    if (!in->messages_json) bad_input(c, "messages: missing");
    jv msgs = jx_json_parse(c, in->messages_json, strlen(in->messages_json), "messages");
    if (msgs.t != JV_LIST) bad_input(c, "messages: expected a JSON array of message objects");
    if (msgs.u.l->n == 0) bad_input(c, "messages: cannot apply a chat template to an empty conversation");
    jlist *norm = jl_new(c, msgs.u.l->n);
    for (size_t i = 0; i < msgs.u.l->n; i++) jl_push(c, norm, normalize_message(c, msgs.u.l->v[i], i));
    jd_set(c, vars, jv_cstr(c, "messages"), jv_listv(norm));
    jd_set(c, vars, jv_cstr(c, "tools"), jv_none());
    jd_set(c, vars, jv_cstr(c, "documents"), jv_none());
    jd_set(c, vars, jv_cstr(c, "add_generation_prompt"), jv_bool(in->add_generation_prompt));
    if (in->bos_token) jd_set(c, vars, jv_cstr(c, "bos_token"), jv_cstr(c, in->bos_token));
    if (in->eos_token) jd_set(c, vars, jv_cstr(c, "eos_token"), jv_cstr(c, in->eos_token));
    if (in->thinking_default) jd_set(c, vars, jv_cstr(c, "enable_thinking"), jv_bool(true));
    if (in->extra_json) {
        jv x = jx_json_parse(c, in->extra_json, strlen(in->extra_json), "chat template config");
        if (x.t != JV_DICT) bad_input(c, "chat template config: expected a JSON object");
        for (size_t i = 0; i < x.u.d->n; i++) jd_set(c, vars, x.u.d->k[i], x.u.d->v[i]);
    }
}

lmx_status lmx_chat_apply_template(const char *template_src, const lmx_chat_inputs *in, char **out) {
    if (!template_src || !in) return lmx_err(LMX_ERR_INVALID_ARG, "chat template: NULL argument");
    return run(template_src, strlen(template_src), NULL, build_chat, in, out);
}
