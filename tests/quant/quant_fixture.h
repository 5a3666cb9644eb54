// Loader for the fixtures scripts/fixtures/gen_quant.py writes into tests/fixtures/quant (layout there).
// TANDEM_QUANT_FIXTURE_DIR overrides the directory, e.g. for a larger locally generated set.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "gguf/types.h"

namespace tandem::quant::testing {

struct QuantFixture {
  uint32_t type_id = 0, block_size = 0, block_bytes = 0;
  uint32_t n_qrows = 0, row_len = 0, n_dblocks = 0;
  uint32_t quant_ref_kind = 0;  // 0 none, 1 gguf-py/numpy, 2 libggml (llama.cpp)
  std::vector<float> inputs;    // [n_qrows, row_len]
  std::vector<uint8_t> quantized;  // reference bytes of inputs
  std::vector<uint8_t> blocks;     // [n_dblocks, block_bytes] random, extreme scales
  std::vector<float> dequantized;  // gguf-py's dequantization of blocks
  std::string error;               // non-empty when loading failed
};

inline std::string quant_fixture_dir() {
  if (const char* dir = std::getenv("TANDEM_QUANT_FIXTURE_DIR")) return dir;
  return std::string(TANDEM_SOURCE_DIR) + "/tests/fixtures/quant";
}

inline QuantFixture load_quant_fixture(WeightType t) {
  QuantFixture fx;
  std::string name(type_name(t));
  for (char& c : name) c = char(std::tolower(static_cast<unsigned char>(c)));
  const std::string path = quant_fixture_dir() + "/" + name + ".bin";
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) {
    fx.error = path + ": cannot open";
    return fx;
  }
  char magic[8];
  uint32_t h[7];
  bool ok = std::fread(magic, 1, 8, f) == 8 && std::memcmp(magic, "TQFIX001", 8) == 0 &&
            std::fread(h, 4, 7, f) == 7;
  if (ok) {
    fx.type_id = h[0], fx.block_size = h[1], fx.block_bytes = h[2];
    fx.n_qrows = h[3], fx.row_len = h[4], fx.n_dblocks = h[5], fx.quant_ref_kind = h[6];
    const size_t n_in = size_t(fx.n_qrows) * fx.row_len;
    fx.inputs.resize(n_in);
    fx.quantized.resize(n_in / fx.block_size * fx.block_bytes);
    fx.blocks.resize(size_t(fx.n_dblocks) * fx.block_bytes);
    fx.dequantized.resize(size_t(fx.n_dblocks) * fx.block_size);
    ok = std::fread(fx.inputs.data(), 4, n_in, f) == n_in &&
         std::fread(fx.quantized.data(), 1, fx.quantized.size(), f) == fx.quantized.size() &&
         std::fread(fx.blocks.data(), 1, fx.blocks.size(), f) == fx.blocks.size() &&
         std::fread(fx.dequantized.data(), 4, fx.dequantized.size(), f) == fx.dequantized.size();
  }
  std::fclose(f);
  if (!ok) fx.error = path + ": truncated or not a TQFIX001 file";
  else if (fx.type_id != uint32_t(t) || fx.block_bytes != block_bytes(t)) fx.error = path + ": wrong type";
  return fx;
}

// Same bits, or both NaN (NaN payloads and signs differ between numpy and C on x86).
inline bool same_float(float a, float b) {
  if (a != a && b != b) return true;
  return std::memcmp(&a, &b, sizeof a) == 0;
}

}  // namespace tandem::quant::testing
