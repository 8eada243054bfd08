/* detok_stream.c - streaming detokenizers (MLX-LM-SPEC §9).
 *
 * BPE (ByteLevel decoder): token strings map back to bytes through the
 *   inverse GPT-2 table (a token with a character outside it is taken as
 *   UTF-8); bytes are emitted up to the last point that lossy UTF-8 decoding
 *   cannot revise. O(1) per token.
 * SPM (Replace "▁"->" ", ByteFallback, Fuse[, Strip(1 left)]): a non-byte
 *   token is emitted at once with "▁" -> " "; a run of <0xXX> tokens is held
 *   until it ends, then emitted as its bytes when they are valid UTF-8 and as
 *   one U+FFFD per byte otherwise (exactly HF's ByteFallback), the first
 *   leading space of the output dropped when Strip is present. O(1) per token.
 * Naive (any other decoder): re-decodes the tokens of the current line,
 *   withholds trailing U+FFFD, commits when the line ends in "\n".
 *
 * For BPE and SPM the concatenation of the segments equals lmx_detokenize
 * of all ids; no segment ends inside a UTF-8 sequence.
 */
#include "tokenizer/tok_internal.h"

#include <stdlib.h>
#include <string.h>

struct lmx_detok {
    const lmx_tokenizer *t;
    tok_sbuf seg;    /* returned segment */
    tok_sbuf raw;    /* BPE: pending bytes; SPM: pending byte-fallback run */
    tok_sbuf text;   /* naive: decode of the current line */
    tok_ids line;    /* naive: ids of the current line */
    size_t emitted;  /* naive: bytes of text already returned */
    bool at_start;   /* SPM strip: nothing emitted yet */
};

lmx_status lmx_detok_new(const lmx_tokenizer *t, lmx_detok **out) {
    if (!t || !out) return lmx_err(LMX_ERR_INVALID_ARG, "lmx_detok_new: NULL argument");
    lmx_detok *d = calloc(1, sizeof *d);
    if (!d) return lmx_err(LMX_ERR_NOMEM, "detokenizer: out of memory");
    d->t = t;
    d->at_start = true;
    *out = d;
    return LMX_OK;
}

void lmx_detok_free(lmx_detok *d) {
    if (!d) return;
    tok_sbuf_free(&d->seg);
    tok_sbuf_free(&d->raw);
    tok_sbuf_free(&d->text);
    tok_ids_free(&d->line);
    free(d);
}

/* SPM: appends text to the segment, dropping the output's first leading
 * space when the decoder strips it. */
static void spm_emit(lmx_detok *d, const char *s, size_t n) {
    if (!n) return;
    if (d->at_start) {
        d->at_start = false;
        if (d->t->detok_strip && s[0] == ' ') s++, n--;
    }
    tok_sbuf_put(&d->seg, s, n);
}

static void spm_flush_bytes(lmx_detok *d) {
    if (!d->raw.n) return;
    if (tok_utf8_is_valid((const uint8_t *)d->raw.p, d->raw.n)) spm_emit(d, d->raw.p, d->raw.n);
    else
        for (size_t i = 0; i < d->raw.n; i++) spm_emit(d, "\xEF\xBF\xBD", 3);
    d->raw.n = 0;
}

static bool byte_piece(const char *p, size_t n, uint8_t *b) {
    if (n != 6 || memcmp(p, "<0x", 3) || p[5] != '>') return false;
    unsigned v = 0;
    for (int i = 3; i < 5; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else return false;
    }
    *b = (uint8_t)v;
    return true;
}

static void spm_add(lmx_detok *d, const char *p, size_t n) {
    uint8_t b;
    if (byte_piece(p, n, &b)) {
        tok_sbuf_putc(&d->raw, (char)b);
        return;
    }
    spm_flush_bytes(d);
    size_t i = 0, run = 0;
    tok_sbuf tmp = {0};
    for (; i + 3 <= n; i++) {
        if (!memcmp(p + i, "\xE2\x96\x81", 3)) {
            tok_sbuf_put(&tmp, p + run, i - run);
            tok_sbuf_putc(&tmp, ' ');
            i += 2;
            run = i + 1;
        }
    }
    tok_sbuf_put(&tmp, p + run, n - run);
    spm_emit(d, tmp.p, tmp.n);
    if (tmp.oom) d->seg.oom = true;
    tok_sbuf_free(&tmp);
}

static void bpe_add(lmx_detok *d, const char *p, size_t n) {
    size_t start = d->raw.n;
    for (size_t k = 0; k < n;) {
        int l = tok_utf8_len((uint8_t)p[k]);
        if (k + (size_t)l > n) l = (int)(n - k);
        int b = tok_bytelevel_dec(tok_utf8_decode((const uint8_t *)p + k, l));
        if (b < 0) {
            d->raw.n = start;
            tok_sbuf_put(&d->raw, p, n);
            break;
        }
        tok_sbuf_putc(&d->raw, (char)b);
        k += (size_t)l;
    }
    size_t stable = tok_utf8_stable_prefix((const uint8_t *)d->raw.p, d->raw.n);
    tok_utf8_lossy(&d->seg, (const uint8_t *)d->raw.p, stable);
    memmove(d->raw.p, d->raw.p + stable, d->raw.n - stable);
    d->raw.n -= stable;
}

static lmx_status naive_add(lmx_detok *d, int32_t id, bool final) {
    if (id >= 0) tok_ids_push(&d->line, id);
    LMX_TRY(tok_decode(d->t, d->line.p, d->line.n, &d->text));
    size_t end = d->text.n;
    bool line_done = end && d->text.p[end - 1] == '\n';
    if (!final && !line_done) {
        while (end >= 3 && !memcmp(d->text.p + end - 3, "\xEF\xBF\xBD", 3)) end -= 3;
        end = tok_utf8_stable_prefix((const uint8_t *)d->text.p, end);
    }
    if (end > d->emitted) {
        tok_sbuf_put(&d->seg, d->text.p + d->emitted, end - d->emitted);
        d->emitted = end;
    }
    if (line_done) {
        d->line.n = 0;
        d->emitted = 0;
    }
    return LMX_OK;
}

lmx_status lmx_detok_add(lmx_detok *d, int32_t id, const char **seg, size_t *seg_len) {
    if (!d || !seg || !seg_len) return lmx_err(LMX_ERR_INVALID_ARG, "lmx_detok_add: NULL argument");
    if (id < 0) return lmx_err(LMX_ERR_INVALID_ARG, "detokenizer: negative token id %d", id);
    d->seg.n = 0;
    const lmx_tokenizer *t = d->t;
    const char *p = lmx_tokenizer_piece(t, id);
    size_t n = p ? t->piece_len[id] : 0;
    switch (t->detok) {
    case DETOK_BPE:
        if (p) bpe_add(d, p, n);
        break;
    case DETOK_SPM:
        if (p) spm_add(d, p, n);
        break;
    case DETOK_NAIVE:
        LMX_TRY(naive_add(d, id, false));
        break;
    }
    tok_sbuf_put(&d->seg, "", 0);
    if (d->seg.oom || d->raw.oom || d->line.oom) return lmx_err(LMX_ERR_NOMEM, "detokenizer: out of memory");
    *seg = d->seg.p;
    *seg_len = d->seg.n;
    return LMX_OK;
}

lmx_status lmx_detok_finish(lmx_detok *d, const char **seg, size_t *seg_len) {
    if (!d || !seg || !seg_len) return lmx_err(LMX_ERR_INVALID_ARG, "lmx_detok_finish: NULL argument");
    d->seg.n = 0;
    switch (d->t->detok) {
    case DETOK_BPE:
        tok_utf8_lossy(&d->seg, (const uint8_t *)d->raw.p, d->raw.n);
        d->raw.n = 0;
        break;
    case DETOK_SPM:
        spm_flush_bytes(d);
        break;
    case DETOK_NAIVE:
        if (d->line.n) LMX_TRY(naive_add(d, -1, true));
        d->line.n = 0;
        d->emitted = 0;
        break;
    }
    tok_sbuf_put(&d->seg, "", 0);
    if (d->seg.oom) return lmx_err(LMX_ERR_NOMEM, "detokenizer: out of memory");
    *seg = d->seg.p;
    *seg_len = d->seg.n;
    return LMX_OK;
}
