/* cpu_vjp_gemm.c - C (+)= A·B for the vjps (lmx_vjp_gemm in cpu_vjp.h) on
 * the SIMD GEMM tile (cpu_simd.h). A is a strided f32 matrix (dout, or a
 * transpose); B is a row-major matrix whose rows run along the sum (W's
 * rows for dx, x's rows for dW), of any weight dtype, or a transposed f32
 * one (Kᵀ in attention). As in the forward GEMM (cpu_fast_matmul.c), each
 * (MC x KC) block of A is packed into MR-row panels and each (KC x NR)
 * block of B is converted to f32 once (bf16 widened, MLX/GGUF rows
 * dequantized with the reference's arithmetic: s·q + b per group) and
 * reused for all rows of A, so no dense f32 copy of a weight is made.
 * Threads claim parts of C - groups of NR-column panels or, when C has
 * too few of them (LoRA's rank-r sides), of row blocks - from a counter;
 * either way every element is summed over k in order by one thread, so
 * results do not depend on the thread count or on who ran what. */
#include "backend/cpu/cpu_vjp.h"

#include <stdatomic.h>
#include <string.h>

#define KC 256 /* B block = KC*NR floats: 32 KiB at NR 32 (L1) */
#define MC 512 /* A block = MC*KC floats: 512 KiB (L2) */

typedef lmx_vjp_gemm vg_job;

/* memcpy loads: mmapped MLX-layout tensors may sit at any byte offset. */
static float ld_scalar(lmx_dtype dt, const void *p, int64_t i) {
    if (dt == LMX_F32) {
        float f;
        memcpy(&f, (const float *)p + i, sizeof f);
        return f;
    }
    if (dt == LMX_BF16) {
        uint16_t h;
        memcpy(&h, (const uint16_t *)p + i, sizeof h);
        return lmx_bf16_to_f32(h);
    }
    float f;
    lmx_dtype_info(dt)->to_f32((const uint8_t *)p + lmx_dtype_bytes(dt, i), &f, 1);
    return f;
}

/* Columns [n0, n0+nr) of quantized row `row` of B into dst: the dtype's
 * to_f32 over the whole blocks that hold them (tmp), then, for MLX rows,
 * s·q + b per group exactly as the reference's dense_weight computes it. */
static void dequant_cols(const vg_job *j, int64_t row, int64_t n0, int nr, float *dst, float *tmp) {
    const lmx_dtype_traits *tr = lmx_dtype_info(j->bdt);
    int64_t blk = tr->block, lo = n0 / blk * blk, hi = (n0 + nr + blk - 1) / blk * blk;
    int64_t e0 = row * j->brs + lo; /* a multiple of the block: rows are whole blocks */
    if (j->bdt == LMX_MLX_Q4) {
        const uint8_t *p = (const uint8_t *)j->b + e0 / 2;
        for (int64_t c = 0; c < hi - lo; c += 2) {
            tmp[c] = (float)(p[c / 2] & 15);
            tmp[c + 1] = (float)(p[c / 2] >> 4);
        }
    } else if (j->bdt == LMX_MLX_Q8) {
        const uint8_t *p = (const uint8_t *)j->b + e0;
        for (int64_t c = 0; c < hi - lo; c++) tmp[c] = (float)p[c];
    } else {
        tr->to_f32((const uint8_t *)j->b + lmx_dtype_bytes(j->bdt, e0), tmp, hi - lo);
    }
    if (!j->bsc) {
        memcpy(dst, tmp + (n0 - lo), (size_t)nr * sizeof *dst);
        return;
    }
    int64_t G = j->N / j->group;
    for (int64_t c = n0; c < n0 + nr;) {
        int64_t g = c / j->group, end = (g + 1) * j->group < n0 + nr ? (g + 1) * j->group : n0 + nr;
        float s = ld_scalar(j->bsc->dtype, j->bsc->data, row * G + g);
        float b = j->bbi ? ld_scalar(j->bbi->dtype, j->bbi->data, row * G + g) : 0.0f;
        for (; c < end; c++) dst[c - n0] = s * tmp[c - lo] + b;
    }
}

/* B[k][NR] = B(k0+k, n0+jj) as f32, columns jj >= nr zero. The kc rows
 * lie in kc different pages (a weight row is KiBs long), which the
 * hardware prefetchers do not follow: each row's next NR elements (the
 * next panel, packed after this one's tiles) are prefetched here. */
static void pack_b(const vg_job *j, int NR, int64_t n0, int nr, int64_t k0, int64_t kc, float *B, float *tmp) {
    if (j->btrans) { /* B(k, j) = b[j*brs + k], f32: copy rows of b down the columns */
        for (int jj = 0; jj < NR; jj++) {
            if (jj >= nr) {
                for (int64_t k = 0; k < kc; k++) B[k * NR + jj] = 0;
                continue;
            }
            const float *s = (const float *)j->b + (n0 + jj) * j->brs + k0;
            for (int64_t k = 0; k < kc; k++) B[k * NR + jj] = s[k];
        }
        return;
    }
    size_t es = lmx_dtype_info(j->bdt)->block == 1 ? lmx_dtype_info(j->bdt)->size : 0;
    bool pf = es && n0 + 2 * NR <= j->N;
    for (int64_t k = 0; k < kc; k++) {
        float *dst = B + k * NR;
        int64_t e = (k0 + k) * j->brs + n0;
        if (pf) {
            const char *nx = (const char *)j->b + (size_t)(e + NR) * es;
            __builtin_prefetch(nx);
            __builtin_prefetch(nx + (size_t)NR * es - 1);
        }
        if (j->bdt == LMX_F32) {
            memcpy(dst, (const float *)j->b + e, (size_t)nr * sizeof *dst);
        } else if (j->bdt == LMX_BF16 || j->bdt == LMX_F16) { /* memcpy loads: any byte offset */
            const uint8_t *s = (const uint8_t *)j->b + 2 * e;
            for (int jj = 0; jj < nr; jj++) {
                uint16_t h;
                memcpy(&h, s + 2 * jj, sizeof h);
                if (j->bdt == LMX_BF16) {
                    uint32_t u = (uint32_t)h << 16;
                    memcpy(&dst[jj], &u, sizeof u);
                } else {
                    dst[jj] = lmx_f16_to_f32(h);
                }
            }
        } else {
            dequant_cols(j, k0 + k, n0, nr, dst, tmp);
        }
        for (int jj = nr; jj < NR; jj++) dst[jj] = 0;
    }
}

/* A[mb][k][i] = A(m0 + mb*MR + i, k0 + k); rows past m0+mc are zero. */
static void pack_a(const vg_job *j, int MR, int64_t m0, int64_t mc, int64_t k0, int64_t kc, float *A) {
    for (int64_t mb = 0; mb * MR < mc; mb++) {
        float *Ab = A + mb * kc * MR;
        int64_t i0 = m0 + mb * MR, ni = mc - mb * MR < MR ? mc - mb * MR : MR;
        if (j->ars == 1) { /* A is a transpose: MR consecutive rows are contiguous for each k */
            for (int64_t k = 0; k < kc; k++) {
                const float *s = j->a + (k0 + k) * j->acs + i0;
                for (int64_t i = 0; i < ni; i++) Ab[k * MR + i] = s[i];
                for (int64_t i = ni; i < MR; i++) Ab[k * MR + i] = 0;
            }
            continue;
        }
        for (int64_t i = 0; i < MR; i++) {
            if (i < ni) {
                const float *s = j->a + (i0 + i) * j->ars + k0 * j->acs;
                for (int64_t k = 0; k < kc; k++) Ab[k * MR + i] = s[k * j->acs];
            } else {
                for (int64_t k = 0; k < kc; k++) Ab[k * MR + i] = 0;
            }
        }
    }
}

/* C's rows [r0, r1) x panels [p0, p1): all of K, in KC blocks, in order. */
static void gemm_part(vg_job *j, int64_t r0, int64_t r1, int64_t p0, int64_t p1, float *A, float *B, float *tmp) {
    const lmx_simd_kernels *kt = j->kt;
    const int MR = kt->mr, NR = kt->nr;
    if (j->K == 0 && j->overwrite) /* an empty sum: C = 0 */
        for (int64_t i = r0; i < r1; i++)
            for (int64_t c = p0 * NR; c < p1 * NR && c < j->N; c++) j->c[i * j->crs + c] = 0;
    for (int64_t m0 = r0; m0 < r1; m0 += MC) {
        int64_t mc = r1 - m0 < MC ? r1 - m0 : MC;
        for (int64_t k0 = 0; k0 < j->K; k0 += KC) {
            int64_t kc = j->K - k0 < KC ? j->K - k0 : KC;
            pack_a(j, MR, m0, mc, k0, kc, A);
            for (int64_t p = p0; p < p1; p++) {
                int64_t n0 = p * NR;
                int nr = j->N - n0 < NR ? (int)(j->N - n0) : NR;
                pack_b(j, NR, n0, nr, k0, kc, B, tmp);
                for (int64_t mb = 0; mb * MR < mc; mb++) {
                    int mr = mc - mb * MR < MR ? (int)(mc - mb * MR) : MR;
                    kt->gemm_tile(kc, A + mb * kc * MR, B, j->c + (m0 + mb * MR) * j->crs + n0, j->crs, mr, nr,
                                  k0 > 0 || !j->overwrite);
                }
            }
        }
    }
}

/* Threads claim parts (groups of row blocks, or of column panels) until
 * none is left; a part re-packs the A (or B) block it shares with the
 * others, a few percent at the part sizes chosen in run(). */
static void gemm_task(int ith, int nth, void *arg) {
    vg_job *j = arg;
    const int MR = j->kt->mr, NR = j->kt->nr;
    (void)ith, (void)nth;
    int64_t blk = lmx_dtype_info(j->bdt)->block, mrows = j->M < MC ? j->M : MC;
    float *A = lmx_fast_scratch(0, (mrows + MR - 1) / MR * MR * KC);
    float *B = lmx_fast_scratch(1, (int64_t)KC * NR);
    float *tmp = lmx_fast_scratch(2, NR + 2 * blk);
    if (!A || !B || !tmp) {
        atomic_store(&j->failed, true);
        return;
    }
    int64_t lo, hi, P = (j->N + NR - 1) / NR;
    while (lmx_vjp_chunks_next(&j->ch, &lo, &hi)) {
        if (j->by_rows)
            gemm_part(j, lo * MR, hi * MR < j->M ? hi * MR : j->M, 0, P, A, B, tmp);
        else
            gemm_part(j, 0, j->M, lo, hi, A, B, tmp);
    }
}

/* Parts: about 4 per thread, at least 48 rows (the B re-pack of a row part
 * costs 1/(2·rows) of its multiply-adds) or 64 columns. */
static void plan(vg_job *j, const lmx_pool *pool, int per_thread) {
    int nth = lmx_pool_size(pool), MR = j->kt->mr, NR = j->kt->nr;
    int64_t P = (j->N + NR - 1) / NR, RB = (j->M + MR - 1) / MR;
    j->by_rows = P < 2 * (int64_t)nth && RB > P;
    if (j->by_rows)
        lmx_vjp_chunks_init(&j->ch, RB, pool, per_thread, (48 + MR - 1) / MR);
    else
        lmx_vjp_chunks_init(&j->ch, P, pool, per_thread, (64 + NR - 1) / NR);
    atomic_init(&j->failed, false);
}

lmx_status lmx_vjp_gemm_run(lmx_vjp_gemm *j, lmx_pool *pool) {
    if (j->M <= 0 || j->N <= 0 || (j->K <= 0 && !j->overwrite)) return LMX_OK;
    /* ~30 GFLOP/s on one core for these small shapes: 2·M·N·K / 30 ns */
    if (lmx_vjp_inline((double)j->M * j->N * j->K / 15.0)) {
        plan(j, NULL, 1); /* one part: nothing packed twice */
        gemm_task(0, 1, j);
    } else {
        plan(j, pool, 4);
        lmx_pool_run(pool, gemm_task, j);
    }
    return atomic_load(&j->failed) ? lmx_err(LMX_ERR_NOMEM, "vjp gemm: out of memory") : LMX_OK;
}

bool lmx_vjp_gemm_serial(lmx_vjp_gemm *j) {
    if (j->M <= 0 || j->N <= 0 || (j->K <= 0 && !j->overwrite)) return true;
    plan(j, NULL, 1); /* one part: everything */
    gemm_task(0, 1, j);
    return !atomic_load(&j->failed);
}

