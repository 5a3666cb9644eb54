"""tandem synth output read by the independent `gguf` package (and loaded by llama.cpp when its
reference build is present): metadata, tensor names, shapes and types, and weight statistics."""
import subprocess

import numpy as np
import pytest
from gguf import GGUFReader, GGMLQuantizationType
from gguf.quants import dequantize

from conftest import LLAMA_REF_BIN, STORIES, TEST_DATA, run_tandem


def synth(tmp_path, mix, *extra):
    out = tmp_path / f"tiny-{mix}.gguf"
    run_tandem("synth", "--preset", "tiny-llama", "--type", mix, "-o", out, "-t", "2", *extra, check=True)
    return out


def field(reader, key):
    f = reader.get_field(key)
    assert f is not None, key
    return f.contents()


@pytest.mark.parametrize("mix", ["F16", "Q8_0", "Q4_K_M", "Q6_K", "Q4_0", "IQ4_XS"])
def test_gguf_package_reads_synth_model(tmp_path, tandem_bin, mix):
    path = synth(tmp_path, mix)
    r = GGUFReader(path)
    assert field(r, "general.architecture") == "llama"
    assert field(r, "llama.block_count") == 2
    assert field(r, "llama.embedding_length") == 256
    vocab = GGUFReader(TEST_DATA / "ggml-vocab-llama-spm.gguf")
    assert field(r, "tokenizer.ggml.tokens") == field(vocab, "tokenizer.ggml.tokens")
    names = {t.name: t for t in r.tensors}
    assert len(names) == 3 + 2 * 9
    emb = names["token_embd.weight"]
    assert list(emb.shape) == [256, 32000]  # gguf lists dimensions innermost first
    values = dequantize(emb.data, emb.tensor_type).astype(np.float64)
    assert np.isfinite(values).all()
    # token_embd is drawn with std 0.02; quantization moves it a little.
    assert abs(values.std() - 0.02) < 0.003, values.std()
    assert abs(values.mean()) < 1e-3
    norm = names["blk.0.attn_norm.weight"]
    assert norm.tensor_type == GGMLQuantizationType.F32
    assert np.all(dequantize(norm.data, norm.tensor_type) == 1.0)


def test_same_seed_same_file_any_thread_count(tmp_path, tandem_bin):
    a = tmp_path / "a.gguf"
    b = tmp_path / "b.gguf"
    run_tandem("synth", "--preset", "tiny-llama", "--type", "Q4_K_M", "-o", a, "-t", "1", check=True)
    run_tandem("synth", "--preset", "tiny-llama", "--type", "Q4_K_M", "-o", b, "-t", "2", check=True)
    assert a.read_bytes() == b.read_bytes()
    c = tmp_path / "c.gguf"
    run_tandem("synth", "--preset", "tiny-llama", "--type", "Q4_K_M", "-o", c, "--seed", "7", check=True)
    assert a.read_bytes() != c.read_bytes()


def test_split_output_parts_read_by_gguf_package(tmp_path, tandem_bin):
    out = tmp_path / "split.gguf"
    run_tandem("synth", "--preset", "tiny-llama", "--type", "Q8_0", "-o", out, "--split-max-tensors", "8",
               check=True)
    parts = sorted(tmp_path.glob("split-*-of-*.gguf"))
    assert [p.name for p in parts] == [f"split-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    total = 0
    for i, p in enumerate(parts):
        r = GGUFReader(p)
        assert field(r, "split.no") == i
        assert field(r, "split.count") == 3
        assert field(r, "split.tensors.count") == 21
        total += len(r.tensors)
    assert total == 21
    info = run_tandem("info", "-m", parts[0], "--json", check=True)
    assert '"tensors"' in info.stdout


@pytest.mark.parametrize("preset", ["Qwen2.5-0.5B", "Qwen3-0.6B", "Llama-3.2-1B"])
def test_real_presets_have_real_shapes(tmp_path, tandem_bin, preset):
    out = tmp_path / "one-layer.gguf"
    run_tandem("synth", "--preset", preset, "--layers", "1", "--type", "Q8_0", "-o", out, check=True)
    r = GGUFReader(out)
    names = {t.name: t for t in r.tensors}
    q = names["blk.0.attn_q.weight"]
    expected = {"Qwen2.5-0.5B": [896, 896], "Qwen3-0.6B": [1024, 2048], "Llama-3.2-1B": [2048, 2048]}[preset]
    assert list(q.shape) == expected
    if preset == "Qwen2.5-0.5B":
        assert "blk.0.attn_q.bias" in names
    if preset == "Qwen3-0.6B":
        assert "blk.0.attn_q_norm.weight" in names
    if preset == "Llama-3.2-1B":
        freqs = names["rope_freqs.weight"].data
        assert len(freqs) == 32 and freqs[0] == 1.0 and freqs[-1] == 32.0
    verify = run_tandem("verify", "-m", out)
    assert verify.returncode == 0, verify.stdout + verify.stderr


@pytest.mark.skipif(not (LLAMA_REF_BIN / "llama-completion").exists(), reason="llama.cpp reference not built")
@pytest.mark.parametrize("mix,split", [("Q4_K_M", False), ("Q8_0", False), ("Q6_K", True)])
def test_llama_cpp_loads_and_runs_synth_model(tmp_path, tandem_bin, mix, split):
    path = synth(tmp_path, mix, *(["--split-max-tensors", "7"] if split else []))
    if split:
        path = tmp_path / f"tiny-{mix}-00001-of-00003.gguf"
    proc = subprocess.run([str(LLAMA_REF_BIN / "llama-completion"), "-m", str(path), "-p", "Once upon a time",
                           "-n", "8", "-no-cnv", "--temp", "0", "-t", "2"],
                          capture_output=True, timeout=300)  # bytes: random weights emit invalid UTF-8
    assert proc.returncode == 0, proc.stderr[-3000:].decode(errors="replace")


def test_info_reports_tensors_totals_and_hparams(tandem_bin):
    import json
    # stories260K or its stand-in: the same shapes but the vocabulary (512 or 32000 tokens)
    proc = run_tandem("info", "-m", STORIES, "--json", check=True)
    info = json.loads(proc.stdout)
    n_vocab = len(GGUFReader(STORIES).get_field("tokenizer.ggml.tokens").data)
    assert len(info["tensors"]) == 48
    assert info["totals_by_type"]["F32"]["tensors"] == 48
    assert info["totals_by_type"]["F32"]["bytes"] == sum(t["bytes"] for t in info["tensors"])
    assert info["hparams"]["n_layer"] == 5 and info["hparams"]["n_head_kv"] == 4
    emb = next(t for t in info["tensors"] if t["name"] == "token_embd.weight")
    assert emb["shape"] == [n_vocab, 64] and emb["type"] == "F32"
    assert info["metadata"]["tokenizer.ggml.tokens"]["count"] == n_vocab  # long arrays summarized
    text = run_tandem("info", "-m", STORIES, check=True).stdout
    assert "totals by layer" in text and "blk.4" in text and f"string[{n_vocab}]" in text


@pytest.mark.parametrize("preset,layers", [("tiny-deepseek-v3", 3), ("tiny-deepseek-v2-lite", 4),
                                           ("tiny-qwen3moe", 2)])
def test_moe_presets_load_in_both_engines(tmp_path, tandem_bin, preset, layers):
    """deepseek2 and qwen3moe synth files, cut to any layer count and quantized, as the gguf package reads
    them, run by Tandem and (where built) llama.cpp; their logits are compared in logits_test.cpp. A
    V2-Lite file below 26 layers carries q_lora_rank 0: llama.cpp tells V2-Lite by its layer count when
    the key is absent."""
    out = tmp_path / f"{preset}.gguf"
    run_tandem("synth", "--preset", preset, "--layers", str(layers), "--type", "Q8_0", "-o", out, "-t", "2", check=True)
    r = GGUFReader(out)
    arch = field(r, "general.architecture")
    assert field(r, f"{arch}.block_count") == layers
    names = {t.name: t for t in r.tensors}
    assert list(names["blk.1.ffn_gate_exps.weight"].shape)[2] == field(r, f"{arch}.expert_count")
    if preset == "tiny-deepseek-v2-lite":
        assert field(r, "deepseek2.attention.q_lora_rank") == 0 and "blk.0.attn_q.weight" in names
    prompt = ["-p", "The capital of France is", "-n", "8", "--temp", "0", "-t", "2"]
    # bytes: random weights emit invalid UTF-8
    ours = subprocess.run([str(tandem_bin), "run", "-m", str(out), *prompt], capture_output=True, timeout=300)
    assert ours.returncode == 0, ours.stderr[-3000:].decode(errors="replace")
    if (LLAMA_REF_BIN / "llama-completion").exists():
        proc = subprocess.run([str(LLAMA_REF_BIN / "llama-completion"), "-m", str(out), "-no-cnv", *prompt],
                              capture_output=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:].decode(errors="replace")


@pytest.mark.parametrize("preset", ["tiny-deepseek-v3", "tiny-deepseek-v2-lite", "tiny-qwen3moe"])
def test_moe_mix_types_are_those_of_quantizing_the_f16_file(tmp_path, tandem_bin, preset):
    # llama.cpp's mix rules read the expert count (8 experts have rules of their own; with experts, a
    # ffn_down's layer comes from its name, not from a count that shared experts advance too). synth
    # must type each tensor as quantizing the same model would: tandem quantize (itself checked against
    # llama-quantize in test_quantize.py), and llama-quantize when the reference build is here.
    # The types do not depend on the tokenizer: the smallest vocabulary keeps GGUFReader's parse of the files short
    # (8 s a file with Qwen's 151,936 tokens and merges).
    f16, direct, quantized = tmp_path / "f16.gguf", tmp_path / "direct.gguf", tmp_path / "quantized.gguf"
    vocab = ["--vocab", TEST_DATA / "ggml-vocab-llama-spm.gguf"]
    run_tandem("synth", "--preset", preset, "--type", "F16", *vocab, "-o", f16, check=True)
    run_tandem("synth", "--preset", preset, "--type", "Q4_K_M", *vocab, "-o", direct, check=True)
    run_tandem("quantize", f16, quantized, "Q4_K_M", check=True)
    references = [quantized]
    if (LLAMA_REF_BIN / "llama-quantize").exists():
        references.append(tmp_path / "llama.gguf")
        subprocess.run([str(LLAMA_REF_BIN / "llama-quantize"), str(f16), str(references[-1]), "Q4_K_M"], check=True,
                       capture_output=True)
    ours = {t.name: t.tensor_type for t in GGUFReader(direct).tensors}
    for ref in references:
        theirs = {t.name: t.tensor_type for t in GGUFReader(ref).tensors}
        assert ours.keys() == theirs.keys()
        differ = [f"{n}: {ours[n].name} vs {theirs[n].name}" for n in theirs if ours[n] != theirs[n]]
        assert not differ, f"{ref.name}: {differ[:5]}"
