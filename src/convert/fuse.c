/* fuse.c - lmx_fuse: adapters loaded onto the base model (models/adapters.h)
 * become an edit of `lmx convert`'s writer (convert.h): every adapted
 * module's weight is rewritten as mlx-lm's LoRALinear/DoRALinear.fuse()
 * computes it, full fine-tuning tensors replace the base ones. */
#include "convert/fuse.h"

#include "convert/convert.h"
#include "models/adapters.h"
#include "models/arch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

typedef struct fuse_ctx {
    lmx_adapters *ad;
    int applied;
} fuse_ctx;

/* The entry a tensor name belongs to; *bias when it is a full entry's bias. */
static lmx_adapter_entry *entry_of(const lmx_adapters *ad, const char *name, bool *bias) {
    const char *dot = strrchr(name, '.');
    if (!dot || (size_t)(dot - name) >= sizeof ad->e[0].name) return NULL;
    char mod[sizeof ad->e[0].name];
    snprintf(mod, sizeof mod, "%.*s", (int)(dot - name), name);
    lmx_adapter_entry *e = lmx_adapters_find(ad, mod);
    if (!e) return NULL;
    *bias = !strcmp(dot, ".bias");
    if (!strcmp(dot, ".weight")) return e;
    if (*bias && ad->cfg.type == LMX_FT_FULL && !lmx_array_empty(&e->full_bias)) return e;
    return NULL;
}

static bool claims(void *user, const char *name) {
    bool bias;
    return entry_of(((fuse_ctx *)user)->ad, name, &bias) != NULL;
}

/* Rounds v to dtype dt's precision (f32 stays). */
static void round_to(lmx_dtype dt, float *v, int64_t n, void *tmp) {
    if (dt == LMX_F32) return;
    lmx_dtype_info(dt)->from_f32(v, tmp, n);
    lmx_dtype_info(dt)->to_f32(tmp, v, n);
}

/* LoRA / DoRA on w [N, K] (dtype dt, in place). */
static lmx_status fuse_lora(const lmx_adapters *ad, const lmx_adapter_entry *e, lmx_dtype dt, int64_t N, int64_t K,
                            void *data) {
    const lmx_lora *lo = &e->lora;
    int64_t r = lo->a.shape[0];
    if (lo->b.shape[0] != N || lo->a.shape[1] != K)
        return lmx_err(LMX_ERR_SHAPE, "adapter '%s' is [%lld, %lld] for a [%lld, %lld] weight", e->name,
                       (long long)lo->b.shape[0], (long long)lo->a.shape[1], (long long)N, (long long)K);
    float *w = malloc((size_t)(N * K) * sizeof *w), *delta = malloc((size_t)(N * K) * sizeof *delta);
    void *tmp = malloc(lmx_dtype_bytes(dt, N * K));
    if (!w || !delta || !tmp) {
        free(w), free(delta), free(tmp);
        return lmx_err(LMX_ERR_NOMEM, "fuse: out of memory");
    }
    const lmx_dtype_traits *tr = lmx_dtype_info(dt);
    tr->to_f32(data, w, N * K);
    /* delta = (scale·Bᵀ)·Aᵀ in f32 (b holds Bᵀ [N, r], a holds Aᵀ [r, K]) */
    const float *a = lo->a.data, *b = lo->b.data;
    for (int64_t i = 0; i < N; i++) {
        float *d = delta + i * K;
        for (int64_t k = 0; k < K; k++) d[k] = 0;
        for (int64_t j = 0; j < r; j++) {
            float s = lo->scale * b[i * r + j];
            const float *aj = a + j * K;
            for (int64_t k = 0; k < K; k++) d[k] += s * aj[k];
        }
    }
    round_to(dt, delta, N * K, tmp); /* .astype(weight.dtype) */
    for (int64_t i = 0; i < N * K; i++) w[i] += delta[i];
    round_to(dt, w, N * K, tmp); /* the add happens in the weight's dtype */
    if (ad->cfg.type == LMX_FT_DORA) {
        /* W'' = m / ‖W'‖_row · W'. mlx-lm's product is f32 (m is f32); it is
         * written here in the base dtype (mlx-lm would write f32). */
        const float *m = lo->m.data;
        for (int64_t i = 0; i < N; i++) {
            double acc = 0;
            for (int64_t k = 0; k < K; k++) acc += (double)w[i * K + k] * w[i * K + k];
            float norm = (float)sqrt(acc);
            round_to(dt, &norm, 1, tmp);
            float s = m[i] / norm;
            for (int64_t k = 0; k < K; k++) w[i * K + k] *= s;
        }
    }
    tr->from_f32(w, data, N * K);
    free(w), free(delta), free(tmp);
    return LMX_OK;
}

static lmx_status apply(void *user, const char *name, lmx_dtype dt, int64_t rows, int64_t cols, void *data) {
    fuse_ctx *c = user;
    bool bias;
    const lmx_adapter_entry *e = entry_of(c->ad, name, &bias);
    if (!e) return lmx_err(LMX_ERR_INTERNAL, "fuse: no adapter for '%s'", name);
    c->applied++;
    if (c->ad->cfg.type != LMX_FT_FULL) return fuse_lora(c->ad, e, dt, rows, cols, data);
    const lmx_array *src = bias ? &e->full_bias : &e->full;
    if (lmx_array_numel(src) != rows * cols)
        return lmx_err(LMX_ERR_SHAPE, "fine-tuned '%s' has %lld values for %lld", name,
                       (long long)lmx_array_numel(src), (long long)(rows * cols));
    lmx_dtype_info(dt)->from_f32(src->data, data, rows * cols);
    return LMX_OK;
}

/* Every tensor the adapters rewrite must be in the folder under that name
 * (the edit only sees names the folder has). */
static lmx_status check_names(const lmx_adapters *ad, const lmx_st_set *st, const char *model, int *n_tensors) {
    *n_tensors = 0;
    for (int i = 0; i < ad->n; i++) {
        const lmx_adapter_entry *e = &ad->e[i];
        for (int k = 0; k < 2; k++) {
            if (k == 1 && (ad->cfg.type != LMX_FT_FULL || lmx_array_empty(&e->full_bias))) continue;
            char nm[200];
            snprintf(nm, sizeof nm, "%s.%s", e->name, k ? "bias" : "weight");
            if (!lmx_st_set_find(st, nm, NULL))
                return lmx_err(LMX_ERR_UNSUPPORTED, "%s: the adapters change '%s', a tensor the folder stores under "
                               "another name (fuse needs MLX/HF names)", model, nm);
            (*n_tensors)++;
        }
    }
    return LMX_OK;
}

lmx_status lmx_fuse(const lmx_fuse_options *o, lmx_fuse_result *r) {
    memset(r, 0, sizeof *r);
    const char *adapters = o->adapter_path ? o->adapter_path : "adapters";
    const char *save = o->save_path ? o->save_path : "fused_model";
    if (!o->model || !*o->model) return lmx_err(LMX_ERR_INVALID_ARG, "fuse: --model is required");
    if (!lmx_is_dir(o->model))
        return lmx_err(o->model && lmx_file_exists(o->model) ? LMX_ERR_UNSUPPORTED : LMX_ERR_NOT_FOUND,
                       "%s: fuse needs a model folder (config.json + safetensors)", o->model);
    struct stat sb;
    if (lstat(save, &sb) == 0)
        return lmx_err(LMX_ERR_INVALID_ARG, "%s: already exists; delete it or choose another --save-path", save);
    lmx_config *cfg = NULL;
    lmx_st_set *st = NULL;
    lmx_transformer tf;
    memset(&tf, 0, sizeof tf);
    bool have_tf = false;
    lmx_adapters *ad = NULL;
    lmx_status s = lmx_config_load(o->model, &cfg);
    if (!s) s = lmx_st_set_open(o->model, &st);
    struct lmx_weights_src ws = {o->model, st, NULL, cfg};
    if (!s) s = lmx_transformer_load_hf(o->model, cfg, &ws, &tf);
    have_tf = !s;
    if (!s) s = lmx_adapters_load_ex(&tf, lmx_adapters_prefix(cfg), adapters, &ad);
    int n_tensors = 0;
    if (!s) s = check_names(ad, st, o->model, &n_tensors);
    if (!s && o->export_gguf) {
        const char *mt = lmx_cfg_str(cfg, "model_type", "");
        if (strcmp(mt, "llama") && strcmp(mt, "mistral") && strcmp(mt, "mixtral"))
            s = lmx_err(LMX_ERR_UNSUPPORTED, "Model type %s not supported for GGUF conversion.", mt);
        else if (!o->dequantize && (lmx_cfg_get(cfg, "quantization") || lmx_cfg_get(cfg, "quantization_config")))
            s = lmx_err(LMX_ERR_UNSUPPORTED, "Conversion of quantized models is not yet supported (add --dequantize).");
    }
    fuse_ctx ctx = {ad, 0};
    if (!s) {
        lmx_convert_edit ed = {claims, apply, &ctx};
        lmx_convert_options co;
        lmx_convert_options_init(&co);
        co.src = o->model;
        co.dst = save;
        co.dequantize = o->dequantize;
        co.edit = &ed;
        co.keep_dtype = true;
        co.model_card = "---\nlanguage: en\nlibrary_name: mlx\npipeline_tag: text-generation\ntags:\n- mlx\n---\n";
        lmx_convert_result cr;
        s = lmx_convert(&co, &cr);
        if (!s && ctx.applied != n_tensors)
            s = lmx_err(LMX_ERR_INTERNAL, "fuse: %d of %d adapted tensors were written", ctx.applied, n_tensors);
    }
    if (!s) {
        r->n_modules = ad->n;
        r->n_tensors = n_tensors;
        r->quantized = !o->dequantize && lmx_cfg_get(cfg, "quantization") != NULL;
    }
    if (!s && o->export_gguf) {
        char *g = lmx_path_join(save, o->gguf_path ? o->gguf_path : "ggml-model-f16.gguf");
        s = g ? lmx_fuse_export_gguf(save, g) : lmx_err(LMX_ERR_NOMEM, "out of memory");
        free(g);
    }
    lmx_adapters_free(ad);
    if (have_tf) lmx_transformer_free(&tf);
    lmx_st_set_close(st);
    lmx_config_free(cfg);
    return s;
}
