/*
 * dataset.h - fine-tuning data as mlx-lm 0.32.2 reads and batches it
 * (mlx_lm/tuner/datasets.py, trainer.iterate_batches; MLX-LM-SPEC §4e, §5).
 *
 * Loading (dataset.c): a --data folder holds train.jsonl, valid.jsonl and
 * test.jsonl; every existing file is parsed (one JSON object per line; a
 * blank or malformed line is an error naming file:line, as json.loads
 * fails on it). The format comes from the first record: prompt+completion
 * keys -> completions (rendered through the chat template as a user and an
 * assistant message), the chat key -> chat messages (+ "tools"), the text
 * key -> plain text (+EOS unless already last; --mask-prompt is an error).
 * Examples are tokenized on first use and cached (CacheDataset).
 *
 * Batching (dataset_batches.c), iterate_batches exactly:
 *  - order: indices stably sorted by CacheDataset.itemlen, which in mlx-lm
 *    0.32.2 is len(raw record) = the number of top-level keys (not the
 *    token count: all-uniform records keep file order);
 *  - batches: consecutive groups of batch_size, the trailing partial group
 *    dropped; fewer examples than batch_size is an error (on the first
 *    lmx_batches_next, when mlx-lm's generator first runs);
 *  - each epoch visits the batches in np.random.permutation order, drawn
 *    from the caller's generator when the epoch's first batch is taken (the
 *    training loop and every evaluation share numpy's global generator,
 *    seeded once with np.random.seed(seed) - pass the same lmx_np_rng);
 *  - a batch is [B, T] with T = min(1 + 32*ceil(longest/32), max_seq_length),
 *    rows padded with id 0 and truncated to max_seq_length; per row the
 *    offset (unchanged by truncation) and the truncated length.
 */
#ifndef LMX_TRAIN_DATASET_H
#define LMX_TRAIN_DATASET_H

#include "base/base.h"
#include "quant/np_random.h"

typedef enum { LMX_DATA_COMPLETIONS = 0, LMX_DATA_CHAT, LMX_DATA_TEXT } lmx_data_format;

typedef struct lmx_data_options {
    bool mask_prompt;               /* loss only on the completion / last message */
    const char *prompt_feature;     /* "prompt"     (YAML prompt_feature) */
    const char *completion_feature; /* "completion" (YAML completion_feature) */
    const char *chat_feature;       /* "messages"   (YAML chat_feature) */
    const char *text_feature;       /* "text"       (YAML text_feature) */
} lmx_data_options;

void lmx_data_options_init(lmx_data_options *o);

typedef struct lmx_dataset lmx_dataset;

/* One jsonl file. tok must outlive the dataset. */
lmx_status lmx_dataset_load(const char *path, const lmx_tokenizer *tok, const lmx_data_options *o, lmx_dataset **out);
void lmx_dataset_free(lmx_dataset *d);
int64_t lmx_dataset_size(const lmx_dataset *d);
lmx_data_format lmx_dataset_format(const lmx_dataset *d);
const char *lmx_dataset_path(const lmx_dataset *d);
/* What mlx-lm sorts by: the record's number of top-level keys. */
int64_t lmx_dataset_item_len(const lmx_dataset *d, int64_t i);
/* Example i as CacheDataset[i] gives it: token ids (owned by d, valid while
 * d lives) and the mask offset (0 without --mask-prompt). Tokenized on the
 * first call; a record mlx-lm would fail on (missing key, template error)
 * is an error naming file:line. */
lmx_status lmx_dataset_example(lmx_dataset *d, int64_t i, const int32_t **tokens, int64_t *n_tokens, int64_t *offset);

/* The three splits of a --data folder. Missing files give NULL splits; an
 * existing file is always loaded (mlx-lm parses all three). want_train /
 * want_test: --train / --test, which make their file required ("Training
 * set not found or empty. ..." as mlx-lm words it). A missing valid split
 * means training runs without validation (the caller prints mlx-lm's
 * warning: lmx_data_no_valid_warning). */
typedef struct lmx_data_splits {
    lmx_dataset *train, *valid, *test;
} lmx_data_splits;

lmx_status lmx_data_load_dir(const char *dir, const lmx_tokenizer *tok, const lmx_data_options *o, bool want_train,
                             bool want_test, lmx_data_splits *out);
void lmx_data_splits_free(lmx_data_splits *s);
extern const char *const lmx_data_no_valid_warning;

/* ---- batches (dataset_batches.c) ---------------------------------------- */

typedef struct lmx_batch {
    const int32_t *tokens;   /* [B * T] row-major, padded with 0; owned by the iterator until the next call */
    int B, T;
    const int32_t *offsets;  /* [B]: lengths[:, 0] of mlx-lm (mask starts at target step offset) */
    const int32_t *lengths;  /* [B]: lengths[:, 1] (after truncation) */
    int64_t longest;         /* longest row before truncation */
    int max_seq_length;
    int64_t batch_index;     /* which group of the sorted order (0-based), for tests and logs */
} lmx_batch;

typedef struct lmx_batches lmx_batches;

/* loop: restart with a new permutation after each epoch (training); without
 * it one epoch, then *done. rng must outlive the iterator and is advanced
 * only when an epoch starts. d must outlive the iterator. */
lmx_status lmx_batches_create(lmx_dataset *d, int batch_size, int max_seq_length, bool loop, lmx_np_rng *rng,
                              lmx_batches **out);
void lmx_batches_free(lmx_batches *it);
/* Batches per epoch: floor(size / batch_size). */
int64_t lmx_batches_per_epoch(const lmx_batches *it);
/* The next batch, or *done = true (non-looping iterator after its epoch). */
lmx_status lmx_batches_next(lmx_batches *it, lmx_batch *b, bool *done);
/* mlx-lm's warning when b was truncated (longest > max_seq_length), into
 * buf; false (buf untouched) when it was not. */
bool lmx_batch_truncation_warning(const lmx_batch *b, char *buf, size_t cap);

#endif
