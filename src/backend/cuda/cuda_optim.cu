/* cuda_optim.cu - the optimizer update on the device (lmx_backend.optim_step,
 * core/optim_step.h): Adam, AdamW and SGD over the trainer's flat parameter,
 * gradient and state arrays in one launch, so no gradient or parameter
 * crosses to the host during training.
 *
 * Bits: every operation is written with an explicit round-to-nearest
 * intrinsic (__fmul_rn, __fadd_rn, __fsub_rn, __fdiv_rn, __fsqrt_rn), which
 * nvcc never contracts into an FMA, in the order of train/optim.c's
 * adam_one / sgd_one (which the host build compiles without FMA), so the
 * device update gives the host's results bit for bit. The accumulator g is
 * zeroed as it is read (the next step sums into it). */
#include "backend/cuda/cuda_vjp.cuh"

extern "C" {
#include "core/optim_step.h"
}

__global__ void optim_adam_k(lmx_optim_step_args a) {
    CUDA_VJP_LOOP(i, a.n) {
        float gi = a.g[i];
        a.g[i] = 0.0f;
        if (a.steps > 1.0f) gi = __fdiv_rn(gi, a.steps);
        float pi = a.p[i];
        if (a.kind == 1) pi = __fmul_rn(pi, a.decay);
        float mi = __fadd_rn(__fmul_rn(a.b1, a.m[i]), __fmul_rn(a.one_m_b1, gi));
        float vi = __fadd_rn(__fmul_rn(a.b2, a.v[i]), __fmul_rn(a.one_m_b2, __fmul_rn(gi, gi)));
        a.m[i] = mi;
        a.v[i] = vi;
        float q;
        if (a.bias_correction)
            q = __fdiv_rn(__fmul_rn(a.c1, mi), __fadd_rn(__fmul_rn(__fsqrt_rn(vi), a.c2), a.eps));
        else
            q = __fdiv_rn(__fmul_rn(a.lr, mi), __fadd_rn(__fsqrt_rn(vi), a.eps));
        a.p[i] = __fsub_rn(pi, q);
    }
}

__global__ void optim_sgd_k(lmx_optim_step_args a) {
    CUDA_VJP_LOOP(i, a.n) {
        float gi = a.g[i];
        a.g[i] = 0.0f;
        if (a.steps > 1.0f) gi = __fdiv_rn(gi, a.steps);
        float pi = a.p[i];
        if (a.wd != 0.0f) gi = __fadd_rn(gi, __fmul_rn(a.wd, pi));
        if (!a.v) {
            a.p[i] = __fsub_rn(pi, __fmul_rn(a.lr, gi));
            continue;
        }
        float vi = __fmul_rn(a.mom, a.v[i]);
        vi = a.dampening ? __fadd_rn(vi, __fmul_rn(a.one_m_damp, gi)) : __fadd_rn(vi, gi);
        float upd = a.nesterov ? __fadd_rn(gi, __fmul_rn(a.mom, vi)) : vi;
        a.v[i] = vi;
        a.p[i] = __fsub_rn(pi, __fmul_rn(a.lr, upd));
    }
}

lmx_status lmx_cuda_optim_step(lmx_backend *b, const lmx_optim_step_args *a) {
    lmx_cuda_ctx *c = cuda_ctx(b->pool);
    if (a->n <= 0) return LMX_OK;
    if (a->kind == 2) {
        optim_sgd_k<<<cuda_vjp_blocks(a->n), 256, 0, c->stream>>>(*a);
    } else {
        if (!a->m || !a->v) return lmx_err(LMX_ERR_INVALID_ARG, "cuda optimizer: Adam needs m and v");
        optim_adam_k<<<cuda_vjp_blocks(a->n), 256, 0, c->stream>>>(*a);
    }
    return cuda_launched("optimizer update");
}
