/* cuda_backend.cu - the CUDA backend: context (device, one stream, cuBLAS
 * handle with a fixed workspace), device memory (plain cudaMalloc, tracked
 * for peak-memory reports), the kernel table, supports(), and decode-step
 * graphs. */
#include "backend/cuda/cuda_quant.cuh"
#include "backend/cuda/cuda_vjp.cuh"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors ---------------------------------------------------------------- */

lmx_status cuda_check(cudaError_t e, const char *what) {
    if (e == cudaSuccess) return LMX_OK;
    lmx_status s = e == cudaErrorMemoryAllocation ? LMX_ERR_NOMEM : LMX_ERR_INTERNAL;
    return lmx_err(s, "cuda: %s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

lmx_status cuda_blas_check(cublasStatus_t e, const char *what) {
    if (e == CUBLAS_STATUS_SUCCESS) return LMX_OK;
    return lmx_err(e == CUBLAS_STATUS_ALLOC_FAILED ? LMX_ERR_NOMEM : LMX_ERR_INTERNAL, "cuda: %s: cuBLAS %s",
                   what, cublasGetStatusString(e));
}

/* ---- allocation table: pointer -> size (open addressing) ---------------- */

struct lmx_cuda_alloc_table {
    void **keys;
    size_t *sizes;
    size_t cap, n;
};

static size_t slot_of(const lmx_cuda_alloc_table *t, void *p) {
    uintptr_t h = (uintptr_t)p >> 8;
    h ^= h >> 17;
    h *= 0x9E3779B97F4A7C15ull;
    return (size_t)(h & (t->cap - 1));
}

static bool table_put(lmx_cuda_alloc_table *t, void *p, size_t size) {
    if ((t->n + 1) * 2 > t->cap) {
        lmx_cuda_alloc_table g = {NULL, NULL, t->cap ? t->cap * 2 : 64, 0};
        g.keys = (void **)calloc(g.cap, sizeof *g.keys);
        g.sizes = (size_t *)calloc(g.cap, sizeof *g.sizes);
        if (!g.keys || !g.sizes) {
            free(g.keys);
            free(g.sizes);
            return false;
        }
        for (size_t i = 0; i < t->cap; i++)
            if (t->keys[i]) table_put(&g, t->keys[i], t->sizes[i]);
        free(t->keys);
        free(t->sizes);
        *t = g;
    }
    size_t i = slot_of(t, p);
    while (t->keys[i]) i = (i + 1) & (t->cap - 1);
    t->keys[i] = p;
    t->sizes[i] = size;
    t->n++;
    return true;
}

static size_t table_take(lmx_cuda_alloc_table *t, void *p) {
    if (!t->cap) return 0;
    size_t i = slot_of(t, p);
    while (t->keys[i] && t->keys[i] != p) i = (i + 1) & (t->cap - 1);
    if (!t->keys[i]) return 0;
    size_t size = t->sizes[i];
    t->keys[i] = NULL;
    t->n--;
    /* re-insert the rest of the cluster so lookups stay correct */
    for (size_t j = (i + 1) & (t->cap - 1); t->keys[j]; j = (j + 1) & (t->cap - 1)) {
        void *k = t->keys[j];
        size_t s = t->sizes[j];
        t->keys[j] = NULL;
        t->n--;
        table_put(t, k, s);
    }
    return size;
}

/* ---- device memory ------------------------------------------------------- */

static lmx_status ctx_alloc(lmx_cuda_ctx *c, size_t bytes, void **out) {
    *out = NULL;
    LMX_TRY(cuda_flush(c));
    if (c->capturing) return lmx_err(LMX_ERR_INTERNAL, "cuda: allocation of %zu bytes during graph capture", bytes);
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        size_t fr = 0, tot = 0;
        cudaMemGetInfo(&fr, &tot);
        return lmx_err(LMX_ERR_NOMEM, "cuda: cannot allocate %zu bytes (%zu of %zu free): %s", bytes, fr, tot,
                       cudaGetErrorString(e));
    }
    if (!table_put(c->allocs, p, bytes)) {
        cudaFree(p);
        return lmx_err(LMX_ERR_NOMEM, "out of memory");
    }
    c->mem_in_use += bytes;
    if (c->mem_in_use > c->mem_peak) c->mem_peak = c->mem_in_use;
    *out = p;
    return LMX_OK;
}

static void ctx_free(lmx_cuda_ctx *c, void *p) {
    if (!p) return;
    (void)cuda_flush(c);
    c->mem_in_use -= table_take(c->allocs, p);
    cuda_q4r_forget(p); /* a repacked Q4_0 allocation (cuda_qgemv_q4r.cu) */
    cudaFree(p);
}

static lmx_cuda_ctx *bctx(const lmx_backend *b) { return (lmx_cuda_ctx *)b->ctx; }

static lmx_status buf_alloc(lmx_backend *b, size_t bytes, void **out) {
    lmx_cuda_ctx *c = bctx(b);
    LMX_TRY(ctx_alloc(c, bytes, out));
    lmx_status s = cuda_check(cudaMemsetAsync(*out, 0, bytes, c->stream), "memset");
    if (!s) s = cuda_check(cudaStreamSynchronize(c->stream), "memset");
    if (s) {
        ctx_free(c, *out);
        *out = NULL;
    }
    return s;
}

static void buf_free(lmx_backend *b, void *p) { ctx_free(bctx(b), p); }

/* Waits for the stream; every staged upload is then done, so the stage is free. */
static lmx_status stream_sync(lmx_cuda_ctx *c, const char *what) {
    LMX_TRY(cuda_flush(c));
    LMX_TRY(cuda_check(cudaStreamSynchronize(c->stream), what));
    c->stage_used = 0;
    return LMX_OK;
}

/* Small uploads (token ids, RoPE frequencies) go through the pinned stage so
 * they queue without blocking the host; large ones (weights) copy directly. */
static lmx_status buf_upload(lmx_backend *b, void *dst, const void *src, size_t bytes) {
    lmx_cuda_ctx *c = bctx(b);
    if (!bytes) return LMX_OK;
    if (c->capturing) return lmx_err(LMX_ERR_INTERNAL, "cuda: upload during graph capture");
    LMX_TRY(cuda_flush(c));
    if (c->stage && bytes <= c->stage_size / 4) {
        if (c->stage_used + bytes > c->stage_size) LMX_TRY(stream_sync(c, "upload"));
        uint8_t *p = c->stage + c->stage_used;
        memcpy(p, src, bytes);
        c->stage_used += (bytes + 255) & ~(size_t)255;
        return cuda_check(cudaMemcpyAsync(dst, p, bytes, cudaMemcpyHostToDevice, c->stream), "upload");
    }
    /* pageable source: the copy is complete (staged) when the call returns */
    return cuda_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream), "upload");
}

static lmx_status buf_download(lmx_backend *b, void *dst, const void *src, size_t bytes) {
    lmx_cuda_ctx *c = bctx(b);
    if (!bytes) return LMX_OK;
    LMX_TRY(cuda_flush(c));
    /* through a pinned buffer: one DMA at full speed, then a host memcpy */
    if (!c->pageable_download && bytes <= (64u << 20)) {
        if (bytes > c->dl_size) {
            LMX_TRY(stream_sync(c, "download"));
            if (c->dl) cudaFreeHost(c->dl);
            c->dl = NULL;
            c->dl_size = 0;
            LMX_TRY(cuda_check(cudaMallocHost((void **)&c->dl, bytes), "pinned download buffer"));
            c->dl_size = bytes;
        }
        LMX_TRY(cuda_check(cudaMemcpyAsync(c->dl, src, bytes, cudaMemcpyDeviceToHost, c->stream), "download"));
        LMX_TRY(stream_sync(c, "download"));
        memcpy(dst, c->dl, bytes);
        return cuda_q4r_download(c, dst, src, bytes); /* repacked Q4_0 back to the file layout */
    }
    LMX_TRY(cuda_check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream), "download"));
    LMX_TRY(stream_sync(c, "download"));
    return cuda_q4r_download(c, dst, src, bytes);
}

static lmx_status buf_relayout(lmx_backend *b, const lmx_array *a) { return cuda_q4r_relayout(bctx(b), a); }

static lmx_status buf_sync(lmx_backend *b) { return stream_sync(bctx(b), "sync"); }

static size_t buf_mem_peak(const lmx_backend *b) { return b && b->ctx ? bctx(b)->mem_peak : 0; }

/* Queued on the stream (training's recycled gradient blocks, core/tape_cache.c). */
static lmx_status buf_zero(lmx_backend *b, void *p, size_t bytes) {
    return cuda_check(cudaMemsetAsync(p, 0, bytes, bctx(b)->stream), "memset");
}

/* Profiling marks (LMX_TAPE_PROFILE=events): one ring of events for the
 * process, each created at its first use and kept until exit (a debug aid:
 * no per-node synchronisation, unlike the plain profile). */
#define CUDA_MARKS 8192
static cudaEvent_t cuda_marks[CUDA_MARKS];

static lmx_status buf_mark(lmx_backend *b, int slot) {
    if (slot < 0 || slot >= CUDA_MARKS) return lmx_err(LMX_ERR_INVALID_ARG, "cuda: profiling mark %d", slot);
    if (!cuda_marks[slot]) LMX_TRY(cuda_check(cudaEventCreate(&cuda_marks[slot]), "profiling mark"));
    return cuda_check(cudaEventRecord(cuda_marks[slot], bctx(b)->stream), "profiling mark");
}

static double buf_mark_ms(lmx_backend *b, int a, int z) {
    (void)b;
    float ms = -1.0f;
    if (a < 0 || z < 0 || a >= CUDA_MARKS || z >= CUDA_MARKS || !cuda_marks[a] || !cuda_marks[z]) return -1.0;
    if (cudaEventSynchronize(cuda_marks[z]) != cudaSuccess ||
        cudaEventElapsedTime(&ms, cuda_marks[a], cuda_marks[z]) != cudaSuccess) {
        (void)cudaGetLastError();
        return -1.0;
    }
    return ms;
}

static const lmx_buffer_ops cuda_buffer_ops = {
    false, buf_alloc, buf_free, buf_upload, buf_download, buf_sync, buf_mem_peak, buf_zero, buf_mark, buf_mark_ms,
    buf_relayout,
};

lmx_status cuda_scratch(lmx_cuda_ctx *c, size_t bytes, void **out) {
    if (bytes <= c->scratch_size) {
        *out = c->scratch;
        return LMX_OK;
    }
    if (c->capturing)
        return lmx_err(LMX_ERR_INTERNAL, "cuda: scratch of %zu bytes needed during graph capture (have %zu)",
                       bytes, c->scratch_size);
    LMX_TRY(cuda_flush(c));
    LMX_TRY(cuda_check(cudaStreamSynchronize(c->stream), "scratch"));
    /* exactly what is asked, in whole MiB: the requests of a prefill grow
     * in a few steps (one per weight shape) and then repeat, while a 1.5x
     * margin was ~40 MB of a 1B model's ~80 MB memory allowance */
    size_t want = (bytes + (1u << 20) - 1) & ~(size_t)((1u << 20) - 1);
    if (c->mem_tally) fprintf(stderr, "[mem] cuda scratch %zu -> %zu bytes\n", c->scratch_size, want);
    ctx_free(c, c->scratch);
    c->scratch = NULL;
    c->scratch_size = 0;
    LMX_TRY(ctx_alloc(c, want, &c->scratch));
    c->scratch_size = want;
    c->scratch_gen++;
    *out = c->scratch;
    return LMX_OK;
}

lmx_status cuda_blas_workspace(lmx_cuda_ctx *c, size_t bytes) {
    if (bytes <= c->blas_ws_size || c->capturing) return LMX_OK;
    LMX_TRY(cuda_flush(c));
    LMX_TRY(cuda_check(cudaStreamSynchronize(c->stream), "cublas workspace"));
    if (c->mem_tally) fprintf(stderr, "[mem] cublas workspace %zu -> %zu bytes\n", c->blas_ws_size, bytes);
    void *p;
    LMX_TRY(ctx_alloc(c, bytes, &p));
    lmx_status s = cuda_blas_check(cublasSetWorkspace(c->blas, p, bytes), "set workspace");
    if (s) {
        ctx_free(c, p);
        return s;
    }
    ctx_free(c, c->blas_ws);
    c->blas_ws = p;
    c->blas_ws_size = bytes;
    return LMX_OK;
}

/* ---- automatic step graphs ------------------------------------------------ */

/* Opens a capture at the first kernel after a synchronisation. */
static lmx_status auto_begin(lmx_cuda_ctx *c) {
    if (!c->auto_graph || c->auto_capturing || c->capturing) return LMX_OK;
    LMX_TRY(cuda_check(cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeRelaxed), "begin step capture"));
    c->auto_capturing = true;
    return LMX_OK;
}

lmx_status cuda_flush(lmx_cuda_ctx *c) {
    if (!c->auto_capturing) return LMX_OK;
    c->auto_capturing = false;
    cudaGraph_t g = NULL;
    LMX_TRY(cuda_check(cudaStreamEndCapture(c->stream, &g), "end step capture"));
    lmx_status s = LMX_OK;
    cudaGraphExecUpdateResultInfo info;
    if (c->auto_exec && cudaGraphExecUpdate(c->auto_exec, g, &info) == cudaSuccess) {
        c->auto_updates++;
    } else {
        (void)cudaGetLastError();
        if (c->auto_exec) cudaGraphExecDestroy(c->auto_exec);
        c->auto_exec = NULL;
        s = cuda_check(cudaGraphInstantiate(&c->auto_exec, g, 0), "instantiate step graph");
        c->auto_instantiations++;
    }
    cudaGraphDestroy(g);
    if (!s) s = cuda_check(cudaGraphLaunch(c->auto_exec, c->stream), "launch step graph");
    return s;
}

/* LMX_CUDA_OPTIME=1 (breakdowns only: it synchronises around every op): the
 * wall time of each op run outside a capture, summed per class = op x
 * (more than 8 rows) x (quantized weight), printed when the backend ends. */
#define OPT_CLASSES (LMX_OP_COUNT * 4)
static int opt_class(const lmx_node *n) {
    bool big = n->out && cu_rows(n->out) > 8;
    bool q = n->op == LMX_OP_MATMUL && lmx_dtype_info(n->src[1]->dtype)->is_quant;
    return (int)n->op * 4 + (big ? 2 : 0) + (q ? 1 : 0);
}
static lmx_status op_timed(lmx_kernel_fn fn, const lmx_node *n, lmx_pool *pool) {
    lmx_cuda_ctx *c = cuda_ctx(pool);
    cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
    if (!c->optime || cudaStreamIsCapturing(c->stream, &cs) != cudaSuccess || cs != cudaStreamCaptureStatusNone)
        return fn(n, pool);
    LMX_TRY(cuda_check(cudaStreamSynchronize(c->stream), "optime sync"));
    double t0 = lmx_time_s();
    LMX_TRY(fn(n, pool));
    LMX_TRY(cuda_check(cudaStreamSynchronize(c->stream), "optime sync"));
    int k = opt_class(n);
    c->optime[k] += lmx_time_s() - t0;
    c->optime[OPT_CLASSES + k] += 1;
    return LMX_OK;
}
static void optime_print(const lmx_cuda_ctx *c) {
    if (!c->optime) return;
    for (int k = 0; k < OPT_CLASSES; k++)
        if (c->optime[OPT_CLASSES + k] > 0)
            fprintf(stderr, "optime %-14s rows%s8%s %8.0f calls %10.3f ms %9.2f us/call\n", lmx_op_defs[k / 4].name,
                    k & 2 ? ">" : "<=", k & 1 ? " quantized" : "", c->optime[OPT_CLASSES + k], c->optime[k] * 1e3,
                    c->optime[k] * 1e6 / c->optime[OPT_CLASSES + k]);
}

#define AUTO_WRAP(fn)                                                 \
    static lmx_status auto_##fn(const lmx_node *n, lmx_pool *pool) { \
        LMX_TRY(auto_begin(cuda_ctx(pool)));                          \
        return op_timed(lmx_cuda_##fn, n, pool);                      \
    }
AUTO_WRAP(get_rows)
AUTO_WRAP(matmul)
AUTO_WRAP(rms_norm)
AUTO_WRAP(layer_norm)
AUTO_WRAP(rope)
AUTO_WRAP(attention)
AUTO_WRAP(binary)
AUTO_WRAP(unary)
AUTO_WRAP(copy)
AUTO_WRAP(softmax)
AUTO_WRAP(cross_entropy) /* cuda_cross_entropy.cu */
lmx_status lmx_cuda_add_rms_norm(const lmx_node *n, lmx_pool *pool); /* cuda_fused.cu */
lmx_status lmx_cuda_rope_kv(const lmx_node *n, lmx_pool *pool);
AUTO_WRAP(add_rms_norm)
AUTO_WRAP(rope_kv)
AUTO_WRAP(matmul_acc)

/* ---- kernel table and supports() ---------------------------------------- */

static const lmx_kernel_fn cuda_kernels[LMX_OP_COUNT] = {
    auto_get_rows, auto_matmul, auto_rms_norm, auto_layer_norm, auto_rope,
    auto_attention, auto_binary, auto_binary, auto_unary, auto_unary,
    auto_unary, auto_copy, auto_softmax, auto_cross_entropy, auto_add_rms_norm, auto_rope_kv, auto_matmul_acc,
};
static_assert(LMX_OP_GET_ROWS == 0 && LMX_OP_CROSS_ENTROPY == 13 && LMX_OP_ROPE_KV == 15 && LMX_OP_MATMUL_ACC == 16 &&
                  LMX_OP_COUNT == 17,
              "cuda_kernels lists the ops in op.h order");

static bool f32(const lmx_array *a) { return a && a->dtype == LMX_F32; }
static bool flt_or_null(const lmx_array *a) { return !a || cu_is_float(a->dtype); }

static bool cuda_supports(const lmx_backend *b, const lmx_node *n) {
    (void)b;
    const lmx_array *const *s = n->src;
    switch (n->op) {
    case LMX_OP_GET_ROWS:
        if (!f32(n->out) || s[1]->dtype != LMX_I32 || !lmx_array_is_contiguous(s[0]) ||
            !lmx_array_is_contiguous(n->out))
            return false;
        return cu_is_float(s[0]->dtype) ? !s[2] && !s[3] : cuda_quant_ok(s[0], s[2], s[3], n->ip[0]);
    case LMX_OP_MATMUL:
        if (!f32(n->out) || !f32(s[0]) || !lmx_array_is_contiguous(s[1]) || !flt_or_null(s[2])) return false;
        return cu_is_float(s[1]->dtype) ? !s[3] && !s[4] : cuda_quant_ok(s[1], s[3], s[4], n->ip[0]);
    case LMX_OP_MATMUL_ACC:
        return f32(n->out) && f32(s[0]) && f32(s[1]) && lmx_array_is_contiguous(s[1]) &&
               lmx_array_is_contiguous(n->out);
    case LMX_OP_RMS_NORM:
    case LMX_OP_LAYER_NORM:
        return f32(n->out) && f32(s[0]) && flt_or_null(s[1]) && flt_or_null(s[2]);
    case LMX_OP_ROPE:
        return f32(n->out) && f32(s[0]) && f32(s[1]) && lmx_array_is_contiguous(s[0]) &&
               lmx_array_is_contiguous(n->out);
    case LMX_OP_ATTENTION:
        return f32(n->out) && f32(s[0]) && cu_is_float(s[1]->dtype) && s[2]->dtype == s[1]->dtype &&
               s[0]->shape[2] <= 256 && s[2]->shape[2] <= 256 && s[0]->strides[2] == 1 &&
               s[1]->strides[2] == 1 && s[2]->strides[2] == 1 && lmx_array_is_contiguous(n->out);
    case LMX_OP_ADD:
    case LMX_OP_MUL:
        return f32(n->out) && f32(s[0]) && cu_is_float(s[1]->dtype);
    case LMX_OP_SCALE:
    case LMX_OP_SOFTCAP:
    case LMX_OP_SOFTMAX:
        return f32(n->out) && f32(s[0]);
    case LMX_OP_ACT:
        return f32(n->out) && f32(s[0]) && (!s[1] || f32(s[1]));
    case LMX_OP_CROSS_ENTROPY:
        return f32(n->out) && f32(s[0]) && lmx_array_is_contiguous(s[0]) && s[1]->dtype == LMX_I32 &&
               lmx_array_is_contiguous(s[1]) && (!s[2] || (f32(s[2]) && lmx_array_is_contiguous(s[2])));
    case LMX_OP_ADD_RMS_NORM:
        return f32(n->out) && f32(s[0]) && f32(s[1]) && flt_or_null(s[2]);
    case LMX_OP_ROPE_KV: /* cache rows: 2-D, unit column stride (kv_cache.c's row views) */
        return cu_is_float(n->out->dtype) && s[4]->dtype == n->out->dtype && f32(s[0]) && f32(s[1]) && f32(s[2]) &&
               f32(s[3]) && n->out->ndim == 2 && s[4]->ndim == 2 && n->out->strides[1] == 1 &&
               s[4]->strides[1] == 1;
    case LMX_OP_COPY: {
        const lmx_dtype_traits *t = lmx_dtype_info(s[0]->dtype);
        if (s[0]->dtype == n->out->dtype) return t && !t->is_quant;
        return cu_is_float(s[0]->dtype) && cu_is_float(n->out->dtype);
    }
    default:
        return false;
    }
}

/* ---- backend lifetime ------------------------------------------------------ */

static void ctx_destroy(lmx_cuda_ctx *c) {
    if (!c) return;
    cudaSetDevice(c->device);
    (void)cuda_flush(c);
    if (c->stream) cudaStreamSynchronize(c->stream);
    optime_print(c);
    free(c->optime);
    if (c->auto_exec) cudaGraphExecDestroy(c->auto_exec);
    for (int i = 0; i < LMX_CUDA_MAX_GRAPHS; i++)
        if (c->graphs[i]) cudaGraphExecDestroy(c->graphs[i]);
    if (c->blas) cublasDestroy(c->blas);
    ctx_free(c, c->blas_ws);
    ctx_free(c, c->scratch);
    ctx_free(c, c->step_dev);
    ctx_free(c, c->pick_dev);
    ctx_free(c, c->sample_buf);
    if (c->stream) cudaStreamDestroy(c->stream);
    if (c->stage) cudaFreeHost(c->stage);
    if (c->dl) cudaFreeHost(c->dl);
    if (c->allocs) {
        free(c->allocs->keys);
        free(c->allocs->sizes);
        free(c->allocs);
    }
    free(c);
}

static void cuda_destroy(lmx_backend *b) {
    ctx_destroy(bctx(b));
    free(b);
}

extern "C" int lmx_cuda_device_count(char *why, size_t cap) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        if (why && cap) snprintf(why, cap, "no CUDA device: %s", cudaGetErrorString(e));
        return 0;
    }
    if (n == 0 && why && cap) snprintf(why, cap, "no CUDA device: none found");
    return n;
}

extern "C" lmx_status lmx_cuda_device_info(char *buf, size_t cap) {
    cudaDeviceProp p;
    int drv = 0, rt = 0, dev = 0;
    LMX_TRY(cuda_check(cudaGetDevice(&dev), "device"));
    LMX_TRY(cuda_check(cudaGetDeviceProperties(&p, dev), "device properties"));
    cudaDriverGetVersion(&drv);
    cudaRuntimeGetVersion(&rt);
    snprintf(buf, cap, "%s (sm_%d%d, %d SMs, %.1f GiB), driver API %d.%d, runtime %d.%d", p.name, p.major,
             p.minor, p.multiProcessorCount, (double)p.totalGlobalMem / (1 << 30), drv / 1000,
             (drv % 1000) / 10, rt / 1000, (rt % 1000) / 10);
    return LMX_OK;
}

extern "C" lmx_status lmx_cuda_backend_create(lmx_backend **out) {
    *out = NULL;
    char why[160];
    if (lmx_cuda_device_count(why, sizeof why) <= 0) return lmx_err(LMX_ERR_UNSUPPORTED, "device cuda: %s", why);
    lmx_cuda_ctx *c = (lmx_cuda_ctx *)calloc(1, sizeof *c);
    lmx_backend *b = (lmx_backend *)calloc(1, sizeof *b);
    if (c) c->allocs = (lmx_cuda_alloc_table *)calloc(1, sizeof *c->allocs);
    if (!c || !b || !c->allocs) {
        free(b);
        ctx_destroy(c);
        return lmx_err(LMX_ERR_NOMEM, "out of memory");
    }
    lmx_status s = cuda_check(cudaSetDevice(0), "set device");
    if (!s) s = cuda_check(cudaDeviceGetAttribute(&c->n_sm, cudaDevAttrMultiProcessorCount, 0), "device attribute");
    if (!s) s = cuda_check(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking), "stream");
    if (!s) s = cuda_blas_check(cublasCreate(&c->blas), "create");
    if (!s) s = cuda_blas_check(cublasSetStream(c->blas, c->stream), "set stream");
    /* 4 MB until the first prefill GEMM sizes it for the model (cuda_matmul.cu) */
    c->blas_ws_size = 4u << 20;
    if (!s) s = ctx_alloc(c, c->blas_ws_size, &c->blas_ws);
    if (!s) s = cuda_blas_check(cublasSetWorkspace(c->blas, c->blas_ws, c->blas_ws_size), "set workspace");
    void *scr;
    if (!s) s = cuda_scratch(c, 16u << 20, &scr);
    c->stage_size = 1u << 20;
    if (!s) s = cuda_check(cudaMallocHost((void **)&c->stage, c->stage_size), "pinned stage");
    if (s) {
        free(b);
        ctx_destroy(c);
        return s;
    }
    /* bf16/f16/quantized weights: activations rounded once to the weight's
     * 16-bit type in prefill GEMMs and tensor-core attention, as MLX and
     * llama.cpp compute (docs/CUDA.md "Precision"); LMX_CUDA_EXACT=1 or
     * LMX_CUDA_FAST_GEMM=0: the bf16 hi + lo split that matches f32
     * references to ~1e-5. f32 weights keep f32 GEMMs and exact attention.
     * Training's vjp GEMMs follow the same switch. */
    const char *fg = getenv("LMX_CUDA_FAST_GEMM"), *ex = getenv("LMX_CUDA_EXACT");
    bool exact = (ex && *ex && strcmp(ex, "0") != 0) || (fg && !strcmp(fg, "0"));
    c->fast_gemm = !exact;
    const char *tl = getenv("LMX_MEM_TALLY");
    c->mem_tally = tl && *tl && strcmp(tl, "0") != 0;
    const char *ws = getenv("LMX_CUDA_BLAS_WS_MB");
    long wmb = ws ? strtol(ws, NULL, 10) : 0;
    c->blas_ws_want = wmb > 0 && wmb <= 1024 ? (size_t)wmb << 20 : 0; /* 0: by the model (cuda_matmul.cu) */
    const char *qg = getenv("LMX_CUDA_QGEMV");
    c->qgemv_staged = qg && !strcmp(qg, "staged");
    c->qgemv_unfactored = qg && !strcmp(qg, "unfactored");
    c->qgemv_old = qg && !strcmp(qg, "old");
    c->qgemv_rows = qg && !strcmp(qg, "r4") ? 4 : qg && !strcmp(qg, "r8") ? 8 : qg && !strcmp(qg, "r2") ? 2 : 0;
    const char *ia = getenv("LMX_INT8_ACT"); /* as the CPU backend: on unless "0" */
    c->int8_act = !(ia && !strcmp(ia, "0"));
    cuda_qgemv_mlx_init();
    const char *qt = getenv("LMX_CUDA_QTILE_MB");
    long qmb = qt ? strtol(qt, NULL, 10) : 0;
    c->qtile_bytes = (size_t)(qmb > 0 && qmb <= 4096 ? qmb : 0) << 20; /* 0: by the model (cuda_matmul.cu) */
    const char *ag = getenv("LMX_CUDA_GRAPHS");
    c->auto_graph = ag && *ag && strcmp(ag, "0") != 0;
    const char *ot = getenv("LMX_CUDA_OPTIME");
    if (ot && *ot && strcmp(ot, "0") != 0) c->optime = (double *)calloc(2 * OPT_CLASSES, sizeof(double));
    const char *pd = getenv("LMX_CUDA_PAGEABLE_DOWNLOAD");
    c->pageable_download = pd && *pd && strcmp(pd, "0") != 0;
    b->name = "cuda";
    b->kernels = cuda_kernels;
    b->supports = cuda_supports;
    b->pool = (lmx_pool *)(void *)c;
    b->ctx = c;
    b->buffers = &cuda_buffer_ops;
    b->destroy = cuda_destroy;
    b->vjps = lmx_cuda_vjp_table(); /* cuda_vjp*.cu */
    b->vjp_overwrites = lmx_cuda_vjp_overwrites;
    b->optim_step = lmx_cuda_optim_step; /* cuda_optim.cu */
    b->dora_norms = lmx_cuda_dora_norms; /* cuda_dora.cu */
    *out = b;
    return LMX_OK;
}

extern "C" size_t lmx_cuda_mem_in_use(const lmx_backend *b) { return b && b->ctx ? bctx(b)->mem_in_use : 0; }
extern "C" size_t lmx_cuda_mem_peak(const lmx_backend *b) { return b && b->ctx ? bctx(b)->mem_peak : 0; }

/* ---- graphs -------------------------------------------------------------- */

extern "C" lmx_status lmx_cuda_graph_begin(lmx_backend *b) {
    lmx_cuda_ctx *c = bctx(b);
    if (c->capturing) return lmx_err(LMX_ERR_INTERNAL, "cuda: graph capture already in progress");
    LMX_TRY(cuda_flush(c));
    LMX_TRY(cuda_check(cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal), "begin capture"));
    c->capturing = true;
    return LMX_OK;
}

extern "C" lmx_status lmx_cuda_graph_end(lmx_backend *b, int key) {
    lmx_cuda_ctx *c = bctx(b);
    if (!c->capturing) return lmx_err(LMX_ERR_INTERNAL, "cuda: no graph capture in progress");
    c->capturing = false;
    cudaGraph_t g = NULL;
    LMX_TRY(cuda_check(cudaStreamEndCapture(c->stream, &g), "end capture"));
    if (key < 0 || key >= LMX_CUDA_MAX_GRAPHS) {
        cudaGraphDestroy(g);
        return lmx_err(LMX_ERR_INVALID_ARG, "cuda: graph key %d out of range", key);
    }
    cudaGraphExec_t ex = NULL;
    lmx_status s = cuda_check(cudaGraphInstantiate(&ex, g, 0), "instantiate graph");
    cudaGraphDestroy(g);
    if (s) return s;
    if (c->graphs[key]) cudaGraphExecDestroy(c->graphs[key]);
    c->graphs[key] = ex;
    return LMX_OK;
}

extern "C" lmx_status lmx_cuda_graph_launch(lmx_backend *b, int key) {
    lmx_cuda_ctx *c = bctx(b);
    if (key < 0 || key >= LMX_CUDA_MAX_GRAPHS || !c->graphs[key])
        return lmx_err(LMX_ERR_INVALID_ARG, "cuda: no graph under key %d", key);
    return cuda_check(cudaGraphLaunch(c->graphs[key], c->stream), "graph launch");
}
