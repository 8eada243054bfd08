/* cuda_step.cu - the static decode graph's device side (the host side is
 * models/decode_graph.c).
 *
 * One decode step of one sequence is captured once per shape class and
 * replayed every step. What changes from step to step is the position:
 * RoPE's angle, the KV-cache row written and the attention length. During
 * the capture the context's dyn_pos points at a device int64 (step_dev), and
 * the rope, attention and copy kernels read the position from it (see
 * lmx_cuda_ctx); before each replay one 8-byte upload sets it. Token ids
 * and RoPE frequencies already travel through fixed device buffers
 * (transformer.c's step scratch), so nothing else is re-captured. */
#include "backend/cuda/cuda_common.cuh"

#include <string.h>

static lmx_cuda_ctx *cuda_of(lmx_backend *b) {
    if (!b || !b->name || strcmp(b->name, "cuda") || !b->ctx) return NULL;
    return (lmx_cuda_ctx *)b->ctx;
}

extern "C" lmx_status lmx_cuda_step_capture_begin(lmx_backend *b, int64_t pos, size_t scratch_bytes) {
    lmx_cuda_ctx *c = cuda_of(b);
    if (!c) return lmx_err(LMX_ERR_INVALID_ARG, "cuda step graph: not a CUDA backend");
    if (c->capturing) return lmx_err(LMX_ERR_INTERNAL, "cuda step graph: a capture is already open");
    void *p;
    if (!c->step_dev) {
        LMX_TRY(b->buffers->alloc(b, sizeof(int64_t), &p));
        c->step_dev = (int64_t *)p;
    }
    if (!c->pick_dev) {
        LMX_TRY(b->buffers->alloc(b, sizeof(lmx_cuda_pick), &p));
        c->pick_dev = (lmx_cuda_pick *)p;
    }
    /* kernels cannot grow the scratch inside a capture */
    LMX_TRY(cuda_scratch(c, scratch_bytes, &p));
    LMX_TRY(lmx_cuda_graph_begin(b));
    c->dyn_pos = c->step_dev;
    c->dyn_base = pos;
    return LMX_OK;
}

extern "C" lmx_status lmx_cuda_step_capture_end(lmx_backend *b, int key) {
    lmx_cuda_ctx *c = cuda_of(b);
    if (!c) return lmx_err(LMX_ERR_INVALID_ARG, "cuda step graph: not a CUDA backend");
    c->dyn_pos = NULL;
    return lmx_cuda_graph_end(b, key);
}

/* After a failed capture: closes it and drops what was recorded. */
extern "C" void lmx_cuda_step_capture_abort(lmx_backend *b) {
    lmx_cuda_ctx *c = cuda_of(b);
    if (!c) return;
    c->dyn_pos = NULL;
    if (!c->capturing) return;
    c->capturing = false;
    cudaGraph_t g = NULL;
    if (cudaStreamEndCapture(c->stream, &g) == cudaSuccess && g) cudaGraphDestroy(g);
    (void)cudaGetLastError();
}

extern "C" lmx_status lmx_cuda_step_launch(lmx_backend *b, int key, int64_t pos) {
    lmx_cuda_ctx *c = cuda_of(b);
    if (!c || !c->step_dev) return lmx_err(LMX_ERR_INVALID_ARG, "cuda step graph: nothing captured");
    LMX_TRY(lmx_backend_upload(b, c->step_dev, &pos, sizeof pos)); /* queued before the replay */
    return lmx_cuda_graph_launch(b, key);
}

extern "C" uint64_t lmx_cuda_scratch_generation(const lmx_backend *b) {
    return b && b->ctx ? ((const lmx_cuda_ctx *)b->ctx)->scratch_gen : 0;
}
