#!/bin/sh
# Session 5: LoRA training speed, lmx (merged binaries; bf16-rounded GEMM operands are now the CUDA default) and
# HF PEFT in the SAME call (synthetic llama-1b bf16, rank 8 on all linears, batch 4 x 512). carry [".gpu-lead"].
R=$PWD; P=.gpu-lead
export LD_LIBRARY_PATH=$R/$P/lib:${LD_LIBRARY_PATH:-}
B=$R/$P/bin; mkdir -p $B; [ -x $B/lmx ] || tar -xJf $P/bin.tar.xz -C $B
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
echo "$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader) $(date -u '+%F %T UTC')"
python3 bench/make_synthetic_model.py --torch-device cuda --shape llama-1b --out /tmp/llama-1b > /dev/null 2>&1
D=/tmp/d512; mkdir -p $D; python3 bench/make_lora_bench_data.py "$D"
cat > /tmp/lora8.yaml <<'Y'
lora_parameters:
  keys: ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
  rank: 8
  scale: 20.0
  dropout: 0.0
Y
for v in "default:" "exact:LMX_CUDA_EXACT=1"; do
  l=${v%%:*}; e=${v#*:}
  env $e LMX_TRAIN_PROFILE=1 timeout 40 $B/lmx lora --model /tmp/llama-1b --train --data $D -c /tmp/lora8.yaml --device cuda \
    --batch-size 4 --max-seq-length 512 --num-layers -1 --iters 15 --steps-per-report 5 --steps-per-eval 100000 --val-batches 1 \
    --learning-rate 1e-5 --adapter-path /tmp/ad_q > $OUT/lmx_$l.out 2>&1
  echo "== lmx $l rc=$?"; grep -E "Iter (10|15): Train loss|profile|rror" $OUT/lmx_$l.out | cut -c1-300
done
timeout 150 python3 bench/peft_train_bench.py --model /tmp/llama-1b --batch 4 --seq 512 --rank 8 --scale 20 --steps 15 --warmup 3 \
  --lr 1e-5 > $OUT/peft_bf16.json 2> $OUT/peft_bf16.err
echo "== peft bf16 rc=$? $(tail -1 $OUT/peft_bf16.json)"; tail -2 $OUT/peft_bf16.err | cut -c1-300
