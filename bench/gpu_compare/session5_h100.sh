#!/bin/bash
# Session 5's one-call side by side (carry [".gpu-lead"]: pack_for_gpu.sh output + llama-src.tar.xz), for a fresh
# machine: llama.cpp c392e50 CUDA build + 1B/8B prep (8B in the background, no 8B MLX 4-bit) while the GPU suites
# run on the merged binaries; then, quiet, the 8B and 1B benchmarks (lmx vs llama.cpp, probes beside them).
O=$OUT; R=$PWD
export PACK=.gpu-lead SKIP_MLX8B=1 SKIP_LMX_F16=1
s=$(date +%s)
( OUT=$O/tests RUN_PARTS=tests RUN_QTESTS="test_quant_quality test_convert test_models_gguf" \
  RUN_TESTS="test_gpu_memory test_device_sampler test_models_hf test_stories260k test_kv_cache test_batch test_speculative test_decode_graph test_cuda_q4r test_cuda_vjps test_gpu_train ${EXTRA_TESTS:-}" \
  timeout 300 sh tests/gpu/run_on_gpu.sh > $O/tests_summary.log 2>&1 ) &
tp=$!
OUT=$O/cmp bash bench/compare_llamacpp_cuda.sh build > $O/cmp1.log 2>&1
wait $tp
echo "build + prep + tests: $(( $(date +%s) - s )) s" >> $O/cmp1.log
OUT=$O/cmp bash bench/compare_llamacpp_cuda.sh 8b 1b > $O/cmp2.log 2>&1
echo "all: $(( $(date +%s) - s )) s" >> $O/cmp2.log
cat $O/tests_summary.log; grep -E "rc=|llama.cpp CUDA build|prep .* done" $O/cmp1.log $O/cmp2.log | cut -c1-220
