/* cuda_qgemv_mlx.cu - decode GEMV (M = 1) for MLX affine 4/8-bit weights with
 * x staged in shared memory.
 *
 * The direct kernel of cuda_quant_gemv.cu (gemv_mlx_k) gives a lane one
 * 16-byte vector of a row, i.e. 32 (4-bit) or 16 (8-bit) consecutive
 * weights, so its x slice is 128 / 64 contiguous bytes and one warp-wide
 * float4 x load touches 32 / 16 cache lines: per row group of R rows and
 * 1024 weights of K, 8 such loads, 256 L1 wavefronts, about as many L1
 * cycles as the HBM needs for the 8 rows' 4 KB (it ran at 36-57% of the
 * bandwidth). Here each block first copies x (K floats, K <= 16384) into
 * shared memory, XOR-swizzled in 16-byte units (unit f of 128-byte line
 * f >> 3 is stored at column (f ^ (f >> 3)) & 7), so the 8 lanes of a
 * quarter-warp, which read the same column of 8 consecutive lines (4-bit) or
 * of 4 lines (8-bit), hit 8 different bank groups: 4 wavefronts a load. The
 * block then walks row groups (grid about 2 blocks per SM, so x is copied
 * once per block, not once per row group). The arithmetic is gemv_mlx_k's
 * factored form: a vector lies in one group, so its dot is s·Σ x·q + b·Σ x,
 * Σ x shared by the R rows, q an exact float by the 2^23 trick. */
#include "backend/cuda/cuda_quant.cuh"

#define QX_WARPS 8
#define QX_MAX_K 16384 /* 64 KB of x */

__device__ __forceinline__ int qx_swz(int f) { return f ^ ((f >> 3) & 7); }

/* Vector i of the R rows at wb (rows >= nr read row nr-1), with its group
 * scales and biases (bb may be NULL). */
template <int R, typename Ts>
__device__ __forceinline__ void qx_load(const uint4 *wb, const Ts *sb, const Ts *bb, int nv, int G, int nr, int i,
                                        int vpg_shift, uint4 *u, float *s, float *b) {
#pragma unroll
    for (int r = 0; r < R; r++) {
        int rr = r < nr ? r : nr - 1;
        u[r] = ld_stream(wb + rr * nv + i);
        s[r] = ldf(sb, rr * G + (i >> vpg_shift));
        b[r] = bb ? ldf(bb, rr * G + (i >> vpg_shift)) : 0.0f;
    }
}

/* 2 blocks per SM: up to 128 registers. */
template <int BITS, typename Ts, int R>
__global__ void __launch_bounds__(QX_WARPS * 32, 2)
    gemv_mlx_sx_k(float *__restrict__ out, const float *__restrict__ x, const uint4 *__restrict__ w,
                  const Ts *__restrict__ sc, const Ts *__restrict__ bi, const void *bias, int bdt, int64_t N, int K,
                  int S, int vpg_shift, int64_t nblocks) {
    constexpr int V = 128 / BITS, WPW = 32 / BITS, F4 = V / 4; /* weights per vector, per word; float4s per vector */
    extern __shared__ float4 xs[];
    __shared__ float red[QX_WARPS][R];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, ks = warp % S;
    const float4 *x4 = reinterpret_cast<const float4 *>(x);
    for (int f = threadIdx.x; f < K / 4; f += QX_WARPS * 32) xs[qx_swz(f)] = __ldg(x4 + f);
    __syncthreads();
    int nv = K / V, v0 = nv * ks / S, v1 = nv * (ks + 1) / S, G = nv >> vpg_shift;
    for (int64_t blk = blockIdx.x; blk < nblocks; blk += gridDim.x) {
        int64_t row0 = (blk * (QX_WARPS / S) + warp / S) * R;
        float acc[R];
#pragma unroll
        for (int r = 0; r < R; r++) acc[r] = 0.0f;
        if (row0 < N) {
            /* rows past N read row N-1 (their sums are not written); one
             * base pointer per matrix, rows as 32-bit offsets (registers) */
            const uint4 *wb = w + row0 * nv;
            const Ts *sb = sc + row0 * G, *bb = bi ? bi + row0 * G : NULL;
            int nr = N - row0 < R ? (int)(N - row0) : R;
            for (int i = v0 + lane; i < v1; i += 32) {
                uint4 u[R];
                float s[R], b[R];
                qx_load<R>(wb, sb, bb, nv, G, nr, i, vpg_shift, u, s, b);
                float dq[R], xsum = 0.0f;
#pragma unroll
                for (int r = 0; r < R; r++) dq[r] = 0.0f;
#pragma unroll
                for (int t = 0; t < 4; t++) {
                    float xv[WPW];
#pragma unroll
                    for (int q = 0; q < WPW / 4; q++) {
                        float4 a = xs[qx_swz(i * F4 + t * (WPW / 4) + q)];
                        xv[4 * q] = a.x, xv[4 * q + 1] = a.y, xv[4 * q + 2] = a.z, xv[4 * q + 3] = a.w;
                    }
#pragma unroll
                    for (int e = 0; e < WPW; e++) xsum += xv[e];
#pragma unroll
                    for (int r = 0; r < R; r++) {
                        uint32_t wd = t == 0 ? u[r].x : t == 1 ? u[r].y : t == 2 ? u[r].z : u[r].w;
                        /* 4-bit: even nibbles are the bytes of lo, odd ones the bytes of hi */
                        uint32_t lo = BITS == 4 ? wd & 0x0F0F0F0Fu : wd, hi = BITS == 4 ? (wd >> 4) & 0x0F0F0F0Fu : wd;
#pragma unroll
                        for (int e = 0; e < WPW; e++) {
                            float q = BITS == 4 ? q_byte_f((e & 1) ? hi : lo, e >> 1, 0.0f) : q_byte_f(wd, e, 0.0f);
                            dq[r] = fmaf(xv[e], q, dq[r]);
                        }
                    }
                }
#pragma unroll
                for (int r = 0; r < R; r++) acc[r] = fmaf(s[r], dq[r], fmaf(b[r], xsum, acc[r]));
            }
        }
#pragma unroll
        for (int r = 0; r < R; r++) {
            float sum = warp_sum(acc[r]);
            if (lane == 0) red[warp][r] = sum;
        }
        __syncthreads();
        if (ks == 0 && lane < R && row0 + lane < N) {
            float sum = red[warp][lane];
            for (int k = 1; k < S; k++) sum += red[warp + k][lane];
            out[row0 + lane] = sum + (bias ? ld_any(bias, bdt, row0 + lane) : 0.0f);
        }
        __syncthreads(); /* red is rewritten by the next row group */
    }
}

static bool qx_big; /* the kernels may take more than 48 KB of shared memory (x of K > 12032) */

template <int BITS, typename Ts> static bool qx_attr() {
    return cudaFuncSetAttribute(gemv_mlx_sx_k<BITS, Ts, 8>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                QX_MAX_K * 4) == cudaSuccess &&
           cudaFuncSetAttribute(gemv_mlx_sx_k<BITS, Ts, 4>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                QX_MAX_K * 4) == cudaSuccess;
}

void cuda_qgemv_mlx_init(void) {
    bool a = qx_attr<4, __nv_bfloat16>(), b = qx_attr<4, __half>();
    bool c = qx_attr<8, __nv_bfloat16>(), d = qx_attr<8, __half>();
    qx_big = a && b && c && d;
    if (!qx_big) (void)cudaGetLastError(); /* not a later launch's error: K > 12032 takes v3 */
}

template <int BITS, typename Ts, int R>
static void qx_launch(lmx_cuda_ctx *c, const cuda_qw *qw, float *out, const float *x, const void *bias, int bdt,
                      int vpg_shift) {
    constexpr int V = 128 / BITS;
    int64_t N = qw->N, K = qw->K, nv = K / V, groups = (N + R - 1) / R;
    int S = 1; /* split K until ~2 blocks' worth of row groups per SM, each warp >= 32 vectors */
    while (S < QX_WARPS && groups * S / QX_WARPS < 2 * c->n_sm && nv / (2 * S) >= 32) S *= 2;
    int64_t nblocks = (groups + QX_WARPS / S - 1) / (QX_WARPS / S), grid = nblocks;
    if (grid > 2 * c->n_sm) grid = 2 * c->n_sm; /* the resident blocks walk the row groups */
    gemv_mlx_sx_k<BITS, Ts, R><<<(unsigned)grid, QX_WARPS * 32, (size_t)K * 4, c->stream>>>(
        out, x, reinterpret_cast<const uint4 *>(qw->w), (const Ts *)qw->sc, (const Ts *)qw->bi, bias, bdt, N, (int)K, S,
        vpg_shift, nblocks);
}

/* 8 rows a warp where that still leaves 2 warps' row groups per SM, else 4
 * (LMX_CUDA_QGEMV=r4|r8 forces one). */
template <int BITS, typename Ts>
static void qx_rows(lmx_cuda_ctx *c, const cuda_qw *qw, float *out, const float *x, const void *bias, int bdt,
                    int vpg_shift) {
    int R = c->qgemv_rows ? c->qgemv_rows : qw->N >= 16 * c->n_sm ? 8 : 4;
    if (R == 8)
        qx_launch<BITS, Ts, 8>(c, qw, out, x, bias, bdt, vpg_shift);
    else
        qx_launch<BITS, Ts, 4>(c, qw, out, x, bias, bdt, vpg_shift);
}

bool cuda_gemv_mlx_sx(lmx_cuda_ctx *c, const cuda_qw *qw, float *out, const float *x, const void *bias, int bdt) {
    int bits = qw->dt == LMX_MLX_Q4 ? 4 : qw->dt == LMX_MLX_Q8 ? 8 : 0;
    if (!bits || c->qgemv_old || c->qgemv_staged || c->qgemv_unfactored) return false;
    /* without the attribute: 48 KB in all, the static red[] included */
    if (qw->K > (qx_big ? QX_MAX_K : 12032) || qw->K % 128 || qw->N < 1) return false;
    if (((uintptr_t)x & 15) || ((uintptr_t)qw->w & 15)) return false;
    if (qw->group < 128 / bits || (qw->group & (qw->group - 1)) || (qw->sdt != LMX_F16 && qw->sdt != LMX_BF16))
        return false;
    int vpg_shift = 0;
    while (((128 / bits) << vpg_shift) < qw->group) vpg_shift++;
    if (bits == 4) {
        if (qw->sdt == LMX_BF16) qx_rows<4, __nv_bfloat16>(c, qw, out, x, bias, bdt, vpg_shift);
        else qx_rows<4, __half>(c, qw, out, x, bias, bdt, vpg_shift);
    } else {
        if (qw->sdt == LMX_BF16) qx_rows<8, __nv_bfloat16>(c, qw, out, x, bias, bdt, vpg_shift);
        else qx_rows<8, __half>(c, qw, out, x, bias, bdt, vpg_shift);
    }
    return true;
}
