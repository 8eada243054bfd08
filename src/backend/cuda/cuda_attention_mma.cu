/* cuda_attention_mma.cu - causal prefill attention on tensor cores
 * (mma.sync m16n8k16, bf16 operands, f32 accumulation), flash style.
 *
 * A block takes FM_BQ = 64 query rows of one head: 4 warps of 16 rows. q
 * stays in registers as A fragments; per tile of FM_BK = 32 keys the block
 * stages K (row-major) and V (transposed, so a B fragment is one 32-bit
 * load) in shared memory as bf16, each warp computes its 16 x 32 scores
 * (S = q·Kᵀ), an online softmax over rows in registers (a row lives in the 4
 * lanes of a quad), and O += P·V with P taken straight from the score
 * accumulators (their layout is the A-fragment layout of the next mma).
 *
 * Exactness: the goldens compare with an f32 reference, and a bf16 operand
 * carries 8 bits. exact = true splits every operand, a = hi + lo (hi =
 * bf16(a), lo = bf16(a - hi)), and sums hi·hi + hi·lo + lo·hi: ~16 bits per
 * operand, the dropped lo·lo term is ~2^-16 of a product, so scores and
 * outputs agree with the f32 kernels to ~1e-5 at three times the tensor
 * work (still a small part of a prefill): LMX_CUDA_EXACT=1, and always
 * after f32-weight projections (ctx attn_exact). exact = false (the default
 * for 16-bit and quantized weights) does one product of the rounded
 * operands, as frameworks computing attention in bf16 do. Keys beyond the block's range are staged as zeros
 * (a masked key then contributes exp(-inf)·0, never NaN). Batch rows (a.rows
 * sequences end to end, lmx_attention_rows) are the grid's z: block z reads
 * q/out rows z·T.. and key rows z·rs.. and is otherwise a single sequence. */
#include "backend/cuda/cuda_attention.cuh"

#define FM_BQ 64
#define FM_BK 32
#define FM_WARPS 4

__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
    __trap(); /* the host launches this kernel on compute capability >= 8 only */
#endif
}

__device__ __forceinline__ uint32_t bf2_bits(__nv_bfloat162 v) {
    return (uint32_t)__bfloat16_as_ushort(v.x) | (uint32_t)__bfloat16_as_ushort(v.y) << 16;
}

/* (x, y) -> bf16x2 hi (x in the low half, as fragments order columns) and lo = the rounding error. */
__device__ __forceinline__ void split2(float x, float y, uint32_t &hi, uint32_t &lo) {
    __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
    hi = bf2_bits(h);
    lo = bf2_bits(__floats2bfloat162_rn(x - __low2float(h), y - __high2float(h)));
}

/* Two consecutive cache features as f32 (the host checks 2-element alignment). */
__device__ __forceinline__ float2 ld2(const float *p) { return *reinterpret_cast<const float2 *>(p); }
__device__ __forceinline__ float2 ld2(const __nv_bfloat16 *p) {
    return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162 *>(p));
}
__device__ __forceinline__ float2 ld2(const __half *p) { return __half22float2(*reinterpret_cast<const __half2 *>(p)); }

template <typename T, int HD, bool EXACT>
__global__ void __launch_bounds__(FM_WARPS * 32) attn_mma_k(attn_args a, int64_t Tq) {
    constexpr int KS = HD + 8;    /* K row stride (bf16): the 8 rows of a fragment load hit distinct banks */
    constexpr int VS = FM_BK + 8; /* Vᵀ row stride, likewise */
    constexpr int NL = EXACT ? 2 : 1;
    constexpr int NC = FM_BK / 8, KC = HD / 16, DN = HD / 8;
    __shared__ __align__(16) __nv_bfloat16 Ks[NL][FM_BK * KS], Vt[NL][HD * VS];
    const int64_t z = blockIdx.z; /* batch row */
    const T *K = (const T *)a.k + z * a.rs * a.ks0, *V = (const T *)a.v + z * a.rs * a.vs0;
    const float *Q = a.q + z * Tq * a.qs0;
    float *Out = a.out + z * Tq * a.H * HD;
    int h = blockIdx.y, kh = h / (a.H / a.Hkv);
    int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, tg = lane & 3;
    /* the longest (last) query tiles first: causal work grows with the tile */
    int64_t t0 = (int64_t)(gridDim.x - 1 - blockIdx.x) * FM_BQ;
    int64_t ta = t0 + warp * 16 + g, tb = ta + 8; /* this lane's two rows */
    int64_t tca = ta < Tq ? ta : Tq - 1, tcb = tb < Tq ? tb : Tq - 1;
    int64_t pa = a.pos0 + tca, pb = a.pos0 + tcb;
    int64_t loa = a.window > 0 && pa - a.window + 1 > 0 ? pa - a.window + 1 : 0;
    int64_t lob = a.window > 0 && pb - a.window + 1 > 0 ? pb - a.window + 1 : 0;
    int64_t tw = t0 + warp * 16 + 15 < Tq - 1 ? t0 + warp * 16 + 15 : Tq - 1, pw = a.pos0 + tw;
    int64_t tl = t0 + FM_BQ - 1 < Tq - 1 ? t0 + FM_BQ - 1 : Tq - 1;
    int64_t pf = a.pos0 + t0, jend = a.pos0 + tl + 1;
    int64_t jbeg = a.window > 0 && pf - a.window + 1 > 0 ? pf - a.window + 1 : 0;

    /* q·scale as A fragments: a0 (row g, cols 2tg..), a1 (row g+8), a2 (row g, cols 2tg+8..), a3 (row g+8, +8) */
    uint32_t qh[KC][4], ql[EXACT ? KC : 1][4];
    const float *qa = Q + tca * a.qs0 + h * a.qs1, *qb = Q + tcb * a.qs0 + h * a.qs1;
#pragma unroll
    for (int kk = 0; kk < KC; kk++) {
        int c = kk * 16 + tg * 2;
        float2 x[4] = {*reinterpret_cast<const float2 *>(qa + c), *reinterpret_cast<const float2 *>(qb + c),
                       *reinterpret_cast<const float2 *>(qa + c + 8), *reinterpret_cast<const float2 *>(qb + c + 8)};
#pragma unroll
        for (int r = 0; r < 4; r++) {
            uint32_t lo;
            split2(x[r].x * a.scale, x[r].y * a.scale, qh[kk][r], lo);
            if (EXACT) ql[EXACT ? kk : 0][r] = lo;
        }
    }
    float o[DN][4];
#pragma unroll
    for (int d = 0; d < DN; d++) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
    float ma = -INFINITY, mb = -INFINITY, la = 0.0f, lb = 0.0f; /* l: this lane's share of the row sums */

    for (int64_t j0 = jbeg; j0 < jend; j0 += FM_BK) {
        __syncthreads(); /* the previous tile's readers are done */
        /* A thread stages 2 keys x 2 features of K and V per step; a warp covers 8 keys x 16 features,
         * the 4 key pairs on the low lane bits, so that its Vᵀ stores spread over the banks (2-way) */
        constexpr int STEPS = (FM_BK / 2) * (HD / 2) / (FM_WARPS * 32);
#pragma unroll
        for (int it = 0; it < STEPS; it++) {
            int e = tid + it * FM_WARPS * 32, blk = e >> 5;
            int r = (blk % (FM_BK / 8)) * 8 + (e & 3) * 2, col = (blk / (FM_BK / 8)) * 16 + ((e >> 2) & 7) * 2;
            float2 k[2], v[2];
#pragma unroll
            for (int u = 0; u < 2; u++) {
                int64_t j = j0 + r + u;
                bool in = j < jend;
                k[u] = in ? ld2(K + j * a.ks0 + kh * a.ks1 + col) : make_float2(0.0f, 0.0f);
                v[u] = in ? ld2(V + j * a.vs0 + kh * a.vs1 + col) : make_float2(0.0f, 0.0f);
            }
            uint32_t hi, lo;
#pragma unroll
            for (int u = 0; u < 2; u++) {
                split2(k[u].x, k[u].y, hi, lo);
                *reinterpret_cast<uint32_t *>(&Ks[0][(r + u) * KS + col]) = hi;
                if (EXACT) *reinterpret_cast<uint32_t *>(&Ks[NL - 1][(r + u) * KS + col]) = lo;
                /* Vᵀ row col + u holds keys r, r + 1 */
                split2(u ? v[0].y : v[0].x, u ? v[1].y : v[1].x, hi, lo);
                *reinterpret_cast<uint32_t *>(&Vt[0][(col + u) * VS + r]) = hi;
                if (EXACT) *reinterpret_cast<uint32_t *>(&Vt[NL - 1][(col + u) * VS + r]) = lo;
            }
        }
        __syncthreads();
        if (j0 > pw) continue; /* the whole tile lies after the warp's last row (warp-uniform: mma needs all lanes) */

        /* S = q·Kᵀ: s[n] holds keys j0 + 8n + 2tg + {0,1} of row g (0, 1) and of row g + 8 (2, 3) */
        float s[NC][4];
#pragma unroll
        for (int n = 0; n < NC; n++) {
            s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < KC; kk++) {
                const __nv_bfloat16 *kp = &Ks[0][(n * 8 + g) * KS + kk * 16 + tg * 2];
                uint32_t b0 = *reinterpret_cast<const uint32_t *>(kp), b1 = *reinterpret_cast<const uint32_t *>(kp + 8);
                mma16816(s[n], qh[kk], b0, b1);
                if (EXACT) {
                    const __nv_bfloat16 *kl = kp + (NL - 1) * FM_BK * KS;
                    mma16816(s[n], qh[kk], *reinterpret_cast<const uint32_t *>(kl),
                             *reinterpret_cast<const uint32_t *>(kl + 8));
                    mma16816(s[n], ql[EXACT ? kk : 0], b0, b1);
                }
            }
        }
        /* mask, soft-cap, tile max per row (over the quad) */
        float xa = ma, xb = mb;
#pragma unroll
        for (int n = 0; n < NC; n++) {
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int64_t j = j0 + n * 8 + tg * 2 + e;
                float va = s[n][e], vb = s[n][2 + e];
                if (a.cap > 0) {
                    va = a.cap * tanhf(va / a.cap);
                    vb = a.cap * tanhf(vb / a.cap);
                }
                s[n][e] = j <= pa && j >= loa ? va : -INFINITY;
                s[n][2 + e] = j <= pb && j >= lob ? vb : -INFINITY;
                xa = fmaxf(xa, s[n][e]);
                xb = fmaxf(xb, s[n][2 + e]);
            }
        }
        xa = fmaxf(xa, __shfl_xor_sync(0xffffffffu, xa, 1));
        xa = fmaxf(xa, __shfl_xor_sync(0xffffffffu, xa, 2));
        xb = fmaxf(xb, __shfl_xor_sync(0xffffffffu, xb, 1));
        xb = fmaxf(xb, __shfl_xor_sync(0xffffffffu, xb, 2));
        float ca = xa == -INFINITY ? 1.0f : expf(ma - xa), cb = xb == -INFINITY ? 1.0f : expf(mb - xb);
        ma = xa;
        mb = xb;
        la *= ca;
        lb *= cb;
#pragma unroll
        for (int d = 0; d < DN; d++) {
            o[d][0] *= ca;
            o[d][1] *= ca;
            o[d][2] *= cb;
            o[d][3] *= cb;
        }
#pragma unroll
        for (int n = 0; n < NC; n++) {
#pragma unroll
            for (int e = 0; e < 2; e++) {
                float pa_ = s[n][e] == -INFINITY ? 0.0f : expf(s[n][e] - xa);
                float pb_ = s[n][2 + e] == -INFINITY ? 0.0f : expf(s[n][2 + e] - xb);
                la += pa_;
                lb += pb_;
                s[n][e] = pa_;
                s[n][2 + e] = pb_;
            }
        }
        /* O += P·V over 16-key steps; P's A fragment is two score fragments side by side */
#pragma unroll
        for (int kc = 0; kc < FM_BK / 16; kc++) {
            uint32_t ph[4], pl[4];
            split2(s[2 * kc][0], s[2 * kc][1], ph[0], pl[0]);
            split2(s[2 * kc][2], s[2 * kc][3], ph[1], pl[1]);
            split2(s[2 * kc + 1][0], s[2 * kc + 1][1], ph[2], pl[2]);
            split2(s[2 * kc + 1][2], s[2 * kc + 1][3], ph[3], pl[3]);
#pragma unroll
            for (int d = 0; d < DN; d++) {
                const __nv_bfloat16 *vp = &Vt[0][(d * 8 + g) * VS + kc * 16 + tg * 2];
                uint32_t b0 = *reinterpret_cast<const uint32_t *>(vp), b1 = *reinterpret_cast<const uint32_t *>(vp + 8);
                mma16816(o[d], ph, b0, b1);
                if (EXACT) {
                    const __nv_bfloat16 *vl = vp + (NL - 1) * HD * VS;
                    mma16816(o[d], ph, *reinterpret_cast<const uint32_t *>(vl),
                             *reinterpret_cast<const uint32_t *>(vl + 8));
                    mma16816(o[d], pl, b0, b1);
                }
            }
        }
    }
    la += __shfl_xor_sync(0xffffffffu, la, 1);
    la += __shfl_xor_sync(0xffffffffu, la, 2);
    lb += __shfl_xor_sync(0xffffffffu, lb, 1);
    lb += __shfl_xor_sync(0xffffffffu, lb, 2);
    float ia = 1.0f / la, ib = 1.0f / lb;
#pragma unroll
    for (int d = 0; d < DN; d++) {
        int col = d * 8 + tg * 2;
        if (ta < Tq)
            *reinterpret_cast<float2 *>(Out + (ta * a.H + h) * HD + col) = make_float2(o[d][0] * ia, o[d][1] * ia);
        if (tb < Tq)
            *reinterpret_cast<float2 *>(Out + (tb * a.H + h) * HD + col) = make_float2(o[d][2] * ib, o[d][3] * ib);
    }
}

template <typename T, bool EXACT>
static bool launch_mma(const attn_args &a, int64_t T_, cudaStream_t st) {
    dim3 grid((unsigned)((T_ + FM_BQ - 1) / FM_BQ), (unsigned)a.H, (unsigned)(a.rows > 1 ? a.rows : 1));
    if (a.hd == 64 && a.vd == 64)
        attn_mma_k<T, 64, EXACT><<<grid, FM_WARPS * 32, 0, st>>>(a, T_);
    else if (a.hd == 128 && a.vd == 128)
        attn_mma_k<T, 128, EXACT><<<grid, FM_WARPS * 32, 0, st>>>(a, T_);
    else
        return false;
    return true;
}

bool cuda_attn_prefill_mma(const lmx_cuda_ctx *c, const attn_args &a, int64_t T, int kdt, bool exact) {
    static int major = -1; /* one device per process */
    if (major < 0 && cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, c->device) != cudaSuccess) {
        (void)cudaGetLastError();
        major = 0;
    }
    if (major < 8 || a.dpos || a.H % a.Hkv || a.rows > 65535) return false;
    exact = exact || c->attn_exact;
    /* q rows are read as float2 at even features; out rows are [T, H, hd] */
    if (((uintptr_t)a.q & 7) || a.qs0 % 2 || a.qs1 % 2) return false;
    /* k, v rows are read as pairs of features */
    size_t eb = kdt == LMX_F32 ? 4 : 2;
    if (((uintptr_t)a.k % (2 * eb)) || ((uintptr_t)a.v % (2 * eb)) || a.ks0 % 2 || a.ks1 % 2 || a.vs0 % 2 || a.vs1 % 2)
        return false;
    switch (kdt) {
    case LMX_F32: return exact ? launch_mma<float, true>(a, T, c->stream) : launch_mma<float, false>(a, T, c->stream);
    case LMX_BF16:
        return exact ? launch_mma<__nv_bfloat16, true>(a, T, c->stream) : launch_mma<__nv_bfloat16, false>(a, T, c->stream);
    case LMX_F16: return exact ? launch_mma<__half, true>(a, T, c->stream) : launch_mma<__half, false>(a, T, c->stream);
    default: return false;
    }
}
