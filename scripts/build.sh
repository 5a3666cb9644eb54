#!/usr/bin/env bash
# Configures and builds Tandem (Release) into build/; prints the binary's path, or the errors.
# Where nvcc exists (on PATH or in /usr/local/cuda) the CUDA backend is compiled too, for
# TANDEM_CUDA_ARCHS (default 75, the oldest CUDA 13 builds: sm_75 code plus PTX the driver compiles for
# any newer GPU at first start; unset -DCMAKE_CUDA_ARCHITECTURES, CMake builds all of ours (docs/cuda.md);
# scripts/gpu-check.sh builds the local GPU's).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build
cuda=(-DTANDEM_CUDA=OFF)
nvcc=$(command -v nvcc || { [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda/bin/nvcc; } || true)
if [ -n "$nvcc" ]; then
  cuda=(-DTANDEM_CUDA=ON "-DCMAKE_CUDA_COMPILER=$nvcc" "-DCMAKE_CUDA_ARCHITECTURES=${TANDEM_CUDA_ARCHS:-75}")
else
  echo "build: no nvcc (CUDA toolkit) here: the CUDA backend is not compiled" >&2
fi
[ -x build/bin/tandem ] || echo "build: the first build takes 4-10 minutes on 2 cores; progress in build/build.log" >&2
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "${cuda[@]}" >build/cmake.log 2>&1 || { cat build/cmake.log >&2; exit 1; }
cmake --build build -j"$(nproc)" >build/build.log 2>&1 || { grep -E "error|Error" -A5 build/build.log | head -60 >&2; exit 1; }
echo "$PWD/build/bin/tandem"
