/* cuda_qgemv_q4r.cu - GGUF Q4_0 in a device row layout with 16-byte aligned
 * nibbles, and the decode GEMVs that read it.
 *
 * Why: a GGUF Q4_0 block is 18 bytes (f16 d, then 16 nibble bytes), so
 * blocks are only 2-byte aligned and the int8-x kernel (cuda_qgemv_q8act.cu)
 * reads them as 16-bit loads: few bytes in flight per load, ~1.7 TB/s on the
 * 8B gate/up shape of a ~3.0 TB/s H100 (bench/cuda-notes.md).
 *
 * Layout ("repacked"; by default when the backend's decode takes int8 x,
 * LMX_CUDA_Q4_REPACK=0 never, =1 always). A row of
 * K weights keeps its K/32·18 bytes and its offset, but holds
 *   bytes [0, 16·nb)          the nb = K/32 blocks' 16 nibble bytes, in block
 *                             order, each block's bytes as in the file (byte
 *                             i: low nibble = element i, high = element i+16)
 *   bytes [16·nb, 18·nb)      the nb f16 scales d, in block order.
 * K % 256 == 0 makes a row a multiple of 144 = 9·16 bytes, so with a 16-byte
 * aligned allocation every row and every block's nibbles are 16-byte aligned.
 * Row-local and size-preserving: row views (lmx_array_rows of a fused
 * q|k|v or gate|up group) stay valid. The in-file nibble order suits dp4a:
 * word j of a block (bytes 4j..4j+3) holds elements 4j.. (low nibbles) and
 * 16+4j.. (high), i.e. the int8 x words j and 4+j of the block.
 *
 * Who reads it: every CUDA consumer of Q4_0 goes through cuda_qw_of, which
 * sets qw.r4 for a repacked weight; the dequantizer and get_rows decode with
 * q4r_piece (cuda_quant.cuh), the GEMVs (M <= 8) are below. The repack runs
 * on the device right after the upload (the relayout buffer op, called by
 * lmx_array_to_backend and once per fused group by transformer_device.c),
 * and a table of repacked allocations tells the kernels and the download
 * (which restores the file layout on the host) which bytes are repacked.
 * Caveat: bytes copied on the device into a new allocation are not in the
 * table (no CUDA op copies a quantized weight today).
 *
 * GEMV with int8 x (M = 1): x quantized exactly as the CPU's lmx_xq (see
 * cuda_qgemv_q8act.cu) plus, per block, 8·Σq (the -8 offset of the nibbles,
 * so a block's dot is Σ nib·q - 8·Σq, all integer). A lane takes one whole
 * block of a row: one 16-byte weight load, its f16 scale (a warp reads 64
 * contiguous bytes of scales), 32 bytes of int8 x (L1, shared by the warp's
 * R rows) and 8 dp4a. A warp takes R rows and 32 consecutive blocks a
 * round, so each lane has R (x2 with the unroll) independent 16-byte loads
 * in flight; S warps of a CTA split K when rows alone do not fill the SMs. */
#include "backend/cuda/cuda_quant.cuh"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define Q4R_WARPS 8

/* ---- the table of repacked allocations ----------------------------------- *
 * Q4_0 (below) and Q6_K (cuda_qgemv_q6r.cu: row planes ql, qh, scales, d)
 * share it: each entry records its format, which the kernels' cuda_qr_is
 * and the download's unpacking read. */

typedef struct {
    uintptr_t base;   /* the allocation (cudaMalloc pointer) */
    size_t bytes;     /* repacked bytes from base */
    size_t row_bytes; /* Q4_0: K/32 · 18; Q6_K: K/256 · 210 */
    int dt;           /* LMX_Q4_0 or LMX_Q6_K */
} q4r_region;

/* Process-wide, as device pointers are (any context may free or download
 * an allocation; models may be loaded and run from several threads), so
 * every access holds q4r_mu. A lookup scans a few hundred entries at most
 * (one per repacked weight or fused group), once per launch outside graphs. */
static q4r_region *q4r_tab;
static size_t q4r_n, q4r_cap;
static pthread_mutex_t q4r_mu = PTHREAD_MUTEX_INITIALIZER;

static const q4r_region *q4r_find(uintptr_t p) {
    for (size_t i = 0; i < q4r_n; i++)
        if (p >= q4r_tab[i].base && p < q4r_tab[i].base + q4r_tab[i].bytes) return &q4r_tab[i];
    return NULL;
}

bool cuda_qr_is(const void *p, size_t bytes, int dt) {
    pthread_mutex_lock(&q4r_mu);
    const q4r_region *r = q4r_find((uintptr_t)p);
    bool is = false;
    if (r && r->dt == dt) {
        size_t off = (uintptr_t)p - r->base;
        is = off % r->row_bytes == 0 && off + bytes <= r->bytes;
    }
    pthread_mutex_unlock(&q4r_mu);
    return is;
}

void cuda_q4r_forget(const void *p) {
    pthread_mutex_lock(&q4r_mu);
    for (size_t i = 0; i < q4r_n; i++)
        if (q4r_tab[i].base == (uintptr_t)p) {
            q4r_tab[i] = q4r_tab[--q4r_n];
            break;
        }
    pthread_mutex_unlock(&q4r_mu);
}

/* ---- repack (device, in place, one CTA a row) ---------------------------- */

__global__ void q4r_repack_k(uint8_t *w, int64_t rows, int64_t nb) {
    extern __shared__ uint4 q4r_sm[];
    int64_t rb = nb * 18, nv = rb / 16;
    const uint8_t *s = reinterpret_cast<const uint8_t *>(q4r_sm);
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        uint4 *g = reinterpret_cast<uint4 *>(w + row * rb);
        for (int64_t i = threadIdx.x; i < nv; i += blockDim.x) q4r_sm[i] = g[i];
        __syncthreads();
        for (int64_t i = threadIdx.x; i < nv; i += blockDim.x) {
            union {
                uint8_t b[16];
                uint4 v;
            } o;
            if (i < nb) {
                for (int k = 0; k < 16; k++) o.b[k] = s[18 * i + 2 + k];
            } else {
                for (int k = 0; k < 16; k++) {
                    int64_t byte = (i - nb) * 16 + k; /* byte of the scale area: scale byte/2, half byte&1 */
                    o.b[k] = s[18 * (byte >> 1) + (byte & 1)];
                }
            }
            g[i] = o.v;
        }
        __syncthreads();
    }
}

lmx_status cuda_q4r_relayout(lmx_cuda_ctx *c, const lmx_array *a) {
    bool q6 = a->dtype == LMX_Q6_K;
    if ((a->dtype != LMX_Q4_0 && !q6) || a->ndim < 1 || !lmx_array_is_contiguous(a)) return LMX_OK;
    /* LMX_CUDA_Q4_REPACK (Q6_K: LMX_CUDA_Q6_REPACK): "0" never (the file
     * layout, A/B), "1" always; unset: when this backend's decode takes int8
     * x (LMX_INT8_ACT, default on). With f32 x the file layout's lane kernels
     * (cuda_qgemv_gguf.cu, split-K) beat the repacked layout's f32 kernel on
     * short matrices (8B k/v 4.2 vs 13.9 us, bench/cuda-notes.md), so
     * LMX_INT8_ACT=0 keeps them. */
    const char *e = getenv(q6 ? "LMX_CUDA_Q6_REPACK" : "LMX_CUDA_Q4_REPACK");
    if (e && !strcmp(e, "0")) return LMX_OK;
    if (!(e && !strcmp(e, "1")) && (!c->int8_act || c->qgemv_old || c->qgemv_staged)) return LMX_OK;
    /* Q6_K: K % 2048 == 0 makes rows (210·K/256 bytes) multiples of 16 */
    int64_t K = a->shape[a->ndim - 1], n = lmx_array_numel(a);
    if (K <= 0 || K % (q6 ? 2048 : 256) || n == 0 || ((uintptr_t)a->data & 15)) return LMX_OK;
    int64_t rows = n / K, nb = K / (q6 ? 256 : 32);
    size_t rb = (size_t)nb * (q6 ? 210 : 18);
    if (rb > 48 * 1024) return LMX_OK; /* the repack holds a row in shared memory: K <= 87381 */
    if (a->buf && a->buf->data != a->data) return LMX_OK; /* a view: only whole allocations are recorded */
    pthread_mutex_lock(&q4r_mu);
    lmx_status st = LMX_OK;
    if (q4r_find((uintptr_t)a->data)) goto out; /* already repacked: never twice */
    if (q4r_n == q4r_cap) {
        size_t nc = q4r_cap ? 2 * q4r_cap : 64;
        q4r_region *t = (q4r_region *)realloc(q4r_tab, nc * sizeof *t);
        if (!t) {
            st = lmx_err(LMX_ERR_NOMEM, "out of memory");
            goto out;
        }
        q4r_tab = t;
        q4r_cap = nc;
    }
    if (q6) {
        st = cuda_q6r_repack(c, (uint8_t *)a->data, rows, nb);
    } else {
        unsigned g = (unsigned)(rows < 4 * (int64_t)c->n_sm ? rows : 4 * (int64_t)c->n_sm);
        q4r_repack_k<<<g, 256, rb, c->stream>>>((uint8_t *)a->data, rows, nb);
        st = cuda_launched("q4_0 repack");
    }
    if (!st) {
        q4r_tab[q4r_n].base = (uintptr_t)a->data;
        q4r_tab[q4r_n].bytes = (size_t)rows * rb;
        q4r_tab[q4r_n].row_bytes = rb;
        q4r_tab[q4r_n].dt = a->dtype;
        q4r_n++;
    }
out:
    pthread_mutex_unlock(&q4r_mu);
    return st;
}

/* ---- download: back to the file layout (host) ------------------------------ */

static void q4r_unpack_row(uint8_t *out, const uint8_t *in, size_t nb) {
    for (size_t b = 0; b < nb; b++) {
        out[18 * b] = in[16 * nb + 2 * b];
        out[18 * b + 1] = in[16 * nb + 2 * b + 1];
        memcpy(out + 18 * b + 2, in + 16 * b, 16);
    }
}

lmx_status cuda_q4r_download(lmx_cuda_ctx *c, void *dst, const void *src, size_t bytes) {
    (void)c;
    uintptr_t s0 = (uintptr_t)src, s1 = s0 + bytes;
    uint8_t *tmp = NULL, *row = NULL;
    size_t tmp_rb = 0;
    lmx_status st = LMX_OK;
    pthread_mutex_lock(&q4r_mu);
    for (size_t i = 0; i < q4r_n && !st; i++) {
        const q4r_region *r = &q4r_tab[i];
        uintptr_t lo = s0 > r->base ? s0 : r->base, hi = s1 < r->base + r->bytes ? s1 : r->base + r->bytes;
        if (lo >= hi) continue;
        size_t rb = r->row_bytes, nb = rb / (r->dt == LMX_Q6_K ? 210 : 18);
        void (*unpack)(uint8_t *, const uint8_t *, size_t) = r->dt == LMX_Q6_K ? cuda_q6r_unpack_row : q4r_unpack_row;
        if (rb > tmp_rb) { /* two rows of this region's width */
            uint8_t *t = (uint8_t *)realloc(tmp, 2 * rb);
            if (!t) {
                st = lmx_err(LMX_ERR_NOMEM, "out of memory");
                break;
            }
            tmp = t;
            tmp_rb = rb;
        }
        row = tmp + rb;
        for (size_t k = (lo - r->base) / rb; r->base + k * rb < hi; k++) {
            uintptr_t a = r->base + k * rb, z = a + rb; /* row k's device bytes */
            if (a >= s0 && z <= s1) { /* whole row in dst: in place */
                uint8_t *d = (uint8_t *)dst + (a - s0);
                memcpy(tmp, d, rb);
                unpack(d, tmp, nb);
            } else { /* a cut row: fetch it whole */
                st = cuda_check(cudaMemcpy(row, (const void *)a, rb, cudaMemcpyDeviceToHost), "download (repacked row)");
                if (st) break;
                unpack(tmp, row, nb);
                uintptr_t ca = a > s0 ? a : s0, cz = z < s1 ? z : s1;
                memcpy((uint8_t *)dst + (ca - s0), tmp + (ca - a), cz - ca);
            }
        }
    }
    pthread_mutex_unlock(&q4r_mu);
    free(tmp);
    return st;
}

/* ---- int8-x GEMV (M = 1) ------------------------------------------------- */

/* Where element l (0..31) of a block goes for MLX 4-bit words (perm): in
 * each run of 8, the even elements first, then the odd ones, so that the
 * low nibbles of an MLX word (elements 0, 2, 4, 6) and its high nibbles
 * (1, 3, 5, 7) each meet 4 consecutive int8 x. */
__device__ __forceinline__ int q4r_perm(int l) { return (l & ~7) | ((l & 1) << 2) | ((l & 7) >> 1); }

/* One warp per block of 32 (lmx_xq's q and d, as q8a_quantize_k) plus, per
 * block, m = {bits of d, 8·Σq}; perm: q in q4r_perm order (MLX). */
__global__ void q4r_quantize_k(const float *__restrict__ x, int8_t *__restrict__ q, int2 *__restrict__ m, int64_t nb,
                               bool perm) {
    asm volatile("griddepcontrol.launch_dependents;"); /* the GEMV may start loading weights */
    int lane = threadIdx.x & 31;
    int64_t b = (int64_t)blockIdx.x * Q4R_WARPS + (threadIdx.x >> 5);
    if (b >= nb) return; /* whole warps leave together */
    float v = x[b * 32 + lane];
    float db;
    int qv = xq_lane(v, &db);
    q[(b * 32 + (perm ? q4r_perm(lane) : lane))] = (int8_t)qv;
    int sum = qv;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    if (lane == 0) m[b] = make_int2(__float_as_int(db), 8 * sum);
}

/* The x quantizer inside a GEMV (LMX_CUDA_XQ_FUSE, q4r_xq_fuse): every CTA
 * quantizes all of x (nb blocks) into shared memory, xs[32·nb] (in
 * q4r_perm order if PERM) then ms[nb] as q4r_quantize_k's m, after the
 * grid's first weight loads are issued and x is ready. Why: the separate
 * quantize kernel is one graph node per matmul (~1.4 µs of wall time
 * each, 4 a layer); the GEMV re-reads x from L2 instead (K·4 bytes a CTA).
 * 8 lanes a block, 4 elements a lane (xq_quad: bit-identical to
 * q4r_quantize_k), U float4 loads a lane in flight (U = 4: K = 4096 in one
 * round; U = 2 where R = 8 rows of weight loads are in flight, which leave
 * no registers for more). */
template <bool PERM, int U>
__device__ __forceinline__ void q4r_xq_cta(const float *x, int64_t nb, int8_t *xs, int2 *ms) {
    constexpr int T = Q4R_WARPS * 32;
    int lane = threadIdx.x & 31;
    int64_t n4 = nb * 8;
    const float4 *x4 = reinterpret_cast<const float4 *>(x);
    for (int64_t i0 = (int64_t)(threadIdx.x & ~31); i0 < n4; i0 += U * T) { /* i0: warp-uniform */
        float4 v[U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            int64_t i = i0 + u * T + lane;
            v[u] = i < n4 ? x4[i] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            if (i0 + u * T >= n4) break; /* warp-uniform; n4 % 8 == 0: a block's 8 lanes are in or out together */
            int64_t i = i0 + u * T + lane;
            int q[4];
            float db;
            xq_quad(v[u], q, &db);
            bool in = i < n4;
            if (in) {
                if (PERM) {
                    int64_t base = (i >> 3) * 32;
                    int l0 = (int)(i & 7) * 4;
#pragma unroll
                    for (int e = 0; e < 4; e++) xs[base + q4r_perm(l0 + e)] = (int8_t)q[e];
                } else {
                    reinterpret_cast<uint32_t *>(xs)[i] = (uint32_t)(q[0] & 255) | (uint32_t)(q[1] & 255) << 8 |
                                                          (uint32_t)(q[2] & 255) << 16 | (uint32_t)(q[3] & 255) << 24;
                }
            }
            int sum = q[0] + q[1] + q[2] + q[3];
#pragma unroll
            for (int o = 4; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
            if (in && (lane & 7) == 0) ms[i >> 3] = make_int2(__float_as_int(db), 8 * sum);
        }
    }
}

/* Dot of one Q4_0 block (16 nibble bytes q, f16 scale dh) with int8 x
 * (xa = elements 0..15, xb = 16..31) minus 8·Σx (m.y): exact integers. */
__device__ __forceinline__ int q4r_dot(uint4 q, int4 xa, int4 xb, int off) {
    const uint32_t M4 = 0x0F0F0F0Fu;
    int dot = -off;
    dot = __dp4a((int)(q.x & M4), xa.x, dot);
    dot = __dp4a((int)((q.x >> 4) & M4), xb.x, dot);
    dot = __dp4a((int)(q.y & M4), xa.y, dot);
    dot = __dp4a((int)((q.y >> 4) & M4), xb.y, dot);
    dot = __dp4a((int)(q.z & M4), xa.z, dot);
    dot = __dp4a((int)((q.z >> 4) & M4), xb.z, dot);
    dot = __dp4a((int)(q.w & M4), xa.w, dot);
    dot = __dp4a((int)((q.w >> 4) & M4), xb.w, dot);
    return dot;
}

/* Round rd of a warp: block b = 32·rd + lane of each of its R rows. */
template <int R>
__device__ __forceinline__ void q4r_load(const uint4 *const *wq, const unsigned short *const *wd, int64_t b, uint4 *q,
                                         unsigned short *dh) {
#pragma unroll
    for (int r = 0; r < R; r++) {
        q[r] = ld_stream(wq[r] + b);
        dh[r] = __ldg(wd[r] + b);
    }
}

/* x_at: block b's int8 x (xa, xb) and m, from global memory (read-only
 * path) or from the CTA's shared copy (SH: q4r_xq_cta). */
template <bool SH>
__device__ __forceinline__ void x_at(const int8_t *xq, const int2 *xm, int64_t b, int4 &xa, int4 &xb, int2 &m) {
    const int4 *xp = reinterpret_cast<const int4 *>(xq + b * 32);
    if (SH) {
        xa = xp[0], xb = xp[1], m = xm[b];
    } else {
        xa = __ldg(xp), xb = __ldg(xp + 1), m = __ldg(xm + b);
    }
}

template <int R, bool SH>
__device__ __forceinline__ void q4r_math(const uint4 *q, const unsigned short *dh, const int8_t *xq, const int2 *xm,
                                         int64_t b, bool ok, float *acc) {
    int4 xa, xb;
    int2 m;
    x_at<SH>(xq, xm, b, xa, xb, m);
    float dx = ok ? __int_as_float(m.x) : 0.0f;
#pragma unroll
    for (int r = 0; r < R; r++) {
        float d = __half2float(__ushort_as_half(dh[r])) * dx;
        acc[r] = fmaf(d, (float)q4r_dot(q[r], xa, xb, m.y), acc[r]);
    }
}

/* Launched with programmatic dependent launch (LMX_CUDA_PDL, on by
 * default), this grid may start while q4r_quantize_k (or, FX, the kernel
 * that writes x) still runs: it issues its first round of weight loads
 * (which do not depend on x), then waits for x (griddepcontrol.wait; a
 * no-op for a plain launch). FX: x is f32 (xf) and each CTA quantizes it
 * into dynamic shared memory (32·nb + 8·nb bytes) itself. */
template <int R, bool FX>
__global__ void __launch_bounds__(Q4R_WARPS * 32, FX ? 2 : 0) /* FX: the quantizer's registers must not drop R = 8 to one block an SM */
    gemv_q4r_k(float *__restrict__ out, const int8_t *__restrict__ xq, const int2 *__restrict__ xm, const float *xf,
               const uint8_t *__restrict__ w, size_t row_bytes, int64_t N, int64_t nb, const void *bias, int bdt,
               int S) {
    __shared__ float red[Q4R_WARPS][R];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int64_t row0 = ((int64_t)blockIdx.x * (Q4R_WARPS / S) + warp / S) * R;
    int ks = warp % S;
    int64_t nrd = (nb + 31) / 32, r0 = nrd * ks / S, r1 = nrd * (ks + 1) / S;
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = 0.0f;
    bool live = row0 < N && r0 < r1;
    const uint4 *wq[R];
    const unsigned short *wd[R];
    uint4 q[R];
    unsigned short dh[R];
    int64_t b = r0 * 32 + lane;
    bool ok = b < nb; /* the last round of a K that is not a multiple of 1024 */
    if (live) {
#pragma unroll
        for (int r = 0; r < R; r++) { /* rows past N read row N-1 (their sums are not written) */
            const uint8_t *p = w + (size_t)(row0 + r < N ? row0 + r : N - 1) * row_bytes;
            wq[r] = reinterpret_cast<const uint4 *>(p);
            wd[r] = reinterpret_cast<const unsigned short *>(p + 16 * nb);
        }
        q4r_load<R>(wq, wd, ok ? b : nb - 1, q, dh);
    }
    asm volatile("griddepcontrol.wait;" ::: "memory");
    if (FX) {
        extern __shared__ int4 q4r_dyn[];
        int8_t *xs = reinterpret_cast<int8_t *>(q4r_dyn);
        int2 *ms = reinterpret_cast<int2 *>(xs + nb * 32);
        q4r_xq_cta<false, R == 8 ? 2 : 4>(xf, nb, xs, ms);
        __syncthreads();
        xq = xs, xm = ms;
    }
    if (live) {
        q4r_math<R, FX>(q, dh, xq, xm, ok ? b : nb - 1, ok, acc);
#pragma unroll 2
        for (int64_t rd = r0 + 1; rd < r1; rd++) {
            b = rd * 32 + lane;
            ok = b < nb;
            if (!ok) b = nb - 1;
            q4r_load<R>(wq, wd, b, q, dh);
            q4r_math<R, FX>(q, dh, xq, xm, b, ok, acc);
        }
    }
    qg_finish<R>(red, acc, out, bias, bdt, N, row0, S);
}

/* xf != NULL: the GEMV quantizes x itself (gemv_q4r_k<R, true>). */
template <int R>
static lmx_status q4r_launch(lmx_cuda_ctx *c, const cuda_qw *qw, float *out, const int8_t *xq, const int2 *xm,
                             const float *xf, const void *bias, int bdt) {
    int64_t N = qw->N, nb = qw->K / 32, groups = (N + R - 1) / R;
    int S = qr_split(c, Q4R_WARPS, groups, (nb + 31) / 32);
    unsigned grid = (unsigned)((groups + Q4R_WARPS / S - 1) / (Q4R_WARPS / S)); /* = q4r_grid */
    if (xf)
        return cuda_launch_pdl(c, gemv_q4r_k<R, true>, grid, Q4R_WARPS * 32, (size_t)nb * 40, "q4_0 gemv", out, xq,
                               xm, xf, qw->w, qw->row_bytes, N, nb, bias, bdt, S);
    return cuda_launch_pdl(c, gemv_q4r_k<R, false>, grid, Q4R_WARPS * 32, 0, "q4_0 gemv", out, xq, xm, xf, qw->w,
                           qw->row_bytes, N, nb, bias, bdt, S);
}

/* LMX_CUDA_XQ_FUSE: the int8-x GEMVs quantize x in their prologue (one
 * graph node a matmul instead of two) when K <= kmax and the grid is one
 * wave (<= 2 CTAs an SM: the fused kernels keep 2 blocks an SM). Each CTA
 * re-quantizes all of x after the wait (K·4 bytes from L2), which PDL's
 * weight loads hide only once: with a second wave of CTAs, or K = 4096
 * (8B-layer Q4_0: 0.621 -> 0.654 ms a token on an H100) and 8192 (1B down),
 * the prologue costs more than the node it removes (bench/cuda-notes.md).
 * Unset or "1": kmax 2048 (the 1B layers' q|k|v, o, gate|up); "0": never
 * (A/B); a number n: kmax = n (at most 32768: 40 KB of shared memory).
 * x must be 16-byte aligned (float4 loads). Read every call (tests switch
 * it within a process; a captured step graph keeps what it captured). */
static bool q4r_xq_fuse(const lmx_cuda_ctx *c, int64_t K, const float *x, unsigned grid) {
    const char *e = getenv("LMX_CUDA_XQ_FUSE");
    int64_t kmax = !e || !*e || !strcmp(e, "1") ? 2048 : atoll(e);
    if (kmax > 32768) kmax = 32768;
    return K <= kmax && K % 32 == 0 && ((uintptr_t)x & 15) == 0 && grid <= 2u * (unsigned)c->n_sm;
}

/* The grid of gemv_q4r_k / gemv_mlx4_q8_k for N rows, R rows a warp. */
static unsigned q4r_grid(const lmx_cuda_ctx *c, int64_t N, int64_t nb, int R) {
    int64_t groups = (N + R - 1) / R;
    int S = qr_split(c, Q4R_WARPS, groups, (nb + 31) / 32);
    return (unsigned)((groups + Q4R_WARPS / S - 1) / (Q4R_WARPS / S));
}

/* ---- MLX affine 4-bit with int8 x (default with LMX_INT8_ACT; LMX_CUDA_MLX_INT8=0 off) ---
 * Not the default: MLX models are checked against mlx-lm at f32-x
 * tolerances. The same scheme as Q4_0: a 16-byte MLX vector is 32
 * consecutive weights = one int8 x block; x is quantized in q4r_perm order
 * so that an MLX word's low nibbles (elements 0,2,4,6) and high nibbles
 * (1,3,5,7) each dot 4 consecutive int8 x. Per vector of row r:
 * dx·(s·Σ q·xq + b·Σ xq), with s, b the vector's group scale and bias.
 * Error: x's rounding only (|Δx| <= dx/2 per element, as Q4_0's int8 x). */
/* Dot of one MLX 4-bit vector (32 weights; word t = elements 8t..8t+7,
 * nibble e = element 8t+e) with int8 x in q4r_perm order. */
__device__ __forceinline__ int mlx4_dot(uint4 q, int4 xa, int4 xb) {
    const uint32_t M4 = 0x0F0F0F0Fu;
    int dot = __dp4a((int)(q.x & M4), xa.x, 0);
    dot = __dp4a((int)((q.x >> 4) & M4), xa.y, dot);
    dot = __dp4a((int)(q.y & M4), xa.z, dot);
    dot = __dp4a((int)((q.y >> 4) & M4), xa.w, dot);
    dot = __dp4a((int)(q.z & M4), xb.x, dot);
    dot = __dp4a((int)((q.z >> 4) & M4), xb.y, dot);
    dot = __dp4a((int)(q.w & M4), xb.z, dot);
    dot = __dp4a((int)((q.w >> 4) & M4), xb.w, dot);
    return dot;
}

/* so[r]: row r's first group scale (a 32-bit index: the launch checks N·G) */
template <int R, typename Ts>
__device__ __forceinline__ void mlx4_load(const uint4 *const *wq, const Ts *__restrict__ sc, const Ts *__restrict__ bi,
                                          const int *so, int64_t b, int vpg_shift, uint4 *q, float *s, float *bb) {
    int g = (int)(b >> vpg_shift);
#pragma unroll
    for (int r = 0; r < R; r++) {
        q[r] = ld_stream(wq[r] + b);
        s[r] = ldf(sc, so[r] + g);
        bb[r] = bi ? ldf(bi, so[r] + g) : 0.0f;
    }
}

template <int R, bool SH>
__device__ __forceinline__ void mlx4_math(const uint4 *q, const float *s, const float *bb, const int8_t *xq,
                                          const int2 *xm, int64_t b, bool ok, float *acc) {
    int4 xa, xb;
    int2 m;
    x_at<SH>(xq, xm, b, xa, xb, m);
    float dx = ok ? __int_as_float(m.x) : 0.0f, sx = (float)(m.y >> 3);
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = fmaf(dx, fmaf(s[r], (float)mlx4_dot(q[r], xa, xb), bb[r] * sx), acc[r]);
}

/* FX: as gemv_q4r_k's (x quantized by each CTA, in q4r_perm order) */
template <int R, typename Ts, bool FX>
__global__ void __launch_bounds__(Q4R_WARPS * 32, 2) /* <= 128 registers: 2 blocks an SM */
    gemv_mlx4_q8_k(float *__restrict__ out, const int8_t *__restrict__ xq, const int2 *__restrict__ xm, const float *xf,
                   const uint4 *__restrict__ w, const Ts *__restrict__ sc, const Ts *__restrict__ bi, int64_t N,
                   int64_t nb, int vpg_shift, const void *bias, int bdt, int S) {
    __shared__ float red[Q4R_WARPS][R];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int64_t row0 = ((int64_t)blockIdx.x * (Q4R_WARPS / S) + warp / S) * R;
    int ks = warp % S;
    int64_t nrd = (nb + 31) / 32, r0 = nrd * ks / S, r1 = nrd * (ks + 1) / S, G = nb >> vpg_shift;
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; r++) acc[r] = 0.0f;
    bool live = row0 < N && r0 < r1;
    const uint4 *wq[R];
    int so[R];
    uint4 q[R];
    float s[R], bb[R];
    int64_t b = r0 * 32 + lane;
    bool ok = b < nb;
    if (live) {
#pragma unroll
        for (int r = 0; r < R; r++) {
            int64_t row = row0 + r < N ? row0 + r : N - 1;
            wq[r] = w + row * nb;
            so[r] = (int)(row * G);
        }
        mlx4_load<R, Ts>(wq, sc, bi, so, ok ? b : nb - 1, vpg_shift, q, s, bb);
    }
    asm volatile("griddepcontrol.wait;" ::: "memory");
    if (FX) {
        extern __shared__ int4 q4r_dyn[];
        int8_t *xs = reinterpret_cast<int8_t *>(q4r_dyn);
        int2 *ms = reinterpret_cast<int2 *>(xs + nb * 32);
        q4r_xq_cta<true, R == 8 ? 2 : 4>(xf, nb, xs, ms);
        __syncthreads();
        xq = xs, xm = ms;
    }
    if (live) {
        mlx4_math<R, FX>(q, s, bb, xq, xm, ok ? b : nb - 1, ok, acc);
#pragma unroll 2
        for (int64_t rd = r0 + 1; rd < r1; rd++) {
            b = rd * 32 + lane;
            ok = b < nb;
            if (!ok) b = nb - 1;
            mlx4_load<R, Ts>(wq, sc, bi, so, b, vpg_shift, q, s, bb);
            mlx4_math<R, FX>(q, s, bb, xq, xm, b, ok, acc);
        }
    }
    qg_finish<R>(red, acc, out, bias, bdt, N, row0, S);
}

template <int R, typename Ts>
static lmx_status mlx4_q8_launch(lmx_cuda_ctx *c, const cuda_qw *qw, float *out, const int8_t *xq, const int2 *xm,
                                 const float *xf, const void *bias, int bdt, int vpg_shift) {
    int64_t N = qw->N, nb = qw->K / 32, groups = (N + R - 1) / R;
    int S = qr_split(c, Q4R_WARPS, groups, (nb + 31) / 32);
    unsigned grid = (unsigned)((groups + Q4R_WARPS / S - 1) / (Q4R_WARPS / S));
    const uint4 *w = reinterpret_cast<const uint4 *>(qw->w);
    if (xf)
        return cuda_launch_pdl(c, gemv_mlx4_q8_k<R, Ts, true>, grid, Q4R_WARPS * 32, (size_t)nb * 40,
                               "mlx 4-bit gemv", out, xq, xm, xf, w, (const Ts *)qw->sc, (const Ts *)qw->bi, N, nb,
                               vpg_shift, bias, bdt, S);
    return cuda_launch_pdl(c, gemv_mlx4_q8_k<R, Ts, false>, grid, Q4R_WARPS * 32, 0, "mlx 4-bit gemv", out, xq, xm,
                           xf, w, (const Ts *)qw->sc, (const Ts *)qw->bi, N, nb, vpg_shift, bias, bdt, S);
}

bool cuda_gemv_mlx4_q8(lmx_cuda_ctx *c, const cuda_qw *qw, float *out, const float *x, const void *bias, int bdt,
                       lmx_status *st) {
    /* On with the backend's int8 x (LMX_INT8_ACT, default on), as the GGUF
     * GEMVs: on CUDA quantized models already get rounded activations in
     * prefill and goldens with a stated bound (tests/unit/golden.c);
     * LMX_CUDA_MLX_INT8=0 keeps f32 x for MLX alone, =1 forces it. */
    static int env = -2;
    if (env == -2) {
        const char *e = getenv("LMX_CUDA_MLX_INT8");
        env = e && *e ? strcmp(e, "0") != 0 : -1;
    }
    bool on = env >= 0 ? env != 0 : c->int8_act;
    *st = LMX_OK;
    if (!on || qw->dt != LMX_MLX_Q4 || qw->K % 32 || qw->group < 32 || (qw->group & (qw->group - 1)) ||
        (qw->sdt != LMX_BF16 && qw->sdt != LMX_F16) || ((uintptr_t)qw->w & 15) ||
        qw->N * (qw->K / qw->group) >= ((int64_t)1 << 31))
        return false;
    int64_t K = qw->K, nb = K / 32;
    int vpg_shift = 0;
    while ((32 << vpg_shift) < qw->group) vpg_shift++;
    int8_t *xq = NULL;
    int2 *xm = NULL;
    int R = c->qgemv_rows ? c->qgemv_rows : qw->N * K >= (int64_t)16 << 20 ? 8 : 2;
    if (R != 8) R = 2; /* the kernels below */
    const float *xf = q4r_xq_fuse(c, K, x, q4r_grid(c, qw->N, nb, R)) ? x : NULL;
    if (!xf) {
        size_t qbytes = ((size_t)K + 15) & ~(size_t)15;
        void *scr;
        *st = cuda_scratch(c, qbytes + (size_t)nb * sizeof(int2), &scr);
        if (*st) return true;
        xq = (int8_t *)scr;
        xm = (int2 *)((char *)scr + qbytes);
        q4r_quantize_k<<<(unsigned)((nb + Q4R_WARPS - 1) / Q4R_WARPS), Q4R_WARPS * 32, 0, c->stream>>>(x, xq, xm,
                                                                                                  nb, true);
        *st = cuda_launched("mlx 4-bit gemv: quantize x");
        if (*st) return true;
    }
    bool bf = qw->sdt == LMX_BF16;
    if (R == 8) *st = bf ? mlx4_q8_launch<8, __nv_bfloat16>(c, qw, out, xq, xm, xf, bias, bdt, vpg_shift)
                         : mlx4_q8_launch<8, __half>(c, qw, out, xq, xm, xf, bias, bdt, vpg_shift);
    else *st = bf ? mlx4_q8_launch<2, __nv_bfloat16>(c, qw, out, xq, xm, xf, bias, bdt, vpg_shift)
                  : mlx4_q8_launch<2, __half>(c, qw, out, xq, xm, xf, bias, bdt, vpg_shift);
    return true;
}

/* ---- f32-x GEMV (M <= 8: batched decode, speculative verify) --------------
 * As the f32 lane kernel of the file layout (cuda_qgemv_gguf.cu): 4 lanes a
 * block, lane j takes word j of its 16 nibble bytes (elements 4j.. and
 * 16+4j..) and the float4s of x at 32b+4j and 32b+16+4j, so a warp's x load
 * covers 8 whole blocks (8 lines), not 32 lanes × 128 scattered bytes; R
 * rows a warp share the x loads. q - 8 exact (2^23 trick), d·Σx·q per lane
 * and block, as the staged kernel's QDecInt path. */
template <int MR, int R>
__global__ void __launch_bounds__(Q4R_WARPS * 32)
    gemv_q4r_f32_k(float *__restrict__ out, const float *__restrict__ x, const uint8_t *__restrict__ w,
                   size_t row_bytes, int64_t N, int64_t nb, int M, int64_t xs, int64_t os, const void *bias, int bdt) {
    int lane = threadIdx.x & 31, j = lane & 3;
    int64_t row0 = ((int64_t)blockIdx.x * Q4R_WARPS + (threadIdx.x >> 5)) * R;
    if (row0 >= N) return; /* whole warps */
    const uint8_t *p[R];
#pragma unroll
    for (int r = 0; r < R; r++) p[r] = w + (size_t)(row0 + r < N ? row0 + r : N - 1) * row_bytes;
    float acc[R * MR];
#pragma unroll
    for (int i = 0; i < R * MR; i++) acc[i] = 0.0f;
#pragma unroll 2
    for (int64_t b = lane >> 2; b < nb; b += 8) {
        uint32_t wd[R];
        float d[R];
#pragma unroll
        for (int r = 0; r < R; r++) {
            wd[r] = __ldg(reinterpret_cast<const unsigned *>(p[r] + 16 * b + 4 * j));
            d[r] = __half2float(__ushort_as_half(__ldg(reinterpret_cast<const unsigned short *>(p[r] + 16 * nb) + b)));
        }
#pragma unroll
        for (int m = 0; m < MR; m++) {
            if (m >= M) break;
            const float4 *xp = reinterpret_cast<const float4 *>(x + m * xs + 32 * b + 4 * j);
            float4 xa = __ldg(xp), xb = __ldg(xp + 4);
#pragma unroll
            for (int r = 0; r < R; r++) {
                uint32_t lo = wd[r] & 0x0F0F0F0Fu, hi = (wd[r] >> 4) & 0x0F0F0F0Fu;
                float s = xa.x * q_byte_f(lo, 0, 8.0f);
                s = fmaf(xa.y, q_byte_f(lo, 1, 8.0f), s);
                s = fmaf(xa.z, q_byte_f(lo, 2, 8.0f), s);
                s = fmaf(xa.w, q_byte_f(lo, 3, 8.0f), s);
                s = fmaf(xb.x, q_byte_f(hi, 0, 8.0f), s);
                s = fmaf(xb.y, q_byte_f(hi, 1, 8.0f), s);
                s = fmaf(xb.z, q_byte_f(hi, 2, 8.0f), s);
                s = fmaf(xb.w, q_byte_f(hi, 3, 8.0f), s);
                acc[r * MR + m] = fmaf(d[r], s, acc[r * MR + m]);
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

/* x rows not 16-byte aligned (a strided view): one lane a block, scalar x
 * (rare; correctness only). */
__global__ void __launch_bounds__(Q4R_WARPS * 32)
    gemv_q4r_f32_scalar_k(float *__restrict__ out, const float *__restrict__ x, const uint8_t *__restrict__ w,
                          size_t row_bytes, int64_t N, int64_t nb, int M, int64_t xs, int64_t os, const void *bias,
                          int bdt) {
    int lane = threadIdx.x & 31;
    int64_t row = (int64_t)blockIdx.x * Q4R_WARPS + (threadIdx.x >> 5);
    if (row >= N) return;
    const uint8_t *p = w + (size_t)row * row_bytes;
    float bv = bias ? ld_any(bias, bdt, row) : 0.0f;
    for (int m = 0; m < M; m++) {
        float acc = 0.0f;
        for (int64_t b = lane; b < nb; b += 32) {
            float v[32];
            q4r_piece<false>(p, nb, b, v);
            const float *xm = x + m * xs + 32 * b;
            for (int e = 0; e < 32; e++) acc = fmaf(__ldg(xm + e), v[e], acc);
        }
        acc = warp_sum(acc);
        if (lane == 0) out[m * os + row] = acc + bv;
    }
}

/* ---- entry ------------------------------------------------------------------- */

lmx_status cuda_gemv_q4r(lmx_cuda_ctx *c, const cuda_qw *qw, float *out, const float *x, int M, int64_t xs,
                         int64_t os, const void *bias, int bdt) {
    int64_t N = qw->N, K = qw->K, nb = K / 32;
    if (M == 1 && c->int8_act && !c->qgemv_old) {
        int8_t *xq = NULL;
        int2 *xm = NULL;
        /* rows a warp by size (H200 table in bench/cuda-notes.md): 8 (16
         * loads of 16 bytes in flight a lane) for the 8B gate/up and down,
         * 4 for 1B gate/up / 8B q/o, 2 for the short matrices */
        int R = c->qgemv_rows ? c->qgemv_rows : N * K >= (int64_t)32 << 20 ? 8 : N * K >= (int64_t)8 << 20 ? 4 : 2;
        if (R != 8 && R != 4) R = 2; /* the kernels below */
        const float *xf = q4r_xq_fuse(c, K, x, q4r_grid(c, N, nb, R)) ? x : NULL;
        if (!xf) {
            size_t qbytes = ((size_t)K + 15) & ~(size_t)15;
            void *scr;
            LMX_TRY(cuda_scratch(c, qbytes + (size_t)nb * sizeof(int2), &scr));
            xq = (int8_t *)scr;
            xm = (int2 *)((char *)scr + qbytes);
            q4r_quantize_k<<<(unsigned)((nb + Q4R_WARPS - 1) / Q4R_WARPS), Q4R_WARPS * 32, 0, c->stream>>>(
                x, xq, xm, nb, false);
            LMX_TRY(cuda_launched("q4_0 gemv: quantize x"));
        }
        if (R == 8) return q4r_launch<8>(c, qw, out, xq, xm, xf, bias, bdt);
        if (R == 4) return q4r_launch<4>(c, qw, out, xq, xm, xf, bias, bdt);
        return q4r_launch<2>(c, qw, out, xq, xm, xf, bias, bdt);
    }
    bool xvec = ((uintptr_t)x & 15) == 0 && (M == 1 || xs % 4 == 0);
    if (!xvec) {
        unsigned g = (unsigned)((N + Q4R_WARPS - 1) / Q4R_WARPS);
        gemv_q4r_f32_scalar_k<<<g, Q4R_WARPS * 32, 0, c->stream>>>(out, x, qw->w, qw->row_bytes, N, nb, M, xs, os,
                                                                   bias, bdt);
        return LMX_OK;
    }
    constexpr int R = 4;
    unsigned g = (unsigned)((N + R * Q4R_WARPS - 1) / (R * Q4R_WARPS));
    if (M == 1)
        gemv_q4r_f32_k<1, R><<<g, Q4R_WARPS * 32, 0, c->stream>>>(out, x, qw->w, qw->row_bytes, N, nb, M, xs, os,
                                                                  bias, bdt);
    else if (M <= 4)
        gemv_q4r_f32_k<4, R><<<g, Q4R_WARPS * 32, 0, c->stream>>>(out, x, qw->w, qw->row_bytes, N, nb, M, xs, os,
                                                                  bias, bdt);
    else
        gemv_q4r_f32_k<8, R><<<g, Q4R_WARPS * 32, 0, c->stream>>>(out, x, qw->w, qw->row_bytes, N, nb, M, xs, os,
                                                                  bias, bdt);
    return LMX_OK;
}
