/*
 * np_random.h - numpy's legacy global generator, as far as mlx_lm.perplexity
 * uses it: np.random.seed(seed) (MT19937 init_genrand with the 32-bit seed)
 * followed by np.random.permutation(n) (RandomState.shuffle of arange(n):
 * for i = n-1 .. 1, j = random_interval(i) by masked rejection on 32-bit
 * draws while i < 2^32, 64-bit draws (two 32-bit draws, high first) above).
 * Lets `lmx perplexity` pick the same samples as mlx-lm for the same seed.
 */
#ifndef LMX_QUANT_NP_RANDOM_H
#define LMX_QUANT_NP_RANDOM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* perm[0..n) = np.random.seed(seed); np.random.permutation(n). seed must
 * be below 2^32 (numpy refuses larger ones); returns false otherwise. */
bool lmx_np_permutation(uint64_t seed, size_t n, size_t *perm);

/* The global generator as a value, for callers that draw several
 * permutations from one seeding (mlx-lm's training batches: np.random.seed
 * once, then np.random.permutation per epoch and per evaluation). */
typedef struct lmx_np_rng {
    uint32_t mt[624];
    int pos;
} lmx_np_rng;

/* np.random.seed(seed); false (r untouched) when seed >= 2^32. */
bool lmx_np_seed(lmx_np_rng *r, uint64_t seed);
/* perm[0..n) = np.random.permutation(n), advancing r. */
void lmx_np_rng_permutation(lmx_np_rng *r, size_t n, size_t *perm);

#endif
