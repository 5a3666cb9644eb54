"""tandem serve's command line and access rules: llama-server's pasted command line starts it, an unknown flag
names the closest known one, API keys are enforced (/health stays open), a full queue answers 503."""
import http.client
import json
import subprocess
import time

import pytest

from conftest import TANDEM, run_tandem
from serve_util import Server


def test_unknown_flag_names_the_closest(gemma_path):
    r = run_tandem("serve", "-m", gemma_path, "--prot", "8080")
    assert r.returncode == 1 and "unknown flag '--prot'" in r.stderr and "did you mean --port?" in r.stderr


def test_help_explains_every_flag():
    r = run_tandem("serve", "--help", check=True)
    for flag in ["--host", "--port", "-np,", "--api-key", "--api-key-file", "--alias", "--reasoning-format",
                 "--chat-template", "-to,", "--swap-space", "--max-seq-len", "-cb,", "--temp", "--top_p", "-fa,"]:
        assert flag in r.stdout, flag


def test_list_devices_needs_no_model():
    # As llama-server: the devices, then exit, with or without -m (a fresh user's try: it demanded -m).
    r = run_tandem("serve", "--list-devices", check=True)
    assert "Available devices:" in r.stdout and "CPU:" in r.stdout, r.stdout
    r = run_tandem("serve")
    assert r.returncode == 1 and "no model given" in r.stderr, r.stderr


def test_refused_features_are_errors_not_ignored(gemma_path):
    for flags, word in [(["--swap-space", "lots"], "GiB")]:
        r = run_tandem("serve", "-m", gemma_path, *flags)
        assert r.returncode == 1 and word in r.stderr, r.stderr


def test_llama_server_command_line_runs_unchanged(gemma_path):
    s = Server(gemma_path, "-ctk", "q4_0", "-ctv", "q4_0", "--prio", "3", "--temp", "0.6", "--no-warmup", "-ub", "1024",
               "--no-mmap", "--mlock", "-n-gpu-layers", "57", "-fa", "-c", "512", "-np", "1")
    try:
        log = "".join(s.log)
        assert "q4_0 K / Q4_0 V".lower() in log.lower() and "flash attention on" in log
        status, r = s.request("POST", "/completion", {"prompt": "Hello", "n_predict": 2})
        assert status == 200 and r["tokens_predicted"] == 2
    finally:
        assert s.stop() == 0


@pytest.fixture(scope="module")
def keyed(gemma_path, tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text("second-key\n")
    s = Server(gemma_path, "-c", "1024", "-np", "1", "--max-queue", "1", "--api-key", "first-key",
               "--api-key-file", keys, "--temp", "0")
    yield s
    assert s.stop() == 0


def test_api_key_is_enforced_and_health_stays_open(keyed):
    assert keyed.request("GET", "/health")[0] == 200
    status, body = keyed.request("GET", "/v1/models")
    assert status == 401 and body["error"]["type"] == "authentication_error"
    assert keyed.request("GET", "/v1/models", headers={"Authorization": "Bearer wrong"})[0] == 401
    for key in ["first-key", "second-key"]:
        assert keyed.request("GET", "/v1/models", headers={"Authorization": f"Bearer {key}"})[0] == 200


def test_full_queue_answers_503(keyed):
    auth = {"Authorization": "Bearer first-key", "Content-Type": "application/json"}
    # Long enough to outlast the second below on a fast CPU (Gemma 3 270M: 200 tokens took about a second on an AMD
    # EPYC Zen 5, the time this test waits); closing the connections at the end cancels both.
    long = json.dumps({"prompt": "Once upon a time", "n_predict": 800, "ignore_eos": True, "stream": True})
    running = http.client.HTTPConnection("127.0.0.1", keyed.port, timeout=60)
    running.request("POST", "/completion", long, auth)
    first = running.getresponse()
    first.fp.readline()  # generating: the one slot is taken
    waiting = http.client.HTTPConnection("127.0.0.1", keyed.port, timeout=60)
    waiting.request("POST", "/completion", long, auth)  # queued (the queue holds one)
    time.sleep(1)  # let it reach the queue first: a probe sent before it would take the queue's one place
    deadline = time.time() + 10
    status = None
    while time.time() < deadline:
        status, body = keyed.request("POST", "/completion", {"prompt": "x", "n_predict": 1}, headers=auth)
        if status == 503:
            break
        time.sleep(0.05)
    assert status == 503 and "busy" in body["error"]["message"]
    for c in (running, waiting):
        c.sock.close()
        c.close()


def test_cors_preflight_and_origin_before_the_key_check(keyed):
    conn = http.client.HTTPConnection("127.0.0.1", keyed.port, timeout=10)
    conn.request("OPTIONS", "/v1/chat/completions", headers={
        "Origin": "http://ui.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    r = conn.getresponse()
    r.read()
    assert r.status == 204
    assert r.getheader("Access-Control-Allow-Origin") == "http://ui.example"
    assert "POST" in r.getheader("Access-Control-Allow-Methods")
    assert r.getheader("Access-Control-Allow-Headers") == "authorization, content-type"
    conn.request("GET", "/v1/models", headers={"Origin": "http://ui.example", "Authorization": "Bearer first-key"})
    r = conn.getresponse()
    r.read()
    assert r.status == 200 and r.getheader("Access-Control-Allow-Origin") == "http://ui.example"


def test_a_taken_port_is_an_error(keyed, gemma_path):
    r = run_tandem("serve", "-m", gemma_path, "--port", str(keyed.port), timeout=60)
    assert r.returncode == 1 and "cannot listen" in r.stderr, r.stderr


def test_many_stalled_connections_do_not_block_others(gemma_path):
    import socket
    s = Server(gemma_path, "-c", "256", "-np", "1")
    stalled = []
    try:
        for _ in range(100):  # more than slots + queue: each holds a connection thread until -to
            c = socket.create_connection(("127.0.0.1", s.port), timeout=10)
            c.sendall(b"POST /completion HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"pro")
            stalled.append(c)
        t0 = time.time()
        assert s.request("GET", "/health", timeout=10)[0] == 200
        assert time.time() - t0 < 5
    finally:
        for c in stalled:
            c.close()
        assert s.stop() == 0
