/* cuda_skinny.cu - f32 products with one side of at most 16 (LoRA's rank):
 * the adapters' x·aᵀ and t·bᵀ in the forward (cuda_matmul.cu sends f32
 * weights with N <= 16 or K <= 16 here) and their vjps (cuda_vjp_matmul.cu).
 *
 * cuBLAS SGEMM handles these shapes (M = B·T rows, one dimension 8) at a
 * fraction of the memory rate; each is a single streaming pass here:
 *   rowdot  y[m, r] (+)= Σ_k x[m, k]·w(r, k)   one warp per row (t = x·aᵀ; dx of b)
 *   outer   y[m, n] (+)= Σ_r t[m, r]·w(n, r)   one thread per output (u = t·bᵀ; dx of a)
 *   coldot  o(r, c)  += Σ_m g[m, r]·x[m, c]    dW of a and b: columns per thread, rows
 *           split over blocks, partial sums reduced in split order (deterministic)
 * w(·,·) and o(·,·) are read/written through element strides, so a [R, K]
 * and b [N, R] need no transposed copies. f32 FMAs in another order than
 * SGEMM: the vjp tolerances of f32 GEMMs (test_cuda_vjps) hold. */
#include "backend/cuda/cuda_vjp.cuh"

#include <stdlib.h>
#include <string.h>

#define SKINNY_MAX 16

bool cuda_skinny_on(void) {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("LMX_CUDA_SKINNY");
        on = !(e && !strcmp(e, "0"));
    }
    return on;
}

__global__ void skinny_rowdot_k(float *y, int64_t ys, const float *x, int64_t xs, const float *w, int64_t wr,
                                int64_t wk, int64_t M, int64_t K, int R, int add) {
    int lane = threadIdx.x & 31;
    for (int64_t m = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); m < M;
         m += (int64_t)gridDim.x * (blockDim.x >> 5)) {
        float acc[SKINNY_MAX];
#pragma unroll
        for (int r = 0; r < SKINNY_MAX; r++) acc[r] = 0.0f;
        const float *xr = x + m * xs;
        for (int64_t k = lane; k < K; k += 32) {
            float xv = xr[k];
#pragma unroll
            for (int r = 0; r < SKINNY_MAX; r++)
                if (r < R) acc[r] += xv * w[r * wr + k * wk];
        }
#pragma unroll
        for (int r = 0; r < SKINNY_MAX; r++) {
            float v = acc[r];
            for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
            acc[r] = v;
        }
        if (lane == 0)
#pragma unroll
            for (int r = 0; r < SKINNY_MAX; r++)
                if (r < R) y[m * ys + r] = add ? y[m * ys + r] + acc[r] : acc[r];
    }
}

__global__ void skinny_outer_k(float *y, int64_t ys, const float *t, int64_t ts, const float *w, int64_t wn,
                               int64_t wr, int64_t M, int64_t N, int R, int add) {
    int64_t n = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (n >= N) return;
    float wv[SKINNY_MAX];
#pragma unroll
    for (int r = 0; r < SKINNY_MAX; r++) wv[r] = r < R ? w[n * wn + r * wr] : 0.0f;
    for (int64_t m = blockIdx.y; m < M; m += gridDim.y) {
        const float *tr = t + m * ts;
        float acc = 0.0f;
#pragma unroll
        for (int r = 0; r < SKINNY_MAX; r++)
            if (r < R) acc += tr[r] * wv[r];
        y[m * ys + n] = add ? y[m * ys + n] + acc : acc;
    }
}

#define COLDOT_TILE 64

__global__ void skinny_coldot_k(float *part, const float *g, int64_t gs, const float *x, int64_t xs, int64_t M,
                                int64_t C, int R, int64_t rows_per) {
    __shared__ float gsh[COLDOT_TILE][SKINNY_MAX];
    int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    int64_t s = blockIdx.y, m0 = s * rows_per, m1 = m0 + rows_per < M ? m0 + rows_per : M;
    float acc[SKINNY_MAX];
#pragma unroll
    for (int r = 0; r < SKINNY_MAX; r++) acc[r] = 0.0f;
    for (int64_t mb = m0; mb < m1; mb += COLDOT_TILE) {
        int nb = (int)(m1 - mb < COLDOT_TILE ? m1 - mb : COLDOT_TILE);
        __syncthreads();
        for (int i = threadIdx.x; i < nb * R; i += blockDim.x) gsh[i / R][i % R] = g[(mb + i / R) * gs + i % R];
        __syncthreads();
        if (c < C)
            for (int j = 0; j < nb; j++) {
                float xv = x[(mb + j) * xs + c];
#pragma unroll
                for (int r = 0; r < SKINNY_MAX; r++)
                    if (r < R) acc[r] += gsh[j][r] * xv;
            }
    }
    if (c < C)
        for (int r = 0; r < R; r++) part[(s * R + r) * C + c] = acc[r];
}

__global__ void skinny_reduce_k(float *o, int64_t or_, int64_t oc, const float *part, int64_t S, int R, int64_t C) {
    CUDA_VJP_LOOP(i, (int64_t)R * C) {
        int64_t r = i / C, c = i - r * C;
        float s = 0.0f;
        for (int64_t k = 0; k < S; k++) s += part[(k * R + r) * C + c];
        o[r * or_ + c * oc] += s;
    }
}

lmx_status cuda_skinny_rowdot(lmx_cuda_ctx *c, float *y, int64_t ys, const float *x, int64_t xs, const float *w,
                              int64_t wr, int64_t wk, int64_t M, int64_t K, int R, bool add) {
    if (M <= 0 || R <= 0) return LMX_OK;
    if (R > SKINNY_MAX) return lmx_err(LMX_ERR_INTERNAL, "cuda skinny rowdot: R %d > %d", R, SKINNY_MAX);
    int64_t blocks = (M + 7) / 8;
    skinny_rowdot_k<<<(unsigned)(blocks < 65535 ? blocks : 65535), 256, 0, c->stream>>>(y, ys, x, xs, w, wr, wk, M, K,
                                                                                        R, add);
    return cuda_launched("skinny rowdot");
}

lmx_status cuda_skinny_outer(lmx_cuda_ctx *c, float *y, int64_t ys, const float *t, int64_t ts, const float *w,
                             int64_t wn, int64_t wr, int64_t M, int64_t N, int R, bool add) {
    if (M <= 0 || N <= 0) return LMX_OK;
    if (R > SKINNY_MAX) return lmx_err(LMX_ERR_INTERNAL, "cuda skinny outer: R %d > %d", R, SKINNY_MAX);
    dim3 grid((unsigned)((N + 255) / 256), (unsigned)(M < 65535 ? M : 65535));
    skinny_outer_k<<<grid, 256, 0, c->stream>>>(y, ys, t, ts, w, wn, wr, M, N, R, add);
    return cuda_launched("skinny outer");
}

lmx_status cuda_skinny_coldot(lmx_cuda_ctx *c, float *o, int64_t or_, int64_t oc, const float *g, int64_t gs,
                              const float *x, int64_t xs, int64_t M, int64_t C, int R) {
    if (M <= 0 || C <= 0 || R <= 0) return LMX_OK;
    if (R > SKINNY_MAX) return lmx_err(LMX_ERR_INTERNAL, "cuda skinny coldot: R %d > %d", R, SKINNY_MAX);
    int64_t cb = (C + 255) / 256, S = (2 * (int64_t)c->n_sm + cb - 1) / cb, most = (M + 31) / 32;
    if (S > most) S = most;
    if (S < 1) S = 1;
    int64_t rows_per = (M + S - 1) / S;
    S = (M + rows_per - 1) / rows_per;
    float *part;
    LMX_TRY(cuda_scratch(c, (size_t)(S * R * C) * sizeof(float), (void **)&part));
    skinny_coldot_k<<<dim3((unsigned)cb, (unsigned)S), 256, 0, c->stream>>>(part, g, gs, x, xs, M, C, R, rows_per);
    LMX_TRY(cuda_launched("skinny coldot"));
    skinny_reduce_k<<<cuda_vjp_blocks((int64_t)R * C), 256, 0, c->stream>>>(o, or_, oc, part, S, R, C);
    return cuda_launched("skinny coldot reduce");
}

lmx_status cuda_skinny_matmul(lmx_cuda_ctx *c, float *out, int64_t os, const float *x, int64_t xs, const float *w,
                              int64_t M, int64_t N, int64_t K) {
    if (N <= SKINNY_MAX) return cuda_skinny_rowdot(c, out, os, x, xs, w, K, 1, M, K, (int)N, false);
    return cuda_skinny_outer(c, out, os, x, xs, w, K, 1, M, N, (int)K, false);
}
