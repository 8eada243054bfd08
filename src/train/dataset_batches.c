/*
 * dataset_batches.c - mlx_lm.tuner.trainer.iterate_batches (0.32.2) for a
 * single process: sorted order, fixed groups, a numpy permutation per epoch
 * drawn lazily (when the epoch's first batch is taken, as the Python
 * generator does), padding and truncation. See dataset.h.
 */
#include "train/dataset.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct lmx_batches {
    lmx_dataset *d;
    int batch_size, max_seq_length;
    bool loop;
    lmx_np_rng *rng;
    int64_t *order;   /* sorted example indices */
    int64_t n_batches;
    size_t *perm;     /* this epoch's batch order */
    int64_t pos;      /* next position in perm; n_batches = epoch over */
    bool started, finished;
    int32_t *tokens, *offsets, *lengths;
    size_t tokens_cap;
    const int32_t **rows; /* [batch_size] scratch */
    int64_t *row_len, *row_off;
};

typedef struct {
    int64_t len, idx;
} len_idx;

/* sorted(range(n), key=itemlen) is stable: ties keep index order, which
 * comparing the index too gives qsort. */
static int cmp_len_idx(const void *a, const void *b) {
    const len_idx *x = a, *y = b;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

lmx_status lmx_batches_create(lmx_dataset *d, int batch_size, int max_seq_length, bool loop, lmx_np_rng *rng,
                              lmx_batches **out) {
    *out = NULL;
    if (!d || !rng) return lmx_err(LMX_ERR_INVALID_ARG, "batches: NULL dataset or generator");
    if (batch_size < 1) return lmx_err(LMX_ERR_INVALID_ARG, "batch_size must be at least 1, got %d", batch_size);
    if (max_seq_length < 1) return lmx_err(LMX_ERR_INVALID_ARG, "max_seq_length must be at least 1, got %d", max_seq_length);
    lmx_batches *it = calloc(1, sizeof *it);
    int64_t n = lmx_dataset_size(d);
    len_idx *li = malloc((size_t)(n ? n : 1) * sizeof *li);
    if (!it || !li || !(it->order = malloc((size_t)(n ? n : 1) * sizeof *it->order)) ||
        !(it->offsets = malloc((size_t)batch_size * sizeof *it->offsets)) ||
        !(it->lengths = malloc((size_t)batch_size * sizeof *it->lengths)) ||
        !(it->rows = malloc((size_t)batch_size * sizeof *it->rows)) ||
        !(it->row_len = malloc((size_t)batch_size * sizeof *it->row_len)) ||
        !(it->row_off = malloc((size_t)batch_size * sizeof *it->row_off))) {
        free(li);
        lmx_batches_free(it);
        return lmx_err(LMX_ERR_NOMEM, "batches: out of memory");
    }
    it->d = d;
    it->batch_size = batch_size;
    it->max_seq_length = max_seq_length;
    it->loop = loop;
    it->rng = rng;
    for (int64_t i = 0; i < n; i++) li[i] = (len_idx){lmx_dataset_item_len(d, i), i};
    qsort(li, (size_t)n, sizeof *li, cmp_len_idx);
    for (int64_t i = 0; i < n; i++) it->order[i] = li[i].idx;
    free(li);
    it->n_batches = n >= batch_size ? n / batch_size : 0;
    it->pos = it->n_batches;
    *out = it;
    return LMX_OK;
}

void lmx_batches_free(lmx_batches *it) {
    if (!it) return;
    free(it->order);
    free(it->perm);
    free(it->tokens);
    free(it->offsets);
    free(it->lengths);
    free(it->rows);
    free(it->row_len);
    free(it->row_off);
    free(it);
}

int64_t lmx_batches_per_epoch(const lmx_batches *it) { return it->n_batches; }

static lmx_status new_epoch(lmx_batches *it) {
    if (!it->perm && !(it->perm = malloc((size_t)(it->n_batches ? it->n_batches : 1) * sizeof *it->perm)))
        return lmx_err(LMX_ERR_NOMEM, "batches: out of memory");
    lmx_np_rng_permutation(it->rng, (size_t)it->n_batches, it->perm);
    it->pos = 0;
    return LMX_OK;
}

lmx_status lmx_batches_next(lmx_batches *it, lmx_batch *b, bool *done) {
    *done = false;
    int64_t n = lmx_dataset_size(it->d);
    if (!it->started) {
        if (n < it->batch_size)
            return lmx_err(LMX_ERR_INVALID_ARG, "%s: Dataset must have at least batch_size=%d examples but only has %lld.",
                           lmx_dataset_path(it->d), it->batch_size, (long long)n);
        it->started = true;
        LMX_TRY(new_epoch(it));
    } else if (it->pos >= it->n_batches) {
        if (!it->loop || it->finished) {
            it->finished = true;
            *done = true;
            return LMX_OK;
        }
        LMX_TRY(new_epoch(it));
    }
    const int B = it->batch_size;
    int64_t k = (int64_t)it->perm[it->pos];
    const int64_t *idx = it->order + k * B;
    const int32_t **rows = it->rows;
    int64_t *lens = it->row_len, *offs = it->row_off, longest = 0;
    for (int j = 0; j < B; j++) {
        LMX_TRY(lmx_dataset_example(it->d, idx[j], &rows[j], &lens[j], &offs[j]));
        if (lens[j] > longest) longest = lens[j];
    }
    /* pad to one plus the next multiple of 32, capped at max_seq_length */
    int64_t T = 1 + 32 * ((longest + 31) / 32);
    if (T > it->max_seq_length) T = it->max_seq_length;
    size_t need = (size_t)B * (size_t)T;
    if (need > it->tokens_cap || !it->tokens) {
        free(it->tokens);
        it->tokens = malloc(need * sizeof *it->tokens);
        it->tokens_cap = need;
    }
    if (!it->tokens) return lmx_err(LMX_ERR_NOMEM, "batches: out of memory");
    memset(it->tokens, 0, need * sizeof *it->tokens);
    for (int j = 0; j < B; j++) {
        int64_t L = lens[j] < it->max_seq_length ? lens[j] : it->max_seq_length;
        memcpy(it->tokens + (size_t)j * (size_t)T, rows[j], (size_t)L * sizeof(int32_t));
        it->lengths[j] = (int32_t)L;
        it->offsets[j] = (int32_t)offs[j];
    }
    it->pos++;
    b->tokens = it->tokens;
    b->B = B;
    b->T = (int)T;
    b->offsets = it->offsets;
    b->lengths = it->lengths;
    b->longest = longest;
    b->max_seq_length = it->max_seq_length;
    b->batch_index = k;
    return LMX_OK;
}

bool lmx_batch_truncation_warning(const lmx_batch *b, char *buf, size_t cap) {
    if (b->longest <= b->max_seq_length) return false;
    snprintf(buf, cap,
             "[WARNING] Some sequences are longer than %d tokens. The longest sentence %lld will be truncated to %d. "
             "Consider pre-splitting your data to save memory.",
             b->max_seq_length, (long long)b->longest, b->max_seq_length);
    return true;
}
