#!/bin/sh
# compare_llamacpp.sh - lmx vs llama.cpp on the same GGUF files, one session.
#
# usage: bench/compare_llamacpp.sh OUT_DIR LLAMA_BENCH LMX MODEL.gguf...
#   LLAMA_BENCH: a llama-bench built outside this repository (see
#   bench/RESULTS.md for the pinned commit and build line); LMX: build/lmx.
# For each model, in turn: llama-bench -t 2 -p 512 -n 128 -r 5 -o json, then
# lmx bench --model M -p 512 -g 128 -n 5 --threads 2 --json. The memory read
# bandwidth probe (lmx_bandwidth, next to LMX) runs before and after, and the
# load average is logged around every run, because other jobs share the cores.
# Summarise with: python3 bench/summarize_compare.py OUT_DIR
# Environment: P (512), G (128), R (5) override the sizes.
set -eu
out=$1 lb=$2 lmx=$3
shift 3
P=${P:-512} G=${G:-128} R=${R:-5}
mkdir -p "$out"
bw="$(dirname "$lmx")/lmx_bandwidth"
log="$out/session.log"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "lmx commit: $(git -C "$(dirname "$0")/.." rev-parse --short HEAD 2>/dev/null || echo unknown) (working tree may differ)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2) x $(nproc)"
  echo "sizes: p=$P g=$G reps=$R"
} > "$log"
[ -x "$bw" ] && "$bw" 4 5 2 --json > "$out/bandwidth_before.json"
for m in "$@"; do
  name=$(basename "$m" .gguf)
  echo "$name llama.cpp start load: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$log"
  "$lb" -m "$m" -t 2 -p "$P" -n "$G" -r "$R" -o json > "$out/$name.llamacpp.json" 2> "$out/$name.llamacpp.err" || true
  echo "$name lmx start load: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$log"
  "$lmx" bench --model "$m" -p "$P" -g "$G" -n "$R" --threads 2 --json > "$out/$name.lmx.json" 2> "$out/$name.lmx.err" || true
  echo "$name done load: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$log"
done
[ -x "$bw" ] && "$bw" 4 5 2 --json > "$out/bandwidth_after.json"
echo "end: $(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$log"
