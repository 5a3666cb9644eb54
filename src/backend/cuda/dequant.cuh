// One element of a quantized row, by type: the device twin of src/quant's dequantize_row, element by
// element (a thread per element, or per lane of a dot product); host-callable for the tests. Layouts as quant/blocks.h; formulas as
// llama.cpp's ggml-quants.c dequantize_row_*. Heavy per element for k-quants (scales unpacked each
// time), so the decode kernels that matter have their own block-wise paths (matmul.cu); these serve
// get_rows, the f16 tiles of the prefill GEMM, attention's K/V and the generic matrix-vector kernel.
#pragma once

#include "backend/cuda/common.cuh"
#include "gguf/types.h"
#include "quant/blocks.h"

namespace tandem::cuda {

using quant::BlockIQ4_NL;
using quant::BlockIQ4_XS;
using quant::BlockQ2_K;
using quant::BlockQ3_K;
using quant::BlockQ4_0;
using quant::BlockQ4_1;
using quant::BlockQ4_K;
using quant::BlockQ5_0;
using quant::BlockQ5_1;
using quant::BlockQ5_K;
using quant::BlockQ6_K;
using quant::BlockQ8_0;

static __constant__ int8_t kIq4ValuesDevice[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                                    1,    13,   25,  38,  53,  69,  89,  113};
TANDEM_HD int iq4_value(int code) {
#ifdef __CUDA_ARCH__
  return kIq4ValuesDevice[code];
#else
  return quant::kIq4Values[code];
#endif
}

// Legacy blocks of 32: element j's 4-bit code, low nibbles first.
TANDEM_HD int nibble32(const uint8_t* qs, int j) { return j < 16 ? qs[j] & 15 : qs[j - 16] >> 4; }
TANDEM_HD uint32_t load_u32(const uint8_t* p) {  // qh is not 4-byte aligned in the block
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}
// The 6-bit scale and min of sub-block j of a Q4_K/Q5_K super-block (ggml's get_scale_min_k4).
TANDEM_HD void scale_min_k4(int j, const uint8_t* q, int& sc, int& m) {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = (q[j + 4] & 15) | ((q[j - 4] >> 6) << 4);
    m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

template <WeightType T>
struct Elem;  // float operator()(row, i): element i of a row of type T

template <>
struct Elem<WeightType::F32> {
  TANDEM_HD float operator()(const uint8_t* row, int64_t i) const { return reinterpret_cast<const float*>(row)[i]; }
};
template <>
struct Elem<WeightType::F16> {
  TANDEM_HD float operator()(const uint8_t* row, int64_t i) const {
    return half_bits_to_f32(reinterpret_cast<const uint16_t*>(row)[i]);
  }
};
template <>
struct Elem<WeightType::BF16> {
  TANDEM_HD float operator()(const uint8_t* row, int64_t i) const {
    return bf16_bits_to_f32(reinterpret_cast<const uint16_t*>(row)[i]);
  }
};
template <>
struct Elem<WeightType::Q4_0> {
  TANDEM_HD float operator()(const uint8_t* row, int64_t i) const {
    const auto& b = reinterpret_cast<const BlockQ4_0*>(row)[i / 32];
    return half_bits_to_f32(b.d) * float(nibble32(b.qs, int(i % 32)) - 8);
  }
};
template <>
struct Elem<WeightType::Q4_1> {
  TANDEM_HD float operator()(const uint8_t* row, int64_t i) const {
    const auto& b = reinterpret_cast<const BlockQ4_1*>(row)[i / 32];
    return half_bits_to_f32(b.d) * float(nibble32(b.qs, int(i % 32))) + half_bits_to_f32(b.m);
  }
};
template <>
struct Elem<WeightType::Q5_0> {
  TANDEM_HD float operator()(const uint8_t* row, int64_t i) const {
    const auto& b = reinterpret_cast<const BlockQ5_0*>(row)[i / 32];
    const int j = int(i % 32);
    const int q = nibble32(b.qs, j) | int((load_u32(b.qh) >> j) & 1) << 4;
    return half_bits_to_f32(b.d) * float(q - 16);
  }
};
template <>
struct Elem<WeightType::Q5_1> {
  TANDEM_HD float operator()(const uint8_t* row, int64_t i) const {
    const auto& b = reinterpret_cast<const BlockQ5_1*>(row)[i / 32];
    const int j = int(i % 32);
    const int q = nibble32(b.qs, j) | int((load_u32(b.qh) >> j) & 1) << 4;
    return half_bits_to_f32(b.d) * float(q) + half_bits_to_f32(b.m);
  }
};
template <>
struct Elem<WeightType::Q8_0> {
  TANDEM_HD float operator()(const uint8_t* row, int64_t i) const {
    const auto& b = reinterpret_cast<const BlockQ8_0*>(row)[i / 32];
    return half_bits_to_f32(b.d) * float(b.qs[i % 32]);
  }
};
template <>
struct Elem<WeightType::IQ4_NL> {
  TANDEM_HD float operator()(const uint8_t* row, int64_t i) const {
    const auto& b = reinterpret_cast<const BlockIQ4_NL*>(row)[i / 32];
    return half_bits_to_f32(b.d) * float(iq4_value(nibble32(b.qs, int(i % 32))));
  }
};
template <>
struct Elem<WeightType::IQ4_XS> {
  TANDEM_HD float operator()(const uint8_t* row, int64_t i) const {
    const auto& b = reinterpret_cast<const BlockIQ4_XS*>(row)[i / 256];
    const int r = int(i % 256), ib = r / 32, j = r % 32;
    const int ls = ((b.scales_l[ib / 2] >> (4 * (ib % 2))) & 15) | (((b.scales_h >> (2 * ib)) & 3) << 4);
    return half_bits_to_f32(b.d) * float(ls - 32) * float(iq4_value(nibble32(b.qs + 16 * ib, j)));
  }
};
template <>
struct Elem<WeightType::Q2_K> {
  TANDEM_HD float operator()(const uint8_t* row, int64_t i) const {
    const auto& b = reinterpret_cast<const BlockQ2_K*>(row)[i / 256];
    const int r = int(i % 256), n = r / 128, j = (r % 128) / 32, l = r % 32;
    const int sc = b.scales[n * 8 + j * 2 + (l >= 16)];
    const int q = (b.qs[n * 32 + l] >> (2 * j)) & 3;
    return half_bits_to_f32(b.d) * float(sc & 15) * float(q) - half_bits_to_f32(b.dmin) * float(sc >> 4);
  }
};
template <>
struct Elem<WeightType::Q3_K> {
  TANDEM_HD float operator()(const uint8_t* row, int64_t i) const {
    const auto& b = reinterpret_cast<const BlockQ3_K*>(row)[i / 256];
    const int r = int(i % 256), n = r / 128, j = (r % 128) / 32, l = r % 32;
    // The 16 6-bit scales: low 4 bits from bytes 0-7, high 2 bits from bytes 8-11 (ggml's kmask unpacking).
    const int s = n * 8 + j * 2 + (l >= 16), k = s % 4, grp = s / 4;
    const int low = (b.scales[(grp & 1) * 4 + k] >> (4 * (grp >> 1))) & 15;
    const int high = (b.scales[8 + k] >> (2 * grp)) & 3;
    const int scale = (low | high << 4) - 32;
    const int q = ((b.qs[n * 32 + l] >> (2 * j)) & 3) - ((b.hmask[l] >> (n * 4 + j)) & 1 ? 0 : 4);
    return half_bits_to_f32(b.d) * float(scale) * float(q);
  }
};
template <>
struct Elem<WeightType::Q4_K> {
  TANDEM_HD float operator()(const uint8_t* row, int64_t i) const {
    const auto& b = reinterpret_cast<const BlockQ4_K*>(row)[i / 256];
    const int r = int(i % 256), g = r / 64, w = r % 64;
    int sc, m;
    scale_min_k4(2 * g + (w >= 32), b.scales, sc, m);
    const int q = w < 32 ? b.qs[32 * g + w] & 15 : b.qs[32 * g + w - 32] >> 4;
    return half_bits_to_f32(b.d) * float(sc) * float(q) - half_bits_to_f32(b.dmin) * float(m);
  }
};
template <>
struct Elem<WeightType::Q5_K> {
  TANDEM_HD float operator()(const uint8_t* row, int64_t i) const {
    const auto& b = reinterpret_cast<const BlockQ5_K*>(row)[i / 256];
    const int r = int(i % 256), g = r / 64, w = r % 64, l = w % 32, hi = w >= 32;
    int sc, m;
    scale_min_k4(2 * g + hi, b.scales, sc, m);
    const int q = (hi ? b.qs[32 * g + l] >> 4 : b.qs[32 * g + l] & 15) | ((b.qh[l] >> (2 * g + hi)) & 1) << 4;
    return half_bits_to_f32(b.d) * float(sc) * float(q) - half_bits_to_f32(b.dmin) * float(m);
  }
};
template <>
struct Elem<WeightType::Q6_K> {
  TANDEM_HD float operator()(const uint8_t* row, int64_t i) const {
    const auto& b = reinterpret_cast<const BlockQ6_K*>(row)[i / 256];
    const int r = int(i % 256), n = r / 128, quarter = (r % 128) / 32, l = r % 32;
    const uint8_t ql = b.ql[n * 64 + l + (quarter & 1) * 32];
    const int low = quarter >= 2 ? ql >> 4 : ql & 15;
    const int q = (low | ((b.qh[n * 32 + l] >> (2 * quarter)) & 3) << 4) - 32;
    return half_bits_to_f32(b.d) * float(b.scales[n * 8 + l / 16 + 2 * quarter]) * float(q);
  }
};

// Calls f(Elem<T>{}) for a type with an element decoder; false for the rest (the IQ2/IQ3/IQ1 grids,
// ternary and FP4 types: not yet on CUDA, issue 17).
template <typename F>
bool with_elem(WeightType t, F&& f) {
  switch (t) {
#define TANDEM_CASE(T)  \
  case WeightType::T:   \
    f(Elem<WeightType::T>{}); \
    return true;
    TANDEM_CASE(F32) TANDEM_CASE(F16) TANDEM_CASE(BF16) TANDEM_CASE(Q4_0) TANDEM_CASE(Q4_1) TANDEM_CASE(Q5_0)
    TANDEM_CASE(Q5_1) TANDEM_CASE(Q8_0) TANDEM_CASE(IQ4_NL) TANDEM_CASE(IQ4_XS) TANDEM_CASE(Q2_K) TANDEM_CASE(Q3_K)
    TANDEM_CASE(Q4_K) TANDEM_CASE(Q5_K) TANDEM_CASE(Q6_K)
#undef TANDEM_CASE
    default:
      return false;
  }
}

// Element i of a KV cache row of a type known only at run time (mixed K/V types, quantized caches).
struct AnyElem {
  WeightType type;
  __device__ float operator()(const uint8_t* row, int64_t i) const {
    switch (type) {
      case WeightType::F32: return Elem<WeightType::F32>{}(row, i);
      case WeightType::F16: return Elem<WeightType::F16>{}(row, i);
      case WeightType::BF16: return Elem<WeightType::BF16>{}(row, i);
      case WeightType::Q8_0: return Elem<WeightType::Q8_0>{}(row, i);
      case WeightType::Q4_0: return Elem<WeightType::Q4_0>{}(row, i);
      case WeightType::Q4_1: return Elem<WeightType::Q4_1>{}(row, i);
      case WeightType::Q5_0: return Elem<WeightType::Q5_0>{}(row, i);
      case WeightType::Q5_1: return Elem<WeightType::Q5_1>{}(row, i);
      case WeightType::IQ4_NL: return Elem<WeightType::IQ4_NL>{}(row, i);
      default: return 0.0f;  // attention_supported() refused it on the host
    }
  }
};

}  // namespace tandem::cuda
