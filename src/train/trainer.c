/* trainer.c - one fine-tuning run (train/trainer.h): mlx-lm's default_loss
 * over a recorded forward, backward on the tape, gradient accumulation and
 * the optimizer update; with grad_checkpoint, blocks are recomputed on a
 * sub-tape during backward (docs/AUTOGRAD.md, "Gradient checkpointing").
 *
 * mlx-lm's trainer (tuner/trainer.py) sums the gradients of the per-batch
 * mean losses over grad_accumulation_steps iterations and divides the sum by
 * grad_accumulation_steps before optimizer.update: micro-batches are averaged
 * with equal weight, not weighted by their token counts. */
#include "train/trainer.h"
#include "train/train_internal.h"

#include <stdlib.h>

struct lmx_trainer {
    lmx_backend *backend;
    lmx_tape *tape; /* the step's graph (the head only, with checkpointing) */
    lmx_tape *sub;  /* checkpointing: one block re-run at a time */
    lmx_train_model tm;
    lmx_adapters *ad;
    lmx_train_options o;
    lmx_optim *opt;
    lmx_array **params; /* the trainable arrays (lmx_train_params order) */
    int np;
    float **acc;        /* summed gradients per parameter (NULL until one arrives) */
    int64_t micro;      /* micro-batches run (the dropout stream) */
    int peak_nodes;     /* most nodes held on the tapes at once (a measure of activation memory) */
};

void lmx_train_options_init(lmx_train_options *o) {
    memset(o, 0, sizeof *o);
    lmx_optim_config_init(&o->optim, LMX_OPT_ADAM);
    o->learning_rate = 1e-5f;
    o->schedule.kind = LMX_SCHED_CONSTANT;
    o->grad_accumulation_steps = 1;
}

void lmx_trainer_free(lmx_trainer *t) {
    if (!t) return;
    lmx_tape_free(t->tape);
    lmx_tape_free(t->sub);
    lmx_optim_free(t->opt);
    for (int i = 0; t->acc && i < t->np; i++) free(t->acc[i]);
    free(t->acc);
    free(t->params);
    free(t);
}

lmx_status lmx_trainer_create(lmx_exec *ex, lmx_transformer *m, lmx_adapters *ad, const lmx_train_options *o,
                              lmx_trainer **out) {
    *out = NULL;
    if (!lmx_backend_is_host(ex->backend))
        return lmx_err(LMX_ERR_UNSUPPORTED, "train: training runs on the CPU only (use --device cpu)");
    if (o->grad_accumulation_steps < 1)
        return lmx_err(LMX_ERR_INVALID_ARG, "train: grad_accumulation_steps must be at least 1");
    lmx_trainer *t = calloc(1, sizeof *t);
    if (!t) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    t->backend = ex->backend;
    t->ad = ad;
    t->o = *o;
    for (int i = 0; ad && i < ad->n; i++) /* trained adapters change every step: no frozen DoRA factors */
        for (int v = 0; v < 4; v++) {
            lmx_array_release(&ad->e[i].lora.dora_f);
            lmx_array_release(&ad->e[i].views[v].dora_f);
        }
    lmx_status st = lmx_train_model_init(&t->tm, m, ad);
    if (!st) st = lmx_tape_create(&t->tape);
    if (!st) st = lmx_tape_create(&t->sub);
    if (!st) st = lmx_train_freeze(t->tape, &t->tm);
    if (!st) st = lmx_train_freeze(t->sub, &t->tm);
    if (!st) st = lmx_optim_create(&o->optim, &t->opt);
    if (!st) st = lmx_train_params(ad, &t->params, &t->np);
    if (!st && !(t->acc = calloc((size_t)(t->np ? t->np : 1), sizeof *t->acc)))
        st = lmx_err(LMX_ERR_NOMEM, "out of memory");
    if (!st && t->np == 0) st = lmx_err(LMX_ERR_INVALID_ARG, "train: the adapter set has no trainable parameters");
    for (int i = 0; !st && i < t->np; i++)
        if (t->params[i]->buf && t->params[i]->buf->kind == LMX_BUFFER_MAP)
            st = lmx_err(LMX_ERR_INVALID_ARG, "train: trainable array %d is a read-only file mapping", i);
    if (st) {
        lmx_trainer_free(t);
        return st;
    }
    *out = t;
    return LMX_OK;
}

/* acc[i] += the tape's gradient of parameter i. */
static lmx_status collect(lmx_trainer *t, lmx_tape *tape) {
    for (int i = 0; i < t->np; i++) {
        const lmx_array *g = lmx_tape_grad(tape, t->params[i]);
        if (!g) continue;
        int64_t n = lmx_array_numel(t->params[i]);
        if (!t->acc[i] && !(t->acc[i] = calloc((size_t)n, sizeof(float))))
            return lmx_err(LMX_ERR_NOMEM, "out of memory");
        const float *s = g->data;
        float *d = t->acc[i];
        for (int64_t j = 0; j < n; j++) d[j] += s[j];
    }
    return LMX_OK;
}

/* The whole graph on one tape. */
static lmx_status step_plain(lmx_trainer *t, const lmx_train_batch *b, double *loss) {
    lmx_exec ex = {t->backend, t->tape};
    lmx_array logits = {0}, l = {0};
    lmx_status st = lmx_train_forward(&ex, b, &logits);
    if (!st) st = lmx_train_loss(&ex, b, &logits, &l);
    if (!st) *loss = *(const float *)l.data;
    if (lmx_tape_size(t->tape) > t->peak_nodes) t->peak_nodes = lmx_tape_size(t->tape);
    if (!st) st = lmx_tape_backward(t->tape, &l, NULL);
    if (!st) st = collect(t, t->tape);
    lmx_array_release(&logits);
    lmx_array_release(&l);
    lmx_tape_reset(t->tape);
    return st;
}

/* Gradient checkpointing: the blocks run unrecorded, keeping only each
 * trainable block's input; the head and loss are recorded; then, from the
 * last block down, each block is re-run on the sub-tape from its saved
 * input and back-propagated with the gradient of its output as the seed
 * (dropout masks and DoRA norms are functions of the batch, so the re-run
 * computes the same values). Peak memory: one block's graph plus the saved
 * inputs ([B·Ti, D] per block). */
static lmx_status step_checkpointed(lmx_trainer *t, const lmx_train_batch *b, double *loss) {
    int L = t->tm.m->hp.n_layer, first = t->tm.first_layer;
    lmx_exec ex0 = {t->backend, NULL}, ext = {t->backend, t->tape}, exs = {t->backend, t->sub};
    lmx_array *xs = calloc((size_t)L + 1, sizeof *xs);
    if (!xs) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    lmx_array x = {0}, logits = {0}, l = {0}, dx = {0}, y = {0};
    lmx_status st = lmx_train_embed(&ex0, b, &x);
    for (int li = 0; li < L && !st; li++) {
        if (li >= first) {
            xs[li] = x;
            lmx_array_retain(&xs[li]);
        }
        st = lmx_train_block(&ex0, b, li, &x, &y);
        lmx_array_release(&x);
        x = y;
        memset(&y, 0, sizeof y);
    }
    if (!st) st = lmx_train_head(&ext, b, &x, &logits);
    if (!st) st = lmx_train_loss(&ext, b, &logits, &l);
    if (!st) *loss = *(const float *)l.data;
    if (lmx_tape_size(t->tape) > t->peak_nodes) t->peak_nodes = lmx_tape_size(t->tape);
    if (!st) st = lmx_tape_backward(t->tape, &l, NULL);
    if (!st) st = collect(t, t->tape);
    /* dx = d loss / d x_L (zeros when no gradient reaches it) */
    if (!st) st = lmx_array_alloc(&dx, LMX_F32, x.ndim, x.shape);
    if (!st && first < L) {
        const lmx_array *g = lmx_tape_grad(t->tape, &x);
        if (g) memcpy(dx.data, g->data, lmx_array_nbytes(&dx));
    }
    lmx_tape_reset(t->tape);
    for (int li = L - 1; li >= first && !st; li--) {
        st = lmx_train_block(&exs, b, li, &xs[li], &y);
        if (lmx_tape_size(t->sub) > t->peak_nodes) t->peak_nodes = lmx_tape_size(t->sub);
        if (!st) st = lmx_tape_backward(t->sub, &y, &dx);
        if (!st) st = collect(t, t->sub);
        if (!st && li > first) {
            const lmx_array *g = lmx_tape_grad(t->sub, &xs[li]);
            if (g)
                memcpy(dx.data, g->data, lmx_array_nbytes(&dx));
            else
                memset(dx.data, 0, lmx_array_nbytes(&dx));
        }
        lmx_array_release(&y);
        lmx_tape_reset(t->sub);
    }
    for (int li = 0; li <= L; li++) lmx_array_release(&xs[li]);
    free(xs);
    lmx_array_release(&x);
    lmx_array_release(&logits);
    lmx_array_release(&l);
    lmx_array_release(&dx);
    lmx_tape_reset(t->tape);
    return st;
}

lmx_status lmx_trainer_accumulate(lmx_trainer *t, const int32_t *tokens, int B, int T, const int32_t *offsets,
                                  const int32_t *lengths, double *loss, int64_t *ntoks) {
    lmx_train_batch b;
    LMX_TRY(lmx_train_batch_init(&b, &t->tm, tokens, B, T, offsets, lengths));
    lmx_dora_cache dc = {0};
    b.dropout = true;
    /* one mask stream per micro-batch, reproducible from the seed */
    b.dropout_key = t->o.seed * 0x9E3779B97F4A7C15ull + (uint64_t)t->micro++;
    b.dora = &dc;
    double l = 0;
    lmx_status st = t->o.grad_checkpoint ? step_checkpointed(t, &b, &l) : step_plain(t, &b, &l);
    if (!st && loss) *loss = l;
    if (!st && ntoks) *ntoks = b.ntoks;
    lmx_dora_cache_clear(&dc);
    lmx_train_batch_free(&b);
    return st;
}

lmx_status lmx_trainer_update(lmx_trainer *t, double *lr) {
    lmx_array *g = calloc((size_t)t->np, sizeof *g);
    const lmx_array **gp = calloc((size_t)t->np, sizeof *gp);
    lmx_status st = g && gp ? LMX_OK : lmx_err(LMX_ERR_NOMEM, "out of memory");
    float steps = (float)t->o.grad_accumulation_steps;
    for (int i = 0; i < t->np && !st; i++) {
        if (!t->acc[i]) continue; /* no gradient reached it: zeros, as MLX's tree holds */
        int64_t n = lmx_array_numel(t->params[i]);
        if (t->o.grad_accumulation_steps > 1)
            for (int64_t j = 0; j < n; j++) t->acc[i][j] /= steps; /* mlx-lm: x / grad_accum_steps */
        g[i] = *t->params[i];
        g[i].buf = NULL; /* borrowed: the accumulator's memory, the parameter's shape */
        g[i].data = t->acc[i];
        gp[i] = &g[i];
    }
    double rate = lmx_schedule_lr(&t->o.schedule, t->o.learning_rate, lmx_optim_step(t->opt));
    if (!st) st = lmx_optim_update(t->opt, t->np, t->params, gp, (float)rate);
    for (int i = 0; i < t->np; i++) {
        free(t->acc[i]);
        t->acc[i] = NULL;
    }
    free(g);
    free(gp);
    if (!st && lr) *lr = rate;
    return st;
}

lmx_status lmx_trainer_eval(lmx_trainer *t, const int32_t *tokens, int B, int T, const int32_t *offsets,
                            const int32_t *lengths, double *loss_sum, int64_t *ntoks) {
    lmx_train_batch b;
    LMX_TRY(lmx_train_batch_init(&b, &t->tm, tokens, B, T, offsets, lengths));
    lmx_dora_cache dc = {0};
    b.dora = &dc;
    lmx_exec ex = {t->backend, NULL};
    lmx_array logits = {0}, l = {0};
    lmx_status st = lmx_train_forward(&ex, &b, &logits);
    if (!st) st = lmx_train_loss(&ex, &b, &logits, &l);
    /* mlx-lm's evaluate(): all_losses += losses * toks (the f32 batch mean) */
    if (!st && loss_sum) *loss_sum = (double)*(const float *)l.data * (double)b.ntoks;
    if (!st && ntoks) *ntoks = b.ntoks;
    lmx_array_release(&logits);
    lmx_array_release(&l);
    lmx_dora_cache_clear(&dc);
    lmx_train_batch_free(&b);
    return st;
}

int64_t lmx_trainer_step(const lmx_trainer *t) { return lmx_optim_step(t->opt); }

int lmx_trainer_n_params(const lmx_trainer *t) { return t->np; }
lmx_array *lmx_trainer_param(const lmx_trainer *t, int i) { return i >= 0 && i < t->np ? t->params[i] : NULL; }
const float *lmx_trainer_grad_sum(const lmx_trainer *t, int i) { return i >= 0 && i < t->np ? t->acc[i] : NULL; }
int lmx_trainer_peak_nodes(const lmx_trainer *t) { return t->peak_nodes; }

/* mlx-lm's get_total_parameters: every leaf module's parameters, a
 * quantized weight counted unpacked (its scales/biases not at all), the
 * adapters' own arrays not at all (LoRALinear is not a leaf module), a
 * tied lm_head once. */
static int64_t linear_params(const lmx_linear *l) {
    return (lmx_array_empty(&l->w) ? 0 : lmx_array_numel(&l->w)) + (lmx_array_empty(&l->b) ? 0 : lmx_array_numel(&l->b));
}

static int64_t opt_numel(const lmx_array *a) { return lmx_array_empty(a) ? 0 : lmx_array_numel(a); }

void lmx_trainer_param_counts(const lmx_trainer *t, int64_t *trainable, int64_t *total) {
    const lmx_transformer *m = t->tm.m;
    int64_t n = linear_params(&m->tok_embd) + opt_numel(&m->out_norm) + opt_numel(&m->out_norm_b);
    if (m->lm_head.w.data != m->tok_embd.w.data) n += linear_params(&m->lm_head);
    for (int li = 0; li < m->hp.n_layer; li++) {
        const lmx_layer *L = &m->layers[li];
        const lmx_array *arr[] = {&L->attn_norm, &L->attn_norm_b, &L->q_norm, &L->k_norm, &L->post_attn_norm,
                                  &L->ffn_norm, &L->ffn_norm_b, &L->post_ffn_norm};
        for (size_t i = 0; i < sizeof arr / sizeof *arr; i++) n += opt_numel(arr[i]);
        const lmx_linear *lin[] = {&L->wq, &L->wk, &L->wv, &L->wo, &L->w_gate, &L->w_up, &L->w_down, &L->router};
        for (size_t i = 0; i < sizeof lin / sizeof *lin; i++) n += linear_params(lin[i]);
        for (int e = 0; e < m->hp.n_expert; e++) {
            if (L->exp_gate) n += linear_params(&L->exp_gate[e]);
            if (L->exp_up) n += linear_params(&L->exp_up[e]);
            if (L->exp_down) n += linear_params(&L->exp_down[e]);
        }
    }
    int64_t tr = 0;
    for (int i = 0; i < t->np; i++) tr += lmx_array_numel(t->params[i]);
    if (trainable) *trainable = tr;
    if (total) *total = n;
}
