// GGML tensor types as GGUF stores them: ids, block sizes and bytes per block.
// The ids are the on-disk values of ggml's `enum ggml_type`; holes are ids ggml retired.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace tandem {

enum class WeightType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22,
  IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
  TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39, NVFP4 = 40, Q1_0 = 41,
};

constexpr uint32_t kWeightTypeIdLimit = 42;  // one past the largest id in the table

struct WeightTypeTraits {
  std::string_view name;   // ggml's spelling, e.g. "Q4_K"
  uint32_t block_size;     // elements per block (1 for plain types)
  uint32_t block_bytes;    // bytes per block
};

// Traits of a type id read from a file; nullopt for ids ggml never had or retired.
std::optional<WeightTypeTraits> weight_type_traits(uint32_t id);
const WeightTypeTraits& traits(WeightType type);
inline std::string_view type_name(WeightType t) { return traits(t).name; }
inline uint32_t block_size(WeightType t) { return traits(t).block_size; }
inline uint32_t block_bytes(WeightType t) { return traits(t).block_bytes; }
// Bytes of one row of n elements; n must be a multiple of the block size.
inline size_t row_bytes(WeightType t, int64_t n) { return size_t(n / block_size(t)) * block_bytes(t); }
// Parses "q4_k", "Q4_K", "f16", ... (case-insensitive).
std::optional<WeightType> parse_weight_type(std::string_view name);

}  // namespace tandem
