#!/usr/bin/env bash
# The per-CPU-family speed table of BENCHMARKS.md for the machine at hand, in one command (the regression
# guard for kernel changes): CPU model, kernel level, read bandwidth (bench/memory_bandwidth.c), then Tandem
# beside llama.cpp on the same files and threads, back to back (bench/compare_llama.sh) for Gemma 3 270M
# Q4_K_M and the synth Llama-3.2-1B at Q4_K_M, Q6_K and Q8_0: natively, and `tandem --cpu-isa avx2` beside
# llama.cpp built for AVX2 only (bench/build-llama-avx2.sh) when that build exists. The ratio column is
# the check; tg's GB/s is weights read per second against the measured bandwidth.
# usage: bench/cpu_table.sh [-r 3] [-t 2] [-p 512] [-n 128] [MODEL.gguf ...]
# Env: TANDEM_BENCH_MODELS (where the synth models are made once; default ~/.cache/tandem-bench).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
r=3 t=2 p=512 n=128
while getopts "r:t:p:n:" opt; do
  case $opt in r) r=$OPTARG ;; t) t=$OPTARG ;; p) p=$OPTARG ;; n) n=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
tandem=$("$here/scripts/build.sh")
models=("$@")
if [ ${#models[@]} -eq 0 ]; then
  dir=${TANDEM_BENCH_MODELS:-$HOME/.cache/tandem-bench}
  mkdir -p "$dir"
  models=("$("$here/scripts/fetch-model.sh")")
  for mix in Q4_K_M Q6_K Q8_0; do
    f=$dir/synth-Llama-3.2-1B-$mix.gguf
    [ -f "$f" ] || "$tandem" synth --preset Llama-3.2-1B --type "$mix" --seed 42 -o "$f" >&2
    models+=("$f")
  done
fi

bw_bin=$(mktemp)
gcc -O2 -march=native -pthread "$here/bench/memory_bandwidth.c" -o "$bw_bin"
bw1=$("$bw_bin" 1 | grep -o '[0-9.]* GB/s' | cut -d' ' -f1)
bwt=$("$bw_bin" "$t" | grep -o '[0-9.]* GB/s' | cut -d' ' -f1)
rm -f "$bw_bin"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(nproc) CPUs; read bandwidth $bw1 GB/s (1 thread), $bwt GB/s ($t threads)"
"$tandem" bench -m "${models[0]}" -p 0 -n 1 -r 1 -t "$t" 2>&1 | grep -m1 -i 'cpu:' || true
echo
echo "## native"
BW_GBS=$bwt "$here/bench/compare_llama.sh" -p "$p" -n "$n" -t "$t" -r "$r" "${models[@]}"
avx2=${LLAMA_REF_DIR:-$HOME/.cache/llama-ref}/llama_cpp_python-0.3.36/vendor/llama.cpp/build-avx2/bin/llama-bench
if [ -x "$avx2" ]; then
  echo
  echo "## AVX2: tandem --cpu-isa avx2 vs llama.cpp built for AVX2 only"
  LLAMA_BENCH=$avx2 TANDEM_ARGS="--cpu-isa avx2" BW_GBS=$bwt "$here/bench/compare_llama.sh" -p "$p" -n "$n" -t "$t" -r "$r" "${models[@]}"
else
  echo; echo "(no AVX2 reference build: bench/build-llama-avx2.sh adds the AVX2 table)"
fi
