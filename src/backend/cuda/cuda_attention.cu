/* cuda_attention.cu - causal attention of q [T,H,hd] (f32) at positions
 * pos0.. against a KV cache k, v [S,Hkv,hd|vd] (f32/f16/bf16), GQA, sliding
 * window, score soft-capping; out [T, H·vd] f32.
 *
 * One block of 4 warps per (head, query row, key split). Each warp walks its
 * keys with an online softmax (running max m, sum l, accumulator in
 * registers: lane holds features lane, lane+32, ...); the warps merge in
 * shared memory. When (heads × rows) cannot fill the GPU (decode), the key
 * range is split across blocks (flash-decoding) and a second kernel merges
 * the partial (m, l, acc) of each split. hd, vd <= 256.
 *
 * Prefill (T >= 16 rows, hd = vd = 64 or 128, outside a decode graph) runs
 * on tensor cores (cuda_attention_mma.cu); the CUDA-core tile kernel below
 * stays for cards before sm_80, unaligned views and LMX_CUDA_ATTN=tiles.
 *
 * Batch rows (lmx_attention_rows: R sequences end to end): the tensor-core
 * kernel takes them all in one launch (grid z); every other path runs the
 * node row by row (core/op_rows.h). */
#include "backend/cuda/cuda_attention.cuh"
#include "core/op_rows.h"

#include <stdlib.h>
#include <string.h>

#define ATT_WARPS 4
#define ATT_MAXD 256
#define ATT_KB 4

template <typename T>
__global__ void __launch_bounds__(ATT_WARPS * 32) attn_k(attn_args a) {
    __shared__ float sm[ATT_WARPS], sl[ATT_WARPS], sacc[ATT_WARPS][ATT_MAXD];
    const T *K = (const T *)a.k, *Vc = (const T *)a.v;
    int h = blockIdx.x, s = blockIdx.z;
    int64_t t = blockIdx.y;
    int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int kh = h / (a.H / a.Hkv);
    int64_t p = (a.dpos ? *a.dpos : a.pos0) + t;
    int64_t lo = a.window > 0 && p - a.window + 1 > 0 ? p - a.window + 1 : 0;
    int64_t j0 = lo + s * a.chunk, j1 = j0 + a.chunk < p + 1 ? j0 + a.chunk : p + 1;
    float qr[ATT_MAXD / 32], acc[ATT_MAXD / 32];
    const float *qp = a.q + t * a.qs0 + h * a.qs1;
#pragma unroll
    for (int i = 0; i < ATT_MAXD / 32; i++) {
        int d = lane + 32 * i;
        qr[i] = d < a.hd ? qp[d] : 0.0f;
        acc[i] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    /* ATT_KB keys per warp step: their loads are independent (in flight together) */
    for (int64_t jb = j0 + warp * ATT_KB; jb < j1; jb += ATT_WARPS * ATT_KB) {
        float sc[ATT_KB];
#pragma unroll
        for (int u = 0; u < ATT_KB; u++) {
            int64_t j = jb + u < j1 ? jb + u : j1 - 1;
            const T *kr = K + j * a.ks0 + kh * a.ks1;
            float dot = 0.0f;
#pragma unroll
            for (int i = 0; i < ATT_MAXD / 32; i++) {
                int d = lane + 32 * i;
                if (d < a.hd) dot += qr[i] * ldf(kr, d);
            }
            sc[u] = dot;
        }
        float mt = m;
#pragma unroll
        for (int u = 0; u < ATT_KB; u++) {
            float x = warp_sum(sc[u]) * a.scale;
            if (a.cap > 0) x = a.cap * tanhf(x / a.cap);
            sc[u] = jb + u < j1 ? x : -INFINITY;
            mt = fmaxf(mt, sc[u]);
        }
        float corr = expf(m - mt);
        l *= corr;
#pragma unroll
        for (int i = 0; i < ATT_MAXD / 32; i++) acc[i] *= corr;
#pragma unroll
        for (int u = 0; u < ATT_KB; u++) {
            if (jb + u >= j1) break;
            float pe = expf(sc[u] - mt);
            l += pe;
            const T *vr = Vc + (jb + u) * a.vs0 + kh * a.vs1;
#pragma unroll
            for (int i = 0; i < ATT_MAXD / 32; i++) {
                int d = lane + 32 * i;
                if (d < a.vd) acc[i] += pe * ldf(vr, d);
            }
        }
        m = mt;
    }
    if (lane == 0) {
        sm[warp] = m;
        sl[warp] = l;
    }
#pragma unroll
    for (int i = 0; i < ATT_MAXD / 32; i++) {
        int d = lane + 32 * i;
        if (d < a.vd) sacc[warp][d] = acc[i];
    }
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < ATT_WARPS; w++) M = fmaxf(M, sm[w]);
    float L = 0.0f, f[ATT_WARPS];
    for (int w = 0; w < ATT_WARPS; w++) {
        f[w] = sm[w] == -INFINITY ? 0.0f : expf(sm[w] - M);
        L += sl[w] * f[w];
    }
    int64_t row = t * a.H + h;
    if (a.nsplit == 1) {
        for (int d = threadIdx.x; d < a.vd; d += blockDim.x) {
            float o = 0.0f;
            for (int w = 0; w < ATT_WARPS; w++) o += sacc[w][d] * f[w];
            a.out[row * a.vd + d] = o / L;
        }
        return;
    }
    float *pp = a.part + (row * a.nsplit + s) * (a.vd + 2);
    for (int d = threadIdx.x; d < a.vd; d += blockDim.x) {
        float o = 0.0f;
        for (int w = 0; w < ATT_WARPS; w++) o += sacc[w][d] * f[w];
        pp[2 + d] = o;
    }
    if (threadIdx.x == 0) {
        pp[0] = M;
        pp[1] = L;
    }
}

/* Merges the splits of one (row, head): split weights f_s = exp(m_s - M) in
 * shared memory first, then each thread sums its features over the splits
 * with independent (unrolled) loads. nsplit <= ATT_MAX_SPLIT. */
#define ATT_MAX_SPLIT 256
__global__ void attn_combine_k(float *out, const float *part, int nsplit, int vd) {
    __shared__ float f[ATT_MAX_SPLIT], sh[32];
    pdl_trigger(); /* the o GEMV may start loading weights */
    int64_t row = blockIdx.x;
    const float *pp = part + row * nsplit * (vd + 2);
    float mx = -INFINITY;
    for (int s = threadIdx.x; s < nsplit; s += blockDim.x) mx = fmaxf(mx, pp[s * (vd + 2)]);
    float M = block_max(mx, sh);
    float l = 0.0f;
    for (int s = threadIdx.x; s < nsplit; s += blockDim.x) {
        float ms = pp[s * (vd + 2)];
        f[s] = ms == -INFINITY ? 0.0f : expf(ms - M);
        l += pp[s * (vd + 2) + 1] * f[s];
    }
    float L = block_sum(l, sh); /* its barriers also publish f[] */
    for (int d = threadIdx.x; d < vd; d += blockDim.x) {
        float o = 0.0f;
#pragma unroll 8
        for (int s = 0; s < nsplit; s++) o += pp[s * (vd + 2) + 2 + d] * f[s];
        out[row * vd + d] = o / L;
    }
}

/* ---- prefill: query tiles against key tiles in shared memory --------------- */

/* Block: FA_BQ query rows of one head, two threads per row (each owns half
 * of the features of q and of the accumulator). Key/value tiles of FA_BK
 * rows are staged in shared memory as f32 (the second half of each row
 * shifted by 4 floats so the two halves' 16-byte reads use different banks).
 * Per tile: all scores, the tile max, one rescale, then the P·V update. */
#define FA_BQ 64
#define FA_BK 32
#define FA_MIN_T 16

template <typename T, int HD>
__global__ void __launch_bounds__(2 * FA_BQ) attn_tile_k(attn_args a, int64_t Tq) {
    constexpr int HH = HD / 2, RS = HD + 4; /* half, smem row stride */
    __shared__ __align__(16) float Ks[FA_BK * RS], Vs[FA_BK * RS];
    const T *K = (const T *)a.k, *Vc = (const T *)a.v;
    int h = blockIdx.y, kh = h / (a.H / a.Hkv);
    int tid = threadIdx.x, half = tid & 1;
    int64_t t0 = (int64_t)blockIdx.x * FA_BQ, t = t0 + (tid >> 1);
    bool live = t < Tq;
    int64_t tc = live ? t : Tq - 1;
    int64_t p = a.pos0 + tc;
    int64_t lo = a.window > 0 && p - a.window + 1 > 0 ? p - a.window + 1 : 0;
    /* the block's key range: from its first row's lo to its last row's p */
    int64_t tl = t0 + FA_BQ - 1 < Tq - 1 ? t0 + FA_BQ - 1 : Tq - 1;
    int64_t pf = a.pos0 + t0, jend = a.pos0 + tl + 1;
    int64_t jbeg = a.window > 0 && pf - a.window + 1 > 0 ? pf - a.window + 1 : 0;
    float q[HH], acc[HH];
    const float *qp = a.q + tc * a.qs0 + h * a.qs1 + half * HH;
#pragma unroll
    for (int i = 0; i < HH; i++) {
        q[i] = qp[i] * a.scale;
        acc[i] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int64_t j0 = jbeg; j0 < jend; j0 += FA_BK) {
        __syncthreads();
        for (int e = tid; e < FA_BK * HD; e += 2 * FA_BQ) {
            int r = e / HD, col = e - r * HD;
            int64_t j = j0 + r < jend ? j0 + r : jend - 1;
            int so = r * RS + col + (col >= HH ? 4 : 0);
            Ks[so] = ldf(K, j * a.ks0 + kh * a.ks1 + col);
            Vs[so] = ldf(Vc, j * a.vs0 + kh * a.vs1 + col);
        }
        __syncthreads();
        float sc[FA_BK], mt = m;
#pragma unroll
        for (int u = 0; u < FA_BK; u++) {
            const float4 *kr = reinterpret_cast<const float4 *>(Ks + u * RS + half * (HH + 4));
            float d = 0.0f;
#pragma unroll
            for (int i = 0; i < HH / 4; i++) {
                float4 k4 = kr[i];
                d += q[4 * i] * k4.x + q[4 * i + 1] * k4.y + q[4 * i + 2] * k4.z + q[4 * i + 3] * k4.w;
            }
            d += __shfl_xor_sync(0xffffffffu, d, 1);
            if (a.cap > 0) d = a.cap * tanhf(d / a.cap);
            int64_t j = j0 + u;
            sc[u] = j <= p && j >= lo && j < jend ? d : -INFINITY;
            mt = fmaxf(mt, sc[u]);
        }
        if (mt == -INFINITY) continue; /* no visible key in this tile for this row */
        float corr = expf(m - mt);
        l *= corr;
#pragma unroll
        for (int i = 0; i < HH; i++) acc[i] *= corr;
#pragma unroll
        for (int u = 0; u < FA_BK; u++) {
            float pe = expf(sc[u] - mt);
            l += pe;
            const float4 *vr = reinterpret_cast<const float4 *>(Vs + u * RS + half * (HH + 4));
#pragma unroll
            for (int i = 0; i < HH / 4; i++) {
                float4 v4 = vr[i];
                acc[4 * i] += pe * v4.x;
                acc[4 * i + 1] += pe * v4.y;
                acc[4 * i + 2] += pe * v4.z;
                acc[4 * i + 3] += pe * v4.w;
            }
        }
        m = mt;
    }
    if (!live) return;
    float *o = a.out + (t * a.H + h) * HD + half * HH;
#pragma unroll
    for (int i = 0; i < HH; i++) o[i] = acc[i] / l;
}

template <typename T>
static bool launch_tile(const attn_args &a, int64_t T_, cudaStream_t st) {
    dim3 grid((unsigned)((T_ + FA_BQ - 1) / FA_BQ), (unsigned)a.H);
    if (a.hd == 64 && a.vd == 64)
        attn_tile_k<T, 64><<<grid, 2 * FA_BQ, 0, st>>>(a, T_);
    else if (a.hd == 128 && a.vd == 128)
        attn_tile_k<T, 128><<<grid, 2 * FA_BQ, 0, st>>>(a, T_);
    else
        return false;
    return true;
}

/* See cuda_common.cuh. With enough (head, row) blocks to fill the GPU one
 * split (chunk = the bucket); otherwise about 8 blocks per SM, at least 32 keys
 * per split, at most ATT_MAX_SPLIT splits of the bucket. */
#define ATT_BUCKET 256
int64_t cuda_attn_chunk(const lmx_cuda_ctx *c, int64_t base, int64_t nmax) {
    int64_t want = 8 * (int64_t)c->n_sm;
    if (nmax < 1) nmax = 1;
    int64_t nb = (nmax + ATT_BUCKET - 1) / ATT_BUCKET * ATT_BUCKET;
    if (base >= want) return nb;
    int64_t ns = (want + base - 1) / base;
    if (ns > ATT_MAX_SPLIT) ns = ATT_MAX_SPLIT;
    int64_t chunk = (nb + ns - 1) / ns;
    chunk = (chunk + 31) / 32 * 32;
    return chunk;
}

lmx_status lmx_cuda_attention(const lmx_node *n, lmx_pool *pool) {
    lmx_cuda_ctx *c = cuda_ctx(pool);
    const lmx_array *q = n->src[0], *k = n->src[1], *v = n->src[2];
    attn_args a;
    memset(&a, 0, sizeof a);
    int R = lmx_attn_rows(n);
    int64_t T = q->shape[0] / R;
    a.rows = R;
    a.rs = k->shape[0] / R;
    a.H = (int)q->shape[1];
    a.Hkv = (int)k->shape[1];
    a.hd = (int)q->shape[2];
    a.vd = (int)v->shape[2];
    a.pos0 = n->ip[0];
    a.window = n->ip[1];
    a.scale = n->fp[0];
    a.cap = n->fp[1];
    if (T == 0) return LMX_OK;
    if (T > 65535 || a.H > 65535 || a.hd > ATT_MAXD || a.vd > ATT_MAXD)
        return lmx_err(LMX_ERR_UNSUPPORTED, "cuda attention: T=%lld H=%d hd=%d vd=%d beyond the kernel's limits",
                       (long long)T, a.H, a.hd, a.vd);
    a.out = (float *)n->out->data;
    a.q = (const float *)q->data;
    a.k = k->data;
    a.v = v->data;
    a.qs0 = q->strides[0];
    a.qs1 = q->strides[1];
    a.ks0 = k->strides[0];
    a.ks1 = k->strides[1];
    a.vs0 = v->strides[0];
    a.vs1 = v->strides[1];
    a.dpos = c->dyn_pos;
    /* LMX_CUDA_ATTN=tiles: the CUDA-core tile kernel below instead of the
     * tensor-core one (A/B timings); read once, like the backend's switches */
    static int tiles_only = -1;
    if (tiles_only < 0) {
        const char *e = getenv("LMX_CUDA_ATTN");
        tiles_only = e && !strcmp(e, "tiles");
    }
    if (!a.dpos && T >= FA_MIN_T && !tiles_only && cuda_attn_prefill_mma(c, a, T, k->dtype, !c->fast_gemm))
        return cuda_launched("attention (tensor cores)");
    if (R > 1) { /* the other kernels take one sequence: row by row */
        for (int r = 0; r < R; r++) {
            lmx_node one;
            lmx_array v4[4];
            lmx_attn_row_node(n, r, &one, v4);
            LMX_TRY(lmx_cuda_attention(&one, pool));
        }
        return LMX_OK;
    }
    if (!a.dpos && T >= FA_MIN_T && ((a.hd == 64 && a.vd == 64) || (a.hd == 128 && a.vd == 128)) &&
        ((uintptr_t)a.q & 15) == 0 && a.qs1 % 4 == 0 && a.qs0 % 4 == 0) {
        bool ok = k->dtype == LMX_F32    ? launch_tile<float>(a, T, c->stream)
                  : k->dtype == LMX_BF16 ? launch_tile<__nv_bfloat16>(a, T, c->stream)
                  : k->dtype == LMX_F16  ? launch_tile<__half>(a, T, c->stream)
                                         : false;
        if (ok) return cuda_launched("attention (tiles)");
    }
    /* longest key range of any row */
    int64_t nmax = a.pos0 + T;
    if (a.window > 0 && nmax > a.window) nmax = a.window;
    int64_t base = (int64_t)a.H * T;
    /* LMX_CUDA_ATTN=old: the per-head decode kernel below (A/B timings) */
    static int old_decode = -1;
    if (old_decode < 0) {
        const char *e = getenv("LMX_CUDA_ATTN");
        old_decode = e && !strcmp(e, "old");
    }
    bool gqa = !old_decode && cuda_attn_gqa_ok(a, k->dtype);
    a.chunk = gqa ? cuda_attn_gqa_chunk(c, (int64_t)a.Hkv * T, nmax, k->dtype, a.hd) : cuda_attn_chunk(c, base, nmax);
    /* a graph serves every nmax of its bucket: it launches the bucket's splits */
    int64_t keys = a.dpos ? (nmax + ATT_BUCKET - 1) / ATT_BUCKET * ATT_BUCKET : nmax;
    int64_t ns = (keys + a.chunk - 1) / a.chunk;
    if (ns < 1) ns = 1;
    a.nsplit = (int)ns;
    if (ns > 1) {
        void *part;
        LMX_TRY(cuda_scratch(c, (size_t)(base * ns * (a.vd + 2)) * sizeof(float), &part));
        a.part = (float *)part;
    }
    if (gqa) {
        bool merged = cuda_attn_gqa_launch(c, a, T, k->dtype);
        LMX_TRY(cuda_launched("attention (gqa decode)"));
        if (ns > 1 && !merged) {
            attn_combine_k<<<(unsigned)base, 128, 0, c->stream>>>(a.out, a.part, a.nsplit, a.vd);
            LMX_TRY(cuda_launched("attention: combine"));
        }
        return LMX_OK;
    }
    dim3 grid((unsigned)a.H, (unsigned)T, (unsigned)ns);
    switch (k->dtype) {
    case LMX_F32: attn_k<float><<<grid, ATT_WARPS * 32, 0, c->stream>>>(a); break;
    case LMX_BF16: attn_k<__nv_bfloat16><<<grid, ATT_WARPS * 32, 0, c->stream>>>(a); break;
    case LMX_F16: attn_k<__half><<<grid, ATT_WARPS * 32, 0, c->stream>>>(a); break;
    default: return lmx_err(LMX_ERR_UNSUPPORTED, "cuda attention: cache dtype %s", lmx_dtype_info(k->dtype)->name);
    }
    LMX_TRY(cuda_launched("attention"));
    if (ns > 1) {
        attn_combine_k<<<(unsigned)base, 128, 0, c->stream>>>(a.out, a.part, a.nsplit, a.vd);
        LMX_TRY(cuda_launched("attention: combine"));
    }
    return LMX_OK;
}
