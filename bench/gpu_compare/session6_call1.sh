#!/bin/bash
# Session 6, call 1 of a pair on one warm machine (carry [".gpu-lead"], pack_for_gpu.sh output): the GPU suites on
# the packed binaries, while the synthetic llama-1b (bf16 HF folder, torch on the GPU) and its MLX 4-bit g64
# conversion are made in /tmp, and lmx is unpacked to /tmp/lmx-bin, for call 2 (session6_call2.sh: MLX's own CUDA
# backend beside lmx), which must start within the machine's 30 s warm window.
O=$OUT; s=$(date +%s)
mkdir -p /tmp/lmx-bin/lib && tar -xJf .gpu-lead/bin.tar.xz -C /tmp/lmx-bin ./lmx && cp .gpu-lead/lib/* /tmp/lmx-bin/lib/
( python3 bench/make_synthetic_model.py --shape llama-1b --out /tmp/llama-1b --torch-device cuda > $O/prep.log 2>&1 &&
  LD_LIBRARY_PATH=/tmp/lmx-bin/lib /tmp/lmx-bin/lmx convert --hf-path /tmp/llama-1b --mlx-path /tmp/llama-1b-q4 -q \
    --q-bits 4 --q-group-size 64 >> $O/prep.log 2>&1
  echo "prep rc=$? after $(( $(date +%s) - s )) s" >> $O/prep.log ) &
OUT=$O/tests PACK=.gpu-lead RUN_PARTS=tests RUN_QTESTS="test_quant_quality test_convert test_models_gguf" \
  RUN_TESTS="test_gpu_memory test_device_sampler test_models_hf test_stories260k test_kv_cache test_batch test_speculative test_decode_graph test_cuda_q4r test_cuda_vjps test_gpu_train" \
  timeout 420 sh tests/gpu/run_on_gpu.sh > $O/tests_summary.log 2>&1
wait
cat $O/tests_summary.log; tail -2 $O/prep.log; echo "call 1: $(( $(date +%s) - s )) s"
