/*
 * tape.h - reverse-mode autograd over the op table (see docs/AUTOGRAD.md).
 *
 * While ex->tape is set, lmx_exec_node() appends every node it runs to the
 * tape: a copy of the node whose arrays are retained, so the buffers stay
 * alive until the tape is freed. lmx_tape_backward() then walks the nodes in
 * reverse, calls each op's vjp (lmx_op_defs[op].vjp, plain C on the host)
 * and accumulates f32 gradients per array identity (its memory: a gradient
 * of a view lands on the producer of the memory it views).
 *
 * Contract for the forward pass being recorded: an array a node reads must
 * not be overwritten by a later node before backward (no scratch reuse) -
 * except rope in place, whose vjp needs only inv_freq. Nodes recorded on a
 * device backend keep their gradients in its memory and use its vjps
 * (backend.h); lmx_tape_grad then returns a device array.
 */
#ifndef LMX_CORE_TAPE_H
#define LMX_CORE_TAPE_H

#include "core/backend.h"

lmx_status lmx_tape_create(lmx_tape **out);
void lmx_tape_free(lmx_tape *t); /* releases recorded arrays and gradients; NULL ok */
/* Drops recorded nodes and gradients (the tape is reused for the next step). */
void lmx_tape_reset(lmx_tape *t);
int lmx_tape_size(const lmx_tape *t);

/* Appends a copy of n (arrays retained). vjp NULL: lmx_op_defs[n->op].vjp.
 * Functions outside the op table (the loss) call it with their own vjp. */
lmx_status lmx_tape_record(lmx_tape *t, const lmx_node *n, lmx_vjp_fn vjp);
/* As lmx_tape_record(t, n, NULL) for a node that ran on backend b (called by
 * lmx_exec_node): backward uses b's fast vjp for it (b->vjps[op], on b's
 * pool) when b has one, else the reference. */
lmx_status lmx_tape_record_on(lmx_tape *t, lmx_backend *b, const lmx_node *n);
/* reference = true: backward calls only the reference vjps of lmx_op_defs
 * (the oracles the fast ones are tested against). The default is false,
 * or true when the environment has LMX_VJP=reference. */
void lmx_tape_set_reference(lmx_tape *t, bool reference);

/* No gradient is computed for a (a frozen base weight, say): matched by data
 * pointer. Quantized weights, integer ids and inv_freq never get one. */
lmx_status lmx_tape_freeze(lmx_tape *t, const lmx_array *a);

/* Backward from y (a recorded output): dy = seed (f32, numel of y), or ones
 * when seed is NULL (a scalar loss). Gradients of earlier runs are dropped. */
lmx_status lmx_tape_backward(lmx_tape *t, const lmx_array *y, const lmx_array *seed);

/* The f32 gradient (contiguous, a's logical shape) accumulated for a after
 * backward (gradients of views inside a's memory are merged in), or NULL
 * when none reached it (or out of memory). Borrowed: valid until the next
 * backward, reset or free. */
const lmx_array *lmx_tape_grad(lmx_tape *t, const lmx_array *a);

/* Masked mean cross-entropy: loss[1] (f32) = Σ_t m_t·(logsumexp(logits_t) -
 * logits_t[targets_t]) / Σ_t m_t over logits [T, V] f32, targets i32 [T],
 * mask f32 [T] or NULL (all ones). The op LMX_OP_CROSS_ENTROPY on ex's backend
 * (core/cross_entropy.c; ex NULL: host arrays, nothing recorded). A mask summing to 0 gives loss 0 and zero gradients. */
lmx_status lmx_cross_entropy(lmx_exec *ex, lmx_array *loss, const lmx_array *logits,
                             const lmx_array *targets, const lmx_array *mask);

/* tape_cache.c: a zeroed contiguous f32 array in b's memory, recycled on a
 * device backend (freed blocks are kept per exact size for the next step's
 * arrays instead of a device free + malloc + synchronisation each; host
 * backends: lmx_array_alloc_on). The tape's gradients and the training
 * forward's activations use it. */
lmx_status lmx_tape_alloc_on(lmx_backend *b, lmx_array *a, int ndim, const int64_t *shape);
/* As lmx_tape_alloc_on for an op's output that the op writes whole (a
 * training activation): a recycled device block is not zeroed first (it
 * holds the old values until the op runs). */
lmx_status lmx_tape_alloc_out_on(lmx_backend *b, lmx_array *a, int ndim, const int64_t *shape);
/* Frees b's idle blocks that no allocation took in the last two calls (a
 * trainer calls it once per micro-batch); all: every idle block, and later
 * returns are freed at once (before the backend goes). */
void lmx_tape_cache_trim(lmx_backend *b, bool all);

/* vjp.c: the vjp of each op, as lmx_op_defs rows use them. dsrc[i] is NULL
 * (no gradient wanted) or a zeroed contiguous f32 array of src[i]'s logical
 * shape that the vjp adds into; dout is contiguous f32 of out's shape. */
lmx_status lmx_vjp_get_rows(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[]);
lmx_status lmx_vjp_matmul(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[]);
lmx_status lmx_vjp_rms_norm(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[]);
lmx_status lmx_vjp_layer_norm(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[]);
lmx_status lmx_vjp_rope(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[]);
lmx_status lmx_vjp_attention(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[]);
lmx_status lmx_vjp_binary(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[]);
lmx_status lmx_vjp_unary(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[]);
lmx_status lmx_vjp_softmax(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[]);
lmx_status lmx_vjp_cross_entropy(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[]);
/* act(x) and act'(x) of an lmx_act_kind, as the ACT vjp computes them
 * (fast vjps call these to stay equal to the reference). */
float lmx_vjp_act(float x, int act);
float lmx_vjp_act_grad(float x, int act);
/* A dense f32 copy (logical order) of any float array, strided or not;
 * free() it. */
lmx_status lmx_vjp_dense(const lmx_array *a, float **out);

#endif
