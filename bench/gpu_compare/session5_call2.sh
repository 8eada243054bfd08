#!/bin/bash
# Session 5's final GPU call 2 (within 30 s of call 1, same machine; carry [".gpu-mlx"], which also holds lmx and
# its libraries: call 1's .gpu-lead is gone there once a call does not carry it): quiet benchmarks, 1B then 8B
# (waits for the 8B prep of call 1), lmx vs llama.cpp; then, with MLX=1, MLX's own CUDA backend on the 1B bf16
# and MLX 4-bit folders beside lmx (bench/gpu_compare/mlx_cuda_run.sh).
O=$OUT; R=$PWD
s=$(date +%s)
mkdir -p /tmp/lmx-bin && xz -dc .gpu-mlx/lmx.tar.xz | tar -xf - -C /tmp/lmx-bin
export LD_LIBRARY_PATH=/tmp/lmx-bin/lib:${LD_LIBRARY_PATH:-}
PACK=.gpu-lead SKIP_MLX8B=1 SKIP_LMX_F16=1 OUT=$O/cmp bash bench/compare_llamacpp_cuda.sh 1b 8b > $O/cmp2.log 2>&1
echo "compare 1b 8b: $(( $(date +%s) - s )) s" >> $O/cmp2.log
grep -E "rc=|waiting|prep .* done" $O/cmp2.log | tail -24
if [ -n "${MLX:-}" ] && [ -f .gpu-mlx/mlx-site.tar.xz ]; then
  left=$(( 560 - ($(date +%s) - s) ))
  M=$(ls -d /tmp/g2m /dev/shm/g2m 2>/dev/null | head -1)
  PACK=.gpu-mlx OUT=$O/mlx BUDGET_S=$left timeout $left bash .gpu-mlx/mlx_cuda_run.sh $M/llama-1b $M/llama-1b-mlx4 > $O/mlx.log 2>&1
  echo "mlx rc=$? after $(( $(date +%s) - s )) s"; tail -8 $O/mlx.log
fi
