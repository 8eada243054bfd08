/* cpu_backend.c - the CPU backend's kernel table.
 *
 * Matmul, attention, RoPE and SiLU go through the fast drivers (cpu_fast_*.c),
 * which use the SIMD table picked at start-up (cpu_features.c) and fall back
 * to the reference kernels for whatever they do not handle; LMX_CPU=reference
 * sends every op to the reference kernels. */
#include "backend/cpu/cpu_vjp.h"

#include <stdlib.h>

static const lmx_kernel_fn cpu_kernels[LMX_OP_COUNT] = {
    [LMX_OP_GET_ROWS] = lmx_cpu_get_rows,
    [LMX_OP_MATMUL] = lmx_fast_matmul,
    [LMX_OP_RMS_NORM] = lmx_cpu_rms_norm,
    [LMX_OP_LAYER_NORM] = lmx_cpu_layer_norm,
    [LMX_OP_ROPE] = lmx_fast_rope,
    [LMX_OP_ATTENTION] = lmx_fast_attention,
    [LMX_OP_ADD] = lmx_cpu_add,
    [LMX_OP_MUL] = lmx_cpu_mul,
    [LMX_OP_SCALE] = lmx_cpu_scale,
    [LMX_OP_ACT] = lmx_fast_act,
    [LMX_OP_SOFTCAP] = lmx_cpu_softcap,
    [LMX_OP_COPY] = lmx_cpu_copy,
    [LMX_OP_SOFTMAX] = lmx_cpu_softmax,
    [LMX_OP_CROSS_ENTROPY] = lmx_cpu_cross_entropy,
    [LMX_OP_ADD_RMS_NORM] = lmx_cpu_add_rms_norm,
    [LMX_OP_ROPE_KV] = lmx_cpu_rope_kv,
    [LMX_OP_MATMUL_ACC] = lmx_cpu_matmul_acc,
};

/* Activations are f32 on the CPU; weights may be any float dtype. */
static bool cpu_supports(const lmx_backend *b, const lmx_node *n) {
    (void)b;
    for (int i = 0; i < LMX_MAX_SRC; i++) {
        const lmx_array *s = n->src[i];
        if (!s) continue;
        const lmx_dtype_traits *tr = lmx_dtype_info(s->dtype);
        if (!tr) return false;
        if (s->dtype != LMX_I32 && !tr->to_f32) return false;
    }
    const lmx_dtype_traits *to = lmx_dtype_info(n->out->dtype);
    /* copies (and rope_kv's cache rows) convert to any dtype with a from_f32 */
    bool conv = n->op == LMX_OP_COPY || n->op == LMX_OP_ROPE_KV;
    if (n->op == LMX_OP_ROPE_KV && !lmx_dtype_info(n->src[4]->dtype)->from_f32) return false;
    return to && (n->out->dtype == LMX_F32 || (conv && to->from_f32));
}

lmx_status lmx_cpu_backend_create(int n_threads, lmx_backend **out) {
    lmx_backend *b = calloc(1, sizeof *b);
    if (!b) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    b->name = "cpu";
    b->kernels = cpu_kernels;
    b->supports = cpu_supports;
    b->vjps = lmx_cpu_vjps(); /* fast vjps for training (cpu_vjp*.c) */
    if (n_threads <= 0) {
        b->pool = lmx_pool_default();
    } else {
        lmx_status s = lmx_pool_create(n_threads, &b->pool);
        if (s != LMX_OK) {
            free(b);
            return s;
        }
        b->ctx = b->pool; /* owned: freed with the backend */
    }
    *out = b;
    return LMX_OK;
}
