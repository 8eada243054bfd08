/*
 * cpu_simd.h - the optimized CPU kernels, one table per instruction set.
 *
 * Three tables exist: generic C (always built, no intrinsics), AVX2+FMA+F16C
 * and AVX-512 (F/BW/VL/DQ/VNNI). Each lives in its own files compiled with
 * their own flags (simd_*.c; the int8-activation kernels of GGUF block weights
 * in cpu_qdot.c, qdot_avx2.c, qdot_avx512.c), so intrinsics never leak into
 * code that runs before the CPU was checked. The table is picked once
 * (lmx_simd()) from cpuid, capped by the environment variable
 * LMX_CPU=generic|avx2|avx512 so tests and benchmarks can force each path.
 *
 * Drivers (cpu_fast_matmul.c, cpu_fast_attention.c) hold the blocking and
 * threading in plain C and call these leaf kernels; they fall back to the
 * reference kernels in cpu_*.c for anything the tables do not cover (quantized
 * weights, non-f32 caches, ...). Every leaf is tested against the reference in
 * tests/unit/test_simd_kernels.c on every path the machine supports.
 */
#ifndef LMX_BACKEND_CPU_SIMD_H
#define LMX_BACKEND_CPU_SIMD_H

#include "backend/cpu/cpu.h"

typedef enum lmx_isa {
    LMX_ISA_GENERIC = 0,
    LMX_ISA_AVX2 = 1,   /* AVX2 + FMA + F16C */
    LMX_ISA_AVX512 = 2, /* AVX-512 F/BW/VL/DQ/VNNI (+ the AVX2 set) */
    LMX_ISA_COUNT
} lmx_isa;

/* Activation rows quantized to int8 for the integer dot-product kernels
 * (cpu_qdot.c documents the format and its error bound): blocks of 32,
 * x ≈ d·q with d = max|x|/127 per block, q = round-to-nearest-even(x·127/max|x|).
 * Row m of each array starts at m·(qrs, K/32, K/32, K/16) elements. */
typedef struct lmx_xq {
    int64_t K;    /* elements per row, a multiple of 32 */
    int64_t qrs;  /* bytes from one row of q to the next (>= K) */
    int8_t *q;    /* [M][qrs] */
    float *d;     /* [M][K/32] block scale; NaN when the block holds a NaN/Inf */
    float *sum;   /* [M][K/32] Σx of the block in f32 (MLX affine bias term) */
    int32_t *s32; /* [M][K/32] Σq of the block (offset corrections) */
    int16_t *s16; /* [M][K/16] Σq of each half block (Q6_K sub-blocks) */
} lmx_xq;

/* GEMM register tile: MR rows of x times NR weight rows (output columns).
 * Packed panels: A[k][MR] (x rows, f32), B[k][NR] (weight rows, f32). */
#define LMX_GEMM_MAX_MR 16
#define LMX_GEMM_MAX_NR 32

typedef struct lmx_simd_kernels {
    const char *name;
    lmx_isa isa;
    int mr, nr; /* GEMM tile of this ISA */

    /* y[m*ys + r] = x_m · w_r for rows r in [r0, r1), m in [0, M).
     * w: rows of K elements of wt (F32, F16 or BF16), row r at w + r*K.
     * x_m = x + m*xs (f32). Each y computed in an order fixed by K only. */
    void (*matvec)(lmx_dtype wt, const void *w, int64_t K, int64_t r0, int64_t r1, const float *x, int64_t xs,
                   int64_t M, float *y, int64_t ys);

    /* As matvec, for GGUF block weights (Q8_0, Q4_0, Q6_K); rows are whole blocks.
     * NULL in a table without quantized kernels (the driver then uses the
     * reference kernel for decode). */
    void (*matvec_q)(lmx_dtype wt, const void *w, int64_t K, int64_t r0, int64_t r1, const float *x, int64_t xs,
                     int64_t M, float *y, int64_t ys);

    /* As matvec, for MLX affine packed rows (bits 4 or 8; K/32 blocks of
     * `bits` uint32 words, LSB first): w = s*q + b per group of `group`
     * (a multiple of 32) with s, b from scales/biases [N, K/group] of sdt
     * (F32/F16/BF16). NULL where the table has none. */
    void (*matvec_mlx)(int bits, const void *w, int64_t K, int64_t r0, int64_t r1, const float *x, int64_t xs,
                       int64_t M, float *y, int64_t ys, lmx_dtype sdt, const void *scales, const void *biases,
                       int group);

    /* Packs weight rows [n0, n0+nr) (nr <= NR), columns [k0, k0+kc), into
     * B[k][NR] as f32; columns of missing rows (nr < NR) are zero. */
    void (*pack_b)(lmx_dtype wt, const void *w, int64_t K, int64_t n0, int nr, int64_t k0, int64_t kc, float *B);

    /* C[i*cs + j] (+)= sum_k A[k*MR + i] * B[k*NR + j] for i < mr, j < nr.
     * accumulate = false overwrites C. Rows i >= mr / columns j >= nr are
     * computed from padding and never stored. */
    void (*gemm_tile)(int64_t kc, const float *A, const float *B, float *C, int64_t cs, int mr, int nr,
                      bool accumulate);

    /* int8-activation path (all NULL where the table has none; the driver
     * then uses matvec_q / the f32 GEMM). quantize_x: one row of K floats
     * (K a multiple of 32) into q[K], d/sum/s32[K/32], s16[K/16]; the same
     * values on every table (see cpu_qdot.c). */
    void (*quantize_x)(const float *x, int64_t K, int8_t *q, float *d, float *sum, int32_t *s32, int16_t *s16);
    /* As matvec_q (GGUF Q8_0, Q4_0, Q6_K rows), against M rows of xq. */
    void (*matvec_qx)(lmx_dtype wt, const void *w, int64_t K, int64_t r0, int64_t r1, const lmx_xq *x, int64_t M,
                      float *y, int64_t ys);
    /* Prefill: int8 GEMM over packed panels of QNR weight rows (see
     * cpu_qdot.h for the packed layout). pack_qx packs rows [n0, n0+nr),
     * columns [k0, k0+kc) (kc a multiple of 32, k0 of the weight block);
     * gemm_qx computes C[i*cs + j] (+)= x_(m0+i) · w_(n0+j) over those
     * columns for i < mr, j < nr. */
    int qmr, qnr;
    void (*pack_qx)(lmx_dtype wt, const void *w, int64_t K, int64_t n0, int nr, int64_t k0, int64_t kc,
                    uint8_t *B, float *Bs);
    void (*gemm_qx)(lmx_dtype wt, int64_t kc, const lmx_xq *x, int64_t m0, int64_t k0, const int32_t *corr,
                    const uint8_t *B, const float *Bs, float *C, int64_t cs, int mr, int nr, bool accumulate);

    /* Attention leaves. scores: s[g*ss + j] = (q_g · k_j) * scale for g < G,
     * j < n; q_g = q + g*qs, k_j = k + j*ks, hd features. */
    void (*attn_scores)(const float *q, int G, int64_t qs, const float *k, int64_t ks, int64_t n, int64_t hd,
                        float scale, float *s, int64_t ss);
    /* acc[g*as + d] += sum_j p[g*ps + j] * v_j[d] for g < G, d < vd; v_j = v + j*vs. */
    void (*attn_av)(const float *p, int G, int64_t ps, const float *v, int64_t vs, int64_t n, int64_t vd,
                    float *acc, int64_t as);
    /* Optional (NULL: libm expf in a loop): s[j] = exp(s[j] - mx) for j < n,
     * returning the sum of the new s[j]. Within 2 ulp of expf per element. */
    float (*softmax_exp)(float *s, int64_t n, float mx);
    /* Optional (NULL: the reference act kernel): o[j] = silu(a[j]) · b[j]
     * (b NULL: silu(a[j])) for j < n, silu(x) = x / (1 + e^-x) with a vector
     * exp within 2 ulp of expf; NaN, ±Inf and the overflow ends as the
     * reference gives them. */
    void (*silu_mul)(const float *a, const float *b, float *o, int64_t n);
} lmx_simd_kernels;

/* The table for this process (detected once, thread-safe); NULL when
 * LMX_CPU=reference asks for the reference kernels only. */
const lmx_simd_kernels *lmx_simd(void);
/* The table of an ISA, or NULL when this CPU (or this build) cannot run it. */
const lmx_simd_kernels *lmx_simd_for(lmx_isa isa);
/* The best ISA this CPU supports (ignores LMX_CPU). */
lmx_isa lmx_cpu_isa_detected(void);
const char *lmx_isa_name(lmx_isa isa);

extern const lmx_simd_kernels lmx_simd_generic;
#if defined(__x86_64__) || defined(__i386__)
#define LMX_SIMD_X86 1
extern const lmx_simd_kernels lmx_simd_avx2;
extern const lmx_simd_kernels lmx_simd_avx512;
#endif

/* Optimized kernels with the reference signature (cpu_fast_*.c). Each uses
 * the table `k`; the _isa-less forms use lmx_simd(). They fall back to the
 * reference kernel for inputs they do not handle. */
lmx_status lmx_fast_matmul_with(const lmx_simd_kernels *k, const lmx_node *n, lmx_pool *pool);
lmx_status lmx_fast_attention_with(const lmx_simd_kernels *k, const lmx_node *n, lmx_pool *pool);
lmx_status lmx_fast_matmul(const lmx_node *n, lmx_pool *pool);
/* The int8-activation matmul (cpu_fast_qmatmul.c): false when it does not
 * handle n (then nothing ran), else true with its status in *st. */
bool lmx_fast_qmatmul(const lmx_simd_kernels *k, const lmx_node *n, lmx_pool *pool, lmx_status *st);
/* out[m*os + j] += bias[j] for m < M, j in [lo, hi); false when out of memory. */
bool lmx_fast_add_bias(const lmx_array *b, float *out, int64_t os, int64_t M, int64_t lo, int64_t hi);
lmx_status lmx_fast_attention(const lmx_node *n, lmx_pool *pool);
lmx_status lmx_fast_rope(const lmx_node *n, lmx_pool *pool);
/* Activations (cpu_fast_act.c): SiLU through the table's silu_mul. */
lmx_status lmx_fast_act_with(const lmx_simd_kernels *k, const lmx_node *n, lmx_pool *pool);
lmx_status lmx_fast_act(const lmx_node *n, lmx_pool *pool);

/* Whether GGUF block weights use the int8-activation kernels (default yes;
 * LMX_INT8_ACT=0 says no). */
bool lmx_int8_activations(void);

/* Per-thread scratch for the fast kernels (64-byte aligned, grown on demand,
 * never shrunk: a steady decode loop allocates nothing). slot 0..6; slot 4
 * holds the int8 activations of the thread that started a matmul. */
float *lmx_fast_scratch(int slot, int64_t n);

#endif
