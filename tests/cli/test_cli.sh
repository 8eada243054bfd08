#!/bin/sh
# test_cli.sh LMX SOURCE_DIR EXAMPLE - drives the real binaries end to end.
# Checks mlx-lm's output format for generate, stdin prompts, logits files,
# bench JSON, --help/--version, and the C-API example program.
LMX=$1
SRC=$2
EXAMPLE=$3
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "PASS $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1: $2"; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# generate with the bundled model: streamed text between separators, then the stats lines
out=$("$LMX" generate --prompt "Once upon a time" --max-tokens 40 2>&1)
first=$(printf '%s\n' "$out" | head -1)
[ "$first" = "==========" ] && ok generate_header || bad generate_header "$first"
printf '%s\n' "$out" | grep -q "^, there was a little girl named Lily" && ok generate_text || bad generate_text "$out"
printf '%s\n' "$out" | grep -Eq '^Prompt: 5 tokens, [0-9]+\.[0-9]{3} tokens-per-sec$' && ok generate_prompt_stats || bad generate_prompt_stats "$out"
printf '%s\n' "$out" | grep -Eq '^Generation: 40 tokens, [0-9]+\.[0-9]{3} tokens-per-sec$' && ok generate_gen_stats || bad generate_gen_stats "$out"
printf '%s\n' "$out" | grep -Eq '^Peak memory: [0-9]+\.[0-9]{3} GB$' && ok generate_mem_stats || bad generate_mem_stats "$out"

# --verbose false prints only the text; -p - reads stdin
out=$(printf 'Once upon a time' | "$LMX" generate -p - -m 12 --verbose false 2>&1)
case "$out" in
", there was a little girl named Lily"*) ok stdin_quiet ;;
*) bad stdin_quiet "$out" ;;
esac
printf '%s\n' "$out" | grep -q "Prompt:" && bad quiet_has_no_stats "$out" || ok quiet_has_no_stats

# sampling with a seed is reproducible
a=$("$LMX" generate -p "Once" -m 30 --temp 0.9 --top-p 0.9 --seed 42 --verbose false)
b=$("$LMX" generate -p "Once" -m 30 --temp 0.9 --top-p 0.9 --seed 42 --verbose false)
[ "$a" = "$b" ] && [ -n "$a" ] && ok seeded_sampling || bad seeded_sampling "$a / $b"

# --extra-eos-token stops generation (by id and by token string)
out=$("$LMX" generate -p "Once upon a time" -m 40 --extra-eos-token 432 --verbose false)
case "$out" in *,*) bad extra_eos_id "$out" ;; *) ok extra_eos_id ;; esac
out=$("$LMX" generate -p "Once upon a time" -m 40 --extra-eos-token "." --verbose false)
case "$out" in *Lily*) case "$out" in *.*) bad extra_eos_str "$out" ;; *) ok extra_eos_str ;; esac ;; *) bad extra_eos_str "$out" ;; esac

# logits: a safetensors file with tensor "logits" [T, vocab]
"$LMX" logits --tokens 1,403,407 --out "$TMP/l.safetensors" && [ -s "$TMP/l.safetensors" ] && ok logits_file || bad logits_file "no file"
head -c 200 "$TMP/l.safetensors" | grep -q '"logits":{"dtype":"F32","shape":\[3,512\]' && ok logits_header || bad logits_header "$(head -c 120 "$TMP/l.safetensors")"

# bench --json on the tiny model
out=$("$LMX" bench -p 8 -g 4 -n 1 --json)
printf '%s' "$out" | grep -q '"averages": {"prompt_tps"' && ok bench_json || bad bench_json "$out"
# the memory bound fields: KV bytes > 0 and the verdict, and the prefill chunk in use
printf '%s' "$out" | grep -Eq '"kv_cache_bytes": [1-9][0-9]*, "peak_memory_bound": [0-9.]+, "peak_within_bound": (true|false)' \
  && ok bench_json_bound || bad bench_json_bound "$out"
out=$("$LMX" bench -p 8 -g 4 -n 1 --json --prefill-step-size 3)
printf '%s' "$out" | grep -q '"prefill_step_size": 3,' && ok bench_prefill_step || bad bench_prefill_step "$out"
out=$("$LMX" bench -p 8 -g 4 -n 1 --prefill-step-size 0 2>&1)
rc=$?
[ $rc -ne 0 ] && printf '%s\n' "$out" | grep -q -- "--prefill-step-size" && [ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] \
  && ok bench_bad_prefill_step || bad bench_bad_prefill_step "rc=$rc $out"

# perplexity: plain text works; malformed jsonl, missing file and bad flags are one-line errors
printf 'Once upon a time there was a cat. The cat was happy and played all day.\n' > "$TMP/p.txt"
"$LMX" perplexity --data "$TMP/p.txt" --sequence-length 16 2>&1 | grep -Eq '^Perplexity: [0-9.]+ ± [0-9.]+$' && ok perplexity || bad perplexity "no Perplexity line"
printf '{"text": "ok"}\n{"text": broken\n' > "$TMP/bad.jsonl"
err=$("$LMX" perplexity --data "$TMP/bad.jsonl" 2>&1 >/dev/null); rc=$?
[ $rc -ne 0 ] && printf '%s' "$err" | grep -q 'bad.jsonl:2: not valid JSON' && ok perplexity_bad_jsonl || bad perplexity_bad_jsonl "rc=$rc $err"
"$LMX" perplexity --data "$TMP/missing.txt" >/dev/null 2>&1 && bad perplexity_missing "exit 0" || ok perplexity_missing
"$LMX" perplexity --data "$TMP/p.txt" --sequence-length -3 >/dev/null 2>&1; [ $? -eq 2 ] && ok perplexity_bad_flag || bad perplexity_bad_flag "exit not 2"

# help and version
"$LMX" --version | grep -Eq '^lmx [0-9]+\.[0-9]+\.[0-9]+$' && ok version || bad version "$("$LMX" --version)"
"$LMX" --help | grep -q generate && ok help || bad help ""
"$LMX" generate --help | grep -q -- "--max-tokens" && ok generate_help || bad generate_help ""

# the C-API example program
out=$("$EXAMPLE" "$SRC/models/stories260K.gguf" "Once upon a time" 20)
printf '%s\n' "$out" | grep -q "^, there was a little girl" && printf '%s\n' "$out" | grep -q '^\[20 tokens\]$' && ok example_program || bad example_program "$out"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
