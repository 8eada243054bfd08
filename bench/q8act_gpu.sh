#!/bin/sh
# q8act_gpu.sh - one device call for the int8-x GGUF decode GEMVs (helper G6C,
# session 4): test_cuda_ops' quantized + int8 cases, the M = 1 kernel table for
# Q4_0 / Q8_0 with LMX_INT8_ACT=0 (f32 x, v4 kernels) and default (int8 x), and
# the GGUF goldens with LMX_DEVICE=cuda. Usage: build with -DLMX_CUDA=ON, then
#   PACK=/work/main/.gpu-g6c EXTRA_BINS="" sh tests/gpu/pack_for_gpu.sh build-cuda
#   cp bench/q8act_gpu.sh /work/main/.gpu-g6c/run.sh
# and call the device tool with carry [".gpu-g6c"] and `cd .gpu-g6c && sh run.sh`.
R=$PWD/..; P=$PWD
export LD_LIBRARY_PATH=$P/lib:${LD_LIBRARY_PATH:-}
B=$P/bin; mkdir -p $B; tar -xJf $P/bin.tar.xz -C $B
mkdir -p /work && ln -sfn "$R" /work/wt-g6c; [ -e /work/main ] || ln -s "$R" /work/main
O=${OUT:-/tmp/out}; mkdir -p $O
t0=$(date +%s)
el() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
date -u
export BENCH_OPS_ONLY=qdec BENCH_QFMT="${QFMT:-q4_0,q8_0}"
for mode in 0 1; do
  LMX_INT8_ACT=$mode timeout 60 $B/bench_cuda_ops > $O/ops_$mode.log 2>&1
  el "bench_cuda_ops int8=$mode rc=$?"
done
unset BENCH_OPS_ONLY BENCH_QFMT
for f in $O/ops_*.log; do grep "^matmul" $f | sed 's/ us .*//' | awk '{print $NF}' > $f.us; done
grep "^matmul" $O/ops_0.log | cut -c8-60 > $O/labels
echo "shape | f32 x (v4) | int8 x (us)"
paste -d' ' $O/labels $O/ops_0.log.us $O/ops_1.log.us
LMX_TEST_ONLY=quant timeout 90 $B/test_cuda_ops > $O/test.log 2>&1
el "test_cuda_ops rc=$? $(grep -E 'passed' $O/test.log)"
grep -E "^FAIL" $O/test.log | head -20
grep -E "int8 x" $O/test.log | head -24
for t in test_models_gguf test_stories260k; do
  LMX_DEVICE=cuda timeout 40 $B/$t > $O/$t.log 2>&1
  el "$t (cuda) rc=$? $(tail -1 $O/$t.log)"
  grep -iE "fail|mismatch" $O/$t.log | head -5
done
el end
