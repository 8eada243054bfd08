/* cuda.h - the CUDA backend's C face. Without CUDA, stub.c implements it.
 *
 * Arrays the CUDA kernels see hold device pointers (lmx_array_alloc_on /
 * lmx_array_to_backend on this backend); kernels are queued on the backend's
 * one stream and never synchronise, so a decode step can be captured as a
 * CUDA graph. Errors come back as lmx_status with "cuda: ..." messages. */
#ifndef LMX_BACKEND_CUDA_H
#define LMX_BACKEND_CUDA_H

#include "core/backend.h"
#include "core/logit_op.h"

#ifdef __cplusplus
extern "C" {
#endif

lmx_status lmx_cuda_backend_create(lmx_backend **out);
/* Number of usable CUDA devices (0 without CUDA, a driver or a GPU); why
 * (cudaGetDeviceCount's message) into why[cap] when 0. */
int lmx_cuda_device_count(char *why, size_t cap);
/* "NVIDIA H100 80GB HBM3, driver 13.0, runtime 13.0, 132 SMs" into buf. */
lmx_status lmx_cuda_device_info(char *buf, size_t cap);
/* Bytes of device memory the backend holds now / at most so far. */
size_t lmx_cuda_mem_in_use(const lmx_backend *b);
size_t lmx_cuda_mem_peak(const lmx_backend *b);
/* Decode-step graphs: begin capture on the backend's stream; end it and keep
 * the graph under `key` (replaced if present); replay it. */
lmx_status lmx_cuda_graph_begin(lmx_backend *b);
lmx_status lmx_cuda_graph_end(lmx_backend *b, int key);
lmx_status lmx_cuda_graph_launch(lmx_backend *b, int key);

/* Greedy decoding on the device (cuda_sample.cu). For each row of f32
 * logits [R, V] in this backend's memory (contiguous): the index of the
 * largest finite value (ties: the lowest index; -1 when none is finite),
 * that value, the largest finite value at any other index (-inf when there
 * is none; equal to max on a tie), log sum exp over the finite values (f32
 * sums, relative to max), and how many values are NaN or +-inf. Waits for
 * the result; only R * 20 bytes are copied back. */
typedef struct lmx_cuda_pick {
    int32_t id;
    int32_t n_nonfinite;
    float max, second, lse;
} lmx_cuda_pick;
lmx_status lmx_cuda_greedy(lmx_backend *b, const lmx_array *logits, lmx_cuda_pick *out);

/* The logits processors' edits (core/logit_op.h) applied to ONE row of f32
 * logits on the device, in list order by one thread with the host's f32
 * operations (the same bits as lmx_sampler_process on the host). Queued;
 * nothing comes back. */
lmx_status lmx_cuda_logits_edit(lmx_backend *b, const lmx_array *logits, const lmx_logit_op *ops, size_t n);

/* Sampled decoding of ONE row of f32 logits on the device
 * (cuda_sample_topp.cu): the host sampler's log-softmax, sort, top-p /
 * min-p / top-k prefix and categorical draw with the uniform u in [0, 1)
 * the caller drew; *id = -1 when the row has non-finite values (run the
 * host pipeline then); *lp = the chosen token's logprob. 8 bytes come back. */
lmx_status lmx_cuda_sample(lmx_backend *b, const lmx_array *logits, float temp, float top_p, int top_k, float min_p,
                           int min_keep, double u, int32_t *id, float *lp);

/* Static decode graph (cuda_step.cu; driven by models/decode_graph.c).
 * capture_begin allocates the step buffers, makes sure `scratch_bytes` of
 * kernel scratch exist, and opens a capture in which rope, attention and
 * KV-row copies read the position from device memory (the capture is made
 * at position pos); capture_end stores the graph under key; abort drops a
 * failed capture. step_launch sets the position and replays the graph.
 * scratch_generation changes whenever the kernel scratch moves (a graph
 * holds its address). */
lmx_status lmx_cuda_step_capture_begin(lmx_backend *b, int64_t pos, size_t scratch_bytes);
lmx_status lmx_cuda_step_capture_end(lmx_backend *b, int key);
void lmx_cuda_step_capture_abort(lmx_backend *b);
lmx_status lmx_cuda_step_launch(lmx_backend *b, int key, int64_t pos);
uint64_t lmx_cuda_scratch_generation(const lmx_backend *b);
/* lmx_cuda_greedy split in two: the pick of ONE row queued into the
 * backend's result buffer (allowed inside a capture once the buffer exists),
 * and the wait + 20-byte read of that result. */
lmx_status lmx_cuda_greedy_launch(lmx_backend *b, const lmx_array *logits);
lmx_status lmx_cuda_greedy_read(lmx_backend *b, lmx_cuda_pick *out);

#ifdef __cplusplus
}
#endif

#endif
