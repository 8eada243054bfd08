/* registry.c - the only file that knows which backends are compiled in. */
#include "backend/cpu/cpu.h"
#include "backend/cuda/cuda.h"

#include <stdlib.h>
#include <string.h>

extern const lmx_buffer_ops lmx_cpu_buffer_ops; /* cpu_buffers.c */

lmx_status lmx_backend_create(const char *name, int n_threads, lmx_backend **out) {
    *out = NULL;
    if (!name || !strcmp(name, "cpu")) {
        LMX_TRY(lmx_cpu_backend_create(n_threads, out));
        (*out)->buffers = &lmx_cpu_buffer_ops;
        return LMX_OK;
    }
    if (!strcmp(name, "cuda")) return lmx_cuda_backend_create(out);
    if (!strcmp(name, "auto")) { /* cuda when a device answers, else cpu */
        if (lmx_cuda_device_count(NULL, 0) > 0 && lmx_cuda_backend_create(out) == LMX_OK) return LMX_OK;
        return lmx_backend_create("cpu", n_threads, out);
    }
    return lmx_err(LMX_ERR_INVALID_ARG, "device: unknown device '%s' (expected cpu, cuda or auto)", name);
}

void lmx_backend_free(lmx_backend *b) {
    if (!b) return;
    if (b->destroy) {
        b->destroy(b);
        return;
    }
    if (!strcmp(b->name, "cpu") && b->ctx) lmx_pool_free(b->ctx);
    free(b);
}

size_t lmx_backend_mem_peak(const lmx_backend *b) {
    if (b && b->buffers && b->buffers->mem_peak) return b->buffers->mem_peak(b);
    return lmx_peak_rss_bytes();
}
