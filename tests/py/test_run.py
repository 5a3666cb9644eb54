"""tandem run and bench end to end on real models: output, determinism, and bad input (always a clear
error and exit code 1, never a crash)."""
import numpy as np
import pytest
from gguf import GGUFWriter

from conftest import STORIES, run_tandem



def test_greedy_run_is_deterministic_and_reports_speed(tandem_bin):
    a = run_tandem("run", "-m", STORIES, "-p", "Once upon a time", "-n", "24", "--temp", "0", check=True)
    b = run_tandem("run", "-m", STORIES, "-p", "Once upon a time", "-n", "24", "--temp", "0", "-t", "1", check=True)
    assert a.stdout == b.stdout
    assert a.stdout.startswith("Once upon a time") and len(a.stdout) > len("Once upon a time") + 20
    assert "tokens/s" in a.stderr and "kv:" in a.stderr and "matmul kernels:" in a.stderr


def test_run_and_serve_give_the_same_greedy_text(tandem_bin):
    # One engine loop (src/engine/scheduler) behind both: the same prompt, the same tokens.
    from serve_util import Server
    prompt = "Once upon a time"
    run = run_tandem("run", "-m", STORIES, "-p", prompt, "-n", "16", "--temp", "0", "--ignore-eos", "-t", "2",
                     "--batch-invariant", "on", check=True)
    s = Server(STORIES, "-np", "2", "--temp", "0", "--batch-invariant", "on")
    try:
        status, r = s.request("POST", "/completion", {"prompt": prompt, "n_predict": 16, "ignore_eos": True})
    finally:
        assert s.stop() == 0
    assert status == 200 and r["tokens_predicted"] == 16 and r["content"]
    assert run.stdout == prompt + r["content"]


def test_same_seed_same_sample(tandem_bin):
    args = ("run", "-m", STORIES, "-p", "Once upon a time", "-n", "24", "--temp", "1.0", "--seed")
    a = run_tandem(*args, "7", check=True)
    b = run_tandem(*args, "7", check=True)
    assert a.stdout == b.stdout


def test_ngl_without_gpu_warns_and_runs(tandem_bin):
    proc = run_tandem("run", "-m", STORIES, "-p", "Once", "-n", "4", "-ngl", "99", check=True)
    assert "no offload device (CUDA: " in proc.stderr


def test_a_context_past_the_trained_one_warns(tandem_bin):
    # One token past the trained context warns, as llama.cpp does; the trained context itself does not.
    from gguf import GGUFReader
    field = GGUFReader(STORIES).fields["llama.context_length"]
    trained = int(field.parts[field.data[0]][0])
    longer = run_tandem("run", "-m", STORIES, "-p", "Once", "-n", "2", "-c", trained + 1, check=True)
    assert f"warning: -c {trained + 1} is longer than the {trained} tokens the model was trained on" in longer.stderr
    fits = run_tandem("run", "-m", STORIES, "-p", "Once", "-n", "2", "-c", trained, check=True)
    assert "trained on" not in fits.stderr


@pytest.mark.parametrize("args,needle", [
    (["-n", "-3"], "out of range"),
    (["--temp", "hot"], "not a number"),
    (["--top-p", "1.5"], "top_p"),
    (["--frobnicate"], "unknown flag"),
    (["-c", "4"], "context"),                      # the prompt does not fit
    (["-ctk", "q4_0"], "not a multiple"),          # stories260K's heads have 8 dimensions
    (["-ctv", "q4_k"], "not a KV cache type"),
    (["-ctk", "fp8"], "not a KV cache type"),
    (["-fa", "sometimes"], "-fa: 'sometimes' is not on, off or auto"),
    (["-l", "notatoken"], "TOKEN+BIAS"),
])
def test_bad_flags(tandem_bin, args, needle):
    proc = run_tandem("run", "-m", STORIES, "-p", "Once upon a time there was", *args)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "error:" in proc.stderr and needle in proc.stderr, proc.stderr


@pytest.mark.parametrize("fa", [[], ["-fa"], ["-fa", "on"], ["-fa", "off"], ["-fa", "auto"]])
def test_flash_attention_flag(tandem_bin, fa):
    proc = run_tandem("run", "-m", STORIES, "-p", "Once upon a time", "-n", "8", "--temp", "0", *fa, check=True)
    if fa in ([], ["-fa", "auto"]):  # on where the CPU has AVX-512
        assert "flash attention on" in proc.stderr or "flash attention off" in proc.stderr, proc.stderr
    else:
        state = "off" if fa == ["-fa", "off"] else "on"
        assert f"flash attention {state}" in proc.stderr, proc.stderr


def write_model(path, arch, drop=None):
    """A tiny model of `arch` shaped like stories260K, optionally missing one tensor."""
    w = GGUFWriter(str(path), arch)
    w.add_context_length(64)
    w.add_embedding_length(64)
    w.add_block_count(1)
    w.add_feed_forward_length(128)
    w.add_head_count(4)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"t{i}" for i in range(32)])
    w.add_token_scores([0.0] * 32)
    w.add_token_types([1] * 32)
    shapes = {"token_embd.weight": (32, 64), "output_norm.weight": (64,), "blk.0.attn_norm.weight": (64,),
              "blk.0.attn_q.weight": (64, 64), "blk.0.attn_k.weight": (64, 64), "blk.0.attn_v.weight": (64, 64),
              "blk.0.attn_output.weight": (64, 64), "blk.0.ffn_norm.weight": (64,),
              "blk.0.ffn_gate.weight": (128, 64), "blk.0.ffn_up.weight": (128, 64), "blk.0.ffn_down.weight": (64, 128)}
    for name, shape in shapes.items():
        if name != drop:
            w.add_tensor(name, np.ones(shape, dtype=np.float32) * 0.01)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_unsupported_architecture_lists_supported(tmp_path, tandem_bin):
    p = tmp_path / "mamba.gguf"
    write_model(p, "mamba")
    proc = run_tandem("run", "-m", p, "-p", "x", "-n", "1")
    assert proc.returncode == 1
    assert "architecture 'mamba' is not supported" in proc.stderr and "gemma3" in proc.stderr


def test_missing_tensor_is_named(tmp_path, tandem_bin):
    ok = tmp_path / "ok.gguf"
    write_model(ok, "llama")
    run_tandem("run", "-m", ok, "-p", "t1", "-n", "2", check=True)
    p = tmp_path / "missing.gguf"
    write_model(p, "llama", drop="blk.0.ffn_up.weight")
    proc = run_tandem("run", "-m", p, "-p", "x", "-n", "1")
    assert proc.returncode == 1 and "'blk.0.ffn_up.weight' is missing" in proc.stderr


def test_bench_markdown_and_json(tandem_bin):
    md = run_tandem("bench", "-m", STORIES, "-p", "32", "-n", "8", "-r", "2", check=True).stdout
    assert "| pp32 |" in md and "| tg8 |" in md
    import json
    rows = json.loads(run_tandem("bench", "-m", STORIES, "-p", "32", "-n", "8", "-d", "16", "-r", "2", "-o", "json",
                                 check=True).stdout)
    assert [r["test"] for r in rows] == ["pp32 @ d16", "tg8 @ d16"]
    assert all(r["avg_ts"] > 0 and len(r["samples_ts"]) == 2 for r in rows)


def run_chat(tandem_bin, *args, stdin="Hello\n"):
    import subprocess
    proc = subprocess.run([str(tandem_bin), "run", "-m", str(STORIES), "-cnv", "-n", "4", "--temp", "0", *args],
                          input=stdin, capture_output=True, text=True, timeout=120)
    assert proc.returncode >= 0, proc.stderr
    return proc


def test_chat_uses_the_named_builtin_template(tandem_bin):
    proc = run_chat(tandem_bin, "--chat-template", "chatml", "--jinja")
    assert proc.returncode == 0, proc.stderr
    assert "chat (template: built-in 'chatml')" in proc.stderr


def test_chat_template_file_and_raise_exception(tandem_bin, tmp_path):
    t = tmp_path / "t.jinja"
    t.write_text("{{ raise_exception('Conversation roles must alternate!') }}")
    proc = run_chat(tandem_bin, "--chat-template-file", t)
    assert proc.returncode == 1
    assert "error: run: chat template: Conversation roles must alternate!" in proc.stderr, proc.stderr


def test_chat_without_a_template_falls_back_to_chatml(tandem_bin):
    # stories260K has no tokenizer.chat_template and no turn tokens: llama-server's fallback, ChatML, said so.
    proc = run_chat(tandem_bin)
    assert proc.returncode == 0, proc.stderr
    assert "note: the model has no chat template: the built-in 'chatml'" in proc.stderr, proc.stderr
    assert "chat (template: built-in 'chatml')" in proc.stderr


@pytest.mark.parametrize("args,needle", [
    (["--chat-template", "chatmel"], "'chatmel' is not a built-in template"),
    (["--chat-template", "{% include 'x' %}"], "unsupported tag 'include'"),
    (["--chat-template-file", "/nonexistent.jinja"], "cannot read /nonexistent.jinja"),
])
def test_chat_template_errors(tandem_bin, args, needle):
    proc = run_chat(tandem_bin, *args)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "error:" in proc.stderr and needle in proc.stderr, proc.stderr
