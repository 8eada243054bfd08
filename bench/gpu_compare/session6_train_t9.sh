#!/bin/sh
# Session 6 (t9): LoRA training speed, lmx vs HF PEFT in the SAME call (synthetic llama-1b bf16, rank 8 on all
# linears, batch 4 x 512), with the tensor-core attention vjp and the adapter-factor (LoRA) kernels (default),
# their A/B switches (LMX_CUDA_ATTN_VJP=sgemm; LMX_CUDA_LORA_VJP=sgemm: cuBLAS for the LoRA factors'
# vjps) and LMX_CUDA_EXACT=1; the vjp tests and
# the vjp timings at llama-1b shapes first.
# Pack: PACK=.gpu-t9 EXTRA_BINS="lmx test_gpu_train test_cuda_vjps test_cuda_ops test_models_hf test_stories260k" sh tests/gpu/pack_for_gpu.sh build-cuda,
# copy this file into the pack; run: sh .gpu-t9/session6_train_t9.sh (carry [".gpu-t9"]).
R=$PWD; P=${P:-.gpu-t9}
mkdir -p /work && ln -sfn "$R" /work/wt-t9 # test binaries read tests/data at their build path
export LD_LIBRARY_PATH=$R/$P/lib:${LD_LIBRARY_PATH:-}
B=$R/$P/bin; rm -rf $B; mkdir -p $B; tar -xJf $P/bin.tar.xz -C $B
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
echo "$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader) $(date -u '+%F %T UTC')"
(python3 bench/make_synthetic_model.py --torch-device cuda --shape llama-1b --out /tmp/llama-1b > /dev/null 2>&1) &
timeout 120 $B/test_cuda_vjps > $OUT/vjps.out 2>&1; echo "== test_cuda_vjps rc=$?"
grep -E "FAIL|bf16 attention T512|lora M2048|passed" $OUT/vjps.out | cut -c1-160
for v in "new:" "sgemm:LMX_CUDA_ATTN_VJP=sgemm LMX_CUDA_LORA_VJP=sgemm"; do l=${v%%:*}; e=${v#*:}
  env $e LMX_VJP_BENCH=bf16 timeout 60 $B/test_cuda_vjps 2>&1 | grep -E "attention|lora|matmul dx bf16 W .2048,2048" | sed "s/^/$l /"; done
wait
D=/tmp/d512; mkdir -p $D; python3 bench/make_lora_bench_data.py "$D" > /dev/null
run() { l=$1; shift
  env "$@" timeout 60 $B/lmx lora --model /tmp/llama-1b --train --data $D -c bench/gpu_compare/lora8.yaml --device cuda \
    --batch-size 4 --max-seq-length 512 --num-layers -1 --iters 15 --steps-per-report 5 --steps-per-eval 100000 --val-batches 1 \
    --learning-rate 1e-5 --adapter-path /tmp/ad_q > $OUT/lmx_$l.out 2>&1
  echo "== lmx $l rc=$?"; grep -E "Iter (10|15): Train loss|profile|rror" $OUT/lmx_$l.out | cut -c1-1200; }
run default LMX_TRAIN_PROFILE=1
run attn_sgemm LMX_TRAIN_PROFILE=1 LMX_CUDA_ATTN_VJP=sgemm
run lora_sgemm LMX_TRAIN_PROFILE=1 LMX_CUDA_LORA_VJP=sgemm
run exact LMX_TRAIN_PROFILE=1 LMX_CUDA_EXACT=1
${NO_EVENTS:+:} run events LMX_TAPE_PROFILE=events
timeout 150 python3 bench/peft_train_bench.py --model /tmp/llama-1b --batch 4 --seq 512 --rank 8 --scale 20 --steps 15 --warmup 3 \
  --lr 1e-5 > $OUT/peft_bf16.json 2> $OUT/peft_bf16.err
echo "== peft bf16 rc=$? $(tail -1 $OUT/peft_bf16.json)"; tail -2 $OUT/peft_bf16.err | cut -c1-300
timeout 150 $B/test_gpu_train > $OUT/train.out 2>&1; echo "== test_gpu_train rc=$?"; tail -2 $OUT/train.out
echo "end $(date -u '+%T UTC')"
for t in test_cuda_ops test_models_hf test_stories260k; do [ -x $B/$t ] || continue
  timeout 90 $B/$t > $OUT/$t.out 2>&1; echo "== $t rc=$?"; grep -E "FAIL" $OUT/$t.out | head -5; tail -1 $OUT/$t.out; done
