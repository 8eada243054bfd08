/* cpu_buffers.c - the CPU backend's memory: plain host allocations and
 * memcpy (kernels take host pointers, so arrays need no upload). */
#include "backend/cpu/cpu.h"

static lmx_status cpu_alloc(lmx_backend *b, size_t bytes, void **out) {
    (void)b;
    *out = lmx_aligned_alloc(bytes ? bytes : 1);
    if (!*out) return lmx_err(LMX_ERR_NOMEM, "out of memory (%zu bytes)", bytes);
    memset(*out, 0, bytes);
    return LMX_OK;
}

static void cpu_free(lmx_backend *b, void *p) {
    (void)b;
    lmx_aligned_free(p);
}

static lmx_status cpu_copy(lmx_backend *b, void *dst, const void *src, size_t bytes) {
    (void)b;
    if (bytes) memcpy(dst, src, bytes);
    return LMX_OK;
}

static lmx_status cpu_sync(lmx_backend *b) {
    (void)b;
    return LMX_OK;
}

const lmx_buffer_ops lmx_cpu_buffer_ops = {
    .host_visible = true,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .sync = cpu_sync,
};
