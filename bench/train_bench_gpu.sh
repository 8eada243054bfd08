#!/bin/sh
# train_bench_gpu.sh - LoRA training on one GPU, `lmx lora --device cuda` vs
# HF PEFT (bench/peft_train_bench.py), in ONE device-tool call (issue 8).
#
# Build here with CUDA (build-cuda), pack with
#   PACK=.gpu-t8 EXTRA_BINS="test_gpu_train test_cuda_vjps test_trainer test_lora test_grad" sh tests/gpu/pack_for_gpu.sh build-cuda
# then run with carry [".gpu-t8"]:  PACK=.gpu-t8 sh bench/train_bench_gpu.sh
# (the pack may hold its own copy of this script and of the two Python
# scripts: they are used from there when present.)
#
# Parts (PARTS, default "tests bf16 q4"):
#   tests  test_gpu_train (CUDA vs CPU gradients), test_cuda_vjps, the CPU
#          training tests, and LMX_CUDA_EXACT=1 bench_cuda_vjps (vjp timings)
#   bf16   synthetic llama-1b (bench/make_synthetic_model.py), bf16 base:
#          PEFT, then lmx (default exact GEMMs), then lmx with LMX_CUDA_FAST_GEMM=1,
#          then lmx with the host optimizer (LMX_TRAIN_HOST_OPTIM=1)
#   prof   lmx bf16 with LMX_TAPE_PROFILE=1 (per-op times, synchronised)
#   q4     the same model converted on the device (lmx convert -q --q-bits 4
#          --q-group-size 64): lmx; PEFT with bitsandbytes NF4 when installed
# Shapes: LoRA rank 8 on q,k,v,o,gate,up,down of all 16 blocks, scale 20
# (PEFT lora_alpha 160), dropout 0, batch 4, 512 tokens per row (texts of
# random words, longer than 512 tokens: every row is truncated to 512), Adam
# lr 1e-5, no gradient checkpointing. lmx: ITERS iterations reported every 5;
# tokens/s = It/sec x 4 x 512 over the report lines after the first (the
# first holds the warm-up), so both sides count batch x seq per step.
# Writes $OUT/train_bench.log (summary), tests.log, lmx_*.out, peft_*.json.
R=$PWD
P=${PACK:-.gpu-t1}
export LD_LIBRARY_PATH=$R/$P/lib:${LD_LIBRARY_PATH:-}
B=$R/$P/bin
PYD=bench
[ -f "$P/peft_train_bench.py" ] && PYD=$P
mkdir -p "$B"
[ -f "$P/bin.tar.xz" ] && tar -xJf "$P/bin.tar.xz" -C "$B"
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
PARTS=${PARTS:-tests bf16 q4}
ITERS=${ITERS:-25}
PY=python3
[ -x /opt/torch/.venv/bin/python3 ] && PY=/opt/torch/.venv/bin/python3
has() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
# the tests carry build-time paths (LMX_TEST_DATA=<worktree>/tests/data):
# WT names the worktree they were built in (default /work/main)
WT=${WT:-/work/main}
if [ "$R" != "$WT" ] && [ ! -e "$WT/tests/data" ]; then mkdir -p "$(dirname "$WT")" && ln -sfn "$R" "$WT"; fi
S=$OUT/train_bench.log
: > "$S"
log() { echo "$*" | tee -a "$S"; }
log "$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader) $(date -u '+%Y-%m-%d %H:%M UTC')"

if has tests; then
  T=$OUT/tests.log
  : > "$T"
  for t in test_gpu_train test_cuda_vjps test_trainer test_lora test_grad; do
    [ -x "$B/$t" ] || { log "$t: not built"; continue; }
    echo "===== $t" >> "$T"
    s=$(date +%s)
    timeout 200 "$B/$t" >> "$T" 2>&1
    log "$t: rc=$? ($(( $(date +%s) - s )) s) $(grep -E 'passed|failed|^OK|SKIP|failure' "$T" | tail -1)"
  done
  grep -E "^FAIL" "$T" | head -20 | tee -a "$S"
  grep -E "optimizer .* on the device|SGD steps" "$T" | tee -a "$S"
  [ -x "$B/bench_cuda_vjps" ] && LMX_CUDA_EXACT=1 timeout 100 "$B/bench_cuda_vjps" 2>&1 | grep '^bench' | tee -a "$S"
fi

has bf16 || has q4 || has prof || exit 0
M=/tmp/llama-1b
s=$(date +%s)
[ -f $M/config.json ] || $PY $PYD/make_synthetic_model.py --shape llama-1b --out $M > /dev/null 2>&1
log "model made in $(( $(date +%s) - s )) s"
D=/tmp/d512
mkdir -p $D
$PY "$R/bench/make_lora_bench_data.py" "$D"
cat > /tmp/lora8.yaml <<'EOF'
lora_parameters:
  keys: ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
  rank: 8
  scale: 20.0
  dropout: 0.0
EOF

# lmx report lines -> "tok/s (batch x seq), it/s, peak GB" over the lines after the first
lmx_stats() {
  grep 'Train loss' "$1" | sed 's/.*It\/sec \([0-9.]*\), Tokens\/sec \([0-9.]*\),.*Peak mem \([0-9.]*\) GB.*/\1 \2 \3/' |
    awk '{ n++; if (n > 1) { i += $1; c++ } p = $3 }
         END { if (c) printf "%.1f tok/s (4x512 per step), %.3f it/s, peak %.2f GB", i / c * 2048, i / c, p; else printf "no report" }'
}

run_lmx() { # label model outfile [env...]
  label=$1 model=$2 out=$OUT/$3
  shift 3
  s=$(date +%s)
  env "$@" timeout 200 "$B/lmx" lora --model "$model" --train --data $D -c /tmp/lora8.yaml --device cuda \
    --batch-size 4 --max-seq-length 512 --num-layers -1 --iters "$ITERS" --steps-per-report 5 \
    --steps-per-eval 100000 --val-batches 1 --learning-rate 1e-5 --adapter-path /tmp/ad_lmx > "$out" 2>&1
  rc=$?
  log "lmx $label: rc=$rc $(lmx_stats "$out") ($(( $(date +%s) - s )) s wall) $(grep -E 'Error|error|lmx lora:' "$out" | head -2 | tr '\n' ' ')"
  grep -E '^\[(tape )?profile\]' "$out" | tee -a "$S"
}

run_peft() { # label outfile flags...
  label=$1 out=$OUT/$2
  shift 2
  s=$(date +%s)
  timeout 200 $PY $PYD/peft_train_bench.py --model $M --batch 4 --seq 512 --rank 8 --scale 20 --steps 15 --warmup 3 \
    --lr 1e-5 "$@" > "$out" 2> "$out.err"
  log "peft $label: rc=$? $(tail -1 "$out") ($(( $(date +%s) - s )) s wall) $(tail -1 "$out.err" | cut -c1-200)"
}

if has bf16; then
  run_peft bf16 peft_bf16.json
  run_lmx "bf16 (exact hi+lo GEMMs)" $M lmx_bf16.out LMX_TRAIN_PROFILE=1
  run_lmx "bf16 LMX_CUDA_FAST_GEMM=1" $M lmx_bf16_fast.out LMX_CUDA_FAST_GEMM=1 LMX_TRAIN_PROFILE=1
  run_lmx "bf16 LMX_TRAIN_HOST_OPTIM=1 (gradients down, host Adam, parameters up)" $M lmx_bf16_hostopt.out \
    LMX_TRAIN_HOST_OPTIM=1 LMX_TRAIN_PROFILE=1
fi
if has prof; then
  ITERS=4 run_lmx "bf16 LMX_TAPE_PROFILE=1 (synchronised per op)" $M lmx_bf16_prof.out LMX_TAPE_PROFILE=1
fi
if has q4; then
  s=$(date +%s)
  [ -f $M-q4/config.json ] || "$B/lmx" convert --hf-path $M --mlx-path $M-q4 -q --q-bits 4 --q-group-size 64 > /dev/null 2>&1
  log "converted to MLX 4-bit g64 in $(( $(date +%s) - s )) s"
  run_lmx "MLX 4-bit base" $M-q4 lmx_q4.out LMX_TRAIN_PROFILE=1
  run_peft "nf4 base" peft_nf4.json --load-4bit
fi
