/*
 * cpu_vjp.h - the CPU backend's fast vjps (threaded, SIMD tile kernels),
 * tested against the reference vjps of src/core/vjp*.c (the oracles) in
 * tests/unit/test_grad.c. Same contract as lmx_vjp_fn (core/tape.h): each
 * adds into the non-NULL dense f32 dsrc[i]; what a fast vjp does not handle
 * (dtypes, layouts) goes to the reference.
 *
 * Which results are equal to the reference:
 * - bit for bit: norms, RoPE, element-wise ops, softmax, bias gradients
 *   (the same arithmetic per element, rows or columns split over threads);
 * - within f32 rounding of a reordered sum: matmul (the GEMM tile sums with
 *   FMA in KC blocks) and attention (SIMD dot products, per-step sums over
 *   a head group).
 * None depends on the thread count: every output element is computed by one
 * thread in an order fixed by the shapes.
 */
#ifndef LMX_BACKEND_CPU_VJP_H
#define LMX_BACKEND_CPU_VJP_H

#include "backend/cpu/cpu_simd.h"
#include "core/tape.h" /* the reference vjps: the fallback */

/* The table for lmx_backend.vjps; NULL under LMX_CPU=reference (every vjp
 * then is the reference, as every forward kernel is). */
const lmx_vjp_kernel_fn *lmx_cpu_vjps(void);

/* _with: on SIMD table k (NULL: the reference vjp). */
lmx_status lmx_fast_vjp_matmul_with(const lmx_simd_kernels *k, const lmx_node *n, const lmx_array *dout,
                                    lmx_array *dsrc[], lmx_pool *pool);
lmx_status lmx_fast_vjp_attention_with(const lmx_simd_kernels *k, const lmx_node *n, const lmx_array *dout,
                                       lmx_array *dsrc[], lmx_pool *pool);
lmx_status lmx_fast_vjp_matmul(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool);
/* MATMUL_ACC: the matmul's with dout scaled by fp[0] (cpu_fused.c) */
lmx_status lmx_fast_vjp_matmul_acc(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool);
lmx_status lmx_fast_vjp_attention(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool);
/* Plain C, threaded (no SIMD table needed). */
lmx_status lmx_fast_vjp_rms_norm(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool);
lmx_status lmx_fast_vjp_layer_norm(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool);
lmx_status lmx_fast_vjp_rope(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool);
lmx_status lmx_fast_vjp_binary(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool);
lmx_status lmx_fast_vjp_unary(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool);
lmx_status lmx_fast_vjp_softmax(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool);
/* cpu_cross_entropy.c: the loss's rows on the pool (bit-equal to the reference). */
lmx_status lmx_fast_vjp_cross_entropy(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool);

/* Work shared by claiming: the threads of a job take chunks [lo, hi) of
 * [0, n) from a counter until none is left, so a thread slowed down by
 * another process (the cores are shared) does fewer chunks instead of
 * holding up the join. What a chunk computes never depends on which
 * thread runs it. init before the pool run: about `per_thread` chunks per
 * pool thread, each at least `min_chunk` long. */
typedef struct lmx_vjp_chunks {
    _Atomic int64_t next;
    int64_t n, chunk;
} lmx_vjp_chunks;
void lmx_vjp_chunks_init(lmx_vjp_chunks *c, int64_t n, const lmx_pool *pool, int per_thread, int64_t min_chunk);
bool lmx_vjp_chunks_next(lmx_vjp_chunks *c, int64_t *lo, int64_t *hi);

/* C (+)= A·B, the GEMM under the matmul and attention vjps
 * (cpu_vjp_gemm.c), on SIMD table kt's tile:
 *   C(i, j) = c[i*crs + j], i < M, j < N;  A(i, k) = a[i*ars + k*acs] (f32);
 *   B(k, j) = element k*brs + j of b (dtype bdt: f32/f16/bf16, GGUF blocks
 *   or MLX packed rows with scales bsc/biases bbi per `group` of columns;
 *   rows of whole blocks), or with btrans b[j*brs + k] (f32 only).
 * overwrite: C = A·B, else C += A·B. */
typedef struct lmx_vjp_gemm {
    const lmx_simd_kernels *kt;
    int64_t M, N, K;
    const float *a;
    int64_t ars, acs;
    const void *b;
    lmx_dtype bdt;
    int64_t brs;
    bool btrans;
    const lmx_array *bsc, *bbi;
    int group;
    float *c;
    int64_t crs;
    bool overwrite;
    bool by_rows;        /* set by the runner: threads take C's rows, not its column panels */
    _Atomic bool failed; /* set by the runner */
    lmx_vjp_chunks ch;   /* set by the runner: row blocks or column panels */
} lmx_vjp_gemm;
/* On the pool (or inline when small: lmx_vjp_pool_run). */
lmx_status lmx_vjp_gemm_run(lmx_vjp_gemm *g, lmx_pool *pool);
/* On the calling thread, inside another job (scratch slots 0-2 of
 * lmx_fast_scratch); false when out of memory. */
bool lmx_vjp_gemm_serial(lmx_vjp_gemm *g);

/* Runs fn over the pool, or inline on the calling thread when the job is
 * small (work: about the job's single-thread cost in ns): waking the other
 * threads for a few microseconds of work costs more than it saves, and far
 * more when other processes share the cores. Results do not depend on it
 * (every fast vjp computes the same values on any number of threads). */
void lmx_vjp_pool_run(lmx_pool *pool, lmx_pool_fn fn, void *job, double work);
bool lmx_vjp_inline(double work); /* whether lmx_vjp_pool_run runs such a job inline */
/* The inline threshold in ns (default 20000); tests set 0 to put every
 * job on the pool. Not thread-safe: set it before training starts. */
void lmx_vjp_set_serial_ns(double ns);

/* a as R rows of C f32 elements, row r at (float *)a->data + r·rs: a
 * contiguous array, or a 2-D view with unit column stride; 4-byte aligned. */
bool lmx_vjp_rows_f32(const lmx_array *a, int64_t *R, int64_t *C, int64_t *rs);

#endif
