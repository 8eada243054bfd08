/* cuda_vjp_attention.cu - the vjp of causal attention (GQA, sliding window,
 * soft-capping) through cuBLAS, materialising each head's scores in f32:
 *   u = scale·Q·Kᵀ; s = cap·tanh(u/cap) (or u); P = softmax(s) over the
 *   allowed keys (j <= pos, j > pos - window);
 *   dP = dO·Vᵀ;  dS = P ⊙ (dP − rowsum(P ⊙ dP)) ⊙ (1 − (s/cap)²) · scale;
 *   dV += Pᵀ·dO;  dQ += dS·K;  dK += dSᵀ·Q  (summed over the GQA group).
 * rowsum(P ⊙ dP) equals rowsum(dO ⊙ O) without reading the forward's output,
 * so the vjp needs only q, k, v. q/k/v are first copied to dense f32 (k, v
 * may be bf16/f16 caches; any head/row strides), then for each query head of
 * a group (g = 0..group-1) one strided-batched SGEMM per product covers all
 * kv heads (head h = kh·group + g), in chunks of kv heads that keep the two
 * [T, S] score buffers within ~512 MB. SGEMM (no TF32) and f32 row sums:
 * ~1e-6 relative to the reference. This is the exact path (LMX_CUDA_EXACT=1)
 * and the fallback of the tensor-core vjp (cuda_vjp_attention_mma.cu).
 * Batch rows (lmx_attention_rows): the tensor-core vjp takes them in one
 * launch; this path runs them row by row (core/op_rows.h). */
#include "backend/cuda/cuda_vjp.cuh"
#include "core/op_rows.h"

/* dst dense [R, Hn, D] f32 = src (strides s0, s1, 1) of dtype T. */
template <typename T>
__global__ void vjp_dense3_k(float *dst, const T *src, int64_t R, int64_t Hn, int64_t D, int64_t s0, int64_t s1) {
    CUDA_VJP_LOOP(i, R * Hn * D) {
        int64_t d = i % D, h = (i / D) % Hn, r = i / (D * Hn);
        dst[i] = ldf(src, r * s0 + h * s1 + d);
    }
}

static lmx_status dense3(lmx_cuda_ctx *c, float *dst, const lmx_array *a) {
    int64_t R = a->shape[0], Hn = a->shape[1], D = a->shape[2], n = R * Hn * D;
    if (n == 0) return LMX_OK;
    switch (a->dtype) {
    case LMX_F32:
        vjp_dense3_k<<<cuda_vjp_blocks(n), 256, 0, c->stream>>>(dst, (const float *)a->data, R, Hn, D, a->strides[0],
                                                                a->strides[1]);
        break;
    case LMX_BF16:
        vjp_dense3_k<<<cuda_vjp_blocks(n), 256, 0, c->stream>>>(dst, (const __nv_bfloat16 *)a->data, R, Hn, D,
                                                                a->strides[0], a->strides[1]);
        break;
    case LMX_F16:
        vjp_dense3_k<<<cuda_vjp_blocks(n), 256, 0, c->stream>>>(dst, (const __half *)a->data, R, Hn, D, a->strides[0],
                                                                a->strides[1]);
        break;
    default: return lmx_err(LMX_ERR_UNSUPPORTED, "cuda attention vjp: dtype %s", lmx_dtype_info(a->dtype)->name);
    }
    return cuda_launched("attention vjp: dense copy");
}

/* One block per (score row t, batch b): u (raw scaled scores) and dp rows of
 * length S in; p (probabilities) and ds (score gradients incl. scale) out,
 * written over u and dp; zero outside the allowed keys. */
__global__ void vjp_attn_rows_k(float *u, float *dp, int64_t T, int64_t S, int64_t pos0, int window, float cap,
                                float scale) {
    __shared__ float sh[32];
    int64_t t = blockIdx.x, b = blockIdx.y, pos = pos0 + t;
    float *ur = u + (b * T + t) * S, *dr = dp + (b * T + t) * S;
    int64_t j0 = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0, j1 = pos < S - 1 ? pos : S - 1;
    float mx = -INFINITY;
    for (int64_t j = j0 + threadIdx.x; j <= j1; j += blockDim.x) {
        float s = ur[j];
        if (cap > 0) s = cap * tanhf(s / cap);
        ur[j] = s;
        mx = fmaxf(mx, s);
    }
    mx = block_max(mx, sh);
    float sum = 0.0f;
    for (int64_t j = j0 + threadIdx.x; j <= j1; j += blockDim.x) sum += expf(ur[j] - mx);
    float inv = 1.0f / block_sum(sum, sh);
    float pdp = 0.0f;
    for (int64_t j = j0 + threadIdx.x; j <= j1; j += blockDim.x) pdp += expf(ur[j] - mx) * inv * dr[j];
    pdp = block_sum(pdp, sh);
    for (int64_t j = threadIdx.x; j < S; j += blockDim.x) {
        if (j < j0 || j > j1) {
            ur[j] = 0.0f;
            dr[j] = 0.0f;
            continue;
        }
        float s = ur[j], p = expf(s - mx) * inv, f = cap > 0 ? 1.0f - (s / cap) * (s / cap) : 1.0f;
        ur[j] = p;
        dr[j] = p * f * (dr[j] - pdp) * scale;
    }
}

typedef struct {
    cublasOperation_t ta, tb;
    int m, n, k;
    const float *A;
    int lda;
    long long sa;
    const float *B;
    int ldb;
    long long sb;
    float beta;
    float *C;
    int ldc;
    long long sc;
} bgemm;

static lmx_status run_bgemm(lmx_cuda_ctx *c, const bgemm &g, float alpha, int batch, const char *what) {
    return cuda_blas_check(cublasSgemmStridedBatched(c->blas, g.ta, g.tb, g.m, g.n, g.k, &alpha, g.A, g.lda, g.sa, g.B,
                                                     g.ldb, g.sb, &g.beta, g.C, g.ldc, g.sc, batch),
                           what);
}

static lmx_status row_vjp(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], void *pool) {
    return lmx_cuda_vjp_attention(n, dout, dsrc, (lmx_pool *)pool);
}

lmx_status lmx_cuda_vjp_attention(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool) {
    lmx_cuda_ctx *c = cuda_ctx(pool);
    const lmx_array *q = n->src[0], *k = n->src[1], *v = n->src[2];
    if (lmx_attn_rows(n) > 1) {
        if (!dsrc[0] && !dsrc[1] && !dsrc[2]) return LMX_OK;
        bool done;
        LMX_TRY(cuda_vjp_attention_mma(n, dout, dsrc, pool, &done));
        if (done) return LMX_OK;
        return lmx_attn_rows_vjp(n, dout, dsrc, row_vjp, pool); /* the SGEMM vjp row by row */
    }
    int64_t T = q->shape[0], H = q->shape[1], hd = q->shape[2], Hkv = k->shape[1], vd = v->shape[2];
    int64_t pos0 = n->ip[0], S = pos0 + T;
    int window = n->ip[1];
    float scale = n->fp[0], cap = n->fp[1];
    if (!dsrc[0] && !dsrc[1] && !dsrc[2]) return LMX_OK;
    if (T == 0) return LMX_OK;
    if (q->dtype != LMX_F32 || Hkv == 0 || H % Hkv || k->shape[0] < S || v->shape[0] < S || T > 65535 ||
        H * hd > 0x7fffffff || S * S > 0x7fffffff)
        return lmx_err(LMX_ERR_UNSUPPORTED, "cuda attention vjp: T=%lld H=%lld Hkv=%lld S=%lld not covered",
                       (long long)T, (long long)H, (long long)Hkv, (long long)S);
    bool done;
    LMX_TRY(cuda_vjp_attention_mma(n, dout, dsrc, pool, &done));
    if (done) return LMX_OK;
    int64_t group = H / Hkv;
    /* kv heads per chunk: two [T, S] f32 buffers each */
    int64_t per = (int64_t)T * S * 8, nb = ((int64_t)512 << 20) / (per ? per : 1);
    if (nb < 1) nb = 1;
    if (nb > Hkv) nb = Hkv;
    size_t qn = (size_t)(T * H * hd), kn = (size_t)(S * Hkv * hd), vn = (size_t)(S * Hkv * vd);
    size_t total = (qn + kn + vn + (size_t)(nb * T * S) * 2) * 4;
    float *scr;
    LMX_TRY(cuda_scratch(c, total, (void **)&scr));
    float *Q = scr, *K = Q + qn, *V = K + kn, *U = V + vn, *DP = U + nb * T * S;
    lmx_array kv_rows = *k, v_rows = *v; /* only the first S key rows */
    kv_rows.shape[0] = S;
    v_rows.shape[0] = S;
    LMX_TRY(dense3(c, Q, q));
    LMX_TRY(dense3(c, K, &kv_rows));
    LMX_TRY(dense3(c, V, &v_rows));
    const float *dO = (const float *)dout->data;
    float *dQ = dsrc[0] ? (float *)dsrc[0]->data : NULL, *dK = dsrc[1] ? (float *)dsrc[1]->data : NULL;
    float *dV = dsrc[2] ? (float *)dsrc[2]->data : NULL;
    int iT = (int)T, iS = (int)S, ihd = (int)hd, ivd = (int)vd;
    long long TS = (long long)T * S;
    for (int64_t g = 0; g < group; g++)
        for (int64_t kh0 = 0; kh0 < Hkv; kh0 += nb) {
            int bn = (int)(Hkv - kh0 < nb ? Hkv - kh0 : nb);
            int64_t h0 = kh0 * group + g; /* first query head of the chunk; heads step by group */
            const float *Qh = Q + h0 * hd, *Kh = K + kh0 * hd, *Vh = V + kh0 * vd, *dOh = dO + h0 * vd;
            /* U (row-major [T, S] per head) = scale·Q·Kᵀ: col-major Uᵀ[S, T] = Kᵀᵀ... */
            bgemm u = {CUBLAS_OP_T, CUBLAS_OP_N, iS, iT, ihd, Kh, (int)(Hkv * hd), hd, Qh, (int)(H * hd),
                       group * hd, 0.0f, U, iS, TS};
            LMX_TRY(run_bgemm(c, u, scale, bn, "attention vjp: scores"));
            /* DP[t, j] = dO_t · V_j */
            bgemm dp = {CUBLAS_OP_T, CUBLAS_OP_N, iS, iT, ivd, Vh, (int)(Hkv * vd), vd, dOh, (int)(H * vd),
                        group * vd, 0.0f, DP, iS, TS};
            LMX_TRY(run_bgemm(c, dp, 1.0f, bn, "attention vjp: dP"));
            vjp_attn_rows_k<<<dim3((unsigned)T, (unsigned)bn), 256, 0, c->stream>>>(U, DP, T, S, pos0, window, cap,
                                                                                   scale);
            LMX_TRY(cuda_launched("attention vjp: softmax rows"));
            if (dV) { /* dVᵀ[vd, S] += dOᵀ (col-major [vd, T]) · P ([T, S] = Uᵀ) */
                bgemm d = {CUBLAS_OP_N, CUBLAS_OP_T, ivd, iS, iT, dOh, (int)(H * vd), group * vd, U, iS, TS, 1.0f,
                           dV + kh0 * vd, (int)(Hkv * vd), vd};
                LMX_TRY(run_bgemm(c, d, 1.0f, bn, "attention vjp: dV"));
            }
            if (dQ) { /* dQᵀ[hd, T] += K (col-major [hd, S]) · dS (col-major [S, T]) */
                bgemm d = {CUBLAS_OP_N, CUBLAS_OP_N, ihd, iT, iS, Kh, (int)(Hkv * hd), hd, DP, iS, TS, 1.0f,
                           dQ + h0 * hd, (int)(H * hd), group * hd};
                LMX_TRY(run_bgemm(c, d, 1.0f, bn, "attention vjp: dQ"));
            }
            if (dK) { /* dKᵀ[hd, S] += Q (col-major [hd, T]) · dSᵀ */
                bgemm d = {CUBLAS_OP_N, CUBLAS_OP_T, ihd, iS, iT, Qh, (int)(H * hd), group * hd, DP, iS, TS, 1.0f,
                           dK + kh0 * hd, (int)(Hkv * hd), hd};
                LMX_TRY(run_bgemm(c, d, 1.0f, bn, "attention vjp: dK"));
            }
        }
    return LMX_OK;
}
