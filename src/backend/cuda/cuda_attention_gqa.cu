/* cuda_attention_gqa.cu - decode attention (few query rows against a long
 * KV cache) with each KV row read once per GQA group.
 *
 * The older decode kernel (cuda_attention.cu attn_k) gives each query head
 * its own blocks, so the G = H/Hkv heads of one KV head read that head's
 * rows G times (through L2), and each key costs a 5-step shuffle reduction
 * per head. Here a block takes one (query row, KV head, key split); the G
 * query heads live in registers and every 16-byte K/V load feeds all of
 * them. Lanes run across the head dimension: a row of hd elements is
 * LPR = hd / E lanes of E = 16 / sizeof(elem) elements, so one warp load
 * covers RPW = 32 / LPR rows, and each warp keeps U loads in flight.
 *
 * Per warp step (U·RPW rows): the dot products reduce across the LPR lanes
 * of a row; the row scores' maximum is made warp-uniform (shuffles across
 * row groups), the accumulators rescale once, and each lane adds p·v of its
 * own row into its E features. At the end the row groups and the warps are
 * summed, and the block writes either the output (one split) or its split's
 * partial (m, l, acc) per head in the layout attn_combine_k merges. The
 * first row of every warp step is inside the key range, so the running max
 * is finite after a warp's first step (no exp(-inf - -inf)). */
#include "backend/cuda/cuda_attention.cuh"

#include <stdlib.h>
#include <string.h>

#define GQ_WARPS 4
#define GQ_U 4

/* LMX_CUDA_ATTN_MERGE=1: the last block of a (row, KV head) to finish
 * merges the splits itself instead of a second kernel (one graph node
 * less per layer). Its arrival counters are zero at module load and each
 * last block puts its counter back to zero, so a captured graph replays
 * them; launches of one context are ordered on its stream, but two
 * contexts running attention at once on one device would share them,
 * hence opt-in. */
#define GQ_MAX_CNT 4096
__device__ unsigned int gqa_arrivals[GQ_MAX_CNT];

template <typename T, int HD, int GT>
__global__ void __launch_bounds__(GQ_WARPS * 32) attn_gqa_k(attn_args a, bool merge) {
    constexpr int E = 16 / (int)sizeof(T), LPR = HD / E, RPW = 32 / LPR, STEP = GQ_U * RPW;
    __shared__ float sm[GQ_WARPS][GT], sl[GQ_WARPS][GT], sacc[GQ_WARPS][GT][HD];
    const int G = a.H / a.Hkv, kh = blockIdx.x, s = blockIdx.z;
    const int64_t t = blockIdx.y;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, rg = lane / LPR, f0 = (lane % LPR) * E;
    const int64_t p = (a.dpos ? *a.dpos : a.pos0) + t;
    const int64_t lo = a.window > 0 && p - a.window + 1 > 0 ? p - a.window + 1 : 0;
    const int64_t j0 = lo + s * a.chunk, j1 = j0 + a.chunk < p + 1 ? j0 + a.chunk : p + 1;
    const char *K = (const char *)a.k, *V = (const char *)a.v;
    const int64_t kst = a.ks0 * (int64_t)sizeof(T), vst = a.vs0 * (int64_t)sizeof(T);
    K += (kh * a.ks1 + f0) * (int64_t)sizeof(T);
    V += (kh * a.vs1 + f0) * (int64_t)sizeof(T);
    float q[GT][E], acc[GT][E], m[GT], l[GT];
#pragma unroll
    for (int g = 0; g < GT; g++) {
        const float *qp = a.q + t * a.qs0 + (int64_t)(kh * G + (g < G ? g : 0)) * a.qs1 + f0;
#pragma unroll
        for (int e = 0; e < E; e++) {
            q[g][e] = g < G ? qp[e] * a.scale : 0.0f;
            acc[g][e] = 0.0f;
        }
        m[g] = -INFINITY;
        l[g] = 0.0f;
    }
    for (int64_t jb = j0 + warp * STEP; jb < j1; jb += GQ_WARPS * STEP) {
        uint4 kr[GQ_U], vr[GQ_U];
#pragma unroll
        for (int u = 0; u < GQ_U; u++) { /* all loads first: U·2 in flight per lane */
            int64_t j = jb + u * RPW + rg;
            j = j < j1 ? j : j1 - 1;
            kr[u] = *reinterpret_cast<const uint4 *>(K + j * kst);
            vr[u] = *reinterpret_cast<const uint4 *>(V + j * vst);
        }
        float sc[GQ_U][GT];
#pragma unroll
        for (int u = 0; u < GQ_U; u++) {
            float kf[E];
            unpack16(kr[u], kf, (const T *)nullptr);
#pragma unroll
            for (int g = 0; g < GT; g++) {
                float d = 0.0f;
#pragma unroll
                for (int e = 0; e < E; e++) d += q[g][e] * kf[e];
#pragma unroll
                for (int o = LPR / 2; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
                if (a.cap > 0) d = a.cap * tanhf(d / a.cap);
                sc[u][g] = jb + u * RPW + rg < j1 ? d : -INFINITY;
            }
        }
#pragma unroll
        for (int g = 0; g < GT; g++) {
            float mt = m[g];
#pragma unroll
            for (int u = 0; u < GQ_U; u++) mt = fmaxf(mt, sc[u][g]);
#pragma unroll
            for (int o = LPR; o < 32; o <<= 1) mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, o));
            float corr = expf(m[g] - mt);
            l[g] *= corr;
#pragma unroll
            for (int e = 0; e < E; e++) acc[g][e] *= corr;
            m[g] = mt;
        }
#pragma unroll
        for (int u = 0; u < GQ_U; u++) {
            float vf[E];
            unpack16(vr[u], vf, (const T *)nullptr);
#pragma unroll
            for (int g = 0; g < GT; g++) {
                float pe = expf(sc[u][g] - m[g]); /* 0 for rows past j1 */
                l[g] += pe;
#pragma unroll
                for (int e = 0; e < E; e++) acc[g][e] += pe * vf[e];
            }
        }
    }
    /* sum the row groups (same max across the warp): l is per row group */
#pragma unroll
    for (int g = 0; g < GT; g++)
#pragma unroll
        for (int o = LPR; o < 32; o <<= 1) {
            l[g] += __shfl_xor_sync(0xffffffffu, l[g], o);
#pragma unroll
            for (int e = 0; e < E; e++) acc[g][e] += __shfl_xor_sync(0xffffffffu, acc[g][e], o);
        }
    if (lane < LPR) {
#pragma unroll
        for (int g = 0; g < GT; g++) {
#pragma unroll
            for (int e = 0; e < E; e++) sacc[warp][g][f0 + e] = acc[g][e];
            if (lane == 0) {
                sm[warp][g] = m[g];
                sl[warp][g] = l[g];
            }
        }
    }
    __syncthreads();
    /* the block's warps merged: thread i writes features i, i + 128, ... of each head */
    for (int g = 0; g < G; g++) {
        float M = -INFINITY;
#pragma unroll
        for (int w = 0; w < GQ_WARPS; w++) M = fmaxf(M, sm[w][g]);
        float L = 0.0f, f[GQ_WARPS];
#pragma unroll
        for (int w = 0; w < GQ_WARPS; w++) {
            f[w] = sm[w][g] == -INFINITY ? 0.0f : expf(sm[w][g] - M);
            L += sl[w][g] * f[w];
        }
        int64_t row = t * a.H + kh * G + g;
        if (a.nsplit == 1) {
            for (int d = threadIdx.x; d < HD; d += blockDim.x) {
                float o = 0.0f;
#pragma unroll
                for (int w = 0; w < GQ_WARPS; w++) o += sacc[w][g][d] * f[w];
                a.out[row * HD + d] = o / L;
            }
            continue;
        }
        float *pp = a.part + (row * a.nsplit + s) * (HD + 2);
        for (int d = threadIdx.x; d < HD; d += blockDim.x) {
            float o = 0.0f;
#pragma unroll
            for (int w = 0; w < GQ_WARPS; w++) o += sacc[w][g][d] * f[w];
            pp[2 + d] = o;
        }
        if (threadIdx.x == 0) {
            pp[0] = M;
            pp[1] = L;
        }
    }
    if (!merge || a.nsplit == 1) return;
    /* the last block of this (row, KV head) merges: as attn_combine_k, in split order */
    __shared__ bool last;
    __threadfence();
    __syncthreads();
    unsigned int *cnt = gqa_arrivals + t * a.Hkv + kh;
    if (threadIdx.x == 0) last = atomicAdd(cnt, 1u) == (unsigned)a.nsplit - 1;
    __syncthreads();
    if (!last) return;
    __threadfence();
    for (int g = 0; g < G; g++) {
        int64_t row = t * a.H + kh * G + g;
        const float *pp = a.part + row * a.nsplit * (HD + 2);
        float M = -INFINITY, L = 0.0f;
        for (int q2 = 0; q2 < a.nsplit; q2++) M = fmaxf(M, __ldcg(pp + q2 * (HD + 2)));
        for (int q2 = 0; q2 < a.nsplit; q2++) {
            float ms = __ldcg(pp + q2 * (HD + 2));
            L += ms == -INFINITY ? 0.0f : __ldcg(pp + q2 * (HD + 2) + 1) * expf(ms - M);
        }
        for (int d = threadIdx.x; d < HD; d += blockDim.x) {
            float o = 0.0f;
            for (int q2 = 0; q2 < a.nsplit; q2++) {
                float ms = __ldcg(pp + q2 * (HD + 2));
                float f = ms == -INFINITY ? 0.0f : expf(ms - M);
                o += __ldcg(pp + q2 * (HD + 2) + 2 + d) * f;
            }
            a.out[row * HD + d] = o / L;
        }
    }
    if (threadIdx.x == 0) *cnt = 0; /* ready for the next launch (or graph replay) */
}

/* Keys per split: about 2 blocks per SM over (rows × KV heads × splits),
 * at least one block step (4 warps × U loads × the rows a warp load
 * covers: 16 keys for hd 128 f32, 32 for hd 64 f32 or hd 128 16-bit, 64
 * for hd 64 16-bit) and a multiple of it; a function of the 256-key bucket
 * only, like cuda_attn_chunk, so a graph and a per-step launch split the
 * keys alike. (Session 5 first measured a 64-key minimum: at S <= 1024 on
 * 8 KV heads that is 64-128 blocks, each warp 4 steps deep: no faster than
 * the per-head kernel; LMX_CUDA_ATTN_CHUNK=64 restores it for A/B.) */
int64_t cuda_attn_gqa_chunk(const lmx_cuda_ctx *c, int64_t base, int64_t nmax, int kdt, int hd) {
    static int min64 = -1;
    if (min64 < 0) {
        const char *e = getenv("LMX_CUDA_ATTN_CHUNK");
        min64 = e && !strcmp(e, "64");
    }
    int64_t rpw = 32 / (hd / (kdt == LMX_F32 ? 4 : 8)), gran = min64 ? 64 : GQ_WARPS * GQ_U * rpw;
    int64_t want = 2 * (int64_t)c->n_sm;
    if (nmax < 1) nmax = 1;
    int64_t nb = (nmax + 255) / 256 * 256;
    int64_t ns = base >= want ? 1 : (want + base - 1) / base;
    int64_t chunk = (nb + ns - 1) / ns;
    chunk = (chunk + gran - 1) / gran * gran;
    if ((nb + chunk - 1) / chunk > 256) chunk = (nb + 255) / 256; /* at most 256 splits (decode_graph.c's scratch) */
    return chunk;
}

bool cuda_attn_gqa_ok(const attn_args &a, int kdt) {
    int E = kdt == LMX_F32 ? 4 : 8, G = a.Hkv > 0 ? a.H / a.Hkv : 0;
    if (kdt != LMX_F32 && kdt != LMX_BF16 && kdt != LMX_F16) return false;
    if (a.hd != a.vd || (a.hd != 64 && a.hd != 128) || G < 1 || G > 8 || G * a.Hkv != a.H) return false;
    /* 16-byte rows: base pointers, row and head strides */
    if (((uintptr_t)a.k & 15) || ((uintptr_t)a.v & 15)) return false;
    return a.ks0 % E == 0 && a.ks1 % E == 0 && a.vs0 % E == 0 && a.vs1 % E == 0;
}

template <typename T, int HD>
static void launch_hd(const attn_args &a, dim3 grid, bool mg, cudaStream_t st) {
    if (a.H / a.Hkv <= 4)
        attn_gqa_k<T, HD, 4><<<grid, GQ_WARPS * 32, 0, st>>>(a, mg);
    else
        attn_gqa_k<T, HD, 8><<<grid, GQ_WARPS * 32, 0, st>>>(a, mg);
}

template <typename T>
static void launch_t(const attn_args &a, dim3 grid, bool mg, cudaStream_t st) {
    if (a.hd == 64)
        launch_hd<T, 64>(a, grid, mg, st);
    else
        launch_hd<T, 128>(a, grid, mg, st);
}

bool cuda_attn_gqa_launch(const lmx_cuda_ctx *c, const attn_args &a, int64_t T, int kdt) {
    static int merge_env = -1;
    if (merge_env < 0) {
        const char *e = getenv("LMX_CUDA_ATTN_MERGE");
        merge_env = e && !strcmp(e, "1");
    }
    bool mg = merge_env && a.nsplit > 1 && T * a.Hkv <= GQ_MAX_CNT;
    dim3 grid((unsigned)a.Hkv, (unsigned)T, (unsigned)a.nsplit);
    if (kdt == LMX_F32) launch_t<float>(a, grid, mg, c->stream);
    if (kdt == LMX_BF16) launch_t<__nv_bfloat16>(a, grid, mg, c->stream);
    if (kdt == LMX_F16) launch_t<__half>(a, grid, mg, c->stream);
    return mg;
}
