#!/bin/bash
# Session 5's final GPU call 2 (within 30 s of call 1, same machine): quiet benchmarks, 1B then 8B (waits for the
# 8B prep of call 1), lmx vs llama.cpp; then, when MLX=1 and the carry holds .gpu-mlx (bench/gpu_compare/mlx_cuda_pack.sh),
# MLX's own CUDA backend on the 1B bf16 and MLX 4-bit folders beside lmx (bench/gpu_compare/mlx_cuda_run.sh).
O=$OUT; R=$PWD
export PACK=.gpu-lead SKIP_MLX8B=1 SKIP_LMX_F16=1
s=$(date +%s)
OUT=$O/cmp bash bench/compare_llamacpp_cuda.sh 1b 8b > $O/cmp2.log 2>&1
echo "compare 1b 8b: $(( $(date +%s) - s )) s" >> $O/cmp2.log
grep -E "rc=|waiting|prep .* done" $O/cmp2.log | tail -24
if [ -n "${MLX:-}" ] && [ -f .gpu-mlx/mlx-site.tar.xz ]; then
  left=$(( 560 - ($(date +%s) - s) ))
  M=$(ls -d /tmp/g2m /dev/shm/g2m 2>/dev/null | head -1)
  OUT=$O/mlx BUDGET_S=$left timeout $left bash .gpu-mlx/mlx_cuda_run.sh $M/llama-1b $M/llama-1b-mlx4 > $O/mlx.log 2>&1
  echo "mlx rc=$? after $(( $(date +%s) - s )) s"; tail -6 $O/mlx.log
fi
