/* cuda_sample.cu - greedy decoding without the logits leaving the device.
 *
 * Up to 64 blocks of 1024 threads per row of f32 logits, then one warp per
 * row merging their states. Each thread walks its
 * strided share of the row in increasing index order keeping the largest
 * finite value (the first index wins a tie), the largest value at any other
 * index, an online Σ exp(x - max) and a count of NaN/±inf; the block then
 * merges the 1024 states (the lower index wins a tie of maxima). Only the
 * 20-byte result per row is copied back: the 513 KB row of a 128k vocabulary
 * and the host's log-softmax over it were ~1.2 ms of every 1B decode step.
 *
 * Why "second" and the non-finite count: the host pipeline takes the argmax
 * of fl(x - lse), and that subtraction can merge two nearly equal logits;
 * the caller (generate/sampler_device.c) keeps the device's id only when the
 * runner-up is far enough below the max that no rounding can merge them,
 * and otherwise downloads the row and runs the host pipeline. */
#include "backend/cuda/cuda_common.cuh"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define PICK_THREADS 1024

struct pick_state {
    float m1, m2, sum; /* max, largest at another index, Σ exp(x - m1) */
    int i1, nf;        /* index of m1, non-finite count */
};

__device__ __forceinline__ void pick_add(pick_state &s, float v, int i) {
    if (!isfinite(v)) {
        s.nf++;
    } else if (v > s.m1) { /* a new max: indices grow, so strict > keeps the first */
        s.m2 = s.m1;
        s.sum = (s.m1 == -INFINITY ? 0.0f : s.sum * expf(s.m1 - v)) + 1.0f;
        s.m1 = v;
        s.i1 = i;
    } else {
        s.m2 = fmaxf(s.m2, v);
        s.sum += expf(v - s.m1);
    }
}

/* a := merge(a, b); either may be empty (m1 = -inf, i1 = INT_MAX). */
__device__ __forceinline__ void pick_merge(pick_state &a, const pick_state &b) {
    bool b_wins = b.m1 > a.m1 || (b.m1 == a.m1 && b.i1 < a.i1);
    pick_state w = b_wins ? b : a, l = b_wins ? a : b;
    w.m2 = fmaxf(w.m2, l.m1); /* the loser's max sits at another index */
    if (l.m1 != -INFINITY) w.sum += l.sum * expf(l.m1 - w.m1);
    w.nf += l.nf;
    a = w;
}

__device__ __forceinline__ pick_state pick_shfl(const pick_state &s, int o) {
    pick_state r;
    r.m1 = __shfl_xor_sync(0xffffffffu, s.m1, o);
    r.m2 = __shfl_xor_sync(0xffffffffu, s.m2, o);
    r.sum = __shfl_xor_sync(0xffffffffu, s.sum, o);
    r.i1 = __shfl_xor_sync(0xffffffffu, s.i1, o);
    r.nf = __shfl_xor_sync(0xffffffffu, s.nf, o);
    return r;
}

/* Block (x, row) of a grid of nb blocks per row: its threads walk the row
 * with stride nb * PICK_THREADS, each in increasing index order (what
 * pick_add assumes), and the block's merged state goes to part[row * nb + x].
 * One block per row read the 513 KB row of a 128k vocabulary through one SM
 * (~29 us of a 1B step, bench/cuda-notes.md); nb blocks spread it. */
__global__ void __launch_bounds__(PICK_THREADS) greedy_part_k(pick_state *part, const float *__restrict__ x, int V) {
    __shared__ pick_state sh[PICK_THREADS / 32];
    const float *row = x + (int64_t)blockIdx.y * V;
    pick_state s = {-INFINITY, -INFINITY, 0.0f, INT_MAX, 0};
    const int T = PICK_THREADS * gridDim.x; /* the stride */
    int i = blockIdx.x * PICK_THREADS + threadIdx.x;
    for (; i < V - 3 * T; i += 4 * T) { /* four loads in flight, consumed in index order */
        float v0 = row[i], v1 = row[i + T], v2 = row[i + 2 * T], v3 = row[i + 3 * T];
        pick_add(s, v0, i);
        pick_add(s, v1, i + T);
        pick_add(s, v2, i + 2 * T);
        pick_add(s, v3, i + 3 * T);
    }
    for (; i < V; i += T) pick_add(s, row[i], i);
    for (int o = 16; o > 0; o >>= 1) pick_merge(s, pick_shfl(s, o));
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    if (lane == 0) sh[w] = s;
    __syncthreads();
    if (w != 0) return;
    s = sh[lane]; /* PICK_THREADS / 32 == 32 warps: one state per lane */
    for (int o = 16; o > 0; o >>= 1) pick_merge(s, pick_shfl(s, o));
    if (lane == 0) part[(int64_t)blockIdx.y * gridDim.x + blockIdx.x] = s;
}

/* One warp per row merges its nb block states (ties: the lower index). */
__global__ void greedy_merge_k(lmx_cuda_pick *out, const pick_state *part, int nb) {
    int lane = threadIdx.x;
    pick_state s = {-INFINITY, -INFINITY, 0.0f, INT_MAX, 0};
    for (int j = lane; j < nb; j += 32) pick_merge(s, part[(int64_t)blockIdx.x * nb + j]);
    for (int o = 16; o > 0; o >>= 1) pick_merge(s, pick_shfl(s, o));
    if (lane == 0) {
        lmx_cuda_pick p;
        p.id = s.i1 == INT_MAX ? -1 : s.i1;
        p.n_nonfinite = s.nf;
        p.max = s.m1;
        p.second = s.m2;
        p.lse = s.m1 == -INFINITY ? -INFINITY : s.m1 + logf(s.sum);
        out[blockIdx.x] = p;
    }
}

/* Blocks per row: about 4 values per thread, at most 64 blocks
 * (LMX_CUDA_PICK_BLOCKS=N forces N, 1 = the single-block walk). */
static int pick_blocks(int64_t V) {
    const char *e = getenv("LMX_CUDA_PICK_BLOCKS");
    long nb = e && *e ? strtol(e, NULL, 10) : V / (4 * PICK_THREADS);
    return nb < 1 ? 1 : nb > 64 ? 64 : (int)nb;
}

/* The pick of rows [R, V] into out[R] (device), with partial states in the
 * kernel scratch (which must not grow during a capture: it is tiny here). */
static lmx_status launch_pick(lmx_cuda_ctx *c, lmx_cuda_pick *out, const float *x, int64_t R, int64_t V,
                              size_t part_offset) {
    int nb = pick_blocks(V);
    void *scr;
    LMX_TRY(cuda_scratch(c, part_offset + (size_t)(R * nb) * sizeof(pick_state), &scr));
    pick_state *part = (pick_state *)((uint8_t *)scr + part_offset);
    greedy_part_k<<<dim3((unsigned)nb, (unsigned)R), PICK_THREADS, 0, c->stream>>>(part, x, (int)V);
    LMX_TRY(cuda_launched("greedy pick"));
    greedy_merge_k<<<(unsigned)R, 32, 0, c->stream>>>(out, part, nb);
    return cuda_launched("greedy pick: merge");
}

static lmx_status check_logits(const lmx_backend *b, const lmx_array *logits, int64_t *R, int64_t *V) {
    if (!b || !b->name || strcmp(b->name, "cuda") || !b->ctx)
        return lmx_err(LMX_ERR_INVALID_ARG, "cuda greedy: not a CUDA backend");
    if (logits->dtype != LMX_F32 || logits->ndim < 1 || !lmx_array_is_contiguous(logits))
        return lmx_err(LMX_ERR_UNSUPPORTED, "cuda greedy: logits must be contiguous float32");
    *R = cu_rows(logits);
    *V = cu_cols(logits);
    if (*R < 1 || *V < 1 || *R > 65535 || *V > INT32_MAX - 4 * PICK_THREADS)
        return lmx_err(LMX_ERR_INVALID_ARG, "cuda greedy: %lld rows of %lld logits", (long long)*R, (long long)*V);
    return LMX_OK;
}

extern "C" lmx_status lmx_cuda_greedy(lmx_backend *b, const lmx_array *logits, lmx_cuda_pick *out) {
    int64_t R = 0, V = 0;
    LMX_TRY(check_logits(b, logits, &R, &V));
    lmx_cuda_ctx *c = (lmx_cuda_ctx *)b->ctx;
    if (c->capturing) return lmx_err(LMX_ERR_INTERNAL, "cuda greedy: called during a graph capture");
    /* An open automatic step capture (LMX_CUDA_GRAPHS=1) is launched first, so
     * the step's graph keeps the topology it had before this kernel existed. */
    LMX_TRY(cuda_flush(c));
    void *res;
    size_t bytes = (size_t)R * sizeof(lmx_cuda_pick), off = (bytes + 255) & ~(size_t)255;
    /* results, then the partial states: sized at once, so launch_pick does not move it */
    LMX_TRY(cuda_scratch(c, off + (size_t)(R * pick_blocks(V)) * sizeof(pick_state), &res));
    LMX_TRY(launch_pick(c, (lmx_cuda_pick *)res, (const float *)logits->data, R, V, off));
    return lmx_backend_download(b, out, res, bytes); /* on the same stream: after the pick */
}

/* The pick of one row into the backend's own result buffer (allocated
 * outside a capture), so a static decode graph can end with it. */
extern "C" lmx_status lmx_cuda_greedy_launch(lmx_backend *b, const lmx_array *logits) {
    int64_t R = 0, V = 0;
    LMX_TRY(check_logits(b, logits, &R, &V));
    if (R != 1) return lmx_err(LMX_ERR_INVALID_ARG, "cuda greedy launch: %lld rows (one expected)", (long long)R);
    lmx_cuda_ctx *c = (lmx_cuda_ctx *)b->ctx;
    if (!c->pick_dev) {
        if (c->capturing) return lmx_err(LMX_ERR_INTERNAL, "cuda greedy launch: no result buffer during a capture");
        void *p;
        LMX_TRY(b->buffers->alloc(b, sizeof(lmx_cuda_pick), &p));
        c->pick_dev = (lmx_cuda_pick *)p;
    }
    return launch_pick(c, c->pick_dev, (const float *)logits->data, 1, V, 0);
}

extern "C" lmx_status lmx_cuda_greedy_read(lmx_backend *b, lmx_cuda_pick *out) {
    lmx_cuda_ctx *c = (lmx_cuda_ctx *)b->ctx;
    if (!c->pick_dev) return lmx_err(LMX_ERR_INTERNAL, "cuda greedy read: no pick was launched");
    return lmx_backend_download(b, out, c->pick_dev, sizeof *out);
}

/* ---- the logits processors' edits --------------------------------------- */

#define EDIT_CHUNK 128 /* edits per launch, passed by value (1.5 KB of the 4 KB of kernel parameters) */

struct edit_chunk {
    lmx_logit_op op[EDIT_CHUNK];
    int n;
};

/* One thread, list order, the host's operations with explicit round-to-nearest (never contracted): the host's
 * bits (lmx_logit_op_apply). */
__global__ void logits_edit_k(float *x, const edit_chunk e, int64_t V) {
    for (int i = 0; i < e.n; i++) {
        lmx_logit_op o = e.op[i];
        if (o.id < 0 || o.id >= V) continue; /* the sampler only emits ids in the vocabulary */
        float v = x[o.id];
        if (o.kind == LMX_LOGIT_ADD)
            v = __fadd_rn(v, o.v);
        else if (o.kind == LMX_LOGIT_REPEAT)
            v = v < 0 ? __fmul_rn(v, o.v) : __fdiv_rn(v, o.v);
        else
            v = __fsub_rn(v, o.v);
        x[o.id] = v;
    }
}

extern "C" lmx_status lmx_cuda_logits_edit(lmx_backend *b, const lmx_array *logits, const lmx_logit_op *ops,
                                           size_t n) {
    int64_t R = 0, V = 0;
    LMX_TRY(check_logits(b, logits, &R, &V));
    if (R != 1) return lmx_err(LMX_ERR_INVALID_ARG, "cuda logits edit: %lld rows (one expected)", (long long)R);
    lmx_cuda_ctx *c = (lmx_cuda_ctx *)b->ctx;
    if (c->capturing) return lmx_err(LMX_ERR_INTERNAL, "cuda logits edit: called during a graph capture");
    LMX_TRY(cuda_flush(c));
    for (size_t i = 0; i < n; i += EDIT_CHUNK) {
        edit_chunk e;
        e.n = (int)(n - i < EDIT_CHUNK ? n - i : EDIT_CHUNK);
        memcpy(e.op, ops + i, (size_t)e.n * sizeof *ops);
        logits_edit_k<<<1, 1, 0, c->stream>>>((float *)logits->data, e, V);
        LMX_TRY(cuda_launched("logits edit"));
    }
    return LMX_OK;
}
