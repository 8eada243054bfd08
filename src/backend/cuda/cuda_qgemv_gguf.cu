/* cuda_qgemv_gguf.cu - decode GEMV (M = 1) straight from GGUF Q4_0 and Q6_K
 * blocks, lanes mapped so that x is read coalesced.
 *
 * Why not the staged kernel (cuda_quant_gemv.cu): there a lane decodes one
 * 32-element piece, so its x slice is 128 contiguous bytes and a warp's
 * 16-byte x load touches 32 cache lines; 8 such loads per piece, re-read for
 * every row group, cost more L1 wavefronts than the weights cost HBM time
 * (36% of the bandwidth for Q4_0, 31% for Q6_K, bench/cuda-notes.md).
 * Here several lanes share a block and each takes 4 consecutive weights of
 * several runs of it, so one warp's float4 x load covers 8 (Q4_0) or 4
 * (Q6_K) whole 128-byte lines:
 * - Q4_0 (18-byte blocks: f16 d, 16 bytes of nibbles; byte b holds weights b
 *   and b + 16): 4 lanes a block, 8 blocks a warp round; lane j takes bytes
 *   4j..4j+3, i.e. weights 4j..4j+3 (low nibbles) and 16+4j.. (high ones).
 * - Q6_K (210-byte super-blocks of 256: ql[128], qh[64], int8 scales[16],
 *   f16 d): 16 lanes a block, 2 blocks a round; lane (n, l4) takes weights
 *   n·128 + {0,32,64,96} + l4..l4+3 (ggml's dequantize_row_q6_K order),
 *   which share the four scales n·8 + l4/16 + {0,2,4,6}.
 * Blocks are only 2-byte aligned, so weights are read as 16-bit loads that
 * allocate in L1 (the other lanes of the block hit the same sectors); each
 * warp takes R rows, x is loaded once for them, q becomes an exact float by
 * the 2^23 trick (q_byte_f) and a run of 4 (8) weights sharing a scale is
 * dotted with x before one multiply by the scale. Products in f32 with x in
 * f32: the result differs from the CPU reference only in summation order.
 * S warps of a block split K between them for short matrices. Repacked
 * weights never come here: Q4_0 (qw.r4) and Q6_K with K % 2048 == 0 (qw.r6)
 * on int8-x backends have their own 16-byte-load kernels
 * (cuda_qgemv_q4r.cu, cuda_qgemv_q6r.cu). */
#include "backend/cuda/cuda_quant.cuh"

#define QG_WARPS 8

/* Σ x·(q - off) over the 4 bytes of q (exact q - off, f32 products). */
__device__ __forceinline__ float qg_dot4(float4 xv, uint32_t q, float off) {
    float d = xv.x * q_byte_f(q, 0, off);
    d = fmaf(xv.y, q_byte_f(q, 1, off), d);
    d = fmaf(xv.z, q_byte_f(q, 2, off), d);
    return fmaf(xv.w, q_byte_f(q, 3, off), d);
}

/* One warp round of Q4_0: each lane's 3 halfwords of block blk in R rows. */
template <int R>
__device__ __forceinline__ void q40_load(const uint8_t *const *wr, int64_t blk, int j, uint32_t *dh, uint32_t *qa,
                                         uint32_t *qb) {
#pragma unroll
    for (int r = 0; r < R; r++) {
        const uint8_t *p = wr[r] + blk * 18;
        dh[r] = qg_u16(p - 2 - 4 * j);
        qa[r] = qg_u16(p);
        qb[r] = qg_u16(p + 2);
    }
}

/* 3 blocks per SM: up to 80 registers. */
template <int R>
__global__ void __launch_bounds__(QG_WARPS * 32, 3)
    gemv_q4_0_k(float *__restrict__ out, const float *__restrict__ x, const uint8_t *__restrict__ w,
                size_t row_bytes, int64_t N, int64_t K, const void *bias, int bdt, int S) {
    __shared__ float red[QG_WARPS][R];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, j = lane & 3;
    int64_t row0 = ((int64_t)blockIdx.x * (QG_WARPS / S) + warp / S) * R;
    int ks = warp % S;
    int64_t nb = K / 32, nrd = (nb + 7) / 8, r0 = nrd * ks / S, r1 = nrd * (ks + 1) / S;
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = 0.0f;
    if (row0 < N) {
        const uint8_t *wr[R]; /* rows past N read row N-1 (their sums are not written) */
#pragma unroll
        for (int r = 0; r < R; r++) wr[r] = w + (size_t)(row0 + r < N ? row0 + r : N - 1) * row_bytes + 2 + 4 * j;
#pragma unroll 2
        for (int64_t rd = r0; rd < r1; rd++) {
            int64_t blk = rd * 8 + (lane >> 2);
            bool ok = blk < nb; /* the last round of a K that is not a multiple of 256 */
            if (!ok) blk = nb - 1;
            uint32_t dh[R], qa[R], qb[R];
            q40_load<R>(wr, blk, j, dh, qa, qb);
            const float4 *xp = reinterpret_cast<const float4 *>(x + blk * 32 + 4 * j);
            float4 xa = __ldg(xp), xb = __ldg(xp + 4);
#pragma unroll
            for (int r = 0; r < R; r++) {
                uint32_t qs = qa[r] | qb[r] << 16, lo = qs & 0x0F0F0F0Fu, hi = (qs >> 4) & 0x0F0F0F0Fu;
                float dot = qg_dot4(xa, lo, 8.0f) + qg_dot4(xb, hi, 8.0f);
                float d = ok ? __half2float(__ushort_as_half((unsigned short)dh[r])) : 0.0f;
                acc[r] = fmaf(d, dot, acc[r]);
            }
        }
    }
    qg_finish<R>(red, acc, out, bias, bdt, N, row0, S);
}

template <int R>
__global__ void __launch_bounds__(QG_WARPS * 32, 3)
    gemv_q6_k_k(float *__restrict__ out, const float *__restrict__ x, const uint8_t *__restrict__ w,
                size_t row_bytes, int64_t N, int64_t K, const void *bias, int bdt, int S) {
    __shared__ float red[QG_WARPS][R];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int n = (lane >> 3) & 1, l4 = (lane & 7) * 4, is = l4 >> 4;
    int64_t row0 = ((int64_t)blockIdx.x * (QG_WARPS / S) + warp / S) * R;
    int ks = warp % S;
    int64_t nb = K / 256, nrd = (nb + 1) / 2, r0 = nrd * ks / S, r1 = nrd * (ks + 1) / S;
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = 0.0f;
    if (row0 < N) {
        const uint8_t *wr[R];
#pragma unroll
        for (int r = 0; r < R; r++) wr[r] = w + (size_t)(row0 + r < N ? row0 + r : N - 1) * row_bytes;
        for (int64_t rd = r0; rd < r1; rd++) {
            int64_t blk = rd * 2 + (lane >> 4);
            bool ok = blk < nb;
            if (!ok) blk = nb - 1;
            uint32_t qla[R], qlb[R], qh[R], sc01[R], sc23[R], dh[R];
#pragma unroll
            for (int r = 0; r < R; r++) {
                const uint8_t *p = wr[r] + blk * 210;
                qla[r] = qg_u16(p + n * 64 + l4) | qg_u16(p + n * 64 + l4 + 2) << 16;
                qlb[r] = qg_u16(p + n * 64 + 32 + l4) | qg_u16(p + n * 64 + 32 + l4 + 2) << 16;
                qh[r] = qg_u16(p + 128 + n * 32 + l4) | qg_u16(p + 128 + n * 32 + l4 + 2) << 16;
                /* scales n·8 + is + {0,2,4,6}: byte `is` of each of 4 u16 */
                uint32_t s0 = qg_u16(p + 192 + n * 8), s1 = qg_u16(p + 194 + n * 8);
                uint32_t s2 = qg_u16(p + 196 + n * 8), s3 = qg_u16(p + 198 + n * 8);
                uint32_t sel = 0x40u + 0x11u * (uint32_t)is; /* low byte: run 0's (2's) scale, next: run 1's (3's) */
                sc01[r] = __byte_perm(s0, s1, sel) & 0xFFFFu;
                sc23[r] = __byte_perm(s2, s3, sel) & 0xFFFFu;
                dh[r] = qg_u16(p + 208);
            }
            const float *xb = x + blk * 256 + n * 128 + l4;
            const float4 *x4 = reinterpret_cast<const float4 *>(xb);
            float4 x0 = __ldg(x4), x1 = __ldg(x4 + 8), x2 = __ldg(x4 + 16), x3 = __ldg(x4 + 24); /* +32, 64, 96 floats */
#pragma unroll
            for (int r = 0; r < R; r++) {
                uint32_t a = qla[r], b = qlb[r], h = qh[r];
                uint32_t q0 = (a & 0x0F0F0F0Fu) | ((h << 4) & 0x30303030u);
                uint32_t q1 = (b & 0x0F0F0F0Fu) | ((h << 2) & 0x30303030u);
                uint32_t q2 = ((a >> 4) & 0x0F0F0F0Fu) | (h & 0x30303030u);
                uint32_t q3 = ((b >> 4) & 0x0F0F0F0Fu) | ((h >> 2) & 0x30303030u);
                float d = ok ? __half2float(__ushort_as_half((unsigned short)dh[r])) : 0.0f;
                /* d·sc is exact in f32 (11 × 8 bits), as the host's dl */
                float s0 = d * (float)(int8_t)(sc01[r] & 0xFF), s1 = d * (float)(int8_t)(sc01[r] >> 8);
                float s2 = d * (float)(int8_t)(sc23[r] & 0xFF), s3 = d * (float)(int8_t)(sc23[r] >> 8);
                float v = acc[r];
                v = fmaf(s0, qg_dot4(x0, q0, 32.0f), v);
                v = fmaf(s1, qg_dot4(x1, q1, 32.0f), v);
                v = fmaf(s2, qg_dot4(x2, q2, 32.0f), v);
                acc[r] = fmaf(s3, qg_dot4(x3, q3, 32.0f), v);
            }
        }
    }
    qg_finish<R>(red, acc, out, bias, bdt, N, row0, S);
}

/* Warps per row group: split K until about 32 warps of work per SM, each
 * warp keeping at least 2 rounds. */
static int qg_split(const lmx_cuda_ctx *c, int64_t groups, int64_t rounds) {
    int S = 1;
    while (S < QG_WARPS && groups * S < 32 * (int64_t)c->n_sm && rounds / (2 * S) >= 2) S *= 2;
    return S;
}

/* Q6_K runs at R = 4 only (8 rows spill: 80 registers at 3 blocks per SM). */
template <int R>
static void qg_launch(lmx_cuda_ctx *c, const cuda_qw *qw, float *out, const float *x, const void *bias, int bdt) {
    int64_t N = qw->N, groups = (N + R - 1) / R;
    bool q6 = qw->dt == LMX_Q6_K;
    int64_t rounds = q6 ? (qw->K / 256 + 1) / 2 : (qw->K / 32 + 7) / 8;
    int S = qg_split(c, groups, rounds);
    dim3 grid((unsigned)((groups + QG_WARPS / S - 1) / (QG_WARPS / S)));
    if constexpr (R == 4) {
        if (q6) {
            gemv_q6_k_k<R><<<grid, QG_WARPS * 32, 0, c->stream>>>(out, x, qw->w, qw->row_bytes, N, qw->K, bias, bdt, S);
            return;
        }
    }
    gemv_q4_0_k<R><<<grid, QG_WARPS * 32, 0, c->stream>>>(out, x, qw->w, qw->row_bytes, N, qw->K, bias, bdt, S);
}

bool cuda_gemv_gguf_lanes(lmx_cuda_ctx *c, const cuda_qw *qw, float *out, const float *x, const void *bias, int bdt) {
    if (c->qgemv_old || c->qgemv_staged || (qw->dt != LMX_Q4_0 && qw->dt != LMX_Q6_K)) return false;
    if (((uintptr_t)qw->w & 1) || ((uintptr_t)x & 15) || qw->N < 1) return false;
    /* 8 rows a warp only for the lm_head-sized (equal there, worse below) */
    int R = c->qgemv_rows ? c->qgemv_rows : qw->N >= 16 * 32 * c->n_sm ? 8 : 4;
    if (R == 8 && qw->dt == LMX_Q4_0)
        qg_launch<8>(c, qw, out, x, bias, bdt);
    else
        qg_launch<4>(c, qw, out, x, bias, bdt);
    return true;
}
