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
 * asked). LoRA's factors (f32 W with a side of 8 or 16): cuda_lora.cu.
 * GET_ROWS: atomic scatter-add of dout rows into a float table. */
#include "backend/cuda/cuda_lora.cuh"
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

/* n->fresh bit 0 (lmx_cuda_vjp_overwrites): dx written whole */
lmx_status lmx_cuda_vjp_matmul(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool) {
    return lmx_cuda_vjp_matmul_ex(n, dout, dsrc, pool, n->fresh & 1);
}

/* overwrite: dsrc[0] written whole instead of added into */
extern "C" lmx_status lmx_cuda_vjp_matmul_ex(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[],
                                             lmx_pool *pool, int overwrite) {
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
    /* MATMUL_ACC (out += s·x·wᵀ, f32 w): dx and dW carry s */
    const float one = 1.0f, s = n->op == LMX_OP_MATMUL_ACC ? n->fp[0] : 1.0f;
    bool done;
    LMX_TRY(cuda_lora_vjp(c, n, g, dsrc, M, N, K, xs, overwrite, &done));
    if (done) return LMX_OK;
    if (dsrc[0]) {
        float *dx = (float *)dsrc[0]->data;
        bool fresh = overwrite; /* write dx, don't add */
        const float beta = fresh ? 0.0f : 1.0f;
        if (w->dtype == LMX_F32)
            LMX_TRY(cuda_blas_check(cublasSgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, (int)K, (int)M, (int)N, &s,
                                                (const float *)w->data, (int)K, g, (int)N, &beta, dx, (int)K),
                                    "matmul vjp: dx sgemm"));
        else
            LMX_TRY(dx_tiled(c, n, g, dx, M, N, K, fresh));
    }
    if (dsrc[1]) /* column-major: dWᵀ[K, N] += xᵀ (col-major [K, M]) · dout (as [M, N]) */
        LMX_TRY(cuda_blas_check(cublasSgemm(c->blas, CUBLAS_OP_N, CUBLAS_OP_T, (int)K, (int)N, (int)M, &s,
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
