#!/usr/bin/env python3
"""A model in a lattice i-quant (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S) for speed comparisons:
a copy of SRC whose block weights (attention and FFN matrices, experts included) become random blocks of the
type, their half scales chosen so the weights' RMS is about --rms (as a trained model's); embeddings, output and
norms stay as SRC has them.

llama.cpp writes these types only from an importance matrix and neither Tandem nor gguf-py quantizes them, so
random codes stand in (the speed of a matmul does not depend on the codes). Text from such a model is noise.

Usage: python bench/lattice_model.py SRC.gguf OUT.gguf --type IQ2_XXS [--seed 1] [--rms 0.03]
"""
import argparse
import re

import numpy as np
import gguf
from gguf.quants import dequantize

MATRICES = re.compile(r"blk\.\d+\.(attn_(q|k|v|output)|ffn_(gate|up|down)(_exps)?)\.weight$")


def set_scales(qtype, blocks, d):
    """Writes the half scales d (float32 per block) into the blocks."""
    halves = d.astype(np.float16).view(np.uint16)
    if qtype == gguf.GGMLQuantizationType.IQ1_M:  # the half's nibbles top four 16-bit fields
        fields = blocks[:, 48:56].copy().view(np.uint16)
        for k in range(4):
            fields[:, k] = (fields[:, k] & 0x0FFF) | (((halves >> (4 * k)) & 0xF) << 12)
        blocks[:, 48:56] = fields.view(np.uint8)
    else:
        blocks[:, 0:2] = halves.reshape(-1, 1).view(np.uint8)


def random_blocks(rng, qtype, n_rows, n_in, rms):
    block_size, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(n_rows * n_in // block_size, block_bytes), dtype=np.uint8)
    set_scales(qtype, blocks, np.ones(blocks.shape[0], np.float32))
    unit_rms = float(np.sqrt(np.mean(dequantize(blocks[:64], qtype) ** 2)))
    set_scales(qtype, blocks, rms / unit_rms * rng.uniform(0.5, 1.5, size=blocks.shape[0]).astype(np.float32))
    return blocks.reshape(n_rows, -1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--type", required=True, choices=["IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS",
                                                      "IQ3_S"])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rms", type=float, default=0.03, help="the weights' root mean square (default 0.03)")
    args = ap.parse_args()
    qtype = gguf.GGMLQuantizationType[args.type]
    rng = np.random.default_rng(args.seed)
    reader = gguf.GGUFReader(args.src)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(args.out, arch=arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue
        sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), field.types[0], sub_type=sub_type)
    tensors = []
    for t in reader.tensors:
        shape = [int(v) for v in reversed(t.shape)]  # rows first, as numpy sees them
        if MATRICES.search(t.name) and shape[-1] % 256 == 0:
            n_in = shape[-1]
            n_rows = int(np.prod(shape[:-1]))
            data = random_blocks(rng, qtype, n_rows, n_in, args.rms).reshape(*shape[:-1], -1)
            tensors.append((t.name, data, qtype))
        else:
            tensors.append((t.name, t.data, t.tensor_type))
    for name, data, tt in tensors:
        writer.add_tensor_info(name, data.shape, data.dtype, data.nbytes, tt)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for _, data, _ in tensors:
        writer.write_tensor_data(data)
    writer.close()
    n = sum(1 for _, _, tt in tensors if tt == qtype)
    print(f"{args.out}: {n} of {len(tensors)} tensors in {args.type}")


if __name__ == "__main__":
    main()
