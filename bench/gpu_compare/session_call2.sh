#!/bin/bash
# Copy of what ran from the ignored pack folder .gpu-lead/ (PACK): pack with tests/gpu/pack_for_gpu.sh, put llama-src.tar.xz beside (bench/compare_llamacpp_cuda.sh header), carry [".gpu-lead"].
# lead's final GPU call 2 (within 30 s of call 1): 8B side by side + 1B again, then the GPU test suites
O=$OUT; R=$PWD
export PACK=.gpu-lead
s=$(date +%s)
OUT=$O/cmp bash bench/compare_llamacpp_cuda.sh 8b 1b > $O/cmp2.log 2>&1
echo "compare 8b 1b: $(( $(date +%s) - s )) s" >> $O/cmp2.log
tail -20 $O/cmp2.log
OUT=$O/tests RUN_PARTS="tests" timeout $(( 560 - ($(date +%s) - s) )) sh tests/gpu/run_on_gpu.sh > $O/tests.log 2>&1
tail -20 $O/tests.log
