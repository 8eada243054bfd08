#!/bin/sh
# Session 7: the logits processors (logit bias, repetition / presence / frequency penalties) on the device:
# test_device_sampler (stories260K), then decode speed of a 1B-layer Q4_0 GGUF with a 128256-row Q6_K tied
# embedding (make_q4_0_gguf.py 1b-q6; .gpu-lead/py holds the gguf package) with penalties, on the device and on
# the host path (LMX_DEVICE_SAMPLER=0 greedy / host sampled), 256 tokens each. carry [".gpu-lead"].
R=$PWD; P=$R/.gpu-lead
export LD_LIBRARY_PATH=$P/lib:${LD_LIBRARY_PATH:-}
B=$P/bin; mkdir -p $B; tar -xJf $P/bin.tar.xz -C $B
mkdir -p /work && [ -e /work/main ] || ln -sfn "$R" /work/main
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u
timeout 120 $B/test_device_sampler models/stories260K.gguf 2>&1 | tail -9
for t in test_decode_graph test_models_gguf; do LMX_DEVICE=cuda timeout 60 $B/$t > /tmp/t.log 2>&1; echo "$t rc=$? $(tail -1 /tmp/t.log)"; done
PYTHONPATH=$P/py timeout 90 python3 bench/make_q4_0_gguf.py /tmp/q6.gguf 1 models/stories260K.gguf 1b-q6 > /dev/null 2>&1
gen() { lab=$1; shift; env "$@" timeout 60 $B/lmx generate --model /tmp/q6.gguf --device cuda --prompt "Once upon a time" \
  -m 256 --seed 3 $GEN_ARGS 2>&1 | grep -E "^Generation" | sed "s/^/$lab: /"; }
PEN="--repetition-penalty 1.1 --presence-penalty 0.3 --frequency-penalty 0.2"
for r in 1 2; do
  GEN_ARGS="--temp 0" gen "greedy r$r"
  GEN_ARGS="--temp 0 $PEN" gen "greedy + penalties, device r$r"
  GEN_ARGS="--temp 0 $PEN" gen "greedy + penalties, host r$r" LMX_DEVICE_SAMPLER=0
  GEN_ARGS="--temp 0.8 --top-p 0.9 $PEN" gen "sampled + penalties, device r$r"
  GEN_ARGS="--temp 0.8 --top-p 0.9 $PEN" gen "sampled + penalties, host r$r" LMX_DEVICE_SAMPLER=host
done
date -u
