/*
 * test_train_devmem.c - the device-memory paths of training (tape.c,
 * train_forward.c, trainer.c) and of adapters at generation, run on the CPU.
 *
 * A "device" here is the CPU backend with buffer ops that are not host
 * visible: its arrays are LMX_BUFFER_DEVICE buffers (malloc'ed, so the CPU
 * kernels and fast vjps still run on them), which sends the model's weights
 * (lmx_transformer_to_backend), the activations, the tape's gradient
 * entries, dout/dsrc, the trainer's LoRA mirrors and the adapters down the
 * same code as on CUDA: allocation on the backend, gradient sums through the
 * backend's ADD/SCALE nodes (whole entries, partial row blocks, the column
 * views of phi3's fused qkv/gate_up outputs), uploads and downloads of the
 * parameters, gradients and loss. The real GPU run is tests/gpu/
 * test_gpu_train.c; this one needs no GPU and runs under ASan.
 *
 * Checked against the plain CPU trainer on the same adapters (LoRA r4 on
 * every projection; hf/llama f32 with and without dropout, phi3's fused
 * rows, the MLX 4-bit base of tests/data/adapters/llama_q4, gemma2's
 * sandwich norms and soft-capping, qwen3's q/k norms; gradient
 * checkpointing; 4 Adam steps): the kernels and the order of every f32 sum
 * are the same (the device path's (scale·t)·bᵀ equals the host's
 * scale·(t·bᵀ) exactly for the scale 2 used here, and its shared / in-place
 * gradient bookkeeping adds the same terms), so the losses and gradients
 * are expected bit for bit; the
 * bound is 1e-6 relative (per tensor: max|Δ| ≤ 1e-6·max|g|). Generation:
 * logits with LoRA adapters moved by lmx_adapters_to_backend equal the
 * host ones (1e-6·max|ref|). DoRA (its norms through the host fallback of
 * a backend without a dora_norms kernel) and full fine-tuning (mirrors of
 * the trainable copies bound into the model) train bit-equal to the host
 * too.
 */
#include "testing.h"

#include "core/tape.h"
#include "generate/engine.h"
#include "lmx.h"
#include "models/adapters.h"
#include "train/train_internal.h"
#include "train/trainer.h"
#include "train_compare.h"

#include <math.h>
#include <stdlib.h>

static lmx_status dm_alloc(lmx_backend *b, size_t bytes, void **out) {
    (void)b;
    *out = lmx_aligned_alloc(bytes ? bytes : 1);
    if (!*out) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    memset(*out, 0, bytes);
    return LMX_OK;
}
static void dm_free(lmx_backend *b, void *p) {
    (void)b;
    lmx_aligned_free(p);
}
static lmx_status dm_copy(lmx_backend *b, void *dst, const void *src, size_t bytes) {
    (void)b;
    if (bytes) memcpy(dst, src, bytes);
    return LMX_OK;
}
static lmx_status dm_sync(lmx_backend *b) {
    (void)b;
    return LMX_OK;
}
static lmx_status dm_zero(lmx_backend *b, void *p, size_t bytes) {
    (void)b;
    memset(p, 0, bytes);
    return LMX_OK;
}
static const lmx_buffer_ops devmem_ops = {false, dm_alloc, dm_free, dm_copy, dm_copy, dm_sync, NULL, dm_zero, NULL, NULL, NULL};

/* The CPU backend with "device" memory (freed with lmx_backend_free). */
static lmx_backend *devmem_backend(void) {
    lmx_backend *b = NULL;
    CHECK_OK(lmx_backend_create("cpu", 1, &b));
    if (b) b->buffers = &devmem_ops;
    return b;
}

static lmx_model *load(const char *rel, lmx_backend *dev) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", LMX_TEST_DATA, rel);
    lmx_load_options lo;
    lmx_load_options_init(&lo);
    lo.no_tokenizer = true;
    lo.device = "cpu";
    lo.n_threads = 1;
    lmx_model *m = NULL;
    CHECK_OK(lmx_load(path, &lo, &m));
    if (m && dev) {
        CHECK_OK(lmx_transformer_to_backend(dev, &m->tf));
        m->ex.backend = dev;
    }
    return m;
}

static lmx_adapters *adapters(lmx_model *M, lmx_ft_type type, float dropout) {
    lmx_adapter_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.type = type;
    cfg.num_layers = -1;
    cfg.rank = 4;
    cfg.scale = 2.0f;
    cfg.dropout = dropout;
    lmx_adapters *ad = NULL;
    CHECK_OK(lmx_adapters_create(&M->tf, &cfg, 3, &ad));
    rng_s = 0x13198A2E03707344ull;
    for (int i = 0; ad && type != LMX_FT_FULL && i < ad->n; i++) {
        lmx_lora *lo = &ad->e[i].lora;
        for (int64_t j = 0; j < lmx_array_numel(&lo->a); j++) ((float *)lo->a.data)[j] = frand() * 0.3f;
        for (int64_t j = 0; j < lmx_array_numel(&lo->b); j++) ((float *)lo->b.data)[j] = 0.05f * frand();
    }
    return ad;
}

static lmx_trainer *trainer(lmx_model *M, lmx_adapters *ad, bool ckpt) {
    lmx_train_options o;
    lmx_train_options_init(&o);
    lmx_optim_config_init(&o.optim, LMX_OPT_ADAM);
    o.learning_rate = 1e-2f;
    o.grad_checkpoint = ckpt;
    o.seed = 5;
    lmx_trainer *t = NULL;
    CHECK_OK(lmx_trainer_create(&M->ex, &M->tf, ad, &o, &t));
    return t;
}


static void train_case_type(const char *rel, lmx_ft_type type, float dropout, bool ckpt) {
    lmx_backend *dev = devmem_backend();
    lmx_model *H = load(rel, NULL), *D = dev ? load(rel, dev) : NULL;
    lmx_adapters *ah = H ? adapters(H, type, dropout) : NULL, *ad = D ? adapters(D, type, dropout) : NULL;
    lmx_trainer *th = ah ? trainer(H, ah, false) : NULL, *td = ad ? trainer(D, ad, ckpt) : NULL;
    double worst_l = 0, worst_g = 0;
    int zero = 0;
    for (int s = 0; th && td && s < 4; s++) {
        double lh = 0, ld = 0;
        CHECK_OK(lmx_trainer_accumulate(th, &toks[0][0], 2, 12, offs, lens, &lh, NULL));
        CHECK_OK(lmx_trainer_accumulate(td, &toks[0][0], 2, 12, offs, lens, &ld, NULL));
        worst_l = fmax(worst_l, fabs(ld - lh) / fabs(lh));
        int z = 0;
        worst_g = fmax(worst_g, grad_rel(td, th, &z));
        if (s == 0) zero = z;
        CHECK_OK(lmx_trainer_update(th, NULL));
        CHECK_OK(lmx_trainer_update(td, NULL));
    }
    printf("  %s %s dropout %.1f%s: 4 Adam steps, device vs host: loss rel %.2e, grads rel %.2e, %d of %d tensors all "
           "zero\n",
           rel, type == LMX_FT_FULL ? "full" : type == LMX_FT_DORA ? "dora" : "lora", (double)dropout,
           ckpt ? " checkpointed" : "", worst_l, worst_g, zero,
           th ? lmx_trainer_n_params(th) : 0);
    CHECK_MSG(th && td, "%s: trainers", rel);
    CHECK_MSG(worst_l <= 1e-6, "%s: loss differs %.3e", rel, worst_l);
    CHECK_MSG(worst_g <= 1e-6, "%s: gradients differ %.3e", rel, worst_g);
    CHECK_MSG(zero == 0, "%s: %d gradients all zero", rel, zero);
    /* the host adapter set is what the optimizer updated: equal after 4 steps */
    double pd = 0;
    for (int i = 0; th && td && i < lmx_trainer_n_params(th); i++) {
        const lmx_array *a = lmx_trainer_param(th, i), *b = lmx_trainer_param(td, i);
        for (int64_t j = 0; j < lmx_array_numel(a); j++)
            pd = fmax(pd, fabs((double)((const float *)a->data)[j] - ((const float *)b->data)[j]));
    }
    CHECK_MSG(pd <= 1e-6, "%s: parameters differ by %.3e after 4 steps", rel, pd);
    lmx_trainer_free(td);
    lmx_trainer_free(th);
    lmx_adapters_free(ad);
    lmx_adapters_free(ah);
    lmx_model_free(D);
    lmx_model_free(H);
    lmx_backend_free(dev);
}

static void train_case(const char *rel, float dropout, bool ckpt) { train_case_type(rel, LMX_FT_LORA, dropout, ckpt); }

static void test_lora_llama(void) { train_case("hf/llama", 0.0f, false); }
static void test_lora_llama_dropout_ckpt(void) { train_case("hf/llama", 0.1f, true); }
static void test_lora_phi3_fused(void) { train_case("hf/phi3", 0.0f, false); }
static void test_lora_phi3_fused_ckpt(void) { train_case("hf/phi3", 0.0f, true); }
static void test_qlora(void) { train_case("adapters/llama_q4", 0.0f, true); }
/* sandwich norms + soft-capping; q/k norms with dropout */
static void test_lora_gemma2_ckpt(void) { train_case("hf/gemma2", 0.0f, true); }
static void test_lora_qwen3_dropout(void) { train_case("hf/qwen3", 0.1f, false); }

/* DoRA (the norms through the host fallback: this backend has no
 * dora_norms kernel) and full fine-tuning (mirrors of the trainable copies
 * swapped into the model), with fused rows (phi3), checkpointing and an
 * MLX 4-bit base (DoRA's norms of a quantized W). */
static void test_dora_llama(void) { train_case_type("hf/llama", LMX_FT_DORA, 0.0f, false); }
static void test_dora_phi3_fused_ckpt(void) { train_case_type("hf/phi3", LMX_FT_DORA, 0.0f, true); }
static void test_dora_q4(void) { train_case_type("adapters/llama_q4", LMX_FT_DORA, 0.0f, false); }
static void test_full_llama(void) { train_case_type("hf/llama", LMX_FT_FULL, 0.0f, false); }
static void test_full_phi3_fused_ckpt(void) { train_case_type("hf/phi3", LMX_FT_FULL, 0.0f, true); }
static void test_full_gemma2(void) { train_case_type("hf/gemma2", LMX_FT_FULL, 0.0f, false); }

/* Generation: LoRA adapters loaded on the host, moved with the model. */
static void test_generation(void) {
    const char *cases[][2] = {{"adapters/llama_lora", "hf/llama"}, {"adapters/phi3_lora", "hf/phi3"},
                              {"adapters/llama_dora", "hf/llama"}};
    for (int c = 0; c < 3; c++) {
        char mp[1024], ap[1024];
        snprintf(mp, sizeof mp, "%s/%s", LMX_TEST_DATA, cases[c][1]);
        snprintf(ap, sizeof ap, "%s/%s", LMX_TEST_DATA, cases[c][0]);
        lmx_load_options lo;
        lmx_load_options_init(&lo);
        lo.no_tokenizer = true;
        lo.device = "cpu";
        lo.n_threads = 1;
        lo.adapter_path = ap;
        lmx_model *H = NULL, *D = NULL;
        CHECK_OK(lmx_load(mp, &lo, &H));
        CHECK_OK(lmx_load(mp, &lo, &D));
        lmx_backend *dev = devmem_backend();
        if (!H || !D || !dev) {
            lmx_model_free(H);
            lmx_model_free(D);
            lmx_backend_free(dev);
            continue;
        }
        CHECK_OK(lmx_transformer_to_backend(dev, &D->tf));
        CHECK_OK(lmx_adapters_to_backend(D->adapters, dev));
        lmx_backend *cpu = D->backend;
        D->backend = dev;
        D->ex.backend = dev;
        static const int32_t ids[8] = {1, 5, 17, 99, 3, 200, 42, 7};
        int64_t V = H->tf.hp.n_vocab;
        float *a = calloc((size_t)(8 * V), sizeof *a), *b = calloc((size_t)(8 * V), sizeof *b);
        CHECK_OK(lmx_logits(H, ids, 8, a));
        CHECK_OK(lmx_logits(D, ids, 8, b));
        double md = 0, mr = 0;
        for (int64_t i = 0; i < 8 * V; i++) {
            md = fmax(md, fabs((double)a[i] - b[i]));
            mr = fmax(mr, fabs((double)a[i]));
        }
        printf("  generation %s: device-memory logits vs host max|d| %.2e (max|ref| %.2f)\n", cases[c][0], md, mr);
        CHECK(md <= 1e-6 * mr);
        free(a);
        free(b);
        lmx_model_free(H);
        lmx_adapters_free(D->adapters); /* before the backend holding its arrays */
        D->adapters = NULL;
        lmx_scratch_free(D->scratch);
        D->scratch = NULL;
        D->backend = cpu;
        D->ex.backend = cpu;
        lmx_model_free(D); /* its weights still point into dev's memory */
        lmx_backend_free(dev);
    }
}

void run_tests(void) {
    TEST(test_lora_llama);
    TEST(test_lora_llama_dropout_ckpt);
    TEST(test_lora_phi3_fused);
    TEST(test_lora_phi3_fused_ckpt);
    TEST(test_qlora);
    TEST(test_lora_gemma2_ckpt);
    TEST(test_lora_qwen3_dropout);
    TEST(test_dora_llama);
    TEST(test_dora_phi3_fused_ckpt);
    TEST(test_dora_q4);
    TEST(test_full_llama);
    TEST(test_full_phi3_fused_ckpt);
    TEST(test_full_gemma2);
    TEST(test_generation);
}
