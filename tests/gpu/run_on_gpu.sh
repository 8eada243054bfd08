#!/bin/sh
# run_on_gpu.sh - one device-tool call over binaries built here with CUDA
# (build-cuda) and carried in .gpu/ (bin/ + the Debian shared libraries the
# GPU machine lacks, in lib/): the suite with the default device (auto = the
# GPU), the op equivalence test, and lmx bench on the synthetic llama-1b bf16
# model generated there. Logs go to $OUT.
export LD_LIBRARY_PATH=$PWD/.gpu/lib:$LD_LIBRARY_PATH
B=.gpu/bin
pwd
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for t in test_cuda_ops test_models_hf test_stories260k test_models_gguf test_kv_cache test_batch test_speculative test_quant test_convert test_sampler; do
  [ -x $B/$t ] || continue
  $B/$t > $OUT/$t.log 2>&1; echo "$t: $(tail -1 $OUT/$t.log)"
done
python3 bench/make_synthetic_model.py --shape llama-1b --out /tmp/llama-1b | tail -1
$B/lmx bench --model /tmp/llama-1b -p 512 -g 128 -n 3 2>&1 | tee $OUT/bench1b.log | tail -4
$B/lmx generate --model /tmp/llama-1b --prompt "hello" -m 32 --ignore-chat-template 2>&1 | tail -3
