"""tandem probe: measures this machine and caches it where plan and --fit look ($TANDEM_PROBE_FILE here,
so the tests never touch the user's cache); --show prints the cache; bad input is a clear error."""
import json

import pytest

from conftest import run_tandem


@pytest.fixture
def probe_file(tmp_path, monkeypatch):
    path = tmp_path / "cache" / "tandem" / "probe.json"
    monkeypatch.setenv("TANDEM_PROBE_FILE", str(path))
    return path


def test_a_quick_probe_measures_and_caches_everything(quick_probe, gemma_path, monkeypatch):
    cached, j = quick_probe  # tandem probe --quick -m GEMMA --sim-device 64M --json (conftest.py)
    assert json.loads(cached.read_text()) == j  # what it printed is what it cached
    assert len(j["hardware_hash"]) == 16 and j["date"].endswith("Z") and j["quick"]
    node = j["bandwidth"][0]
    assert node["threads"][0] == 1 and all(b > 1e8 for b in node["bytes_per_s"])
    types = {m["type"] for m in j["matmul"]}
    assert {"Q4_K", "Q6_K", "Q8_0", "F16"} <= types
    assert all(m["decode_bytes_per_s"] > 1e8 and m["prefill_flops_per_s"] > 1e8 for m in j["matmul"])
    levels = {r["isa"] for r in j["per_isa"] if r["type"] == "Q8_0"}
    assert "generic" in levels  # the scalar kernel, beside the SIMD levels this CPU has
    assert j["disk"]["path"] == str(gemma_path) and j["disk"]["sequential_bytes_per_s"] > 0
    sim = j["sims"][0]
    # The sim device's link is modelled as PCIe 4.0 x16 (25 GB/s, 10 us): the probe measures at most that.
    assert sim["name"] == "SIM0" and sim["memory_bytes"] == 64 << 20
    assert sim["link_latency_s"] >= 9e-6 and sim["link_bytes_per_s"] <= 26e9

    monkeypatch.setenv("TANDEM_PROBE_FILE", str(cached))
    shown = run_tandem("probe", "--show")
    assert shown.returncode == 0, shown.stderr
    assert "memory read bandwidth" in shown.stdout and "Q4_K" in shown.stdout and "SIM0" in shown.stdout


def test_show_without_a_probe_says_how_to_make_one(probe_file):
    proc = run_tandem("probe", "--show")
    assert proc.returncode == 1 and "no probe at" in proc.stderr and "run tandem probe" in proc.stderr


def test_a_probe_of_other_hardware_is_not_used(probe_file, gemma_path):
    probe_file.parent.mkdir(parents=True)
    probe_file.write_text(json.dumps({"date": "2026-01-01T00:00:00Z", "hardware": "Elsewhere 9000",
                                      "hardware_hash": "0123456789abcdef", "bandwidth": [], "matmul": [],
                                      "sims": []}))
    proc = run_tandem("probe", "--show")
    assert proc.returncode == 1 and "other hardware (Elsewhere 9000" in proc.stderr
    plan = run_tandem("plan", "-m", gemma_path)
    assert plan.returncode == 0, plan.stderr
    assert "a quick measurement now" in plan.stdout


def test_a_damaged_probe_is_an_error_naming_it(probe_file, gemma_path):
    probe_file.parent.mkdir(parents=True)
    probe_file.write_text("{not json")
    for args in (["probe", "--show"], ["plan", "-m", gemma_path]):
        proc = run_tandem(*args)
        assert proc.returncode == 1 and f"{probe_file}: not a probe file" in proc.stderr, proc.stderr


@pytest.mark.parametrize("args,message", [
    (["--sim-device", "1M"], "at least 16M"),
    (["--disk", "/no/such/file"], "--disk /no/such/file: cannot open"),
    (["--disk", "/tmp", "-m", "x"], "give -m or --disk, not both"),
])
def test_bad_input(probe_file, args, message):
    proc = run_tandem("probe", "--quick", *args)
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    assert not probe_file.exists()


@pytest.mark.parametrize("args,message", [
    (["-m", "/nonexistent.gguf"], "-m /nonexistent.gguf: cannot open"),
    (["--disk", "/nonexistent.gguf"], "--disk /nonexistent.gguf: cannot open"),
    (["--disk", "/etc/passwd"], "--disk /etc/passwd: "),
    (["-m", "/etc/passwd"], "-m /etc/passwd: not a GGUF file"),
    (["--disk", "/tmp"], "--disk /tmp: not a regular file"),
])
def test_the_file_to_time_is_checked_before_anything_is_measured(probe_file, args, message):
    proc = run_tandem("probe", "--quick", *args)
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    assert "probe: " not in proc.stderr, proc.stderr  # no measurement ran (each says "probe: ...")


def test_a_file_too_small_to_time(probe_file, tmp_path):
    small = tmp_path / "small.bin"
    small.write_bytes(b"x" * 4096)
    proc = run_tandem("probe", "--quick", "--disk", small)
    assert proc.returncode == 1 and "at least 4 MiB" in proc.stderr, proc.stderr
