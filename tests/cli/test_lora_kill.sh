#!/bin/sh
# test_lora_kill.sh LMX SOURCE_DIR EXAMPLE - `kill -9` during `lmx lora`
# never leaves a broken adapter behind. Four rounds: train stories260K on
# tests/data/train/shakespeare with --save-every 5 --iters 10000 in the
# background (rounds 2-4 resume from the previous round's
# adapters.safetensors, the way a user restarts), wait for the round's first
# checkpoint, sleep a random 0-1.5 s (the seed is printed; LMX_KILL_SEED
# repeats it) and kill -9 (round 4: see below). Then every file of the adapter folder must be
# adapter_config.json, adapters.safetensors, an NNNNNNN_adapters.safetensors
# checkpoint - each of which must load (`lmx generate --adapter-path`, whose
# loader checks the safetensors header against the file size) - or a
# leftover temp file of an interrupted write (NAME.tmp.XXXXXX), which no
# loader looks for. The checkpoints must run 5, 10, ... without a gap.
# Controls, so the checks can fail: a truncated adapters.safetensors is
# refused by the same load, and a planted temp file next to a good
# adapters.safetensors changes nothing.
# A random kill lands inside a save (two ~190 KB writes every ~0.5 s) only
# now and then, so a fourth round polls for the temp file of an adapter
# write and kills the moment it appears (caught within a few saves here,
# while the temp file is written or fsynced); atomicity is by construction
# (temp file, fsync, rename: src/io/safetensors_write.c, src/base/file.c),
# this is the end-to-end check.
LMX=$1
SRC=$2
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "PASS $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1: $2"; }
TMP=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill -9 $pid 2>/dev/null; rm -rf "$TMP"' EXIT
DATA="$SRC/tests/data/train/shakespeare"
M="$TMP/model"
mkdir "$M" && cp "$SRC"/tests/data/stories260K/hf/* "$SRC"/tests/data/stories260K/chat/* "$M"/
cd "$TMP" || exit 1
seed=${LMX_KILL_SEED:-$(od -A n -N 2 -t u2 /dev/urandom | tr -d ' ')}
echo "kill-timing seed $seed (LMX_KILL_SEED=$seed repeats it)"

# loads FILE: the adapter file loads as a folder's adapters.safetensors with its config
loads() {
    rm -rf chk && mkdir chk && cp "$(dirname "$1")/adapter_config.json" chk/ && cp "$1" chk/adapters.safetensors &&
        "$LMX" generate --model "$M" --adapter-path chk --prompt "Speak." --max-tokens 2 --verbose false >chk.out 2>&1
}
# check_folder DIR: every file is an adapter that loads or a temp leftover; checkpoints without a gap
check_folder() {
    why=
    last=0
    for f in "$1"/*; do
        name=$(basename "$f")
        case $name in
        adapter_config.json)
            grep -q '"lora_parameters"' "$f" && tail -1 "$f" | grep -q '^}$' || why="$why $name incomplete;" ;;
        adapters.safetensors)
            loads "$f" || why="$why $name does not load: $(cat chk.out);" ;;
        [0-9][0-9][0-9][0-9][0-9][0-9][0-9]_adapters.safetensors)
            loads "$f" || why="$why $name does not load: $(cat chk.out);"
            n=$(echo "$name" | sed 's/^0*\([0-9]*\)_.*/\1/')
            [ "$n" -eq $((last + 5)) ] || why="$why checkpoint $n after $last;"
            last=$n ;;
        *.tmp.??????)
            echo "  leftover temp file $name (kill landed in a write)" ;;
        *)
            why="$why unexpected file $name;" ;;
        esac
    done
    [ "$last" -ge 5 ] || why="$why no checkpoint;"
    [ -z "$why" ] || { echo "$why"; return 1; }
}

prev=
for r in 1 2 3 4; do
    resume=${prev:+--resume-adapter-file $prev/adapters.safetensors}
    "$LMX" lora --model "$M" --train --data "$DATA" --iters 10000 --batch-size 8 --learning-rate 1e-4 --num-layers -1 \
        --mask-prompt --save-every 5 --steps-per-eval 100000 --val-batches 1 --adapter-path A$r $resume > log$r 2>&1 &
    pid=$!
    waited=0
    # the first checkpoint; 60 s covers a slow sanitizer build on a busy box
    while [ ! -f A$r/0000005_adapters.safetensors ] && [ $waited -lt 1200 ] && kill -0 $pid 2>/dev/null; do
        sleep 0.05
        waited=$((waited + 1))
    done
    [ -f A$r/0000005_adapters.safetensors ] && ok round${r}_first_checkpoint || bad round${r}_first_checkpoint "$(cat log$r)"
    if [ $r -le 3 ]; then
        delay=$(awk -v s="$seed" -v r=$r 'BEGIN { srand(s * 10 + r); printf "%.2f", rand() * 1.5 }')
        sleep "$delay"
        when="after ${delay}s"
    else # busy-poll (no sleep: the window is milliseconds) for an adapter write's temp file, for up to 30 s
        when="when a write's temp file appeared"
        t_end=$(($(date +%s) + 30))
        n=0
        while :; do
            set -- A$r/*.safetensors.tmp.*
            [ -e "$1" ] && break
            n=$((n + 1))
            if [ $((n % 2000)) -eq 0 ] && { [ "$(date +%s)" -ge $t_end ] || ! kill -0 $pid 2>/dev/null; }; then
                when="after 30 s (no write caught: the folder is still checked)"
                break
            fi
        done
    fi
    kill -9 $pid
    wait $pid
    rc=$?
    pid=
    [ $rc -eq 137 ] && ok round${r}_killed || bad round${r}_killed "exit status $rc (the run ended by itself?) $(tail -3 log$r)"
    [ -z "$prev" ] || grep -q "^Loading fine-tuned weights from $prev/adapters.safetensors$" log$r &&
        ok round${r}_resumed || bad round${r}_resumed "$(head -5 log$r)"
    echo "  round $r: killed $when, last: $(grep -E '^Iter [0-9]+: Saved' log$r | tail -1); $(ls A$r | tr '\n' ' ')"
    why=$(check_folder A$r) && ok round${r}_folder_intact || bad round${r}_folder_intact "$why $(ls A$r)"
    prev=A$r
done

# controls: a truncated adapter is refused by the same load; a planted temp file is ignored
head -c 100000 A1/adapters.safetensors > trunc.safetensors
cp A1/adapter_config.json . 2>/dev/null
loads "$TMP/trunc.safetensors" && bad truncated_refused "a truncated adapter loaded" || ok truncated_refused
head -c 100000 A1/adapters.safetensors > A1/adapters.safetensors.tmp.AbC123
why=$(check_folder A1) && ok planted_temp_ignored || bad planted_temp_ignored "$why"
mkdir -p bad && cp A1/adapter_config.json A1/0000005_adapters.safetensors bad/ &&
    head -c 100000 A1/adapters.safetensors > bad/adapters.safetensors
why=$(check_folder bad) && bad truncated_folder_detected "check_folder passed a truncated adapter" || ok truncated_folder_detected

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
