"""tandem quantize: output read by the gguf package, close to its source, byte-identical to
llama-quantize's output when the reference build is present, and clear errors on bad requests."""
import subprocess

import numpy as np
import pytest
from gguf import GGUFReader, GGMLQuantizationType as T
from gguf.quants import dequantize

from conftest import LLAMA_REF_BIN, run_tandem


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
