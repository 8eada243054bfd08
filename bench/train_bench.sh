#!/bin/sh
# train_bench.sh - `lmx lora` training speed (tokens/s, it/s, peak memory) of
# two lmx binaries (before/after a change) and of mlx-lm's `mlx_lm.lora`,
# interleaved, with the load average logged beside every number (the box is
# shared: compare numbers of the same round only).
#
# usage: bench/train_bench.sh LMX_BEFORE LMX_AFTER [speed|memory] (from the source root)
#   speed  - stories260K (hf + chat tokenizer, tests/data/train/shakespeare, batch 8,
#            50 iters, lr 2e-3, all layers, --mask-prompt): before, after, mlx-lm;
#            ROUNDS rounds. Then the llama-1b shape (rank 8 on all 7 linears of all
#            16 blocks, seq 128 = --max-seq-length 128 on ~160-token texts): bf16 and
#            MLX 4-bit base, batch 1, ITERS_1B iterations, before and after; bf16
#            batch 4 after only (the reference vjps need minutes per iteration there).
#   memory - stories260K batch 8 for 1000 iterations with LMX_AFTER: the report's
#            Peak mem (peak RSS) at iter 100 vs 1000, and RSS from /proc at the end.
# env: LLAMA1B (/tmp/llama-1b), LLAMA1B_MLX4 (/tmp/llama-1b-mlx4): made by
#      bench/make_synthetic_model.py --shape llama-1b (+ mlx_lm.convert -q); skipped
#      when missing. ITERS_1B (2), ROUNDS (2), MLX (1: run mlx-lm; needs pip mlx mlx-lm).
# Reported: for stories the mean over the report lines after the first (the
# first 10 iterations include warm-up); for llama-1b the last iteration's line.
set -eu
before=$1 after=$2 mode=${3:-speed}
src=$(pwd)
[ -f "$src/tests/data/stories260K/hf/config.json" ] || { echo "run from the source root" >&2; exit 2; }
L1B=${LLAMA1B:-/tmp/llama-1b} L1BQ=${LLAMA1B_MLX4:-/tmp/llama-1b-mlx4}
ITERS_1B=${ITERS_1B:-2} ROUNDS=${ROUNDS:-2} MLX=${MLX:-1}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/s260"
cp "$src"/tests/data/stories260K/hf/* "$src"/tests/data/stories260K/chat/* "$tmp/s260/"
data=$src/tests/data/train/shakespeare

load() { cut -d' ' -f1-3 /proc/loadavg; }

# lmx report lines -> "it/s tok/s peakGB" (mean over lines after the first, or the last line with LAST=1)
lmx_stats() {
  grep 'Train loss' "$1" | sed 's/.*It\/sec \([0-9.]*\), Tokens\/sec \([0-9.]*\),.*Peak mem \([0-9.]*\) GB.*/\1 \2 \3/' |
    awk -v last="${LAST:-0}" '{ n++; if (n > 1 || last) { i += $1; t += $2; c++ } p = $3; li = $1; lt = $2 }
      END { if (last) printf "%.3f it/s, %.2f tok/s, peak %.3f GB", li, lt, p;
            else if (c) printf "%.3f it/s, %.1f tok/s, peak %.3f GB", i / c, t / c, p; else printf "no report" }'
}

run_lmx() { # label bin model outfile flags...
  label=$1 bin=$2 model=$3 out=$4
  shift 4
  l=$(load)
  if ! "$bin" lora --model "$model" --train --adapter-path "$tmp/ad" "$@" > "$out" 2>&1; then
    echo "$label: FAILED ($(tail -1 "$out"))"
    return 0
  fi
  echo "$label: $(lmx_stats "$out")  (load before: $l)"
}

stories_flags="--data $data --iters 50 --batch-size 8 --learning-rate 2e-3 --num-layers -1 --mask-prompt"

speed() {
  echo "== stories260K, batch 8, 50 iters ($(date -u '+%Y-%m-%d %H:%M UTC'))"
  r=1
  while [ "$r" -le "$ROUNDS" ]; do
    # shellcheck disable=SC2086
    run_lmx "round $r lmx before" "$before" "$tmp/s260" "$tmp/b.out" $stories_flags
    # shellcheck disable=SC2086
    run_lmx "round $r lmx after " "$after" "$tmp/s260" "$tmp/a.out" $stories_flags
    if [ "$MLX" = 1 ]; then
      l=$(load)
      # shellcheck disable=SC2086
      if python3 -m mlx_lm lora --model "$tmp/s260" --train --adapter-path "$tmp/mad" $stories_flags \
           > "$tmp/m.out" 2>&1; then
        # the rich table: "iter loss arrow tok/s tokens"; colours stripped; val rows skipped
        tps=$(sed 's/\x1b\[[0-9;]*m//g' "$tmp/m.out" |
          awk '$1 ~ /^[0-9]+$/ && $2 ~ /^[0-9.]+$/ && $4 ~ /^[0-9.]+$/ { n++; if (n > 1) { s += $4; c++ } }
               END { if (c) printf "%.1f", s / c; else printf "?" }')
        echo "round $r mlx-lm     : $tps tok/s  (load before: $l)"
      else
        echo "round $r mlx-lm: FAILED ($(tail -1 "$tmp/m.out"))"
      fi
    fi
    r=$((r + 1))
  done
  mkdir "$tmp/d128"
  python3 - "$data/train.jsonl" "$tmp/d128" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
words = " ".join(r["messages"][1]["content"].replace("\n", " ") for r in rows).split()
texts = [" ".join(words[i:i + 95]) for i in range(0, 24 * 95, 95)]  # ~160 Llama 3 tokens each
for name, part in (("train", texts[:20]), ("valid", texts[20:])):
    with open(f"{sys.argv[2]}/{name}.jsonl", "w") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in part)
EOF
  f1b="--data $tmp/d128 --max-seq-length 128 --num-layers -1 --steps-per-report 1 --steps-per-eval 100000 --val-batches 1"
  for m in "$L1B" "$L1BQ"; do
    [ -f "$m/config.json" ] || { echo "== $m: missing, skipped"; continue; }
    echo "== $(basename "$m"), rank 8, all linear layers, seq 128, batch 1, $ITERS_1B iters (last iteration)"
    # shellcheck disable=SC2086
    LAST=1 run_lmx "lmx before" "$before" "$m" "$tmp/b.out" $f1b --batch-size 1 --iters "$ITERS_1B"
    # shellcheck disable=SC2086
    LAST=1 run_lmx "lmx after " "$after" "$m" "$tmp/a.out" $f1b --batch-size 1 --iters "$ITERS_1B"
  done
  if [ -f "$L1B/config.json" ]; then
    echo "== $(basename "$L1B"), batch 4, $ITERS_1B iters (after only)"
    # shellcheck disable=SC2086
    LAST=1 run_lmx "lmx after " "$after" "$L1B" "$tmp/a.out" $f1b --batch-size 4 --iters "$ITERS_1B"
  fi
}

memory() {
  echo "== stories260K, batch 8, 1000 iters, $after ($(date -u '+%Y-%m-%d %H:%M UTC'), load before: $(load))"
  # shellcheck disable=SC2086
  "$after" lora --model "$tmp/s260" --train --adapter-path "$tmp/ad" $stories_flags --iters 1000 \
    --steps-per-report 100 --steps-per-eval 100000 > "$tmp/mem.out" 2>&1 &
  pid=$!
  rss=0
  while kill -0 "$pid" 2>/dev/null; do # current RSS (not only the peak) every second
    r=$(awk '/VmRSS/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
    [ -n "$r" ] && echo "$r" >> "$tmp/rss.txt"
    sleep 1
  done
  wait "$pid" || { echo "FAILED: $(tail -1 "$tmp/mem.out")"; return 1; }
  grep 'Train loss' "$tmp/mem.out" | sed 's/^\(Iter [0-9]*\):.*It\/sec \([0-9.]*\), Tokens\/sec \([0-9.]*\),.*\(Peak mem [0-9.]* GB\).*/\1: \2 it\/s, \3 tok\/s, \4/'
  awk '{ r[NR] = $1 } END { h = int(NR / 2); for (i = 1; i <= NR; i++) if (i <= h) { if (r[i] > a) a = r[i] } else if (r[i] > b) b = r[i];
         printf "RSS sampled each second (%d samples): max of the first half %.1f MB, of the second half %.1f MB, last %.1f MB\n",
                NR, a / 1024, b / 1024, r[NR] / 1024 }' "$tmp/rss.txt"
  echo "load after: $(load)"
}

case $mode in
speed) speed ;;
memory) memory ;;
*) echo "usage: $0 LMX_BEFORE LMX_AFTER [speed|memory]" >&2; exit 2 ;;
esac
