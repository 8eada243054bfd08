/* cpu_fused.c - the fused ops (op.h: ADD_RMS_NORM, ROPE_KV, MATMUL_ACC) on
 * the CPU: the plain kernels of the CPU table run in sequence on the same
 * arrays, so a fused op equals the unfused sequence bit for bit. The models
 * call the fused ops on device backends only (one kernel there instead of
 * two or four launches); these are the reference the device kernels are
 * tested against (tests/gpu/test_cuda_ops.c). */
#include "backend/cpu/cpu.h"
#include "backend/cpu/cpu_simd.h"
#include "backend/cpu/cpu_vjp.h"

#include <string.h>

static lmx_node sub(lmx_op op, lmx_array *out, const lmx_array *a, const lmx_array *b) {
    lmx_node n;
    memset(&n, 0, sizeof n);
    n.op = op;
    n.out = out;
    n.src[0] = a;
    n.src[1] = b;
    return n;
}

/* x += d; out = rms_norm(x, w) */
lmx_status lmx_cpu_add_rms_norm(const lmx_node *n, lmx_pool *pool) {
    lmx_array *x = (lmx_array *)n->src[0]; /* written: the op's documented second output */
    lmx_node add = sub(LMX_OP_ADD, x, x, n->src[1]);
    LMX_TRY(lmx_cpu_add(&add, pool));
    lmx_node rms = sub(LMX_OP_RMS_NORM, n->out, x, n->src[2]);
    rms.fp[0] = n->fp[0];
    rms.ip[0] = n->ip[0];
    return lmx_cpu_rms_norm(&rms, pool);
}

/* rope(q), rope(k) in place; k → out (k cache rows), v → src[4] (v cache rows) */
lmx_status lmx_cpu_rope_kv(const lmx_node *n, lmx_pool *pool) {
    lmx_array *q = (lmx_array *)n->src[0], *k = (lmx_array *)n->src[1], *vc = (lmx_array *)n->src[4];
    for (int i = 0; i < 2; i++) {
        lmx_array *x = i ? k : q;
        lmx_node r = sub(LMX_OP_ROPE, x, x, n->src[3]);
        memcpy(r.ip, n->ip, 3 * sizeof *r.ip);
        r.fp[0] = n->fp[0];
        LMX_TRY(lmx_fast_rope(&r, pool));
    }
    /* the cache rows are 2-D [T, Hkv·hd]; k is [T, Hkv, hd]: copy through a 2-D view */
    lmx_array k2 = *k;
    k2.buf = NULL;
    int64_t sh[2] = {k->shape[0], k->shape[1] * k->shape[2]};
    lmx_array_set_contiguous(&k2, k->dtype, 2, sh);
    lmx_node ck = sub(LMX_OP_COPY, n->out, &k2, NULL);
    LMX_TRY(lmx_cpu_copy(&ck, pool));
    lmx_node cv = sub(LMX_OP_COPY, vc, n->src[2], NULL);
    return lmx_cpu_copy(&cv, pool);
}

/* out += s·(x·wᵀ): the product into a scratch array, scaled (s != 1) with
 * lmx_cpu_scale's f32 multiply, then the same f32 adds as lmx_cpu_add: the
 * sequence matmul + scale + add it replaces, bit for bit (training's host
 * path, scale·(t·bᵀ) + base; s == 1 skips the scale). */
lmx_status lmx_cpu_matmul_acc(const lmx_node *n, lmx_pool *pool) {
    lmx_array tmp;
    int64_t sh[2] = {lmx_array_numel(n->out) / n->src[1]->shape[0], n->src[1]->shape[0]};
    LMX_TRY(lmx_array_alloc(&tmp, LMX_F32, 2, sh));
    lmx_node mm = sub(LMX_OP_MATMUL, &tmp, n->src[0], n->src[1]);
    lmx_status st = lmx_fast_matmul(&mm, pool);
    if (!st && n->fp[0] != 1.0f) {
        lmx_node sc = sub(LMX_OP_SCALE, &tmp, &tmp, NULL);
        sc.fp[0] = n->fp[0];
        st = lmx_cpu_scale(&sc, pool);
    }
    if (!st) {
        lmx_node add = sub(LMX_OP_ADD, n->out, n->out, &tmp);
        st = lmx_cpu_add(&add, pool);
    }
    lmx_array_release(&tmp);
    return st;
}

/* MATMUL_ACC's fast vjp: the matmul's with dout·s (s·g rounded once, as the
 * scale node's vjp of the unfused sequence rounds it), so dx and dw equal
 * the host path's bit for bit; s == 1 passes dout as is. */
lmx_status lmx_fast_vjp_matmul_acc(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool) {
    float s = n->fp[0];
    lmx_node m = *n; /* a plain MATMUL: its reference fallback must not apply s a second time */
    m.op = LMX_OP_MATMUL;
    if (s == 1.0f) return lmx_fast_vjp_matmul(&m, dout, dsrc, pool);
    lmx_array gs;
    LMX_TRY(lmx_array_alloc(&gs, LMX_F32, dout->ndim, dout->shape));
    const float *g = dout->data;
    float *o = gs.data;
    int64_t ne = lmx_array_numel(dout);
    for (int64_t i = 0; i < ne; i++) o[i] = g[i] * s;
    lmx_status st = lmx_fast_vjp_matmul(&m, &gs, dsrc, pool);
    lmx_array_release(&gs);
    return st;
}
