#!/bin/sh
# g7b_step_gpu.sh - helper G7B's one device call (session 5): the decode
# step's kernels before/after the GQA decode attention and the fused
# add+RMSNorm / RoPE+KV-write ops ("old" = whatever lmx is packed as
# lmx_old.xz, e.g. main's). Pack (in the worktree):
#   PACK=/work/main/.gpu-g7b EXTRA_BINS="test_cuda_fused test_decode_graph" sh tests/gpu/pack_for_gpu.sh build-cuda
#   strip -o /tmp/lmx_old <main's build-cuda/lmx>; xz it into .gpu-g7b/lmx_old.xz; cp this script + g7b_ncu.py there
# and call the device tool with carry [".gpu-g7b"]: cd .gpu-g7b && sh g7b_step_gpu.sh
# Parts, in order (each under a timeout; later parts skipped past DEADLINE s):
#   1. model: synthetic llama-1b drawn on the GPU, converted to MLX 4-bit g64 (background)
#   2. tests: test_cuda_fused, test_cuda_ops (all), test_decode_graph (stories260K), model suites
#   3. attn:  decode attention 8B/1B shapes S=512..4096, LMX_CUDA_ATTN=old vs new (bench_cuda_ops)
#   4. bench: lmx bench -p 512 -g 128 -n 3 on the 1B 4-bit: old binary, new, new with the old paths
#   5. graph: test_decode_graph on the 1B 4-bit (hd 64: the GQA kernel inside the graph)
#   6. ncu:   per-kernel times of the last decode step (gpu__time_duration), old vs new
R=$(cd .. && pwd); P=$PWD
export LD_LIBRARY_PATH=$P/lib:${LD_LIBRARY_PATH:-}
B=$P/bin; mkdir -p $B; tar -xJf $P/bin.tar.xz -C $B
xz -dc $P/lmx_old.xz > $B/lmx_old && chmod +x $B/lmx_old
mkdir -p /work && ln -sfn "$R" /work/wt-g7b
mkdir -p "$R/build-cuda" && cp -f $B/lmx "$R/build-cuda/lmx"
O=${OUT:-/tmp/out}; mkdir -p $O
t0=$(date +%s)
el() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
left() { [ $(( $(date +%s) - t0 )) -lt ${DEADLINE:-95} ]; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader; date -u
(cd $R && python3 bench/make_synthetic_model.py --shape llama-1b --out /tmp/llama-1b --torch-device cuda > /tmp/mk.log 2>&1 &&
  $B/lmx convert --hf-path /tmp/llama-1b --mlx-path /tmp/q4 -q --q-bits 4 --q-group-size 64 >> /tmp/mk.log 2>&1; echo $? > /tmp/mk.done) &
T=$O/tests.log; : > $T
rt() { # timeout name [args...], from the repo root (default model paths); E="VAR=value ...": environment
  to=$1; t=$2; shift 2
  echo "===== $E $t $*" >> $T
  (cd $R && env $E timeout $to $B/$t "$@") >> $T 2>&1; rc=$?
  el "$E $t $*: rc=$rc $(tail -1 $T)"
  E=
}
(timeout 75 $B/test_cuda_ops > $O/test_cuda_ops.log 2>&1; echo $? > /tmp/ops.done) &
rt 30 test_cuda_fused
LMX_CUDA_ATTN_MERGE=1 timeout 30 $B/test_cuda_fused > /tmp/fused_merge.log 2>&1
el "test_cuda_fused LMX_CUDA_ATTN_MERGE=1: rc=$? $(tail -1 /tmp/fused_merge.log)"; grep "^FAIL" /tmp/fused_merge.log | head -5
rt 30 test_decode_graph
for t in test_models_hf test_stories260k test_models_gguf test_kv_cache test_batch; do E=LMX_DEVICE=cuda rt 40 $t; done
grep -E "^FAIL|FAILED|not ok" $T | head -20
while [ ! -f /tmp/ops.done ]; do sleep 1; done
el "test_cuda_ops: rc=$(cat /tmp/ops.done) $(grep -E 'passed' $O/test_cuda_ops.log | tail -1)"; grep "^FAIL" $O/test_cuda_ops.log | head -10
if left; then
  BENCH_OPS_ONLY=attn LMX_CUDA_ATTN=old timeout 30 $B/bench_cuda_ops > /tmp/attn_old.log 2>&1
  BENCH_OPS_ONLY=attn timeout 30 $B/bench_cuda_ops > /tmp/attn_new.log 2>&1
  BENCH_OPS_ONLY=attn LMX_CUDA_ATTN_MERGE=1 timeout 30 $B/bench_cuda_ops > /tmp/attn_merge.log 2>&1
  BENCH_OPS_ONLY=attn LMX_CUDA_ATTN_CHUNK=64 timeout 30 $B/bench_cuda_ops > /tmp/attn_c64.log 2>&1
  el "decode attention, us per call: old | new (gqa + combine) | new LMX_CUDA_ATTN_MERGE=1 | new LMX_CUDA_ATTN_CHUNK=64"
  for f in old new merge c64; do grep "^attention" /tmp/attn_$f.log | sed 's/ us .*//' | awk '{print $NF}' > /tmp/attn_$f.us; done
  grep "^attention" /tmp/attn_old.log | sed 's/ *[0-9.]* us .*//' > /tmp/attn.lab
  paste -d'|' /tmp/attn.lab /tmp/attn_old.us /tmp/attn_new.us /tmp/attn_merge.us /tmp/attn_c64.us | tee $O/attn.txt
  BENCH_OPS_ONLY=norm timeout 30 $B/bench_cuda_ops 2>&1 | grep -E "^(rms_norm|add)" | tee -a $O/attn.txt
fi
while [ ! -f /tmp/mk.done ]; do sleep 1; done
el "model: rc=$(cat /tmp/mk.done) $(tail -1 /tmp/mk.log)"
M=/tmp/q4; L=$O/bench.log; : > $L
bn() { # label binary [env...]
  lab=$1; bin=$2; shift 2
  echo "===== $lab" >> $L
  env "$@" timeout 40 $B/$bin bench --model $M -p 512 -g 128 -n 3 --device cuda --json >> $L 2>&1
  el "bench $lab: $(grep -o '"averages": {[^}]*}' $L | tail -1)"
}
if left; then
  bn old lmx_old
  bn new lmx
  bn "new LMX_FUSE=0 LMX_CUDA_ATTN=old" lmx LMX_FUSE=0 LMX_CUDA_ATTN=old
  bn "new LMX_FUSE=0" lmx LMX_FUSE=0
  bn "new LMX_CUDA_ATTN_MERGE=1" lmx LMX_CUDA_ATTN_MERGE=1
  bn "new LMX_CUDA_ATTN_CHUNK=64" lmx LMX_CUDA_ATTN_CHUNK=64
fi
left && rt 40 test_decode_graph $M
left && E=LMX_CUDA_ATTN_MERGE=1 rt 40 test_decode_graph $M
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
PROMPT=$(python3 -c 'print(" ".join(["hello world"] * 200))')
for m in new old; do
  [ $(( $(date +%s) - t0 )) -lt ${NCU_BY:-75} ] || break
  bin=lmx; [ $m = old ] && bin=lmx_old
  timeout ${NCU_S:-18} $NCU --metrics gpu__time_duration.sum --csv --print-units base --cache-control none --clock-control none \
    $B/$bin generate --model $M --device cuda --prompt "$PROMPT" -m 2 --temp 0 --ignore-chat-template > $O/ncu_$m.csv 2> /tmp/ncu_$m.err
  el "ncu $m rc=$? $(wc -l < $O/ncu_$m.csv) lines $(grep -c gpu__time_duration $O/ncu_$m.csv) kernels"; tail -2 /tmp/ncu_$m.err
done
python3 $P/g7b_ncu.py $O/ncu_old.csv $O/ncu_new.csv $L 2>&1 | tee $O/step_table.txt
tar -C $O -cJf $O/ncu.tar.xz ncu_old.csv ncu_new.csv 2>/dev/null; rm -f $O/ncu_old.csv $O/ncu_new.csv
el end
