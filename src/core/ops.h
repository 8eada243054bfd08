/*
 * ops.h - typed, validated constructors for the ops in op.h.
 *
 * Outputs come first, then inputs, then parameters (llm.c's convention).
 * Outputs are caller-provided arrays (preallocated scratch), so a decode step
 * allocates nothing and a later CUDA graph sees fixed addresses. Each
 * constructor checks shapes/dtypes and returns LMX_ERR_SHAPE with a message
 * naming the op, then runs the node on ex's backend.
 */
#ifndef LMX_CORE_OPS_H
#define LMX_CORE_OPS_H

#include "core/backend.h"

lmx_status lmx_get_rows(lmx_exec *ex, lmx_array *out, const lmx_array *table, const lmx_array *ids);
lmx_status lmx_matmul(lmx_exec *ex, lmx_array *out, const lmx_array *x, const lmx_array *w,
                      const lmx_array *bias /* NULL */);
/* Quantized forms: w (or table) of an MLX packed dtype dequantizes per group
 * of group_size elements as scales·v + biases (biases NULL for fp modes);
 * with scales NULL they are lmx_matmul / lmx_get_rows. GGUF block dtypes
 * need no scales. */
lmx_status lmx_matmul_q(lmx_exec *ex, lmx_array *out, const lmx_array *x, const lmx_array *w,
                        const lmx_array *bias, const lmx_array *scales, const lmx_array *biases,
                        int group_size);
/* out += scale · (x · wᵀ) in place (w a dense f32 matrix: LoRA's B factor
 * and its scale written straight onto the base projection's output; see
 * LMX_OP_MATMUL_ACC). */
lmx_status lmx_matmul_acc(lmx_exec *ex, lmx_array *out, const lmx_array *x, const lmx_array *w, float scale);
lmx_status lmx_get_rows_q(lmx_exec *ex, lmx_array *out, const lmx_array *table, const lmx_array *ids,
                          const lmx_array *scales, const lmx_array *biases, int group_size);
lmx_status lmx_rms_norm(lmx_exec *ex, lmx_array *out, const lmx_array *x, const lmx_array *w,
                        float eps, bool add_one);
lmx_status lmx_layer_norm(lmx_exec *ex, lmx_array *out, const lmx_array *x, const lmx_array *w,
                          const lmx_array *b, float eps);
/* x: [T, H, hd] (in place allowed: out == x). inv_freq: f32 [dims/2].
 * Position of row t is pos0 + t; theta_i = pos·inv_freq[i]. */
lmx_status lmx_rope(lmx_exec *ex, lmx_array *out, const lmx_array *x, const lmx_array *inv_freq,
                    int64_t pos0, int dims, bool traditional, float mscale);
/* lmx_rope over batch rows of `period` tokens laid end to end: row t of x is
 * at position pos0 + (t mod period) (period 0: lmx_rope). One node for all
 * rows of a training batch instead of one per row. */
lmx_status lmx_rope_rows(lmx_exec *ex, lmx_array *out, const lmx_array *x, const lmx_array *inv_freq,
                         int64_t pos0, int64_t period, int dims, bool traditional, float mscale);
/* Causal attention of q rows at positions pos0.. against cache rows [0, pos0+T).
 * window > 0: key j visible from position p only if p - j < window.
 * softcap > 0: scores = softcap·tanh(scores/softcap). */
lmx_status lmx_attention(lmx_exec *ex, lmx_array *out, const lmx_array *q, const lmx_array *k,
                         const lmx_array *v, int64_t pos0, float scale, float softcap, int window);
/* lmx_attention over `rows` sequences laid end to end: q [rows·T, H, hd],
 * k, v [rows·S, Hkv, hd|vd], out [rows·T, H·vd]; row r's queries see only
 * row r's keys, each row with the same pos0, window, scale and softcap
 * (pos0 + T <= S). rows 1 is lmx_attention. */
lmx_status lmx_attention_rows(lmx_exec *ex, lmx_array *out, const lmx_array *q, const lmx_array *k,
                              const lmx_array *v, int rows, int64_t pos0, float scale, float softcap, int window);
/* Fused decode-step ops (op.h): each equals the plain ops in sequence and
 * writes into a source. add_rms_norm: x += d, then out = rms_norm(x, w).
 * rope_kv: rope(q) and rope(k) in place at positions pos0.., then k → kc and
 * v → vc (cache rows of a float dtype, converted). Device backends run
 * them as one kernel; the CPU kernels are the plain ones in sequence. */
lmx_status lmx_add_rms_norm(lmx_exec *ex, lmx_array *out, lmx_array *x, const lmx_array *d, const lmx_array *w,
                            float eps, bool add_one);
lmx_status lmx_rope_kv(lmx_exec *ex, lmx_array *q, lmx_array *k, const lmx_array *v, const lmx_array *inv_freq,
                       int64_t pos0, int dims, bool traditional, float mscale, lmx_array *kc, lmx_array *vc);
lmx_status lmx_add(lmx_exec *ex, lmx_array *out, const lmx_array *a, const lmx_array *b);
lmx_status lmx_mul(lmx_exec *ex, lmx_array *out, const lmx_array *a, const lmx_array *b);
lmx_status lmx_scale(lmx_exec *ex, lmx_array *out, const lmx_array *a, float s);
/* out = act(a) * b when b != NULL (gated MLP), else act(a). a may be a
 * strided 2-D view (columns of a fused gate_up output). */
lmx_status lmx_act(lmx_exec *ex, lmx_array *out, const lmx_array *a, const lmx_array *b, lmx_act_kind act);
lmx_status lmx_softcap(lmx_exec *ex, lmx_array *out, const lmx_array *a, float cap);
lmx_status lmx_copy(lmx_exec *ex, lmx_array *out, const lmx_array *a);
lmx_status lmx_softmax(lmx_exec *ex, lmx_array *out, const lmx_array *a);

/* A strided 2-D view of columns [c0, c0+n) of a 2-D array (no copy). */
void lmx_array_cols(lmx_array *dst, const lmx_array *src, int64_t c0, int64_t n);

#endif
