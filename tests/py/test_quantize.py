"""tandem quantize: output read by the gguf package, close to its source, byte-identical to
llama-quantize's output when the reference build is present, and clear errors on bad requests."""
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from gguf import GGUFReader, GGMLQuantizationType as T
from gguf.quants import dequantize

from conftest import LLAMA_REF_BIN, ROOT, run_tandem

sys.path.insert(0, str(ROOT / "scripts" / "fixtures"))
import gen_quant_fallback  # noqa: E402  (the fixture's model, written the same way here)

FALLBACK = json.loads((ROOT / "tests/fixtures/mix/fallback.json").read_text())


@pytest.fixture(scope="module")
def f16_model(tmp_path_factory, tandem_bin):
    path = tmp_path_factory.mktemp("q") / "tiny-f16.gguf"
    run_tandem("synth", "--preset", "tiny-llama", "--type", "F16", "-o", path, check=True)
    return path


def tensors(path):
    return {t.name: t for t in GGUFReader(path).tensors}


@pytest.mark.parametrize("mix,main_type", [("Q4_K_M", T.Q4_K), ("Q8_0", T.Q8_0), ("Q6_K", T.Q6_K), ("IQ4_XS", T.IQ4_XS)])
def test_quantized_model_is_close_to_its_source(tmp_path, f16_model, mix, main_type):
    out = tmp_path / f"{mix}.gguf"
    proc = run_tandem("quantize", f16_model, out, mix, "2", check=True)
    assert "bits per weight" in proc.stdout
    src, dst = tensors(f16_model), tensors(out)
    assert dst["blk.0.attn_q.weight"].tensor_type == main_type
    assert dst["blk.0.attn_norm.weight"].tensor_type == T.F32
    a = dequantize(src["blk.1.ffn_up.weight"].data, src["blk.1.ffn_up.weight"].tensor_type)
    b = dequantize(dst["blk.1.ffn_up.weight"].data, dst["blk.1.ffn_up.weight"].tensor_type)
    rel = np.sqrt(np.mean((a - b) ** 2) / np.mean(a ** 2))
    assert rel < {T.Q4_K: 0.1, T.Q8_0: 0.01, T.Q6_K: 0.03, T.IQ4_XS: 0.1}[main_type], rel
    assert GGUFReader(out).get_field("general.file_type").contents() == {"Q4_K_M": 15, "Q8_0": 7, "Q6_K": 18,
                                                                          "IQ4_XS": 30}[mix]


@pytest.mark.skipif(not (LLAMA_REF_BIN / "llama-quantize").exists(), reason="llama.cpp reference not built")
@pytest.mark.parametrize("mix", ["Q4_K_M", "Q5_K_S", "Q3_K_M", "Q4_0", "IQ4_NL"])
def test_blocks_equal_llama_quantize(tmp_path, f16_model, mix):
    ours, ref = tmp_path / "ours.gguf", tmp_path / "ref.gguf"
    run_tandem("quantize", f16_model, ours, mix, "2", check=True)
    subprocess.run([str(LLAMA_REF_BIN / "llama-quantize"), str(f16_model), str(ref), mix, "2"], check=True,
                   capture_output=True)
    a, b = tensors(ours), tensors(ref)
    assert a.keys() == b.keys()
    for name in b:
        assert a[name].tensor_type == b[name].tensor_type, name
        assert a[name].data.tobytes() == b[name].data.tobytes(), f"{name}: blocks differ from llama-quantize"


def test_refuses_requantizing_unless_asked(tmp_path, f16_model):
    q = tmp_path / "q8.gguf"
    run_tandem("quantize", f16_model, q, "Q8_0", check=True)
    proc = run_tandem("quantize", q, tmp_path / "again.gguf", "Q4_K_M")
    assert proc.returncode == 1 and "--allow-requantize" in proc.stderr
    run_tandem("quantize", "--allow-requantize", q, tmp_path / "again.gguf", "Q4_K_M", check=True)
    assert tensors(tmp_path / "again.gguf")["blk.0.attn_q.weight"].tensor_type == T.Q4_K


@pytest.fixture(scope="module")
def odd_rows_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("fb") / "rows96-f16.gguf"
    gen_quant_fallback.write_model(path)
    return path


def fallback_lines(proc):
    return [l for l in proc.stdout.splitlines() if l.startswith("fallback: ") and " -> " in l]


@pytest.mark.parametrize("run", FALLBACK["runs"], ids=lambda r: "-".join([*r["flags"], r["type"]]))
def test_fallbacks_match_llama_quantize(tmp_path, odd_rows_model, run):
    """Rows of 96 (and ffn_down's 200) under --pure and overrides: the types llama-quantize wrote (the
    fixture), each fallback printed as a line."""
    out = tmp_path / "out.gguf"
    proc = run_tandem("quantize", *run["flags"], odd_rows_model, out, run["type"], "2", check=True)
    assert {n: t.tensor_type.name for n, t in tensors(out).items()} == run["types"]
    assert len(fallback_lines(proc)) == run["n_fallback"], proc.stdout
    if run["n_fallback"]:
        assert f"fallback: {run['n_fallback']} of " in proc.stdout


def test_pure_q4_k_m_never_keeps_f32(tmp_path, odd_rows_model):
    """The issue's case: --pure Q4_K_M on rows that are not a multiple of 256 used to keep every tensor
    as it was (F16 here, 16 bits per weight); now Q5_0 where 32 divides the row and F16 only where not."""
    out = tmp_path / "pure.gguf"
    proc = run_tandem("quantize", "--pure", odd_rows_model, out, "Q4_K_M", check=True)
    t = tensors(out)
    assert t["blk.0.attn_q.weight"].tensor_type == T.Q5_0 and t["blk.0.ffn_down.weight"].tensor_type == T.F16
    assert ("fallback: blk.0.attn_q.weight: rows of 96 are not a multiple of Q4_K's 256-element blocks -> Q5_0"
            in fallback_lines(proc))
    assert ("fallback: blk.0.ffn_down.weight: rows of 200 are not a multiple of Q4_K's 256-element blocks -> F16"
            in fallback_lines(proc))


def test_overrides_that_cannot_hold_the_row_fall_back(tmp_path, odd_rows_model):
    """--token-embedding-type q4_k / --output-tensor-type q6_k on 96-wide rows: llama-quantize passes these
    on unchecked and aborts ("ggml_validate_row_data: invalid size 4992 for type q6_K"); Tandem falls back
    by the same table and says so."""
    out = tmp_path / "forced.gguf"
    proc = run_tandem("quantize", "--token-embedding-type", "q4_k", "--output-tensor-type", "q6_k", odd_rows_model,
                      out, "Q8_0", check=True)
    t = tensors(out)
    assert t["token_embd.weight"].tensor_type == T.Q5_0 and t["output.weight"].tensor_type == T.Q8_0
    lines = fallback_lines(proc)
    assert "fallback: token_embd.weight: rows of 96 are not a multiple of Q4_K's 256-element blocks -> Q5_0" in lines
    assert "fallback: output.weight: rows of 96 are not a multiple of Q6_K's 256-element blocks -> Q8_0" in lines
    assert len(lines) == 4, proc.stdout  # and both ffn_down (rows of 200): Q8_0 -> F16


def test_pure_and_forced_types(tmp_path, f16_model):
    out = tmp_path / "pure.gguf"
    run_tandem("quantize", "--pure", "--output-tensor-type", "q8_0", f16_model, out, "Q4_K_M", check=True)
    t = tensors(out)
    assert t["blk.0.ffn_down.weight"].tensor_type == T.Q4_K  # the mix would give some ffn_down Q6_K
    assert t["output.weight"].tensor_type == T.Q8_0


@pytest.mark.parametrize("args,needle", [
    (["X.gguf", "Y.gguf", "Q9_Z"], "unknown type"),
    (["X.gguf", "X.gguf", "Q8_0"], "same file"),
    (["missing.gguf", "Y.gguf", "Q8_0"], "no such file"),
    (["--output-tensor-type", "q9", "X.gguf", "Y.gguf", "Q8_0"], "cannot write"),
    (["X.gguf"], "missing OUT.gguf"),
])
def test_bad_requests(tmp_path, tandem_bin, args, needle):
    proc = run_tandem("quantize", *args)
    assert proc.returncode == 1 and needle in proc.stderr, proc.stderr
