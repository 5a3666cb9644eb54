// The integer dot products of the decode matmul (matmul.cu): 32 weights of a Q8_0, Q4_0, Q4_K or Q6_K
// row against 32 activations quantized to int8 (BlockQ8x32), four bytes at a time with __dp4a, as
// llama.cpp's vecdotq.cuh does. Host-callable (with a plain-C dp4a) so tests check the nibble and scale
// arithmetic against src/quant on the CPU (tests/backend/cuda/cuda_host_test.cu).
#pragma once

#include "backend/cuda/dequant.cuh"

namespace tandem::cuda {

// a.b of four signed bytes each, plus c.
TANDEM_HD int dp4a(int a, int b, int c) {
#ifdef __CUDA_ARCH__
  return __dp4a(a, b, c);
#else
  for (int i = 0; i < 4; ++i) c += int(int8_t(uint32_t(a) >> (8 * i))) * int(int8_t(uint32_t(b) >> (8 * i)));
  return c;
#endif
}

// Each byte (0..63) minus 32, as four signed bytes.
TANDEM_HD int sub32_bytes(uint32_t v) {
#ifdef __CUDA_ARCH__
  return int(__vsub4(v, 0x20202020u));
#else
  uint32_t out = 0;
  for (int i = 0; i < 4; ++i) out |= uint32_t(uint8_t(int((v >> (8 * i)) & 0xff) - 32)) << (8 * i);
  return int(out);
#endif
}

// 32 activations as int8: x[i] ~ d * qs[i]; sum = sum of qs (for the weights' offsets and mins).
struct BlockQ8x32 {
  float d;
  int32_t sum;
  int8_t qs[32];
};
static_assert(sizeof(BlockQ8x32) == 40);

// 4 bytes at a 2-byte aligned address (the legacy blocks and Q6_K are 34, 18 and 210 bytes long).
TANDEM_HD int load_i32_a2(const uint8_t* p) {
  const auto* h = reinterpret_cast<const uint16_t*>(p);
  return int(uint32_t(h[0]) | uint32_t(h[1]) << 16);
}
TANDEM_HD int load_i32_a4(const uint8_t* p) { return *reinterpret_cast<const int*>(p); }

// Each dot below: weight block k (32 elements) of a row times activation block k; k-quants hold 8
// such blocks per super-block of 256.
struct DotQ8_0 {
  TANDEM_HD float operator()(const uint8_t* row, int64_t k, const BlockQ8x32& x) const {
    const auto& b = reinterpret_cast<const quant::BlockQ8_0*>(row)[k];
    const auto* xq = reinterpret_cast<const int*>(x.qs);
    int sumi = 0;
    for (int w = 0; w < 8; ++w) sumi = dp4a(load_i32_a2(reinterpret_cast<const uint8_t*>(b.qs) + 4 * w), xq[w], sumi);
    return half_bits_to_f32(b.d) * x.d * float(sumi);
  }
};

struct DotQ4_0 {
  TANDEM_HD float operator()(const uint8_t* row, int64_t k, const BlockQ8x32& x) const {
    const auto& b = reinterpret_cast<const quant::BlockQ4_0*>(row)[k];
    const auto* xq = reinterpret_cast<const int*>(x.qs);
    int sumi = 0;
    for (int w = 0; w < 4; ++w) {
      const int v = load_i32_a2(b.qs + 4 * w);
      sumi = dp4a(v & 0x0f0f0f0f, xq[w], sumi);             // elements 4w..4w+3
      sumi = dp4a((v >> 4) & 0x0f0f0f0f, xq[w + 4], sumi);  // elements 16+4w..
    }
    return half_bits_to_f32(b.d) * x.d * float(sumi - 8 * x.sum);  // codes are q + 8
  }
};

struct DotQ4_K {
  TANDEM_HD float operator()(const uint8_t* row, int64_t k, const BlockQ8x32& x) const {
    const auto& b = reinterpret_cast<const quant::BlockQ4_K*>(row)[k / 8];
    const int j = int(k % 8), g = j / 2, shift = 4 * (j % 2);
    int sc, m;
    scale_min_k4(j, b.scales, sc, m);
    const auto* xq = reinterpret_cast<const int*>(x.qs);
    int sumi = 0;
    for (int w = 0; w < 8; ++w) sumi = dp4a((load_i32_a4(b.qs + 32 * g + 4 * w) >> shift) & 0x0f0f0f0f, xq[w], sumi);
    return x.d * (half_bits_to_f32(b.d) * float(sc * sumi) - half_bits_to_f32(b.dmin) * float(m * x.sum));
  }
};

struct DotQ6_K {
  TANDEM_HD float operator()(const uint8_t* row, int64_t k, const BlockQ8x32& x) const {
    const auto& b = reinterpret_cast<const quant::BlockQ6_K*>(row)[k / 8];
    const int r = int(k % 8), n = r / 4, quarter = r % 4;
    const uint8_t* ql = b.ql + n * 64 + (quarter & 1) * 32;
    const uint8_t* qh = b.qh + n * 32;
    const int low_shift = quarter >= 2 ? 4 : 0, high_shift = 2 * quarter;
    const auto* xq = reinterpret_cast<const int*>(x.qs);
    int sumi[2] = {0, 0};  // elements 0-15 and 16-31 have their own scales
    for (int w = 0; w < 8; ++w) {
      const int low = (load_i32_a2(ql + 4 * w) >> low_shift) & 0x0f0f0f0f;
      const int high = (load_i32_a2(qh + 4 * w) >> high_shift) & 0x03030303;
      const int q = sub32_bytes(uint32_t(low | high << 4));  // 0..63 - 32
      sumi[w / 4] = dp4a(q, xq[w], sumi[w / 4]);
    }
    const int8_t* sc = b.scales + n * 8 + 2 * quarter;
    return half_bits_to_f32(b.d) * x.d * float(sc[0] * sumi[0] + sc[1] * sumi[1]);
  }
};

// Calls f(Dot{}) for the types with an integer path.
template <typename F>
bool with_q8_dot(WeightType t, F&& f) {
  switch (t) {
    case WeightType::Q8_0: f(DotQ8_0{}); return true;
    case WeightType::Q4_0: f(DotQ4_0{}); return true;
    case WeightType::Q4_K: f(DotQ4_K{}); return true;
    case WeightType::Q6_K: f(DotQ6_K{}); return true;
    default: return false;
  }
}

}  // namespace tandem::cuda
