// Helpers shared by the CPU op tests (ops_test.cpp, attention_test.cpp): the ISA levels this host
// runs, and seeded gaussian data.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "backend/cpu/kernels.h"

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

}  // namespace tandem::cpu::test
