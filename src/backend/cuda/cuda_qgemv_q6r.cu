/* cuda_qgemv_q6r.cu - GGUF Q6_K in a device row layout of 16-byte aligned
 * planes, and the decode GEMVs that read it.
 *
 * Why: a Q6_K super-block is 210 bytes (ql[128], qh[64], int8 scales[16],
 * f16 d), so blocks are only 2-byte aligned and the file-layout kernel
 * (cuda_qgemv_gguf.cu) reads them as 11 16-bit loads a lane per 16 weights:
 * ~1.9 TB/s on the lm_heads of the llama-quantize Q4_0 GGUFs (which keep
 * output.weight / the tied token_embd in Q6_K), against ~4 TB/s (H200) for
 * the repacked Q4_0 GEMV (cuda_qgemv_q4r.cu, bench/cuda-notes.md).
 *
 * Layout ("repacked"; policy as Q4_0's: by default when the backend's decode
 * takes int8 x, LMX_CUDA_Q6_REPACK=0 never, =1 always; the registry and the
 * relayout / download entry points are shared with Q4_0 in
 * cuda_qgemv_q4r.cu). A row of K weights (nb = K/256 super-blocks) keeps its
 * 210·nb bytes and its offset, but holds
 *   bytes [0, 128·nb)        every block's ql[128], in block order
 *   bytes [128·nb, 192·nb)   every block's qh[64]
 *   bytes [192·nb, 208·nb)   every block's int8 scales[16]
 *   bytes [208·nb, 210·nb)   every block's f16 d
 * each block's bytes as in the file. Only K % 2048 == 0 is repacked (both
 * lm_heads): rows are then multiples of 1680 = 105·16 bytes and every plane
 * and every block's ql / qh run is 16-byte aligned. Row-local and
 * size-preserving like Q4_0's: row views stay valid, the download restores
 * the file layout (cut rows fetched whole). Every CUDA consumer of Q6_K goes
 * through cuda_qw_of (qw.r6): the GEMVs below, the prefill dequantizer and
 * get_rows (q6r_piece in cuda_quant.cuh: QDec<Q6_K>'s arithmetic).
 *
 * In ggml's Q6_K, within half n (0, 1) of a block, ql byte j (0..63) holds
 * element n·128 + j (low nibble) and n·128 + 64 + j (high), and qh byte l
 * (0..31) holds the top 2 bits of elements n·128 + 32k + l in bits 2k, 2k+1.
 * So one 16-byte run of qh (l = l0..l0+15, l0 = 0 or 16) with the two
 * 16-byte runs of ql at j = l0 and j = 32 + l0 gives 64 weights: the runs
 * n·128 + 32k + l0 .. +15 for k = 0..3, each a whole 16-weight sub-block
 * (scale n·8 + 2k + l0/16) and half of an int8 x block of 32.
 *
 * GEMV with int8 x (M = 1): a lane takes one such unit (u = 2n + l0/16) of
 * one block of a row: three 16-byte weight loads, the 8 scale bytes of its
 * half, the f16 d; 4 lanes cover a block, a warp 8 blocks (2048 weights) a
 * round, R rows a warp (3R 16-byte loads in flight a lane). x is quantized
 * exactly as the CPU's lmx_xq (xq_lane) with, per half block of 16, 32·Σq
 * (the -32 offset of the 6-bit values), so a sub-block's dot is
 * Σ q6·xq - 32·Σxq in integers (4 dp4a); then d·sc·dx per sub-block in f32.
 * Launched with programmatic dependent launch as the Q4_0 GEMV: the first
 * round's weight loads overlap the x quantizer. M = 2..8 or f32 x: the same
 * lanes with f32 x (exact q - 32 by the 2^23 trick, f32 products). */
#include "backend/cuda/cuda_quant.cuh"

#include <stdlib.h>
#include <string.h>

#define Q6R_WARPS 8

/* ---- repack (device, in place, one CTA a row) and its host inverse --------- */

/* File-layout offset of byte o of a repacked row of nb blocks. */
__device__ __forceinline__ int64_t q6r_src(int64_t o, int64_t nb) {
    if (o < 128 * nb) return 210 * (o >> 7) + (o & 127);
    o -= 128 * nb;
    if (o < 64 * nb) return 210 * (o >> 6) + 128 + (o & 63);
    o -= 64 * nb;
    if (o < 16 * nb) return 210 * (o >> 4) + 192 + (o & 15);
    o -= 16 * nb;
    return 210 * (o >> 1) + 208 + (o & 1);
}

__global__ void q6r_repack_k(uint8_t *w, int64_t rows, int64_t nb) {
    extern __shared__ uint4 q6r_sm[];
    int64_t rb = nb * 210, nv = rb / 16;
    const uint8_t *s = reinterpret_cast<const uint8_t *>(q6r_sm);
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        uint4 *g = reinterpret_cast<uint4 *>(w + row * rb);
        for (int64_t i = threadIdx.x; i < nv; i += blockDim.x) q6r_sm[i] = g[i];
        __syncthreads();
        for (int64_t i = threadIdx.x; i < nv; i += blockDim.x) {
            union {
                uint8_t b[16];
                uint4 v;
            } o;
            for (int k = 0; k < 16; k++) o.b[k] = s[q6r_src(16 * i + k, nb)];
            g[i] = o.v;
        }
        __syncthreads();
    }
}

lmx_status cuda_q6r_repack(lmx_cuda_ctx *c, uint8_t *w, int64_t rows, int64_t nb) {
    size_t rb = (size_t)nb * 210; /* <= 48 KB: the caller checks */
    unsigned g = (unsigned)(rows < 4 * (int64_t)c->n_sm ? rows : 4 * (int64_t)c->n_sm);
    q6r_repack_k<<<g, 256, rb, c->stream>>>(w, rows, nb);
    return cuda_launched("q6_K repack");
}

void cuda_q6r_unpack_row(uint8_t *out, const uint8_t *in, size_t nb) {
    for (size_t b = 0; b < nb; b++) {
        memcpy(out + 210 * b, in + 128 * b, 128);
        memcpy(out + 210 * b + 128, in + 128 * nb + 64 * b, 64);
        memcpy(out + 210 * b + 192, in + 192 * nb + 16 * b, 16);
        memcpy(out + 210 * b + 208, in + 208 * nb + 2 * b, 2);
    }
}

/* ---- int8-x GEMV (M = 1) ------------------------------------------------- */

/* One warp per x block of 32: q (lmx_xq's, natural order) and, per half of
 * 16, m[2b + h] = {bits of d_b, 32·Σq over the half}. */
__global__ void q6r_quantize_k(const float *__restrict__ x, int8_t *__restrict__ q, int2 *__restrict__ m, int64_t nb) {
    asm volatile("griddepcontrol.launch_dependents;"); /* the GEMV may start loading weights */
    int lane = threadIdx.x & 31;
    int64_t b = (int64_t)blockIdx.x * Q6R_WARPS + (threadIdx.x >> 5);
    if (b >= nb) return; /* whole warps leave together */
    float v = x[b * 32 + lane];
    float db;
    int qv = xq_lane(v, &db);
    q[b * 32 + lane] = (int8_t)qv;
    int sum = qv;
#pragma unroll
    for (int o = 8; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o); /* within each 16-lane half */
    if ((lane & 15) == 0) m[2 * b + (lane >> 4)] = make_int2(__float_as_int(db), 32 * sum);
}

/* A lane's unit u (n = u/2, l0 = 16·(u&1)) of block blk in R rows: ql runs
 * j = l0 (qa) and 32 + l0 (qb), qh run l0 (qh), scale bytes n·8..n·8+7, d. */
template <int R>
__device__ __forceinline__ void q6r_load(const uint8_t *const *wr, int nb, int blk, int u, uint4 *qa, uint4 *qb,
                                         uint4 *qh, uint2 *sc, unsigned short *dh) {
    /* 32-bit offsets: a repacked row is at most 48 KB (cuda_q4r_relayout) */
    int oa = 128 * blk + 64 * (u >> 1) + 16 * (u & 1), oh = 128 * nb + 64 * blk + 32 * (u >> 1) + 16 * (u & 1);
    int os = 192 * nb + 16 * blk + 8 * (u >> 1), od = 208 * nb + 2 * blk;
#pragma unroll
    for (int r = 0; r < R; r++) {
        qa[r] = ld_stream(reinterpret_cast<const uint4 *>(wr[r] + oa));
        qb[r] = ld_stream(reinterpret_cast<const uint4 *>(wr[r] + oa + 32));
        qh[r] = ld_stream(reinterpret_cast<const uint4 *>(wr[r] + oh));
        sc[r] = __ldg(reinterpret_cast<const uint2 *>(wr[r] + os));
        dh[r] = __ldg(reinterpret_cast<const unsigned short *>(wr[r] + od));
    }
}

/* The 6-bit values (0..63, one a byte) of run k of a unit from its ql word
 * a (run 0/2) or b (run 1/3) and qh word h. */
__device__ __forceinline__ uint32_t q6r_word(uint32_t a, uint32_t b, uint32_t h, int k) {
    const uint32_t M4 = 0x0F0F0F0Fu, M30 = 0x30303030u;
    switch (k) {
    case 0: return (a & M4) | ((h << 4) & M30);
    case 1: return (b & M4) | ((h << 2) & M30);
    case 2: return ((a >> 4) & M4) | (h & M30);
    default: return ((b >> 4) & M4) | ((h >> 2) & M30);
    }
}

/* Σ q6·x over run k (16 weights, 4 words) with int8 x xv. */
__device__ __forceinline__ int q6r_dot(uint4 a, uint4 b, uint4 h, int k, int4 xv) {
    int d = __dp4a((int)q6r_word(a.x, b.x, h.x, k), xv.x, 0);
    d = __dp4a((int)q6r_word(a.y, b.y, h.y, k), xv.y, d);
    d = __dp4a((int)q6r_word(a.z, b.z, h.z, k), xv.z, d);
    return __dp4a((int)q6r_word(a.w, b.w, h.w, k), xv.w, d);
}

template <int R>
__device__ __forceinline__ void q6r_math(const uint4 *qa, const uint4 *qb, const uint4 *qh, const uint2 *sc,
                                         const unsigned short *dh, const int8_t *__restrict__ xq,
                                         const int2 *__restrict__ xm, int blk, int u, float *acc) {
    int n = u >> 1, hh = u & 1, sh = 8 * hh;
    const int4 *xp = reinterpret_cast<const int4 *>(xq + 256 * blk + 128 * n + 16 * hh);
    const int2 *mp = xm + 2 * (8 * blk + 4 * n) + hh;
    float v[R];
#pragma unroll
    for (int k = 0; k < 4; k++) { /* run k: x block 8·blk + 4n + k, half hh; scale n·8 + 2k + hh */
        int4 x = __ldg(xp + 2 * k);
        int2 m = __ldg(mp + 2 * k);
        float dx = __int_as_float(m.x);
#pragma unroll
        for (int r = 0; r < R; r++) {
            int s = (int)(int8_t)((k < 2 ? sc[r].x : sc[r].y) >> (sh + 16 * (k & 1)));
            float t = (float)(s * (q6r_dot(qa[r], qb[r], qh[r], k, x) - m.y)); /* |.| < 2^24: exact */
            v[r] = k ? fmaf(dx, t, v[r]) : dx * t;
        }
    }
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = fmaf(__half2float(__ushort_as_half(dh[r])), v[r], acc[r]);
}

/* R rows a warp; S warps of a CTA split K (nb/8 rounds) for short matrices.
 * Registers capped so that 3 (R = 2) or 2 (R = 4) CTAs share an SM: at
 * K = 2048 a warp has one round, so the next CTA's loads must overlap this
 * one's reduction (uncapped, R = 4 took 140 registers: 1 CTA an SM). */
template <int R>
__global__ void __launch_bounds__(Q6R_WARPS * 32, R == 2 ? 3 : R == 4 ? 2 : 1)
    gemv_q6r_k(float *__restrict__ out, const int8_t *__restrict__ xq, const int2 *__restrict__ xm,
               const uint8_t *__restrict__ w, size_t row_bytes, int64_t N, int64_t nb, const void *bias, int bdt,
               int S) {
    __shared__ float red[Q6R_WARPS][R];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, u = lane & 3;
    int64_t row0 = ((int64_t)blockIdx.x * (Q6R_WARPS / S) + warp / S) * R;
    int ks = warp % S;
    int nrd = (int)(nb / 8), r0 = nrd * ks / S, r1 = nrd * (ks + 1) / S;
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = 0.0f;
    bool live = row0 < N && r0 < r1;
    const uint8_t *wr[R];
    uint4 qa[R], qb[R], qh[R];
    uint2 sc[R];
    unsigned short dh[R];
    int blk = r0 * 8 + (lane >> 2);
    if (live) {
#pragma unroll
        for (int r = 0; r < R; r++) /* rows past N read row N-1 (their sums are not written) */
            wr[r] = w + (size_t)(row0 + r < N ? row0 + r : N - 1) * row_bytes;
        q6r_load<R>(wr, (int)nb, blk, u, qa, qb, qh, sc, dh);
    }
    asm volatile("griddepcontrol.wait;" ::: "memory");
    if (live) {
        q6r_math<R>(qa, qb, qh, sc, dh, xq, xm, blk, u, acc);
#pragma unroll 2
        for (int rd = r0 + 1; rd < r1; rd++) {
            blk = rd * 8 + (lane >> 2);
            q6r_load<R>(wr, (int)nb, blk, u, qa, qb, qh, sc, dh);
            q6r_math<R>(qa, qb, qh, sc, dh, xq, xm, blk, u, acc);
        }
    }
    qg_finish<R>(red, acc, out, bias, bdt, N, row0, S);
}

template <int R>
static lmx_status q6r_launch(lmx_cuda_ctx *c, const cuda_qw *qw, float *out, const int8_t *xq, const int2 *xm,
                             const void *bias, int bdt) {
    int64_t N = qw->N, nb = qw->K / 256, groups = (N + R - 1) / R;
    int S = qr_split(c, Q6R_WARPS, groups, nb / 8);
    unsigned grid = (unsigned)((groups + Q6R_WARPS / S - 1) / (Q6R_WARPS / S));
    return cuda_launch_pdl(c, gemv_q6r_k<R>, grid, Q6R_WARPS * 32, 0, "q6_K gemv", out, xq, xm, qw->w, qw->row_bytes,
                           N, nb, bias, bdt, S);
}

/* ---- f32-x GEMV (M <= 8: batched decode, speculative verify; LMX_INT8_ACT=0) ---
 * The same lane units; per run k and x row m, 16 f32 x (four float4 when
 * XV, else scalar loads) dot the exact q - 32, then one multiply by d·sc
 * (exact in f32, as the file-layout kernel's). R rows a warp share x. */
template <bool XV> __device__ __forceinline__ void q6r_x16(const float *p, float4 *v) {
#pragma unroll
    for (int i = 0; i < 4; i++)
        v[i] = XV ? __ldg(reinterpret_cast<const float4 *>(p) + i)
                  : make_float4(__ldg(p + 4 * i), __ldg(p + 4 * i + 1), __ldg(p + 4 * i + 2), __ldg(p + 4 * i + 3));
}

__device__ __forceinline__ float q6r_fdot4(float4 xv, uint32_t q, float s) {
    s = fmaf(xv.x, q_byte_f(q, 0, 32.0f), s);
    s = fmaf(xv.y, q_byte_f(q, 1, 32.0f), s);
    s = fmaf(xv.z, q_byte_f(q, 2, 32.0f), s);
    return fmaf(xv.w, q_byte_f(q, 3, 32.0f), s);
}

template <int MR, int R, bool XV>
__global__ void __launch_bounds__(Q6R_WARPS * 32)
    gemv_q6r_f32_k(float *__restrict__ out, const float *__restrict__ x, const uint8_t *__restrict__ w,
                   size_t row_bytes, int64_t N, int64_t nb, int M, int64_t xs, int64_t os, const void *bias, int bdt) {
    int lane = threadIdx.x & 31, u = lane & 3, n = u >> 1, sh = 8 * (u & 1);
    int64_t row0 = ((int64_t)blockIdx.x * Q6R_WARPS + (threadIdx.x >> 5)) * R;
    if (row0 >= N) return; /* whole warps */
    const uint8_t *wr[R];
#pragma unroll
    for (int r = 0; r < R; r++) wr[r] = w + (size_t)(row0 + r < N ? row0 + r : N - 1) * row_bytes;
    float acc[R * MR];
#pragma unroll
    for (int i = 0; i < R * MR; i++) acc[i] = 0.0f;
    for (int blk = lane >> 2; blk < nb; blk += 8) {
        uint4 qa[R], qb[R], qh[R];
        uint2 sc[R];
        unsigned short dh[R];
        q6r_load<R>(wr, (int)nb, blk, u, qa, qb, qh, sc, dh);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            float ds[R];
#pragma unroll
            for (int r = 0; r < R; r++) {
                uint32_t sw = k < 2 ? sc[r].x : sc[r].y;
                ds[r] = __half2float(__ushort_as_half(dh[r])) * (float)(int8_t)(sw >> (sh + 16 * (k & 1)));
            }
#pragma unroll
            for (int m = 0; m < MR; m++) {
                if (m >= M) break;
                float4 xv[4];
                q6r_x16<XV>(x + m * xs + 256 * blk + 128 * n + 32 * k + (sh << 1), xv);
#pragma unroll
                for (int r = 0; r < R; r++) {
                    float s = q6r_fdot4(xv[0], q6r_word(qa[r].x, qb[r].x, qh[r].x, k), 0.0f);
                    s = q6r_fdot4(xv[1], q6r_word(qa[r].y, qb[r].y, qh[r].y, k), s);
                    s = q6r_fdot4(xv[2], q6r_word(qa[r].z, qb[r].z, qh[r].z, k), s);
                    s = q6r_fdot4(xv[3], q6r_word(qa[r].w, qb[r].w, qh[r].w, k), s);
                    acc[r * MR + m] = fmaf(ds[r], s, acc[r * MR + m]);
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < R; r++) {
        float bv = bias && row0 + r < N ? ld_any(bias, bdt, row0 + r) : 0.0f;
#pragma unroll
        for (int m = 0; m < MR; m++) {
            if (m >= M) break;
            float sum = warp_sum(acc[r * MR + m]);
            if (lane == 0 && row0 + r < N) out[m * os + row0 + r] = sum + bv;
        }
    }
}

template <int MR, bool XV>
static void q6r_f32_launch(lmx_cuda_ctx *c, const cuda_qw *qw, float *out, const float *x, int M, int64_t xs,
                           int64_t os, const void *bias, int bdt) {
    constexpr int R = 2;
    unsigned g = (unsigned)((qw->N + R * Q6R_WARPS - 1) / (R * Q6R_WARPS));
    gemv_q6r_f32_k<MR, R, XV><<<g, Q6R_WARPS * 32, 0, c->stream>>>(out, x, qw->w, qw->row_bytes, qw->N, qw->K / 256,
                                                                    M, xs, os, bias, bdt);
}

/* ---- entry ------------------------------------------------------------------- */

lmx_status cuda_gemv_q6r(lmx_cuda_ctx *c, const cuda_qw *qw, float *out, const float *x, int M, int64_t xs,
                         int64_t os, const void *bias, int bdt) {
    int64_t K = qw->K, nx = K / 32;
    if (M == 1 && c->int8_act && !c->qgemv_old) {
        size_t qbytes = (size_t)K; /* K % 2048 == 0: the sums stay 16-byte aligned */
        void *scr;
        LMX_TRY(cuda_scratch(c, qbytes + (size_t)nx * 2 * sizeof(int2), &scr));
        int8_t *xq = (int8_t *)scr;
        int2 *xm = (int2 *)((char *)scr + qbytes);
        q6r_quantize_k<<<(unsigned)((nx + Q6R_WARPS - 1) / Q6R_WARPS), Q6R_WARPS * 32, 0, c->stream>>>(x, xq, xm, nx);
        LMX_TRY(cuda_launched("q6_K gemv: quantize x"));
        int R = c->qgemv_rows ? c->qgemv_rows : 4;
        if (R == 8) return q6r_launch<8>(c, qw, out, xq, xm, bias, bdt);
        if (R == 2) return q6r_launch<2>(c, qw, out, xq, xm, bias, bdt);
        return q6r_launch<4>(c, qw, out, xq, xm, bias, bdt);
    }
    bool xvec = ((uintptr_t)x & 15) == 0 && (M == 1 || xs % 4 == 0);
    if (M == 1)
        xvec ? q6r_f32_launch<1, true>(c, qw, out, x, M, xs, os, bias, bdt)
             : q6r_f32_launch<1, false>(c, qw, out, x, M, xs, os, bias, bdt);
    else if (M <= 4)
        xvec ? q6r_f32_launch<4, true>(c, qw, out, x, M, xs, os, bias, bdt)
             : q6r_f32_launch<4, false>(c, qw, out, x, M, xs, os, bias, bdt);
    else
        xvec ? q6r_f32_launch<8, true>(c, qw, out, x, M, xs, os, bias, bdt)
             : q6r_f32_launch<8, false>(c, qw, out, x, M, xs, os, bias, bdt);
    return LMX_OK;
}
