// The MoE block (model/blocks.h, moe_ffn) on the CPU backend, on a small layer built in memory: the gate
// and up pass (matmul_id_swiglu) gives the bits of separate matmul_id calls plus swiglu, in the split and
// the fused ffn_gate_up_exps form alike, from the file's layout and from the experts' repacked panels (then
// within a quantization step of the former), and a decode step through the block allocates nothing once its
// buffers have grown (counted by replacing operator new in this test binary).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/kernels.h"
#include "model/blocks.h"
#include "quant/quant.h"

namespace {
std::atomic<bool> g_counting{false};
std::atomic<int64_t> g_allocations{0};
}  // namespace

// malloc and free behind new and delete, so the count sees every allocation of the binary while it is on.
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"  // GCC sees free() of new's pointer: it is malloc's
void* operator new(size_t n) {
  if (g_counting.load(std::memory_order_relaxed)) g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }

namespace tandem::model {
namespace {

constexpr int64_t kEmbd = 256, kExpert = 8, kUsed = 2, kFf = 256, kShared = 256;  // Q4_K's 256-value blocks

// One quantized (or F32) matrix with its bytes; shape outermost first.
struct Matrix {
  std::vector<uint8_t> bytes;
  Weight w;
};

Matrix make_matrix(const std::string& name, WeightType type, std::vector<int64_t> shape, const std::vector<float>& values,
                   Backend& b) {
  Matrix m;
  const int64_t n = shape.back();
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < shape.size(); ++i) rows *= shape[i];
  const size_t stride = row_bytes(type, n);
  m.bytes.resize(stride * size_t(rows));
  for (int64_t r = 0; r < rows; ++r) quant::quantize_row(type, values.data() + r * n, m.bytes.data() + size_t(r) * stride, n);
  m.w = {name, type, shape, m.bytes.data(), stride, &b, m.bytes.size()};
  return m;
}

std::vector<float> random_values(size_t n, uint32_t seed, float scale) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

// A V3-like layer: sigmoid routing with a selection bias in 4 groups of 2 (2 kept), normalized and scaled
// weights, one shared expert. Gate and up are kept as values so the fused tensor holds the same ones.
struct Layer {
  explicit Layer(Backend& b, WeightType type) {
    const auto gate = random_values(size_t(kExpert * kFf * kEmbd), 1, 0.0625f);
    const auto up = random_values(size_t(kExpert * kFf * kEmbd), 2, 0.0625f);
    std::vector<float> gate_up;  // per expert: its gate rows, then its up rows
    for (int64_t e = 0; e < kExpert; ++e) {
      const size_t block = size_t(kFf * kEmbd), at = size_t(e) * block;
      gate_up.insert(gate_up.end(), gate.begin() + long(at), gate.begin() + long(at + block));
      gate_up.insert(gate_up.end(), up.begin() + long(at), up.begin() + long(at + block));
    }
    router = make_matrix("ffn_gate_inp", WeightType::F32, {kExpert, kEmbd}, random_values(size_t(kExpert * kEmbd), 3, 0.0625f), b);
    gate_exps = make_matrix("ffn_gate_exps", type, {kExpert, kFf, kEmbd}, gate, b);
    up_exps = make_matrix("ffn_up_exps", type, {kExpert, kFf, kEmbd}, up, b);
    gate_up_exps = make_matrix("ffn_gate_up_exps", type, {kExpert, 2 * kFf, kEmbd}, gate_up, b);
    down_exps = make_matrix("ffn_down_exps", type, {kExpert, kEmbd, kFf}, random_values(size_t(kExpert * kEmbd * kFf), 4, 0.0625f), b);
    gate_sh = make_matrix("ffn_gate_shexp", type, {kShared, kEmbd}, random_values(size_t(kShared * kEmbd), 5, 0.0625f), b);
    up_sh = make_matrix("ffn_up_shexp", type, {kShared, kEmbd}, random_values(size_t(kShared * kEmbd), 6, 0.0625f), b);
    down_sh = make_matrix("ffn_down_shexp", type, {kEmbd, kShared}, random_values(size_t(kEmbd * kShared), 7, 0.0625f), b);
    probs_b = random_values(size_t(kExpert), 8, 0.1f);
  }
  MoeWeights weights(bool fused) const {
    MoeWeights m{.gate_inp = &router.w, .exp_probs_b = probs_b.data(), .down_exps = &down_exps.w,
                 .gate_shexp = &gate_sh.w, .up_shexp = &up_sh.w, .down_shexp = &down_sh.w};
    if (fused) {
      m.gate_up_exps = &gate_up_exps.w;
    } else {
      m.gate_exps = &gate_exps.w;
      m.up_exps = &up_exps.w;
    }
    return m;
  }
  Matrix router, gate_exps, up_exps, gate_up_exps, down_exps, gate_sh, up_sh, down_sh;
  std::vector<float> probs_b;
};

const MoeConfig kConfig{.n_expert = kExpert, .n_expert_used = kUsed, .n_group = 4, .n_group_used = 2,
                        .sigmoid_gating = true, .norm_weights = true, .weights_scale = 2.5f};

std::vector<float> run_block(const MoeWeights& w, std::vector<float> x, ForwardScratch& s) {
  const int64_t n = int64_t(x.size()) / kEmbd;
  auto out = moe_ffn(w, kConfig, n, x.data(), s);
  EXPECT_TRUE(out.has_value()) << out.error().message();
  return std::vector<float>(*out, *out + n * kEmbd);
}

// The block as it ran before gate and up shared a pass: separate matmul_id calls, then swiglu.
std::vector<float> run_separately(Backend& b, const Layer& l, const std::vector<float>& x) {
  const int64_t n = int64_t(x.size()) / kEmbd;
  std::vector<float> logits(size_t(n * kExpert)), w(size_t(n * kUsed)), gate(size_t(n * kUsed * kFf)),
      up(gate.size()), down(size_t(n * kUsed * kEmbd)), out(size_t(n * kEmbd)), sg(size_t(n * kShared)),
      su(sg.size()), shared(out.size());
  std::vector<int32_t> ids(size_t(n * kUsed));
  MoeRouteScratch rs;
  b.matmul(l.router.w, x.data(), n, logits.data());
  moe_route(kConfig, logits.data(), l.probs_b.data(), n, ids.data(), w.data(), rs);
  b.matmul(l.gate_sh.w, x.data(), n, sg.data());
  b.matmul(l.up_sh.w, x.data(), n, su.data());
  b.swiglu(sg.data(), su.data(), n * kShared, sg.data());
  b.matmul(l.down_sh.w, sg.data(), n, shared.data());
  b.matmul_id(l.gate_exps.w, x.data(), false, ids.data(), n, int(kUsed), gate.data());
  b.matmul_id(l.up_exps.w, x.data(), false, ids.data(), n, int(kUsed), up.data());
  b.swiglu(gate.data(), up.data(), int64_t(gate.size()), gate.data());
  b.matmul_id(l.down_exps.w, gate.data(), true, ids.data(), n, int(kUsed), down.data());
  b.weighted_sum(down.data(), w.data(), n, int(kUsed), kEmbd, out.data());
  b.add(out.data(), shared.data(), n * kEmbd, out.data());
  return out;
}

class MoeFfn : public testing::TestWithParam<WeightType> {};

// Every expert weight and matrix of the layer repacked by b (CpuBackend::repack); whether any was.
bool repack_all(Backend& b, const Layer& l) {
  bool any = false;
  for (const Matrix* m : {&l.gate_exps, &l.up_exps, &l.gate_up_exps, &l.down_exps, &l.gate_sh, &l.up_sh, &l.down_sh}) {
    auto bytes = b.repack(m->w);
    EXPECT_TRUE(bytes.has_value()) << bytes.error().message();
    any |= bytes.has_value() && *bytes > 0;
  }
  return any;
}

TEST_P(MoeFfn, GateUpPassGivesTheBitsOfSeparateMatmulsInSplitAndFusedForm) {
  cpu::CpuBackend plain(2), packed(2);
  const Layer l(plain, GetParam()), lp(packed, GetParam());
  const bool repacked = repack_all(packed, lp);
  EXPECT_EQ(repacked, bool(cpu::kernels().pack[uint32_t(GetParam())]));
  for (int64_t n : {1, 5, 37}) {
    const auto x = random_values(size_t(n * kEmbd), 100 + uint32_t(n), 1.0f);
    std::vector<float> unpacked;
    for (bool use_packed : {false, true}) {
      const Layer& layer = use_packed ? lp : l;
      const char* form = use_packed ? " (repacked)" : "";
      const auto want = run_separately(use_packed ? packed : plain, layer, x);
      ForwardScratch split_scratch, fused_scratch;
      const auto split = run_block(layer.weights(false), x, split_scratch);
      const auto fused = run_block(layer.weights(true), x, fused_scratch);
      ASSERT_EQ(want.size(), split.size());
      EXPECT_EQ(0, std::memcmp(want.data(), split.data(), want.size() * sizeof(float))) << "split form" << form << ", n " << n;
      EXPECT_EQ(0, std::memcmp(want.data(), fused.data(), want.size() * sizeof(float))) << "fused form" << form << ", n " << n;
      if (!use_packed) {
        unpacked = want;
        continue;
      }
      // The packed kernels sum in another order: float rounding, which can move an expert's input across one
      // step of its quantized activations (1/127 of a block's largest) before down.
      float scale = 0, worst = 0;
      for (size_t i = 0; i < want.size(); ++i)
        scale = std::max(scale, std::fabs(unpacked[i])), worst = std::max(worst, std::fabs(want[i] - unpacked[i]));
      EXPECT_LE(worst, 2.f / 127 * scale) << "repacked against the file's layout, n " << n;
    }
  }
}

TEST_P(MoeFfn, DecodeStepAllocatesNothingOnceGrown) {
  for (bool repacked : {false, true}) {
    cpu::CpuBackend b(2);
    const Layer l(b, GetParam());
    if (repacked) repack_all(b, l);
    for (bool fused : {false, true}) {
      const MoeWeights w = l.weights(fused);
      ForwardScratch s;
      const auto prompt = random_values(size_t(9 * kEmbd), 11, 1.0f), token = random_values(size_t(kEmbd), 12, 1.0f);
      run_block(w, prompt, s);  // the buffers grow to the largest pass
      run_block(w, token, s);
      std::vector<float> x = token;
      g_allocations = 0;
      g_counting = true;
      auto out = moe_ffn(w, kConfig, 1, x.data(), s);
      auto again = moe_ffn(w, kConfig, 1, x.data(), s);
      g_counting = false;
      ASSERT_TRUE(out.has_value() && again.has_value());
      EXPECT_EQ(g_allocations.load(), 0) << (fused ? "fused" : "split") << " form" << (repacked ? ", repacked" : "");
    }
  }
}

TEST(MoeFfnHarness, CountsAllocations) {  // so that a zero above means none, not a counter that never ran
  g_allocations = 0;
  g_counting = true;
  void* p = ::operator new(16);
  g_counting = false;
  ::operator delete(p);
  EXPECT_EQ(g_allocations.load(), 1);
}

INSTANTIATE_TEST_SUITE_P(Types, MoeFfn, testing::Values(WeightType::Q8_0, WeightType::Q4_K, WeightType::F32),
                         [](const testing::TestParamInfo<WeightType>& i) { return std::string(type_name(i.param)); });

}  // namespace
}  // namespace tandem::model
