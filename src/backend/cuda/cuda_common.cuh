/* cuda_common.cuh - what every CUDA kernel file shares: the backend context,
 * error conversion (CUDA errors become lmx_status with a message; nothing
 * exits), dtype loads, row helpers and block reductions. */
#ifndef LMX_CUDA_COMMON_CUH
#define LMX_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

extern "C" {
#include "core/ops.h"
}
#include "backend/cuda/cuda.h"

#define LMX_CUDA_MAX_GRAPHS 8

struct lmx_cuda_alloc_table; /* pointer -> size, for memory accounting */

struct lmx_cuda_ctx {
    int device;
    int n_sm;
    cudaStream_t stream;
    cublasHandle_t blas;
    void *blas_ws;
    size_t blas_ws_size;
    void *scratch; /* kernels' temporaries (split-K partials, converted x) */
    size_t scratch_size;
    size_t mem_in_use, mem_peak;
    lmx_cuda_alloc_table *allocs;
    bool capturing;
    uint8_t *stage; /* pinned host staging for small uploads (asynchronous copies) */
    size_t stage_size, stage_used;
    uint8_t *dl; /* pinned host buffer for downloads (logits), grown on demand */
    size_t dl_size;
    bool pageable_download; /* LMX_CUDA_PAGEABLE_DOWNLOAD=1: copy straight into the caller's memory */
    bool fast_gemm;     /* x rounded once to bf16/f16 in prefill GEMMs (default; LMX_CUDA_EXACT=1: hi + lo) */
    bool qgemv_staged;  /* LMX_CUDA_QGEMV=staged: MLX 4/8-bit decode through the staged kernel */
    bool qgemv_unfactored; /* LMX_CUDA_QGEMV=unfactored: direct kernel, w = s·q + b per weight */
    bool qgemv_old;     /* LMX_CUDA_QGEMV=old: the session-3 decode kernels (no lane-mapped / x-in-shared ones) */
    bool int8_act;      /* GGUF Q4_0/Q8_0 decode with x as int8 blocks (default; LMX_INT8_ACT=0: f32 x) */
    int qgemv_rows;     /* LMX_CUDA_QGEMV=r4|r8: rows per warp of the lane-mapped kernels (0: by shape) */
    size_t qtile_bytes; /* prefill: bf16 bytes per dequantized weight tile (LMX_CUDA_QTILE_MB; 0: by the model) */
    size_t blas_ws_want; /* LMX_CUDA_BLAS_WS_MB, or 0: sized by the model at the first prefill GEMM */
    bool blas_ws_fitted; /* the first prefill GEMM sized the workspace */
    bool mem_tally;     /* LMX_MEM_TALLY=1: scratch / workspace growth on stderr */
    bool attn_exact;    /* the last GEMM had f32 weights: prefill attention stays exact */
    /* LMX_CUDA_GRAPHS=1: the kernels queued between two host synchronisations
     * (one decode step) are captured and replayed as one graph, updated in
     * place while the topology repeats (cuda_backend.cu). */
    bool auto_graph, auto_capturing;
    cudaGraphExec_t auto_exec;
    int64_t auto_updates, auto_instantiations;
    cudaGraph_t graph_in_capture;
    cudaGraphExec_t graphs[LMX_CUDA_MAX_GRAPHS];
    /* Static decode graph (cuda_step.cu): while dyn_pos is set (the capture
     * of a single-sequence decode step), rope, attention and the KV-row copy
     * read the step's position from device memory (*dyn_pos) instead of
     * their node parameters, and the copy shifts its destination by
     * (*dyn_pos - dyn_base) rows, dyn_base being the position captured; so
     * one graph replays every step of a shape class. */
    const int64_t *dyn_pos;
    int64_t dyn_base;
    int64_t *step_dev;        /* device: the step's position (8 bytes) */
    lmx_cuda_pick *pick_dev;  /* device: the greedy pick of a captured step */
    void *sample_buf;         /* device: sampled decoding's sort pairs and scratch (cuda_sample_topp.cu) */
    size_t sample_bytes;
    uint64_t scratch_gen;     /* bumped whenever `scratch` moves (graphs bake its address) */
    double *optime; /* LMX_CUDA_OPTIME=1: seconds and calls per op class (cuda_backend.cu), else NULL */
};

/* The backend hands its context to kernels through the pool slot. */
static inline lmx_cuda_ctx *cuda_ctx(lmx_pool *p) { return (lmx_cuda_ctx *)(void *)p; }

/* Ends an automatic step capture (if one is open) and launches it. */
lmx_status cuda_flush(lmx_cuda_ctx *c);

/* LMX_OK, or an lmx_err naming `what` and the CUDA error. */
lmx_status cuda_check(cudaError_t e, const char *what);
lmx_status cuda_blas_check(cublasStatus_t e, const char *what);
/* Checks the last launch (cudaGetLastError). */
static inline lmx_status cuda_launched(const char *what) { return cuda_check(cudaGetLastError(), what); }
/* At least `bytes` of scratch (grown outside a graph capture only). The
 * scratch is one buffer: a kernel's temporaries are dead after it returns. */
lmx_status cuda_scratch(lmx_cuda_ctx *c, size_t bytes, void **out);
/* Grows cuBLAS's workspace to `bytes` (never during a capture; never shrinks). */
lmx_status cuda_blas_workspace(lmx_cuda_ctx *c, size_t bytes);

/* Decode attention splits the key range into chunks whose length depends
 * only on the 256-row bucket of the longest key range (nmax), so a static
 * decode graph captured for a bucket (with the bucket's full split count:
 * the extra splits are empty and merge as exact zeros) computes the same
 * floats as the per-step launch. base = heads x query rows. */
int64_t cuda_attn_chunk(const lmx_cuda_ctx *c, int64_t base, int64_t nmax);

/* Row helpers, as the CPU kernels define them. */
static inline int64_t cu_cols(const lmx_array *a) { return a->ndim ? a->shape[a->ndim - 1] : 1; }
static inline int64_t cu_rows(const lmx_array *a) { return a->ndim ? lmx_array_numel(a) / cu_cols(a) : 1; }
static inline int64_t cu_row_stride(const lmx_array *a) {
    return a->ndim >= 2 ? a->strides[a->ndim - 2] : cu_cols(a);
}
static inline bool cu_is_float(lmx_dtype t) { return t == LMX_F32 || t == LMX_F16 || t == LMX_BF16; }

/* Element loads/stores in f32. */
__device__ __forceinline__ float ldf(const float *p, int64_t i) { return p[i]; }
__device__ __forceinline__ float ldf(const __nv_bfloat16 *p, int64_t i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ float ldf(const __half *p, int64_t i) { return __half2float(p[i]); }
__device__ __forceinline__ void stf(float *p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void stf(__nv_bfloat16 *p, int64_t i, float v) { p[i] = __float2bfloat16_rn(v); }
__device__ __forceinline__ void stf(__half *p, int64_t i, float v) { p[i] = __float2half_rn(v); }
/* A load whose dtype is known at run time only (bias, norm weights). */
__device__ __forceinline__ float ld_any(const void *p, int dt, int64_t i) {
    if (dt == LMX_BF16) return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    if (dt == LMX_F16) return __half2float(((const __half *)p)[i]);
    return ((const float *)p)[i];
}

/* A 16-byte load of weights, which are read once: kept out of L1. */
__device__ __forceinline__ uint4 ld_stream(const uint4 *p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
/* Block-wide sum/max for blockDim.x a multiple of 32 (<= 1024); every
 * thread gets the result. sh: 32 floats of shared memory. */
__device__ __forceinline__ float block_sum(float v, float *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.0f;
    return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v, float *sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : -INFINITY;
    return warp_max(v);
}

/* 16 bytes of f32 / bf16 / f16 as floats (4 or 8; the conversions are exact).
 * The pointer argument only picks the element type. */
__device__ __forceinline__ void unpack16(const uint4 &u, float *f, const float *) {
    f[0] = __uint_as_float(u.x);
    f[1] = __uint_as_float(u.y);
    f[2] = __uint_as_float(u.z);
    f[3] = __uint_as_float(u.w);
}
__device__ __forceinline__ void unpack16(const uint4 &u, float *f, const __nv_bfloat16 *) {
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        f[2 * i] = __uint_as_float(w[i] << 16);
        f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
}
__device__ __forceinline__ void unpack16(const uint4 &u, float *f, const __half *) {
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        __half2 h = *reinterpret_cast<const __half2 *>(&w[i]);
        float2 v = __half22float2(h);
        f[2 * i] = v.x;
        f[2 * i + 1] = v.y;
    }
}

/* One RoPE rotation of the pair (x0, x1) at position pos: the plain rope
 * kernel and the fused rope + KV write share it, so they agree bit for bit. */
__device__ __forceinline__ void rope_pair(float pos, float freq, float ms, float x0, float x1, float *y0, float *y1) {
    float sn, cs;
    sincosf(pos * freq, &sn, &cs);
    cs *= ms;
    sn *= ms;
    *y0 = x0 * cs - x1 * sn;
    *y1 = x1 * cs + x0 * sn;
}

/* lmx_xq (cpu_qdot.c) for one block of 32 held one element a lane of a
 * warp: d = amax/127 and q = rne(v·127/amax) with the CPU's IEEE
 * operations, so q and d are bit-identical to the CPU's; a non-finite
 * element makes d NaN and every q 0. Returns q, *db = d. */
__device__ __forceinline__ int xq_lane(float v, float *db) {
    float amax = warp_max(fabsf(v));
    bool bad = __any_sync(0xffffffffu, !isfinite(v));
    float d = __fdiv_rn(amax, 127.0f), id = amax > 0.0f ? __fdiv_rn(127.0f, amax) : 0.0f;
    if (bad) d = __int_as_float(0x7fc00000), id = 0.0f;
    *db = d;
    return id != 0.0f ? __float2int_rn(__fmul_rn(v, id)) : 0;
}

/* Programmatic dependent launch: lets the next kernel of the stream, if it
 * was launched with programmatic stream serialization (the int8-x GEMVs of
 * cuda_qgemv_q4r.cu), start now and issue its weight loads; it still waits
 * (griddepcontrol.wait) for this whole grid to finish before reading what
 * this grid wrote. A no-op for plainly launched successors. Called first
 * by the kernels that write a GEMV's x in a decode step (add + RMSNorm,
 * SiLU·up, the attention combine). */
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;");
#endif
}

/* xq_lane for a block of 32 held as 4 consecutive elements a lane by 8
 * lanes (lanes 8g..8g+7 of a warp hold one block; every lane of the warp
 * must call it): the same IEEE operations element by element, and the
 * block's amax is a max (exact in any order; NaN only matters through bad,
 * which overrides it), so q and d are bit-identical to xq_lane's and the
 * CPU's lmx_xq. Used where a GEMV quantizes x itself (cuda_qgemv_q4r.cu):
 * 4 elements a lane need 3 shuffle levels instead of 5 and one 16-byte load. */
__device__ __forceinline__ void xq_quad(float4 v, int *q, float *db) {
    float amax = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
#pragma unroll
    for (int o = 4; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    bool nf = !isfinite(v.x) || !isfinite(v.y) || !isfinite(v.z) || !isfinite(v.w);
    unsigned bal = __ballot_sync(0xffffffffu, nf);
    bool bad = ((bal >> (threadIdx.x & 24)) & 0xffu) != 0;
    float d = __fdiv_rn(amax, 127.0f), id = amax > 0.0f ? __fdiv_rn(127.0f, amax) : 0.0f;
    if (bad) d = __int_as_float(0x7fc00000), id = 0.0f;
    *db = d;
    q[0] = id != 0.0f ? __float2int_rn(__fmul_rn(v.x, id)) : 0;
    q[1] = id != 0.0f ? __float2int_rn(__fmul_rn(v.y, id)) : 0;
    q[2] = id != 0.0f ? __float2int_rn(__fmul_rn(v.z, id)) : 0;
    q[3] = id != 0.0f ? __float2int_rn(__fmul_rn(v.w, id)) : 0;
}

/* Kernels (one entry per lmx_op; cuda_backend.c holds the table). */
lmx_status lmx_cuda_get_rows(const lmx_node *n, lmx_pool *pool);
lmx_status lmx_cuda_matmul(const lmx_node *n, lmx_pool *pool);
lmx_status lmx_cuda_matmul_acc(const lmx_node *n, lmx_pool *pool); /* out += x·wᵀ, f32 w (cuda_matmul.cu) */
lmx_status lmx_cuda_rms_norm(const lmx_node *n, lmx_pool *pool);
lmx_status lmx_cuda_layer_norm(const lmx_node *n, lmx_pool *pool);
lmx_status lmx_cuda_rope(const lmx_node *n, lmx_pool *pool);
lmx_status lmx_cuda_attention(const lmx_node *n, lmx_pool *pool);
lmx_status lmx_cuda_binary(const lmx_node *n, lmx_pool *pool); /* add, mul */
lmx_status lmx_cuda_unary(const lmx_node *n, lmx_pool *pool);  /* scale, softcap, act */
lmx_status lmx_cuda_copy(const lmx_node *n, lmx_pool *pool);
lmx_status lmx_cuda_softmax(const lmx_node *n, lmx_pool *pool);

#endif
