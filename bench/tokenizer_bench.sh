#!/bin/sh
# tokenizer_bench.sh - lmx vs Hugging Face `tokenizers`, single thread, same
# tokenizer.json and text, same run.
# usage: bench/tokenizer_bench.sh [BUILD_DIR] [TEXT]
#   BUILD_DIR: a CMake build with liblmx.a (default build); TEXT: default
#   ../shared/data/text/tinyshakespeare.txt. Uses the Llama 3 tokenizer.json
#   from tests/data (unpacked into a temp folder).
set -e
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$ROOT/build}
TEXT=${2:-$ROOT/../shared/data/text/tinyshakespeare.txt}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/llama3"
gzip -dc "$ROOT/tests/data/tokenizers/llama3/tokenizer.json.gz" > "$TMP/llama3/tokenizer.json"
cp "$ROOT/tests/data/tokenizers/llama3/tokenizer_config.json" "$TMP/llama3/"
${CC:-cc} -O2 -std=c11 -I"$ROOT/include" -o "$TMP/bench" "$ROOT/bench/tokenizer_bench.c" "$BUILD/liblmx.a" \
    $(pkg-config --libs libpcre2-8 libutf8proc libcjson) -lpthread -lm
echo "machine: $(uname -m), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
echo "text: $TEXT ($(wc -c < "$TEXT") bytes)"
"$TMP/bench" "$TMP/llama3" "$TEXT" 5
RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false python3 - "$TMP/llama3/tokenizer.json" "$TEXT" <<'PY'
import sys, time, tokenizers
t0 = time.perf_counter()
tok = tokenizers.Tokenizer.from_file(sys.argv[1])
print("hf load: %.1f ms (tokenizers %s)" % ((time.perf_counter() - t0) * 1e3, tokenizers.__version__))
text = open(sys.argv[2], encoding="utf-8").read()
size = len(text.encode("utf-8"))
best = 1e30
for _ in range(5):
    t0 = time.perf_counter()
    n = len(tok.encode(text, add_special_tokens=False).ids)
    best = min(best, time.perf_counter() - t0)
print("hf encode: %d bytes -> %d tokens, best of 5: %.1f ms = %.2f MB/s, %.0f tokens/s" % (size, n, best * 1e3, size / best / 1e6, n / best))
PY
