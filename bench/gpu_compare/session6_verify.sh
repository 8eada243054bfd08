#!/bin/sh
# Session 6's last GPU check (carry [".gpu-lead"]: pack_for_gpu.sh output, plus py/ holding the `gguf` package
# for bench/make_q4_0_gguf.py): the repacked-weight and training suites on the final binaries, compute-sanitizer
# memcheck of the repacked GEMVs and the training vjps, and decode on a 1B-layer Q4_0 GGUF with a 128256-row Q6_K
# tied embedding (make_q4_0_gguf.py 1b-q6) with programmatic dependent launch on and off.
R=$PWD; P=$R/.gpu-lead
export LD_LIBRARY_PATH=$P/lib:${LD_LIBRARY_PATH:-}
B=$P/bin; mkdir -p $B; tar -xJf $P/bin.tar.xz -C $B
mkdir -p /work && [ -e /work/main ] || ln -sfn "$R" /work/main
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; date -u
PYTHONPATH=$P/py timeout 90 python3 bench/make_q4_0_gguf.py /tmp/q6.gguf 1 models/stories260K.gguf 1b-q6 > /tmp/mk.log 2>&1
el "make 1b-q6: rc=$?"
bn() { lab=$1; shift; env "$@" timeout 60 $B/lmx bench --model /tmp/q6.gguf -p 16 -g 128 -n 3 --device cuda --json > /tmp/b.log 2>&1
  el "bench $lab: $(grep -o '"generation_tps": [0-9.]*' /tmp/b.log | head -3 | sed 's/"generation_tps": //' | tr '\n' ' ')"; }
for r in 1 2; do bn "1b-q6 default r$r"; bn "1b-q6 LMX_CUDA_PDL=0 r$r" LMX_CUDA_PDL=0; done
for t in test_cuda_q4r test_cuda_q6r test_cuda_ops test_cuda_fused test_cuda_vjps test_gpu_train; do
  timeout 120 $B/$t > $OUT/$t.log 2>&1; el "$t rc=$? $(tail -1 $OUT/$t.log)"; grep "^FAIL" $OUT/$t.log | head -3; done
timeout 60 $B/test_decode_graph /tmp/q6.gguf > /tmp/t.log 2>&1; el "test_decode_graph 1b-q6 rc=$? $(tail -1 /tmp/t.log)"
for t in test_models_gguf test_stories260k test_models_hf; do LMX_DEVICE=cuda timeout 60 $B/$t > /tmp/t.log 2>&1; el "$t (cuda) rc=$? $(tail -1 /tmp/t.log)"; done
for t in test_cuda_q4r test_cuda_q6r test_cuda_vjps; do
  timeout 150 compute-sanitizer --tool memcheck --error-exitcode 9 $B/$t > $OUT/san_$t.log 2>&1
  el "memcheck $t rc=$? $(grep -E 'ERROR SUMMARY' $OUT/san_$t.log | tail -1)"; done
date -u
