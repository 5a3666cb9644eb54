#!/usr/bin/env bash
# llama-bench built for AVX2 only (native off, AVX2/FMA/F16C on, AVX-512 off): the reference for
# `tandem --cpu-isa avx2`, standing in for AMD Zen 2/3 and older Xeons on any machine. Reuses the source
# that ../shared/tools/build-llama-cpp.sh unpacked (run that first); builds beside it in build-avx2/.
# Prints the folder that holds llama-bench. Idempotent.
set -euo pipefail
ver=${1:-0.3.36}
root=${LLAMA_REF_DIR:-$HOME/.cache/llama-ref}
src=$root/llama_cpp_python-$ver/vendor/llama.cpp
bin=$src/build-avx2/bin
if [ -x "$bin/llama-bench" ]; then echo "$bin"; exit 0; fi
[ -d "$src" ] || { echo "no llama.cpp source at $src: run ../shared/tools/build-llama-cpp.sh first" >&2; exit 1; }
cmake -S "$src" -B "$src/build-avx2" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON \
      -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF \
      -DGGML_AVX512_BF16=OFF -DGGML_AVX_VNNI=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
      -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_OPENSSL=OFF >&2
cmake --build "$src/build-avx2" -j"$(nproc)" --target llama-bench >&2
echo "$bin"
