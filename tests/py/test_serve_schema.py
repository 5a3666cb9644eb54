"""schemathesis (PyPI) against a live `tandem serve`: requests generated from the server's own /openapi.json,
bounded in examples and time; the check is that none gets a 5xx and the server stays up."""
import shutil
import subprocess

import pytest

from serve_util import Server


def test_generated_requests_get_no_server_error(gemma_path, tmp_path):
    exe = shutil.which("schemathesis") or shutil.which("st")
    if not exe:
        pytest.skip("schemathesis is not installed (scripts/setup.sh installs it)")
    s = Server(gemma_path, "-c", "512", "-np", "2", "-n", "4", "--temp", "0", "--metrics")
    try:
        r = subprocess.run([exe, "run", f"{s.url}/openapi.json", "--checks", "not_a_server_error", "--max-examples", "8",
                            "--request-timeout", "60", "--phases", "coverage,fuzzing", "--seed", "1"],
                           capture_output=True, text=True, timeout=240,
                           cwd=tmp_path)  # its .schemathesis cache stays out of the checkout
        assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
        assert s.request("GET", "/health")[0] == 200
    finally:
        assert s.stop() == 0, "".join(s.log[-20:])
