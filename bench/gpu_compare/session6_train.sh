#!/bin/sh
# Session 6: LoRA training speed, lmx and HF PEFT in the SAME call (carry [".gpu-lead"]: pack_for_gpu.sh output plus
# bnb-site.tar.xz, bitsandbytes 0.50.2 from pip with only its CUDA 13.0 library kept, for PEFT's QLoRA). Synthetic
# llama-1b, rank 8 on all linears, scale 20, batch 4 x 512, 15 iterations:
#   bf16 base: lmx (default: bf16-rounded GEMM operands), lmx LMX_CUDA_EXACT=1, PEFT (bf16 model, f32 adapters);
#   4-bit base: lmx on its MLX 4-bit g64 convert, PEFT QLoRA (bitsandbytes NF4, bf16 compute).
# Reuses the folders of compare_llamacpp_cuda.sh's prep when the machine is warm (/tmp/g2m), else makes them.
R=$PWD; P=.gpu-lead
export LD_LIBRARY_PATH=$R/$P/lib:${LD_LIBRARY_PATH:-}
B=$R/$P/bin; mkdir -p $B; [ -x $B/lmx ] || tar -xJf $P/bin.tar.xz -C $B
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
echo "$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader) $(date -u '+%F %T UTC')"
M=$(ls -d /tmp/g2m /dev/shm/g2m 2>/dev/null | head -1); M=${M:-/tmp/g2m}; mkdir -p $M
[ -f $M/llama-1b/config.json ] || python3 bench/make_synthetic_model.py --torch-device cuda --shape llama-1b --out $M/llama-1b > /dev/null 2>&1
[ -f $M/llama-1b-mlx4/config.json ] || $B/lmx convert --hf-path $M/llama-1b --mlx-path $M/llama-1b-mlx4 -q --q-bits 4 --q-group-size 64 > /dev/null 2>&1
mkdir -p /tmp/bnb && xz -dc $P/bnb-site.tar.xz | tar -xf - -C /tmp/bnb
D=/tmp/d512; mkdir -p $D; python3 bench/make_lora_bench_data.py "$D"
lmx_run() { # label model [env...]
  l=$1; m=$2; shift 2
  env "$@" LMX_TRAIN_PROFILE=1 timeout 60 $B/lmx lora --model $m --train --data $D -c bench/gpu_compare/lora8.yaml --device cuda \
    --batch-size 4 --max-seq-length 512 --num-layers -1 --iters 15 --steps-per-report 5 --steps-per-eval 100000 --val-batches 1 \
    --learning-rate 1e-5 --adapter-path /tmp/ad_$l > $OUT/lmx_$l.out 2>&1
  echo "== lmx $l rc=$?"; grep -E "Iter (10|15): Train loss|profile|rror" $OUT/lmx_$l.out | cut -c1-300
}
peft_run() { # label [flags...]
  l=$1; shift
  timeout 150 python3 bench/peft_train_bench.py --model $M/llama-1b --batch 4 --seq 512 --rank 8 --scale 20 --steps 15 --warmup 3 \
    --lr 1e-5 "$@" > $OUT/peft_$l.json 2> $OUT/peft_$l.err
  echo "== peft $l rc=$? $(tail -1 $OUT/peft_$l.json)"; tail -2 $OUT/peft_$l.err | cut -c1-300
}
lmx_run bf16 $M/llama-1b
lmx_run bf16_exact $M/llama-1b LMX_CUDA_EXACT=1
peft_run bf16
lmx_run q4 $M/llama-1b-mlx4
PYTHONPATH=/tmp/bnb${PYTHONPATH:+:$PYTHONPATH} peft_run qlora --load-4bit
