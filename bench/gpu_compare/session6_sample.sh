#!/bin/sh
# Sampled decoding on the device (cuda_sample_topp.cu): test_device_sampler on stories260K, then decode speed of a
# 1B-layer Q4_0 GGUF with a 128256-row Q6_K tied embedding (make_q4_0_gguf.py 1b-q6; needs .gpu-lead/py with the
# gguf package): greedy, sampled on the device, sampled on the host (LMX_DEVICE_SAMPLER=host), 256 tokens each,
# `lmx generate` reporting tokens-per-sec. carry [".gpu-lead"].
R=$PWD; P=$R/.gpu-lead
export LD_LIBRARY_PATH=$P/lib:${LD_LIBRARY_PATH:-}
B=$P/bin; mkdir -p $B; tar -xJf $P/bin.tar.xz -C $B
mkdir -p /work && [ -e /work/main ] || ln -sfn "$R" /work/main
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u
timeout 120 $B/test_device_sampler models/stories260K.gguf 2>&1 | tail -6
PYTHONPATH=$P/py timeout 90 python3 bench/make_q4_0_gguf.py /tmp/q6.gguf 1 models/stories260K.gguf 1b-q6 > /dev/null 2>&1
gen() { lab=$1; shift; env "$@" timeout 60 $B/lmx generate --model /tmp/q6.gguf --device cuda --prompt "Once upon a time" \
  -m 256 --seed 3 $GEN_ARGS 2>&1 | grep -E "^Generation" | sed "s/^/$lab: /"; }
for r in 1 2; do
  GEN_ARGS="--temp 0" gen "greedy r$r"
  GEN_ARGS="--temp 0.8 --top-p 0.9" gen "sampled device r$r"
  GEN_ARGS="--temp 0.8 --top-p 0.9" gen "sampled host r$r" LMX_DEVICE_SAMPLER=host
  GEN_ARGS="--temp 0.8 --top-k 40" gen "top-k 40 device r$r"
done
date -u
