#!/bin/sh
# speculative_bench.sh - plain vs speculative greedy decoding on the pair made by
# bench/make_speculative_pair.py, same prompt, same run. Checks that every
# speculative output is identical to the plain one, prints tok/s and acceptance.
# usage: bench/speculative_bench.sh LMX PAIR_DIR [MAX_TOKENS] [extra lmx flags...]
set -eu
lmx=$1 pair=$2 m=${3:-128}
shift 2; [ $# -gt 0 ] && shift
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
run() { # $1 = label, rest = extra flags
  label=$1; shift
  "$lmx" generate --model "$pair/target" --prompt "The history of the city begins" -m "$m" --temp 0 \
    --ignore-chat-template "$@" > "$tmp/$label.out" 2> "$tmp/$label.err"
  sed -n '/^==========$/,/^==========$/p' "$tmp/$label.out" > "$tmp/$label.text"
  tps=$(grep -o 'Generation: [0-9]* tokens, [0-9.]*' "$tmp/$label.out" | awk '{print $4}')
  acc=$(grep -o 'Draft acceptance: .*' "$tmp/$label.out" || true)
  echo "$label: generation $tps tok/s ${acc:+($acc)}"
}
run plain "$@"
for k in 2 3 4 6; do
  run "draft$k" --draft-model "$pair/draft" --num-draft-tokens $k "$@"
  if cmp -s "$tmp/plain.text" "$tmp/draft$k.text"; then echo "  output identical to plain"; else echo "  OUTPUT DIFFERS"; diff "$tmp/plain.text" "$tmp/draft$k.text" | head -5; exit 1; fi
done
