#!/bin/sh
# Session 7: 1,000 LoRA steps on the synthetic llama-1b (bf16 base, rank 8 on all linears, batch 4 x 512) on the
# GPU: the device's peak memory at every 100-step report and the process's device memory (nvidia-smi) beside it,
# to show no growth (carry [".gpu-lead"]).
R=$PWD; P=$R/.gpu-lead
export LD_LIBRARY_PATH=$P/lib:${LD_LIBRARY_PATH:-}
B=$P/bin; mkdir -p $B; [ -x $B/lmx ] || tar -xJf $P/bin.tar.xz -C $B
M=/tmp/g2m; mkdir -p $M
[ -f $M/llama-1b/config.json ] || python3 bench/make_synthetic_model.py --torch-device cuda --shape llama-1b --out $M/llama-1b > /dev/null 2>&1
D=/tmp/d512; mkdir -p $D; [ -f $D/train.jsonl ] || python3 bench/make_lora_bench_data.py "$D"
echo "$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader) $(date -u '+%F %T UTC')"
timeout 200 $B/lmx lora --model $M/llama-1b --train --data $D -c bench/gpu_compare/lora8.yaml --device cuda \
  --batch-size 4 --max-seq-length 512 --num-layers -1 --iters ${ITERS:-1000} --steps-per-report 100 --steps-per-eval 100000 \
  --val-batches 1 --learning-rate 1e-5 --adapter-path /tmp/ad_mem > /tmp/mem.out 2>&1 &
pid=$!
while kill -0 $pid 2>/dev/null; do
  sleep 5; echo "smi $(date -u +%T) $(nvidia-smi --query-compute-apps=used_memory --format=csv,noheader | head -1)"
done
wait $pid; echo "rc=$?"
grep -E "Iter [0-9]+: Train loss|rror" /tmp/mem.out | cut -c1-200
date -u
