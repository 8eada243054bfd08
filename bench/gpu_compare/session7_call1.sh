#!/bin/sh
# Session 7, first GPU call (carry [".gpu-lead"]): the GPU suites on the binaries of the current commit (the device
# sampler, training and vjp suites first: session 6 changed them after its last GPU run), then LoRA training on the
# synthetic llama-1b with the per-node event profile (bf16 and MLX 4-bit bases) and PEFT in the same call.
R=$PWD; P=$R/.gpu-lead
export LD_LIBRARY_PATH=$P/lib:${LD_LIBRARY_PATH:-}
B=$P/bin; mkdir -p $B; tar -xJf $P/bin.tar.xz -C $B
mkdir -p /work && [ -e /work/main ] || ln -sfn "$R" /work/main
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u
for t in test_device_sampler test_gpu_train test_cuda_vjps test_cuda_q4r test_cuda_q6r test_cuda_ops test_cuda_fused; do
  timeout 120 $B/$t > $OUT/$t.log 2>&1; el "$t rc=$? $(tail -1 $OUT/$t.log)"; grep "^FAIL" $OUT/$t.log | head -3; done
for t in test_models_gguf test_stories260k test_models_hf; do LMX_DEVICE=cuda timeout 60 $B/$t > $OUT/$t.log 2>&1; el "$t (cuda) rc=$? $(tail -1 $OUT/$t.log)"; done
[ "${SKIP_TRAIN:-0}" = 1 ] && exit 0
M=/tmp/g2m; mkdir -p $M
[ -f $M/llama-1b/config.json ] || python3 bench/make_synthetic_model.py --torch-device cuda --shape llama-1b --out $M/llama-1b > /dev/null 2>&1
[ -f $M/llama-1b-mlx4/config.json ] || $B/lmx convert --hf-path $M/llama-1b --mlx-path $M/llama-1b-mlx4 -q --q-bits 4 --q-group-size 64 > /dev/null 2>&1
el "models ready"
mkdir -p /tmp/bnb && xz -dc $P/bnb-site.tar.xz | tar -xf - -C /tmp/bnb
D=/tmp/d512; mkdir -p $D; python3 bench/make_lora_bench_data.py "$D"
lmx_run() { # label model iters [env...]
  l=$1; m=$2; it=$3; shift 3
  env "$@" LMX_TRAIN_PROFILE=1 timeout 90 $B/lmx lora --model $m --train --data $D -c bench/gpu_compare/lora8.yaml --device cuda \
    --batch-size 4 --max-seq-length 512 --num-layers -1 --iters $it --steps-per-report 5 --steps-per-eval 100000 --val-batches 1 \
    --learning-rate 1e-5 --adapter-path /tmp/ad_$l > $OUT/lmx_$l.out 2>&1
  el "lmx $l rc=$?"; grep -E "Iter (10|15): Train loss|profile|rror" $OUT/lmx_$l.out | cut -c1-300
}
peft_run() { # label [flags...]
  l=$1; shift
  timeout 150 python3 bench/peft_train_bench.py --model $M/llama-1b --batch 4 --seq 512 --rank 8 --scale 20 --steps 15 --warmup 3 \
    --lr 1e-5 "$@" > $OUT/peft_$l.json 2> $OUT/peft_$l.err
  el "peft $l rc=$? $(tail -1 $OUT/peft_$l.json)"; tail -2 $OUT/peft_$l.err | cut -c1-300
}
lmx_run bf16 $M/llama-1b 15
lmx_run bf16_events $M/llama-1b 10 LMX_TAPE_PROFILE=events
peft_run bf16
lmx_run q4 $M/llama-1b-mlx4 15
lmx_run q4_events $M/llama-1b-mlx4 10 LMX_TAPE_PROFILE=events
PYTHONPATH=/tmp/bnb${PYTHONPATH:+:$PYTHONPATH} peft_run qlora --load-4bit
date -u
