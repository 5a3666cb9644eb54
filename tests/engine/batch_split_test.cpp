// llama.cpp's -b / -ub semantics on stories260K (or its stand-in, test_data.h): the micro-batch size
// (-ub) and the size of the chunks run/bench feed a long prompt in (-b) change how the work is cut,
// never the logits.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "test_data.h"
#include "engine/context.h"

namespace tandem {
namespace {

const std::vector<int32_t> kPrompt = {1, 403, 407, 261, 378, 400, 300, 270, 312, 290, 330, 431, 263};

class BatchSplitTest : public test_data::SmallLlamaTest {
 protected:
  // Logits of every prompt position, the prompt fed as run.cpp and bench.cpp feed it: chunks of
  // n_batch tokens, one decode() each, split by the context into micro-batches of n_ubatch.
  std::vector<std::vector<float>> logits(int64_t n_batch, int64_t n_ubatch) {
    auto c = Context::create(*model_, {.n_ctx = 32, .n_batch = n_batch, .n_ubatch = n_ubatch});
    EXPECT_TRUE(c.has_value());
    std::vector<std::vector<float>> out;
    for (size_t start = 0; start < kPrompt.size(); start += size_t(n_batch)) {
      Batch b;
      const size_t end = std::min(kPrompt.size(), start + size_t(n_batch));
      for (size_t i = start; i < end; ++i) b.add(kPrompt[i], int32_t(i), 0, true);
      EXPECT_TRUE((*c)->decode(b).is_ok());
      for (int64_t i = 0; i < (*c)->n_logits(); ++i) {
        auto l = (*c)->logits(i);
        out.emplace_back(l.begin(), l.end());
      }
    }
    EXPECT_EQ(out.size(), kPrompt.size());
    return out;
  }
};

// The AVX2/AVX-512 attention kernels read the f16 cache with roundings that depend on how many cached
// rows a micro-batch sees: splits that change that move logits by up to 2.5e-4 (the generic kernels by
// 5e-6). So: that tolerance, and the same most likely token at every position.
constexpr double kTolerance = 1e-3;

double max_diff(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
  double d = 0;
  for (size_t t = 0; t < std::min(a.size(), b.size()); ++t)
    for (size_t i = 0; i < a[t].size(); ++i) d = std::max(d, std::abs(double(a[t][i]) - b[t][i]));
  return d;
}

bool same_argmax(const std::vector<std::vector<float>>& a, const std::vector<std::vector<float>>& b) {
  for (size_t t = 0; t < std::min(a.size(), b.size()); ++t)
    if (std::max_element(a[t].begin(), a[t].end()) - a[t].begin() !=
        std::max_element(b[t].begin(), b[t].end()) - b[t].begin())
      return false;
  return a.size() == b.size();
}

TEST_F(BatchSplitTest, MicroBatchSizeDoesNotChangeTheLogits) {
  const auto ref = logits(64, 64);  // the whole prompt in one forward pass
  for (int64_t ub : {1, 2, 3, 5, 8, 12, 13}) {
    const auto got = logits(64, ub);
    EXPECT_LE(max_diff(got, ref), kTolerance) << "-ub " << ub;
    EXPECT_TRUE(same_argmax(got, ref)) << "-ub " << ub;
  }
}

TEST_F(BatchSplitTest, PromptLongerThanTheBatchIsFedInChunksWithTheSameLogits) {
  const auto ref = logits(64, 64);
  for (int64_t b : {1, 2, 3, 4, 5, 12})
    for (int64_t ub : {int64_t(1), int64_t(2), int64_t(3), b}) {
      const auto got = logits(b, ub);
      EXPECT_LE(max_diff(got, ref), kTolerance) << "-b " << b << " -ub " << ub;
      EXPECT_TRUE(same_argmax(got, ref)) << "-b " << b << " -ub " << ub;
    }
}

TEST_F(BatchSplitTest, OneDecodeRefusesMoreTokensThanTheBatch) {
  auto c = Context::create(*model_, {.n_ctx = 32, .n_batch = 4, .n_ubatch = 4});
  ASSERT_TRUE(c.has_value());
  Batch b;
  for (size_t i = 0; i < 5; ++i) b.add(kPrompt[i], int32_t(i), 0, true);
  const Status s = (*c)->decode(b);
  ASSERT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("-b 4"), std::string::npos) << s.message();
}

}  // namespace
}  // namespace tandem
