#!/usr/bin/env bash
# Fetches llama.cpp's tokenizer test data -- models/ggml-vocab-*.gguf and their .inp/.out vectors (about
# 60 MB) -- from the llama-cpp-python source package on PyPI into a cache folder, and prints the folder.
# Tests read it through TANDEM_LLAMA_MODELS (scripts/test.sh sets it).
# Env: LLAMA_CPP_PYTHON_VERSION (default 0.3.36, as the llama-ref build), TANDEM_CACHE (default ~/.cache/tandem).
set -euo pipefail
ver=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
dir=${TANDEM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tandem}/llama-vocab-$ver
if [ ! -f "$dir/complete" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  models=llama_cpp_python-$ver/vendor/llama.cpp/models
  src=${LLAMA_REF_DIR:-$HOME/.cache/llama-ref}/$models  # the llama-ref build's copy of the same package
  if ! ls "$src"/ggml-vocab-*.gguf >/dev/null 2>&1; then
    python3 -m pip download --quiet --no-deps --no-binary :all: -d "$tmp" "llama-cpp-python==$ver" >&2
    tar -xzf "$tmp/llama_cpp_python-$ver.tar.gz" -C "$tmp" --wildcards "$models/ggml-vocab-*"
    src=$tmp/$models
  fi
  mkdir -p "$dir"
  cp "$src"/ggml-vocab-* "$dir/"
  touch "$dir/complete"
fi
echo "$dir"
