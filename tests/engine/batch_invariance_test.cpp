// Batch invariance at the Context (issue 11): with ContextOptions::batch_invariant, a sequence's logits
// at every position, and so its greedy tokens, are the same bits decoded alone as beside other
// sequences' prefill and decode tokens, with its own prompt cut into other chunks, at another -ub and
// another thread count. Models: stories260K (F32, or its stand-in), synth tiny-llama in Q4_K_M (Q4_K,
// Q6_K) and Q8_0, and Gemma 3 270M where fetched (sliding-window layers, GeGLU); KV caches f16 and
// q8_0; flash attention off and on.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <random>
#include <span>

#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/kernels.h"
#include "engine/context.h"
#include "test_data.h"

namespace tandem {
namespace {

// One sequence of a run: its prompt, the step it joins at, how many prompt tokens each step feeds.
struct Seq {
  std::vector<int32_t> prompt;
  int start_step = 0;
  int64_t chunk = 1 << 30;
};

// What a run gives for one sequence: a hash of the logits' bytes at every position fed (Gemma's rows are
// 1 MB), and the greedy tokens.
struct Trace {
  std::vector<uint64_t> logits;
  std::vector<int32_t> generated;
};

uint64_t fnv1a(std::span<const float> v) {
  uint64_t h = 14695981039346656037ull;
  for (const auto* p = reinterpret_cast<const uint8_t*>(v.data()); p != reinterpret_cast<const uint8_t*>(v.data() + v.size()); ++p)
    h = (h ^ *p) * 1099511628211ull;
  return h;
}

// Runs the sequences together: from its start step on, each step feeds a sequence its next prompt
// chunk or, once the prompt is in, its greedy next token, until it has generated n_gen tokens.
std::vector<Trace> run(model::Model& m, const ContextOptions& o, const std::vector<Seq>& seqs, int n_gen) {
  auto c = Context::create(m, o);
  EXPECT_TRUE(c.has_value());
  Context& ctx = **c;
  std::vector<Trace> out(seqs.size());
  std::vector<size_t> fed(seqs.size(), 0);
  for (int step = 0;; ++step) {
    Batch b;
    std::vector<std::pair<size_t, int64_t>> rows;  // (sequence, its tokens in this batch)
    for (size_t s = 0; s < seqs.size(); ++s) {
      if (step < seqs[s].start_step || int(out[s].generated.size()) >= n_gen) continue;
      const auto& p = seqs[s].prompt;
      int64_t n = 0;
      if (fed[s] < p.size()) {
        for (; n < seqs[s].chunk && fed[s] < p.size(); ++n, ++fed[s]) b.add(p[fed[s]], int32_t(fed[s]), int32_t(s), true);
      } else {
        b.add(out[s].generated.back(), int32_t(fed[s]++), int32_t(s), true);
        n = 1;
      }
      rows.emplace_back(s, n);
    }
    if (b.size() == 0) break;
    EXPECT_TRUE(ctx.decode(b).is_ok());
    int64_t i = 0;
    for (auto [s, n] : rows)
      for (int64_t k = 0; k < n; ++k, ++i) {
        auto l = ctx.logits(i);
        out[s].logits.push_back(fnv1a(l));
        if (fed[s] >= seqs[s].prompt.size() && k == n - 1)
          out[s].generated.push_back(int32_t(std::max_element(l.begin(), l.end()) - l.begin()));
      }
  }
  return out;
}

// The first position whose logits differ in any bit, or -1.
int64_t first_difference(const Trace& a, const Trace& b) {
  for (size_t p = 0; p < std::min(a.logits.size(), b.logits.size()); ++p)
    if (a.logits[p] != b.logits[p]) return int64_t(p);
  return a.logits.size() == b.logits.size() ? -1 : int64_t(std::min(a.logits.size(), b.logits.size()));
}

std::vector<int32_t> random_prompt(size_t n, int32_t n_vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> p{1};
  while (p.size() < n) p.push_back(int32_t(2 + rng() % uint32_t(n_vocab - 2)));
  return p;
}

// (model, ISA level): every level this host has; generic, whose scalar kernels are slow on tiny-llama's
// output layer, with stories260K only.
class BatchInvariance : public ::testing::TestWithParam<std::tuple<std::string, cpu::Isa>> {
 protected:
  void SetUp() override {
    const auto [model, isa] = GetParam();
    if (!cpu::isa_supported(isa)) GTEST_SKIP() << cpu::isa_name(isa) << " not supported by this CPU/OS";
    if (isa == cpu::Isa::Generic && model != "stories260K") GTEST_SKIP() << "slow at the generic level";
    std::string why, path;
    if (model == "gemma3" && isa != cpu::best_isa()) GTEST_SKIP() << "Gemma 3 270M at the best level only (time)";
    if (model == "stories260K") path = test_data::small_llama_model(&why);
    else if (model == "gemma3") path = test_data::gemma_model(&why);
    else path = test_data::synth_model("tiny-llama", *quant::parse_file_type(model), &why);
    if (path.empty()) GTEST_SKIP() << why;
    saved_isa_ = cpu::best_isa();
    ASSERT_TRUE(cpu::limit_isa(cpu::isa_name(isa)).is_ok());  // before the backends pick their ops
    backend1_ = std::make_unique<cpu::CpuBackend>(1);
    backend3_ = std::make_unique<cpu::CpuBackend>(3);
    for (auto* slot : {&one_, &three_}) {
      auto m = model::Model::load(path, {}, slot == &one_ ? *backend1_ : *backend3_);
      ASSERT_TRUE(m.has_value()) << m.error().message();
      *slot = std::move(m).value();
    }
  }
  void TearDown() override { ASSERT_TRUE(cpu::limit_isa(cpu::isa_name(saved_isa_)).is_ok()); }

  cpu::Isa saved_isa_ = cpu::best_isa();
  std::unique_ptr<cpu::CpuBackend> backend1_, backend3_;
  std::unique_ptr<model::Model> one_, three_;  // the model on one thread and on three
};

TEST_P(BatchInvariance, SequenceLogitsAreTheSameAloneAndMixed) {
  const int32_t n_vocab = int32_t(one_->output().n_rows());
  // A's 300 positions cross the flash tiles (64 positions) and chunks (256) several times.
  // Gemma (262144-token vocabulary, 12 times the work): a shorter prompt, flash attention with an f16
  // cache only.
  const bool gemma = std::get<0>(GetParam()) == "gemma3";
  const Seq a{random_prompt(gemma ? 100 : 290, n_vocab, 1)};
  const int n_gen = gemma ? 6 : 10;
  for (bool flash : {false, true}) {
    for (WeightType kv : {WeightType::F16, WeightType::Q8_0}) {
      if (one_->hparams().head_dim_k % block_size(kv) != 0) continue;  // stories260K: heads of 8
      if (gemma && (!flash || kv != WeightType::F16)) continue;
      ContextOptions o{.n_ctx = 1024, .n_batch = 512, .n_ubatch = 512, .type_k = kv, .type_v = kv,
                       .flash_attn = flash, .batch_invariant = true};
      const std::string what = std::string(flash ? "-fa on" : "-fa off") + ", KV " + std::string(type_name(kv));
      // Alone: its whole prompt in one batch, then one token per step, on one thread.
      const Trace alone = run(*one_, o, {a}, n_gen)[0];
      ASSERT_EQ(int(alone.generated.size()), n_gen);
      // Mixed, on three threads: A's prompt in chunks of 37 beside B's prefill, then decoding beside B's
      // decode, C's prefill (joining late, 20 tokens a step) and D's short prompt; cells interleaved.
      const std::vector<Seq> mixed = {{a.prompt, 0, 37},
                                      {random_prompt(23, n_vocab, 2), 0, 5},
                                      {random_prompt(60, n_vocab, 3), 8, 20},
                                      {random_prompt(3, n_vocab, 4), 10, 1}};
      ContextOptions small_ub = o;
      small_ub.n_ubatch = 7;
      for (const ContextOptions& oo : {o, small_ub}) {
        const auto traces = run(*three_, oo, mixed, n_gen);
        const int64_t p = first_difference(traces[0], alone);
        EXPECT_EQ(p, -1) << what << ", -ub " << oo.n_ubatch << ": sequence A's logits differ at position " << p;
        EXPECT_EQ(traces[0].generated, alone.generated) << what << ", -ub " << oo.n_ubatch;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Models, BatchInvariance,
                         ::testing::Combine(::testing::Values("stories260K", "Q4_K_M", "Q8_0", "gemma3"),
                                            ::testing::Values(cpu::Isa::Amx, cpu::Isa::Avx512, cpu::Isa::Avx2, cpu::Isa::Generic)),
                         [](const auto& info) {
                           return std::get<0>(info.param) + "_" + cpu::isa_name(std::get<1>(info.param));
                         });

}  // namespace
}  // namespace tandem
