/* pretokenizer.c - HF pre-tokenizers: Split (PCRE2), ByteLevel, Metaspace,
 * Whitespace, WhitespaceSplit, Digits, Punctuation, Sequence. */
#include "tokenizer/tok_internal.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#define GPT2_REGEX                                                                           \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define PUNCT_REGEX "[\\p{P}\\x{21}-\\x{2F}\\x{3A}-\\x{40}\\x{5B}-\\x{60}\\x{7B}-\\x{7E}]"

/* ---- pieces ------------------------------------------------------------------- */

void tok_pieces_reset(tok_pieces *p) {
    p->text.n = 0;
    p->n = 0;
}

void tok_pieces_free(tok_pieces *p) {
    tok_sbuf_free(&p->text);
    free(p->v);
    memset(p, 0, sizeof *p);
}

void tok_pieces_add(tok_pieces *p, const char *s, size_t len, bool first) {
    if (!len) return;
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 32;
        tok_piece *v = realloc(p->v, cap * sizeof *v);
        if (!v) {
            p->text.oom = true;
            return;
        }
        p->v = v;
        p->cap = cap;
    }
    size_t start = p->text.n;
    tok_sbuf_put(&p->text, s, len);
    if (p->text.oom) return;
    p->v[p->n++] = (tok_piece){start, len, first};
}

/* ---- parsing -------------------------------------------------------------------- */

void tok_pretok_free(tok_pretok *p) {
    if (!p) return;
    for (size_t i = 0; i < p->n_kids; i++) tok_pretok_free(p->kids[i]);
    free(p->kids);
    tok_regex_free(&p->re);
    free(p);
}

static lmx_status parse_behavior(const cJSON *j, const char *path, tok_split_behavior dflt,
                                 tok_split_behavior *out) {
    const char *b = tok_jstr(j, "behavior");
    *out = dflt;
    if (!b) return LMX_OK;
    if (!strcmp(b, "Removed")) *out = SPLIT_REMOVED;
    else if (!strcmp(b, "Isolated")) *out = SPLIT_ISOLATED;
    else if (!strcmp(b, "MergedWithPrevious")) *out = SPLIT_MERGED_PREV;
    else if (!strcmp(b, "MergedWithNext")) *out = SPLIT_MERGED_NEXT;
    else if (!strcmp(b, "Contiguous")) *out = SPLIT_CONTIGUOUS;
    else return lmx_err(LMX_ERR_UNSUPPORTED, "%s: split behavior \"%s\" is not supported", path, b);
    return LMX_OK;
}

static lmx_status compile_c(tok_regex *re, const char *pat, const char *path) {
    return tok_regex_compile(re, pat, strlen(pat), false, path);
}

lmx_status tok_pretok_parse(const cJSON *j, const char *path, tok_pretok **out) {
    *out = NULL;
    if (!j || cJSON_IsNull(j)) return LMX_OK;
    const char *type = tok_jstr(j, "type");
    if (!type) return lmx_err(LMX_ERR_FORMAT, "%s: pre_tokenizer: missing \"type\"", path);
    tok_pretok *p = calloc(1, sizeof *p);
    if (!p) return lmx_err(LMX_ERR_NOMEM, "%s: pre_tokenizer: out of memory", path);
    lmx_status st = LMX_OK;
    if (!strcmp(type, "Split")) {
        p->type = TP_SPLIT;
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(j, "pattern");
        const char *s = tok_jstr(pat, "String"), *r = tok_jstr(pat, "Regex");
        if (s) st = tok_regex_compile(&p->re, s, strlen(s), true, path);
        else if (r) st = tok_regex_compile(&p->re, r, strlen(r), false, path);
        else st = lmx_err(LMX_ERR_FORMAT, "%s: pre_tokenizer Split: missing pattern", path);
        if (st == LMX_OK) st = parse_behavior(j, path, SPLIT_ISOLATED, &p->behavior);
        p->invert = tok_jbool(j, "invert", 0);
    } else if (!strcmp(type, "ByteLevel")) {
        p->type = TP_BYTELEVEL;
        p->add_prefix_space = tok_jbool(j, "add_prefix_space", 1);
        p->use_regex = tok_jbool(j, "use_regex", 1);
        if (p->use_regex) st = compile_c(&p->re, GPT2_REGEX, path);
        tok_bytelevel_init();
    } else if (!strcmp(type, "Metaspace")) {
        p->type = TP_METASPACE;
        const char *r = tok_jstr(j, "replacement");
        if (!r) r = "\xE2\x96\x81";
        p->repl_len = strlen(r);
        if (p->repl_len == 0 || p->repl_len >= sizeof p->repl)
            st = lmx_err(LMX_ERR_FORMAT, "%s: Metaspace: bad replacement", path);
        else memcpy(p->repl, r, p->repl_len);
        const char *ps = tok_jstr(j, "prepend_scheme");
        if (ps) p->prepend = !strcmp(ps, "first") ? PREPEND_FIRST : !strcmp(ps, "never") ? PREPEND_NEVER : PREPEND_ALWAYS;
        else p->prepend = tok_jbool(j, "add_prefix_space", 1) ? PREPEND_ALWAYS : PREPEND_NEVER;
        p->split = tok_jbool(j, "split", 1);
        if (st == LMX_OK) st = tok_regex_compile(&p->re, p->repl, p->repl_len, true, path);
    } else if (!strcmp(type, "Whitespace")) {
        p->type = TP_WHITESPACE;
        st = compile_c(&p->re, "\\w+|[^\\w\\s]+", path);
    } else if (!strcmp(type, "WhitespaceSplit")) {
        p->type = TP_WS_SPLIT;
        st = compile_c(&p->re, "\\s+", path);
    } else if (!strcmp(type, "Digits")) {
        p->type = TP_DIGITS;
        st = compile_c(&p->re, tok_jbool(j, "individual_digits", 0) ? "\\p{N}" : "\\p{N}+", path);
    } else if (!strcmp(type, "Punctuation")) {
        p->type = TP_PUNCT;
        st = parse_behavior(j, path, SPLIT_ISOLATED, &p->behavior);
        if (st == LMX_OK) st = compile_c(&p->re, PUNCT_REGEX, path);
    } else if (!strcmp(type, "Sequence")) {
        p->type = TP_SEQ;
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "pretokenizers");
        if (!cJSON_IsArray(arr)) st = lmx_err(LMX_ERR_FORMAT, "%s: pre_tokenizer Sequence: missing \"pretokenizers\"", path);
        else {
            p->kids = calloc((size_t)cJSON_GetArraySize(arr) + 1, sizeof *p->kids);
            const cJSON *e;
            cJSON_ArrayForEach(e, arr) {
                if (st != LMX_OK) break;
                tok_pretok *k;
                st = tok_pretok_parse(e, path, &k);
                if (st == LMX_OK && k) p->kids[p->n_kids++] = k;
            }
        }
    } else {
        st = lmx_err(LMX_ERR_UNSUPPORTED, "%s: pre_tokenizer type \"%s\" is not supported", path, type);
    }
    if (st != LMX_OK) {
        tok_pretok_free(p);
        return st;
    }
    *out = p;
    return LMX_OK;
}

lmx_status tok_pretok_regex_list(const char *const *patterns, size_t n, const char *where,
                                 tok_pretok **out) {
    tok_bytelevel_init();
    tok_pretok *seq = calloc(1, sizeof *seq);
    if (!seq || !(seq->kids = calloc(n + 1, sizeof *seq->kids))) {
        free(seq);
        return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", where);
    }
    seq->type = TP_SEQ;
    for (size_t i = 0; i <= n; i++) {
        tok_pretok *k = calloc(1, sizeof *k);
        if (!k) {
            tok_pretok_free(seq);
            return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", where);
        }
        seq->kids[seq->n_kids++] = k;
        if (i == n) {
            k->type = TP_BYTELEVEL; /* no prefix space, no regex */
            break;
        }
        k->type = TP_SPLIT;
        k->behavior = SPLIT_ISOLATED;
        lmx_status st = compile_c(&k->re, patterns[i], where);
        if (st != LMX_OK) {
            tok_pretok_free(seq);
            return st;
        }
    }
    *out = seq;
    return LMX_OK;
}

/* ---- applying ------------------------------------------------------------------ */

typedef struct seg {
    size_t a, b;
    bool m;
} seg;

typedef struct segs {
    seg *v;
    size_t n, cap;
} segs;

static void segs_push(segs *s, size_t a, size_t b, bool m) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 32;
        seg *v = realloc(s->v, cap * sizeof *v);
        if (!v) return; /* drops a split on OOM; output stays valid */
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = (seg){a, b, m};
}

/* Splits one piece by re with an HF split behavior, appending to out. */
static void split_piece(const tok_regex *re, tok_split_behavior beh, bool invert, const char *s,
                        size_t len, bool first, pcre2_match_data *md, segs *m, segs *r,
                        tok_pieces *out) {
    m->n = r->n = 0;
    size_t pos = 0, ms, me;
    while (tok_regex_next(re, md, s, len, pos, &ms, &me)) {
        if (ms > pos) segs_push(m, pos, ms, false);
        segs_push(m, ms, me, true);
        pos = me;
    }
    if (pos < len) segs_push(m, pos, len, false);
    if (invert)
        for (size_t i = 0; i < m->n; i++) m->v[i].m = !m->v[i].m;
    bool prev = false;
    switch (beh) {
    case SPLIT_REMOVED:
        for (size_t i = 0; i < m->n; i++)
            if (!m->v[i].m) segs_push(r, m->v[i].a, m->v[i].b, false);
        break;
    case SPLIT_ISOLATED:
        for (size_t i = 0; i < m->n; i++) segs_push(r, m->v[i].a, m->v[i].b, false);
        break;
    case SPLIT_MERGED_PREV:
        for (size_t i = 0; i < m->n; i++) {
            if (m->v[i].m && !prev && r->n) r->v[r->n - 1].b = m->v[i].b;
            else segs_push(r, m->v[i].a, m->v[i].b, false);
            prev = m->v[i].m;
        }
        break;
    case SPLIT_MERGED_NEXT:
        for (size_t k = m->n; k-- > 0;) {
            if (m->v[k].m && !prev && r->n) r->v[r->n - 1].a = m->v[k].a;
            else segs_push(r, m->v[k].a, m->v[k].b, false);
            prev = m->v[k].m;
        }
        for (size_t i = 0; i < r->n / 2; i++) {
            seg t = r->v[i];
            r->v[i] = r->v[r->n - 1 - i];
            r->v[r->n - 1 - i] = t;
        }
        break;
    case SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < m->n; i++) {
            if (m->v[i].m == prev && r->n) r->v[r->n - 1].b = m->v[i].b;
            else segs_push(r, m->v[i].a, m->v[i].b, false);
            prev = m->v[i].m;
        }
        break;
    }
    for (size_t i = 0; i < r->n; i++)
        tok_pieces_add(out, s + r->v[i].a, r->v[i].b - r->v[i].a, first && r->v[i].a == 0);
}

static void swap_pieces(tok_pieces *a, tok_pieces *b) {
    tok_pieces t = *a;
    *a = *b;
    *b = t;
}

static void apply(const tok_pretok *p, tok_pieces *in, tok_pieces *tmp, pcre2_match_data *md, segs *m,
                  segs *r) {
    tok_pieces_reset(tmp);
    switch (p->type) {
    case TP_SEQ:
        for (size_t i = 0; i < p->n_kids; i++) apply(p->kids[i], in, tmp, md, m, r);
        return;
    case TP_SPLIT:
    case TP_WHITESPACE:
    case TP_WS_SPLIT:
    case TP_DIGITS:
    case TP_PUNCT:
    case TP_BERT: {
        tok_split_behavior beh = p->behavior;
        bool inv = p->invert;
        if (p->type == TP_WHITESPACE) beh = SPLIT_REMOVED, inv = true;
        else if (p->type == TP_WS_SPLIT) beh = SPLIT_REMOVED, inv = false;
        else if (p->type == TP_DIGITS) beh = SPLIT_ISOLATED, inv = false;
        for (size_t i = 0; i < in->n; i++) {
            const char *s = in->text.p + in->v[i].start;
            split_piece(&p->re, beh, inv, s, in->v[i].len, in->v[i].first, md, m, r, tmp);
        }
        break;
    }
    case TP_BYTELEVEL: {
        tok_pieces *src = in;
        tok_pieces t2 = {0};
        if (p->add_prefix_space || p->use_regex) {
            for (size_t i = 0; i < in->n; i++) {
                const char *s = in->text.p + in->v[i].start;
                size_t len = in->v[i].len;
                tok_sbuf w = {0};
                if (p->add_prefix_space && s[0] != ' ') tok_sbuf_putc(&w, ' ');
                tok_sbuf_put(&w, s, len);
                if (p->use_regex) split_piece(&p->re, SPLIT_ISOLATED, false, w.p, w.n, in->v[i].first, md, m, r, &t2);
                else tok_pieces_add(&t2, w.p, w.n, in->v[i].first);
                tok_sbuf_free(&w);
            }
            src = &t2;
        }
        for (size_t i = 0; i < src->n; i++) {
            const uint8_t *s = (const uint8_t *)src->text.p + src->v[i].start;
            size_t len = src->v[i].len;
            tok_sbuf w = {0};
            tok_sbuf_reserve(&w, len * 2);
            for (size_t k = 0; k < len && !w.oom; k++) {
                uint8_t b = s[k];
                memcpy(w.p + w.n, tok_bytelevel_enc[b], tok_bytelevel_enc_len[b]);
                w.n += tok_bytelevel_enc_len[b];
            }
            tok_pieces_add(tmp, w.p, w.n, src->v[i].first);
            tok_sbuf_free(&w);
        }
        tok_pieces_free(&t2);
        break;
    }
    case TP_METASPACE:
        for (size_t i = 0; i < in->n; i++) {
            const char *s = in->text.p + in->v[i].start;
            size_t len = in->v[i].len;
            tok_sbuf w = {0};
            bool starts = len >= p->repl_len && !memcmp(s, p->repl, p->repl_len);
            if (len && s[0] == ' ') starts = true;
            if (!starts && (p->prepend == PREPEND_ALWAYS || (p->prepend == PREPEND_FIRST && in->v[i].first)))
                tok_sbuf_put(&w, p->repl, p->repl_len);
            for (size_t k = 0; k < len; k++) {
                if (s[k] == ' ') tok_sbuf_put(&w, p->repl, p->repl_len);
                else tok_sbuf_putc(&w, s[k]);
            }
            if (p->split) split_piece(&p->re, SPLIT_MERGED_NEXT, false, w.p, w.n, in->v[i].first, md, m, r, tmp);
            else tok_pieces_add(tmp, w.p, w.n, in->v[i].first);
            tok_sbuf_free(&w);
        }
        break;
    }
    swap_pieces(in, tmp);
}

void tok_pretok_apply(const tok_pretok *p, tok_pieces *in, tok_pieces *tmp, pcre2_match_data *md) {
    if (!p) return;
    segs m = {0}, r = {0};
    apply(p, in, tmp, md, &m, &r);
    free(m.v);
    free(r.v);
}
