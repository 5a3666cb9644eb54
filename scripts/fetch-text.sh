#!/usr/bin/env bash
# Fetches the evaluation text for `tandem perplexity` and its tests and prints its path: the King James
# Bible (1611), public domain, from Debian's bible-kjv-text package (data; copyright file: "The copyright
# for the King James Version text of the Bible is expired"), dumped to plain text by the `bible` program
# of package bible-kjv (GPL-2+; only the program, not the text). Cached as ~/.cache/tandem-text/kjv.txt
# (4,298,239 bytes, ASCII, Genesis 1:1 to Revelation 22:21, 79-column lines; sha256 checked below).
set -euo pipefail
out_dir=${TANDEM_TEXT_CACHE:-$HOME/.cache/tandem-text}
out=$out_dir/kjv.txt
sha=82fa5f3788c6a9a010fb128a0f0bf588984b5888a82058520620eded59b033ea
if [ ! -s "$out" ]; then
  if ! command -v bible >/dev/null || [ ! -e /usr/lib/bible.data ]; then
    echo "fetch-text: installing bible-kjv bible-kjv-text" >&2
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq bible-kjv bible-kjv-text >/dev/null
  fi
  mkdir -p "$out_dir"
  # Pretty-printed (book and chapter headings, verse numbers); COLUMNS fixes the line width.
  COLUMNS=80 bible -p /usr/lib "gen1:1-rev22:21" </dev/null >"$out.tmp"
  mv "$out.tmp" "$out"
fi
got=$(sha256sum "$out" | cut -d' ' -f1)
if [ "$got" != "$sha" ]; then
  echo "fetch-text: $out has sha256 $got, expected $sha (another bible-kjv version?)" >&2
  exit 1
fi
echo "$out"
