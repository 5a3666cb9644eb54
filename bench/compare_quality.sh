#!/usr/bin/env bash
# Quality, Tandem beside llama-perplexity on the same files, text, context and threads: perplexity and
# KL-divergence of a model at its shipped quantization and re-quantized from it (`tandem quantize
# --allow-requantize`, byte-identical to llama-quantize's output), each with KV caches f16, q8_0, q4_0
# (flash attention on: llama.cpp needs it for a quantized V). The base logits are llama-perplexity's,
# from the shipped file with an f16 cache; both engines read that one file.
# usage: bench/compare_quality.sh [-c 512] [-n CHUNKS] [-t 2] [-q "Q4_0 Q4_K_M Q6_K Q8_0"] MODEL.gguf
# Env: TANDEM, LLAMA_BIN (folder of llama-perplexity); the text is scripts/fetch-text.sh's (KJV).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
TANDEM=${TANDEM:-$here/build/bin/tandem}
LLAMA_BIN=${LLAMA_BIN:-$HOME/.cache/llama-ref/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin}
c=512 n=20 t=2 quants="Q4_0 Q4_K_M Q6_K Q8_0" kv_types="f16 q8_0 q4_0"
while getopts "c:n:t:q:k:" opt; do
  case $opt in c) c=$OPTARG ;; n) n=$OPTARG ;; t) t=$OPTARG ;; q) quants=$OPTARG ;; k) kv_types=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
[ $# -eq 1 ] || { echo "usage: $0 [-c CTX] [-n CHUNKS] [-t T] [-q QUANTS] [-k KV_TYPES] MODEL.gguf" >&2; exit 2; }
model=$1
work=${WORK:-$HOME/.cache/tandem-bench/quality}
mkdir -p "$work"
# llama-perplexity tokenizes the whole file first (minutes for the 4.3 MB Bible): score a slice that
# holds the chunks with room to spare.
text=$("$here/scripts/fetch-text.sh")
head -c $((n * c * 6 + 100000)) "$text" >"$work/text.txt"

name=$(basename "$model" .gguf)
models=("$model")
for q in $quants; do
  out="$work/$name-requant-$q.gguf"
  [ -s "$out" ] || "$TANDEM" quantize --allow-requantize "$model" "$out" "$q" "$t" >/dev/null 2>&1
  models+=("$out")
done
base="$work/$name-base-c$c-n$n.kld"
[ -s "$base" ] || LD_LIBRARY_PATH=$LLAMA_BIN "$LLAMA_BIN/llama-perplexity" -m "$model" -f "$work/text.txt" -c "$c" \
  --chunks "$n" -t "$t" --kl-divergence-base "$base" >/dev/null 2>&1

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "tandem $(git -C "$here" rev-parse --short HEAD); llama.cpp: $LLAMA_BIN; text: KJV (scripts/fetch-text.sh), -c $c, $n chunks, -t $t"
echo "base logits: llama-perplexity on $(basename "$model"), f16 KV cache"
echo
echo "| model | KV K/V | bytes/token | tandem PPL | llama.cpp PPL | PPL diff | tandem KLD | llama.cpp KLD | tandem same top | llama.cpp same top |"
echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for m in "${models[@]}"; do
  for kv in $kv_types; do
    to=$(mktemp) lo=$(mktemp)
    "$TANDEM" perplexity -m "$m" -c "$c" --chunks "$n" -t "$t" -ctk "$kv" -ctv "$kv" -fa on \
      --kl-divergence-base "$base" --kl-divergence >"$to" 2>"$to.err" || true
    LD_LIBRARY_PATH=$LLAMA_BIN "$LLAMA_BIN/llama-perplexity" -m "$m" -c "$c" --chunks "$n" -t "$t" -ctk "$kv" -ctv "$kv" \
      -fa on --kl-divergence-base "$base" --kl-divergence >"$lo" 2>&1 || true
    python3 - "$to" "$lo" "$to.err" "$(basename "$m" .gguf)" "$kv" <<'PY'
import re, sys
to, lo, terr, name, kv = sys.argv[1:]
def stats(path):
    text = open(path, errors="replace").read()
    get = lambda label: (re.search(re.escape(label) + r"\s*:\s*(-?[0-9.]+)", text) or [None, None])[1]
    return {"ppl": get("Mean PPL(Q)"), "kld": get("Mean    KLD"), "top": get("Same top p")}
ours, ref = stats(to), stats(lo)
kv_line = re.search(r"kv:.*?, (\d+) bytes per token", open(terr, errors="replace").read())
diff = f"{100 * (float(ours['ppl']) / float(ref['ppl']) - 1):+.2f}%" if ours["ppl"] and ref["ppl"] else "-"
f = lambda v, suffix="": f"{v}{suffix}" if v else "n/a"
print(f"| {name} | {kv}/{kv} | {kv_line.group(1) if kv_line else '-'} | {f(ours['ppl'])} | {f(ref['ppl'])} | {diff} | "
      f"{f(ours['kld'])} | {f(ref['kld'])} | {f(ours['top'], '%')} | {f(ref['top'], '%')} |")
PY
    rm -f "$to" "$to.err" "$lo"
  done
done
