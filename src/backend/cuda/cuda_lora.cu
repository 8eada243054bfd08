/* cuda_lora.cu - LoRA's factor products (f32, rank R = 8 or 16) as memory-bound kernels that read their wide
 * operand once with 16-byte loads and keep the rank side in registers:
 *
 *   forward   t[M,R]   = x[M,K]·A[R,K]ᵀ                 (MATMUL, f32 W with R rows)         lr_fwd_a_k
 *             out[M,N] += s·ts[M,R]·B[N,R]ᵀ              (MATMUL_ACC, s = fp[0])             lr_fwd_acc_k
 *   vjps      dx[M,K] (+)= s·g[M,R]·A,  dA += s·gᵀ·x      (one pass over x and dx)             lr_vjp_a_k
 *             dts[M,R] (+)= s·g·B,      dB += s·gᵀ·ts     (one pass over g = dout [M,N])       lr_vjp_b_k
 *
 * cuBLAS's SGEMM tiles for these skinny shapes ran at a fraction of the bandwidth (H100 event profile: 62 us
 * for t = x·Aᵀ at M 2048, K 2048/8192, where reading x takes 5-22 us). A thread owns 4 consecutive columns of
 * the wide side for all rows of its block. Where an output is a sum over those columns (t, dts), each lane's R
 * partial sums are reduced by a reduce-scatter butterfly (log2(R) steps that halve the values a lane carries, so
 * a warp reduces R values with R - 1 + log2(32/R) shuffles instead of 5·R) and the warps' sums through shared
 * memory; the column blocks of a row (K or N > the block's span) add with atomics. Outer products over rows
 * (dA, dB) add their per-block partials with 16-byte atomics. Every product is an f32 FMA: the results agree
 * with the CPU's to f32 rounding in another order (~1e-6 relative), and the atomics make the sums over
 * blocks' order vary run to run at that level.
 *
 * Tried and dropped (H100, M 2048, rank 8): blocks on strips of 128 columns with per-warp partial sums stored
 * and a second kernel adding them (no atomics, fixed order): t = x·Aᵀ 11.2 vs 8.5 us at K 2048, 39.2 vs 29.9 at
 * K 8192; B side vjp 21.5 vs 16.2 us at N 512, 19.4 vs 21.8 at N 2048, 57.1 vs 44.4 at N 8192 (narrow strips
 * read 512 bytes a row; the extra launch).
 *
 * dsrc[0] of the vjps (dx, dts) is added into or, with `overwrite`, written whole (the tape's fresh sources).
 * LMX_CUDA_LORA_FWD=sgemm / LMX_CUDA_LORA_VJP=sgemm keep cuBLAS (read once per process). */
#include "backend/cuda/cuda_lora.cuh"
#include "backend/cuda/cuda_vjp.cuh"

#include <stdlib.h>
#include <string.h>

#define FULL 0xffffffffu

static bool al16(const void *p) { return ((uintptr_t)p & 15) == 0; }

static int env_sgemm(const char *name) {
    const char *e = getenv(name);
    return e && !strcmp(e, "sgemm");
}

/* Lane l ends with the warp's sum of v[l / (32/R)] (v's R entries each summed over the 32 lanes). Step i sends
 * the half of its values the lane does not keep to the partner lane l ^ (16 >> i) and adds the partner's copy of
 * the half it keeps; after log2(R) steps one value is left, the sum over R lanes; the last steps are plain. The
 * steps are a template (H, the values kept): as a loop, rank 16 was not unrolled and v went to local memory
 * (lr_fwd_a_k<16>: 42.8 -> 11.6 us at M 2048, K 2048, H100). */
template <int H, int R> __device__ __forceinline__ void rs_step(float (&v)[R], int lane) {
    constexpr int off = 16 * 2 * H / R;
    bool up = lane & off;
#pragma unroll
    for (int i = 0; i < H; i++) {
        float send = up ? v[i] : v[i + H], keep = up ? v[i + H] : v[i];
        v[i] = keep + __shfl_xor_sync(FULL, send, off);
    }
    if constexpr (H > 1) rs_step<H / 2, R>(v, lane);
}

template <int R> __device__ __forceinline__ float reduce_scatter(float (&v)[R], int lane) {
    rs_step<R / 2, R>(v, lane);
    float s = v[0];
#pragma unroll
    for (int off = 16 / R; off >= 1; off >>= 1) s += __shfl_xor_sync(FULL, s, off);
    return s;
}

__device__ __forceinline__ float dot4(float4 a, float4 b) { return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w; }

__device__ __forceinline__ void atomic_add4(float *p, float4 v) {
#if __CUDA_ARCH__ >= 900
    atomicAdd(reinterpret_cast<float4 *>(p), v);
#else
    atomicAdd(p, v.x), atomicAdd(p + 1, v.y), atomicAdd(p + 2, v.z), atomicAdd(p + 3, v.w);
#endif
}

/* Sums of a block's warps for U rows (red[u][warp][r], one buffer of two), then out[(m+u)·R + r] =, += or
 * atomically += s·sum. Called by every thread after the block's __syncthreads. */
template <int R, int U, int NW>
__device__ __forceinline__ void rows_out(float *out, const float (*red)[NW][R], int64_t m, int64_t m1, float s,
                                         int mode) {
    int t = threadIdx.x;
    if (t >= U * R) return;
    int u = t / R, r = t % R;
    if (m + u >= m1) return;
    float v = 0.f;
#pragma unroll
    for (int w = 0; w < NW; w++) v += red[u][w][r];
    float *o = out + (m + u) * R + r;
    if (mode == 0) *o = s * v;
    else if (mode == 1) *o += s * v;
    else atomicAdd(o, s * v);
}

/* ---- forward: t = x·Aᵀ ------------------------------------------------------------------------------------ */

#define FA_NT 512 /* threads of lr_fwd_a_k: 2048 columns a block (K = 2048: a row in one block, no atomics) */

/* out[M,R] (dense) = x[M,K] (row stride xs)·A[R,K]ᵀ; mode 0: store, 2: atomic add (several column blocks; out
 * zeroed first). Rows m0..m1 of the block in steps of U, the next U rows' loads issued before this step's sums. */
template <int R, int U>
__global__ void __launch_bounds__(FA_NT, 1) lr_fwd_a_k(float *out, const float *__restrict__ x,
                                                       const float *__restrict__ A, int64_t M, int64_t K, int64_t xs,
                                                       int rpb, int mode) {
    constexpr int NW = FA_NT / 32;
    __shared__ float red[2][U][NW][R];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int64_t c = (int64_t)blockIdx.x * FA_NT * 4 + threadIdx.x * 4;
    bool ok = c < K;
    float4 a[R];
#pragma unroll
    for (int r = 0; r < R; r++)
        a[r] = ok ? __ldg(reinterpret_cast<const float4 *>(A + r * K + c)) : make_float4(0.f, 0.f, 0.f, 0.f);
    int64_t m0 = (int64_t)blockIdx.y * rpb, m1 = m0 + rpb < M ? m0 + rpb : M;
    float4 xv[U];
#pragma unroll
    for (int u = 0; u < U; u++)
        xv[u] = ok && m0 + u < m1 ? __ldcs(reinterpret_cast<const float4 *>(x + (m0 + u) * xs + c))
                                  : make_float4(0.f, 0.f, 0.f, 0.f);
    int it = 0;
    for (int64_t m = m0; m < m1; m += U, it ^= 1) {
        float4 xn[U];
#pragma unroll
        for (int u = 0; u < U; u++)
            xn[u] = ok && m + U + u < m1 ? __ldcs(reinterpret_cast<const float4 *>(x + (m + U + u) * xs + c))
                                         : make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
        for (int u = 0; u < U; u++) {
            float p[R];
#pragma unroll
            for (int r = 0; r < R; r++) p[r] = dot4(xv[u], a[r]);
            float v = reduce_scatter<R>(p, lane);
            if (lane % (32 / R) == 0) red[it][u][warp][lane / (32 / R)] = v;
        }
        __syncthreads();
        rows_out<R, U, NW>(out, red[it], m, m1, 1.0f, mode);
#pragma unroll
        for (int u = 0; u < U; u++) xv[u] = xn[u];
    }
}

/* ---- forward: out += s·ts·Bᵀ --------------------------------------------------------------------------------- */

#define FB_NT 256 /* threads of lr_fwd_acc_k and the vjp kernels: 1024 columns a block */

/* out[M,N] (row stride os) += s·ts[M,R] (dense)·B[N,R]ᵀ: a thread's 4 B rows in registers, ts rows read as
 * block-uniform (broadcast) loads, out read and written with 16-byte accesses, U rows in flight. */
template <int R, int U>
__global__ void __launch_bounds__(FB_NT) lr_fwd_acc_k(float *out, const float *__restrict__ ts,
                                                     const float *__restrict__ B, int64_t M, int64_t N, int64_t os,
                                                     int rpb, float s) {
    int64_t n = (int64_t)blockIdx.x * FB_NT * 4 + threadIdx.x * 4;
    if (n >= N) return;
    float b[4][R];
#pragma unroll
    for (int q = 0; q < R; q++) { /* rows n..n+3 of B: 4R consecutive floats */
        float4 v = __ldg(reinterpret_cast<const float4 *>(B + n * R) + q);
        b[q * 4 / R][(q * 4) % R] = v.x, b[q * 4 / R][(q * 4) % R + 1] = v.y;
        b[q * 4 / R][(q * 4) % R + 2] = v.z, b[q * 4 / R][(q * 4) % R + 3] = v.w;
    }
    int64_t m0 = (int64_t)blockIdx.y * rpb, m1 = m0 + rpb < M ? m0 + rpb : M;
    for (int64_t m = m0; m < m1; m += U) {
        float4 o[U];
#pragma unroll
        for (int u = 0; u < U; u++)
            if (m + u < m1) o[u] = *reinterpret_cast<const float4 *>(out + (m + u) * os + n);
#pragma unroll
        for (int u = 0; u < U; u++) {
            if (m + u >= m1) break;
            float acc[4] = {0.f, 0.f, 0.f, 0.f};
            const float4 *tr = reinterpret_cast<const float4 *>(ts + (m + u) * R);
#pragma unroll
            for (int q = 0; q < R / 4; q++) {
                float4 t = __ldg(tr + q);
#pragma unroll
                for (int j = 0; j < 4; j++)
                    acc[j] += t.x * b[j][4 * q] + t.y * b[j][4 * q + 1] + t.z * b[j][4 * q + 2] + t.w * b[j][4 * q + 3];
            }
            o[u].x += s * acc[0], o[u].y += s * acc[1], o[u].z += s * acc[2], o[u].w += s * acc[3];
            *reinterpret_cast<float4 *>(out + (m + u) * os + n) = o[u];
        }
    }
}

/* ---- vjp, A side: x [M,K], A [R,K], g = dt [M,R] ------------------------------------------------------------ */

/* dx[m, c..c+3] (dense, K wide) = or += s·Σ_r g[m,r]·A[r, c..c+3] and dA[r, c..c+3] += s·Σ_m g[m,r]·x[m, c..c+3]
 * over the block's rows: x and dx read once, g rows as block-uniform loads, dA's partial by 16-byte atomics. */
template <int R, int U>
__global__ void __launch_bounds__(FB_NT) lr_vjp_a_k(float *dx, float *dA, const float *__restrict__ g,
                                                   const float *__restrict__ x, const float *__restrict__ A,
                                                   int64_t M, int64_t K, int64_t xs, int rpb, float s, int overwrite) {
    int64_t c = (int64_t)blockIdx.x * FB_NT * 4 + threadIdx.x * 4;
    if (c >= K) return;
    float4 a[R], acc[R];
#pragma unroll
    for (int r = 0; r < R; r++) {
        a[r] = dx ? __ldg(reinterpret_cast<const float4 *>(A + r * K + c)) : make_float4(0.f, 0.f, 0.f, 0.f);
        acc[r] = make_float4(0.f, 0.f, 0.f, 0.f);
    }
    int64_t m0 = (int64_t)blockIdx.y * rpb, m1 = m0 + rpb < M ? m0 + rpb : M;
    for (int64_t m = m0; m < m1; m += U) {
        float4 xv[U], dv[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            if (m + u >= m1) break;
            if (dA) xv[u] = __ldcs(reinterpret_cast<const float4 *>(x + (m + u) * xs + c));
            if (dx && !overwrite) dv[u] = *reinterpret_cast<const float4 *>(dx + (m + u) * K + c);
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            if (m + u >= m1) break;
            float gr[R];
#pragma unroll
            for (int q = 0; q < R / 4; q++) {
                float4 t = __ldg(reinterpret_cast<const float4 *>(g + (m + u) * R) + q);
                gr[4 * q] = s * t.x, gr[4 * q + 1] = s * t.y, gr[4 * q + 2] = s * t.z, gr[4 * q + 3] = s * t.w;
            }
            if (dx) {
                float4 o = overwrite ? make_float4(0.f, 0.f, 0.f, 0.f) : dv[u];
#pragma unroll
                for (int r = 0; r < R; r++) {
                    o.x += gr[r] * a[r].x, o.y += gr[r] * a[r].y;
                    o.z += gr[r] * a[r].z, o.w += gr[r] * a[r].w;
                }
                *reinterpret_cast<float4 *>(dx + (m + u) * K + c) = o;
            }
            if (dA) {
#pragma unroll
                for (int r = 0; r < R; r++) {
                    acc[r].x += gr[r] * xv[u].x, acc[r].y += gr[r] * xv[u].y;
                    acc[r].z += gr[r] * xv[u].z, acc[r].w += gr[r] * xv[u].w;
                }
            }
        }
    }
    if (dA)
#pragma unroll
        for (int r = 0; r < R; r++) atomic_add4(dA + r * K + c, acc[r]);
}

/* ---- vjp, B side: ts [M,R], B [N,R], g = dout [M,N] --------------------------------------------------------- */

/* One pass over g: dts[m,r] = / += / atomically += s·Σ_n g[m,n]·B[n,r] (lane sums reduce-scattered, the warps'
 * through shared memory, column blocks by atomics) and dB[n, r] += s·Σ_m g[m,n]·ts[m,r] (16-byte atomics of
 * the block's partial). */
template <int R, int U>
__global__ void __launch_bounds__(FB_NT) lr_vjp_b_k(float *dts, float *dB, const float *__restrict__ g,
                                                   const float *__restrict__ ts, const float *__restrict__ B,
                                                   int64_t M, int64_t N, int rpb, float s, int mode) {
    constexpr int NW = FB_NT / 32;
    __shared__ float red[2][U][NW][R];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int64_t n = (int64_t)blockIdx.x * FB_NT * 4 + threadIdx.x * 4;
    bool ok = n < N; /* no early return: the block's barriers */
    float b[4][R], acc[4][R];
#pragma unroll
    for (int q = 0; q < R; q++) {
        float4 v = ok && dts ? __ldg(reinterpret_cast<const float4 *>(B + n * R) + q) : make_float4(0.f, 0.f, 0.f, 0.f);
        b[q * 4 / R][(q * 4) % R] = v.x, b[q * 4 / R][(q * 4) % R + 1] = v.y;
        b[q * 4 / R][(q * 4) % R + 2] = v.z, b[q * 4 / R][(q * 4) % R + 3] = v.w;
    }
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
        for (int r = 0; r < R; r++) acc[j][r] = 0.f;
    int64_t m0 = (int64_t)blockIdx.y * rpb, m1 = m0 + rpb < M ? m0 + rpb : M;
    int it = 0;
    for (int64_t m = m0; m < m1; m += U, it ^= 1) {
        float4 gv[U];
#pragma unroll
        for (int u = 0; u < U; u++)
            gv[u] = ok && m + u < m1 ? __ldcs(reinterpret_cast<const float4 *>(g + (m + u) * N + n))
                                     : make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
        for (int u = 0; u < U; u++) {
            if (dB && m + u < m1) {
#pragma unroll
                for (int q = 0; q < R / 4; q++) {
                    float4 t = __ldg(reinterpret_cast<const float4 *>(ts + (m + u) * R) + q);
                    float tv[4] = {t.x, t.y, t.z, t.w};
#pragma unroll
                    for (int i = 0; i < 4; i++) {
                        acc[0][4 * q + i] += gv[u].x * tv[i], acc[1][4 * q + i] += gv[u].y * tv[i];
                        acc[2][4 * q + i] += gv[u].z * tv[i], acc[3][4 * q + i] += gv[u].w * tv[i];
                    }
                }
            }
            if (dts) {
                float p[R];
#pragma unroll
                for (int r = 0; r < R; r++)
                    p[r] = gv[u].x * b[0][r] + gv[u].y * b[1][r] + gv[u].z * b[2][r] + gv[u].w * b[3][r];
                float v = reduce_scatter<R>(p, lane);
                if (lane % (32 / R) == 0) red[it][u][warp][lane / (32 / R)] = v;
            }
        }
        if (dts) {
            __syncthreads();
            rows_out<R, U, NW>(dts, red[it], m, m1, s, mode);
        }
    }
    if (dB && ok)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int q = 0; q < R / 4; q++)
                atomic_add4(dB + (n + j) * R + 4 * q, make_float4(s * acc[j][4 * q], s * acc[j][4 * q + 1],
                                                                  s * acc[j][4 * q + 2], s * acc[j][4 * q + 3]));
}

/* ---- launchers ------------------------------------------------------------------------------------------------ */

/* Rows per block for `cols` column blocks: about `per_sm` blocks an SM in all, a multiple of U. */
static int rows_per_block(const lmx_cuda_ctx *c, int64_t M, int64_t cols, int per_sm, int U) {
    int64_t groups = (int64_t)c->n_sm * per_sm / cols;
    if (groups < 1) groups = 1;
    int64_t rpb = (M + groups - 1) / groups;
    rpb = (rpb + U - 1) / U * U;
    return (int)(rpb < U ? U : rpb);
}

int cuda_lora_fwd_off(void) {
    static int off = -1;
    if (off < 0) off = env_sgemm("LMX_CUDA_LORA_FWD");
    return off;
}

int cuda_lora_vjp_off(void) {
    static int off = -1;
    if (off < 0) off = env_sgemm("LMX_CUDA_LORA_VJP");
    return off;
}

template <int R>
static lmx_status fwd_a_r(lmx_cuda_ctx *c, float *out, const float *x, const float *A, int64_t M, int64_t K,
                          int64_t xs) {
    constexpr int U = R == 8 ? 4 : 2;
    int64_t kb = (K + FA_NT * 4 - 1) / (FA_NT * 4);
    int mode = kb > 1 ? 2 : 0;
    if (mode == 2) LMX_TRY(cuda_check(cudaMemsetAsync(out, 0, (size_t)(M * R) * sizeof(float), c->stream), "lora t = 0"));
    int rpb = rows_per_block(c, M, kb, 1, U);
    dim3 grid((unsigned)kb, (unsigned)((M + rpb - 1) / rpb));
    lr_fwd_a_k<R, U><<<grid, FA_NT, 0, c->stream>>>(out, x, A, M, K, xs, rpb, mode);
    return cuda_launched("lora: t = x·Aᵀ");
}

lmx_status cuda_lora_fwd_a(lmx_cuda_ctx *c, const lmx_node *n, int64_t M, int64_t N, int64_t K, int64_t xs,
                           int64_t os, bool *done) {
    const lmx_array *x = n->src[0], *w = n->src[1];
    *done = false;
    if (cuda_lora_fwd_off() || w->dtype != LMX_F32 || n->src[2] || (N != 8 && N != 16) || M <= 8 || K % 4 ||
        xs % 4 || os != N || !lmx_array_is_contiguous(w) || !al16(x->data) || !al16(w->data) ||
        !al16(n->out->data))
        return LMX_OK;
    *done = true;
    float *out = (float *)n->out->data;
    const float *xd = (const float *)x->data, *A = (const float *)w->data;
    return N == 8 ? fwd_a_r<8>(c, out, xd, A, M, K, xs) : fwd_a_r<16>(c, out, xd, A, M, K, xs);
}

lmx_status cuda_lora_fwd_acc(lmx_cuda_ctx *c, const lmx_node *n, int64_t M, int64_t N, int64_t K, int64_t xs,
                             int64_t os, bool *done) {
    const lmx_array *x = n->src[0], *w = n->src[1];
    *done = false;
    if (cuda_lora_fwd_off() || (K != 8 && K != 16) || xs != K || N % 4 || os % 4 || !lmx_array_is_contiguous(w) ||
        !al16(x->data) || !al16(w->data) || !al16(n->out->data))
        return LMX_OK;
    *done = true;
    float *out = (float *)n->out->data;
    const float *ts = (const float *)x->data, *B = (const float *)w->data;
    int64_t nb = (N + FB_NT * 4 - 1) / (FB_NT * 4);
    int rpb = rows_per_block(c, M, nb, 4, 4);
    dim3 grid((unsigned)nb, (unsigned)((M + rpb - 1) / rpb));
    if (K == 8)
        lr_fwd_acc_k<8, 4><<<grid, FB_NT, 0, c->stream>>>(out, ts, B, M, N, os, rpb, n->fp[0]);
    else
        lr_fwd_acc_k<16, 4><<<grid, FB_NT, 0, c->stream>>>(out, ts, B, M, N, os, rpb, n->fp[0]);
    return cuda_launched("lora: out += s·ts·Bᵀ");
}

template <int R>
static lmx_status vjp_r(lmx_cuda_ctx *c, const lmx_node *n, const float *g, float *d0, float *d1, int64_t M,
                        int64_t N, int64_t K, int64_t xs, float s, bool overwrite) {
    constexpr int U = 4;
    const float *x = (const float *)n->src[0]->data, *w = (const float *)n->src[1]->data;
    if (N == R) { /* x·Aᵀ, A [R, K]: one pass over x and dx */
        int64_t kb = (K + FB_NT * 4 - 1) / (FB_NT * 4);
        int rpb = rows_per_block(c, M, kb, 1, U);
        dim3 grid((unsigned)kb, (unsigned)((M + rpb - 1) / rpb));
        lr_vjp_a_k<R, U><<<grid, FB_NT, 0, c->stream>>>(d0, d1, g, x, w, M, K, xs, rpb, s, overwrite);
        return cuda_launched("lora vjp: dx, dA");
    }
    /* ts·Bᵀ, B [N, R]: one pass over dout */
    int64_t nb = (N + FB_NT * 4 - 1) / (FB_NT * 4);
    int mode = nb > 1 ? 2 : overwrite ? 0 : 1;
    if (d0 && overwrite && nb > 1)
        LMX_TRY(cuda_check(cudaMemsetAsync(d0, 0, (size_t)(M * R) * sizeof(float), c->stream), "lora dts = 0"));
    int rpb = rows_per_block(c, M, nb, 2, U);
    dim3 grid((unsigned)nb, (unsigned)((M + rpb - 1) / rpb));
    lr_vjp_b_k<R, U><<<grid, FB_NT, 0, c->stream>>>(d0, d1, g, x, w, M, N, rpb, s, mode);
    return cuda_launched("lora vjp: dts, dB");
}

lmx_status cuda_lora_vjp(lmx_cuda_ctx *c, const lmx_node *n, const float *g, lmx_array *dsrc[], int64_t M,
                         int64_t N, int64_t K, int64_t xs, bool overwrite, bool *done) {
    const lmx_array *x = n->src[0], *w = n->src[1];
    *done = false;
    bool a = N == 8 || N == 16, b = K == 8 || K == 16;
    if (cuda_lora_vjp_off() || w->dtype != LMX_F32 || dsrc[2] || !lmx_array_is_contiguous(w) || a == b ||
        !al16(w->data) || !al16(g) || !al16(x->data) || (dsrc[0] && !al16(dsrc[0]->data)) ||
        (dsrc[1] && !al16(dsrc[1]->data)))
        return LMX_OK;
    if (a ? K % 4 || xs % 4 : N % 4 || xs != K) return LMX_OK;
    *done = true;
    if (!dsrc[0] && !dsrc[1]) return LMX_OK;
    float s = n->op == LMX_OP_MATMUL_ACC ? n->fp[0] : 1.0f;
    float *d0 = dsrc[0] ? (float *)dsrc[0]->data : NULL, *d1 = dsrc[1] ? (float *)dsrc[1]->data : NULL;
    int64_t r = a ? N : K;
    return r == 8 ? vjp_r<8>(c, n, g, d0, d1, M, N, K, xs, s, overwrite)
                  : vjp_r<16>(c, n, g, d0, d1, M, N, K, xs, s, overwrite);
}
