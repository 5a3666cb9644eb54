"""--expert-cache's default (issue 15, item 1): a MoE model that does not fit RAM runs with the expert tier, its
cache sized to what RAM has left after the other weights, the KV cache, compute buffers and a margin, and the
start-up summary says so; a model that fits is mapped as before; auto asks for the tier at that size, off and 0
turn it off, and auto below one layer's top-k is refused with the numbers. The RAM is capped with
TANDEM_MEMORY_LIMIT (core/memory.h: the tightest of it, MemAvailable, the cgroup's limit and ulimit -v).
Model: tiny-deepseek-v2-lite (27 layers, 26 MoE layers of 8 experts, top-2; 5.2 MiB of routed experts, 7.8 of the rest)."""
import os
import re
import subprocess

import pytest

from conftest import TANDEM, run_tandem

UNITS = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("expert-tier") / "tiny-v2-lite.gguf"
    run_tandem("synth", "--preset", "tiny-deepseek-v2-lite", "--type", "Q8_0", "-t", "2", "-o", path, check=True)
    return path


def run(model, *flags, limit=None):
    env = dict(os.environ)
    if limit is not None:
        env["TANDEM_MEMORY_LIMIT"] = str(limit)
    proc = subprocess.run([str(TANDEM), "run", "-m", str(model), "-p", "The quick brown fox", "-n", "8", "--temp", "0",
                           "-t", "2", "--no-warmup", "-c", "64", "-ub", "4", *map(str, flags)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode >= 0, proc.stderr
    return proc


def size(text):
    value, unit = text.split()
    return float(value) * UNITS[unit]


@pytest.fixture(scope="module")
def needs(model):
    """The bytes RAM holds besides the cache and the routed experts' bytes, from the warning under a 1 MB cap."""
    proc = run(model, limit=1_000_000)
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"warning: the model \(([\d.]+ \w+) of routed experts and the rest\) does not fit the RAM, and the "
                  r"expert tier cannot help: RAM has 0.0 KiB left for it \(976.6 KiB available, less ([\d.]+ \w+) of "
                  r"other weights, ([\d.]+ \w+) of KV cache, ([\d.]+ \w+) of compute buffers and a 122.1 KiB margin\); "
                  r"the least is one layer's 2 experts, ([\d.]+ \w+)", proc.stderr)
    assert m, proc.stderr
    assert "experts:" not in proc.stderr  # mapped, as before
    experts, resident, kv, compute, least = (size(m.group(i)) for i in range(1, 6))
    return {"experts": experts, "others": resident + kv + compute, "least": least}


def limit_for(needs, cache):
    """A cap whose room for the cache is `cache` bytes: others + cache + the margin (an eighth of the cap)."""
    return int((needs["others"] + cache) * 8 / 7)


def test_a_model_that_fits_is_mapped_as_before(model):
    proc = run(model)
    assert proc.returncode == 0, proc.stderr
    assert "experts:" not in proc.stderr and "expert cache:" not in proc.stderr


# Runs whose texts are compared take --no-repack: resident routed experts are repacked at load and the cache's are
# read in the file's layout, and the two layouts' kernels sum in different orders (this random model's near-ties
# then pick other tokens).
def test_a_model_larger_than_ram_runs_with_the_tier_sized_to_what_is_left(model, needs):
    resident = run(model, "--no-repack").stdout
    cap = limit_for(needs, needs["experts"] / 2)
    proc = run(model, "--no-repack", limit=cap)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == resident  # same kernels, same bits
    m = re.search(r"experts: a cache of (\d+) slots of .* for 208 routed experts in 26 layers", proc.stderr)
    assert m, proc.stderr
    # Half the experts' bytes in slots of 48 KiB (a 25.6 KiB expert's three slices, each padded to 4 KiB
    # reads): about 54. The printed sizes are rounded: +-3.
    slots = needs["experts"] / 2 / (needs["least"] / 2)
    assert slots - 3 <= int(m.group(1)) <= slots + 3, (slots, proc.stderr)
    assert re.search(r"automatic: the 5.2 MiB of routed experts do not fit beside .* the cache takes what is left "
                     rf"\(TANDEM_MEMORY_LIMIT={cap}\)", proc.stderr), proc.stderr
    assert "expert cache: hit rate" in proc.stderr
    # off and 0 map the file, and warn that it exceeds the RAM.
    for flag in ("off", "0"):
        off = run(model, "--expert-cache", flag, "--no-repack", limit=cap)
        assert off.returncode == 0 and off.stdout == resident, off.stderr
        assert "experts:" not in off.stderr and "the mapped weights" in off.stderr, off.stderr


def test_auto_takes_every_expert_when_ram_holds_them(model):
    proc = run(model, "--expert-cache", "auto")
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"experts: a cache of 208 slots", proc.stderr), proc.stderr
    assert "--expert-cache auto: RAM (" in proc.stderr and "holds every expert" in proc.stderr


def test_auto_below_one_layers_top_k_is_refused_with_the_numbers(model, needs):
    cap = limit_for(needs, needs["least"] / 2)
    proc = run(model, "--expert-cache", "auto", limit=cap)
    assert proc.returncode == 1, proc.stderr
    assert re.search(r"error: --expert-cache auto: RAM has [\d.]+ KiB left for it \([\d.]+ \w+ available, less .*\); "
                     r"the least is one layer's 2 experts, 96.0 KiB \(2 x 48.0 KiB\)", proc.stderr), proc.stderr
    # The default maps the file instead, and says why.
    proc = run(model, limit=cap)
    assert proc.returncode == 0 and "the expert tier cannot help" in proc.stderr, proc.stderr


def test_layers_an_offload_device_holds_keep_their_experts_there(model, needs):
    # -ngl 5: the output and blocks 23-26 on SIM0, their experts with them; the cache holds the other 22
    # MoE layers' experts, the RAM not counting what SIM0 holds. Same text as the all-in-RAM run.
    resident = run(model, "--no-repack").stdout
    flags = ["--sim-device", "64M", "-ngl", "5", "--no-repack"]
    cap = limit_for(needs, needs["experts"] / 4)
    proc = run(model, *flags, limit=cap)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == resident
    assert re.search(r"experts: a cache of \d+ slots of .* for 176 routed experts in 22 layers", proc.stderr), proc.stderr
    proc = run(model, *flags, "--expert-cache", "200K")
    assert proc.returncode == 0 and proc.stdout == resident, proc.stderr


def test_fit_prices_the_weights_past_the_ram_from_disk_and_names_the_tier(model, needs):
    cap = limit_for(needs, needs["experts"] / 2)
    proc = run(model, "--fit", "on", "--no-repack", limit=cap)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"fit: +-ngl 0 -c 64: [\d.]+ tokens/s predicted .*; the CPU's [\d.]+ \w+ of weights exceed its "
                     r"[\d.]+ \w+ of free RAM: \d+% of them are read from disk as tokens need them \(mmap\)",
                     proc.stderr), proc.stderr
    assert "fit:     the routed experts past the RAM go to the expert tier (--expert-cache" in proc.stderr, proc.stderr
    assert "experts: a cache of" in proc.stderr
