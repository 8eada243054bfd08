#!/bin/bash
# compare_llamacpp_cuda.sh - lmx vs llama.cpp (CUDA build of the pinned commit
# c392e50) on the same GGUF files, on the GPU machine, in one session.
#
# Pack here (this machine), then call the device tool:
#   cmake -S . -B build-g2-cuda -DCMAKE_BUILD_TYPE=Release -DLMX_CUDA=ON
#   cmake --build build-g2-cuda -j2 --target lmx_cli
#   PACK=.gpu-g2 EXTRA_BINS= sh tests/gpu/pack_for_gpu.sh build-g2-cuda   # lmx binaries + libs
#   (cd /tmp/llama.cpp && tar -cf - --exclude=examples/llama.android --exclude=examples/llama.swiftui \
#      --exclude=__pycache__ CMakeLists.txt cmake ggml src include common examples pocs \
#      convert_hf_to_gguf.py gguf-py LICENSE | xz -6 -T1) > .gpu-g2/llama-src.tar.xz    # ~4 MB
#   (/tmp/llama.cpp: the source tree of llama.cpp c392e50; otherwise `fetch` github:ggerganov/llama.cpp)
# Device tool calls (carry [".gpu-g2"]; each well under 10 minutes; the second within
# the 30 s the machine stays warm, so that the build and the models are still there):
#   call 1: LMX_COMMIT=<sha> bash bench/compare_llamacpp_cuda.sh build 1b      (build + 1B, starts 8B prep)
#   call 2: LMX_COMMIT=<sha> bash bench/compare_llamacpp_cuda.sh 8b 1b         (8B; 1B again, quiet)
# then here: python3 bench/gpu_compare/summarize_cuda.py <files_at>/res.tar.gz
# Seen 2026-11-26 (H100): call 1 took 204 s (build 177 s beside the 1B prep, 1B benches 15 s);
# call 2 took 532 s, of which ~470 s waiting for the 8B prep (numpy 3.6 min, GGUF 1.4 min,
# MLX 4-bit 2.8 min, Q4_0 0.4 min) and ~60 s of benchmarks. A re-run on a warm machine
# that still holds WORK (`8b 1b`) is ~1.5 minutes of benchmarks; on a fresh machine
# `8b` alone would not fit one 10-minute call: start with `build 1b` again.
# Every phase skips what is already there (build, model files), so a re-run on a
# warm machine only benchmarks; on a fresh machine "8b" builds and converts first.
#
# What it does: llama.cpp is unpacked and built OUTSIDE the repo (WORK, default
# /tmp/g2) with CUDA for sm_90 only, targets llama-bench and llama-quantize (ninja,
# all cores). Models: bench/make_synthetic_model.py (bf16 HF folder), then
# llama.cpp's convert_hf_to_gguf.py --outtype f16, llama-quantize Q4_0, and
# `lmx convert -q --q-bits 4 --q-group-size 64` (MLX 4-bit) of the same folder.
# Benchmarks, one at a time: llama-bench -ngl 99 -fa 1 -p 512 -n 128 -r 3 -o json,
# and lmx bench -p 512 -g 128 -n 3 --device cuda --json (also with
# LMX_CUDA_FAST_GEMM=1 for the bf16 folder: one rounding of x, as llama.cpp does).
# bench/gpu_compare/probes.py measures the bf16 GEMM rate and the read bandwidth
# in the same call. Results go to WORK/res and are re-packed into
# $OUT/res.tar.gz after every step, so a lost machine still returns what ran.
set -u
R=$PWD
P=${PACK:-.gpu-g2}
W=${WORK:-/tmp/g2}
OUT=${OUT:-/tmp/g2_out}
RES=$W/res
mkdir -p "$RES" "$OUT" "$W"
exec > >(tee -a "$OUT/run.log") 2>&1
export LD_LIBRARY_PATH=$R/$P/lib:${LD_LIBRARY_PATH:-}
LB=$W/llama.cpp/build/bin
LMX=$W/lmxbin/lmx
save() { tar -C "$W" -czf "$OUT/res.tar.gz.tmp" res && mv "$OUT/res.tar.gz.tmp" "$OUT/res.tar.gz"; }
stamp() { echo "[$(date -u +%H:%M:%S)] $*"; }

# Model storage: 1B + 8B need ~48 GB; take the first of /tmp and /dev/shm with room.
pick_models_dir() {
  for d in ${MODELS:-} /tmp /dev/shm; do
    [ -d "$d" ] || continue
    free=$(df -B1G --output=avail "$d" | tail -1 | tr -d ' ')
    if [ "$free" -ge 52 ] || [ -d "$d/g2m" ]; then echo "$d/g2m"; return; fi
  done
  echo /tmp/g2m
}
M=$(pick_models_dir)
mkdir -p "$M"

info() {
  {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "lmx commit: ${LMX_COMMIT:-unknown} (working tree of that date, built with CUDA)"
    echo "llama.cpp: c392e50 (from $P/llama-src.tar.xz)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv,noheader
    nvidia-smi | grep -m1 "CUDA Version"
    nvcc --version | tail -2
    echo "cpus: $(nproc); models in $M"; df -h /tmp /dev/shm | tail -2
  } > "$RES/info.$1.txt" 2>&1
  cat "$RES/info.$1.txt"
}

unpack() {
  if [ ! -x "$LMX" ]; then
    mkdir -p "$W/lmxbin" && tar -xJf "$R/$P/bin.tar.xz" -C "$W/lmxbin"
  fi
  ldd "$LMX" | grep "not found" && stamp "lmx misses shared libraries (see above)"
}

build_llama() {
  [ -x "$LB/llama-bench" ] && [ -x "$LB/llama-quantize" ] && return 0
  mkdir -p "$W/llama.cpp" && tar -xJf "$R/$P/llama-src.tar.xz" -C "$W/llama.cpp"
  s=$(date +%s)
  gen=; command -v ninja > /dev/null && gen="-G Ninja"
  cmake -S "$W/llama.cpp" -B "$W/llama.cpp/build" $gen -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DGGML_NATIVE=ON > "$RES/llama_cmake.log" 2>&1 || { stamp "llama.cpp cmake failed"; tail -20 "$RES/llama_cmake.log"; return 1; }
  cmake --build "$W/llama.cpp/build" -j "$(nproc)" --target llama-bench llama-quantize > "$RES/llama_build.log" 2>&1
  rc=$?
  echo "llama.cpp CUDA build: rc=$rc in $(( $(date +%s) - s )) s" | tee -a "$RES/llama_build.log"
  [ $rc = 0 ] || { tail -30 "$RES/llama_build.log"; return 1; }
}

# prep SHAPE: HF bf16 folder, F16 GGUF, Q4_0 GGUF (needs llama-quantize), MLX 4-bit folder.
prep() {
  sh=$1
  if [ ! -f "$M/$sh/config.json" ]; then
    # torch on the GPU draws the 8B weights in ~40 s instead of numpy's ~3.6 min
    td=; python3 -c "import torch; assert torch.cuda.is_available()" 2> /dev/null && td="--torch-device cuda"
    stamp "generate $sh $td"; python3 "$R/bench/make_synthetic_model.py" --shape "$sh" --out "$M/$sh" $td
  fi
  if [ ! -f "$M/$sh-f16.gguf" ]; then
    stamp "convert $sh to F16 GGUF"
    PYTHONPATH=$W/llama.cpp/gguf-py python3 "$W/llama.cpp/convert_hf_to_gguf.py" "$M/$sh" --outtype f16 \
      --outfile "$M/$sh-f16.gguf.tmp" > "$RES/convert_$sh.log" 2>&1 && mv "$M/$sh-f16.gguf.tmp" "$M/$sh-f16.gguf" \
      || { stamp "convert_hf_to_gguf failed:"; tail -15 "$RES/convert_$sh.log"; }
  fi
  if [ ! -d "$M/$sh-mlx4" ] && ! { [ "$sh" = llama-8b ] && [ -n "${SKIP_MLX8B:-}" ]; }; then
    stamp "lmx convert $sh to MLX 4-bit g64"
    "$LMX" convert --hf-path "$M/$sh" --mlx-path "$M/$sh-mlx4" -q --q-bits 4 --q-group-size 64 > "$RES/mlx4_$sh.log" 2>&1 \
      || { stamp "lmx convert failed"; tail -5 "$RES/mlx4_$sh.log"; rm -rf "$M/$sh-mlx4"; }
  fi
  while [ ! -x "$LB/llama-quantize" ]; do sleep 5; [ -f "$W/build_failed" ] && return 1; done
  if [ -f "$M/$sh-f16.gguf" ] && [ ! -f "$M/$sh-q4_0.gguf" ]; then
    stamp "llama-quantize $sh Q4_0"
    "$LB/llama-quantize" "$M/$sh-f16.gguf" "$M/$sh-q4_0.gguf.tmp" Q4_0 > "$RES/quantize_$sh.log" 2>&1 \
      && mv "$M/$sh-q4_0.gguf.tmp" "$M/$sh-q4_0.gguf" || { stamp "llama-quantize failed"; tail -5 "$RES/quantize_$sh.log"; }
  fi
  stamp "prep $sh done: $(du -sh "$M/$sh" "$M/$sh"-* 2>/dev/null | tr '\n' ' ')"
}

bench_cpp() { # gguf name
  [ -f "$1" ] || { stamp "skip llama-bench $2: no file"; return; }
  stamp "llama-bench $2"
  timeout 300 "$LB/llama-bench" -m "$1" -ngl 99 -fa 1 -p 512 -n 128 -r 3 -o json > "$RES/$2.llamacpp.json" 2> "$RES/$2.llamacpp.err"
  echo "  rc=$? $(python3 -c "import json,sys; print([(e['n_prompt'],e['n_gen'],round(e['avg_ts'],1)) for e in json.load(open(sys.argv[1]))])" "$RES/$2.llamacpp.json" 2>&1 | tail -1)"
  save
}
bench_lmx() { # model name [env...]
  m=$1 n=$2; shift 2
  [ -e "$m" ] || { stamp "skip lmx $n: no model"; return; }
  stamp "lmx bench $n $*"
  env "$@" timeout 300 "$LMX" bench --model "$m" -p 512 -g 128 -n 3 --device cuda --json > "$RES/$n.lmx.json" 2> "$RES/$n.lmx.err"
  echo "  rc=$? $(grep -o '"averages": {[^}]*}' "$RES/$n.lmx.json")"
  save
}
bench_shape() {
  sh=$1
  stamp "benchmarks $sh (nothing else running: $(pgrep -fc 'make_synthetic|convert_hf_to_gguf|llama-quantize|lmx convert') prep processes)"
  bench_cpp "$M/$sh-f16.gguf" "$sh-f16"
  [ -n "${SKIP_LMX_F16:-}" ] || bench_lmx "$M/$sh-f16.gguf" "$sh-f16"
  bench_lmx "$M/$sh" "$sh-bf16"
  # the default rounds x once to bf16 in prefill (as llama.cpp / MLX); EXACT_TOO=1 adds the hi+lo mode
  [ -n "${EXACT_TOO:-}" ] && bench_lmx "$M/$sh" "$sh-bf16-exact" LMX_CUDA_EXACT=1
  bench_cpp "$M/$sh-q4_0.gguf" "$sh-q4_0"
  bench_lmx "$M/$sh-q4_0.gguf" "$sh-q4_0"
  bench_lmx "$M/$sh-mlx4" "$sh-mlx4"
}
start_prep8b() { # 8B prep in its own session (setsid), so that it outlives this call on a warm machine
  [ -f "$W/prep8b.started" ] && return
  touch "$W/prep8b.started"
  setsid nice -n 10 bash -c "$(declare -f prep stamp); R=$R W=$W M=$M RES=$RES LB=$LB LMX=$LMX SKIP_MLX8B=${SKIP_MLX8B:-}; \
    export LD_LIBRARY_PATH=$LD_LIBRARY_PATH; prep llama-8b > $RES/prep8b.log 2>&1; touch $W/prep8b.done" < /dev/null > /dev/null 2>&1 &
}

[ $# -gt 0 ] || set -- build 1b
stamp "phases: $*"
info "$(date -u +%H%M%S)"
unpack
for ph in "$@"; do
  case $ph in
    build)
      build_llama > "$RES/build_phase.log" 2>&1 || touch "$W/build_failed" &
      bpid=$!
      prep llama-1b
      # 8B prep goes on in its own session (setsid), so that it outlives this call
      # on a warm machine; phase 8b waits for its flag. NO_PREP8B=1: not now
      # (phase prep8b starts it later, e.g. after quiet 1B benchmarks)
      [ -n "${NO_PREP8B:-}" ] || start_prep8b
      wait $bpid
      cat "$RES/build_phase.log"
      save ;;
    prep8b)
      start_prep8b; stamp "8B prep started in the background" ;;
    probes)
      stamp "probes"; python3 "$R/bench/gpu_compare/probes.py" "$RES/probes.$(date -u +%H%M%S).json" 2>&1 | tail -3; save ;;
    1b)
      build_llama || exit 1
      prep llama-1b
      python3 "$R/bench/gpu_compare/probes.py" "$RES/probes.$(date -u +%H%M%S).json" > /dev/null 2>&1
      bench_shape llama-1b ;;
    8b)
      build_llama || exit 1
      if [ -f "$W/prep8b.started" ] && [ ! -f "$W/prep8b.done" ]; then
        stamp "waiting for the 8B prep started earlier"; tail -3 "$RES/prep8b.log"
        while [ ! -f "$W/prep8b.done" ] && pgrep -f "prep llama-8b" > /dev/null; do sleep 5; done
      fi
      prep llama-8b
      python3 "$R/bench/gpu_compare/probes.py" "$RES/probes.$(date -u +%H%M%S).json" 2>&1 | tail -1 | cut -c1-400
      bench_shape llama-8b ;;
  esac
  save
done
stamp "end"
save
