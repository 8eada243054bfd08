/* cuda_fused.cu - the fused decode-step ops (core/op.h): residual add +
 * RMSNorm, and RoPE of q and k + the KV-cache row writes. Each replaces two
 * or four kernels of a decode step; in a replayed step graph every node
 * costs ~1.5-2 µs however small, and these ops move a few KB.
 *
 * The arithmetic is that of the plain kernels (binary_k's add, rms_norm_k's
 * reduction over the same thread layout, rope_k's angles, convert_k's
 * rounding), so the fused step computes the same floats as the unfused one. */
#include "backend/cuda/cuda_common.cuh"

static int norm_threads(int64_t C) { return C >= 4096 ? 1024 : C >= 1024 ? 512 : C >= 256 ? 256 : 128; }

/* x += d; o = x·rsqrt(mean(x²)+eps)·(w or 1+w), one block per row */
__global__ void add_rms_norm_k(float *o, float *x, const float *d, const void *w, int wdt, int64_t C, int64_t os,
                               int64_t xs, int64_t ds, float eps, int add_one) {
    __shared__ float sh[32];
    pdl_trigger(); /* the int8-x GEMV that reads o may start loading weights */
    float *xr = x + blockIdx.x * xs;
    const float *dr = d + blockIdx.x * ds;
    float *orow = o + blockIdx.x * os;
    float ss = 0;
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
        float v = xr[i] + dr[i];
        xr[i] = v;
        ss += v * v;
    }
    ss = block_sum(ss, sh);
    float inv = 1.0f / sqrtf(ss / (float)C + eps);
    for (int64_t i = threadIdx.x; i < C; i += blockDim.x) {
        float g = w ? ld_any(w, wdt, i) : 1.0f;
        if (add_one) g += 1.0f;
        orow[i] = xr[i] * inv * g;
    }
}

lmx_status lmx_cuda_add_rms_norm(const lmx_node *n, lmx_pool *pool) {
    lmx_cuda_ctx *c = cuda_ctx(pool);
    const lmx_array *x = n->src[0], *d = n->src[1], *w = n->src[2];
    int64_t R = cu_rows(x), C = cu_cols(x);
    if (R == 0) return LMX_OK;
    add_rms_norm_k<<<(unsigned)R, norm_threads(C), 0, c->stream>>>(
        (float *)n->out->data, (float *)x->data, (const float *)d->data, w ? w->data : NULL, w ? w->dtype : 0, C,
        cu_row_stride(n->out), cu_row_stride(x), cu_row_stride(d), n->fp[0], n->ip[0]);
    return cuda_launched("add_rms_norm");
}

/* Work items, in order: the rotated pairs of q (T·H·dims/2), those of k
 * (T·Hkv·dims/2, also stored into the k cache row), k's features past dims
 * (cache only), v's elements (cache only). In a step graph (dpos) the
 * position comes from device memory and the cache rows move by
 * (*dpos - base) rows, as in rope_k and convert_k. */
template <typename TO>
__global__ void rope_kv_k(float *q, float *k, const float *v, const float *inv_freq, TO *kc, TO *vc, int64_t T,
                          int H, int Hkv, int hd, int64_t kcs, int64_t vcs, int64_t pos0, const int64_t *dpos,
                          int64_t base, int dims, int trad, float ms) {
    if (dpos) {
        pos0 = *dpos;
        kc += (*dpos - base) * kcs;
        vc += (*dpos - base) * vcs;
    }
    int half = dims / 2, pass = hd - dims, W = Hkv * hd;
    int64_t nq = T * H * half, nk = T * Hkv * half, np = T * Hkv * pass, nv = T * W, n = nq + nk + np + nv;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        if (i < nq + nk) {
            bool isq = i < nq;
            int64_t j = isq ? i : i - nq;
            int nh = isq ? H : Hkv;
            int64_t r = j / half;
            int kk = (int)(j - r * half);
            float *x = isq ? q : k;
            int64_t a = r * hd + (trad ? 2 * kk : kk), b = r * hd + (trad ? 2 * kk + 1 : kk + half);
            float y0, y1;
            rope_pair((float)(pos0 + r / nh), inv_freq[kk], ms, x[a], x[b], &y0, &y1);
            x[a] = y0;
            x[b] = y1;
            if (!isq) {
                int64_t t = r / Hkv, ca = a - t * W, cb = b - t * W; /* column in the cache row */
                stf(kc, t * kcs + ca, y0);
                stf(kc, t * kcs + cb, y1);
            }
        } else if (i < nq + nk + np) {
            int64_t j = i - nq - nk, r = j / pass, col = (r % Hkv) * hd + dims + (j - r * pass), t = r / Hkv;
            stf(kc, t * kcs + col, k[t * W + col]);
        } else {
            int64_t j = i - nq - nk - np, t = j / W, col = j - t * W;
            stf(vc, t * vcs + col, v[t * W + col]);
        }
    }
}

lmx_status lmx_cuda_rope_kv(const lmx_node *n, lmx_pool *pool) {
    lmx_cuda_ctx *c = cuda_ctx(pool);
    const lmx_array *q = n->src[0], *k = n->src[1], *v = n->src[2], *inv = n->src[3], *vco = n->src[4];
    lmx_array *kco = n->out;
    int64_t T = q->shape[0];
    int H = (int)q->shape[1], Hkv = (int)k->shape[1], hd = (int)q->shape[2], dims = n->ip[1];
    int64_t work = T * (H + Hkv) * (dims / 2) + T * Hkv * (hd - dims) + T * Hkv * hd;
    if (work == 0) return LMX_OK;
    int64_t blocks = (work + 255) / 256;
    dim3 g((unsigned)(blocks < 4096 ? blocks : 4096));
    float *qd = (float *)q->data, *kd = (float *)k->data;
    const float *vd = (const float *)v->data, *fd = (const float *)inv->data;
    int64_t kcs = cu_row_stride(kco), vcs = cu_row_stride(vco);
    const int64_t *dp = c->dyn_pos;
    int64_t b = c->dyn_base;
    switch (kco->dtype) {
    case LMX_F32:
        rope_kv_k<<<g, 256, 0, c->stream>>>(qd, kd, vd, fd, (float *)kco->data, (float *)vco->data, T, H, Hkv, hd,
                                            kcs, vcs, n->ip[0], dp, b, dims, n->ip[2], n->fp[0]);
        break;
    case LMX_BF16:
        rope_kv_k<<<g, 256, 0, c->stream>>>(qd, kd, vd, fd, (__nv_bfloat16 *)kco->data, (__nv_bfloat16 *)vco->data,
                                            T, H, Hkv, hd, kcs, vcs, n->ip[0], dp, b, dims, n->ip[2], n->fp[0]);
        break;
    case LMX_F16:
        rope_kv_k<<<g, 256, 0, c->stream>>>(qd, kd, vd, fd, (__half *)kco->data, (__half *)vco->data, T, H, Hkv,
                                            hd, kcs, vcs, n->ip[0], dp, b, dims, n->ip[2], n->fp[0]);
        break;
    default: return lmx_err(LMX_ERR_UNSUPPORTED, "cuda rope_kv: cache dtype %s", lmx_dtype_info(kco->dtype)->name);
    }
    return cuda_launched("rope_kv");
}
