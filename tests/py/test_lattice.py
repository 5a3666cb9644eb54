"""The lattice i-quants (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S) through a whole model: tiny-llama
(n_embd 256) whose attention and FFN matrices are random lattice blocks (bench/lattice_model.py; no tool here
quantizes to these types without an importance matrix), run by Tandem's kernels, its logits set against those of
the same model dequantized to F32 by `tandem quantize` (the dequantizers are bit-exact with gguf-py's,
tests/quant) and, where the reference build is here, against llama-perplexity's logits of the same file.

Bounds: the lattice kernels take the activations as Q8_K (int8 a 256 block) where the F32 twin keeps them float,
as llama.cpp's CPU kernels do too. Measured on these files (AMD EPYC Zen 3, AVX2): a mean KL-divergence of
1.4-2.1e-4 against the twin and 0.8-1.3e-4 against llama.cpp, the top token the same at 92-99% of the 93
positions. An IQ2_XXS kernel whose eighth vector took its scale one step too large gave 4.4e-3 and 74%; another
model's logits give 1.05 and 0%."""
import os
import re
import subprocess
import sys

import pytest

from conftest import LLAMA_REF_BIN, ROOT, TEST_DATA, run_tandem

TYPES = ["IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M"]
MAX_MEAN_KLD = 1e-3
MIN_SAME_TOP = 85.0  # percent (93 scored tokens)
PPL_ARGS = ["-c", "64", "--chunks", "3", "-t", "2"]


@pytest.fixture(scope="module")
def f32_model(tmp_path_factory):
    if not (TEST_DATA / "ggml-vocab-llama-spm.gguf").exists():
        pytest.skip("llama-spm vocabulary not fetched (scripts/fetch-test-data.sh)")
    out = tmp_path_factory.mktemp("lattice") / "tiny-llama-F32.gguf"
    run_tandem("synth", "--preset", "tiny-llama", "--type", "F32", "-o", out, check=True)
    return out


def kld_stats(out):
    stats = {}
    for label, key in [("Mean    KLD", "kld"), ("Same top p", "same_top")]:
        m = re.search(re.escape(label) + r"\s*:\s*(-?[0-9.]+)", out)
        assert m, f"no '{label}' in:\n{out[-3000:]}"
        stats[key] = float(m.group(1))
    return stats


def against_base(model, base, *extra):
    proc = run_tandem("perplexity", "-m", model, "--kl-divergence-base", base, "--kl-divergence", "-t", "2", *extra,
                      check=True)
    return kld_stats(proc.stdout)


@pytest.mark.parametrize("qtype", TYPES)
def test_lattice_model_matches_its_dequantized_twin(tmp_path, f32_model, kjv_20k, qtype):
    lattice, twin, base = tmp_path / f"{qtype}.gguf", tmp_path / "twin.gguf", tmp_path / "twin-base.bin"
    subprocess.run([sys.executable, str(ROOT / "bench" / "lattice_model.py"), str(f32_model), str(lattice),
                    "--type", qtype], check=True, capture_output=True)
    run_tandem("quantize", "--allow-requantize", lattice, twin, "F32", check=True)
    run_tandem("perplexity", "-m", twin, "-f", kjv_20k, *PPL_ARGS, "--kl-divergence-base", base, check=True)
    # 64-token micro-batches take the 16-row panels (prefill), 8-token ones the row kernels (decode's)
    for ub in ["64", "8"]:
        s = against_base(lattice, base, "-ub", ub)
        assert s["kld"] < MAX_MEAN_KLD and s["same_top"] >= MIN_SAME_TOP, f"{qtype} -ub {ub} vs its F32 twin: {s}"
    if (LLAMA_REF_BIN / "llama-perplexity").exists():
        ref = tmp_path / "llama-base.bin"
        proc = subprocess.run([str(LLAMA_REF_BIN / "llama-perplexity"), "-m", str(lattice), "-f", str(kjv_20k),
                               *PPL_ARGS, "--kl-divergence-base", str(ref)], capture_output=True, text=True,
                              env=dict(os.environ, LD_LIBRARY_PATH=str(LLAMA_REF_BIN)), timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        for ub in ["64", "8"]:
            s = against_base(lattice, ref, "-ub", ub)
            assert s["kld"] < MAX_MEAN_KLD and s["same_top"] >= MIN_SAME_TOP, f"{qtype} -ub {ub} vs llama.cpp: {s}"
