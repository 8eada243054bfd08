#!/bin/sh
# Session 7: the vjp and training suites, then training with the event profile (bf16 and MLX 4-bit bases), no
# PEFT (carry [".gpu-lead"]). TRAIN_ONLY=1 skips the suites; SKIP_Q4=1 the 4-bit base.
R=$PWD; P=$R/.gpu-lead
export LD_LIBRARY_PATH=$P/lib:${LD_LIBRARY_PATH:-}
B=$P/bin; mkdir -p $B; tar -xJf $P/bin.tar.xz -C $B
mkdir -p /work && [ -e /work/main ] || ln -sfn "$R" /work/main
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u
if [ "${TRAIN_ONLY:-0}" != 1 ]; then
for t in test_cuda_vjps test_gpu_train ${EXTRA_TESTS:-}; do
  timeout 120 $B/$t > $OUT/$t.log 2>&1; el "$t rc=$? $(tail -1 $OUT/$t.log)"; grep "^FAIL" $OUT/$t.log | head -5; done
fi
M=/tmp/g2m; mkdir -p $M
[ -f $M/llama-1b/config.json ] || python3 bench/make_synthetic_model.py --torch-device cuda --shape llama-1b --out $M/llama-1b > /dev/null 2>&1
[ "${SKIP_Q4:-0}" = 1 ] || [ -f $M/llama-1b-mlx4/config.json ] || $B/lmx convert --hf-path $M/llama-1b --mlx-path $M/llama-1b-mlx4 -q --q-bits 4 --q-group-size 64 > /dev/null 2>&1
el "models ready"
D=/tmp/d512; mkdir -p $D; python3 bench/make_lora_bench_data.py "$D"
lmx_run() { # label model iters [env...]
  l=$1; m=$2; it=$3; shift 3
  env "$@" LMX_TRAIN_PROFILE=1 timeout 90 $B/lmx lora --model $m --train --data $D -c bench/gpu_compare/lora8.yaml --device cuda \
    --batch-size 4 --max-seq-length 512 --num-layers -1 --iters $it --steps-per-report 5 --steps-per-eval 100000 --val-batches 1 \
    --learning-rate 1e-5 --adapter-path /tmp/ad_$l > $OUT/lmx_$l.out 2>&1
  el "lmx $l rc=$?"; grep -E "Iter (5|10|15): Train loss|profile|rror" $OUT/lmx_$l.out | cut -c1-400
}
lmx_run bf16 $M/llama-1b 15
lmx_run bf16_events $M/llama-1b 10 LMX_TAPE_PROFILE=events
[ -n "${HOST_PROF:-}" ] && lmx_run bf16_host $M/llama-1b 10 LMX_TAPE_PROFILE=host
[ "${SKIP_Q4:-0}" = 1 ] || { lmx_run q4 $M/llama-1b-mlx4 15; lmx_run q4_events $M/llama-1b-mlx4 10 LMX_TAPE_PROFILE=events; }
date -u
