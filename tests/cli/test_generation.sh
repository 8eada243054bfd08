#!/bin/sh
# test_generation.sh LMX SOURCE_DIR EXAMPLE - issue 7 end to end: `lmx chat`
# through a pipe and a pseudo-terminal, `lmx cache-prompt` + `generate
# --prompt-cache-file`, --prefill-response, rotating/quantized KV flags, and
# the errors for bad values and bad cache files.
LMX=$1
SRC=$2
pass=0
fail=0
ok() { pass=$((pass + 1)); echo "PASS $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1: $2"; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
# stories260K with a tokenizer.json and a chat template (tests/data/stories260K/chat)
M="$TMP/stories_chat"
mkdir "$M" && cp "$SRC"/tests/data/stories260K/hf/* "$SRC"/tests/data/stories260K/chat/* "$M"/

# chat through a pipe: two turns with the same question, help, reset, quit
out=$(printf 'Once upon a time\nOnce upon a time\nh\nr\nLily\nq\n' | "$LMX" chat --model "$M" -m 12 2>&1)
stats=$(printf '%s\n' "$out" | grep -E '^  [0-9]+ tokens · ')
[ "$(printf '%s\n' "$stats" | wc -l)" -eq 3 ] && ok chat_pipe_turns || bad chat_pipe_turns "$out"
p1=$(printf '%s\n' "$stats" | sed -n 1p | sed -E 's/.*prompt ([0-9]+) tokens.*/\1/')
p2=$(printf '%s\n' "$stats" | sed -n 2p | sed -E 's/.*prompt ([0-9]+) tokens.*/\1/')
c1=$(printf '%s\n' "$stats" | sed -n 1p | sed -E 's/.*context ([0-9]+).*/\1/')
c2=$(printf '%s\n' "$stats" | sed -n 2p | sed -E 's/.*context ([0-9]+).*/\1/')
g2=$(printf '%s\n' "$stats" | sed -n 2p | sed -E 's/^  ([0-9]+) tokens.*/\1/')
c3=$(printf '%s\n' "$stats" | sed -n 3p | sed -E 's/.*context ([0-9]+).*/\1/')
p3=$(printf '%s\n' "$stats" | sed -n 3p | sed -E 's/.*prompt ([0-9]+) tokens.*/\1/')
# turn 2 prefills only its own message (as many tokens as turn 1's), on top of turn 1's context
[ -n "$p1" ] && [ "$p2" = "$p1" ] && [ "$c2" -eq $((c1 + p2 + g2 - 1)) ] && ok chat_second_turn_prefill_only_new ||
    bad chat_second_turn_prefill_only_new "p1=$p1 p2=$p2 c1=$c1 c2=$c2 g2=$g2"
# after r the context starts again from the new message alone
[ -n "$c3" ] && [ "$c3" -lt "$c2" ] && [ "$c3" -le $((p3 + 12)) ] && ok chat_reset || bad chat_reset "c3=$c3 p3=$p3"
printf '%s\n' "$out" | grep -q 'commands    q exit   r reset   h help' && ok chat_help || bad chat_help "$out"
printf '%s\n' "$out" | tail -1 | grep -q '^bye$' && ok chat_quit || bad chat_quit "$out"
# end of input quits too; the bundled GGUF model (no chat template) chats raw text
out=$(printf 'Once upon a time\n' | "$LMX" chat -m 8 2>&1)
printf '%s\n' "$out" | grep -q ', there was a little girl' && printf '%s\n' "$out" | tail -1 | grep -q '^bye$' &&
    ok chat_eof || bad chat_eof "$out"
# --max-kv-size: the conversation goes on past the window (rows stay bounded: test_kv_cache)
out=$(printf 'Once upon a time\nThe dog\nThe cat\n' | "$LMX" chat -m 30 --max-kv-size 40 2>&1)
[ "$(printf '%s\n' "$out" | grep -c ' tokens · ')" -eq 3 ] && printf '%s\n' "$out" | grep -q 'context 9[0-9]' &&
    ok chat_max_kv_size || bad chat_max_kv_size "$out"

# chat through a pseudo-terminal (readline when built with it)
if command -v python3 >/dev/null 2>&1; then
    out=$(python3 - "$LMX" "$M" <<'PY' 2>&1
import os, pty, sys, time, select
lmx, model = sys.argv[1], sys.argv[2]
pid, fd = pty.fork()
if pid == 0:
    os.execv(lmx, [lmx, "chat", "--model", model, "-m", "10"])
buf = b""
def wait_for(s, t=20):
    global buf
    end = time.time() + t
    while s.encode() not in buf and time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try: buf += os.read(fd, 4096)
            except OSError: break
    return s.encode() in buf
ok = wait_for("commands")
for line, expect in (("Once upon a time", "tok/s"), ("h", "commands"), ("r", "context cleared"), ("q", "bye")):
    n = buf.count(expect.encode())
    os.write(fd, (line + "\r").encode())
    end = time.time() + 20
    while buf.count(expect.encode()) <= n and time.time() < end:
        wait_for("\x00", 0.3)
    ok = ok and buf.count(expect.encode()) > n
os.waitpid(pid, 0)
print("PTY_OK" if ok else "PTY_FAIL")
print(buf.decode(errors="replace"))
PY
)
    printf '%s\n' "$out" | grep -q '^PTY_OK' && ok chat_pty || bad chat_pty "$out"
fi

# cache-prompt, then generate from the cache: only the new text is prefilled
sys_text="One day, a little girl named Lily found a needle in her room."
out=$(printf '%s' "$sys_text" | "$LMX" cache-prompt --model "$M" --prompt - --prompt-cache-file "$TMP/c.safetensors")
printf '%s' "$out" | grep -q 'Processed     *[0-9]* tokens (' && printf '%s\n' "$out" | grep -Eq '^Peak memory: [0-9]+\.[0-9]{3} GB$' &&
    printf '%s\n' "$out" | tail -1 | grep -q '^Saving...$' && [ -s "$TMP/c.safetensors" ] && ok cache_prompt || bad cache_prompt "$out"
out=$("$LMX" generate --model "$M" --prompt-cache-file "$TMP/c.safetensors" -p "Once upon a time" -m 10 2>&1)
# "<s>Q: <query>\nA:" -> only "Once upon a time\nA:" is new: 4 + 1 + 2 tokens
printf '%s\n' "$out" | grep -Eq '^Prompt: [0-9] tokens' && ok generate_from_cache_prefill_only_new || bad generate_from_cache_prefill_only_new "$out"
# the model comes from the cache's metadata when --model is absent
out2=$("$LMX" generate --prompt-cache-file "$TMP/c.safetensors" -p "Once upon a time" -m 10 2>&1)
[ "$(printf '%s\n' "$out2" | sed -n 2p)" = "$(printf '%s\n' "$out" | sed -n 2p)" ] && ok cache_names_model || bad cache_names_model "$out2"
out=$("$LMX" generate --model "$SRC/models/stories260K.gguf" --prompt-cache-file "$TMP/c.safetensors" -p x 2>&1) &&
    bad cache_other_model "accepted" || { printf '%s' "$out" | grep -q 'different model' && ok cache_other_model || bad cache_other_model "$out"; }
printf 'garbage' > "$TMP/bad.safetensors"
out=$("$LMX" generate --model "$M" --prompt-cache-file "$TMP/bad.safetensors" -p x 2>&1) && bad cache_corrupt "accepted" ||
    { printf '%s' "$out" | grep -q 'bad.safetensors' && ok cache_corrupt || bad cache_corrupt "$out"; }
out=$("$LMX" generate --model "$M" --prompt-cache-file "$TMP/missing.safetensors" -p x 2>&1) && bad cache_missing "accepted" ||
    { printf '%s' "$out" | grep -q 'missing.safetensors' && ok cache_missing || bad cache_missing "$out"; }

# --prefill-response continues the assistant message (mlx_lm.generate gives the same text)
out=$("$LMX" generate --model "$M" -p "Once upon a time" -m 12 --prefill-response "Lily was" --verbose false)
case "$out" in "very excited. She loved to play"*) ok prefill_response ;; *) bad prefill_response "$out" ;; esac

# rotating and quantized KV flags; bad values are clear errors
a=$("$LMX" generate -p "Once upon a time" -m 40 --verbose false)
b=$("$LMX" generate -p "Once upon a time" -m 40 --verbose false --max-kv-size 64)
[ "$a" = "$b" ] && ok max_kv_size_below_window || bad max_kv_size_below_window "$a / $b"
out=$("$LMX" generate -p "Once upon a time" -m 200 --max-kv-size 16 2>&1)
printf '%s\n' "$out" | grep -q '^Generation: 200 tokens' && ok max_kv_size_beyond_window || bad max_kv_size_beyond_window "$out"
"$LMX" generate -p x --max-kv-size 2 >/dev/null 2>"$TMP/e"; [ $? -eq 2 ] && grep -q 'max-kv-size' "$TMP/e" && ok bad_max_kv_size || bad bad_max_kv_size "$(cat "$TMP/e")"
"$LMX" generate -p x --kv-bits 9 >/dev/null 2>"$TMP/e"; [ $? -eq 2 ] && grep -q 'kv-bits' "$TMP/e" && ok bad_kv_bits || bad bad_kv_bits "$(cat "$TMP/e")"
"$LMX" generate -p x --kv-bits 4 >/dev/null 2>"$TMP/e"; [ $? -eq 1 ] && grep -q 'head_dim\|group size' "$TMP/e" && ok kv_bits_head_dim || bad kv_bits_head_dim "$(cat "$TMP/e")"
"$LMX" generate -p x --kv-bits 4 --kv-group-size 32 --max-kv-size 64 >/dev/null 2>"$TMP/e"; [ $? -eq 1 ] && grep -q 'rotating' "$TMP/e" && ok kv_bits_with_rotating || bad kv_bits_with_rotating "$(cat "$TMP/e")"

# speculative decoding: greedy text unchanged, acceptance reported (the model as its own draft: 100%)
a=$("$LMX" generate -p "Once upon a time" -m 30)
b=$("$LMX" generate -p "Once upon a time" -m 30 --draft-model "$SRC/models/stories260K.gguf" --num-draft-tokens 4)
[ "$(printf '%s\n' "$a" | sed -n 2p)" = "$(printf '%s\n' "$b" | sed -n 2p)" ] &&
    printf '%s\n' "$b" | grep -Eq '^Draft acceptance: [0-9]+ of [0-9]+ tokens \(100\.0%\)$' && ok draft_model || bad draft_model "$b"
"$LMX" generate -p x --draft-model "$M/../nope" >/dev/null 2>"$TMP/e"; [ $? -eq 1 ] && grep -q 'nope' "$TMP/e" && ok draft_model_missing || bad draft_model_missing "$(cat "$TMP/e")"

# --prompts-file: continuous batching gives each prompt's own greedy text
printf 'Once upon a time\n{"prompt": "Lily"}\n\n"The dog"\n' > "$TMP/p.txt"
out=$("$LMX" generate --prompts-file "$TMP/p.txt" -m 16 --batch-size 2 --verbose false)
exp=$(for p in "Once upon a time" "Lily" "The dog"; do "$LMX" generate -p "$p" -m 16 --verbose false; done)
[ "$out" = "$exp" ] && ok prompts_file || bad prompts_file "$out / $exp"
out=$("$LMX" generate --prompts-file "$TMP/p.txt" -m 8 2>&1)
printf '%s\n' "$out" | grep -Eq '^\[batch_generate\] Generation: 24 tokens, [0-9.]+ tokens-per-sec$' && ok prompts_file_stats || bad prompts_file_stats "$out"
printf 'fine\n{"text": 1}\n' > "$TMP/bad.txt"
"$LMX" generate --prompts-file "$TMP/bad.txt" >/dev/null 2>"$TMP/e"; [ $? -eq 2 ] && grep -q 'bad.txt:2: no "prompt" string' "$TMP/e" && ok prompts_file_malformed || bad prompts_file_malformed "$(cat "$TMP/e")"
printf '{"prompt": \n' > "$TMP/bad.txt"
"$LMX" generate --prompts-file "$TMP/bad.txt" >/dev/null 2>"$TMP/e"; [ $? -eq 2 ] && grep -q 'bad.txt:1: malformed JSON' "$TMP/e" && ok prompts_file_bad_json || bad prompts_file_bad_json "$(cat "$TMP/e")"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
