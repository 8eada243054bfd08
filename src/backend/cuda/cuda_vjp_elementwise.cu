/* cuda_vjp_elementwise.cu - vjps of the row-wise and element-wise ops:
 * RMS_NORM, LAYER_NORM, ROPE, ADD/MUL (same shape or one-row broadcast:
 * reduced over rows), SCALE, SOFTCAP, ACT (gated), COPY (straight through,
 * any dtypes), SOFTMAX; and the vjp table.
 *
 * Inputs are read through their row strides as the forward kernels take them
 * (2-D rows view: R rows of C elements); dout and dsrc are dense. Row sums in
 * f32 block reductions (the references use f64): ~1e-6 relative for rows of
 * a few thousand elements. Norm-weight and broadcast gradients write one
 * contribution per row into scratch and sum the columns (deterministic, no
 * atomics on the hot rows). */
#include "backend/cuda/cuda_vjp.cuh"
#include "core/act_math.h"

/* ---- column sums ------------------------------------------------------- */

#define CS_COLS 32
#define CS_ROWS 8

/* Block (32 columns x 8 row lanes); grid.y splits the rows, merged by atomics. */
__global__ void vjp_colsum_k(float *dst, const float *src, int64_t R, int64_t C, int64_t srs, int64_t rows_per) {
    __shared__ float sh[CS_ROWS][CS_COLS + 1];
    int64_t col = (int64_t)blockIdx.x * CS_COLS + threadIdx.x;
    int64_t r0 = (int64_t)blockIdx.y * rows_per, r1 = r0 + rows_per < R ? r0 + rows_per : R;
    float s = 0.0f;
    if (col < C)
        for (int64_t r = r0 + threadIdx.y; r < r1; r += CS_ROWS) s += src[r * srs + col];
    sh[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && col < C) {
        for (int k = 1; k < CS_ROWS; k++) s += sh[k][threadIdx.x];
        if (gridDim.y == 1)
            dst[col] += s;
        else
            atomicAdd(dst + col, s);
    }
}

lmx_status cuda_vjp_colsum_add(lmx_cuda_ctx *c, float *dst, const float *src, int64_t R, int64_t C, int64_t srs) {
    if (R == 0 || C == 0) return LMX_OK;
    int64_t cb = (C + CS_COLS - 1) / CS_COLS;
    int64_t splits = (2 * c->n_sm + cb - 1) / cb; /* ~2 blocks per SM */
    if (splits > R / 64) splits = R / 64;
    if (splits < 1) splits = 1;
    if (splits > 65535) splits = 65535;
    int64_t rows_per = (R + splits - 1) / splits;
    splits = (R + rows_per - 1) / rows_per;
    vjp_colsum_k<<<dim3((unsigned)cb, (unsigned)splits), dim3(CS_COLS, CS_ROWS), 0, c->stream>>>(dst, src, R, C, srs,
                                                                                               rows_per);
    return cuda_launched("vjp: column sums");
}

static unsigned row_threads(int64_t C) { return C >= 1024 ? 512 : C >= 256 ? 256 : 128; }

/* ---- norms --------------------------------------------------------------- */

/* One block per row. dx += inv·g·gc − x·inv³·(Σ g·gc·x)/C, gc = w (+1);
 * dwrow[r, c] = g·x·inv (summed over rows afterwards). */
__global__ void vjp_rms_norm_k(float *dx, float *dwrow, const float *x, const float *g, const void *w, int wdt,
                               int add_one, int64_t C, int64_t xs, float eps, bool ow) {
    __shared__ float sh[32];
    int64_t r = blockIdx.x;
    const float *xr = x + r * xs, *gr = g + r * C;
    float ss = 0.0f, dot = 0.0f;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
        float xv = xr[i], gc = (w ? ld_any(w, wdt, i) : 1.0f) + (add_one ? 1.0f : 0.0f);
        ss += xv * xv;
        dot += gr[i] * gc * xv;
    }
    ss = block_sum(ss, sh);
    dot = block_sum(dot, sh);
    float inv = 1.0f / sqrtf(ss / (float)C + eps);
    float k3 = inv * inv * inv * dot / (float)C;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
        float xv = xr[i], gc = (w ? ld_any(w, wdt, i) : 1.0f) + (add_one ? 1.0f : 0.0f);
        if (dx) vjp_put(dx + r * C + i, inv * gr[i] * gc - xv * k3, ow);
        if (dwrow) dwrow[r * C + i] = gr[i] * xv * inv;
    }
}

/* dx += inv·(dh − mean(dh) − x̂·mean(dh·x̂)), dh = g·w; dwrow = g·x̂. */
__global__ void vjp_layer_norm_k(float *dx, float *dwrow, const float *x, const float *g, const void *w, int wdt,
                                 int64_t C, int64_t xs, float eps, bool ow) {
    __shared__ float sh[32];
    int64_t r = blockIdx.x;
    const float *xr = x + r * xs, *gr = g + r * C;
    float s = 0.0f;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) s += xr[i];
    float mean = block_sum(s, sh) / (float)C;
    float v = 0.0f;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) v += (xr[i] - mean) * (xr[i] - mean);
    float inv = 1.0f / sqrtf(block_sum(v, sh) / (float)C + eps);
    float m1 = 0.0f, m2 = 0.0f;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
        float dh = gr[i] * (w ? ld_any(w, wdt, i) : 1.0f), xh = (xr[i] - mean) * inv;
        m1 += dh;
        m2 += dh * xh;
    }
    m1 = block_sum(m1, sh) / (float)C;
    m2 = block_sum(m2, sh) / (float)C;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
        float dh = gr[i] * (w ? ld_any(w, wdt, i) : 1.0f), xh = (xr[i] - mean) * inv;
        if (dx) vjp_put(dx + r * C + i, inv * (dh - m1 - xh * m2), ow);
        if (dwrow) dwrow[r * C + i] = gr[i] * xh;
    }
}

static lmx_status norm_vjp(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool, bool layer) {
    lmx_cuda_ctx *c = cuda_ctx(pool);
    const lmx_array *x = n->src[0], *w = n->src[1];
    const char *name = layer ? "layer_norm" : "rms_norm";
    if (x->dtype != LMX_F32 || (w && !cu_is_float(w->dtype)))
        return lmx_err(LMX_ERR_UNSUPPORTED, "cuda %s vjp: x must be f32, w float", name);
    int64_t R = cu_rows(x), C = cu_cols(x);
    if (R == 0 || C == 0) return LMX_OK;
    float *dwrow = NULL;
    bool want_w = w && dsrc[1];
    if (want_w) LMX_TRY(cuda_scratch(c, (size_t)(R * C) * 4, (void **)&dwrow));
    float *dx = dsrc[0] ? (float *)dsrc[0]->data : NULL;
    if (dx || want_w) {
        if (layer)
            vjp_layer_norm_k<<<(unsigned)R, row_threads(C), 0, c->stream>>>(
                dx, dwrow, (const float *)x->data, (const float *)dout->data, w ? w->data : NULL, w ? w->dtype : 0, C,
                cu_row_stride(x), n->fp[0], n->fresh & 1);
        else
            vjp_rms_norm_k<<<(unsigned)R, row_threads(C), 0, c->stream>>>(
                dx, dwrow, (const float *)x->data, (const float *)dout->data, w ? w->data : NULL, w ? w->dtype : 0,
                n->ip[0], C, cu_row_stride(x), n->fp[0], n->fresh & 1);
        LMX_TRY(cuda_launched(name));
    }
    if (want_w) LMX_TRY(cuda_vjp_colsum_add(c, (float *)dsrc[1]->data, dwrow, R, C, C));
    if (layer && n->src[2] && dsrc[2])
        LMX_TRY(cuda_vjp_colsum_add(c, (float *)dsrc[2]->data, (const float *)dout->data, R, C, C));
    return LMX_OK;
}

lmx_status lmx_cuda_vjp_rms_norm(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool) {
    return norm_vjp(n, dout, dsrc, pool, false);
}
lmx_status lmx_cuda_vjp_layer_norm(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool) {
    return norm_vjp(n, dout, dsrc, pool, true);
}

/* ---- rope: rotate back by -θ (same mscale); features past dims pass ----
 * period > 0: token t at pos0 + t mod period. Every element of dx is
 * written once, so a fresh dsrc (n->fresh) is stored instead of added. */

__global__ void vjp_rope_k(float *dx, const float *g, const float *inv_freq, int64_t rows, int64_t H, int64_t hd,
                           int64_t pos0, int dims, int trad, float ms, int64_t period, bool fresh) {
    int half = dims / 2;
    int64_t per = half + (hd - dims);
    CUDA_VJP_LOOP(i, rows * per) {
        int64_t r = i / per, k = i - r * per;
        if (k >= half) {
            int64_t d = dims + (k - half);
            vjp_put(dx + r * hd + d, g[r * hd + d], fresh);
            continue;
        }
        int64_t t = r / H;
        float pos = (float)(pos0 + (period > 0 ? t % period : t)), sn, cs;
        sincosf(pos * inv_freq[k], &sn, &cs);
        cs *= ms;
        sn *= ms;
        int64_t a = r * hd + (trad ? 2 * k : k), b = r * hd + (trad ? 2 * k + 1 : k + half);
        float ga = g[a], gb = g[b];
        vjp_put(dx + a, ga * cs + gb * sn, fresh);
        vjp_put(dx + b, gb * cs - ga * sn, fresh);
    }
}

lmx_status lmx_cuda_vjp_rope(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool) {
    lmx_cuda_ctx *c = cuda_ctx(pool);
    if (!dsrc[0]) return LMX_OK;
    const lmx_array *x = n->src[0];
    if (n->src[1]->dtype != LMX_F32) return lmx_err(LMX_ERR_UNSUPPORTED, "cuda rope vjp: inv_freq must be f32");
    int64_t T = x->shape[0], H = x->shape[1], hd = x->shape[2];
    int dims = n->ip[1];
    int64_t work = T * H * (dims / 2 + (hd - dims));
    if (work == 0) return LMX_OK;
    vjp_rope_k<<<cuda_vjp_blocks(work), 256, 0, c->stream>>>((float *)dsrc[0]->data, (const float *)dout->data,
                                                             (const float *)n->src[1]->data, T * H, H, hd, n->ip[0],
                                                             dims, n->ip[2], n->fp[0], (int64_t)n->ip[3],
                                                             n->fresh & 1);
    return cuda_launched("rope vjp");
}

/* ---- add / mul ----------------------------------------------------------- */

/* da += g (·b); db (same shape) += g (·a), or brow[r, c] = g·a for a
 * broadcast b (summed over rows afterwards). */
__global__ void vjp_binary_k(float *da, float *db, float *brow, const float *g, const float *a, const void *b, int bdt,
                             int64_t R, int64_t C, int64_t as, int64_t bs, int mul, unsigned ow) {
    CUDA_VJP_LOOP(i, R * C) {
        int64_t r = i / C, col = i - r * C;
        float gv = g[i];
        if (da) vjp_put(da + i, mul ? gv * ld_any(b, bdt, r * bs + col) : gv, ow & 1);
        float gb = mul ? gv * a[r * as + col] : gv;
        if (db) vjp_put(db + i, gb, ow & 2);
        if (brow) brow[i] = gb;
    }
}

lmx_status lmx_cuda_vjp_binary(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool) {
    lmx_cuda_ctx *c = cuda_ctx(pool);
    const lmx_array *a = n->src[0], *b = n->src[1];
    if (a->dtype != LMX_F32 || !cu_is_float(b->dtype))
        return lmx_err(LMX_ERR_UNSUPPORTED, "cuda %s vjp: a must be f32, b float", lmx_op_defs[n->op].name);
    int64_t R = cu_rows(a), C = cu_cols(a);
    if (R * C == 0) return LMX_OK;
    bool bcast = lmx_array_numel(b) != lmx_array_numel(a), mul = n->op == LMX_OP_MUL;
    const float *g = (const float *)dout->data;
    if (bcast && !mul && dsrc[1]) {
        LMX_TRY(cuda_vjp_colsum_add(c, (float *)dsrc[1]->data, g, R, C, C));
        if (!dsrc[0]) return LMX_OK;
    }
    float *brow = NULL;
    if (bcast && mul && dsrc[1]) LMX_TRY(cuda_scratch(c, (size_t)(R * C) * 4, (void **)&brow));
    float *da = dsrc[0] ? (float *)dsrc[0]->data : NULL, *db = !bcast && dsrc[1] ? (float *)dsrc[1]->data : NULL;
    if (!da && !db && !brow) return LMX_OK;
    vjp_binary_k<<<cuda_vjp_blocks(R * C), 256, 0, c->stream>>>(da, db, brow, g, (const float *)a->data, b->data,
                                                                 b->dtype, R, C, cu_row_stride(a),
                                                                 bcast ? 0 : cu_row_stride(b), mul, n->fresh);
    LMX_TRY(cuda_launched("binary vjp"));
    if (brow) LMX_TRY(cuda_vjp_colsum_add(c, (float *)dsrc[1]->data, brow, R, C, C));
    return LMX_OK;
}

/* ---- scale / softcap / act / copy ------------------------------------ */

/* act(x) and act'(x) come from core/act_math.h, shared with the reference. */
__global__ void vjp_unary_k(float *da, float *db, const float *g, const float *a, const float *b, int64_t R,
                            int64_t C, int64_t as, int64_t bs, int op, int act, float f, unsigned ow) {
    CUDA_VJP_LOOP(i, R * C) {
        int64_t r = i / C, col = i - r * C;
        float gv = g[i], d;
        if (op == LMX_OP_SCALE) {
            d = gv * f;
        } else if (op == LMX_OP_SOFTCAP) {
            float t = tanhf(a[r * as + col] / f);
            d = gv * (1.0f - t * t);
        } else {
            float x = a[r * as + col], bv = b ? b[r * bs + col] : 1.0f;
            d = gv * lmx_act_deriv(x, act) * bv;
            if (b && db) vjp_put(db + i, gv * lmx_act_value(x, act), ow & 2);
        }
        if (da) vjp_put(da + i, d, ow & 1);
    }
}

/* vjp_unary_k over contiguous 16-byte aligned a (and b) of n4 float4s: no per-element row/column division. */
__global__ void vjp_unary_flat_k(float4 *da, float4 *db, const float4 *g, const float4 *a, const float4 *b, int64_t n4,
                                 int op, int act, float f, unsigned ow) {
    CUDA_VJP_LOOP(i, n4) {
        float4 gv4 = g[i], a4 = a[i], b4 = b ? b[i] : make_float4(1.0f, 1.0f, 1.0f, 1.0f);
        float gv[4] = {gv4.x, gv4.y, gv4.z, gv4.w}, x[4] = {a4.x, a4.y, a4.z, a4.w}, bv[4] = {b4.x, b4.y, b4.z, b4.w};
        float d[4], e[4];
#pragma unroll
        for (int j = 0; j < 4; j++) {
            if (op == LMX_OP_SCALE) {
                d[j] = gv[j] * f;
            } else if (op == LMX_OP_SOFTCAP) {
                float t = tanhf(x[j] / f);
                d[j] = gv[j] * (1.0f - t * t);
            } else {
                d[j] = gv[j] * lmx_act_deriv(x[j], act) * bv[j];
                e[j] = gv[j] * lmx_act_value(x[j], act);
            }
        }
        if (da) {
            float4 o = ow & 1 ? make_float4(0.0f, 0.0f, 0.0f, 0.0f) : da[i];
            da[i] = make_float4(o.x + d[0], o.y + d[1], o.z + d[2], o.w + d[3]);
        }
        if (b && db) {
            float4 o = ow & 2 ? make_float4(0.0f, 0.0f, 0.0f, 0.0f) : db[i];
            db[i] = make_float4(o.x + e[0], o.y + e[1], o.z + e[2], o.w + e[3]);
        }
    }
}

static bool dense4(const lmx_array *a) {
    return !a || (lmx_array_is_contiguous(a) && ((uintptr_t)a->data & 15) == 0);
}

__global__ void vjp_copy_k(float *da, const float *g, int64_t n, bool ow) {
    CUDA_VJP_LOOP(i, n) vjp_put(da + i, g[i], ow);
}

lmx_status lmx_cuda_vjp_unary(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool) {
    lmx_cuda_ctx *c = cuda_ctx(pool);
    const lmx_array *a = n->src[0], *b = n->op == LMX_OP_ACT ? n->src[1] : NULL;
    int64_t N = lmx_array_numel(a);
    if (N == 0) return LMX_OK;
    if (n->op == LMX_OP_COPY) { /* straight through: dout and dsrc are both dense, same count */
        if (!dsrc[0]) return LMX_OK;
        vjp_copy_k<<<cuda_vjp_blocks(N), 256, 0, c->stream>>>((float *)dsrc[0]->data, (const float *)dout->data, N,
                                                          n->fresh & 1);
        return cuda_launched("copy vjp");
    }
    if (n->op != LMX_OP_SCALE && (a->dtype != LMX_F32 || (b && b->dtype != LMX_F32)))
        return lmx_err(LMX_ERR_UNSUPPORTED, "cuda %s vjp: inputs must be f32", lmx_op_defs[n->op].name);
    float *da = dsrc[0] ? (float *)dsrc[0]->data : NULL, *db = b && dsrc[1] ? (float *)dsrc[1]->data : NULL;
    if (!da && !db) return LMX_OK;
    int64_t R = cu_rows(a), C = cu_cols(a);
    if (N % 4 == 0 && a->dtype == LMX_F32 && (!b || b->dtype == LMX_F32) && dense4(a) && dense4(b) && dense4(dsrc[0]) && dense4(b ? dsrc[1] : NULL) && dense4(dout)) {
        vjp_unary_flat_k<<<cuda_vjp_blocks(N / 4), 256, 0, c->stream>>>(
            (float4 *)da, (float4 *)db, (const float4 *)dout->data, (const float4 *)a->data,
            b ? (const float4 *)b->data : NULL, N / 4, n->op, n->ip[0], n->fp[0], n->fresh);
        return cuda_launched("unary vjp");
    }
    vjp_unary_k<<<cuda_vjp_blocks(N), 256, 0, c->stream>>>(da, db, (const float *)dout->data, (const float *)a->data,
                                                           b ? (const float *)b->data : NULL, R, C, cu_row_stride(a),
                                                           b ? cu_row_stride(b) : 0, n->op, n->ip[0], n->fp[0],
                                                           n->fresh);
    return cuda_launched("unary vjp");
}

/* ---- softmax: y recomputed per row; da += y·(g − Σ g·y) ---------------- */

__global__ void vjp_softmax_k(float *da, const float *a, const float *g, int64_t C, int64_t as, bool ow) {
    __shared__ float sh[32];
    int64_t r = blockIdx.x;
    const float *ar = a + r * as, *gr = g + r * C;
    float mx = -INFINITY;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) mx = fmaxf(mx, ar[i]);
    mx = block_max(mx, sh);
    float s = 0.0f;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) s += expf(ar[i] - mx);
    float inv = 1.0f / block_sum(s, sh);
    float dot = 0.0f;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) dot += gr[i] * (expf(ar[i] - mx) * inv);
    dot = block_sum(dot, sh);
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) vjp_put(da + r * C + i, expf(ar[i] - mx) * inv * (gr[i] - dot), ow);
}

lmx_status lmx_cuda_vjp_softmax(const lmx_node *n, const lmx_array *dout, lmx_array *dsrc[], lmx_pool *pool) {
    lmx_cuda_ctx *c = cuda_ctx(pool);
    if (!dsrc[0]) return LMX_OK;
    const lmx_array *a = n->src[0];
    if (a->dtype != LMX_F32) return lmx_err(LMX_ERR_UNSUPPORTED, "cuda softmax vjp: a must be f32");
    int64_t R = cu_rows(a), C = cu_cols(a);
    if (R * C == 0) return LMX_OK;
    vjp_softmax_k<<<(unsigned)R, row_threads(C), 0, c->stream>>>((float *)dsrc[0]->data, (const float *)a->data,
                                                                 (const float *)dout->data, C, cu_row_stride(a),
                                                                 n->fresh & 1);
    return cuda_launched("softmax vjp");
}

/* ---- the table ------------------------------------------------------------ */

/* The sources each vjp above writes whole (lmx_backend.vjp_overwrites): only where every element of dsrc[j] is
 * stored whatever the data (no early return on an empty side, no atomics, no partial tiles). */
uint32_t lmx_cuda_vjp_overwrites(const lmx_backend *b, const lmx_node *n) {
    (void)b;
    const lmx_array *a = n->src[0], *w = n->src[1];
    if (!a || lmx_array_numel(a) == 0) return 0;
    switch (n->op) {
    case LMX_OP_RMS_NORM:
    case LMX_OP_LAYER_NORM:
    case LMX_OP_SOFTMAX:
    case LMX_OP_SCALE:
    case LMX_OP_SOFTCAP:
    case LMX_OP_COPY:
    case LMX_OP_CROSS_ENTROPY:
    case LMX_OP_ROPE: /* every pair and every pass-through feature of dx, once */
        return 1;
    case LMX_OP_ACT:
        return w ? 3 : 1;
    case LMX_OP_ADD:
    case LMX_OP_MUL: /* a broadcast row b is a column sum added into dsrc[1] */
        return lmx_array_numel(w) == lmx_array_numel(a) ? 3 : 1;
    case LMX_OP_MATMUL:
    case LMX_OP_MATMUL_ACC: /* dx (dts of a LoRA B factor): cuBLAS with beta 0, or cuda_lora.cu's overwrite mode */
        return w->shape[0] > 0 && w->shape[1] > 0 ? 1 : 0;
    default:
        return 0;
    }
}

const lmx_vjp_kernel_fn *lmx_cuda_vjp_table(void) {
    static lmx_vjp_kernel_fn t[LMX_OP_COUNT];
    t[LMX_OP_GET_ROWS] = lmx_cuda_vjp_get_rows;
    t[LMX_OP_MATMUL] = lmx_cuda_vjp_matmul;
    t[LMX_OP_MATMUL_ACC] = lmx_cuda_vjp_matmul; /* dx, dw (times fp[0]); the tape passes dout to out's previous value */
    t[LMX_OP_RMS_NORM] = lmx_cuda_vjp_rms_norm;
    t[LMX_OP_LAYER_NORM] = lmx_cuda_vjp_layer_norm;
    t[LMX_OP_ROPE] = lmx_cuda_vjp_rope;
    t[LMX_OP_ATTENTION] = lmx_cuda_vjp_attention;
    t[LMX_OP_ADD] = lmx_cuda_vjp_binary;
    t[LMX_OP_MUL] = lmx_cuda_vjp_binary;
    t[LMX_OP_SCALE] = lmx_cuda_vjp_unary;
    t[LMX_OP_ACT] = lmx_cuda_vjp_unary;
    t[LMX_OP_SOFTCAP] = lmx_cuda_vjp_unary;
    t[LMX_OP_COPY] = lmx_cuda_vjp_unary;
    t[LMX_OP_SOFTMAX] = lmx_cuda_vjp_softmax;
    t[LMX_OP_CROSS_ENTROPY] = lmx_cuda_vjp_cross_entropy;
    return t;
}
