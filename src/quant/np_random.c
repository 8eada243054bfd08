/* np_random.c - numpy legacy RandomState: MT19937 seeding and permutation
 * (numpy/random/src/mt19937/mt19937.c, legacy random_interval). */
#include "quant/np_random.h"

typedef lmx_np_rng mt19937;

static void mt_seed(mt19937 *s, uint32_t seed) {
    s->mt[0] = seed;
    for (int i = 1; i < 624; i++) s->mt[i] = 1812433253u * (s->mt[i - 1] ^ (s->mt[i - 1] >> 30)) + (uint32_t)i;
    s->pos = 624;
}

static uint32_t mt_next(mt19937 *s) {
    if (s->pos == 624) {
        for (int i = 0; i < 624; i++) {
            uint32_t y = (s->mt[i] & 0x80000000u) | (s->mt[(i + 1) % 624] & 0x7fffffffu);
            s->mt[i] = s->mt[(i + 397) % 624] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
        }
        s->pos = 0;
    }
    uint32_t y = s->mt[s->pos++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

static uint64_t interval(mt19937 *s, uint64_t max) {
    if (max == 0) return 0;
    uint64_t mask = max, v;
    for (int sh = 1; sh <= 32; sh *= 2) mask |= mask >> sh;
    if (max <= 0xffffffffu) {
        while ((v = (mt_next(s) & mask)) > max) {}
    } else {
        do {
            uint64_t hi = mt_next(s);
            v = ((hi << 32) | mt_next(s)) & mask;
        } while (v > max);
    }
    return v;
}

bool lmx_np_seed(lmx_np_rng *r, uint64_t seed) {
    if (seed > 0xffffffffu) return false;
    mt_seed(r, (uint32_t)seed);
    return true;
}

void lmx_np_rng_permutation(lmx_np_rng *r, size_t n, size_t *perm) {
    for (size_t i = 0; i < n; i++) perm[i] = i;
    for (size_t i = n; i-- > 1;) {
        size_t j = (size_t)interval(r, i), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

bool lmx_np_permutation(uint64_t seed, size_t n, size_t *perm) {
    mt19937 s;
    if (!lmx_np_seed(&s, seed)) return false;
    lmx_np_rng_permutation(&s, n, perm);
    return true;
}
