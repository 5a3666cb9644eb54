"""tandem plan counts disk as a tier (issue 15, item 4): for a MoE model larger than RAM it offers the expert
tier, the routed experts the placement leaves on the CPU cached in what RAM has left and the rest read from
disk, with the cache's size, its hit rate (the cache's share of the experts: uniform routing), the bytes read
from disk per token, the speeds that follow, and the flags. On a header-only DeepSeek-V3 671B at Q6_K (tandem
synth), the seed's box: 64 GB of RAM, a 24 GB GPU, NVMe at 3 and 7 GB/s. Machine speeds are given as flags."""
import json
import re

import pytest

from conftest import run_tandem

MACHINE = ["--vram", "24G", "--ram-bw", "60", "--cpu-gflops", "600", "--vram-bw", "936", "--gpu-tflops", "71",
           "-c", "8192", "-ctk", "q4_0", "-ctv", "q4_0"]


@pytest.fixture(scope="module")
def r1(tmp_path_factory):
    path = tmp_path_factory.mktemp("plan-tier") / "r1-Q6_K.gguf"
    run_tandem("synth", "--preset", "DeepSeek-V3", "--type", "Q6_K", "--header-only", "-o", path, check=True)
    return path


@pytest.fixture(autouse=True)
def no_probe_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TANDEM_PROBE_FILE", str(tmp_path / "no-probe.json"))  # never the user's cache


def plan(path, *args):
    proc = run_tandem("plan", "-m", path, *MACHINE, *args, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def tier_of(j):
    return next(a for a in j["alternatives"] if a["kind"] == "expert tier")


def test_the_seeds_box_gets_the_expert_tier_with_its_numbers(r1):
    j = plan(r1, "--ram", "64G", "--disk-bw", "3")
    assert not j["fits_in_ram"]
    t = tier_of(j)
    # The fitted placement (every layer on the GPU, the experts of the first N layers on the CPU) and the cache.
    assert t["fits"] and t["flags"].startswith(j["flags"] + " --expert-cache ") and "-ngl 62" in t["flags"]
    n_cpu_layers = j["n_cpu_moe"] - 3  # layers 0-2 are dense
    assert 50 <= n_cpu_layers <= 58
    # The cache: 64 GiB less the CPU's token embeddings (~1 GB at Q6_K; attention, shared experts and the KV
    # cache are on the GPU), a micro-batch's buffers and a 1 GiB margin.
    assert 61 * 2**30 < t["bytes"] < 63 * 2**30
    # 256 experts per layer, each 3 x 2048 x 7168 Q6_K weights (36.1 MB): the cache holds about 12%.
    expert = 3 * 2048 * 7168 * 210 // 256
    assert t["hit_rate"] == pytest.approx(t["bytes"] / (n_cpu_layers * 256 * expert), rel=0.01)
    # A token reads the missed share of the CPU's experts it routes to (8 per layer) from disk.
    assert t["disk_bytes_per_token"] == pytest.approx(n_cpu_layers * 8 * expert * (1 - t["hit_rate"]), rel=0.001)
    # The placement's prediction with every expert in RAM, plus the missed bytes at 3 GB/s.
    assert 1 / t["tg_tokens_per_s"] == pytest.approx(1 / j["tg_tokens_per_s"] + t["disk_bytes_per_token"] / 3e9)
    assert 0.1 < t["tg_tokens_per_s"] < 0.5
    # Prefill: its one micro-batch of 512 tokens reads the missed share of every CPU expert once.
    missed = n_cpu_layers * 256 * expert * (1 - t["hit_rate"])
    assert 512 / t["pp_tokens_per_s"] == pytest.approx(512 / j["pp_tokens_per_s"] + missed / 3e9, rel=0.001)
    assert "uniform routing" in t["note"] and "docs/expert-tier.md" in t["note"]


def test_a_faster_disk_and_more_ram_speed_the_tier_up(r1):
    slow = tier_of(plan(r1, "--ram", "64G", "--disk-bw", "3"))
    fast = tier_of(plan(r1, "--ram", "64G", "--disk-bw", "7"))
    big = tier_of(plan(r1, "--ram", "256G", "--disk-bw", "3"))
    assert fast["tg_tokens_per_s"] > 2 * slow["tg_tokens_per_s"] and fast["hit_rate"] == slow["hit_rate"]
    assert big["hit_rate"] > 3 * slow["hit_rate"] and big["tg_tokens_per_s"] > slow["tg_tokens_per_s"]


def test_the_text_gives_the_tier_and_its_command(r1):
    proc = run_tandem("plan", "-m", r1, *MACHINE, "--ram", "64G", "--disk-bw", "3")
    assert proc.returncode == 0, proc.stderr
    assert "experts   tier" in proc.stdout and re.search(r"tandem serve -m MODEL -c 8192 -np 1 -ctk q4_0 -ctv q4_0 "
                                                           r"-ngl 62 --n-cpu-moe \d+ --expert-cache \d+M \(run and serve",
                                                           proc.stdout), proc.stdout
