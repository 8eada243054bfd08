/* cpu_fast_matmul.c - out[M,N] = x[M,K] · w[N,K]ᵀ + b with the SIMD tables,
 * for f32/f16/bf16 weights; everything else goes to the reference kernel.
 *
 * Small M (decode, M < LMX_GEMM_MIN_M): matvec. Threads claim ranges of
 * weight rows, long ones first and short ones at the end (cpu_claim.h;
 * every row has K elements, so rows are bytes): each weight byte is
 * streamed once by one core while x stays in L1, and a core slowed down by
 * another process (or by its share of the memory bus) claims fewer rows
 * instead of leaving the other one spinning at the join. Which thread does a
 * row never changes its value.
 * GGUF Q8_0/Q4_0/Q6_K weights go to the int8-activation kernels first
 * (cpu_fast_qmatmul.c); with LMX_INT8_ACT=0, and for MLX affine 4/8-bit
 * weights, they take the same two paths as floats (quantized matvec where
 * the table has one; the GEMM dequantizes each panel once, with the
 * reference's arithmetic).
 * Larger M (prefill): a blocked GEMM. Threads take contiguous ranges of NR-row
 * weight panels; per (MC x KC) block every thread packs x into A[k][MR] once,
 * then converts each weight panel to f32 once (B[k][NR], L1-resident) and
 * reuses it for all M rows through the register tile. Each output element is
 * summed in an order that depends only on K and KC, never on the thread
 * count. */
#include "backend/cpu/cpu_claim.h"
#include "backend/cpu/cpu_simd.h"

#include <stdatomic.h>

#define LMX_GEMM_MIN_M 4
#define KC 256 /* B panel = KC*NR floats: 32 KiB at NR 32, inside L1 (48 KiB) */
#define MC 512 /* A block = MC*KC floats: 512 KiB, inside L2 (2 MiB) */

typedef struct {
    const lmx_simd_kernels *k;
    const lmx_node *n;
    _Atomic bool failed;
    lmx_row_claim rows; /* matvec: weight rows (cpu_claim.h) */
} fm_job;

static bool is_float(lmx_dtype t) { return t == LMX_F32 || t == LMX_F16 || t == LMX_BF16; }
/* GGUF blocks the GEMM dequantizes per panel; the tables' f32-activation
 * matvec_q covers the first three only. */
static bool is_block_q(lmx_dtype t) { return t == LMX_Q8_0 || t == LMX_Q4_0 || t == LMX_Q6_K || t == LMX_Q4_K; }
static bool has_matvec_q(lmx_dtype t) { return t == LMX_Q8_0 || t == LMX_Q4_0 || t == LMX_Q6_K; }

static bool is_mlx(lmx_dtype t) { return t == LMX_MLX_Q4 || t == LMX_MLX_Q8; }

/* MLX affine 4/8-bit with scales and biases of one float dtype, groups of a
 * multiple of 32 (mlx-lm's 32/64/128) that tile both K and KC. */
static bool mlx_ok(const lmx_simd_kernels *k, const lmx_node *n, bool decode) {
    const lmx_array *w = n->src[1], *sc = n->src[3], *bi = n->src[4];
    int group = n->ip[0];
    if (!is_mlx(w->dtype) || !sc || !bi || group <= 0 || group % 32 || KC % group) return false;
    if (decode && !k->matvec_mlx) return false;
    if (!is_float(sc->dtype) || bi->dtype != sc->dtype) return false;
    if (!lmx_array_is_contiguous(sc) || !lmx_array_is_contiguous(bi)) return false;
    int64_t K = w->shape[w->ndim - 1];
    return K % group == 0 && lmx_array_numel(sc) == w->shape[0] * (K / group) && lmx_array_numel(bi) == lmx_array_numel(sc);
}

static bool handled(const lmx_simd_kernels *k, const lmx_node *n) {
    const lmx_array *x = n->src[0], *w = n->src[1];
    bool decode = cpu_rows(x) < LMX_GEMM_MIN_M;
    if (n->src[3] || n->src[4]) { /* scales: an MLX packed form */
        if (!mlx_ok(k, n, decode)) return false;
    } else if (is_mlx(w->dtype)) {
        return false;
    }
    if (!is_float(w->dtype) && !is_mlx(w->dtype) &&
        !(is_block_q(w->dtype) && (!decode || (k->matvec_q && has_matvec_q(w->dtype)))))
        return false;
    if (is_block_q(w->dtype) && w->shape[w->ndim - 1] % lmx_dtype_info(w->dtype)->block) return false;
    /* The GEMM dequantizes KC-wide chunks: blocks must tile KC. */
    if (!decode && is_block_q(w->dtype) && KC % lmx_dtype_info(w->dtype)->block) return false;
    if (w->ndim != 2 || !lmx_array_is_contiguous(w)) return false;
    if (x->dtype != LMX_F32 || n->out->dtype != LMX_F32) return false;
    if (x->ndim < 1 || x->strides[x->ndim - 1] != 1 || n->out->strides[n->out->ndim - 1] != 1) return false;
    return true;
}

/* Adds the bias to out columns [lo, hi) of all M rows. */
bool lmx_fast_add_bias(const lmx_array *b, float *out, int64_t os, int64_t M, int64_t lo, int64_t hi) {
    if (!b || hi <= lo) return true;
    float *bf = lmx_fast_scratch(3, hi - lo);
    if (!bf) return false;
    lmx_dtype_info(b->dtype)->to_f32((const uint8_t *)b->data + lmx_dtype_bytes(b->dtype, lo), bf, hi - lo);
    for (int64_t m = 0; m < M; m++)
        for (int64_t j = lo; j < hi; j++) out[m * os + j] += bf[j - lo];
    return true;
}

static void matvec_task(int ith, int nth, void *arg) {
    fm_job *job = arg;
    const lmx_node *n = job->n;
    const lmx_array *x = n->src[0], *w = n->src[1];
    int64_t M = cpu_rows(x), K = w->shape[1];
    int64_t xs = cpu_row_stride(x), os = cpu_row_stride(n->out);
    (void)ith, (void)nth;
    float *out = n->out->data;
    if ((is_mlx(w->dtype) || w->dtype == LMX_BF16) && !lmx_fast_scratch(2, M * K)) { /* x split even/odd */
        job->failed = true;
        return;
    }
    int64_t lo, hi;
    while (lmx_row_claim_next(&job->rows, &lo, &hi)) {
        if (is_float(w->dtype))
            job->k->matvec(w->dtype, w->data, K, lo, hi, x->data, xs, M, out, os);
        else if (is_mlx(w->dtype))
            job->k->matvec_mlx(lmx_dtype_info(w->dtype)->bits, w->data, K, lo, hi, x->data, xs, M, out, os,
                               n->src[3]->dtype, n->src[3]->data, n->src[4]->data, n->ip[0]);
        else
            job->k->matvec_q(w->dtype, w->data, K, lo, hi, x->data, xs, M, out, os);
        if (!lmx_fast_add_bias(n->src[2], out, os, M, lo, hi)) job->failed = true;
    }
}

/* Block-quantized weights for the GEMM: each row chunk is dequantized with
 * the dtype's own to_f32 (KC is a multiple of the 32-element block) and
 * written down a column of B: the same f32 weights the reference uses, and
 * the conversion is paid once per weight for all M rows. */
static void pack_b_dequant(const lmx_node *n, int NR, int64_t n0, int nr, int64_t k0, int64_t kc, float *B,
                           float *tmp) {
    const lmx_array *w = n->src[1], *sc = n->src[3], *bi = n->src[4];
    int64_t K = w->shape[1];
    const lmx_dtype_traits *tr = lmx_dtype_info(w->dtype);
    for (int j = 0; j < NR; j++) {
        if (j >= nr) {
            for (int64_t k = 0; k < kc; k++) B[k * NR + j] = 0;
            continue;
        }
        tr->to_f32((const uint8_t *)w->data + lmx_dtype_bytes(w->dtype, (n0 + j) * K + k0), tmp, kc);
        if (sc) { /* MLX: grid values -> s*q + b, as lmx_cpu_dequant_row computes them */
            int group = n->ip[0];
            int64_t G = K / group;
            const lmx_dtype_traits *st = lmx_dtype_info(sc->dtype);
            for (int64_t g0 = 0; g0 < kc; g0 += group) {
                int64_t gi = (n0 + j) * G + (k0 + g0) / group;
                float s, b;
                st->to_f32((const uint8_t *)sc->data + lmx_dtype_bytes(sc->dtype, gi), &s, 1);
                st->to_f32((const uint8_t *)bi->data + lmx_dtype_bytes(bi->dtype, gi), &b, 1);
                for (int64_t k = g0; k < g0 + group; k++) tmp[k] = s * tmp[k] + b;
            }
        }
        for (int64_t k = 0; k < kc; k++) B[k * NR + j] = tmp[k];
    }
}

static void gemm_task(int ith, int nth, void *arg) {
    fm_job *job = arg;
    const lmx_simd_kernels *kt = job->k;
    const lmx_node *n = job->n;
    const lmx_array *x = n->src[0], *w = n->src[1];
    int64_t M = cpu_rows(x), K = w->shape[1], N = w->shape[0];
    int64_t xs = cpu_row_stride(x), os = cpu_row_stride(n->out);
    const int MR = kt->mr, NR = kt->nr;
    int64_t plo, phi;
    lmx_split((N + NR - 1) / NR, ith, nth, &plo, &phi);
    if (plo >= phi) return;
    int64_t mc_max = M < MC ? M : MC;
    int64_t mblocks = (mc_max + MR - 1) / MR;
    float *A = lmx_fast_scratch(0, mblocks * MR * KC);
    float *B = lmx_fast_scratch(1, (int64_t)KC * NR);
    float *Wt = is_float(w->dtype) ? NULL : lmx_fast_scratch(2, KC);
    if (!A || !B || (!is_float(w->dtype) && !Wt)) {
        job->failed = true;
        return;
    }
    const float *xd = x->data;
    float *out = n->out->data;
    for (int64_t m0 = 0; m0 < M; m0 += MC) {
        int64_t mc = M - m0 < MC ? M - m0 : MC;
        int64_t mb_n = (mc + MR - 1) / MR;
        for (int64_t k0 = 0; k0 < K; k0 += KC) {
            int64_t kc = K - k0 < KC ? K - k0 : KC;
            /* A[mb][k][i] = x[m0 + mb*MR + i][k0 + k]; padding rows are zero. */
            for (int64_t mb = 0; mb < mb_n; mb++) {
                float *Ab = A + mb * kc * MR;
                for (int i = 0; i < MR; i++) {
                    int64_t m = m0 + mb * MR + i;
                    if (m < m0 + mc) {
                        const float *xr = xd + m * xs + k0;
                        for (int64_t k = 0; k < kc; k++) Ab[k * MR + i] = xr[k];
                    } else {
                        for (int64_t k = 0; k < kc; k++) Ab[k * MR + i] = 0;
                    }
                }
            }
            for (int64_t p = plo; p < phi; p++) {
                int64_t n0 = p * NR;
                int nr = N - n0 < NR ? (int)(N - n0) : NR;
                if (is_float(w->dtype))
                    kt->pack_b(w->dtype, w->data, K, n0, nr, k0, kc, B);
                else
                    pack_b_dequant(n, NR, n0, nr, k0, kc, B, Wt);
                for (int64_t mb = 0; mb < mb_n; mb++) {
                    int64_t mr = mc - mb * MR < MR ? mc - mb * MR : MR;
                    kt->gemm_tile(kc, A + mb * kc * MR, B, out + (m0 + mb * MR) * os + n0, os, (int)mr, nr, k0 > 0);
                }
            }
        }
    }
    int64_t lo = plo * NR, hi = phi * NR < N ? phi * NR : N;
    if (!lmx_fast_add_bias(n->src[2], out, os, M, lo, hi)) job->failed = true;
}

lmx_status lmx_fast_matmul_with(const lmx_simd_kernels *k, const lmx_node *n, lmx_pool *pool) {
    if (!k) return lmx_cpu_matmul(n, pool);
    lmx_status st;
    if (lmx_fast_qmatmul(k, n, pool, &st)) return st;
    if (!handled(k, n)) return lmx_cpu_matmul(n, pool);
    fm_job job = {.k = k, .n = n};
    atomic_init(&job.failed, false);
    int64_t M = cpu_rows(n->src[0]), N = n->src[1]->shape[0];
    lmx_row_claim_init(&job.rows, N, lmx_pool_size(pool), 16);
    lmx_pool_run(pool, M < LMX_GEMM_MIN_M ? matvec_task : gemm_task, &job);
    return job.failed ? lmx_err(LMX_ERR_NOMEM, "matmul: out of memory") : LMX_OK;
}

lmx_status lmx_fast_matmul(const lmx_node *n, lmx_pool *pool) { return lmx_fast_matmul_with(lmx_simd(), n, pool); }
