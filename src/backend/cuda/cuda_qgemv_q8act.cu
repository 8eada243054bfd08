/* cuda_qgemv_q8act.cu - decode GEMV (M = 1) from GGUF Q4_0 / Q8_0 with x
 * quantized to int8 blocks of 32 and integer dot products (__dp4a).
 *
 * Why: the f32 lane-mapped kernels (cuda_qgemv_gguf.cu) spend ~3.4
 * instructions a 4-bit weight (nibble -> exact float, f32 FMA) and stop at
 * 1.5-1.7 TB/s on the 8B layer shapes (bench/cuda-notes.md, "Decode kernels
 * v4"). With x as int8, one dp4a takes 4 weights: ~1.5 instructions a weight.
 *
 * x format: exactly the CPU's lmx_xq (src/backend/cpu/cpu_qdot.c, which
 * documents it and its error bound): per block b of 32, amax = max|x|,
 * d_b = fl(amax / 127), id = fl(127 / amax) (0 when amax = 0),
 * q = rne(fl(x·id)); a block with a NaN/Inf gets d = NaN, q = 0. The same f32
 * operations (IEEE division and multiply, no contraction) give the same q and
 * d as the CPU, so the integer block dots are exact and equal; only the f32
 * summation order differs. Quantizing costs one small kernel per matvec; x
 * goes to the context's scratch (no allocation, no host sync: capture-safe).
 *
 * Lanes as in cuda_qgemv_gguf.cu: 4 lanes a block, 8 blocks a warp round.
 * - Q4_0 (18 bytes: f16 d, 16 bytes, byte b = weights b, b+16): lane j takes
 *   bytes 4j..4j+3 -> nibbles 4j.. (low) and 16+4j.. (high); dot =
 *   dp4a(lo, xq[4j..]) + dp4a(hi, xq[16+4j..]) - 8·Σ those xq.
 * - Q8_0 (34 bytes: f16 d, 32 int8): lane j takes bytes 8j..8j+7.
 * Blocks are 2-byte aligned, so weights come as 16-bit loads (the block's
 * other lanes hit the same L1 sectors). The f32 part per lane and block:
 * acc = fma(dw·dx, (float)dot, acc); warps then reduce by shuffles. */
#include "backend/cuda/cuda_quant.cuh"

#define Q8A_WARPS 8


/* One warp per block of 32: q[32b + lane], d[b] (lmx_xq's q and d). */
__global__ void q8a_quantize_k(const float *__restrict__ x, int8_t *__restrict__ q, float *__restrict__ d,
                               int64_t nb) {
    int lane = threadIdx.x & 31;
    int64_t b = (int64_t)blockIdx.x * Q8A_WARPS + (threadIdx.x >> 5);
    if (b >= nb) return; /* whole warps leave together */
    float v = x[b * 32 + lane];
    float db;
    int qv = xq_lane(v, &db);
    q[b * 32 + lane] = (int8_t)qv;
    if (lane == 0) d[b] = db;
}


/* Q8 = false: Q4_0, true: Q8_0. S warps of a block split K of one row group. */
template <int R, bool Q8>
__global__ void __launch_bounds__(Q8A_WARPS * 32, 3)
    gemv_q8a_k(float *__restrict__ out, const int8_t *__restrict__ xq, const float *__restrict__ xd,
               const uint8_t *__restrict__ w, size_t row_bytes, int64_t N, int64_t K, const void *bias, int bdt,
               int S) {
    constexpr int BB = Q8 ? 34 : 18;
    __shared__ float red[Q8A_WARPS][R];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, j = lane & 3;
    int64_t row0 = ((int64_t)blockIdx.x * (Q8A_WARPS / S) + warp / S) * R;
    int ks = warp % S;
    int64_t nb = K / 32, nrd = (nb + 7) / 8, r0 = nrd * ks / S, r1 = nrd * (ks + 1) / S;
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = 0.0f;
    if (row0 < N) {
        const uint8_t *wr[R]; /* rows past N read row N-1 (their sums are not written) */
#pragma unroll
        for (int r = 0; r < R; r++)
            wr[r] = w + (size_t)(row0 + r < N ? row0 + r : N - 1) * row_bytes + 2 + (Q8 ? 8 : 4) * j;
#pragma unroll 2
        for (int64_t rd = r0; rd < r1; rd++) {
            int64_t blk = rd * 8 + (lane >> 2);
            bool ok = blk < nb; /* the last round of a K that is not a multiple of 256 */
            if (!ok) blk = nb - 1;
            float dx = ok ? __ldg(xd + blk) : 0.0f;
            int xa, xb, off = 0;
            if constexpr (Q8) {
                int2 v = __ldg(reinterpret_cast<const int2 *>(xq + blk * 32 + 8 * j));
                xa = v.x, xb = v.y;
            } else {
                xa = __ldg(reinterpret_cast<const int *>(xq + blk * 32 + 4 * j));
                xb = __ldg(reinterpret_cast<const int *>(xq + blk * 32 + 16 + 4 * j));
                off = __dp4a(0x08080808, xa, __dp4a(0x08080808, xb, 0)); /* 8·Σ xq of this lane */
            }
            uint32_t dh[R], wa[R], wb[R];
#pragma unroll
            for (int r = 0; r < R; r++) {
                const uint8_t *p = wr[r] + blk * BB;
                dh[r] = qg_u16(p - 2 - (Q8 ? 8 : 4) * j);
                wa[r] = qg_u16(p) | qg_u16(p + 2) << 16;
                if constexpr (Q8) wb[r] = qg_u16(p + 4) | qg_u16(p + 6) << 16;
                else wb[r] = 0;
            }
#pragma unroll
            for (int r = 0; r < R; r++) {
                int dot;
                if constexpr (Q8) {
                    dot = __dp4a((int)wa[r], xa, __dp4a((int)wb[r], xb, 0));
                } else {
                    int lo = (int)(wa[r] & 0x0F0F0F0Fu), hi = (int)((wa[r] >> 4) & 0x0F0F0F0Fu);
                    dot = __dp4a(lo, xa, __dp4a(hi, xb, -off));
                }
                float d = __half2float(__ushort_as_half((unsigned short)dh[r])) * dx;
                acc[r] = fmaf(d, (float)dot, acc[r]);
            }
        }
    }
    qg_finish<R>(red, acc, out, bias, bdt, N, row0, S);
}

/* Warps per row group: split K until about 32 warps of work per SM, each
 * warp keeping at least 2 rounds (as cuda_qgemv_gguf.cu). */
static int q8a_split(const lmx_cuda_ctx *c, int64_t groups, int64_t rounds) {
    int S = 1;
    while (S < Q8A_WARPS && groups * S < 32 * (int64_t)c->n_sm && rounds / (2 * S) >= 2) S *= 2;
    return S;
}

template <int R, bool Q8>
static void q8a_launch(lmx_cuda_ctx *c, const cuda_qw *qw, float *out, const int8_t *xq, const float *xd,
                       const void *bias, int bdt) {
    int64_t N = qw->N, groups = (N + R - 1) / R, rounds = (qw->K / 32 + 7) / 8;
    int S = q8a_split(c, groups, rounds);
    dim3 grid((unsigned)((groups + Q8A_WARPS / S - 1) / (Q8A_WARPS / S)));
    gemv_q8a_k<R, Q8><<<grid, Q8A_WARPS * 32, 0, c->stream>>>(out, xq, xd, qw->w, qw->row_bytes, N, qw->K, bias,
                                                              bdt, S);
}

bool cuda_gemv_gguf_q8act(lmx_cuda_ctx *c, const cuda_qw *qw, float *out, const float *x, const void *bias, int bdt,
                          lmx_status *st) {
    *st = LMX_OK;
    if (!c->int8_act || c->qgemv_old || c->qgemv_staged || (qw->dt != LMX_Q4_0 && qw->dt != LMX_Q8_0)) return false;
    if (((uintptr_t)qw->w & 1) || qw->N < 1 || qw->K < 32 || qw->K % 32) return false;
    int64_t K = qw->K, nb = K / 32;
    size_t qbytes = ((size_t)K + 15) & ~(size_t)15;
    void *scr;
    *st = cuda_scratch(c, qbytes + (size_t)nb * sizeof(float), &scr);
    if (*st) return true;
    int8_t *xq = (int8_t *)scr;
    float *xd = (float *)((char *)scr + qbytes);
    q8a_quantize_k<<<(unsigned)((nb + Q8A_WARPS - 1) / Q8A_WARPS), Q8A_WARPS * 32, 0, c->stream>>>(x, xq, xd, nb);
    bool q8 = qw->dt == LMX_Q8_0;
    /* 8 rows a warp only for the lm_head-sized (as the f32 kernels) */
    int R = c->qgemv_rows ? c->qgemv_rows : qw->N >= 16 * 32 * c->n_sm ? 8 : 4;
    if (R == 8) q8 ? q8a_launch<8, true>(c, qw, out, xq, xd, bias, bdt) : q8a_launch<8, false>(c, qw, out, xq, xd, bias, bdt);
    else q8 ? q8a_launch<4, true>(c, qw, out, xq, xd, bias, bdt) : q8a_launch<4, false>(c, qw, out, xq, xd, bias, bdt);
    return true;
}
