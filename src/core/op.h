/*
 * op.h - the op table: every operation the models use, as data.
 *
 * An op is recorded as an lmx_node (op id, output, up to 5 inputs, integer
 * and float parameters, like ggml's op_params). lmx_exec_node() validates
 * nothing; the typed constructors in ops.h do (shapes, dtypes) and return
 * LMX_ERR_SHAPE with a message. Each backend supplies one kernel table indexed
 * by lmx_op (NULL = unsupported), so adding an op is one enum entry, one
 * lmx_op_defs row and one kernel per backend. The vjp slot is filled by the
 * autograd work (LoRA issue); the tape in lmx_exec records nodes for it.
 *
 * Legend: T = tokens in the step, D = hidden size, H = query heads,
 * Hkv = key/value heads, hd = head dim, S = cache length, N/K = matmul out/in.
 */
#ifndef LMX_CORE_OP_H
#define LMX_CORE_OP_H

#include "core/array.h"

typedef enum lmx_op {
    LMX_OP_GET_ROWS = 0, /* out[T,D] f32 = table[ids[t], :]          src: table, ids(i32), scales?, biases?; i: group */
    LMX_OP_MATMUL,       /* out[M,N] f32 = x[M,K] · w[N,K]ᵀ (+ b[N])   src: x, w, b?, scales?, biases?; i: group */
    LMX_OP_RMS_NORM,     /* out = x·rsqrt(mean(x²)+eps)·(w or 1+w)   src: x, w?; f: eps; i: add_one */
    LMX_OP_LAYER_NORM,   /* out = (x-μ)/σ·w + b                       src: x, w?, b?; f: eps */
    LMX_OP_ROPE,         /* in place ok: x[T,H,hd]; src: x, inv_freq[dims/2]; i: pos0, dims, traditional,
                            period (0: row t at pos0 + t; P > 0: at pos0 + t mod P); f: mscale */
    LMX_OP_ATTENTION,    /* out[R·T,H·hd]; src: q[R·T,H,hd], k[R·S,Hkv,hd], v[R·S,Hkv,hd]; i: pos0, window,
                            rows R (0/1: one sequence; batch row r sees only its own keys, core/op_rows.h);
                            f: scale, softcap */
    LMX_OP_ADD,          /* out = a + b (b same shape, or one row broadcast) */
    LMX_OP_MUL,          /* out = a * b (same shape, or one row broadcast) */
    LMX_OP_SCALE,        /* out = a * s; f: s */
    LMX_OP_ACT,          /* out = act(a) (* b if b given: gated); i: act */
    LMX_OP_SOFTCAP,      /* out = c·tanh(a/c); f: c */
    LMX_OP_COPY,         /* out = a, converting dtype; both 2-D, rows may be strided */
    LMX_OP_SOFTMAX,      /* out[M,N] = softmax over each row of a */
    LMX_OP_CROSS_ENTROPY, /* out[1] f32 = Σ m·(logsumexp(x_t) − x_t[tg_t]) / Σ m (0 when Σ m = 0)
                             src: logits f32 [T,V] (contiguous), targets i32 [T], mask f32 [T]?;
                             only logits get a gradient (core/cross_entropy.c) */
    /* Fused decode-step ops (device backends; the CPU kernels compose the
     * plain ones, so they agree bit for bit with the unfused sequence).
     * Both also write a source, noted below; neither has a gradient. */
    LMX_OP_ADD_RMS_NORM, /* x += d (written into src x); out = rms_norm(x)
                            src: x[R,C] f32, d[R,C] f32, w?; f: eps; i: add_one */
    LMX_OP_ROPE_KV,      /* rope(q), rope(k) in place, then k, v rows into the cache rows:
                            out = k cache rows [T, Hkv·hd] (float dtype), src: q[T,H,hd], k[T,Hkv,hd],
                            v[T, Hkv·hd] (f32), inv_freq[dims/2], v cache rows (written);
                            i: pos0, dims, traditional; f: mscale */
    LMX_OP_MATMUL_ACC,   /* out[M,N] f32 += s · (x[M,K] · w[N,K]ᵀ), w a dense f32 matrix (an adapter
                            factor): src: x, w; f: s (LoRA's scale). The addend is out's previous
                            contents, so out is read and written; the tape passes out's gradient to
                            that previous value; dx and dw carry the factor s */
    LMX_OP_COUNT
} lmx_op;

typedef enum lmx_act {
    LMX_ACT_SILU = 0,
    LMX_ACT_GELU_ERF = 1,  /* exact GELU: x·Φ(x) */
    LMX_ACT_GELU_TANH = 2, /* tanh approximation ("gelu_pytorch_tanh", "gelu_new") */
    LMX_ACT_RELU = 3,
} lmx_act_kind;

/* Weights of a dtype with needs_scales (MLX packed) carry their per-group
 * scales [N, K/group] (and affine biases) as extra sources; ip[0] = group. */
#define LMX_MAX_SRC 5

typedef struct lmx_node {
    lmx_op op;
    lmx_array *out;
    const lmx_array *src[LMX_MAX_SRC];
    int32_t ip[8];
    float fp[4];
    /* Set by the tape for a backend vjp only, 0 everywhere else: bit j =
     * dsrc[j] is fresh memory the vjp writes whole instead of adding into
     * (the backend asked for it: lmx_backend.vjp_overwrites). */
    uint32_t fresh;
} lmx_node;

struct lmx_backend;
typedef lmx_status (*lmx_kernel_fn)(const lmx_node *n, lmx_pool *pool);
/* vjp(node, grad_out, grads_in[]): adds into each non-NULL grads_in[i]
 * (dense f32 of src[i]'s shape); see core/tape.h. */
typedef lmx_status (*lmx_vjp_fn)(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[]);
/* A backend's fast vjp (same contract as lmx_vjp_fn, run on the backend's
 * host thread pool); it falls back to the reference vjp for what it does
 * not handle. */
typedef lmx_status (*lmx_vjp_kernel_fn)(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[],
                                        lmx_pool *pool);

typedef struct lmx_op_def {
    const char *name;
    int n_src_min, n_src_max;
    lmx_vjp_fn vjp; /* core/vjp.c; NULL: no gradient flows through */
} lmx_op_def;

extern const lmx_op_def lmx_op_defs[LMX_OP_COUNT];

#endif
