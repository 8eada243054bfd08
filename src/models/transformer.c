/* transformer.c - the shared forward pass and step scratch (the KV cache
 * it writes is kv_cache.c).
 *
 * Per layer (pre-norm):
 *   h = norm(x); q,k,v = h·Wqkv (+b); [qk-norm]; rope(q,k); cache ← k,v
 *   a = attention(q, cache) · Wo (+b); [post-attn norm]
 *   parallel (phi-2): x = x + a + mlp(h)
 *   else:             x = x + a; m = mlp(norm(x)); [post-ffn norm]; x = x + m
 * then final norm, lm_head (+b), [final soft-cap]. Activations are f32. */
#include "models/decode_graph.h"
#include "models/lora.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>

/* On a device backend (CUDA) the scratch, the KV cache and the weights live
 * in device memory: token ids and RoPE frequencies are uploaded once per
 * step, logits downloaded at the end, and MoE routing weights read back. */
struct lmx_scratch {
    int64_t cap, logits_rows;
    uint64_t gen;         /* unique per allocation: a captured decode graph holds its device addresses */
    lmx_backend *backend; /* where the arrays live (NULL: host) */
    /* Per step, per sequence span i and RoPE config c (index 2·i + c):
     * mscale, and the inverse frequencies in row 2·i + c of inv_freq. Only
     * span 0's are filled unless the frequencies depend on the sequence
     * length (dynamic NTK, longrope). ids: the step's token ids, then each
     * span's last row index. The *_host arrays stage uploads to a device. */
    float *mscale, *inv_host;
    int32_t *ids_host;
    lmx_array x, h, q, k, v, attn, o, mlp, gate, up, logits, ids, inv_freq, router, probs;
    lmx_array ex_in, ex_gate, ex_up, ex_act, ex_out;
    /* LoRA/DoRA, grown on demand in the backend's memory: x·aᵀ [T, r], its
     * ·bᵀ [T, out] and DoRA's per-row factor [out] (host only). */
    lmx_array lora_t, lora_u, lora_f;
};

void lmx_scratch_free(lmx_scratch *s) {
    if (!s) return;
    lmx_array *all[] = {&s->x, &s->h, &s->q, &s->k, &s->v, &s->attn, &s->o, &s->mlp, &s->gate, &s->up,
                        &s->logits, &s->ids, &s->inv_freq, &s->router, &s->probs, &s->ex_in,
                        &s->ex_gate, &s->ex_up, &s->ex_act, &s->ex_out, &s->lora_t, &s->lora_u, &s->lora_f};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) lmx_array_release(all[i]);
    free(s->mscale);
    free(s->inv_host);
    free(s->ids_host);
    free(s);
}

/* Scratch allocations so far: a decode graph (models/decode_graph.c) holds
 * the device addresses of one, so each gets a new generation number. */
static _Atomic uint64_t scratch_generations; /* models may be loaded and run from several threads */

static lmx_status alloc2_on(lmx_backend *b, lmx_array *a, lmx_dtype dt, int64_t r, int64_t c) {
    int64_t sh[2] = {r, c > 0 ? c : 1};
    return lmx_array_alloc_on(b, a, dt, 2, sh);
}

/* *dst = rows x cols f32 at element offset off of src's memory, not owning it. */
static void borrow_rows(lmx_array *dst, const lmx_array *src, int64_t off, int64_t rows, int64_t cols) {
    memset(dst, 0, sizeof *dst);
    dst->data = (float *)src->data + off;
    int64_t sh[2] = {rows, cols > 0 ? cols : 1};
    lmx_array_set_contiguous(dst, LMX_F32, 2, sh);
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
    s->gen = atomic_fetch_add(&scratch_generations, 1) + 1;
    s->backend = b;
#define alloc2(...) alloc2_on(b, __VA_ARGS__)
    if (!st) st = alloc2(&s->x, LMX_F32, T, D);
    if (!st) st = alloc2(&s->h, LMX_F32, T, D);
    if (!st) st = alloc2(&s->gate, LMX_F32, T, F);
    if (!st) st = alloc2(&s->up, LMX_F32, T, F);
    /* the MLP activation is written over its input (mlp_dense), no act array */
    /* On a device (issue 6: peak <= weights + KV cache + 10%, ~74 MB for a
     * 1B 4-bit model at 512 tokens) the attention and MLP outputs borrow h:
     * h is dead once the projections (resp. gate/up) have read it, and both
     * outputs are dead after their residual add, before the next norm
     * writes h. q|k|v borrow the MLP's gate rows (as a fused decode step's
     * q|k|v already do) and the attention output its up rows: the MLP
     * writes them after the output projection has read attn. Not when the
     * MLP reads h beside o (parallel blocks), nor for MoE (its experts read
     * h while adding into the output). */
    int64_t Nq = hp->n_head * hd, Nk = hp->n_kv_head * hd;
    bool borrow = b && !hp->parallel_block && hp->n_expert == 0;
    bool borrow_qkv = borrow && Nq + 2 * Nk <= F;
    if (!st && !borrow_qkv) st = alloc2(&s->q, LMX_F32, T, Nq);
    if (!st && !borrow_qkv) st = alloc2(&s->k, LMX_F32, T, Nk);
    if (!st && !borrow_qkv) st = alloc2(&s->v, LMX_F32, T, Nk);
    if (!st && !borrow_qkv) st = alloc2(&s->attn, LMX_F32, T, Nq);
    if (!st && !borrow) st = alloc2(&s->o, LMX_F32, T, D);
    if (!st && !borrow) st = alloc2(&s->mlp, LMX_F32, T, D);
    if (!st && borrow) { /* borrowed views: release leaves the owner alone */
        borrow_rows(&s->o, &s->h, 0, T, D);
        borrow_rows(&s->mlp, &s->h, 0, T, D);
    }
    if (!st && borrow_qkv) {
        borrow_rows(&s->q, &s->gate, 0, T, Nq);
        borrow_rows(&s->k, &s->gate, T * Nq, T, Nk);
        borrow_rows(&s->v, &s->gate, T * (Nq + Nk), T, Nk);
        borrow_rows(&s->attn, &s->up, 0, T, Nq);
    }
    s->logits_rows = 1; /* grown on demand: the host path writes the caller's buffer */
    if (!st) st = alloc2(&s->logits, LMX_F32, 1, hp->n_vocab);
    if (!st) st = alloc2(&s->ids, LMX_I32, 1, 2 * T);
    if (!st) st = alloc2(&s->inv_freq, LMX_F32, 2 * T, hd / 2);
    s->mscale = malloc((size_t)(2 * T) * sizeof *s->mscale);
    if (!st && !s->mscale) st = lmx_err(LMX_ERR_NOMEM, "out of memory");
    if (!st && b) {
        s->inv_host = malloc((size_t)(T * hd) * sizeof *s->inv_host);
        s->ids_host = malloc((size_t)(2 * T) * sizeof *s->ids_host);
        if (!s->inv_host || !s->ids_host) st = lmx_err(LMX_ERR_NOMEM, "out of memory");
    }
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

static bool fused(const lmx_exec *ex, lmx_op op);

/* x += d (d may be NULL: nothing to add), then out = norm(x): one fused op
 * for RMSNorm on device backends, else the plain add and norm. */
static lmx_status add_norm(lmx_exec *ex, const lmx_hparams *hp, lmx_array *out, lmx_array *x, const lmx_array *d,
                           const lmx_array *w, const lmx_array *b) {
    if (d && hp->norm != LMX_NORM_LAYER && fused(ex, LMX_OP_ADD_RMS_NORM))
        return lmx_add_rms_norm(ex, out, x, d, opt(w), hp->norm_eps, hp->norm_add_one);
    if (d) LMX_TRY(lmx_add(ex, x, x, d));
    return norm(ex, hp, out, x, w, b);
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
 * (lo->dora_f when the adapter was frozen at load, else computed on the host
 * here); the bias joins after the rescale, so the
 * base matmul runs without it. Generation applies no dropout. */
static bool on_device_mem(const lmx_array *a) { return a->buf && a->buf->kind == LMX_BUFFER_DEVICE; }

/* A scratch array of at least n floats in b's memory (contents not kept). */
static lmx_status grow_on(lmx_backend *b, lmx_array *a, int64_t n) {
    bool dev = !lmx_backend_is_host(b);
    if (lmx_array_numel(a) >= n && !lmx_array_empty(a) && on_device_mem(a) == dev &&
        (!dev || a->buf->dev_owner == b))
        return LMX_OK;
    lmx_array_release(a);
    int64_t sh[1] = {n};
    return lmx_array_alloc_on(b, a, LMX_F32, 1, sh);
}

static lmx_status linear_lora(lmx_exec *ex, lmx_scratch *s, lmx_array *out, const lmx_array *x,
                              const lmx_linear *l) {
    const lmx_lora *lo = l->lora;
    bool dora = !lmx_array_empty(&lo->m);
    if (!lmx_backend_is_host(ex->backend) &&
        (!on_device_mem(&lo->a) || !on_device_mem(&lo->b) || (dora && !on_device_mem(&lo->dora_f))))
        return lmx_err(LMX_ERR_UNSUPPORTED, "adapters on %s: the adapter arrays are not in device memory "
                                            "(lmx_adapters_to_backend)", ex->backend->name);
    int64_t T = lmx_array_numel(x) / x->shape[x->ndim - 1], N = l->w.shape[0], R = lo->a.shape[0];
    LMX_TRY(lmx_matmul_q(ex, out, x, &l->w, dora ? NULL : opt(&l->b), opt(&l->scales), opt(&l->biases),
                         l->group_size));
    LMX_TRY(grow_on(ex->backend, &s->lora_t, T * R));
    LMX_TRY(grow_on(ex->backend, &s->lora_u, T * N));
    lmx_array t = tv(&s->lora_t, 2, T, R, 0), u = tv(&s->lora_u, 2, T, N, 0);
    LMX_TRY(lmx_matmul(ex, &t, x, &lo->a, NULL));
    LMX_TRY(lmx_matmul(ex, &u, &t, &lo->b, NULL));
    LMX_TRY(lmx_scale(ex, &u, &u, lo->scale));
    LMX_TRY(lmx_add(ex, out, out, &u));
    if (!dora) return LMX_OK;
    if (!lmx_array_empty(&lo->dora_f)) {
        LMX_TRY(lmx_mul(ex, out, out, &lo->dora_f));
    } else {
        LMX_TRY(grow_host(&s->lora_f, N));
        lmx_array f = tv(&s->lora_f, 1, N, 0, 0);
        LMX_TRY(lmx_lora_dora_factor(l, lo, f.data));
        LMX_TRY(lmx_mul(ex, out, out, &f));
    }
    if (!lmx_array_empty(&l->b)) LMX_TRY(lmx_add(ex, out, out, &l->b));
    return LMX_OK;
}

/* out = x·Wᵀ (+ b), W in any storage format (float, GGUF, MLX packed),
 * plus the attached LoRA/DoRA adapter, if any. */
static lmx_status linear(lmx_exec *ex, lmx_scratch *s, lmx_array *out, const lmx_array *x, const lmx_linear *l) {
    if (l->lora) return linear_lora(ex, s, out, x, l);
    return lmx_matmul_q(ex, out, x, &l->w, opt(&l->b), opt(&l->scales), opt(&l->biases), l->group_size);
}

/* Whether the linears' rows lie back to back in one allocation, with their
 * scales, biases and bias likewise (transformer_device.c uploads q|k|v and
 * gate|up so): then *f, a borrowed linear over all their rows, computes
 * them in one matmul. Device decode steps only (T = 1), where it saves
 * launches; the per-row arithmetic of the GEMV kernels does not depend on
 * the row count, but a backend may split K differently for another N. */
static bool fused_rows(const lmx_linear *const *ls, int n, lmx_linear *f) {
    *f = *ls[0];
    f->lora = NULL;
    lmx_array *fc[4] = {&f->w, &f->b, &f->scales, &f->biases};
    for (int c = 0; c < 4; c++) {
        const lmx_array *a0 = c == 0 ? &ls[0]->w : c == 1 ? &ls[0]->b : c == 2 ? &ls[0]->scales : &ls[0]->biases;
        const uint8_t *end = NULL;
        for (int i = 0; i < n; i++) {
            const lmx_linear *l = ls[i];
            const lmx_array *a = c == 0 ? &l->w : c == 1 ? &l->b : c == 2 ? &l->scales : &l->biases;
            if (l->lora || l->group_size != ls[0]->group_size) return false;
            if (lmx_array_empty(a) != lmx_array_empty(a0)) return false;
            if (lmx_array_empty(a)) continue;
            if (a->buf != a0->buf || a->dtype != a0->dtype || a->ndim != a0->ndim || !lmx_array_is_contiguous(a) ||
                (a->ndim == 2 && a->shape[1] != a0->shape[1]) || (i > 0 && (const uint8_t *)a->data != end))
                return false;
            end = (const uint8_t *)a->data + lmx_array_nbytes(a);
            if (i > 0) fc[c]->shape[0] += a->shape[0];
        }
    }
    return !lmx_array_empty(&f->w);
}

static lmx_status mlp_dense(lmx_exec *ex, const lmx_hparams *hp, const lmx_layer *L, lmx_scratch *s,
                            int64_t T, const lmx_array *in, lmx_array *out) {
    int64_t F = hp->n_ff;
    /* The activation is written over its input (gate, or up when not
     * gated): the kernels are element-wise, and a [T, F] f32 buffer is 16 MB
     * at T = 512 for a 1B model (issues 5 and 6: peak memory bounds). */
    lmx_array up = tv(&s->up, 2, T, F, 0), gate = tv(&s->gate, 2, T, F, 0);
    lmx_array act = hp->mlp_gated ? gate : up;
    const lmx_linear *grp[2] = {&L->w_gate, &L->w_up};
    lmx_linear f;
    if (hp->mlp_gated && T == 1 && s->backend && lmx_array_numel(&s->gate) >= 2 * F && fused_rows(grp, 2, &f)) {
        lmx_array gu = tv(&s->gate, 2, 1, 2 * F, 0); /* one row: [gate | up] */
        LMX_TRY(linear(ex, s, &gu, in, &f));
        up.data = (float *)gate.data + F;
        LMX_TRY(lmx_act(ex, &act, &gate, &up, hp->act));
    } else if (hp->mlp_gated) {
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

/* Only dynamic NTK and longrope frequencies depend on the sequence length. */
static bool rope_per_length(const lmx_hparams *hp) {
    for (int i = 0; i < 2; i++)
        if (hp->rope[i].type == LMX_ROPE_DYNAMIC || hp->rope[i].type == LMX_ROPE_LONGROPE) return true;
    return false;
}

/* One step of n sequence spans (span b: lens[b] rows starting at row r0,
 * positions caches[b]->offset..): the token ids and each span's last row
 * index into s->ids, and the RoPE inverse frequencies and mscale of the
 * configs the layers use, for a step ending at offset + len - 1 — what a
 * single-sequence step over that span computes. Uploaded once per step. */
static lmx_status step_inputs(lmx_exec *ex, const lmx_hparams *hp, lmx_scratch *s, lmx_kv_cache **caches, int n,
                              const int64_t *lens, const int32_t *tokens, int64_t T) {
    bool host = lmx_backend_is_host(ex->backend);
    int64_t half = hp->head_dim / 2;
    bool used[2] = {false, false};
    for (int l = 0; l < hp->n_layer; l++) used[hp->rope_idx[l] & 1] = true;
    int nr = rope_per_length(hp) ? n : 1;
    float *inv = host ? (float *)s->inv_freq.data : s->inv_host;
    for (int i = 0; i < nr; i++)
        for (int c = 0; c < 2; c++)
            if (used[c])
                lmx_rope_inv_freq(&hp->rope[c], caches[i]->offset + lens[i], inv + (2 * i + c) * half,
                                  &s->mscale[2 * i + c]);
    int32_t *ids = host ? (int32_t *)s->ids.data : s->ids_host;
    memcpy(ids, tokens, (size_t)T * sizeof(int32_t));
    int64_t row = 0;
    for (int b = 0; b < n; b++) {
        row += lens[b];
        ids[T + b] = (int32_t)(row - 1);
    }
    if (host) return LMX_OK;
    LMX_TRY(lmx_backend_upload(ex->backend, s->inv_freq.data, inv, (size_t)(2 * nr * half) * sizeof(float)));
    return lmx_backend_upload(ex->backend, s->ids.data, ids, (size_t)(T + n) * sizeof(int32_t));
}

/* Whether to run a fused decode-step op (core/op.h) instead of its plain
 * sequence: on device backends that have it (one launch instead of two to
 * four), never while a tape records (no gradient). The CPU keeps the plain
 * ops (its fused kernels are that sequence anyway). LMX_FUSE=0: plain ops
 * everywhere (A/B timings). */
static bool fused(const lmx_exec *ex, lmx_op op) {
    static int off = -1;
    if (off < 0) {
        const char *e = getenv("LMX_FUSE");
        off = e && !strcmp(e, "0");
    }
    return !off && !ex->tape && !lmx_backend_is_host(ex->backend) && ex->backend->kernels[op];
}

/* Span b of the step (rows [r0, r0 + len) of q/k/v, already projected):
 * RoPE at positions c->offset.., the cache append, causal attention against
 * c into the same rows of s->attn. */
static lmx_status attention_span(lmx_exec *ex, const lmx_hparams *hp, int li, lmx_scratch *s, lmx_kv_cache *c,
                                 int b, int64_t r0, int64_t len, float *const qkv[3]) {
    int64_t H = hp->n_head, Hkv = hp->n_kv_head, hd = hp->head_dim;
    int ri = hp->rope_idx[li];
    const lmx_rope_cfg *r = &hp->rope[ri];
    int fr = rope_per_length(hp) ? 2 * b + ri : ri; /* row of inv_freq / mscale */
    lmx_array inv = tv(&s->inv_freq, 1, r->dims / 2, 0, 0);
    inv.data = (float *)s->inv_freq.data + fr * (hd / 2);
    lmx_array q3 = tv(&s->q, 3, len, H, hd), k3 = tv(&s->k, 3, len, Hkv, hd);
    lmx_array k2 = tv(&s->k, 2, len, Hkv * hd, 0), v2 = tv(&s->v, 2, len, Hkv * hd, 0);
    lmx_array attn = tv(&s->attn, 2, len, H * hd, 0);
    q3.data = qkv[0] + r0 * H * hd;
    k3.data = k2.data = qkv[1] + r0 * Hkv * hd;
    v2.data = qkv[2] + r0 * Hkv * hd;
    attn.data = (float *)s->attn.data + r0 * H * hd;
    lmx_array kv_k, kv_v;
    int64_t apos0;
    int window;
    if (fused(ex, LMX_OP_ROPE_KV) && c->kind == LMX_KV_STANDARD && !c->kv_bits) {
        /* one kernel: both RoPEs and the cache rows (the plain sequence below otherwise) */
        lmx_array dk, dv;
        LMX_TRY(lmx_kv_rows(c, li, &dk, &dv));
        LMX_TRY(lmx_rope_kv(ex, &q3, &k3, &v2, &inv, c->offset, r->dims, r->traditional, s->mscale[fr], &dk, &dv));
        LMX_TRY(lmx_kv_store(ex, c, li, NULL, NULL, hp->window[li], &kv_k, &kv_v, &apos0, &window));
    } else {
        LMX_TRY(lmx_rope(ex, &q3, &q3, &inv, c->offset, r->dims, r->traditional, s->mscale[fr]));
        LMX_TRY(lmx_rope(ex, &k3, &k3, &inv, c->offset, r->dims, r->traditional, s->mscale[fr]));
        LMX_TRY(lmx_kv_store(ex, c, li, &k2, &v2, hp->window[li], &kv_k, &kv_v, &apos0, &window));
    }
    return lmx_attention(ex, &attn, &q3, &kv_k, &kv_v, apos0, hp->attn_scale, hp->attn_softcap, window);
}

/* The projections run once over all T rows of the step; RoPE, the cache
 * write and attention per sequence span. */
static lmx_status attention_block(lmx_exec *ex, const lmx_hparams *hp, const lmx_layer *L, int li,
                                  lmx_kv_cache **caches, int n, const int64_t *lens, lmx_scratch *s, int64_t T,
                                  const lmx_array *h, lmx_array *out) {
    int64_t H = hp->n_head, Hkv = hp->n_kv_head, hd = hp->head_dim;
    lmx_array q = tv(&s->q, 2, T, H * hd, 0), k = tv(&s->k, 2, T, Hkv * hd, 0), v = tv(&s->v, 2, T, Hkv * hd, 0);
    const lmx_linear *grp[3] = {&L->wq, &L->wk, &L->wv};
    lmx_linear f;
    int64_t Nq = H * hd, Nk = Hkv * hd;
    if (T == 1 && s->backend && lmx_array_numel(&s->gate) >= Nq + 2 * Nk && fused_rows(grp, 3, &f)) {
        lmx_array qkv = tv(&s->gate, 2, 1, Nq + 2 * Nk, 0); /* the MLP's gate rows are free until the MLP */
        LMX_TRY(linear(ex, s, &qkv, h, &f));
        q.data = qkv.data;
        k.data = (float *)q.data + Nq;
        v.data = (float *)k.data + Nk;
    } else {
        LMX_TRY(linear(ex, s, &q, h, &L->wq));
        LMX_TRY(linear(ex, s, &k, h, &L->wk));
        LMX_TRY(linear(ex, s, &v, h, &L->wv));
    }
    float *const bases[3] = {q.data, k.data, v.data};
    if (hp->qk_norm) {
        lmx_array qh = tv(&q, 2, T * H, hd, 0), kh = tv(&k, 2, T * Hkv, hd, 0);
        LMX_TRY(lmx_rms_norm(ex, &qh, &qh, &L->q_norm, hp->norm_eps, hp->norm_add_one));
        LMX_TRY(lmx_rms_norm(ex, &kh, &kh, &L->k_norm, hp->norm_eps, hp->norm_add_one));
    }
    int64_t r0 = 0;
    for (int b = 0; b < n; b++) {
        LMX_TRY(attention_span(ex, hp, li, s, caches[b], b, r0, lens[b], bases));
        r0 += lens[b];
    }
    lmx_array attn = tv(&s->attn, 2, T, H * hd, 0);
    return linear(ex, s, out, &attn, &L->wo);
}

static lmx_status check_step(const lmx_hparams *hp, lmx_kv_cache **caches, int n, const int64_t *lens, int64_t *T) {
    if (n <= 0) return lmx_err(LMX_ERR_INVALID_ARG, "forward: empty batch");
    *T = 0;
    for (int b = 0; b < n; b++) {
        lmx_kv_cache *c = caches[b];
        if (lens[b] <= 0) return lmx_err(LMX_ERR_INVALID_ARG, "forward: sequence %d has no tokens", b);
        *T += lens[b];
        if (c->n_layer != hp->n_layer || c->n_kv_head != hp->n_kv_head || c->head_dim != hp->head_dim)
            return lmx_err(LMX_ERR_SHAPE, "forward: the KV cache was made for another model (%d layers, %d kv heads, "
                           "head_dim %d)", c->n_layer, c->n_kv_head, c->head_dim);
        /* two spans of one cache would both plan a step at the same offset */
        for (int j = 0; j < b; j++)
            if (caches[j] == c) return lmx_err(LMX_ERR_INVALID_ARG, "forward: sequences %d and %d share a cache", j, b);
    }
    if (*T > INT32_MAX) return lmx_err(LMX_ERR_INVALID_ARG, "forward: %lld tokens in one step", (long long)*T);
    return LMX_OK;
}

/* A step's host part before its kernels: checks, scratch, the uploaded
 * token ids and RoPE frequencies, the cache rows (kv_cache.c may grow). */
static lmx_status step_begin(lmx_exec *ex, const lmx_transformer *m, lmx_kv_cache **caches, int n,
                             const int64_t *lens, lmx_scratch **sp, const int32_t *tokens, int64_t *T) {
    const lmx_hparams *hp = &m->hp;
    LMX_TRY(check_step(hp, caches, n, lens, T));
    LMX_TRY(scratch_reserve(sp, hp, *T, ex->backend));
    LMX_TRY(step_inputs(ex, hp, *sp, caches, n, lens, tokens, *T));
    for (int b = 0; b < n; b++) LMX_TRY(lmx_kv_begin(ex, caches[b], lens[b]));
    return LMX_OK;
}

/* The step's kernels, embedding to lm_head (+ soft-cap), into *lg: the
 * scratch logits, or host_logits (the caller's buffer, host only). For a
 * dense model on a device nothing here waits for the device, so one decode
 * step can be captured as a graph (models/decode_graph.c). */
static lmx_status step_body(lmx_exec *ex, const lmx_transformer *m, lmx_kv_cache **caches, int n,
                            const int64_t *lens, lmx_scratch *s, int64_t T, bool all_logits, float *host_logits,
                            lmx_array *lg) {
    const lmx_hparams *hp = &m->hp;
    int64_t D = hp->n_embd;
    bool host = lmx_backend_is_host(ex->backend);
    lmx_array ids = tv(&s->ids, 1, T, 0, 0);
    lmx_array x = tv(&s->x, 2, T, D, 0), h = tv(&s->h, 2, T, D, 0), o = tv(&s->o, 2, T, D, 0);
    lmx_array mo = tv(&s->mlp, 2, T, D, 0);
    const lmx_linear *E = &m->tok_embd;
    LMX_TRY(lmx_get_rows_q(ex, &x, &E->w, &ids, opt(&E->scales), opt(&E->biases), E->group_size));
    if (hp->embed_scale != 1.0f) LMX_TRY(lmx_scale(ex, &x, &x, hp->embed_scale));

    /* pend: a residual not yet added into x; it joins the next norm of x
     * (one fused add + RMSNorm on device backends) or a plain add */
    const lmx_array *pend = NULL;
    for (int li = 0; li < hp->n_layer; li++) {
        const lmx_layer *L = &m->layers[li];
        LMX_TRY(add_norm(ex, hp, &h, &x, pend, &L->attn_norm, &L->attn_norm_b));
        pend = NULL;
        LMX_TRY(attention_block(ex, hp, L, li, caches, n, lens, s, T, &h, &o));
        if (hp->sandwich_norm) LMX_TRY(norm(ex, hp, &o, &o, &L->post_attn_norm, NULL));
        if (hp->parallel_block) {
            LMX_TRY(mlp_dense(ex, hp, L, s, T, &h, &mo));
            LMX_TRY(lmx_add(ex, &x, &x, &o));
            LMX_TRY(lmx_add(ex, &x, &x, &mo));
            continue;
        }
        LMX_TRY(add_norm(ex, hp, &h, &x, &o, &L->ffn_norm, &L->ffn_norm_b));
        if (hp->n_expert > 0)
            LMX_TRY(mlp_moe(ex, hp, L, s, T, &h, &mo));
        else
            LMX_TRY(mlp_dense(ex, hp, L, s, T, &h, &mo));
        if (hp->sandwich_norm) LMX_TRY(norm(ex, hp, &mo, &mo, &L->post_ffn_norm, NULL));
        pend = &mo;
    }

    /* The rows that get logits: all, one trailing row, or (several spans
     * longer than one token) each span's last row gathered into s->o. */
    int64_t R = all_logits || T == n ? T : n;
    lmx_array hl = tv(&s->h, 2, R, D, 0);
    bool fin = false; /* the final norm done (with the last residual) */
    if (pend && R == T) { /* the final norm reads every row of x: it takes the last residual */
        LMX_TRY(add_norm(ex, hp, &hl, &x, pend, &m->out_norm, &m->out_norm_b));
        fin = true;
    } else if (pend) {
        LMX_TRY(lmx_add(ex, &x, &x, pend));
    }
    lmx_array xl = tv(&s->x, 2, R, D, 0);
    if (R == 1) {
        xl.data = (float *)s->x.data + (T - 1) * D;
    } else if (R < T) {
        lmx_array last = tv(&s->ids, 1, n, 0, 0);
        last.data = (int32_t *)s->ids.data + T;
        xl = tv(&s->o, 2, n, D, 0);
        LMX_TRY(lmx_get_rows(ex, &xl, &x, &last));
    }
    if (!fin) LMX_TRY(norm(ex, hp, &hl, &xl, &m->out_norm, &m->out_norm_b));
    if ((!host || !host_logits) && R > s->logits_rows) {
        lmx_array_release(&s->logits);
        LMX_TRY(alloc2_on(s->backend, &s->logits, LMX_F32, R, hp->n_vocab));
        s->logits_rows = R;
        s->gen = atomic_fetch_add(&scratch_generations, 1) + 1; /* the logits moved */
    }
    *lg = tv(&s->logits, 2, R, hp->n_vocab, 0);
    if (host && host_logits) lg->data = host_logits; /* write straight into the caller's buffer */
    LMX_TRY(linear(ex, s, lg, &hl, &m->lm_head)); /* tied: the (quantized) embedding */
    if (hp->final_softcap > 0) LMX_TRY(lmx_softcap(ex, lg, lg, hp->final_softcap));
    return LMX_OK;
}

/* n sequence spans of lens[b] tokens each, concatenated in tokens; logits
 * of every row (all_logits) or of each span's last row. */
static lmx_status forward_core(lmx_exec *ex, const lmx_transformer *m, lmx_kv_cache **caches, int n,
                               const int64_t *lens, lmx_scratch **sp, const int32_t *tokens, bool all_logits,
                               float *logits) {
    int64_t T = 0;
    LMX_TRY(step_begin(ex, m, caches, n, lens, sp, tokens, &T));
    lmx_array lg;
    LMX_TRY(step_body(ex, m, caches, n, lens, *sp, T, all_logits, logits, &lg));
    for (int b = 0; b < n; b++) LMX_TRY(lmx_kv_end(caches[b]));
    /* logits == NULL: they stay in s->logits (lmx_scratch_logits), e.g. for a device sampler */
    if (!lmx_backend_is_host(ex->backend) && logits)
        LMX_TRY(lmx_backend_download(ex->backend, logits, lg.data, (size_t)lmx_array_numel(&lg) * sizeof(float)));
    return LMX_OK;
}

/* models/decode_graph.h: one token of one sequence, split around its kernels. */
lmx_status lmx_transformer_step_begin(lmx_exec *ex, const lmx_transformer *m, lmx_kv_cache *cache,
                                      lmx_scratch **sp, int32_t token) {
    int64_t one = 1, T;
    return step_begin(ex, m, &cache, 1, &one, sp, &token, &T);
}

lmx_status lmx_transformer_step_body(lmx_exec *ex, const lmx_transformer *m, lmx_kv_cache *cache,
                                     lmx_scratch *s, lmx_array *logits) {
    int64_t one = 1;
    return step_body(ex, m, &cache, 1, &one, s, 1, false, NULL, logits);
}

uint64_t lmx_scratch_generation(const lmx_scratch *s) { return s ? s->gen : 0; }

bool lmx_transformer_rope_per_length(const lmx_transformer *m) { return rope_per_length(&m->hp); }

lmx_status lmx_transformer_forward(lmx_exec *ex, const lmx_transformer *m, lmx_kv_cache *cache,
                                   lmx_scratch **sp, const int32_t *tokens, int64_t T, bool all_logits,
                                   float *logits) {
    if (T <= 0) return lmx_err(LMX_ERR_INVALID_ARG, "forward: empty token list");
    return forward_core(ex, m, &cache, 1, &T, sp, tokens, all_logits, logits);
}

lmx_status lmx_transformer_forward_batch(lmx_exec *ex, const lmx_transformer *m, lmx_kv_cache **caches, int B,
                                         lmx_scratch **sp, const int32_t *tokens, float *logits) {
    if (B <= 0) return lmx_err(LMX_ERR_INVALID_ARG, "forward: empty batch");
    int64_t *ones = malloc((size_t)B * sizeof *ones);
    if (!ones) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    for (int b = 0; b < B; b++) ones[b] = 1;
    lmx_status st = forward_core(ex, m, caches, B, ones, sp, tokens, true, logits);
    free(ones);
    return st;
}

lmx_status lmx_transformer_forward_varlen(lmx_exec *ex, const lmx_transformer *m, lmx_kv_cache **caches, int n,
                                          const int64_t *lens, lmx_scratch **sp, const int32_t *tokens,
                                          bool all_logits, float *logits) {
    return forward_core(ex, m, caches, n, lens, sp, tokens, all_logits, logits);
}

lmx_status lmx_scratch_logits(const lmx_scratch *s, int64_t rows, lmx_array *out) {
    memset(out, 0, sizeof *out);
    if (!s || rows < 1 || rows > s->logits_rows || lmx_array_empty(&s->logits))
        return lmx_err(LMX_ERR_INVALID_ARG, "scratch logits: %lld rows requested, %lld held", (long long)rows,
                       s ? (long long)s->logits_rows : 0LL);
    *out = tv(&s->logits, 2, rows, s->logits.shape[1], 0);
    return LMX_OK;
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
