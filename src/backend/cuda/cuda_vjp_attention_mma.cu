/* cuda_vjp_attention_mma.cu - the vjp of causal attention on tensor cores,
 * FlashAttention-2 style (mma.sync m16n8k16, bf16 operands, f32 accumulation),
 * the default on CUDA for f32 q/k/v with head dims 64 or 128 and no soft-cap
 * (LMX_CUDA_EXACT=1 keeps the SGEMM vjp of cuda_vjp_attention.cu).
 *
 * Two kernels, no [T, S] score buffer:
 *  1. stats: per (query row t, head h) the softmax's log-sum-exp L and
 *     D = dO_t · O_t (O recomputed as the forward does: online softmax,
 *     O += P·V), so that P = exp(s - L) and rowsum(P ⊙ dP) = D.
 *  2. backward: a block owns 64 keys of one query head (4 warps x 16 keys) and
 *     walks up to AV_QCHUNK of the query tiles that see them (causal: from its
 *     first key on; grid z splits the rest, so that the first key blocks, which
 *     see every tile, do not make one long tail). Per
 *     tile each warp computes its transposed scores Sᵀ = K·(q·scale)ᵀ and
 *     dPᵀ = V·dOᵀ, P = exp(S - L), dS = P ⊙ (dP - D), then dV += Pᵀ·dO and
 *     dK += dSᵀ·(q·scale) in registers (the score accumulators are already the
 *     A fragments of those products), writes dS to shared memory, and the block
 *     adds dQ += scale·dS·K into the f32 gradient with atomics. dK and dV are
 *     added with atomics once at the end: the query heads of a GQA group and
 *     the query chunks add into one kv row.
 * Every operand is rounded to bf16 once (q·scale, k, v, dO, P, dS), as
 * frameworks computing attention in bf16 do; test_cuda_vjps bounds the error
 * relative to max|ref| (bf16 tolerances). Tiles are staged row-major in
 * shared memory (row strides of 4 mod 32 words: fragment loads hit distinct
 * banks); A fragments are 32-bit loads, B fragments that need the transpose
 * (V, dO, q, K as [key|query][feature]) come from ldmatrix.trans.
 *
 * Batch rows (lmx_attention_rows: R sequences end to end) run in the same two
 * launches: the stats grid's z and the backward grid's z / nz are the row;
 * each block moves its pointers to its row (av_row) and is then a single
 * sequence. */
#include "backend/cuda/cuda_vjp.cuh"
#include "core/op_rows.h"

#define AV_BC 64 /* keys per backward block, 16 per warp */
#define AV_BQ 64 /* query rows per stats block, 16 per warp */
#define AV_WARPS 4
#define AV_QCHUNK 2 /* query tiles per backward block */

typedef __nv_bfloat16 bf16;

struct av_args {
    const float *q, *k, *v, *dout;
    int64_t qs0, qs1, ks0, ks1, vs0, vs1; /* row / head strides (elements) */
    float *dq, *dk, *dv;                  /* dense [T|S, H|Hkv, hd] f32 or NULL */
    float *lse, *dd;                      /* [H, T] */
    int64_t T, pos0;
    int H, Hkv, window;
    float scale;
    int64_t rs; /* key rows per batch row (k, v, dk, dv) */
    int nz;     /* backward grid: query chunks per batch row (grid z = row · nz + chunk) */
};

/* a's pointers moved to batch row z: q, dout, dq by z·T rows, k, v, dk, dv by z·rs rows, lse and dd by z·H·T. */
__device__ __forceinline__ av_args av_row(const av_args &a0, int64_t z, int hd) {
    av_args a = a0;
    if (z == 0) return a;
    a.q += z * a.T * a.qs0;
    a.k += z * a.rs * a.ks0;
    a.v += z * a.rs * a.vs0;
    a.dout += z * a.T * a.H * hd;
    if (a.dq) a.dq += z * a.T * a.H * hd;
    if (a.dk) a.dk += z * a.rs * a.Hkv * hd;
    if (a.dv) a.dv += z * a.rs * a.Hkv * hd;
    a.lse += z * a.H * a.T;
    a.dd += z * a.H * a.T;
    return a;
}

__device__ __forceinline__ void av_mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
    __trap(); /* the host launches these kernels on compute capability >= 8 only */
#endif
}

__device__ __forceinline__ uint32_t av_pack(float x, float y) {
    __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
    return (uint32_t)__bfloat16_as_ushort(h.x) | (uint32_t)__bfloat16_as_ushort(h.y) << 16;
}

/* p[0] += x, p[1] += y (p 8-byte aligned): one vector atomic on sm_90 */
__device__ __forceinline__ void av_add2(float *p, float x, float y) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    atomicAdd(reinterpret_cast<float2 *>(p), make_float2(x, y));
#else
    atomicAdd(p, x);
    atomicAdd(p + 1, y);
#endif
}

__device__ __forceinline__ uint32_t av_ld(const bf16 *p) { return *reinterpret_cast<const uint32_t *>(p); }

/* A fragment (16 rows x 16 columns at column c0) of a row-major bf16 tile with row stride RS. */
template <int RS>
__device__ __forceinline__ void av_afrag(uint32_t (&a)[4], const bf16 *tile, int r0, int c0, int g, int tg) {
    const bf16 *p = tile + (r0 + g) * RS + c0 + tg * 2;
    a[0] = av_ld(p);
    a[1] = av_ld(p + 8 * RS);
    a[2] = av_ld(p + 8);
    a[3] = av_ld(p + 8 * RS + 8);
}

/* B fragments of two 8-column tiles (columns n0.., n0 + 8..) over rows k0..k0 + 15 of a row-major [k][n] bf16
 * tile with row stride RS, by one transposing matrix load: b[0], b[1] for n0, b[2], b[3] for n0 + 8. */
template <int RS>
__device__ __forceinline__ void av_bfrag2(uint32_t (&b)[4], const bf16 *tile, int k0, int n0, int lane) {
    int mi = lane >> 3, ri = lane & 7;
    unsigned addr = (unsigned)__cvta_generic_to_shared(tile + (k0 + ri + (mi & 1) * 8) * RS + n0 + (mi >> 1) * 8);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(b[0]), "=r"(b[1]), "=r"(b[2]), "=r"(b[3])
                 : "r"(addr)
                 : "memory");
}

/* R rows x D features of an f32 source (row i at src + (r0 + i)·rs, rows >= rend zero) times mul into a
 * row-major bf16 tile with row stride RS. */
template <int R, int D, int RS>
__device__ __forceinline__ void av_stage_rows(bf16 *dst, const float *src, int64_t rs, int64_t r0, int64_t rend,
                                              float mul) {
    for (int e = threadIdx.x; e < R * D / 2; e += AV_WARPS * 32) {
        int r = e / (D / 2), c = (e % (D / 2)) * 2;
        float2 x = r0 + r < rend ? *reinterpret_cast<const float2 *>(src + (r0 + r) * rs + c) : make_float2(0.f, 0.f);
        *reinterpret_cast<uint32_t *>(dst + r * RS + c) = av_pack(x.x * mul, x.y * mul);
    }
}

__device__ __forceinline__ bool av_allowed(const av_args &a, int64_t t, int64_t j) {
    int64_t pos = a.pos0 + t;
    return t < a.T && j <= pos && (a.window <= 0 || j > pos - a.window);
}

/* ---- 1. L and D per (t, h): grid (T / 64, H) --------------------------- */

template <int HD>
__global__ void __launch_bounds__(AV_WARPS * 32) attn_vjp_stats_k(av_args a0) {
    constexpr int BK = 64, KS = HD + 8, NC = BK / 8, KC = HD / 16, DN = HD / 8;
    const av_args a = av_row(a0, blockIdx.z, HD);
    static_assert(BK == AV_BQ, "q is staged in the key tile's place");
    __shared__ __align__(16) bf16 Ks[BK * KS], Vs[BK * KS];
    bf16 *Qs = Ks; /* q·scale, read into registers before the first key tile */
    int h = blockIdx.y, kh = h / (a.H / a.Hkv);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tg = lane & 3;
    int64_t t0 = (int64_t)(gridDim.x - 1 - blockIdx.x) * AV_BQ; /* the longest tiles first */
    int64_t ta = t0 + warp * 16 + g, tb = ta + 8;
    int64_t tl = t0 + AV_BQ < a.T ? t0 + AV_BQ : a.T, tw = t0 + warp * 16 + 15 < a.T - 1 ? t0 + warp * 16 + 15 : a.T - 1;
    int64_t jend = a.pos0 + tl, pf = a.pos0 + t0;
    int64_t jbeg = a.window > 0 && pf - a.window + 1 > 0 ? pf - a.window + 1 : 0;
    av_stage_rows<AV_BQ, HD, KS>(Qs, a.q + h * a.qs1, a.qs0, t0, a.T, a.scale);
    __syncthreads();
    uint32_t qf[KC][4];
#pragma unroll
    for (int kk = 0; kk < KC; kk++) av_afrag<KS>(qf[kk], Qs, warp * 16, kk * 16, g, tg);
    float o[DN][4];
#pragma unroll
    for (int d = 0; d < DN; d++) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
    float ma = -INFINITY, mb = -INFINITY, la = 0.f, lb = 0.f;
    for (int64_t j0 = jbeg / BK * BK; j0 < jend; j0 += BK) {
        __syncthreads();
        av_stage_rows<BK, HD, KS>(Ks, a.k + kh * a.ks1, a.ks0, j0, jend, 1.0f);
        av_stage_rows<BK, HD, KS>(Vs, a.v + kh * a.vs1, a.vs0, j0, jend, 1.0f);
        __syncthreads();
        if (j0 > a.pos0 + tw) continue; /* warp-uniform: the tile lies after the warp's last row */
        float s[NC][4];
#pragma unroll
        for (int n = 0; n < NC; n++) {
            s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
            for (int kk = 0; kk < KC; kk++) {
                const bf16 *kp = Ks + (n * 8 + g) * KS + kk * 16 + tg * 2;
                av_mma(s[n], qf[kk], av_ld(kp), av_ld(kp + 8));
            }
        }
        float xa = ma, xb = mb;
#pragma unroll
        for (int n = 0; n < NC; n++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                int64_t j = j0 + n * 8 + tg * 2 + e;
                s[n][e] = av_allowed(a, ta, j) ? s[n][e] : -INFINITY;
                s[n][2 + e] = av_allowed(a, tb, j) ? s[n][2 + e] : -INFINITY;
                xa = fmaxf(xa, s[n][e]);
                xb = fmaxf(xb, s[n][2 + e]);
            }
        xa = fmaxf(xa, __shfl_xor_sync(0xffffffffu, xa, 1));
        xa = fmaxf(xa, __shfl_xor_sync(0xffffffffu, xa, 2));
        xb = fmaxf(xb, __shfl_xor_sync(0xffffffffu, xb, 1));
        xb = fmaxf(xb, __shfl_xor_sync(0xffffffffu, xb, 2));
        float ca = xa == -INFINITY ? 1.f : expf(ma - xa), cb = xb == -INFINITY ? 1.f : expf(mb - xb);
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
        for (int n = 0; n < NC; n++)
#pragma unroll
            for (int e = 0; e < 2; e++) {
                float pa = s[n][e] == -INFINITY ? 0.f : expf(s[n][e] - xa);
                float pb = s[n][2 + e] == -INFINITY ? 0.f : expf(s[n][2 + e] - xb);
                la += pa;
                lb += pb;
                s[n][e] = pa;
                s[n][2 + e] = pb;
            }
#pragma unroll
        for (int kc = 0; kc < BK / 16; kc++) {
            uint32_t p[4] = {av_pack(s[2 * kc][0], s[2 * kc][1]), av_pack(s[2 * kc][2], s[2 * kc][3]),
                             av_pack(s[2 * kc + 1][0], s[2 * kc + 1][1]), av_pack(s[2 * kc + 1][2], s[2 * kc + 1][3])};
#pragma unroll
            for (int d = 0; d < DN; d += 2) {
                uint32_t b[4];
                av_bfrag2<KS>(b, Vs, kc * 16, d * 8, lane);
                av_mma(o[d], p, b[0], b[1]);
                av_mma(o[d + 1], p, b[2], b[3]);
            }
        }
    }
    la += __shfl_xor_sync(0xffffffffu, la, 1);
    la += __shfl_xor_sync(0xffffffffu, la, 2);
    lb += __shfl_xor_sync(0xffffffffu, lb, 1);
    lb += __shfl_xor_sync(0xffffffffu, lb, 2);
    /* D = dO · O over this lane's features, then over the quad */
    int64_t tca = ta < a.T ? ta : a.T - 1, tcb = tb < a.T ? tb : a.T - 1;
    const float *ga = a.dout + (tca * a.H + h) * HD, *gb = a.dout + (tcb * a.H + h) * HD;
    float da = 0.f, db = 0.f;
#pragma unroll
    for (int d = 0; d < DN; d++) {
        int c = d * 8 + tg * 2;
        float2 xa = *reinterpret_cast<const float2 *>(ga + c), xb = *reinterpret_cast<const float2 *>(gb + c);
        da += xa.x * o[d][0] + xa.y * o[d][1];
        db += xb.x * o[d][2] + xb.y * o[d][3];
    }
    da += __shfl_xor_sync(0xffffffffu, da, 1);
    da += __shfl_xor_sync(0xffffffffu, da, 2);
    db += __shfl_xor_sync(0xffffffffu, db, 1);
    db += __shfl_xor_sync(0xffffffffu, db, 2);
    if (tg == 0) {
        if (ta < a.T) {
            a.lse[h * a.T + ta] = ma + logf(la);
            a.dd[h * a.T + ta] = da / la;
        }
        if (tb < a.T) {
            a.lse[h * a.T + tb] = mb + logf(lb);
            a.dd[h * a.T + tb] = db / lb;
        }
    }
}

/* ---- 2. dQ, dK, dV: grid (S / 64, H, query tiles / AV_QCHUNK) ---------- */

template <int HD, int BR>
struct av_smem {
    static constexpr int KS = HD + 8, CS = AV_BC + 8;
    static constexpr size_t halves = 2 * AV_BC * KS + 2 * BR * KS + BR * CS;
    static constexpr size_t bytes = halves * 2 + 2 * BR * sizeof(float);
};

template <int HD, int BR>
__global__ void __launch_bounds__(AV_WARPS * 32) attn_vjp_bwd_k(av_args a0) {
    using SM = av_smem<HD, BR>;
    const av_args a = av_row(a0, blockIdx.z / a0.nz, HD);
    const int64_t zc = blockIdx.z % a0.nz; /* query chunk */
    constexpr int KS = SM::KS, CS = SM::CS, KC = HD / 16, DN = HD / 8, NR = BR / 8;
    constexpr int RB = BR / 16, WPR = AV_WARPS / RB, DPW = DN / WPR; /* dQ: row blocks, warps per block */
    extern __shared__ __align__(16) unsigned char av_sm[];
    bf16 *Ks = (bf16 *)av_sm, *Vs = Ks + AV_BC * KS, *Qs = Vs + AV_BC * KS, *Gs = Qs + BR * KS, *Ds = Gs + BR * KS;
    float *Ls = (float *)(Ds + BR * CS), *Dd = Ls + BR;
    int h = blockIdx.y, kh = h / (a.H / a.Hkv);
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, tg = lane & 3;
    int64_t S = a.pos0 + a.T, j0 = (int64_t)blockIdx.x * AV_BC, jw = j0 + warp * 16;
    int64_t ja = jw + g, jb = ja + 8;
    /* the query tiles that see keys j0..: t >= j0 - pos0; a window ends them at the last key + window. Block z
     * takes AV_QCHUNK of them (the first key blocks see the most tiles: chunks keep the longest block short) */
    int64_t tbeg = j0 - a.pos0 > 0 ? (j0 - a.pos0) / BR * BR : 0, tend = a.T;
    if (a.window > 0 && j0 + AV_BC - 1 + a.window - a.pos0 < tend) tend = j0 + AV_BC - 1 + a.window - a.pos0;
    tbeg += zc * AV_QCHUNK * BR;
    if (tbeg + AV_QCHUNK * BR < tend) tend = tbeg + AV_QCHUNK * BR;
    if (tbeg >= tend) return; /* block-uniform, before any barrier */
    av_stage_rows<AV_BC, HD, KS>(Ks, a.k + kh * a.ks1, a.ks0, j0, S, 1.0f);
    av_stage_rows<AV_BC, HD, KS>(Vs, a.v + kh * a.vs1, a.vs0, j0, S, 1.0f);
    float dk[DN][4], dv[DN][4];
#pragma unroll
    for (int d = 0; d < DN; d++)
#pragma unroll
        for (int e = 0; e < 4; e++) dk[d][e] = dv[d][e] = 0.f;
    const float *qh = a.q + h * a.qs1, *gh = a.dout + h * HD;
    int64_t gs = (int64_t)a.H * HD;
    for (int64_t t0 = tbeg; t0 < tend; t0 += BR) {
        __syncthreads(); /* the previous tile's readers are done */
        av_stage_rows<BR, HD, KS>(Qs, qh, a.qs0, t0, a.T, a.scale);
        av_stage_rows<BR, HD, KS>(Gs, gh, gs, t0, a.T, 1.0f);
        for (int i = threadIdx.x; i < BR; i += AV_WARPS * 32) {
            bool in = t0 + i < a.T;
            Ls[i] = in ? a.lse[h * a.T + t0 + i] : 0.f;
            Dd[i] = in ? a.dd[h * a.T + t0 + i] : 0.f;
        }
        __syncthreads();
        /* warp-uniform: no key of this warp is seen by the tile (all after its last row, or out of range) */
        bool idle = jw > a.pos0 + t0 + BR - 1 || jw >= S ||
                    (a.window > 0 && jw + 15 <= a.pos0 + t0 - a.window);
        if (!idle) {
            float s[NR][4], dp[NR][4];
#pragma unroll
            for (int n = 0; n < NR; n++) {
#pragma unroll
                for (int e = 0; e < 4; e++) s[n][e] = dp[n][e] = 0.f;
            }
#pragma unroll
            for (int kk = 0; kk < KC; kk++) {
                uint32_t kf[4], vf[4];
                av_afrag<KS>(kf, Ks, warp * 16, kk * 16, g, tg);
                av_afrag<KS>(vf, Vs, warp * 16, kk * 16, g, tg);
#pragma unroll
                for (int n = 0; n < NR; n++) {
                    const bf16 *qp = Qs + (n * 8 + g) * KS + kk * 16 + tg * 2, *gp = Gs + (n * 8 + g) * KS + kk * 16 + tg * 2;
                    av_mma(s[n], kf, av_ld(qp), av_ld(qp + 8));
                    av_mma(dp[n], vf, av_ld(gp), av_ld(gp + 8));
                }
            }
            /* s[n][e]: key ja (e < 2) or jb, query t0 + 8n + 2tg + (e & 1) */
#pragma unroll
            for (int n = 0; n < NR; n++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    int ti = n * 8 + tg * 2 + (e & 1);
                    float p = av_allowed(a, t0 + ti, e < 2 ? ja : jb) ? expf(s[n][e] - Ls[ti]) : 0.f;
                    s[n][e] = p;
                    dp[n][e] = p * (dp[n][e] - Dd[ti]);
                }
#pragma unroll
            for (int kc = 0; kc < BR / 16; kc++) {
                uint32_t pf[4] = {av_pack(s[2 * kc][0], s[2 * kc][1]), av_pack(s[2 * kc][2], s[2 * kc][3]),
                                  av_pack(s[2 * kc + 1][0], s[2 * kc + 1][1]),
                                  av_pack(s[2 * kc + 1][2], s[2 * kc + 1][3])};
                uint32_t df[4] = {av_pack(dp[2 * kc][0], dp[2 * kc][1]), av_pack(dp[2 * kc][2], dp[2 * kc][3]),
                                  av_pack(dp[2 * kc + 1][0], dp[2 * kc + 1][1]),
                                  av_pack(dp[2 * kc + 1][2], dp[2 * kc + 1][3])};
#pragma unroll
                for (int d = 0; d < DN; d += 2) {
                    uint32_t bg[4], bq[4];
                    av_bfrag2<KS>(bg, Gs, kc * 16, d * 8, lane);
                    av_bfrag2<KS>(bq, Qs, kc * 16, d * 8, lane);
                    av_mma(dv[d], pf, bg[0], bg[1]);
                    av_mma(dv[d + 1], pf, bg[2], bg[3]);
                    av_mma(dk[d], df, bq[0], bq[1]);
                    av_mma(dk[d + 1], df, bq[2], bq[3]);
                }
            }
            /* dS by query row for dQ: Ds[ti][key] */
#pragma unroll
            for (int n = 0; n < NR; n++)
#pragma unroll
                for (int e = 0; e < 4; e++)
                    Ds[(n * 8 + tg * 2 + (e & 1)) * CS + warp * 16 + g + (e >> 1) * 8] = __float2bfloat16_rn(dp[n][e]);
        } else {
            for (int i = lane; i < BR * 16; i += 32) Ds[(i >> 4) * CS + warp * 16 + (i & 15)] = __float2bfloat16_rn(0.f);
        }
        if (!a.dq) continue;
        __syncthreads();
        /* dQ rows rb·16.. of the tile, features dc0·8..: scale · dS (BR x 64 keys) · K (64 keys x HD) */
        int rb = warp % RB, dc0 = (warp / RB) * DPW;
        float acc[DPW][4];
#pragma unroll
        for (int d = 0; d < DPW; d++) acc[d][0] = acc[d][1] = acc[d][2] = acc[d][3] = 0.f;
#pragma unroll
        for (int kk = 0; kk < AV_BC / 16; kk++) {
            uint32_t af[4];
            av_afrag<CS>(af, Ds, rb * 16, kk * 16, g, tg);
#pragma unroll
            for (int d = 0; d < DPW; d += 2) {
                uint32_t b[4];
                av_bfrag2<KS>(b, Ks, kk * 16, (dc0 + d) * 8, lane);
                av_mma(acc[d], af, b[0], b[1]);
                av_mma(acc[d + 1], af, b[2], b[3]);
            }
        }
        int64_t tqa = t0 + rb * 16 + g, tqb = tqa + 8;
#pragma unroll
        for (int d = 0; d < DPW; d++) {
            int c = (dc0 + d) * 8 + tg * 2;
            if (tqa < a.T) av_add2(a.dq + (tqa * a.H + h) * HD + c, a.scale * acc[d][0], a.scale * acc[d][1]);
            if (tqb < a.T) av_add2(a.dq + (tqb * a.H + h) * HD + c, a.scale * acc[d][2], a.scale * acc[d][3]);
        }
    }
    /* dK (already scaled: dS·(q·scale)) and dV rows ja, jb of kv head kh */
#pragma unroll
    for (int d = 0; d < DN; d++) {
        int c = d * 8 + tg * 2;
        if (ja < S) {
            int64_t o = (ja * a.Hkv + kh) * HD + c;
            if (a.dk) av_add2(a.dk + o, dk[d][0], dk[d][1]);
            if (a.dv) av_add2(a.dv + o, dv[d][0], dv[d][1]);
        }
        if (jb < S) {
            int64_t o = (jb * a.Hkv + kh) * HD + c;
            if (a.dk) av_add2(a.dk + o, dk[d][2], dk[d][3]);
            if (a.dv) av_add2(a.dv + o, dv[d][2], dv[d][3]);
        }
    }
}

template <int HD, int BR>
static lmx_status launch_bwd(av_args a, int64_t S, int R, cudaStream_t st) {
    static bool sized; /* opt in to the dynamic shared memory once per instantiation */
    size_t bytes = av_smem<HD, BR>::bytes;
    if (!sized) {
        LMX_TRY(cuda_check(cudaFuncSetAttribute(attn_vjp_bwd_k<HD, BR>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                (int)bytes),
                           "attention vjp: shared memory"));
        sized = true;
    }
    int64_t nq = (a.T + BR - 1) / BR;
    a.nz = (int)((nq + AV_QCHUNK - 1) / AV_QCHUNK);
    dim3 sg((unsigned)((a.T + AV_BQ - 1) / AV_BQ), (unsigned)a.H, (unsigned)R);
    dim3 bg((unsigned)((S + AV_BC - 1) / AV_BC), (unsigned)a.H, (unsigned)(R * a.nz));
    attn_vjp_stats_k<HD><<<sg, AV_WARPS * 32, 0, st>>>(a);
    LMX_TRY(cuda_launched("attention vjp: softmax statistics"));
    attn_vjp_bwd_k<HD, BR><<<bg, AV_WARPS * 32, bytes, st>>>(a);
    return cuda_launched("attention vjp: tensor-core backward");
}

/* The tensor-core vjp when the node fits it; *done = false leaves the node to the SGEMM path. */
lmx_status cuda_vjp_attention_mma(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool,
                                  bool *done) {
    lmx_cuda_ctx *c = cuda_ctx(pool);
    const lmx_array *q = n->src[0], *k = n->src[1], *v = n->src[2];
    *done = false;
    static int major = -1; /* one device per process */
    if (major < 0 && cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, c->device) != cudaSuccess) {
        (void)cudaGetLastError();
        major = 0;
    }
    static int sgemm = -1; /* LMX_CUDA_ATTN_VJP=sgemm: the SGEMM vjp at the default precision too (A/B runs) */
    if (sgemm < 0) {
        const char *e = getenv("LMX_CUDA_ATTN_VJP");
        sgemm = e && !strcmp(e, "sgemm");
    }
    int R = lmx_attn_rows(n);
    int64_t T = q->shape[0] / R, H = q->shape[1], hd = q->shape[2], Hkv = k->shape[1];
    int64_t nq = (T + (hd == 64 ? 64 : 32) - 1) / (hd == 64 ? 64 : 32);
    if (sgemm || !c->fast_gemm || major < 8 || n->fp[1] > 0 || q->dtype != LMX_F32 || k->dtype != LMX_F32 ||
        v->dtype != LMX_F32 || v->shape[2] != hd || (hd != 64 && hd != 128) || Hkv == 0 || H % Hkv ||
        R * T * H * hd > 0x7fffffff || (int64_t)R * ((nq + AV_QCHUNK - 1) / AV_QCHUNK) > 65535 || q->strides[2] != 1 || k->strides[2] != 1 || v->strides[2] != 1)
        return LMX_OK;
    /* rows are read as float2 at even features */
    if (((uintptr_t)q->data & 7) || ((uintptr_t)k->data & 7) || ((uintptr_t)v->data & 7) || q->strides[0] % 2 ||
        q->strides[1] % 2 || k->strides[0] % 2 || k->strides[1] % 2 || v->strides[0] % 2 || v->strides[1] % 2)
        return LMX_OK;
    float *scr;
    LMX_TRY(cuda_scratch(c, (size_t)(2 * R * H * T) * sizeof(float), (void **)&scr));
    av_args a = {(const float *)q->data,
                 (const float *)k->data,
                 (const float *)v->data,
                 (const float *)dout->data,
                 q->strides[0], q->strides[1], k->strides[0], k->strides[1], v->strides[0], v->strides[1],
                 dsrc[0] ? (float *)dsrc[0]->data : NULL,
                 dsrc[1] ? (float *)dsrc[1]->data : NULL,
                 dsrc[2] ? (float *)dsrc[2]->data : NULL,
                 scr, scr + R * H * T, T, n->ip[0], (int)H, (int)Hkv, n->ip[1], n->fp[0], k->shape[0] / R, 1};
    *done = true;
    int64_t S = n->ip[0] + T;
    return hd == 64 ? launch_bwd<64, 64>(a, S, R, c->stream) : launch_bwd<128, 32>(a, S, R, c->stream);
}
