/* train_compare.h - what two trainer tests share: a random source, the tiny
 * two-row batch (one row padded) and the per-tensor gradient comparison. Included by
 * tests/unit/test_train_devmem.c (device code paths on the CPU) and
 * tests/gpu/test_gpu_train.c (CUDA vs CPU). */
#ifndef LMX_TESTS_TRAIN_COMPARE_H
#define LMX_TESTS_TRAIN_COMPARE_H

#include "train/trainer.h"

#include <math.h>

/* Uniform in [-1, 1) from xorshift64 state rng_s (the caller seeds it). */
static uint64_t rng_s;
static float frand(void) {
    rng_s ^= rng_s << 13;
    rng_s ^= rng_s >> 7;
    rng_s ^= rng_s << 17;
    return (float)((rng_s >> 40) / (double)(1ull << 24)) * 2.0f - 1.0f;
}

static const int32_t toks[2][12] = {{5, 17, 99, 3, 200, 42, 7, 128, 64, 250, 11, 33},
                                    {9, 18, 77, 250, 3, 14, 160, 0, 0, 0, 0, 0}};
static const int32_t offs[2] = {1, 1}, lens[2] = {12, 7};

/* Worst per-tensor max|a-b|/max|b| over the summed gradients; *zero counts
 * tensors whose reference gradient (b's) is all zeros (none expected; a
 * nonzero a against an all-zero b is infinitely wrong). */
static double grad_rel(const lmx_trainer *a, const lmx_trainer *b, int *zero) {
    double worst = 0;
    *zero = 0;
    for (int i = 0; i < lmx_trainer_n_params(b); i++) {
        const float *ga = lmx_trainer_grad_sum(a, i), *gb = lmx_trainer_grad_sum(b, i);
        int64_t n = lmx_array_numel(lmx_trainer_param(b, i));
        double md = 0, mr = 0;
        for (int64_t j = 0; j < n; j++) {
            double x = ga ? ga[j] : 0, y = gb ? gb[j] : 0;
            md = fmax(md, fabs(x - y));
            mr = fmax(mr, fabs(y));
        }
        if (mr == 0) {
            (*zero)++;
            if (md > 0) worst = INFINITY;
            continue;
        }
        worst = fmax(worst, md / mr);
    }
    return worst;
}

#endif
