/* cuda_quant.cu - quantized weights outside the decode GEMV: which formats
 * the device takes, dequantization of a row tile to bf16 hi + lo for the
 * prefill GEMMs (cuda_matmul.cu), and embedding rows of quantized tables.
 *
 * Both kernels give one thread one 32-element piece and decode it with the
 * exact (X = true) decoders of cuda_quant.cuh, so get_rows is bit-identical
 * to the CPU reference and the GEMM tiles start from exactly the weights the
 * reference multiplies. Their reads are 2/4-byte loads through L1 (a unit's
 * header is shared by its pieces); neither is on the decode path. The
 * dequantizer's bf16 leaves through shared memory as coalesced 16-byte
 * stores (8B 4096x14336 MLX 4-bit, exact: 2.52 -> 0.38 ms with the tile fix
 * in cuda_matmul.cu). Repacked Q4_0 (qw.r4, cuda_qgemv_q4r.cu) and Q6_K
 * (qw.r6, cuda_qgemv_q6r.cu) decode through q4r_piece / q6r_piece: the same
 * values from other offsets. */
#include "backend/cuda/cuda_quant.cuh"

#include <stdlib.h>
#include <string.h>

static unsigned q_blocks(int64_t n) {
    int64_t b = (n + 255) / 256;
    return (unsigned)(b < 65535 * 32 ? (b > 0 ? b : 1) : 65535 * 32);
}

/* ---- formats ---------------------------------------------------------------- */

static bool scale_dtype_ok(lmx_dtype t) {
    return t == LMX_F32 || t == LMX_F16 || t == LMX_BF16 || t == LMX_E8M0 || t == LMX_E4M3;
}

bool cuda_quant_ok(const lmx_array *w, const lmx_array *sc, const lmx_array *bi, int group) {
    const lmx_dtype_traits *t = lmx_dtype_info(w->dtype);
    if (!t || !t->is_quant || w->ndim != 2 || !lmx_array_is_contiguous(w)) return false;
    int64_t N = w->shape[0], K = w->shape[1];
    switch (w->dtype) {
    case LMX_Q4_0: case LMX_Q4_1: case LMX_Q5_0: case LMX_Q5_1: case LMX_Q8_0:
    case LMX_Q2_K: case LMX_Q3_K: case LMX_Q4_K: case LMX_Q5_K: case LMX_Q6_K:
        return !sc && !bi && K % t->block == 0;
    case LMX_MLX_Q2: case LMX_MLX_Q3: case LMX_MLX_Q4: case LMX_MLX_Q5: case LMX_MLX_Q6: case LMX_MLX_Q8:
    case LMX_MLX_FP4: case LMX_MLX_FP8:
        break;
    default:
        return false;
    }
    /* MLX: a piece is 32 elements and takes one group scale, or two (group 16, nvfp4) */
    if (!sc || !scale_dtype_ok(sc->dtype) || !lmx_array_is_contiguous(sc)) return false;
    if (bi && (bi->dtype != sc->dtype || !lmx_array_is_contiguous(bi))) return false;
    if (group <= 0 || K % 32 || K % group || (group % 32 && group != 16)) return false;
    return lmx_array_numel(sc) == N * (K / group) && (!bi || lmx_array_numel(bi) == lmx_array_numel(sc));
}

cuda_qw cuda_qw_of(const lmx_array *w, const lmx_array *sc, const lmx_array *bi, int group) {
    cuda_qw q;
    q.w = (const uint8_t *)w->data;
    q.dt = w->dtype;
    q.N = w->shape[0];
    q.K = w->shape[1];
    q.row_bytes = lmx_dtype_bytes(w->dtype, q.K);
    q.sc = sc ? sc->data : NULL;
    q.bi = bi ? bi->data : NULL;
    q.sdt = sc ? sc->dtype : 0;
    q.group = sc ? group : 0;
    q.r4 = q.dt == LMX_Q4_0 && cuda_qr_is(q.w, (size_t)q.N * q.row_bytes, LMX_Q4_0);
    q.r6 = q.dt == LMX_Q6_K && cuda_qr_is(q.w, (size_t)q.N * q.row_bytes, LMX_Q6_K);
    return q;
}

/* ---- dequantization to bf16 hi + lo ------------------------------------------ */

__device__ __forceinline__ uint32_t bf16_pair(float a, float b) {
    return (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(a)) |
           (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(b)) << 16;
}

/* One thread decodes one 32-element piece. The pieces of a block are
 * consecutive, and so are their outputs (a tile's rows are K apart and a row
 * is P pieces): the block's bf16 lands in shared memory first and leaves as
 * one contiguous run of 16-byte stores, consecutive threads on consecutive
 * vectors, instead of each thread writing its own 64 bytes (16 lines per
 * warp store). */
#define DQ_THREADS 256
/* Shared slot of vector q (0..3) of piece t: piece-major, q swizzled by t so
 * that both the per-piece stores and the contiguous reads of 8 threads (one
 * 128-byte wavefront) hit 8 distinct 16-byte bank groups. */
__device__ __forceinline__ int dq_slot(int t, int q) { return t * 4 + (q ^ ((t >> 1) & 3)); }
template <int DT>
__global__ void __launch_bounds__(DQ_THREADS) dequant_bf16_k(cuda_qw qw, int64_t n0, int64_t nt, __nv_bfloat16 *hi,
                                                          __nv_bfloat16 *lo, bool direct) {
    constexpr int VPP = 4; /* 16-byte vectors per piece and half */
    __shared__ uint4 sh[DQ_THREADS * VPP], sl[DQ_THREADS * VPP];
    int64_t P = qw.K / 32, total = nt * P;
    for (int64_t b0 = blockIdx.x * (int64_t)DQ_THREADS; b0 < total; b0 += (int64_t)gridDim.x * DQ_THREADS) {
        int64_t i = b0 + threadIdx.x;
        if (i < total) {
            int64_t r = i / P, pc = i - r * P;
            float v[32];
            qw_piece<DT>(qw, n0 + r, pc, v);
            if (direct) { /* LMX_CUDA_DQ=direct: each thread stores its own 64 bytes (the earlier kernel; A/B) */
                uint4 *h = reinterpret_cast<uint4 *>(hi + i * 32), *l = lo ? reinterpret_cast<uint4 *>(lo + i * 32) : NULL;
#pragma unroll
                for (int q = 0; q < VPP; q++)
                    h[q] = make_uint4(bf16_pair(v[8 * q], v[8 * q + 1]), bf16_pair(v[8 * q + 2], v[8 * q + 3]),
                                      bf16_pair(v[8 * q + 4], v[8 * q + 5]), bf16_pair(v[8 * q + 6], v[8 * q + 7]));
                if (l) {
#pragma unroll
                    for (int e = 0; e < 32; e++) v[e] -= __bfloat162float(__float2bfloat16_rn(v[e]));
#pragma unroll
                    for (int q = 0; q < VPP; q++)
                        l[q] = make_uint4(bf16_pair(v[8 * q], v[8 * q + 1]), bf16_pair(v[8 * q + 2], v[8 * q + 3]),
                                          bf16_pair(v[8 * q + 4], v[8 * q + 5]), bf16_pair(v[8 * q + 6], v[8 * q + 7]));
                }
                continue;
            }
#pragma unroll
            for (int q = 0; q < VPP; q++)
                sh[dq_slot(threadIdx.x, q)] =
                    make_uint4(bf16_pair(v[8 * q], v[8 * q + 1]), bf16_pair(v[8 * q + 2], v[8 * q + 3]),
                               bf16_pair(v[8 * q + 4], v[8 * q + 5]), bf16_pair(v[8 * q + 6], v[8 * q + 7]));
            if (lo) {
#pragma unroll
                for (int e = 0; e < 32; e++) v[e] -= __bfloat162float(__float2bfloat16_rn(v[e]));
#pragma unroll
                for (int q = 0; q < VPP; q++)
                    sl[dq_slot(threadIdx.x, q)] =
                        make_uint4(bf16_pair(v[8 * q], v[8 * q + 1]), bf16_pair(v[8 * q + 2], v[8 * q + 3]),
                                   bf16_pair(v[8 * q + 4], v[8 * q + 5]), bf16_pair(v[8 * q + 6], v[8 * q + 7]));
            }
        }
        if (direct) continue;
        __syncthreads();
        int64_t npc = total - b0 < DQ_THREADS ? total - b0 : DQ_THREADS;
        uint4 *gh = reinterpret_cast<uint4 *>(hi + b0 * 32), *gl = lo ? reinterpret_cast<uint4 *>(lo + b0 * 32) : NULL;
        for (int e = threadIdx.x; e < npc * VPP; e += DQ_THREADS) {
            int t = e / VPP, q = e - t * VPP; /* output vector e = piece t, vector q */
            gh[e] = sh[dq_slot(t, q)];
            if (gl) gl[e] = sl[dq_slot(t, q)];
        }
        __syncthreads();
    }
}

lmx_status cuda_dequant_bf16(lmx_cuda_ctx *c, const cuda_qw *qw, int64_t n0, int64_t nt, __nv_bfloat16 *hi,
                             __nv_bfloat16 *lo) {
    int64_t nb = (nt * (qw->K / 32) + DQ_THREADS - 1) / DQ_THREADS, cap = 16 * (int64_t)c->n_sm;
    unsigned g = (unsigned)(nb < cap ? (nb > 0 ? nb : 1) : cap); /* 16 blocks of 256 per SM, grid-stride */
    static int direct = -1; /* read once, like the backend's switches */
    if (direct < 0) {
        const char *e = getenv("LMX_CUDA_DQ");
        direct = e && !strcmp(e, "direct");
    }
#define DQ(DT) dequant_bf16_k<DT><<<g, DQ_THREADS, 0, c->stream>>>(*qw, n0, nt, hi, lo, direct != 0)
    LMX_QUANT_DISPATCH(qw->dt, DQ)
#undef DQ
    return cuda_launched("matmul: dequantize weight tile");
}

/* ---- get_rows of a quantized table ------------------------------------------- */

template <int DT>
__global__ void get_rows_q_k(float *out, cuda_qw qw, const int32_t *ids, int64_t R, bool vec) {
    int64_t P = qw.K / 32, total = R * P;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / P, pc = i - r * P, id = ids[r];
        float v[32];
        if (id >= 0 && id < qw.N) { /* out of range: zeros (the CPU kernel refuses) */
            qw_piece<DT>(qw, id, pc, v);
        } else {
#pragma unroll
            for (int e = 0; e < 32; e++) v[e] = 0.0f;
        }
        float *o = out + r * qw.K + pc * 32;
        if (vec) {
#pragma unroll
            for (int q = 0; q < 8; q++)
                reinterpret_cast<float4 *>(o)[q] = make_float4(v[4 * q], v[4 * q + 1], v[4 * q + 2], v[4 * q + 3]);
        } else {
#pragma unroll
            for (int e = 0; e < 32; e++) o[e] = v[e];
        }
    }
}

lmx_status cuda_get_rows_quant(lmx_cuda_ctx *c, const lmx_node *n) {
    const lmx_array *tab = n->src[0];
    cuda_qw qw = cuda_qw_of(tab, n->src[2], n->src[3], n->ip[0]);
    int64_t R = lmx_array_numel(n->src[1]);
    if (R == 0) return LMX_OK;
    float *o = (float *)n->out->data;
    bool vec = ((uintptr_t)o & 15) == 0;
    const int32_t *ids = (const int32_t *)n->src[1]->data;
    unsigned g = q_blocks(R * (qw.K / 32));
#define GR(DT) get_rows_q_k<DT><<<g, 256, 0, c->stream>>>(o, qw, ids, R, vec)
    LMX_QUANT_DISPATCH(qw.dt, GR)
#undef GR
    return cuda_launched("get_rows (quantized table)");
}
