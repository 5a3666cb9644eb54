"""Placement flags end to end: llama-server's -ngl / -ot / -ts / -nkvo / -dev on simulated GPUs
(--sim-device) give exactly the CPU's greedy text, print the plan, and refuse bad plans with the flag."""
import re
import pytest

from conftest import run_tandem

PROMPT = ["-p", "The capital of Japan is", "-n", "16", "--temp", "0", "-t", "2", "-c", "256", "--no-warmup"]


def text(proc):
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def cpu_text(tandem_bin, gemma_path):
    return text(run_tandem("run", "-m", gemma_path, *PROMPT))


@pytest.mark.parametrize("flags", [
    ["--sim-device", "1G", "-ngl", "all"],
    ["--sim-device", "1G", "-ngl", "9"],
    ["--sim-device", "1G", "-ngl", "all", "-ot", r"ffn_(gate|up|down)=CPU"],
    ["--sim-device", "1G", "-ngl", "all", "-nkvo", "-ctk", "q8_0", "-ctv", "q8_0"],
    ["--sim-device", "512M", "--sim-device", "512M", "-ngl", "all", "-ts", "1,3"],
    ["--sim-device", "1G", "-ngl", "auto", "-fa", "off"],
    ["--sim-device", "1G", "-ngl", "all", "-ot", "ffn_(up|down)=CPU"],
    ["--sim-device", "8M", "--sim-device", "1G", "-ngl", "all", "-dev", "SIM1"],
    ["--sim-device", "16M", "-ngl", "0"],
])
def test_offloaded_runs_give_the_cpus_greedy_text(gemma_path, cpu_text, flags):
    extra = ["-ctk", "q8_0", "-ctv", "q8_0"] if "-nkvo" in flags else []
    want = cpu_text if not extra else text(run_tandem("run", "-m", gemma_path, *PROMPT, *extra))
    want = want if "-fa" not in flags else text(run_tandem("run", "-m", gemma_path, *PROMPT, "-fa", "off"))
    proc = run_tandem("run", "-m", gemma_path, *PROMPT, *flags)
    assert text(proc) == want
    assert "placement:" in proc.stderr
    if "-dev" in flags:  # the table names the device the layers really run on
        assert "attention          0-17      SIM1" in proc.stderr, proc.stderr


def test_the_plan_table_shows_what_went_where(gemma_path):
    proc = run_tandem("run", "-m", gemma_path, *PROMPT, "--sim-device", "1G", "-ngl", "10", "-ot", "ffn=CPU")
    assert proc.returncode == 0, proc.stderr
    assert "dense FFN          0-17      CPU" in proc.stderr
    assert "attention          9-17      SIM0" in proc.stderr
    assert "-ngl 10 of 19 layers (output included) offloaded" in proc.stderr


def test_list_devices(gemma_path):
    proc = run_tandem("run", "-m", gemma_path, "--sim-device", "2G", "--sim-device", "512M", "--list-devices")
    assert proc.returncode == 0, proc.stderr
    assert "CPU:" in proc.stdout and "SIM0:" in proc.stdout and "SIM1:" in proc.stdout
    # The GPUs, or why there are none (no CUDA in the build, no driver, no device).
    assert re.search(r"^  CUDA(: no device \(.+\)|\d+: .+ free\))$", proc.stdout, re.M), proc.stdout


@pytest.mark.parametrize("flags,message", [
    (["--sim-device", "100M", "-ngl", "all"], "-ngl all (19 layers): SIM0 needs"),
    (["--sim-device", "100M", "-ngl", "99"], "-ngl 99 (19 layers): SIM0 needs"),  # as given, and what it came to
    (["--sim-device", "1G", "-ot", "exps=CUDA0"], "no device 'CUDA0'"),
    (["--sim-device", "1G", "-ot", "no_such_tensor=SIM0"], "matches no tensor"),
    (["--sim-device", "1G", "-ot", "blk\\.(=CPU"], "not a valid regular expression"),
    (["--sim-device", "1G", "-dev", "SIM3"], "-dev SIM3: no offload device"),
    (["--sim-device", "1G", "-ts", "1,x"], "-ts: 'x' is not a share"),
    (["--sim-device", "1G", "-sm", "row", "-ngl", "all"], "-sm row: not supported"),
    (["--sim-device", "12Q"], "'12Q' is not a size (examples:"),
    (["--sim-device", "1G", "-ngl", "all", "-ot", "blk\\.0\\.attn_k=CPU"], "place them together"),
    (["--sim-device", "1G", "-ngl", "all", "-dev", "SIM0,SIM0"], "-dev: SIM0 is named twice"),
    (["--sim-device", "1G", "-ot", "ffn=CPU", "-ot", "ffn=SIM0"], "taken by an earlier rule"),
    (["--sim-device", "1G", "--trace", "/nonexistent/dir/t.json"], "cannot open the file for writing"),
])
def test_bad_plans_are_refused_naming_the_flag(gemma_path, flags, message):
    proc = run_tandem("run", "-m", gemma_path, *PROMPT, *flags)
    assert proc.returncode == 1
    assert message in proc.stderr, proc.stderr
    assert proc.stderr.startswith("error:") or "\nerror:" in proc.stderr


def test_trace_shows_every_device_and_the_link(gemma_path, tmp_path):
    import json
    out = tmp_path / "trace.json"
    proc = run_tandem("run", "-m", gemma_path, *PROMPT, "--sim-device", "1G", "-ngl", "10", "--trace", out)
    assert proc.returncode == 0, proc.stderr
    events = json.loads(out.read_text())
    lanes = {e["tid"]: e["args"]["name"] for e in events if e["ph"] == "M"}
    assert set(lanes.values()) == {"cpu", "SIM0", "SIM0 link"}
    ops = [e for e in events if e["ph"] == "X"]
    by_lane = {name: [e for e in ops if lanes[e["tid"]] == name] for name in lanes.values()}
    assert any(e["name"] == "matmul" for e in by_lane["SIM0"]) and any(e["name"] == "attention" for e in by_lane["cpu"])
    assert all(e["dur"] >= 0 and e["args"]["bytes"] > 0 for e in by_lane["SIM0 link"])


def test_bench_reports_the_bytes_each_device_moves_per_token(gemma_path):
    proc = run_tandem("bench", "-m", gemma_path, "-p", "16", "-n", "4", "-r", "1", "--sim-device", "1G", "-ngl", "all",
                      "-o", "json")
    assert proc.returncode == 0, proc.stderr
    import json
    rows = json.loads(proc.stdout)
    assert [r["backend"] for r in rows] == ["CPU+SIM0", "CPU+SIM0"]
    # Decode brings each token's logits back over the link (262,144 floats for Gemma 3), and sends the hidden state.
    tg = next(r for r in rows if r["n_gen"] > 0)
    assert 262144 * 4 <= tg["bytes_per_token"]["SIM0"] < 262144 * 4 + 64 * 1024
