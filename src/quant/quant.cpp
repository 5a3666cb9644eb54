// Dispatch of quant.h's row calls to the per-format functions, and the plain float formats F32/F16/BF16.
#include "quant/quant.h"

#include <cstring>

#include "core/status.h"
#include "quant/formats.h"
#include "quant/fp16.h"

namespace tandem::quant {
namespace {

template <typename Block>
const Block* blocks(const void* p) { return static_cast<const Block*>(p); }
template <typename Block>
Block* blocks(void* p) { return static_cast<Block*>(p); }

}  // namespace

bool can_dequantize(WeightType t) {
  switch (t) {
    case WeightType::F32: case WeightType::F16: case WeightType::BF16:
    case WeightType::Q4_0: case WeightType::Q4_1: case WeightType::Q5_0: case WeightType::Q5_1:
    case WeightType::Q8_0: case WeightType::Q2_K: case WeightType::Q3_K: case WeightType::Q4_K:
    case WeightType::Q5_K: case WeightType::Q6_K: case WeightType::Q8_K:
    case WeightType::IQ4_NL: case WeightType::IQ4_XS:
    case WeightType::IQ2_XXS: case WeightType::IQ2_XS: case WeightType::IQ2_S: case WeightType::IQ3_XXS:
    case WeightType::IQ3_S: case WeightType::IQ1_S: case WeightType::IQ1_M:
      return true;
    default:
      return false;
  }
}

bool is_lattice_iquant(WeightType t) {
  switch (t) {
    case WeightType::IQ2_XXS: case WeightType::IQ2_XS: case WeightType::IQ2_S: case WeightType::IQ3_XXS:
    case WeightType::IQ3_S: case WeightType::IQ1_S: case WeightType::IQ1_M:
      return true;
    default:
      return false;
  }
}

bool can_quantize(WeightType t) { return can_dequantize(t) && !is_lattice_iquant(t); }

void dequantize_row(WeightType t, const void* src, float* dst, int64_t n) {
  TANDEM_CHECK(can_dequantize(t) && n % block_size(t) == 0);
  switch (t) {
    case WeightType::F32: std::memcpy(dst, src, size_t(n) * sizeof(float)); break;
    case WeightType::F16: {
      const auto* h = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_f32(h[i]);
      break;
    }
    case WeightType::BF16: {
      const auto* h = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(h[i]);
      break;
    }
    case WeightType::Q4_0: dequantize_row_q4_0(blocks<BlockQ4_0>(src), dst, n); break;
    case WeightType::Q4_1: dequantize_row_q4_1(blocks<BlockQ4_1>(src), dst, n); break;
    case WeightType::Q5_0: dequantize_row_q5_0(blocks<BlockQ5_0>(src), dst, n); break;
    case WeightType::Q5_1: dequantize_row_q5_1(blocks<BlockQ5_1>(src), dst, n); break;
    case WeightType::Q8_0: dequantize_row_q8_0(blocks<BlockQ8_0>(src), dst, n); break;
    case WeightType::Q2_K: dequantize_row_q2_K(blocks<BlockQ2_K>(src), dst, n); break;
    case WeightType::Q3_K: dequantize_row_q3_K(blocks<BlockQ3_K>(src), dst, n); break;
    case WeightType::Q4_K: dequantize_row_q4_K(blocks<BlockQ4_K>(src), dst, n); break;
    case WeightType::Q5_K: dequantize_row_q5_K(blocks<BlockQ5_K>(src), dst, n); break;
    case WeightType::Q6_K: dequantize_row_q6_K(blocks<BlockQ6_K>(src), dst, n); break;
    case WeightType::Q8_K: dequantize_row_q8_K(blocks<BlockQ8_K>(src), dst, n); break;
    case WeightType::IQ4_NL: dequantize_row_iq4_nl(blocks<BlockIQ4_NL>(src), dst, n); break;
    case WeightType::IQ4_XS: dequantize_row_iq4_xs(blocks<BlockIQ4_XS>(src), dst, n); break;
    case WeightType::IQ2_XXS: dequantize_row_iq2_xxs(blocks<BlockIQ2_XXS>(src), dst, n); break;
    case WeightType::IQ2_XS: dequantize_row_iq2_xs(blocks<BlockIQ2_XS>(src), dst, n); break;
    case WeightType::IQ2_S: dequantize_row_iq2_s(blocks<BlockIQ2_S>(src), dst, n); break;
    case WeightType::IQ3_XXS: dequantize_row_iq3_xxs(blocks<BlockIQ3_XXS>(src), dst, n); break;
    case WeightType::IQ3_S: dequantize_row_iq3_s(blocks<BlockIQ3_S>(src), dst, n); break;
    case WeightType::IQ1_S: dequantize_row_iq1_s(blocks<BlockIQ1_S>(src), dst, n); break;
    case WeightType::IQ1_M: dequantize_row_iq1_m(blocks<BlockIQ1_M>(src), dst, n); break;
    default: break;
  }
}

void quantize_row(WeightType t, const float* src, void* dst, int64_t n) {
  TANDEM_CHECK(can_quantize(t) && n % block_size(t) == 0);
  switch (t) {
    case WeightType::F32: std::memcpy(dst, src, size_t(n) * sizeof(float)); break;
    case WeightType::F16: {
      auto* h = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) h[i] = f32_to_fp16(src[i]);
      break;
    }
    case WeightType::BF16: {
      auto* h = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) h[i] = f32_to_bf16(src[i]);
      break;
    }
    case WeightType::Q4_0: quantize_row_q4_0(src, blocks<BlockQ4_0>(dst), n); break;
    case WeightType::Q4_1: quantize_row_q4_1(src, blocks<BlockQ4_1>(dst), n); break;
    case WeightType::Q5_0: quantize_row_q5_0(src, blocks<BlockQ5_0>(dst), n); break;
    case WeightType::Q5_1: quantize_row_q5_1(src, blocks<BlockQ5_1>(dst), n); break;
    case WeightType::Q8_0: quantize_row_q8_0(src, blocks<BlockQ8_0>(dst), n); break;
    case WeightType::Q2_K: quantize_row_q2_K(src, blocks<BlockQ2_K>(dst), n); break;
    case WeightType::Q3_K: quantize_row_q3_K(src, blocks<BlockQ3_K>(dst), n); break;
    case WeightType::Q4_K: quantize_row_q4_K(src, blocks<BlockQ4_K>(dst), n); break;
    case WeightType::Q5_K: quantize_row_q5_K(src, blocks<BlockQ5_K>(dst), n); break;
    case WeightType::Q6_K: quantize_row_q6_K(src, blocks<BlockQ6_K>(dst), n); break;
    case WeightType::Q8_K: quantize_row_q8_K(src, blocks<BlockQ8_K>(dst), n); break;
    case WeightType::IQ4_NL: quantize_row_iq4_nl(src, blocks<BlockIQ4_NL>(dst), n); break;
    case WeightType::IQ4_XS: quantize_row_iq4_xs(src, blocks<BlockIQ4_XS>(dst), n); break;
    default: break;
  }
}

}  // namespace tandem::quant
