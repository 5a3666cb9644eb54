"""--repack / --no-repack (issue 11): on a CPU whose kernels repack Q8_0 (AVX-512 without AMX), run's start-up
summary has a `repack:` line counting the copies and the mapped pages let go; --no-repack has none; both
generate. --help explains the flag."""
import subprocess

import pytest

from conftest import TANDEM, TEST_DATA, run_tandem


def repacks_q8_0(stderr):
    """Whether the run's matmul kernels repack Q8_0: the AVX2 and AVX-512 levels' do, the AMX level keeps the file's
    layout (src/backend/cpu/avx2/packed_gemm.cpp, avx512/kernels.cpp, dispatch.cpp)."""
    return "matmul kernels: avx512" in stderr or "matmul kernels: avx2" in stderr


@pytest.fixture(scope="module")
def q8_model(tandem_bin, tmp_path_factory):
    if not (TEST_DATA / "ggml-vocab-llama-spm.gguf").exists():
        pytest.skip("synth tiny-llama's vocabulary is not in the test data")
    out = tmp_path_factory.mktemp("repack") / "tiny-llama-q8_0.gguf"
    subprocess.run([str(TANDEM), "synth", "--preset", "tiny-llama", "--type", "Q8_0", "-o", str(out)], check=True,
                   capture_output=True)
    return out


def generate(model, *flags):
    return run_tandem("run", "-m", model, "-p", "Once upon a time", "-n", "4", "--temp", "0", "-t", "2", *flags,
                      check=True)


def test_help_explains_no_repack(tandem_bin):
    out = run_tandem("run", "--help", check=True).stdout
    line = next((l for l in out.splitlines() if l.strip().startswith("--repack")), None)
    assert line is not None and "re-lay" in line, out
    assert any(l.strip().startswith("--no-repack") for l in out.splitlines()), out


def test_summary_counts_the_repacked_bytes_and_no_repack_has_none(q8_model):
    default = generate(q8_model)
    lines = [l for l in default.stderr.splitlines() if l.startswith("repack:")]
    if repacks_q8_0(default.stderr):
        assert len(lines) == 1, default.stderr
        assert "Q8_0" in lines[0] and "let go" in lines[0], lines[0]
    else:
        assert not lines, default.stderr
    off = generate(q8_model, "--no-repack")
    assert not [l for l in off.stderr.splitlines() if l.startswith("repack:")], off.stderr
    assert off.stdout.strip() and default.stdout.strip()


@pytest.mark.parametrize("flag", ["--no-mmap", "--mlock"])
def test_no_mmap_and_mlock_keep_the_files_layout(q8_model, flag):
    """Read into RAM or locked, a repacked copy would hold the Q8_0 matrices twice or unlocked: repack is off and
    the summary says why."""
    out = generate(q8_model, flag)
    lines = [l for l in out.stderr.splitlines() if l.startswith("repack:")]
    if repacks_q8_0(out.stderr):
        assert len(lines) == 1 and "off with " + flag in lines[0], out.stderr
    assert out.stdout.strip()
