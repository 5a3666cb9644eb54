// Random weight rows for the kernel benchmarks: random code bytes with every fp16 scale field set to a
// small finite value, so no kernel runs on inf/NaN scales. Shared by matmul_bench and amx_bench.
#pragma once

#include <cstring>
#include <random>
#include <vector>

#include "gguf/types.h"
#include "quant/fp16.h"
#include "quant/quant.h"

namespace tandem::cpu::bench {

// Byte offsets of the fp16 scale fields in one block.
inline std::vector<int> half_fields(WeightType t) {
  using WT = WeightType;
  switch (t) {
    case WT::Q4_1: case WT::Q5_1: case WT::Q4_K: case WT::Q5_K: return {0, 2};
    case WT::Q2_K: return {80, 82};
    case WT::Q3_K: return {108};
    case WT::Q6_K: return {208};
    default: return {0};
  }
}

inline std::vector<uint8_t> random_weights(WeightType t, int64_t n_in, int64_t n_rows) {
  std::vector<uint8_t> w(row_bytes(t, n_in) * n_rows + 64);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-0.1f, 0.1f);
  if (t == WeightType::F32 || t == WeightType::F16 || t == WeightType::BF16) {
    const size_t es = t == WeightType::F32 ? 4 : 2;
    for (size_t i = 0; i + es <= w.size(); i += es) {
      const float v = u(rng);
      const uint16_t h = t == WeightType::F16 ? quant::f32_to_fp16(v) : quant::f32_to_bf16(v);
      if (es == 4) std::memcpy(&w[i], &v, 4);
      else std::memcpy(&w[i], &h, 2);
    }
    return w;
  }
  if (quant::is_lattice_iquant(t)) {  // IQ1_M keeps its half scale in nibbles: the library's own random rows
    for (int64_t r = 0; r < n_rows; ++r)
      quant::random_lattice_row(t, uint64_t(r), 0.05f, &w[row_bytes(t, n_in) * r], n_in);
    return w;
  }
  for (auto& b : w) b = uint8_t(rng());
  for (size_t off = 0; off + block_bytes(t) <= w.size(); off += block_bytes(t))
    for (int f : half_fields(t)) {
      const uint16_t h = quant::f32_to_fp16(u(rng));
      std::memcpy(&w[off + f], &h, 2);
    }
  return w;
}

}  // namespace tandem::cpu::bench
