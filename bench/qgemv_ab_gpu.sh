#!/bin/sh
# qgemv_ab_gpu.sh - one device call for the quantized decode GEMVs (helper G6A,
# session 4): test_cuda_ops' quantized cases, the M = 1 kernel table once per
# LMX_CUDA_QGEMV mode (default "new" = the current kernels, "old" = session 3's),
# and the synthetic llama-1b at MLX 4-bit g64 (lmx bench + forward-only timing,
# greedy text) new vs old. Usage: build with -DLMX_CUDA=ON, then
#   PACK=$PWD/.gpu-NAME sh tests/gpu/pack_for_gpu.sh build-cuda
#   cp bench/qgemv_ab_gpu.sh .gpu-NAME/run.sh
# and call the device tool with carry [".gpu-NAME"] and
#   cd .gpu-NAME && PARTS="test ops model" MODES="old new" ROUNDS=1 sh run.sh
# (QFMT picks the kernel table's formats, default q4_0, q6_K, MLX 4/8-bit g64).
# Only 8 files come back from $OUT: the summary is on stdout.
R=$PWD/..; P=$PWD
export LD_LIBRARY_PATH=$P/lib:${LD_LIBRARY_PATH:-}
B=$P/bin; mkdir -p $B; tar -xJf $P/bin.tar.xz -C $B
# the test binaries carry the build tree's tests/data path: WT = that tree
mkdir -p /work && ln -sfn "$R" "${WT:-/work/wt-g6a}"
O=${OUT:-/tmp/out}; mkdir -p $O
t0=$(date +%s)
el() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
date -u; command -v ncu nsys compute-sanitizer || true
PARTS=${PARTS:-test ops model}
has() { case " $PARTS " in *" $1 "*) return 0 ;; esac; return 1; }
if has model; then
  (cd $R && python3 bench/make_synthetic_model.py --shape llama-1b --out /tmp/llama-1b > /tmp/mk.log 2>&1; echo done > /tmp/mk.done) &
fi
if has test; then
  LMX_TEST_ONLY=quant timeout 150 $B/test_cuda_ops > $O/test.log 2>&1
  el "test_cuda_ops rc=$? $(grep -c '^ok' $O/test.log) ok; $(grep -E 'passed' $O/test.log)"
  grep -E "^FAIL" $O/test.log | head -20
  grep -E "gguf q4_0|gguf q6_K|mlx 4-bit g64" $O/test.log | grep "M=1 " | head -12
fi
if has ops; then
  export BENCH_OPS_ONLY=qdec BENCH_QFMT="${QFMT:-q4_0,q6_K,mlx 4-bit g64,mlx 8-bit g64}"
  for mode in ${MODES:-new old r8}; do
    if [ $mode = new ]; then unset LMX_CUDA_QGEMV; else export LMX_CUDA_QGEMV=$mode; fi
    timeout 100 $B/bench_cuda_ops > $O/ops_$mode.log 2>&1
    el "bench_cuda_ops $mode rc=$?"
  done
  unset LMX_CUDA_QGEMV BENCH_OPS_ONLY BENCH_QFMT
  echo "shape | ${MODES:-new old r8} (us)"
  for f in $O/ops_*.log; do grep "^matmul" $f | sed 's/ us .*//' | awk '{print $NF}' > $f.us; done
  grep "^matmul" $O/ops_new.log | cut -c8-56 > $O/labels
  set -- ; for m in ${MODES:-new old r8}; do set -- "$@" $O/ops_$m.log.us; done
  paste -d' ' $O/labels "$@"
fi
if has model; then
  while [ ! -f /tmp/mk.done ]; do sleep 1; done
  el "model made: $(tail -1 /tmp/mk.log)"
  timeout 60 $B/lmx convert --hf-path /tmp/llama-1b --mlx-path /tmp/q4 -q --q-bits 4 --q-group-size 64 > $O/convert.log 2>&1
  el "converted rc=$?"
  L=$O/model.log
  for rep in ${ROUNDS:-1 2}; do
    for mode in new old; do
      if [ $mode = new ]; then unset LMX_CUDA_QGEMV; else export LMX_CUDA_QGEMV=$mode; fi
      echo "===== $mode round $rep" >> $L
      timeout 60 $B/lmx bench --model /tmp/q4 -p 512 -g 128 -n 3 --device cuda --json >> $L 2>&1
      el "bench $mode $rep: $(grep -o '"averages": {[^}]*}' $L | tail -1)"
    done
  done
  for mode in new old; do
    if [ $mode = new ]; then unset LMX_CUDA_QGEMV; else export LMX_CUDA_QGEMV=$mode; fi
    timeout 60 $B/bench_cuda_ops /tmp/q4 128 > $O/fwd_$mode.log 2>&1
    el "forward $mode: $(grep -v warm-up $O/fwd_$mode.log | tail -2 | tr '\n' ' ')"
    timeout 60 $B/lmx generate --model /tmp/q4 --device cuda --prompt "hello world" -m 48 --temp 0 --ignore-chat-template 2>/dev/null | grep -v -E '^(Prompt|Generation|Peak memory):' > $O/gen_$mode.txt
  done
  cmp -s $O/gen_new.txt $O/gen_old.txt && echo "greedy text new vs old: identical" || echo "greedy text new vs old: DIFFERENT"
fi
el end
