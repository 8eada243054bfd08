#!/bin/sh
# test_lora_demo.sh LMX SOURCE_DIR EXAMPLE [ITERS] - a real fine-tuning run,
# end to end: stories260K (TinyStories: it answers everything with a
# children's story) learns tests/data/train/shakespeare (300 chat examples
# whose answers are one "NAME:\nline" speech, tests/fixtures/make_lora_demo_data.py),
# with LoRA on the f32 model and QLoRA on a 4-bit copy, then both are fused.
# ctest runs ITERS=100 (~25 s of CPU; about a minute on 2 busy cores);
# `make lora-demo` runs 300 and prints the same summary; sanitizer builds
# run a smoke pass (LMX_LORA_DEMO_ITERS=8, see CMakeLists.txt).
#
# Flags: --batch-size 8 --learning-rate 1e-4 --num-layers -1 --mask-prompt.
# Why 1e-4 and not 2e-3: mlx.optimizers.Adam has no bias correction, and at
# 2e-3 this 260K-parameter model's loss jumps to ~10.5 by step 3 and wanders
# (val 4.7 after 200 iterations, with mlx-lm and lmx alike); at 1e-4 both
# train smoothly (val 2.6 after 100). tests/interop/test_lora_train.py checks
# that lmx and mlx_lm.lora give the same per-step losses with these flags.
#
# What is asserted (observed values: ITERS=100, 2026-11-26, AVX-512 box):
# (a) validation loss (every val batch, token-weighted) falls by >= 30%
#     from iter 1 (= the base: LoRA's B starts at zero) to the last iter.
#     Observed 6.420 -> 2.602 (-59%; -57% at 60 iterations); 30% leaves
#     room for other SIMD kernels' rounding, while a trainer whose updates
#     are lost stays at 6.42 (what lr 0 gives).
# (b) the trained direction: --test loss on the 40 held-out speeches with
#     the adapter <= 70% of the base's (observed 2.745 vs 6.158); the base's
#     test loss is measured with a zero adapter (lr 0, so B = 0: `lmx lora
#     --test` needs an adapter), whose greedy text equals the base's. And
#     greedy answers (--temp 0) to 5 prompts: the first line of the base's
#     never looks like a speaker tag (^[A-Z][A-Z ]*:$), the adapted model's
#     does for at least 3 of 5 and for "Speak." (observed 5/5: "CHESSSSSS:",
#     "CORIO:", "GARIO:", ...; QLoRA 4/5). The tag appears from ~60
#     iterations on (checked at 60, 80, 90, 100, 110, 120, 150, 200, 300:
#     >= 4/5 each); at 45 the models still babble "CIORARARA..." - hence
#     100, not fewer, and these checks only from 60 iterations on.
# (c) `lmx fuse` of the f32 model: the fused folder's greedy text equals
#     base + adapter's for every prompt (f32 fused weights W + s*B*A differ
#     from the attached path only by rounding, far below any logit gap).
# (d) QLoRA on `lmx convert -q` (4-bit, group 64): val loss falls by >= 30%
#     (observed 6.472 -> 2.631); `lmx fuse --dequantize` (dequant(Wq) +
#     s*B*A in f32) gives base + adapter's greedy text exactly; `lmx fuse`
#     without it re-quantizes the fused weights to 4 bits, which moves each
#     weight by up to half a quantization step - the adapter's update is
#     small beside that step, so greedy text legitimately differs (observed:
#     it does). Bounds on the logits of the first 10 held-out speeches (499
#     tokens): rms(fused4 - fused_f32) <= 0.5 * rms(base4 - fused_f32), i.e.
#     the re-quantization costs less than half of what the adapter changes
#     (observed 1.05 / 5.72 = 0.18; 0.17 at 60 iterations, 0.27 at 300: it
#     grows with training; the max |difference| is reported, not bounded:
#     0.34 of the adapter's); and the mean next-token loss (all positions)
#     of fused4 is within 25% of the adapter's gain (base4 - fused_f32) of
#     fused_f32's (observed 3.786 vs 3.559, base4 6.166: 8.7%; 4.5% at 60,
#     7.1% at 300). Its first line to "Speak." is still a speaker tag. (The
#     re-quantized modules equal `lmx convert -q` of the --dequantize folder
#     exactly - checked by hand; test_fuse checks them against mlx-lm's.)
LMX=$1
SRC=$2
ITERS=${4:-${LMX_LORA_DEMO_ITERS:-100}}
case $LMX in /*) ;; *) LMX=$(pwd)/$LMX ;; esac
case $SRC in /*) ;; *) SRC=$(pwd)/$SRC ;; esac
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "PASS $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1: $2"; }
# checks that need a trained adapter: asserted from 60 iterations on; below that (the sanitizer
# builds' smoke run) only reported, while every command and the exact-equality checks still count
if [ "$ITERS" -ge 60 ]; then
    trained_ok() { ok "$1"; }
    trained_bad() { bad "$1" "$2"; }
else
    trained_ok() { echo "NOTE $1 (not asserted below 60 iterations)"; }
    trained_bad() { echo "NOTE $1 not met (not asserted below 60 iterations): $2"; }
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
DATA="$SRC/tests/data/train/shakespeare"
M="$TMP/model"
mkdir "$M" && cp "$SRC"/tests/data/stories260K/hf/* "$SRC"/tests/data/stories260K/chat/* "$M"/
cd "$TMP" || exit 1
start=$(date +%s)
TRAIN="--train --data $DATA --iters $ITERS --batch-size 8 --learning-rate 1e-4 --num-layers -1 --mask-prompt
       --steps-per-eval $ITERS --steps-per-report $ITERS --test"
SPEAKER='^[A-Z][A-Z ]*:$'
PROMPTS="Speak.|Say something.|Tell me a line.|Who are you?|Once upon a time"

# gen MODEL [ADAPTER]: greedy answers to every prompt, one file per prompt in $MODEL.gen/
gen() {
    out="$TMP/$(basename "$1")${2:+_$(basename "$2")}.gen"
    mkdir -p "$out"
    i=0
    printf '%s\n' "$PROMPTS" | tr '|' '\n' | while IFS= read -r p; do
        i=$((i + 1))
        "$LMX" generate --model "$1" ${2:+--adapter-path "$2"} --prompt "$p" --temp 0 --max-tokens 24 \
            --verbose false > "$out/$i" 2>&1 || echo "generate failed" >> "$out/$i"
    done
    echo "$out"
}
# speakers DIR: how many answers' first line is a speaker tag
speakers() { n=0; for f in "$1"/*; do head -1 "$f" | grep -Eq "$SPEAKER" && n=$((n + 1)); done; echo $n; }
# same DIR1 DIR2: every answer generated and identical
same() {
    for f in "$1"/*; do
        [ -s "$f" ] && ! grep -q "generate failed" "$f" && cmp -s "$f" "$2/$(basename "$f")" || return 1
    done
}
val() { printf '%s\n' "$1" | sed -n "s/^Iter $2: Val loss \([0-9.]*\),.*/\1/p"; }
testloss() { printf '%s\n' "$1" | sed -n 's/^Test loss \([0-9.]*\),.*/\1/p'; }
# le A B [F]: A <= F*B
le() { awk -v a="$1" -v b="$2" -v f="${3:-1}" 'BEGIN { exit !(a != "" && b != "" && a + 0 <= f * b) }'; }
show() { printf '  %-24s %s\n' "$1" "$(head -2 "$2" | tr '\n' '|')"; }

# ---- LoRA on the f32 model
t0=$(date +%s)
out=$("$LMX" lora --model "$M" $TRAIN --adapter-path A 2>&1)
[ $? -eq 0 ] && [ -f A/adapters.safetensors ] && ok lora_trains || bad lora_trains "$out"
t_lora=$(($(date +%s) - t0))
v1=$(val "$out" 1)
vn=$(val "$out" "$ITERS")
ta=$(testloss "$out")
le "$vn" "$v1" 0.70 && trained_ok lora_val_loss_falls_30pct || trained_bad lora_val_loss_falls_30pct "iter 1 $v1, iter $ITERS $vn"
out=$("$LMX" lora --model "$M" --train --data "$DATA" --iters 1 --batch-size 8 --learning-rate 0 --mask-prompt \
    --num-layers -1 --test --adapter-path Z 2>&1)
tb=$(testloss "$out")
le "$ta" "$tb" 0.70 && trained_ok lora_test_loss_below_base || trained_bad lora_test_loss_below_base "adapter $ta, base $tb: $out"

base=$(gen "$M")
zero=$(gen "$M" Z)
same "$base" "$zero" && ok zero_adapter_is_base || bad zero_adapter_is_base "$(cat "$zero"/1)"
adapted=$(gen "$M" A)
nb=$(speakers "$base")
na=$(speakers "$adapted")
[ "$nb" -eq 0 ] && ok base_no_speaker_tag || bad base_no_speaker_tag "$nb of 5: $(cat "$base"/*)"
[ "$na" -ge 3 ] && trained_ok adapted_speaker_tag || trained_bad adapted_speaker_tag "$na of 5: $(cat "$adapted"/*)"
head -1 "$adapted/1" | grep -Eq "$SPEAKER" && trained_ok adapted_speak_prompt || trained_bad adapted_speak_prompt "$(cat "$adapted"/1)"

# ---- fuse (f32): same greedy tokens as base + adapter
out=$("$LMX" fuse --model "$M" --adapter-path A --save-path F 2>&1)
[ $? -eq 0 ] && ok fuse_f32 || bad fuse_f32 "$out"
fused=$(gen F)
same "$adapted" "$fused" && ok fused_f32_equals_adapter || bad fused_f32_equals_adapter "$(cat "$fused"/1) vs $(cat "$adapted"/1)"

# ---- QLoRA on a 4-bit copy
out=$("$LMX" convert --hf-path "$M" --mlx-path Q -q 2>&1)
[ $? -eq 0 ] && ok convert_q4 || bad convert_q4 "$out"
t0=$(date +%s)
out=$("$LMX" lora --model Q $TRAIN --adapter-path QA 2>&1)
[ $? -eq 0 ] && [ -f QA/adapters.safetensors ] && ok qlora_trains || bad qlora_trains "$out"
t_qlora=$(($(date +%s) - t0))
qv1=$(val "$out" 1)
qvn=$(val "$out" "$ITERS")
qta=$(testloss "$out")
le "$qvn" "$qv1" 0.70 && trained_ok qlora_val_loss_falls_30pct || trained_bad qlora_val_loss_falls_30pct "iter 1 $qv1, iter $ITERS $qvn"
qadapted=$(gen Q QA)
nqa=$(speakers "$qadapted")
[ "$nqa" -ge 3 ] && trained_ok qlora_speaker_tag || trained_bad qlora_speaker_tag "$nqa of 5: $(cat "$qadapted"/*)"
out=$("$LMX" fuse --model Q --adapter-path QA --save-path QD --dequantize 2>&1)
[ $? -eq 0 ] && ok fuse_q4_dequantize || bad fuse_q4_dequantize "$out"
out=$("$LMX" fuse --model Q --adapter-path QA --save-path QF 2>&1)
[ $? -eq 0 ] && grep -q '"bits": 4' QF/config.json && ok fuse_q4_requantized || bad fuse_q4_requantized "$out"
qdeq=$(gen QD)
same "$qadapted" "$qdeq" && ok fused_dequantized_equals_adapter || bad fused_dequantized_equals_adapter "$(cat "$qdeq"/1) vs $(cat "$qadapted"/1)"
qfused=$(gen QF)
head -1 "$qfused/1" | grep -Eq "$SPEAKER" && trained_ok fused_q4_speaker_tag || trained_bad fused_q4_speaker_tag "$(cat "$qfused"/1)"
same "$qadapted" "$qfused" && q4_tokens="equal" || q4_tokens="differ (re-quantization)"

# logits over 10 held-out speeches, rendered with the chat template as training saw them
sed -n '1,10p' "$DATA/test.jsonl" |
    sed 's/^{"messages": \[{"role": "user", "content": "\(.*\)"}, {"role": "assistant", "content": "\(.*\)"}\]}$/"Q: \1\\nA: \2\\n"/' > held.jsonl
toks=$("$LMX" tokenize --model "$M" --add-special-tokens --jsonl held.jsonl | tr -d '[] ' | paste -sd, -)
# f32 values of the one-tensor safetensors file `lmx logits` writes, one a line
dump_f32() {
    n=$(od -A n -t u8 -N 8 "$1" | tr -d ' ')
    od -A n -v -t f4 -j $((8 + n)) "$1" | tr -s ' ' '\n' | grep -v '^$'
}
ntok=$(printf '%s\n' "$toks" | tr ',' '\n' | grep -c .)
for m in Q QF QD; do
    "$LMX" logits --model $m --tokens "$toks" --out $m.logits >/dev/null 2>&1 || bad logits_$m "lmx logits failed"
    dump_f32 $m.logits > $m.txt 2>/dev/null
    [ "$(wc -l < $m.txt)" -eq $((ntok * 512)) ] || bad logits_${m}_size "$(wc -l < $m.txt) values for $ntok tokens"
done
# diff_stats A B: "rms max" of the difference of two logit dumps (1e9 when they do not pair up)
diff_stats() {
    paste "$1" "$2" | awk '{ if (NF != 2) bad = 1; d = $1 - $2; s += d * d; n++; if (d < 0) d = -d; if (d > m) m = d }
                          END { if (bad || !n) printf "1e9 1e9"; else printf "%.4f %.4f", sqrt(s / n), m }'
}
# mean next-token loss (all positions) from [T, V] logits
nll() {
    awk -v toks="$toks" -v V=512 'BEGIN { n = split(toks, tk, ",") }
        { col = (NR - 1) % V; x[col] = $1
          if (col == V - 1 && (t = (NR - 1 - col) / V) + 2 <= n) {
              mx = x[0]; for (i = 1; i < V; i++) if (x[i] > mx) mx = x[i]
              s = 0; for (i = 0; i < V; i++) s += exp(x[i] - mx)
              sum += mx + log(s) - x[tk[t + 2]]; cnt++ } }
        END { printf "%.4f", cnt ? sum / cnt : 1e9 }' "$1"
}
set -- $(diff_stats QF.txt QD.txt) $(diff_stats Q.txt QD.txt)
rms_requant=$1 max_requant=$2 rms_adapter=$3 max_adapter=$4
le 1 "$rms_adapter" && le "$rms_requant" "$rms_adapter" 0.5 && trained_ok q4_requant_logits_bound ||
    trained_bad q4_requant_logits_bound "rms(QF-QD) $rms_requant, rms(Q-QD) $rms_adapter"
nq=$(nll Q.txt)
nqf=$(nll QF.txt)
nqd=$(nll QD.txt)
awk -v f="$nqf" -v d="$nqd" -v b="$nq" 'BEGIN { g = b - d; e = f - d; if (e < 0) e = -e; exit !(g > 1 && e <= 0.25 * g) }' &&
    trained_ok q4_requant_loss_bound || trained_bad q4_requant_loss_bound "held-out loss base4 $nq, fused_f32 $nqd, fused4 $nqf"

cat <<EOF

LoRA demo, $ITERS iterations (batch 8, lr 1e-4, all layers, --mask-prompt), $(($(date +%s) - start)) s in all
  f32  LoRA ($t_lora s): val loss $v1 -> $vn, test loss base $tb -> adapter $ta
  4bit QLoRA ($t_qlora s): val loss $qv1 -> $qvn, test loss adapter $qta
  held-out next-token loss: base4 $nq, fused --dequantize $nqd, fused 4-bit $nqf
  logits fused4 - fused_f32: rms $rms_requant max $max_requant; base4 - fused_f32: rms $rms_adapter max $max_adapter
  fused 4-bit greedy text: $q4_tokens
  speaker-tag first lines: base $nb/5, adapter $na/5, QLoRA $nqa/5
EOF
i=0
printf '%s\n' "$PROMPTS" | tr '|' '\n' | while IFS= read -r p; do
    i=$((i + 1))
    echo "prompt \"$p\""
    show base "$base/$i"
    show "lora" "$adapted/$i"
    show "lora fused" "$fused/$i"
    show "qlora" "$qadapted/$i"
    show "qlora fused 4-bit" "$qfused/$i"
done
echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
