#!/bin/sh
# compare_mlx.sh - lmx vs mlx-lm (pip mlx[cpu]) on the same MLX folders.
#
# usage: bench/compare_mlx.sh OUT_DIR LMX MLX_FOLDER...
# For each folder: python3 -m mlx_lm.benchmark --model F -p 512 -g 128 -n 5
# (mlx-lm on the CPU device: MLX_DEVICE unset, mx.cpu default on Linux), then
# lmx bench --model F -p 512 -g 128 -n 5 --threads 2 --json. Load average is
# logged around every run. Environment: P, G, R override the sizes.
set -eu
out=$1 lmx=$2
shift 2
P=${P:-512} G=${G:-128} R=${R:-5}
mkdir -p "$out"
log="$out/session.log"
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ) sizes p=$P g=$G reps=$R" > "$log"
python3 -c "import mlx.core as mx, mlx_lm; print('mlx', mx.__version__, 'mlx_lm', mlx_lm.__version__, mx.default_device())" >> "$log" 2>&1 || true
for m in "$@"; do
  name=$(basename "$m")
  echo "$name mlx_lm start load: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$log"
  python3 -m mlx_lm.benchmark --model "$m" -p "$P" -g "$G" -n "$R" > "$out/$name.mlxlm.txt" 2>&1 || true
  echo "$name lmx start load: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$log"
  "$lmx" bench --model "$m" -p "$P" -g "$G" -n "$R" --threads 2 --json > "$out/$name.lmx.json" 2> "$out/$name.lmx.err" || true
  echo "$name done load: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$log"
done
echo "end: $(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$log"
