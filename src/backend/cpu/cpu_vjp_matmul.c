/* cpu_vjp_matmul.c - the matmul vjp on the vjp GEMM (cpu_vjp_gemm.c):
 *   dx[M,K] += dout[M,N] · W[N,K]     W of any weight dtype, read in place
 *   dW[N,K] += doutᵀ[N,M] · x[M,K]    W a plain float dtype (trainable)
 *   db[N]   += Σ_m dout[m, :]         column chunks over threads, m in order
 * What it does not handle (x not f32 rows, a weight dtype without a row
 * converter, odd MLX scales) goes to the reference. */
#include "backend/cpu/cpu_vjp.h"

typedef struct {
    const float *g;
    float *db;
    int64_t M, N;
    lmx_vjp_chunks ch; /* columns */
} bias_job;

/* db[j] += Σ_m g[m][j] in m order (the reference's order): columns split. */
static void bias_task(int ith, int nth, void *arg) {
    bias_job *j = arg;
    int64_t lo, hi;
    (void)ith, (void)nth;
    while (lmx_vjp_chunks_next(&j->ch, &lo, &hi))
        for (int64_t m = 0; m < j->M; m++)
            for (int64_t c = lo; c < hi; c++) j->db[c] += j->g[m * j->N + c];
}

static bool is_plain_float(lmx_dtype t) { return t == LMX_F32 || t == LMX_BF16 || t == LMX_F16; }

static bool handled(const lmx_node *n, lmx_array *dsrc[], int64_t *xs) {
    const lmx_array *x = n->src[0], *w = n->src[1], *sc = n->src[3], *bi = n->src[4];
    int64_t M, K;
    if (!lmx_vjp_rows_f32(x, &M, &K, xs)) return false;
    if (w->ndim != 2 || !lmx_array_is_contiguous(w) || w->shape[1] != K) return false;
    if (!dsrc[0]) return true; /* dW and db read only x and dout */
    const lmx_dtype_traits *tr = lmx_dtype_info(w->dtype);
    if (is_plain_float(w->dtype)) return !sc;
    if (!tr->to_f32 || !tr->is_quant || K % tr->block) return false;
    if (!tr->needs_scales) return !sc;
    int group = n->ip[0];
    if (!sc || group <= 0 || K % group || !lmx_array_is_contiguous(sc) || !is_plain_float(sc->dtype)) return false;
    if (lmx_array_numel(sc) != w->shape[0] * (K / group)) return false;
    return !bi || (lmx_array_is_contiguous(bi) && is_plain_float(bi->dtype) && lmx_array_numel(bi) == lmx_array_numel(sc));
}

lmx_status lmx_fast_vjp_matmul_with(const lmx_simd_kernels *k, const lmx_node *n, const lmx_array *dout,
                                    lmx_array *dsrc[], lmx_pool *pool) {
    int64_t xs;
    if (!k || !handled(n, dsrc, &xs)) return lmx_vjp_matmul(n, dout, dsrc);
    const lmx_array *x = n->src[0], *w = n->src[1];
    int64_t M = lmx_array_numel(x) / w->shape[1], K = w->shape[1], N = w->shape[0];
    const float *g = dout->data;
    if (dsrc[0]) { /* dx = dout · W */
        lmx_vjp_gemm j = {.kt = k, .M = M, .N = K, .K = N, .a = g, .ars = N, .acs = 1, .b = w->data, .bdt = w->dtype,
                    .brs = K, .bsc = n->src[3], .bbi = n->src[4], .group = n->ip[0], .c = dsrc[0]->data, .crs = K};
        LMX_TRY(lmx_vjp_gemm_run(&j, pool));
    }
    if (dsrc[1]) { /* dW = doutᵀ · x */
        lmx_vjp_gemm j = {.kt = k, .M = N, .N = K, .K = M, .a = g, .ars = 1, .acs = N, .b = x->data, .bdt = LMX_F32,
                    .brs = xs, .c = dsrc[1]->data, .crs = K};
        LMX_TRY(lmx_vjp_gemm_run(&j, pool));
    }
    if (dsrc[2]) {
        bias_job j = {g, dsrc[2]->data, M, N, {0}};
        lmx_vjp_chunks_init(&j.ch, N, pool, 4, 16);
        lmx_vjp_pool_run(pool, bias_task, &j, 0.5 * (double)M * N);
    }
    return LMX_OK;
}

lmx_status lmx_fast_vjp_matmul(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool) {
    return lmx_fast_vjp_matmul_with(lmx_simd(), n, dout, dsrc, pool);
}
