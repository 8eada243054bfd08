/*
 * test_models_gguf.c - GGUF models against HF transformers' own GGUF loader.
 *
 * tests/fixtures/make_gguf_fixtures.py loads each GGUF with transformers
 * (which un-permutes llama q/k and upcasts F16) and records f32 logits and a
 * greedy continuation. lmx runs the GGUF in place (traditional RoPE over the
 * unpermuted rows, F16 weights converted row by row). Tolerance: max|Δ| ≤
 * 1e-4 · max|ref|; greedy identical.
 */
#include "testing.h"
#include "golden.h"

static void llama2_tiny_random_f16(void) {
    golden_check(LMX_TEST_DATA "/models/llama-2-tiny-random.gguf",
                 LMX_TEST_DATA "/gguf/llama-2-tiny-random.golden.safetensors", "llama-2-tiny-random", 1e-4);
}

static void stories260k_v3(void) {
    golden_check(LMX_SOURCE_DIR "/models/stories260K.gguf", LMX_TEST_DATA "/gguf/stories260K.golden.safetensors",
                 "stories260K", 1e-4);
}

void run_tests(void) {
    TEST(llama2_tiny_random_f16);
    TEST(stories260k_v3);
}
