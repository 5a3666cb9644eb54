// CPU ops (rms_norm, rope, kv_store, swiglu, geglu, add, f16 conversion) at every ISA level
// this host has, against straightforward references on random data at real shapes.
//
// Tolerances, and why:
// - add, geglu, f32->f16, kv_store: bit-exact (the same float operations; F16C rounds like
//   quant::f32_to_fp16; GELU is a table lookup).
// - rms_norm: |y - ref| <= 1e-6 * |ref| + 1e-30; ref in double. Float does x*s then *w: two roundings.
// - swiglu: relative 2e-6: ggml's vector expf is within 2 ulp, then a division and a product.
// - rope: |y - ref| <= 2e-6 * (|x0| + |x1|), ref rotates in double by the float angles ggml iterates
//   (theta *= theta_scale in float: at positions past 4096 that iteration, not libm, decides the angle).
// Attention (plain and flash) has its own file: attention_test.cpp.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/ops.h"
#include "ops_test_util.h"
#include "quant/fp16.h"
#include "quant/quant.h"

namespace tandem::cpu {
namespace {

using test::isas;
using test::random_floats;

TEST(CpuOps, RmsNorm) {
  for (Isa isa : isas()) {
    for (int64_t n : {64, 100, 256, 640, 1152, 2048}) {
      const int64_t rows = 5;
      const auto x = random_floats(size_t(rows * n), uint32_t(n), 3.0f);
      const auto w = random_floats(size_t(n), uint32_t(n + 1));
      for (bool with_w : {false, true}) {
        std::vector<float> y(x.size());
        ops_for(isa).rms_norm(x.data(), with_w ? w.data() : nullptr, rows, n, 1e-6f, y.data());
        for (int64_t r = 0; r < rows; ++r) {
          double ss = 0;
          for (int64_t i = 0; i < n; ++i) ss += double(x[r * n + i]) * x[r * n + i];
          const double s = 1.0 / std::sqrt(ss / double(n) + 1e-6);
          for (int64_t i = 0; i < n; ++i) {
            const double ref = x[r * n + i] * s * (with_w ? w[i] : 1.0);
            ASSERT_NEAR(y[r * n + i], ref, 1e-6 * std::fabs(ref) + 1e-30)
                << isa_name(isa) << " n=" << n << " row " << r << " i " << i;
          }
        }
      }
    }
  }
}

TEST(CpuOps, ElementwiseExactAndSwiglu) {
  std::vector<uint16_t> table(65537, 0);
  for (uint32_t i = 0; i < 65536; ++i) {
    const float x = quant::fp16_to_f32(uint16_t(i));
    table[i] = quant::f32_to_fp16(0.5f * x * (1.0f + std::tanh(0.7978845608f * x * (1.0f + 0.044715f * x * x))));
  }
  for (Isa isa : isas()) {
    for (int64_t n : {1, 15, 16, 33, 1000, 8192 + 7}) {
      auto a = random_floats(size_t(n), 7, 4.0f), b = random_floats(size_t(n), 8);
      if (n > 10) a[3] = -10.0f, a[4] = 10.0f, a[5] = -9.99f, a[6] = 9.99f, a[7] = 30.0f, a[8] = -30.0f;
      std::vector<float> out(static_cast<size_t>(n));
      ops_for(isa).add(a.data(), b.data(), n, out.data());
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(out[i], a[i] + b[i]) << isa_name(isa);
      ops_for(isa).geglu(a.data(), b.data(), n, out.data(), table.data());
      for (int64_t i = 0; i < n; ++i) {
        const float x = a[i];
        const float g = x <= -10.0f ? 0.0f : x >= 10.0f ? x : quant::fp16_to_f32(table[quant::f32_to_fp16(x)]);
        ASSERT_EQ(out[i], g * b[i]) << isa_name(isa) << " x=" << x;
      }
      ops_for(isa).swiglu(a.data(), b.data(), n, out.data());
      for (int64_t i = 0; i < n; ++i) {
        const double ref = double(a[i]) / (1.0 + std::exp(-double(a[i]))) * b[i];
        ASSERT_NEAR(out[i], ref, 2e-6 * std::fabs(ref) + 1e-30) << isa_name(isa) << " x=" << a[i];
      }
      // f16: normals, subnormals, ties, overflow.
      std::vector<float> h = random_floats(size_t(n), 9, 100.0f);
      for (int64_t i = 0; i < n; ++i) {
        if (i % 5 == 1) h[i] *= 1e-7f;   // half subnormals
        if (i % 7 == 2) h[i] *= 1000.0f;  // past 65504
        if (i % 11 == 3) h[i] = quant::f32_from_bits(0x3f801000u);  // a tie: 1 + 2^-11
      }
      std::vector<uint16_t> hv(static_cast<size_t>(n));
      ops_for(isa).f32_to_f16(h.data(), hv.data(), n);
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hv[i], quant::f32_to_fp16(h[i])) << isa_name(isa) << " " << h[i];
    }
  }
}

// ggml's angles: theta iterated in float, pair by pair.
void rope_reference(float* x, int n_head, int head_dim, int32_t pos, const RopeParams& p) {
  const int n_dims = p.n_rot, half = n_dims / 2;
  const float theta_scale = std::pow(p.freq_base, -2.0f / float(n_dims));
  float theta = float(pos);
  for (int i = 0; i < half; ++i) {
    const float ff = p.freq_factors ? p.freq_factors[i] : 1.0f;
    const double th = double(p.freq_scale * (theta / ff));
    const double c = std::cos(th), s = std::sin(th);
    for (int h = 0; h < n_head; ++h) {
      float* v = x + h * head_dim;
      const int a = p.kind == RopeKind::Neox ? i : 2 * i, b = p.kind == RopeKind::Neox ? i + half : 2 * i + 1;
      const double x0 = v[a], x1 = v[b];
      v[a] = float(x0 * c - x1 * s);
      v[b] = float(x0 * s + x1 * c);
    }
    theta *= theta_scale;
  }
}

TEST(CpuOps, Rope) {
  CpuBackend be(2);
  std::vector<float> factors(128);
  for (size_t i = 0; i < factors.size(); ++i) factors[i] = 1.0f + float(i % 7);
  struct Case { RopeKind kind; int head_dim, n_rot, n_head; float base; bool factors; };
  const Case cases[] = {{RopeKind::Neox, 256, 256, 4, 1e6f, false}, {RopeKind::Neox, 256, 256, 1, 1e4f, false},
                        {RopeKind::Normal, 64, 64, 32, 5e5f, true},  {RopeKind::Normal, 128, 128, 8, 1e4f, false},
                        {RopeKind::Neox, 128, 64, 6, 1e4f, false},   {RopeKind::Normal, 128, 96, 3, 1e4f, false}};
  // Positions past 4096, twice the same positions (the table cache), then different ones.
  const std::vector<std::vector<int32_t>> batches = {{0, 1, 2, 4095, 4096, 5000, 33000, 131000}, {7}, {7}, {8, 9}};
  for (const Case& c : cases) {
    RopeParams p;
    p.kind = c.kind;
    p.n_rot = c.n_rot;
    p.freq_base = c.base;
    p.freq_factors = c.factors ? factors.data() : nullptr;
    for (const auto& pos : batches) {
      const int64_t nt = int64_t(pos.size());
      auto x = random_floats(size_t(nt * c.n_head * c.head_dim), uint32_t(nt + c.head_dim));
      auto ref = x;
      be.rope(x.data(), nt, c.n_head, c.head_dim, pos.data(), p);
      for (int64_t t = 0; t < nt; ++t) rope_reference(ref.data() + t * c.n_head * c.head_dim, c.n_head, c.head_dim, pos[t], p);
      for (size_t i = 0; i < x.size(); ++i) {
        const size_t in_head = i % size_t(c.head_dim);
        const size_t pair = c.kind == RopeKind::Neox ? (in_head + size_t(c.n_rot / 2)) % size_t(c.n_rot) : in_head ^ 1;
        const float mag = in_head < size_t(c.n_rot) ? std::fabs(ref[i]) + std::fabs(ref[i - in_head + pair]) : 0.0f;
        ASSERT_NEAR(x[i], ref[i], 2e-6 * mag + 1e-30)
            << "head_dim " << c.head_dim << " n_rot " << c.n_rot << " i " << i << " pos " << pos[i / size_t(c.n_head * c.head_dim)];
      }
    }
  }
}

TEST(CpuOps, KvStoreF16) {
  CpuBackend be(2);
  const int64_t n_tokens = 9, row_k = 256, row_v = 192, n_cells = 20;
  const auto k = random_floats(size_t(n_tokens * row_k), 1, 10.0f), v = random_floats(size_t(n_tokens * row_v), 2);
  std::vector<uint16_t> ck(size_t(n_cells * row_k)), cv(size_t(n_cells * row_v));
  const std::vector<int32_t> cells = {3, 0, 19, 7, 8, 9, 1, 2, 15};
  be.kv_store(k.data(), v.data(), n_tokens, row_k, row_v, cells.data(), WeightType::F16, WeightType::F16, ck.data(), cv.data());
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t i = 0; i < row_k; ++i) ASSERT_EQ(ck[size_t(cells[t] * row_k + i)], quant::f32_to_fp16(k[size_t(t * row_k + i)]));
    for (int64_t i = 0; i < row_v; ++i) ASSERT_EQ(cv[size_t(cells[t] * row_v + i)], quant::f32_to_fp16(v[size_t(t * row_v + i)]));
  }
}

// A quantized cache stores quant::quantize_row_kv's blocks (least-squares scales), not quantize_row's.
TEST(CpuOps, KvStoreQuantizedWritesKvBlocks) {
  CpuBackend be(2);
  const int64_t n_tokens = 9, row_k = 256, row_v = 192, n_cells = 20;
  const auto k = random_floats(size_t(n_tokens * row_k), 3, 10.0f), v = random_floats(size_t(n_tokens * row_v), 4);
  const WeightType tk = WeightType::Q4_0, tv = WeightType::Q5_1;
  const size_t bk = row_bytes(tk, row_k), bv = row_bytes(tv, row_v);
  std::vector<uint8_t> ck(bk * size_t(n_cells)), cv(bv * size_t(n_cells)), want_k(bk), want_v(bv);
  const std::vector<int32_t> cells = {3, 0, 19, 7, 8, 9, 1, 2, 15};
  be.kv_store(k.data(), v.data(), n_tokens, row_k, row_v, cells.data(), tk, tv, ck.data(), cv.data());
  for (int64_t t = 0; t < n_tokens; ++t) {
    quant::quantize_row_kv(tk, k.data() + t * row_k, want_k.data(), row_k);
    quant::quantize_row_kv(tv, v.data() + t * row_v, want_v.data(), row_v);
    EXPECT_EQ(std::memcmp(ck.data() + size_t(cells[t]) * bk, want_k.data(), bk), 0) << "token " << t;
    EXPECT_EQ(std::memcmp(cv.data() + size_t(cells[t]) * bv, want_v.data(), bv), 0) << "token " << t;
  }
}

}  // namespace
}  // namespace tandem::cpu
