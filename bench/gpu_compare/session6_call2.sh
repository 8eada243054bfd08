#!/bin/bash
# Session 6, call 2 (carry [".gpu-mlx"]: mlx_cuda_pack.sh's mlx-site.tar.xz + mlx_cuda_run.sh; no lmx.tar.xz, the
# lmx of call 1 is used): MLX's own CUDA backend and lmx on the folders call 1 made, -p 512 -g 128, one after the
# other (bench/gpu_compare/mlx_cuda_run.sh).
export LMX=/tmp/lmx-bin/lmx LD_LIBRARY_PATH=/tmp/lmx-bin/lib:${LD_LIBRARY_PATH:-}
[ -x "$LMX" ] && [ -f /tmp/llama-1b-q4/config.json ] || { echo "call 1's /tmp is gone (machine not warm)"; exit 3; }
PACK=.gpu-mlx OUT=$OUT/mlx BUDGET_S=500 bash bench/gpu_compare/mlx_cuda_run.sh /tmp/llama-1b /tmp/llama-1b-q4 > $OUT/mlx.log 2>&1
echo "rc=$?"; tail -12 $OUT/mlx.log; cat $OUT/mlx/results.jsonl 2>/dev/null | cut -c1-400
