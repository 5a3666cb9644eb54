#!/usr/bin/env bash
# Issue 15, item 4: a MoE model larger than the memory it may use, run by Tandem's expert cache
# (--expert-cache at 10/25/50/100% of the routed experts) and by llama.cpp through mmap, both in a
# memory-limited cgroup (v1; the page cache is charged to it too), the page cache dropped before each run.
# Prints pp and tg speed, the cache's hit rate, disk bytes per token, the achieved read bandwidth against
# `tandem probe`'s figure for the model's disk, and the decode speed that bandwidth allows for the misses.
# Run it on a quiet machine, as root (cgroup and drop_caches); timings under load mean nothing.
# usage: bench/expert_tier.sh [-p 512] [-n 128] [-t THREADS] [DIR]     (DIR: where the model goes, default
#        /tmp/expert-tier). Env: PRESET (DeepSeek-V3), LAYERS (5: V3's 3 dense + 2 MoE layers, ~13 GB at
#        Q4_K_M), TYPE (Q4_K_M), PCTS ("10 25 50 100"), MARGIN (bytes above cache + resident tensors the
#        cgroup allows, default 2 GiB: DeepSeek-V3's pp512 buffers take ~1.3 GB), TANDEM, LLAMA_BENCH (empty string: skip llama.cpp).
#        A quick check on a tiny model: PRESET=tiny-deepseek-v3 LAYERS=4 bench/expert_tier.sh -p 32 -n 8
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
TANDEM=${TANDEM:-$here/build/bin/tandem}
LLAMA_BENCH=${LLAMA_BENCH-$HOME/.cache/llama-ref/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-bench}
PRESET=${PRESET:-DeepSeek-V3} LAYERS=${LAYERS:-5} TYPE=${TYPE:-Q4_K_M} PCTS=${PCTS:-10 25 50 100}
MARGIN=${MARGIN:-$((2 << 30))}
p=512 n=128 t=$(nproc)
while getopts "p:n:t:" opt; do
  case $opt in p) p=$OPTARG ;; n) n=$OPTARG ;; t) t=$OPTARG ;; *) exit 2 ;; esac
done
shift $((OPTIND - 1))
dir=${1:-/tmp/expert-tier}
mkdir -p "$dir"
model=$dir/$PRESET-${LAYERS}L-$TYPE.gguf
if [ ! -f "$model" ]; then
  echo "writing $model ..." >&2
  "$TANDEM" synth --preset "$PRESET" --layers "$LAYERS" --type "$TYPE" -t "$t" -o "$model" >&2
fi

# From the tensor table: bytes of the routed experts and of everything else (the resident part), the
# experts' count and the bytes of one cache slot (src/expert/expert_cache.cpp: the largest expert of any
# layer, each slice rounded up to 4 KiB plus 4 KiB for its aligned read).
read -r expert_bytes resident_bytes n_experts slot_bytes < <(python3 - "$model" <<'PY'
import collections, re, sys
import gguf
r = gguf.GGUFReader(sys.argv[1])
layers = collections.defaultdict(list)
for t in r.tensors:
    m = re.fullmatch(r"blk\.(\d+)\.ffn_(gate|up|down|gate_up)_exps\.weight", t.name)
    if m:
        layers[m.group(1)].append((int(t.n_bytes), int(t.shape[-1])))  # shape innermost first: the expert count last
exps = sum(b for l in layers.values() for b, _ in l)
slot = max(sum((b // e + 4095) // 4096 * 4096 + 4096 for b, e in l) for l in layers.values())
print(exps, sum(int(t.n_bytes) for t in r.tensors) - exps, sum(l[0][1] for l in layers.values()), slot)
PY
)

cg=/sys/fs/cgroup/memory/tandem-expert-bench
limited=1
if ! { mkdir -p "$cg" && [ -w "$cg/memory.limit_in_bytes" ]; } 2>/dev/null; then
  limited=0
  echo "warning: cannot create the memory cgroup $cg (not root, or no cgroup v1 memory controller): runs are NOT" \
       "memory-limited, so the page cache holds the whole model and the comparison means nothing" >&2
fi
drop=1
if ! { sync && echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null; then
  drop=0
  echo "warning: cannot drop the page cache (/proc/sys/vm/drop_caches is not writable): each run starts with" \
       "whatever the previous one left cached" >&2
fi

# limited LIMIT CMD...: runs CMD in the cgroup at LIMIT bytes (memory and page cache), caches dropped first.
limited() {
  local limit=$1
  shift
  [ $drop = 1 ] && sync && echo 3 > /proc/sys/vm/drop_caches
  if [ $limited = 1 ]; then
    echo 0 > "$cg/memory.force_empty" 2>/dev/null || true
    echo "$limit" > "$cg/memory.limit_in_bytes"
    sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$cg" "$@"
  else
    "$@"
  fi
}

# The disk the model is on, as tandem probe measures it (4 MiB random reads: the size of an expert's read).
probe=$dir/probe.json
"$TANDEM" probe --quick -m "$model" -o "$probe" > /dev/null 2>&1
disk_gbs=$(python3 -c "import json,sys; d=json.load(open(sys.argv[1]))['disk']; print(f\"{d['random_bytes_per_s']/1e9:.2f}\")" "$probe")

gib() { python3 -c "print(f'{$1/2**30:.2f} GiB')"; }
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores, $(gib "$(awk '/MemTotal/ {print $2 * 1024}' /proc/meminfo)"); load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "tandem $(git -C "$here" rev-parse --short HEAD); llama.cpp: ${LLAMA_BENCH:-skipped}"
echo "model: $model: $n_experts routed experts, $(gib "$expert_bytes"); the rest $(gib "$resident_bytes"); -p $p -n $n -t $t"
echo "disk (tandem probe --quick, 4 MiB random reads): $disk_gbs GB/s; memory limit per run: cache + the rest + $(gib "$MARGIN")$([ $limited = 1 ] || echo ' (NOT applied)')"
echo
echo "| cache | limit | engine | pp$p t/s | tg$n t/s | tg hit rate | tg disk MB/token | read GB/s (disk $disk_gbs) | tg disk allows t/s |"
echo "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
for pct in $PCTS; do
  cache=$(((n_experts * pct + 99) / 100 * slot_bytes))  # that share of the experts, in whole slots
  limit=$((cache + resident_bytes + MARGIN))
  out=$(mktemp)
  limited "$limit" "$TANDEM" bench -m "$model" -p "$p" -n "$n" -r 1 -t "$t" -o json --expert-cache "$cache" >"$out" 2>/dev/null ||
    { echo "| $pct% | $(gib $limit) | tandem | failed (rerun without 2>/dev/null to see why) |"; continue; }
  python3 - "$out" "$pct" "$(gib $limit)" "$disk_gbs" "$p" "$n" <<'PY'
import json, sys
rows = {r["test"]: r for r in json.load(open(sys.argv[1]))}
pct, limit, disk_gbs, p, n = sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5], sys.argv[6]
pp, tg = rows[f"pp{p}"], rows[f"tg{n}"]
c = tg["expert_cache"]
per_token = c["disk_bytes_per_token"]
allows = disk_gbs * 1e9 / per_token if per_token else float("inf")
print(f"| {pct}% | {limit} | tandem | {pp['avg_ts']:.2f} | {tg['avg_ts']:.2f} | {100 * c['hit_rate']:.1f}% | "
      f"{per_token / 1e6:.1f} | {c['disk_gbs']:.2f} | {allows:.2f} |")
PY
  if [ -n "$LLAMA_BENCH" ]; then
    # --repack 0: llama.cpp's CPU repack copies the Q4_K tensors, experts included, into anonymous memory
    # (11.7 GB for this model), so under a limit below the model it is OOM-killed; without it, it reads the
    # mapping through the page cache, which is the mmap case the tier is measured against.
    limited "$limit" "$LLAMA_BENCH" -m "$model" -p "$p" -n "$n" -r 1 -t "$t" --repack 0 -o json >"$out" 2>/dev/null &&
      python3 - "$out" "$pct" "$(gib $limit)" <<'PY' || echo "| $pct% | $(gib $limit) | llama.cpp mmap | failed |"
import json, sys
rows = json.load(open(sys.argv[1]))
ts = {("pp" if r["n_prompt"] else "tg"): r["avg_ts"] for r in rows}
print(f"| {sys.argv[2]}% | {sys.argv[3]} | llama.cpp mmap | {ts.get('pp', 0):.2f} | {ts.get('tg', 0):.2f} | | | | |")
PY
  fi
  rm -f "$out"
done
[ $limited = 1 ] && rmdir "$cg" 2>/dev/null || true
