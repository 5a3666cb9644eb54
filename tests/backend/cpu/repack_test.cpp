// Matrices repacked at load (kernels.h PackFn / PackedGemmFn, CpuBackend::repack): the packed panels give
// the products of a double-precision reference from src/quant's dequantizers, a token's outputs the same
// bits whatever shares its call, and the backend falls back to the file's layout for views and after
// release_repack. A model (synth tiny-llama in Q8_0) loads with its matrices repacked by default and with
// none under ModelLoadOptions::repack = false (--no-repack), its logits the same within tolerance.
//
// Tolerance: |y - ref| <= 1e-5 * sum_i |w_i * a_i| (a: the dequantized activations), as
// matmul_test.cpp: exact integer block sums scaled in float; a wrong code, scale or panel row fails it by
// orders of magnitude.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/kernel_table.h"
#include "backend/cpu/kernels.h"
#include "engine/context.h"
#include "expert/layout.h"
#include "quant/fp16.h"
#include "quant/quant.h"
#include "ops_test_util.h"
#include "test_data.h"

namespace tandem::cpu {
namespace {

using WT = WeightType;

using test::make_matrix;
using test::Matrix;

std::vector<float> activations(int64_t n_tokens, int64_t n_in, uint32_t seed) {
  return test::random_floats(size_t(n_tokens * n_in), seed);
}

// Checks y ([n_tokens, n_rows]) against the reference of the dequantized weights and activations quantized as
// the kernels take them (Q8_0, Q8_1 for Q4_1/Q5_1, or Q8_K for the k-quants). Q8_1's blocks carry s = d * sum(q)
// as f16, which llama.cpp's Q4_1/Q5_1 dots take for sum(a) in the min's term: so does the reference
// (matmul_test.cpp's).
void expect_matches_reference(const Matrix& m, const std::vector<float>& x, int64_t n_tokens,
                              const std::vector<float>& y, const std::string& what) {
  std::vector<float> w(size_t(m.n_in * m.n_rows)), a(size_t(m.n_in));
  for (int64_t r = 0; r < m.n_rows; ++r)
    quant::dequantize_row(m.type, m.data.data() + size_t(r) * m.stride(), w.data() + r * m.n_in, m.n_in);
  const WT act = activation_type(m.type);
  std::vector<uint8_t> qa(activation_row_bytes(m.type, m.n_in));
  int bad = 0;
  for (int64_t t = 0; t < n_tokens && bad < 5; ++t) {
    kernels_for(Isa::Generic).quantize_act[uint32_t(m.type)](x.data() + t * m.n_in, qa.data(), m.n_in);
    std::vector<double> s_minus_sum(size_t(m.n_in / 32), 0.0);  // Q8_1: s - sum(a) per block
    if (act == WT::Q8_1) {
      const auto* b = reinterpret_cast<const BlockQ8_1*>(qa.data());
      for (int64_t i = 0; i < m.n_in / 32; ++i) {
        double sum = 0;
        for (int j = 0; j < 32; ++j) sum += a[size_t(32 * i + j)] = quant::fp16_to_f32(b[i].d) * float(b[i].qs[j]);
        s_minus_sum[size_t(i)] = double(quant::fp16_to_f32(b[i].s)) - sum;
      }
    } else {
      quant::dequantize_row(act, qa.data(), a.data(), m.n_in);
    }
    for (int64_t r = 0; r < m.n_rows && bad < 5; ++r) {
      double sum = 0, mag = 0;
      for (int64_t i = 0; i < m.n_in; ++i) {
        sum += double(w[size_t(r * m.n_in + i)]) * a[size_t(i)];
        mag += std::fabs(double(w[size_t(r * m.n_in + i)]) * a[size_t(i)]);
      }
      if (act == WT::Q8_1)
        for (int64_t i = 0; i < m.n_in / 32; ++i) {
          uint16_t mh;  // the block's min, after its f16 d
          std::memcpy(&mh, m.data.data() + size_t(r) * m.stride() + size_t(i) * block_bytes(m.type) + 2, 2);
          sum += double(quant::fp16_to_f32(mh)) * s_minus_sum[size_t(i)];
        }
      const double got = y[size_t(t * m.n_rows + r)];
      if (!(std::fabs(got - sum) <= 1e-5 * mag)) {
        ++bad;
        ADD_FAILURE() << what << " " << type_name(m.type) << " token " << t << " row " << r << ": got " << got
                      << ", want " << sum << " (sum|w*a| " << mag << ")";
      }
    }
  }
}

// Every level and micro-architecture table with packed kernels, and the types it packs.
struct Packed {
  Isa isa;
  Uarch uarch;
  WT type;
};
std::vector<Packed> packed_kernels() {
  std::vector<Packed> out;
  for (Isa isa : {Isa::Generic, Isa::Avx2, Isa::Avx512, Isa::Amx})
    for (Uarch uarch : {Uarch::Intel, Uarch::Zen}) {
      if (!isa_supported(isa)) continue;
      for (uint32_t t = 0; t < kWeightTypeIdLimit; ++t)
        if (kernels_for(isa, uarch).pack[t]) out.push_back({isa, uarch, WT(t)});
    }
  return out;
}

// Packed panels in a 64-byte aligned buffer, as PackFn writes them.
struct Panels {
  explicit Panels(size_t n) : size(n) {}
  size_t size;
  std::unique_ptr<uint8_t, decltype(&std::free)> bytes{static_cast<uint8_t*>(std::aligned_alloc(64, size)), std::free};
  uint8_t* data() const { return bytes.get(); }
};

// y of a packed matrix through the table's kernels, one call for n_tokens tokens.
std::vector<float> packed_product(const CpuKernels& k, const Matrix& m, const Panels& panels,
                                  const float* x, int64_t n_tokens) {
  const size_t ab = activation_row_bytes(m.type, m.n_in);
  std::vector<uint8_t> act(ab * size_t(n_tokens));
  for (int64_t t = 0; t < n_tokens; ++t) k.quantize_act[uint32_t(m.type)](x + t * m.n_in, act.data() + t * ab, m.n_in);
  std::vector<float> y(size_t(n_tokens * m.n_rows), NAN);
  k.packed_gemm[uint32_t(m.type)](m.n_in, panels.data(), m.n_rows, act.data(), ab, n_tokens, y.data(),
                                  size_t(m.n_rows));
  return y;
}

TEST(Repack, TablesPackTheSameTypesInBothTablesOfALevel) {
  for (Isa isa : {Isa::Generic, Isa::Avx2, Isa::Avx512, Isa::Amx})
    for (Uarch uarch : {Uarch::Intel, Uarch::Zen}) {
      if (!isa_supported(isa)) continue;
      const CpuKernels &a = kernels_for(isa, uarch, false), &b = kernels_for(isa, uarch, true);
      for (uint32_t t = 0; t < kWeightTypeIdLimit; ++t) {
        EXPECT_EQ(a.pack[t], b.pack[t]) << isa_name(isa) << "/" << uarch_name(uarch) << " type " << t;
        EXPECT_EQ(a.packed_gemm[t], b.packed_gemm[t]) << isa_name(isa) << "/" << uarch_name(uarch) << " type " << t;
        EXPECT_EQ(bool(a.pack[t]), bool(a.packed_gemm[t]));
      }
    }
}

TEST(Repack, PackedPanelsMatchTheReferenceAndAreBatchInvariant) {
  const std::vector<Packed> all = packed_kernels();
  if (all.empty()) GTEST_SKIP() << "no level this CPU supports repacks (AVX-512 does)";
  // Seven panels, the last partial: a few-token call's groups of four, two and one. Rows of Gemma 3 (640) and
  // of whole 64-byte panels' scales (512).
  const int64_t n_rows = 101;
  constexpr int64_t kMaxTokens = 33;
  for (const int64_t n_in : {640, 512})
  for (const Packed& p : all) {
    if (n_in % block_size(p.type)) continue;  // Gemma's 640 is no whole number of Q4_K's super-blocks
    const auto x = activations(kMaxTokens, n_in, 3);
    const CpuKernels& k = kernels_for(p.isa, p.uarch);
    const std::string what = std::string(isa_name(p.isa)) + "/" + uarch_name(p.uarch) + ", n_in " + std::to_string(n_in);
    const Matrix m = make_matrix(p.type, n_in, n_rows, uint32_t(p.type) + 11);
    const Panels panels(k.pack[uint32_t(p.type)](n_in, nullptr, 0, n_rows, nullptr));
    ASSERT_EQ(panels.size % 64, 0u) << what;
    EXPECT_EQ(k.pack[uint32_t(p.type)](n_in, m.data.data(), m.stride(), n_rows, panels.data()), panels.size);
    const std::vector<float> all_tokens = packed_product(k, m, panels, x.data(), kMaxTokens);
    expect_matches_reference(m, x, kMaxTokens, all_tokens, what);
    // The same bits for a token alone, in a few-token call (the server's decode steps) or at another place.
    for (int64_t n : {1, 2, 3, 4, 5, 8, 9, 16, 17}) {
      for (int64_t t0 : {int64_t(0), kMaxTokens - n}) {
        const std::vector<float> y = packed_product(k, m, panels, x.data() + t0 * n_in, n);
        EXPECT_EQ(std::memcmp(y.data(), all_tokens.data() + t0 * n_rows, y.size() * sizeof(float)), 0)
            << what << " " << type_name(p.type) << ": tokens " << t0 << ".." << t0 + n - 1 << " in a call of " << n;
      }
    }
  }
}

TEST(Repack, BackendMultipliesTheCopyAndFallsBackForViewsAndAfterRelease) {
  if (!kernels().pack[uint32_t(WT::Q8_0)]) GTEST_SKIP() << "the host's kernels repack no Q8_0 (kernels.h)";
  const int64_t n_in = 256, n_rows = 200, n_tokens = 5;  // several chunks of panels across the threads
  const Matrix m = make_matrix(WT::Q8_0, n_in, n_rows, 5);
  const Weight w = m.weight();
  const auto x = activations(n_tokens, n_in, 9);
  CpuBackend packed(2), plain(2);
  auto bytes = packed.repack(w);
  ASSERT_TRUE(bytes.has_value()) << bytes.status().message();
  EXPECT_EQ(*bytes, kernels().pack[uint32_t(WT::Q8_0)](n_in, nullptr, 0, n_rows, nullptr));
  std::vector<float> y(size_t(n_tokens * n_rows)), y_plain(y.size());
  packed.matmul(w, x.data(), n_tokens, y.data(), nullptr);
  plain.matmul(w, x.data(), n_tokens, y_plain.data(), nullptr);
  expect_matches_reference(m, x, n_tokens, y, "backend, packed");
  // One token alone: the same bits as inside the five-token call, threads and chunks notwithstanding.
  std::vector<float> y1(static_cast<size_t>(n_rows));
  packed.matmul(w, x.data() + 2 * n_in, 1, y1.data(), nullptr);
  EXPECT_EQ(std::memcmp(y1.data(), y.data() + 2 * n_rows, y1.size() * sizeof(float)), 0);
  // A view of the first 100 rows shares the data pointer, not the shape: the file's layout serves it.
  Weight view = w;
  view.shape = {100, n_in};
  std::vector<float> y_view(size_t(n_tokens * 100)), y_view_plain(y_view.size());
  packed.matmul(view, x.data(), n_tokens, y_view.data(), nullptr);
  plain.matmul(view, x.data(), n_tokens, y_view_plain.data(), nullptr);
  EXPECT_EQ(std::memcmp(y_view.data(), y_view_plain.data(), y_view.size() * sizeof(float)), 0);
  packed.release_repack(w);
  packed.matmul(w, x.data(), n_tokens, y.data(), nullptr);
  EXPECT_EQ(std::memcmp(y.data(), y_plain.data(), y.size() * sizeof(float)), 0);
}

TEST(Repack, TypesWithoutPackedKernelsAreLeftAsTheyAre) {
  CpuBackend b(1);
  const Matrix m = make_matrix(WT::F16, 256, 16, 1);  // read at memory speed as it is
  auto bytes = b.repack(m.weight());
  ASSERT_TRUE(bytes.has_value());
  EXPECT_EQ(*bytes, 0u);
}

// The last position's logits of a short prompt fed as one batch.
std::vector<float> prompt_logits(model::Model& m) {
  auto c = Context::create(m, ContextOptions{.n_ctx = 64, .n_batch = 16, .n_ubatch = 16});
  EXPECT_TRUE(c.has_value());
  Batch b;
  const std::vector<int32_t> prompt{1, 5, 9, 200, 37, 44, 8};
  for (size_t i = 0; i < prompt.size(); ++i) b.add(prompt[i], int32_t(i), 0, i + 1 == prompt.size());
  EXPECT_TRUE((*c)->decode(b).is_ok());
  const auto l = (*c)->logits(0);
  return {l.begin(), l.end()};
}

TEST(Repack, ModelRepacksItsQ8_0MatricesByDefaultAndNoneWithoutRepack) {
  if (!kernels().pack[uint32_t(WT::Q8_0)]) GTEST_SKIP() << "the host's kernels repack no Q8_0 (kernels.h)";
  std::string why;
  const std::string path = test_data::synth_model("tiny-llama", quant::FileType::Q8_0, &why);
  if (path.empty()) GTEST_SKIP() << why;
  CpuBackend b1(2), b2(2);
  auto packed = model::Model::load(path, {}, b1);
  auto plain = model::Model::load(path, {.repack = false}, b2);
  ASSERT_TRUE(packed.has_value() && plain.has_value());
  // Its Q8_0 matrices but the token embeddings (rows read by get_rows): the copies take the file's bytes (f16
  // scales as the file's) up to the panels' padding.
  uint64_t q8_bytes = 0;
  for (const auto& t : (*packed)->tensor_infos())
    if (t.name != "token_embd.weight" && t.type == WT::Q8_0 && t.shape.size() == 2) q8_bytes += t.bytes;
  EXPECT_GT((*packed)->repacked_bytes(), 0u);
  EXPECT_LE((*packed)->repacked_bytes(), q8_bytes * 11 / 10);
  EXPECT_EQ((*plain)->repacked_bytes(), 0u);
  const std::vector<float> a = prompt_logits(**packed), b = prompt_logits(**plain);
  ASSERT_EQ(a.size(), b.size());
  // Each product matches the row kernel's to float rounding (the tests above); through the layers a rounding
  // can move an activation across a Q8_0 step (1/127 of its block's largest) in the next layer's input, so
  // the logits agree to a few such steps, and the greedy token is the same.
  float scale = 0, worst = 0;
  for (size_t i = 0; i < a.size(); ++i) scale = std::max(scale, std::fabs(b[i])), worst = std::max(worst, std::fabs(a[i] - b[i]));
  EXPECT_LE(worst, 2.f / 127 * scale) << "largest logit " << scale;
  EXPECT_EQ(std::max_element(a.begin(), a.end()) - a.begin(), std::max_element(b.begin(), b.end()) - b.begin());
  EXPECT_GT(worst, 0.f) << "repacked and plain gave the same bits: was the copy used?";
}

// The routed experts (multiplied by matmul_id) are repacked too, expert by expert, unless the file is
// larger than the memory the process may take (TANDEM_MEMORY_LIMIT stands in for a small machine here): their
// copies would not fit where the mapping's pages can be let go and read again. The other 3-D weights are small
// and always repacked.
TEST(Repack, ModelRepacksRoutedExpertsUnlessTheFileExceedsMemory) {
  if (!kernels().pack[uint32_t(WT::Q8_0)]) GTEST_SKIP() << "the host's kernels repack no Q8_0 (kernels.h)";
  std::string why;
  const std::string path = test_data::synth_model("tiny-deepseek-v3", quant::FileType::Q8_0, &why);
  if (path.empty()) GTEST_SKIP() << why;
  auto packed_experts = [](const model::Model& m) {
    int n = 0;
    for (const Weight* w : m.repacked()) n += expert::is_routed_expert_name(w->name);
    return n;
  };
  CpuBackend b1(2), b2(2), b3(2);
  auto packed = model::Model::load(path, {}, b1);
  auto plain = model::Model::load(path, {.repack = false}, b2);
  ASSERT_TRUE(packed.has_value() && plain.has_value());
  EXPECT_GT(packed_experts(**packed), 0);
  const std::vector<float> a = prompt_logits(**packed), b = prompt_logits(**plain);
  ASSERT_EQ(a.size(), b.size());
  float scale = 0, worst = 0;  // as the dense model's test above
  for (size_t i = 0; i < a.size(); ++i) scale = std::max(scale, std::fabs(b[i])), worst = std::max(worst, std::fabs(a[i] - b[i]));
  EXPECT_LE(worst, 2.f / 127 * scale) << "largest logit " << scale;
  EXPECT_EQ(std::max_element(a.begin(), a.end()) - a.begin(), std::max_element(b.begin(), b.end()) - b.begin());

  ASSERT_EQ(setenv("TANDEM_MEMORY_LIMIT", "4096", 1), 0);
  auto small = model::Model::load(path, {}, b3);
  unsetenv("TANDEM_MEMORY_LIMIT");
  ASSERT_TRUE(small.has_value()) << small.error().message();
  EXPECT_EQ(packed_experts(**small), 0);
  EXPECT_GT((*small)->repacked_bytes(), 0u) << "the 2-D matrices are still repacked";
  int per_head = 0;  // MLA's attn_k_b / attn_v_b: 3-D, not routed experts, repacked all the same
  for (const Weight* w : (*small)->repacked())
    per_head += w->shape.size() == 3 && !expert::is_routed_expert_name(w->name);
  EXPECT_EQ(per_head, 2 * int((*small)->hparams().n_layer));
}

}  // namespace
}  // namespace tandem::cpu
