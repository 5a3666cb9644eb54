#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) in build-fuzz/ and runs each for SECONDS
# (default 60) from the seed corpus in fuzz/corpus/<target>. A crash fails the run and leaves the
# input in build-fuzz/. For a long run: scripts/fuzz.sh 3600 (or more; -jobs via FUZZ_ARGS).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
CC=clang-14 CXX=clang++-14 cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTANDEM_FUZZ=ON \
  -DTANDEM_BUILD_TESTS=OFF -DTANDEM_CUDA=OFF \
  -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined" \
  >build-fuzz.log 2>&1 || { cat build-fuzz.log; exit 1; }
targets=$(for f in fuzz/*_fuzz.cpp; do basename "$f" .cpp; done)
cmake --build build-fuzz -j"$(nproc)" --target $targets >>build-fuzz.log 2>&1 || { tail -50 build-fuzz.log; exit 1; }
for name in $targets; do
  bin=build-fuzz/bin/$name
  corpus=build-fuzz/corpus/$name
  mkdir -p "$corpus"
  [ -d "fuzz/corpus/$name" ] && cp -n fuzz/corpus/"$name"/* "$corpus"/ 2>/dev/null || true
  # The chat-template target also starts from every real template of the tests.
  [ "$name" = chat_template_fuzz ] && cp -n tests/fixtures/chat/templates/*.jinja "$corpus"/ 2>/dev/null || true
  echo "fuzz: $name for ${seconds}s"
  (cd build-fuzz && "$OLDPWD/$bin" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 \
      -print_final_stats=0 ${FUZZ_ARGS:-} "corpus/$name" 2>"$name.log") \
    || { tail -40 "build-fuzz/$name.log"; exit 1; }
  grep -E "^#[0-9]+.*DONE" "build-fuzz/$name.log" | tail -1 || true
done
