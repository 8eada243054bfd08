/* arch_gguf.c - hyperparameters from GGUF metadata ("<arch>.embedding_length",
 * ...), for the llama-family architectures llama.cpp writes.
 *
 * RoPE pairing: llama.cpp's converter permutes llama q/k rows into Meta's
 * interleaved order and runs "normal" RoPE on adjacent pairs, so a GGUF
 * llama uses traditional RoPE on the unpermuted rows (no data rewrite);
 * qwen2/qwen3 are stored unpermuted and use NEOX (rotate_half) RoPE. */
#include "models/arch.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static bool key_i(const lmx_gguf *g, const char *arch, const char *k, int64_t *v) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, k);
    return lmx_gguf_get_i64(g, key, v);
}

static bool key_f(const lmx_gguf *g, const char *arch, const char *k, float *v) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, k);
    return lmx_gguf_get_f32(g, key, v);
}

lmx_status lmx_transformer_load_gguf(const lmx_gguf *g, const struct lmx_weights_src *w, lmx_transformer *m) {
    memset(m, 0, sizeof *m);
    const char *path = lmx_gguf_path(g);
    lmx_gguf_str as;
    if (!lmx_gguf_get_str(g, "general.architecture", &as) || as.len == 0 || as.len >= 32)
        return lmx_err(LMX_ERR_FORMAT, "%s: general.architecture: missing", path);
    char arch[32];
    memcpy(arch, as.ptr, as.len);
    arch[as.len] = 0;
    const lmx_arch *fam;
    bool traditional;
    if (!strcmp(arch, "llama") || !strcmp(arch, "mistral")) {
        fam = &lmx_arch_llama;
        traditional = true;
    } else if (!strcmp(arch, "qwen2")) {
        fam = &lmx_arch_qwen2;
        traditional = false;
    } else if (!strcmp(arch, "qwen3")) {
        fam = &lmx_arch_qwen3;
        traditional = false;
    } else {
        return lmx_err(LMX_ERR_UNSUPPORTED, "%s: general.architecture: '%s' is not supported for GGUF yet", path, arch);
    }
    lmx_hparams *hp = &m->hp;
    snprintf(hp->arch, sizeof hp->arch, "%s", arch);
    int64_t v;
    const char *req[] = {"embedding_length", "block_count", "attention.head_count", "feed_forward_length"};
    int64_t vals[4];
    for (int i = 0; i < 4; i++) {
        if (!key_i(g, arch, req[i], &vals[i]) || vals[i] <= 0 || vals[i] > (1 << 20))
            return lmx_err(LMX_ERR_FORMAT, "%s: %s.%s: missing or out of range", path, arch, req[i]);
    }
    hp->n_embd = (int)vals[0];
    hp->n_layer = (int)vals[1];
    hp->n_head = (int)vals[2];
    hp->n_ff = (int)vals[3];
    if (hp->n_layer > LMX_MAX_LAYERS) return lmx_err(LMX_ERR_UNSUPPORTED, "%s: %s.block_count: too many layers", path, arch);
    hp->n_kv_head = key_i(g, arch, "attention.head_count_kv", &v) ? (int)v : hp->n_head;
    if (hp->n_kv_head <= 0 || hp->n_head % hp->n_kv_head)
        return lmx_err(LMX_ERR_FORMAT, "%s: %s.attention.head_count_kv: %d does not divide %d heads", path, arch,
                       hp->n_kv_head, hp->n_head);
    hp->head_dim = key_i(g, arch, "attention.key_length", &v) ? (int)v : hp->n_embd / hp->n_head;
    if (hp->head_dim <= 0 || hp->head_dim % 2) return lmx_err(LMX_ERR_FORMAT, "%s: head size %d is invalid", path, hp->head_dim);
    hp->n_ctx = key_i(g, arch, "context_length", &v) ? (int)v : 2048;
    if (!key_f(g, arch, "attention.layer_norm_rms_epsilon", &hp->norm_eps)) hp->norm_eps = 1e-5f;
    const lmx_gguf_tensor *emb = lmx_gguf_find_tensor(g, "token_embd.weight");
    if (!emb || emb->n_dims != 2) return lmx_err(LMX_ERR_NOT_FOUND, "%s: missing tensor 'token_embd.weight'", path);
    hp->n_vocab = (int)emb->ne[1];
    hp->norm = LMX_NORM_RMS;
    hp->mlp_gated = true;
    hp->act = LMX_ACT_SILU;
    hp->attn_scale = 1.0f / sqrtf((float)hp->head_dim);
    hp->embed_scale = 1.0f;
    hp->qk_norm = fam == &lmx_arch_qwen3;
    hp->tied = lmx_gguf_find_tensor(g, "output.weight") == NULL;
    int64_t bos;
    hp->bos_id = lmx_gguf_get_i64(g, "tokenizer.ggml.bos_token_id", &bos) ? (int)bos : -1;
    lmx_rope_cfg *r = &hp->rope[0];
    r->type = LMX_ROPE_DEFAULT;
    r->dims = key_i(g, arch, "rope.dimension_count", &v) ? (int)v : hp->head_dim;
    if (r->dims <= 0 || r->dims > hp->head_dim || r->dims % 2)
        return lmx_err(LMX_ERR_FORMAT, "%s: %s.rope.dimension_count: %d is invalid", path, arch, r->dims);
    float base;
    r->base = key_f(g, arch, "rope.freq_base", &base) ? base : 10000.0;
    r->factor = 1.0;
    float lin;
    if (key_f(g, arch, "rope.scale_linear", &lin) && lin > 0 && lin != 1.0f) {
        r->type = LMX_ROPE_LINEAR;
        r->factor = lin;
    }
    r->traditional = traditional;
    r->attn_factor = 1.0f;
    r->max_pos = hp->n_ctx;
    r->orig_max_pos = hp->n_ctx;
    hp->rope[1] = *r;
    lmx_status s = lmx_transformer_load_tensors(fam, NULL, w, m);
    if (s) lmx_transformer_free(m);
    return s;
}
