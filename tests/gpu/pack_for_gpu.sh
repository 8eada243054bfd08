#!/bin/sh
# pack_for_gpu.sh [BUILD_DIR] - puts what tests/gpu/run_on_gpu.sh needs into
# .gpu/ (git-ignored; call the device tool with carry [".gpu"]; PACK=.gpu-NAME
# packs elsewhere, so that several people can pack at once, and EXTRA_BINS
# adds binaries to the list below): the stripped
# CUDA binaries as one xz archive (they share the library, so xz packs them
# several times smaller: the working tree plus carry must stay within
# 64 MiB) and the Debian shared libraries the GPU machine lacks.
set -e
BD=${1:-build-cuda}
P=${PACK:-.gpu}
BINS="${EXTRA_BINS:-} lmx test_cuda_ops test_cuda_fused test_gpu_memory test_device_sampler bench_cuda_ops test_models_hf test_stories260k test_models_gguf test_kv_cache test_batch test_speculative test_quant_quality test_convert"
tmp=$(mktemp -d)
for b in $BINS; do [ -x "$BD/$b" ] && strip -o "$tmp/$b" "$BD/$b"; done
mkdir -p "$P/lib"
rm -rf "$P/bin"
tar -C "$tmp" -cf - . | xz -9e -T1 > "$P/bin.tar.xz"
rm -rf "$tmp"
for l in libpcre2-8.so.0 libutf8proc.so.2 libcjson.so.1 libyaml-0.so.2 libreadline.so.8; do
  cp -L "/lib/x86_64-linux-gnu/$l" "$P/lib/"
done
du -sh "$P/bin.tar.xz" "$P/lib"
