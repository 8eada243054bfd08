/* cpu_cross_entropy.c - the CPU kernel and fast vjp of LMX_OP_CROSS_ENTROPY:
 * the rows of core/cross_entropy.c run on the backend's thread pool. The row
 * code is shared with the reference (the oracle runs it on one thread), so
 * the loss and d logits are bit-identical to the reference for any thread
 * count (tests/unit/test_grad.c test_fast_cross_entropy). */
#include "backend/cpu/cpu.h"
#include "backend/cpu/cpu_vjp.h"
#include "core/cross_entropy.h"

lmx_status lmx_cpu_cross_entropy(const lmx_node *n, lmx_pool *pool) { return lmx_ce_forward(n, pool); }

lmx_status lmx_fast_vjp_cross_entropy(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool) {
    return lmx_ce_vjp(n, dout, dsrc, pool);
}
