/* cross_entropy.h - the row code of the masked cross-entropy op
 * (LMX_OP_CROSS_ENTROPY, core/cross_entropy.c), shared by the reference vjp
 * and the CPU backend's kernel and fast vjp (src/backend/cpu/cpu_cross_entropy.c)
 * so that both give the same bits: rows are independent, each computed with
 * the same f64 arithmetic by one thread, and the loss is summed over rows in
 * order afterwards. Host memory; pool NULL runs on the calling thread. */
#ifndef LMX_CORE_CROSS_ENTROPY_H
#define LMX_CORE_CROSS_ENTROPY_H

#include "core/tape.h"

/* n->out[0] = the loss of node n (src: logits, targets, mask?). */
lmx_status lmx_ce_forward(const lmx_node *n, lmx_pool *pool);
/* dsrc[0] += d loss / d logits · dout[0] (dsrc[1], dsrc[2]: no gradient). */
lmx_status lmx_ce_vjp(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool);

#endif
