#!/bin/sh
# mlx_cuda_pack.sh [PACK_DIR] - fills PACK_DIR (default .gpu-mlx; git-ignored through
# .git/info/exclude's /.gpu-*/) with what bench/gpu_compare/mlx_cuda_run.sh needs on the GPU
# machine to run MLX's own CUDA backend (mlx_lm benchmark) beside lmx, inside one device
# call's 64 MiB (the tree is ~46 MB, so the pack must stay under ~20 MB):
#   mlx-site.tar.xz  mlx 0.32.4 + mlx-cuda-13 0.32.4 + mlx-lm 0.32.2, unpacked as pip would
#                    into a --target folder, with two cuts that make 190 MB fit in ~18 MB:
#                    - libmlx.so's device code for every GPU but sm_90 zeroed (mlx_cuda_prune.py:
#                      headers and sizes kept, so the fatbin stays valid; H100/H200 load sm_90);
#                    - the bundled reference BLAS/LAPACK (+ gfortran, quadmath; 11.7 MB) replaced
#                      by stubs of the 24 symbols libmlx.so links (they serve only CPU-stream
#                      matmul/linalg, which the GPU benchmark does not run; a call aborts loudly).
#                    - the local symbol tables stripped, the Metal kernel headers dropped.
#                    The NVRTC headers (mlx/include: cccl, cute, cutlass) stay: MLX JIT-compiles
#                    kernels from them (the sm_90 quantized matmul includes cutlass).
#   lmx.tar.xz       the stripped lmx binary of $LMX_BUILD (default build-cuda; LMX_BUILD= skips)
#                    and the Debian libraries the GPU machine lacks (as tests/gpu/pack_for_gpu.sh)
#   mlx_cuda_run.sh  a copy of the run script, so a checkout without this branch can run it
# The wheels come from $MLX_WHEELS (default /tmp/mlxw) or are downloaded there with pip.
# Nothing of the wheels is committed. Re-running replaces the pack.
set -e
D=$(cd "$(dirname "$0")" && pwd)
P=${1:-${PACK:-.gpu-mlx}}
W=${MLX_WHEELS:-/tmp/mlxw}
LMX_BUILD=${LMX_BUILD-build-cuda}
KEEP_SM=${KEEP_SM:-90}
mkdir -p "$W" "$P"
have() { ls "$W"/$1 >/dev/null 2>&1; }
if ! have 'mlx-0.32.4-*.whl' || ! have 'mlx_cuda_13-0.32.4-*.whl' || ! have 'mlx_lm-0.32.2-*.whl'; then
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_35_x86_64 -d "$W" mlx==0.32.4 mlx-cuda-13==0.32.4 mlx-lm==0.32.2
fi
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
S=$T/site
mkdir -p "$S"
for w in "$W"/mlx-0.32.4-*.whl "$W"/mlx_cuda_13-0.32.4-*.whl "$W"/mlx_lm-0.32.2-*.whl; do
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$w" "$S"
done
rm -f "$S"/*.dist-info/RECORD
rm -rf "$S"/mlx/share "$S"/mlx_lm/*.md "$S"/mlx/include/mlx/backend/metal
# The wheel's libmlx.so keeps its full symbol table (.symtab + .strtab, 26 MB): strip it (the
# dynamic symbols stay), which makes the archive 1.1 MB smaller; nothing reads the local symbols.
strip "$S/mlx/lib/libmlx.so" "$S"/mlx/core.cpython-*.so

python3 "$D/mlx_cuda_prune.py" "$S/mlx/lib/libmlx.so" --keep "$KEEP_SM"

# BLAS/LAPACK stubs: same file names and SONAMEs as the wheel's (libmlx.so's NEEDED), each
# defining the symbols of the real library that libmlx.so uses.
L=$S/mlx_cuda_13.libs
nm -D --undefined-only "$S/mlx/lib/libmlx.so" | awk '{print $NF}' | sed 's/@.*//' | sort -u > "$T/undef"
for real in "$L"/liblapack-*.so* "$L"/libblas-*.so*; do
  so=$(basename "$real")
  nm -D --defined-only "$real" | awk 'NF==3 {print $3}' | sort -u | comm -12 - "$T/undef" > "$T/syms"
  {
    echo '#include <stdio.h>'
    echo '#include <stdlib.h>'
    echo '/* Stub of a CPU BLAS/LAPACK library left out of the MLX pack (bench/gpu_compare/mlx_cuda_pack.sh). */'
    echo 'static void stub(const char *n) {'
    echo '    fprintf(stderr, "mlx_cuda_pack: CPU BLAS/LAPACK %s was left out of the pack\\n", n);'
    echo '    abort();'
    echo '}'
    while read -r s; do echo "void $s(void) { stub(\"$s\"); }"; done < "$T/syms"
  } > "$T/stub.c"
  cc -O1 -shared -fPIC -Wl,-soname,"$so" -o "$T/$so" "$T/stub.c"
  echo "stub $so: $(wc -l < "$T/syms") symbols"
done
rm -f "$L"/*
mv "$T"/lib*.so* "$L"/

# BCJ x86 filter: libmlx.so's .text packs ~4% smaller; the headers barely notice it.
tar -C "$S" -cf - . | xz -T2 --x86 --lzma2=preset=9e,dict=64MiB > "$P/mlx-site.tar.xz"

rm -f "$P/lmx.tar.xz"
if [ -n "$LMX_BUILD" ]; then
  mkdir -p "$T/lmx/lib"
  strip -o "$T/lmx/lmx" "$LMX_BUILD/lmx"
  for l in libpcre2-8.so.0 libutf8proc.so.2 libcjson.so.1 libyaml-0.so.2 libreadline.so.8; do
    cp -L "/lib/x86_64-linux-gnu/$l" "$T/lmx/lib/"
  done
  tar -C "$T/lmx" -cf - . | xz -9e -T2 > "$P/lmx.tar.xz"
fi
cp "$D/mlx_cuda_run.sh" "$P/"
ls -l "$P"
tree=$(git ls-files -z | xargs -0 stat -c %s 2>/dev/null | awk '{s+=$1} END {print s}')
pack=$(du -sb "$P" | cut -f1)
echo "tracked tree $tree + pack $pack = $((tree + pack)) bytes (a call carries at most 67108864)"
