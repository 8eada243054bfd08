/* cuda_norm.cu - RMSNorm, LayerNorm (one block per row, f32 accumulation)
 * and rotary embedding (one thread per rotated pair). In place is allowed:
 * each element is read and written by the same thread. */
#include "backend/cuda/cuda_common.cuh"

static int norm_threads(int64_t C) { return C >= 4096 ? 1024 : C >= 1024 ? 512 : C >= 256 ? 256 : 128; }

__global__ void rms_norm_k(float *o, const float *x, const void *w, int wdt, int64_t C, int64_t os, int64_t xs,
                           float eps, int add_one) {
    __shared__ float sh[32];
    const float *xr = x + blockIdx.x * xs;
    float *orow = o + blockIdx.x * os;
    float ss = 0;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) ss += xr[i] * xr[i];
    ss = block_sum(ss, sh);
    float inv = 1.0f / sqrtf(ss / (float)C + eps);
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
        float g = w ? ld_any(w, wdt, i) : 1.0f;
        if (add_one) g += 1.0f;
        orow[i] = xr[i] * inv * g;
    }
}

__global__ void layer_norm_k(float *o, const float *x, const void *w, int wdt, const void *b, int bdt, int64_t C,
                             int64_t os, int64_t xs, float eps) {
    __shared__ float sh[32];
    const float *xr = x + blockIdx.x * xs;
    float *orow = o + blockIdx.x * os;
    float s = 0;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) s += xr[i];
    float mean = block_sum(s, sh) / (float)C;
    float v = 0;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) v += (xr[i] - mean) * (xr[i] - mean);
    float inv = 1.0f / sqrtf(block_sum(v, sh) / (float)C + eps);
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
        float y = (xr[i] - mean) * inv;
        if (w) y *= ld_any(w, wdt, i);
        if (b) y += ld_any(b, bdt, i);
        orow[i] = y;
    }
}

lmx_status lmx_cuda_rms_norm(const lmx_node *n, lmx_pool *pool) {
    lmx_cuda_ctx *c = cuda_ctx(pool);
    const lmx_array *x = n->src[0], *w = n->src[1];
    int64_t R = cu_rows(x), C = cu_cols(x);
    if (R == 0) return LMX_OK;
    rms_norm_k<<<(unsigned)R, norm_threads(C), 0, c->stream>>>((float *)n->out->data, (const float *)x->data,
                                                               w ? w->data : NULL, w ? w->dtype : 0, C,
                                                               cu_row_stride(n->out), cu_row_stride(x), n->fp[0],
                                                               n->ip[0]);
    return cuda_launched("rms_norm");
}

lmx_status lmx_cuda_layer_norm(const lmx_node *n, lmx_pool *pool) {
    lmx_cuda_ctx *c = cuda_ctx(pool);
    const lmx_array *x = n->src[0], *w = n->src[1], *b = n->src[2];
    int64_t R = cu_rows(x), C = cu_cols(x);
    if (R == 0) return LMX_OK;
    layer_norm_k<<<(unsigned)R, norm_threads(C), 0, c->stream>>>(
        (float *)n->out->data, (const float *)x->data, w ? w->data : NULL, w ? w->dtype : 0, b ? b->data : NULL,
        b ? b->dtype : 0, C, cu_row_stride(n->out), cu_row_stride(x), n->fp[0]);
    return cuda_launched("layer_norm");
}

/* Non-traditional (rotate_half): pairs (i, i + dims/2); traditional: (2i, 2i+1).
 * Features past dims pass through (copied when out != x). period > 0: token
 * t sits at pos0 + t mod period (batch rows end to end, core/op_rows.h). */
__global__ void rope_k(float *o, const float *x, const float *inv_freq, int64_t rows, int64_t H, int64_t hd,
                       int64_t pos0, const int64_t *dpos, int dims, int trad, float ms, int64_t period) {
    if (dpos) pos0 = *dpos; /* a static decode graph: the step's position (cuda_step.cu) */
    int half = dims / 2;
    int64_t n = rows * half;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i / half;
        int k = (int)(i - r * half);
        int64_t a = r * hd + (trad ? 2 * k : k), b = r * hd + (trad ? 2 * k + 1 : k + half);
        float y0, y1;
        int64_t t = r / H;
        rope_pair((float)(pos0 + (period > 0 ? t % period : t)), inv_freq[k], ms, x[a], x[b], &y0, &y1);
        o[a] = y0;
        o[b] = y1;
    }
    if (o != x) {
        int64_t pass = hd - dims, m = rows * pass;
        for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < m; i += (int64_t)gridDim.x * blockDim.x) {
            int64_t r = i / pass, d = dims + (i - r * pass);
            o[r * hd + d] = x[r * hd + d];
        }
    }
}

lmx_status lmx_cuda_rope(const lmx_node *n, lmx_pool *pool) {
    lmx_cuda_ctx *c = cuda_ctx(pool);
    const lmx_array *x = n->src[0];
    int64_t T = x->shape[0], H = x->shape[1], hd = x->shape[2];
    int dims = n->ip[1];
    int64_t work = T * H * (dims / 2 > hd - dims ? dims / 2 : hd - dims);
    if (work == 0) return LMX_OK;
    int64_t blocks = (work + 255) / 256;
    rope_k<<<(unsigned)(blocks < 4096 ? blocks : 4096), 256, 0, c->stream>>>(
        (float *)n->out->data, (const float *)x->data, (const float *)n->src[1]->data, T * H, H, hd, n->ip[0], c->dyn_pos, dims,
        n->ip[2], n->fp[0], (int64_t)n->ip[3]);
    return cuda_launched("rope");
}
