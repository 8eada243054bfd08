/* stub.c - the CUDA backend when lmx is built without CUDA. */
#include "backend/cuda/cuda.h"

#include <stdio.h>

static lmx_status no_cuda(void) { return lmx_err(LMX_ERR_UNSUPPORTED, "device cuda: lmx was built without CUDA"); }

lmx_status lmx_cuda_backend_create(lmx_backend **out) {
    *out = NULL;
    return no_cuda();
}

int lmx_cuda_device_count(char *why, size_t cap) {
    if (why && cap) snprintf(why, cap, "lmx was built without CUDA");
    return 0;
}

lmx_status lmx_cuda_device_info(char *buf, size_t cap) {
    if (buf && cap) buf[0] = 0;
    return no_cuda();
}

size_t lmx_cuda_mem_in_use(const lmx_backend *b) {
    (void)b;
    return 0;
}

size_t lmx_cuda_mem_peak(const lmx_backend *b) {
    (void)b;
    return 0;
}

lmx_status lmx_cuda_graph_begin(lmx_backend *b) {
    (void)b;
    return no_cuda();
}

lmx_status lmx_cuda_graph_end(lmx_backend *b, int key) {
    (void)b;
    (void)key;
    return no_cuda();
}

lmx_status lmx_cuda_graph_launch(lmx_backend *b, int key) {
    (void)b;
    (void)key;
    return no_cuda();
}

lmx_status lmx_cuda_greedy(lmx_backend *b, const lmx_array *logits, lmx_cuda_pick *out) {
    (void)b;
    (void)logits;
    (void)out;
    return no_cuda();
}

lmx_status lmx_cuda_logits_edit(lmx_backend *b, const lmx_array *logits, const lmx_logit_op *ops, size_t n) {
    (void)b, (void)logits, (void)ops, (void)n;
    return no_cuda();
}

lmx_status lmx_cuda_sample(lmx_backend *b, const lmx_array *logits, float temp, float top_p, int top_k, float min_p,
                           int min_keep, double u, int32_t *id, float *lp) {
    (void)b, (void)logits, (void)temp, (void)top_p, (void)top_k, (void)min_p, (void)min_keep, (void)u, (void)id,
        (void)lp;
    return no_cuda();
}

lmx_status lmx_cuda_step_capture_begin(lmx_backend *b, int64_t pos, size_t scratch_bytes) {
    (void)b;
    (void)pos;
    (void)scratch_bytes;
    return no_cuda();
}

lmx_status lmx_cuda_step_capture_end(lmx_backend *b, int key) {
    (void)b;
    (void)key;
    return no_cuda();
}

void lmx_cuda_step_capture_abort(lmx_backend *b) { (void)b; }

lmx_status lmx_cuda_step_launch(lmx_backend *b, int key, int64_t pos) {
    (void)b;
    (void)key;
    (void)pos;
    return no_cuda();
}

uint64_t lmx_cuda_scratch_generation(const lmx_backend *b) {
    (void)b;
    return 0;
}

lmx_status lmx_cuda_greedy_launch(lmx_backend *b, const lmx_array *logits) {
    (void)b;
    (void)logits;
    return no_cuda();
}

lmx_status lmx_cuda_greedy_read(lmx_backend *b, lmx_cuda_pick *out) {
    (void)b;
    (void)out;
    return no_cuda();
}
