/* cuda_matmul.cu - out[M,N] (f32) = x[M,K] (f32) · w[N,K]ᵀ (+ b), weights f32/f16/bf16.
 *
 * Decode (M <= GEMV_MAX_M): a warp per output row streams the weight row
 * with 16-byte loads (4 in flight per lane), multiplies up to 8 x rows per
 * weight load and reduces with shuffles; x stays f32 (exact products).
 * Prefill: cuBLAS. f32 weights: SGEMM (no TF32; LoRA's rank-8/16 factors: cuda_lora.cu).
 * bf16/f16 weights: tensor-core
 * GEMMs with f32 accumulation on x split in two halves of the weight dtype,
 * x = hi + lo (hi = round(x), lo = round(x - hi)): out = W·hi + W·lo carries
 * ~16 (bf16) / 22 (f16) bits of x, so results agree with the f32 reference
 * to ~1e-5 at twice the tensor work: LMX_CUDA_EXACT=1 (or
 * LMX_CUDA_FAST_GEMM=0). By default x is rounded once (hi alone: one GEMM,
 * ~1e-3..1e-2 relative, as MLX and llama.cpp compute with 16-bit
 * activations), and the prefill attention after it follows (attn_exact).
 *
 * Quantized weights (cuda_quant*.cu): decode reads the packed bytes
 * (cuda_gemv_quant). Prefill dequantizes tiles of rows (LMX_CUDA_QTILE_MB of
 * bf16, default 128: a whole 8B weight in fast mode, two tiles in exact mode;
 * tile heights are multiples of 128 rows) to bf16 in scratch and runs the
 * same cuBLAS GEMMs; a dequantized weight (s·q + b in f32) is not a
 * bf16 value, so it is split too, W = Wh + Wl, and three GEMMs add
 * Wh·xh + Wh·xl + Wl·xh (the dropped Wl·xl is ~2^-16 of the product): ~3e-6
 * relative to the f32 reference, at 1.5x the tensor work of a bf16 weight
 * (exact mode); by default Wh·xh alone.
 *
 * Memory (issue 6: device peak <= weights + KV cache + 10%): the tile
 * budget and cuBLAS's workspace are sized by the model at its first
 * (quantized) prefill GEMM, from the device memory then in use (~ the
 * weights), and kept: tiles
 * of 1/64 of it (8..128 MB: a 1B 4-bit model's 8192 x 2048 weights in 3
 * tiles, an 8B's 14336 x 4096 in 2), a workspace of 1/128 (4..32 MB). */
#include "backend/cuda/cuda_lora.cuh"
#include "backend/cuda/cuda_quant.cuh"

#define GEMV_MAX_M 8
#define GEMV_WARPS 8
#define GEMV_UNROLL 4

/* A block of GEMV_WARPS warps covers GEMV_WARPS/S rows; the S warps of a row
 * split its K range (split-K inside the block, merged through shared
 * memory), so narrow matrices still put enough loads in flight. */
template <typename Tw, int MR>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_k(float *__restrict__ out, const float *__restrict__ x, const Tw *__restrict__ w, const void *bias, int bdt,
           int M, int64_t N, int64_t K, int64_t xs, int64_t os, int S) {
    constexpr int V = 16 / sizeof(Tw);
    __shared__ float red[GEMV_WARPS][MR];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int64_t row = (int64_t)blockIdx.x * (GEMV_WARPS / S) + warp / S;
    int ks = warp % S;
    int64_t nv = K / V, v0 = nv * ks / S, v1 = nv * (ks + 1) / S;
    float acc[MR];
#pragma unroll
    for (int m = 0; m < MR; m++) acc[m] = 0.0f;
    if (row < N) {
        const uint4 *wr = reinterpret_cast<const uint4 *>(w + row * K);
        for (int64_t i0 = v0 + lane; i0 < v1; i0 += 32 * GEMV_UNROLL) {
            uint4 u[GEMV_UNROLL];
#pragma unroll
            for (int j = 0; j < GEMV_UNROLL; j++)
                if (i0 + 32 * j < v1) u[j] = ld_stream(wr + i0 + 32 * j);
#pragma unroll
            for (int j = 0; j < GEMV_UNROLL; j++) {
                int64_t i = i0 + 32 * j;
                if (i >= v1) break;
                float wf[V];
                unpack16(u[j], wf, (const Tw *)nullptr);
#pragma unroll
                for (int m = 0; m < MR; m++) {
                    if (m >= M) break;
                    const float4 *xv = reinterpret_cast<const float4 *>(x + m * xs + i * V);
#pragma unroll
                    for (int q = 0; q < V / 4; q++) {
                        float4 a = __ldg(xv + q);
                        acc[m] += a.x * wf[4 * q] + a.y * wf[4 * q + 1] + a.z * wf[4 * q + 2] + a.w * wf[4 * q + 3];
                    }
                }
            }
        }
    }
#pragma unroll
    for (int m = 0; m < MR; m++) {
        float sum = warp_sum(acc[m]);
        if (lane == 0) red[warp][m] = sum;
    }
    if (S > 1) __syncthreads();
    if (ks != 0 || lane != 0 || row >= N) return;
    float bv = bias ? ld_any(bias, bdt, row) : 0.0f;
#pragma unroll
    for (int m = 0; m < MR; m++) {
        if (m >= M) break;
        float sum = red[warp][m];
        for (int k = 1; k < S; k++) sum += red[warp + k][m];
        out[m * os + row] = sum + bv;
    }
}

/* Any alignment / K: element loads. */
template <typename Tw>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_scalar_k(float *out, const float *x, const Tw *w, const void *bias, int bdt, int M, int64_t N, int64_t K,
                  int64_t xs, int64_t os) {
    int lane = threadIdx.x & 31;
    int64_t row = (int64_t)blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    if (row >= N) return;
    float acc[GEMV_MAX_M] = {0};
    for (int64_t k = lane; k < K; k += 32) {
        float wv = ldf(w, row * K + k);
#pragma unroll
        for (int m = 0; m < GEMV_MAX_M; m++)
            if (m < M) acc[m] += x[m * xs + k] * wv;
    }
    float bv = bias ? ld_any(bias, bdt, row) : 0.0f;
#pragma unroll
    for (int m = 0; m < GEMV_MAX_M; m++) {
        if (m >= M) break;
        float s = warp_sum(acc[m]);
        if (lane == 0) out[m * os + row] = s + bv;
    }
}

template <typename Tw>
static void launch_gemv(cudaStream_t st, int n_sm, float *out, const float *x, const Tw *w, const void *bias, int bdt, int M,
                        int64_t N, int64_t K, int64_t xs, int64_t os) {
    constexpr int V = 16 / sizeof(Tw);
    dim3 block(GEMV_WARPS * 32);
    bool vec = K % V == 0 && ((uintptr_t)w & 15) == 0 && ((uintptr_t)x & 15) == 0 && (M == 1 || xs % 4 == 0);
    if (!vec) {
        dim3 grid((unsigned)((N + GEMV_WARPS - 1) / GEMV_WARPS));
        gemv_scalar_k<Tw><<<grid, block, 0, st>>>(out, x, w, bias, bdt, M, N, K, xs, os);
        return;
    }
    /* warps per row: enough blocks for ~2 per SM, each warp >= 2 vectors per lane */
    int S = 1;
    while (S < GEMV_WARPS && N * S / GEMV_WARPS < 2 * n_sm && K / V / (2 * S) >= 64) S *= 2;
    dim3 grid((unsigned)((N + GEMV_WARPS / S - 1) / (GEMV_WARPS / S)));
    if (M == 1)
        gemv_k<Tw, 1><<<grid, block, 0, st>>>(out, x, w, bias, bdt, M, N, K, xs, os, S);
    else if (M == 2)
        gemv_k<Tw, 2><<<grid, block, 0, st>>>(out, x, w, bias, bdt, M, N, K, xs, os, S);
    else if (M <= 4)
        gemv_k<Tw, 4><<<grid, block, 0, st>>>(out, x, w, bias, bdt, M, N, K, xs, os, S);
    else
        gemv_k<Tw, 8><<<grid, block, 0, st>>>(out, x, w, bias, bdt, M, N, K, xs, os, S);
}

/* ---- prefill through cuBLAS ---------------------------------------------------- */

static unsigned blocks_for(int64_t n) {
    int64_t b = (n + 255) / 256;
    return (unsigned)(b < 8192 ? (b > 0 ? b : 1) : 8192);
}


template <typename T>
__global__ void split_x_k(T *hi, T *lo, const float *x, int64_t M, int64_t K, int64_t xs) {
    int64_t n = M * K;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t m = i / K;
        float v = x[m * xs + (i - m * K)];
        stf(hi, i, v);
        if (lo) stf(lo, i, v - ldf(hi, i));
    }
}

/* bf16, 4 elements a thread: one 16-byte x load, two 8-byte stores per half,
 * 2-D indexing (no 64-bit division per element). K % 4 == 0, xs % 4 == 0, x 16-byte aligned. */
__global__ void split_x4_k(__nv_bfloat16 *hi, __nv_bfloat16 *lo, const float *x, int64_t M, int K4, int64_t xs) {
    for (int64_t m = blockIdx.y; m < M; m += gridDim.y)
        for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < K4; c += gridDim.x * blockDim.x) {
            float4 v = *reinterpret_cast<const float4 *>(x + m * xs + 4 * (int64_t)c);
            __nv_bfloat162 h0 = __floats2bfloat162_rn(v.x, v.y), h1 = __floats2bfloat162_rn(v.z, v.w);
            int64_t o = m * K4 + c;
            reinterpret_cast<uint2 *>(hi)[o] = make_uint2(*reinterpret_cast<uint32_t *>(&h0), *reinterpret_cast<uint32_t *>(&h1));
            if (!lo) continue;
            __nv_bfloat162 l0 = __floats2bfloat162_rn(v.x - __low2float(h0), v.y - __high2float(h0));
            __nv_bfloat162 l1 = __floats2bfloat162_rn(v.z - __low2float(h1), v.w - __high2float(h1));
            reinterpret_cast<uint2 *>(lo)[o] = make_uint2(*reinterpret_cast<uint32_t *>(&l0), *reinterpret_cast<uint32_t *>(&l1));
        }
}

/* x -> bf16 hi (+ lo), rows packed K apart (cuda_quant.cuh). */
lmx_status cuda_split_x_bf16(lmx_cuda_ctx *c, __nv_bfloat16 *hi, __nv_bfloat16 *lo, const float *x, int64_t M, int64_t K,
                               int64_t xs) {
    if (K % 4 == 0 && xs % 4 == 0 && ((uintptr_t)x & 15) == 0 && K / 4 <= 0x7fffffff) {
        int K4 = (int)(K / 4);
        unsigned bx = (unsigned)((K4 + 255) / 256);
        int64_t by = M < 65535 ? M : 65535;
        split_x4_k<<<dim3(bx, (unsigned)by), 256, 0, c->stream>>>(hi, lo, x, M, K4, xs);
    } else {
        split_x_k<<<blocks_for(M * K), 256, 0, c->stream>>>(hi, lo, x, M, K, xs);
    }
    return cuda_launched("matmul: split x");
}

__global__ void add_bias_k(float *out, const void *bias, int bdt, int64_t M, int64_t N, int64_t os) {
    int64_t n = M * N;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t m = i / N, j = i - m * N;
        out[m * os + j] += ld_any(bias, bdt, j);
    }
}

static size_t clamp_mb(size_t v, size_t lo_mb, size_t hi_mb) {
    v &= ~(size_t)((1u << 20) - 1);
    return v < (lo_mb << 20) ? lo_mb << 20 : v > (hi_mb << 20) ? hi_mb << 20 : v;
}

/* Once, at the first prefill GEMM: cuBLAS's workspace for this model. */
static lmx_status fit_workspace(lmx_cuda_ctx *c) {
    if (c->blas_ws_fitted || c->capturing) return LMX_OK;
    c->blas_ws_fitted = true;
    return cuda_blas_workspace(c, c->blas_ws_want ? c->blas_ws_want : clamp_mb(c->mem_in_use / 128, 4, 32));
}

static lmx_status gemm(lmx_cuda_ctx *c, const lmx_node *n, int64_t M, int64_t N, int64_t K, int64_t xs, int64_t os) {
    const lmx_array *x = n->src[0], *w = n->src[1];
    float *out = (float *)n->out->data;
    const float one = 1.0f, zero = 0.0f;
    if (M > 0x7fffffff || N > 0x7fffffff || K > 0x7fffffff || xs > 0x7fffffff || os > 0x7fffffff)
        return lmx_err(LMX_ERR_UNSUPPORTED, "cuda matmul: dimensions beyond 2^31");
    LMX_TRY(fit_workspace(c));
    if (w->dtype == LMX_F32) {
        /* column-major view: outᵀ[N,M] = wᵀᵀ · xᵀ */
        return cuda_blas_check(cublasSgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)M, (int)K, &one,
                                           (const float *)w->data, (int)K, (const float *)x->data, (int)xs, &zero,
                                           out, (int)os),
                               "sgemm");
    }
    uint8_t *xh;
    bool split = !c->fast_gemm;
    LMX_TRY(cuda_scratch(c, (size_t)(M * K) * (split ? 4 : 2), (void **)&xh));
    uint8_t *xl = split ? xh + (size_t)(M * K) * 2 : NULL;
    cudaDataType_t dt = w->dtype == LMX_BF16 ? CUDA_R_16BF : CUDA_R_16F;
    if (w->dtype == LMX_BF16) {
        LMX_TRY(cuda_split_x_bf16(c, (__nv_bfloat16 *)xh, (__nv_bfloat16 *)xl, (const float *)x->data, M, K, xs));
    } else {
        split_x_k<<<blocks_for(M * K), 256, 0, c->stream>>>((__half *)xh, (__half *)xl, (const float *)x->data, M, K,
                                                            xs);
        LMX_TRY(cuda_launched("matmul: split x"));
    }
    LMX_TRY(cuda_blas_check(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)M, (int)K, &one, w->data, dt,
                                         (int)K, xh, dt, (int)K, &zero, out, CUDA_R_32F, (int)os, CUBLAS_COMPUTE_32F,
                                         CUBLAS_GEMM_DEFAULT),
                            "gemm"));
    if (!split) return LMX_OK;
    return cuda_blas_check(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)M, (int)K, &one, w->data, dt,
                                        (int)K, xl, dt, (int)K, &one, out, CUDA_R_32F, (int)os, CUBLAS_COMPUTE_32F,
                                        CUBLAS_GEMM_DEFAULT),
                           "gemm (low half)");
}

static lmx_status gemm_quant(lmx_cuda_ctx *c, const lmx_node *n, const cuda_qw *qw, int64_t M, int64_t xs, int64_t os) {
    const lmx_array *x = n->src[0];
    int64_t N = qw->N, K = qw->K;
    float *out = (float *)n->out->data;
    const float one = 1.0f, zero = 0.0f;
    if (M > 0x7fffffff || N > 0x7fffffff || K > 0x7fffffff || xs > 0x7fffffff || os > 0x7fffffff)
        return lmx_err(LMX_ERR_UNSUPPORTED, "cuda matmul: dimensions beyond 2^31");
    bool split = !c->fast_gemm;
    int halves = split ? 2 : 1;
    LMX_TRY(fit_workspace(c));
    /* Rows per dequantized tile: at most qtile_bytes of bf16 (else 1/64 of
     * the memory in use, 8..128 MB), split evenly, a multiple of 128 rows
     * (a tile of 585 rows left cuBLAS's output columns unaligned: 8B down,
     * K = 14336, took 2.5 ms instead of ~0.4) */
    if (!c->qtile_bytes) c->qtile_bytes = clamp_mb(c->mem_in_use / 64, 8, 128); /* once: stays as the cache grows */
    int64_t nt = (int64_t)c->qtile_bytes / (2 * halves * K);
    nt = nt / 128 * 128;
    if (nt < 128) nt = 128;
    if (nt < N) {
        int64_t tiles = (N + nt - 1) / nt;
        nt = ((N + tiles - 1) / tiles + 127) / 128 * 128;
    }
    if (nt > N) nt = N;
    size_t xbytes = (size_t)(M * K) * 2 * halves, wbytes = (size_t)(nt * K) * 2 * halves;
    uint8_t *scr;
    LMX_TRY(cuda_scratch(c, xbytes + wbytes, (void **)&scr));
    __nv_bfloat16 *xh = (__nv_bfloat16 *)scr, *xl = split ? xh + M * K : NULL;
    __nv_bfloat16 *wh = (__nv_bfloat16 *)(scr + xbytes), *wl = split ? wh + nt * K : NULL;
    LMX_TRY(cuda_split_x_bf16(c, xh, xl, (const float *)x->data, M, K, xs));
    for (int64_t n0 = 0; n0 < N; n0 += nt) {
        int64_t cur = N - n0 < nt ? N - n0 : nt;
        LMX_TRY(cuda_dequant_bf16(c, qw, n0, cur, wh, wl));
        /* column-major view: outᵀ[cur, M] = W_tile · xᵀ, columns os apart */
        const __nv_bfloat16 *A[3] = {wh, wh, wl}, *B[3] = {xh, xl, xh};
        for (int t = 0; t < (split ? 3 : 1); t++)
            LMX_TRY(cuda_blas_check(cublasGemmEx(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)cur, (int)M, (int)K, &one,
                                                 A[t], CUDA_R_16BF, (int)K, B[t], CUDA_R_16BF, (int)K,
                                                 t ? &one : &zero, out + n0, CUDA_R_32F, (int)os, CUBLAS_COMPUTE_32F,
                                                 CUBLAS_GEMM_DEFAULT),
                                    "gemm (dequantized tile)"));
    }
    return LMX_OK;
}

/* out += s·(x·wᵀ) (LMX_OP_MATMUL_ACC, s = fp[0]: LoRA's B factor and scale onto the base output): the rank-8/16
 * kernel of cuda_lora.cu, else one SGEMM with alpha = s, beta = 1 instead of a product array and an add. */
lmx_status lmx_cuda_matmul_acc(const lmx_node *n, lmx_pool *pool) {
    lmx_cuda_ctx *c = cuda_ctx(pool);
    const lmx_array *x = n->src[0], *w = n->src[1];
    int64_t M = cu_rows(x), K = w->shape[1], N = w->shape[0];
    int64_t xs = cu_row_stride(x), os = cu_row_stride(n->out);
    if (M == 0 || N == 0) return LMX_OK;
    if (M > 0x7fffffff || N > 0x7fffffff || K > 0x7fffffff || xs > 0x7fffffff || os > 0x7fffffff)
        return lmx_err(LMX_ERR_UNSUPPORTED, "cuda matmul_acc: dimensions beyond 2^31");
    bool done;
    LMX_TRY(cuda_lora_fwd_acc(c, n, M, N, K, xs, os, &done));
    if (done) return LMX_OK;
    LMX_TRY(fit_workspace(c));
    const float one = 1.0f, s = n->fp[0];
    return cuda_blas_check(cublasSgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)M, (int)K, &s,
                                       (const float *)w->data, (int)K, (const float *)x->data, (int)xs, &one,
                                       (float *)n->out->data, (int)os),
                           "sgemm (accumulate)");
}

lmx_status lmx_cuda_matmul(const lmx_node *n, lmx_pool *pool) {
    lmx_cuda_ctx *c = cuda_ctx(pool);
    const lmx_array *x = n->src[0], *w = n->src[1], *b = n->src[2];
    int64_t M = cu_rows(x), K = w->shape[1], N = w->shape[0];
    int64_t xs = cu_row_stride(x), os = cu_row_stride(n->out);
    float *out = (float *)n->out->data;
    if (M == 0 || N == 0) return LMX_OK;
    /* prefill attention after projections with f32 weights stays exact (the
     * KV cache is f32 for every model, so its dtype cannot tell) */
    /* ... except an adapter factor (f32, a side of rank <= 16: LoRA's x·Aᵀ
     * and ·Bᵀ run after their frozen base projection) does not decide it */
    if (!(w->dtype == LMX_F32 && (N <= 16 || K <= 16))) c->attn_exact = w->dtype == LMX_F32;
    const void *bias = b ? b->data : NULL;
    int bdt = b ? b->dtype : 0;
    if (lmx_dtype_info(w->dtype)->is_quant) {
        cuda_qw qw = cuda_qw_of(w, n->src[3], n->src[4], n->ip[0]);
        if (M <= GEMV_MAX_M) return cuda_gemv_quant(c, n, &qw);
        LMX_TRY(gemm_quant(c, n, &qw, M, xs, os));
    } else if (M <= GEMV_MAX_M) {
        const float *xd = (const float *)x->data;
        switch (w->dtype) {
        case LMX_F32: launch_gemv(c->stream, c->n_sm, out, xd, (const float *)w->data, bias, bdt, (int)M, N, K, xs, os); break;
        case LMX_BF16:
            launch_gemv(c->stream, c->n_sm, out, xd, (const __nv_bfloat16 *)w->data, bias, bdt, (int)M, N, K, xs, os);
            break;
        case LMX_F16: launch_gemv(c->stream, c->n_sm, out, xd, (const __half *)w->data, bias, bdt, (int)M, N, K, xs, os); break;
        default: return lmx_err(LMX_ERR_UNSUPPORTED, "cuda matmul: weight dtype %s", lmx_dtype_info(w->dtype)->name);
        }
        return cuda_launched("matmul (gemv)");
    } else {
        bool done = false; /* LoRA's x·Aᵀ (f32 A of 8 or 16 rows): one pass over x (cuda_lora.cu) */
        if (w->dtype == LMX_F32 && !bias) LMX_TRY(cuda_lora_fwd_a(c, n, M, N, K, xs, os, &done));
        if (!done) LMX_TRY(gemm(c, n, M, N, K, xs, os));
    }
    if (bias) {
        add_bias_k<<<blocks_for(M * N), 256, 0, c->stream>>>(out, bias, bdt, M, N, os);
        LMX_TRY(cuda_launched("matmul: bias"));
    }
    return LMX_OK;
}
