// Helpers shared by the CPU op and matmul tests (ops_test.cpp, attention_test.cpp, batch_invariance_test.cpp,
// repack_test.cpp): the ISA levels this host runs, seeded gaussian data, and seeded quantized matrices.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/kernels.h"
#include "quant/quant.h"

namespace tandem::cpu::test {

inline std::vector<Isa> isas() {
  std::vector<Isa> out;
  for (Isa i : {Isa::Generic, Isa::Avx2, Isa::Avx512})
    if (isa_supported(i)) out.push_back(i);
  return out;
}

inline std::vector<float> random_floats(size_t n, uint32_t seed, float sd = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, sd);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// n_rows quantized rows of n_in gaussian weights, one outlier each as real rows have.
struct Matrix {
  WeightType type;
  int64_t n_in, n_rows;
  std::vector<uint8_t> data;
  size_t stride() const { return row_bytes(type, n_in); }
  Weight weight() const {
    Weight w;
    w.name = "m";
    w.type = type;
    w.shape = {n_rows, n_in};
    w.data = data.data();
    w.row_stride = stride();
    w.size_bytes = data.size();
    return w;
  }
};

inline Matrix make_matrix(WeightType type, int64_t n_in, int64_t n_rows, uint32_t seed) {
  Matrix m{type, n_in, n_rows, std::vector<uint8_t>(row_bytes(type, n_in) * size_t(n_rows))};
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 0.05f);
  std::vector<float> row(static_cast<size_t>(n_in));
  for (int64_t r = 0; r < n_rows; ++r) {
    for (float& v : row) v = normal(rng);
    row[rng() % size_t(n_in)] = 1.5f;
    quant::quantize_row(type, row.data(), m.data.data() + size_t(r) * m.stride(), n_in);
  }
  return m;
}

}  // namespace tandem::cpu::test
