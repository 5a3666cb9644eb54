// The step loop and the KV cache with stories260K (or its stand-in, test_data.h): batched and
// one-token decoding agree, sequences sharing a batch do not see each other, micro-batching changes
// nothing, a full context is refused cleanly, and freed cells are reused.
#include "engine/context.h"

#include <gtest/gtest.h>

#include <cmath>

#include "test_data.h"

namespace tandem {
namespace {

const std::vector<int32_t> kPromptA = {1, 403, 407, 261, 378, 400, 300, 270};
const std::vector<int32_t> kPromptB = {1, 312, 290, 330, 431};

class ContextTest : public test_data::SmallLlamaTest {
 protected:
  std::unique_ptr<Context> make(ContextOptions o = {.n_ctx = 64}) {
    auto c = Context::create(*model_, o);
    EXPECT_TRUE(c.has_value());
    return std::move(c).value();
  }
  // Logits of every position of `tokens` decoded as one sequence in one batch.
  std::vector<std::vector<float>> reference(const std::vector<int32_t>& tokens) {
    auto ctx = make();
    Batch b;
    for (size_t i = 0; i < tokens.size(); ++i) b.add(tokens[i], int32_t(i), 0, true);
    EXPECT_TRUE(ctx->decode(b).is_ok());
    std::vector<std::vector<float>> out;
    for (size_t i = 0; i < tokens.size(); ++i) {
      auto l = ctx->logits(int64_t(i));
      out.emplace_back(l.begin(), l.end());
    }
    return out;
  }
};

double max_diff(std::span<const float> a, const std::vector<float>& b) {
  double d = 0;
  for (size_t i = 0; i < b.size(); ++i) d = std::max(d, std::abs(double(a[i]) - b[i]));
  return d;
}

TEST_F(ContextTest, OneTokenAtATimeEqualsOneBatch) {
  const auto ref = reference(kPromptA);
  auto ctx = make();
  for (size_t i = 0; i < kPromptA.size(); ++i) {
    Batch b;
    b.add(kPromptA[i], int32_t(i), 0, true);
    ASSERT_TRUE(ctx->decode(b).is_ok());
    EXPECT_LE(max_diff(ctx->logits(0), ref[i]), 1e-5) << "position " << i;
  }
}

TEST_F(ContextTest, MicroBatchesEqualOneForwardPass) {
  const auto ref = reference(kPromptA);
  auto ctx = make({.n_ctx = 64, .n_batch = 64, .n_ubatch = 3});
  Batch b;
  for (size_t i = 0; i < kPromptA.size(); ++i) b.add(kPromptA[i], int32_t(i), 0, true);
  ASSERT_TRUE(ctx->decode(b).is_ok());
  ASSERT_EQ(ctx->n_logits(), int64_t(kPromptA.size()));
  for (size_t i = 0; i < kPromptA.size(); ++i) EXPECT_LE(max_diff(ctx->logits(int64_t(i)), ref[i]), 1e-5);
}

TEST_F(ContextTest, InterleavedSequencesDoNotSeeEachOther) {
  const auto ref_a = reference(kPromptA), ref_b = reference(kPromptB);
  auto ctx = make();
  Batch b;  // A and B interleaved token by token, each with its own positions
  std::vector<std::pair<int, size_t>> order;
  for (size_t i = 0; i < std::max(kPromptA.size(), kPromptB.size()); ++i) {
    if (i < kPromptA.size()) {
      b.add(kPromptA[i], int32_t(i), 0, true);
      order.push_back({0, i});
    }
    if (i < kPromptB.size()) {
      b.add(kPromptB[i], int32_t(i), 1, true);
      order.push_back({1, i});
    }
  }
  ASSERT_TRUE(ctx->decode(b).is_ok());
  for (size_t k = 0; k < order.size(); ++k) {
    const auto& ref = order[k].first == 0 ? ref_a : ref_b;
    EXPECT_LE(max_diff(ctx->logits(int64_t(k)), ref[order[k].second]), 1e-5) << "seq " << order[k].first;
  }
}

TEST_F(ContextTest, OnlyRequestedLogitsAreReturned) {
  const auto ref = reference(kPromptA);
  auto ctx = make();
  Batch b;
  for (size_t i = 0; i < kPromptA.size(); ++i) b.add(kPromptA[i], int32_t(i), 0, i == 2 || i + 1 == kPromptA.size());
  ASSERT_TRUE(ctx->decode(b).is_ok());
  ASSERT_EQ(ctx->n_logits(), 2);
  EXPECT_LE(max_diff(ctx->logits(0), ref[2]), 1e-5);
  EXPECT_LE(max_diff(ctx->logits(1), ref.back()), 1e-5);
}

TEST_F(ContextTest, FullContextIsRefusedWithoutDamage) {
  auto ctx = make({.n_ctx = 6});
  Batch b;
  for (size_t i = 0; i < kPromptA.size(); ++i) b.add(kPromptA[i], int32_t(i), 0, true);
  Status s = ctx->decode(b);
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("context is full"), std::string::npos) << s.message();
  EXPECT_EQ(ctx->kv().n_used(), 0);
}

TEST_F(ContextTest, PrefillCutsIntoBatchesAndKeepsTheRequestedRows) {
  const auto ref = reference(kPromptA);
  auto ctx = make({.n_ctx = 64, .n_batch = 3, .n_ubatch = 3});
  ASSERT_TRUE(ctx->prefill(0, kPromptA, 0, 2, 7).is_ok());  // rows 2..6 span the 3-token chunks
  ASSERT_EQ(ctx->n_logits(), 5);
  for (int64_t i = 0; i < 5; ++i) EXPECT_LE(max_diff(ctx->logits(i), ref[size_t(2 + i)]), 1e-5) << "row " << i;
  EXPECT_EQ(ctx->kv().n_used(), int64_t(kPromptA.size()));
}

TEST_F(ContextTest, PrefillKeepsTheLastRowByDefaultAndContinuesAtPos) {
  const auto ref = reference(kPromptA);
  auto ctx = make({.n_ctx = 64, .n_batch = 2, .n_ubatch = 2});
  const std::vector<int32_t> head(kPromptA.begin(), kPromptA.begin() + 3), tail(kPromptA.begin() + 3, kPromptA.end());
  ASSERT_TRUE(ctx->prefill(0, head, 0).is_ok());
  ASSERT_EQ(ctx->n_logits(), 1);
  EXPECT_LE(max_diff(ctx->logits(0), ref[2]), 1e-5);
  ASSERT_TRUE(ctx->prefill(0, tail, 3).is_ok());
  ASSERT_EQ(ctx->n_logits(), 1);
  EXPECT_LE(max_diff(ctx->logits(0), ref.back()), 1e-5);
}

TEST_F(ContextTest, PrefillThatDoesNotFitChangesNothing) {
  auto ctx = make({.n_ctx = 6, .n_batch = 2, .n_ubatch = 2});  // would fail in the fourth chunk
  Status s = ctx->prefill(0, kPromptA, 0);
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("context is full: 0 of 6 cells used and 8 more needed"), std::string::npos)
      << s.message();
  EXPECT_EQ(ctx->kv().n_used(), 0);
}

TEST_F(ContextTest, RemovedSequenceFreesItsCells) {
  const auto ref_b = reference(kPromptB);
  auto ctx = make({.n_ctx = 10});
  Batch a;
  for (size_t i = 0; i < kPromptA.size(); ++i) a.add(kPromptA[i], int32_t(i), 0, false);
  ASSERT_TRUE(ctx->decode(a).is_ok());
  ctx->kv().remove(0);
  EXPECT_EQ(ctx->kv().n_used(), 0);
  Batch b;
  for (size_t i = 0; i < kPromptB.size(); ++i) b.add(kPromptB[i], int32_t(i), 3, true);
  ASSERT_TRUE(ctx->decode(b).is_ok());
  for (size_t i = 0; i < kPromptB.size(); ++i) EXPECT_LE(max_diff(ctx->logits(int64_t(i)), ref_b[i]), 1e-5);
}

TEST_F(ContextTest, RejectsTokensOutsideTheVocabulary) {
  auto ctx = make();
  Batch b;
  b.add(100000, 0, 0, true);
  Status s = ctx->decode(b);
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("outside the vocabulary"), std::string::npos);
  EXPECT_EQ(ctx->kv().n_used(), 0);
}

}  // namespace
}  // namespace tandem
