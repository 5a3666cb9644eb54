// The type table; block sizes match gguf-py's GGML_QUANT_SIZES (checked in tests/py).
#include "gguf/types.h"

#include <array>
#include <cctype>

#include "core/status.h"

namespace tandem {
namespace {

constexpr std::array<WeightTypeTraits, kWeightTypeIdLimit> make_table() {
  std::array<WeightTypeTraits, kWeightTypeIdLimit> t{};
  auto set = [&](WeightType id, std::string_view name, uint32_t bs, uint32_t bb) {
    t[uint32_t(id)] = {name, bs, bb};
  };
  set(WeightType::F32, "F32", 1, 4);
  set(WeightType::F16, "F16", 1, 2);
  set(WeightType::Q4_0, "Q4_0", 32, 18);
  set(WeightType::Q4_1, "Q4_1", 32, 20);
  set(WeightType::Q5_0, "Q5_0", 32, 22);
  set(WeightType::Q5_1, "Q5_1", 32, 24);
  set(WeightType::Q8_0, "Q8_0", 32, 34);
  set(WeightType::Q8_1, "Q8_1", 32, 40);
  set(WeightType::Q2_K, "Q2_K", 256, 84);
  set(WeightType::Q3_K, "Q3_K", 256, 110);
  set(WeightType::Q4_K, "Q4_K", 256, 144);
  set(WeightType::Q5_K, "Q5_K", 256, 176);
  set(WeightType::Q6_K, "Q6_K", 256, 210);
  set(WeightType::Q8_K, "Q8_K", 256, 292);
  set(WeightType::IQ2_XXS, "IQ2_XXS", 256, 66);
  set(WeightType::IQ2_XS, "IQ2_XS", 256, 74);
  set(WeightType::IQ3_XXS, "IQ3_XXS", 256, 98);
  set(WeightType::IQ1_S, "IQ1_S", 256, 50);
  set(WeightType::IQ4_NL, "IQ4_NL", 32, 18);
  set(WeightType::IQ3_S, "IQ3_S", 256, 110);
  set(WeightType::IQ2_S, "IQ2_S", 256, 82);
  set(WeightType::IQ4_XS, "IQ4_XS", 256, 136);
  set(WeightType::I8, "I8", 1, 1);
  set(WeightType::I16, "I16", 1, 2);
  set(WeightType::I32, "I32", 1, 4);
  set(WeightType::I64, "I64", 1, 8);
  set(WeightType::F64, "F64", 1, 8);
  set(WeightType::IQ1_M, "IQ1_M", 256, 56);
  set(WeightType::BF16, "BF16", 1, 2);
  set(WeightType::TQ1_0, "TQ1_0", 256, 54);
  set(WeightType::TQ2_0, "TQ2_0", 256, 66);
  set(WeightType::MXFP4, "MXFP4", 32, 17);
  set(WeightType::NVFP4, "NVFP4", 64, 36);
  set(WeightType::Q1_0, "Q1_0", 128, 18);
  return t;
}

constexpr auto kTable = make_table();

}  // namespace

std::optional<WeightTypeTraits> weight_type_traits(uint32_t id) {
  if (id >= kWeightTypeIdLimit || kTable[id].block_size == 0) return std::nullopt;
  return kTable[id];
}

const WeightTypeTraits& traits(WeightType type) {
  const uint32_t id = uint32_t(type);
  TANDEM_CHECK(id < kWeightTypeIdLimit && kTable[id].block_size != 0);
  return kTable[id];
}

std::optional<WeightType> parse_weight_type(std::string_view name) {
  for (uint32_t id = 0; id < kWeightTypeIdLimit; ++id) {
    const auto& name_i = kTable[id].name;
    if (kTable[id].block_size == 0 || name_i.size() != name.size()) continue;
    bool same = true;
    for (size_t i = 0; i < name.size() && same; ++i)
      same = std::toupper(static_cast<unsigned char>(name[i])) == name_i[i];
    if (same) return WeightType(id);
  }
  return std::nullopt;
}

}  // namespace tandem
