#!/usr/bin/env bash
# Configures and builds Tandem (Release) into build/; prints the binary's path, or the errors.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >build/cmake.log 2>&1 || { cat build/cmake.log >&2; exit 1; }
cmake --build build -j"$(nproc)" >build/build.log 2>&1 || { grep -E "error|Error" -A5 build/build.log | head -60 >&2; exit 1; }
echo "$PWD/build/bin/tandem"
