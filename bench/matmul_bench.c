/* matmul_bench.c - one lmx matmul shape on each kernel path, in GFLOP/s and
 * GB/s of weights, for tuning the decode matvec and the prefill GEMM.
 *
 * usage: lmx_matmul_bench [M=512] [N=2048] [K=2048] [dtype=bf16|f16|f32|q8_0|q4_0|q6_k|q4_k] [reps=5] [threads=ncpu]
 * Prints one line per path (reference, then every SIMD table this CPU runs):
 * best time of reps, GFLOP/s (2*M*N*K) and weight GB/s (N*K*bytes). With
 * OpenBLAS found at build time (LMX_HAVE_CBLAS) also cblas_sgemm on the same
 * shape with f32 weights. GGUF types run the int8-activation kernels unless
 * LMX_INT8_ACT=0 (then the f32-activation ones); q6_k/q4_k weights are
 * random codes with small scales (lmx has no K-quant quantizer). Weights larger than
 * the last-level cache give DRAM numbers; smaller ones measure the cache. */
#include "backend/cpu/cpu_simd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef LMX_HAVE_CBLAS
#include <cblas.h>
#endif

static double best_of(int reps, lmx_status (*fn)(const lmx_simd_kernels *, const lmx_node *, lmx_pool *),
                      const lmx_simd_kernels *k, const lmx_node *n, lmx_pool *p) {
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = lmx_time_s();
        if (fn(k, n, p) != LMX_OK) return -1;
        double t = lmx_time_s() - t0;
        if (t < best) best = t;
    }
    return best;
}

static lmx_status ref_mm(const lmx_simd_kernels *k, const lmx_node *n, lmx_pool *p) {
    (void)k;
    return lmx_cpu_matmul(n, p);
}

int main(int argc, char **argv) {
    int64_t M = argc > 1 ? atoll(argv[1]) : 512, N = argc > 2 ? atoll(argv[2]) : 2048;
    int64_t K = argc > 3 ? atoll(argv[3]) : 2048;
    const char *dts = argc > 4 ? argv[4] : "bf16";
    int reps = argc > 5 ? atoi(argv[5]) : 5, threads = argc > 6 ? atoi(argv[6]) : 0;
    lmx_dtype wt = !strcmp(dts, "f32")    ? LMX_F32
                   : !strcmp(dts, "f16")  ? LMX_F16
                   : !strcmp(dts, "q8_0") ? LMX_Q8_0
                   : !strcmp(dts, "q4_0") ? LMX_Q4_0
                   : !strcmp(dts, "q6_k") ? LMX_Q6_K
                   : !strcmp(dts, "q4_k") ? LMX_Q4_K
                                          : LMX_BF16;
    lmx_pool *pool;
    if (M <= 0 || N <= 0 || K <= 0 || reps <= 0 || lmx_pool_create(threads, &pool) != LMX_OK) {
        fprintf(stderr, "usage: lmx_matmul_bench [M] [N] [K] [bf16|f16|f32] [reps] [threads]\n");
        return 2;
    }
    lmx_array x, w, o;
    int64_t sx[2] = {M, K}, sw[2] = {N, K}, so[2] = {M, N};
    if (lmx_array_alloc(&x, LMX_F32, 2, sx) || lmx_array_alloc(&w, wt, 2, sw) || lmx_array_alloc(&o, LMX_F32, 2, so)) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    float *tmp = malloc((size_t)(N * K) * sizeof(float));
    uint64_t s = 88172645463325252ull;
    for (int64_t i = 0; i < N * K; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        tmp[i] = (float)(s >> 40) / (float)(1 << 24) - 0.5f;
    }
    for (int64_t i = 0; i < M * K; i++) ((float *)x.data)[i] = tmp[i % (N * K)];
    if (wt == LMX_F32) {
        memcpy(w.data, tmp, (size_t)(N * K) * 4);
    } else if (wt == LMX_Q6_K || wt == LMX_Q4_K) {
        uint8_t *b = w.data;
        for (size_t i = 0; i < lmx_array_nbytes(&w); i++) {
            s ^= s << 13, s ^= s >> 7, s ^= s << 17;
            b[i] = (uint8_t)(s >> 32);
        }
        for (int64_t i = 0; i < N * K / 256; i++) { /* Q6_K: d; Q4_K: d, dmin */
            uint16_t h = lmx_f32_to_f16(0.001f);
            memcpy(b + i * (wt == LMX_Q6_K ? 210 : 144) + (wt == LMX_Q6_K ? 208 : 0), &h, 2);
            if (wt == LMX_Q4_K) memcpy(b + i * 144 + 2, &h, 2);
        }
    } else {
        lmx_dtype_info(wt)->from_f32(tmp, w.data, N * K);
    }
    lmx_node n = {.op = LMX_OP_MATMUL, .out = &o, .src = {&x, &w}};
    double flop = 2.0 * (double)M * (double)N * (double)K, wbytes = (double)lmx_array_nbytes(&w);
    printf("M=%lld N=%lld K=%lld %s, %d threads, best of %d\n", (long long)M, (long long)N, (long long)K, dts,
           lmx_pool_size(pool), reps);
    if (M * N * K <= (int64_t)1 << 31) {
        double t = best_of(reps, ref_mm, NULL, &n, pool);
        printf("  %-10s %9.3f ms  %8.1f GFLOP/s  %7.2f GB/s\n", "reference", t * 1e3, flop / t * 1e-9, wbytes / t * 1e-9);
    }
    for (int i = 0; i < LMX_ISA_COUNT; i++) {
        const lmx_simd_kernels *k = lmx_simd_for((lmx_isa)i);
        if (!k) continue;
        double t = best_of(reps, lmx_fast_matmul_with, k, &n, pool);
        printf("  %-10s %9.3f ms  %8.1f GFLOP/s  %7.2f GB/s\n", k->name, t * 1e3, flop / t * 1e-9, wbytes / t * 1e-9);
    }
#ifdef LMX_HAVE_CBLAS
    {
        double best = 1e30;
        for (int r = 0; r < reps; r++) {
            double t0 = lmx_time_s();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, 1.0f, x.data, (int)K, tmp,
                        (int)K, 0.0f, o.data, (int)N);
            double t = lmx_time_s() - t0;
            if (t < best) best = t;
        }
        printf("  %-10s %9.3f ms  %8.1f GFLOP/s  (f32 weights)\n", "openblas", best * 1e3, flop / best * 1e-9);
    }
#endif
    free(tmp);
    lmx_array_release(&x), lmx_array_release(&w), lmx_array_release(&o);
    lmx_pool_free(pool);
    return 0;
}
