/* cpu_features.c - picks the SIMD kernel table once per process.
 *
 * Detection uses the compiler's cpuid wrapper (__builtin_cpu_supports), which
 * also checks that the OS saves the wide registers (XGETBV), so a kernel is
 * never chosen that would fault. LMX_CPU=generic|avx2|avx512 caps the choice
 * (never raises it past what the CPU has): tests force each path with it.
 * LMX_CPU=reference turns the fast kernels off (lmx_simd() returns NULL and
 * every op runs the reference kernel), for before/after measurements.
 * LMX_INT8_ACT=0 keeps GGUF block weights on the f32-activation kernels
 * instead of the int8-activation ones (cpu_qdot.c), for A/B runs. */
#include "backend/cpu/cpu_simd.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

const char *lmx_isa_name(lmx_isa isa) {
    switch (isa) {
    case LMX_ISA_GENERIC: return "generic";
    case LMX_ISA_AVX2: return "avx2";
    case LMX_ISA_AVX512: return "avx512";
    default: return "?";
    }
}

lmx_isa lmx_cpu_isa_detected(void) {
#ifdef LMX_SIMD_X86
    __builtin_cpu_init();
    bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                  __builtin_cpu_supports("avx512vnni"); /* the int8 kernels (qdot_avx512.c) */
    if (avx512) return LMX_ISA_AVX512;
    if (avx2) return LMX_ISA_AVX2;
#endif
    return LMX_ISA_GENERIC;
}

const lmx_simd_kernels *lmx_simd_for(lmx_isa isa) {
    if (isa > lmx_cpu_isa_detected()) return NULL;
    switch (isa) {
    case LMX_ISA_GENERIC: return &lmx_simd_generic;
#ifdef LMX_SIMD_X86
    case LMX_ISA_AVX2: return &lmx_simd_avx2;
    case LMX_ISA_AVX512: return &lmx_simd_avx512;
#endif
    default: return NULL;
    }
}

static const lmx_simd_kernels *chosen;
static pthread_once_t chosen_once = PTHREAD_ONCE_INIT;

static void choose(void) {
    lmx_isa isa = lmx_cpu_isa_detected();
    const char *env = getenv("LMX_CPU");
    if (env && !strcmp(env, "reference")) {
        chosen = NULL;
        return;
    }
    if (env && *env) {
        for (int i = 0; i < LMX_ISA_COUNT; i++)
            if (!strcmp(env, lmx_isa_name((lmx_isa)i)) && (lmx_isa)i < isa) isa = (lmx_isa)i;
    }
    chosen = lmx_simd_for(isa);
    if (!chosen) chosen = &lmx_simd_generic;
}

const lmx_simd_kernels *lmx_simd(void) {
    pthread_once(&chosen_once, choose);
    return chosen;
}

static bool int8_act;
static pthread_once_t int8_once = PTHREAD_ONCE_INIT;

static void read_int8_env(void) {
    const char *env = getenv("LMX_INT8_ACT");
    int8_act = !(env && !strcmp(env, "0"));
}

bool lmx_int8_activations(void) {
    pthread_once(&int8_once, read_int8_env);
    return int8_act;
}

/* Scratch slots 1..7 of the per-thread buffers in base (slot 0 belongs to
 * the reference kernels). */
float *lmx_fast_scratch(int slot, int64_t n) {
    if (slot < 0 || slot >= LMX_SCRATCH_SLOTS - 1) return NULL;
    return lmx_thread_scratch(1 + slot, n);
}
