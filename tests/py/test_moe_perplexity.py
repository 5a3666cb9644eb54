"""tandem perplexity on the MoE architectures (issue 10, item 6) against llama-perplexity, both run live on the
same tiny synth files (3 layers: one dense and two MoE layers for deepseek2) and the same slice of the KJV
text: the perplexity of each, and the KL divergence of Tandem's distributions from the base-logits file
llama-perplexity wrote. Skipped without the reference build or the text. (Greedy generation and logits at
every position are compared against llama.cpp in tests/model/logits_test.cpp.)

Measured at -c 128 x 4 chunks (252 scored positions) on an AMD EPYC Zen 4: F32 files agree to 1.5e-5 in
PPL, KLD below 5e-7 on average and 2e-6 at the worst position, the same top token at 251 or 252 positions
(a random model's distribution is nearly flat, so a near-tie flips one now and then). Q8_0 (V3): PPL
-0.29%, mean KLD 3.9e-4, worst 0.012, same top 86.5%: both tools quantize activations to Q8_0, but sum
the blocks in another order, and a flat distribution turns that into top-token flips."""
import os
import re
import subprocess

import pytest

from conftest import LLAMA_REF_BIN, run_tandem
from test_perplexity import LLAMA_PPL, parse_kld, parse_ppl

# (synth preset, type, extra synth flags): both gating variants, with and without the query projection,
# both kv_b forms, the fused gate_up experts, qwen3moe; one quantized file.
MODELS = [("tiny-deepseek-v3", "F32", ()), ("tiny-deepseek-v3-kvb", "F32", ()), ("tiny-deepseek-v2-lite", "F32", ()),
          ("tiny-qwen3moe", "F32", ()), ("tiny-deepseek-v3", "F32", ("--fuse-gate-up-exps",)),
          ("tiny-deepseek-v3", "Q8_0", ())]
# name -> (PPL relative bound, mean KLD bound, worst-position KLD bound, same-top minimum %): about 5x the
# figures above.
BOUNDS = {"F32": (1e-4, 5e-6, 2e-5, 98.0), "Q8_0": (0.015, 2e-3, 0.06, 80.0)}
CTX, CHUNKS = 128, 4

pytestmark = pytest.mark.skipif(not LLAMA_PPL.exists(), reason="llama.cpp reference build not present")


@pytest.fixture(scope="module")
def text(kjv_20k):
    return kjv_20k


def llama(*args):
    env = dict(os.environ, LD_LIBRARY_PATH=str(LLAMA_REF_BIN))
    proc = subprocess.run([str(LLAMA_PPL), "-t", "2", *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("preset,mix,extra", MODELS, ids=lambda v: "-".join(v) if isinstance(v, tuple) else str(v))
def test_perplexity_and_kld_match_llama_perplexity(tandem_bin, text, tmp_path, preset, mix, extra):
    model = tmp_path / f"{preset}-{mix}.gguf"
    run_tandem("synth", "--preset", preset, "--layers", "3", "--type", mix, "-t", "2", *extra, "-o", model, check=True)
    base = tmp_path / "llama-base.bin"
    _, ref, _ = parse_ppl(llama("-m", model, "-f", text, "-c", CTX, "--chunks", CHUNKS, "--kl-divergence-base", base))
    proc = run_tandem("perplexity", "-m", model, "-f", text, "-c", CTX, "--chunks", CHUNKS, "-t", "2", check=True)
    chunks, ppl, _ = parse_ppl(proc.stdout)
    assert len(chunks) == CHUNKS
    ppl_rel, kld_mean, kld_worst, same_top = BOUNDS[mix]
    assert ppl == pytest.approx(ref, rel=ppl_rel), f"Tandem {ppl} vs llama-perplexity {ref}"
    s = parse_kld(run_tandem("perplexity", "-m", model, "--kl-divergence-base", base, "--kl-divergence", "-t", "2",
                             check=True).stdout)
    assert s["ppl_base"] == pytest.approx(ref, rel=1e-4)  # llama.cpp's logits through its own file
    assert s["ppl"] == pytest.approx(ppl, rel=1e-6)  # the same run as above
    assert abs(s["kld"]) < kld_mean and max(abs(s["kld_max"]), abs(s["kld_min"])) < kld_worst
    assert s["same_top"] >= same_top
