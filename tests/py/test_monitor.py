"""Monitoring of tandem serve on Gemma 3 270M (issue 16): GET /metrics in the Prometheus text format, read
by prometheus_client's parser and checked line by line against the format's rules, its figures moving
with requests and agreeing with the replies' usage, /slots and the model file's header (the gguf package's type sizes);
GET /monitor/stats; llama-server's 501 without --metrics; a sim device's memory and link bytes; GPU
figures and hints through a fake NVML library."""
import ctypes
import math
import re
import struct
import threading
import time

import pytest

gguf = pytest.importorskip("gguf")
parser = pytest.importorskip("prometheus_client.parser")

from conftest import TANDEM, run_tandem  # noqa: E402
from serve_util import Server  # noqa: E402

NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def nvml_present():
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(gemma_path):
    s = Server(gemma_path, "-c", "1024", "-np", "2", "-n", "16", "--temp", "0", "--metrics")
    yield s
    assert s.stop() == 0, "".join(s.log)


def scrape(server):
    status, text = server.request("GET", "/metrics")
    assert status == 200, text
    check_format(text)
    samples = {}
    for family in parser.text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return text, samples


def check_format(text):
    """The exposition format's rules and the client libraries' naming conventions, line by line."""
    assert text.endswith("\n")
    families = {}  # name -> type
    helped = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split(" ")[2]
            assert NAME.match(name) and name not in helped, line
            helped.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name in helped and name not in families, f"TYPE without HELP or twice: {line}"
            assert kind in ("counter", "gauge", "histogram"), line
            families[name] = kind
            if name.startswith("tandem_"):
                # Units in names, _total only on counters.
                assert (kind == "counter") == name.endswith("_total"), line
        else:
            m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$", line)
            assert m, f"not a sample line: {line!r}"
            name = m.group(1)
            base = re.sub(r"_(bucket|sum|count)$", "", name) if name not in families else name
            assert base in families, f"sample before its TYPE: {line}"
            float(m.group(3).replace("+Inf", "inf"))
    assert all(n.startswith(("tandem_", "llamacpp:")) for n in families)
    return families


def value(samples, metric, **labels):
    return samples[(metric, tuple(sorted(labels.items())))]


def test_metrics_follow_requests(server):
    _, before = scrape(server)
    replies = [server.request("POST", "/v1/chat/completions",
                              {"messages": [{"role": "user", "content": f"Name a color, {i}."}], "max_tokens": 8})
               for i in range(2)]
    assert all(status == 200 for status, _ in replies), replies
    _, after = scrape(server)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    generated = sum(r["usage"]["completion_tokens"] for _, r in replies)
    prompt = sum(r["usage"]["prompt_tokens"] - r["usage"]["prompt_tokens_details"]["cached_tokens"] for _, r in replies)
    assert delta("tandem_generated_tokens_total") == generated > 0
    assert delta("llamacpp:tokens_predicted_total") == generated
    assert delta("tandem_prompt_tokens_total") == prompt > 0
    assert delta("llamacpp:prompt_tokens_total") == prompt
    finished = sum(delta("tandem_requests_total", reason=r) for r in ("stop", "length", "cancelled", "error"))
    assert finished == 2 and delta("tandem_requests_total", reason="error") == 0
    for h in ("tandem_time_to_first_token_seconds", "tandem_request_duration_seconds"):
        assert delta(h + "_count") == 2 and delta(h + "_sum") > 0
        assert value(after, h + "_bucket", le="+Inf") == value(after, h + "_count")
        buckets = sorted((float(k[1][0][1].replace("+Inf", "inf")), v) for k, v in after.items() if k[0] == h + "_bucket")
        assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:])), "buckets must be cumulative"
    # Each request's duration includes its time to first token.
    assert delta("tandem_request_duration_seconds_sum") >= delta("tandem_time_to_first_token_seconds_sum")
    assert delta("tandem_forward_passes_total") >= generated / 2  # two slots share a pass at most
    assert delta("llamacpp:n_decode_total") > 0 and delta("tandem_generation_seconds_total") > 0

    # KV cells: the slots keep their cells; the per-slot gauges match /slots and sum to the total.
    status, slots = server.request("GET", "/slots")
    assert status == 200
    for s in slots:
        assert value(after, "tandem_slot_kv_cells", slot=str(s["id"])) == s["n_past"]
    used = value(after, "tandem_kv_cells_used")
    assert used == sum(s["n_past"] for s in slots) > 0
    assert value(after, "tandem_kv_cells_capacity") == 1024
    assert value(after, "tandem_kv_cache_usage_ratio") == pytest.approx(used / 1024)
    assert value(after, "llamacpp:kv_cache_tokens") == used
    assert value(after, "tandem_requests_processing") == 0 and value(after, "tandem_requests_queued") == 0
    assert value(after, "llamacpp:requests_processing") == 0 and value(after, "llamacpp:requests_deferred") == 0
    assert value(after, "tandem_device_memory_used_bytes", device="CPU") > 0
    assert value(after, "tandem_device_memory_free_bytes", device="CPU") > 0


def gguf_tensor_bytes(path):
    """{tensor name: bytes} and the vocabulary size from a GGUF header, with the gguf package's type sizes
    (its GGUFReader takes ~20 s over Gemma's 262k-token vocabulary; this walk skips values quickly)."""
    data = open(path, "rb").read(32 << 20)
    fixed = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # GGUFValueType sizes
    pos = 8
    n_tensors, n_kv = struct.unpack_from("<QQ", data, pos)
    pos += 16

    def skip(vtype, pos, count=1):
        if vtype in fixed:
            return pos + fixed[vtype] * count
        for _ in range(count):
            if vtype == 8:  # string
                pos += 8 + struct.unpack_from("<Q", data, pos)[0]
            else:  # array
                itype, n = struct.unpack_from("<IQ", data, pos)
                pos = skip(itype, pos + 12, n)
        return pos

    n_vocab = None
    for _ in range(n_kv):
        klen = struct.unpack_from("<Q", data, pos)[0]
        key = data[pos + 8:pos + 8 + klen].decode()
        vtype = struct.unpack_from("<I", data, pos + 8 + klen)[0]
        pos += 12 + klen
        if key == "tokenizer.ggml.tokens":
            n_vocab = struct.unpack_from("<IQ", data, pos)[1]
        pos = skip(vtype, pos)
    tensors = {}
    for _ in range(n_tensors):
        nlen = struct.unpack_from("<Q", data, pos)[0]
        name = data[pos + 8:pos + 8 + nlen].decode()
        pos += 8 + nlen
        n_dims = struct.unpack_from("<I", data, pos)[0]
        dims = struct.unpack_from(f"<{n_dims}Q", data, pos + 4)
        ttype = struct.unpack_from("<I", data, pos + 4 + 8 * n_dims)[0]
        pos += 4 + 8 * n_dims + 4 + 8
        block, type_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ttype)]
        tensors[name] = math.prod(dims) // block * type_bytes
    return tensors, n_vocab


def test_weight_bytes_per_pass_match_the_model_file(server, gemma_path):
    """Decode reads every weight once per pass, the token embeddings one row, and a tied output matrix
    (Gemma has no output.weight) the whole embedding table again."""
    tensors, n_vocab = gguf_tensor_bytes(gemma_path)
    expected = sum(tensors.values()) - tensors["token_embd.weight"] + tensors["token_embd.weight"] // n_vocab
    if "output.weight" not in tensors:
        expected += tensors["token_embd.weight"]
    _, m = scrape(server)
    assert value(m, "tandem_pass_weight_read_bytes", device="CPU") == expected
    assert value(m, "tandem_weight_read_bytes_total", device="CPU") == \
        expected * value(m, "tandem_forward_passes_total")


def test_rates_bandwidth_and_cpu_while_generating(server):
    """While a long reply is generated, the sampled rates and the achieved bandwidth are above zero, the
    measured RAM bandwidth is there to compare with, and the CPU shares are shares."""
    done = threading.Event()

    def generate():
        # Several of the monitor's sampling periods long on a fast CPU (200 tokens: about one on an AMD EPYC Zen 5).
        server.request("POST", "/completion", {"prompt": "Once upon a time", "n_predict": 600, "ignore_eos": True},
                       timeout=300)
        done.set()

    threading.Thread(target=generate, daemon=True).start()
    seen = {}
    deadline = time.time() + 120
    while not done.is_set() and time.time() < deadline and len(seen) < 3:
        _, m = scrape(server)
        for name, labels in [("tandem_generated_tokens_per_second", {}), ("llamacpp:predicted_tokens_seconds", {}),
                             ("tandem_weight_read_bytes_per_second", {"device": "CPU"})]:
            if value(m, name, **labels) > 0:
                seen[name] = value(m, name, **labels)
        time.sleep(0.3)
    done.wait(300)
    assert len(seen) == 3, f"rates never moved: {seen}"
    _, m = scrape(server)
    limit = [v for k, v in m.items() if k[0] == "tandem_memory_read_limit_bytes_per_second"]
    assert len(limit) == 1 and limit[0] > 1e8, limit
    for share in ("busy", "softirq", "iowait"):
        assert 0 <= value(m, f"tandem_cpu_{share}_ratio") <= 1
    gpu = any(k[0].startswith("tandem_gpu_") for k in m)
    assert gpu == nvml_present(), "GPU figures exactly when NVML loads"


def test_monitor_stats_json(server):
    status, s = server.request("GET", "/monitor/stats")
    assert status == 200
    assert s["kv"]["capacity"] == 1024 and len(s["kv"]["slots"]) == 2
    assert s["devices"][0]["name"] == "CPU" and s["devices"][0]["weight_bytes_per_pass"] > 0
    assert s["lines"] == {"bandwidth": 0.75, "gpu": 0.8, "softirq": 0.1, "iowait": 0.1, "kv": 0.9, "experts": 0.5}
    assert s["experts"] is None and isinstance(s["hints"], list)
    assert (s["gpu"] is None) == (not nvml_present())
    _, m = scrape(server)
    assert s["generated_tokens_total"] <= value(m, "tandem_generated_tokens_total")


def test_without_metrics_flag_501_and_sim_device_figures(gemma_path):
    """llama-server answers /metrics with 501 unless started with --metrics; /monitor/stats still
    works, and a sim device reports its memory and the bytes that crossed its link."""
    s = Server(gemma_path, "-c", "256", "-np", "1", "--no-warmup", "--sim-device", "512M", "-ngl", "4")
    try:
        status, body = s.request("GET", "/metrics")
        assert status == 501 and body["error"]["type"] == "not_supported_error"
        assert "--metrics" in body["error"]["message"]
        status, r = s.request("POST", "/completion", {"prompt": "Hello", "n_predict": 4})
        assert status == 200
        status, st = s.request("GET", "/monitor/stats")
        sim = next(d for d in st["devices"] if d["name"] == "SIM0")
        assert sim["memory_used_bytes"] > 0 and sim["memory_free_bytes"] > 0
        assert sim["memory_used_bytes"] + sim["memory_free_bytes"] == 512 << 20
        assert sim["weight_bytes_per_pass"] > 0
        assert sim["link"]["to_device_bytes"] > 0 and sim["link"]["to_host_bytes"] > 0
    finally:
        assert s.stop() == 0, "".join(s.log)


def test_gpu_figures_and_hint_through_a_fake_nvml(gemma_path, monkeypatch):
    """With a libnvidia-ml.so.1 on the loader's path (the fake of tests/monitor/fake_nvml.c: GPU 0 40%
    busy, GPU 1 failing), /metrics has GPU 0's figures, /monitor/stats names the GPU idle while tokens
    are generated, and tandem top shows it."""
    fake = TANDEM.parents[1] / "fake-nvml"
    if not (fake / "libnvidia-ml.so.1").exists():
        pytest.skip(f"{fake}/libnvidia-ml.so.1 is not built (the tests' CMake target fake_nvml)")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(fake))
    s = Server(gemma_path, "-c", "1024", "-np", "1", "--no-warmup", "--metrics")
    try:
        _, m = scrape(s)
        labels = {"gpu": "0", "name": "Fake GPU 0"}
        wait_until = time.time() + 10
        while ("tandem_gpu_utilization_ratio", tuple(sorted(labels.items()))) not in m and time.time() < wait_until:
            time.sleep(0.2)
            _, m = scrape(s)
        assert value(m, "tandem_gpu_utilization_ratio", **labels) == 0.4
        assert value(m, "tandem_gpu_memory_used_bytes", **labels) == 6 << 30
        assert value(m, "tandem_gpu_memory_total_bytes", **labels) == 24 << 30
        assert not [k for k in m if k[0].startswith("tandem_gpu_") and ("gpu", "1") in k[1]]

        done = threading.Event()
        # Long enough to span several of the monitor's sampling periods on a fast CPU (150 tokens took under a
        # second on an AMD EPYC Zen 5, and no period saw them); the loop ends at the hint.
        threading.Thread(target=lambda: (s.request("POST", "/completion", {"prompt": "Once upon a time",
                                                                           "n_predict": 600, "ignore_eos": True},
                                                   timeout=300), done.set()), daemon=True).start()
        hint = None
        while not done.is_set() and hint is None:
            _, st = s.request("GET", "/monitor/stats")
            hint = next((h for h in st["hints"] if h.startswith("GPU 0 idle 60%")), None)
            time.sleep(0.3)
        assert hint, "no GPU-idle hint while generating"
        assert st["gpu"] == [{"index": 0, "name": "Fake GPU 0", "utilization": 0.4,
                              "memory_used_bytes": 6 << 30, "memory_total_bytes": 24 << 30}]
        r = run_tandem("top", "--url", s.url, "--once", check=True)
        assert "GPU0" in r.stdout and "40% busy" in r.stdout and "Fake GPU 0" in r.stdout, r.stdout
        done.wait(300)
    finally:
        assert s.stop() == 0, "".join(s.log)
