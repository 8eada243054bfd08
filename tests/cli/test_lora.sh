#!/bin/sh
# test_lora.sh LMX SOURCE_DIR EXAMPLE - `lmx lora` end to end on stories260K
# (HF folder + the chat tokenizer) and tests/data/train/dataset/chat: the
# YAML config with CLI overrides, mlx-lm's classic report lines, the
# learning rates a warm-up + cosine schedule gives at each report (the f32
# values of mlx.optimizers, see test_optim), checkpoints, adapter_config.json,
# --test on the saved adapters, and the errors for bad data and flags.
LMX=$1
SRC=$2
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "PASS $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1: $2"; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
M="$TMP/model"
mkdir "$M" && cp "$SRC"/tests/data/stories260K/hf/* "$SRC"/tests/data/stories260K/chat/* "$M"/
DATA="$SRC/tests/data/train/dataset/chat"
cat > "$TMP/c.yaml" <<EOF
model: "$M"
train: true
data: "$DATA"
batch_size: 3
iters: 100
steps_per_report: 4
steps_per_eval: 6
val_batches: 1
save_every: 6
max_seq_length: 64
num_layers: 2
lr_schedule:
  name: cosine_decay
  warmup: 2
  arguments: [1e-3, 8]
lora_parameters: {rank: 4, scale: 10.0, dropout: 0.0, keys: [self_attn.q_proj, self_attn.v_proj]}
EOF
cd "$TMP" || exit 1
out=$("$LMX" lora -c c.yaml --iters 12 --mask-prompt --test 2>&1)
rc=$?
[ $rc -eq 0 ] && ok lora_runs || bad lora_runs "rc=$rc $out"
printf '%s\n' "$out" | head -4 | tr '\n' '|' | grep -q '^Loading configuration file c.yaml|Loading pretrained model|Loading datasets|Training|$' &&
    ok lora_preamble || bad lora_preamble "$out"
printf '%s\n' "$out" | grep -Eq '^Trainable parameters: [0-9]+\.[0-9]{3}% \(0\.[0-9]{3}M/0\.260M\)$' &&
    ok lora_trainable_line || bad lora_trainable_line "$out"
printf '%s\n' "$out" | grep -q '^Starting training..., iters: 12$' && ok lora_start_line || bad lora_start_line "$out"
# validation at iter 1, every steps_per_eval (6, 12) and the last iter
[ "$(printf '%s\n' "$out" | grep -Ec '^Iter (1|6|12): Val loss [0-9]+\.[0-9]{3}, Val took [0-9]+\.[0-9]{3}s$')" -eq 3 ] &&
    ok lora_val_lines || bad lora_val_lines "$out"
# warm-up 0 -> 1e-3 over steps 0..2, cosine from step 3: update 4 uses step 3 (1e-3), update 8 step 7
# (cosine(4) of 8 = 5e-4), update 12 step 11 (cosine(8) = 0)
lrs=$(printf '%s\n' "$out" | grep -E '^Iter [0-9]+: Train loss' | sed -E 's/.*Learning Rate ([^,]+),.*/\1/' | tr '\n' ' ')
[ "$lrs" = "1.000e-03 5.000e-04 0.000e+00 " ] && ok lora_schedule_rates || bad lora_schedule_rates "$lrs"
printf '%s\n' "$out" | grep -Eq '^Iter 4: Train loss [0-9]+\.[0-9]{3}, Learning Rate 1\.000e-03, It/sec [0-9.]+, Tokens/sec [0-9.]+, Trained Tokens [0-9]+, Peak mem [0-9]+\.[0-9]{3} GB$' &&
    ok lora_train_line || bad lora_train_line "$out"
printf '%s\n' "$out" | grep -q '^Iter 6: Saved adapter weights to adapters/adapters.safetensors and adapters/0000006_adapters.safetensors.$' &&
    ok lora_checkpoint_line || bad lora_checkpoint_line "$out"
printf '%s\n' "$out" | grep -q '^Saved final weights to adapters/adapters.safetensors.$' && ok lora_final_line || bad lora_final_line "$out"
[ -f adapters/adapters.safetensors ] && [ -f adapters/0000006_adapters.safetensors ] &&
    [ -f adapters/0000012_adapters.safetensors ] && ok lora_files || bad lora_files "$(ls adapters)"
head -3 adapters/adapter_config.json | tr '\n' '|' | grep -q '^{|    "adapter_path": "adapters",|    "batch_size": 3,|$' &&
    grep -q '^    "config": "c.yaml",$' adapters/adapter_config.json && grep -q '^    "iters": 12,$' adapters/adapter_config.json &&
    grep -q '^        "keys": \[$' adapters/adapter_config.json && ok lora_adapter_config || bad lora_adapter_config "$(cat adapters/adapter_config.json)"
t1=$(printf '%s\n' "$out" | grep -E '^Test loss' )
# --test alone on the saved adapters: every test batch, so the same token-weighted loss
t2=$("$LMX" lora --model "$M" --data "$DATA" --test --batch-size 3 --max-seq-length 64 --mask-prompt 2>&1 | grep -E '^Test loss')
[ -n "$t1" ] && [ "$t1" = "$t2" ] && ok lora_test_only || bad lora_test_only "'$t1' vs '$t2'"
# gradient accumulation: updates at iters 2 and 4 only
out=$("$LMX" lora --model "$M" --train --data "$DATA" --iters 3 --batch-size 2 --grad-accumulation-steps 2 --num-layers -1 --adapter-path acc --steps-per-report 1 --learning-rate 1e-4 2>&1)
[ $? -eq 0 ] && [ -f acc/adapters.safetensors ] && ok lora_grad_accumulation || bad lora_grad_accumulation "$out"

# errors
mkdir -p text && cp "$SRC"/tests/data/train/dataset/text/*.jsonl text/
out=$("$LMX" lora --model "$M" --train --data text --mask-prompt 2>&1)
[ $? -eq 1 ] && printf '%s\n' "$out" | grep -q 'Prompt masking not supported for text dataset.' && ok lora_mask_text || bad lora_mask_text "$out"
mkdir -p novalid && cp "$DATA"/valid.jsonl novalid/
out=$("$LMX" lora --model "$M" --train --data novalid 2>&1)
[ $? -eq 1 ] && printf '%s\n' "$out" | grep -q 'Training set not found or empty' && ok lora_no_train || bad lora_no_train "$out"
out=$("$LMX" lora --train --iters 5.0 2>&1)
[ $? -eq 2 ] && printf '%s\n' "$out" | grep -q "argument --iters: invalid int value: '5.0'" && ok lora_bad_flag || bad lora_bad_flag "$out"
out=$("$LMX" lora --train --batch-size 0 2>&1)
[ $? -eq 2 ] && printf '%s\n' "$out" | grep -q 'batch_size: 0 is out of range' && ok lora_bad_value || bad lora_bad_value "$out"
out=$("$LMX" lora --model "$M" --train --data "$DATA" --iters 1 --device gpu 2>&1)
[ $? -eq 2 ] && [ "$out" = "lmx lora: --device takes cpu, cuda or auto" ] && ok lora_bad_device || bad lora_bad_device "$out"
"$LMX" lora --help | grep -q '^usage: lmx lora' && ok lora_help || bad lora_help "no usage"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
