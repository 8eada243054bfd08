/* cpu_rope.c - rotary position embedding on [T, H, hd] rows.
 *
 * Non-traditional (HF rotate_half / llama.cpp NEOX): pairs (i, i + dims/2).
 * Traditional (Meta original / llama.cpp NORM): pairs (2i, 2i+1).
 * Features past `dims` pass through (partial rotary). Row t sits at
 * lmx_rope_pos (pos0 + t, or pos0 + t mod the period of batch rows). */
#include "backend/cpu/cpu.h"
#include "core/op_rows.h"

#include <math.h>

typedef struct {
    const lmx_node *n;
} rope_job;

static void rope_task(int ith, int nth, void *arg) {
    const lmx_node *n = ((rope_job *)arg)->n;
    const lmx_array *x = n->src[0];
    const float *inv_freq = n->src[1]->data;
    int64_t T = x->shape[0], H = x->shape[1], hd = x->shape[2];
    int dims = n->ip[1], half = dims / 2;
    bool trad = n->ip[2];
    float ms = n->fp[0];
    int64_t lo, hi;
    lmx_split(T * H, ith, nth, &lo, &hi);
    for (int64_t r = lo; r < hi; r++) {
        int64_t t = r / H;
        const float *xi = (const float *)x->data + r * hd;
        float *o = (float *)n->out->data + r * hd;
        float pos = (float)lmx_rope_pos(n, t);
        for (int i = 0; i < half; i++) {
            float th = pos * inv_freq[i];
            float c = cosf(th) * ms, s = sinf(th) * ms;
            int a = trad ? 2 * i : i, b = trad ? 2 * i + 1 : i + half;
            float x0 = xi[a], x1 = xi[b];
            o[a] = x0 * c - x1 * s;
            o[b] = x1 * c + x0 * s;
        }
        if (o != xi)
            for (int64_t i = dims; i < hd; i++) o[i] = xi[i];
    }
}

lmx_status lmx_cpu_rope(const lmx_node *n, lmx_pool *pool) {
    if (!lmx_array_is_contiguous(n->src[0]) || !lmx_array_is_contiguous(n->out) || n->src[1]->dtype != LMX_F32)
        return lmx_err(LMX_ERR_UNSUPPORTED, "rope: needs contiguous f32 input");
    rope_job j = {n};
    lmx_cpu_run(pool, rope_task, &j, lmx_array_numel(n->out));
    return LMX_OK;
}
