"""tandem verify: digests against the real sha256/md5, manifests for split models, and the verdict
on damaged files."""
import hashlib
import shutil

from conftest import REAL_STORIES, STORIES, run_tandem


def stories_sha256():
    """The published digest of stories260K.gguf; its stand-in's comes from hashlib."""
    if REAL_STORIES:
        return "270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d"
    return hashlib.sha256(STORIES.read_bytes()).hexdigest()


def test_matching_sha256_and_md5(tandem_bin):
    md5 = hashlib.md5(STORIES.read_bytes()).hexdigest()
    proc = run_tandem("verify", "-m", STORIES, "--sha256", stories_sha256().upper(), check=True)
    assert "verdict: OK" in proc.stdout
    assert stories_sha256() in proc.stdout
    proc = run_tandem("verify", "-m", STORIES, "--md5", md5, "--scan", check=True)
    assert "no NaN or Inf" in proc.stdout


def test_mismatch_fails(tandem_bin):
    proc = run_tandem("verify", "-m", STORIES, "--sha256", "0" * 64)
    assert proc.returncode == 1
    assert "verdict: FAILED" in proc.stdout and "MISMATCH" in proc.stdout


def test_bad_digest_argument(tandem_bin):
    proc = run_tandem("verify", "-m", STORIES, "--sha256", "xyz")
    assert proc.returncode == 1 and "64 hex digits" in proc.stderr


def test_flipped_byte_fails_checksum_and_nan_fails_scan(tmp_path, tandem_bin):
    data = bytearray(STORIES.read_bytes())
    # Last 4 bytes are the final F32 weight: make it a NaN.
    data[-4:] = b"\x00\x00\xc0\x7f"
    p = tmp_path / "nan.gguf"
    p.write_bytes(bytes(data))
    proc = run_tandem("verify", "-m", p, "--sha256", stories_sha256(), "--scan")
    assert proc.returncode == 1
    assert "sha256 MISMATCH" in proc.stdout
    assert "1 NaN" in proc.stdout


def test_missing_tensor_is_reported(tmp_path, tandem_bin):
    data = bytearray(STORIES.read_bytes())
    name = b"blk.4.ffn_up.weight"
    i = data.index(name)
    data[i:i + len(name)] = b"blk.4.ffn_xx.weight"
    p = tmp_path / "renamed.gguf"
    p.write_bytes(bytes(data))
    proc = run_tandem("verify", "-m", p)
    assert proc.returncode == 1
    assert "'blk.4.ffn_up.weight' is missing" in proc.stdout


def test_manifest_for_split_model(tmp_path, tandem_bin):
    out = tmp_path / "m.gguf"
    run_tandem("synth", "--preset", "tiny-llama", "--type", "Q8_0", "-o", out, "--split-max-tensors", "10", check=True)
    parts = sorted(tmp_path.glob("m-*-of-*.gguf"))
    assert len(parts) == 3
    manifest = tmp_path / "SHA256SUMS"
    manifest.write_text("".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in parts))
    proc = run_tandem("verify", "-m", parts[0], "--manifest", manifest, check=True)
    assert "3 digests matched" in proc.stdout
    # A damaged middle part is named.
    data = bytearray(parts[1].read_bytes())
    data[-1] ^= 0xFF
    parts[1].write_bytes(bytes(data))
    proc = run_tandem("verify", "-m", parts[0], "--manifest", manifest)
    assert proc.returncode == 1
    assert parts[1].name in proc.stdout and "MISMATCH" in proc.stdout
    # A missing part is a clear error.
    parts[2].unlink()
    proc = run_tandem("verify", "-m", parts[0])
    assert proc.returncode == 1 and "missing" in proc.stdout


def test_gemma_checks_out(tandem_bin, gemma_path):
    proc = run_tandem("verify", "-m", gemma_path, "--sha256",
                      "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", check=True)
    assert "gemma3 needs checked" in proc.stdout
