/* fuzz_safetensors.c - libFuzzer target: the safetensors header parser.
 * Input = a whole .safetensors image, parsed in memory by the same code as
 * lmx_st_open. Valid results are walked and checked against the input. */
#include "io/safetensors.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    lmx_st_file *f;
    if (lmx_st_open_memory(data, size, "fuzz.safetensors", &f) != LMX_OK) {
        const char *m = lmx_last_error();
        if (strchr(m, '\n') || !strstr(m, "fuzz.safetensors")) __builtin_trap(); /* one line, names the file */
        return 0;
    }
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < lmx_st_n_tensors(f); i++) {
        const lmx_st_tensor *t = lmx_st_tensor_at(f, i);
        if (lmx_st_find(f, t->name) != t) __builtin_trap();
        if (t->n_dims < 0 || t->n_dims > LMX_MAX_DIMS) __builtin_trap();
        if (t->data < data || t->size > size || t->data + t->size > data + size) __builtin_trap();
        if (t->size) sink ^= t->data[0] ^ t->data[t->size - 1];
    }
    for (size_t i = 0; i < lmx_st_n_metadata(f); i++) {
        const char *k, *v;
        lmx_st_metadata_at(f, i, &k, &v);
        if (lmx_st_metadata(f, k) == NULL) __builtin_trap();
        sink ^= (uint8_t)strlen(v);
    }
    (void)sink;
    lmx_st_close(f);
    return 0;
}
