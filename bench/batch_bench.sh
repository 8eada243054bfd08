#!/bin/sh
# batch_bench.sh - `lmx generate --prompts-file` timings of two lmx binaries
# (e.g. before/after a change), interleaved, on the model and prompt files
# made by bench/make_batch_bench.py. Checks that both binaries print the same
# texts (greedy), prints wall time, the CLI's prompt and generation tok/s and
# the load average before each run.
# usage: bench/batch_bench.sh LMX_A LMX_B MODEL_DIR NPROMPTS BATCH MAX_TOKENS [extra lmx flags...]
set -eu
a=$1 b=$2 model=$3 np=$4 bs=$5 m=$6
shift 6
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for bin in "$a" "$b"; do
  label=$(basename "$bin")
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  t0=$(date +%s.%N)
  "$bin" generate --model "$model" --prompts-file "$model/prompts$np.txt" --batch-size "$bs" -m "$m" --temp 0 \
    "$@" > "$tmp/$label.out"
  t1=$(date +%s.%N)
  grep -v '^\[batch_generate\]' "$tmp/$label.out" > "$tmp/$label.text"
  p=$(grep -o 'Prompt: [0-9]* tokens, [0-9.]*' "$tmp/$label.out" | awk '{print $2 " tok, " $4 " tok/s"}')
  g=$(grep -o 'Generation: [0-9]* tokens, [0-9.]*' "$tmp/$label.out" | awk '{print $2 " tok, " $4 " tok/s"}')
  # time inside lmx_batch_generate (no model load): prompt_time + generation time as the CLI splits it
  bt=$(grep -o -E '(Prompt|Generation): [0-9]* tokens, [0-9.]*' "$tmp/$label.out" |
       awk '$4 > 0 { t += $2 / $4 } END { printf "%.2f", t }')
  echo "$label prompts=$np batch=$bs -m $m: wall $(awk "BEGIN { printf \"%.2f\", $t1 - $t0 }") s, batch $bt s; prompt $p; generation $g; load $load"
done
if cmp -s "$tmp/$(basename "$a").text" "$tmp/$(basename "$b").text"; then echo "  texts identical"; else echo "  TEXTS DIFFER"; fi
