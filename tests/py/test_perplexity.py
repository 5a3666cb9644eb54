"""tandem perplexity end to end on Gemma 3 270M Q4_K_M and a slice of the KJV text, against
llama-perplexity: its perplexity (recorded in tests/fixtures/perplexity/reference.json by
scripts/fixtures/gen_perplexity.py; and live, both tools on this machine, when the reference build is
present), and its
base-logits file in both directions (a committed one llama-perplexity wrote; llama-perplexity reading
Tandem's when present). Bounds are stated where they are used, with what was measured.
"""
import gzip
import hashlib
import json
import math
import os
import pathlib
import re
import subprocess

import pytest

from conftest import LLAMA_REF_BIN, ROOT, run_tandem

FIXTURES = ROOT / "tests" / "fixtures" / "perplexity"
REF = json.loads((FIXTURES / "reference.json").read_text())
LLAMA_PPL = LLAMA_REF_BIN / "llama-perplexity"

# Tandem vs llama.cpp on the same file differ in float summation order, which flips f16/Q8 roundings
# that Gemma 3's 18 layers amplify. Measured at -c 128 x 40 chunks: 4.3089 vs 4.3018 (+0.17%); at
# -c 512 x 20 chunks of the whole text, -0.31%. llama.cpp itself moves by 1.1% on 378 tokens between
# its own -b/-fa settings, so shorter runs than these need wider bounds.
PPL_REL_TOL = 0.005
# Mean KL(llama.cpp || Tandem) over the 124 positions of the committed base file: measured 0.039 (same
# top token 88.7%). llama.cpp against itself with -fa off instead of on gives 0.037 (91.9%): this
# model is that sensitive to rounding, so the bound sits just above what the reference's own
# settings produce.
KLD_MAX = 0.06
SAME_TOP_MIN = 80.0
# The 16-bit log-probabilities of the file are the only difference between a run and its own base:
# measured |mean KLD| 1e-6, largest position 5e-5 (llama.cpp against itself: 2e-6).
SELF_KLD_MAX = 1e-5
SELF_KLD_POSITION_MAX = 2e-4


@pytest.fixture(scope="module")
def text_slice(tmp_path_factory):
    """The first slice_bytes of the KJV text, checked against the fixture's sha256."""
    path = os.environ.get("TANDEM_TEXT", str(pathlib.Path.home() / ".cache/tandem-text/kjv.txt"))
    if not os.path.exists(path):
        pytest.skip("the KJV text is not fetched (scripts/fetch-text.sh; scripts/test.sh sets TANDEM_TEXT)")
    piece = pathlib.Path(path).read_bytes()[:REF["text"]["slice_bytes"]]
    if hashlib.sha256(piece).hexdigest() != REF["text"]["slice_sha256"]:
        pytest.skip(f"{path} is not the text the fixture was recorded on (sha256 differs)")
    out = tmp_path_factory.mktemp("ppl") / "slice.txt"
    out.write_bytes(piece)
    return out


@pytest.fixture(scope="module")
def model(gemma_path):
    if hashlib.sha256(gemma_path.read_bytes()).hexdigest() != REF["model"]["sha256"]:
        pytest.skip(f"{gemma_path} is not the model the fixture was recorded with (sha256 differs)")
    return gemma_path


@pytest.fixture(scope="module")
def llama_base(tmp_path_factory):
    """The committed base-logits file llama-perplexity wrote, decompressed."""
    raw = gzip.decompress((FIXTURES / REF["base"]["file"]).read_bytes())
    assert hashlib.sha256(raw).hexdigest() == REF["base"]["sha256"]
    out = tmp_path_factory.mktemp("ppl") / "llama-base.bin"
    out.write_bytes(raw)
    return out


def parse_ppl(out):
    chunks = [float(v) for v in re.findall(r"\[(?:\d+)\]([0-9.]+),", out)]
    m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", out)
    assert m, out[-3000:]
    return chunks, float(m.group(1)), float(m.group(2))


def parse_kld(out):
    """The summary figures both tools print, by label."""
    stats = {}
    for label, key in [("Mean PPL(Q)", "ppl"), ("Mean PPL(base)", "ppl_base"), ("Mean    KLD", "kld"),
                       ("Maximum KLD", "kld_max"), ("Minimum KLD", "kld_min"), ("Same top p", "same_top"),
                       ("RMS Δp", "rms_p_diff"), ("Mean ln(PPL(Q)/PPL(base))", "log_ratio")]:
        m = re.search(re.escape(label) + r"\s*:\s*(-?[0-9.]+)", out)
        assert m, f"no '{label}' in:\n{out[-3000:]}"
        stats[key] = float(m.group(1))
    stats["chunk_lines"] = re.findall(r"^\s*\d+\s+[0-9.]+ ±", out, re.M)
    return stats


def llama(*args, timeout=600):
    env = dict(os.environ, LD_LIBRARY_PATH=str(LLAMA_REF_BIN))
    proc = subprocess.run([str(LLAMA_PPL), "-t", "2", *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def tandem_ppl(model, text, ctx, chunks, *extra):
    proc = run_tandem("perplexity", "-m", model, "-f", text, "-c", ctx, "--chunks", chunks, "-t", "2", *extra,
                      check=True)
    return parse_ppl(proc.stdout)


def test_perplexity_matches_llama_fixture(tandem_bin, model, text_slice):
    p = REF["perplexity"]
    chunks, ppl, err = tandem_ppl(model, text_slice, p["ctx"], p["chunks"])
    assert len(chunks) == p["chunks"]
    assert chunks[-1] == pytest.approx(ppl, abs=1e-4)
    assert ppl == pytest.approx(p["ppl"], rel=PPL_REL_TOL), f"Tandem {ppl} vs llama-perplexity {p['ppl']}"
    assert err == pytest.approx(p["error"], rel=0.05)


@pytest.mark.skipif(not LLAMA_PPL.exists(), reason="llama.cpp reference build not present")
def test_perplexity_matches_llama_live(tandem_bin, model, text_slice, tmp_path):
    """The fixture's run, by llama-perplexity and by Tandem on this machine (about 45 s of llama-perplexity
    on 2 cores), compared with each other. Never the live reference against the fixture: its figures move
    with the CPU's kernels (on an AMD EPYC it printed 1.8332 for the first chunk where the fixture, made on
    an Intel machine, holds 1.7892).
    Compared token by token: Tandem reads llama-perplexity's logits of the same run and the two PPLs must
    agree within three standard errors of their paired log-ratio. A fixed relative bound does not fit a
    machine: on one AMD EPYC Zen 4, Tandem's own kernel levels spread 4.2858..4.3147 on this run (0.7%),
    and llama.cpp's Intel and AMD builds 4.3018 vs 4.3177."""
    p = REF["perplexity"]
    base = tmp_path / "llama-base.bin"
    out = llama("-m", model, "-f", text_slice, "-c", p["ctx"], "--chunks", p["chunks"], "--kl-divergence-base", base)
    chunks_ref, ref, _ = parse_ppl(out)
    chunks, ppl, _ = tandem_ppl(model, text_slice, p["ctx"], p["chunks"])
    assert len(chunks_ref) == len(chunks) == p["chunks"]
    proc = run_tandem("perplexity", "-m", model, "--kl-divergence-base", base, "--kl-divergence", "-t", "2",
                      check=True)
    m = re.search(r"Mean ln\(PPL\(Q\)/PPL\(base\)\)\s*:\s*(-?[0-9.]+)\s*±\s*([0-9.]+)", proc.stdout)
    assert m, proc.stdout[-3000:]
    log_ratio, err = float(m.group(1)), float(m.group(2))
    assert math.log(ppl / ref) == pytest.approx(log_ratio, abs=2e-3), "the paired run saw other tokens"
    assert abs(log_ratio) <= 3 * err, f"Tandem {ppl} vs llama-perplexity {ref}: ln ratio {log_ratio} ± {err}"


def test_reads_llama_base_file(tandem_bin, model, llama_base):
    proc = run_tandem("perplexity", "-m", model, "--kl-divergence-base", llama_base, "--kl-divergence", "-t", "2",
                      check=True)
    s = parse_kld(proc.stdout)
    assert len(s["chunk_lines"]) == REF["base"]["chunks"]
    # PPL(base) comes from llama.cpp's own logits through the file: it must equal what llama-perplexity
    # printed while writing it (16-bit storage moves it by ~1e-6).
    assert s["ppl_base"] == pytest.approx(REF["base"]["ppl"], abs=1.5e-4)
    assert 0 <= s["kld"] < KLD_MAX
    assert s["same_top"] > SAME_TOP_MIN
    assert s["ppl"] == pytest.approx(s["ppl_base"], rel=0.15)


def test_base_file_against_itself_and_llama_layout(tandem_bin, model, text_slice, llama_base, tmp_path):
    base = tmp_path / "tandem-base.bin"
    b = REF["base"]
    _, ppl, _ = tandem_ppl(model, text_slice, b["ctx"], b["chunks"], "--kl-divergence-base", base)
    # Same size as llama-perplexity's file for the same run, and the same header and tokens.
    assert base.stat().st_size == b["size_bytes"]
    n_head = 20 + 4 * b["ctx"] * b["chunks"]
    assert base.read_bytes()[:n_head] == llama_base.read_bytes()[:n_head]
    # -b 32: each 64-token chunk takes two decodes, whose logits are gathered; micro-batches of 32 rows
    # give the same logits as one of 64 (measured: identical figures).
    proc = run_tandem("perplexity", "-m", model, "--kl-divergence-base", base, "--kl-divergence", "-t", "2",
                      "-b", "32", check=True)
    s = parse_kld(proc.stdout)
    assert s["ppl"] == pytest.approx(ppl, abs=1e-4)
    assert s["ppl_base"] == pytest.approx(ppl, abs=1e-4)
    assert abs(s["kld"]) < SELF_KLD_MAX
    assert max(abs(s["kld_max"]), abs(s["kld_min"])) < SELF_KLD_POSITION_MAX
    assert s["same_top"] == 100.0


@pytest.mark.skipif(not LLAMA_PPL.exists(), reason="llama.cpp reference build not present")
def test_llama_reads_tandem_base_file(tandem_bin, model, text_slice, tmp_path):
    base = tmp_path / "tandem-base.bin"
    b = REF["base"]
    _, ppl, _ = tandem_ppl(model, text_slice, b["ctx"], b["chunks"], "--kl-divergence-base", base)
    s = parse_kld(llama("-m", model, "--kl-divergence-base", base, "--kl-divergence"))
    assert len(s["chunk_lines"]) == b["chunks"]
    assert s["ppl_base"] == pytest.approx(ppl, abs=1.5e-4)  # Tandem's logits, read by llama.cpp
    # llama.cpp's own, as without the file: measured here, since its builds for other ISAs differ (its AVX2 build's
    # 3.0305 against the fixture's 2.9519 from AVX-512, AMD EPYC Zen 3)
    _, own, _ = parse_ppl(llama("-m", model, "-f", text_slice, "-c", b["ctx"], "--chunks", b["chunks"]))
    assert s["ppl"] == pytest.approx(own, abs=1.5e-4)
    assert 0 <= s["kld"] < KLD_MAX
    assert s["same_top"] > SAME_TOP_MIN


# Errors: each a clear message and exit 1, never a crash.

def expect_error(*args, match):
    proc = run_tandem("perplexity", *args)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(match, proc.stderr), proc.stderr


def test_short_text_is_refused(tandem_bin, model, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("In the beginning God created the heaven and the earth.\n" * 10)
    expect_error("-m", model, "-f", short, match=r"tokenizes to only \d+ tokens; a context of 512 needs at least 1024")


def test_flag_errors(tandem_bin, model, llama_base):
    expect_error("-m", model, match=r"no text given")
    expect_error("-m", model, "--kl-divergence", match=r"--kl-divergence-base")
    expect_error("-m", model, "-f", "/nonexistent/text.txt", match=r"/nonexistent/text.txt")
    expect_error("-m", model, "-c", "2", "-f", llama_base, match=r"-c must be at least 3")
    # The file was computed with -c 64: a smaller context cannot hold its chunks.
    expect_error("-m", model, "-c", "32", "--kl-divergence-base", llama_base, "--kl-divergence",
                 match=r"computed with a context of 64 tokens, this run's is 32")


def test_bad_base_files_are_refused(tandem_bin, model, llama_base, tmp_path):
    raw = llama_base.read_bytes()
    cases = {
        "magic": (b"GGUF" + raw[4:], r"does not start with \"_logits_\""),
        "truncated": (raw[: len(raw) - 1000], r"truncated"),
        "header": (raw[:14], r"truncated header"),
        "trailing": (raw + b"\0\0", r"trailing bytes"),
        # Another model's vocabulary, with a size that matches it: refused against this model.
        # 4 chunks of 64 tokens (all id 0), 31 rows of 1000 + 4 uint16 each.
        "vocab": (raw[:12] + (1000).to_bytes(4, "little") + raw[16:20] + bytes(4 * 4 * 64)
                  + bytes(2 * 4 * 31 * 1004), r"holds logits over 1000 tokens, but .* has 262144"),
        "token": (raw[:20] + (262144).to_bytes(4, "little") + raw[24:], r"offset 20: token 262144 is outside"),
    }
    for name, (data, match) in cases.items():
        path = tmp_path / f"{name}.bin"
        path.write_bytes(data)
        expect_error("-m", model, "--kl-divergence-base", path, "--kl-divergence", match=match)
