#!/bin/sh
# test_fuse.sh LMX SOURCE_DIR EXAMPLE - `lmx fuse` and --adapter-path end to end
# with the mlx-lm-made adapter fixtures (tests/data/adapters): a fused folder
# is written atomically (no temporary folder left, never over an existing
# one) and its logits differ from the base's (values are checked against
# base + adapters and mlx-lm in the unit test test_fuse); bad paths, model
# mismatches and --device cuda give one-line errors with exit status 1,
# unknown flags 2; every generation command lists --adapter-path.
LMX=$1
SRC=$2
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "PASS $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1: $2"; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
M=$SRC/tests/data/hf/llama
A=$SRC/tests/data/adapters/llama_lora

out=$("$LMX" fuse --model "$M" --adapter-path "$A" --save-path "$TMP/fused" 2>&1)
[ $? -eq 0 ] && ok fuse_runs || bad fuse_runs "$out"
printf '%s\n' "$out" | head -1 | grep -q "^Loading pretrained model$" && ok fuse_loading_line || bad fuse_loading_line "$out"
printf '%s\n' "$out" | grep -q "Fused 7 modules (7 tensors)" && ok fuse_summary || bad fuse_summary "$out"
for f in config.json model.safetensors model.safetensors.index.json README.md generation_config.json; do
    [ -f "$TMP/fused/$f" ] || bad fuse_files "missing $f"
done
ok fuse_files
cmp -s "$M/model.safetensors" "$TMP/fused/model.safetensors" && bad fuse_changed "weights unchanged" || ok fuse_changed
ls -a "$TMP" | grep -q "lmx-tmp" && bad fuse_no_temp "temporary folder left" || ok fuse_no_temp

# the fused folder's logits equal base + adapter's (written as files, compared by size and difference from base)
"$LMX" logits --model "$TMP/fused" --tokens 1,5,17,42 --out "$TMP/fused.st" >/dev/null 2>&1 && ok fused_logits || bad fused_logits ""
"$LMX" logits --model "$M" --tokens 1,5,17,42 --out "$TMP/base.st" >/dev/null 2>&1
cmp -s "$TMP/fused.st" "$TMP/base.st" && bad fused_differs "fused logits equal the base's" || ok fused_differs

out=$("$LMX" fuse --model "$M" --adapter-path "$A" --save-path "$TMP/fused" 2>&1)
rc=$?
[ $rc -eq 1 ] && printf '%s\n' "$out" | grep -q "already exists" && ok fuse_existing_refused || bad fuse_existing_refused "$rc $out"

out=$("$LMX" fuse --model "$M" --adapter-path "$TMP/none" --save-path "$TMP/f2" 2>&1)
rc=$?
[ $rc -eq 1 ] && [ "$(printf '%s\n' "$out" | wc -l)" -eq 2 ] && printf '%s\n' "$out" | grep -q "adapter path does not exist" \
    && ok fuse_missing_adapter || bad fuse_missing_adapter "$rc $out"
[ -e "$TMP/f2" ] && bad fuse_nothing_written "$TMP/f2 exists" || ok fuse_nothing_written

out=$("$LMX" fuse --model "$SRC/tests/data/hf/phi3" --adapter-path "$SRC/tests/data/adapters/phi3_lora" \
    --save-path "$TMP/f3" --export-gguf 2>&1)
[ $? -eq 1 ] && printf '%s\n' "$out" | grep -q "Model type phi3 not supported for GGUF conversion" \
    && ok fuse_gguf_family || bad fuse_gguf_family "$out"

"$LMX" fuse --bogus 2>/dev/null
[ $? -eq 2 ] && ok fuse_unknown_flag || bad fuse_unknown_flag ""
"$LMX" fuse --help | grep -q -- "--dequantize" && ok fuse_help || bad fuse_help ""

# --adapter-path on the generation commands (bench needs no tokenizer)
out=$("$LMX" bench --model "$M" --adapter-path "$A" -p 8 -g 4 -n 1 --device cpu 2>&1)
[ $? -eq 0 ] && ok bench_adapter || bad bench_adapter "$out"
out=$("$LMX" bench --model "$M" --adapter-path "$A" -p 8 -g 4 -n 1 --device cuda 2>&1)
# adapters run on CUDA (uploaded once); without a GPU the error names the device
rc=$?
{ [ $rc -eq 0 ] || { [ $rc -eq 1 ] && printf '%s\n' "$out" | grep -qi "cuda"; }; } && ok adapter_cuda || bad adapter_cuda "$out"
out=$("$LMX" bench --model "$SRC/tests/data/hf/phi3" --adapter-path "$A" -p 8 -g 4 -n 1 2>&1)
[ $? -eq 1 ] && printf '%s\n' "$out" | grep -q "not an adapter parameter" && ok adapter_mismatch || bad adapter_mismatch "$out"
for c in generate chat cache-prompt bench; do
    "$LMX" $c --help | grep -q -- "--adapter-path" || bad help_$c "no --adapter-path in --help"
done
ok help_adapter_path

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
