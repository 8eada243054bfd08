/* cpu_claim.h - guided claiming of matvec weight rows by the pool's threads.
 *
 * A decode matvec streams each weight byte once; the threads take row
 * ranges from a shared counter. Fixed chunks trade two costs: large ones
 * leave one core idle at the join while the other finishes the last chunk
 * (an lm_head chunk of N/16 rows is ~17 MB, over a millisecond), small ones
 * make many claims and restart the hardware prefetcher often. So each claim
 * takes a share of what is left (remaining / (2 · threads)), rounded up to
 * the kernels' 4-row unroll and never below `min` rows: the first claims are
 * long streams, the last ones a few kilobytes, and the threads finish within
 * one small chunk of each other. Which thread computes a row never changes
 * its value (every row's sum has a fixed order), so results do not depend on
 * the claims. */
#ifndef LMX_CPU_CLAIM_H
#define LMX_CPU_CLAIM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct {
    _Atomic int64_t next; /* first row not yet claimed */
    int64_t n;            /* rows */
    int64_t div;          /* 2 · threads */
    int64_t min;          /* smallest claim, a multiple of 4 */
} lmx_row_claim;

static inline void lmx_row_claim_init(lmx_row_claim *c, int64_t n, int threads, int64_t min_rows) {
    atomic_init(&c->next, 0);
    c->n = n;
    c->div = 2 * (int64_t)(threads > 0 ? threads : 1);
    c->min = (min_rows + 3) & ~(int64_t)3;
    if (c->min < 4) c->min = 4;
}

/* The next range [*lo, *hi), or false when every row is taken. */
static inline bool lmx_row_claim_next(lmx_row_claim *c, int64_t *lo, int64_t *hi) {
    int64_t cur = atomic_load_explicit(&c->next, memory_order_relaxed);
    for (;;) {
        if (cur >= c->n) return false;
        int64_t take = ((c->n - cur) / c->div + 3) & ~(int64_t)3;
        if (take < c->min) take = c->min;
        int64_t end = cur + take < c->n ? cur + take : c->n;
        if (atomic_compare_exchange_weak_explicit(&c->next, &cur, end, memory_order_relaxed, memory_order_relaxed)) {
            *lo = cur, *hi = end;
            return true;
        }
    }
}

#endif
