/* trainer.c - one fine-tuning run (train/trainer.h): mlx-lm's default_loss
 * over a recorded forward, backward on the tape, gradient accumulation and
 * the optimizer update; with grad_checkpoint, blocks are recomputed on a
 * sub-tape during backward (docs/AUTOGRAD.md, "Gradient checkpointing").
 *
 * mlx-lm's trainer (tuner/trainer.py) sums the gradients of the per-batch
 * mean losses over grad_accumulation_steps iterations and divides the sum by
 * grad_accumulation_steps before optimizer.update: micro-batches are averaged
 * with equal weight, not weighted by their token counts.
 *
 * On a device backend (CUDA) the forward, the tape and the vjps run in
 * device memory. The trainer keeps device mirrors of the adapter set's
 * LoRA arrays, views into one flat f32 array, that the model's linears
 * point at while it runs a batch (so several trainers may share one
 * adapter set). When the backend has an update kernel (optim_step) the
 * gradients are summed into a flat device accumulator and the optimizer
 * updates the mirrors in place in one launch: nothing crosses to the host
 * per step, and the adapter set's host arrays are brought up to date by
 * lmx_trainer_sync (before saving; also at free). Otherwise (or with
 * LMX_TRAIN_HOST_OPTIM=1) each gradient is downloaded and summed on the
 * host, the host optimizer updates and the new values are uploaded. */
#include "train/trainer.h"
#include "train/train_internal.h"
#include "core/optim_step.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    /* device backend only: mirrors of the adapters' LoRA arrays */
    bool device;
    lmx_lora *dev;        /* [ad->n]: a and b in device memory */
    lmx_lora (*dev_views)[4]; /* [ad->n]: fused rows' views of dev */
    const lmx_lora *(*saved)[4]; /* [ad->n]: targets[k]->lora of the adapter set (host) */
    const lmx_lora *(*use)[4];   /* [ad->n]: the mirror targets[k] points at during a batch */
    /* full fine-tuning: [ad->n][2]: the weight and bias mirrors; [ad->n][8]:
     * per model slot (targets' w, b, or a norm's weight, bias), the view of
     * the mirror bound during a batch and the model's array it replaces */
    lmx_array (*full)[2];
    lmx_array (*full_view)[8];
    lmx_array (*full_saved)[8];
    lmx_array **gparams;  /* what the tape is asked for: params[i] or its mirror */
    float *tmp;           /* host copy of one downloaded gradient */
    int64_t *off;         /* [np]: element offset of parameter i in the flat arrays */
    int64_t total;        /* elements of each flat array (offsets aligned to 64) */
    lmx_array flat[4];    /* device: P (the mirrors' memory), G (summed gradients), M, V */
    bool dev_opt;         /* the optimizer runs on the device (backend optim_step) */
    bool *have;           /* dev_opt: a gradient reached parameter i since the update */
    bool host_stale;      /* dev_opt: the adapter set's host arrays lag P */
    /* LMX_TRAIN_PROFILE=1: seconds per phase (forward+loss, backward, gradient
     * collection, checkpointed step, update), the backend synchronised at
     * each boundary; printed to stderr by lmx_trainer_free. On a device also
     * the host's time to issue the forward and the backward (before the
     * synchronisation): near the phase's time, the host is the bottleneck */
    bool prof;
    double pt[7];
    int64_t pn[7];
};

static double stamp(lmx_trainer *t) {
    if (!t->prof) return 0;
    (void)lmx_backend_sync(t->backend);
    return lmx_time_s();
}

static void prof_add(lmx_trainer *t, int k, double t0, double t1) {
    t->pt[k] += t1 - t0;
    t->pn[k]++;
}

/* ---- device mirrors ------------------------------------------------------ */

static void dev_release(lmx_trainer *t) {
    for (int i = 0; t->ad && i < t->ad->n; i++) {
        for (int k = 0; t->dev_views && k < 4; k++) lmx_lora_release(&t->dev_views[i][k]);
        if (t->dev) lmx_lora_release(&t->dev[i]);
        for (int k = 0; t->full && k < 2; k++) lmx_array_release(&t->full[i][k]);
        for (int k = 0; t->full_view && k < 8; k++) lmx_array_release(&t->full_view[i][k]);
    }
    free(t->full);
    free(t->full_view);
    free(t->full_saved);
    t->full = NULL;
    t->full_view = NULL;
    t->full_saved = NULL;
    free(t->dev);
    free(t->dev_views);
    free(t->saved);
    free(t->use);
    free(t->gparams);
    free(t->tmp);
    free(t->off);
    free(t->have);
    for (int k = 0; k < 4; k++) lmx_array_release(&t->flat[k]);
    t->off = NULL;
    t->have = NULL;
    t->dev = NULL;
    t->dev_views = NULL;
    t->saved = NULL;
    t->use = NULL;
    t->gparams = NULL;
    t->tmp = NULL;
}

/* dst = a view of P at parameter k's offset with src's shape, holding a
 * copy of host array src (nothing when src is empty). */
static lmx_status up_copy(lmx_trainer *t, int k, lmx_array *dst, const lmx_array *src) {
    if (lmx_array_empty(src)) return LMX_OK;
    if (k >= t->np) return lmx_err(LMX_ERR_INTERNAL, "train: more device mirrors than parameters");
    LMX_TRY(lmx_array_view(dst, &t->flat[0], t->off[k], src->ndim, src->shape));
    return lmx_backend_upload(t->backend, dst->data, src->data, lmx_array_nbytes(src));
}

/* The model array of full fine-tuning slot s (0..7) of entry e, the
 * mirror it takes a view of (0 weight, 1 bias) and that view's first row;
 * NULL for a slot the entry does not have. */
static lmx_array *full_slot(lmx_adapter_entry *e, int s, int *which, int64_t *r0) {
    *which = s & 1;
    *r0 = 0;
    if (e->param) {
        if (s > 1) return NULL;
        return s ? e->param_bias : e->param;
    }
    if (s / 2 >= e->n_targets) return NULL;
    *r0 = e->rows[s / 2];
    return s & 1 ? &e->targets[s / 2]->b : &e->targets[s / 2]->w;
}

/* Full fine-tuning: mirrors of the trainable copies (parameters k, k+1)
 * and the views of them that dev_bind swaps into the model's slots (as
 * lmx_adapters_attach swaps in views of the host copies). */
static lmx_status dev_setup_full(lmx_trainer *t, int i, int *k) {
    lmx_adapter_entry *e = &t->ad->e[i];
    lmx_array *src[2] = {&e->full, &e->full_bias};
    for (int c = 0; c < 2; c++) {
        if (lmx_array_empty(src[c])) continue;
        LMX_TRY(up_copy(t, *k, &t->full[i][c], src[c]));
        t->gparams[(*k)++] = &t->full[i][c];
    }
    for (int s = 0; s < 8; s++) {
        int which;
        int64_t r0;
        lmx_array *slot = full_slot(e, s, &which, &r0);
        const lmx_array *m = &t->full[i][which];
        if (!slot || lmx_array_empty(slot) || lmx_array_empty(m)) continue;
        int64_t row_elems = m->ndim == 2 ? m->shape[1] : 1;
        LMX_TRY(lmx_array_view(&t->full_view[i][s], m, r0 * row_elems, slot->ndim, slot->shape));
    }
    return LMX_OK;
}

/* Makes the device mirrors (dev_bind points the model's linears at them):
 * LoRA's a and b, DoRA's m, full fine-tuning's weight and bias copies. */
static lmx_status dev_setup(lmx_trainer *t) {
    lmx_backend *b = t->backend;
    lmx_adapters *ad = t->ad;
    if (!b->vjps)
        return lmx_err(LMX_ERR_UNSUPPORTED, "train: the %s backend has no vjp kernels (use --device cpu)", b->name);
    int n = ad ? ad->n : 0;
    t->dev = calloc((size_t)(n ? n : 1), sizeof *t->dev);
    t->dev_views = calloc((size_t)(n ? n : 1), sizeof *t->dev_views);
    t->saved = calloc((size_t)(n ? n : 1), sizeof *t->saved);
    t->use = calloc((size_t)(n ? n : 1), sizeof *t->use);
    t->gparams = calloc((size_t)(t->np ? t->np : 1), sizeof *t->gparams);
    t->off = calloc((size_t)(t->np ? t->np : 1), sizeof *t->off);
    t->have = calloc((size_t)(t->np ? t->np : 1), sizeof *t->have);
    t->full = calloc((size_t)(n ? n : 1), sizeof *t->full);
    t->full_view = calloc((size_t)(n ? n : 1), sizeof *t->full_view);
    t->full_saved = calloc((size_t)(n ? n : 1), sizeof *t->full_saved);
    if (!t->dev || !t->dev_views || !t->saved || !t->use || !t->gparams || !t->off || !t->have || !t->full ||
        !t->full_view || !t->full_saved)
        return lmx_err(LMX_ERR_NOMEM, "out of memory");
    /* one flat array for all mirrors (lmx_train_params order), each
     * parameter at a 64-element boundary, and as many for the summed
     * gradients and the optimizer's moments when it runs on the device */
    int64_t total = 0;
    for (int i = 0; i < t->np; i++) {
        t->off[i] = total;
        total += (lmx_array_numel(t->params[i]) + 63) / 64 * 64;
    }
    t->total = total ? total : 64;
    const char *ho = getenv("LMX_TRAIN_HOST_OPTIM");
    t->dev_opt = b->optim_step && !(ho && *ho && strcmp(ho, "0"));
    for (int f = 0; f < (t->dev_opt ? 4 : 1); f++) {
        if (f == 2 && t->o.optim.kind == LMX_OPT_SGD) break; /* SGD's velocity: V only */
        LMX_TRY(lmx_array_alloc_on(b, &t->flat[f], LMX_F32, 1, &t->total));
    }
    if (t->dev_opt && t->o.optim.kind == LMX_OPT_SGD && t->o.optim.momentum > 0)
        LMX_TRY(lmx_array_alloc_on(b, &t->flat[3], LMX_F32, 1, &t->total));
    int64_t most = 1;
    int k = 0;
    for (int i = 0; i < n; i++) {
        lmx_adapter_entry *e = &ad->e[i];
        if (!lmx_array_empty(&e->full) || !lmx_array_empty(&e->full_bias)) {
            int k0 = k;
            LMX_TRY(dev_setup_full(t, i, &k));
            for (int j = k0; j < k; j++)
                if (lmx_array_numel(t->gparams[j]) > most) most = lmx_array_numel(t->gparams[j]);
            continue;
        }
        lmx_lora *d = &t->dev[i];
        bool dora = !lmx_array_empty(&e->lora.m);
        LMX_TRY(up_copy(t, k, &d->a, &e->lora.a));
        LMX_TRY(up_copy(t, k + !lmx_array_empty(&d->a), &d->b, &e->lora.b));
        LMX_TRY(up_copy(t, k + !lmx_array_empty(&d->a) + !lmx_array_empty(&d->b), &d->m, &e->lora.m));
        d->scale = e->lora.scale;
        d->dropout = e->lora.dropout;
        /* lmx_train_params order: a, b, m per entry */
        lmx_array *mine[3] = {&d->a, &d->b, &d->m};
        for (int c = 0; c < 3; c++) {
            if (lmx_array_empty(mine[c])) continue;
            t->gparams[k++] = mine[c];
            if (lmx_array_numel(mine[c]) > most) most = lmx_array_numel(mine[c]);
        }
        for (int j = 0; j < e->n_targets && j < 4; j++) {
            const lmx_lora *target = e->targets[j]->lora, *use = d;
            if (target && target != &e->lora) { /* fused rows: shared a, rows of b */
                lmx_lora *v = &t->dev_views[i][j];
                *v = *d;
                memset(&v->a, 0, sizeof v->a);
                memset(&v->b, 0, sizeof v->b);
                memset(&v->m, 0, sizeof v->m);
                memset(&v->dora_f, 0, sizeof v->dora_f);
                v->a = d->a;
                lmx_array_retain(&v->a);
                LMX_TRY(lmx_array_rows(&v->b, &d->b, e->rows[j], target->b.shape[0]));
                if (dora) LMX_TRY(lmx_array_rows(&v->m, &d->m, e->rows[j], target->b.shape[0]));
                use = v;
            }
            t->saved[i][j] = target;
            t->use[i][j] = use;
        }
    }
    if (k != t->np) return lmx_err(LMX_ERR_INTERNAL, "train: %d device mirrors for %d parameters", k, t->np);
    if (!(t->tmp = malloc((size_t)most * sizeof *t->tmp))) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    return lmx_backend_sync(b);
}

/* Points the model's adapted linears at the mirrors (on) or back at the
 * adapter set's host arrays (off), around each batch. */
static void dev_bind(lmx_trainer *t, bool on) {
    if (!t->device) return;
    for (int i = 0; i < t->ad->n; i++) {
        lmx_adapter_entry *e = &t->ad->e[i];
        for (int s = 0; s < 8; s++) { /* full fine-tuning: the mirrors' views in, the host views out */
            int which;
            int64_t r0;
            lmx_array *slot = full_slot(e, s, &which, &r0);
            if (!slot || lmx_array_empty(&t->full_view[i][s])) continue;
            if (on) {
                t->full_saved[i][s] = *slot;
                *slot = t->full_view[i][s];
            } else {
                *slot = t->full_saved[i][s];
            }
        }
        for (int j = 0; j < e->n_targets && j < 4; j++) e->targets[j]->lora = on ? t->use[i][j] : t->saved[i][j];
    }
}

lmx_status lmx_trainer_sync(lmx_trainer *t) {
    if (!t->host_stale) return LMX_OK;
    for (int i = 0; i < t->np; i++)
        LMX_TRY(lmx_backend_download(t->backend, t->params[i]->data, (float *)t->flat[0].data + t->off[i],
                                     lmx_array_nbytes(t->params[i])));
    t->host_stale = false;
    return LMX_OK;
}

/* Uploads the host parameters to their mirrors (after a host update). */
static lmx_status dev_push(lmx_trainer *t) {
    for (int i = 0; i < t->np; i++)
        LMX_TRY(lmx_backend_upload(t->backend, t->gparams[i]->data, t->params[i]->data, lmx_array_nbytes(t->params[i])));
    return LMX_OK;
}

/* The loss (f32 [1], backend memory) as a double. */
static lmx_status read_loss(lmx_trainer *t, const lmx_array *l, double *out) {
    float v;
    LMX_TRY(lmx_backend_download(t->backend, &v, l->data, sizeof v));
    *out = v;
    return LMX_OK;
}

void lmx_train_options_init(lmx_train_options *o) {
    memset(o, 0, sizeof *o);
    lmx_optim_config_init(&o->optim, LMX_OPT_ADAM);
    o->learning_rate = 1e-5f;
    o->schedule.kind = LMX_SCHED_CONSTANT;
    o->grad_accumulation_steps = 1;
}

void lmx_trainer_free(lmx_trainer *t) {
    if (!t) return;
    if (t->host_stale && lmx_trainer_sync(t) != LMX_OK)
        fprintf(stderr, "lmx: train: the trained parameters could not be copied back: %s\n", lmx_last_error());
    if (t->prof && (t->pn[0] || t->pn[3])) {
        static const char *names[7] = {"forward+loss", "backward",      "collect grads", "checkpointed step",
                                       "update",       "forward issue", "backward issue"};
        fprintf(stderr, "[profile] %s:", t->backend->name);
        for (int k = 0; k < 7; k++)
            if (t->pn[k]) fprintf(stderr, " %s %.1f ms", names[k], 1e3 * t->pt[k] / (double)t->pn[k]);
        fprintf(stderr, " (means over %lld micro-batches, %lld updates)\n", (long long)(t->pn[0] + t->pn[3]),
                (long long)t->pn[4]);
    }
    lmx_tape_free(t->tape); /* before the mirrors its records point at */
    lmx_tape_free(t->sub);
    dev_release(t);
    if (t->device) lmx_tape_cache_trim(t->backend, true);
    lmx_optim_free(t->opt);
    for (int i = 0; t->acc && i < t->np; i++) free(t->acc[i]);
    free(t->acc);
    free(t->params);
    free(t);
}

lmx_status lmx_trainer_create(lmx_exec *ex, lmx_transformer *m, lmx_adapters *ad, const lmx_train_options *o,
                              lmx_trainer **out) {
    *out = NULL;
    if (o->grad_accumulation_steps < 1)
        return lmx_err(LMX_ERR_INVALID_ARG, "train: grad_accumulation_steps must be at least 1");
    lmx_trainer *t = calloc(1, sizeof *t);
    if (!t) return lmx_err(LMX_ERR_NOMEM, "out of memory");
    t->backend = ex->backend;
    t->ad = ad;
    const char *pe = getenv("LMX_TRAIN_PROFILE");
    t->prof = pe && *pe && strcmp(pe, "0");
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
    t->device = !lmx_backend_is_host(ex->backend);
    if (!st && t->device) st = dev_setup(t);
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
        const lmx_array *g = lmx_tape_grad(tape, t->device ? t->gparams[i] : t->params[i]);
        if (!g) continue;
        if (t->dev_opt) { /* G[i] += g on the device */
            lmx_array acc;
            LMX_TRY(lmx_array_view(&acc, &t->flat[1], t->off[i], g->ndim, g->shape));
            lmx_exec ex = {t->backend, NULL};
            lmx_node nd;
            memset(&nd, 0, sizeof nd);
            nd.op = LMX_OP_ADD;
            nd.out = &acc;
            nd.src[0] = &acc;
            nd.src[1] = g;
            lmx_status st = lmx_exec_node(&ex, &nd);
            lmx_array_release(&acc);
            LMX_TRY(st);
            t->have[i] = true;
            continue;
        }
        int64_t n = lmx_array_numel(t->params[i]);
        if (!t->acc[i] && !(t->acc[i] = calloc((size_t)n, sizeof(float))))
            return lmx_err(LMX_ERR_NOMEM, "out of memory");
        const float *s = g->data;
        if (t->device) {
            LMX_TRY(lmx_array_download(t->backend, g, t->tmp));
            s = t->tmp;
        }
        float *d = t->acc[i];
        for (int64_t j = 0; j < n; j++) d[j] += s[j];
    }
    return LMX_OK;
}

/* The whole graph on one tape. */
static lmx_status step_plain(lmx_trainer *t, const lmx_train_batch *b, double *loss) {
    lmx_exec ex = {t->backend, t->tape};
    lmx_array logits = {0}, l = {0};
    double t0 = stamp(t);
    lmx_status st = lmx_train_forward(&ex, b, &logits);
    if (!st) st = lmx_train_loss(&ex, b, &logits, &l);
    double t0i = t->prof ? lmx_time_s() : 0;
    if (!st) st = read_loss(t, &l, loss);
    double t1 = stamp(t);
    if (lmx_tape_size(t->tape) > t->peak_nodes) t->peak_nodes = lmx_tape_size(t->tape);
    if (!st) st = lmx_tape_backward(t->tape, &l, NULL);
    double t1i = t->prof ? lmx_time_s() : 0;
    double t2 = stamp(t);
    if (!st) st = collect(t, t->tape);
    if (t->prof) {
        double t3 = stamp(t);
        prof_add(t, 0, t0, t1);
        prof_add(t, 1, t1, t2);
        prof_add(t, 2, t2, t3);
        if (t->device) {
            prof_add(t, 5, t0, t0i);
            prof_add(t, 6, t1, t1i);
        }
    }
    lmx_array_release(&logits);
    lmx_array_release(&l);
    lmx_tape_reset(t->tape);
    return st;
}

/* *dx = (a new reference to) tape's gradient of x, or zeros of x's shape. */
static lmx_status take_grad(lmx_trainer *t, lmx_tape *tape, const lmx_array *x, lmx_array *dx) {
    lmx_array_release(dx);
    const lmx_array *g = lmx_tape_grad(tape, x);
    if (!g) return lmx_tape_alloc_on(t->backend, dx, x->ndim, x->shape);
    *dx = *g;
    lmx_array_retain(dx);
    return LMX_OK;
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
    if (!st) st = read_loss(t, &l, loss);
    if (lmx_tape_size(t->tape) > t->peak_nodes) t->peak_nodes = lmx_tape_size(t->tape);
    if (!st) st = lmx_tape_backward(t->tape, &l, NULL);
    if (!st) st = collect(t, t->tape);
    /* dx = d loss / d x_L (zeros when no gradient reaches it): the tape's
     * gradient array itself, kept by a reference across the reset (it is in
     * the backend's memory, no copy) */
    if (!st) st = take_grad(t, t->tape, &x, &dx);
    lmx_tape_reset(t->tape);
    for (int li = L - 1; li >= first && !st; li--) {
        st = lmx_train_block(&exs, b, li, &xs[li], &y);
        if (lmx_tape_size(t->sub) > t->peak_nodes) t->peak_nodes = lmx_tape_size(t->sub);
        if (!st) st = lmx_tape_backward(t->sub, &y, &dx);
        if (!st) st = collect(t, t->sub);
        if (!st && li > first) st = take_grad(t, t->sub, &xs[li], &dx);
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
    lmx_status st0 = lmx_train_batch_to_backend(&b, t->backend);
    if (st0) {
        lmx_train_batch_free(&b);
        return st0;
    }
    lmx_dora_cache dc = {0};
    b.dropout = true;
    /* one mask stream per micro-batch, reproducible from the seed */
    b.dropout_key = t->o.seed * 0x9E3779B97F4A7C15ull + (uint64_t)t->micro++;
    b.dora = &dc;
    double l = 0;
    dev_bind(t, true);
    double t0 = stamp(t);
    lmx_status st = t->o.grad_checkpoint ? step_checkpointed(t, &b, &l) : step_plain(t, &b, &l);
    if (t->prof && t->o.grad_checkpoint) prof_add(t, 3, t0, stamp(t));
    dev_bind(t, false);
    if (t->device) lmx_tape_cache_trim(t->backend, false);
    if (!st && loss) *loss = l;
    if (!st && ntoks) *ntoks = b.ntoks;
    lmx_dora_cache_clear(&dc);
    lmx_train_batch_free(&b);
    return st;
}

/* The device update: one launch over the flat arrays (G is zeroed by it). */
static lmx_status update_device(lmx_trainer *t, double *lr) {
    double t0 = stamp(t);
    lmx_optim_step_args a;
    memset(&a, 0, sizeof a);
    a.n = t->total;
    a.p = t->flat[0].data;
    a.g = t->flat[1].data;
    a.m = t->flat[2].data;
    a.v = t->flat[3].data;
    a.steps = t->o.grad_accumulation_steps > 1 ? (float)t->o.grad_accumulation_steps : 1.0f;
    double rate = lmx_schedule_lr(&t->o.schedule, t->o.learning_rate, lmx_optim_step(t->opt));
    lmx_status st = lmx_optim_update_device(t->opt, t->backend, &a, (float)rate);
    if (!st) t->host_stale = true;
    for (int i = 0; i < t->np; i++) {
        t->have[i] = false;
        free(t->acc[i]);
        t->acc[i] = NULL;
    }
    if (t->prof) prof_add(t, 4, t0, stamp(t));
    if (!st && lr) *lr = rate;
    return st;
}

lmx_status lmx_trainer_update(lmx_trainer *t, double *lr) {
    if (t->dev_opt) return update_device(t, lr);
    double t0 = stamp(t);
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
    if (!st && t->device) st = dev_push(t);
    for (int i = 0; i < t->np; i++) {
        free(t->acc[i]);
        t->acc[i] = NULL;
    }
    free(g);
    free(gp);
    if (t->prof) prof_add(t, 4, t0, stamp(t));
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
    lmx_status st = lmx_train_batch_to_backend(&b, t->backend);
    dev_bind(t, true);
    if (!st) st = lmx_train_forward(&ex, &b, &logits);
    if (!st) st = lmx_train_loss(&ex, &b, &logits, &l);
    dev_bind(t, false);
    double lv = 0;
    if (!st) st = read_loss(t, &l, &lv);
    /* mlx-lm's evaluate(): all_losses += losses * toks (the f32 batch mean) */
    if (!st && loss_sum) *loss_sum = lv * (double)b.ntoks;
    if (!st && ntoks) *ntoks = b.ntoks;
    lmx_array_release(&logits);
    lmx_array_release(&l);
    lmx_dora_cache_clear(&dc);
    lmx_train_batch_free(&b);
    return st;
}

int64_t lmx_trainer_step(const lmx_trainer *t) { return lmx_optim_step(t->opt); }

int lmx_trainer_n_params(const lmx_trainer *t) { return t->np; }
/* The test accessors read host memory: they bring it up to date first
 * (the trainer is logically unchanged, hence the casts). */
lmx_array *lmx_trainer_param(const lmx_trainer *t, int i) {
    if (i < 0 || i >= t->np) return NULL;
    if (t->host_stale) (void)lmx_trainer_sync((lmx_trainer *)t);
    return t->params[i];
}

const float *lmx_trainer_grad_sum(const lmx_trainer *t, int i) {
    if (i < 0 || i >= t->np) return NULL;
    if (!t->dev_opt || !t->have[i]) return t->acc[i];
    lmx_trainer *w = (lmx_trainer *)t;
    size_t nb = lmx_array_nbytes(t->params[i]);
    if (!w->acc[i] && !(w->acc[i] = malloc(nb))) return NULL;
    if (lmx_backend_download(t->backend, w->acc[i], (const float *)t->flat[1].data + t->off[i], nb)) return NULL;
    return w->acc[i];
}
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
