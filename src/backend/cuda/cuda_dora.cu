/* cuda_dora.cu - DoRA's inverse row norms on the device (lmx_backend.dora_norms,
 * core/dora_norm.h): inv[j] = 1 / ‖W_j + scale·b_j·a‖ for a frozen weight W
 * in any format the backend stores (f32/bf16/f16, GGUF, MLX, the repacked
 * Q4_0 and Q6_K rows), so DoRA training never moves W through the host.
 *
 * One block per row j. The block holds scale·b_j (R floats) in shared
 * memory; each thread decodes whole 32-element pieces of W_j with the same
 * decoders as the prefill dequantizer (bit-identical to the host's
 * lmx_cpu_dequant_row), forms d = Σ_r (scale·b[j,r])·a[r,k] with one
 * rounding per operation in the host's order (__fmul_rn/__fadd_rn, which
 * nvcc never contracts into an FMA), and sums (w + d)² in double; the block
 * sum is a tree in double, so only the summation order differs from
 * models/lora.c (within an ulp of the double sum: the f32 norm is the
 * host's except at rare rounding boundaries). */
#include "backend/cuda/cuda_quant.cuh"
#include "backend/cuda/cuda_vjp.cuh"

extern "C" {
#include "core/dora_norm.h"
}

#define DORA_THREADS 256

/* d_k = Σ_r sb[r]·a[r, k], in the host's order and roundings. */
__device__ __forceinline__ float dora_delta(const float *sb, int R, const float *a, int64_t as, int64_t k) {
    float d = 0.0f;
    for (int r = 0; r < R; r++) d = __fadd_rn(d, __fmul_rn(sb[r], a[r * as + k]));
    return d;
}

/* The block's double sum, then 1/‖·‖ in f32 as the host forms it. */
__device__ __forceinline__ void dora_finish(double ss, float *inv, int64_t j) {
    __shared__ double part[DORA_THREADS / 32];
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = ss;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0;
        for (int w = 0; w < DORA_THREADS / 32; w++) t += part[w];
        inv[j] = __fdiv_rn(1.0f, (float)sqrt(t));
    }
}

__device__ __forceinline__ void dora_load_sb(float *sb, const float *b, int64_t bs, int R, float scale, int64_t j) {
    for (int r = threadIdx.x; r < R; r += blockDim.x) sb[r] = __fmul_rn(scale, b[j * bs + r]);
    __syncthreads();
}

template <typename T>
__global__ void __launch_bounds__(DORA_THREADS) dora_dense_k(const T *w, int64_t ws, int64_t K, const float *a,
                                                             int64_t as, const float *b, int64_t bs, int R,
                                                             float scale, float *inv) {
    extern __shared__ float sb[];
    int64_t j = blockIdx.x;
    dora_load_sb(sb, b, bs, R, scale, j);
    double ss = 0;
    for (int64_t k = threadIdx.x; k < K; k += DORA_THREADS) {
        double v = (double)__fadd_rn(ldf(w, j * ws + k), dora_delta(sb, R, a, as, k));
        ss += v * v;
    }
    dora_finish(ss, inv, j);
}

template <int DT>
__global__ void __launch_bounds__(DORA_THREADS) dora_quant_k(cuda_qw qw, const float *a, int64_t as, const float *b,
                                                             int64_t bs, int R, float scale, float *inv) {
    extern __shared__ float sb[];
    int64_t j = blockIdx.x, P = qw.K / 32;
    dora_load_sb(sb, b, bs, R, scale, j);
    double ss = 0;
    for (int64_t pc = threadIdx.x; pc < P; pc += DORA_THREADS) {
        float v[32];
        qw_piece<DT>(qw, j, pc, v);
        for (int e = 0; e < 32; e++) {
            double x = (double)__fadd_rn(v[e], dora_delta(sb, R, a, as, pc * 32 + e));
            ss += x * x;
        }
    }
    dora_finish(ss, inv, j);
}

static bool f32_rows(const lmx_array *x, int64_t d0, int64_t d1) {
    return x && x->dtype == LMX_F32 && x->ndim == 2 && x->shape[0] == d0 && x->shape[1] == d1 && x->strides[1] == 1;
}

lmx_status lmx_cuda_dora_norms(lmx_backend *b, const lmx_dora_norm_args *a) {
    lmx_cuda_ctx *c = cuda_ctx(b->pool);
    const lmx_array *w = a->w;
    if (!w || w->ndim != 2) return lmx_err(LMX_ERR_SHAPE, "cuda dora norms: the weight must be 2-D");
    int64_t N = w->shape[0], K = w->shape[1];
    int R = a->a ? (int)a->a->shape[0] : 0;
    if (!f32_rows(a->a, R, K) || !f32_rows(a->b, N, R) || R <= 0)
        return lmx_err(LMX_ERR_SHAPE, "cuda dora norms: a must be f32 [r, %lld], b f32 [%lld, r]", (long long)K,
                       (long long)N);
    if (!a->inv || a->inv->dtype != LMX_F32 || lmx_array_numel(a->inv) != N || !lmx_array_is_contiguous(a->inv))
        return lmx_err(LMX_ERR_SHAPE, "cuda dora norms: the output must be f32 [%lld]", (long long)N);
    if (N == 0) return LMX_OK;
    size_t shm = (size_t)R * sizeof(float);
    if (shm > 48 * 1024) return lmx_err(LMX_ERR_UNSUPPORTED, "cuda dora norms: rank %d is too large", R);
    const float *A = (const float *)a->a->data, *B = (const float *)a->b->data;
    int64_t as = a->a->strides[0], bs = a->b->strides[0];
    float *inv = (float *)a->inv->data;
    unsigned g = (unsigned)N;
    const lmx_dtype_traits *tr = lmx_dtype_info(w->dtype);
    if (!tr->is_quant) {
        if (w->strides[1] != 1) return lmx_err(LMX_ERR_SHAPE, "cuda dora norms: weight rows must be contiguous");
        int64_t ws = w->strides[0];
        switch (w->dtype) {
        case LMX_F32:
            dora_dense_k<<<g, DORA_THREADS, shm, c->stream>>>((const float *)w->data, ws, K, A, as, B, bs, R, a->scale,
                                                               inv);
            break;
        case LMX_BF16:
            dora_dense_k<<<g, DORA_THREADS, shm, c->stream>>>((const __nv_bfloat16 *)w->data, ws, K, A, as, B, bs, R,
                                                               a->scale, inv);
            break;
        case LMX_F16:
            dora_dense_k<<<g, DORA_THREADS, shm, c->stream>>>((const __half *)w->data, ws, K, A, as, B, bs, R,
                                                               a->scale, inv);
            break;
        default: return lmx_err(LMX_ERR_UNSUPPORTED, "cuda dora norms: weight dtype %s", tr->name);
        }
        return cuda_launched("dora norms");
    }
    const lmx_array *sc = a->scales && !lmx_array_empty(a->scales) ? a->scales : NULL;
    const lmx_array *bi = a->biases && !lmx_array_empty(a->biases) ? a->biases : NULL;
    if (!cuda_quant_ok(w, sc, bi, a->group))
        return lmx_err(LMX_ERR_UNSUPPORTED, "cuda dora norms: weight format %s", tr->name);
    cuda_qw qw = cuda_qw_of(w, sc, bi, a->group);
#define DORA_Q(DT) dora_quant_k<DT><<<g, DORA_THREADS, shm, c->stream>>>(qw, A, as, B, bs, R, a->scale, inv)
    LMX_QUANT_DISPATCH(qw.dt, DORA_Q)
#undef DORA_Q
    return cuda_launched("dora norms");
}
