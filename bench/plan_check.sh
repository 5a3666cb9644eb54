#!/usr/bin/env bash
# tandem plan's predicted pp512 and tg128 against tandem bench's, per model file (issue 14, item 4): one
# line each, predicted / measured and their ratio, CPU only and, with --sim SIZE, on the CPU plus a sim
# device of SIZE with the placement --fit chooses (plan and bench choose the same one).
#
#   bench/plan_check.sh [--probe | --fresh] [--sim SIZE] [-r N] [-t N] MODEL.gguf...
#
# --probe runs a full `tandem probe` first (about a minute; cached where plan finds it); --fresh ignores
# any cached probe: plan measures a quick one of the model's weight types right before each bench (the
# pair then sees the same machine; on a shared one its speed drifts by a quarter over minutes). Run it
# on a quiet machine: the probe keeps its best figures, bench averages its runs.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tandem=${TANDEM:-$root/build/bin/tandem}
reps=3 threads="" sim="" probe=0 fresh=0
models=()
while [ $# -gt 0 ]; do
  case $1 in
    --probe) probe=1 ;;
    --fresh) fresh=1 ;;
    --sim) sim=$2; shift ;;
    -r) reps=$2; shift ;;
    -t) threads=$2; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    -*) echo "error: unknown option $1 (see --help)" >&2; exit 1 ;;
    *) models+=("$1") ;;
  esac
  shift
done
[ ${#models[@]} -gt 0 ] || { echo "error: give at least one model file (see --help)" >&2; exit 1; }
[ -x "$tandem" ] || { echo "error: $tandem not built (cmake --build build)" >&2; exit 1; }
[ $probe = 1 ] && [ $fresh = 1 ] && { echo "error: give --probe or --fresh, not both" >&2; exit 1; }
[ $fresh = 1 ] && export TANDEM_PROBE_FILE=/nonexistent/tandem-plan-check/probe.json
common=(-p 512 -ub 512)
[ -n "$threads" ] && common+=(-t "$threads")

if [ $probe = 1 ]; then "$tandem" probe >/dev/null; fi
echo "$(uname -n): $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-32s %-10s %9s %9s %6s %8s %8s %6s\n' model devices "pp pred" "pp bench" ratio "tg pred" "tg bench" ratio
for model in "${models[@]}"; do
  configs=("CPU")
  [ -n "$sim" ] && configs+=("SIM")
  for config in "${configs[@]}"; do
    extra=()
    [ "$config" = SIM ] && extra=(--sim-device "$sim" -fit on)
    # plan has no -fit flag: fitting is what it does.
    plan_extra=()
    [ "$config" = SIM ] && plan_extra=(--sim-device "$sim")
    plan=$("$tandem" plan -m "$model" "${common[@]}" "${plan_extra[@]}" --json 2>/dev/null) ||
      { echo "error: tandem plan failed on $model" >&2; exit 1; }
    bench=$("$tandem" bench -m "$model" "${common[@]}" -n 128 -r "$reps" "${extra[@]}" -o json 2>/dev/null) ||
      { echo "error: tandem bench failed on $model" >&2; exit 1; }
    python3 - "$model" "$config" "$plan" "$bench" <<'EOF'
import json, os, sys
model, config, plan, bench = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
pp = next(r["avg_ts"] for r in bench if r["n_prompt"] == 512)
tg = next(r["avg_ts"] for r in bench if r["n_gen"] == 128)
pp_p, tg_p = plan["pp_tokens_per_s"], plan["tg_tokens_per_s"]
devices = config if config == "CPU" else "CPU+" + "+".join(d["name"] for d in plan["devices"][1:] if d["weight_bytes"])
print(f"{os.path.basename(model)[:32]:32s} {devices:10s} {pp_p:9.1f} {pp:9.1f} {pp_p / pp:6.2f} {tg_p:8.2f} {tg:8.2f} {tg_p / tg:6.2f}")
EOF
  done
done
