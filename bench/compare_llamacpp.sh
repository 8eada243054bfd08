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
# Environment: P (512), G (128), R (5) override the sizes. INTERLEAVE=1 runs
# R rounds of one trial each instead (llama-bench -r 1, lmx bench -n 1, the
# tool that goes first alternating per round), so that both see the same
# background load on a shared machine; files get a .ROUND suffix and the
# summary merges them.
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
if [ "${INTERLEAVE:-0}" = 1 ]; then
  for m in "$@"; do
    name=$(basename "$m" .gguf)
    i=1
    while [ "$i" -le "$R" ]; do
      for who in $( [ $((i % 2)) = 1 ] && echo "cpp lmx" || echo "lmx cpp" ); do
        echo "$name round $i $who start load: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$log"
        if [ "$who" = cpp ]; then
          "$lb" -m "$m" -t 2 -p "$P" -n "$G" -r 1 -o json > "$out/$name.llamacpp.$i.json" 2> "$out/$name.llamacpp.$i.err" || true
        else
          "$lmx" bench --model "$m" -p "$P" -g "$G" -n 1 --threads 2 --json > "$out/$name.lmx.$i.json" 2> "$out/$name.lmx.$i.err" || true
        fi
      done
      i=$((i + 1))
    done
    echo "$name done load: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$log"
  done
  [ -x "$bw" ] && "$bw" 4 5 2 --json > "$out/bandwidth_after.json"
  echo "end: $(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$log"
  exit 0
fi
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
