"""tandem top against a live tandem serve (Gemma 3 270M): --once prints the figures for scripts, and the
refreshing screen, run in a detached tmux pane (its own tmux server), shows them changing as requests
finish; bad addresses are errors."""
import os
import shutil
import subprocess
import time
import urllib.request
import uuid

import pytest

from conftest import TANDEM, run_tandem
from serve_util import Server


@pytest.fixture(scope="module")
def server(gemma_path):
    s = Server(gemma_path, "-c", "512", "-np", "2", "-n", "8", "--temp", "0")
    yield s
    assert s.stop() == 0, "".join(s.log)


def test_once_prints_the_figures_without_escape_codes(server):
    r = run_tandem("top", "--url", server.url, "--once", check=True)
    for label in ("tokens/s", "bandwidth", "GPU", "CPU", "requests", "KV cache", "experts", "dev CPU"):
        assert label in r.stdout, r.stdout
    assert "\x1b" not in r.stdout and "of 512 cells" in r.stdout and "gemma-3-270m" in r.stdout
    # It waited for the server's first sample period: CPU shares and the measured limit are there.
    assert "busy" in r.stdout and "GB/s of" in r.stdout, r.stdout


def test_bad_addresses_are_errors():
    for url, words in [("http://127.0.0.1:1", "cannot reach"), ("127.0.0.1:8080", "http://HOST:PORT"),
                       ("http://127.0.0.1:8080/v1", "without a path")]:
        r = run_tandem("top", "--url", url, "--once")
        assert r.returncode == 1 and r.stderr.startswith("error: ") and words in r.stderr, r.stderr


def test_screen_under_tmux_follows_requests(server):
    if not shutil.which("tmux"):
        pytest.skip("tmux is not installed (scripts/setup.sh installs it)")
    sock = f"tandem-top-{uuid.uuid4().hex[:8]}"  # a tmux server of its own: no other session is touched
    tmux = ["tmux", "-L", sock]
    subprocess.run(tmux + ["new-session", "-d", "-x", "120", "-y", "40",
                           f"{TANDEM} top --url {server.url} --interval 200"], check=True, env={**os.environ, "TERM": "xterm"})
    try:
        def pane():
            return subprocess.run(tmux + ["capture-pane", "-p"], capture_output=True, text=True, check=True).stdout

        def wait_for(words, timeout=30):
            deadline = time.time() + timeout
            while time.time() < deadline:
                text = pane()
                if all(w in text for w in words):
                    return text
                time.sleep(0.2)
            raise AssertionError(f"{words} not on the screen:\n{text}")

        status, stats = server.request("GET", "/monitor/stats")
        finished = stats["requests"]["finished_total"]
        text = wait_for(["tandem top", "tokens/s", "KV cache", f"{finished} finished"])
        assert "no GPU" in text or "GPU0" in text
        for i in range(2):
            assert server.request("POST", "/completion", {"prompt": f"Hello {i}", "n_predict": 4})[0] == 200
        wait_for([f"{finished + 2} finished"])
        # A narrow terminal: lines are cut at its width, not wrapped (a wrapped line would scroll the screen).
        subprocess.run(tmux + ["resize-window", "-x", "50", "-y", "40"], check=True)
        time.sleep(1)
        rows = pane().splitlines()
        assert all(len(r) <= 50 for r in rows)
        labels = [r.split()[0] for r in rows[2:9] if r.strip()]
        assert labels == ["tokens/s", "bandwidth", "GPU", "CPU", "requests", "KV", "experts"], rows
    finally:
        subprocess.run(tmux + ["kill-server"], capture_output=True)


def test_pages_are_public_and_figures_need_the_key(gemma_path):
    """With --api-key the pages load (they ask for the key themselves); /monitor/stats and /metrics do not
    answer without it, and tandem top sends it."""
    s = Server(gemma_path, "-c", "256", "-np", "1", "--no-warmup", "--api-key", "sesame", "--metrics")
    try:
        for path, kind in [("/", "text/html"), ("/monitor", "text/html"), ("/chat.js", "text/javascript"),
                           ("/style.css", "text/css")]:
            with urllib.request.urlopen(s.url + path, timeout=10) as r:
                assert r.status == 200 and r.headers["Content-Type"].startswith(kind), path
        for path in ("/monitor/stats", "/metrics"):
            assert s.request("GET", path)[0] == 401
            assert s.request("GET", path, headers={"Authorization": "Bearer sesame"})[0] == 200
        r = run_tandem("top", "--url", s.url, "--once")
        assert r.returncode == 1 and "401" in r.stderr, r.stderr
        r = run_tandem("top", "--url", s.url, "--once", "--api-key", "sesame", check=True)
        assert "KV cache" in r.stdout
    finally:
        assert s.stop() == 0, "".join(s.log)
