#!/bin/sh
# T8 quick LoRA training timing on the GPU machine (synthetic llama-1b, rank 8 on all linears, batch 4 x 512), lmx in four modes; run from the repo root with the pack in .gpu-lead/.
# t8 quick re-measure on a warm machine: lmx bf16 default / fast / cuda graphs (model reused when present)
R=$PWD; P=.gpu-lead
export LD_LIBRARY_PATH=$R/$P/lib:${LD_LIBRARY_PATH:-}
B=$R/$P/bin; mkdir -p $B; [ -x $B/lmx ] || tar -xJf $P/bin.tar.xz -C $B
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
mkdir -p /work && [ -e /work/main ] || ln -sfn "$R" /work/main
timeout 60 $B/test_gpu_train > $OUT/test_gpu_train.log 2>&1; echo "test_gpu_train rc=$? $(tail -1 $OUT/test_gpu_train.log)"; grep FAIL $OUT/test_gpu_train.log | head -5
echo "$(nvidia-smi --query-gpu=name --format=csv,noheader) $(date -u '+%F %T UTC') model present: $([ -f /tmp/llama-1b/config.json ] && echo yes || echo no)"
[ -f /tmp/llama-1b/config.json ] || python3 bench/make_synthetic_model.py --torch-device cuda --shape llama-1b --out /tmp/llama-1b > /dev/null 2>&1
D=/tmp/d512; mkdir -p $D
python3 bench/make_lora_bench_data.py "$D"
cat > /tmp/lora8.yaml <<'Y'
lora_parameters:
  keys: ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
  rank: 8
  scale: 20.0
  dropout: 0.0
Y
T0=$(date +%s)
for v in "default:" "events:LMX_TAPE_PROFILE=events" "fast:LMX_CUDA_FAST_GEMM=1" "graphs:LMX_CUDA_GRAPHS=1"; do
  l=${v%%:*}; e=${v#*:}
  [ $(( $(date +%s) - T0 )) -gt 30 ] && { echo "skip $l (time)"; continue; }
  env $e LMX_TRAIN_PROFILE=1 timeout 20 $B/lmx lora --model /tmp/llama-1b --train --data /tmp/d512 -c /tmp/lora8.yaml --device cuda \
    --batch-size 4 --max-seq-length 512 --num-layers -1 --iters 10 --steps-per-report 5 --steps-per-eval 100000 --val-batches 1 \
    --learning-rate 1e-5 --adapter-path /tmp/ad_q > $OUT/q_$l.out 2>&1
  echo "== $l rc=$?"; grep -E "Train loss|profile|rror" $OUT/q_$l.out
done
