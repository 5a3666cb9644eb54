#!/usr/bin/env bash
# The main job on the default model: installs what is missing, builds, fetches Gemma 3 270M Q4_K_M
# and shows what Tandem makes of it. Until the CPU engine lands (issue 5) this runs `tandem info`
# and `tandem verify`; extra arguments go to `tandem info`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
tandem=$(scripts/build.sh)
model=$(scripts/fetch-model.sh)
"$tandem" info -m "$model" --no-tensors "$@"
"$tandem" verify -m "$model" --sha256 a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
