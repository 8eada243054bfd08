/* params.c - the parameter count mlx-lm prints (utils.get_total_parameters):
 * every weight of the loaded model, quantized weights counted unpacked
 * (scales/biases not counted), a tied lm_head once, rotary buffers never. */
#include "convert/convert_internal.h"
#include "io/gguf.h"
#include "models/model.h"

#include <stdio.h>

static bool ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static lmx_status count_folder(const char *dir, uint64_t *out) {
    lmx_config *cfg = NULL;
    lmx_st_set *st = NULL;
    LMX_TRY(lmx_config_load(dir, &cfg));
    lmx_status s = lmx_st_set_open(dir, &st);
    lmx_status ignored = LMX_OK;
    bool tied = !s && lmx_cfg_bool(cfg, "tie_word_embeddings", false, &ignored);
    struct lmx_weights_src ws = {dir, st, NULL, cfg};
    uint64_t total = 0;
    for (size_t i = 0; !s && i < lmx_st_set_n_tensors(st); i++) {
        const lmx_st_tensor *t = lmx_st_set_tensor_at(st, i, NULL);
        const char *nm = t->name;
        if (ends_with(nm, "rotary_emb.inv_freq")) continue;
        if (tied && ends_with(nm, "lm_head.weight")) continue;
        char sib[600];
        size_t l = strlen(nm);
        if (l < 500 && (ends_with(nm, ".scales") || ends_with(nm, ".biases"))) {
            snprintf(sib, sizeof sib, "%.*s.weight", (int)(l - 7), nm);
            const lmx_st_tensor *w = lmx_st_set_find(st, sib, NULL);
            if (w && w->dtype == LMX_U32) continue; /* quantization parameters */
        }
        uint64_t n = 1;
        for (int d = 0; d < t->n_dims; d++) n *= (uint64_t)t->shape[d];
        if (t->dtype == LMX_U32 && ends_with(nm, ".weight") && l < 500) {
            snprintf(sib, sizeof sib, "%.*s.scales", (int)(l - 7), nm);
            if (lmx_st_set_find(st, sib, NULL)) { /* unpacked size from the module's quantization */
                snprintf(sib, sizeof sib, "%.*s", (int)(l - 7), nm);
                lmx_linear lin;
                s = lmx_weights_get_linear(&ws, sib, t->n_dims, (int64_t[4]){-1, -1, -1, -1}, true, false, &lin);
                if (s) break;
                n = (uint64_t)lmx_array_numel(&lin.w);
                lmx_linear_release(&lin);
            }
        }
        total += n;
    }
    lmx_st_set_close(st);
    lmx_config_free(cfg);
    if (!s) *out = total;
    return s;
}

lmx_status lmx_count_parameters(const char *path, uint64_t *out) {
    if (lmx_is_dir(path)) return count_folder(path, out);
    lmx_gguf *g;
    LMX_TRY(lmx_gguf_open(path, &g));
    uint64_t total = 0;
    for (int64_t i = 0; i < lmx_gguf_n_tensors(g); i++) {
        const lmx_gguf_tensor *t = lmx_gguf_tensor_at(g, i);
        if (ends_with(t->name, "rope_freqs.weight")) continue;
        uint64_t n = 1;
        for (int d = 0; d < t->n_dims; d++) n *= (uint64_t)t->ne[d];
        total += n;
    }
    lmx_gguf_close(g);
    *out = total;
    return LMX_OK;
}
