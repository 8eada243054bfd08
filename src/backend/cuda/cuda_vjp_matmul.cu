/* cuda_vjp_matmul.cu - vjps of MATMUL (out = x·Wᵀ + b) and GET_ROWS.
 *
 * dx[M,K] += dout[M,N]·W[N,K]:
 *  - f32 W: SGEMM (no TF32), as the forward.
 *  - bf16 W: like the forward's x split, dout = gh + gl (bf16 halves), two
 *    tensor-core GEMMs with f32 accumulation: W·gh + W·gl carries ~16 bits
 *    of dout; bf16 keeps f32's exponent range, so small gradients do not
 *    underflow (an f16 split of dout would). The default (fast_gemm, as the
 *    forward's single bf16 rounding of x; LMX_CUDA_EXACT=1 splits) drops the
 *    lo GEMM: ~3 digits.
 *  - f16 W and quantized W (MLX affine, mxfp4/nvfp4/mxfp8, GGUF blocks):
 *    tiles of rows converted/dequantized to bf16 hi + lo (exact for f16;
 *    16 bits of the dequantized f32 value), three GEMMs Wh·gh + Wh·gl + Wl·gh
 *    (the dropped Wl·gl is ~2^-16 of the product), as the forward's prefill.
 *    Expected agreement with the f32 reference: ~1e-5 relative. A quantized
 *    W at the default precision (fast_gemm) takes Wh·gh alone, as the
 *    forward's prefill takes Wh·xh: ~3 digits (QLoRA's bf16 compute).
 * dW[N,K] += doutᵀ·x and db[N] += Σ_rows dout for float W only (SGEMM, f32):
 * no gradient for quantized weights or their scales (LMX_ERR_UNSUPPORTED if
 * asked). GET_ROWS: atomic scatter-add of dout rows into a float table. */
#include "backend/cuda/cuda_quant.cuh"
#include "backend/cuda/cuda_vjp.cuh"

/* f16 rows -> bf16 hi + lo (exact: 11 significant bits fit in 2 x 8). */
__global__ void vjp_f16_to_bf16x2_k(__nv_bfloat16 *hi, __nv_bfloat16 *lo, const __half *w, int64_t n) {
    CUDA_VJP_LOOP(i, n) {
        float v = __half2float(w[i]);
        __nv_bfloat16 h = __float2bfloat16_rn(v);
        hi[i] = h;
        lo[i] = __float2bfloat16_rn(v - __bfloat162float(h));
    }
}

/* beta 0 writes dx (a fresh dsrc's first product), 1 adds into it. */
static lmx_status gemm_bf16(lmx_cuda_ctx *c, int64_t K, int64_t M, int64_t cur, const __nv_bfloat16 *w,
                            const __nv_bfloat16 *g, float *dx, float beta) {
    /* column-major: dxᵀ[K, M] = beta·dxᵀ + W_tileᵀ (col-major [K, cur]) · gᵀ (col-major [cur, M]) */
    const float one = 1.0f;
    return cuda_blas_check(cublasGemmEx(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)K, (int)M, (int)cur, &one, w,
                                        CUDA_R_16BF, (int)K, g, CUDA_R_16BF, (int)cur, &beta, dx, CUDA_R_32F, (int)K,
                                        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                           "matmul vjp: dx gemm");
}

static lmx_status dx_tiled(lmx_cuda_ctx *c, const lmx_node *n, const float *g, float *dx, int64_t M, int64_t N,
                           int64_t K, bool fresh) {
    const lmx_array *w = n->src[1];
    bool quant = lmx_dtype_info(w->dtype)->is_quant, need_wtile = quant || w->dtype == LMX_F16;
    /* rows of W per tile: the dout slice (M·nt·4 bytes) and the weight tile
     * (nt·K·4 bytes) within ~64 MB each */
    int64_t nt = ((int64_t)64 << 20) / (4 * (M > K ? M : K));
    if (nt < 64) nt = 64;
    if (nt > N) nt = N;
    size_t gbytes = (size_t)(M * nt) * 4, wbytes = need_wtile ? (size_t)(nt * K) * 4 : 0;
    uint8_t *scr;
    LMX_TRY(cuda_scratch(c, gbytes + wbytes, (void **)&scr));
    __nv_bfloat16 *gh = (__nv_bfloat16 *)scr, *gl = gh + M * nt;
    __nv_bfloat16 *wh = (__nv_bfloat16 *)(scr + gbytes), *wl = wh + nt * K;
    cuda_qw qw;
    if (quant) qw = cuda_qw_of(w, n->src[3], n->src[4], n->ip[0]);
    for (int64_t n0 = 0; n0 < N; n0 += nt) {
        int64_t cur = N - n0 < nt ? N - n0 : nt;
        float b0 = fresh && n0 == 0 ? 0.0f : 1.0f; /* the first product writes a fresh dx */
        /* a bf16 or quantized W at the default precision reads gh alone: no lo half to write */
        bool hi_only = (w->dtype == LMX_BF16 || quant) && c->fast_gemm;
        /* g[M, cur] (bf16 hi/lo) = dout[:, n0:n0+cur] */
        LMX_TRY(cuda_split_x_bf16(c, gh, hi_only ? NULL : gl, g + n0, M, cur, N));
        if (w->dtype == LMX_BF16) {
            const __nv_bfloat16 *wt = (const __nv_bfloat16 *)w->data + n0 * K;
            LMX_TRY(gemm_bf16(c, K, M, cur, wt, gh, dx, b0));
            /* default (not LMX_CUDA_EXACT=1): dout rounded once to bf16, as
             * the forward rounds x (a bf16 frozen base, as PEFT's) */
            if (!c->fast_gemm) LMX_TRY(gemm_bf16(c, K, M, cur, wt, gl, dx, 1.0f));
            continue;
        }
        if (quant) {
            /* default precision: Wh·gh alone, as the forward's prefill (gemm_quant) computes Wh·xh */
            LMX_TRY(cuda_dequant_bf16(c, &qw, n0, cur, wh, hi_only ? NULL : wl));
            LMX_TRY(gemm_bf16(c, K, M, cur, wh, gh, dx, b0));
            if (hi_only) continue;
            LMX_TRY(gemm_bf16(c, K, M, cur, wh, gl, dx, 1.0f));
            LMX_TRY(gemm_bf16(c, K, M, cur, wl, gh, dx, 1.0f));
            continue;
        } else {
            vjp_f16_to_bf16x2_k<<<cuda_vjp_blocks(cur * K), 256, 0, c->stream>>>(wh, wl, (const __half *)w->data + n0 * K,
                                                                               cur * K);
            LMX_TRY(cuda_launched("matmul vjp: f16 weight tile"));
        }
        LMX_TRY(gemm_bf16(c, K, M, cur, wh, gh, dx, b0));
        LMX_TRY(gemm_bf16(c, K, M, cur, wh, gl, dx, 1.0f));
        LMX_TRY(gemm_bf16(c, K, M, cur, wl, gh, dx, 1.0f));
    }
    return LMX_OK;
}

/* ---- adapter factors: f32 W with one side of rank r <= 16 (LoRA's A [r, in], B [out, r]) ----
 * These products are memory-bound (x or dout read once, 8..16 multiply-adds per element); cuBLAS's SGEMM
 * tiles for such skinny shapes ran at ~1/3 of the bandwidth. R is the rank rounded up to 8 or 16 (zero
 * padded); each kernel reads its wide operand once with coalesced loads and keeps the rank side in registers. */
#define LR_ROWS 64 /* rows of the wide operand per block of the outer-product kernel */

/* out += smallᵀ·big summed over rows: small [M, R] (dense), big [M, C] (row stride bs; C, bs multiples of 4,
 * 16-byte aligned). TRANS = false: out is [R, C] (dA of x·Aᵀ); true: out is [C, R] (dB of u·Bᵀ). A thread owns
 * 4 columns (16-byte loads, 8 rows in flight), a block 512 columns x LR_ROWS rows; atomics add the partials. */
template <int R, bool TRANS>
__global__ void __launch_bounds__(128) lr_outer_k(float *out, const float *small, const float *big, int64_t M,
                                                  int64_t C, int64_t bs) {
    __shared__ float sm[LR_ROWS][R];
    int64_t m0 = (int64_t)blockIdx.y * LR_ROWS, c = ((int64_t)blockIdx.x * 128 + threadIdx.x) * 4;
    int rows = M - m0 < LR_ROWS ? (int)(M - m0) : LR_ROWS;
    for (int i = threadIdx.x; i < LR_ROWS * R; i += 128) sm[i / R][i % R] = i / R < rows ? small[m0 * R + i] : 0.f;
    __syncthreads();
    if (c >= C) return;
    float acc[4][R];
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
        for (int k = 0; k < R; k++) acc[j][k] = 0.f;
    const float *b = big + m0 * bs + c;
#pragma unroll 8
    for (int rr = 0; rr < rows; rr++) {
        float4 x = *reinterpret_cast<const float4 *>(b + rr * bs);
#pragma unroll
        for (int k = 0; k < R; k++) {
            float s = sm[rr][k];
            acc[0][k] += s * x.x;
            acc[1][k] += s * x.y;
            acc[2][k] += s * x.z;
            acc[3][k] += s * x.w;
        }
    }
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
        for (int k = 0; k < R; k++) atomicAdd(TRANS ? out + (c + j) * R + k : out + k * C + c + j, acc[j][k]);
}

/* dx[M, K] (dense) += g[M, r]·A[r, K]: a thread per 4 columns of a row (K % 4 == 0, 16-byte aligned). */
template <int R>
__global__ void __launch_bounds__(256) lr_expand_k(float *dx, const float *g, const float *A, int64_t M, int64_t K) {
    int64_t K4 = K / 4;
    CUDA_VJP_LOOP(i, M * K4) {
        int64_t m = i / K4, c = (i - m * K4) * 4;
        float4 o = *reinterpret_cast<float4 *>(dx + m * K + c);
#pragma unroll
        for (int k = 0; k < R; k++) {
            float gk = g[m * R + k];
            float4 a = *reinterpret_cast<const float4 *>(A + k * K + c);
            o.x += gk * a.x;
            o.y += gk * a.y;
            o.z += gk * a.z;
            o.w += gk * a.w;
        }
        *reinterpret_cast<float4 *>(dx + m * K + c) = o;
    }
}

/* du[M, R] (dense) += g[M, N] (dense)·B[N, R]: a warp takes 4 rows and a chunk of LR_NCHUNK columns (4 per lane
 * per step, each B row read once for the 4 rows), reduces over its lanes and adds with atomics (chunks). */
#define LR_NCHUNK 2048
template <int R>
__global__ void __launch_bounds__(128) lr_contract_k(float *du, const float *g, const float *B, int64_t M, int64_t N) {
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int64_t m0 = ((int64_t)blockIdx.x * 4 + warp) * 4, n0 = (int64_t)blockIdx.y * LR_NCHUNK;
    int64_t n1 = n0 + LR_NCHUNK < N ? n0 + LR_NCHUNK : N;
    float acc[4][R];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int k = 0; k < R; k++) acc[i][k] = 0.f;
    for (int64_t n = n0 + lane * 4; n < n1; n += 128) {
        float b[4][R]; /* rows n..n+3 of B: 4R consecutive floats */
#pragma unroll
        for (int q = 0; q < R; q++) {
            float4 v = *reinterpret_cast<const float4 *>(B + n * R + q * 4);
            b[q * 4 / R][(q * 4) % R] = v.x;
            b[q * 4 / R][(q * 4) % R + 1] = v.y;
            b[q * 4 / R][(q * 4) % R + 2] = v.z;
            b[q * 4 / R][(q * 4) % R + 3] = v.w;
        }
#pragma unroll
        for (int i = 0; i < 4; i++) {
            if (m0 + i >= M) break;
            float4 x = *reinterpret_cast<const float4 *>(g + (m0 + i) * N + n);
#pragma unroll
            for (int k = 0; k < R; k++) acc[i][k] += x.x * b[0][k] + x.y * b[1][k] + x.z * b[2][k] + x.w * b[3][k];
        }
    }
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int k = 0; k < R; k++) {
            float v = acc[i][k];
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
            if (lane == k && m0 + i < M) atomicAdd(du + (m0 + i) * R + k, v);
        }
}

template <int R>
static lmx_status lora_vjp_r(lmx_cuda_ctx *c, const lmx_node *n, const float *g, lmx_array *dsrc[], int64_t M,
                             int64_t N, int64_t K, int64_t xs) {
    const float *x = (const float *)n->src[0]->data, *w = (const float *)n->src[1]->data;
    if (N == R) { /* x·Aᵀ, A [R, K] */
        if (dsrc[0]) {
            lr_expand_k<R><<<cuda_vjp_blocks(M * (K / 4)), 256, 0, c->stream>>>((float *)dsrc[0]->data, g, w, M, K);
            LMX_TRY(cuda_launched("matmul vjp: adapter dx"));
        }
        if (dsrc[1]) {
            dim3 grid((unsigned)((K + 511) / 512), (unsigned)((M + LR_ROWS - 1) / LR_ROWS));
            lr_outer_k<R, false><<<grid, 128, 0, c->stream>>>((float *)dsrc[1]->data, g, x, M, K, xs);
            LMX_TRY(cuda_launched("matmul vjp: adapter dW"));
        }
        return LMX_OK;
    }
    /* u·Bᵀ, B [N, R] */
    if (dsrc[0]) {
        dim3 grid((unsigned)((M + 15) / 16), (unsigned)((N + LR_NCHUNK - 1) / LR_NCHUNK));
        lr_contract_k<R><<<grid, 128, 0, c->stream>>>((float *)dsrc[0]->data, g, w, M, N);
        LMX_TRY(cuda_launched("matmul vjp: adapter dx"));
    }
    if (dsrc[1]) {
        dim3 grid((unsigned)((N + 511) / 512), (unsigned)((M + LR_ROWS - 1) / LR_ROWS));
        lr_outer_k<R, true><<<grid, 128, 0, c->stream>>>((float *)dsrc[1]->data, x, g, M, N, N);
        LMX_TRY(cuda_launched("matmul vjp: adapter dW"));
    }
    return LMX_OK;
}

static bool al16(const void *p) { return ((uintptr_t)p & 15) == 0; }

/* The adapter-factor vjp when the node is one (f32 W with a side of 8 or 16 and the other a multiple of 4, no
 * bias, dense 16-byte-aligned layouts); *done = false leaves it to cuBLAS. LMX_CUDA_LORA_VJP=sgemm: cuBLAS
 * always (A/B runs). */
static lmx_status lora_vjp(lmx_cuda_ctx *c, const lmx_node *n, const float *g, lmx_array *dsrc[], int64_t M,
                           int64_t N, int64_t K, int64_t xs, bool *done) {
    static int off = -1;
    if (off < 0) {
        const char *e = getenv("LMX_CUDA_LORA_VJP");
        off = e && !strcmp(e, "sgemm");
    }
    const lmx_array *x = n->src[0], *w = n->src[1];
    *done = false;
    bool a = N == 8 || N == 16, b = K == 8 || K == 16;
    if (off || w->dtype != LMX_F32 || dsrc[2] || !lmx_array_is_contiguous(w) || a == b || !al16(w->data) ||
        !al16(g) || !al16(x->data) || (dsrc[0] && !al16(dsrc[0]->data)))
        return LMX_OK;
    if (a ? K % 4 || xs % 4 : N % 4 || xs != K) return LMX_OK;
    *done = true;
    int64_t r = a ? N : K;
    return r == 8 ? lora_vjp_r<8>(c, n, g, dsrc, M, N, K, xs) : lora_vjp_r<16>(c, n, g, dsrc, M, N, K, xs);
}

lmx_status lmx_cuda_vjp_matmul(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool) {
    lmx_cuda_ctx *c = cuda_ctx(pool);
    const lmx_array *x = n->src[0], *w = n->src[1];
    int64_t M = cu_rows(x), K = w->shape[1], N = w->shape[0], xs = cu_row_stride(x);
    bool quant = lmx_dtype_info(w->dtype)->is_quant;
    if ((dsrc[3] || dsrc[4]) || (quant && dsrc[1]))
        return lmx_err(LMX_ERR_UNSUPPORTED, "cuda matmul vjp: no gradient for quantized weight %s or its scales",
                       lmx_dtype_info(w->dtype)->name);
    if (x->dtype != LMX_F32) return lmx_err(LMX_ERR_UNSUPPORTED, "cuda matmul vjp: x must be f32");
    if (!quant && !cu_is_float(w->dtype))
        return lmx_err(LMX_ERR_UNSUPPORTED, "cuda matmul vjp: weight dtype %s", lmx_dtype_info(w->dtype)->name);
    if (M > 0x7fffffff || N > 0x7fffffff || K > 0x7fffffff || xs > 0x7fffffff)
        return lmx_err(LMX_ERR_UNSUPPORTED, "cuda matmul vjp: dimensions beyond 2^31");
    if (M == 0 || N == 0) return LMX_OK;
    const float *g = (const float *)dout->data;
    const float one = 1.0f;
    bool done;
    LMX_TRY(lora_vjp(c, n, g, dsrc, M, N, K, xs, &done));
    if (done) return LMX_OK;
    if (dsrc[0]) {
        float *dx = (float *)dsrc[0]->data;
        bool fresh = n->fresh & 1; /* lmx_cuda_vjp_overwrites: write dx, don't add */
        const float beta = fresh ? 0.0f : 1.0f;
        if (w->dtype == LMX_F32)
            LMX_TRY(cuda_blas_check(cublasSgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)K, (int)M, (int)N, &one,
                                                (const float *)w->data, (int)K, g, (int)N, &beta, dx, (int)K),
                                    "matmul vjp: dx sgemm"));
        else
            LMX_TRY(dx_tiled(c, n, g, dx, M, N, K, fresh));
    }
    if (dsrc[1]) /* column-major: dWᵀ[K, N] += xᵀ (col-major [K, M]) · dout (as [M, N]) */
        LMX_TRY(cuda_blas_check(cublasSgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_T, (int)K, (int)N, (int)M, &one,
                                            (const float *)x->data, (int)xs, g, (int)N, &one,
                                            (float *)dsrc[1]->data, (int)K),
                                "matmul vjp: dW sgemm"));
    if (dsrc[2]) LMX_TRY(cuda_vjp_colsum_add(c, (float *)dsrc[2]->data, g, M, N, N));
    return LMX_OK;
}

__global__ void vjp_get_rows_k(float *dt, const float *g, const int32_t *ids, int64_t R, int64_t D) {
    CUDA_VJP_LOOP(i, R * D) {
        int64_t r = i / D, d = i - r * D;
        atomicAdd(dt + (int64_t)ids[r] * D + d, g[i]);
    }
}

lmx_status lmx_cuda_vjp_get_rows(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool) {
    lmx_cuda_ctx *c = cuda_ctx(pool);
    if (dsrc[2] || dsrc[3])
        return lmx_err(LMX_ERR_UNSUPPORTED, "cuda get_rows vjp: no gradient for a quantized table's scales");
    if (!dsrc[0]) return LMX_OK;
    if (!cu_is_float(n->src[0]->dtype))
        return lmx_err(LMX_ERR_UNSUPPORTED, "cuda get_rows vjp: no gradient for a %s table",
                       lmx_dtype_info(n->src[0]->dtype)->name);
    int64_t R = lmx_array_numel(n->src[1]), D = n->src[0]->shape[1];
    if (R * D == 0) return LMX_OK;
    vjp_get_rows_k<<<cuda_vjp_blocks(R * D), 256, 0, c->stream>>>((float *)dsrc[0]->data, (const float *)dout->data,
                                                                   (const int32_t *)n->src[1]->data, R, D);
    return cuda_launched("get_rows vjp");
}
