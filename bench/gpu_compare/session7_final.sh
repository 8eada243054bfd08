#!/bin/sh
# Session 7's final GPU call (carry [".gpu-lead"]: pack_for_gpu.sh output with EXTRA_BINS below, plus
# bnb-site.tar.xz for PEFT's QLoRA): the GPU suites on the final binaries, then LoRA training on the synthetic
# llama-1b (rank 8 on all linears, scale 20, batch 4 x 512, 15 iterations), lmx and HF PEFT alternating twice on
# the same card in the same call: bf16 base vs PEFT, MLX 4-bit g64 base vs PEFT QLoRA (bitsandbytes NF4).
# Pack: PACK=.gpu-lead EXTRA_BINS="test_gpu_train test_cuda_vjps test_decode_graph test_cuda_q4r test_cuda_q6r
#   test_cuda_attn_rows test_cuda_lora bench_cuda_vjps" sh tests/gpu/pack_for_gpu.sh build-cuda
R=$PWD; P=$R/.gpu-lead
export LD_LIBRARY_PATH=$P/lib:${LD_LIBRARY_PATH:-}
B=$P/bin; mkdir -p $B; tar -xJf $P/bin.tar.xz -C $B
mkdir -p /work && [ -e /work/main ] || ln -sfn "$R" /work/main
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
echo "$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader) $(date -u '+%F %T UTC')"
for t in test_cuda_vjps test_cuda_attn_rows test_cuda_lora test_gpu_train test_cuda_ops test_cuda_fused test_device_sampler \
         test_cuda_q4r test_cuda_q6r test_decode_graph; do
  [ -x $B/$t ] || { el "$t: not packed"; continue; }
  timeout 120 $B/$t > $OUT/$t.log 2>&1; el "$t rc=$? $(tail -1 $OUT/$t.log)"; grep "^FAIL" $OUT/$t.log | head -3; done
for t in test_models_gguf test_stories260k test_models_hf; do LMX_DEVICE=cuda timeout 60 $B/$t > $OUT/$t.log 2>&1; el "$t (cuda) rc=$? $(tail -1 $OUT/$t.log)"; done
[ "${SKIP_TRAIN:-0}" = 1 ] && exit 0
M=/tmp/g2m; mkdir -p $M
[ -f $M/llama-1b/config.json ] || python3 bench/make_synthetic_model.py --torch-device cuda --shape llama-1b --out $M/llama-1b > /dev/null 2>&1
[ -f $M/llama-1b-mlx4/config.json ] || $B/lmx convert --hf-path $M/llama-1b --mlx-path $M/llama-1b-mlx4 -q --q-bits 4 --q-group-size 64 > /dev/null 2>&1
mkdir -p /tmp/bnb && xz -dc $P/bnb-site.tar.xz | tar -xf - -C /tmp/bnb
D=/tmp/d512; mkdir -p $D; python3 bench/make_lora_bench_data.py "$D"
el "models ready"
lmx_run() { # label model [env...]
  l=$1; m=$2; shift 2
  env "$@" LMX_TRAIN_PROFILE=1 timeout 90 $B/lmx lora --model $m --train --data $D -c bench/gpu_compare/lora8.yaml --device cuda \
    --batch-size 4 --max-seq-length 512 --num-layers -1 --iters 15 --steps-per-report 5 --steps-per-eval 100000 --val-batches 1 \
    --learning-rate 1e-5 --adapter-path /tmp/ad_$l > $OUT/lmx_$l.out 2>&1
  el "lmx $l rc=$?"; grep -E "Iter (10|15): Train loss|profile|rror" $OUT/lmx_$l.out | cut -c1-300
}
peft_run() { # label [flags...]
  l=$1; shift
  timeout 150 python3 bench/peft_train_bench.py --model $M/llama-1b --batch 4 --seq 512 --rank 8 --scale 20 --steps 15 --warmup 3 \
    --lr 1e-5 "$@" > $OUT/peft_$l.json 2> $OUT/peft_$l.err
  el "peft $l rc=$? $(tail -1 $OUT/peft_$l.json | cut -c1-400)"
}
for r in 1 2; do
  lmx_run bf16_r$r $M/llama-1b
  peft_run bf16_r$r
  lmx_run q4_r$r $M/llama-1b-mlx4
  PYTHONPATH=/tmp/bnb${PYTHONPATH:+:$PYTHONPATH} peft_run qlora_r$r --load-4bit
done
lmx_run bf16_events $M/llama-1b LMX_TAPE_PROFILE=events
date -u
