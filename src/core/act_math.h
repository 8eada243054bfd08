/*
 * act_math.h - the activation functions and their derivatives, one
 * definition for the host reference (core/vjp.c) and the CUDA kernels
 * (cuda_elementwise.cu, cuda_vjp_elementwise.cu), so the device computes
 * the same formula the reference and its tests do.
 */
#ifndef LMX_CORE_ACT_MATH_H
#define LMX_CORE_ACT_MATH_H

#include "core/op.h"

#include <math.h>

#ifdef __CUDACC__
#define LMX_ACT_FN static __host__ __device__ __forceinline__
#else
#define LMX_ACT_FN static inline
#endif

/* act(x): silu, gelu (erf), gelu (tanh approximation), relu. */
LMX_ACT_FN float lmx_act_value(float x, int act) {
    switch (act) {
    case LMX_ACT_SILU: return x / (1.0f + expf(-x));
    case LMX_ACT_GELU_ERF: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case LMX_ACT_GELU_TANH: return 0.5f * x * (1.0f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
    case LMX_ACT_RELU: return x > 0 ? x : 0;
    }
    return x;
}

/* act'(x), the same four. */
LMX_ACT_FN float lmx_act_deriv(float x, int act) {
    switch (act) {
    case LMX_ACT_SILU: {
        float s = 1.0f / (1.0f + expf(-x));
        return s * (1.0f + x * (1.0f - s));
    }
    case LMX_ACT_GELU_ERF:
        return 0.5f * (1.0f + erff(x * 0.70710678118654752f)) + x * expf(-0.5f * x * x) * 0.39894228040143268f;
    case LMX_ACT_GELU_TANH: {
        const float k = 0.79788456080286536f;
        float t = tanhf(k * (x + 0.044715f * x * x * x));
        return 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * k * (1.0f + 3.0f * 0.044715f * x * x);
    }
    case LMX_ACT_RELU: return x > 0 ? 1.0f : 0.0f;
    }
    return 1.0f;
}

#endif
