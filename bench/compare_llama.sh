#!/usr/bin/env bash
# Whole-model speed of Tandem beside llama.cpp on the same files and threads, run back to back:
# `tandem bench` then `llama-bench` for each model, pp and tg, plus peak RSS of each run.
# usage: bench/compare_llama.sh [-p 512] [-n 128] [-t 2] [-r 3] MODEL.gguf ...
# Env: LLAMA_BENCH (llama-bench path), TANDEM (tandem binary), TANDEM_ARGS (extra tandem flags, e.g.
# "--cpu-isa avx2"), BW_GBS (the machine's read bandwidth: adds tg's share of it, with the bytes a token reads
# as `tandem plan` counts them: every weight but the embedding table, a MoE model's routed experts only for
# the experts a token uses). llama.cpp is the reference build from ../shared/tools/build-llama-cpp.sh
# (AMX off: its AMX path crashes on these machines) or bench/build-llama-avx2.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
TANDEM=${TANDEM:-$here/build/bin/tandem}
LLAMA_BENCH=${LLAMA_BENCH:-$HOME/.cache/llama-ref/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-bench}
p=512 n=128 t=2 r=3
while getopts "p:n:t:r:" opt; do
  case $opt in p) p=$OPTARG ;; n) n=$OPTARG ;; t) t=$OPTARG ;; r) r=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
[ $# -gt 0 ] || { echo "usage: $0 [-p N] [-n N] [-t T] [-r R] MODEL.gguf ..." >&2; exit 2; }
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "tandem $(git -C "$here" rev-parse --short HEAD); llama.cpp: $LLAMA_BENCH"
echo
read -r -a tandem_args <<<"${TANDEM_ARGS:-}"
echo "| model | test | tandem t/s | llama.cpp t/s | ratio | tandem GB/s (share of ${BW_GBS:-?}) | tandem peak RSS | llama.cpp peak RSS |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
for model in "$@"; do
  name=$(basename "$model" .gguf)
  for test in "pp" "tg"; do
    if [ $test = pp ]; then args=(-p "$p" -n 0); label="pp$p"; else args=(-p 0 -n "$n"); label="tg$n"; fi
    tj=$(mktemp) lj=$(mktemp) tt=$(mktemp) lt=$(mktemp)
    /usr/bin/time -f %M -o "$tt" "$TANDEM" bench -m "$model" "${args[@]}" -t "$t" -r "$r" -o json ${tandem_args[@]+"${tandem_args[@]}"} >"$tj" 2>/dev/null
    /usr/bin/time -f %M -o "$lt" "$LLAMA_BENCH" -m "$model" "${args[@]}" -t "$t" -r "$r" -o json >"$lj" 2>/dev/null
    per_token=$("$TANDEM" plan -m "$model" -c 512 --json 2>/dev/null |
      python3 -c 'import json, sys; print(sum(d["read_bytes_per_token"] for d in json.load(sys.stdin)["devices"]))')
    python3 - "$tj" "$lj" "$tt" "$lt" "$name" "$label" "$per_token" "${BW_GBS:-}" <<'PY'
import json, sys
tj, lj, tt, lt, name, label, per_token, bw = sys.argv[1:]
ours = json.load(open(tj))[0]
ref = json.load(open(lj))[0]
a, b = ours["avg_ts"], ref["avg_ts"]
rss = lambda f: f"{int(open(f).read().split()[-1]) / 1024:.0f} MiB"
gbs = "-"
if label.startswith("tg"):
    g = a * float(per_token) / 1e9
    gbs = f"{g:.1f}" + (f" ({100 * g / float(bw):.0f}%)" if bw else "")
print(f"| {name} | {label} | {a:.2f} ± {ours['stddev_ts']:.2f} | {b:.2f} ± {ref['stddev_ts']:.2f} | {a / b:.2f}x | {gbs} | {rss(tt)} | {rss(lt)} |")
PY
    rm -f "$tj" "$lj" "$tt" "$lt"
  done
done
