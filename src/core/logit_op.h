/*
 * logit_op.h - one edit of a logits row by the logits processors (logit
 * bias, repetition / presence / frequency penalties: generate/sampler.c), as
 * data, so that the host and a device apply the same sequence of f32
 * operations (CUDA: lmx_cuda_logits_edit, one thread in list order) and get
 * the same bits.
 */
#ifndef LMX_CORE_LOGIT_OP_H
#define LMX_CORE_LOGIT_OP_H

#include <stdint.h>

enum {
    LMX_LOGIT_ADD = 0,    /* x += v (a logit bias) */
    LMX_LOGIT_REPEAT = 1, /* x = x < 0 ? x·v : x / v (the repetition penalty v) */
    LMX_LOGIT_SUB = 2,    /* x -= v (presence, frequency) */
};

typedef struct lmx_logit_op {
    int32_t kind, id;
    float v;
} lmx_logit_op;

static inline float lmx_logit_op_apply(float x, const lmx_logit_op *o) {
    return o->kind == LMX_LOGIT_ADD ? x + o->v : o->kind == LMX_LOGIT_REPEAT ? (x < 0 ? x * o->v : x / o->v) : x - o->v;
}

#endif
