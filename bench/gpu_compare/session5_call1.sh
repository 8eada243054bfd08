#!/bin/bash
# Session 5's final GPU call 1 (carry [".gpu-lead"]: tests/gpu/pack_for_gpu.sh output + llama-src.tar.xz):
# llama.cpp c392e50 CUDA build, 1B and 8B model prep (8B in its own session, so it outlives the call; no 8B MLX
# 4-bit conversion: the MLX-vs-Q4_0 bar is read on the 1B), and the GPU test suites on the merged binaries, all at
# once (the build is CPU work, the tests small GPU work); benchmarks only in call 2, on a quiet machine.
O=$OUT; R=$PWD
export PACK=.gpu-lead SKIP_MLX8B=1
s=$(date +%s)
( OUT=$O/tests RUN_PARTS=tests RUN_QTESTS="test_quant_quality test_convert test_models_gguf" \
  RUN_TESTS="test_gpu_memory test_device_sampler test_models_hf test_stories260k test_kv_cache test_batch test_speculative test_decode_graph test_cuda_q4r test_cuda_vjps test_gpu_train" \
  timeout 400 sh tests/gpu/run_on_gpu.sh > $O/tests_summary.log 2>&1 ) &
tp=$!
OUT=$O/cmp bash bench/compare_llamacpp_cuda.sh build > $O/cmp1.log 2>&1
echo "build + 1B prep: $(( $(date +%s) - s )) s" >> $O/cmp1.log
wait $tp
echo "tests done: $(( $(date +%s) - s )) s" >> $O/tests_summary.log
tail -8 $O/cmp1.log; cat $O/tests_summary.log; tail -3 /tmp/g2/res/prep8b.log 2>/dev/null
