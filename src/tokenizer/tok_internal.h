/*
 * tok_internal.h - data structures shared by the files of src/tokenizer/.
 *
 * Pipeline of one encode (HF tokenizers semantics):
 *   invalid UTF-8 -> U+FFFD (tok_utf8_sanitize)
 *   split on added tokens that are matched on raw text   (added_tokens.c)
 *   each remaining segment: normalizer                    (normalizer.c)
 *     split on added tokens matched on normalized text
 *     pre-tokenizer -> pieces                             (pretokenizer.c)
 *     model: BPE (bpe.c) or SentencePiece-by-score (spm.c) -> ids
 *   post-processor when add_special                       (postproc.c)
 * Decoding runs the decoder chain over the token strings (decoder.c); the
 * streaming detokenizer lives in detok_stream.c.
 */
#ifndef LMX_TOK_INTERNAL_H
#define LMX_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>

#include "base/base.h"
#include "tokenizer/tokenizer.h"

/* ---- growable buffers (sticky out-of-memory flag) ------------------------ */

typedef struct tok_sbuf {
    char *p;
    size_t n, cap;
    bool oom;
} tok_sbuf;

bool tok_sbuf_reserve(tok_sbuf *b, size_t extra);
void tok_sbuf_put(tok_sbuf *b, const void *s, size_t n);
static inline void tok_sbuf_putc(tok_sbuf *b, char c) {
    if (b->n + 1 < b->cap) b->p[b->n++] = c;
    else tok_sbuf_put(b, &c, 1);
}
void tok_sbuf_put_cp(tok_sbuf *b, uint32_t cp); /* UTF-8 encode */
void tok_sbuf_free(tok_sbuf *b);

typedef struct tok_ids {
    int32_t *p;
    size_t n, cap;
    bool oom;
} tok_ids;

void tok_ids_push(tok_ids *v, int32_t id);
void tok_ids_free(tok_ids *v);

/* ---- UTF-8 --------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if invalid/truncated. */
int tok_utf8_valid_len(const uint8_t *s, size_t n);
/* Length of the sequence starting with lead byte c, 1 for invalid leads. */
static inline int tok_utf8_len(uint8_t c) {
    return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : c < 0xF8 ? 4 : 1;
}
uint32_t tok_utf8_decode(const uint8_t *s, int len);
/* Appends s with every maximal ill-formed subsequence replaced by U+FFFD (the
 * Unicode "substitution of maximal subparts" practice = Python's
 * errors="replace" = Rust from_utf8_lossy). */
void tok_utf8_lossy(tok_sbuf *out, const uint8_t *s, size_t n);
/* Length of the longest prefix of s that lossy decoding can emit without
 * seeing more bytes (excludes a trailing truncated but so-far-valid
 * sequence). */
size_t tok_utf8_stable_prefix(const uint8_t *s, size_t n);
bool tok_utf8_is_valid(const uint8_t *s, size_t n);

/* ---- hash maps ----------------------------------------------------------- */

uint64_t tok_hash(const void *s, size_t n);

/* String -> id map whose keys are the tokenizer's pieces (the strings stay
 * where t->pieces[id] pointed at insertion time; they never move). */
typedef struct tok_strslot {
    const char *p; /* NULL = empty */
    uint32_t len;
    int32_t id;
} tok_strslot;

typedef struct tok_strmap {
    tok_strslot *slots;
    uint32_t mask;
    uint32_t count;
} tok_strmap;

struct lmx_tokenizer;
bool tok_strmap_init(tok_strmap *m, size_t expected);
void tok_strmap_free(tok_strmap *m);
/* Inserts id (its key is t->pieces[id]); keeps an existing entry. */
bool tok_strmap_put(tok_strmap *m, const struct lmx_tokenizer *t, int32_t id);
int32_t tok_strmap_get(const tok_strmap *m, const struct lmx_tokenizer *t, const char *s, size_t n);
/* Hints the slot of a key that will be looked up soon into the cache. */
void tok_strmap_prefetch(const tok_strmap *m, const char *s, size_t n);

/* (left id, right id) -> (rank, merged id). */
typedef struct tok_pairslot {
    uint64_t key; /* UINT64_MAX = empty */
    int32_t rank, merged;
} tok_pairslot;

typedef struct tok_pairmap {
    tok_pairslot *slots;
    uint32_t mask;
    uint32_t count;
} tok_pairmap;

bool tok_pairmap_init(tok_pairmap *m, size_t expected);
void tok_pairmap_free(tok_pairmap *m);
void tok_pairmap_put(tok_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t merged);
static inline uint32_t tok_pair_slot(const tok_pairmap *m, uint64_t k) {
    return (uint32_t)((k * 0x9E3779B97F4A7C15ull) >> 32) & m->mask;
}
static inline bool tok_pairmap_get(const tok_pairmap *m, int32_t a, int32_t b, int32_t *rank,
                                   int32_t *merged) {
    if (!m->slots) return false;
    uint64_t k = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    uint32_t i = tok_pair_slot(m, k);
    for (;;) {
        const tok_pairslot *s = &m->slots[i];
        if (s->key == k) {
            *rank = s->rank;
            *merged = s->merged;
            return true;
        }
        if (s->key == UINT64_MAX) return false;
        i = (i + 1) & m->mask;
    }
}

/* ---- GPT-2 byte-level alphabet ------------------------------------------- */

/* byte -> UTF-8 of its stand-in character (1 or 2 bytes). */
extern const char *tok_bytelevel_enc[256];
extern uint8_t tok_bytelevel_enc_len[256];
/* stand-in code point -> byte, -1 if not in the table (code points < 0x144). */
int tok_bytelevel_dec(uint32_t cp);
void tok_bytelevel_init(void);

/* ---- regex --------------------------------------------------------------- */

typedef struct tok_regex {
    pcre2_code *code;
    char *src;
} tok_regex;

/* Compiles pattern (UTF + UCP, JIT). literal: escape it. */
lmx_status tok_regex_compile(tok_regex *r, const char *pattern, size_t len, bool literal,
                             const char *where);
void tok_regex_free(tok_regex *r);
/* Finds the next non-empty match in s[start..n); false when none. */
bool tok_regex_next(const tok_regex *r, pcre2_match_data *md, const char *s, size_t n, size_t start,
                    size_t *ms, size_t *me);

/* ---- normalizers ---------------------------------------------------------- */

typedef enum {
    TN_NFC, TN_NFD, TN_NFKC, TN_NFKD, TN_LOWER, TN_PREPEND, TN_REPLACE, TN_STRIP,
    TN_STRIP_ACCENTS, TN_SEQ, TN_BERT
} tok_norm_type;

typedef struct tok_norm {
    tok_norm_type type;
    char *str;     /* prepend / replace content */
    size_t str_len;
    tok_regex re;  /* replace pattern */
    bool left, right;        /* strip */
    bool bert_clean, bert_chinese, bert_accents, bert_lower;
    struct tok_norm **kids;
    size_t n_kids;
} tok_norm;

struct cJSON;
lmx_status tok_norm_parse(const struct cJSON *j, const char *path, tok_norm **out);
void tok_norm_free(tok_norm *n);
/* Normalizes s into out (out is reset first). */
void tok_norm_apply(const tok_norm *n, const char *s, size_t len, tok_sbuf *out);

/* ---- pre-tokenizers -------------------------------------------------------- */

typedef struct tok_piece {
    size_t start, len;
    bool first; /* begins at offset 0 of the original input */
} tok_piece;

typedef struct tok_pieces {
    tok_sbuf text;
    tok_piece *v;
    size_t n, cap;
} tok_pieces;

void tok_pieces_reset(tok_pieces *p);
void tok_pieces_free(tok_pieces *p);
void tok_pieces_add(tok_pieces *p, const char *s, size_t len, bool first);

typedef enum {
    SPLIT_REMOVED, SPLIT_ISOLATED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT, SPLIT_CONTIGUOUS
} tok_split_behavior;

typedef enum {
    TP_SPLIT, TP_BYTELEVEL, TP_METASPACE, TP_WHITESPACE, TP_WS_SPLIT, TP_DIGITS, TP_PUNCT,
    TP_BERT, TP_SEQ
} tok_pretok_type;

typedef enum { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER } tok_prepend_scheme;

typedef struct tok_pretok {
    tok_pretok_type type;
    tok_regex re;
    tok_split_behavior behavior;
    bool invert;
    bool add_prefix_space, use_regex; /* ByteLevel */
    char repl[8];                     /* Metaspace replacement (UTF-8) */
    size_t repl_len;
    tok_prepend_scheme prepend;
    bool split;
    struct tok_pretok **kids;
    size_t n_kids;
} tok_pretok;

lmx_status tok_pretok_parse(const struct cJSON *j, const char *path, tok_pretok **out);
/* A Sequence of Split(regex, Isolated) for each pattern, then ByteLevel
 * without regex (llama.cpp's BPE pre-tokenization). */
lmx_status tok_pretok_regex_list(const char *const *patterns, size_t n, const char *where,
                                 tok_pretok **out);
void tok_pretok_free(tok_pretok *p);
/* Applies p to *in; result in *in (tmp is scratch). */
void tok_pretok_apply(const tok_pretok *p, tok_pieces *in, tok_pieces *tmp, pcre2_match_data *md);

/* ---- post-processors -------------------------------------------------------- */

typedef struct tok_post {
    enum { TPP_TEMPLATE, TPP_NOOP, TPP_ROBERTA, TPP_SEQ } type;
    /* template: sequence of items; item id >= 0: special token ids[...];
     * -1 = the sequence A */
    int32_t *single;
    size_t n_single;
    struct tok_post **kids;
    size_t n_kids;
} tok_post;

lmx_status tok_post_parse(const struct cJSON *j, const char *path, const struct lmx_tokenizer *t,
                          tok_post **out);
void tok_post_free(tok_post *p);
/* Wraps ids (in place) as the post-processor describes. */
void tok_post_apply(const tok_post *p, tok_ids *ids);

/* ---- decoders --------------------------------------------------------------- */

typedef enum {
    TD_BYTELEVEL, TD_METASPACE, TD_REPLACE, TD_BYTEFALLBACK, TD_FUSE, TD_STRIP, TD_SEQ,
    TD_WORDPIECE
} tok_dec_type;

typedef struct tok_dec {
    tok_dec_type type;
    char *pat, *content; /* Replace (literal pattern) */
    size_t pat_len, content_len;
    tok_regex re;        /* Replace (regex pattern) */
    bool has_re;
    uint32_t strip_char; /* Strip content */
    int strip_start, strip_stop;
    char repl[8];        /* Metaspace replacement */
    size_t repl_len;
    bool prepend;        /* Metaspace: strip the first token's leading space */
    char *prefix;        /* WordPiece */
    bool cleanup;
    struct tok_dec **kids;
    size_t n_kids;
} tok_dec;

lmx_status tok_dec_parse(const struct cJSON *j, const char *path, tok_dec **out);
void tok_dec_free(tok_dec *d);

/* A list of token strings being decoded. */
typedef struct tok_strs {
    tok_sbuf *v;
    size_t n, cap;
    bool oom;
} tok_strs;
void tok_strs_free(tok_strs *s);
void tok_strs_push(tok_strs *s, const char *p, size_t n);
/* Runs the decoder chain; the result is the concatenation of s (in place). */
void tok_dec_apply(const tok_dec *d, tok_strs *s);

/* ---- added tokens ------------------------------------------------------------ */

typedef struct tok_added {
    int32_t id;
    bool special, lstrip, rstrip, normalized, single_word;
    const char *content; /* = t->pieces[id] unless normalized (then owned) */
    size_t len;
    char *norm_content; /* owned copy of the normalized content, or NULL */
} tok_added;

/* Builds the per-first-byte index (call after all tokens are added). */
lmx_status tok_added_build(struct lmx_tokenizer *t);
/* Splits s into text and token segments. normalized: which set to match.
 * emit_text(user, s, len, start_offset), emit_id(user, id). */
typedef void (*tok_text_fn)(void *user, const char *s, size_t len, size_t off);
typedef void (*tok_id_fn)(void *user, int32_t id);
void tok_added_split(const struct lmx_tokenizer *t, bool normalized, bool parse_special, const char *s,
                     size_t len, size_t base_off, tok_text_fn emit_text, tok_id_fn emit_id, void *user);
/* Rust char::is_whitespace. */
bool tok_is_ws(uint32_t c);

/* ---- models -------------------------------------------------------------------- */

typedef enum { TM_BPE, TM_SPM, TM_WORDPIECE } tok_model_type;

/* Token attributes (GGUF token types). */
enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };

typedef enum { DETOK_NAIVE, DETOK_SPM, DETOK_BPE } tok_detok_mode;

#define TOK_CACHE_SLOTS 16384
#define TOK_CACHE_KEY 23
#define TOK_CACHE_IDS 8
typedef struct tok_cache_slot {
    uint8_t key_len; /* 0 = empty */
    uint8_t n_ids;
    char key[TOK_CACHE_KEY];
    int32_t ids[TOK_CACHE_IDS];
} tok_cache_slot;

struct lmx_tokenizer {
    char *path;
    /* vocabulary: id -> string (NUL-terminated), NULL for holes */
    int32_t n_vocab, piece_cap;
    char **pieces;
    char **arena;          /* blocks holding the piece strings */
    size_t n_arena, arena_left;
    char *arena_cur;
    uint32_t *piece_len;
    tok_strmap vocab;    /* model tokens */
    tok_strmap added_map; /* added tokens */

    tok_model_type model;
    /* BPE */
    tok_pairmap merges;
    bool byte_fallback, fuse_unk, ignore_merges, bytelevel_ids;
    char *cont_prefix, *eow_suffix;
    int32_t unk;
    int32_t byte_tok[256]; /* <0xXX> token ids, -1 when absent */
    /* SPM (GGUF llama) */
    float *scores;
    uint8_t *ttype; /* GGUF token types, NULL for tokenizer.json */
    bool spm_space_prefix;
    /* WordPiece */
    char *wp_prefix;
    int wp_max_chars;

    tok_norm *normalizer;
    tok_pretok *pretok;
    tok_post *post;
    tok_dec *decoder;

    tok_added *added;
    size_t n_added;
    uint32_t *added_idx;   /* indices into added, grouped by first byte */
    uint32_t added_first[257];
    bool has_norm_added;

    int32_t bos, eos;
    char *bos_str, *eos_str;
    int add_bos, add_eos; /* -1 unset, 0/1 from config */
    bool gguf;            /* llama.cpp semantics for specials */

    char **tmpl_names, **tmpls;
    size_t n_tmpl;

    tok_detok_mode detok;
    bool detok_strip; /* SPM: drop one leading space of the whole output */
    bool detok_first_token_only;

    pthread_mutex_t cache_mu;
    tok_cache_slot *cache;
};

/* Sets up an empty tokenizer (all ids -1). */
lmx_status tok_new(const char *path, lmx_tokenizer **out);
/* Stores piece id (grows the table); duplicates keep the first map entry. */
lmx_status tok_set_piece(lmx_tokenizer *t, int32_t id, const char *s, size_t len);
/* Finishes loading: byte tokens, decoder mode, cache. */
lmx_status tok_finish(lmx_tokenizer *t);
lmx_status tok_add_chat_template(lmx_tokenizer *t, const char *name, const char *tmpl);

/* Model encoders: append the ids of one pre-tokenized piece. */
void tok_bpe_encode(const lmx_tokenizer *t, const char *s, size_t len, tok_ids *out);
void tok_spm_encode(const lmx_tokenizer *t, const char *s, size_t len, tok_ids *out);

lmx_status tok_load_json(const char *json_path, lmx_tokenizer **out);

/* The whole encode. parse_special = false: special added tokens (GGUF:
 * control tokens) written in the text are not recognised (llama.cpp's
 * parse_special, HF's split_special_tokens). */
lmx_status tok_encode(const lmx_tokenizer *t, const char *text, size_t len, bool add_special,
                      bool parse_special, tok_ids *out);

/* Decodes ids to text (decoder chain); unknown ids decode to "". */
lmx_status tok_decode(const lmx_tokenizer *t, const int32_t *ids, size_t n, tok_sbuf *out);

/* Small cJSON helpers. */
const char *tok_jstr(const struct cJSON *o, const char *key); /* NULL if absent/not string */
int tok_jbool(const struct cJSON *o, const char *key, int dflt);

#endif
