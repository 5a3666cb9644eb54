#!/usr/bin/env bash
# tandem plan's predicted pp512 and tg128 against tandem bench's, per model file (issue 14, item 4), CPU
# only and, with --sim SIZE, on the CPU plus a sim device of SIZE with the placement --fit chooses (plan
# and bench choose the same one).
#
#   bench/plan_check.sh [--probe | --fresh] [--sim SIZE] [--rounds N] [-r N] [-t N] MODEL.gguf...
#
# Prediction and measurement alternate: each round runs, for every file and device set in turn, tandem
# plan and then tandem bench (-r N repetitions, default 1); --rounds (default 3) such rounds. Each pair
# prints a line as it comes, then a table of the medians over the rounds: predicted / measured and their
# ratio, the range of the rounds' own ratios, and each figure's spread ((max - min) / median). A ratio
# outside 1 +- 15% is marked MISS; where the measured figure's own spread exceeds 15% the machine moved
# more than the criterion between rounds, and the table says so (the ratio is still printed as it is).
#
# --probe runs a full `tandem probe` first (about a minute; cached where plan finds it); --fresh ignores
# any cached probe: plan measures a quick one of the model's weight types right before each bench, so
# each pair sees the same machine (a shared one's speed drifts by a quarter over minutes).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tandem=${TANDEM:-$root/build/bin/tandem}
reps=1 rounds=3 threads="" sim="" probe=0 fresh=0
models=()
while [ $# -gt 0 ]; do
  case $1 in
    --probe) probe=1 ;;
    --fresh) fresh=1 ;;
    --sim) sim=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    -r) reps=$2; shift ;;
    -t) threads=$2; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    -*) echo "error: unknown option $1 (see --help)" >&2; exit 1 ;;
    *) models+=("$1") ;;
  esac
  shift
done
[ ${#models[@]} -gt 0 ] || { echo "error: give at least one model file (see --help)" >&2; exit 1; }
[ -x "$tandem" ] || { echo "error: $tandem not built (cmake --build build)" >&2; exit 1; }
[ $probe = 1 ] && [ $fresh = 1 ] && { echo "error: give --probe or --fresh, not both" >&2; exit 1; }
[[ $rounds =~ ^[1-9][0-9]*$ ]] || { echo "error: --rounds $rounds: give a count of 1 or more" >&2; exit 1; }
[ $fresh = 1 ] && export TANDEM_PROBE_FILE=/nonexistent/tandem-plan-check/probe.json
common=(-p 512 -ub 512)
[ -n "$threads" ] && common+=(-t "$threads")
pairs=$(mktemp)
trap 'rm -f "$pairs"' EXIT

if [ $probe = 1 ]; then "$tandem" probe >/dev/null; fi
echo "$(uname -n): $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-6s %-32s %-10s %9s %9s %6s %8s %8s %6s\n' round model devices "pp pred" "pp bench" ratio "tg pred" "tg bench" ratio
configs=("CPU")
[ -n "$sim" ] && configs+=("SIM")
for round in $(seq 1 "$rounds"); do
  for model in "${models[@]}"; do
    for config in "${configs[@]}"; do
      extra=() plan_extra=()  # plan has no -fit flag: fitting is what it does
      [ "$config" = SIM ] && extra=(--sim-device "$sim" -fit on) plan_extra=(--sim-device "$sim")
      plan=$("$tandem" plan -m "$model" "${common[@]}" "${plan_extra[@]}" --json 2>/dev/null) ||
        { echo "error: tandem plan failed on $model" >&2; exit 1; }
      bench=$("$tandem" bench -m "$model" "${common[@]}" -n 128 -r "$reps" "${extra[@]}" -o json 2>/dev/null) ||
        { echo "error: tandem bench failed on $model" >&2; exit 1; }
      python3 - "$pairs" "$round" "$model" "$config" "$plan" "$bench" <<'EOF'
import json, os, sys
pairs, round_, model, config = sys.argv[1], int(sys.argv[2]), os.path.basename(sys.argv[3])[:32], sys.argv[4]
plan, bench = json.loads(sys.argv[5]), json.loads(sys.argv[6])
pp = next(r["avg_ts"] for r in bench if r["n_prompt"] == 512)
tg = next(r["avg_ts"] for r in bench if r["n_gen"] == 128)
pp_p, tg_p = plan["pp_tokens_per_s"], plan["tg_tokens_per_s"]
devices = config if config == "CPU" else "CPU+" + "+".join(d["name"] for d in plan["devices"][1:] if d["weight_bytes"])
with open(pairs, "a") as f:
    f.write(json.dumps({"round": round_, "model": model, "devices": devices, "pp_pred": pp_p, "pp": pp,
                        "tg_pred": tg_p, "tg": tg}) + "\n")
print(f"{round_:<6d} {model:32s} {devices:10s} {pp_p:9.1f} {pp:9.1f} {pp_p / pp:6.2f} {tg_p:8.2f} {tg:8.2f} {tg_p / tg:6.2f}")
EOF
    done
  done
done

python3 - "$pairs" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
TOLERANCE = 0.15  # the issue's criterion: predicted within 15% of measured
def spread(values):  # (max - min) / median: how far the same figure moved between rounds
    return (max(values) - min(values)) / statistics.median(values)
print(f"\nmedians over {max(r['round'] for r in rows)} rounds (load average now {sys.argv[2]}); "
      "spread = (max - min) / median over the rounds; ratio = median predicted / median measured, [the rounds' range]")
print(f"{'model':32s} {'devices':10s} {'test':5s} {'predicted':>9s} {'spread':>6s} {'measured':>9s} {'spread':>6s} "
      f"{'ratio':>6s} {'[range]':11s}")
misses = noisy = 0
worst_spread = 0.0
for key in dict.fromkeys((r["model"], r["devices"]) for r in rows):
    group = [r for r in rows if (r["model"], r["devices"]) == key]
    for test in ("pp", "tg"):
        pred, meas = [r[test + "_pred"] for r in group], [r[test] for r in group]
        ratios = [p / m for p, m in zip(pred, meas)]
        ratio = statistics.median(pred) / statistics.median(meas)
        s_meas = spread(meas)
        worst_spread = max(worst_spread, s_meas)
        notes = []
        if abs(ratio - 1) > TOLERANCE:
            misses += 1
            notes.append("MISS")
        if s_meas > TOLERANCE:
            noisy += 1
            notes.append("machine spread > 15%")
        name = test + ("512" if test == "pp" else "128")
        print(f"{key[0]:32s} {key[1]:10s} {name:5s} {statistics.median(pred):9.1f} {spread(pred):6.0%} "
              f"{statistics.median(meas):9.1f} {s_meas:6.0%} {ratio:6.2f} [{min(ratios):4.2f}-{max(ratios):4.2f}] {' '.join(notes)}")
n = 2 * len(dict.fromkeys((r["model"], r["devices"]) for r in rows))
print(f"\n{n - misses} of {n} within 15% (median over median).")
if noisy:
    print(f"The machine's own spread exceeded 15% on {noisy} of {n} measured figures (worst {worst_spread:.0%}): "
          "bench moved more between rounds than the criterion allows, so a ratio inside or outside 15% there "
          "is not evidence either way; rerun on a quiet machine.")
EOF
