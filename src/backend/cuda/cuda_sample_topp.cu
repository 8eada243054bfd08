/* cuda_sample_topp.cu - sampled decoding (temperature, top-p, min-p, top-k)
 * without the logits row leaving the device.
 *
 * The host pipeline (generate/sampler.c: log-softmax, a sort of the whole
 * vocabulary by logprob, filters that keep a prefix, a categorical draw over
 * the prefix in sorted order) costs ~1 ms and more of host time a token on a
 * 128k vocabulary, plus the 513 KB download. Here the same steps run on the
 * device and 8 bytes come back:
 *   1. one block: max, then log Σ exp (f32 lanes, a tree), as the host's
 *      log-softmax; lp_i = x_i - lse and the index i as sort pairs;
 *   2. a stable descending radix sort of the pairs (CUB), so equal logprobs
 *      keep increasing indices, the host's comparator;
 *   3. one block walks the sorted prefix in chunks of 1024 with block scans
 *      in double: top-p (the smallest prefix whose mass reaches top_p of the
 *      total, ties with its last logprob kept), min-p, top-k, then the
 *      categorical draw with the host's uniform u: weights (float)exp(lp/temp
 *      - lp0/temp) in the host's roundings, the first index whose running
 *      sum exceeds u·Σ.
 * The sums are the host's terms in another association, so the token equals
 * the host's except where u·Σ falls within rounding of a boundary between two
 * tokens (tests/gpu/test_device_sampler.c measures how often); the kernels are
 * deterministic, so a seed repeats its stream on the device. Non-finite
 * logits, or a row the block cannot handle, give id -1: the caller runs the
 * host pipeline. */
#include "backend/cuda/cuda_common.cuh"

#include <cub/cub.cuh>

#define SAMPLE_THREADS 1024

struct sample_args {
    float temp, top_p, min_p;
    int top_k, min_keep;
    double u;
};

/* The sort pairs (x_i - lse, i), lse from f32 lanes and a tree; *bad: any non-finite x. */
__global__ void __launch_bounds__(SAMPLE_THREADS) sample_prep_k(const float *__restrict__ x, int V, float *keys,
                                                                 int *vals, int *bad) {
    __shared__ float sh[32];
    float m = -INFINITY, nb = 0.0f;
    for (int i = threadIdx.x; i < V; i += SAMPLE_THREADS) {
        float v = x[i];
        if (!isfinite(v)) nb += 1.0f;
        else m = fmaxf(m, v);
    }
    m = block_max(m, sh);
    nb = block_sum(nb, sh); /* only whether it is 0 matters */
    float s = 0.0f;
    for (int i = threadIdx.x; i < V; i += SAMPLE_THREADS) s += expf(x[i] - m);
    float lse = m + logf(block_sum(s, sh));
    for (int i = threadIdx.x; i < V; i += SAMPLE_THREADS) {
        keys[i] = __fsub_rn(x[i], lse);
        vals[i] = i;
    }
    if (threadIdx.x == 0) *bad = nb > 0.0f;
}

typedef cub::BlockScan<double, SAMPLE_THREADS> dscan;

/* The first position p in [0, n) whose inclusive running sum of w(i) is
 * >= target (ge) or > target (!ge), walking chunks of SAMPLE_THREADS;
 * n when none. With total != NULL the walk goes on to the end and *total
 * gets the sum of all n terms. */
template <typename W>
__device__ int scan_find(W w, int n, double target, bool ge, typename dscan::TempStorage &ts, double *total) {
    __shared__ int found;
    __shared__ double base;
    if (threadIdx.x == 0) found = n, base = 0.0;
    __syncthreads();
    for (int c0 = 0; c0 < n; c0 += SAMPLE_THREADS) {
        int i = c0 + threadIdx.x;
        double t = i < n ? w(i) : 0.0, incl, agg;
        dscan(ts).InclusiveSum(t, incl, agg);
        double run = base + incl;
        if (i < n && (ge ? run >= target : run > target)) atomicMin(&found, i);
        __syncthreads();
        if (threadIdx.x == 0) base += agg;
        __syncthreads();
        if (found < n && !total) break;
    }
    int f = found;
    double t = base;
    __syncthreads(); /* the next call's thread 0 resets found and base */
    if (total) *total = t;
    return f;
}

/* Filters and the draw over the sorted pairs; out = {id, lp of id}. */
__global__ void __launch_bounds__(SAMPLE_THREADS) sample_pick_k(const float *__restrict__ v, const int *__restrict__ idx,
                                                                int V, const int *bad, sample_args a, int2 *out) {
    __shared__ typename dscan::TempStorage ts;
    if (*bad) {
        if (threadIdx.x == 0) *out = make_int2(-1, 0);
        return;
    }
    int keep = V;
    if (a.top_p > 0 && a.top_p < 1) {
        /* keep a token iff the mass of strictly more likely tokens < top_p·total */
        double total = 0;
        scan_find([&](int i) { return exp((double)v[i]); }, V, INFINITY, true, ts, &total);
        double target = (double)a.top_p * total;
        int k = scan_find([&](int i) { return exp((double)v[i]); }, V, target, true, ts, NULL);
        k = k < V ? k + 1 : V; /* tokens summed before the mass reached the target */
        float thr = v[k > 0 ? k - 1 : 0];
        while (k < V && v[k] >= thr) k++; /* ties with the threshold stay (uniform over the block) */
        keep = k > 0 ? k : 1;
    }
    if (a.min_p > 0) {
        float thr = v[0] + logf(a.min_p);
        int k = 0;
        while (k < keep && v[k] >= thr) k++; /* a short prefix in practice; every thread walks the same */
        if (k < a.min_keep) k = a.min_keep < keep ? a.min_keep : keep;
        keep = k;
    }
    if (a.top_k > 0 && a.top_k < keep) keep = a.top_k;
    float q0 = __fdiv_rn(v[0], a.temp);
    auto wt = [&](int i) { return (double)(float)exp((double)__fdiv_rn(v[i], a.temp) - (double)q0); };
    double sum = 0;
    scan_find(wt, keep, INFINITY, true, ts, &sum);
    int p = scan_find(wt, keep, a.u * sum, false, ts, NULL);
    if (p >= keep) p = keep - 1;
    if (threadIdx.x == 0) *out = make_int2(idx[p], __float_as_int(v[p]));
}

static size_t al256(size_t n) { return (n + 255) & ~(size_t)255; }

extern "C" lmx_status lmx_cuda_sample(lmx_backend *b, const lmx_array *logits, float temp, float top_p, int top_k,
                                      float min_p, int min_keep, double u, int32_t *id, float *lp) {
    if (!b || !b->name || strcmp(b->name, "cuda") || !b->ctx)
        return lmx_err(LMX_ERR_INVALID_ARG, "cuda sample: not a CUDA backend");
    if (logits->dtype != LMX_F32 || !lmx_array_is_contiguous(logits) || cu_rows(logits) != 1)
        return lmx_err(LMX_ERR_UNSUPPORTED, "cuda sample: one contiguous float32 row expected");
    if (!(temp > 0)) return lmx_err(LMX_ERR_INVALID_ARG, "cuda sample: temperature %g", (double)temp);
    lmx_cuda_ctx *c = (lmx_cuda_ctx *)b->ctx;
    if (c->capturing) return lmx_err(LMX_ERR_INTERNAL, "cuda sample: called during a graph capture");
    LMX_TRY(cuda_flush(c));
    int64_t V64 = cu_cols(logits);
    if (V64 < 1 || V64 > (1 << 30)) return lmx_err(LMX_ERR_INVALID_ARG, "cuda sample: %lld logits", (long long)V64);
    int V = (int)V64;
    size_t cub_bytes = 0;
    LMX_TRY(cuda_check(cub::DeviceRadixSort::SortPairsDescending(NULL, cub_bytes, (const float *)NULL, (float *)NULL,
                                                                 (const int *)NULL, (int *)NULL, V, 0, 32, c->stream),
                       "cuda sample: sort size"));
    size_t pairs = al256((size_t)V * 4);
    size_t need = 4 * pairs + al256(cub_bytes) + 256;
    if (need > c->sample_bytes) {
        if (c->sample_buf) b->buffers->free(b, c->sample_buf);
        c->sample_buf = NULL;
        c->sample_bytes = 0;
        LMX_TRY(b->buffers->alloc(b, need, &c->sample_buf));
        c->sample_bytes = need;
    }
    uint8_t *p = (uint8_t *)c->sample_buf;
    float *k_in = (float *)p, *k_out = (float *)(p + pairs);
    int *v_in = (int *)(p + 2 * pairs), *v_out = (int *)(p + 3 * pairs);
    void *tmp = p + 4 * pairs;
    uint8_t *small = p + 4 * pairs + al256(cub_bytes);
    int *bad = (int *)small;
    int2 *res = (int2 *)(small + 16);
    sample_prep_k<<<1, SAMPLE_THREADS, 0, c->stream>>>((const float *)logits->data, V, k_in, v_in, bad);
    LMX_TRY(cuda_launched("sample: log-softmax"));
    LMX_TRY(cuda_check(cub::DeviceRadixSort::SortPairsDescending(tmp, cub_bytes, k_in, k_out, v_in, v_out, V, 0, 32,
                                                                 c->stream),
                       "sample: sort"));
    sample_args a = {temp, top_p, min_p, top_k, min_keep, u};
    sample_pick_k<<<1, SAMPLE_THREADS, 0, c->stream>>>(k_out, v_out, V, bad, a, res);
    LMX_TRY(cuda_launched("sample: draw"));
    int2 r;
    LMX_TRY(lmx_backend_download(b, &r, res, sizeof r));
    *id = r.x;
    memcpy(lp, &r.y, sizeof *lp);
    return LMX_OK;
}
