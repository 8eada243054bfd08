/* fuzz_gguf.c - libFuzzer target: the GGUF header parser (v1/v2/v3).
 * Input = a whole .gguf image, parsed in memory by the same code as
 * lmx_gguf_open; every key, array element and tensor of a valid result is
 * read back and checked to lie inside the input. */
#include "io/gguf.h"

#include <stdint.h>
#include <string.h>

static const uint8_t *g_lo, *g_hi;

static void in_range(const void *p, uint64_t n) {
    const uint8_t *q = p;
    if (q < g_lo || q > g_hi || n > (uint64_t)(g_hi - q)) __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lmx_gguf *g;
    if (lmx_gguf_open_memory(data, size, "fuzz.gguf", &g) != LMX_OK) {
        const char *m = lmx_last_error();
        if (strchr(m, '\n') || !strstr(m, "fuzz.gguf")) __builtin_trap();
        return 0;
    }
    g_lo = data;
    g_hi = data + size;
    volatile uint64_t sink = 0;
    for (int64_t i = 0; i < lmx_gguf_n_kv(g); i++) {
        const char *key = lmx_gguf_key(g, i);
        if (lmx_gguf_find_key(g, key) != i) __builtin_trap();
        int64_t iv;
        float fv;
        bool bv;
        lmx_gguf_str s;
        if (lmx_gguf_get_i64(g, key, &iv)) sink += (uint64_t)iv;
        if (lmx_gguf_get_f32(g, key, &fv)) sink += (uint64_t)(fv == fv);
        if (lmx_gguf_get_bool(g, key, &bv)) sink += bv;
        if (lmx_gguf_get_str(g, key, &s)) in_range(s.ptr, s.len);
        lmx_gguf_type et;
        uint64_t n;
        if (lmx_gguf_get_arr(g, key, &et, &n)) {
            const uint8_t *p = lmx_gguf_arr_data(g, key);
            in_range(p, 0);
            if (et == LMX_GGUF_STRING) {
                for (uint64_t j = 0; j < n; j++) {
                    lmx_gguf_str e = lmx_gguf_arr_str_at(g, i, j);
                    in_range(e.ptr, e.len);
                    if (e.len) sink += (uint8_t)e.ptr[e.len - 1];
                }
                if (lmx_gguf_arr_str_at(g, i, n).ptr) __builtin_trap();
            }
        }
    }
    for (int64_t i = 0; i < lmx_gguf_n_tensors(g); i++) {
        const lmx_gguf_tensor *t = lmx_gguf_tensor_at(g, i);
        if (lmx_gguf_find_tensor(g, t->name) != t) __builtin_trap();
        in_range(t->data, t->size);
        if (t->size) sink += t->data[t->size - 1];
        int64_t block;
        size_t bs;
        if (!lmx_ggml_type_info(t->ggml_type, NULL, &block, &bs) || t->ne[0] % block) __builtin_trap();
        if (t->offset % lmx_gguf_alignment(g)) __builtin_trap();
    }
    (void)sink;
    lmx_gguf_close(g);
    return 0;
}
