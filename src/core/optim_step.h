/*
 * optim_step.h - the arguments of a backend's optimizer update
 * (lmx_backend.optim_step, backend.h): one launch over flat f32 arrays in
 * the backend's memory, so that training on a device never moves
 * gradients or parameters through the host (train/optim.c derives the
 * coefficients exactly as its host update does; src/backend/cuda/
 * cuda_optim.cu runs them with the host's roundings, one per operation,
 * so both give the same bits).
 */
#ifndef LMX_CORE_OPTIM_STEP_H
#define LMX_CORE_OPTIM_STEP_H

#include <stdbool.h>
#include <stdint.h>

typedef struct lmx_optim_step_args {
    int kind;        /* lmx_opt_kind (train/optim.h): 0 adam, 1 adamw, 2 sgd */
    int64_t n;       /* elements of every array below */
    float *p;        /* parameters, updated in place */
    float *g;        /* summed gradients: read, then zeroed (the next step's accumulator) */
    float *m;        /* adam/adamw: first moment */
    float *v;        /* adam/adamw: second moment; sgd: velocity (NULL without momentum) */
    float steps;     /* > 1: g / steps first (mlx-lm's grad / grad_accum_steps) */
    float lr;
    /* adam / adamw */
    float b1, b2, one_m_b1, one_m_b2, eps;
    float decay;     /* adamw: 1 - lr·weight_decay (p·decay first); adam: unused */
    bool bias_correction;
    float c1, c2;    /* bias correction: lr / (1 - b1^t), 1 / sqrt(1 - b2^t) */
    /* sgd */
    float wd, mom, one_m_damp;
    bool dampening, nesterov; /* dampening: dampening > 0 */
} lmx_optim_step_args;

#endif
