#!/usr/bin/env bash
# KV cache types and flash attention, Tandem beside llama.cpp on the same file and threads, run back
# to back: pp512, tg128 and tg128 after a 4096-token context (-d 4096), for each cache type with and
# without flash attention. llama.cpp cannot run a quantized V cache without flash attention: "n/a".
# usage: bench/compare_kv.sh [-t 2] [-r 2] [-k "f16 q8_0 q4_0"] MODEL.gguf
# Env: LLAMA_BENCH (llama-bench path), TANDEM (tandem binary).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
TANDEM=${TANDEM:-$here/build/bin/tandem}
LLAMA_BENCH=${LLAMA_BENCH:-$HOME/.cache/llama-ref/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-bench}
t=2 r=2 types="f16 q8_0 q4_0"
while getopts "t:r:k:" opt; do
  case $opt in t) t=$OPTARG ;; r) r=$OPTARG ;; k) types=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
[ $# -eq 1 ] || { echo "usage: $0 [-t T] [-r R] [-k TYPES] MODEL.gguf" >&2; exit 2; }
model=$1
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "tandem $(git -C "$here" rev-parse --short HEAD); llama.cpp: $LLAMA_BENCH; $(basename "$model"), -t $t, -r $r"
echo
echo "| KV K/V | flash | test | tandem t/s | llama.cpp t/s | ratio |"
echo "| --- | --- | --- | ---: | ---: | ---: |"
for type in $types; do
  for fa in 0 1; do
    for test in pp512 tg128 tg128@d4096; do
      case $test in
        pp512) args=(-p 512 -n 0) ;;
        tg128) args=(-p 0 -n 128) ;;
        tg128@d4096) args=(-p 0 -n 128 -d 4096) ;;
      esac
      tj=$(mktemp) lj=$(mktemp)
      tfa=$([ $fa = 1 ] && echo on || echo off)
      "$TANDEM" bench -m "$model" "${args[@]}" -t "$t" -r "$r" -ctk "$type" -ctv "$type" -fa "$tfa" -o json \
        >"$tj" 2>/dev/null || echo '[]' >"$tj"
      "$LLAMA_BENCH" -m "$model" "${args[@]}" -t "$t" -r "$r" -ctk "$type" -ctv "$type" -fa "$fa" -o json \
        >"$lj" 2>/dev/null || echo '[]' >"$lj"
      python3 - "$tj" "$lj" "$type" "$tfa" "$test" <<'PY'
import json, sys
tj, lj, kv, fa, test = sys.argv[1:]
def load(f):
    try:
        rows = json.load(open(f))
        return rows[0] if rows else None
    except (ValueError, IndexError):
        return None
ours, ref = load(tj), load(lj)
fmt = lambda r: f"{r['avg_ts']:.2f} ± {r['stddev_ts']:.2f}" if r else "n/a"
ratio = f"{ours['avg_ts'] / ref['avg_ts']:.2f}x" if ours and ref else "-"
print(f"| {kv}/{kv} | {fa} | {test} | {fmt(ours)} | {fmt(ref)} | {ratio} |")
PY
      rm -f "$tj" "$lj"
    done
  done
done
