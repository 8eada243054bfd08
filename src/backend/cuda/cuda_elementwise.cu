/* cuda_elementwise.cu - embedding rows, add/mul (same shape or one broadcast
 * row), scale/softcap/activations (gated), dtype-converting copy of strided
 * rows, row softmax. Rows are 2-D views: R rows of C elements, row strides
 * in elements as the CPU kernels read them. */
#include "backend/cuda/cuda_quant.cuh"
#include "core/act_math.h"

static dim3 grid_for(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    return dim3((unsigned)(b < 65535 * 32 ? (b > 0 ? b : 1) : 65535 * 32));
}

/* ---- get_rows ------------------------------------------------------------ */

template <typename T>
__global__ void get_rows_k(float *out, const T *tab, const int32_t *ids, int64_t V, int64_t D) {
    int64_t r = blockIdx.y;
    int64_t id = ids[r];
    float *o = out + r * D;
    bool ok = id >= 0 && id < V; /* out of range: zeros (the CPU kernel refuses) */
    for (int64_t d = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; d < D; d += (int64_t)gridDim.x * blockDim.x)
        o[d] = ok ? ldf(tab, id * D + d) : 0.0f;
}

lmx_status lmx_cuda_get_rows(const lmx_node *n, lmx_pool *pool) {
    lmx_cuda_ctx *c = cuda_ctx(pool);
    const lmx_array *tab = n->src[0];
    int64_t R = lmx_array_numel(n->src[1]), V = tab->shape[0], D = tab->shape[1];
    if (R == 0) return LMX_OK;
    if (lmx_dtype_info(tab->dtype)->is_quant) return cuda_get_rows_quant(c, n);
    if (R > 65535) return lmx_err(LMX_ERR_UNSUPPORTED, "cuda get_rows: %lld rows", (long long)R);
    dim3 grid((unsigned)((D + 255) / 256 < 64 ? (D + 255) / 256 : 64), (unsigned)R);
    const int32_t *ids = (const int32_t *)n->src[1]->data;
    float *o = (float *)n->out->data;
    switch (tab->dtype) {
    case LMX_F32: get_rows_k<<<grid, 256, 0, c->stream>>>(o, (const float *)tab->data, ids, V, D); break;
    case LMX_BF16: get_rows_k<<<grid, 256, 0, c->stream>>>(o, (const __nv_bfloat16 *)tab->data, ids, V, D); break;
    case LMX_F16: get_rows_k<<<grid, 256, 0, c->stream>>>(o, (const __half *)tab->data, ids, V, D); break;
    default: return lmx_err(LMX_ERR_UNSUPPORTED, "cuda get_rows: table dtype %s", lmx_dtype_info(tab->dtype)->name);
    }
    return cuda_launched("get_rows");
}

/* ---- add / mul ----------------------------------------------------------- */

template <typename T>
__global__ void binary_k(float *o, const float *a, const T *b, int64_t R, int64_t C, int64_t os, int64_t as,
                         int64_t bs, int mul) {
    int64_t n = R * C;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / C, col = i - r * C;
        float x = a[r * as + col], y = ldf(b, r * bs + col);
        o[r * os + col] = mul ? x * y : x + y;
    }
}

/* Whole contiguous f32 arrays of n4 float4s (the training forward's residual adds, gated activations): 16-byte
 * accesses and no per-element row/column division, which held the strided kernels well under the bandwidth. */
static bool flat4(const lmx_array *o, const lmx_array *a, const lmx_array *b) {
    const lmx_array *all[3] = {o, a, b};
    int64_t n = lmx_array_numel(a);
    for (int i = 0; i < 3; i++)
        if (all[i] && (all[i]->dtype != LMX_F32 || lmx_array_numel(all[i]) != n || !lmx_array_is_contiguous(all[i]) ||
                       ((uintptr_t)all[i]->data & 15)))
            return false;
    return n % 4 == 0;
}

__global__ void binary_flat_k(float4 *o, const float4 *a, const float4 *b, int64_t n4, int mul) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4; i += (int64_t)gridDim.x * blockDim.x) {
        float4 x = a[i], y = b[i];
        o[i] = mul ? make_float4(x.x * y.x, x.y * y.y, x.z * y.z, x.w * y.w)
                   : make_float4(x.x + y.x, x.y + y.y, x.z + y.z, x.w + y.w);
    }
}

lmx_status lmx_cuda_binary(const lmx_node *n, lmx_pool *pool) {
    lmx_cuda_ctx *c = cuda_ctx(pool);
    const lmx_array *a = n->src[0], *b = n->src[1];
    int64_t R = cu_rows(a), C = cu_cols(a);
    bool bcast = lmx_array_numel(b) != lmx_array_numel(a);
    int64_t bs = bcast ? 0 : cu_row_stride(b), as = cu_row_stride(a), os = cu_row_stride(n->out);
    int mul = n->op == LMX_OP_MUL;
    if (flat4(n->out, a, b)) {
        int64_t n4 = R * C / 4;
        binary_flat_k<<<grid_for(n4, 256), 256, 0, c->stream>>>((float4 *)n->out->data, (const float4 *)a->data,
                                                               (const float4 *)b->data, n4, mul);
        return cuda_launched(mul ? "mul" : "add");
    }
    dim3 g = grid_for(R * C, 256);
    float *o = (float *)n->out->data;
    const float *ad = (const float *)a->data;
    switch (b->dtype) {
    case LMX_F32: binary_k<<<g, 256, 0, c->stream>>>(o, ad, (const float *)b->data, R, C, os, as, bs, mul); break;
    case LMX_BF16:
        binary_k<<<g, 256, 0, c->stream>>>(o, ad, (const __nv_bfloat16 *)b->data, R, C, os, as, bs, mul);
        break;
    case LMX_F16: binary_k<<<g, 256, 0, c->stream>>>(o, ad, (const __half *)b->data, R, C, os, as, bs, mul); break;
    default: return lmx_err(LMX_ERR_UNSUPPORTED, "cuda add/mul: dtype %s", lmx_dtype_info(b->dtype)->name);
    }
    return cuda_launched(mul ? "mul" : "add");
}

/* ---- scale / softcap / act --------------------------------------------- */

enum { UN_SCALE = 0, UN_SOFTCAP = 1, UN_ACT = 2 };

__global__ void unary_k(float *o, const float *a, const float *b, int64_t R, int64_t C, int64_t os, int64_t as,
                        int64_t bs, int kind, int act, float p) {
    int64_t n = R * C;
    pdl_trigger(); /* SiLU·up: the down GEMV may start loading weights */
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / C, col = i - r * C;
        float x = a[r * as + col], y;
        if (kind == UN_SCALE)
            y = x * p;
        else if (kind == UN_SOFTCAP)
            y = p * tanhf(x / p);
        else
            y = lmx_act_value(x, act) * (b ? b[r * bs + col] : 1.0f);
        o[r * os + col] = y;
    }
}

/* unary_k over whole contiguous f32 arrays (flat4). */
__global__ void unary_flat_k(float4 *o, const float4 *a, const float4 *b, int64_t n4, int kind, int act, float p) {
    pdl_trigger();
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n4; i += (int64_t)gridDim.x * blockDim.x) {
        float x[4] = {a[i].x, a[i].y, a[i].z, a[i].w}, y[4];
        float4 bv = b ? b[i] : make_float4(1.0f, 1.0f, 1.0f, 1.0f);
        float g[4] = {bv.x, bv.y, bv.z, bv.w};
#pragma unroll
        for (int j = 0; j < 4; j++)
            y[j] = kind == UN_SCALE ? x[j] * p : kind == UN_SOFTCAP ? p * tanhf(x[j] / p) : lmx_act_value(x[j], act) * g[j];
        o[i] = make_float4(y[0], y[1], y[2], y[3]);
    }
}

lmx_status lmx_cuda_unary(const lmx_node *n, lmx_pool *pool) {
    lmx_cuda_ctx *c = cuda_ctx(pool);
    const lmx_array *a = n->src[0], *b = n->op == LMX_OP_ACT ? n->src[1] : NULL;
    int64_t R = cu_rows(a), C = cu_cols(a);
    int kind = n->op == LMX_OP_SCALE ? UN_SCALE : n->op == LMX_OP_SOFTCAP ? UN_SOFTCAP : UN_ACT;
    if (flat4(n->out, a, b)) {
        int64_t n4 = R * C / 4;
        unary_flat_k<<<grid_for(n4, 256), 256, 0, c->stream>>>((float4 *)n->out->data, (const float4 *)a->data,
                                                              b ? (const float4 *)b->data : NULL, n4, kind, n->ip[0],
                                                              n->fp[0]);
        return cuda_launched(lmx_op_defs[n->op].name);
    }
    unary_k<<<grid_for(R * C, 256), 256, 0, c->stream>>>((float *)n->out->data, (const float *)a->data,
                                                         b ? (const float *)b->data : NULL, R, C,
                                                         cu_row_stride(n->out), cu_row_stride(a),
                                                         b ? cu_row_stride(b) : 0, kind, n->ip[0], n->fp[0]);
    return cuda_launched(lmx_op_defs[n->op].name);
}

/* ---- copy ------------------------------------------------------------------ */

/* dpos (a static decode graph's KV-row write, cuda_step.cu): the rows land
 * (*dpos - base) rows further than where they were captured. */
template <typename TI, typename TO>
__global__ void convert_k(TO *o, const TI *a, int64_t R, int64_t C, int64_t os, int64_t as, const int64_t *dpos,
                          int64_t base) {
    if (dpos) o += (*dpos - base) * os;
    int64_t n = R * C;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / C, col = i - r * C;
        stf(o, r * os + col, ldf(a, r * as + col));
    }
}

template <typename TI>
static void launch_convert(const lmx_array *out, const TI *a, int64_t R, int64_t C, int64_t os, int64_t as,
                           const lmx_cuda_ctx *c) {
    dim3 g = grid_for(R * C, 256);
    cudaStream_t st = c->stream;
    const int64_t *dp = c->dyn_pos;
    int64_t b = c->dyn_base;
    if (out->dtype == LMX_F32) convert_k<<<g, 256, 0, st>>>((float *)out->data, a, R, C, os, as, dp, b);
    if (out->dtype == LMX_BF16) convert_k<<<g, 256, 0, st>>>((__nv_bfloat16 *)out->data, a, R, C, os, as, dp, b);
    if (out->dtype == LMX_F16) convert_k<<<g, 256, 0, st>>>((__half *)out->data, a, R, C, os, as, dp, b);
}

lmx_status lmx_cuda_copy(const lmx_node *n, lmx_pool *pool) {
    lmx_cuda_ctx *c = cuda_ctx(pool);
    const lmx_array *a = n->src[0];
    lmx_array *o = n->out;
    int64_t R = cu_rows(a), C = cu_cols(a), as = cu_row_stride(a), os = cu_row_stride(o);
    if (R == 0 || C == 0) return LMX_OK;
    /* In a static decode graph's capture the only copies are the KV-cache
     * writes of the step's rows (transformer.c, kv_cache.c): one row each. */
    if (c->dyn_pos && (R != 1 || !cu_is_float(a->dtype)))
        return lmx_err(LMX_ERR_UNSUPPORTED, "cuda copy: %lld rows of %s in a static decode graph", (long long)R,
                       lmx_dtype_info(a->dtype)->name);
    /* float rows (KV cache writes) by kernel: a memcpy node costs more per call */
    if (a->dtype == o->dtype && !cu_is_float(a->dtype)) {
        size_t row = lmx_dtype_bytes(a->dtype, C);
        return cuda_check(cudaMemcpy2DAsync(o->data, lmx_dtype_bytes(o->dtype, os), a->data,
                                            lmx_dtype_bytes(a->dtype, as), row, (size_t)R,
                                            cudaMemcpyDeviceToDevice, c->stream),
                          "copy");
    }
    switch (a->dtype) {
    case LMX_F32: launch_convert(o, (const float *)a->data, R, C, os, as, c); break;
    case LMX_BF16: launch_convert(o, (const __nv_bfloat16 *)a->data, R, C, os, as, c); break;
    case LMX_F16: launch_convert(o, (const __half *)a->data, R, C, os, as, c); break;
    default: return lmx_err(LMX_ERR_UNSUPPORTED, "cuda copy: dtype %s", lmx_dtype_info(a->dtype)->name);
    }
    return cuda_launched("copy");
}

/* ---- softmax --------------------------------------------------------------- */

__global__ void softmax_k(float *o, const float *a, int64_t C, int64_t os, int64_t as) {
    __shared__ float sh[32];
    const float *ar = a + blockIdx.x * as;
    float *orow = o + blockIdx.x * os;
    float mx = -INFINITY;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) mx = fmaxf(mx, ar[i]);
    mx = block_max(mx, sh);
    float sum = 0;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
        float e = expf(ar[i] - mx);
        orow[i] = e;
        sum += e;
    }
    sum = block_sum(sum, sh);
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) orow[i] /= sum;
}

lmx_status lmx_cuda_softmax(const lmx_node *n, lmx_pool *pool) {
    lmx_cuda_ctx *c = cuda_ctx(pool);
    const lmx_array *a = n->src[0];
    int64_t R = cu_rows(a);
    if (R == 0) return LMX_OK;
    if (R > 0x7fffffff) return lmx_err(LMX_ERR_UNSUPPORTED, "cuda softmax: too many rows");
    softmax_k<<<(unsigned)R, 256, 0, c->stream>>>((float *)n->out->data, (const float *)a->data, cu_cols(a),
                                                  cu_row_stride(n->out), cu_row_stride(a));
    return cuda_launched("softmax");
}
