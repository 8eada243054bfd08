#!/bin/bash
# mlx_cuda_run.sh [MODEL_DIR...] - on the GPU machine (device tool; run from the repo root with
# carry [PACK]): MLX's own CUDA backend (`python3 -m mlx_lm benchmark`) and lmx
# (`lmx bench --device cuda --json`) on the same MLX/HF folders, -p 512 -g 128, one after the other
# (never at once: they would share the GPU). Prints one JSON line per engine and folder and one
# ratio line (lmx / mlx-cuda) per folder; everything also goes to $OUT/results.jsonl.
# With no MODEL_DIR it makes the synthetic llama-1b in bf16 (bench/make_synthetic_model.py, weights
# drawn with torch on the GPU) at /tmp/llama-1b and its 4-bit g64 conversion (lmx convert) at
# /tmp/llama-1b-q4, and benchmarks both.
# Env: PACK   the folder bench/gpu_compare/mlx_cuda_pack.sh filled (default: this script's folder)
#      OUT    logs (default /tmp/mlx_cuda_out)       ENGINES  "lmx mlx" (order per folder)
#      MLX_N / LMX_N  timed trials (default 3 each; both engines also run one warm-up first)
#      LMX    an lmx binary to use instead of the packed one   SHAPE  llama-1b (no MODEL_DIR only)
#      SITE   where the pack unpacks (default /tmp/site)     SAVE_PTX=1  keep MLX's kernel cache (below)
#      BUDGET_S  seconds this script may take in all (default 540): each step's timeout is cut to
#             what is left, so the summary still prints when a step overruns. Plan ~200 s for the
#             default pair on a fresh machine: the model 14 s, lmx convert 30 s (CPU), and MLX's
#             first run of each folder spends ~45 s in its warm-up JIT-compiling kernels (NVRTC;
#             cached under /tmp/mlx for the next folder) before 3 trials of ~0.6 s (H200,
#             2026-11-27: the bf16 run took 48 s in all; 106 s was too little for the 4-bit one).
# Setup (why each step): the pack unpacks to /tmp/site as `pip install --target` would; the
# venv's nvidia-* wheels (cuBLAS, cuDNN, NVRTC, cuFFT, cuSOLVER, NCCL for CUDA 13) are linked in
# at /tmp/site/nvidia, where libmlx.so's RPATH ($ORIGIN/../../nvidia/...) and MLX's NVRTC header
# search (<site>/nvidia/cuda_runtime/include, then CUDA_HOME) look for them.
T0=$(date +%s)
R=$PWD
P=$(cd "${PACK:-$(dirname "$0")}" && pwd)
OUT=${OUT:-/tmp/mlx_cuda_out}
BUDGET_S=${BUDGET_S:-540}
MLX_N=${MLX_N:-3}
LMX_N=${LMX_N:-3}
ENGINES=${ENGINES:-lmx mlx}
SITE=${SITE:-/tmp/site}
mkdir -p "$OUT"
LOG=$OUT/setup.log
RES=$OUT/results.jsonl
: > "$RES"
left() { echo $(( BUDGET_S - ($(date +%s) - T0) )); }
say() { echo "[$(( $(date +%s) - T0 )) s] $*" | tee -a "$LOG"; }
# cap a step's timeout at what the budget has left (at least 1 s)
tmo() { l=$(left); [ "$1" -lt "$l" ] && l=$1; [ "$l" -lt 1 ] && l=1; echo "$l"; }

stamp() { while IFS= read -r l; do echo "[+$(( $(date +%s) - $1 )) s] $l"; done; }

# 1. unpack (in the background while the synthetic model is drawn)
(
  if [ ! -f "$SITE/mlx/lib/libmlx.so" ]; then
    mkdir -p "$SITE" && xz -dc "$P/mlx-site.tar.xz" | tar -xf - -C "$SITE"
  fi
  # MLX's disk cache of JIT-compiled kernels (/tmp/mlx/<version>/ptx), if an earlier run saved it
  [ -f "$P/mlx-ptx.tar.xz" ] && xz -dc "$P/mlx-ptx.tar.xz" | tar -xf - -C /tmp
  if [ -z "${LMX:-}" ] && [ -f "$P/lmx.tar.xz" ]; then
    mkdir -p /tmp/lmx-bin && xz -dc "$P/lmx.tar.xz" | tar -xf - -C /tmp/lmx-bin
  fi
) >> "$LOG" 2>&1 &
UNPACK=$!

say "$(nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader 2>&1)"
if [ $# -eq 0 ]; then
  SHAPE=${SHAPE:-llama-1b}
  if [ ! -f "/tmp/$SHAPE/config.json" ]; then
    timeout "$(tmo 120)" python3 "$R/bench/make_synthetic_model.py" --shape "$SHAPE" --out "/tmp/$SHAPE" \
      --torch-device cuda >> "$LOG" 2>&1 || say "make_synthetic_model failed (rc $?)"
  fi
  say "synthetic $SHAPE made"
fi
wait $UNPACK || say "unpack failed"
say "unpacked: $(du -sh "$SITE" 2>/dev/null | cut -f1)"
LMX=${LMX:-/tmp/lmx-bin/lmx}
export LD_LIBRARY_PATH=/tmp/lmx-bin/lib:${LD_LIBRARY_PATH:-}
if [ $# -eq 0 ]; then
  if [ ! -f "/tmp/$SHAPE-q4/config.json" ]; then
    timeout "$(tmo 120)" "$LMX" convert --hf-path "/tmp/$SHAPE" --mlx-path "/tmp/$SHAPE-q4" -q --q-bits 4 \
      --q-group-size 64 >> "$LOG" 2>&1 || say "lmx convert failed (rc $?)"
  fi &
  CONV=$!
  set -- "/tmp/$SHAPE" "/tmp/$SHAPE-q4"
fi

SP=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
[ -d "$SP/nvidia" ] && ln -sfn "$SP/nvidia" "$SITE/nvidia"
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
# MLX on the GPU at all: its default device, and one bf16 and one f32 product checked against numpy.
timeout "$(tmo 120)" python3 - >> "$LOG" 2>&1 <<'EOF'
import numpy as np, mlx.core as mx
print("mlx", mx.__version__, "default device", mx.default_device(), "cuda available", mx.cuda.is_available())
assert mx.default_device() == mx.gpu, "MLX default device is not the GPU"
rng = np.random.default_rng(1)
# f32 products run on TF32 tensor cores in MLX's CUDA backend (2.9e-4 seen on an H200), bf16 ~1e-2
for dt, tol in ((mx.float32, 1e-3), (mx.bfloat16, 2e-2)):
    a, b = rng.standard_normal((512, 384)), rng.standard_normal((384, 256))
    c = np.array((mx.array(a).astype(dt) @ mx.array(b).astype(dt)).astype(mx.float32))
    ref = a @ b
    err = np.linalg.norm(c - ref) / np.linalg.norm(ref)
    print(f"gpu matmul {dt}: rel err {err:.2e}")
    assert err < tol
print("MLX_GPU_OK")
EOF
grep -q MLX_GPU_OK "$LOG" && say "mlx on the GPU: $(grep -E '^mlx |rel err' "$LOG" | tr '\n' ' ')" || {
  say "MLX did not run on the GPU; setup.log tail:"; tail -25 "$LOG"; }
[ -n "${CONV:-}" ] && { wait $CONV; say "converted: $(du -sh "$@" | cut -f1 | tr '\n' ' ')"; }

for m in "$@"; do
  name=$(basename "$m")
  for e in $ENGINES; do
    [ "$(left)" -lt 5 ] && { say "budget spent: $e $name not run"; continue; }
    s=$(date +%s)
    if [ "$e" = mlx ]; then
      # each output line stamped with seconds since this step began, to show where the time goes
      # (warm-up = load + JIT compilation vs the timed trials)
      PYTHONUNBUFFERED=1 timeout "$(tmo 300)" python3 -m mlx_lm benchmark --model "$m" -p 512 -g 128 \
        -n "$MLX_N" 2>&1 | stamp "$s" > "$OUT/mlx_$name.log"
      ( exit "${PIPESTATUS[0]}" )
    else
      timeout "$(tmo 300)" "$LMX" bench --model "$m" -p 512 -g 128 -n "$LMX_N" --device cuda --json \
        > "$OUT/lmx_$name.log" 2>&1
    fi
    say "$e $name: rc $? in $(( $(date +%s) - s )) s"
  done
  # one JSON line per engine, then the ratio (from the logs, so a failed run shows as missing)
  python3 - "$OUT" "$name" >> "$RES" <<'EOF'
import json, re, sys
out, name = sys.argv[1], sys.argv[2]
res = {}
try:
    t = open(f"{out}/mlx_{name}.log").read()
    trials = [dict(prompt_tps=float(a), generation_tps=float(b), peak_memory=float(c))
              for a, b, c in re.findall(r"Trial \d+:\s+prompt_tps=([\d.]+), generation_tps=([\d.]+), peak_memory=([\d.]+)", t)]
    av = re.search(r"Averages: prompt_tps=([\d.]+), generation_tps=([\d.]+), peak_memory=([\d.]+)", t)
    if av:
        res["mlx-cuda"] = dict(prompt_tps=float(av[1]), generation_tps=float(av[2]), peak_memory=float(av[3]), trials=trials)
except OSError:
    pass
try:
    for line in open(f"{out}/lmx_{name}.log"):
        if line.startswith("{"):
            j = json.loads(line)
            res["lmx"] = dict(j["averages"], trials=j["trials"])
except (OSError, ValueError, KeyError):
    pass
for e, r in res.items():
    print(json.dumps(dict(engine=e, model=name, p=512, g=128, **r)))
if len(res) == 2:
    a, b = res["lmx"], res["mlx-cuda"]
    print(json.dumps(dict(model=name, ratio="lmx/mlx-cuda",
                          prompt=round(a["prompt_tps"] / b["prompt_tps"], 3),
                          generation=round(a["generation_tps"] / b["generation_tps"], 3))))
EOF
done
say "done"
# SAVE_PTX=1: MLX's kernel cache to $OUT/mlx-ptx.tar.xz; put it in the pack folder to spare the next
# call the JIT compilation, if the 64 MiB allow (mlx_cuda_pack.sh prints the room left)
[ "${SAVE_PTX:-0}" = 1 ] && [ -d /tmp/mlx ] && tar -C /tmp -cf - mlx | xz -T4 -6 > "$OUT/mlx-ptx.tar.xz" &&
  say "kernel cache saved: $(du -sh /tmp/mlx | cut -f1) -> $(du -h "$OUT/mlx-ptx.tar.xz" | cut -f1)"
grep -hE "Error|error|Traceback|abort" "$OUT"/mlx_*.log 2>/dev/null | head -8
cat "$RES"
