#!/bin/sh
# run_on_gpu.sh - one device-tool call over binaries built here with CUDA
# (build-cuda) and carried in .gpu/ (git-ignored): bin/ or bin.tar.xz (the
# stripped binaries, xz-packed to stay inside the 64 MiB transfer), and lib/
# (the Debian shared libraries the GPU machine lacks: pcre2-8, utf8proc,
# cjson, yaml-0, readline). Pack them with tests/gpu/pack_for_gpu.sh.
#
# Runs, logging to $OUT (at most 8 files come back):
#   tests.log      the op equivalence test, then the model suites on the GPU
#                  (default device auto; the quantized-model goldens with
#                  LMX_DEVICE=cuda so nothing falls back to the CPU)
#   bench.log      lmx bench on the synthetic llama-1b (bf16, and converted
#                  here to MLX 4-bit g64 and 8-bit g64), forward-only timings
#   bench_ops.log  bench_cuda_ops kernel table (bench/cuda-notes.md)
#   sanitize.log   compute-sanitizer memcheck + racecheck of the quantized cases
#                  (SANITIZE_ONLY=greedy: of the greedy-pick cases instead)
#   sampler.log    lmx bench of llama-1b bf16 and MLX 4-bit, host pipeline
#                  (LMX_DEVICE_SAMPLER=0) vs device greedy pick, interleaved
#                  twice, and greedy CLI text of both paths (part "sampler")
#   spec.log       speculative decoding on the pair of bench/make_speculative_pair.py:
#                  plain vs --draft-model, output identity checked (part "spec")
# RUN_PARTS="tests bench ops sanitize sampler" picks parts (default: all but
# sampler); RUN_TESTS overrides the list of model suites of part "tests",
# RUN_QTESTS the suites it runs with LMX_DEVICE=cuda afterwards.
R=$PWD
P=${PACK:-.gpu} # the folder pack_for_gpu.sh filled (PACK=.gpu-NAME there too)
export LD_LIBRARY_PATH=$R/$P/lib:${LD_LIBRARY_PATH:-}
B=$R/$P/bin
mkdir -p "$B"
[ -f "$P/bin.tar.xz" ] && tar -xJf "$P/bin.tar.xz" -C "$B"
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
PARTS=${RUN_PARTS:-tests bench ops sanitize}
SUITES=${RUN_TESTS:-test_gpu_memory test_device_sampler test_models_hf test_stories260k test_models_gguf test_kv_cache test_batch test_speculative}
has() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
# The tests carry build-time paths (LMX_TEST_DATA=/work/main/tests/data,
# LMX_CLI=/work/main/build-cuda/lmx).
if [ "$R" != /work/main ] && [ ! -e /work/main ]; then mkdir -p /work && ln -s "$R" /work/main; fi
mkdir -p /work/main/build-cuda && cp -f "$B/lmx" /work/main/build-cuda/lmx
echo "pwd $R"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader

T=$OUT/tests.log
run_test() { # name [env assignments...]
  t=$1; shift
  [ -x "$B/$t" ] || { echo "$t: not built"; return; }
  echo "===== $t $*" >> "$T"
  s=$(date +%s)
  env "$@" timeout 300 "$B/$t" >> "$T" 2>&1
  rc=$?
  echo "$t $*: rc=$rc $(grep -E 'passed|failed|SKIP' "$T" | tail -1) ($(( $(date +%s) - s )) s)"
}

if has tests; then
  : > "$T"
  run_test test_cuda_ops
  run_test test_cuda_fused
  for t in $SUITES; do run_test $t; done
  for t in ${RUN_QTESTS-test_quant_quality test_convert test_models_gguf}; do run_test $t LMX_DEVICE=cuda; done
  grep -E "^FAIL|FAILED|not ok" "$T" | head -20
fi

if has bench; then
  L=$OUT/bench.log
  python3 bench/make_synthetic_model.py --shape llama-1b --out /tmp/llama-1b > /dev/null 2>&1
  s=$(date +%s)
  "$B/lmx" convert --hf-path /tmp/llama-1b --mlx-path /tmp/llama-1b-q4 -q --q-bits 4 --q-group-size 64 >> "$L" 2>&1
  "$B/lmx" convert --hf-path /tmp/llama-1b --mlx-path /tmp/llama-1b-q8 -q --q-bits 8 --q-group-size 64 >> "$L" 2>&1
  echo "converted in $(( $(date +%s) - s )) s; sizes: $(du -sh /tmp/llama-1b /tmp/llama-1b-q4 /tmp/llama-1b-q8 | tr '\n' ' ')" | tee -a "$L"
  for m in llama-1b llama-1b-q4 llama-1b-q8; do
    echo "===== lmx bench $m" >> "$L"
    timeout 240 "$B/lmx" bench --model /tmp/$m -p 512 -g 128 -n 3 --device cuda >> "$L" 2>&1
    grep Averages "$L" | tail -1 | sed "s|^|$m: |"
    timeout 120 "$B/bench_cuda_ops" /tmp/$m 128 2>&1 | tee -a "$L" | grep -v warm-up
  done
  echo "===== llama-1b-q4 forward, LMX_CUDA_QTILE_MB=128" | tee -a "$L"
  LMX_CUDA_QTILE_MB=128 timeout 120 "$B/bench_cuda_ops" /tmp/llama-1b-q4 128 2>&1 | tee -a "$L" | grep -v warm-up
  for m in llama-1b-q4 llama-1b-q8; do # greedy text, GPU vs CPU (informational: random weights have near-ties)
    for d in cuda cpu; do
      printf "%s %s: " $m $d
      timeout 120 "$B/lmx" generate --model /tmp/$m --device $d --prompt "hello world" -m 12 --temp 0 --ignore-chat-template 2>/dev/null | head -c 300 | tr '\n' ' '
      echo
    done
  done 2>&1 | tee -a "$L"
fi

if has ops; then
  timeout 240 "$B/bench_cuda_ops" > "$OUT/bench_ops.log" 2>&1
  echo "bench_cuda_ops rc=$?"
  grep -E "^matmul .*(mlx|gguf)" "$OUT/bench_ops.log" | awk '{printf "%s %s\n", $0, ""}' | cut -c1-160
fi

if has sampler; then
  L=$OUT/sampler.log
  [ -d /tmp/llama-1b ] || python3 bench/make_synthetic_model.py --shape llama-1b --out /tmp/llama-1b > /dev/null 2>&1
  [ -d /tmp/llama-1b-q4 ] || "$B/lmx" convert --hf-path /tmp/llama-1b --mlx-path /tmp/llama-1b-q4 -q --q-bits 4 --q-group-size 64 >> "$L" 2>&1
  for rep in 1 2; do
    for m in llama-1b llama-1b-q4; do
      for ds in 0 1; do
        echo "===== lmx bench $m LMX_DEVICE_SAMPLER=$ds (round $rep)" >> "$L"
        LMX_DEVICE_SAMPLER=$ds timeout 120 "$B/lmx" bench --model /tmp/$m -p 512 -g 128 -n 3 --device cuda >> "$L" 2>&1
        echo "$m sampler=$ds round $rep: $(grep Averages "$L" | tail -1)"
      done
    done
  done
  for m in llama-1b llama-1b-q4; do # greedy text, host pipeline vs device pick: must be identical
    for ds in 0 1; do
      LMX_DEVICE_SAMPLER=$ds timeout 60 "$B/lmx" generate --model /tmp/$m --device cuda --prompt "hello world" -m 48 \
        --temp 0 --ignore-chat-template 2>/dev/null | grep -v -E '^(Prompt|Generation|Peak memory):' > /tmp/gen_$ds.txt
    done
    cmp -s /tmp/gen_0.txt /tmp/gen_1.txt && r=identical || r=DIFFERENT
    echo "$m greedy text host vs device: $r ($(wc -c < /tmp/gen_1.txt) bytes)" | tee -a "$L"
  done
fi

if has sanitize && command -v compute-sanitizer > /dev/null; then
  S=$OUT/sanitize.log
  SO=${SANITIZE_ONLY:-quant}
  LMX_TEST_ONLY=$SO timeout 200 compute-sanitizer --tool memcheck --leak-check full "$B/test_cuda_ops" > "$S" 2>&1
  echo "memcheck rc=$? $(grep -E 'passed|ERROR SUMMARY|LEAK SUMMARY' "$S" | tr '\n' ' ')"
  # racecheck also reports hazards inside cuBLAS's own GEMM kernels (nvjet_*, some unnamed): counted apart
  LMX_TEST_ONLY=$SO timeout 200 compute-sanitizer --tool racecheck "$B/test_cuda_ops" >> "$S" 2>&1
  echo "racecheck rc=$? $(grep -E 'passed|RACECHECK SUMMARY' "$S" | tail -2 | tr '\n' ' ')"
  echo "race reports by kernel (outside nvjet):"; grep 'Race reported' "$S" | grep -v nvjet | sed 's/+0x[0-9a-f]*//' | sort | uniq -c | head
fi

if has spec; then
  L=$OUT/spec.log
  python3 bench/make_speculative_pair.py --out /tmp/spec > "$L" 2>&1
  for rep in 1 2; do
    echo "===== round $rep" >> "$L"
    timeout 200 sh bench/speculative_bench.sh "$B/lmx" /tmp/spec 256 --device cuda >> "$L" 2>&1
  done
  grep -E "generation|identical|DIFFERS" "$L"
fi
