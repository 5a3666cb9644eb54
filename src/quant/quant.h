// Public entry points of the scalar reference (de)quantizers, one call per row of any weight format.
// Per-format functions and block layouts are in formats.h and blocks.h; bit-exactness notes in each .cpp.
#pragma once

#include <cstdint>

#include "gguf/types.h"

namespace tandem::quant {

// Formats with a reference here: F32 F16 BF16 Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K..Q6_K Q8_K IQ4_NL IQ4_XS, and
// for dequantization only the lattice i-quants IQ2_XXS IQ2_XS IQ2_S IQ3_XXS IQ3_S IQ1_S IQ1_M (llama.cpp
// quantizes those from an importance matrix, which Tandem does not compute).
bool can_dequantize(WeightType t);
bool can_quantize(WeightType t);
bool is_lattice_iquant(WeightType t);
// n elements of a lattice i-quant t (is_lattice_iquant) at dst: random codes and signs under the half scale d
// (seed: a splitmix64 state), for what timing needs in place of quantize_row (tandem probe).
void random_lattice_row(WeightType t, uint64_t seed, float d, void* dst, int64_t n);

// n elements (a multiple of block_size(t)) from row_bytes(t, n) bytes at src; src aligned to 4 bytes
// or to the block's natural alignment. Bit-exact with gguf-py's numpy dequantizers (float32 math,
// same operation order). Aborts (TANDEM_CHECK) on a format without a reference or a bad n.
void dequantize_row(WeightType t, const void* src, float* dst, int64_t n);

// n elements into row_bytes(t, n) bytes at dst, byte-identical to llama.cpp's reference quantizers
// without an importance matrix (what ggml_quantize_chunk writes with imatrix == NULL). src must be
// finite for the quantized formats (NaN/inf give unspecified blocks, as in ggml). No allocation; safe
// to call from many threads on disjoint rows. Single-thread speed on this machine's cores, Melem/s:
// F16 220, Q4_0 440, Q8_0 265, Q2_K..Q6_K 17-100, IQ4_NL/IQ4_XS 8.5 (their scale search is the cost).
void quantize_row(WeightType t, const float* src, void* dst, int64_t n);

// n elements of a KV cache row into row_bytes(t, n) bytes at dst. Q4_0 Q4_1 Q5_0 Q5_1 IQ4_NL: the same
// block format, but each block's scale (and min) is the best of about ten candidates around the
// reference's choice, each refit by least squares, by squared error of the dequantized values (the
// stored scale's fp16 rounding included): never a larger error in any block than quantize_row's, 11-21%
// less on Gaussian rows (IQ4_NL 5%). llama.cpp's cache stores quantize_row_*_ref blocks; at 4 bits
// their error is what a Gemma 3 cache loses most to (issue 19). Q8_0 and the float types: as
// quantize_row (at 8 bits a search gained nothing measurable). Single-thread CPU time on this machine:
// about 35 Melem/s for Q4_0/Q5_0, 20 for Q4_1/Q5_1, 5 for IQ4_NL (its reference block included), paid
// once per token stored (Gemma 3 270M: 9,216 elements a token). Same contract as quantize_row otherwise.
void quantize_row_kv(WeightType t, const float* src, void* dst, int64_t n);

}  // namespace tandem::quant
