"""Bad input to the CLI: every case ends with exit code 1 and one 'error:' line naming the problem,
never a crash (a signal) or a hang."""
import pathlib

import pytest

from conftest import STORIES, run_tandem


def expect_error(proc, needle):
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "error:" in proc.stderr, proc.stderr
    assert needle in proc.stderr, proc.stderr


def test_help_lists_commands(tandem_bin):
    proc = run_tandem("--help", check=True)
    for cmd in ("info", "verify", "synth"):
        assert cmd in proc.stdout
    for cmd in ("info", "verify", "synth"):
        sub = run_tandem(cmd, "--help", check=True)
        assert "usage: tandem " + cmd in sub.stdout


def test_unknown_command_and_flags(tandem_bin):
    proc = run_tandem("frobnicate")
    assert proc.returncode == 1 and "unknown command" in proc.stderr
    expect_error(run_tandem("info", "--bogus"), "unknown flag '--bogus'")
    expect_error(run_tandem("info", "-m"), "needs a value")
    expect_error(run_tandem("verify", "-m", "x", "-t", "zero"), "not an integer")
    expect_error(run_tandem("synth", "--preset", "Llama-9000", "-o", "/tmp/x.gguf"), "unknown preset")
    expect_error(run_tandem("synth", "--preset", "tiny-llama", "--type", "Q9_Z", "-o", "/tmp/x.gguf"),
                 "unknown --type")
    expect_error(run_tandem("synth", "--preset", "tiny-llama", "--layers", "-3", "-o", "/tmp/x.gguf"), "out of range")


@pytest.mark.parametrize("content,needle", [
    (b"", "empty file"),
    (b"GGU", "truncated"),
    (b"NOPE" + b"\0" * 60, "not a GGUF file"),
    (b"GGUF\x01\0\0\0" + b"\0" * 16, "version 1"),
    (b"GGUF\x03\0\0\0" + (2**62).to_bytes(8, "little") + b"\0" * 8, "tensor count"),
])
def test_malformed_files(tmp_path, tandem_bin, content, needle):
    p = tmp_path / "bad.gguf"
    p.write_bytes(content)
    for cmd in ("info", "verify"):
        proc = run_tandem(cmd, "-m", p)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert needle in proc.stderr + proc.stdout
        assert str(p) in proc.stderr + proc.stdout


def test_missing_file_and_directory(tmp_path, tandem_bin):
    expect_error(run_tandem("info", "-m", tmp_path / "absent.gguf"), "no such file")
    expect_error(run_tandem("info", "-m", tmp_path), "not a regular file")


def test_truncated_real_model(tmp_path, tandem_bin):
    src = STORIES.read_bytes()
    for cut in (100, 5000, len(src) // 2, len(src) - 1):
        p = tmp_path / f"cut{cut}.gguf"
        p.write_bytes(src[:cut])
        proc = run_tandem("info", "-m", p)
        assert proc.returncode == 1, cut
        assert "truncated" in proc.stderr or "past the end" in proc.stderr, proc.stderr


def test_refused_mlock_warns_naming_the_limit(tandem_bin):
    """Without CAP_IPC_LOCK and with a tiny RLIMIT_MEMLOCK, --mlock is refused: a warning, then a normal run."""
    import shutil
    import subprocess
    capsh = shutil.which("capsh")
    if not capsh:
        pytest.skip("capsh (libcap2-bin) not installed")
    cmd = f"ulimit -l 64 && exec {tandem_bin} run -m {STORIES} --mlock -p Once -n 4 --temp 0"
    proc = subprocess.run([capsh, "--drop=cap_ipc_lock", "--", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "RLIMIT_MEMLOCK" in proc.stderr and "continuing unlocked" in proc.stderr, proc.stderr
