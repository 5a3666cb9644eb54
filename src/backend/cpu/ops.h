// Per-ISA kernels of the CPU backend's non-matmul ops (cpu_backend.cpp drives them): one table per
// level, filled generic-first like the matmul table (kernel_table.h), each entry run once per block of
// rows or one attention task, never per element. The generic entries are the reference semantics.
#pragma once

#include <cstdint>

#include "backend/cpu/kernels.h"

namespace tandem::cpu {

// One attention task: n_q query heads that share one KV head, one query token, against the listed
// cells. ggml's rounding is kept: q is rounded to f16 before the K dot products, and the softmax
// probabilities to f16 before they weight V.
struct AttnTask {
  const float* q = nullptr;  // n_q heads, head_dim_k floats each, contiguous
  float* out = nullptr;      // n_q heads, head_dim_v floats each, contiguous
  int n_q = 0, dk = 0, dv = 0;
  float scale = 1, softcap = 0;
  WeightType k_type = WeightType::F16, v_type = WeightType::F16;  // the ISA entries take F16 only; generic any
  const void* k = nullptr;  // cache base; row of cell c starts at element c * k_stride + k_offset
  const void* v = nullptr;
  int64_t k_stride = 0, v_stride = 0;  // elements per cache row (all KV heads)
  int64_t k_offset = 0, v_offset = 0;  // this KV head's first element in a row
  const int32_t* cells = nullptr;      // the visible cells, n_cells of them
  int64_t n_cells = 0;
  float* scratch = nullptr;  // n_q * (dk + n_cells) + dk + dv floats
  // Converts K/V rows of types other than F16 (the backend passes its best kv_to_f32; null: scalar).
  void (*to_f32)(WeightType type, const void* src, float* dst, int64_t n) = nullptr;
};

// One tile of flash attention: n_rows query rows against n_cells K/V rows already converted to f32,
// updating each row's running maximum m, sum l and unnormalized output o (online softmax). Rows are
// token-major: row r belongs to bias row r / rows_per_bias. No score matrix beyond this tile exists.
struct FlashTile {
  const float* q = nullptr;     // n_rows x dk
  const float* k = nullptr;     // n_cells x dk
  const float* v = nullptr;     // n_cells x dv
  const float* bias = nullptr;  // (n_rows / rows_per_bias) x n_cells: 0 (visible) or -inf (masked)
  int n_rows = 0, rows_per_bias = 1, n_cells = 0, dk = 0, dv = 0;
  float scale = 1, softcap = 0;  // score = softcap > 0 ? softcap * tanh(q.k * scale / softcap) : q.k * scale
  float* m = nullptr;            // n_rows, -inf before the first tile
  float* l = nullptr;            // n_rows, 0 before the first tile
  float* o = nullptr;            // n_rows x dv, 0 before the first tile
  float* s = nullptr;            // scratch: n_rows x n_cells
};

struct CpuOps {
  Isa isa = Isa::Generic;
  // y = x / sqrt(mean(x^2) + eps) (* w when w is not null) per row of n; squares summed in double.
  void (*rms_norm)(const float* x, const float* w, int64_t n_rows, int64_t n, float eps, float* y) = nullptr;
  // Rotates n_head heads of head_dim floats in place by one token's table cs of n_dims floats:
  // Normal (adjacent pairs) cs = c0 s0 c1 s1 ..., NeoX (pairs i, i + n_dims/2) cs = c0 c1 ... s0 s1 ...
  void (*rope)(float* x, int n_head, int head_dim, int n_dims, bool neox, const float* cs) = nullptr;
  void (*attention)(const AttnTask& t) = nullptr;
  void (*swiglu)(const float* gate, const float* up, int64_t n, float* out) = nullptr;
  // GELU through ggml's f16 table (65536 entries, readable up to index 65536 inclusive).
  void (*geglu)(const float* gate, const float* up, int64_t n, float* out, const uint16_t* table) = nullptr;
  void (*add)(const float* a, const float* b, int64_t n, float* out) = nullptr;
  void (*f32_to_f16)(const float* x, uint16_t* y, int64_t n) = nullptr;  // round to nearest even
  // n elements of a KV cache row (from a block boundary) to f32: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1
  // IQ4_NL, bit-identical to src/quant's dequantize_row.
  void (*kv_to_f32)(WeightType type, const void* src, float* dst, int64_t n) = nullptr;
  // The same for n elements of each listed cell: row c starts at base + cells[i] * row_stride bytes;
  // output rows are n floats apart. One call per tile, so the type dispatch is not per row.
  void (*kv_gather_f32)(WeightType type, const void* base, size_t row_stride, const int32_t* cells, int n_cells,
                        int64_t n, float* dst) = nullptr;
  void (*flash_tile)(const FlashTile& t) = nullptr;
};

const CpuOps& ops();             // the best level (best_isa())

// q (n floats; a multiple of 32 for quantized types) as ggml's dot products read it against K of
// k_type, into out: through f16 for F16 (ggml's flash path keeps f32 only in its tiled
// prefill of 64+ tokens), bf16 for BF16, Q8_0 (the quantized types' activation format) otherwise.
void round_like_activation(const CpuOps& ops, WeightType k_type, const float* q, float* out, int64_t n);
const CpuOps& ops_for(Isa isa);  // a given supported level; entries fall back to lower levels

namespace generic { void fill_ops(CpuOps& o); void fill_flash_ops(CpuOps& o); }  // generic/ops.cpp, flash.cpp
namespace avx2 { void fill_ops(CpuOps& o); }                                    // avx2/ops.cpp
namespace avx512 { void fill_ops(CpuOps& o); void fill_flash_ops(CpuOps& o); }  // avx512/ops.cpp

}  // namespace tandem::cpu
