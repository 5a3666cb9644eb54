// The CUDA kernels' element decoders (dequant.cuh) and integer dot products (dot_q8.cuh) run on the
// CPU: their block indexing, nibble and scale arithmetic against src/quant's reference, with no GPU;
// and the host-side choices of the launchers (which attention kernel, which launch shape).
// nvcc compiles this file, so it exists in CUDA builds only (CI builds one). What it cannot check:
// anything warp- or launch-shaped (cuda_ops_test.cpp does that on a GPU).
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/cuda/dot_q8.cuh"
#include "backend/cuda/kernels.h"
#include "quant/quant.h"

namespace tandem::cuda {
namespace {

using WT = WeightType;

// Gaussian rows with an outlier per 64 values, as trained weights have, quantized by the reference.
std::vector<uint8_t> quantized_row(WT t, int64_t n, uint32_t seed, std::vector<float>* dequantized) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, 0.05f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = d(rng);
  for (int64_t i = 0; i < n; i += 64) v[size_t(i + int64_t(rng() % 64))] = 1.5f;
  std::vector<uint8_t> row(row_bytes(t, n));
  quant::quantize_row(t, v.data(), row.data(), n);
  dequantized->resize(size_t(n));
  quant::dequantize_row(t, row.data(), dequantized->data(), n);
  return row;
}

TEST(CudaDecoders, EveryElementIsTheReferenceDequantizersValue) {
  constexpr int64_t kN = 1024;  // four k-quant super-blocks, 32 legacy blocks
  for (WT t : {WT::F32, WT::F16, WT::BF16, WT::Q4_0, WT::Q4_1, WT::Q5_0, WT::Q5_1, WT::Q8_0, WT::Q2_K, WT::Q3_K,
               WT::Q4_K, WT::Q5_K, WT::Q6_K, WT::IQ4_NL, WT::IQ4_XS}) {
    std::vector<float> want;
    const auto row = quantized_row(t, kN, 7 + uint32_t(t), &want);
    std::vector<float> got(static_cast<size_t>(kN));
    ASSERT_TRUE(with_elem(t, [&](auto elem) {
      for (int64_t i = 0; i < kN; ++i) got[size_t(i)] = elem(row.data(), i);
    })) << type_name(t);
    for (int64_t i = 0; i < kN; ++i)
      ASSERT_FLOAT_EQ(got[size_t(i)], want[size_t(i)]) << type_name(t) << " element " << i;
  }
}

TEST(CudaDecoders, TypesWithoutADecoderAreRefused) {
  for (WT t : {WT::IQ2_XXS, WT::IQ3_S, WT::IQ1_M, WT::TQ2_0, WT::MXFP4})
    EXPECT_FALSE(with_elem(t, [](auto) {})) << type_name(t);
}

// Activations as the GPU quantizes them (matmul.cu's quantize_q8_kernel): d = amax / 127, q = round(x / d).
std::vector<BlockQ8x32> quantize_activations(const std::vector<float>& x) {
  std::vector<BlockQ8x32> out(x.size() / 32);
  for (size_t b = 0; b < out.size(); ++b) {
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(x[b * 32 + size_t(i)]));
    out[b].d = amax / 127.0f;
    out[b].sum = 0;
    for (int i = 0; i < 32; ++i) {
      const int q = amax == 0.0f ? 0 : int(std::nearbyint(x[b * 32 + size_t(i)] / out[b].d));
      out[b].qs[i] = int8_t(q);
      out[b].sum += q;
    }
  }
  return out;
}

// sum_k Dot(row, k, x[k]) against the double-precision sum of the dequantized weights times the
// dequantized activations: the integer path loses nothing but float rounding of the per-block scales.
// Tolerance 1e-5 * sum |w_i a_i| (matmul_test.cpp's); a wrong nibble, scale or block is off by far more.
TEST(CudaDotProducts, IntegerDotsEqualTheDequantizedSum) {
  constexpr int64_t kN = 1024;
  std::mt19937 rng(3);
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> x(static_cast<size_t>(kN));
  for (float& v : x) v = d(rng);
  const auto xq = quantize_activations(x);
  for (WT t : {WT::Q8_0, WT::Q4_0, WT::Q4_K, WT::Q6_K}) {
    for (uint32_t seed = 0; seed < 4; ++seed) {
      std::vector<float> w;
      const auto row = quantized_row(t, kN, 100 * seed + uint32_t(t), &w);
      double want = 0, scale = 0;
      for (int64_t i = 0; i < kN; ++i) {
        const double a = double(xq[size_t(i / 32)].d) * xq[size_t(i / 32)].qs[i % 32];
        want += double(w[size_t(i)]) * a;
        scale += std::fabs(double(w[size_t(i)]) * a);
      }
      double got = 0;
      ASSERT_TRUE(with_q8_dot(t, [&](auto dot) {
        for (int64_t k = 0; k < kN / 32; ++k) got += dot(row.data(), k, xq[size_t(k)]);
      }));
      EXPECT_NEAR(got, want, 1e-5 * scale) << type_name(t) << " seed " << seed;
    }
  }
}

TEST(CudaDotProducts, TheHostFallbacksOfTheByteIntrinsicsAreExact) {
  // dp4a: signed bytes, (1, -2, 127, -128) . (3, 4, -1, 2) + 10 = 3 - 8 - 127 - 256 + 10
  const int a = int(0x80'7f'fe'01u), b = int(0x02'ff'04'03u);
  EXPECT_EQ(dp4a(a, b, 10), 3 - 8 - 127 - 256 + 10);
  EXPECT_EQ(uint32_t(sub32_bytes(0x3f'20'1f'00u)), 0x1f'00'ff'e0u);  // 63, 32, 31, 0 -> 31, 0, -1, -32
}

// Which attention calls take the absorbed-MLA kernel (host logic of mla_attention.cu): deepseek2.cpp's
// latent cache (V = the latent part of each K row), and nothing else.
TEST(CudaMla, TheLatentCacheTakesTheMlaKernelAndOtherShapesThePlainOne) {
  static uint8_t cache[4096];
  for (WT t : {WT::F16, WT::Q8_0, WT::F32}) {
    AttentionArgs a;
    a.n_head = 16;
    a.n_head_kv = 1;
    a.head_dim_k = 576;
    a.head_dim_v = 512;
    a.k_type = a.v_type = t;
    a.k_stride = a.v_stride = 576;
    a.k = cache;
    a.v = cache + row_bytes(t, 64);
    int v_off = -1;
    EXPECT_TRUE(mla_attention_supported(a, &v_off)) << type_name(t);
    EXPECT_EQ(v_off, 64) << type_name(t);
    AttentionArgs b = a;
    b.n_head_kv = 2;  // GQA
    EXPECT_FALSE(mla_attention_supported(b, &v_off)) << type_name(t);
    b = a;
    b.v = cache + 4096 / 2;  // a V of its own
    b.v_stride = 512;
    EXPECT_FALSE(mla_attention_supported(b, &v_off)) << type_name(t);
    b = a;
    b.v = cache + row_bytes(t, 128);  // 128 + 512 past the row's 576
    EXPECT_FALSE(mla_attention_supported(b, &v_off)) << type_name(t);
  }
  AttentionArgs q;
  q.n_head_kv = 1;
  q.head_dim_k = 576;
  q.head_dim_v = 512;
  q.k_type = q.v_type = WT::Q8_0;
  q.k_stride = q.v_stride = 576;
  q.k = cache;
  q.v = cache + 17;  // half a Q8_0 block in
  int v_off = -1;
  EXPECT_FALSE(mla_attention_supported(q, &v_off));
}

// A decode step's chunks of 128 cells run in blocks of their own (partials: tokens x heads x chunks x
// (2 + dv) floats); a batch that fills the GPU runs them in turn in one block (none).
TEST(CudaMla, OnlyAFewBlocksSplitTheirChunks) {
  AttentionArgs a;
  a.n_head = 20;
  a.n_head_kv = 1;
  a.head_dim_k = 576;
  a.head_dim_v = 512;
  a.n_cells = 300;
  a.n_tokens = 1;
  EXPECT_EQ(mla_attention_scratch_bytes(a), size_t(1 * 20 * 3 * 514 * 4));
  a.n_tokens = 64;  // 128 blocks of 16 heads
  EXPECT_EQ(mla_attention_scratch_bytes(a), 0u);
  a.n_tokens = 1;
  a.n_cells = 100;  // one chunk: nothing to split
  EXPECT_EQ(mla_attention_scratch_bytes(a), 0u);
}

}  // namespace
}  // namespace tandem::cuda
