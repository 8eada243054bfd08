/* cuda_quant.cuh - quantized weight formats on the device: per-format unit
 * sizes, decoders of one 32-element piece, scale loads, and the entry points
 * cuda_quant.cu / cuda_quant_gemv.cu give the kernel table.
 *
 * Every format is cut into 32-element pieces along a row: a GGUF block of 32
 * is one piece, a K-quant super-block of 256 is 8 pieces (sharing its header
 * of scales), an MLX packed row is pieces of 32 elements (4·bits bytes).
 * A decoder turns one piece into 32 floats with the arithmetic of the host
 * converters (src/core/dtype_gguf.c, dtype_mlx.c) and of lmx_cpu_dequant_row
 * for the MLX scale·q (+ bias): with X = true every value is bit-identical
 * to the CPU reference (separate multiply and add, as the host code rounds);
 * with X = false the GEMV kernels may fuse them (one rounding less, <= 1 ulp
 * of a weight apart).
 *
 * Pieces are read through byte pointers that may point into global or shared
 * memory; a unit's start keeps its global alignment (GGUF units are 2-byte
 * aligned, K-quant Q2_K/Q4_K/Q5_K units 4-byte, MLX pieces 4-byte), so reads
 * are 16-bit or 32-bit as the alignment allows. */
#ifndef LMX_CUDA_QUANT_CUH
#define LMX_CUDA_QUANT_CUH

#include "backend/cuda/cuda_common.cuh"

#include <stdlib.h>

/* ---- unit sizes (elements, bytes) ----------------------------------------- */

template <int DT> struct QF;
#define LMX_QF(DT, UE_, UB_, MLX_, BITS_)                                       \
    template <> struct QF<DT> {                                                 \
        enum { UE = UE_, UB = UB_, PPU = UE_ / 32, MLX = MLX_, BITS = BITS_ }; \
    }
LMX_QF(LMX_Q4_0, 32, 18, 0, 0);
LMX_QF(LMX_Q4_1, 32, 20, 0, 0);
LMX_QF(LMX_Q5_0, 32, 22, 0, 0);
LMX_QF(LMX_Q5_1, 32, 24, 0, 0);
LMX_QF(LMX_Q8_0, 32, 34, 0, 0);
LMX_QF(LMX_Q2_K, 256, 84, 0, 0);
LMX_QF(LMX_Q3_K, 256, 110, 0, 0);
LMX_QF(LMX_Q4_K, 256, 144, 0, 0);
LMX_QF(LMX_Q5_K, 256, 176, 0, 0);
LMX_QF(LMX_Q6_K, 256, 210, 0, 0);
LMX_QF(LMX_MLX_Q2, 32, 8, 1, 2);
LMX_QF(LMX_MLX_Q3, 32, 12, 1, 3);
LMX_QF(LMX_MLX_Q4, 32, 16, 1, 4);
LMX_QF(LMX_MLX_Q5, 32, 20, 1, 5);
LMX_QF(LMX_MLX_Q6, 32, 24, 1, 6);
LMX_QF(LMX_MLX_Q8, 32, 32, 1, 8);
LMX_QF(LMX_MLX_FP4, 32, 16, 1, 4);
LMX_QF(LMX_MLX_FP8, 32, 32, 1, 8);
#undef LMX_QF

/* Calls F<DT>(args...) for the run-time dtype dt; returns false when dt is
 * not a device-quantized format. */
#define LMX_QUANT_DISPATCH(dt, CALL)            \
    switch (dt) {                               \
    case LMX_Q4_0: CALL(LMX_Q4_0); break;       \
    case LMX_Q4_1: CALL(LMX_Q4_1); break;       \
    case LMX_Q5_0: CALL(LMX_Q5_0); break;       \
    case LMX_Q5_1: CALL(LMX_Q5_1); break;       \
    case LMX_Q8_0: CALL(LMX_Q8_0); break;       \
    case LMX_Q2_K: CALL(LMX_Q2_K); break;       \
    case LMX_Q3_K: CALL(LMX_Q3_K); break;       \
    case LMX_Q4_K: CALL(LMX_Q4_K); break;       \
    case LMX_Q5_K: CALL(LMX_Q5_K); break;       \
    case LMX_Q6_K: CALL(LMX_Q6_K); break;       \
    case LMX_MLX_Q2: CALL(LMX_MLX_Q2); break;   \
    case LMX_MLX_Q3: CALL(LMX_MLX_Q3); break;   \
    case LMX_MLX_Q4: CALL(LMX_MLX_Q4); break;   \
    case LMX_MLX_Q5: CALL(LMX_MLX_Q5); break;   \
    case LMX_MLX_Q6: CALL(LMX_MLX_Q6); break;   \
    case LMX_MLX_Q8: CALL(LMX_MLX_Q8); break;   \
    case LMX_MLX_FP4: CALL(LMX_MLX_FP4); break; \
    case LMX_MLX_FP8: CALL(LMX_MLX_FP8); break; \
    default: return lmx_err(LMX_ERR_UNSUPPORTED, "cuda: no kernels for weight dtype %s", lmx_dtype_info((lmx_dtype)(dt))->name); \
    }

/* ---- scalar helpers --------------------------------------------------------- */

/* Decoders compile for the host too, so they can be checked without a GPU. */
#define LMX_QD __host__ __device__ __forceinline__
#ifdef __CUDA_ARCH__
#define Q_UNROLL _Pragma("unroll")
#else
#define Q_UNROLL /* the host compiler does not know the pragma */
#endif

LMX_QD float q_as_float(uint32_t u) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float f;
    memcpy(&f, &u, 4);
    return f;
#endif
}

LMX_QD uint32_t q_u16(const uint8_t *p, int i) { return *(const uint16_t *)(p + i); }
LMX_QD uint32_t q_u32(const uint8_t *p, int i) { return *(const uint32_t *)(p + i); }
/* 4 bytes at a 2-byte aligned offset */
LMX_QD uint32_t q_u32h(const uint8_t *p, int i) { return q_u16(p, i) | q_u16(p, i + 2) << 16; }
LMX_QD float q_f16(const uint8_t *p, int i) { return __half2float(__ushort_as_half((unsigned short)q_u16(p, i))); }
/* Exact float of an unsigned integer v < 2^23 without an I2F (a quarter-rate
 * instruction): the bits 2^23 + v, minus 2^23. */
LMX_QD float q_i2f(uint32_t v) { return q_as_float(0x4B000000u | v) - 8388608.0f; }

/* Byte `byte` of src minus `off` as an exact float: the bits of 2^23 + byte
 * (one PRMT on the device), then one FADD of -(2^23 + off). */
LMX_QD float q_byte_f(uint32_t src, int byte, float off) {
#ifdef __CUDA_ARCH__
    uint32_t bits = __byte_perm(src, 0x4B000000u, 0x7440u | (uint32_t)byte);
#else
    uint32_t bits = 0x4B000000u | ((src >> (8 * byte)) & 0xFFu);
#endif
    return q_as_float(bits) - (8388608.0f + off);
}

/* a·b + c: rounded twice (X, the host converters' order) or fused. */
template <bool X> LMX_QD float q_mad(float a, float b, float c) {
#ifdef __CUDA_ARCH__
    return X ? __fadd_rn(__fmul_rn(a, b), c) : fmaf(a, b, c);
#else
    volatile float p = a * b; /* no contraction: the host converters' rounding */
    return X ? p + c : fmaf(a, b, c);
#endif
}

/* FP8 E4M3 "fn" (0x7f/0xff NaN, no infinities), as dtype_mlx.c's e4m3(). */
LMX_QD float q_e4m3(uint32_t v) {
    uint32_t e = (v >> 3) & 15, m = v & 7;
    float r;
    if (e == 15 && m == 7)
        r = q_as_float(0x7fc00000u);
    else if (e == 0)
        r = (float)m * 0.001953125f; /* m/8 · 2^-6 */
    else
        r = q_as_float((e + 120) << 23 | m << 20);
    return (v & 0x80) ? -r : r;
}
/* E2M1: 0, 0.5, 1, 1.5, 2, 3, 4, 6 and their negatives. */
LMX_QD float q_e2m1(uint32_t c) {
    uint32_t e = (c >> 1) & 3, m = c & 1;
    float r = e == 0 ? (m ? 0.5f : 0.0f) : q_as_float((e + 126) << 23 | m << 22);
    return (c & 8) ? -r : r;
}
/* E8M0 scale byte: 2^(s-127); s == 0 reads as 2^-127, as MLX does. */
LMX_QD float q_e8m0(uint32_t s) { return s == 0 ? q_as_float(0x00400000u) : q_as_float(s << 23); }

/* One group scale/bias of an MLX weight, scale dtypes f32/f16/bf16/e8m0/e4m3. */
LMX_QD float q_scale(const void *p, int dt, int64_t i) {
    switch (dt) {
    case LMX_BF16: return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    case LMX_F16: return __half2float(((const __half *)p)[i]);
    case LMX_E8M0: return q_e8m0(((const uint8_t *)p)[i]);
    case LMX_E4M3: return q_e4m3(((const uint8_t *)p)[i]);
    default: return ((const float *)p)[i];
    }
}

/* ---- GGUF pieces ------------------------------------------------------------ */

/* QDec<DT, X>::piece(u, sub, v): piece `sub` (0..PPU-1) of the unit at u into v[32]. */
template <int DT, bool X> struct QDec;

template <bool X> struct QDec<LMX_Q4_0, X> {
    static LMX_QD void piece(const uint8_t *u, int, float *v) {
        float d = q_f16(u, 0);
Q_UNROLL
        for (int j = 0; j < 8; j++) {
            uint32_t h = q_u16(u, 2 + 2 * j);
Q_UNROLL
            for (int b = 0; b < 2; b++) {
                uint32_t q = h >> (8 * b);
                v[2 * j + b] = (q_i2f(q & 15) - 8.0f) * d;
                v[2 * j + b + 16] = (q_i2f((q >> 4) & 15) - 8.0f) * d;
            }
        }
    }
};

template <bool X> struct QDec<LMX_Q4_1, X> {
    static LMX_QD void piece(const uint8_t *u, int, float *v) {
        float d = q_f16(u, 0), m = q_f16(u, 2);
Q_UNROLL
        for (int j = 0; j < 8; j++) {
            uint32_t h = q_u16(u, 4 + 2 * j);
Q_UNROLL
            for (int b = 0; b < 2; b++) {
                uint32_t q = h >> (8 * b);
                v[2 * j + b] = q_mad<X>(q_i2f(q & 15), d, m);
                v[2 * j + b + 16] = q_mad<X>(q_i2f((q >> 4) & 15), d, m);
            }
        }
    }
};

template <bool X> struct QDec<LMX_Q5_0, X> {
    static LMX_QD void piece(const uint8_t *u, int, float *v) {
        float d = q_f16(u, 0);
        uint32_t qh = q_u32h(u, 2);
Q_UNROLL
        for (int j = 0; j < 8; j++) {
            uint32_t h = q_u16(u, 6 + 2 * j);
Q_UNROLL
            for (int b = 0; b < 2; b++) {
                int l = 2 * j + b;
                uint32_t q = h >> (8 * b);
                uint32_t hi0 = ((qh >> l) << 4) & 0x10, hi1 = (qh >> (l + 12)) & 0x10;
                v[l] = (q_i2f((q & 15) | hi0) - 16.0f) * d;
                v[l + 16] = (q_i2f(((q >> 4) & 15) | hi1) - 16.0f) * d;
            }
        }
    }
};

template <bool X> struct QDec<LMX_Q5_1, X> {
    static LMX_QD void piece(const uint8_t *u, int, float *v) {
        float d = q_f16(u, 0), m = q_f16(u, 2);
        uint32_t qh = q_u32h(u, 4);
Q_UNROLL
        for (int j = 0; j < 8; j++) {
            uint32_t h = q_u16(u, 8 + 2 * j);
Q_UNROLL
            for (int b = 0; b < 2; b++) {
                int l = 2 * j + b;
                uint32_t q = h >> (8 * b);
                uint32_t hi0 = ((qh >> l) << 4) & 0x10, hi1 = (qh >> (l + 12)) & 0x10;
                v[l] = q_mad<X>(q_i2f((q & 15) | hi0), d, m);
                v[l + 16] = q_mad<X>(q_i2f(((q >> 4) & 15) | hi1), d, m);
            }
        }
    }
};

template <bool X> struct QDec<LMX_Q8_0, X> {
    static LMX_QD void piece(const uint8_t *u, int, float *v) {
        float d = q_f16(u, 0);
Q_UNROLL
        for (int j = 0; j < 16; j++) {
            uint32_t h = q_u16(u, 2 + 2 * j);
            /* int8 q: (q ^ 0x80) - 128 */
            v[2 * j] = (q_i2f((h & 0xff) ^ 0x80) - 128.0f) * d;
            v[2 * j + 1] = (q_i2f((h >> 8) ^ 0x80) - 128.0f) * d;
        }
    }
};

template <bool X> struct QDec<LMX_Q2_K, X> {
    static LMX_QD void piece(const uint8_t *u, int p, float *v) {
        int half = p >> 2, si = p & 3;
        float dd = q_f16(u, 80), dmin = q_f16(u, 82);
Q_UNROLL
        for (int k = 0; k < 2; k++) {
            uint32_t sc = u[half * 8 + si * 2 + k];
            float dl = dd * q_i2f(sc & 15), ml = dmin * q_i2f(sc >> 4);
Q_UNROLL
            for (int w = 0; w < 4; w++) {
                uint32_t q = q_u32(u, 16 + half * 32 + k * 16 + 4 * w) >> (2 * si);
Q_UNROLL
                for (int b = 0; b < 4; b++) v[k * 16 + 4 * w + b] = q_mad<X>(dl, q_i2f((q >> (8 * b)) & 3), -ml);
            }
        }
    }
};

template <bool X> struct QDec<LMX_Q3_K, X> {
    static LMX_QD void piece(const uint8_t *u, int p, float *v) {
        int half = p >> 2, si = p & 3;
        float dall = q_f16(u, 108);
        uint32_t mbit = 1u << (half * 4 + si);
Q_UNROLL
        for (int k = 0; k < 2; k++) {
            int j = half * 8 + si * 2 + k; /* scale index 0..15 */
            uint32_t lo = j < 8 ? (u[96 + j] & 15) : (u[96 + j - 8] >> 4);
            uint32_t hi = (u[96 + 8 + (j & 3)] >> (2 * (j >> 2))) & 3;
            float dl = dall * (float)((int)(lo | hi << 4) - 32);
Q_UNROLL
            for (int w = 0; w < 8; w++) {
                uint32_t q = q_u16(u, 32 + half * 32 + k * 16 + 2 * w) >> (2 * si);
                uint32_t hm = q_u16(u, k * 16 + 2 * w);
Q_UNROLL
                for (int b = 0; b < 2; b++) {
                    float qv = q_i2f((q >> (8 * b)) & 3) - (((hm >> (8 * b)) & mbit) ? 0.0f : 4.0f);
                    v[k * 16 + 2 * w + b] = dl * qv;
                }
            }
        }
    }
};

/* Scale and min j (0..7) of the Q4_K/Q5_K 12-byte packing at s. */
LMX_QD void q_k4_scale_min(int j, const uint8_t *s, uint32_t *sc, uint32_t *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

template <bool X> struct QDec<LMX_Q4_K, X> {
    static LMX_QD void piece(const uint8_t *u, int p, float *v) {
        float dd = q_f16(u, 0), dmin = q_f16(u, 2);
        uint32_t sc, m;
        q_k4_scale_min(p, u + 4, &sc, &m);
        float d1 = dd * q_i2f(sc), m1 = dmin * q_i2f(m);
        int sh = (p & 1) * 4;
Q_UNROLL
        for (int w = 0; w < 8; w++) {
            uint32_t q = q_u32(u, 16 + (p >> 1) * 32 + 4 * w) >> sh;
Q_UNROLL
            for (int b = 0; b < 4; b++) v[4 * w + b] = q_mad<X>(d1, q_i2f((q >> (8 * b)) & 15), -m1);
        }
    }
};

template <bool X> struct QDec<LMX_Q5_K, X> {
    static LMX_QD void piece(const uint8_t *u, int p, float *v) {
        float dd = q_f16(u, 0), dmin = q_f16(u, 2);
        uint32_t sc, m;
        q_k4_scale_min(p, u + 4, &sc, &m);
        float d1 = dd * q_i2f(sc), m1 = dmin * q_i2f(m);
        int sh = (p & 1) * 4;
Q_UNROLL
        for (int w = 0; w < 8; w++) {
            uint32_t q = q_u32(u, 48 + (p >> 1) * 32 + 4 * w) >> sh;
            uint32_t h = q_u32(u, 16 + 4 * w) >> p;
Q_UNROLL
            for (int b = 0; b < 4; b++)
                v[4 * w + b] = q_mad<X>(d1, q_i2f(((q >> (8 * b)) & 15) | (((h >> (8 * b)) & 1) << 4)), -m1);
        }
    }
};

/* Piece p (0..7) of a Q6_K super-block from its four parts: ql[128],
 * qh[64], scales[16] and the f16 d (at dp). The file layout has them
 * consecutive (QDec<Q6_K>); the repacked row layout (cuda_qgemv_q6r.cu) has
 * them in row planes (q6r_piece). Same bytes, same arithmetic. */
template <bool X> LMX_QD void q6k_piece(const uint8_t *ql, const uint8_t *qh, const uint8_t *sc, const uint8_t *dp,
                                        int p, float *v) {
    int h = p >> 2, q4 = p & 3;
    float dd = q_f16(dp, 0);
Q_UNROLL
    for (int k = 0; k < 2; k++) {
        float dl = dd * (float)(int8_t)sc[h * 8 + q4 * 2 + k];
Q_UNROLL
        for (int w = 0; w < 8; w++) {
            int l = k * 16 + 2 * w;
            uint32_t lq = q_u16(ql, h * 64 + (q4 & 1) * 32 + l) >> ((q4 >> 1) * 4);
            uint32_t hq = q_u16(qh, h * 32 + l) >> (2 * q4);
Q_UNROLL
            for (int b = 0; b < 2; b++) {
                uint32_t q = ((lq >> (8 * b)) & 15) | (((hq >> (8 * b)) & 3) << 4);
                v[l + b] = dl * (q_i2f(q) - 32.0f);
            }
        }
    }
}

template <bool X> struct QDec<LMX_Q6_K, X> {
    static LMX_QD void piece(const uint8_t *u, int p, float *v) { q6k_piece<X>(u, u + 128, u + 192, u + 208, p, v); }
};

/* Piece pc (0..K/32) of a repacked Q6_K row of nb super-blocks
 * (cuda_qgemv_q6r.cu: all ql, then all qh, scales, d, each in block order). */
template <bool X> LMX_QD void q6r_piece(const uint8_t *row, int64_t nb, int64_t pc, float *v) {
    int64_t b = pc >> 3;
    q6k_piece<X>(row + 128 * b, row + 128 * nb + 64 * b, row + 192 * nb + 16 * b, row + 208 * nb + 2 * b,
                 (int)(pc & 7), v);
}

/* For the GEMV: Q4_0 / Q8_0 pieces as the integers q - 8 / q (exact floats)
 * and the block scale d, which returns; the dot is then d·Σ x·q (one
 * multiply per block, not per weight). */
template <int DT> struct QDecInt;
template <> struct QDecInt<LMX_Q4_0> {
    static LMX_QD float piece(const uint8_t *u, float *v) {
        Q_UNROLL
        for (int j = 0; j < 8; j++) {
            uint32_t h = q_u16(u, 2 + 2 * j), lo = h & 0x0F0Fu, hi = (h >> 4) & 0x0F0Fu;
            v[2 * j] = q_byte_f(lo, 0, 8.0f);
            v[2 * j + 1] = q_byte_f(lo, 1, 8.0f);
            v[2 * j + 16] = q_byte_f(hi, 0, 8.0f);
            v[2 * j + 17] = q_byte_f(hi, 1, 8.0f);
        }
        return q_f16(u, 0);
    }
};
template <> struct QDecInt<LMX_Q8_0> {
    static LMX_QD float piece(const uint8_t *u, float *v) {
        Q_UNROLL
        for (int j = 0; j < 16; j++) {
            uint32_t h = q_u16(u, 2 + 2 * j) ^ 0x8080u; /* int8 q = (q ^ 0x80) - 128 */
            v[2 * j] = q_byte_f(h, 0, 128.0f);
            v[2 * j + 1] = q_byte_f(h, 1, 128.0f);
        }
        return q_f16(u, 0);
    }
};

/* Block b of a repacked Q4_0 row (cuda_qgemv_q4r.cu: the row's nb blocks of
 * 16 nibble bytes, 16-byte aligned, then its nb f16 scales) as QDec<Q4_0>
 * decodes it: the same bytes and arithmetic, only at other offsets. */
template <bool X> LMX_QD void q4r_piece(const uint8_t *row, int64_t nb, int64_t b, float *v) {
    float d = q_f16(row + 16 * nb, (int)(2 * b));
    const uint8_t *qs = row + 16 * b;
Q_UNROLL
    for (int j = 0; j < 4; j++) {
        uint32_t h = q_u32(qs, 4 * j);
Q_UNROLL
        for (int k = 0; k < 4; k++) {
            uint32_t q = h >> (8 * k);
            v[4 * j + k] = (q_i2f(q & 15) - 8.0f) * d;
            v[4 * j + k + 16] = (q_i2f((q >> 4) & 15) - 8.0f) * d;
        }
    }
}

/* ---- MLX pieces: grid values, then scale (and bias) per group ---------------- */

/* Grid value e (0..31) of a BITS-bit piece held in words w[BITS]. */
template <int BITS> LMX_QD uint32_t q_mlx_bits(const uint32_t *w, int e) {
    int bit = e * BITS, wi = bit >> 5, sh = bit & 31;
    uint32_t v = w[wi] >> sh;
    if (sh + BITS > 32) v |= w[wi + 1] << (32 - sh);
    return v & ((1u << BITS) - 1);
}

/* Elements 0..15 take (s0, b0), 16..31 (s1, b1): equal unless the group is 16
 * (nvfp4). Affine: s·q + b; fp modes (no biases): s·v. */
template <int DT, bool X, bool AFFINE_BIAS>
LMX_QD void q_mlx_piece(const uint8_t *u, float s0, float b0, float s1, float b1, float *v) {
    constexpr int BITS = QF<DT>::BITS;
    uint32_t w[BITS];
Q_UNROLL
    for (int i = 0; i < BITS; i++) w[i] = q_u32(u, 4 * i);
Q_UNROLL
    for (int e = 0; e < 32; e++) {
        float s = e < 16 ? s0 : s1, b = e < 16 ? b0 : b1;
        float g;
        if (DT == LMX_MLX_FP4)
            g = q_e2m1((w[e >> 3] >> (4 * (e & 7))) & 15);
        else if (DT == LMX_MLX_FP8)
            g = q_e4m3((w[e >> 2] >> (8 * (e & 3))) & 255);
        else
            g = q_i2f(q_mlx_bits<BITS>(w, e));
        v[e] = AFFINE_BIAS ? q_mad<X>(s, g, b) : s * g;
    }
}

/* Any format's piece: GGUF self-contained; MLX with the group scales of
 * row r (sc/bi [N, K/group], bi may be NULL) for the piece at column k0. */
template <int DT, bool X>
LMX_QD void q_piece(const uint8_t *u, int sub, const void *sc, const void *bi, int sdt, int group,
                                        int64_t r, int64_t K, int64_t k0, float *v) {
    if constexpr (QF<DT>::MLX) {
        int64_t G = K / group, g0 = r * G + k0 / group, g1 = r * G + (k0 + 16) / group;
        float s0 = q_scale(sc, sdt, g0), s1 = g1 == g0 ? s0 : q_scale(sc, sdt, g1);
        if (bi) {
            float b0 = q_scale(bi, sdt, g0), b1 = g1 == g0 ? b0 : q_scale(bi, sdt, g1);
            q_mlx_piece<DT, X, true>(u, s0, b0, s1, b1, v);
        } else {
            q_mlx_piece<DT, X, false>(u, s0, 0.0f, s1, 0.0f, v);
        }
    } else {
        (void)sc, (void)bi, (void)sdt, (void)group, (void)r, (void)K, (void)k0;
        QDec<DT, X>::piece(u, sub, v);
    }
}

/* ---- host side -------------------------------------------------------------- */

/* A quantized weight [N, K] as the kernels take it. */
struct cuda_qw {
    const uint8_t *w;
    int dt;
    int64_t N, K;
    size_t row_bytes;
    const void *sc, *bi; /* MLX: [N, K/group]; NULL for GGUF */
    int sdt, group;
    bool r4; /* Q4_0 in the repacked row layout (cuda_qgemv_q4r.cu): nibbles first, then the scales */
    bool r6; /* Q6_K in the repacked row layout (cuda_qgemv_q6r.cu): ql, qh, scales, d planes */
};

/* Piece pc (32 elements from column 32·pc) of row r of qw, in whatever
 * layout the weight has on the device (file layout, repacked Q4_0 or
 * Q6_K rows): the one decoder every dequantizing reader goes through. */
template <int DT>
__device__ __forceinline__ void qw_piece(const cuda_qw &qw, int64_t r, int64_t pc, float *v) {
    constexpr int PPU = QF<DT>::PPU, UB = QF<DT>::UB;
    const uint8_t *row = qw.w + r * qw.row_bytes;
    if (DT == LMX_Q4_0 && qw.r4)
        q4r_piece<true>(row, qw.K / 32, pc, v);
    else if (DT == LMX_Q6_K && qw.r6)
        q6r_piece<true>(row, qw.K / 256, pc, v);
    else
        q_piece<DT, true>(row + (pc / PPU) * UB, (int)(pc % PPU), qw.sc, qw.bi, qw.sdt, qw.group, r, qw.K, pc * 32, v);
}

/* Whether the device kernels take this weight (format, scales, group). */
bool cuda_quant_ok(const lmx_array *w, const lmx_array *sc, const lmx_array *bi, int group);
cuda_qw cuda_qw_of(const lmx_array *w, const lmx_array *sc, const lmx_array *bi, int group);
/* Rows [n0, n0+nt) of qw dequantized into hi[nt, K] (bf16) and, when lo is not
 * NULL, the bf16 rounding of the remainder: hi + lo carries 16 bits of each
 * exactly dequantized weight. */
/* hi (+ lo, when not NULL) [M, K] packed bf16 = x [M, K] f32 rows xs apart, x = hi + lo to ~16 bits
 * (cuda_matmul.cu; 16-byte accesses when K and xs are multiples of 4 and x is aligned). */
lmx_status cuda_split_x_bf16(lmx_cuda_ctx *c, __nv_bfloat16 *hi, __nv_bfloat16 *lo, const float *x, int64_t M, int64_t K,
                             int64_t xs);
lmx_status cuda_dequant_bf16(lmx_cuda_ctx *c, const cuda_qw *qw, int64_t n0, int64_t nt, __nv_bfloat16 *hi,
                             __nv_bfloat16 *lo);
/* out[M,N] = x[M,K] · Wᵀ (+ bias) for M <= 8 (cuda_quant_gemv.cu). */
lmx_status cuda_gemv_quant(lmx_cuda_ctx *c, const lmx_node *n, const cuda_qw *qw);
/* M = 1 from GGUF Q4_0 / Q6_K with lanes mapped for coalesced x
 * (cuda_qgemv_gguf.cu); false (nothing queued) for other formats or
 * alignments, or LMX_CUDA_QGEMV=old|staged. x is 16-byte aligned. */
bool cuda_gemv_gguf_lanes(lmx_cuda_ctx *c, const cuda_qw *qw, float *out, const float *x, const void *bias, int bdt);
/* M = 1 from GGUF Q4_0 / Q8_0 with x quantized to int8 blocks of 32 in the
 * scratch (the CPU's lmx_xq; cuda_qgemv_q8act.cu), on unless LMX_INT8_ACT=0
 * or LMX_CUDA_QGEMV=old|staged. false: not taken (nothing queued); true:
 * queued, or *st says why not. */
bool cuda_gemv_gguf_q8act(lmx_cuda_ctx *c, const cuda_qw *qw, float *out, const float *x, const void *bias, int bdt,
                          lmx_status *st);
/* M = 1 from MLX affine 4/8-bit with x staged in shared memory
 * (cuda_qgemv_mlx.cu); false (nothing queued) where it does not apply.
 * cuda_qgemv_mlx_init lets its kernels take 64 KB of shared memory (once,
 * when a backend starts: not inside a graph capture). */
bool cuda_gemv_mlx_sx(lmx_cuda_ctx *c, const cuda_qw *qw, float *out, const float *x, const void *bias, int bdt);
void cuda_qgemv_mlx_init(void);
lmx_status cuda_get_rows_quant(lmx_cuda_ctx *c, const lmx_node *n);
/* Repacked Q4_0 and Q6_K (the registry in cuda_qgemv_q4r.cu). relayout: the
 * buffer op (repacks a freshly uploaded Q4_0 / Q6_K allocation in place
 * unless LMX_CUDA_Q4_REPACK=0 / LMX_CUDA_Q6_REPACK=0, and records it with
 * its format); is: whether bytes [p, p+bytes) lie in an allocation recorded
 * for format dt, at a row boundary; forget: an allocation is freed;
 * download: host bytes just copied from device address src back to the
 * stored layout (whole rows of a recorded allocation; others untouched). */
lmx_status cuda_q4r_relayout(lmx_cuda_ctx *c, const lmx_array *a);
bool cuda_qr_is(const void *p, size_t bytes, int dt);
void cuda_q4r_forget(const void *p);
lmx_status cuda_q4r_download(lmx_cuda_ctx *c, void *dst, const void *src, size_t bytes);
/* Q6_K's part of the above (cuda_qgemv_q6r.cu): the in-place device repack
 * of rows·(210·nb) bytes (16-byte aligned rows: nb % 8 == 0) and the host
 * inverse of one row. */
lmx_status cuda_q6r_repack(lmx_cuda_ctx *c, uint8_t *w, int64_t rows, int64_t nb);
void cuda_q6r_unpack_row(uint8_t *out, const uint8_t *in, size_t nb);
/* out[M,N] = x[M,K]·Wᵀ (+ bias) for repacked Q6_K W and M <= 8: int8 x
 * (dp4a) for M = 1 unless LMX_INT8_ACT=0, else f32 x. */
lmx_status cuda_gemv_q6r(lmx_cuda_ctx *c, const cuda_qw *qw, float *out, const float *x, int M, int64_t xs,
                         int64_t os, const void *bias, int bdt);
/* out[M,N] = x[M,K]·Wᵀ (+ bias) for repacked Q4_0 W and M <= 8: int8 x
 * (dp4a) for M = 1 unless LMX_INT8_ACT=0, else f32 x. */
lmx_status cuda_gemv_q4r(lmx_cuda_ctx *c, const cuda_qw *qw, float *out, const float *x, int M, int64_t xs,
                         int64_t os, const void *bias, int bdt);
/* M = 1 from MLX affine 4-bit (bf16/f16 scales) with int8 x, opt-in
 * (LMX_CUDA_MLX_INT8=1, cuda_qgemv_q4r.cu): false = not taken (nothing
 * queued), true = queued or *st says why not. */
bool cuda_gemv_mlx4_q8(lmx_cuda_ctx *c, const cuda_qw *qw, float *out, const float *x, const void *bias, int bdt,
                       lmx_status *st);

/* Shared by the GGUF decode GEMVs (cuda_qgemv_gguf.cu, cuda_qgemv_q8act.cu). */
__device__ __forceinline__ uint32_t qg_u16(const uint8_t *p) {
    return __ldg(reinterpret_cast<const unsigned short *>(p));
}

/* Warp sums of acc[R] -> red; warp ks == 0 of the row group adds its S-1
 * neighbours and the bias and writes rows row0..row0+R-1 (< N). */
template <int R>
__device__ __forceinline__ void qg_finish(float (*red)[R], const float *acc, float *out, const void *bias, int bdt,
                                          int64_t N, int64_t row0, int S) {
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, ks = warp % S;
#pragma unroll
    for (int i = 0; i < R; i++) {
        float sum = warp_sum(acc[i]);
        if (lane == 0) red[warp][i] = sum;
    }
    __syncthreads();
    if (ks != 0 || lane >= R) return;
    int64_t row = row0 + lane;
    if (row >= N) return;
    float sum = red[warp][lane];
    for (int k = 1; k < S; k++) sum += red[warp + k][lane];
    out[row] = sum + (bias ? ld_any(bias, bdt, row) : 0.0f);
}

/* ---- launching the repacked-weight GEMVs (cuda_qgemv_q4r.cu, _q6r.cu) ---------- */

/* Warps per row group: split K until about 32 warps of work per SM, each
 * warp keeping at least 2 rounds. */
static inline int qr_split(const lmx_cuda_ctx *c, int warps, int64_t groups, int64_t rounds) {
    int S = 1;
    while (S < warps && groups * S < 32 * (int64_t)c->n_sm && rounds / (2 * S) >= 2) S *= 2;
    return S;
}

/* LMX_CUDA_PDL=0: plain launches (A/B); read once per process. */
inline bool cuda_pdl_on(void) {
    static int on = -1;
    if (on < 0) {
        const char *e = getenv("LMX_CUDA_PDL");
        on = !(e && e[0] == '0' && !e[1]);
    }
    return on != 0;
}

/* kern<<<grid, block, smem>>>(args) on c's stream, with programmatic stream
 * serialization when cuda_pdl_on(): the grid may start before the previous
 * kernel (the x quantizer or x's producer) ends and waits for it inside
 * (griddepcontrol.wait). */
template <typename... P, typename... A>
static lmx_status cuda_launch_pdl(lmx_cuda_ctx *c, void (*kern)(P...), unsigned grid, unsigned block, size_t smem,
                                  const char *what, A... args) {
    if (!cuda_pdl_on()) {
        kern<<<grid, block, smem, c->stream>>>(args...);
        return cuda_launched(what);
    }
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(grid);
    cfg.blockDim = dim3(block);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = c->stream;
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = at;
    cfg.numAttrs = 1;
    return cuda_check(cudaLaunchKernelEx(&cfg, kern, ((P)args)...), what);
}

#endif
