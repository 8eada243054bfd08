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
lmx_status lmx_fast_vjp_attention(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool);
/* Plain C, threaded (no SIMD table needed). */
lmx_status lmx_fast_vjp_rms_norm(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool);
lmx_status lmx_fast_vjp_layer_norm(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool);
lmx_status lmx_fast_vjp_rope(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool);
lmx_status lmx_fast_vjp_binary(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool);
lmx_status lmx_fast_vjp_unary(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool);
lmx_status lmx_fast_vjp_softmax(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool);

/* a as R rows of C f32 elements, row r at (float *)a->data + r·rs: a
 * contiguous array, or a 2-D view with unit column stride. */
bool lmx_vjp_rows_f32(const lmx_array *a, int64_t *R, int64_t *C, int64_t *rs);

#endif
