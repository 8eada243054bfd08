/* tokenizer.c - the tokenizer object: construction helpers, the public
 * encode/decode entry points and the accessors of tokenizer.h. */
#include "tokenizer/tok_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- construction ------------------------------------------------------------ */

lmx_status tok_new(const char *path, lmx_tokenizer **out) {
    lmx_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", path);
    t->path = lmx_strdup(path);
    if (!t->path) {
        free(t);
        return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", path);
    }
    t->unk = t->bos = t->eos = -1;
    t->add_bos = t->add_eos = -1;
    for (int i = 0; i < 256; i++) t->byte_tok[i] = -1;
    pthread_mutex_init(&t->cache_mu, NULL);
    *out = t;
    return LMX_OK;
}

static char *arena_alloc(lmx_tokenizer *t, size_t n) {
    if (n > t->arena_left) {
        size_t sz = n > (1u << 20) ? n : (1u << 20);
        char **a = realloc(t->arena, (t->n_arena + 1) * sizeof *a);
        if (!a) return NULL;
        t->arena = a;
        char *blk = malloc(sz);
        if (!blk) return NULL;
        t->arena[t->n_arena++] = blk;
        t->arena_cur = blk;
        t->arena_left = sz;
    }
    char *p = t->arena_cur;
    t->arena_cur += n;
    t->arena_left -= n;
    return p;
}

lmx_status tok_set_piece(lmx_tokenizer *t, int32_t id, const char *s, size_t len) {
    if (id < 0 || id >= (1 << 26)) return lmx_err(LMX_ERR_FORMAT, "%s: token id %d out of range", t->path, id);
    if (len > UINT32_MAX / 2) return lmx_err(LMX_ERR_FORMAT, "%s: token %d too long", t->path, id);
    if (id >= t->piece_cap) {
        int32_t n = t->piece_cap ? t->piece_cap : 1024;
        while (n <= id) n *= 2;
        char **p = realloc(t->pieces, (size_t)n * sizeof *p);
        if (!p) return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", t->path);
        t->pieces = p;
        uint32_t *l = realloc(t->piece_len, (size_t)n * sizeof *l);
        if (!l) return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", t->path);
        t->piece_len = l;
        memset(t->pieces + t->piece_cap, 0, (size_t)(n - t->piece_cap) * sizeof *p);
        memset(t->piece_len + t->piece_cap, 0, (size_t)(n - t->piece_cap) * sizeof *l);
        t->piece_cap = n;
    }
    if (id >= t->n_vocab) t->n_vocab = id + 1;
    if (t->pieces[id]) return LMX_OK; /* first definition wins */
    char *c = arena_alloc(t, len + 1);
    if (!c) return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", t->path);
    memcpy(c, s, len);
    c[len] = 0;
    t->pieces[id] = c;
    t->piece_len[id] = (uint32_t)len;
    return LMX_OK;
}

lmx_status tok_add_chat_template(lmx_tokenizer *t, const char *name, const char *tmpl) {
    char **n = realloc(t->tmpl_names, (t->n_tmpl + 1) * sizeof *n);
    if (!n) return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", t->path);
    t->tmpl_names = n;
    char **v = realloc(t->tmpls, (t->n_tmpl + 1) * sizeof *v);
    if (!v) return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", t->path);
    t->tmpls = v;
    t->tmpl_names[t->n_tmpl] = lmx_strdup(name ? name : "default");
    t->tmpls[t->n_tmpl] = lmx_strdup(tmpl);
    t->n_tmpl++;
    return LMX_OK;
}

static bool dec_is(const tok_dec *d, tok_dec_type ty) { return d && d->type == ty; }

lmx_status tok_finish(lmx_tokenizer *t) {
    char name[8];
    for (int b = 0; b < 256; b++) {
        snprintf(name, sizeof name, "<0x%02X>", b);
        t->byte_tok[b] = tok_strmap_get(&t->vocab, t, name, 6);
    }
    /* streaming detokenizer selection (MLX-LM-SPEC §9) */
    const tok_dec *d = t->decoder;
    t->detok = DETOK_NAIVE;
    if (dec_is(d, TD_BYTELEVEL)) t->detok = DETOK_BPE;
    else if (dec_is(d, TD_SEQ) && (d->n_kids == 3 || d->n_kids == 4) && dec_is(d->kids[0], TD_REPLACE) &&
             !d->kids[0]->has_re && d->kids[0]->pat_len == 3 && !memcmp(d->kids[0]->pat, "\xE2\x96\x81", 3) &&
             d->kids[0]->content_len == 1 && d->kids[0]->content[0] == ' ' && dec_is(d->kids[1], TD_BYTEFALLBACK) &&
             dec_is(d->kids[2], TD_FUSE)) {
        if (d->n_kids == 3) t->detok = DETOK_SPM;
        else if (dec_is(d->kids[3], TD_STRIP) && d->kids[3]->strip_char == ' ' && d->kids[3]->strip_start == 1 &&
                 d->kids[3]->strip_stop == 0) {
            t->detok = DETOK_SPM;
            t->detok_strip = true;
        }
    }
    if (t->model == TM_BPE && !t->cache) {
        t->cache = calloc(TOK_CACHE_SLOTS, sizeof *t->cache);
        if (!t->cache) return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", t->path);
    }
    return tok_added_build(t);
}

void lmx_tokenizer_free(lmx_tokenizer *t) {
    if (!t) return;
    for (size_t i = 0; i < t->n_arena; i++) free(t->arena[i]);
    free(t->arena);
    free(t->pieces);
    free(t->piece_len);
    tok_strmap_free(&t->vocab);
    tok_strmap_free(&t->added_map);
    tok_pairmap_free(&t->merges);
    free(t->cont_prefix);
    free(t->eow_suffix);
    free(t->scores);
    free(t->ttype);
    free(t->wp_prefix);
    tok_norm_free(t->normalizer);
    tok_pretok_free(t->pretok);
    tok_post_free(t->post);
    tok_dec_free(t->decoder);
    for (size_t i = 0; i < t->n_added; i++) free(t->added[i].norm_content);
    free(t->added);
    free(t->added_idx);
    free(t->bos_str);
    free(t->eos_str);
    for (size_t i = 0; i < t->n_tmpl; i++) {
        free(t->tmpl_names[i]);
        free(t->tmpls[i]);
    }
    free(t->tmpl_names);
    free(t->tmpls);
    free(t->cache);
    pthread_mutex_destroy(&t->cache_mu);
    free(t->path);
    free(t);
}

/* ---- loading ------------------------------------------------------------------- */

static bool has_suffix(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

lmx_status lmx_tokenizer_load(const char *path, lmx_tokenizer **out) {
    if (!path || !out) return lmx_err(LMX_ERR_INVALID_ARG, "lmx_tokenizer_load: NULL argument");
    *out = NULL;
    if (lmx_is_dir(path)) {
        char *p = lmx_path_join(path, "tokenizer.json");
        if (!p) return lmx_err(LMX_ERR_NOMEM, "%s: out of memory", path);
        lmx_status st;
        if (lmx_file_exists(p)) st = tok_load_json(p, out);
        else st = lmx_err(LMX_ERR_NOT_FOUND, "%s: no tokenizer.json in this folder", path);
        free(p);
        return st;
    }
    if (!lmx_file_exists(path)) return lmx_err(LMX_ERR_NOT_FOUND, "%s: no such file", path);
    bool gguf = has_suffix(path, ".gguf");
    if (!gguf) {
        FILE *f = fopen(path, "rb");
        char magic[4] = {0};
        if (f) {
            gguf = fread(magic, 1, 4, f) == 4 && !memcmp(magic, "GGUF", 4);
            fclose(f);
        }
    }
    if (!gguf) return tok_load_json(path, out);
    lmx_gguf *g;
    LMX_TRY(lmx_gguf_open(path, &g));
    lmx_status st = lmx_tokenizer_from_gguf(g, out);
    lmx_gguf_close(g);
    return st;
}

/* ---- encoding --------------------------------------------------------------------- */

typedef struct enc_ctx {
    const lmx_tokenizer *t;
    tok_ids *out;
    tok_sbuf norm, esc;
    tok_pieces pa, pb;
    pcre2_match_data *md;
    bool parse_special, prev_special, seg_first;
} enc_ctx;

static void on_id(void *u, int32_t id) {
    enc_ctx *c = u;
    tok_ids_push(c->out, id);
    c->prev_special = true;
}

/* A normalized segment free of added tokens: pre-tokenize and run the model. */
static void on_norm_text(void *u, const char *s, size_t len, size_t off) {
    enc_ctx *c = u;
    const lmx_tokenizer *t = c->t;
    tok_pieces_reset(&c->pa);
    tok_pieces_add(&c->pa, s, len, c->seg_first && off == 0);
    tok_pretok_apply(t->pretok, &c->pa, &c->pb, c->md);
    if (c->pa.text.oom) c->out->oom = true;
    for (size_t i = 0; i < c->pa.n; i++) {
        const char *p = c->pa.text.p + c->pa.v[i].start;
        if (t->model == TM_SPM) tok_spm_encode(t, p, c->pa.v[i].len, c->out);
        else tok_bpe_encode(t, p, c->pa.v[i].len, c->out);
    }
    c->prev_special = false;
}

static void on_raw_text(void *u, const char *s, size_t len, size_t off) {
    enc_ctx *c = u;
    const lmx_tokenizer *t = c->t;
    if (t->gguf && t->model == TM_SPM) { /* llama.cpp: prefix + escape spaces */
        c->esc.n = 0;
        if (t->spm_space_prefix && c->prev_special) tok_sbuf_put(&c->esc, "\xE2\x96\x81", 3);
        for (size_t i = 0; i < len; i++) {
            if (s[i] == ' ') tok_sbuf_put(&c->esc, "\xE2\x96\x81", 3);
            else tok_sbuf_putc(&c->esc, s[i]);
        }
        if (c->esc.oom) c->out->oom = true;
        tok_spm_encode(t, c->esc.p, c->esc.n, c->out);
        c->prev_special = false;
        return;
    }
    tok_norm_apply(t->normalizer, s, len, &c->norm);
    if (c->norm.oom) {
        c->out->oom = true;
        return;
    }
    c->seg_first = off == 0;
    /* norm is reused by nested calls only after this split finishes */
    tok_sbuf n = c->norm;
    c->norm = (tok_sbuf){0};
    tok_added_split(t, true, c->parse_special, n.p, n.n, 0, on_norm_text, on_id, c);
    tok_sbuf_free(&c->norm);
    c->norm = n;
}

lmx_status tok_encode(const lmx_tokenizer *t, const char *text, size_t len, bool add_special,
                      bool parse_special, tok_ids *out) {
    tok_sbuf clean = {0};
    if (!tok_utf8_is_valid((const uint8_t *)text, len)) {
        tok_utf8_lossy(&clean, (const uint8_t *)text, len);
        if (clean.oom) return lmx_err(LMX_ERR_NOMEM, "tokenize: out of memory");
        text = clean.p;
        len = clean.n;
    }
    enc_ctx c = {.t = t, .out = out, .parse_special = parse_special, .prev_special = true};
    c.md = pcre2_match_data_create(16, NULL);
    if (!c.md) {
        tok_sbuf_free(&clean);
        return lmx_err(LMX_ERR_NOMEM, "tokenize: out of memory");
    }
    bool gguf_bos = t->gguf && add_special && t->add_bos == 1 && t->bos >= 0;
    if (gguf_bos) tok_ids_push(out, t->bos);
    tok_added_split(t, false, parse_special, text, len, 0, on_raw_text, on_id, &c);
    if (add_special && !t->gguf) {
        tok_post_apply(t->post, out);
        if (t->add_bos == 1 && t->bos >= 0 && (out->n == 0 || out->p[0] != t->bos)) {
            tok_ids_push(out, 0);
            if (!out->oom) {
                memmove(out->p + 1, out->p, (out->n - 1) * sizeof *out->p);
                out->p[0] = t->bos;
            }
        }
    }
    if (add_special && t->add_eos == 1 && t->eos >= 0 && (out->n == 0 || out->p[out->n - 1] != t->eos))
        tok_ids_push(out, t->eos);
    tok_sbuf_free(&c.norm);
    tok_sbuf_free(&c.esc);
    tok_pieces_free(&c.pa);
    tok_pieces_free(&c.pb);
    pcre2_match_data_free(c.md);
    tok_sbuf_free(&clean);
    if (out->oom) return lmx_err(LMX_ERR_NOMEM, "tokenize: out of memory");
    return LMX_OK;
}

lmx_status lmx_tokenize(const lmx_tokenizer *t, const char *text, size_t len, bool add_special,
                        int32_t **ids, size_t *n_ids) {
    if (!t || (!text && len) || !ids || !n_ids) return lmx_err(LMX_ERR_INVALID_ARG, "lmx_tokenize: NULL argument");
    tok_ids v = {0};
    lmx_status st = tok_encode(t, text ? text : "", len, add_special, true, &v);
    if (st != LMX_OK) {
        tok_ids_free(&v);
        return st;
    }
    if (!v.p && !(v.p = malloc(sizeof *v.p))) return lmx_err(LMX_ERR_NOMEM, "tokenize: out of memory");
    *ids = v.p;
    *n_ids = v.n;
    return LMX_OK;
}

/* ---- decoding ------------------------------------------------------------------------ */

lmx_status tok_decode(const lmx_tokenizer *t, const int32_t *ids, size_t n, tok_sbuf *out) {
    tok_strs s = {0};
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0) {
            tok_strs_free(&s);
            return lmx_err(LMX_ERR_INVALID_ARG, "detokenize: negative token id %d", ids[i]);
        }
        const char *p = lmx_tokenizer_piece(t, ids[i]);
        if (p) tok_strs_push(&s, p, t->piece_len[ids[i]]);
    }
    tok_dec_apply(t->decoder, &s);
    out->n = 0;
    for (size_t i = 0; i < s.n; i++) tok_sbuf_put(out, s.v[i].p, s.v[i].n);
    tok_sbuf_put(out, "", 0);
    bool oom = s.oom || out->oom;
    tok_strs_free(&s);
    if (oom) return lmx_err(LMX_ERR_NOMEM, "detokenize: out of memory");
    return LMX_OK;
}

lmx_status lmx_detokenize(const lmx_tokenizer *t, const int32_t *ids, size_t n, char **text) {
    if (!t || (!ids && n) || !text) return lmx_err(LMX_ERR_INVALID_ARG, "lmx_detokenize: NULL argument");
    tok_sbuf o = {0};
    lmx_status st = tok_decode(t, ids, n, &o);
    if (st != LMX_OK) {
        tok_sbuf_free(&o);
        return st;
    }
    *text = o.p;
    return LMX_OK;
}

/* ---- accessors ------------------------------------------------------------------------ */

int lmx_tokenizer_vocab_size(const lmx_tokenizer *t) { return t ? t->n_vocab : 0; }
int32_t lmx_tokenizer_bos(const lmx_tokenizer *t) { return t ? t->bos : -1; }
int32_t lmx_tokenizer_eos(const lmx_tokenizer *t) { return t ? t->eos : -1; }

int32_t lmx_tokenizer_token_id(const lmx_tokenizer *t, const char *piece) {
    if (!t || !piece) return -1;
    size_t n = strlen(piece);
    int32_t id = tok_strmap_get(&t->added_map, t, piece, n);
    return id >= 0 ? id : tok_strmap_get(&t->vocab, t, piece, n);
}

const char *lmx_tokenizer_piece(const lmx_tokenizer *t, int32_t id) {
    if (!t || id < 0 || id >= t->n_vocab) return NULL;
    return t->pieces[id];
}

const char *lmx_tokenizer_bos_str(const lmx_tokenizer *t) { return t && t->bos_str ? t->bos_str : ""; }
const char *lmx_tokenizer_eos_str(const lmx_tokenizer *t) { return t && t->eos_str ? t->eos_str : ""; }

const char *lmx_tokenizer_chat_template(const lmx_tokenizer *t, const char *name) {
    if (!t || !t->n_tmpl) return NULL;
    if (!name) name = "default";
    for (size_t i = 0; i < t->n_tmpl; i++)
        if (!strcmp(t->tmpl_names[i], name)) return t->tmpls[i];
    return NULL;
}
