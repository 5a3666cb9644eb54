// The CUDA backend against the CPU backend, op by op: the same inputs on both, the CPU's output the
// reference. Every test skips, saying why, where no CUDA device is usable (no GPU, no driver, a build
// without CUDA). Tolerances, as the normalized error |cuda - cpu| / |cpu| over the whole output (a wrong
// block layout, row, expert or cell is off by ~100%):
// - matmul, integer path (Q8_0 Q4_0 Q4_K Q6_K: activations as int8 blocks of 32 on the GPU, the CPU's
//   own int8 blocks there): 2e-2; other quantized types (f32 activations on the GPU): 2e-2;
//   F16 and the cuBLAS path (activations rounded to f16): 5e-3; F32: 1e-4.
// - get_rows: 1e-6 (the same dequantization formulas, float rounding order may differ);
// - rms_norm, rope, elementwise: 1e-5;
// - attention: F16 cache 2e-3 (the CPU rounds q and the probabilities to f16, ggml's way; the GPU keeps
//   f32), Q8_0 cache 2e-2 (the CPU quantizes q to Q8_0 blocks against a Q8_0 K; the GPU does not).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "backend/buffer.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cuda/cuda_backend.h"
#include "quant/quant.h"

namespace tandem::cuda {
namespace {

using WT = WeightType;

std::vector<float> gaussian(size_t n, uint32_t seed, float sd = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, sd);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

double normalized_error(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += double(want[i]) * want[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

class CudaOps : public ::testing::Test {
 protected:
  void SetUp() override {
    if (probe().devices.empty()) GTEST_SKIP() << "no CUDA device: " << probe().reason;
    auto b = create_backend(probe().devices[0].index);
    ASSERT_TRUE(b.has_value()) << b.error().message();
    gpu_ = std::move(b.value());
  }

  template <typename T>
  DeviceBuffer upload(const std::vector<T>& host) {
    auto buf = DeviceBuffer::create(*gpu_, std::max<size_t>(host.size() * sizeof(T), 1));
    EXPECT_TRUE(buf.has_value());
    gpu_->copy_from_host(buf->data(), host.data(), host.size() * sizeof(T));
    return std::move(buf.value());
  }
  std::vector<float> download(const DeviceBuffer& buf, size_t n) {
    std::vector<float> host(n);
    gpu_->copy_to_host(host.data(), buf.data(), n * sizeof(float));
    const Status s = gpu_->synchronize();
    EXPECT_TRUE(s.is_ok()) << s.message();
    return host;
  }
  DeviceBuffer zeros(size_t n) { return upload(std::vector<float>(n, 0.0f)); }

  // A weight of `type`, n_rows x n, quantized from gaussian values: host bytes and a device copy.
  struct TestWeight {
    std::vector<uint8_t> bytes;
    DeviceBuffer device;
    Weight host_w, gpu_w;
  };
  TestWeight make_weight(WT type, std::vector<int64_t> shape, uint32_t seed) {
    TestWeight t;
    const int64_t n = shape.back();
    int64_t n_rows = 1;
    for (size_t i = 0; i + 1 < shape.size(); ++i) n_rows *= shape[i];
    const size_t rb = row_bytes(type, n);
    t.bytes.resize(rb * size_t(n_rows));
    const auto values = gaussian(size_t(n_rows * n), seed, 0.05f);
    for (int64_t r = 0; r < n_rows; ++r) quant::quantize_row(type, values.data() + r * n, t.bytes.data() + r * rb, n);
    t.device = upload(t.bytes);
    t.host_w.name = "test.weight";
    t.host_w.type = type;
    t.host_w.shape = shape;
    t.host_w.data = t.bytes.data();
    t.host_w.row_stride = rb;
    t.host_w.size_bytes = t.bytes.size();
    t.gpu_w = t.host_w;
    t.gpu_w.data = t.device.data();
    t.gpu_w.backend = gpu_.get();
    return t;
  }

  std::unique_ptr<Backend> gpu_;
  cpu::CpuBackend cpu_{2};
};

// ---- matmul

struct MatmulCase {
  WT type;
  int64_t n_tokens;
};

class CudaMatmul : public CudaOps, public ::testing::WithParamInterface<MatmulCase> {};

double matmul_tolerance(WT t) {
  if (t == WT::F32) return 1e-4;
  if (t == WT::F16) return 5e-3;
  return 2e-2;
}

TEST_P(CudaMatmul, MatchesTheCpu) {
  const auto [type, n_tokens] = GetParam();
  constexpr int64_t kRows = 72, kIn = 512;  // 72: the last block of 4 rows is whole, 18 blocks
  auto w = make_weight(type, {kRows, kIn}, 11 + uint32_t(type));
  const auto x = gaussian(size_t(n_tokens * kIn), 5);
  const auto bias = gaussian(kRows, 6);
  std::vector<float> want(size_t(n_tokens * kRows));
  Weight host_bias;
  host_bias.type = WT::F32;
  host_bias.shape = {kRows};
  host_bias.data = bias.data();
  cpu_.matmul(w.host_w, x.data(), n_tokens, want.data(), &host_bias);

  auto dx = upload(x);
  auto dbias = upload(bias);
  auto dy = zeros(want.size());
  Weight gpu_bias = host_bias;
  gpu_bias.data = dbias.data();
  gpu_->matmul(w.gpu_w, dx.f32(), n_tokens, dy.f32(), &gpu_bias);
  const auto got = download(dy, want.size());
  EXPECT_LT(normalized_error(got, want), matmul_tolerance(type)) << type_name(type) << ", " << n_tokens << " tokens";
}

std::vector<MatmulCase> matmul_cases() {
  std::vector<MatmulCase> out;
  for (WT t : {WT::F32, WT::F16, WT::BF16, WT::Q4_0, WT::Q4_1, WT::Q5_0, WT::Q5_1, WT::Q8_0, WT::Q2_K, WT::Q3_K,
               WT::Q4_K, WT::Q5_K, WT::Q6_K, WT::IQ4_NL, WT::IQ4_XS})
    for (int64_t n : {1, 3, 8, 33})  // 1-8: the matrix-vector kernels; 33: cuBLAS on f16 tiles
      out.push_back({t, n});
  return out;
}

INSTANTIATE_TEST_SUITE_P(AllTypes, CudaMatmul, ::testing::ValuesIn(matmul_cases()),
                         [](const auto& info) {
                           return std::string(type_name(info.param.type)) + "_" + std::to_string(info.param.n_tokens) +
                                  "tokens";
                         });

// 5 tokens take the matrix-vector kernels, 40 the grouped expert GEMM (columns sorted by expert, one
// cuBLAS GEMM per expert); expert 5 is routed no token.
TEST_F(CudaOps, MatmulIdMatchesTheCpuForSharedAndPerSlotInputs) {
  constexpr int64_t kExperts = 6, kRows = 40, kIn = 256;
  constexpr int kUsed = 3;
  for (int64_t n_tokens : {5, 40}) {
    for (WT type : {WT::Q4_K, WT::Q8_0, WT::F16, WT::Q5_K}) {
      auto w = make_weight(type, {kExperts, kRows, kIn}, 21);
      std::vector<int32_t> ids(size_t(n_tokens * kUsed));
      for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 7 + 1) % (kExperts - 1));
      for (bool per_slot : {false, true}) {
        const auto x = gaussian(size_t((per_slot ? n_tokens * kUsed : n_tokens) * kIn), 8);
        std::vector<float> want(size_t(n_tokens * kUsed * kRows));
        cpu_.matmul_id(w.host_w, x.data(), per_slot, ids.data(), n_tokens, kUsed, want.data());
        auto dx = upload(x);
        auto dids = upload(ids);
        auto dy = zeros(want.size());
        gpu_->matmul_id(w.gpu_w, dx.f32(), per_slot, static_cast<const int32_t*>(dids.data()), n_tokens, kUsed,
                        dy.f32());
        EXPECT_LT(normalized_error(download(dy, want.size()), want), matmul_tolerance(type))
            << type_name(type) << (per_slot ? ", per slot, " : ", shared, ") << n_tokens << " tokens";
      }
    }
  }
}

TEST_F(CudaOps, MatmulIdSwigluMatchesTheCpuSplitAndFused) {
  constexpr int64_t kExperts = 4, kFf = 32, kIn = 256;
  constexpr int kUsed = 2;
  auto gate = make_weight(WT::Q4_K, {kExperts, kFf, kIn}, 31);
  auto up = make_weight(WT::Q4_K, {kExperts, kFf, kIn}, 32);
  auto fused = make_weight(WT::Q8_0, {kExperts, 2 * kFf, kIn}, 33);
  for (int64_t n_tokens : {3, 40}) {  // matrix-vector kernels; grouped GEMM
    std::vector<int32_t> ids(size_t(n_tokens * kUsed));
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 3 + i / 5) % kExperts);
    const auto x = gaussian(size_t(n_tokens * kIn), 9);
    auto dx = upload(x);
    auto dids = upload(ids);
    for (bool split : {true, false}) {
      std::vector<float> want(size_t(n_tokens * kUsed * kFf));
      const Weight& g_host = split ? gate.host_w : fused.host_w;
      const Weight& g_gpu = split ? gate.gpu_w : fused.gpu_w;
      cpu_.matmul_id_swiglu(g_host, split ? &up.host_w : nullptr, x.data(), ids.data(), n_tokens, kUsed, want.data());
      auto dy = zeros(want.size());
      gpu_->matmul_id_swiglu(g_gpu, split ? &up.gpu_w : nullptr, dx.f32(), static_cast<const int32_t*>(dids.data()),
                             n_tokens, kUsed, dy.f32());
      EXPECT_LT(normalized_error(download(dy, want.size()), want), 2e-2)
          << (split ? "split, " : "fused, ") << n_tokens << " tokens";
    }
  }
}

TEST_F(CudaOps, AnExpertIdOutOfRangeInAPrefillBatchIsAnErrorNamingIt) {
  auto w = make_weight(WT::Q8_0, {2, 8, 64}, 3);
  auto dx = upload(gaussian(64 * 20, 1));
  std::vector<int32_t> ids(20, 1);
  ids[13] = 9;
  auto dids = upload(ids);
  auto dy = zeros(8 * 20);
  gpu_->matmul_id(w.gpu_w, dx.f32(), false, static_cast<const int32_t*>(dids.data()), 20, 1, dy.f32());
  const Status s = gpu_->synchronize();
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("expert id 9"), std::string::npos) << s.message();
}

TEST_F(CudaOps, AnExpertIdOutOfRangeFailsAtSynchronizeAndSticks) {
  auto w = make_weight(WT::Q8_0, {2, 8, 64}, 3);
  auto dx = upload(gaussian(64, 1));
  auto dids = upload(std::vector<int32_t>{7});
  auto dy = zeros(8);
  gpu_->matmul_id(w.gpu_w, dx.f32(), false, static_cast<const int32_t*>(dids.data()), 1, 1, dy.f32());
  const Status s = gpu_->synchronize();
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("expert id 7"), std::string::npos) << s.message();
  EXPECT_FALSE(gpu_->synchronize().is_ok());
}

// ---- rows, norm, rope, elementwise

TEST_F(CudaOps, GetRowsDequantizesLikeTheReference) {
  constexpr int64_t kRows = 10, kIn = 512;
  const std::vector<int32_t> ids = {9, 0, 3, 3};
  for (WT type : {WT::F32, WT::F16, WT::BF16, WT::Q4_0, WT::Q4_1, WT::Q5_0, WT::Q5_1, WT::Q8_0, WT::Q2_K, WT::Q3_K,
                  WT::Q4_K, WT::Q5_K, WT::Q6_K, WT::IQ4_NL, WT::IQ4_XS}) {
    auto w = make_weight(type, {kRows, kIn}, 41);
    std::vector<float> want(ids.size() * kIn);
    cpu_.get_rows(w.host_w, ids, want.data());
    auto dids = upload(ids);
    auto dy = zeros(want.size());
    gpu_->get_rows(w.gpu_w, {static_cast<const int32_t*>(dids.data()), ids.size()}, dy.f32());
    EXPECT_LT(normalized_error(download(dy, want.size()), want), 1e-6) << type_name(type);
  }
}

TEST_F(CudaOps, RmsNormMatchesTheCpu) {
  constexpr int64_t kRows = 7, kN = 640;
  const auto x = gaussian(kRows * kN, 2), wv = gaussian(kN, 3);
  Weight w;
  w.type = WT::F32;
  w.shape = {kN};
  w.data = wv.data();
  std::vector<float> want(x.size());
  cpu_.rms_norm(x.data(), &w, kRows, kN, 1e-6f, want.data());
  auto dx = upload(x);
  auto dw = upload(wv);
  auto dy = zeros(x.size());
  Weight gw = w;
  gw.data = dw.data();
  gpu_->rms_norm(dx.f32(), &gw, kRows, kN, 1e-6f, dy.f32());
  EXPECT_LT(normalized_error(download(dy, x.size()), want), 1e-5);
}

TEST_F(CudaOps, RopeMatchesTheCpuNormalNeoxYarnAndFreqFactors) {
  constexpr int kHead = 4, kDim = 128;
  const std::vector<int32_t> pos = {0, 1, 17, 300, 4095};
  const int64_t n_tokens = int64_t(pos.size());
  const auto factors = [] {
    std::vector<float> f(32);
    for (size_t i = 0; i < f.size(); ++i) f[i] = 1.0f + float(i) * 0.25f;
    return f;
  }();
  auto dpos = upload(pos);
  auto dfactors = upload(factors);
  for (int variant = 0; variant < 4; ++variant) {
    RopeParams p;
    p.kind = variant == 1 ? RopeKind::Neox : RopeKind::Normal;
    p.n_rot = variant == 3 ? 64 : kDim;  // partial rotation: the rest passes through
    p.freq_base = 10000;
    if (variant == 2) {  // YaRN
      p.ext_factor = 1;
      p.freq_scale = 0.25f;
      p.n_ctx_orig = 4096;
    }
    const auto x = gaussian(size_t(n_tokens * kHead * kDim), 4);
    std::vector<float> want = x;
    RopeParams cpu_p = p;
    if (variant == 3) cpu_p.freq_factors = factors.data();
    cpu_.rope(want.data(), n_tokens, kHead, kDim, pos.data(), cpu_p);
    auto dx = upload(x);
    RopeParams gpu_p = p;
    if (variant == 3) gpu_p.freq_factors = dfactors.f32();
    gpu_->rope(dx.f32(), n_tokens, kHead, kDim, static_cast<const int32_t*>(dpos.data()), gpu_p);
    EXPECT_LT(normalized_error(download(dx, x.size()), want), 1e-5) << "variant " << variant;
  }
}

TEST_F(CudaOps, ElementwiseOpsMatchTheCpu) {
  constexpr int64_t kN = 3000;
  const auto a = gaussian(kN, 1, 3.0f), b = gaussian(kN, 2);
  auto da = upload(a);
  auto db = upload(b);
  auto run = [&](const char* what, auto cpu_op, auto gpu_op) {
    std::vector<float> want(kN);
    cpu_op(want.data());
    auto dy = zeros(kN);
    gpu_op(dy.f32());
    EXPECT_LT(normalized_error(download(dy, kN), want), 1e-5) << what;
  };
  run("add", [&](float* y) { cpu_.add(a.data(), b.data(), kN, y); }, [&](float* y) { gpu_->add(da.f32(), db.f32(), kN, y); });
  run("swiglu", [&](float* y) { cpu_.swiglu(a.data(), b.data(), kN, y); },
      [&](float* y) { gpu_->swiglu(da.f32(), db.f32(), kN, y); });
  run("geglu", [&](float* y) { cpu_.geglu(a.data(), b.data(), kN, y); },
      [&](float* y) { gpu_->geglu(da.f32(), db.f32(), kN, y); });
  run("scale", [&](float* y) { std::memcpy(y, a.data(), kN * 4); cpu_.scale(y, kN, 0.37f); },
      [&](float* y) { gpu_->copy_2d(da.f32(), kN, y, kN, 1, kN); gpu_->scale(y, kN, 0.37f); });
  run("softcap", [&](float* y) { std::memcpy(y, a.data(), kN * 4); cpu_.softcap(y, kN, 2.0f); },
      [&](float* y) { gpu_->copy_2d(da.f32(), kN, y, kN, 1, kN); gpu_->softcap(y, kN, 2.0f); });
  // 3 rows of 2 terms of 500, and a strided copy of 6 rows of 100 out of 500.
  run("weighted_sum", [&](float* y) { cpu_.weighted_sum(a.data(), b.data(), 3, 2, 500, y); },
      [&](float* y) { gpu_->weighted_sum(da.f32(), db.f32(), 3, 2, 500, y); });
  run("copy_2d", [&](float* y) { cpu_.copy_2d(a.data(), 500, y, 100, 6, 100); },
      [&](float* y) { gpu_->copy_2d(da.f32(), 500, y, 100, 6, 100); });
}

TEST_F(CudaOps, HadamardMatchesTheCpu) {
  for (int block : {32, 128, 512}) {
    const auto x = gaussian(4 * 1024, uint32_t(block));
    std::vector<float> want = x;
    cpu_.hadamard(want.data(), 4, 1024, block);
    auto dx = upload(x);
    gpu_->hadamard(dx.f32(), 4, 1024, block);
    EXPECT_LT(normalized_error(download(dx, x.size()), want), 1e-5) << "block " << block;
  }
}

// ---- KV cache and attention

struct AttnSetup {
  int n_head = 8, n_head_kv = 2, head_dim = 128;
  int64_t n_cells = 40, n_tokens = 3;
};

TEST_F(CudaOps, KvStoreWritesTheCpusBytesForF16AndQ8_0) {
  constexpr int64_t kRow = 256, kCells = 8, kTokens = 3;
  const std::vector<int32_t> cells = {5, 0, 7};
  const auto k = gaussian(kTokens * kRow, 1), v = gaussian(kTokens * kRow, 2);
  auto dk = upload(k);
  auto dv = upload(v);
  auto dcells = upload(cells);
  for (WT t : {WT::F16, WT::Q8_0, WT::F32, WT::BF16}) {
    const size_t bytes = row_bytes(t, kRow) * kCells;
    std::vector<uint8_t> want_k(bytes, 0), want_v(bytes, 0);
    cpu_.kv_store(k.data(), v.data(), kTokens, kRow, kRow, cells.data(), t, t, want_k.data(), want_v.data());
    auto ck = upload(std::vector<uint8_t>(bytes, 0));
    auto cv = upload(std::vector<uint8_t>(bytes, 0));
    gpu_->kv_store(dk.f32(), dv.f32(), kTokens, kRow, kRow, static_cast<const int32_t*>(dcells.data()), t, t, ck.data(),
                   cv.data());
    std::vector<uint8_t> got_k(bytes), got_v(bytes);
    gpu_->copy_to_host(got_k.data(), ck.data(), bytes);
    gpu_->copy_to_host(got_v.data(), cv.data(), bytes);
    ASSERT_TRUE(gpu_->synchronize().is_ok());
    EXPECT_EQ(got_k, want_k) << type_name(t);
    EXPECT_EQ(got_v, want_v) << type_name(t);
  }
}

TEST_F(CudaOps, AttentionMatchesTheCpuWithGqaSequencesWindowAndSoftcap) {
  const AttnSetup s;
  const int64_t row = int64_t(s.n_head_kv) * s.head_dim;
  // Cells: two sequences interleaved, one empty cell; tokens of sequence 0 at positions 18, 19 and of
  // sequence 1 at 17.
  std::vector<int32_t> cell_pos(s.n_cells), cell_seq(s.n_cells);
  for (int64_t c = 0; c < s.n_cells; ++c) {
    cell_pos[c] = int32_t(c / 2);
    cell_seq[c] = int32_t(c % 2);
  }
  cell_pos[6] = -1;
  const std::vector<int32_t> token_pos = {18, 19, 17}, token_seq = {0, 0, 1};
  const auto q = gaussian(size_t(s.n_tokens * s.n_head * s.head_dim), 1);
  const auto kf = gaussian(size_t(s.n_cells * row), 2), vf = gaussian(size_t(s.n_cells * row), 3);
  for (WT t : {WT::F16, WT::Q8_0}) {
    for (int variant = 0; variant < 2; ++variant) {
      std::vector<uint8_t> kc(row_bytes(t, row) * size_t(s.n_cells)), vc(kc.size());
      for (int64_t c = 0; c < s.n_cells; ++c) {
        quant::quantize_row(t, kf.data() + c * row, kc.data() + size_t(c) * row_bytes(t, row), row);
        quant::quantize_row(t, vf.data() + c * row, vc.data() + size_t(c) * row_bytes(t, row), row);
      }
      AttentionArgs a;
      a.n_tokens = s.n_tokens;
      a.n_head = s.n_head;
      a.n_head_kv = s.n_head_kv;
      a.head_dim_k = a.head_dim_v = s.head_dim;
      a.scale = 1.0f / std::sqrt(float(s.head_dim));
      a.softcap = variant == 1 ? 5.0f : 0.0f;
      a.sliding_window = variant == 1 ? 4 : 0;
      a.k_type = a.v_type = t;
      a.n_cells = s.n_cells;
      std::vector<float> want(size_t(s.n_tokens * s.n_head * s.head_dim));
      AttentionArgs ca = a;
      ca.q = q.data();
      ca.out = want.data();
      ca.token_pos = token_pos.data();
      ca.token_seq = token_seq.data();
      ca.k = kc.data();
      ca.v = vc.data();
      ca.cell_pos = cell_pos.data();
      ca.cell_seq = cell_seq.data();
      cpu_.attention(ca);

      auto dq = upload(q);
      auto dout = zeros(want.size());
      auto dtp = upload(token_pos);
      auto dts = upload(token_seq);
      auto dk = upload(kc);
      auto dv = upload(vc);
      auto dcp = upload(cell_pos);
      auto dcs = upload(cell_seq);
      AttentionArgs ga = a;
      ga.q = dq.f32();
      ga.out = dout.f32();
      ga.token_pos = static_cast<const int32_t*>(dtp.data());
      ga.token_seq = static_cast<const int32_t*>(dts.data());
      ga.k = dk.data();
      ga.v = dv.data();
      ga.cell_pos = static_cast<const int32_t*>(dcp.data());
      ga.cell_seq = static_cast<const int32_t*>(dcs.data());
      gpu_->attention(ga);
      EXPECT_LT(normalized_error(download(dout, want.size()), want), t == WT::F16 ? 2e-3 : 2e-2)
          << type_name(t) << " variant " << variant;
    }
  }
}

// DeepSeek's absorbed MLA as deepseek2.cpp calls it: one latent KV head for all query heads, K rows of
// [rope key 64, latent 512], V the latent part of the same rows. 20 heads: a full block of 16 and a
// partial one; 300 cells: three chunks of 128, one partial. The same tolerances as above.
TEST_F(CudaOps, MlaAttentionMatchesTheCpuAndIsBatchInvariant) {
  constexpr int kHead = 20, kRope = 64, kLat = 512, kDk = kRope + kLat;
  constexpr int64_t kCells = 300, kTokens = 64;  // 64 tokens x 2 head blocks: one block runs every chunk
  std::vector<int32_t> cell_pos(kCells), cell_seq(kCells);
  for (int64_t c = 0; c < kCells; ++c) {
    cell_pos[c] = int32_t(c / 2);
    cell_seq[c] = int32_t(c % 2);
  }
  cell_pos[130] = -1;
  // Token 0 (sequence 0 at 149) sees cells in all three chunks; the rest, other positions of both.
  std::vector<int32_t> token_pos(kTokens), token_seq(kTokens);
  for (int64_t t = 0; t < kTokens; ++t) {
    token_pos[t] = t == 0 ? 149 : int32_t((t * 37) % 150);
    token_seq[t] = int32_t(t % 2);
  }
  const auto q = gaussian(size_t(kTokens * kHead * kDk), 1);
  const auto kf = gaussian(size_t(kCells * kDk), 2);
  auto dq = upload(q);
  auto dtp = upload(token_pos);
  auto dts = upload(token_seq);
  auto dcp = upload(cell_pos);
  auto dcs = upload(cell_seq);
  for (WT t : {WT::F16, WT::Q8_0}) {
    const size_t rb = row_bytes(t, kDk);
    std::vector<uint8_t> kc(rb * size_t(kCells));
    for (int64_t c = 0; c < kCells; ++c) quant::quantize_row(t, kf.data() + c * kDk, kc.data() + size_t(c) * rb, kDk);
    AttentionArgs a;
    a.n_tokens = kTokens;
    a.n_head = kHead;
    a.n_head_kv = 1;
    a.head_dim_k = kDk;
    a.head_dim_v = kLat;
    a.scale = 1.0f / std::sqrt(float(192));  // V2's (nope + rope) head: the scale is not 1/sqrt(dk)
    a.k_type = a.v_type = t;
    a.k_stride = a.v_stride = kDk;
    a.n_cells = kCells;
    std::vector<float> want(size_t(kTokens * kHead * kLat));
    AttentionArgs ca = a;
    ca.q = q.data();
    ca.out = want.data();
    ca.token_pos = token_pos.data();
    ca.token_seq = token_seq.data();
    ca.k = kc.data();
    ca.v = kc.data() + row_bytes(t, kRope);
    ca.cell_pos = cell_pos.data();
    ca.cell_seq = cell_seq.data();
    cpu_.attention(ca);

    auto dk = upload(kc);
    auto dout = zeros(want.size());
    AttentionArgs ga = a;
    ga.q = dq.f32();
    ga.out = dout.f32();
    ga.token_pos = static_cast<const int32_t*>(dtp.data());
    ga.token_seq = static_cast<const int32_t*>(dts.data());
    ga.k = dk.data();
    ga.v = static_cast<const uint8_t*>(dk.data()) + row_bytes(t, kRope);
    ga.cell_pos = static_cast<const int32_t*>(dcp.data());
    ga.cell_seq = static_cast<const int32_t*>(dcs.data());
    gpu_->attention(ga);
    const auto got = download(dout, want.size());
    EXPECT_LT(normalized_error(got, want), t == WT::F16 ? 2e-3 : 2e-2) << type_name(t);

    // Token 0 alone: a decode step, whose chunks run in blocks of their own and are merged after.
    ga.n_tokens = 1;
    auto dout1 = zeros(size_t(kHead * kLat));
    ga.out = dout1.f32();
    gpu_->attention(ga);
    const auto alone = download(dout1, size_t(kHead * kLat));
    EXPECT_TRUE(std::equal(alone.begin(), alone.end(), got.begin())) << type_name(t) << ": not batch-invariant";
  }
}

// ---- the device itself

TEST_F(CudaOps, CopiesLargerThanTheStagingRingRoundTripInOrder) {
  const auto x = gaussian(size_t(20) << 20, 7);  // 80 MB: chunks wrap the 32 MiB pinned ring
  auto d = upload(x);
  EXPECT_EQ(download(d, x.size()), x);
}

TEST_F(CudaOps, AnAllocationPastTheDeviceMemoryIsAnErrorWithTheNumbers) {
  auto r = gpu_->alloc(probe().devices[0].total_bytes * 2);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::OutOfMemory);
  EXPECT_NE(r.error().message().find("cannot allocate"), std::string::npos) << r.error().message();
  EXPECT_TRUE(gpu_->synchronize().is_ok()) << "an allocation failure is not sticky";
}

}  // namespace
}  // namespace tandem::cuda
