/* gpu_quant_rand.h - random quantized weights for the GPU tests and benchmark
 * (header-only, included by test_cuda_ops.c and bench_cuda_ops.c).
 *
 * Every byte of a packed weight is random except the fields that would make
 * a value non-finite or absurd: GGUF f16 block scales/mins are drawn in
 * [0.001, 0.004] (Q4_1/Q5_1 mins in [-0.03, 0.03]), MLX fp8 elements avoid
 * the NaN codes, MLX scales are [0.001, 0.004] (biases [-0.03, 0.03]) in a
 * float dtype, E8M0 scale bytes 118..126 (2^-9..2^-1), E4M3 scale bytes
 * 0x20..0x37 (2^-3..~1). */
#ifndef LMX_GPU_QUANT_RAND_H
#define LMX_GPU_QUANT_RAND_H

#include "core/ops.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    lmx_dtype dt;
    int group;       /* MLX group size; 0 for GGUF */
    lmx_dtype sdt;   /* MLX scale dtype */
    bool has_biases; /* MLX affine */
    const char *label;
} gq_spec;

static uint64_t gq_next(uint64_t *r) {
    *r ^= *r << 13;
    *r ^= *r >> 7;
    *r ^= *r << 17;
    return *r;
}
static double gq_unif(uint64_t *r, double lo, double hi) {
    return lo + (hi - lo) * (double)(gq_next(r) >> 11) / 9007199254740992.0;
}

static void gq_put_f16(uint8_t *p, float f) {
    uint16_t h = lmx_f32_to_f16(f);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

/* Offsets of the f16 scale (d) and min fields inside one GGUF block. */
static int gq_gguf_fields(lmx_dtype dt, int *d_off, int *m_off) {
    *m_off = -1;
    switch (dt) {
    case LMX_Q4_0: case LMX_Q5_0: case LMX_Q8_0: *d_off = 0; return 1;
    case LMX_Q4_1: case LMX_Q5_1: *d_off = 0, *m_off = 2; return 1;
    case LMX_Q2_K: *d_off = 80, *m_off = 82; return 1;
    case LMX_Q3_K: *d_off = 108; return 1;
    case LMX_Q4_K: case LMX_Q5_K: *d_off = 0, *m_off = 2; return 1;
    case LMX_Q6_K: *d_off = 208; return 1;
    default: return 0;
    }
}

/* Host arrays: w [N, K] of q->dt, and for MLX formats sc (and bi) [N, K/group].
 * Returns nonzero on an allocation failure. */
static int gq_make(uint64_t *r, const gq_spec *q, int64_t N, int64_t K, lmx_array *w, lmx_array *sc, lmx_array *bi) {
    memset(sc, 0, sizeof *sc);
    memset(bi, 0, sizeof *bi);
    int64_t sh[2] = {N, K};
    if (lmx_array_alloc(w, q->dt, 2, sh)) return 1;
    size_t nb = lmx_array_nbytes(w);
    uint8_t *p = (uint8_t *)w->data;
    for (size_t i = 0; i < nb; i++) p[i] = (uint8_t)(gq_next(r) >> 56);
    const lmx_dtype_traits *t = lmx_dtype_info(q->dt);
    int d_off, m_off;
    if (gq_gguf_fields(q->dt, &d_off, &m_off)) {
        bool signed_min = q->dt == LMX_Q4_1 || q->dt == LMX_Q5_1;
        for (size_t b = 0; b < nb; b += t->size) {
            gq_put_f16(p + b + d_off, (float)gq_unif(r, 0.001, 0.004));
            if (m_off >= 0) gq_put_f16(p + b + m_off, (float)(signed_min ? gq_unif(r, -0.03, 0.03) : gq_unif(r, 0.001, 0.004)));
        }
        return 0;
    }
    if (q->dt == LMX_MLX_FP8)
        for (size_t i = 0; i < nb; i++)
            if ((p[i] & 0x7f) == 0x7f) p[i] ^= 1; /* 0x7f/0xff are NaN */
    int64_t ss[2] = {N, K / q->group}, G = N * (K / q->group);
    if (lmx_array_alloc(sc, q->sdt, 2, ss)) return 1;
    if (q->has_biases && lmx_array_alloc(bi, q->sdt, 2, ss)) return 1;
    if (q->sdt == LMX_E8M0 || q->sdt == LMX_E4M3) {
        uint8_t *s = (uint8_t *)sc->data;
        for (int64_t i = 0; i < G; i++)
            s[i] = (uint8_t)(q->sdt == LMX_E8M0 ? 118 + gq_next(r) % 9 : 0x20 + gq_next(r) % 24);
        return 0;
    }
    float *f = (float *)malloc((size_t)G * sizeof *f);
    if (!f) return 1;
    for (int64_t i = 0; i < G; i++) f[i] = (float)gq_unif(r, 0.001, 0.004);
    lmx_dtype_info(q->sdt)->from_f32(f, sc->data, G);
    if (q->has_biases) {
        for (int64_t i = 0; i < G; i++) f[i] = (float)gq_unif(r, -0.03, 0.03);
        lmx_dtype_info(q->sdt)->from_f32(f, bi->data, G);
    }
    free(f);
    return 0;
}

static inline const lmx_array *gq_opt(const lmx_array *a) { return lmx_array_empty(a) ? NULL : a; }

#endif
