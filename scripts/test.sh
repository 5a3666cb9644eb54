#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds, runs CTest (GoogleTest), the Python tests
# (real gguf package, real CLI) and a bounded libFuzzer run of every parser.
# FUZZ_SECONDS (default 30) bounds each fuzz target (CI aims at 30 minutes for the whole run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh >/dev/null
export TANDEM_GEMMA_GGUF=${TANDEM_GEMMA_GGUF:-$(scripts/fetch-model.sh)}
export TANDEM_TEXT=${TANDEM_TEXT:-$(scripts/fetch-text.sh)}
export TANDEM_LLAMA_MODELS=${TANDEM_LLAMA_MODELS:-$(scripts/fetch-llama-vocab.sh)}
export TANDEM_TEST_DATA=$(scripts/fetch-test-data.sh)  # vocab GGUFs, test vectors (into $TANDEM_TEST_DATA if set)
export TANDEM_VOCAB_DIR=${TANDEM_VOCAB_DIR:-$TANDEM_TEST_DATA}                  # where synth finds them
(cd build && ctest --output-on-failure -j"$(nproc)")
python3 -m pytest -q tests/py
scripts/fuzz.sh "${FUZZ_SECONDS:-30}"
