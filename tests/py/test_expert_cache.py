"""--expert-cache SIZE (issue 15): the routed experts read from the file on demand into a RAM cache. run and
bench print the same text / the same figures as the all-in-RAM run and report the cache (hit rate, disk bytes
per token, bandwidth); a model file truncated while the server runs fails that request with a 500, the server
keeps serving and /metrics counts the cache. Model: tiny-deepseek-v3 (3 layers: 2 MoE of 16 experts, top-4)."""
import json
import os
import re
import shutil

import pytest

from conftest import run_tandem
from serve_util import Server


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("expert-cache") / "tiny-v3.gguf"
    run_tandem("synth", "--preset", "tiny-deepseek-v3", "--layers", "3", "--type", "Q8_0", "-t", "2", "-o", path,
               check=True)
    return path


@pytest.fixture(scope="module")
def slot(model):
    """Bytes of one cache slot, as the refusal of a smaller cache names them."""
    proc = run_tandem("run", "-m", model, "-p", "hi", "-n", "1", "--expert-cache", "1000")
    m = re.search(r"error: --expert-cache: a budget of 1000 bytes holds no expert \(one slot takes (\d+)\)", proc.stderr)
    assert proc.returncode == 1 and m, proc.stderr
    return int(m.group(1))


def run_text(model, *flags):
    proc = run_tandem("run", "-m", model, "-p", "The quick brown fox", "-n", "12", "--temp", "0", "-t", "2",
                      "--no-warmup", *flags)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, proc.stderr


def test_run_prints_the_all_in_ram_text_and_the_cache_report(model, slot, tandem_bin):
    resident, _ = run_text(model)
    for size, n_slots in ((str(slot), 1), ("200K", (200 << 10) // slot), ("2M", 32)):  # one, a few, all 32
        text, err = run_text(model, "--expert-cache", size)
        assert text == resident, size
        m = re.search(r"experts: a cache of (\d+) slots of .* for 32 routed experts in 2 layers", err)
        assert m and int(m.group(1)) == n_slots, err
        m = re.search(r"expert cache: hit rate ([\d.]+)% .* read ([\d.]+ [kMG]?B) from disk \(([\d.]+ [kMG]?B) per "
                      r"token\) at ([\d.]+) GB/s", err)
        assert m, err


def test_bench_reports_the_cache_per_test_in_json(model, tandem_bin):
    proc = run_tandem("bench", "-m", model, "-p", "16", "-n", "4", "-r", "1", "-t", "2", "-o", "json",
                      "--expert-cache", "200K", check=True)
    rows = json.loads(proc.stdout)
    assert [r["test"] for r in rows] == ["pp16", "tg4"]
    for r in rows:
        c = r["expert_cache"]
        assert 0 <= c["hit_rate"] <= 1 and c["misses"] > 0  # 4 of 32 slots: the experts do not all fit
        assert c["disk_bytes_per_token"] > 0 and c["disk_gbs"] > 0
    assert "pp16: expert cache: hit rate" in proc.stderr


def test_perplexity_reports_the_cache_and_scores_as_the_all_in_ram_run(model, tmp_path, tandem_bin):
    text = tmp_path / "text.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 20)
    args = ["perplexity", "-m", model, "-f", text, "-c", "32", "--chunks", "2", "-t", "2"]
    resident = run_tandem(*args, check=True)
    cached = run_tandem(*args, "--expert-cache", "200K", check=True)
    final = [line for line in resident.stdout.splitlines() if line.startswith("Final estimate")]
    assert final and final == [line for line in cached.stdout.splitlines() if line.startswith("Final estimate")]
    assert re.search(r"perplexity: expert cache: hit rate [\d.]+% .* read [\d.]+ [kMG]?B from disk \([\d.]+ [kMG]?B "
                     r"per token\) at [\d.]+ GB/s", cached.stderr), cached.stderr
    assert "expert cache:" not in resident.stderr


def test_bad_sizes_and_no_mmap_are_refused(model, tandem_bin):
    for flags, msg in ((["--expert-cache", "12X"], "--expert-cache"),
                       (["--expert-cache", "1M", "--no-mmap"], "--no-mmap")):
        proc = run_tandem("run", "-m", model, "-p", "hi", "-n", "1", *flags)
        assert proc.returncode == 1 and "error:" in proc.stderr and msg in proc.stderr, (flags, proc.stderr)


def test_a_model_without_experts_is_refused(tmp_path, tandem_bin):
    model = tmp_path / "tiny-llama.gguf"
    run_tandem("synth", "--preset", "tiny-llama", "--layers", "1", "--type", "Q8_0", "-o", model, check=True)
    proc = run_tandem("run", "-m", model, "-p", "hi", "-n", "1", "--expert-cache", "1M")
    assert proc.returncode == 1 and "--expert-cache: the model has no routed experts" in proc.stderr, proc.stderr


def test_a_file_truncated_under_the_server_is_a_500_and_the_server_goes_on(model, slot, tmp_path, tandem_bin):
    copy = tmp_path / "cut.gguf"
    shutil.copy(model, copy)
    s = Server(copy, "--expert-cache", str(4 * slot), "-c", "256", "--metrics")
    try:
        body = {"prompt": "Hello", "max_tokens": 4, "temperature": 0}
        status, _ = s.request("POST", "/v1/completions", body)
        assert status == 200
        status, text = s.request("GET", "/metrics")
        assert status == 200
        assert re.search(r"^tandem_expert_cache_misses_total [1-9]", text, re.M), text
        assert re.search(r"^tandem_expert_disk_read_bytes_total [1-9]", text, re.M), text
        assert "tandem_expert_cache_hits_total" in text and "tandem_expert_disk_read_seconds_total" in text
        # The monitor's JSON (/monitor, tandem top) counts the same uses.
        status, mon = s.request("GET", "/monitor/stats")
        assert status == 200
        ex = mon["experts"]
        assert ex["misses_total"] > 0 and ex["disk_read_bytes_total"] > 0 and 0 <= ex["hit_rate_total"] <= 1, ex
        # Cut the file inside the first MoE layer's experts: a new prompt needs experts that are gone.
        os.truncate(copy, os.path.getsize(copy) // 2)
        status, reply = s.request("POST", "/v1/completions",
                                  {"prompt": "A different and much longer prompt " * 4, "max_tokens": 4})
        assert status == 500, reply
        assert "truncated" in json.dumps(reply) or "ends" in json.dumps(reply), reply
        status, _ = s.request("GET", "/health")
        assert status == 200
        assert s.proc.poll() is None
    finally:
        s.stop()


def test_run_writes_the_routing_trace_token_by_token(model, tmp_path, tandem_bin):
    trace = tmp_path / "trace.json"
    proc = run_tandem("run", "-m", model, "-p", "The quick brown fox jumps", "-n", "4", "--temp", "0", "-t", "2",
                      "--no-warmup", "--expert-trace", trace)
    assert proc.returncode == 0, proc.stderr
    n_prompt = int(re.search(r"prompt: (\d+) tokens", proc.stderr).group(1))
    n_decoded = int(re.search(r"(\d+) decoded", proc.stderr).group(1))
    t = json.loads(trace.read_text())
    assert (t["n_layer"], t["n_expert"], t["n_expert_used"]) == (3, 16, 4)
    keys = t["keys"]
    assert len(keys) == (n_prompt + n_decoded) * 2 * 4  # 2 MoE layers (1, 2), top-4, every token once
    for i in range(0, len(keys), 4):  # a token's choices in one layer: distinct, ascending, of layers 1 then 2
        group = keys[i:i + 4]
        assert group == sorted(set(group)) and len({k // 16 for k in group}) == 1
        assert group[0] // 16 == 1 + (i // 4) % 2
