"""A context the machine cannot hold is refused before anything is allocated (run, bench, perplexity):
the error gives the KV cache's size, the memory available and what limits it, and what to lower."""
import resource
import subprocess

import pytest

from conftest import STORIES, TANDEM

AS_LIMIT = 2 << 30  # an address-space limit (ulimit -v) far below stories260K's 10.7 GB cache at -c 16777216


def tandem(*args, as_limit=None):
    limit = (lambda: resource.setrlimit(resource.RLIMIT_AS, (as_limit, as_limit))) if as_limit else None
    proc = subprocess.run([str(TANDEM), *map(str, args)], capture_output=True, text=True, timeout=120,
                          preexec_fn=limit)
    assert proc.returncode >= 0, proc.stderr
    return proc


def assert_refused(proc, kv_size, source):
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("error: ") and f"needs a KV cache of {kv_size}" in err, err
    assert source in err and "Lower -c (at most" in err and "-ctk/-ctv" in err, err
    assert "kv:" not in proc.stderr  # refused before the context (and its cache) existed


@pytest.mark.parametrize("args", [
    ["run", "-m", STORIES, "-c", "16777216", "-p", "Once", "-n", "1"],
    ["run", "-m", STORIES, "--ctx-size=16777216", "-ctk", "q8_0", "-ctv", "f32", "-p", "Once", "-n", "1"],
    ["bench", "-m", STORIES, "-d", "16000000", "-p", "8", "-n", "0", "-r", "1"],
    ["perplexity", "-m", STORIES, "-c", "16777216", "-f", "unread.txt"],
])
def test_refused_under_an_address_space_limit(tandem_bin, args):
    proc = tandem(*args, as_limit=AS_LIMIT)
    if "q8_0" in args:  # stories260K's 8-dimension heads cannot hold q8_0 blocks: that message wins
        assert proc.returncode == 1 and "not a multiple" in proc.stderr, proc.stderr
        return
    expected = "10.24 GB" if args[0] == "bench" else "10.74 GB"  # bench: -d + -p + 1 = 16000009 tokens
    assert_refused(proc, expected, "ulimit -v")


def test_the_same_limit_runs_a_context_that_fits(tandem_bin):
    proc = tandem("run", "-m", STORIES, "-c", "4096", "-p", "Once", "-n", "2", as_limit=AS_LIMIT)
    assert proc.returncode == 0, proc.stderr


def test_gemma_at_16m_tokens_is_refused_with_the_machines_numbers(gemma_path):
    proc = tandem("run", "-m", gemma_path, "-c", "16777216", "-p", "hi", "-n", "1")
    # 18 layers x 1 KV head x 256 dims x (K + V) x 2 bytes = 18432 bytes per token
    assert_refused(proc, "309.24 GB", "available")
    assert "18432 bytes per token" in proc.stderr
