#!/bin/bash
# Copy of what ran from the ignored pack folder .gpu-lead/ (PACK): pack with tests/gpu/pack_for_gpu.sh, put llama-src.tar.xz beside (bench/compare_llamacpp_cuda.sh header), carry [".gpu-lead"].
# lead's final GPU call 1: llama.cpp side by side (build + 1B; the 8B prep starts in the background), T8's quick training timing
O=$OUT; R=$PWD
export PACK=.gpu-lead
s=$(date +%s)
OUT=$O/cmp bash bench/compare_llamacpp_cuda.sh build 1b > $O/cmp1.log 2>&1
echo "compare build 1b: $(( $(date +%s) - s )) s" >> $O/cmp1.log
OUT=$O/t8 timeout 120 sh bench/gpu_compare/train_quick.sh > $O/t8quick.log 2>&1
echo "total $(( $(date +%s) - s )) s" >> $O/t8quick.log
tail -12 $O/cmp1.log; cat $O/t8quick.log | tail -30
