/* cuda_quant_gemv.cu - out[M,N] (f32) = x[M,K] (f32) · Wᵀ (+ b) for M <= 8 and
 * quantized W, read straight from the packed bytes (decode is weight-bandwidth
 * bound: a 4-bit weight moves a quarter of a bf16 one).
 *
 * As the bf16 GEMV (cuda_matmul.cu): warps stream weight rows with 16-byte
 * loads that skip L1, S warps of a block split K for narrow matrices,
 * products in f32 with x in f32, shuffle reductions. Unlike it, each warp
 * takes R rows at once: a lane's 16 bytes hold 32 (4-bit) or 16 (8-bit)
 * consecutive weights, so its x slice is 128 / 64 contiguous bytes and a
 * warp's x load touches 32 / 16 cache lines; read once per row, x cost
 * more L1 time than the weights cost HBM time (measured: every format
 * decoded ~0.8e12 weights/s, 14% of the bandwidth for 4-bit, with R = 1).
 * x is loaded once and used for R rows.
 *
 * Two kernels:
 * - gemv_mlx_k: MLX affine 4/8-bit (the mlx-community formats). A lane takes
 *   one 16-byte vector of each of its R rows (R loads in flight), the
 *   vectors' group scales and biases; q becomes a float by bit tricks (no
 *   I2F) and a vector's dot is s·Σ x·q + b·Σ x.
 * - gemv_staged_k: every other format (GGUF blocks and K-quants, MLX 2..8-bit
 *   and fp modes). GGUF blocks are 18/20/22/34/84/110/210 bytes, so 16-byte
 *   lanes do not line up with blocks: each warp copies 32 pieces (of 32
 *   elements) of each of its R rows into shared memory with coalesced 16-byte
 *   cp.async copies (from the 16-byte boundary below the chunk; a vector that
 *   would pass the end of the weight is copied byte by byte), double-buffered
 *   so the next chunk is in flight while each lane decodes one piece per row
 *   of this one. Q4_0 / Q8_0 blocks dot their integers with x and scale once
 *   per block.
 * LMX_CUDA_QGEMV=staged sends MLX 4/8-bit through the staged kernel too (to
 * compare them). */
#include "backend/cuda/cuda_quant.cuh"

#define QV_WARPS 8 /* warps per block, direct kernel */
#define QS_WARPS 4 /* warps per block, staged kernel (R rows x 2 stages of shared memory each) */
#define QS_SMEM (44 * 1024)

/* Warp sums of acc[r][m] into red; warp ks == 0 of each row group adds its
 * S-1 neighbours and the bias and writes rows row0..row0+R-1 (< N). */
template <int R, int MR>
__device__ __forceinline__ void q_finish(float (*red)[R * MR], const float *acc, float *out, const void *bias, int bdt,
                                         int M, int64_t N, int64_t os, int64_t row0, int S) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, ks = warp % S;
#pragma unroll
    for (int i = 0; i < R * MR; i++) {
        float sum = warp_sum(acc[i]);
        if (lane == 0) red[warp][i] = sum;
    }
    if (S > 1)
        __syncthreads();
    else
        __syncwarp();
    if (ks != 0 || lane >= R) return;
    int64_t row = row0 + lane; /* lane r writes row r of the group */
    if (row >= N) return;
    float bv = bias ? ld_any(bias, bdt, row) : 0.0f;
#pragma unroll
    for (int m = 0; m < MR; m++) {
        if (m >= M) break;
        float sum = red[warp][lane * MR + m];
        for (int k = 1; k < S; k++) sum += red[warp + k][lane * MR + m];
        out[m * os + row] = sum + bv;
    }
}

/* ---- MLX affine 4/8-bit: direct 16-byte lanes ---------------------------------- */

/* F (factored, the default): a vector lies in one group, so its dot is
 * s·Σ x·q + b·Σ x, with Σ x shared by the R rows: per weight one PRMT, one
 * FADD and one FFMA (MLX's own qmv kernels factor the same way). !F
 * (LMX_CUDA_QGEMV=unfactored, kept to compare): w = fma(s, q, b) per weight,
 * then x·w, as the reference rounds. At most 128 registers: 2 blocks
 * (16 warps, 16 x 32 x R x 16 bytes of weights in flight) per SM. */
template <int BITS, typename Ts, int MR, int R, bool F>
__global__ void __launch_bounds__(QV_WARPS * 32, 2)
    gemv_mlx_k(float *__restrict__ out, const float *__restrict__ x, const uint4 *__restrict__ w,
               const Ts *__restrict__ sc, const Ts *__restrict__ bi, const void *bias, int bdt, int M, int64_t N,
               int64_t K, int64_t xs, int64_t os, int S, int vpg_shift) {
    constexpr int V = 128 / BITS, WPW = 32 / BITS; /* weights per vector, per word */
    __shared__ float red[QV_WARPS][R * MR];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int64_t row0 = ((int64_t)blockIdx.x * (QV_WARPS / S) + warp / S) * R;
    int ks = warp % S;
    int64_t nv = K / V, v0 = nv * ks / S, v1 = nv * (ks + 1) / S, G = nv >> vpg_shift;
    float acc[R * MR];
#pragma unroll
    for (int i = 0; i < R * MR; i++) acc[i] = 0.0f;
    if (row0 < N) {
        for (int64_t i = v0 + lane; i < v1; i += 32) {
            uint4 u[R];
            float s[R], b[R];
#pragma unroll
            for (int r = 0; r < R; r++) {
                int64_t row = row0 + r;
                if (row < N) {
                    u[r] = ld_stream(w + row * nv + i);
                    s[r] = ldf(sc, row * G + (i >> vpg_shift));
                    b[r] = bi ? ldf(bi, row * G + (i >> vpg_shift)) : 0.0f;
                } else {
                    u[r] = make_uint4(0, 0, 0, 0);
                    s[r] = b[r] = 0.0f;
                }
            }
            constexpr int NDQ = F ? R * MR : 1;
            float dq[NDQ], xsum[MR]; /* F: Σ x·q of this vector per row; Σ x */
#pragma unroll
            for (int j = 0; j < NDQ; j++) dq[j] = 0.0f;
#pragma unroll
            for (int m = 0; m < MR; m++) xsum[m] = 0.0f;
#pragma unroll
            for (int t = 0; t < 4; t++) {
                float xv[MR][WPW];
#pragma unroll
                for (int m = 0; m < MR; m++) {
                    if (m >= M) break;
                    const float4 *xp = reinterpret_cast<const float4 *>(x + m * xs + i * V + t * WPW);
#pragma unroll
                    for (int q = 0; q < WPW / 4; q++) {
                        float4 a = __ldg(xp + q);
                        xv[m][4 * q] = a.x, xv[m][4 * q + 1] = a.y, xv[m][4 * q + 2] = a.z, xv[m][4 * q + 3] = a.w;
                    }
                    if constexpr (F) {
#pragma unroll
                        for (int e = 0; e < WPW; e++) xsum[m] += xv[m][e];
                    }
                }
#pragma unroll
                for (int r = 0; r < R; r++) {
                    uint32_t wd = t == 0 ? u[r].x : t == 1 ? u[r].y : t == 2 ? u[r].z : u[r].w;
                    /* 4-bit: even nibbles are the bytes of lo, odd ones the bytes of hi */
                    uint32_t lo = BITS == 4 ? wd & 0x0F0F0F0Fu : wd, hi = BITS == 4 ? (wd >> 4) & 0x0F0F0F0Fu : wd;
#pragma unroll
                    for (int e = 0; e < WPW; e++) {
                        float q = BITS == 4 ? q_byte_f((e & 1) ? hi : lo, e >> 1, 0.0f) : q_byte_f(wd, e, 0.0f);
                        if constexpr (F) {
#pragma unroll
                            for (int m = 0; m < MR; m++) {
                                if (m >= M) break;
                                dq[F ? r * MR + m : 0] = fmaf(xv[m][e], q, dq[F ? r * MR + m : 0]);
                            }
                        } else {
                            float wf = fmaf(s[r], q, b[r]);
#pragma unroll
                            for (int m = 0; m < MR; m++) {
                                if (m >= M) break;
                                acc[r * MR + m] = fmaf(xv[m][e], wf, acc[r * MR + m]);
                            }
                        }
                    }
                }
            }
            if constexpr (F) {
#pragma unroll
                for (int r = 0; r < R; r++)
#pragma unroll
                    for (int m = 0; m < MR; m++)
                        acc[r * MR + m] = fmaf(s[r], dq[F ? r * MR + m : 0], fmaf(b[r], xsum[m], acc[r * MR + m]));
            }
        }
    }
    q_finish<R, MR>(red, acc, out, bias, bdt, M, N, os, row0, S);
}

/* ---- every format: rows staged through shared memory --------------------------- */

__device__ __forceinline__ void q_cp_async16(void *smem, const void *g) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"((uint32_t)__cvta_generic_to_shared(smem)), "l"(g));
}
__device__ __forceinline__ void q_cp_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N> __device__ __forceinline__ void q_cp_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }

/* Queues the copy of nbytes at g into buf (16-byte vectors from the boundary
 * at or below g, so g lands at offset g & 15). Vectors that would pass w_end
 * are copied byte by byte. */
__device__ __forceinline__ void q_stage(uint4 *buf, const uint8_t *g, int nbytes, const uint8_t *w_end, int lane) {
    const uint8_t *a = reinterpret_cast<const uint8_t *>((uintptr_t)g & ~(uintptr_t)15);
    int off = (int)(g - a), n16 = (off + nbytes + 15) >> 4;
    for (int i = lane; i < n16; i += 32) {
        const uint8_t *p = a + 16 * i;
        if (p + 16 <= w_end) {
            q_cp_async16(buf + i, p);
        } else { /* the weight's last bytes: never read past its end */
            uint8_t *d = reinterpret_cast<uint8_t *>(buf + i);
            for (int k = 0; k < 16; k++) d[k] = p + k < w_end ? p[k] : 0;
        }
    }
}

/* Where q_stage put byte `at` of row `row`: its stage buffer plus the
 * byte's offset from the 16-byte boundary below it. */
__device__ __forceinline__ const uint8_t *q_staged(const uint4 *buf, const cuda_qw &qw, int64_t row, int64_t at) {
    const uint8_t *g = qw.w + row * qw.row_bytes + at;
    return reinterpret_cast<const uint8_t *>(buf) + ((uintptr_t)g & 15);
}

/* Units a warp stages per row and step: 32 pieces, one per lane. */
template <int DT> struct QStage {
    enum {
        UPC = 32 / QF<DT>::PPU,
        SV = (UPC * QF<DT>::UB + 15) / 16 + 1, /* 16-byte vectors per row and stage, +1 for a misaligned start */
        /* rows per warp at M = 1: 8 where 2 stages x 8 rows fit QS_SMEM, else 4 */
        R1 = QS_WARPS * 8 * 2 * SV * 16 <= QS_SMEM ? 8 : 4,
    };
};

template <int DT, int MR, int R>
__global__ void __launch_bounds__(QS_WARPS * 32)
    gemv_staged_k(float *__restrict__ out, const float *__restrict__ x, cuda_qw qw, const uint8_t *w_end,
                  const void *bias, int bdt, int M, int64_t xs, int64_t os, int S, bool xvec) {
    constexpr int UE = QF<DT>::UE, UB = QF<DT>::UB, PPU = QF<DT>::PPU, UPC = QStage<DT>::UPC, SV = QStage<DT>::SV;
    __shared__ uint4 stage[QS_WARPS][2][R][SV];
    __shared__ float red[QS_WARPS][R * MR];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int64_t row0 = ((int64_t)blockIdx.x * (QS_WARPS / S) + warp / S) * R;
    int ks = warp % S;
    int64_t U = qw.K / UE, u0 = U * ks / S, u1 = U * (ks + 1) / S;
    int nr = (int)(qw.N - row0 < R ? qw.N - row0 : R); /* rows of this group inside the weight (warp-uniform) */
    float acc[R * MR];
#pragma unroll
    for (int i = 0; i < R * MR; i++) acc[i] = 0.0f;
    if (nr > 0 && u1 > u0) {
        int64_t nch = (u1 - u0 + UPC - 1) / UPC;
        {
            int nb = (int)((u1 - u0 < UPC ? u1 - u0 : UPC) * UB);
#pragma unroll
            for (int r = 0; r < R; r++)
                if (r < nr) q_stage(stage[warp][0][r], qw.w + (row0 + r) * qw.row_bytes + u0 * UB, nb, w_end, lane);
            q_cp_commit();
        }
        for (int64_t ch = 0; ch < nch; ch++) {
            int b = (int)(ch & 1);
            int64_t cu = u0 + ch * UPC;
            if (ch + 1 < nch) {
                int64_t nx = cu + UPC;
                int nb = (int)((u1 - nx < UPC ? u1 - nx : UPC) * UB);
#pragma unroll
                for (int r = 0; r < R; r++)
                    if (r < nr) q_stage(stage[warp][b ^ 1][r], qw.w + (row0 + r) * qw.row_bytes + nx * UB, nb, w_end, lane);
                q_cp_commit();
                q_cp_wait<1>();
            } else {
                q_cp_wait<0>();
            }
            __syncwarp();
            int pc = lane, np = (int)(u1 - cu < UPC ? u1 - cu : UPC) * PPU;
            if (pc < np) {
                int64_t k0 = cu * UE + (int64_t)pc * 32;
                if constexpr (MR == 1) {
                    float xr[32]; /* x once for the R rows */
                    if (xvec) {
#pragma unroll
                        for (int q = 0; q < 8; q++) {
                            float4 a = __ldg(reinterpret_cast<const float4 *>(x + k0) + q);
                            xr[4 * q] = a.x, xr[4 * q + 1] = a.y, xr[4 * q + 2] = a.z, xr[4 * q + 3] = a.w;
                        }
                    } else {
#pragma unroll
                        for (int e = 0; e < 32; e++) xr[e] = __ldg(x + k0 + e);
                    }
#pragma unroll
                    for (int r = 0; r < R; r++) {
                        if (r >= nr) break;
                        float v[32];
                        const uint8_t *sb = q_staged(stage[warp][b][r], qw, row0 + r, cu * UB);
                        if constexpr (DT == LMX_Q4_0 || DT == LMX_Q8_0) { /* d·Σ x·q */
                            float d = QDecInt<DT>::piece(sb + pc * UB, v), dot = 0.0f;
#pragma unroll
                            for (int e = 0; e < 32; e++) dot = fmaf(xr[e], v[e], dot);
                            acc[r] = fmaf(d, dot, acc[r]);
                        } else {
                            q_piece<DT, false>(sb + (pc / PPU) * UB, pc % PPU, qw.sc, qw.bi, qw.sdt, qw.group,
                                               row0 + r, qw.K, k0, v);
#pragma unroll
                            for (int e = 0; e < 32; e++) acc[r] = fmaf(xr[e], v[e], acc[r]);
                        }
                    }
                } else {
#pragma unroll
                    for (int r = 0; r < R; r++) {
                        if (r >= nr) break;
                        float v[32];
                        const uint8_t *sb = q_staged(stage[warp][b][r], qw, row0 + r, cu * UB);
                        q_piece<DT, false>(sb + (pc / PPU) * UB, pc % PPU, qw.sc, qw.bi, qw.sdt, qw.group, row0 + r,
                                           qw.K, k0, v);
#pragma unroll
                        for (int m = 0; m < MR; m++) {
                            if (m >= M) break;
                            const float *xm = x + m * xs + k0;
                            if (xvec) {
#pragma unroll
                                for (int q = 0; q < 8; q++) {
                                    float4 a = __ldg(reinterpret_cast<const float4 *>(xm) + q);
                                    acc[r * MR + m] += a.x * v[4 * q] + a.y * v[4 * q + 1] + a.z * v[4 * q + 2] +
                                                       a.w * v[4 * q + 3];
                                }
                            } else {
#pragma unroll
                                for (int e = 0; e < 32; e++) acc[r * MR + m] += __ldg(xm + e) * v[e];
                            }
                        }
                    }
                }
            }
            __syncwarp(); /* this stage is refilled two chunks later */
        }
    }
    q_finish<R, MR>(red, acc, out, bias, bdt, M, qw.N, os, row0, S);
}

/* ---- launch ------------------------------------------------------------------------ */

/* Warps per row group S (split-K) for G row groups and `vec` lane-steps of
 * work per row: about 2 blocks per SM, each warp at least min_steps steps. */
static int split_for(const lmx_cuda_ctx *c, int64_t groups, int warps, int64_t steps, int64_t min_steps) {
    int S = 1;
    while (S < warps && groups * S / warps < 2 * c->n_sm && steps / (2 * S) >= min_steps) S *= 2;
    return S;
}

template <int BITS, typename Ts, int MR, int R>
static void launch_mlx_r(lmx_cuda_ctx *c, const cuda_qw *qw, float *out, const float *x, int M, int64_t xs, int64_t os,
                         const void *bias, int bdt, int vpg_shift) {
    constexpr int V = 128 / BITS;
    int64_t N = qw->N, K = qw->K, nv = K / V, groups = (N + R - 1) / R;
    int S = split_for(c, groups, QV_WARPS, nv, 32);
    dim3 grid((unsigned)((groups + QV_WARPS / S - 1) / (QV_WARPS / S)));
    const uint4 *w = reinterpret_cast<const uint4 *>(qw->w);
    if (c->qgemv_unfactored)
        gemv_mlx_k<BITS, Ts, MR, R, false><<<grid, QV_WARPS * 32, 0, c->stream>>>(
            out, x, w, (const Ts *)qw->sc, (const Ts *)qw->bi, bias, bdt, M, N, K, xs, os, S, vpg_shift);
    else
        gemv_mlx_k<BITS, Ts, MR, R, true><<<grid, QV_WARPS * 32, 0, c->stream>>>(
            out, x, w, (const Ts *)qw->sc, (const Ts *)qw->bi, bias, bdt, M, N, K, xs, os, S, vpg_shift);
}

template <int BITS, typename Ts>
static void launch_mlx(lmx_cuda_ctx *c, const cuda_qw *qw, float *out, const float *x, int M, int64_t xs, int64_t os,
                       const void *bias, int bdt) {
    constexpr int V = 128 / BITS;
    int vpg_shift = 0;
    while ((V << vpg_shift) < qw->group) vpg_shift++;
    if (M > 1)
        launch_mlx_r<BITS, Ts, 8, 2>(c, qw, out, x, M, xs, os, bias, bdt, vpg_shift);
    else if (qw->N >= 16 * c->n_sm) /* 8 rows a warp still leaves 2 warps' groups per SM */
        launch_mlx_r<BITS, Ts, 1, 8>(c, qw, out, x, M, xs, os, bias, bdt, vpg_shift);
    else
        launch_mlx_r<BITS, Ts, 1, 4>(c, qw, out, x, M, xs, os, bias, bdt, vpg_shift);
}

template <int DT>
static void launch_staged(lmx_cuda_ctx *c, const cuda_qw *qw, float *out, const float *x, int M, int64_t xs,
                          int64_t os, const void *bias, int bdt, bool xvec) {
    constexpr int R = QStage<DT>::R1;
    int64_t N = qw->N, U = qw->K / QF<DT>::UE, P = qw->K / 32;
    const uint8_t *w_end = qw->w + (size_t)N * qw->row_bytes;
    if (M == 1) {
        int64_t groups = (N + R - 1) / R;
        int S = split_for(c, groups, QS_WARPS, P, 32);
        while (S > 1 && S > U) S /= 2;
        dim3 grid((unsigned)((groups + QS_WARPS / S - 1) / (QS_WARPS / S)));
        gemv_staged_k<DT, 1, R><<<grid, QS_WARPS * 32, 0, c->stream>>>(out, x, *qw, w_end, bias, bdt, M, xs, os, S, xvec);
    } else {
        int S = split_for(c, N, QS_WARPS, P, 32);
        while (S > 1 && S > U) S /= 2;
        dim3 grid((unsigned)((N + QS_WARPS / S - 1) / (QS_WARPS / S)));
        gemv_staged_k<DT, 8, 1><<<grid, QS_WARPS * 32, 0, c->stream>>>(out, x, *qw, w_end, bias, bdt, M, xs, os, S, xvec);
    }
}

lmx_status cuda_gemv_quant(lmx_cuda_ctx *c, const lmx_node *n, const cuda_qw *qw) {
    const lmx_array *x = n->src[0], *b = n->src[2];
    int64_t M = cu_rows(x), xs = cu_row_stride(x), os = cu_row_stride(n->out);
    float *out = (float *)n->out->data;
    const float *xd = (const float *)x->data;
    const void *bias = b ? b->data : NULL;
    int bdt = b ? b->dtype : 0;
    bool xvec = ((uintptr_t)xd & 15) == 0 && (M == 1 || xs % 4 == 0);
    int bits = qw->dt == LMX_MLX_Q4 ? 4 : qw->dt == LMX_MLX_Q8 ? 8 : 0;
    bool direct = bits && xvec && !c->qgemv_staged && ((uintptr_t)qw->w & 15) == 0 && qw->group >= 128 / bits &&
                  (qw->group & (qw->group - 1)) == 0 &&
                  (qw->sdt == LMX_F32 || qw->sdt == LMX_F16 || qw->sdt == LMX_BF16);
    lmx_status st;
    if (M == 1 && cuda_gemv_mlx4_q8(c, qw, out, xd, bias, bdt, &st)) /* int8 x unless LMX_CUDA_MLX_INT8=0 / LMX_INT8_ACT=0 */
        return st ? st : cuda_launched("matmul (quantized gemv, mlx 4-bit, int8 x)");
    if (direct && M == 1 && cuda_gemv_mlx_sx(c, qw, out, xd, bias, bdt))
        return cuda_launched("matmul (quantized gemv, x in shared memory)");
    if (direct) {
        if (bits == 4) {
            if (qw->sdt == LMX_BF16) launch_mlx<4, __nv_bfloat16>(c, qw, out, xd, (int)M, xs, os, bias, bdt);
            else if (qw->sdt == LMX_F16) launch_mlx<4, __half>(c, qw, out, xd, (int)M, xs, os, bias, bdt);
            else launch_mlx<4, float>(c, qw, out, xd, (int)M, xs, os, bias, bdt);
        } else {
            if (qw->sdt == LMX_BF16) launch_mlx<8, __nv_bfloat16>(c, qw, out, xd, (int)M, xs, os, bias, bdt);
            else if (qw->sdt == LMX_F16) launch_mlx<8, __half>(c, qw, out, xd, (int)M, xs, os, bias, bdt);
            else launch_mlx<8, float>(c, qw, out, xd, (int)M, xs, os, bias, bdt);
        }
        return cuda_launched("matmul (quantized gemv)");
    }
    if (qw->r4) { /* repacked Q4_0: its own kernels (cuda_qgemv_q4r.cu) */
        LMX_TRY(cuda_gemv_q4r(c, qw, out, xd, (int)M, xs, os, bias, bdt));
        return cuda_launched("matmul (quantized gemv, repacked q4_0)");
    }
    if (qw->r6) { /* repacked Q6_K: its own kernels (cuda_qgemv_q6r.cu) */
        LMX_TRY(cuda_gemv_q6r(c, qw, out, xd, (int)M, xs, os, bias, bdt));
        return cuda_launched("matmul (quantized gemv, repacked q6_K)");
    }
    if (M == 1 && cuda_gemv_gguf_q8act(c, qw, out, xd, bias, bdt, &st))
        return st ? st : cuda_launched("matmul (quantized gemv, int8 x)");
    if (M == 1 && xvec && cuda_gemv_gguf_lanes(c, qw, out, xd, bias, bdt))
        return cuda_launched("matmul (quantized gemv, gguf lanes)");
#define ST(DT) launch_staged<DT>(c, qw, out, xd, (int)M, xs, os, bias, bdt, xvec)
    LMX_QUANT_DISPATCH(qw->dt, ST)
#undef ST
    return cuda_launched("matmul (quantized gemv, staged)");
}
