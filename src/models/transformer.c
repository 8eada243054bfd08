/* transformer.c - the shared forward pass and step scratch (the KV cache
 * it writes is kv_cache.c).
 *
 * Per layer (pre-norm):
 *   h = norm(x); q,k,v = h·Wqkv (+b); [qk-norm]; rope(q,k); cache ← k,v
 *   a = attention(q, cache) · Wo (+b); [post-attn norm]
 *   parallel (phi-2): x = x + a + mlp(h)
 *   else:             x = x + a; m = mlp(norm(x)); [post-ffn norm]; x = x + m
 * then final norm, lm_head (+b), [final soft-cap]. Activations are f32. */
#include "models/lora.h"

#include <math.h>
#include <stdlib.h>

/* On a device backend (CUDA) the scratch, the KV cache and the weights live
 * in device memory: token ids and RoPE frequencies are uploaded once per
 * step, logits downloaded at the end, and MoE routing weights read back. */
struct lmx_scratch {
    int64_t cap, logits_rows;
    lmx_backend *backend; /* where the arrays live (NULL: host) */
    float mscale[2];      /* per RoPE config, for the current step */
    lmx_array x, h, q, k, v, attn, o, mlp, gate, up, act, logits, ids, inv_freq, router, probs;
    lmx_array ex_in, ex_gate, ex_up, ex_act, ex_out;
    /* LoRA/DoRA (host only), grown on demand: x·aᵀ [T, r], its ·bᵀ [T, out]
     * and DoRA's per-row factor [out]. */
    lmx_array lora_t, lora_u, lora_f;
};

void lmx_scratch_free(lmx_scratch *s) {
    if (!s) return;
    lmx_array *all[] = {&s->x, &s->h, &s->q, &s->k, &s->v, &s->attn, &s->o, &s->mlp, &s->gate, &s->up,
                        &s->act, &s->logits, &s->ids, &s->inv_freq, &s->router, &s->probs, &s->ex_in,
                        &s->ex_gate, &s->ex_up, &s->ex_act, &s->ex_out, &s->lora_t, &s->lora_u, &s->lora_f};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) lmx_array_release(all[i]);
    free(s);
}

static lmx_status alloc2_on(lmx_backend *b, lmx_array *a, lmx_dtype dt, int64_t r, int64_t c) {
    int64_t sh[2] = {r, c > 0 ? c : 1};
    return lmx_array_alloc_on(b, a, dt, 2, sh);
}

static lmx_status scratch_reserve(lmx_scratch **sp, const lmx_hparams *hp, int64_t T, lmx_backend *b) {
    if (lmx_backend_is_host(b)) b = NULL;
    if (*sp && (*sp)->cap >= T && (*sp)->backend == b) return LMX_OK;
    lmx_scratch_free(*sp);
    *sp = NULL;
    lmx_scratch *s = calloc(1, sizeof *s);
    if (!s) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    int64_t D = hp->n_embd, hd = hp->head_dim, F = hp->n_ff > hp->n_ff_expert ? hp->n_ff : hp->n_ff_expert;
    lmx_status st = LMX_OK;
    s->cap = T;
    s->backend = b;
#define alloc2(...) alloc2_on(b, __VA_ARGS__)
    if (!st) st = alloc2(&s->x, LMX_F32, T, D);
    if (!st) st = alloc2(&s->h, LMX_F32, T, D);
    if (!st) st = alloc2(&s->q, LMX_F32, T, hp->n_head * hd);
    if (!st) st = alloc2(&s->k, LMX_F32, T, hp->n_kv_head * hd);
    if (!st) st = alloc2(&s->v, LMX_F32, T, hp->n_kv_head * hd);
    if (!st) st = alloc2(&s->attn, LMX_F32, T, hp->n_head * hd);
    if (!st) st = alloc2(&s->o, LMX_F32, T, D);
    if (!st) st = alloc2(&s->mlp, LMX_F32, T, D);
    if (!st) st = alloc2(&s->gate, LMX_F32, T, F);
    if (!st) st = alloc2(&s->up, LMX_F32, T, F);
    if (!st) st = alloc2(&s->act, LMX_F32, T, F);
    s->logits_rows = 1; /* grown on demand: the host path writes the caller's buffer */
    if (!st) st = alloc2(&s->logits, LMX_F32, 1, hp->n_vocab);
    if (!st) st = alloc2(&s->ids, LMX_I32, 1, T);
    if (!st) st = alloc2(&s->inv_freq, LMX_F32, 2, hd / 2);
    if (!st) st = alloc2(&s->router, LMX_F32, T, hp->n_expert);
    if (!st) st = alloc2(&s->probs, LMX_F32, T, hp->n_expert);
    if (!st) st = alloc2(&s->ex_in, LMX_F32, 1, D);
    if (!st) st = alloc2(&s->ex_gate, LMX_F32, 1, hp->n_ff_expert);
    if (!st) st = alloc2(&s->ex_up, LMX_F32, 1, hp->n_ff_expert);
    if (!st) st = alloc2(&s->ex_act, LMX_F32, 1, hp->n_ff_expert);
    if (!st) st = alloc2(&s->ex_out, LMX_F32, 1, D);
#undef alloc2
    if (st) {
        lmx_scratch_free(s);
        return st;
    }
    *sp = s;
    return LMX_OK;
}

/* A borrowed view of the first rows of a scratch array with a new shape. */
static lmx_array tv(const lmx_array *a, int ndim, int64_t d0, int64_t d1, int64_t d2) {
    lmx_array v;
    memset(&v, 0, sizeof v);
    v.data = a->data;
    int64_t sh[3] = {d0, d1, d2};
    lmx_array_set_contiguous(&v, a->dtype, ndim, sh);
    return v;
}

static const lmx_array *opt(const lmx_array *a) { return lmx_array_empty(a) ? NULL : a; }

static lmx_status norm(lmx_exec *ex, const lmx_hparams *hp, lmx_array *out, const lmx_array *x,
                       const lmx_array *w, const lmx_array *b) {
    if (hp->norm == LMX_NORM_LAYER) return lmx_layer_norm(ex, out, x, opt(w), opt(b), hp->norm_eps);
    return lmx_rms_norm(ex, out, x, opt(w), hp->norm_eps, hp->norm_add_one);
}

/* A scratch array of at least n floats (host only; contents not kept). */
static lmx_status grow_host(lmx_array *a, int64_t n) {
    if (lmx_array_numel(a) >= n && !lmx_array_empty(a)) return LMX_OK;
    lmx_array_release(a);
    int64_t sh[1] = {n};
    return lmx_array_alloc(a, LMX_F32, 1, sh);
}

/* LoRA: out = x·Wᵀ + b + scale·((x·aᵀ)·bᵀ).
 * DoRA: out = f ⊙ (x·Wᵀ + scale·((x·aᵀ)·bᵀ)) + b, f = m/‖W + scale·b·a‖_row
 * computed on the host each call; the bias joins after the rescale, so the
 * base matmul runs without it. Generation applies no dropout. */
static lmx_status linear_lora(lmx_exec *ex, lmx_scratch *s, lmx_array *out, const lmx_array *x,
                              const lmx_linear *l) {
    const lmx_lora *lo = l->lora;
    if (!lmx_backend_is_host(ex->backend))
        return lmx_err(LMX_ERR_UNSUPPORTED, "adapters run on the CPU only (use --device cpu)");
    bool dora = !lmx_array_empty(&lo->m);
    int64_t T = lmx_array_numel(x) / x->shape[x->ndim - 1], N = l->w.shape[0], R = lo->a.shape[0];
    LMX_TRY(lmx_matmul_q(ex, out, x, &l->w, dora ? NULL : opt(&l->b), opt(&l->scales), opt(&l->biases),
                         l->group_size));
    LMX_TRY(grow_host(&s->lora_t, T * R));
    LMX_TRY(grow_host(&s->lora_u, T * N));
    lmx_array t = tv(&s->lora_t, 2, T, R, 0), u = tv(&s->lora_u, 2, T, N, 0);
    LMX_TRY(lmx_matmul(ex, &t, x, &lo->a, NULL));
    LMX_TRY(lmx_matmul(ex, &u, &t, &lo->b, NULL));
    LMX_TRY(lmx_scale(ex, &u, &u, lo->scale));
    LMX_TRY(lmx_add(ex, out, out, &u));
    if (!dora) return LMX_OK;
    LMX_TRY(grow_host(&s->lora_f, N));
    lmx_array f = tv(&s->lora_f, 1, N, 0, 0);
    LMX_TRY(lmx_lora_dora_factor(l, lo, f.data));
    LMX_TRY(lmx_mul(ex, out, out, &f));
    if (!lmx_array_empty(&l->b)) LMX_TRY(lmx_add(ex, out, out, &l->b));
    return LMX_OK;
}

/* out = x·Wᵀ (+ b), W in any storage format (float, GGUF, MLX packed),
 * plus the attached LoRA/DoRA adapter, if any. */
static lmx_status linear(lmx_exec *ex, lmx_scratch *s, lmx_array *out, const lmx_array *x, const lmx_linear *l) {
    if (l->lora) return linear_lora(ex, s, out, x, l);
    return lmx_matmul_q(ex, out, x, &l->w, opt(&l->b), opt(&l->scales), opt(&l->biases), l->group_size);
}

static lmx_status mlp_dense(lmx_exec *ex, const lmx_hparams *hp, const lmx_layer *L, lmx_scratch *s,
                            int64_t T, const lmx_array *in, lmx_array *out) {
    int64_t F = hp->n_ff;
    lmx_array up = tv(&s->up, 2, T, F, 0), act = tv(&s->act, 2, T, F, 0);
    if (hp->mlp_gated) {
        lmx_array gate = tv(&s->gate, 2, T, F, 0);
        LMX_TRY(linear(ex, s, &gate, in, &L->w_gate));
        LMX_TRY(linear(ex, s, &up, in, &L->w_up));
        LMX_TRY(lmx_act(ex, &act, &gate, &up, hp->act));
    } else {
        LMX_TRY(linear(ex, s, &up, in, &L->w_up));
        LMX_TRY(lmx_act(ex, &act, &up, NULL, hp->act));
    }
    return linear(ex, s, out, &act, &L->w_down);
}

/* Device path of the expert loop: the routing probabilities are read back
 * (one sync per MoE layer), each token's experts run on its row of `in`,
 * and out_row = Σ w_k·y_k is accumulated with scale/add ops in the host
 * loop's order (0 + w·y == w·y, so the sums match it bit for bit). */
static lmx_status moe_experts_device(lmx_exec *ex, const lmx_hparams *hp, const lmx_layer *L, lmx_scratch *s,
                                     int64_t T, const lmx_array *in, lmx_array *out, const lmx_array *probs) {
    int E = hp->n_expert, K = hp->n_expert_used;
    int64_t D = hp->n_embd, Fe = hp->n_ff_expert;
    float *ph = malloc((size_t)(T * E) * sizeof *ph);
    if (!ph) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    lmx_status st = lmx_backend_download(ex->backend, ph, probs->data, (size_t)(T * E) * sizeof *ph);
    for (int64_t t = 0; t < T && !st; t++) {
        const float *p = ph + t * E;
        int sel[64];
        float w[64], wsum = 0;
        bool used[256] = {false};
        for (int k = 0; k < K; k++) { /* stable arg-max selection: ties keep the lower id */
            int best = -1;
            for (int e = 0; e < E; e++)
                if (!used[e] && (best < 0 || p[e] > p[best])) best = e;
            used[best] = true;
            sel[k] = best;
            w[k] = p[best];
            wsum += w[k];
        }
        lmx_array xin = tv(in, 2, 1, D, 0), orow = tv(out, 2, 1, D, 0);
        xin.data = (float *)in->data + t * D;
        orow.data = (float *)out->data + t * D;
        for (int k = 0; k < K && !st; k++) {
            int e = sel[k];
            float wk = hp->norm_topk_prob ? w[k] / wsum : w[k];
            lmx_array g = tv(&s->ex_gate, 2, 1, Fe, 0), u = tv(&s->ex_up, 2, 1, Fe, 0);
            lmx_array a = tv(&s->ex_act, 2, 1, Fe, 0), y = tv(&s->ex_out, 2, 1, D, 0);
            st = linear(ex, s, &g, &xin, &L->exp_gate[e]);
            if (!st) st = linear(ex, s, &u, &xin, &L->exp_up[e]);
            if (!st) st = lmx_act(ex, &a, &g, &u, hp->act);
            if (!st) st = linear(ex, s, &y, &a, &L->exp_down[e]);
            if (!st && k == 0) st = lmx_scale(ex, &orow, &y, wk);
            if (!st && k > 0) st = lmx_scale(ex, &y, &y, wk);
            if (!st && k > 0) st = lmx_add(ex, &orow, &orow, &y);
        }
    }
    free(ph);
    return st;
}

/* Top-k routing: softmax over all experts, keep the k best, optionally
 * renormalise (mixtral, qwen3_moe with norm_topk_prob). Experts run per token. */
static lmx_status mlp_moe(lmx_exec *ex, const lmx_hparams *hp, const lmx_layer *L, lmx_scratch *s,
                          int64_t T, const lmx_array *in, lmx_array *out) {
    int E = hp->n_expert, K = hp->n_expert_used;
    int64_t D = hp->n_embd;
    lmx_array logits = tv(&s->router, 2, T, E, 0), probs = tv(&s->probs, 2, T, E, 0);
    LMX_TRY(linear(ex, s, &logits, in, &L->router));
    LMX_TRY(lmx_softmax(ex, &probs, &logits));
    if (!lmx_backend_is_host(ex->backend)) return moe_experts_device(ex, hp, L, s, T, in, out, &probs);
    float *o = out->data;
    memset(o, 0, (size_t)(T * D) * sizeof(float));
    for (int64_t t = 0; t < T; t++) {
        const float *p = (const float *)probs.data + t * E;
        int sel[64];
        float w[64], wsum = 0;
        bool used[256] = {false};
        for (int k = 0; k < K; k++) { /* stable arg-max selection: ties keep the lower id */
            int best = -1;
            for (int e = 0; e < E; e++)
                if (!used[e] && (best < 0 || p[e] > p[best])) best = e;
            used[best] = true;
            sel[k] = best;
            w[k] = p[best];
            wsum += w[k];
        }
        lmx_array xin = tv(&s->ex_in, 2, 1, D, 0);
        memcpy(xin.data, (const float *)in->data + t * D, (size_t)D * sizeof(float));
        for (int k = 0; k < K; k++) {
            int e = sel[k];
            float wk = hp->norm_topk_prob ? w[k] / wsum : w[k];
            lmx_array g = tv(&s->ex_gate, 2, 1, hp->n_ff_expert, 0), u = tv(&s->ex_up, 2, 1, hp->n_ff_expert, 0);
            lmx_array a = tv(&s->ex_act, 2, 1, hp->n_ff_expert, 0), y = tv(&s->ex_out, 2, 1, D, 0);
            LMX_TRY(linear(ex, s, &g, &xin, &L->exp_gate[e]));
            LMX_TRY(linear(ex, s, &u, &xin, &L->exp_up[e]));
            LMX_TRY(lmx_act(ex, &a, &g, &u, hp->act));
            LMX_TRY(linear(ex, s, &y, &a, &L->exp_down[e]));
            const float *yd = y.data;
            for (int64_t d = 0; d < D; d++) o[t * D + d] += wk * yd[d];
        }
    }
    return LMX_OK;
}

static lmx_status rope_freqs(lmx_exec *ex, const lmx_hparams *hp, lmx_scratch *s, int64_t seq_len);
static lmx_status attention_rows(lmx_exec *ex, const lmx_hparams *hp, int li, lmx_kv_cache **caches, int nc,
                                 lmx_scratch *s);

/* nc == 1: T tokens of one sequence (caches[0]); nc > 1: one token of each
 * of nc sequences (T == nc), batched through the projections. */
static lmx_status attention_block(lmx_exec *ex, const lmx_hparams *hp, const lmx_layer *L, int li,
                                  lmx_kv_cache **caches, int nc, lmx_scratch *s, int64_t T, const lmx_array *h,
                                  lmx_array *out) {
    lmx_kv_cache *cache = caches[0];
    int64_t H = hp->n_head, Hkv = hp->n_kv_head, hd = hp->head_dim, pos0 = cache->offset;
    lmx_array q = tv(&s->q, 2, T, H * hd, 0), k = tv(&s->k, 2, T, Hkv * hd, 0), v = tv(&s->v, 2, T, Hkv * hd, 0);
    LMX_TRY(linear(ex, s, &q, h, &L->wq));
    LMX_TRY(linear(ex, s, &k, h, &L->wk));
    LMX_TRY(linear(ex, s, &v, h, &L->wv));
    if (hp->qk_norm) {
        lmx_array qh = tv(&s->q, 2, T * H, hd, 0), kh = tv(&s->k, 2, T * Hkv, hd, 0);
        LMX_TRY(lmx_rms_norm(ex, &qh, &qh, &L->q_norm, hp->norm_eps, hp->norm_add_one));
        LMX_TRY(lmx_rms_norm(ex, &kh, &kh, &L->k_norm, hp->norm_eps, hp->norm_add_one));
    }
    if (nc > 1) {
        LMX_TRY(attention_rows(ex, hp, li, caches, nc, s));
        lmx_array attn = tv(&s->attn, 2, T, H * hd, 0);
        return linear(ex, s, out, &attn, &L->wo);
    }
    int ri = hp->rope_idx[li];
    const lmx_rope_cfg *r = &hp->rope[ri];
    float mscale = s->mscale[ri];
    lmx_array inv = tv(&s->inv_freq, 1, r->dims / 2, 0, 0); /* row ri, filled by rope_step() */
    inv.data = (float *)s->inv_freq.data + ri * (hp->head_dim / 2);
    lmx_array q3 = tv(&s->q, 3, T, H, hd), k3 = tv(&s->k, 3, T, Hkv, hd);
    LMX_TRY(lmx_rope(ex, &q3, &q3, &inv, pos0, r->dims, r->traditional, mscale));
    LMX_TRY(lmx_rope(ex, &k3, &k3, &inv, pos0, r->dims, r->traditional, mscale));

    lmx_array kv_k, kv_v;
    int64_t apos0;
    int window;
    LMX_TRY(lmx_kv_store(ex, cache, li, &k, &v, hp->window[li], &kv_k, &kv_v, &apos0, &window));
    lmx_array attn = tv(&s->attn, 2, T, H * hd, 0);
    LMX_TRY(lmx_attention(ex, &attn, &q3, &kv_k, &kv_v, apos0, hp->attn_scale, hp->attn_softcap, window));
    return linear(ex, s, out, &attn, &L->wo);
}

/* Inverse frequencies of the RoPE configs the layers use, for a step ending
 * at position seq_len-1 (one row each), and the token ids, into scratch. */
static lmx_status rope_freqs(lmx_exec *ex, const lmx_hparams *hp, lmx_scratch *s, int64_t seq_len) {
    bool host = lmx_backend_is_host(ex->backend);
    int64_t half = hp->head_dim / 2;
    float buf[2 * 512];
    if (!host && half > 512) return lmx_err(LMX_ERR_UNSUPPORTED, "head_dim %d too large", hp->head_dim);
    bool used[2] = {false, false};
    for (int l = 0; l < hp->n_layer; l++) used[hp->rope_idx[l] & 1] = true;
    for (int i = 0; i < 2; i++) {
        if (!used[i]) continue;
        float *dst = host ? (float *)s->inv_freq.data + i * half : buf + i * half;
        lmx_rope_inv_freq(&hp->rope[i], seq_len, dst, &s->mscale[i]);
    }
    if (host) return LMX_OK;
    return lmx_backend_upload(ex->backend, s->inv_freq.data, buf, (size_t)(2 * half) * sizeof(float));
}

static lmx_status step_inputs(lmx_exec *ex, const lmx_hparams *hp, lmx_scratch *s, int64_t seq_len,
                              const int32_t *tokens, int64_t T) {
    LMX_TRY(rope_freqs(ex, hp, s, seq_len));
    if (lmx_backend_is_host(ex->backend)) {
        memcpy(s->ids.data, tokens, (size_t)T * sizeof(int32_t));
        return LMX_OK;
    }
    return lmx_backend_upload(ex->backend, s->ids.data, tokens, (size_t)T * sizeof(int32_t));
}

/* Only dynamic NTK and longrope frequencies depend on the sequence length. */
static bool rope_per_length(const lmx_hparams *hp) {
    for (int i = 0; i < 2; i++)
        if (hp->rope[i].type == LMX_ROPE_DYNAMIC || hp->rope[i].type == LMX_ROPE_LONGROPE) return true;
    return false;
}

/* Batched decode: row b of q/k/v (already projected) belongs to sequence b
 * at position caches[b]->offset; RoPE, the cache write and attention run
 * per row, into row b of s->attn. */
static lmx_status attention_rows(lmx_exec *ex, const lmx_hparams *hp, int li, lmx_kv_cache **caches, int nc,
                                 lmx_scratch *s) {
    int64_t H = hp->n_head, Hkv = hp->n_kv_head, hd = hp->head_dim;
    int ri = hp->rope_idx[li];
    const lmx_rope_cfg *r = &hp->rope[ri];
    bool per_len = rope_per_length(hp);
    for (int b = 0; b < nc; b++) {
        lmx_kv_cache *c = caches[b];
        if (per_len) LMX_TRY(rope_freqs(ex, hp, s, c->offset + 1));
        lmx_array inv = tv(&s->inv_freq, 1, r->dims / 2, 0, 0);
        inv.data = (float *)s->inv_freq.data + ri * (hp->head_dim / 2);
        lmx_array q3 = tv(&s->q, 3, 1, H, hd), k3 = tv(&s->k, 3, 1, Hkv, hd), v2 = tv(&s->v, 2, 1, Hkv * hd, 0);
        q3.data = (float *)s->q.data + b * H * hd;
        k3.data = (float *)s->k.data + b * Hkv * hd;
        v2.data = (float *)s->v.data + b * Hkv * hd;
        LMX_TRY(lmx_rope(ex, &q3, &q3, &inv, c->offset, r->dims, r->traditional, s->mscale[ri]));
        LMX_TRY(lmx_rope(ex, &k3, &k3, &inv, c->offset, r->dims, r->traditional, s->mscale[ri]));
        lmx_array k2 = tv(&s->k, 2, 1, Hkv * hd, 0), kv_k, kv_v;
        k2.data = k3.data;
        int64_t apos0;
        int window;
        LMX_TRY(lmx_kv_store(ex, c, li, &k2, &v2, hp->window[li], &kv_k, &kv_v, &apos0, &window));
        lmx_array attn = tv(&s->attn, 2, 1, H * hd, 0);
        attn.data = (float *)s->attn.data + b * H * hd;
        LMX_TRY(lmx_attention(ex, &attn, &q3, &kv_k, &kv_v, apos0, hp->attn_scale, hp->attn_softcap, window));
    }
    return LMX_OK;
}

static lmx_status forward_core(lmx_exec *ex, const lmx_transformer *m, lmx_kv_cache **caches, int nc,
                               lmx_scratch **sp, const int32_t *tokens, int64_t T, bool all_logits, float *logits) {
    const lmx_hparams *hp = &m->hp;
    lmx_kv_cache *cache = caches[0];
    if (T <= 0) return lmx_err(LMX_ERR_INVALID_ARG, "forward: empty token list");
    for (int b = 0; b < nc; b++) {
        lmx_kv_cache *c = caches[b];
        if (c->n_layer != hp->n_layer || c->n_kv_head != hp->n_kv_head || c->head_dim != hp->head_dim)
            return lmx_err(LMX_ERR_SHAPE, "forward: the KV cache was made for another model (%d layers, %d kv heads, "
                           "head_dim %d)", c->n_layer, c->n_kv_head, c->head_dim);
    }
    LMX_TRY(scratch_reserve(sp, hp, T, ex->backend));
    lmx_scratch *s = *sp;
    int64_t D = hp->n_embd;
    bool host = lmx_backend_is_host(ex->backend);
    lmx_array ids = tv(&s->ids, 1, T, 0, 0);
    LMX_TRY(step_inputs(ex, hp, s, cache->offset + T, tokens, T));
    for (int b = 0; b < nc; b++) LMX_TRY(lmx_kv_begin(ex, caches[b], nc > 1 ? 1 : T));
    lmx_array x = tv(&s->x, 2, T, D, 0), h = tv(&s->h, 2, T, D, 0), o = tv(&s->o, 2, T, D, 0);
    lmx_array mo = tv(&s->mlp, 2, T, D, 0);
    const lmx_linear *E = &m->tok_embd;
    LMX_TRY(lmx_get_rows_q(ex, &x, &E->w, &ids, opt(&E->scales), opt(&E->biases), E->group_size));
    if (hp->embed_scale != 1.0f) LMX_TRY(lmx_scale(ex, &x, &x, hp->embed_scale));

    for (int li = 0; li < hp->n_layer; li++) {
        const lmx_layer *L = &m->layers[li];
        LMX_TRY(norm(ex, hp, &h, &x, &L->attn_norm, &L->attn_norm_b));
        LMX_TRY(attention_block(ex, hp, L, li, caches, nc, s, T, &h, &o));
        if (hp->sandwich_norm) LMX_TRY(norm(ex, hp, &o, &o, &L->post_attn_norm, NULL));
        if (hp->parallel_block) {
            LMX_TRY(mlp_dense(ex, hp, L, s, T, &h, &mo));
            LMX_TRY(lmx_add(ex, &x, &x, &o));
            LMX_TRY(lmx_add(ex, &x, &x, &mo));
            continue;
        }
        LMX_TRY(lmx_add(ex, &x, &x, &o));
        LMX_TRY(norm(ex, hp, &h, &x, &L->ffn_norm, &L->ffn_norm_b));
        if (hp->n_expert > 0)
            LMX_TRY(mlp_moe(ex, hp, L, s, T, &h, &mo));
        else
            LMX_TRY(mlp_dense(ex, hp, L, s, T, &h, &mo));
        if (hp->sandwich_norm) LMX_TRY(norm(ex, hp, &mo, &mo, &L->post_ffn_norm, NULL));
        LMX_TRY(lmx_add(ex, &x, &x, &mo));
    }
    for (int b = 0; b < nc; b++) LMX_TRY(lmx_kv_end(caches[b]));

    int64_t R = all_logits ? T : 1;
    lmx_array xl = tv(&s->x, 2, R, D, 0);
    xl.data = (float *)s->x.data + (T - R) * D;
    lmx_array hl = tv(&s->h, 2, R, D, 0);
    LMX_TRY(norm(ex, hp, &hl, &xl, &m->out_norm, &m->out_norm_b));
    if (!host && R > s->logits_rows) {
        lmx_array_release(&s->logits);
        LMX_TRY(alloc2_on(s->backend, &s->logits, LMX_F32, R, hp->n_vocab));
        s->logits_rows = R;
    }
    lmx_array lg = tv(&s->logits, 2, R, hp->n_vocab, 0);
    if (host) lg.data = logits; /* write straight into the caller's buffer */
    LMX_TRY(linear(ex, s, &lg, &hl, &m->lm_head)); /* tied: the (quantized) embedding */
    if (hp->final_softcap > 0) LMX_TRY(lmx_softcap(ex, &lg, &lg, hp->final_softcap));
    if (!host) LMX_TRY(lmx_backend_download(ex->backend, logits, lg.data, (size_t)(R * hp->n_vocab) * sizeof(float)));
    return LMX_OK;
}

lmx_status lmx_transformer_forward(lmx_exec *ex, const lmx_transformer *m, lmx_kv_cache *cache,
                                   lmx_scratch **sp, const int32_t *tokens, int64_t T, bool all_logits,
                                   float *logits) {
    return forward_core(ex, m, &cache, 1, sp, tokens, T, all_logits, logits);
}

lmx_status lmx_transformer_forward_batch(lmx_exec *ex, const lmx_transformer *m, lmx_kv_cache **caches, int B,
                                         lmx_scratch **sp, const int32_t *tokens, float *logits) {
    if (B <= 0) return lmx_err(LMX_ERR_INVALID_ARG, "forward: empty batch");
    if (B == 1) return forward_core(ex, m, caches, 1, sp, tokens, 1, false, logits);
    return forward_core(ex, m, caches, B, sp, tokens, B, true, logits);
}

void lmx_transformer_free(lmx_transformer *m) {
    if (!m) return;
    lmx_linear_release(&m->tok_embd);
    lmx_array_release(&m->out_norm);
    lmx_array_release(&m->out_norm_b);
    lmx_linear_release(&m->lm_head);
    if (m->layers) {
        for (int l = 0; l < m->hp.n_layer; l++) {
            lmx_layer *L = &m->layers[l];
            lmx_array *all[] = {&L->attn_norm, &L->attn_norm_b, &L->q_norm, &L->k_norm, &L->post_attn_norm,
                                &L->ffn_norm, &L->ffn_norm_b, &L->post_ffn_norm};
            for (size_t i = 0; i < sizeof all / sizeof *all; i++) lmx_array_release(all[i]);
            lmx_linear *lins[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down, &L->router};
            for (size_t i = 0; i < sizeof lins / sizeof *lins; i++) lmx_linear_release(lins[i]);
            for (int e = 0; e < m->hp.n_expert; e++) {
                if (L->exp_gate) lmx_linear_release(&L->exp_gate[e]);
                if (L->exp_up) lmx_linear_release(&L->exp_up[e]);
                if (L->exp_down) lmx_linear_release(&L->exp_down[e]);
            }
            free(L->exp_gate);
            free(L->exp_up);
            free(L->exp_down);
        }
        free(m->layers);
    }
    for (int i = 0; i < 2; i++) lmx_rope_free(&m->hp.rope[i]);
    memset(m, 0, sizeof *m);
}
